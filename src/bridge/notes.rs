//! Notes made once per request: direct messages keeping the requester informed, and reminders
//! in the threads of requests left unreviewed.
//!
//! Each note is a [`Slot::Note`]: an intent is recorded before it is posted and the note is
//! recorded in `mm_notes` after, so a crash at any point neither loses nor repeats one (a
//! retry that finds the intent looks for the post by its marker first).

use chrono::Utc;

use super::BridgeError;
use super::posts;
use super::store::{find_post, modify, pending_post_id};
use crate::instance::{Counters, Instance};
use crate::mattermost::{MattermostError, NewPost, User};
use crate::notice;
use crate::plugin_data::{MessageRef, PluginData, Slot};
use crate::request::{AccessRequest, RequestState};
use crate::settings::RequesterLookup;
use crate::teleport::client::TeleportClient;

/// One note to make.
struct Note<'a> {
    channel_id: &'a str,
    tag: &'a str,
    /// The thread it replies in, for reminders.
    root_id: Option<&'a str>,
    message: String,
}

/// Makes `note` unless it was made. Returns true when it was posted (or adopted) now.
async fn post_once(
    instance: &Instance,
    teleport: &TeleportClient,
    request_id: &str,
    note: Note<'_>,
) -> Result<bool, BridgeError> {
    let slot = Slot::Note {
        channel_id: note.channel_id.to_string(),
        tag: note.tag.to_string(),
    };
    let now_ms = Utc::now().timestamp_millis();
    let (mut made, mut prior, mut exists) = (false, None, false);
    modify(teleport, request_id, |current| {
        let mut data = current?;
        exists = true;
        made = data.noted(note.channel_id, note.tag);
        prior = data.intent(&slot).cloned();
        if made {
            return None;
        }
        data.add_intents([&slot], now_ms);
        Some(data)
    })
    .await?;
    if made || !exists {
        return Ok(false);
    }
    let since_ms = prior.as_ref().map_or(now_ms, |i| i.since_ms);
    let adopted = match prior {
        Some(intent) => find_post(instance, &slot, request_id, intent.since_ms).await?,
        None => None,
    };
    if adopted.is_none() {
        let bot = instance.bot_id().await?;
        instance
            .mattermost()
            .create_post(&NewPost {
                channel_id: note.channel_id.to_string(),
                message: note.message,
                root_id: note.root_id.map(str::to_string),
                props: notice::note_props(request_id, note.tag),
                pending_post_id: Some(pending_post_id(&bot, request_id, &slot, since_ms)),
                metadata: None,
            })
            .await?;
    }
    modify(teleport, request_id, |current| {
        let mut data = current?;
        data.record_note(note.channel_id, note.tag);
        Some(data)
    })
    .await?;
    Ok(true)
}

/// The tag of the thread note that shows `state` under a post Mattermost would not let the
/// plugin edit. Distinct from the requester's notes (`APPROVED`, …), which are looked up by
/// tag alone.
pub(super) fn unedited_tag(state: RequestState) -> String {
    format!("outcome-{}", state.as_str())
}

/// The first line of that note; the resolved post's text follows it.
pub(super) const UNEDITED_HEADER: &str = "This post can no longer be edited (Mattermost's post edit time limit has passed), so the request's outcome follows here:";

/// Replies once in the thread of `message` with `text`, the outcome `state` that its post
/// could not be edited to show. Returns true when it was posted (or adopted) now.
pub(super) async fn tell_in_thread(
    instance: &Instance,
    teleport: &TeleportClient,
    request_id: &str,
    message: &MessageRef,
    state: RequestState,
    text: String,
) -> Result<bool, BridgeError> {
    let tag = unedited_tag(state);
    let note = Note {
        channel_id: &message.channel_id,
        tag: &tag,
        root_id: Some(&message.post_id),
        message: text,
    };
    post_once(instance, teleport, request_id, note).await
}

/// True when the requester should still be told `tag`.
pub(super) fn requester_owed(instance: &Instance, data: &PluginData, tag: &str) -> bool {
    instance.settings().requester.lookup != RequesterLookup::None
        && !data.requester_unknown()
        && !data.messages.is_empty()
        // The only notes with these tags are in the requester's direct channel.
        && !data.noted_any(tag)
}

/// The requester's Mattermost account, by the configured lookup.
async fn requester_account(
    instance: &Instance,
    teleport_user: &str,
) -> Result<Option<User>, MattermostError> {
    let mm = instance.mattermost();
    let found = match instance.settings().requester.lookup {
        RequesterLookup::None => return Ok(None),
        RequesterLookup::Email if !teleport_user.contains('@') => return Ok(None),
        RequesterLookup::Email => mm.user_by_email(teleport_user).await,
        RequesterLookup::Username => {
            let name = teleport_user.split('@').next().unwrap_or(teleport_user);
            mm.user_by_username(name).await
        }
    };
    match found {
        Ok(user) => Ok(Some(user)),
        Err(e) if e.is_about_the_recipient() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends the requester the note `tag` once. A requester with no Mattermost account is logged
/// and counted once, and not looked up again for this request.
pub(super) async fn tell_requester(
    instance: &Instance,
    teleport: &TeleportClient,
    request_id: &str,
    data: &PluginData,
    tag: &str,
    message: String,
) -> Result<(), BridgeError> {
    if !requester_owed(instance, data, tag) {
        return Ok(());
    }
    let Some(user) = requester_account(instance, &data.user).await? else {
        tracing::warn!(request = %request_id, requester = %data.user, lookup = instance.settings().requester.lookup.as_str(), "the requester has no Mattermost account the plugin can find; they are not messaged about this request");
        Counters::inc(&instance.counters.requester_unknown);
        modify(teleport, request_id, |current| {
            let mut d = current?;
            d.mark_requester_unknown();
            Some(d)
        })
        .await?;
        return Ok(());
    };
    let bot = instance.bot_id().await?;
    let channel = instance.mattermost().direct_channel(&bot, &user.id).await?;
    let note = Note {
        channel_id: &channel.id,
        tag,
        root_id: None,
        message,
    };
    if post_once(instance, teleport, request_id, note).await? {
        Counters::inc(&instance.counters.requester_notes);
    }
    Ok(())
}

/// Tells the requester their request was posted, when configured.
pub(super) async fn tell_posted(
    instance: &Instance,
    teleport: &TeleportClient,
    request: &AccessRequest,
    data: &PluginData,
) -> Result<(), BridgeError> {
    if !instance.settings().requester.notify_on_post {
        return Ok(());
    }
    let text = notice::requester_posted(
        &request.id,
        &request.roles,
        &instance.settings().mattermost.channel,
    );
    tell_requester(
        instance,
        teleport,
        &request.id,
        data,
        notice::TAG_POSTED,
        text,
    )
    .await
}

/// Tells the requester how their request ended, as recorded in `data`.
pub(super) async fn tell_outcome(
    instance: &Instance,
    teleport: &TeleportClient,
    request_id: &str,
    data: &PluginData,
) -> Result<(), BridgeError> {
    let Some(state) = data.resolution else {
        return Ok(());
    };
    let tag = notice::outcome_tag(state);
    if !requester_owed(instance, data, tag) {
        return Ok(());
    }
    let reason = if state == RequestState::Expired {
        ""
    } else {
        &data.resolve_reason
    };
    let actor = data.actor();
    let text = notice::requester_outcome(request_id, &data.roles, state, actor.as_deref(), reason);
    tell_requester(instance, teleport, request_id, data, tag, text).await
}

/// Posts the reminder due now in every thread of a pending request, once per slot.
pub(super) async fn ensure_reminder(
    instance: &Instance,
    teleport: &TeleportClient,
    request: &AccessRequest,
    data: &PluginData,
) -> Result<(), BridgeError> {
    let (Some(settings), Some(created)) = (instance.settings().reminders, request.created) else {
        return Ok(());
    };
    if data.resolution.is_some() || data.messages.is_empty() {
        return Ok(());
    }
    let now = instance.now();
    let done = |n| {
        let tag = notice::reminder_tag(n);
        data.messages
            .iter()
            .all(|m| data.noted(&m.channel_id, &tag))
    };
    let Some(n) = notice::latest_due(created, now, &settings, done) else {
        return Ok(());
    };
    // The snapshot may be old: a reminder must never follow the decision.
    match teleport.get_access_request(&request.id).await? {
        Some(current) if current.state == RequestState::Pending => {}
        _ => return Ok(()),
    }
    let tag = notice::reminder_tag(n);
    // Only people who may decide are mentioned, and only in channel threads: a direct
    // message's reader is notified by the reminder itself.
    let targets = posts::targets(instance, request).await?;
    let deciders: Vec<String> = targets
        .resolved
        .iter()
        .filter_map(|t| t.decider().map(str::to_string))
        .collect();
    let waited = now - created;
    for message in &data.messages {
        let direct = targets
            .get(&message.channel_id)
            .is_none_or(|t| t.is_direct());
        let mentions: &[String] = if direct { &[] } else { &deciders };
        let note = Note {
            channel_id: &message.channel_id,
            tag: &tag,
            root_id: Some(&message.post_id),
            message: notice::reminder(n, settings.max, waited, mentions),
        };
        if post_once(instance, teleport, &request.id, note).await? {
            Counters::inc(&instance.counters.reminders);
        }
    }
    Ok(())
}

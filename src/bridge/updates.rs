//! Keeping the posts of a request current once they exist: a thread reply per review, the
//! review-progress line, and the edit that shows the resolution and who acted. Each is
//! recorded in plugin data by compare-and-swap, so it happens once per post.

use chrono::Utc;
use serde_json::{Map, Value};

use super::BridgeError;
use super::notes;
use super::posts;
use super::store::{find_post, modify, pending_post_id};
use crate::instance::{Counters, Instance};
use crate::mattermost::{NewPost, Post};
use crate::message;
use crate::plugin_data::{MessageRef, PluginData, Slot};
use crate::request::{AccessRequest, RequestState};
use crate::teleport::client::TeleportClient;

/// Posts a thread reply for every review not yet replied to, in order, in every thread.
pub(super) async fn ensure_replies(
    instance: &Instance,
    teleport: &TeleportClient,
    request: &AccessRequest,
    mut data: PluginData,
) -> Result<PluginData, BridgeError> {
    while data.reviews_count < request.reviews.len() && !data.messages.is_empty() {
        let index = data.reviews_count;
        let review = &request.reviews[index];
        let pending: Vec<MessageRef> = data
            .messages
            .iter()
            .filter(|m| !data.replied.contains(&m.channel_id))
            .cloned()
            .collect();
        let slots: Vec<Slot> = pending
            .iter()
            .map(|m| Slot::Reply {
                channel_id: m.channel_id.clone(),
                index,
            })
            .collect();
        let before = data.clone();
        let now_ms = Utc::now().timestamp_millis();
        data = modify(teleport, &request.id, |current| {
            let mut d = current?;
            d.add_intents(slots.iter(), now_ms);
            Some(d)
        })
        .await?
        .unwrap_or(data);
        if data.reviews_count != index {
            continue; // another worker moved on meanwhile
        }

        let bot = instance.bot_id().await?;
        let mut done = Vec::new();
        let mut first_error = None;
        for (message, slot) in pending.iter().zip(&slots) {
            let pending_id = data
                .intent(slot)
                .map(|i| pending_post_id(&bot, &request.id, slot, i.since_ms));
            let adopted = match before.intent(slot) {
                Some(intent) => find_post(instance, slot, &request.id, intent.since_ms).await?,
                None => None,
            };
            let result = match adopted {
                Some(post) => Ok(post),
                None => instance
                    .mattermost()
                    .create_post(&NewPost {
                        channel_id: message.channel_id.clone(),
                        message: message::review_reply(review),
                        root_id: Some(message.post_id.clone()),
                        props: message::review_props(&request.id, index),
                        pending_post_id: pending_id,
                        metadata: None,
                    })
                    .await
                    .inspect(|_| Counters::inc(&instance.counters.replies))
                    .map_err(BridgeError::from),
            };
            match result {
                Ok(_) => done.push(message.channel_id.clone()),
                Err(e) => {
                    tracing::warn!(request = %request.id, review = index, error = %e, "review reply failed; will retry");
                    first_error.get_or_insert(e);
                }
            }
        }
        data = modify(teleport, &request.id, |current| {
            let mut d = current?;
            for channel in &done {
                d.record_reply(channel, index);
            }
            Some(d)
        })
        .await?
        .unwrap_or(data);
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(data)
}

/// Edits a pending request's posts when reviews arrived since they were last rendered, so
/// the review progress line is current. Each post keeps the buttons the policy gives its
/// readers now (a direct message's reader who left the approver channel loses them).
pub(super) async fn ensure_progress_shown(
    instance: &Instance,
    teleport: &TeleportClient,
    request: &AccessRequest,
    data: PluginData,
) -> Result<(), BridgeError> {
    if request.reviews.len() == data.reviews_shown || data.messages.is_empty() {
        return Ok(());
    }
    let targets = posts::targets(instance, request).await?;
    let main_post = data
        .message_in(&targets.main().channel_id)
        .map(|m| m.post_id.clone());
    let mut edits = Vec::with_capacity(data.messages.len());
    for m in &data.messages {
        let target = targets.get(&m.channel_id);
        let text = posts::text_for(
            instance,
            request,
            RequestState::Pending,
            None,
            target,
            &targets.fanout,
            main_post.as_deref(),
        )
        .await;
        let buttons = posts::buttons_for(instance, request, target);
        edits.push((
            m.clone(),
            text,
            message::post_props(&request.id, buttons.as_ref()),
        ));
    }
    // A post past the admin's edit time limit keeps its old progress line; the review
    // replies in its thread say the same.
    edit_posts(instance, &request.id, edits).await?;
    let shown = request.reviews.len();
    modify(teleport, &request.id, |current| {
        let mut d = current?;
        d.reviews_shown = d.reviews_shown.max(shown);
        Some(d)
    })
    .await?;
    Ok(())
}

/// Records the resolution (Teleport's decision wins; an expiry never overwrites one) and
/// edits every message once to show it and who acted.
pub(crate) async fn resolve(
    instance: &Instance,
    teleport: &TeleportClient,
    id: &str,
    state: RequestState,
    reason: &str,
) -> Result<(), BridgeError> {
    let Some(data) = modify(teleport, id, |current| {
        let mut data = current?;
        data.resolve(state, reason);
        Some(data)
    })
    .await?
    else {
        return Ok(()); // never posted
    };
    if data.needs_edit() {
        show_resolution(instance, teleport, id, &data).await?;
    }
    notes::tell_outcome(instance, teleport, id, &data).await
}

/// Edits every message once to show the recorded resolution and who acted. A post the
/// server will not let the plugin edit any more (the admin's post edit time limit) gets the
/// outcome as a reply in its thread instead, once.
async fn show_resolution(
    instance: &Instance,
    teleport: &TeleportClient,
    id: &str,
    data: &PluginData,
) -> Result<(), BridgeError> {
    let resolution = data.resolution.expect("needs_edit implies a resolution");
    let request = data.as_request(id);
    let actor = data.actor();
    let text = posts::resolved_text(instance, &request, resolution, actor.as_deref()).await;
    let props = message::post_props(id, None);
    let edits = data
        .messages
        .iter()
        .map(|m| (m.clone(), text.clone(), props.clone()))
        .collect();
    let unedited = edit_posts(instance, id, edits).await?;
    if !unedited.is_empty() {
        let max = instance.mattermost().max_post_chars().await;
        let room = max.saturating_sub(notes::UNEDITED_HEADER.chars().count() + 2);
        let note = format!(
            "{}\n{}",
            notes::UNEDITED_HEADER,
            message::post_text_within(
                &request,
                resolution,
                actor.as_deref(),
                &instance.links(),
                room
            )
        );
        for m in &unedited {
            notes::tell_in_thread(instance, teleport, id, m, resolution, note.clone()).await?;
        }
    }
    // Record what the posts now show. If the decision moved on meanwhile (a revocation, or
    // the press recording itself), the recorded edit no longer matches and the next event or
    // resync edits again.
    modify(teleport, id, |current| {
        let mut d = current?;
        if d.resolution == Some(resolution) && d.actor() == actor {
            d.mark_edited();
        }
        Some(d)
    })
    .await?;
    Ok(())
}

/// Replaces each post's text and props. Returns the posts the server refused to edit because
/// they are older than its post edit time limit (`ServiceSettings.PostEditTimeLimit`): asking
/// again never helps, so they are left as they are and the caller decides what else to say.
async fn edit_posts(
    instance: &Instance,
    request_id: &str,
    edits: Vec<(MessageRef, String, Map<String, Value>)>,
) -> Result<Vec<MessageRef>, BridgeError> {
    let mm = instance.mattermost();
    let mut unedited = Vec::new();
    for (m, text, props) in edits {
        let post = Post::replacement(&m.channel_id, &m.post_id, text, props);
        match mm.update_post(&post).await {
            Ok(_) => Counters::inc(&instance.counters.updates),
            Err(e) if e.is_edit_time_limit() => {
                tracing::info!(request = %request_id, post = %m.post_id, error = %e, "the post is past Mattermost's edit time limit; leaving it as it is");
                unedited.push(m);
            }
            // Mattermost answers 403 (not 404) for a post that was deleted: there is nothing
            // left to edit, and retrying forever would block the request's queue.
            Err(e) if e.is_not_found() || e.status() == Some(403) => {
                tracing::warn!(request = %request_id, post = %m.post_id, error = %e, "cannot edit the post (deleted, or the bot lost access); leaving it")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(unedited)
}

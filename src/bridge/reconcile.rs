//! Handling one job for one request: post once per channel, then keep the posts current
//! ([`super::updates`]). Every step reads and writes plugin data by compare-and-swap, and every
//! post is preceded by a recorded intent, so a crash at any point neither loses nor duplicates
//! a post.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::Value;

use super::BridgeError;
use super::instance::{Counters, Instance};
use super::notes;
use super::recipients::{Recipient, recipients_for};
use super::updates::{ensure_progress_shown, ensure_replies, resolve};
use crate::callback::signature::{Action, ActionContext};
use crate::mattermost::{MattermostError, NewPost, Post};
use crate::message::{self, Buttons, Links};
use crate::notice;
use crate::plugin_data::{MessageRef, PluginData, Slot};
use crate::request::{AccessRequest, RequestState};
use crate::teleport::client::TeleportClient;

/// How long a request another plugin claimed but has not posted yet is left to it.
const OTHER_PLUGIN_GRACE: std::time::Duration = std::time::Duration::from_secs(120);
/// How far before a recorded intent to look for a post that may have been made.
const ADOPT_LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Buttons stay valid this long when the request carries no expiry of its own.
const DEFAULT_BUTTON_TTL_SECS: i64 = 7 * 24 * 3600;

/// One resolved destination.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub channel_id: String,
    pub label: String,
}

/// Reads this plugin's data for a request.
async fn read(teleport: &TeleportClient, id: &str) -> Result<Option<PluginData>, BridgeError> {
    Ok(teleport
        .plugin_data(id)
        .await?
        .as_ref()
        .map(PluginData::decode))
}

/// Applies `change` by compare-and-swap; `change` returns false for "nothing to write".
/// Returns the data as stored afterwards (None when there is none).
pub(crate) async fn modify(
    teleport: &TeleportClient,
    id: &str,
    mut change: impl FnMut(Option<PluginData>) -> Option<PluginData>,
) -> Result<Option<PluginData>, BridgeError> {
    let mut latest: Option<PluginData> = None;
    let written = teleport
        .modify_plugin_data(id, |current: Option<&HashMap<String, String>>| {
            let decoded = current.map(PluginData::decode);
            latest = decoded.clone();
            let next = change(decoded.clone())?;
            if Some(&next) == decoded.as_ref() {
                return None;
            }
            Some((next.encode(), next))
        })
        .await?;
    Ok(written.or(latest))
}

/// The link style for messages, from the last `Ping` (before any: the `tsh` lines).
pub(crate) fn links(instance: &Instance) -> Links {
    match instance.cluster() {
        Some(info) => Links::from_ping(info.advanced_workflows, &info.proxy_public_addr),
        None => Links::Tsh,
    }
}

/// A request's post text showing `state` (and who produced it), fitted to the server.
pub(super) async fn post_text(
    instance: &Instance,
    request: &AccessRequest,
    state: RequestState,
    actor: Option<&str>,
) -> String {
    message::post_text_within(
        request,
        state,
        actor,
        &links(instance),
        instance.mattermost().max_post_chars().await,
    )
}

/// Handles a request snapshot (watch PUT or resync).
pub(crate) async fn put(instance: &Instance, request: &AccessRequest) -> Result<(), BridgeError> {
    let teleport = instance.teleport().await?;
    match request.state {
        RequestState::Pending => {
            let posted = ensure_posted(instance, &teleport, request).await?;
            if let Some(data) = posted.data {
                let data = ensure_replies(instance, &teleport, request, data).await?;
                ensure_progress_shown(instance, &teleport, request, data.clone()).await?;
                notes::tell_posted(instance, &teleport, request, &data).await?;
                notes::ensure_reminder(instance, &teleport, request, &data).await?;
            }
            if let Some(e) = posted.retry {
                // Fail the job so that its retry reaches the recipients left out.
                return Err(e.into());
            }
        }
        state if state.is_resolved() => {
            let Some(data) = read(&teleport, &request.id).await? else {
                // Resolved before we ever posted it: nothing to show or edit.
                return Ok(());
            };
            let data = ensure_replies(instance, &teleport, request, data).await?;
            let told = data
                .resolution
                .is_none_or(|r| !notes::requester_owed(instance, &data, notice::outcome_tag(r)));
            if data.resolution != Some(state) || data.needs_edit() || !told {
                resolve(
                    instance,
                    &teleport,
                    &request.id,
                    state,
                    &request.resolve_reason,
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Handles a DELETE: shown as EXPIRED unless already resolved.
pub(crate) async fn delete(instance: &Instance, id: &str) -> Result<(), BridgeError> {
    let teleport = instance.teleport().await?;
    resolve(instance, &teleport, id, RequestState::Expired, "").await
}

/// Handles plugin data found without a request during resync.
pub(crate) async fn gone(instance: &Instance, id: &str) -> Result<(), BridgeError> {
    let teleport = instance.teleport().await?;
    match teleport.get_access_request(id).await? {
        Some(request) => put(instance, &request).await,
        None => resolve(instance, &teleport, id, RequestState::Expired, "").await,
    }
}

/// Where a request goes, as far as Mattermost could tell this time.
pub(crate) struct Targets {
    /// Resolved destinations, deduplicated by channel id, the main channel first.
    pub resolved: Vec<Target>,
    /// A recipient that could not be resolved for a reason worth retrying (Mattermost
    /// failing, rate limits, a lost connection). The resolved targets are still posted to;
    /// the job then fails with this error so that its retry reaches the rest.
    pub retry: Option<MattermostError>,
}

/// Resolves every recipient to a channel id, deduplicated by channel id. A recipient that
/// Mattermost says cannot be reached (unknown user, no access) is skipped and reported; one
/// that failed for another reason is left for the retry. The main channel must resolve.
pub(crate) async fn targets(
    instance: &Instance,
    request: &AccessRequest,
) -> Result<Targets, BridgeError> {
    let settings = instance.settings();
    let mm = instance.mattermost();
    let main = Recipient::Channel {
        team: settings.mattermost.team.clone(),
        channel: settings.mattermost.channel.clone(),
    };
    let mut out = Targets {
        resolved: Vec::new(),
        retry: None,
    };
    for recipient in recipients_for(
        request,
        &main,
        &settings.recipients,
        &settings.role_to_recipients,
    ) {
        let resolved = match &recipient {
            Recipient::Channel { team, channel } => {
                mm.channel_by_names(team, channel).await.map(|c| Some(c.id))
            }
            Recipient::Email(_) | Recipient::Username(_) => {
                direct_channel(instance, &recipient, &request.user).await
            }
        };
        match resolved {
            // Nobody is notified about their own request (as a suggested reviewer, say).
            Ok(None) => {
                tracing::debug!(request = %request.id, %recipient, "not messaging the requester about their own request");
            }
            Ok(Some(channel_id)) if !channel_id.is_empty() => {
                if !out.resolved.iter().any(|t| t.channel_id == channel_id) {
                    out.resolved.push(Target {
                        channel_id,
                        label: recipient.to_string(),
                    });
                }
            }
            Ok(Some(_)) => {
                tracing::warn!(request = %request.id, %recipient, "skipping recipient: Mattermost returned an empty channel id");
            }
            Err(e) if recipient == main => return Err(e.into()),
            Err(e) if e.is_about_the_recipient() => {
                tracing::warn!(request = %request.id, %recipient, error = %e, "skipping recipient that could not be resolved");
            }
            Err(e) => {
                tracing::warn!(request = %request.id, %recipient, error = %e, "could not resolve recipient; will retry");
                out.retry.get_or_insert(e);
            }
        }
    }
    Ok(out)
}

/// The DM channel with a user recipient, or `None` when that user made the request (by the
/// rules that refuse self-approval).
async fn direct_channel(
    instance: &Instance,
    recipient: &Recipient,
    requester: &str,
) -> Result<Option<String>, crate::mattermost::MattermostError> {
    let mm = instance.mattermost();
    let user = match recipient {
        Recipient::Email(email) => mm.user_by_email(email).await?,
        Recipient::Username(name) => mm.user_by_username(name).await?,
        Recipient::Channel { .. } => unreachable!("channels are not DMs"),
    };
    let who = crate::callback::people::Clicker {
        username: &user.username,
        email: &user.email,
    };
    if crate::callback::people::is_requester(requester, who) {
        return Ok(None);
    }
    let bot = bot_user_id(instance).await?;
    Ok(Some(mm.direct_channel(&bot, &user.id).await?.id))
}

/// The bot's own user id, looked up once.
pub(super) async fn bot_user_id(instance: &Instance) -> Result<String, MattermostError> {
    if let Some(id) = instance.bot_user_id() {
        return Ok(id.to_string());
    }
    let me = instance.mattermost().me().await?;
    instance.set_bot_user_id(me.id.clone());
    Ok(me.id)
}

/// What [`ensure_posted`] leaves behind.
struct Posted {
    /// The plugin data afterwards; None when there is none yet.
    data: Option<PluginData>,
    /// A recipient left for a retry (see [`Targets::retry`]).
    retry: Option<MattermostError>,
}

/// Posts the request once to every target it can resolve.
async fn ensure_posted(
    instance: &Instance,
    teleport: &TeleportClient,
    request: &AccessRequest,
) -> Result<Posted, BridgeError> {
    let existing = read(teleport, &request.id).await?;
    // Teleport's own Mattermost plugin (or another instance) may have claimed this request
    // first and be posting it: its record carries the request's fields and none of ours.
    // Posting now would duplicate its posts, so the job waits and is retried: by then its
    // posts are recorded and only what it did not post is posted (and if it died mid-way,
    // the request is posted once the grace period is over).
    let young = request.created.is_some_and(|c| {
        Utc::now() - c < chrono::Duration::from_std(OTHER_PLUGIN_GRACE).expect("small")
    });
    let other_plugin = |data: &PluginData| young && data.is_someone_elses_fresh_record();
    let wait_for_the_other_plugin = || {
        Counters::inc(&instance.counters.foreign_records);
        tracing::warn!(request = %request.id, "another Mattermost plugin is posting this request at the same time (Teleport's own plugin?); waiting for its posts instead of posting again. Run only one plugin per Teleport cluster");
        Err(BridgeError::OtherPlugin {
            request: request.id.clone(),
        })
    };
    if existing.as_ref().is_some_and(other_plugin) {
        return wait_for_the_other_plugin();
    }
    if existing.as_ref().is_some_and(|d| d.resolution.is_some()) {
        // Resolved already; the resolution's edits are another job's work.
        return Ok(Posted {
            data: existing,
            retry: None,
        });
    }
    let Targets { resolved, retry } = targets(instance, request).await?;
    let missing: Vec<&Target> = resolved
        .iter()
        .filter(|t| {
            existing
                .as_ref()
                .is_none_or(|d| d.message_in(&t.channel_id).is_none())
        })
        .collect();
    if missing.is_empty() {
        return Ok(Posted {
            data: existing,
            retry,
        });
    }

    // Record the intent for every missing target, creating the plugin data if needed.
    let now_ms = Utc::now().timestamp_millis();
    let slots: Vec<Slot> = missing
        .iter()
        .map(|t| Slot::Root {
            channel_id: t.channel_id.clone(),
        })
        .collect();
    // Decided on the data the compare-and-swap reads, not on the read above: another writer
    // (another plugin, a worker of ours) may have posted or recorded intents since.
    let mut yielded = false;
    let mut prior: Vec<crate::plugin_data::Intent> = Vec::new();
    let data = modify(teleport, &request.id, |current| {
        // The other plugin may create its record between our read and our write.
        yielded = current.as_ref().is_some_and(other_plugin);
        if yielded {
            return None;
        }
        let mut data = current.unwrap_or_else(|| PluginData::for_request(request));
        prior = slots
            .iter()
            .filter_map(|s| data.intent(s).cloned())
            .collect();
        let unposted: Vec<Slot> = slots
            .iter()
            .filter(|s| data.message_in(s.channel_id()).is_none())
            .cloned()
            .collect();
        data.add_intents(unposted.iter(), now_ms);
        Some(data)
    })
    .await?
    .expect("plugin data exists after it was written");
    if yielded {
        return wait_for_the_other_plugin();
    }
    let missing: Vec<&Target> = missing
        .into_iter()
        .filter(|t| data.message_in(&t.channel_id).is_none())
        .collect();

    let mut made = Vec::new();
    let mut first_error = None;
    for target in missing {
        let slot = Slot::Root {
            channel_id: target.channel_id.clone(),
        };
        // An intent that existed before this attempt may have been posted by a run that
        // crashed before recording it: look for the post instead of posting again.
        let prior = prior.iter().find(|i| i.slot == slot).cloned();
        let result = match prior {
            Some(intent) => match find_post(instance, &slot, &request.id, intent.since_ms).await {
                Ok(Some(post)) => {
                    Counters::inc(&instance.counters.adopted);
                    tracing::info!(request = %request.id, channel = %target.label, post = %post.id, "adopted a post made before a restart");
                    Ok(post)
                }
                Ok(None) => create_root(instance, request, target).await,
                Err(e) => Err(e),
            },
            None => create_root(instance, request, target).await,
        };
        match result {
            Ok(post) => made.push(MessageRef {
                channel_id: target.channel_id.clone(),
                post_id: post.id,
            }),
            Err(e) => {
                tracing::warn!(request = %request.id, channel = %target.label, error = %e, "posting failed; will retry");
                first_error.get_or_insert(e);
            }
        }
    }

    let data = if made.is_empty() {
        data
    } else {
        modify(teleport, &request.id, |current| {
            let mut data = current?;
            for m in &made {
                data.record_message(m.clone());
            }
            Some(data)
        })
        .await?
        .unwrap_or(data)
    };
    match first_error {
        Some(e) => Err(e),
        None => Ok(Posted {
            data: Some(data),
            retry,
        }),
    }
}

async fn create_root(
    instance: &Instance,
    request: &AccessRequest,
    target: &Target,
) -> Result<Post, BridgeError> {
    let text = post_text(instance, request, RequestState::Pending, None).await;
    let buttons = buttons(instance, request, &target.channel_id);
    let post = instance
        .mattermost()
        .create_post(&NewPost {
            channel_id: target.channel_id.clone(),
            message: text,
            root_id: None,
            props: message::post_props(&request.id, buttons.as_ref()),
        })
        .await?;
    Counters::inc(&instance.counters.posts);
    Ok(post)
}

/// Signed Approve/Deny buttons for a post in `channel_id`, when callbacks are configured.
pub(super) fn buttons(
    instance: &Instance,
    request: &AccessRequest,
    channel_id: &str,
) -> Option<Buttons> {
    let callback = instance.settings().callback.as_ref()?;
    let expires = request
        .expires
        .map(|t| t.timestamp())
        .unwrap_or_else(|| Utc::now().timestamp() + DEFAULT_BUTTON_TTL_SECS);
    let context = |action| {
        ActionContext::signed(
            &callback.signing_secret,
            &instance.settings().instance,
            action,
            &request.id,
            channel_id,
            expires,
        )
        .to_json()
    };
    Some(Buttons {
        url: callback.action_url.to_string(),
        approve_context: context(Action::Approve),
        deny_context: context(Action::Deny),
    })
}

/// Looks for a post this plugin made for `slot` since shortly before the intent was recorded.
pub(super) async fn find_post(
    instance: &Instance,
    slot: &Slot,
    request_id: &str,
    since_ms: i64,
) -> Result<Option<Post>, BridgeError> {
    let posts = instance
        .mattermost()
        .channel_posts_since(slot.channel_id(), since_ms - ADOPT_LOOKBACK_MS)
        .await?;
    Ok(posts
        .into_iter()
        .find(|p| post_matches(p, slot, request_id)))
}

/// True when `post` carries the marker props for `slot` of `request_id`.
pub(crate) fn post_matches(post: &Post, slot: &Slot, request_id: &str) -> bool {
    if post
        .props
        .get(message::PROP_REQUEST_ID)
        .and_then(Value::as_str)
        != Some(request_id)
    {
        return false;
    }
    let review = post
        .props
        .get(message::PROP_REVIEW_INDEX)
        .and_then(Value::as_u64);
    let note = post.props.get(notice::PROP_NOTE).and_then(Value::as_str);
    match slot {
        Slot::Root { .. } => review.is_none() && note.is_none() && post.root_id.is_empty(),
        Slot::Reply { index, .. } => review == Some(*index as u64),
        Slot::Note { tag, .. } => note == Some(tag.as_str()),
    }
}

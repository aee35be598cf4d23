//! Handling one job for one request: post once per channel, then keep the posts current
//! ([`super::updates`]). Every step reads and writes plugin data by compare-and-swap, and every
//! post is preceded by a recorded intent, so a crash at any point neither loses nor duplicates
//! a post.

use chrono::Utc;

use super::BridgeError;
use super::notes;
use super::posts::{self, Target, Targets};
use super::store::{find_post, modify, pending_post_id, read};
use super::updates::{ensure_progress_shown, ensure_replies, resolve};
use crate::instance::{Counters, Instance};
use crate::mattermost::{NewPost, Post};
use crate::message;
use crate::notice;
use crate::plugin_data::{MessageRef, PluginData, Slot};
use crate::request::{AccessRequest, RequestState};
use crate::teleport::client::TeleportClient;

/// How long a request another plugin claimed but has not posted yet is left to it.
const OTHER_PLUGIN_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

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

/// What [`ensure_posted`] leaves behind.
struct Posted {
    /// The plugin data afterwards; None when there is none yet.
    data: Option<PluginData>,
    /// A recipient left for a retry (see [`Targets::retry`]).
    retry: Option<crate::mattermost::MattermostError>,
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
    let targets = posts::targets(instance, request).await?;
    if existing.is_none() {
        posts::report_dropped(instance, request, &targets.fanout);
    }
    let missing: Vec<&Target> = targets
        .resolved
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
            retry: targets.retry,
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

    let bot = instance.bot_id().await?;
    let pending = |slot: &Slot| {
        data.intent(slot)
            .map(|i| pending_post_id(&bot, &request.id, slot, i.since_ms))
    };
    let mut made: Vec<MessageRef> = Vec::new();
    let mut first_error = None;
    for target in missing {
        let slot = Slot::Root {
            channel_id: target.channel_id.clone(),
        };
        // An intent that existed before this attempt may have been posted by a run that
        // crashed before recording it: look for the post instead of posting again.
        let prior = prior.iter().find(|i| i.slot == slot).cloned();
        // A direct message without buttons links to the channel's post, so that one comes
        // first (it is the first target) and nothing else is posted before it exists.
        let main_post = data
            .message_in(&targets.main().channel_id)
            .map(|m| m.post_id.clone())
            .or_else(|| {
                made.iter()
                    .find(|m| m.channel_id == targets.main().channel_id)
                    .map(|m| m.post_id.clone())
            });
        let is_main = target.channel_id == targets.main().channel_id;
        let result = match prior {
            Some(intent) => match find_post(instance, &slot, &request.id, intent.since_ms).await {
                Ok(Some(post)) => {
                    Counters::inc(&instance.counters.adopted);
                    tracing::info!(request = %request.id, channel = %target.label, post = %post.id, "adopted a post made before a restart");
                    Ok(post)
                }
                Ok(None) => {
                    create_root(
                        instance,
                        request,
                        target,
                        &targets,
                        main_post,
                        pending(&slot),
                    )
                    .await
                }
                Err(e) => Err(e),
            },
            None => {
                create_root(
                    instance,
                    request,
                    target,
                    &targets,
                    main_post,
                    pending(&slot),
                )
                .await
            }
        };
        match result {
            Ok(post) => made.push(MessageRef {
                channel_id: target.channel_id.clone(),
                post_id: post.id,
            }),
            Err(e) => {
                tracing::warn!(request = %request.id, channel = %target.label, error = %e, "posting failed; will retry");
                first_error.get_or_insert(e);
                if is_main {
                    break;
                }
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
            retry: targets.retry,
        }),
    }
}

async fn create_root(
    instance: &Instance,
    request: &AccessRequest,
    target: &Target,
    targets: &Targets,
    main_post: Option<String>,
    pending_post_id: Option<String>,
) -> Result<Post, BridgeError> {
    let text = posts::text_for(
        instance,
        request,
        RequestState::Pending,
        None,
        Some(target),
        &targets.fanout,
        main_post.as_deref(),
    )
    .await;
    let buttons = posts::buttons_for(instance, request, Some(target));
    let mut post = NewPost {
        channel_id: target.channel_id.clone(),
        message: text,
        root_id: None,
        props: message::post_props(&request.id, buttons.as_ref()),
        pending_post_id,
        // Priority makes a request stand out in a channel; a direct message notifies anyway.
        metadata: if target.is_direct() {
            None
        } else {
            instance.post_priority()
        },
    };
    let mm = instance.mattermost();
    let created = loop {
        match mm.create_post(&post).await {
            // The server refused the priority before creating anything (the checks of
            // `createPost` in `server/channels/api4/post.go` run first), so the same post,
            // with the same pending_post_id, goes again without what it refused.
            Err(e) if post.metadata.is_some() => match e.priority_refusal() {
                Some(refusal) => {
                    instance.priority_refused(refusal, &e);
                    let fewer = instance.post_priority();
                    if fewer == post.metadata {
                        return Err(e.into());
                    }
                    post.metadata = fewer;
                }
                None => return Err(e.into()),
            },
            other => break other?,
        }
    };
    Counters::inc(&instance.counters.posts);
    Ok(created)
}

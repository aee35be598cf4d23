//! The engine's record of a request: its plugin data in Teleport, read and changed by
//! compare-and-swap, and the posts an intent recorded there may already have made.

use std::collections::HashMap;

use serde_json::Value;

use super::BridgeError;
use crate::instance::Instance;
use crate::mattermost::Post;
use crate::message;
use crate::notice;
use crate::plugin_data::{PluginData, Slot};
use crate::teleport::client::TeleportClient;

/// How far before a recorded intent to look for a post that may have been made.
const ADOPT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Reads this plugin's data for a request.
pub(super) async fn read(
    teleport: &TeleportClient,
    id: &str,
) -> Result<Option<PluginData>, BridgeError> {
    Ok(teleport
        .plugin_data(id)
        .await?
        .as_ref()
        .map(PluginData::decode))
}

/// Applies `change` by compare-and-swap; `change` returns None for "nothing to write".
/// Returns the data as stored afterwards (None when there is none).
pub(super) async fn modify(
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

/// Posts a page when looking for a post (Mattermost's most).
const FIND_PAGE: u32 = 200;

/// Pages looked through at most: 10,000 posts made in the channel since the intent.
const FIND_PAGES: u32 = 50;

/// Looks for a post this plugin made for `slot` since shortly before the intent was recorded,
/// paging back through the channel, newest first, until posts older than that. Paging, not
/// `?since=`: past 1,000 changed posts that query leaves out the newest, and a busy channel
/// would then hide the post and have it made twice.
pub(super) async fn find_post(
    instance: &Instance,
    slot: &Slot,
    request_id: &str,
    since_ms: i64,
) -> Result<Option<Post>, BridgeError> {
    let oldest = since_ms - ADOPT_LOOKBACK_MS;
    for page in 0..FIND_PAGES {
        let posts = instance
            .mattermost()
            .channel_posts_page(slot.channel_id(), page, FIND_PAGE)
            .await?;
        if let Some(found) = posts.iter().find(|p| post_matches(p, slot, request_id)) {
            return Ok(Some(found.clone()));
        }
        let full = posts.len() == FIND_PAGE as usize;
        if !full || posts.last().is_some_and(|p| p.create_at < oldest) {
            return Ok(None);
        }
    }
    tracing::warn!(
        request = request_id,
        channel = slot.channel_id(),
        posts = FIND_PAGES * FIND_PAGE,
        "looked through the channel's newest posts without reaching the time of the intent; posting again"
    );
    Ok(None)
}

/// The `pending_post_id` of the post an intent is about to make: the same on every attempt
/// for that intent and distinct for every slot, so Mattermost answers a create repeated
/// within 30 s (after an answer was lost, while the first may still be saving) with the first
/// one's post instead of a second post. Mattermost's webapp writes `<user id>:<ms>`; the slot's
/// hash keeps two posts of one batch of intents apart. At most 57 characters (the server
/// takes 64).
pub(super) fn pending_post_id(
    bot_id: &str,
    request_id: &str,
    slot: &Slot,
    since_ms: i64,
) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{request_id}|{slot:?}"));
    format!("{bot_id}:{since_ms}-{}", hex::encode(&digest[..8]))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_post_id_is_stable_per_intent_and_distinct_per_slot() {
        let bot = "b".repeat(26);
        let root = |c: &str| Slot::Root {
            channel_id: c.into(),
        };
        let a = pending_post_id(&bot, "r1", &root("c1"), 1_700_000_000_000);
        assert_eq!(
            a,
            pending_post_id(&bot, "r1", &root("c1"), 1_700_000_000_000)
        );
        assert_ne!(
            a,
            pending_post_id(&bot, "r1", &root("c2"), 1_700_000_000_000)
        );
        assert_ne!(
            a,
            pending_post_id(&bot, "r2", &root("c1"), 1_700_000_000_000)
        );
        let reply = Slot::Reply {
            channel_id: "c1".into(),
            index: 0,
        };
        assert_ne!(a, pending_post_id(&bot, "r1", &reply, 1_700_000_000_000));
        assert!(a.len() <= 64, "{}", a.len());
        assert!(a.starts_with(&format!("{bot}:1700000000000-")));
    }
}

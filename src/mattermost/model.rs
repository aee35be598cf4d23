//! The Mattermost API v4 objects this project reads and writes.
//!
//! Every type ignores unknown fields and defaults missing ones, because Mattermost adds
//! fields between versions and sanitizes others (e.g. `email` is blank when the server's
//! privacy settings hide it from the bot).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A Mattermost user (`model.User`), reduced to the fields the bridge needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// 26-character user id.
    pub id: String,
    /// Login name, without `@`.
    pub username: String,
    /// E-mail address; empty when the server's privacy settings hide it.
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Nickname.
    pub nickname: String,
    /// Whether this is a bot account.
    pub is_bot: bool,
    /// Milliseconds since the epoch when the account was deactivated; 0 when active.
    pub delete_at: i64,
}

/// A Mattermost team (`model.Team`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Team {
    /// 26-character team id.
    pub id: String,
    /// URL name (what the settings call the team).
    pub name: String,
    /// Human-readable name.
    pub display_name: String,
}

/// A Mattermost channel (`model.Channel`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Channel {
    /// 26-character channel id.
    pub id: String,
    /// URL name; for a direct channel, the two user ids sorted and joined by `__`.
    pub name: String,
    /// Owning team; empty for direct and group channels.
    pub team_id: String,
    /// Human-readable name.
    pub display_name: String,
    /// `O` (public), `P` (private), `D` (direct) or `G` (group).
    #[serde(rename = "type")]
    pub channel_type: String,
}

/// A post as Mattermost returns it (`model.Post`).
///
/// Mattermost strips `integration` from every action in `props.attachments` before it sends a
/// post to an API client, so a post read back never carries button URLs or contexts: rebuild
/// them rather than round-tripping them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Post {
    /// 26-character post id.
    pub id: String,
    /// Channel the post lives in.
    pub channel_id: String,
    /// Markdown text.
    pub message: String,
    /// The thread's root post id; empty for a root post.
    pub root_id: String,
    /// Free-form properties: `attachments` (with buttons) and our own markers.
    #[serde(deserialize_with = "null_as_default")]
    pub props: Map<String, Value>,
    /// Creation time, milliseconds since the epoch.
    pub create_at: i64,
    /// Last update time, milliseconds since the epoch.
    pub update_at: i64,
}

impl Post {
    /// The new text and props of root post `id` in `channel_id`, for
    /// [`super::MattermostClient::update_post`] (which sends only these).
    pub fn replacement(
        channel_id: &str,
        id: &str,
        message: String,
        props: Map<String, Value>,
    ) -> Post {
        Post {
            id: id.to_owned(),
            channel_id: channel_id.to_owned(),
            message,
            props,
            ..Post::default()
        }
    }
}

/// A post to create (`POST /api/v4/posts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewPost {
    /// Target channel.
    pub channel_id: String,
    /// Markdown text.
    pub message: String,
    /// Root post id, to reply in a thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// Properties, e.g. `attachments` with buttons and a marker for crash recovery.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
    /// Makes a repeated create idempotent for 30 s: Mattermost answers a create carrying a
    /// `pending_post_id` it saw within that window with the post the first one made
    /// (`deduplicateCreatePost`, `server/channels/app/post.go`, since 5.x), or with a 500
    /// `api.post.deduplicate_create_post.pending` while the first is still being saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_post_id: Option<String>,
    /// `metadata.priority`: how the post stands out (root posts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<NewPostMetadata>,
}

/// The `metadata` a new post may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewPostMetadata {
    /// The message priority.
    pub priority: PostPriority,
}

/// `model.PostPriority` (`server/public/model/post.go`): `priority` is "" (standard),
/// `important` or `urgent`; `requested_ack` asks readers to acknowledge the post and needs a
/// licensed server (`server/channels/app/post_permission_utils.go`, `postPriorityCheck`:
/// 501 `license_error.feature_unavailable` without one). Mattermost takes it on root posts
/// only (400 `api.post.post_priority.priority_post_only_allowed_for_root_post...`), and
/// servers before 7.7 know no priority and ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PostPriority {
    /// "", `important` or `urgent`.
    pub priority: String,
    /// Ask readers to acknowledge the post.
    pub requested_ack: bool,
}

/// A Mattermost server version, from its client config's `Version` (e.g. "11.4.0").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl ServerVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses "11.4.0", "9.5" or "11.4.0-rc1"; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let core = text.trim().split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        Some(Self::new(major, minor, patch))
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl NewPost {
    /// A plain post in `channel_id`.
    pub fn new(channel_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            channel_id: channel_id.into(),
            message: message.into(),
            root_id: None,
            props: Map::new(),
            pending_post_id: None,
            metadata: None,
        }
    }

    /// Makes this post a reply in the thread of `root_id`.
    pub fn in_thread(mut self, root_id: impl Into<String>) -> Self {
        self.root_id = Some(root_id.into());
        self
    }

    /// Sets one property.
    pub fn with_prop(mut self, key: impl Into<String>, value: Value) -> Self {
        self.props.insert(key.into(), value);
        self
    }
}

/// `model.PostList`: post ids in display order plus the posts by id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PostList {
    #[serde(deserialize_with = "null_as_default")]
    pub order: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub posts: Map<String, Value>,
}

impl PostList {
    /// The posts named in `order`, in that order. Posts listed only in `posts` (Mattermost
    /// adds the roots of threads that changed) are left out, as are ids with no post.
    pub fn into_ordered(mut self) -> Result<Vec<Post>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.order.len());
        for id in &self.order {
            if let Some(value) = self.posts.remove(id) {
                out.push(serde_json::from_value(value)?);
            }
        }
        Ok(out)
    }
}

/// Go encodes a nil map or slice as `null`; treat it as empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn post_ignores_unknown_fields_and_defaults_missing_ones() {
        let post: Post = serde_json::from_value(json!({
            "id": "p1", "channel_id": "c1", "message": "hi", "props": null,
            "is_pinned": false, "metadata": {"embeds": []}, "type": ""
        }))
        .unwrap();
        assert_eq!(post.id, "p1");
        assert!(post.props.is_empty());
        assert_eq!(post.root_id, "");
        assert_eq!(post.create_at, 0);
    }

    #[test]
    fn post_list_follows_order_and_skips_extra_posts() {
        let list: PostList = serde_json::from_value(json!({
            "order": ["b", "a", "missing"],
            "posts": {
                "a": {"id": "a", "message": "first"},
                "b": {"id": "b", "message": "second"},
                "root": {"id": "root", "message": "thread root"}
            },
            "next_post_id": "", "prev_post_id": "", "has_next": false
        }))
        .unwrap();
        let ids: Vec<_> = list
            .into_ordered()
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn post_list_accepts_nulls() {
        let list: PostList = serde_json::from_str(r#"{"order":null,"posts":null}"#).unwrap();
        assert!(list.into_ordered().unwrap().is_empty());
    }

    #[test]
    fn a_server_version_parses_from_the_client_config() {
        assert_eq!(
            ServerVersion::parse("11.4.0"),
            Some(ServerVersion::new(11, 4, 0))
        );
        assert_eq!(
            ServerVersion::parse("9.5"),
            Some(ServerVersion::new(9, 5, 0))
        );
        assert_eq!(
            ServerVersion::parse("10.11.2-rc1"),
            Some(ServerVersion::new(10, 11, 2))
        );
        assert!(ServerVersion::new(9, 5, 0) > ServerVersion::new(9, 4, 9));
        assert!(ServerVersion::new(11, 10, 0) > ServerVersion::new(11, 4, 0));
        for bad in ["", "eleven", "11", "11.x.0"] {
            assert_eq!(ServerVersion::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_priority_travels_in_metadata() {
        let mut post = NewPost::new("c1", "hello");
        post.metadata = Some(NewPostMetadata {
            priority: PostPriority {
                priority: "urgent".into(),
                requested_ack: true,
            },
        });
        let body = serde_json::to_value(post).unwrap();
        assert_eq!(
            body["metadata"],
            json!({"priority": {"priority": "urgent", "requested_ack": true}})
        );
    }

    #[test]
    fn new_post_omits_absent_root_id_and_empty_props() {
        let body = serde_json::to_value(NewPost::new("c1", "hello")).unwrap();
        assert_eq!(body, json!({"channel_id": "c1", "message": "hello"}));
        let reply = serde_json::to_value(NewPost::new("c1", "r").in_thread("p1")).unwrap();
        assert_eq!(reply["root_id"], "p1");
    }
}

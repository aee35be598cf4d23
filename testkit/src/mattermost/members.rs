//! Channel membership, as Mattermost's permissions use it (`server/channels/api4/channel.go`,
//! `server/channels/app/authorization.go`):
//! - `GET /channels/{channel_id}/members/{user_id}` needs `read_channel` on the channel (the
//!   bot a member of it), else 403; a user who is not a member is a 404
//!   `app.channel.get_member.missing.app_error`;
//! - a post needs `create_post` in the channel (the bot a member), or, for a public channel,
//!   `create_post_public`, which a bot has only with the `system_post_all_public` role
//!   (`post:channels`); a direct channel's members are its two users;
//! - a button press needs to read the post's channel: on 6.7.2 `read_channel`
//!   (`SessionHasPermissionToChannelByPost` in `api4/post.go` `doPostAction`), its members
//!   only, a public channel included (a team member outside it gets 403, as the real 6.7.2
//!   answered tier 4); on 11.4 `HasPermissionToReadChannel` (`app/authorization.go`), which
//!   also lets a team member read a public channel (tier 4 saw 200 there).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::{
    ApiResult, MattermostDouble, Server, Shared, app_error, invalid_url_param, is_valid_id,
    ok_json, permission_error,
};

impl Server {
    /// True when `user_id` is a member of `channel_id` (a direct channel's two users are).
    pub(super) fn is_member(&self, channel_id: &str, user_id: &str) -> bool {
        if let Some(channel) = self.channels.iter().find(|c| c.id == channel_id)
            && channel.channel_type == "D"
        {
            return channel.name.split("__").any(|id| id == user_id);
        }
        self.members
            .get(channel_id)
            .is_some_and(|m| m.contains(user_id))
    }

    /// Whether the bot may post in `channel_id`.
    pub(super) fn bot_may_post(&self, channel_id: &str) -> bool {
        let Some(channel) = self.channels.iter().find(|c| c.id == channel_id) else {
            return false;
        };
        self.is_member(channel_id, &self.bot_user_id)
            || (channel.channel_type == "O" && self.bot_posts_all_public)
    }

    /// Whether `user_id` can read (and so press buttons in) `channel_id`. 11.4 lets a team
    /// member read a public channel without joining it (`HasPermissionToReadChannel`,
    /// `server/channels/app/authorization.go`, from `doPostAction`); 6.7.2's `doPostAction`
    /// asks `SessionHasPermissionToChannelByPost` for `read_channel`, which only membership
    /// grants (tier 4 saw 403 there).
    pub(super) fn may_read(&self, channel_id: &str, user_id: &str) -> bool {
        let public = self
            .channels
            .iter()
            .any(|c| c.id == channel_id && c.channel_type == "O");
        (public && self.line.version.major >= 11) || self.is_member(channel_id, user_id)
    }

    fn user_id_of(&self, who: &str) -> Option<String> {
        self.users
            .iter()
            .find(|u| u.username == who || u.id == who)
            .map(|u| u.id.clone())
    }
}

impl MattermostDouble {
    /// Adds a user (by username or id) to a channel, as `POST /channels/{id}/members` would.
    /// Panics when the user does not exist.
    pub fn add_member(&self, channel_id: &str, who: &str) {
        let mut state = self.state();
        let user = state
            .user_id_of(who)
            .unwrap_or_else(|| panic!("no Mattermost user {who:?}"));
        state
            .members
            .entry(channel_id.to_string())
            .or_default()
            .insert(user);
    }

    /// Removes a user (by username or id) from a channel.
    pub fn remove_member(&self, channel_id: &str, who: &str) {
        let mut state = self.state();
        if let Some(user) = state.user_id_of(who)
            && let Some(members) = state.members.get_mut(channel_id)
        {
            members.remove(&user);
        }
    }

    /// Adds a private channel to the team named `team`, creating the team if needed.
    pub fn add_private_channel(&self, team: &str, channel: &str) -> String {
        let id = self.add_channel(team, channel);
        let mut state = self.state();
        if let Some(c) = state.channels.iter_mut().find(|c| c.id == id) {
            c.channel_type = "P".into();
        }
        id
    }

    /// Gives the bot `create_post_public` (the `system_post_all_public` role): it may then post
    /// in public channels it is not a member of.
    pub fn set_bot_posts_all_public(&self, on: bool) {
        self.state().bot_posts_all_public = on;
    }
}

/// `GET /api/v4/channels/{channel_id}/members/{user_id}`.
pub(super) async fn channel_member(
    State(shared): State<Arc<Shared>>,
    Path((channel_id, user_id)): Path<(String, String)>,
) -> ApiResult {
    if !is_valid_id(&channel_id) {
        return Err(invalid_url_param("channel_id"));
    }
    if !is_valid_id(&user_id) {
        return Err(invalid_url_param("user_id"));
    }
    let state = shared.state();
    let bot = state.bot_user_id.clone();
    if !state.is_member(&channel_id, &bot) {
        return Err(permission_error("read_channel", &bot));
    }
    if !state.is_member(&channel_id, &user_id) {
        return Err(app_error(
            404,
            "app.channel.get_member.missing.app_error",
            "No channel member found for that user ID and channel ID.",
            "",
        ));
    }
    Ok(ok_json(
        StatusCode::OK,
        json!({
            "channel_id": channel_id,
            "user_id": user_id,
            "roles": "channel_user",
            "scheme_user": true,
            "scheme_admin": false,
        }),
    ))
}

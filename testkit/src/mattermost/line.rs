//! What differs between the Mattermost versions the double plays: 6.7.2 (the tier-4 line of
//! 2022) and the current servers (11.4.0, the tier-4 "current" line, and later releases where
//! the published source says so). Each behaviour names the Mattermost source file it comes
//! from; "6.7.2" means `github.com/mattermost/mattermost-server/v6@v6.7.2`, "11.4" the
//! `server/v8` and `server/public` modules of the commit tagged `server/public/v0.1.22`.

use std::time::Duration;

use axum::response::Response;
use serde_json::{Map, Value};
use teleport_mattermost::mattermost::ServerVersion;

use super::{MattermostDouble, app_error};

/// Mattermost 6.7.2.
pub const V6_7_2: ServerVersion = ServerVersion::new(6, 7, 2);
/// Mattermost 11.4.0, what the double plays unless told otherwise.
pub const V11_4_0: ServerVersion = ServerVersion::new(11, 4, 0);
/// Mattermost 11.10.0, the first release that sets a dialog submission's `team_id` from the
/// channel (CONTRACTS.md §7; no source of it can be built here).
pub const V11_10_0: ServerVersion = ServerVersion::new(11, 10, 0);

/// The first version with message priority (`metadata.priority`, Mattermost 7.7).
const PRIORITY_SINCE: ServerVersion = ServerVersion::new(7, 7, 0);
/// The first version whose trigger lifetime is `OutgoingIntegrationRequestsTimeout`.
const CONFIGURABLE_TRIGGER_SINCE: ServerVersion = ServerVersion::new(9, 5, 0);

/// The server settings and licence that change what the double answers.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// The version the double plays (its client config's `Version`).
    pub version: ServerVersion,
    /// `ServiceSettings.OutgoingIntegrationRequestsTimeout`.
    pub outgoing_timeout: Duration,
    /// `ServiceSettings.PostEditTimeLimit` in seconds; -1 for none (the default).
    pub post_edit_time_limit: i64,
    /// `ServiceSettings.PostPriority` (on by default).
    pub post_priority: bool,
    /// A Professional (or higher) licence; Team Edition has none.
    pub licensed: bool,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            version: V11_4_0,
            outgoing_timeout: Duration::from_secs(30),
            post_edit_time_limit: -1,
            post_priority: true,
            licensed: false,
        }
    }
}

impl Line {
    /// How long a trigger id is accepted: `model.InteractiveDialogTriggerTimeoutMilliseconds`
    /// (3 s, `model/integration_action.go`, 6.7.2), from 9.5 the
    /// `OutgoingIntegrationRequestsTimeout` that `OpenInteractiveDialog` passes to
    /// `DecodeAndVerifyTriggerId` (`server/channels/app/integration_action.go`, 11.4).
    pub fn trigger_lifetime(&self) -> Duration {
        if self.version >= CONFIGURABLE_TRIGGER_SINCE {
            self.outgoing_timeout
        } else {
            Duration::from_secs(3)
        }
    }

    /// The `team_id` a dialog submission made in `channel_team` (empty for a direct or group
    /// channel) carries to the integration, where the user's client is in `client_team`:
    /// before 11.10 the client's current team (`submitDialog` in
    /// `server/channels/api4/integration_action.go` forwards it, 6.7.2 and 11.4), from 11.10
    /// the channel's.
    pub fn submission_team(&self, channel_team: &str, client_team: &str) -> String {
        if self.version >= V11_10_0 {
            channel_team.to_string()
        } else {
            client_team.to_string()
        }
    }

    /// Whether the edit time limit also binds an integration's `update` to a press: 6.7.2
    /// checks it in `App.UpdatePost` (`app/post.go`), which applies the update; 11.4 in the
    /// API handler only (`updatePost`/`patchPost` in `server/channels/api4/post.go`).
    pub fn edit_limit_binds_integrations(&self) -> bool {
        self.version.major < 11
    }

    /// The refusal of an edit of a post created at `create_at` (ms) at `now` (ms) that
    /// changes its message, under the post edit time limit: 400
    /// `api.post.update_post.permissions_time_limit.app_error` (both lines).
    pub fn edit_refused(
        &self,
        create_at: i64,
        now: i64,
        message_changes: bool,
    ) -> Option<Response> {
        let limit = self.post_edit_time_limit;
        (limit != -1 && now > create_at + limit * 1000 && message_changes).then(|| {
            app_error(
                400,
                "api.post.update_post.permissions_time_limit.app_error",
                &format!("You can only edit a post for {limit} seconds. Please ask a System Administrator for more details."),
                "",
            )
        })
    }

    /// The `metadata` a created post keeps: 11.4 keeps the client's priority
    /// (`savePostsPriority`, `server/channels/store/sqlstore/post_store.go`) and drops its
    /// embeds (`Post.SanitizeInput`, `server/public/model/post.go`); a server before 7.7
    /// knows no priority, and 6.7.2 computes the metadata itself.
    pub fn kept_metadata(&self, sent: &Map<String, Value>) -> Map<String, Value> {
        let mut kept = Map::new();
        if self.version >= PRIORITY_SINCE
            && let Some(priority) = sent.get("priority").filter(|p| p.is_object())
        {
            kept.insert("priority".into(), priority.clone());
        }
        kept
    }

    /// `postPriorityCheck` (`server/channels/app/post_permission_utils.go`, 11.4) for a post
    /// with `metadata` under `root_id`: priority switched off is 403, priority on a reply
    /// 400, an acknowledgement or persistent notifications without a licence 501.
    pub fn priority_refused(
        &self,
        metadata: &Map<String, Value>,
        root_id: &str,
    ) -> Option<Response> {
        if self.version < PRIORITY_SINCE {
            return None;
        }
        let priority = metadata.get("priority").filter(|p| !p.is_null())?;
        if !self.post_priority {
            return Some(app_error(
                403,
                "api.post.post_priority.priority_post_not_allowed_for_user.request_error",
                "Post priority is not allowed for this user.",
                "",
            ));
        }
        if !root_id.is_empty() {
            return Some(app_error(
                400,
                "api.post.post_priority.priority_post_only_allowed_for_root_post.request_error",
                "Post priority is only allowed for root posts.",
                "",
            ));
        }
        let flag = |key: &str| priority.get(key).and_then(Value::as_bool).unwrap_or(false);
        if (flag("requested_ack") || flag("persistent_notifications")) && !self.licensed {
            return Some(app_error(
                501,
                "license_error.feature_unavailable",
                "Feature is not available for the current license.",
                "feature is not available for the current license",
            ));
        }
        None
    }
}

/// What 11.4 finds wrong with the actions of a post's attachments: `PostAction.IsValid`
/// (`server/public/model/integration_action.go`) — a name, a style it knows, type `button`
/// (without options or a data source) or `select`, and an integration whose URL is a
/// plugin path or an http(s) URL. 11.4 only logs these ("Invalid post props. In a future
/// version this will result in an error", `Post.ValidateProps`, called from
/// `server/channels/store/sqlstore/post_store.go` on every save); the double records them.
pub fn action_problems(props: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let attachments = props
        .get("attachments")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (a, attachment) in attachments.iter().enumerate() {
        let actions = attachment
            .get("actions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, action) in actions.iter().enumerate() {
            let text = |key: &str| action.get(key).and_then(Value::as_str).unwrap_or_default();
            let mut bad = |why: String| problems.push(format!("attachment {a} action {i}: {why}"));
            if text("name").is_empty() {
                bad("action must have a name".into());
            }
            let style = text("style");
            let styles = ["default", "primary", "success", "good", "warning", "danger"];
            if !style.is_empty() && !styles.contains(&style) && !is_hex_color(style) {
                bad(format!("invalid style '{style}'"));
            }
            let has_options = action
                .get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| !o.is_empty());
            match text("type") {
                "button" => {
                    if has_options {
                        bad("button action must not have options".into());
                    }
                    if !text("data_source").is_empty() {
                        bad("button action must not have a data source".into());
                    }
                }
                "select" => {
                    if text("data_source").is_empty() && !has_options {
                        bad("select action must have either DataSource or Options set".into());
                    }
                }
                other => bad(format!(
                    "invalid action type {other:?}: must be 'button' or 'select'"
                )),
            }
            match action.pointer("/integration/url").and_then(Value::as_str) {
                None => bad("action must have integration settings".into()),
                Some("") => bad("action must have an integration URL".into()),
                Some(url)
                    if !(url.starts_with("/plugins/")
                        || url.starts_with("plugins/")
                        || is_http_url(url)) =>
                {
                    bad("action must have an valid integration URL".into())
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// `model.IsValidHTTPURL`: an http or https URL with a host.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// `#rgb` or `#rrggbb`.
fn is_hex_color(text: &str) -> bool {
    let hex = text.strip_prefix('#').unwrap_or("");
    matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

impl MattermostDouble {
    /// Plays Mattermost `version` (e.g. "6.7.2" or "11.4.0"): its client config says so, and
    /// every behaviour in this module follows it. Set it before the plugin first reads the
    /// client config (e.g. in [`crate::stack::Stack::start_with`]'s setup).
    pub fn set_version(&self, version: &str) {
        self.state().line.version =
            ServerVersion::parse(version).unwrap_or_else(|| panic!("not a version: {version}"));
    }

    /// The version the double plays.
    pub fn version(&self) -> ServerVersion {
        self.state().line.version
    }

    /// Sets `ServiceSettings.OutgoingIntegrationRequestsTimeout` (the trigger lifetime from
    /// 9.5).
    pub fn set_outgoing_integration_timeout(&self, timeout: Duration) {
        self.state().line.outgoing_timeout = timeout;
    }

    /// Sets `ServiceSettings.PostEditTimeLimit`, in seconds; -1 for none.
    pub fn set_post_edit_time_limit(&self, seconds: i64) {
        self.state().line.post_edit_time_limit = seconds;
    }

    /// Switches `ServiceSettings.PostPriority`.
    pub fn set_post_priority(&self, enabled: bool) {
        self.state().line.post_priority = enabled;
    }

    /// Gives the server a Professional licence (or takes it away).
    pub fn set_licensed(&self, licensed: bool) {
        self.state().line.licensed = licensed;
    }

    /// What 11.4 would have logged as invalid post props, `(post id, problem)`, for every
    /// post created or edited so far (see [`action_problems`]).
    pub fn invalid_props(&self) -> Vec<(String, String)> {
        self.state().invalid_props.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(action: Value) -> Map<String, Value> {
        json!({"attachments": [{"actions": [action]}]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn actions_are_judged_as_11_4_judges_them() {
        let good = json!({"id": "approve", "type": "button", "name": "Approve", "style": "success",
                          "integration": {"url": "https://cb.example.com/v1/actions/a/b", "context": {}}});
        assert!(action_problems(&props(good.clone())).is_empty());
        let mut nameless = good.clone();
        nameless["name"] = json!("");
        assert_eq!(action_problems(&props(nameless)).len(), 1);
        let mut untyped = good.clone();
        untyped.as_object_mut().unwrap().remove("type");
        assert!(action_problems(&props(untyped))[0].contains("invalid action type"));
        let mut ftp = good.clone();
        ftp["integration"]["url"] = json!("ftp://cb.example.com/x");
        assert!(action_problems(&props(ftp))[0].contains("valid integration URL"));
        let mut plugin = good;
        plugin["integration"]["url"] = json!("/plugins/com.example/x");
        assert!(action_problems(&props(plugin)).is_empty());
    }

    #[test]
    fn the_lines_differ_where_the_source_says() {
        let old = Line {
            version: V6_7_2,
            ..Line::default()
        };
        let current = Line::default();
        assert_eq!(old.trigger_lifetime(), Duration::from_secs(3));
        assert_eq!(current.trigger_lifetime(), Duration::from_secs(30));
        assert_eq!(current.submission_team("", "team1"), "team1");
        let later = Line {
            version: V11_10_0,
            ..Line::default()
        };
        assert_eq!(later.submission_team("", "team1"), "");
        let ack = json!({"priority": {"priority": "", "requested_ack": true}});
        let ack = ack.as_object().unwrap();
        assert!(old.priority_refused(ack, "").is_none());
        assert_eq!(current.priority_refused(ack, "").unwrap().status(), 501);
        assert_eq!(current.priority_refused(ack, "root").unwrap().status(), 400);
        assert!(old.kept_metadata(ack).is_empty());
        assert_eq!(current.kept_metadata(ack).len(), 1);
    }
}

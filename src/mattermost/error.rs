//! Typed errors of the Mattermost client. Each says what failed, where, and what to do.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// Mattermost's error body (`model.AppError`): `{id, message, detailed_error, request_id,
/// status_code}`. Some answers are not JSON at all (the server's own rate limiter answers
/// 429 with the text `limit exceeded`; proxies answer with HTML); those keep their text in
/// `message` and leave the other fields empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ApiError {
    /// Translation id, e.g. `api.context.session_expired.app_error`.
    pub id: String,
    /// Human-readable message.
    pub message: String,
    /// Server-side detail (may be empty).
    pub detailed_error: String,
    /// Request id, for the server's logs.
    pub request_id: String,
    /// HTTP status the server meant.
    pub status_code: u16,
}

impl ApiError {
    /// Parses an error body. Never fails: a body that is not Mattermost's JSON becomes the
    /// message (trimmed and shortened), and an empty body becomes the HTTP reason phrase.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        if let Ok(mut parsed) = serde_json::from_slice::<ApiError>(body)
            && !(parsed.message.is_empty() && parsed.id.is_empty())
        {
            if parsed.status_code == 0 {
                parsed.status_code = status;
            }
            return parsed;
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        // JSON without a message (`{}`) says nothing a reason phrase would not say better.
        let useless = text.is_empty() || serde_json::from_str::<serde_json::Value>(text).is_ok();
        let message = if useless {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no error message")
                .to_string()
        } else {
            shorten(text, 200)
        };
        Self {
            message,
            status_code: status,
            ..Self::default()
        }
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The error id of an edit refused by the post edit time limit.
pub const EDIT_TIME_LIMIT_ID: &str = "api.post.update_post.permissions_time_limit.app_error";
/// The error id of a feature the server's licence does not include (a post's
/// `requested_ack` or `persistent_notifications` on an unlicensed server, with 501).
pub const LICENSE_UNAVAILABLE_ID: &str = "license_error.feature_unavailable";
/// The error id of a post priority the server does not allow (`ServiceSettings.PostPriority`
/// off, with 403).
pub const PRIORITY_NOT_ALLOWED_ID: &str =
    "api.post.post_priority.priority_post_not_allowed_for_user.request_error";

/// Why a server refused a post's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityRefusal {
    /// 501: acknowledgements need a licence (Professional or above) the server lacks.
    Unlicensed,
    /// 403: the admin switched message priority off (`ServiceSettings.PostPriority`).
    Disabled,
}

/// What the client was doing when it failed: `GET /api/v4/users/me`.
pub type Endpoint = String;

/// Everything that can go wrong talking to Mattermost.
///
/// Cloneable (inner errors are shared) so that one failed lookup can be handed to every
/// caller waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MattermostError {
    /// The settings cannot work (e.g. a base URL that cannot take a path).
    #[error("invalid Mattermost settings: {0}")]
    Config(String),

    /// The token file could not be read or is empty.
    #[error("cannot use the Mattermost bot token file {}: {reason}", path.display())]
    TokenFile {
        /// The configured file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// 401: the token is wrong, revoked or expired.
    #[error(
        "Mattermost rejected {endpoint} (401): {}. Check the bot token.",
        trim_dot(&api.message)
    )]
    Unauthorized {
        /// Method and path.
        endpoint: Endpoint,
        /// The server's error body (boxed: it is large and errors travel in `Result`s).
        api: Box<ApiError>,
    },

    /// 404 on a lookup: the named team, channel or user does not exist (or the bot cannot
    /// see it).
    #[error(
        "Mattermost has no {what} ({endpoint}, 404): {}. Check the name and that the bot can see it.",
        trim_dot(&api.message)
    )]
    NotFound {
        /// What was looked up, e.g. `team "ops"`.
        what: String,
        /// Method and path.
        endpoint: Endpoint,
        /// The server's error body.
        api: Box<ApiError>,
    },

    /// Any other error status.
    #[error("Mattermost rejected {endpoint} ({status}): {}{}", trim_dot(&api.message), hint(*status, *outcome_unknown))]
    Api {
        /// Method and path.
        endpoint: Endpoint,
        /// HTTP status.
        status: u16,
        /// The server's error body.
        api: Box<ApiError>,
        /// The request was a create that the server may have carried out anyway.
        outcome_unknown: bool,
    },

    /// 429 on every attempt.
    #[error(
        "Mattermost kept rate-limiting {endpoint} (429) after {attempts} attempts. Lower the client rate limit or raise the server's RateLimitSettings."
    )]
    RateLimited {
        /// Method and path.
        endpoint: Endpoint,
        /// Attempts made.
        attempts: u32,
    },

    /// The request did not complete: connect error, timeout, connection lost.
    #[error("could not complete {endpoint}: {}{}{}", crate::error_chain(Some(source.as_ref())), transport_hint(source), if *outcome_unknown { ". The server may have carried it out." } else { "" })]
    Transport {
        /// Method and path.
        endpoint: Endpoint,
        /// The HTTP client's error.
        #[source]
        source: Arc<reqwest::Error>,
        /// The request was sent and may have been carried out.
        outcome_unknown: bool,
    },

    /// The answer was larger than any Mattermost answer to that call can be: not Mattermost
    /// (a proxy's page, a hostile server), or a misconfigured URL.
    #[error(
        "{endpoint} answered with more than {limit} bytes; no Mattermost answer to it is that large. Check that the Mattermost URL points at Mattermost itself{}",
        if *outcome_unknown { ". The server may have carried it out." } else { "" }
    )]
    TooLarge {
        /// Method and path.
        endpoint: Endpoint,
        /// The cap that was exceeded.
        limit: usize,
        /// The request was a create that may have been carried out.
        outcome_unknown: bool,
    },

    /// A success response whose body is not what the API documents.
    #[error("unexpected answer to {endpoint}: {reason}")]
    Decode {
        /// Method and path.
        endpoint: Endpoint,
        /// The parse error.
        reason: String,
        /// The request was a create that succeeded, but we could not read what it created.
        outcome_unknown: bool,
    },
}

/// What to check for a transport failure an admin can fix.
fn transport_hint(err: &reqwest::Error) -> &'static str {
    let text = crate::error_chain(Some(err)).to_ascii_lowercase();
    if super::retry::is_certificate_error(err) {
        ". The server's certificate is not trusted: if Mattermost uses an internal CA, give its certificate in mattermost.caBundleRef (operator) or mattermost.ca_file (standalone)"
    } else if text.contains("connection refused") || text.contains("dns error") {
        ". Check the Mattermost URL and that the plugin can reach it"
    } else {
        ""
    }
}

fn trim_dot(message: &str) -> &str {
    message.trim().trim_end_matches('.')
}

fn hint(status: u16, outcome_unknown: bool) -> &'static str {
    match status {
        _ if outcome_unknown => ". The server may have carried it out.",
        403 => ". Check that the bot is a member of the team and channel and may post there.",
        400 => ".",
        _ if status >= 500 => ". The Mattermost server failed; it is retried where safe.",
        _ => ".",
    }
}

impl MattermostError {
    /// The thing (team, channel, user, post) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Api { status: 404, .. })
    }

    /// The server answered that this user or channel cannot be reached (400, 403 or 404 on
    /// a lookup): asking again will not help until someone changes Mattermost. Every other
    /// failure (5xx, 429, a lost connection, a refused token) says nothing about the
    /// recipient and is worth retrying.
    pub fn is_about_the_recipient(&self) -> bool {
        matches!(self.status(), Some(400 | 403 | 404))
    }

    /// The bot token was refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// A non-idempotent request (creating a post) was sent and may have been carried out
    /// even though it failed: look for the result before trying again.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Api {
                outcome_unknown, ..
            }
            | Self::Transport {
                outcome_unknown, ..
            }
            | Self::Decode {
                outcome_unknown, ..
            }
            | Self::TooLarge {
                outcome_unknown, ..
            } => *outcome_unknown,
            _ => false,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server refused to change a post's message because it is older than the admin's
    /// post edit time limit (`ServiceSettings.PostEditTimeLimit`): 400
    /// `api.post.update_post.permissions_time_limit.app_error`, from `updatePost` in
    /// `server/channels/api4/post.go` (11.x; `UpdatePost` in `app/post.go` on 6.x). Asking
    /// again never helps.
    pub fn is_edit_time_limit(&self) -> bool {
        self.status() == Some(400) && self.api_error().is_some_and(|a| a.id == EDIT_TIME_LIMIT_ID)
    }

    /// Why the server refused a post's `metadata.priority`, if it did
    /// (`server/channels/app/post_permission_utils.go`, `postPriorityCheck`).
    pub fn priority_refusal(&self) -> Option<PriorityRefusal> {
        let api = self.api_error()?;
        match (self.status()?, api.id.as_str()) {
            (501, LICENSE_UNAVAILABLE_ID) => Some(PriorityRefusal::Unlicensed),
            (403, PRIORITY_NOT_ALLOWED_ID) => Some(PriorityRefusal::Disabled),
            _ => None,
        }
    }

    /// Mattermost's error body, if it sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Unauthorized { api, .. } | Self::NotFound { api, .. } | Self::Api { api, .. } => {
                Some(api)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mattermost_error_body() {
        let body = br#"{"id":"api.context.session_expired.app_error","message":"Invalid or expired session, please login again.","detailed_error":"token=x","request_id":"r1","status_code":401}"#;
        let api = ApiError::from_body(401, body);
        assert_eq!(api.id, "api.context.session_expired.app_error");
        assert_eq!(
            api.message,
            "Invalid or expired session, please login again."
        );
        assert_eq!(api.request_id, "r1");
        assert_eq!(api.status_code, 401);
    }

    #[test]
    fn plain_text_body_becomes_the_message() {
        let api = ApiError::from_body(429, b"limit exceeded\n");
        assert_eq!(api.message, "limit exceeded");
        assert_eq!(api.status_code, 429);
        assert_eq!(api.id, "");
    }

    #[test]
    fn empty_body_uses_the_reason_phrase() {
        assert_eq!(ApiError::from_body(502, b"").message, "Bad Gateway");
        assert_eq!(
            ApiError::from_body(500, b"{}").message,
            "Internal Server Error"
        );
    }

    #[test]
    fn long_html_body_is_shortened() {
        let body = "<html>".repeat(100);
        let api = ApiError::from_body(502, body.as_bytes());
        assert!(api.message.chars().count() <= 201, "{}", api.message);
        assert!(api.message.ends_with('…'));
    }

    #[test]
    fn unauthorized_message_names_endpoint_and_says_check_the_token() {
        let err = MattermostError::Unauthorized {
            endpoint: "GET /api/v4/users/me".into(),
            api: Box::new(ApiError::from_body(
                401,
                br#"{"id":"x","message":"Invalid or expired session, please login again."}"#,
            )),
        };
        assert_eq!(
            err.to_string(),
            "Mattermost rejected GET /api/v4/users/me (401): Invalid or expired session, please login again. Check the bot token."
        );
        assert!(err.is_unauthorized());
        assert!(!err.outcome_unknown());
    }

    #[test]
    fn not_found_names_the_thing() {
        let err = MattermostError::NotFound {
            what: "team \"ops\"".into(),
            endpoint: "GET /api/v4/teams/name/ops".into(),
            api: Box::new(ApiError::from_body(
                404,
                br#"{"id":"x","message":"Unable to find the existing team."}"#,
            )),
        };
        let text = err.to_string();
        assert!(text.contains("no team \"ops\""), "{text}");
        assert!(text.contains("Unable to find the existing team"), "{text}");
        assert!(err.is_not_found());
        assert!(err.is_about_the_recipient());
    }

    #[test]
    fn an_edit_time_limit_and_a_priority_refusal_are_told_apart() {
        let api = |status: u16, id: &str| MattermostError::Api {
            endpoint: "PUT /api/v4/posts/p1".into(),
            status,
            api: Box::new(ApiError::from_body(
                status,
                format!(r#"{{"id":"{id}","message":"m"}}"#).as_bytes(),
            )),
            outcome_unknown: false,
        };
        assert!(api(400, EDIT_TIME_LIMIT_ID).is_edit_time_limit());
        assert!(!api(400, "model.post.is_valid.message_length.app_error").is_edit_time_limit());
        assert!(!api(403, EDIT_TIME_LIMIT_ID).is_edit_time_limit());
        assert_eq!(
            api(501, LICENSE_UNAVAILABLE_ID).priority_refusal(),
            Some(PriorityRefusal::Unlicensed)
        );
        assert_eq!(
            api(403, PRIORITY_NOT_ALLOWED_ID).priority_refusal(),
            Some(PriorityRefusal::Disabled)
        );
        assert_eq!(
            api(403, "api.context.permissions.app_error").priority_refusal(),
            None
        );
        assert_eq!(api(501, "other").priority_refusal(), None);
    }

    #[test]
    fn only_answers_about_the_recipient_let_a_recipient_be_skipped() {
        let api = |status| MattermostError::Api {
            endpoint: "POST /api/v4/channels/direct".into(),
            status,
            api: Box::new(ApiError::from_body(status, b"")),
            outcome_unknown: false,
        };
        for status in [400, 403, 404] {
            assert!(api(status).is_about_the_recipient(), "{status}");
        }
        for status in [500, 502, 503] {
            assert!(!api(status).is_about_the_recipient(), "{status}");
        }
        let rate_limited = MattermostError::RateLimited {
            endpoint: "GET /api/v4/users/username/carol".into(),
            attempts: 6,
        };
        assert!(!rate_limited.is_about_the_recipient());
        let refused = MattermostError::Unauthorized {
            endpoint: "GET /api/v4/users/username/carol".into(),
            api: Box::new(ApiError::from_body(401, b"")),
        };
        assert!(!refused.is_about_the_recipient());
    }
}

//! Signed button contexts.
//!
//! Mattermost sends no signature of its own with a button press, so the context we post
//! carries one: HMAC-SHA256, keyed with the instance's signing secret, over the instance,
//! the action, the request id, the channel the post lives in, and an expiry. A context copied
//! onto another request, another channel or another instance, or used after expiry, fails.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::settings::{InstanceId, Secret};

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Approve the request.
    Approve,
    /// Deny the request.
    Deny,
}

/// The shortest signing secret accepted: with it, a button signature cannot be guessed.
pub const MIN_SECRET_CHARS: usize = 32;
/// The placeholder `teleport-mattermost configure` prints; never a real secret.
pub const EXAMPLE_SECRET: &str = "signing-secret-value";

/// Why `secret` cannot sign buttons, if it cannot: anyone who guesses it can forge an
/// approval in anyone's name.
pub fn weak_secret(secret: &str) -> Option<String> {
    let how = "make one with: openssl rand -hex 32";
    if secret.trim() == EXAMPLE_SECRET {
        Some(format!(
            "is the example value printed by `configure`; {how}"
        ))
    } else if secret.chars().count() < MIN_SECRET_CHARS {
        Some(format!(
            "is {} characters long; use at least {MIN_SECRET_CHARS} random characters ({how})",
            secret.chars().count()
        ))
    } else {
        None
    }
}

impl Action {
    /// The state the action sets.
    pub fn state(self) -> crate::request::RequestState {
        match self {
            Action::Approve => crate::request::RequestState::Approved,
            Action::Deny => crate::request::RequestState::Denied,
        }
    }

    /// The lowercase name used in contexts and signatures.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
        }
    }
}

/// The `context` object of a button, exactly as posted and as Mattermost sends it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionContext {
    /// What the button does.
    pub action: Action,
    /// The access request id.
    pub request_id: String,
    /// The channel of the post carrying the button.
    pub channel_id: String,
    /// Unix seconds after which the button no longer works.
    pub expires: i64,
    /// Hex HMAC-SHA256 over the other fields and the instance.
    pub signature: String,
}

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature does not match: tampered, copied, or signed with another secret.
    #[error("the button signature is not valid for this request and channel")]
    Invalid,
    /// The button is past its expiry.
    #[error("the button expired at unix time {expires}")]
    Expired {
        /// When it expired.
        expires: i64,
    },
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 over `fields` under a `domain` naming what is signed, so a tag made for one
/// kind of object never verifies as another.
fn tag(secret: &Secret, domain: &str, fields: &[&str]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    // Length-prefix every field so no two different field lists share an encoding.
    for field in std::iter::once(domain).chain(fields.iter().copied()) {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    mac
}

/// Checks a hex `signature` against `mac` in constant time.
fn check(mac: HmacSha256, signature: &str) -> Result<(), SignatureError> {
    let tag = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
    mac.verify_slice(&tag).map_err(|_| SignatureError::Invalid)
}

fn expiry(now: i64, expires: i64) -> Result<(), SignatureError> {
    if now > expires {
        return Err(SignatureError::Expired { expires });
    }
    Ok(())
}

fn mac(
    secret: &Secret,
    instance: &InstanceId,
    action: Action,
    request_id: &str,
    channel_id: &str,
    expires: i64,
) -> HmacSha256 {
    tag(
        secret,
        "teleport-mattermost/action/v1",
        &[
            &instance.namespace,
            &instance.name,
            action.as_str(),
            request_id,
            channel_id,
            &expires.to_string(),
        ],
    )
}

impl ActionContext {
    /// Builds and signs a context.
    pub fn signed(
        secret: &Secret,
        instance: &InstanceId,
        action: Action,
        request_id: &str,
        channel_id: &str,
        expires: i64,
    ) -> Self {
        let tag = mac(secret, instance, action, request_id, channel_id, expires).finalize();
        Self {
            action,
            request_id: request_id.to_string(),
            channel_id: channel_id.to_string(),
            expires,
            signature: hex::encode(tag.into_bytes()),
        }
    }

    /// Checks the signature in constant time, then the expiry against `now` (unix seconds).
    pub fn verify(
        &self,
        secret: &Secret,
        instance: &InstanceId,
        now: i64,
    ) -> Result<(), SignatureError> {
        check(
            mac(
                secret,
                instance,
                self.action,
                &self.request_id,
                &self.channel_id,
                self.expires,
            ),
            &self.signature,
        )?;
        expiry(now, self.expires)
    }

    /// The context as the JSON object posted in `integration.context`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a context always serializes")
    }
}

/// The `state` of a reason dialog. Unlike a button's context, it travels through the
/// reviewer's browser and comes back with the submission, so the reviewer can read and change
/// it: it is signed over everything it says, including who it was opened for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogState {
    /// What submitting does.
    pub action: Action,
    /// The access request id.
    pub request_id: String,
    /// The channel of the pressed post.
    pub channel_id: String,
    /// The pressed post, for the late-outcome thread reply.
    pub post_id: String,
    /// The Mattermost user the dialog was opened for; the submitter must be them.
    pub user_id: String,
    /// Unix seconds after which the dialog no longer works.
    pub expires: i64,
    /// Hex HMAC-SHA256 over the other fields and the instance.
    pub signature: String,
}

/// The unsigned fields of a [`DialogState`].
#[derive(Debug, Clone, Copy)]
pub struct DialogFields<'a> {
    /// What submitting does.
    pub action: Action,
    /// The access request id.
    pub request_id: &'a str,
    /// The channel of the pressed post.
    pub channel_id: &'a str,
    /// The pressed post.
    pub post_id: &'a str,
    /// Who the dialog is for.
    pub user_id: &'a str,
    /// Unix seconds after which it no longer works.
    pub expires: i64,
}

fn dialog_mac(secret: &Secret, instance: &InstanceId, f: DialogFields<'_>) -> HmacSha256 {
    tag(
        secret,
        "teleport-mattermost/dialog/v1",
        &[
            &instance.namespace,
            &instance.name,
            f.action.as_str(),
            f.request_id,
            f.channel_id,
            f.post_id,
            f.user_id,
            &f.expires.to_string(),
        ],
    )
}

impl DialogState {
    /// Builds and signs a state.
    pub fn signed(secret: &Secret, instance: &InstanceId, fields: DialogFields<'_>) -> Self {
        let tag = dialog_mac(secret, instance, fields).finalize();
        Self {
            action: fields.action,
            request_id: fields.request_id.to_string(),
            channel_id: fields.channel_id.to_string(),
            post_id: fields.post_id.to_string(),
            user_id: fields.user_id.to_string(),
            expires: fields.expires,
            signature: hex::encode(tag.into_bytes()),
        }
    }

    fn fields(&self) -> DialogFields<'_> {
        DialogFields {
            action: self.action,
            request_id: &self.request_id,
            channel_id: &self.channel_id,
            post_id: &self.post_id,
            user_id: &self.user_id,
            expires: self.expires,
        }
    }

    /// Checks the signature in constant time, then the expiry against `now` (unix seconds).
    pub fn verify(
        &self,
        secret: &Secret,
        instance: &InstanceId,
        now: i64,
    ) -> Result<(), SignatureError> {
        check(dialog_mac(secret, instance, self.fields()), &self.signature)?;
        expiry(now, self.expires)
    }

    /// The state as the string a dialog carries.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a state always serializes")
    }

    /// Parses a submitted state; `None` when it is not one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("s3cret")
    }
    fn instance() -> InstanceId {
        InstanceId::new("teleport", "team-a")
    }
    fn ctx() -> ActionContext {
        ActionContext::signed(
            &secret(),
            &instance(),
            Action::Approve,
            "req-1",
            "chan-1",
            2_000,
        )
    }

    #[test]
    fn a_signed_context_is_accepted() {
        assert_eq!(ctx().verify(&secret(), &instance(), 1_000), Ok(()));
    }

    #[test]
    fn json_round_trip_keeps_it_valid() {
        let back: ActionContext = serde_json::from_value(ctx().to_json()).unwrap();
        assert_eq!(back.verify(&secret(), &instance(), 1_000), Ok(()));
    }

    #[test]
    fn any_signed_field_changed_is_rejected() {
        type Change = fn(&mut ActionContext);
        let changes: [(&str, Change); 4] = [
            ("action", |c| c.action = Action::Deny),
            ("request (a replay)", |c| c.request_id = "req-2".into()),
            ("channel", |c| c.channel_id = "chan-2".into()),
            ("expiry extended", |c| c.expires += 1),
        ];
        for (what, change) in changes {
            let mut c = ctx();
            change(&mut c);
            assert_eq!(
                c.verify(&secret(), &instance(), 1_000),
                Err(SignatureError::Invalid),
                "{what}"
            );
        }
    }

    #[test]
    fn expired_context_is_rejected() {
        assert_eq!(
            ctx().verify(&secret(), &instance(), 2_001),
            Err(SignatureError::Expired { expires: 2_000 })
        );
    }

    #[test]
    fn another_instance_or_secret_is_rejected() {
        assert_eq!(
            ctx().verify(&secret(), &InstanceId::new("teleport", "team-b"), 1_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            ctx().verify(&Secret::new("other"), &instance(), 1_000),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn garbage_signature_is_rejected_without_panic() {
        let mut c = ctx();
        c.signature = "zz-not-hex".into();
        assert_eq!(
            c.verify(&secret(), &instance(), 1_000),
            Err(SignatureError::Invalid)
        );
        c.signature = String::new();
        assert_eq!(
            c.verify(&secret(), &instance(), 1_000),
            Err(SignatureError::Invalid)
        );
    }

    fn dialog() -> DialogState {
        DialogState::signed(
            &secret(),
            &instance(),
            DialogFields {
                action: Action::Deny,
                request_id: "req-1",
                channel_id: "chan-1",
                post_id: "post-1",
                user_id: "user-1",
                expires: 2_000,
            },
        )
    }

    #[test]
    fn a_dialog_state_survives_its_round_trip_through_the_browser() {
        let back = DialogState::decode(&dialog().encode()).unwrap();
        assert_eq!(back.verify(&secret(), &instance(), 1_000), Ok(()));
        assert_eq!(
            back.verify(&secret(), &instance(), 2_001),
            Err(SignatureError::Expired { expires: 2_000 })
        );
    }

    #[test]
    fn any_changed_dialog_field_is_rejected() {
        type Change = fn(&mut DialogState);
        let changes: [(&str, Change); 6] = [
            ("action", |d| d.action = Action::Approve),
            ("request", |d| d.request_id = "req-2".into()),
            ("channel", |d| d.channel_id = "chan-2".into()),
            ("post", |d| d.post_id = "post-2".into()),
            ("user (someone else's dialog)", |d| {
                d.user_id = "user-2".into()
            }),
            ("expiry", |d| d.expires += 60),
        ];
        for (what, change) in changes {
            let mut d = dialog();
            change(&mut d);
            assert_eq!(
                d.verify(&secret(), &instance(), 1_000),
                Err(SignatureError::Invalid),
                "{what}"
            );
        }
    }

    #[test]
    fn a_button_signature_does_not_sign_a_dialog() {
        // Same secret, overlapping fields: the domains keep the two apart.
        let button = ActionContext::signed(
            &secret(),
            &instance(),
            Action::Deny,
            "req-1",
            "chan-1",
            2_000,
        );
        let mut d = dialog();
        d.signature = button.signature;
        assert_eq!(
            d.verify(&secret(), &instance(), 1_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(DialogState::decode("not json"), None);
    }
}

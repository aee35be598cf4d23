//! The resolution reason a press writes to Teleport, and who Teleport's reason says decided.
//!
//! Teleport keeps no delegator on the request itself (it goes to the audit log only), but it
//! keeps the resolve reason. A press writes "Approved by Mattermost user @alice …", so the
//! posts name a person only when Teleport's own reason for its final state says so: never
//! the holder of a claim, whose press may have failed while someone else decided in tctl or
//! the web UI.

use crate::request::RequestState;

const VIA: &str = " via the Mattermost plugin";

/// "Approved" or "Denied", as a press's reason starts.
fn past(state: RequestState) -> Option<&'static str> {
    match state {
        RequestState::Approved => Some("Approved"),
        RequestState::Denied => Some("Denied"),
        _ => None,
    }
}

/// True for a Mattermost username: lowercase letters, digits, `.`, `-` and `_` (Mattermost's
/// own rule, `model.IsValidUsernameAllowRemote` without the remote part), and none of the
/// names it reserves for channel-wide mentions.
pub fn is_username(name: &str) -> bool {
    !name.is_empty()
        && !["all", "channel", "here"].contains(&name)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

/// The reason written to Teleport: who decided, through what, and what they said.
/// `email` may be empty when Mattermost hides it.
pub fn resolution_reason(state: RequestState, username: &str, email: &str, given: &str) -> String {
    let verb = past(state).unwrap_or("Resolved");
    let email = if email.is_empty() {
        String::new()
    } else {
        format!(" ({email})")
    };
    let who = format!("{verb} by Mattermost user @{username}{email}{VIA}");
    if given.is_empty() {
        who
    } else {
        format!("{who}: {given}")
    }
}

/// Who Teleport's resolve reason says made the decision to `state`, as `@username`: only a
/// reason a press wrote for that same state names anyone.
pub fn decided_by(state: RequestState, reason: &str) -> Option<String> {
    let rest = reason.strip_prefix(past(state)?)?;
    let rest = rest.strip_prefix(" by Mattermost user @")?;
    let end = rest.find([' ', ':']).unwrap_or(rest.len());
    let (username, after) = rest.split_at(end);
    let well_formed = after.starts_with(VIA) || after.starts_with(" (");
    (is_username(username) && well_formed).then(|| format!("@{username}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_who_decided_and_keeps_what_they_said() {
        assert_eq!(
            resolution_reason(
                RequestState::Denied,
                "carol",
                "carol@example.com",
                "not now"
            ),
            "Denied by Mattermost user @carol (carol@example.com) via the Mattermost plugin: not now"
        );
        assert_eq!(
            resolution_reason(RequestState::Approved, "alice", "", ""),
            "Approved by Mattermost user @alice via the Mattermost plugin"
        );
    }

    #[test]
    fn teleports_reason_says_who_decided_only_for_its_own_state() {
        let approved = resolution_reason(RequestState::Approved, "alice", "a@example.com", "ok");
        assert_eq!(
            decided_by(RequestState::Approved, &approved).as_deref(),
            Some("@alice")
        );
        let plain = resolution_reason(RequestState::Denied, "carol.x-1", "", "");
        assert_eq!(
            decided_by(RequestState::Denied, &plain).as_deref(),
            Some("@carol.x-1")
        );
        // A revocation in tctl keeps nothing of the press's reason.
        assert_eq!(decided_by(RequestState::Denied, &approved), None);
        assert_eq!(decided_by(RequestState::Approved, ""), None);
        assert_eq!(decided_by(RequestState::Approved, "approved in tctl"), None);
        assert_eq!(decided_by(RequestState::Expired, &approved), None);
        // Nothing that is not a Mattermost username is ever shown as one.
        for forged in [
            "Approved by Mattermost user @[x](https://evil.example) via the Mattermost plugin",
            "Approved by Mattermost user @ALL via the Mattermost plugin",
            "Approved by Mattermost user @channel via the Mattermost plugin",
            "Approved by Mattermost user @here (x@example.com) via the Mattermost plugin",
            "Approved by Mattermost user @channel\n**Status** via the Mattermost plugin",
            "Approved by Mattermost user @ via the Mattermost plugin",
            "Approved by Mattermost user @alice",
        ] {
            assert_eq!(
                decided_by(RequestState::Approved, forged),
                None,
                "{forged:?}"
            );
        }
    }
}

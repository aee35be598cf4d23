//! Who hears about a request: the configured channel, suggested reviewers, `recipients`, and
//! `role_to_recipients` (per role, falling back to `"*"`).

use std::collections::BTreeMap;

use crate::request::AccessRequest;

/// One recipient as configured or suggested, before it is resolved to a channel id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipient {
    /// A channel, by team and channel URL names.
    Channel {
        /// Team URL name.
        team: String,
        /// Channel URL name.
        channel: String,
    },
    /// A user by email, reached by DM.
    Email(String),
    /// A user by username, reached by DM.
    Username(String),
}

impl Recipient {
    /// Classifies a configured entry: `team/channel`, an email, or a username (a leading `@` is dropped).
    pub fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim();
        if entry.is_empty() {
            return None;
        }
        if entry.contains('@') && !entry.starts_with('@') {
            return Some(Recipient::Email(entry.to_string()));
        }
        if let Some((team, channel)) = entry.split_once('/') {
            if !team.is_empty() && !channel.is_empty() {
                return Some(Recipient::Channel {
                    team: team.to_string(),
                    channel: channel.to_string(),
                });
            }
            return None;
        }
        Some(Recipient::Username(
            entry.trim_start_matches('@').to_string(),
        ))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Channel { team, channel } => write!(f, "channel {team}/{channel}"),
            Recipient::Email(e) => write!(f, "user {e}"),
            Recipient::Username(u) => write!(f, "user @{u}"),
        }
    }
}

/// Everyone a request goes to, in a stable order: the main channel first, then `recipients`,
/// role recipients and suggested reviewers. Duplicate entries are dropped here; entries that
/// resolve to the same channel id are dropped after resolution.
pub fn recipients_for(
    request: &AccessRequest,
    main: &Recipient,
    recipients: &[String],
    role_to_recipients: &BTreeMap<String, Vec<String>>,
) -> Vec<Recipient> {
    let mut out = vec![main.clone()];
    let fallback = role_to_recipients.get("*");
    let by_role = request.roles.iter().flat_map(|role| {
        role_to_recipients
            .get(role)
            .or(fallback)
            .into_iter()
            .flatten()
    });
    let entries = recipients
        .iter()
        .chain(by_role)
        .chain(request.suggested_reviewers.iter());
    for recipient in entries.filter_map(|e| Recipient::parse(e)) {
        if !out.contains(&recipient) {
            out.push(recipient);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestState;

    fn request(roles: &[&str], reviewers: &[&str]) -> AccessRequest {
        AccessRequest {
            id: "r".into(),
            user: "bob".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            state: RequestState::Pending,
            suggested_reviewers: reviewers.iter().map(|s| s.to_string()).collect(),
            ..AccessRequest::default()
        }
    }

    fn main() -> Recipient {
        Recipient::parse("team/access").unwrap()
    }

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            Recipient::parse(" a@example.com "),
            Some(Recipient::Email("a@example.com".into()))
        );
        assert_eq!(
            Recipient::parse("@alice"),
            Some(Recipient::Username("alice".into()))
        );
        assert_eq!(
            Recipient::parse("t/c"),
            Some(Recipient::Channel {
                team: "t".into(),
                channel: "c".into()
            })
        );
        assert_eq!(Recipient::parse(""), None);
        assert_eq!(Recipient::parse("/c"), None);
    }

    #[test]
    fn role_without_entry_falls_back_to_star() {
        let map = BTreeMap::from([
            ("dba".to_string(), vec!["dba@example.com".to_string()]),
            ("*".to_string(), vec!["ops/oncall".to_string()]),
        ]);
        let got = recipients_for(&request(&["dba", "admin"], &[]), &main(), &[], &map);
        assert_eq!(
            got,
            vec![
                main(),
                Recipient::Email("dba@example.com".into()),
                Recipient::parse("ops/oncall").unwrap(),
            ]
        );
    }

    #[test]
    fn duplicates_are_dropped_and_order_is_stable() {
        let got = recipients_for(
            &request(&[], &["alice@example.com", "alice@example.com", "carol"]),
            &main(),
            &["team/access".to_string(), "alice@example.com".to_string()],
            &BTreeMap::new(),
        );
        assert_eq!(
            got,
            vec![
                main(),
                Recipient::Email("alice@example.com".into()),
                Recipient::Username("carol".into()),
            ]
        );
    }
}

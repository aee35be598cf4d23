//! Who hears about a request: the instance's channel, the admin's `recipients` and
//! `role_to_recipients` (per role, falling back to `"*"`), and at most a few of the
//! requester's suggested reviewers.
//!
//! When access monitoring rules give a request recipients, those replace `role_to_recipients`
//! and the suggested reviewers for it (Teleport's plugin does the same); the instance's channel
//! and `recipients` still get it. Rule recipients are admin policy, written in Teleport.
//!
//! Channels come only from the admin. A suggested reviewer is a person or nothing: a
//! `team/channel` (or an empty or malformed entry) is dropped, so a requester can neither
//! pick a channel nor fan a request out without bound.

use std::collections::{BTreeMap, BTreeSet};

use crate::request::AccessRequest;
use crate::review::ChannelName;
use crate::review::people::{NotAPerson, Person, PersonRef, is_requester};

/// One recipient as the admin configured it, before it is resolved to a channel id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipient {
    /// A channel, by team and channel URL names.
    Channel(ChannelName),
    /// A person, reached by direct message.
    Person(PersonRef),
}

impl Recipient {
    /// Classifies an admin's entry: `team/channel`, an email, or a username (a leading `@`
    /// is dropped).
    pub fn parse(entry: &str) -> Option<Self> {
        if let Some(channel) = ChannelName::parse(entry) {
            return Some(Recipient::Channel(channel));
        }
        PersonRef::parse(entry).ok().map(Recipient::Person)
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Channel(c) => write!(f, "channel {c}"),
            Recipient::Person(p) => p.fmt(f),
        }
    }
}

/// Where a request goes, before Mattermost is asked anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// The instance's channel first, then the admin's recipients and role recipients, in a
    /// stable order without duplicates.
    pub admin: Vec<Recipient>,
    /// The suggested reviewers that name people, without the requester or duplicates, in the
    /// requester's order.
    pub suggested: Vec<PersonRef>,
    /// How many of `suggested` get a direct message: at most the admin's maximum.
    pub messaged: usize,
    /// Suggested reviewers that name no person, and why.
    pub dropped: Vec<(String, NotAPerson)>,
}

impl Fanout {
    /// The suggested reviewers who get a direct message.
    pub fn messaged(&self) -> &[PersonRef] {
        &self.suggested[..self.messaged]
    }

    /// The suggested reviewers' names, for the post's line about them.
    pub fn suggested_names(&self) -> Vec<String> {
        self.suggested
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }
}

/// Plans where `request` goes: `main`, the admin's recipients, then either the recipients the
/// access monitoring rules gave it (`rules`, when some) or its role recipients and the first
/// `max_suggested` suggested reviewers that name people.
pub fn fanout(
    request: &AccessRequest,
    main: &ChannelName,
    recipients: &[String],
    role_to_recipients: &BTreeMap<String, Vec<String>>,
    max_suggested: usize,
    rules: Option<&BTreeSet<String>>,
) -> Fanout {
    let mut admin = vec![Recipient::Channel(main.clone())];
    let fallback = role_to_recipients.get("*");
    let by_role: Vec<&String> = match rules {
        Some(routed) => routed.iter().collect(),
        None => request
            .roles
            .iter()
            .flat_map(|role| {
                role_to_recipients
                    .get(role)
                    .or(fallback)
                    .into_iter()
                    .flatten()
            })
            .collect(),
    };
    for recipient in recipients
        .iter()
        .chain(by_role)
        .filter_map(|e| Recipient::parse(e))
    {
        if !admin.contains(&recipient) {
            admin.push(recipient);
        }
    }

    let mut suggested: Vec<PersonRef> = Vec::new();
    let mut dropped = Vec::new();
    for entry in &request.suggested_reviewers {
        match PersonRef::parse(entry) {
            Ok(person) => {
                let (username, email) = match &person {
                    PersonRef::Email(e) => ("", e.as_str()),
                    PersonRef::Username(u) => (u.as_str(), ""),
                };
                let own = is_requester(&request.user, Person { username, email });
                if !own && !suggested.contains(&person) {
                    suggested.push(person);
                }
            }
            Err(why) => dropped.push((entry.clone(), why)),
        }
    }
    // Routed by rules: the suggested reviewers are still shown, but not messaged.
    let messaged = if rules.is_some() {
        0
    } else {
        suggested.len().min(max_suggested)
    };
    Fanout {
        admin,
        suggested,
        messaged,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestState;

    fn request(roles: &[&str], reviewers: &[&str]) -> AccessRequest {
        AccessRequest {
            id: "r".into(),
            user: "bob@example.com".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            state: RequestState::Pending,
            suggested_reviewers: reviewers.iter().map(|s| s.to_string()).collect(),
            ..AccessRequest::default()
        }
    }

    fn main() -> ChannelName {
        ChannelName::new("team", "access")
    }

    fn person(s: &str) -> Recipient {
        Recipient::Person(PersonRef::parse(s).unwrap())
    }

    #[test]
    fn admin_entries_are_channels_or_people() {
        assert_eq!(
            Recipient::parse("t/c"),
            Some(Recipient::Channel(ChannelName::new("t", "c")))
        );
        assert_eq!(
            Recipient::parse(" a@example.com "),
            Some(person("a@example.com"))
        );
        assert_eq!(Recipient::parse("@alice"), Some(person("alice")));
        assert_eq!(Recipient::parse(""), None);
        assert_eq!(Recipient::parse("/c"), None);
    }

    #[test]
    fn role_without_entry_falls_back_to_star() {
        let map = BTreeMap::from([
            ("dba".to_string(), vec!["dba@example.com".to_string()]),
            ("*".to_string(), vec!["ops/oncall".to_string()]),
        ]);
        let got = fanout(
            &request(&["dba", "admin"], &[]),
            &main(),
            &[],
            &map,
            10,
            None,
        );
        assert_eq!(
            got.admin,
            vec![
                Recipient::Channel(main()),
                person("dba@example.com"),
                Recipient::parse("ops/oncall").unwrap(),
            ]
        );
    }

    #[test]
    fn suggestions_are_people_never_channels_and_never_the_requester() {
        let got = fanout(
            &request(
                &[],
                &[
                    "alice@example.com",
                    "alice@example.com",
                    "security/secret-channel",
                    "",
                    "carol",
                    "bob",
                    "BOB@example.com",
                    "x y",
                ],
            ),
            &main(),
            &["team/access".to_string()],
            &BTreeMap::new(),
            10,
            None,
        );
        assert_eq!(got.admin, vec![Recipient::Channel(main())]);
        assert_eq!(
            got.suggested,
            vec![
                PersonRef::Email("alice@example.com".into()),
                PersonRef::Username("carol".into()),
            ]
        );
        assert_eq!(
            got.dropped,
            vec![
                ("security/secret-channel".to_string(), NotAPerson::Channel),
                (String::new(), NotAPerson::Empty),
                ("x y".to_string(), NotAPerson::Malformed),
            ]
        );
    }

    #[test]
    fn only_the_first_few_suggestions_are_messaged() {
        let many: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let got = fanout(
            &request(&[], &refs),
            &main(),
            &[],
            &BTreeMap::new(),
            10,
            None,
        );
        assert_eq!(got.suggested.len(), 300);
        assert_eq!(got.messaged().len(), 10);
        assert_eq!(got.messaged()[9], PersonRef::Username("user9".into()));
        let none = fanout(
            &request(&[], &refs),
            &main(),
            &[],
            &BTreeMap::new(),
            0,
            None,
        );
        assert!(none.messaged().is_empty());
    }

    #[test]
    fn rule_recipients_replace_role_recipients_and_suggestions_but_not_the_admins() {
        let map = BTreeMap::from([("dba".to_string(), vec!["dba@example.com".to_string()])]);
        let routed = BTreeSet::from(["sec/alerts".to_string(), "carol".to_string()]);
        let got = fanout(
            &request(&["dba"], &["alice@example.com"]),
            &main(),
            &["ops@example.com".to_string()],
            &map,
            10,
            Some(&routed),
        );
        assert_eq!(
            got.admin,
            vec![
                Recipient::Channel(main()),
                person("ops@example.com"),
                person("carol"),
                Recipient::parse("sec/alerts").unwrap(),
            ]
        );
        assert!(got.messaged().is_empty());
        assert_eq!(got.suggested_names(), vec!["alice@example.com".to_string()]);
    }
}

//! People as the policy sees them: a Mattermost user (username and email), a name compared in
//! every spelling, and a requester's suggested reviewer, which is a person or nothing.
//!
//! Names are compared after Unicode compatibility case folding (NFKC and full case folding),
//! so `FRANK@EXÄMPLE.COM`, `frank@exämple.com` and `ｆｒａｎｋ@exämple.com` are one person, as
//! they are to the mail system and to most identity providers. ASCII-only folding let a
//! requester approve their own request by spelling their address differently.

use caseless::Caseless as _;
use unicode_normalization::UnicodeNormalization as _;

/// The canonical form two spellings of one name share: NFKD, case fold, NFKD, case fold,
/// NFKC (Unicode's compatibility caseless match, D146, composed back for readability).
pub fn fold(s: &str) -> String {
    s.trim()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkc()
        .collect()
}

/// The local part of an email address (`dave` of `dave@example.com`), if it is one.
fn local_part(s: &str) -> Option<&str> {
    let (local, domain) = s.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(local)
}

/// A Mattermost user as the checks see them.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// Username, without `@`.
    pub username: &'a str,
    /// Email; empty when the server hides it from the bot.
    pub email: &'a str,
}

/// True when the person is (or may well be) the Teleport user who made the request:
/// - the same name: requester = username, or requester = email;
/// - the same mailbox name: their email is hidden and their username is the local part
///   of the requester's email (`dave` for `dave@example.com`), or the requester is a plain
///   Teleport username and the local part of their email equals it.
pub fn is_requester(requester: &str, person: Person<'_>) -> bool {
    let requester = fold(requester);
    if requester.is_empty() {
        return false;
    }
    let username = fold(person.username);
    let email = fold(person.email);
    if requester == username || (!email.is_empty() && requester == email) {
        return true;
    }
    match (local_part(&requester), local_part(&email)) {
        (Some(local), _) if email.is_empty() => local == username,
        (None, Some(local)) => local == requester,
        _ => false,
    }
}

/// True when `name` (a username, with or without `@`, or an email) names the person.
pub fn names(name: &str, person: Person<'_>) -> bool {
    let name = fold(name.trim().trim_start_matches('@'));
    !name.is_empty()
        && (name == fold(person.username)
            || (!person.email.trim().is_empty() && name == fold(person.email)))
}

/// The longest name a person reference may have: emails are at most 254 characters.
pub const MAX_NAME_CHARS: usize = 254;

/// A person named by a requester (a suggested reviewer) or an admin: never a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PersonRef {
    /// By email, as Teleport user names often are.
    Email(String),
    /// By Mattermost username, without `@`.
    Username(String),
}

/// Why an entry names no person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAPerson {
    /// Empty, or only spaces.
    #[error("it is empty")]
    Empty,
    /// `team/channel`: requesters choose people, never channels.
    #[error("it names a channel, and channels come only from the admin's recipients")]
    Channel,
    /// Neither an email nor a username.
    #[error("it is neither a username nor an email address")]
    Malformed,
}

impl PersonRef {
    /// Reads a suggested reviewer: an email address, or a username (letters, digits, `.`, `_`,
    /// `-`, optionally after `@`). Anything else, a `team/channel` above all, is no person.
    pub fn parse(entry: &str) -> Result<Self, NotAPerson> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(NotAPerson::Empty);
        }
        if entry.chars().count() > MAX_NAME_CHARS {
            return Err(NotAPerson::Malformed);
        }
        if let Some((team, channel)) = entry.split_once('/') {
            let part = |s: &str| !s.is_empty() && !s.contains(['/', ' ', '\t']);
            return Err(if part(team) && part(channel) {
                NotAPerson::Channel
            } else {
                NotAPerson::Malformed
            });
        }
        let plain = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || "._-+".contains(c) || extra.contains(&c))
        };
        let username = entry.strip_prefix('@').unwrap_or(entry);
        if plain(username, &[]) {
            // Mattermost reserves these for channel-wide mentions; no user has them.
            if ["all", "channel", "here"].contains(&username.to_lowercase().as_str()) {
                return Err(NotAPerson::Malformed);
            }
            return Ok(PersonRef::Username(username.to_lowercase()));
        }
        match entry.rsplit_once('@') {
            Some((local, domain))
                if plain(local, &['\'']) && plain(domain, &[]) && domain.contains('.') =>
            {
                Ok(PersonRef::Email(entry.to_string()))
            }
            _ => Err(NotAPerson::Malformed),
        }
    }

    /// The name as written for Mattermost's lookup.
    pub fn name(&self) -> &str {
        match self {
            PersonRef::Email(s) | PersonRef::Username(s) => s,
        }
    }
}

impl std::fmt::Display for PersonRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersonRef::Email(e) => write!(f, "user {e}"),
            PersonRef::Username(u) => write!(f, "user @{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user<'a>(username: &'a str, email: &'a str) -> Person<'a> {
        Person { username, email }
    }

    #[test]
    fn requester_is_matched_by_email_or_username() {
        assert!(is_requester(
            "bob@example.com",
            user("bobby", "bob@example.com")
        ));
        assert!(is_requester("bob", user("bob", "x@example.com")));
        assert!(!is_requester("bob", user("alice", "alice@example.com")));
        assert!(
            !is_requester("", user("alice", "")),
            "an empty requester never matches"
        );
    }

    #[test]
    fn unicode_case_and_compatibility_forms_are_one_person() {
        assert!(is_requester(
            "FRANK@EXÄMPLE.COM",
            user("f", "frank@exämple.com")
        ));
        // Decomposed Ä (A + combining diaeresis) against the precomposed one.
        assert!(is_requester(
            "frank@exa\u{308}mple.com",
            user("f", "frank@exämple.com")
        ));
        // Fullwidth letters, and the German sharp s folding to "ss".
        assert!(is_requester("ｆｒａｎｋ", user("frank", "")));
        assert!(is_requester(
            "strasse@example.com",
            user("x", "STRAẞE@example.com")
        ));
    }

    #[test]
    fn a_hidden_email_does_not_hide_the_requester() {
        assert!(
            is_requester("dave@example.com", user("dave", "")),
            "username = local part of the requester's email"
        );
        assert!(is_requester("Dave@example.com", user("DAVE", "")));
        assert!(
            !is_requester("dave@example.com", user("dave", "other@example.com")),
            "with the email visible, it decides"
        );
        assert!(
            is_requester("dave", user("david", "dave@example.com")),
            "a plain Teleport username against the clicker's mailbox"
        );
    }

    #[test]
    fn a_name_matches_username_or_email_in_any_spelling() {
        assert!(names("@Alice", user("alice", "")));
        assert!(names("carol@example.com", user("c", "Carol@Example.com")));
        assert!(names("jürgen@exämple.com", user("j", "JÜRGEN@EXÄMPLE.COM")));
        assert!(!names("mallory", user("alice", "alice@example.com")));
        assert!(!names("", user("alice", "")), "an empty name names nobody");
        assert!(
            !names("x@example.com", user("x", "")),
            "a hidden email matches no email"
        );
    }

    #[test]
    fn suggested_reviewers_are_people_never_channels() {
        use PersonRef::*;
        assert_eq!(PersonRef::parse(" alice "), Ok(Username("alice".into())));
        assert_eq!(PersonRef::parse("@Alice"), Ok(Username("alice".into())));
        assert_eq!(
            PersonRef::parse("bob@example.com"),
            Ok(Email("bob@example.com".into()))
        );
        assert_eq!(
            PersonRef::parse("o'neil@example.com").unwrap().name(),
            "o'neil@example.com"
        );
        assert_eq!(
            PersonRef::parse("security/approvers"),
            Err(NotAPerson::Channel)
        );
        assert_eq!(PersonRef::parse("/x"), Err(NotAPerson::Malformed));
        assert_eq!(PersonRef::parse(""), Err(NotAPerson::Empty));
        assert_eq!(PersonRef::parse("   "), Err(NotAPerson::Empty));
        for junk in [
            "a b",
            "@channel here",
            "x@",
            "@",
            "bob@localhost",
            "<script>",
            "@channel",
            "here",
            "[bob](https://evil.example)",
            "a\nb",
            "bob@example.com\n@channel",
        ] {
            assert_eq!(
                PersonRef::parse(junk),
                Err(NotAPerson::Malformed),
                "{junk:?}"
            );
        }
        assert_eq!(
            PersonRef::parse(&"a".repeat(300)),
            Err(NotAPerson::Malformed)
        );
    }
}

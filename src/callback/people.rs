//! Who a Mattermost user is, for the two questions a press raises: may they review here (the
//! approver list), and are they the requester (self-approval is refused).
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

/// The clicking Mattermost user as the checks see them.
#[derive(Debug, Clone, Copy)]
pub struct Clicker<'a> {
    /// Username, without `@`.
    pub username: &'a str,
    /// Email; empty when the server hides it from the bot.
    pub email: &'a str,
}

/// True when `approvers` is empty or lists the user by username (with or without `@`) or email.
pub fn is_approver(approvers: &[String], clicker: Clicker<'_>) -> bool {
    let username = fold(clicker.username);
    let email = fold(clicker.email);
    approvers.is_empty()
        || approvers.iter().any(|a| {
            let a = fold(a.trim().trim_start_matches('@'));
            a == username || (!email.is_empty() && a == email)
        })
}

/// True when the clicker is (or may well be) the Teleport user who made the request:
/// - the same name: requester = username, or requester = email;
/// - the same mailbox name: the clicker's email is hidden and their username is the local part
///   of the requester's email (`dave` for `dave@example.com`), or the requester is a plain
///   Teleport username and the local part of the clicker's email equals it.
pub fn is_requester(requester: &str, clicker: Clicker<'_>) -> bool {
    let requester = fold(requester);
    if requester.is_empty() {
        return false;
    }
    let username = fold(clicker.username);
    let email = fold(clicker.email);
    if requester == username || (!email.is_empty() && requester == email) {
        return true;
    }
    match (local_part(&requester), local_part(&email)) {
        (Some(local), _) if email.is_empty() => local == username,
        (None, Some(local)) => local == requester,
        _ => false,
    }
}

/// True when the self-approval check cannot be trusted: anyone in the channel may press and
/// Mattermost hides the clicker's email, so a requester known to Teleport only by email could
/// press under any username.
pub fn self_check_is_blind(approvers: &[String], clicker: Clicker<'_>) -> bool {
    approvers.is_empty() && clicker.email.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user<'a>(username: &'a str, email: &'a str) -> Clicker<'a> {
        Clicker { username, email }
    }

    #[test]
    fn empty_allow_list_lets_anyone_in() {
        assert!(is_approver(&[], user("bob", "bob@example.com")));
    }

    #[test]
    fn allow_list_matches_username_or_email_in_any_case() {
        let list = vec!["@Alice".to_string(), "carol@example.com".to_string()];
        assert!(is_approver(&list, user("alice", "")));
        assert!(is_approver(&list, user("c", "Carol@Example.com")));
        assert!(!is_approver(&list, user("mallory", "mallory@example.com")));
        assert!(!is_approver(&list, user("mallory", "")));
        let unicode = vec!["jürgen@exämple.com".to_string()];
        assert!(is_approver(&unicode, user("j", "JÜRGEN@EXÄMPLE.COM")));
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
    fn blind_only_with_open_approvers_and_a_hidden_email() {
        assert!(self_check_is_blind(&[], user("dave", "")));
        assert!(!self_check_is_blind(&[], user("dave", "d@example.com")));
        assert!(!self_check_is_blind(&["alice".into()], user("alice", "")));
    }
}

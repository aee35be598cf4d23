//! The notes besides a request's posts: direct messages keeping the requester informed, and
//! reminders in the threads of requests left unreviewed. Text and schedule only; posting them
//! exactly once is the engine's job.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::message::markdown::{code_span, labelled_block};
use crate::message::{
    MAX_NAME_CHARS, PROP_REQUEST_ID, REASON_LIMIT_CHARS, human_duration, roles_list,
};
use crate::request::RequestState;
use crate::review::reason::is_username;
use crate::settings::ReminderSettings;

/// Post prop on notes: which note a post is (`posted`, `APPROVED`, `remind1`, …), so one
/// already made is recognised after a crash.
pub const PROP_NOTE: &str = "teleport_note";
/// The note telling the requester their request was posted.
pub const TAG_POSTED: &str = "posted";

/// The note tag of reminder `n` (1-based).
pub fn reminder_tag(n: u32) -> String {
    format!("remind{n}")
}

/// The note tag telling the requester about `state`.
pub fn outcome_tag(state: RequestState) -> &'static str {
    state.as_str()
}

/// Props of a note: the request marker and the note's tag.
pub fn note_props(request_id: &str, tag: &str) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(PROP_REQUEST_ID.to_owned(), Value::from(request_id));
    props.insert(PROP_NOTE.to_owned(), Value::from(tag));
    props
}

/// `` `id` for roles a, b `` (or for resources, when the request names any).
fn what(id: &str, roles: &[String]) -> String {
    format!(
        "{} for roles {}",
        code_span(id, MAX_NAME_CHARS),
        roles_list(roles)
    )
}

/// The direct message telling the requester their request awaits review in `channel`.
pub fn requester_posted(id: &str, roles: &[String], channel: &str) -> String {
    format!(
        "⏳ Your access request {} was posted to ~{channel} for review. You will get a message here when it is decided.",
        what(id, roles)
    )
}

/// The direct message telling the requester how their request ended; `actor` is who decided
/// through a button, `reason` the resolver's reason.
pub fn requester_outcome(
    id: &str,
    roles: &[String],
    state: RequestState,
    actor: Option<&str>,
    reason: &str,
) -> String {
    let request = what(id, roles);
    let by = match actor
        .and_then(|a| a.strip_prefix('@'))
        .filter(|a| is_username(a))
    {
        Some(who) => format!(" by @{who}"),
        None => " in Teleport".to_owned(),
    };
    let mut text = match state {
        RequestState::Approved => {
            format!("✅ Your access request {request} was APPROVED{by}. You can use it now.")
        }
        RequestState::Denied => format!("❌ Your access request {request} was DENIED{by}."),
        RequestState::Promoted => format!(
            "Your access request {request} was PROMOTED{by} to an access list: the access comes from the list's membership."
        ),
        _ => format!(
            "⌛ Your access request {request} expired (or was deleted) before it was decided. Request it again if you still need it."
        ),
    };
    if !reason.trim().is_empty() && state != RequestState::Expired {
        text.push('\n');
        text.push_str(&labelled_block("Reason", reason, REASON_LIMIT_CHARS));
    }
    text
}

/// The most people one reminder mentions.
pub const MAX_REMINDER_MENTIONS: usize = 10;

/// Reminder `n` of `max`, posted in the request's thread `waited` after it was created,
/// mentioning `mentions` (Mattermost usernames of people who may decide; anything else, and
/// any beyond [`MAX_REMINDER_MENTIONS`], is left out).
pub fn reminder(n: u32, max: u32, waited: chrono::Duration, mentions: &[String]) -> String {
    let mut text = format!(
        "⏰ Reminder {n} of {max}: this request has waited {} for a review.",
        human_duration(waited)
    );
    let names: Vec<String> = mentions
        .iter()
        .filter(|m| is_username(m))
        .take(MAX_REMINDER_MENTIONS)
        .map(|m| format!("@{m}"))
        .collect();
    if !names.is_empty() {
        text.push(' ');
        text.push_str(&names.join(" "));
    }
    text
}

/// When reminder `n` (1-based) of a request created at `created` is due.
pub fn reminder_due_at(
    created: DateTime<Utc>,
    n: u32,
    settings: &ReminderSettings,
) -> Option<DateTime<Utc>> {
    if n == 0 || n > settings.max {
        return None;
    }
    let after = chrono::Duration::from_std(settings.after).ok()?;
    let every = chrono::Duration::from_std(settings.every).ok()?;
    Some(created + after + every * (n as i32 - 1))
}

/// How many reminders are due at `now` for a request created at `created`: the number of
/// reminder slots whose time has come, at most `max`. Slots missed while the plugin was down
/// are not all made up: [`latest_due`] is the one to post.
pub fn reminders_due(
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &ReminderSettings,
) -> u32 {
    (1..=settings.max)
        .take_while(|&n| reminder_due_at(created, n, settings).is_some_and(|at| at <= now))
        .last()
        .unwrap_or(0)
}

/// The reminder to post now, if any: the latest slot due, when it was not posted yet. Older
/// slots missed (the plugin was down through them) are skipped rather than posted in a burst.
pub fn latest_due(
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &ReminderSettings,
    done: impl Fn(u32) -> bool,
) -> Option<u32> {
    let n = reminders_due(created, now, settings);
    (n > 0 && !done(n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn every_30m_3_times() -> ReminderSettings {
        ReminderSettings {
            after: Duration::from_secs(1800),
            every: Duration::from_secs(3600),
            max: 3,
        }
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn reminders_come_after_then_every_until_max() {
        let s = every_30m_3_times();
        let due = |m| reminders_due(t(0), t(m), &s);
        assert_eq!(due(29), 0);
        assert_eq!(due(30), 1);
        assert_eq!(due(89), 1);
        assert_eq!(due(90), 2);
        assert_eq!(due(150), 3);
        assert_eq!(due(10_000), 3, "never more than max");
        assert_eq!(reminder_due_at(t(0), 4, &s), None);
        assert_eq!(reminder_due_at(t(0), 2, &s), Some(t(90)));
    }

    #[test]
    fn the_latest_due_slot_is_posted_once_and_missed_ones_are_skipped() {
        let s = every_30m_3_times();
        assert_eq!(latest_due(t(0), t(31), &s, |_| false), Some(1));
        assert_eq!(latest_due(t(0), t(31), &s, |n| n == 1), None);
        // Down from minute 20 to minute 100: only reminder 2 is posted.
        assert_eq!(latest_due(t(0), t(100), &s, |_| false), Some(2));
        assert_eq!(latest_due(t(0), t(100), &s, |n| n == 2), None);
        assert_eq!(latest_due(t(0), t(10), &s, |_| false), None);
    }

    #[test]
    fn the_requester_is_told_who_decided_and_why() {
        let roles = vec!["dba".to_string()];
        assert_eq!(
            requester_outcome(
                "r1",
                &roles,
                RequestState::Denied,
                Some("@carol"),
                "not on call"
            ),
            "❌ Your access request `r1` for roles `dba` was DENIED by @carol.\n**Reason**:\n```\nnot on call\n```"
        );
        assert_eq!(
            requester_outcome("r1", &roles, RequestState::Approved, None, ""),
            "✅ Your access request `r1` for roles `dba` was APPROVED in Teleport. You can use it now."
        );
        assert!(
            requester_outcome("r1", &roles, RequestState::Expired, None, "x").starts_with("⌛")
        );
        assert_eq!(
            reminder(
                1,
                3,
                chrono::Duration::minutes(30),
                &["alice".into(), "carol".into()]
            ),
            "⏰ Reminder 1 of 3: this request has waited 30m for a review. @alice @carol"
        );
        let many: Vec<String> = ["channel", "x y", "all"]
            .into_iter()
            .map(String::from)
            .chain((0..20).map(|i| format!("user{i}")))
            .collect();
        let text = reminder(1, 3, chrono::Duration::minutes(30), &many);
        assert!(!text.contains("@channel") && !text.contains("@all") && !text.contains("@x"));
        assert_eq!(text.matches('@').count(), MAX_REMINDER_MENTIONS);
    }
}

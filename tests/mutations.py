#!/usr/bin/env python3
"""Puts back, one at a time, the behaviour each adversarial test was written against (the
code before the requester-adversary work), runs the tests that pin it, and reports which
fail. A test that still passes with its behaviour put back proves nothing.

    python3 tests/mutations.py            # every mutation
    python3 tests/mutations.py M3 M7      # some

Each mutation is an exact text replacement; the file is restored afterwards, even on error.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, what it restores, file, old text, new text, tests that must fail)
MUTATIONS = [
    (
        "M1",
        "with no approvers anyone may decide (0.1's rule)",
        "src/review/policy.rs",
        "        if self.listed(person) {\n            return Standing::May(Grant::Listed);\n        }\n        let mut unchecked",
        "        if self.listed(person) || self.by_default {\n            return Standing::May(Grant::Listed);\n        }\n        let mut unchecked",
        [
            "with_no_approvers_only_members_of_the_channel_decide",
            "the_requesters_second_account_cannot_approve",
            "a_suggested_reviewer_outside_the_channel_gets_no_buttons_and_a_link_to_the_channel_post",
        ],
    ),
    (
        "M2",
        "a requester's team/channel suggestion is a channel",
        "src/bridge/recipients.rs",
        "        match PersonRef::parse(entry) {",
        "        if let Some(channel) = ChannelName::parse(entry) { admin.push(Recipient::Channel(channel)); continue; }\n        match PersonRef::parse(entry) {",
        ["a_channel_suggested_by_the_requester_gets_nothing_and_is_counted"],
    ),
    (
        "M3",
        "every suggested reviewer is messaged",
        "src/bridge/recipients.rs",
        "    let messaged = suggested.len().min(max_suggested);",
        "    let messaged = suggested.len().max(max_suggested).min(suggested.len());",
        ["three_hundred_suggested_reviewers_get_ten_messages_and_a_count"],
    ),
    (
        "M4",
        "free text in Teleport's inline ``` span",
        "src/message/markdown.rs",
        "        }) => format!(\"**{label}**:\\n{text}\"),",
        "        }) => format!(\"**{label}**: ```{}```\", text.trim_start_matches(\"```\\n\").trim_end_matches(\"\\n```\")),",
        [
            "a_hostile_reason_and_names_render_only_as_code_everywhere",
            "a_reviewers_dialog_reason_renders_only_as_code_in_the_post_and_the_requesters_dm",
        ],
    ),
    (
        "M5",
        "Teleport names rendered raw",
        "src/message/mod.rs",
        "fn name(s: &str) -> String {\n    markdown::code_span(s, MAX_NAME_CHARS)\n}",
        "fn name(s: &str) -> String {\n    s.to_string()\n}",
        ["a_hostile_reason_and_names_render_only_as_code_everywhere"],
    ),
    (
        "M6",
        "every direct message carries buttons",
        "src/review/policy.rs",
        "        if let Reader::Person(person, standing) = reader {",
        "        if let (false, Reader::Person(person, standing)) = (true, reader) {",
        [
            "a_suggested_reviewer_outside_the_channel_gets_no_buttons_and_a_link_to_the_channel_post",
            "the_requesters_second_account_cannot_approve",
        ],
    ),
    (
        "M7",
        "reminders mention every messaged person",
        "src/bridge/posts.rs",
        "            Readers::Direct {\n                user,\n                standing: Standing::May(_),\n            } => Some(&user.username),",
        "            Readers::Direct { user, .. } => Some(&user.username),",
        ["reminders_mention_only_people_who_may_decide"],
    ),
    (
        "M8",
        "a lost answer counts as the press's success whatever Teleport's reason",
        "src/callback/decision.rs",
        "                Ok(Some(r)) if r.state == press.state && r.resolve_reason == press.reason => {",
        "                Ok(Some(r)) if r.state == press.state => {",
        ["a_timed_out_press_never_takes_credit_for_a_decision_made_elsewhere"],
    ),
    (
        "M9",
        "the answer deadline starts after the lookups (0.1's order)",
        "src/callback/mod.rs",
        "    let deadline = ask.arrived + callback.answer_within;\n    let mut task",
        "    let deadline = ask.arrived + callback.answer_within * 1000;\n    let mut task",
        ["the_answer_deadline_covers_the_lookups_and_the_claim"],
    ),
    (
        "M10",
        "membership is not asked: the main channel grants nothing and approver channels everyone",
        "src/review/membership.rs",
        "    policy.standing(person, &answers)",
        "    policy.standing(person, &vec![Ok(true); answers.len().max(1)])",
        [
            "with_no_approvers_only_members_of_the_channel_decide",
            "approver_channel_membership_takes_effect_without_a_restart",
        ],
    ),
]


def run(tests):
    failed = []
    for test in tests:
        out = subprocess.run(
            ["cargo", "test", "-q", "--test", "adversary", test, "--", "--exact"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            failed.append(test)
    return failed


def main():
    wanted = set(sys.argv[1:])
    rows = []
    for name, what, file, old, new, tests in MUTATIONS:
        if wanted and name not in wanted:
            continue
        if tests is None:
            continue
        path = ROOT / file
        original = path.read_text()
        if original.count(old) != 1:
            rows.append((name, what, "mutation no longer applies", ""))
            continue
        try:
            path.write_text(original.replace(old, new))
            failed = run(tests)
        finally:
            path.write_text(original)
        verdict = "caught" if failed == tests else f"NOT caught by {sorted(set(tests) - set(failed))}"
        rows.append((name, what, verdict, ", ".join(failed)))
    for row in rows:
        print(" | ".join(row))
    sys.exit(1 if any(r[2] != "caught" for r in rows) else 0)


if __name__ == "__main__":
    main()

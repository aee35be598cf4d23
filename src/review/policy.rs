//! Who may decide a request, and so which posts carry buttons: one value, the admin's policy.
//!
//! The requester writes the reason and the suggested reviewers; neither moves this boundary.
//! A person may decide when the admin lists them (`approvers`), or when they are a member of
//! a channel the admin named (`approverChannels`), or, with neither configured, when they are a
//! member of the instance's own channel: the channel is the boundary, wherever the press
//! comes from. Nobody decides their own request.
//!
//! The policy is pure: what Mattermost says about memberships is looked up at the edge
//! ([`super::membership`]) and passed in as a [`Standing`].

use std::fmt;

use super::people::{Person, fold, is_requester, names};
use super::signature::Action;
use crate::request::{AccessRequest, RequestState};

/// A Mattermost channel by team and channel URL names, written `team/channel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName {
    /// Team URL name.
    pub team: String,
    /// Channel URL name.
    pub channel: String,
}

impl ChannelName {
    /// A channel by its names.
    pub fn new(team: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            team: team.into(),
            channel: channel.into(),
        }
    }

    /// Reads `team/channel`; both parts must be present.
    pub fn parse(entry: &str) -> Option<Self> {
        let (team, channel) = entry.trim().split_once('/')?;
        let (team, channel) = (team.trim(), channel.trim());
        (!team.is_empty() && !channel.is_empty() && !channel.contains('/'))
            .then(|| Self::new(team, channel))
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.team, self.channel)
    }
}

/// What gives a person the right to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The admin lists them in `approvers`.
    Listed,
    /// They are a member of this channel, which the admin named (or which is the instance's
    /// own channel, when nothing else is configured).
    Member(ChannelName),
}

/// Where a person stands, as far as Mattermost could tell: before the request is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// They may decide (their own request excepted).
    May(Grant),
    /// Neither listed nor a member of any channel that grants the right.
    NotAllowed,
    /// A membership that would decide could not be checked; `0` says why, for the log.
    Unchecked(String),
}

/// One membership as Mattermost answered it: `Ok(true)` a member, `Ok(false)` not, `Err` it
/// could not be asked.
pub type Membership = Result<bool, String>;

/// Who is reading a post, for [`ButtonPolicy::buttons`].
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A channel the admin chose (the instance's own, or a `recipients` channel): many readers,
    /// each checked when they press.
    Channel,
    /// A direct message to one person.
    Person(Person<'a>, &'a Standing),
}

/// The buttons a post carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ButtonSet {
    /// Approve is shown.
    pub approve: bool,
    /// Deny is shown.
    pub deny: bool,
}

impl ButtonSet {
    /// No buttons at all.
    pub const NONE: ButtonSet = ButtonSet {
        approve: false,
        deny: false,
    };

    /// True when the post carries at least one button.
    pub fn any(self) -> bool {
        self.approve || self.deny
    }
}

/// Why a press does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Buttons are off for this instance.
    NoButtons,
    /// The person may not decide here.
    NotAllowed,
    /// Their right could not be checked right now; worth a retry.
    Unchecked,
    /// It is their own request.
    OwnRequest,
    /// Their right comes from a channel and Mattermost hides their email from the bot, so a
    /// requester known to Teleport by email cannot be told apart from them.
    EmailHidden,
    /// Approving a long-term request would block its promotion to an access list.
    LongTerm,
    /// The request is no longer pending.
    NotPending(RequestState),
}

/// The admin's policy for one instance: who may decide, and so where buttons go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonPolicy {
    /// False when the instance has no callback: notifications only.
    enabled: bool,
    /// `approvers`, as written.
    approvers: Vec<String>,
    /// The channels whose members may decide.
    channels: Vec<ChannelName>,
    /// True when `channels` is the instance's own channel because nothing was configured.
    by_default: bool,
}

impl ButtonPolicy {
    /// The policy for an instance posting to `main`. With no `approvers` and no
    /// `approver_channels`, the members of `main` may decide.
    pub fn new(
        enabled: bool,
        approvers: &[String],
        approver_channels: &[ChannelName],
        main: &ChannelName,
    ) -> Self {
        let approvers: Vec<String> = approvers
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !fold(a.trim_start_matches('@')).is_empty())
            .collect();
        let by_default = approvers.is_empty() && approver_channels.is_empty();
        let channels = if by_default {
            vec![main.clone()]
        } else {
            approver_channels.to_vec()
        };
        Self {
            enabled,
            approvers,
            channels,
            by_default,
        }
    }

    /// A policy under which nobody may decide and no post has buttons.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            approvers: Vec::new(),
            channels: Vec::new(),
            by_default: false,
        }
    }

    /// True when buttons are on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// True when nothing was configured and the instance's own channel is the boundary.
    pub fn is_default(&self) -> bool {
        self.by_default
    }

    /// The channels whose memberships must be asked before [`ButtonPolicy::standing`] can tell
    /// where `person` stands: none when the admin lists them, or when buttons are off.
    pub fn channels_to_check(&self, person: Person<'_>) -> &[ChannelName] {
        if !self.enabled || self.listed(person) {
            return &[];
        }
        &self.channels
    }

    fn listed(&self, person: Person<'_>) -> bool {
        self.approvers.iter().any(|a| names(a, person))
    }

    /// Where `person` stands, given Mattermost's answers for [`ButtonPolicy::channels_to_check`]
    /// (in that order). One membership is enough; a failed lookup counts only when no other
    /// answer grants the right.
    pub fn standing(&self, person: Person<'_>, memberships: &[Membership]) -> Standing {
        if !self.enabled {
            return Standing::NotAllowed;
        }
        if self.listed(person) {
            return Standing::May(Grant::Listed);
        }
        let mut unchecked = None;
        for (channel, member) in self.channels.iter().zip(memberships) {
            match member {
                Ok(true) => return Standing::May(Grant::Member(channel.clone())),
                Ok(false) => {}
                Err(why) => {
                    unchecked.get_or_insert_with(|| format!("{channel}: {why}"));
                }
            }
        }
        match unchecked {
            Some(why) => Standing::Unchecked(why),
            None => Standing::NotAllowed,
        }
    }

    /// The buttons a post of `request` carries for `reader`: none once the request is no
    /// longer pending; in a direct message, only where its reader may decide; never Approve
    /// for a long-term request.
    pub fn buttons(&self, request: &AccessRequest, reader: Reader<'_>) -> ButtonSet {
        if !self.enabled || request.state != RequestState::Pending {
            return ButtonSet::NONE;
        }
        if let Reader::Person(person, standing) = reader {
            let may = matches!(standing, Standing::May(_))
                && !is_requester(&request.user, person)
                && !self.email_hidden(person, standing);
            if !may {
                return ButtonSet::NONE;
            }
        }
        ButtonSet {
            approve: !is_long_term(request),
            deny: true,
        }
    }

    /// Whether `person`, standing as they do, may press `action` on `request` as Teleport now
    /// has it.
    pub fn press(
        &self,
        action: Action,
        request: &AccessRequest,
        person: Person<'_>,
        standing: &Standing,
    ) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::NoButtons);
        }
        match standing {
            Standing::May(_) => {}
            Standing::NotAllowed => return Err(Refusal::NotAllowed),
            Standing::Unchecked(_) => return Err(Refusal::Unchecked),
        }
        if is_requester(&request.user, person) {
            return Err(Refusal::OwnRequest);
        }
        if self.email_hidden(person, standing) {
            return Err(Refusal::EmailHidden);
        }
        if request.state != RequestState::Pending {
            return Err(Refusal::NotPending(request.state));
        }
        if action == Action::Approve && is_long_term(request) {
            return Err(Refusal::LongTerm);
        }
        Ok(())
    }

    /// True when the self-approval check would be blind: the right comes from a channel, not
    /// from the admin naming the person, and Mattermost hides their email, so a requester
    /// known to Teleport by email could press under any username.
    fn email_hidden(&self, person: Person<'_>, standing: &Standing) -> bool {
        matches!(standing, Standing::May(Grant::Member(_))) && person.email.trim().is_empty()
    }

    /// The policy in the words `status.approvalPolicy` shows an admin.
    pub fn describe(&self) -> String {
        if !self.enabled {
            return "no buttons: notifications only".to_owned();
        }
        let channels = || {
            self.channels
                .iter()
                .map(|c| format!("~{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let people = match self.approvers.len() {
            1 => "the 1 listed approver".to_owned(),
            n => format!("the {n} listed approvers"),
        };
        let who = match (self.approvers.is_empty(), self.by_default) {
            (true, true) => format!(
                "members of {} (the plugin's channel; no approvers or approverChannels are set)",
                channels()
            ),
            (true, false) => format!("members of {}", channels()),
            (false, _) if self.channels.is_empty() => people,
            (false, _) => format!("{people} and members of {}", channels()),
        };
        format!("{who} may approve or deny, never their own request")
    }
}

/// True for a long-term request (Teleport v18+): approving it directly blocks its promotion to
/// an access list (Teleport issue #69297), so, as Teleport's Slack plugin does (PR #67821),
/// it gets no Approve button.
fn is_long_term(request: &AccessRequest) -> bool {
    request.is_long_term()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_channel() -> ChannelName {
        ChannelName::new("team", "access")
    }

    fn user<'a>(username: &'a str, email: &'a str) -> Person<'a> {
        Person { username, email }
    }

    fn pending(user: &str) -> AccessRequest {
        AccessRequest {
            id: "r1".into(),
            user: user.into(),
            state: RequestState::Pending,
            ..AccessRequest::default()
        }
    }

    fn open() -> ButtonPolicy {
        ButtonPolicy::new(true, &[], &[], &main_channel())
    }

    #[test]
    fn with_nothing_configured_the_main_channel_is_the_boundary() {
        let policy = open();
        let alice = user("alice", "alice@example.com");
        assert_eq!(policy.channels_to_check(alice), &[main_channel()]);
        assert_eq!(
            policy.standing(alice, &[Ok(true)]),
            Standing::May(Grant::Member(main_channel()))
        );
        assert_eq!(policy.standing(alice, &[Ok(false)]), Standing::NotAllowed);
        assert!(matches!(
            policy.standing(alice, &[Err("403".into())]),
            Standing::Unchecked(_)
        ));
        assert!(policy.is_default());
        assert!(policy.describe().contains("members of ~team/access"));
    }

    #[test]
    fn listed_approvers_need_no_membership_and_others_need_one() {
        let security = ChannelName::new("security", "approvers");
        let policy = ButtonPolicy::new(
            true,
            &["@Alice".into(), "carol@example.com".into()],
            std::slice::from_ref(&security),
            &main_channel(),
        );
        let alice = user("alice", "");
        assert!(policy.channels_to_check(alice).is_empty());
        assert_eq!(policy.standing(alice, &[]), Standing::May(Grant::Listed));
        let dave = user("dave", "dave@example.com");
        assert_eq!(
            policy.channels_to_check(dave),
            std::slice::from_ref(&security)
        );
        assert_eq!(
            policy.standing(dave, &[Ok(true)]),
            Standing::May(Grant::Member(security))
        );
        assert_eq!(policy.standing(dave, &[Ok(false)]), Standing::NotAllowed);
        // With approvers listed, the main channel grants nothing.
        let only_listed = ButtonPolicy::new(true, &["alice".into()], &[], &main_channel());
        assert!(only_listed.channels_to_check(dave).is_empty());
        assert_eq!(only_listed.standing(dave, &[]), Standing::NotAllowed);
        assert!(!only_listed.is_default());
    }

    #[test]
    fn one_membership_is_enough_and_a_failed_lookup_only_matters_alone() {
        let (a, b) = (ChannelName::new("t", "a"), ChannelName::new("t", "b"));
        let policy = ButtonPolicy::new(true, &[], &[a, b.clone()], &main_channel());
        let dave = user("dave", "dave@example.com");
        assert_eq!(
            policy.standing(dave, &[Err("timeout".into()), Ok(true)]),
            Standing::May(Grant::Member(b))
        );
        assert_eq!(
            policy.standing(dave, &[Err("timeout".into()), Ok(false)]),
            Standing::Unchecked("t/a: timeout".into())
        );
    }

    #[test]
    fn a_press_counts_only_for_someone_who_may_and_never_for_the_requester() {
        let policy = open();
        let member = Standing::May(Grant::Member(main_channel()));
        let alice = user("alice", "alice@example.com");
        let request = pending("bob@example.com");
        assert_eq!(
            policy.press(Action::Approve, &request, alice, &member),
            Ok(())
        );
        let bobby = user("bobby", "BOB@example.com");
        assert_eq!(
            policy.press(Action::Approve, &request, bobby, &member),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            policy.press(Action::Deny, &request, alice, &Standing::NotAllowed),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            policy.press(
                Action::Deny,
                &request,
                alice,
                &Standing::Unchecked("x".into())
            ),
            Err(Refusal::Unchecked)
        );
        let hidden = user("mallory", "");
        assert_eq!(
            policy.press(Action::Approve, &request, hidden, &member),
            Err(Refusal::EmailHidden),
            "a channel grant with a hidden email cannot rule out the requester"
        );
        assert_eq!(
            policy.press(
                Action::Approve,
                &request,
                hidden,
                &Standing::May(Grant::Listed)
            ),
            Ok(()),
            "a person the admin named is vetted by name"
        );
        let decided = AccessRequest {
            state: RequestState::Approved,
            ..request.clone()
        };
        assert_eq!(
            policy.press(Action::Deny, &decided, alice, &member),
            Err(Refusal::NotPending(RequestState::Approved))
        );
        assert_eq!(
            ButtonPolicy::disabled().press(Action::Deny, &request, alice, &member),
            Err(Refusal::NoButtons)
        );
    }

    #[test]
    fn direct_messages_carry_buttons_only_for_readers_who_may_use_them() {
        let policy = open();
        let request = pending("bob@example.com");
        let member = Standing::May(Grant::Member(main_channel()));
        let alice = user("alice", "alice@example.com");
        let all = ButtonSet {
            approve: true,
            deny: true,
        };
        assert_eq!(policy.buttons(&request, Reader::Channel), all);
        assert_eq!(
            policy.buttons(&request, Reader::Person(alice, &member)),
            all
        );
        assert_eq!(
            policy.buttons(&request, Reader::Person(alice, &Standing::NotAllowed)),
            ButtonSet::NONE
        );
        let bobby = user("bobby", "bob@example.com");
        assert_eq!(
            policy.buttons(&request, Reader::Person(bobby, &member)),
            ButtonSet::NONE
        );
        assert_eq!(
            policy.buttons(&request, Reader::Person(user("eve", ""), &member)),
            ButtonSet::NONE
        );
        let decided = AccessRequest {
            state: RequestState::Denied,
            ..request
        };
        assert_eq!(policy.buttons(&decided, Reader::Channel), ButtonSet::NONE);
        assert_eq!(
            ButtonPolicy::disabled().buttons(&pending("bob"), Reader::Channel),
            ButtonSet::NONE
        );
    }

    #[test]
    fn the_policy_in_words() {
        assert_eq!(
            ButtonPolicy::disabled().describe(),
            "no buttons: notifications only"
        );
        let listed = ButtonPolicy::new(true, &["alice".into()], &[], &main_channel());
        assert_eq!(
            listed.describe(),
            "the 1 listed approver may approve or deny, never their own request"
        );
        let both = ButtonPolicy::new(
            true,
            &["alice".into(), "bob".into()],
            &[ChannelName::new("security", "approvers")],
            &main_channel(),
        );
        assert_eq!(
            both.describe(),
            "the 2 listed approvers and members of ~security/approvers may approve or deny, never their own request"
        );
    }

    #[test]
    fn channel_names_parse() {
        assert_eq!(
            ChannelName::parse(" security/access-approvers "),
            Some(ChannelName::new("security", "access-approvers"))
        );
        for bad in ["", "x", "/c", "t/", "a/b/c"] {
            assert_eq!(ChannelName::parse(bad), None, "{bad:?}");
        }
    }
}

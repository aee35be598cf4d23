//! Where a request's posts go and what each shows: the resolved destinations, and for each the
//! text and the buttons the admin's policy gives its readers.

use chrono::Utc;
use url::Url;

use super::BridgeError;
use super::recipients::{Fanout, Recipient, fanout};
use crate::instance::Instance;
use crate::mattermost::{MattermostError, User};
use crate::message::{self, Buttons, Extras};
use crate::request::{AccessRequest, RequestState};
use crate::review::people::{Person, PersonRef, is_requester};
use crate::review::signature::{Action, ActionContext};
use crate::review::{ChannelName, Reader, Standing, membership};

/// Buttons stay valid this long when the request carries no expiry of its own.
const DEFAULT_BUTTON_TTL_SECS: i64 = 7 * 24 * 3600;

/// Who reads a destination.
#[derive(Debug, Clone)]
pub(super) enum Readers {
    /// A channel the admin chose.
    Channel,
    /// A direct message with one person, and where they stand under the policy.
    Direct {
        /// The person.
        user: Box<User>,
        /// Their standing when the destination was resolved.
        standing: Standing,
    },
}

/// One resolved destination.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub channel_id: String,
    pub label: String,
    pub readers: Readers,
}

impl Target {
    fn reader(&self) -> Reader<'_> {
        match &self.readers {
            Readers::Channel => Reader::Channel,
            Readers::Direct { user, standing } => Reader::Person(
                Person {
                    username: &user.username,
                    email: &user.email,
                },
                standing,
            ),
        }
    }

    /// The username of a direct message's reader who may decide, for a reminder to mention.
    pub(super) fn decider(&self) -> Option<&str> {
        match &self.readers {
            Readers::Direct {
                user,
                standing: Standing::May(_),
            } => Some(&user.username),
            _ => None,
        }
    }

    /// True for a direct message.
    pub(super) fn is_direct(&self) -> bool {
        matches!(self.readers, Readers::Direct { .. })
    }
}

/// Where a request goes, as far as Mattermost could tell this time.
pub(super) struct Targets {
    /// Resolved destinations, deduplicated by channel id, the instance's channel first.
    pub resolved: Vec<Target>,
    /// A recipient that could not be resolved for a reason worth retrying (Mattermost
    /// failing, rate limits, a lost connection). The resolved targets are still posted to;
    /// the job then fails with this error so that its retry reaches the rest.
    pub retry: Option<MattermostError>,
    /// The plan they were resolved from.
    pub fanout: Fanout,
}

impl Targets {
    /// The destination in `channel_id`, if it is one of this request's.
    pub(super) fn get(&self, channel_id: &str) -> Option<&Target> {
        self.resolved.iter().find(|t| t.channel_id == channel_id)
    }

    /// The instance's own channel.
    pub(super) fn main(&self) -> &Target {
        &self.resolved[0]
    }
}

fn main_channel(instance: &Instance) -> ChannelName {
    let mm = &instance.settings().mattermost;
    ChannelName::new(&mm.team, &mm.channel)
}

/// The fan-out plan of `request` under the instance's settings and the recipients access
/// monitoring rules gave it.
pub(super) fn plan(
    instance: &Instance,
    request: &AccessRequest,
    rules: Option<&std::collections::BTreeSet<String>>,
) -> Fanout {
    let settings = instance.settings();
    fanout(
        request,
        &main_channel(instance),
        &settings.recipients,
        &settings.role_to_recipients,
        settings.max_suggested_reviewers,
        rules,
    )
}

/// Resolves every destination to a channel id, deduplicated by channel id. A recipient that
/// Mattermost says cannot be reached (unknown user, no access) is skipped and reported; one
/// that failed for another reason is left for the retry. The instance's channel must resolve.
pub(super) async fn targets(
    instance: &Instance,
    request: &AccessRequest,
) -> Result<Targets, BridgeError> {
    // Routed once per request (see `rule_routing`): a rule changed later does not move posts.
    let teleport = instance.teleport().await?;
    let routed = instance.routing().recipients(&teleport, request).await?;
    if routed.report_changed {
        let report = instance.routing().report();
        instance.update_status(|s| s.access_monitoring = report);
    }
    let fanout = plan(instance, request, routed.recipients.as_ref());
    let mut out = Targets {
        resolved: Vec::new(),
        retry: None,
        fanout: fanout.clone(),
    };
    let people = fanout.messaged().iter().cloned().map(Recipient::Person);
    for (index, recipient) in fanout.admin.iter().cloned().chain(people).enumerate() {
        let resolved = match &recipient {
            Recipient::Channel(c) => instance
                .mattermost()
                .channel_by_names(&c.team, &c.channel)
                .await
                .map(|found| Some((found.id, Readers::Channel))),
            Recipient::Person(person) => direct(instance, person, &request.user).await,
        };
        match resolved {
            // Nobody is messaged about their own request (as a recipient, say).
            Ok(None) => {
                tracing::debug!(request = %request.id, %recipient, "not messaging the requester about their own request");
            }
            Ok(Some((channel_id, readers))) if !channel_id.is_empty() => {
                if out.get(&channel_id).is_none() {
                    out.resolved.push(Target {
                        channel_id,
                        label: recipient.to_string(),
                        readers,
                    });
                }
            }
            Ok(Some(_)) => {
                tracing::warn!(request = %request.id, %recipient, "skipping recipient: Mattermost returned an empty channel id");
            }
            Err(e) if index == 0 => return Err(e.into()),
            Err(e) if e.is_about_the_recipient() => {
                tracing::warn!(request = %request.id, %recipient, error = %e, "skipping recipient that could not be resolved");
            }
            Err(e) => {
                tracing::warn!(request = %request.id, %recipient, error = %e, "could not resolve recipient; will retry");
                out.retry.get_or_insert(e);
            }
        }
    }
    Ok(out)
}

/// The direct channel with a person, and where they stand; `None` when they made the request
/// (by the rules that refuse self-approval).
async fn direct(
    instance: &Instance,
    person: &PersonRef,
    requester: &str,
) -> Result<Option<(String, Readers)>, MattermostError> {
    let mm = instance.mattermost();
    let user = match person {
        PersonRef::Email(email) => mm.user_by_email(email).await?,
        PersonRef::Username(name) => mm.user_by_username(name).await?,
    };
    let who = Person {
        username: &user.username,
        email: &user.email,
    };
    if is_requester(requester, who) {
        return Ok(None);
    }
    let standing = membership::standing(instance.policy(), &mm, &user).await;
    let bot = instance.bot_id().await?;
    let channel = mm.direct_channel(&bot, &user.id).await?;
    Ok(Some((
        channel.id,
        Readers::Direct {
            user: Box::new(user),
            standing,
        },
    )))
}

/// Logs and counts the suggested reviewers that name nobody, once per request.
pub(super) fn report_dropped(instance: &Instance, request: &AccessRequest, fanout: &Fanout) {
    if fanout.dropped.is_empty() {
        return;
    }
    let entries: Vec<String> = fanout
        .dropped
        .iter()
        .map(|(entry, why)| format!("{entry:?} ({why})"))
        .collect();
    tracing::warn!(request = %request.id, requester = %request.user, dropped = %entries.join(", "), "ignoring suggested reviewers that are not people; channels come only from the admin's recipients");
    instance.counters.suggestions_dropped.fetch_add(
        fanout.dropped.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The permalink of a post in the instance's team: `<url>/<team>/pl/<post id>`.
pub(super) fn permalink(instance: &Instance, post_id: &str) -> Option<Url> {
    let settings = instance.settings();
    let mut url = settings.mattermost.url.clone();
    url.path_segments_mut().ok()?.pop_if_empty().extend([
        settings.mattermost.team.as_str(),
        "pl",
        post_id,
    ]);
    Some(url)
}

/// A request's post text for `target` showing `state` (and who produced it), fitted to the
/// server. `main_post` is the id of the request's post in the instance's channel, for a direct
/// message whose reader decides there.
pub(super) async fn text_for(
    instance: &Instance,
    request: &AccessRequest,
    state: RequestState,
    actor: Option<&str>,
    target: Option<&Target>,
    fanout: &Fanout,
    main_post: Option<&str>,
) -> String {
    let names = fanout.suggested_names();
    let pending = state == RequestState::Pending;
    let elsewhere = target.is_some_and(|t| {
        t.is_direct() && pending && !instance.policy().buttons(request, t.reader()).any()
    });
    let link = if elsewhere {
        main_post.and_then(|id| permalink(instance, id))
    } else {
        None
    };
    let extras = Extras {
        suggested: if pending { &names } else { &[] },
        suggested_messaged: fanout.messaged,
        channel_post: link.as_ref(),
    };
    message::post_text_with(
        request,
        state,
        actor,
        &instance.links(),
        instance.mattermost().max_post_chars().await,
        extras,
    )
}

/// The text of a resolved request's posts: the final state and who produced it.
pub(super) async fn resolved_text(
    instance: &Instance,
    request: &AccessRequest,
    state: RequestState,
    actor: Option<&str>,
) -> String {
    message::post_text_within(
        request,
        state,
        actor,
        &instance.links(),
        instance.mattermost().max_post_chars().await,
    )
}

/// The signed buttons a post in `target` carries, as the policy has it; `None` for none.
pub(super) fn buttons_for(
    instance: &Instance,
    request: &AccessRequest,
    target: Option<&Target>,
) -> Option<Buttons> {
    let callback = instance.settings().callback.as_ref()?;
    // A post whose destination is no longer one of the request's gets none.
    let target = target?;
    let set = instance.policy().buttons(request, target.reader());
    if !set.any() {
        return None;
    }
    let expires = request
        .expires
        .map(|t| t.timestamp())
        .unwrap_or_else(|| Utc::now().timestamp() + DEFAULT_BUTTON_TTL_SECS);
    let context = |action| {
        ActionContext::signed(
            &callback.signing_secret,
            &instance.settings().instance,
            action,
            &request.id,
            &target.channel_id,
            expires,
        )
        .to_json()
    };
    Some(Buttons {
        url: callback.action_url.to_string(),
        approve_context: set.approve.then(|| context(Action::Approve)),
        deny_context: set.deny.then(|| context(Action::Deny)),
    })
}

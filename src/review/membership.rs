//! The one place the policy's questions reach Mattermost: whether a person is a member of the
//! channels that would give them the right to decide. Asked at press time (and when a direct
//! message is about to carry buttons), so the approvers follow the team without a restart.

use super::people::Person;
use super::policy::{ButtonPolicy, Membership, Standing};
use crate::mattermost::{MattermostClient, User};

/// Where `user` stands under `policy`, asking Mattermost about the memberships that decide it.
/// Stops at the first membership found.
pub async fn standing(policy: &ButtonPolicy, mm: &MattermostClient, user: &User) -> Standing {
    let person = Person {
        username: &user.username,
        email: &user.email,
    };
    let mut answers: Vec<Membership> = Vec::new();
    for channel in policy.channels_to_check(person) {
        let answer = async {
            let found = mm.channel_by_names(&channel.team, &channel.channel).await?;
            mm.is_channel_member(&found.id, &user.id).await
        }
        .await
        .map_err(|e| {
            let hint = if e.status() == Some(403) {
                " (the bot must be a member of this channel to read its members)"
            } else {
                ""
            };
            format!("{e}{hint}")
        });
        let member = matches!(answer, Ok(true));
        answers.push(answer);
        if member {
            break;
        }
    }
    policy.standing(person, &answers)
}

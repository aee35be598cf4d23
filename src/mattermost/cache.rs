//! The lookup cache: teams, channels and users, shared by every clone of a client, weighed
//! in bytes.

use std::time::Duration;

use super::client::MattermostClient;
use super::error::MattermostError;
use super::model::{Channel, Team, User};

/// How long a looked-up team, channel or user is trusted. Renames and deactivations are rare;
/// five minutes bounds how long a stale answer can live.
pub(super) const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Upper bound of the lookup cache, in (estimated) bytes: entries are weighed by size, so
/// neither a flood of distinct reviewers nor a few huge answers can grow memory without limit.
pub(super) const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// What a lookup is cached under. Emails and usernames are case-insensitive in Mattermost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CacheKey {
    Team(String),
    Channel(String, String),
    UserByEmail(String),
    UserByUsername(String),
    UserById(String),
    Direct(String, String),
}

#[derive(Debug, Clone)]
pub(super) enum Cached {
    Team(Team),
    Channel(Channel),
    User(User),
}

impl MattermostClient {
    pub(super) fn channel(found: Cached) -> Result<Channel, MattermostError> {
        match found {
            Cached::Channel(c) => Ok(c),
            other => unreachable!("channel key holds {other:?}"),
        }
    }

    pub(super) async fn cached_user(
        &self,
        key: CacheKey,
        segments: &[&str],
        what: String,
    ) -> Result<User, MattermostError> {
        let found = self
            .cached(key, async {
                self.get(segments, Some(&what)).await.map(Cached::User)
            })
            .await?;
        match found {
            Cached::User(u) => Ok(u),
            other => unreachable!("user key holds {other:?}"),
        }
    }

    /// Looks `key` up in the cache, or runs `fetch` once for all concurrent callers. Errors
    /// are handed to every waiting caller and not cached.
    pub(super) async fn cached(
        &self,
        key: CacheKey,
        fetch: impl Future<Output = Result<Cached, MattermostError>>,
    ) -> Result<Cached, MattermostError> {
        self.inner
            .cache
            .try_get_with(key, fetch)
            .await
            .map_err(|e| (*e).clone())
    }
}

/// Roughly the bytes a cached lookup holds, for the cache's byte bound.
pub(super) fn weight(key: &CacheKey, value: &Cached) -> u32 {
    let key_len = match key {
        CacheKey::Team(a)
        | CacheKey::UserByEmail(a)
        | CacheKey::UserByUsername(a)
        | CacheKey::UserById(a) => a.len(),
        CacheKey::Channel(a, b) | CacheKey::Direct(a, b) => a.len() + b.len(),
    };
    let value_len = match value {
        Cached::Team(t) => t.id.len() + t.name.len() + t.display_name.len(),
        Cached::Channel(c) => c.id.len() + c.name.len() + c.display_name.len() + c.team_id.len(),
        Cached::User(u) => {
            u.id.len()
                + u.username.len()
                + u.email.len()
                + u.first_name.len()
                + u.last_name.len()
                + u.nickname.len()
        }
    };
    // Per-entry overhead of the cache, the key and the value structs.
    u32::try_from(key_len + value_len + 256).unwrap_or(u32::MAX)
}

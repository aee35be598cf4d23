//! Mattermost REST API v4 client: lookups with a cache, posts, retries honouring rate limits.
//!
//! - Every call sends `Authorization: Bearer <token>`; a token file is re-read when it
//!   changes.
//! - 429, 5xx and transport errors are retried with jittered exponential backoff, waiting
//!   as long as the server's `Retry-After`/`X-RateLimit-Reset` ask. Creating a post is not
//!   idempotent and is repeated only when the server surely did nothing (429, connect
//!   error); otherwise the error says the outcome is unknown.
//! - Calls to one server pass through one client-side rate limiter, shared by every client
//!   of that server in the process.
//! - Teams, channels, users and direct channels are cached for a few minutes.

mod cache;
mod client;
mod error;
mod limiter;
mod model;
pub mod pacing;
mod retry;
mod token;
mod transport;

pub use client::{ClientStats, MattermostClient};
pub use error::{ApiError, MattermostError, PriorityRefusal};
pub use model::{Channel, NewPost, NewPostMetadata, Post, PostPriority, ServerVersion, Team, User};

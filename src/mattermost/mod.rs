//! Mattermost REST API v4 client: lookups with a cache, posts, retries honouring rate limits.

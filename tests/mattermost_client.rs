//! The Mattermost client against the Mattermost double: lookups and caching, posts and
//! threads, errors users can act on, retries that honour rate limits, and the one thing
//! retries must never do: post twice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use teleport_mattermost::mattermost::{MattermostClient, MattermostError, NewPost};
use teleport_mattermost::settings::{
    MattermostSettings, RateLimit, RetryPolicy, Secret, TokenSource,
};
use teleport_mattermost_testkit::mattermost::MattermostDouble;

const TEAM: &str = "ops";
const CHANNEL: &str = "access-requests";

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

fn settings(mm: &MattermostDouble, token: TokenSource) -> MattermostSettings {
    MattermostSettings {
        url: mm.url(),
        team: TEAM.into(),
        channel: CHANNEL.into(),
        token,
        rate_limit: RateLimit {
            per_second: 0,
            burst: 0,
        },
        retry: fast_retry(),
        ca_bundle: None,
    }
}

/// A double with the team and channel, and a client with a literal token.
async fn setup() -> (MattermostDouble, MattermostClient, String) {
    install_crypto();
    let mm = MattermostDouble::start().await;
    let channel_id = mm.add_channel(TEAM, CHANNEL);
    mm.add_member(&channel_id, &mm.bot_user_id());
    let token = TokenSource::Literal(Secret::new(mm.bot_token()));
    let client = MattermostClient::new(&settings(&mm, token)).unwrap();
    (mm, client, channel_id)
}

#[tokio::test]
async fn me_returns_the_bot_and_is_never_cached() {
    let (mm, client, _) = setup().await;
    let me = client.me().await.unwrap();
    assert_eq!(me.id, mm.bot_user_id());
    assert!(me.is_bot);
    client.me().await.unwrap();
    assert_eq!(mm.call_count("GET", "/api/v4/users/me"), 2);
}

#[tokio::test]
async fn team_and_channel_lookups_are_cached() {
    let (mm, client, channel_id) = setup().await;
    for _ in 0..3 {
        let team = client.team_by_name(TEAM).await.unwrap();
        assert_eq!(team.name, TEAM);
        let channel = client.channel_by_names(TEAM, CHANNEL).await.unwrap();
        assert_eq!(channel.id, channel_id);
    }
    assert_eq!(mm.call_count("GET", "/api/v4/teams/name/ops"), 1);
    assert_eq!(
        mm.call_count(
            "GET",
            "/api/v4/teams/name/ops/channels/name/access-requests"
        ),
        1
    );
}

#[tokio::test]
async fn concurrent_lookups_of_one_user_make_one_call() {
    let (mm, client, _) = setup().await;
    mm.add_user("alice", "alice@example.com");
    let lookups = (0..20).map(|_| client.user_by_email("alice@example.com"));
    for user in futures::future::join_all(lookups).await {
        assert_eq!(user.unwrap().username, "alice");
    }
    assert_eq!(
        mm.call_count("GET", "/api/v4/users/email/alice@example.com"),
        1
    );
}

#[tokio::test]
async fn users_resolve_by_email_username_and_id() {
    let (mm, client, _) = setup().await;
    let id = mm.add_user("bob.smith", "bob+ops@example.com");
    let by_email = client.user_by_email("bob+ops@example.com").await.unwrap();
    let by_name = client.user_by_username("@bob.smith").await.unwrap();
    let by_id = client.user_by_id(&id).await.unwrap();
    assert_eq!(by_email.id, id);
    assert_eq!(by_name.id, id);
    assert_eq!(by_id.username, "bob.smith");
    assert_eq!(by_id.email, "bob+ops@example.com");
}

#[tokio::test]
async fn lookup_errors_are_not_cached() {
    let (mm, client, _) = setup().await;
    let err = client.user_by_username("carol").await.unwrap_err();
    assert!(err.is_not_found());
    mm.add_user("carol", "carol@example.com");
    let carol = client.user_by_username("carol").await.unwrap();
    assert_eq!(carol.email, "carol@example.com");
}

#[tokio::test]
async fn missing_team_channel_and_user_errors_name_what_was_not_found() {
    let (_mm, client, _) = setup().await;

    let err = client.team_by_name("nope").await.unwrap_err();
    assert!(err.is_not_found());
    let text = err.to_string();
    assert!(text.contains("team \"nope\""), "{text}");
    assert!(text.contains("Unable to find the existing team"), "{text}");

    let err = client.channel_by_names(TEAM, "missing").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("channel \"missing\" in team \"ops\""),
        "{text}"
    );
    assert!(text.contains("Channel does not exist"), "{text}");

    let err = client.user_by_email("ghost@example.com").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("user with e-mail \"ghost@example.com\""),
        "{text}"
    );
    assert!(!err.is_unauthorized());
}

#[tokio::test]
async fn wrong_token_gives_an_actionable_401() {
    let (mm, _client, _) = setup().await;
    let client = MattermostClient::new(&settings(
        &mm,
        TokenSource::Literal(Secret::new("not-the-token")),
    ))
    .unwrap();
    let err = client.me().await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(
        err.to_string(),
        "Mattermost rejected GET /api/v4/users/me (401): Invalid or expired session, please login again. Check the bot token."
    );
    // A 401 is not retried: the token will not get better by waiting.
    assert_eq!(mm.call_count("GET", "/api/v4/users/me"), 1);
}

#[tokio::test]
async fn every_call_sends_the_bearer_token() {
    let (mm, client, channel_id) = setup().await;
    client.me().await.unwrap();
    client
        .create_post(&NewPost::new(&channel_id, "hello"))
        .await
        .unwrap();
    // The double answers 401 to anything else; all calls succeeded.
    assert!(
        mm.calls().iter().all(|c| c.status < 400),
        "{:?}",
        mm.calls()
    );
}

#[tokio::test]
async fn post_update_and_thread_reply() {
    let (mm, client, channel_id) = setup().await;
    let props = json!({"teleport_request_id": "req-1", "attachments": [{"actions": [
        {"id": "approve", "name": "Approve", "integration": {"url": "http://127.0.0.1:1/x", "context": {"a": 1}}}
    ]}]});
    let new = NewPost {
        channel_id: channel_id.clone(),
        message: "pending".into(),
        root_id: None,
        props: props.as_object().unwrap().clone(),
        pending_post_id: None,
        metadata: None,
    };
    let post = client.create_post(&new).await.unwrap();
    assert_eq!(post.id.len(), 26);
    assert_eq!(post.channel_id, channel_id);
    assert_eq!(post.props["teleport_request_id"], "req-1");
    assert!(post.create_at > 0);
    // Mattermost never hands integrations back to API clients.
    assert!(
        post.props["attachments"][0]["actions"][0]
            .get("integration")
            .is_none()
    );
    assert_eq!(mm.recorded()[0].body["message"], "pending");

    let reply = client
        .create_post(&NewPost::new(&channel_id, "alice reviewed").in_thread(&post.id))
        .await
        .unwrap();
    assert_eq!(reply.root_id, post.id);

    let mut edited = post.clone();
    edited.message = "approved".into();
    edited.props = json!({"teleport_request_id": "req-1"})
        .as_object()
        .unwrap()
        .clone();
    let updated = client.update_post(&edited).await.unwrap();
    assert_eq!(updated.message, "approved");
    assert!(updated.update_at >= post.update_at);
    let stored = mm.post(&post.id).unwrap();
    assert_eq!(stored.message, "approved");
    assert!(
        stored.props.get("attachments").is_none(),
        "PUT replaces props"
    );
    assert_eq!(mm.posts_in(&channel_id).len(), 2);
}

#[tokio::test]
async fn updating_a_deleted_post_is_refused() {
    let (mm, client, channel_id) = setup().await;
    let post = client
        .create_post(&NewPost::new(&channel_id, "x"))
        .await
        .unwrap();
    assert!(mm.delete_post(&post.id));
    let err = client.update_post(&post).await.unwrap_err();
    // Mattermost answers a permission error, not 404, for a post that is gone.
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("PUT /api/v4/posts/"), "{err}");
}

#[tokio::test]
async fn direct_channel_is_created_once_and_cached() {
    let (mm, client, _) = setup().await;
    let alice = mm.add_user("alice", "alice@example.com");
    let bot = mm.bot_user_id();
    let dm = client.direct_channel(&bot, &alice).await.unwrap();
    assert_eq!(dm.id, mm.dm_channel_id("alice", &bot));
    assert_eq!(dm.channel_type, "D");
    let again = client.direct_channel(&alice, &bot).await.unwrap();
    assert_eq!(again.id, dm.id);
    assert_eq!(mm.call_count("POST", "/api/v4/channels/direct"), 1);

    let post = client
        .create_post(&NewPost::new(&dm.id, "please review"))
        .await
        .unwrap();
    assert_eq!(mm.posts_in(&dm.id)[0].id, post.id);
}

#[tokio::test]
async fn channel_posts_page_through_the_channel_newest_first() {
    let (mm, client, channel_id) = setup().await;
    let old = client
        .create_post(&NewPost::new(&channel_id, "old"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let first = client
        .create_post(&NewPost::new(&channel_id, "first").with_prop("marker", json!("m1")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = client
        .create_post(&NewPost::new(&channel_id, "second"))
        .await
        .unwrap();

    let posts = client.channel_posts_page(&channel_id, 0, 2).await.unwrap();
    let ids: Vec<_> = posts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [second.id.as_str(), first.id.as_str()]);
    assert_eq!(posts[1].props["marker"], "m1");
    let next = client.channel_posts_page(&channel_id, 1, 2).await.unwrap();
    assert_eq!(next[0].id, old.id);

    // Mattermost serves at most 200 a page; asking for more gets 200.
    mm.add_chatter(&channel_id, &mm.bot_user_id(), 450);
    let page = client
        .channel_posts_page(&channel_id, 0, 1000)
        .await
        .unwrap();
    assert_eq!(page.len(), 200);
    assert!(page.windows(2).all(|w| w[0].create_at >= w[1].create_at));
}

#[tokio::test]
async fn rate_limit_storm_is_ridden_out_honouring_reset_and_posts_once() {
    let (mm, client, channel_id) = setup().await;
    mm.inject_429(3, 0);
    let started = Instant::now();
    let post = client
        .create_post(&NewPost::new(&channel_id, "through the storm"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(mm.posts().len(), 1);
    assert_eq!(mm.posts()[0].id, post.id);
    assert_eq!(mm.call_count("POST", "/api/v4/posts"), 4);
    let stats = client.stats();
    assert_eq!(stats.rate_limited, 3);
    assert_eq!(stats.retries, 3);
}

#[tokio::test]
async fn retry_waits_as_long_as_the_server_asks_within_max_delay() {
    install_crypto();
    let mm = MattermostDouble::start().await;
    let mut s = settings(&mm, TokenSource::Literal(Secret::new(mm.bot_token())));
    s.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_secs(5),
    };
    let client = MattermostClient::new(&s).unwrap();
    mm.inject_429(1, 1);
    let started = Instant::now();
    client.me().await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn persistent_rate_limiting_gives_up_after_max_attempts() {
    let (mm, client, _) = setup().await;
    mm.inject_429(100, 0);
    let err = client.me().await.unwrap_err();
    assert!(
        matches!(err, MattermostError::RateLimited { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(!err.outcome_unknown());
    assert_eq!(mm.call_count("GET", "/api/v4/users/me"), 5);
}

#[tokio::test]
async fn server_errors_on_lookups_are_retried() {
    let (mm, client, _) = setup().await;
    mm.inject_status(2, 503);
    let team = client.team_by_name(TEAM).await.unwrap();
    assert_eq!(team.name, TEAM);
    assert_eq!(mm.call_count("GET", "/api/v4/teams/name/ops"), 3);
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn server_errors_on_updates_are_retried() {
    let (mm, client, channel_id) = setup().await;
    let mut post = client
        .create_post(&NewPost::new(&channel_id, "v1"))
        .await
        .unwrap();
    mm.inject_status(1, 500);
    post.message = "v2".into();
    client.update_post(&post).await.unwrap();
    assert_eq!(mm.post(&post.id).unwrap().message, "v2");
}

#[tokio::test]
async fn create_post_is_not_retried_when_the_response_is_lost() {
    let (mm, client, channel_id) = setup().await;
    mm.inject_lost_post_responses(1);
    let err = client
        .create_post(&NewPost::new(&channel_id, "maybe posted"))
        .await
        .unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(err.status(), Some(502));
    assert_eq!(mm.posts().len(), 1, "exactly one post, no blind retry");
    assert_eq!(mm.call_count("POST", "/api/v4/posts"), 1);
    assert!(err.to_string().contains("may have carried it out"), "{err}");
}

#[tokio::test]
async fn create_post_is_not_retried_on_server_error() {
    let (mm, client, channel_id) = setup().await;
    mm.inject_status(1, 500);
    let err = client
        .create_post(&NewPost::new(&channel_id, "x"))
        .await
        .unwrap_err();
    assert!(err.outcome_unknown());
    assert_eq!(mm.call_count("POST", "/api/v4/posts"), 1);
}

#[tokio::test]
async fn create_post_is_retried_when_the_server_cannot_be_reached() {
    install_crypto();
    // Take a free port, then close it, so connecting is refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let s = MattermostSettings {
        url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        team: TEAM.into(),
        channel: CHANNEL.into(),
        token: TokenSource::Literal(Secret::new("t")),
        rate_limit: RateLimit {
            per_second: 0,
            burst: 0,
        },
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        ca_bundle: None,
    };
    let client = MattermostClient::new(&s).unwrap();
    let err = client
        .create_post(&NewPost::new("c", "x"))
        .await
        .unwrap_err();
    // Never sent, so repeating it was safe, and the outcome is known: nothing was posted.
    assert!(!err.outcome_unknown(), "{err:?}");
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn token_file_is_reread_after_rotation() {
    install_crypto();
    let mm = MattermostDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("token");
    std::fs::write(&path, format!("{}\n", mm.bot_token())).unwrap();
    let client = MattermostClient::new(&settings(&mm, TokenSource::File(path.clone()))).unwrap();
    client.me().await.unwrap();

    mm.set_bot_token("rotated-token-value-0123456");
    let err = client.me().await.unwrap_err();
    assert!(err.is_unauthorized(), "old token is refused: {err:?}");

    std::fs::write(&path, "rotated-token-value-0123456\n").unwrap();
    let me = client.me().await.unwrap();
    assert_eq!(me.id, mm.bot_user_id());
}

#[tokio::test]
async fn unreadable_token_file_is_a_clear_error() {
    install_crypto();
    let mm = MattermostDouble::start().await;
    let path = PathBuf::from("/nonexistent/mm-token");
    let client = MattermostClient::new(&settings(&mm, TokenSource::File(path))).unwrap();
    let err = client.me().await.unwrap_err();
    assert!(matches!(err, MattermostError::TokenFile { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/mm-token"), "{err}");
}

#[tokio::test]
async fn client_rate_limiter_spaces_calls() {
    install_crypto();
    let mm = MattermostDouble::start().await;
    let mut s = settings(&mm, TokenSource::Literal(Secret::new(mm.bot_token())));
    s.rate_limit = RateLimit {
        per_second: 20,
        burst: 1,
    };
    let client = MattermostClient::new(&s).unwrap();
    // A second client of the same server shares the bucket.
    let other = MattermostClient::new(&s).unwrap();
    let started = Instant::now();
    for i in 0..6 {
        let c = if i % 2 == 0 { &client } else { &other };
        c.me().await.unwrap();
    }
    // Burst 1 at 20/s: the first call is free, the other five wait ~50 ms each.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(230), "took {elapsed:?}");
}

#[tokio::test]
async fn server_rate_limit_is_honoured_without_failing() {
    let (mm, client, _) = setup().await;
    mm.set_rate_limit(20, 0);
    for _ in 0..4 {
        client.me().await.unwrap();
    }
    assert!(client.stats().rate_limited >= 1);
    let limited: Vec<_> = mm.calls().into_iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len() as u64, client.stats().rate_limited);
}

#[tokio::test]
async fn too_long_message_is_a_clear_error() {
    let (mm, client, channel_id) = setup().await;
    let err = client
        .create_post(&NewPost::new(&channel_id, "x".repeat(16384)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(!err.outcome_unknown());
    let api = err.api_error().unwrap();
    assert_eq!(api.id, "model.post.is_valid.message_length.app_error");
    assert!(
        err.to_string().contains("POST /api/v4/posts (400)"),
        "{err}"
    );
    assert!(mm.posts().is_empty());

    // The limit itself is accepted.
    client
        .create_post(&NewPost::new(&channel_id, "y".repeat(16383)))
        .await
        .unwrap();
}

#[tokio::test]
async fn posting_to_an_unknown_channel_is_a_permission_error() {
    let (_mm, client, _) = setup().await;
    let err = client
        .create_post(&NewPost::new("aaaaaaaaaaaaaaaaaaaaaaaaaa", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string().contains("Check that the bot is a member"),
        "{err}"
    );
}

#[tokio::test]
async fn a_huge_answer_is_refused_with_the_endpoint_named_and_not_read_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use teleport_mattermost_testkit::mattermost::AnswerBody;
    let (mm, client, _) = setup().await;
    let id = mm.add_user("carol", "carol@example.com");
    let sent = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/v4/users/{id}");
    mm.inject_answer(
        "GET",
        &path,
        1,
        200,
        AnswerBody::HugeUser {
            size: 100 * 1024 * 1024,
            sent: sent.clone(),
        },
        false,
    );
    let err = client.user_by_id(&id).await.unwrap_err();
    assert!(matches!(err, MattermostError::TooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("GET {path}")), "{text}");
    assert!(text.contains("1048576 bytes"), "{text}");
    // The client stopped reading: what crossed the wire is the cap plus what the socket
    // buffers hold, nowhere near 100 MiB.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pulled = sent.load(Ordering::SeqCst);
    assert!(pulled < 16 * 1024 * 1024, "{pulled} bytes were pulled");
    // Nothing was cached: the next lookup asks again and gets the real user.
    assert_eq!(client.user_by_id(&id).await.unwrap().username, "carol");
}

#[tokio::test]
async fn a_huge_error_body_is_cut_not_buffered() {
    use teleport_mattermost_testkit::mattermost::AnswerBody;
    let (mm, client, _) = setup().await;
    mm.inject_answer(
        "GET",
        "/api/v4/users/me",
        1,
        403,
        AnswerBody::Bytes(bytes::Bytes::from(vec![b'x'; 8 * 1024 * 1024])),
        false,
    );
    let err = client.me().await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err:?}");
}

#[tokio::test]
async fn a_created_post_answered_without_an_id_is_not_taken_as_confirmed() {
    use teleport_mattermost_testkit::mattermost::AnswerBody;
    let (mm, client, channel_id) = setup().await;
    mm.inject_answer(
        "POST",
        "/api/v4/posts",
        1,
        201,
        AnswerBody::Bytes(bytes::Bytes::from_static(b"{}")),
        true,
    );
    let err = client
        .create_post(&NewPost {
            channel_id: channel_id.clone(),
            message: "hello".into(),
            root_id: None,
            props: Default::default(),
            pending_post_id: None,
            metadata: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.outcome_unknown(),
        "the post may exist: the caller must look for it, not record an empty id: {err:?}"
    );
    assert!(err.to_string().contains("POST /api/v4/posts"), "{err}");
    assert_eq!(
        mm.posts_in(&channel_id).len(),
        1,
        "the server did create it"
    );
}

#[tokio::test]
async fn an_internal_ca_is_refused_at_once_with_a_hint_and_trusted_with_its_bundle() {
    use teleport_mattermost::settings::CaBundle;
    use teleport_mattermost_testkit::pki::TestPki;
    install_crypto();
    let corp = TestPki::new();
    let (cert, key) = corp.server_cert();
    let mm = MattermostDouble::start_https(&cert, &key).await;
    let token = TokenSource::Literal(Secret::new(mm.bot_token()));
    let untrusted = MattermostClient::new(&MattermostSettings {
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        },
        ..settings(&mm, token.clone())
    })
    .unwrap();
    let started = Instant::now();
    let err = untrusted.me().await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not retried: {:?}: {err}",
        started.elapsed()
    );
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    assert!(err.contains("mattermost.caBundleRef"), "{err}");

    let trusted = MattermostClient::new(&MattermostSettings {
        ca_bundle: Some(CaBundle::from_pem("corp CA", corp.ca_pem().as_bytes()).unwrap()),
        ..settings(&mm, token)
    })
    .unwrap();
    assert_eq!(trusted.me().await.unwrap().id, mm.bot_user_id());
    assert!(
        CaBundle::from_pem("x", b"hello")
            .unwrap_err()
            .contains("no PEM CERTIFICATE")
    );
}

#[tokio::test]
async fn the_client_learns_the_servers_rate_and_paces_a_burst_below_it() {
    let (mm, _, channel_id) = setup().await;
    // The server allows 40/s with bursts of 30; the client's ceiling is the default 100/s.
    mm.set_rate_limit(40, 30);
    let mut s = settings(&mm, TokenSource::Literal(Secret::new(mm.bot_token())));
    s.rate_limit = RateLimit::default();
    s.url = format!("{}?pacing-test", mm.url()).parse().unwrap();
    let client = MattermostClient::new(&s).unwrap();
    let posts = (0..150).map(|i| {
        let client = client.clone();
        let channel_id = channel_id.clone();
        async move {
            client
                .create_post(&NewPost::new(&channel_id, format!("post {i}")))
                .await
        }
    });
    let results = futures::future::join_all(posts).await;
    assert!(results.iter().all(Result::is_ok), "every post went through");
    assert_eq!(mm.posts().len(), 150, "none twice");
    let stats = client.stats();
    let learned = stats
        .learned_rate
        .expect("the rate was learned from X-RateLimit headers");
    assert!((learned - 40.0).abs() < 8.0, "learned {learned}/s");
    // Without pacing, 150 concurrent posts into a 31-call bucket meet about 120 refusals.
    assert!(
        stats.rate_limited < 30,
        "paced, the server refuses few: {stats:?}"
    );
}

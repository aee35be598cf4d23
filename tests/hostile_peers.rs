//! Peers that misbehave: clients that hold the callback server's connections open, a
//! Mattermost that confirms a post without saying which, and a Teleport that keeps breaking the
//! watch. The real server, engine and client over the doubles on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use teleport_mattermost::http_server::{self, Limits, ServerStats};
use teleport_mattermost_testkit::mattermost::AnswerBody;
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn request() -> NewRequest {
    NewRequest {
        user: "bob@example.com".into(),
        roles: vec!["dba".into()],
        reason: "hostile peers".into(),
        ..Default::default()
    }
}

fn callback_addr(stack: &Stack) -> SocketAddr {
    let url = &stack
        .instance
        .settings()
        .callback
        .as_ref()
        .unwrap()
        .action_url;
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
        .parse()
        .unwrap()
}

/// True once the server has closed `stream` (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine too; keep reading to the close.
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_while_a_real_press_still_answers() {
    let stack = Stack::start(StackOptions {
        server_limits: Limits {
            header_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    stack.wait_connected().await;
    let id = stack.teleport.create_request(request());
    assert!(Stack::eventually(WAIT, || !stack.data(&id).messages.is_empty()).await);
    let post = stack.root_posts_for(&id).remove(0);
    let addr = callback_addr(&stack);

    // 250 clients that send one header byte at a time, 250 that send nothing at all.
    let mut silent = Vec::new();
    for _ in 0..250 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let stop = CancellationToken::new();
    let mut slow = Vec::new();
    for _ in 0..250 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"P").await.unwrap();
        slow.push(s);
    }
    let dripping = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut closed = 0;
            let mut byte = 0;
            let header = b"OST /v1/actions/test/team-a HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            while !stop.is_cancelled() {
                for s in slow.iter_mut() {
                    let b = header.get(byte).copied().unwrap_or(b'a');
                    if s.write_all(&[b]).await.is_err() {
                        closed += 1;
                    }
                }
                byte += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (slow, closed)
        })
    };

    // A real press, during the attack.
    let started = Instant::now();
    let pressed = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(pressed.status, 200, "{pressed:?}");
    assert!(
        pressed
            .ephemeral_text
            .unwrap_or_default()
            .contains("You approved")
    );
    assert!(
        took < Duration::from_secs(5),
        "the press took {took:?} during the attack"
    );

    // Every silent connection is closed after the header-read timeout.
    for s in silent.iter_mut() {
        assert!(
            closed_by_server(s, Duration::from_secs(5)).await,
            "a client that never sent a byte is still connected"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (mut slow, _) = dripping.await.unwrap();
    for s in slow.iter_mut() {
        assert!(
            closed_by_server(s, Duration::from_secs(3)).await,
            "a client dripping its headers is still connected"
        );
    }
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_and_idle_ones_are_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    let stop = CancellationToken::new();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(http_server::serve_with(
        listener,
        app,
        Limits {
            max_connections: 5,
            header_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        None,
        stats.clone(),
        stop.clone(),
    ));
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the sixth connection waited for a slot ({:?})",
        started.elapsed()
    );
    assert!(stats.cap_reached.load(Ordering::Relaxed) >= 1);
    assert!(stats.header_timeouts.load(Ordering::Relaxed) >= 1);
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_post_confirmed_without_its_id_is_adopted_by_its_marker_not_recorded_empty() {
    let stack = Stack::start(StackOptions::default()).await;
    stack.wait_connected().await;
    stack.mattermost.inject_answer(
        "POST",
        "/api/v4/posts",
        1,
        201,
        AnswerBody::Bytes(bytes::Bytes::from_static(b"{}")),
        true,
    );
    let id = stack.teleport.create_request(request());
    assert!(
        Stack::eventually(WAIT, || !stack.data(&id).messages.is_empty()).await,
        "the post is recorded once its id is known"
    );
    let posts = stack.root_posts_for(&id);
    assert_eq!(posts.len(), 1, "posted once: the retry adopted the post");
    let recorded = stack.data(&id).messages[0].post_id.clone();
    assert_eq!(
        recorded, posts[0].id,
        "the real post id is recorded, not an empty one"
    );
    assert!(stack.instance.counters.adopted.load(Ordering::Relaxed) >= 1);

    // Its buttons work and are gone after the resolution.
    let pressed = stack
        .mattermost
        .press(&recorded, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(pressed.status, 200);
    stack.teleport.expire(&id);
    assert!(
        Stack::eventually(WAIT, || stack.mattermost.post(&recorded).is_some_and(|p| p
            .message
            .contains("APPROVED by @alice")
            && p.props
                .get("attachments")
                .is_none_or(|a| !a.to_string().contains("actions"))))
        .await
    );
}

#[tokio::test]
async fn the_reconnect_delay_resets_after_every_healthy_session() {
    let stack = Stack::start(StackOptions::default()).await;
    stack.wait_connected().await;
    let connects = || {
        stack
            .instance
            .counters
            .watch_connects
            .load(Ordering::Relaxed)
    };
    let mut delays = Vec::new();
    for round in 0..6 {
        let before = connects();
        // Let the session finish its resync, so it counts as healthy.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let broke = Instant::now();
        stack.teleport.break_watches(tonic::Code::Unavailable);
        assert!(
            Stack::eventually(Duration::from_secs(40), || connects() > before).await,
            "round {round}: never reconnected"
        );
        delays.push(broke.elapsed());
    }
    // Backing off without a reset would reach 16 s by the sixth break.
    let worst = delays.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(3),
        "reconnect delays grew: {delays:?}"
    );
    // Requests still flow after all that.
    let id = stack.teleport.create_request(request());
    assert!(Stack::eventually(WAIT, || !stack.data(&id).messages.is_empty()).await);
}

/// Teleport ends a connection whose client pings more often than its policy allows (the
/// double enforces it as Teleport's gRPC server does), and the plugin's keepalive stays
/// within it: the policy here is scaled down from Teleport's 60 s to seconds.
#[tokio::test]
async fn an_idle_watch_pinged_within_teleports_policy_is_never_dropped() {
    use teleport_mattermost_testkit::grpc_link::PingPolicy;
    let policy = PingPolicy {
        min_time: Duration::from_secs(2),
        max_strikes: 2,
    };
    let connects = |s: &Stack| s.instance.counters.watch_connects.load(Ordering::Relaxed);

    // Pinging faster than the server allows: dropped, as the plugin was by Teleport v13.
    let eager = Stack::start(StackOptions {
        keepalive: Duration::from_secs(1),
        teleport_ping_policy: policy,
        ..Default::default()
    })
    .await;
    eager.wait_connected().await;
    let stats = eager.teleport.ping_stats();
    assert!(
        Stack::eventually(Duration::from_secs(15), || stats
            .too_many_pings
            .load(Ordering::Relaxed)
            >= 1
            && connects(&eager) >= 2)
        .await,
        "the double ends a connection that pings too often, and the watch comes back"
    );

    // Within the policy: pings flow and nothing is dropped.
    let polite = Stack::start(StackOptions {
        keepalive: Duration::from_secs(3),
        teleport_ping_policy: policy,
        ..Default::default()
    })
    .await;
    polite.wait_connected().await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    let stats = polite.teleport.ping_stats();
    assert!(
        stats.pings.load(Ordering::Relaxed) >= 3,
        "the idle connection is pinged"
    );
    assert_eq!(stats.too_many_pings.load(Ordering::Relaxed), 0);
    assert_eq!(connects(&polite), 1, "the watch was never re-established");
}

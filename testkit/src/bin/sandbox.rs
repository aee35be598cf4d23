//! See it work in one minute: both doubles and the real engine on loopback. Creates an access
//! request, prints the Mattermost post, presses Approve as a reviewer, and prints the result.
//!
//! `cargo run --bin sandbox`

use std::time::Duration;

use teleport_mattermost::request::RequestState;
use teleport_mattermost_testkit::stack::{CHANNEL, Stack, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::NewRequest;

fn rule(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(60usize.saturating_sub(title.len()))
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let stack = Stack::start(StackOptions {
        approvers: vec!["alice".into()],
        recipients: vec!["carol@example.com".into()],
        ..Default::default()
    })
    .await;
    stack.wait_connected().await;
    rule("started");
    println!("Teleport double   {}", stack.teleport.address());
    println!("Mattermost double {}", stack.mattermost.url());
    println!("Posting to        {TEAM}/{CHANNEL}, plus a DM to carol; approvers: alice");

    let id = stack.teleport.create_request(NewRequest {
        user: "bob@example.com".into(),
        roles: vec!["dba".into(), "prod-access".into()],
        reason: "Investigating the `orders` table lock (INC-1234)".into(),
        suggested_reviewers: vec!["alice@example.com".into()],
        ..Default::default()
    });
    rule("bob@example.com asked for roles dba, prod-access");
    println!("request id {id}");

    let posted = Stack::eventually(Duration::from_secs(20), || {
        !stack.data(&id).messages.is_empty()
    })
    .await;
    anyhow::ensure!(posted, "the request was not posted within 20 s");
    let post = stack.root_posts_for(&id).remove(0);
    rule("the post in ~engineering/access-requests");
    println!("{}", post.message);
    let buttons: Vec<String> = post.props["attachments"][0]["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(|n| format!("[{n}]")))
        .collect();
    println!("{}", buttons.join(" "));

    rule("mallory presses Approve");
    let refused = stack
        .mattermost
        .press(&post.id, "Approve", "mallory")
        .await?;
    println!("ephemeral: {}", refused.ephemeral_text.unwrap_or_default());

    rule("alice presses Approve");
    let outcome = stack.mattermost.press(&post.id, "Approve", "alice").await?;
    println!("ephemeral: {}", outcome.ephemeral_text.unwrap_or_default());

    let request = stack.teleport.request(&id).expect("request exists");
    let change = stack.teleport.state_changes().into_iter().next();
    rule("Teleport now says");
    println!("state:     {}", request.state.as_str());
    if let Some(change) = change {
        println!("delegator: {}", change.delegator);
        println!("reason:    {}", change.reason);
    }
    Stack::eventually(Duration::from_secs(20), || {
        stack.data(&id).edited == Some(RequestState::Approved)
    })
    .await;
    rule("the edited post");
    println!("{}", stack.mattermost.post(&post.id).expect("post").message);
    anyhow::ensure!(
        request.state == RequestState::Approved,
        "request was not approved"
    );
    println!("\nApproved. Every part above ran for real over gRPC+mTLS and HTTP on 127.0.0.1.");
    Ok(())
}

fn tracing_subscriber_init() {
    // Quiet by default; RUST_LOG=info shows the engine at work.
    let _ = teleport_mattermost::telemetry::init_logging(
        &teleport_mattermost::telemetry::LogSettings {
            severity: tracing::Level::WARN,
            ..Default::default()
        },
    );
}

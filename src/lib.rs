//! teleport-mattermost: Teleport access requests in Mattermost, with Approve/Deny buttons.
//!
//! Data flows one way: Teleport event → [`bridge`] → [`message`] → [`mattermost`]. A button
//! press flows back: [`callback`] → [`teleport`]. Both work through an [`instance`] and ask
//! [`review`] who may decide; neither asks the other.

pub mod access_monitoring;
pub mod bridge;
pub mod callback;
pub mod config;
pub mod http_server;
pub mod instance;
pub mod mattermost;
pub mod message;
pub mod notice;
pub mod operator;
pub mod plugin_data;
pub mod request;
pub mod review;
pub mod rule_routing;
pub mod settings;
pub mod standalone;
pub mod telemetry;
pub mod teleport;

/// An error and its sources, each said once: "error sending request: invalid peer
/// certificate: UnknownIssuer", not just the outermost layer, which often names no cause.
pub(crate) fn error_chain(mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

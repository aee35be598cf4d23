//! teleport-mattermost: Teleport access requests in Mattermost, with Approve/Deny buttons.
//!
//! Data flows one way: Teleport event → [`bridge`] → [`message`] → [`mattermost`]. A button
//! press flows back: [`callback`] → [`teleport`].

pub mod bridge;
pub mod callback;
pub mod config;
pub mod http_server;
pub mod mattermost;
pub mod message;
pub mod operator;
pub mod plugin_data;
pub mod request;
pub mod settings;
pub mod standalone;
pub mod telemetry;
pub mod teleport;

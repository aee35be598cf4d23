//! teleport-mattermost: Teleport access requests in Mattermost, with Approve/Deny buttons.
//!
//! Data flows one way: Teleport event → [`bridge`] → [`message`] → [`mattermost`]. A button
//! press flows back: [`callback`] → [`teleport`].

pub mod request;
pub mod settings;
pub mod teleport;

//! Reviewing a request from Mattermost: who may decide ([`policy`]), who a person is
//! ([`people`]), what a press's signature proves ([`signature`]), who Teleport says decided
//! ([`reason`]), and what Mattermost says about memberships ([`membership`]).
//!
//! Both the engine (which buttons a post carries) and the callback server (whether a press
//! counts) ask these modules; neither asks the other.

pub mod membership;
pub mod people;
pub mod policy;
pub mod reason;
pub mod signature;

pub use policy::{ButtonPolicy, ButtonSet, ChannelName, Grant, Reader, Refusal, Standing};

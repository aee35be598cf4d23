//! Teleport Auth API client: generated gRPC types, mTLS identity, and the calls the bridge makes.

pub mod client;
pub mod error;
pub mod handshake;
pub mod identity;
pub mod monitoring;
pub mod route;
pub mod upgrade;
pub mod watch;
pub mod wire;

//! Test doubles for Teleport and Mattermost that speak the real wire protocols on 127.0.0.1,
//! shared by the integration tests, the benches and the `sandbox` demo.

pub mod cluster;
pub mod control_plane;
pub mod dockerfile;
pub mod grpc_link;
pub mod l7_relay;
pub mod mattermost;
pub mod node;
pub mod pki;
pub mod pod;
pub mod real_mattermost;
pub mod real_teleport;
pub mod registry;
pub mod stack;
pub mod tarball;
pub mod teleport;

//! Teleport Auth API client: generated gRPC types, mTLS identity, and the calls the bridge makes.

pub mod wire;

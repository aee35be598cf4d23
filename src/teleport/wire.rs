//! Code generated from `proto/`, a wire-compatible subset of Teleport's protos.
#![allow(clippy::all, missing_docs)]

pub mod proto {
    tonic::include_proto!("proto");
}
pub mod types {
    tonic::include_proto!("types");
}
pub mod wrappers {
    tonic::include_proto!("wrappers");
}

//! The Kubernetes operator: one bridge instance per `MattermostAccessPlugin` object.
//!
//! [`crd`] holds the custom resource's Rust types, from which the CRD YAML in `crds/` is
//! generated.

pub mod crd;

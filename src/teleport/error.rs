//! What can go wrong talking to Teleport, classified for the retry logic, and said so that an
//! admin knows what to fix.

use std::error::Error as _;
use std::time::Duration;

use tonic::Code;

use super::identity::IdentityError;
use super::route::Route;
use crate::error_chain;

/// Everything that can go wrong talking to Teleport.
#[derive(Debug, thiserror::Error)]
pub enum TeleportError {
    /// The identity is unusable (expired, not yet valid, …).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The auth address cannot form a URI.
    #[error(
        "Teleport address {address:?} is not valid ({detail}); use host:port of the auth server, e.g. teleport.example.com:3025"
    )]
    InvalidAddress {
        /// The configured address.
        address: String,
        /// Why it is invalid.
        detail: String,
    },
    /// The connection or the mutual TLS handshake failed.
    #[error("cannot connect to Teleport at {address}: {detail}{hint}")]
    Connect {
        /// The configured address.
        address: String,
        /// The transport's error chain, flattened.
        detail: String,
        /// What to check, derived from the failure.
        hint: &'static str,
    },
    /// A call returned a gRPC error.
    #[error(
        "Teleport {call} failed: {}{}",
        describe_status(status),
        if *call == "Ping" && status.code() == Code::PermissionDenied {
            PING_DENIED_HINT
        } else {
            rpc_hint(status)
        }
    )]
    Rpc {
        /// The RPC name.
        call: &'static str,
        /// The status returned.
        status: tonic::Status,
    },
    /// No way through to Auth at this address (a Proxy without TLS routing, another cluster,
    /// a refused upgrade).
    #[error("cannot reach Teleport at {address}: {source}")]
    Route {
        /// The configured address.
        address: String,
        /// Why.
        source: super::route::RouteError,
    },
    /// Plugin data kept changing under us.
    #[error(
        "plugin data of access request {request_id} changed concurrently {attempts} times in a row; giving up for now (another replica or plugin is writing it)"
    )]
    CompareFailed {
        /// The access request id.
        request_id: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The watch stream did not deliver INIT in time.
    #[error(
        "Teleport watch did not initialise within {after:?}; the auth server may be overloaded or its backend unavailable"
    )]
    InitTimeout {
        /// The bound that passed.
        after: Duration,
    },
    /// The watch stream's first event was not INIT.
    #[error("Teleport watch sent {got} before INIT; the server is not speaking the watch protocol")]
    NoInit {
        /// What arrived instead.
        got: String,
    },
    /// Auth took the TLS handshake, then closed the connection before a word: how Teleport
    /// refuses a locked identity (`lib/auth/transport_credentials.go`, v13+).
    #[error(
        "Teleport at {address} accepted the TLS handshake, then closed the connection without answering: that is how Teleport refuses a locked identity. Check for a lock on the plugin's user or role (`tctl get locks`; lift it with `tctl rm lock/<name>`); the role's max_connections, private key policy or device trust refuse the same way ({detail})"
    )]
    Refused {
        /// The configured address.
        address: String,
        /// What the transport saw.
        detail: String,
    },
    /// The auth server is older than [`MIN_SERVER_VERSION`].
    #[error(
        "Teleport auth server version {server_version} is older than {minimum}, the oldest this plugin supports; upgrade Teleport"
    )]
    VersionTooOld {
        /// The server's version.
        server_version: String,
        /// The required minimum.
        minimum: String,
    },
    /// The version string is not semver.
    #[error("cannot read Teleport version {version:?}: {detail}")]
    BadVersion {
        /// The string that failed to parse.
        version: String,
        /// The parser's complaint.
        detail: String,
    },
}

impl TeleportError {
    /// True when a plugin data expectation did not hold (or retries on it ran out).
    ///
    /// Teleport raises `trace.CompareFailed`, which its gRPC layer maps to
    /// `FailedPrecondition` (`gravitational/trace` `trail.ToGRPC`); the text is checked too in
    /// case a proxy in between rewrites codes.
    pub fn is_compare_failed(&self) -> bool {
        match self {
            Self::CompareFailed { .. } => true,
            Self::Rpc { status, .. } => {
                status.code() == Code::FailedPrecondition
                    || status
                        .message()
                        .to_ascii_lowercase()
                        .contains("compare failed")
            }
            _ => false,
        }
    }

    /// True when Teleport refuses the plugin's identity itself, as it does a locked one:
    ///
    /// - at the handshake (Auth servers whose gRPC transport credentials run the authorizer,
    ///   `lib/auth/transport_credentials.go`): the connection closes before a word
    ///   ([`Self::Refused`]; a re-dial of an open channel shows the same as a failed call);
    /// - per call (a real v13.3.8 did this): `Ping`, which needs no permission, is denied
    ///   with a bare "access denied". The authorizer's "lock targeting … is in force" goes
    ///   through `ConvertAuthorizerError` (`lib/authz/permissions.go`), which keeps only those
    ///   words; a missing role permission never fails `Ping`.
    ///
    /// Other calls denied with "access denied" cannot be told from a missing permission; their
    /// hint names both.
    pub fn is_identity_locked(&self) -> bool {
        match self {
            Self::Refused { .. } => true,
            Self::Rpc {
                call: "Ping",
                status,
            } if status.code() == Code::PermissionDenied
                && status.message().trim() == "access denied" =>
            {
                true
            }
            Self::Rpc { status, .. } => super::handshake::closed_silently(status),
            _ => false,
        }
    }

    /// The `TeleportConnected` condition's reason for this failure: `IdentityLocked` when the
    /// identity is locked, else `Unreachable`.
    pub fn condition_reason(&self) -> &'static str {
        if self.is_identity_locked() {
            "IdentityLocked"
        } else {
            "Unreachable"
        }
    }

    /// True when Teleport answered `NotFound` (e.g. setting the state of a deleted request).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == Code::NotFound)
    }

    /// True when `SetAccessRequestState` refused because the request is already resolved.
    ///
    /// Teleport only refuses to change a request that is already DENIED:
    /// `AccessRequestV3.SetState` returns `BadParameter("cannot set request-state %q (already
    /// denied)")`, sent as `InvalidArgument`. Approved requests can still be denied, and a
    /// repeated DENIED is a no-op, so callers must check the state before writing.
    pub fn is_already_resolved(&self) -> bool {
        match self {
            Self::Rpc { status, .. } => {
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ) && status.message().contains("already ")
            }
            _ => false,
        }
    }

    /// True for failures worth retrying with backoff: connectivity, overload, timeouts,
    /// contention.
    pub fn is_transient(&self) -> bool {
        match self {
            // A lock can be lifted; the caller's backoff spaces the retries.
            Self::Connect { .. }
            | Self::Refused { .. }
            | Self::InitTimeout { .. }
            | Self::CompareFailed { .. } => true,
            Self::Rpc { status, .. } => {
                matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::ResourceExhausted
                        | Code::Aborted
                        | Code::Cancelled
                        | Code::Unknown
                        | Code::Internal
                ) || self.is_compare_failed()
            }
            _ => false,
        }
    }

    /// The gRPC status, for RPC errors.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

pub(super) fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> TeleportError {
    move |status| TeleportError::Rpc { call, status }
}

/// `code: message (cause: cause …)`, with the transport's chain when there is one.
pub(super) fn describe_status(status: &tonic::Status) -> String {
    let chain = error_chain(status.source());
    let message = status.message();
    if chain.is_empty() || message.contains(&chain) {
        format!("{:?}: {message}", status.code())
    } else if chain.starts_with(message) {
        // Transport failures repeat the message as the chain's head; say it once.
        format!("{:?}: {chain}", status.code())
    } else {
        format!("{:?}: {message} ({chain})", status.code())
    }
}

fn rpc_hint(status: &tonic::Status) -> &'static str {
    let text = describe_status(status).to_ascii_lowercase();
    match status.code() {
        Code::PermissionDenied if status.message().contains("client version is unsupported") => {
            "; Auth refused a client version sent in gRPC metadata, which this plugin never sends: a proxy in between must be adding it"
        }
        Code::PermissionDenied => {
            "; the plugin's Teleport role lacks a permission (it needs list/read/update on access_request and update on access_plugin_data), or its identity is locked (`tctl get locks`)"
        }
        Code::Unauthenticated => {
            "; Teleport did not accept the certificate: re-issue it with `tctl auth sign --format=tls`"
        }
        _ if text.contains("certificate") || text.contains("tls") || text.contains("handshake") => {
            TLS_HINT
        }
        Code::Unavailable => "; check that the auth server is running and reachable",
        _ => "",
    }
}

const PING_DENIED_HINT: &str = "; Teleport refused the plugin's identity itself (Ping needs no permission): it is locked (find the lock with `tctl get locks`, lift it with `tctl rm lock/<name>`), or its user no longer exists";

const TLS_HINT: &str = "; the TLS handshake failed: check that auth.cas holds this cluster's host CA and that the certificate was issued by this cluster (`tctl auth sign --format=tls`)";

/// Compares `server_version` with `minimum`, ignoring a `v` prefix, pre-release and build
/// suffixes (a `17.0.0-rc.1` server is treated as `17.0.0`).
pub fn check_server_version(server_version: &str, minimum: &str) -> Result<(), TeleportError> {
    let server = parse_version(server_version)?;
    let min = parse_version(minimum)?;
    if (server.major, server.minor, server.patch) < (min.major, min.minor, min.patch) {
        return Err(TeleportError::VersionTooOld {
            server_version: server_version.to_owned(),
            minimum: minimum.to_owned(),
        });
    }
    Ok(())
}

fn parse_version(version: &str) -> Result<semver::Version, TeleportError> {
    let trimmed = version.trim();
    let trimmed = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
    semver::Version::parse(trimmed).map_err(|e| TeleportError::BadVersion {
        version: version.to_owned(),
        detail: e.to_string(),
    })
}

pub(super) fn connect_hint(detail: &str, route: &Route) -> &'static str {
    let lower = detail.to_ascii_lowercase();
    if route.is_direct() && lower.contains("causedasendentity") {
        // A Proxy's web certificate instead of Auth's: the address is a Proxy that the
        // discovery did not recognise.
        "; the address answered with a web certificate, not the Auth Service's: if it is a Teleport Proxy, set the connection to \"proxy\" (and give its CA if private)"
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("alert")
    {
        TLS_HINT
    } else if lower.contains("refused") || lower.contains("dns") || lower.contains("timed out") {
        "; check the address and that the auth server is reachable from here"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teleport::client::MIN_SERVER_VERSION;

    #[test]
    fn version_at_or_above_minimum_passes() {
        check_server_version("17.4.2", "10.0.0").unwrap();
        check_server_version("v10.0.0", "10.0.0").unwrap();
        check_server_version("10.0.0-beta.1", "10.0.0").unwrap();
        check_server_version("18.0.0-dev+abc", "v17.1.0").unwrap();
    }

    #[test]
    fn version_below_minimum_is_too_old_and_names_both() {
        let err = check_server_version("9.3.7", "10.0.0").unwrap_err();
        assert!(matches!(err, TeleportError::VersionTooOld { .. }));
        let msg = err.to_string();
        assert!(msg.contains("9.3.7") && msg.contains("10.0.0"), "{msg}");
    }

    #[test]
    fn unparsable_version_is_reported() {
        let err = check_server_version("seventeen", "10.0.0").unwrap_err();
        assert!(matches!(err, TeleportError::BadVersion { .. }));
    }

    #[test]
    fn minimum_constant_parses() {
        check_server_version(MIN_SERVER_VERSION, MIN_SERVER_VERSION).unwrap();
    }

    #[test]
    fn error_classification() {
        let fp = TeleportError::Rpc {
            call: "UpdatePluginData",
            status: tonic::Status::failed_precondition("expectations not met for field \"user\""),
        };
        assert!(fp.is_compare_failed() && fp.is_transient());
        let denied = TeleportError::Rpc {
            call: "SetAccessRequestState",
            status: tonic::Status::invalid_argument(
                "cannot set request-state \"APPROVED\" (already denied)",
            ),
        };
        assert!(denied.is_already_resolved() && !denied.is_compare_failed());
        let nf = TeleportError::Rpc {
            call: "SetAccessRequestState",
            status: tonic::Status::not_found(
                "cannot set state of access request \"x\" (not found)",
            ),
        };
        assert!(nf.is_not_found() && !nf.is_already_resolved());
        let perm = TeleportError::Rpc {
            call: "GetAccessRequestsV2",
            status: tonic::Status::permission_denied("access denied"),
        };
        assert!(perm.to_string().contains("role"), "{perm}");
        assert!(!perm.is_identity_locked());
        assert_eq!(perm.condition_reason(), "Unreachable");
    }

    #[test]
    fn a_refusal_at_the_handshake_is_a_lock_and_a_bare_access_denied_hints_at_one() {
        // What a call on a connection opened before the lock gets (ConvertAuthorizerError).
        let per_call = TeleportError::Rpc {
            call: "GetAccessRequestsV2",
            status: tonic::Status::permission_denied("access denied"),
        };
        assert!(!per_call.is_identity_locked());
        assert_eq!(per_call.condition_reason(), "Unreachable");
        // Ping needs no permission: denied, the identity itself is refused (a v13.3.8 lock).
        let ping = TeleportError::Rpc {
            call: "Ping",
            status: tonic::Status::permission_denied("access denied"),
        };
        assert!(ping.is_identity_locked());
        assert_eq!(ping.condition_reason(), "IdentityLocked");
        assert!(ping.to_string().contains("tctl get locks"), "{ping}");
        assert!(!ping.to_string().contains("lacks a permission"), "{ping}");
        assert!(
            per_call.to_string().contains("tctl get locks"),
            "{per_call}"
        );
        let at_handshake = TeleportError::Refused {
            address: "auth:3025".into(),
            detail: "Unavailable: transport error".into(),
        };
        assert!(at_handshake.is_identity_locked() && at_handshake.is_transient());
        assert_eq!(at_handshake.condition_reason(), "IdentityLocked");
        assert!(at_handshake.to_string().contains("tctl get locks"));
        let unreachable = TeleportError::Connect {
            address: "auth:3025".into(),
            detail: "connection refused".into(),
            hint: "",
        };
        assert_eq!(unreachable.condition_reason(), "Unreachable");
    }
}

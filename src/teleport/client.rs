//! The Teleport Auth API calls the bridge and the callback server make.
//!
//! One [`TeleportClient`] wraps one mTLS gRPC channel to the auth server. It is cheap to clone
//! (tonic channels multiplex), so every task holds its own copy.

use std::collections::HashMap;
use std::time::Duration;

use crate::settings::RetryPolicy;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

pub use super::error::{TeleportError, check_server_version};
use super::error::{connect_hint, describe_status, rpc};
pub use super::monitoring::{MonitoringError, MonitoringPermission, RuleListing};
use super::route::{ConnectionMode, Route, Router};
pub use super::watch::{AccessRequestWatch, WatchEvent, WatchedKinds};
use crate::error_chain;
use crate::request::{AccessRequest, RequestState};
use crate::settings::CaBundle;
use crate::teleport::identity::Identity;
use crate::teleport::wire::proto;
use crate::teleport::wire::proto::auth_service_client::AuthServiceClient;
use crate::teleport::wire::types;

/// The plugin name under which plugin data is stored; the same as Teleport's own Mattermost
/// plugin, so an install can take over its posts.
pub const PLUGIN_NAME: &str = "mattermost";

/// The oldest Teleport auth server this client works with.
///
/// `GetAccessRequestsV2` (the streaming list) is the newest RPC used. Teleport's gRPC server
/// marks the old unary `GetAccessRequests` "DEPRECATED, DELETE IN 11.0.0: Use
/// GetAccessRequestsV2 instead" (`lib/auth/grpcserver.go`), so every 10.x server answers V2.
pub const MIN_SERVER_VERSION: &str = "10.0.0";

/// Every Teleport auth server certificate carries this DNS name, whatever address is dialled.
pub const SERVER_NAME: &str = "teleport.cluster.local";

/// Resource kind of access requests in watches, filters and plugin data.
pub(super) const KIND_ACCESS_REQUEST: &str = "access_request";

/// TCP + TLS connect bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Compare-and-swap attempts before giving up on a contended plugin data entry.
const CAS_ATTEMPTS: u32 = 10;

/// Server information from `Ping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingInfo {
    /// The cluster's name.
    pub cluster_name: String,
    /// The auth server's version, e.g. `17.4.2`.
    pub server_version: String,
    /// The proxy's public address (`host:port`), empty when unknown.
    pub proxy_public_addr: String,
    /// Whether the cluster has Advanced Access Workflows (web UI request pages).
    pub advanced_workflows: bool,
}

/// Teleport's gRPC server refuses client pings that come sooner than this after the previous
/// one: its `KeepaliveEnforcementPolicy.MinTime` is the API's `ServerKeepAliveTTL`, 60 s. Three
/// such pings and it ends the connection (GOAWAY `too_many_pings`), which drops the watch.
pub const SERVER_MIN_PING_INTERVAL: Duration = Duration::from_secs(60);
/// How often the connection is pinged while nothing arrives, watch or no watch (Teleport's
/// own `api/client` pings every 60 s with `PermitWithoutStream`). Strictly above
/// [`SERVER_MIN_PING_INTERVAL`], with a margin for timer jitter, so the server never counts
/// a strike; a dead connection is still noticed within two minutes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(90);
/// How long a ping may wait for its answer before the connection is considered dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(KEEPALIVE_INTERVAL.as_secs() > SERVER_MIN_PING_INTERVAL.as_secs() + 10);

/// A client for the Teleport Auth gRPC API over mutual TLS.
#[derive(Clone)]
pub struct TeleportClient {
    pub(super) inner: AuthServiceClient<Channel>,
    /// The same channel, for Teleport's other services (access monitoring rules, users).
    pub(super) channel: Channel,
    address: String,
    router: Router,
}

/// How [`TeleportClient::connect_with`] reaches Auth.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Direct, through a Proxy, or worked out from the address.
    pub mode: ConnectionMode,
    /// Extra CAs for a Proxy's web certificate.
    pub web_ca: Option<CaBundle>,
    /// How often an idle connection is pinged.
    pub keepalive: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            mode: ConnectionMode::Auto,
            web_ca: None,
            keepalive: KEEPALIVE_INTERVAL,
        }
    }
}

impl std::fmt::Debug for TeleportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeleportClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TeleportClient {
    /// Dials `address` (`host:port`) with the identity and proves the handshake with a `Ping`.
    ///
    /// TLS 1.3 servers reject a client certificate only after the client considers the
    /// handshake done, so without the `Ping` a wrong identity would surface at the first real
    /// call instead of here.
    pub async fn connect(address: &str, identity: &Identity) -> Result<Self, TeleportError> {
        Self::connect_with(address, identity, &ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with the route and keepalive given.
    pub async fn connect_with(
        address: &str,
        identity: &Identity,
        options: &ConnectOptions,
    ) -> Result<Self, TeleportError> {
        identity.check_time(chrono::Utc::now())?;
        let invalid = |detail: String| TeleportError::InvalidAddress {
            address: address.to_owned(),
            detail,
        };
        let router =
            Router::resolve(address, identity, options.mode, options.web_ca.as_ref()).await?;
        let route = router.route();
        // Plain http:// to tonic: the connector below does the TLS (with the route's ALPN),
        // and the channel speaks HTTP/2 over it.
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| invalid(error_chain(Some(&e))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.keepalive)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let dialer = router.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let dialer = dialer.clone();
            async move {
                let io = tokio::time::timeout(CONNECT_TIMEOUT, dialer.dial())
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
                    })??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        });
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                let detail = error_chain(Some(&e));
                TeleportError::Connect {
                    address: address.to_owned(),
                    hint: connect_hint(&detail, &route),
                    detail,
                }
            })?;
        let client = Self {
            inner: AuthServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            channel,
            address: address.to_owned(),
            router,
        };
        // The first dial has happened: for an upgrade, the route now says which one worked.
        let route = client.route();
        match client.ping().await {
            Ok(_) => Ok(client),
            // Transport-level failures at the first call are handshake problems: report them
            // as connection errors with the TLS hint. Application errors pass through.
            Err(TeleportError::Rpc { status, .. })
                if matches!(status.code(), Code::Unavailable | Code::Unknown) =>
            {
                let detail = describe_status(&status);
                if super::handshake::closed_silently(&status) {
                    return Err(TeleportError::Refused {
                        address: address.to_owned(),
                        detail,
                    });
                }
                Err(TeleportError::Connect {
                    address: address.to_owned(),
                    hint: connect_hint(&detail, &route),
                    detail,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// How this client reaches Auth (for a connection upgrade, the one that worked last).
    pub fn route(&self) -> Route {
        self.router.route()
    }

    /// What the Proxy's `/webapi/find` said (its version, `min_client_version`, `edition`),
    /// when the address is a Proxy.
    pub fn proxy_find(&self) -> Option<&super::route::ProxyFind> {
        self.router.proxy_find()
    }

    /// The address this client dials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Cluster name, version and features.
    pub async fn ping(&self) -> Result<PingInfo, TeleportError> {
        let resp = self
            .inner
            .clone()
            .ping(proto::PingRequest {})
            .await
            .map_err(rpc("Ping"))?
            .into_inner();
        Ok(PingInfo {
            advanced_workflows: resp
                .server_features
                .as_ref()
                .is_some_and(|f| f.advanced_access_workflows),
            cluster_name: resp.cluster_name,
            server_version: resp.server_version,
            proxy_public_addr: resp.proxy_public_addr,
        })
    }

    async fn get_access_requests(
        &self,
        filter: types::AccessRequestFilter,
    ) -> Result<Vec<AccessRequest>, TeleportError> {
        let mut stream = self
            .inner
            .clone()
            .get_access_requests_v2(filter)
            .await
            .map_err(rpc("GetAccessRequestsV2"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(req) = stream.message().await.map_err(rpc("GetAccessRequestsV2"))? {
            out.push(AccessRequest::from(&req));
        }
        Ok(out)
    }

    /// Every access request the plugin may see, in any state.
    pub async fn list_access_requests(&self) -> Result<Vec<AccessRequest>, TeleportError> {
        self.get_access_requests(types::AccessRequestFilter::default())
            .await
    }

    /// One access request; `None` when it does not exist (any more).
    pub async fn get_access_request(
        &self,
        id: &str,
    ) -> Result<Option<AccessRequest>, TeleportError> {
        let filter = types::AccessRequestFilter {
            id: id.to_owned(),
            ..Default::default()
        };
        Ok(self
            .get_access_requests(filter)
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    async fn get_plugin_data(
        &self,
        resource: &str,
    ) -> Result<Vec<types::PluginDataV3>, TeleportError> {
        let filter = types::PluginDataFilter {
            kind: KIND_ACCESS_REQUEST.to_owned(),
            resource: resource.to_owned(),
            plugin: PLUGIN_NAME.to_owned(),
        };
        Ok(self
            .inner
            .clone()
            .get_plugin_data(filter)
            .await
            .map_err(rpc("GetPluginData"))?
            .into_inner()
            .plugin_data)
    }

    /// This plugin's data for one request; `None` when there is none.
    pub async fn plugin_data(
        &self,
        request_id: &str,
    ) -> Result<Option<HashMap<String, String>>, TeleportError> {
        Ok(self
            .get_plugin_data(request_id)
            .await?
            .into_iter()
            .filter(|d| d.metadata.as_ref().is_some_and(|m| m.name == request_id))
            .find_map(entry_of_plugin))
    }

    /// This plugin's data for every access request that has some: `(request id, data)`.
    pub async fn list_plugin_data(
        &self,
    ) -> Result<Vec<(String, HashMap<String, String>)>, TeleportError> {
        Ok(self
            .get_plugin_data("")
            .await?
            .into_iter()
            .filter_map(|d| {
                let id = d.metadata.as_ref()?.name.clone();
                Some((id, entry_of_plugin(d)?))
            })
            .collect())
    }

    /// One conditional write: `expect` must match the stored values (missing = `""`), then
    /// `set` is applied (`""` deletes a key).
    pub async fn update_plugin_data(
        &self,
        request_id: &str,
        set: HashMap<String, String>,
        expect: HashMap<String, String>,
    ) -> Result<(), TeleportError> {
        let params = types::PluginDataUpdateParams {
            kind: KIND_ACCESS_REQUEST.to_owned(),
            resource: request_id.to_owned(),
            plugin: PLUGIN_NAME.to_owned(),
            set,
            expect,
        };
        self.inner
            .clone()
            .update_plugin_data(params)
            .await
            .map_err(rpc("UpdatePluginData"))?;
        Ok(())
    }

    /// Compare-and-swap loop on this plugin's data for one request.
    ///
    /// Reads the entry, calls `f(current)`, and writes the map `f` returns with Expect =
    /// the map read (or every new key = `""` when there was none). On a compare failure it
    /// re-reads and retries with jittered backoff, up to 10 attempts. `f` returns `None` for
    /// "no change" (then this returns `Ok(None)`), or `Some((new_full_map, value))`; keys in
    /// the current map but not in the new one are deleted. Returns `Ok(Some(value))` once
    /// written.
    pub async fn modify_plugin_data<T, F>(
        &self,
        request_id: &str,
        mut f: F,
    ) -> Result<Option<T>, TeleportError>
    where
        F: FnMut(Option<&HashMap<String, String>>) -> Option<(HashMap<String, String>, T)>,
    {
        // The first conflict is retried at once: the other writer is usually this plugin's
        // own engine or press, done by the time the data is re-read, and sleeping first cost
        // a press 25–50 ms at the 99th percentile. Only repeated conflicts back off.
        let mut delays = std::iter::once(Duration::ZERO).chain(
            RetryPolicy {
                max_attempts: CAS_ATTEMPTS - 1,
                base_delay: Duration::from_millis(25),
                max_delay: Duration::from_millis(800),
            }
            .delays(),
        );
        for _ in 0..CAS_ATTEMPTS {
            let current = self.plugin_data(request_id).await?;
            let Some((new, value)) = f(current.as_ref()) else {
                return Ok(None);
            };
            let (set, expect) = cas_params(current.as_ref(), &new);
            if set.is_empty() {
                // Nothing differs: a write would be a no-op.
                return Ok(Some(value));
            }
            match self.update_plugin_data(request_id, set, expect).await {
                Ok(()) => return Ok(Some(value)),
                Err(e) if e.is_compare_failed() => match delays.next() {
                    Some(Duration::ZERO) => {}
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => break,
                },
                Err(e) => return Err(e),
            }
        }
        Err(TeleportError::CompareFailed {
            request_id: request_id.to_owned(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Resolves a request (approve/deny from a button). `delegator` is recorded in Teleport's
    /// audit log as who acted, e.g. `mattermost:alice@example.com`.
    pub async fn set_access_request_state(
        &self,
        id: &str,
        state: RequestState,
        delegator: &str,
        reason: &str,
    ) -> Result<(), TeleportError> {
        let setter = proto::RequestStateSetter {
            id: id.to_owned(),
            state: state.to_wire() as i32,
            delegator: delegator.to_owned(),
            reason: reason.to_owned(),
            annotations: None,
            roles: Vec::new(),
            // Left unset: the access starts when the requester asked (or at once).
            assume_start_time: None,
        };
        self.inner
            .clone()
            .set_access_request_state(setter)
            .await
            .map_err(rpc("SetAccessRequestState"))?;
        Ok(())
    }
}

fn entry_of_plugin(data: types::PluginDataV3) -> Option<HashMap<String, String>> {
    data.spec?
        .entries
        .remove(PLUGIN_NAME)
        .map(|entry| entry.data)
        .filter(|d| !d.is_empty())
}

/// The `Set` and `Expect` maps that turn `current` into `new` only if nothing changed since.
fn cas_params(
    current: Option<&HashMap<String, String>>,
    new: &HashMap<String, String>,
) -> (HashMap<String, String>, HashMap<String, String>) {
    let mut set: HashMap<String, String> = new
        .iter()
        .filter(|(k, v)| {
            current
                .and_then(|c| c.get(*k))
                .map_or(!v.is_empty(), |old| old != *v)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Expect every key either side knows: its current value, or "" (absent) for a key the
    // entry does not have yet. Expecting only the keys present would let a write through
    // after another writer added a key and took it away again in between (A-B-A), e.g. two
    // presses that both saw "no claim, nobody decided".
    let mut expect: HashMap<String, String> =
        new.keys().map(|k| (k.clone(), String::new())).collect();
    if let Some(current) = current {
        for (key, value) in current {
            if !new.contains_key(key) {
                set.insert(key.clone(), String::new());
            }
            expect.insert(key.clone(), value.clone());
        }
    }
    (set, expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cas_on_missing_entry_expects_every_new_key_empty() {
        let (set, expect) = cas_params(None, &map(&[("user", "bob"), ("roles", "admin")]));
        assert_eq!(set, map(&[("user", "bob"), ("roles", "admin")]));
        assert_eq!(expect, map(&[("user", ""), ("roles", "")]));
    }

    #[test]
    fn cas_deletes_dropped_keys_and_expects_the_whole_current_map() {
        let current = map(&[("user", "bob"), ("messages", "c/p"), ("resolution", "")]);
        let new = map(&[("user", "bob"), ("resolution", "APPROVED")]);
        let (set, expect) = cas_params(Some(&current), &new);
        assert_eq!(set, map(&[("messages", ""), ("resolution", "APPROVED")]));
        assert_eq!(expect, current);
    }

    #[test]
    fn cas_expects_keys_the_entry_lacks_to_still_be_absent() {
        // Read with no claim; meanwhile another press claims, decides and clears its claim.
        // Our write must fail on the key it did not see, not only on the keys it saw.
        let current = map(&[("user", "bob")]);
        let new = map(&[
            ("user", "bob"),
            ("mm_claim", "APPROVED|@a|1"),
            ("mm_resolved_by", ""),
        ]);
        let (set, expect) = cas_params(Some(&current), &new);
        assert_eq!(set, map(&[("mm_claim", "APPROVED|@a|1")]));
        assert_eq!(
            expect,
            map(&[("user", "bob"), ("mm_claim", ""), ("mm_resolved_by", "")])
        );
    }

    #[test]
    fn cas_with_no_difference_writes_nothing() {
        let current = map(&[("user", "bob")]);
        let (set, _) = cas_params(Some(&current), &current.clone());
        assert!(set.is_empty());
    }
}

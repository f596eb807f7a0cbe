//! The validated config model. Every field has its default applied; every reference checked.
//!
//! This is the contract between `load` (which builds it from TOML and guarantees the invariants
//! written on each field) and `compile` (which reads it). It holds no spans and does no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cache::{CacheConfig, RouteCacheOverride};
use crate::router::RouteKey;

use super::template::Template;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub account: AccountConfig,
    pub apis: Vec<ApiConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `None`: every online CPU.
    pub cores: Option<usize>,
    /// Plain-HTTP listeners; at least one.
    pub listen: Vec<SocketAddr>,
    pub backlog: u32,
    pub header_read_timeout_ms: u64,
    pub keepalive_idle_timeout_ms: u64,
    pub header_bytes_max: usize,
    pub headers_max: usize,
    /// Default request body limit for routes that set none.
    pub body_bytes_max: u64,
    pub upstream_idle_per_host_max: usize,
    pub upstream_idle_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    /// On SIGTERM/SIGINT/SIGQUIT: how long in-flight requests may take before what remains is
    /// closed.
    pub shutdown_timeout_ms: u64,
    /// `[[server.tls]]`: HTTPS listeners, each with its certificates.
    pub tls: Vec<TlsListenerConfig>,
    /// `http2_streams_max`: concurrent HTTP/2 streams a client may open on one connection.
    pub http2_streams_max: u32,
}

/// `[[server.tls]]`: addresses that speak TLS (ALPN `h2` and `http/1.1`) with these certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    /// At least one; none is also a plain listener or another TLS listener's.
    pub listen: Vec<SocketAddr>,
    /// At least one; the first is the default for clients whose SNI names none of the domains.
    pub certs: Vec<CertConfig>,
    /// CA bundle (PEM) that client certificates must chain to; set iff `client_auth` is not `None`.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// One certificate chain and its key, served for `domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertConfig {
    /// PEM files; relative paths are resolved against the config file's directory by `load`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lower-cased DNS names, or `*.` followed by one (matches exactly one more label).
    pub domains: Vec<String>,
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// A client may present one; if it does, it must verify.
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

/// What an `http_proxy` integration speaks to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 (over TLS with ALPN for `https://`, prior knowledge for `http://`).
    H2,
}

/// `[account]`: account-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// `[account.throttle]`; Amazon's account default (10,000 rps, 5,000 burst) when absent.
    /// `None` with `enabled = false`: another gateway in front already enforces the account
    /// limit, so requests pass only their stage and route limits.
    pub throttle: Option<Throttle>,
    /// How often cores and the control thread reconcile throttle leases.
    pub reconcile_tick_ms: u64,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            throttle: Some(Throttle {
                rate: crate::limits::ACCOUNT_RATE,
                burst: crate::limits::ACCOUNT_BURST,
            }),
            reconcile_tick_ms: crate::limits::RECONCILE_TICK_MS,
        }
    }
}

/// A token-bucket limit: `rate` tokens per second, `burst` bucket size. Zero throttles everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Throttle {
    pub rate: u64,
    pub burst: u64,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None` when `listen = ""` disables the admin listener.
    pub listen: Option<SocketAddr>,
    /// When set, `POST` admin endpoints require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Test hooks on the admin listener (`POST /debug/stall`). Off by default; never in production.
    pub debug_endpoints: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    /// Routes are `$connect`, `$disconnect`, `$default` and message route keys; see
    /// `ApiConfig::websocket`.
    Websocket,
}

/// The settings of a `protocol = "websocket"` API (keys of its `[[api]]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// `route_selection`, checked by `RouteSelection::parse`; default `$request.body.action`.
    pub route_selection: String,
    /// `subprotocols`: offered subprotocols the gateway may accept, in its order of preference
    /// (the client's order decides among these). Tokens, unique.
    pub subprotocols: Vec<String>,
    /// Payload bytes of one inbound frame (close 1009 above).
    pub frame_bytes_max: usize,
    /// Payload bytes of one inbound message, all fragments (close 1009 above).
    pub message_bytes_max: usize,
    /// No message from the client for this long: close 1001.
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed with 1001.
    pub connection_age_max_ms: u64,
    /// Nothing received for this long: send a ping; nothing again for as long: the peer is
    /// gone (close). 0: no pings.
    pub ping_interval_ms: u64,
    /// `connection_throttle`: messages per second and burst allowed to each connection (a
    /// bucket of the connection's own: it lives on one core, so nothing to reconcile).
    pub connection_throttle: Option<Throttle>,
}

/// `[[api]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Unique; 1..=64 of `[A-Za-z0-9_-]`.
    pub name: String,
    pub protocol: Protocol,
    /// Lower-cased DNS name, or `*.` followed by one; no port.
    pub host: Option<String>,
    /// Without leading or trailing '/'; never empty (`None` instead); segments of unreserved
    /// characters, none empty, `.` or `..`.
    pub base_path: Option<String>,
    /// `Some` exactly when `protocol` is `Websocket`.
    pub websocket: Option<WebSocketSettings>,
    /// Never empty; no two with equal `key` (HTTP APIs) or `key_text` (websocket APIs).
    pub routes: Vec<RouteConfig>,
    /// Never empty: an API without stages gets an implicit `$default` stage. Names unique.
    /// Every stage defines every stage variable any template of the API references.
    pub stages: Vec<StageConfig>,
}

/// `[[api.route]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// At most `PATH_PARAMS_MAX` parameters; every path parameter a template references is one.
    /// Always `RouteKey::Default` in a websocket API, whose route keys are `key_text`.
    pub key: RouteKey,
    /// The key as written, for metrics labels and logs. In a websocket API: `$connect`,
    /// `$disconnect`, `$default` or a message route key (1..=128 characters, no control
    /// character, not starting with `$`).
    pub key_text: String,
    /// Websocket APIs: an `http` integration's response body is sent to the client as a
    /// message. Never set on `$connect`/`$disconnect` routes or in HTTP APIs.
    pub return_response: bool,
    /// `None`: `server.body_bytes_max`.
    pub body_bytes_max: Option<u64>,
    pub integration: IntegrationConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntegrationConfig {
    Mock {
        /// 100..=599, not 101.
        status: u16,
        /// In config order; names lower-cased tokens, unique, never `content-length`,
        /// `transfer-encoding` or `connection`. Values (after substituting any stage's variables)
        /// hold no control character but HTAB.
        headers: Vec<(String, Template)>,
        body: Template,
    },
    HttpProxy {
        /// `http://host:port/path...` with `{param}`, `{proxy}` and `${stageVariables.x}`. After
        /// substituting any stage's variables: starts with `http://` or `https://`, the authority
        /// (up to the first '/') is a literal valid `host[:port]` (port 1..=65535, default 80 or
        /// 443), and the literal rest is visible ASCII without '#'.
        uri: Template,
        /// 1..=600000.
        timeout_ms: u64,
        /// `ca`: PEM bundle that an `https://` backend's certificate must chain to, instead of
        /// the system's roots. Resolved against the config file's directory by `load`.
        ca: Option<PathBuf>,
        /// `upstream_protocol`: `"http/1.1"` (default) or `"h2"`.
        protocol: UpstreamProtocol,
    },
    /// Websocket APIs, message routes only (`type = "mock", echo = true`): the message goes
    /// back to its sender unchanged, text or binary.
    Echo,
    /// Websocket APIs only (`type = "http"`): the event JSON is POSTed to `uri`, which obeys
    /// the rules of `HttpProxy::uri` and has no path parameters.
    Http {
        uri: Template,
        timeout_ms: u64,
        /// As `HttpProxy::ca`, for an `https://` backend.
        ca: Option<PathBuf>,
    },
}

/// `[[api.stage]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    /// `$default` or 1..=128 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Names `[A-Za-z0-9_]+`.
    pub variables: BTreeMap<String, String>,
    /// `throttle`: the stage-wide limit, if any.
    pub throttle: Option<Throttle>,
    /// `route_throttle`: per-route limits, keyed by the route key as written in the route.
    pub route_throttle: Vec<(String, Throttle)>,
    /// `cache`: the stage's response cache (`CacheConfig::validate` holds; disabled when absent).
    pub cache: CacheConfig,
    /// `cache.invalidation_token`: who may invalidate with `Cache-Control: max-age=0` (sent as
    /// `Authorization: Bearer <token>`). Visible ASCII, no space. `None`: nobody is authorized.
    pub cache_invalidation_token: Option<String>,
    /// `route_cache`: per-route overrides (each `validate`s), keyed by the route key as written
    /// in the route; only `http_proxy` routes.
    pub route_cache: Vec<(String, RouteCacheOverride)>,
}

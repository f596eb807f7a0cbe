//! The validated config model. Every field has its default applied; every reference checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::router::RouteKey;

use super::template::Template;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub account: AccountConfig,
    pub apis: Vec<ApiConfig>,
}

/// `[server]`
#[derive(Debug, Clone)]
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
}

/// `[admin]`
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` when `listen = ""` disables the admin listener.
    pub listen: Option<SocketAddr>,
    /// When set, `POST` admin endpoints require `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// `[account]`
#[derive(Debug, Clone, Default)]
pub struct AccountConfig {
    pub throttle: Option<Throttle>,
}

/// A token-bucket limit: `rate` tokens per second, `burst` bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub rate: u64,
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Websocket,
}

/// `[[api]]`
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub name: String,
    pub protocol: Protocol,
    pub host: Option<String>,
    /// Without leading or trailing '/'.
    pub base_path: Option<String>,
    pub routes: Vec<RouteConfig>,
    /// Never empty: an API without stages gets an implicit `$default` stage.
    pub stages: Vec<StageConfig>,
}

/// `[[api.route]]`
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub key: RouteKey,
    /// The key as written, for metrics labels and logs.
    pub key_text: String,
    /// `None`: `server.body_bytes_max`.
    pub body_bytes_max: Option<u64>,
    pub integration: IntegrationConfig,
}

#[derive(Debug, Clone)]
pub enum IntegrationConfig {
    Mock {
        status: u16,
        /// In config order; names lower-cased.
        headers: Vec<(String, Template)>,
        body: Template,
    },
    HttpProxy {
        /// `http://host:port/path...` with `{param}`, `{proxy}` and `${stageVariables.x}`.
        uri: Template,
        timeout_ms: u64,
    },
}

/// `[[api.stage]]`
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub name: String,
    pub variables: BTreeMap<String, String>,
}

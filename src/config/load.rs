//! TOML text → validated `Config`, collecting every error with its line.
//!
//! This module owns the config schema (key names, defaults, ranges) and every check that needs
//! only the text: a TOML syntax or type error stops at the first one; after that, every semantic
//! error is collected, located at the offending value, and returned sorted by position. It does
//! no I/O but `load` reading one file, and it resolves no names and binds no sockets (`compile`
//! and `runtime` do).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::cache::{
    CACHE_CAPACITY_MB_MAX, CACHE_TTL_S_MAX, CacheConfig, RouteCacheOverride, UnauthorizedStrategy,
};
use crate::limits::{
    BODY_BYTES_MAX, CONFIG_BYTES_MAX, H2_STREAMS_MAX, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT_MS,
    HEADERS_CEILING, HEADERS_MAX, INTEGRATION_TIMEOUT_MS, KEEPALIVE_IDLE_TIMEOUT_MS,
    LISTEN_BACKLOG, PATH_PARAMS_MAX, RECONCILE_TICK_MS, SHUTDOWN_TIMEOUT_MS,
    UPSTREAM_CONNECT_TIMEOUT_MS, UPSTREAM_IDLE_PER_HOST_MAX, UPSTREAM_IDLE_TIMEOUT_MS,
    WS_CONNECTION_AGE_MAX_MS, WS_FRAME_BYTES_MAX, WS_IDLE_TIMEOUT_MS, WS_MESSAGE_BYTES_MAX,
    WS_PAYLOAD_BYTES_CEILING, WS_PING_INTERVAL_MS,
};
use crate::router::{Method, RouteKey};

use super::model::{
    AccountConfig, AdminConfig, ApiConfig, CertConfig, ClientAuth, Config, IntegrationConfig,
    Protocol, RouteConfig, ServerConfig, StageConfig, Throttle, TlsListenerConfig,
    UpstreamProtocol, WebSocketSettings,
};
use super::template::{self, Part, Template};

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; 0 when the problem has no place in the file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.col, self.message
            )
        }
    }
}

/// Reads and validates a config file. A file that cannot be read, or is larger than
/// `CONFIG_BYTES_MAX`, is one error at line 0.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let bytes = read(path).map_err(|message| {
        vec![ConfigError {
            line: 0,
            col: 0,
            message,
        }]
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text).map(|mut c| {
            relative_to(&mut c, path.parent().unwrap_or(Path::new("")));
            c
        }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            // Everything before `valid` is UTF-8, so it can be indexed for a position.
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let (line, col) = LineIndex::new(&prefix).position(valid);
            Err(vec![ConfigError {
                line,
                col,
                message: "the file is not valid UTF-8".to_string(),
            }])
        }
    }
}

/// Resolves the relative file paths in `config` (certificates, keys, CA bundles) against `dir`,
/// the config file's directory, so that they name the same files whatever the working directory.
fn relative_to(config: &mut Config, dir: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    for l in &mut config.server.tls {
        for c in &mut l.certs {
            fix(&mut c.cert);
            fix(&mut c.key);
        }
        if let Some(ca) = &mut l.client_ca {
            fix(ca);
        }
    }
    for api in &mut config.apis {
        for r in &mut api.routes {
            if let IntegrationConfig::HttpProxy { ca: Some(ca), .. } = &mut r.integration {
                fix(ca);
            }
        }
    }
}

/// Validates config text.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    if text.len() as u64 > CONFIG_BYTES_MAX {
        return Err(vec![too_large()]);
    }
    let lines = LineIndex::new(text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, col) = lines.position(e.span().map_or(0, |s| s.start));
        vec![ConfigError {
            line,
            col,
            message: e.message().to_string(),
        }]
    })?;
    let mut errs = Errors::new(lines);
    let config = validate(&raw, &mut errs);
    errs.finish().map(|()| config)
}

// Bounds of config values. The defaults are runtime limits and live in `crate::limits`; these
// only say what a user may ask for.
const CORES_MAX: i64 = 1024;
const BACKLOG_MAX: i64 = 65_535;
const HEADER_BYTES_MAX_RANGE: RangeInclusive<i64> = 1024..=1024 * 1024;
/// Any `*_ms` in `[server]`: a day, so `now + timeout` can never overflow an `Instant`.
const SERVER_TIMEOUT_MS_MAX: i64 = 86_400_000;
const UPSTREAM_IDLE_PER_HOST_MAX_MAX: i64 = 65_535;
/// Largest `http2_streams_max` (RFC 9113 allows 2^31-1; more than this is only an attack surface).
const H2_STREAMS_MAX_MAX: i64 = 10_000;
const INTEGRATION_TIMEOUT_MS_MAX: i64 = 600_000;
const API_NAME_BYTES_MAX: usize = 64;
const STAGE_NAME_BYTES_MAX: usize = 128;
const ADMIN_LISTEN_DEFAULT: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);
const DEFAULT_STAGE: &str = "$default";
/// Largest rate (tokens/s) or burst a throttle may ask for.
const THROTTLE_MAX: i64 = 1_000_000_000;
/// Framing headers the gateway computes itself for a mock response.
const MOCK_HEADERS_FORBIDDEN: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read config file {}: {e}", path.display());
    let file = File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.len() > CONFIG_BYTES_MAX {
        return Err(too_large().message);
    }
    let mut bytes = Vec::new();
    // `take` too: the file may grow between `metadata` and the read.
    file.take(CONFIG_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > CONFIG_BYTES_MAX {
        return Err(too_large().message);
    }
    Ok(bytes)
}

fn too_large() -> ConfigError {
    ConfigError {
        line: 0,
        col: 0,
        message: format!("the config is larger than {CONFIG_BYTES_MAX} bytes"),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TOML shape. Every user-written value is `Spanned` so an error can point at it; values are
// kept loose (`i64`, `String`) so range and syntax problems become collected semantic errors
// rather than a first-error-only type error.

type S<T> = Spanned<T>;
type RawMap = S<BTreeMap<S<String>, S<String>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<S<RawServer>>,
    admin: Option<S<RawAdmin>>,
    account: Option<S<RawAccount>>,
    #[serde(default)]
    api: Vec<S<RawApi>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    cores: Option<S<i64>>,
    listen: Option<S<Vec<S<String>>>>,
    backlog: Option<S<i64>>,
    header_read_timeout_ms: Option<S<i64>>,
    keepalive_idle_timeout_ms: Option<S<i64>>,
    header_bytes_max: Option<S<i64>>,
    headers_max: Option<S<i64>>,
    body_bytes_max: Option<S<i64>>,
    upstream_idle_per_host_max: Option<S<i64>>,
    upstream_idle_timeout_ms: Option<S<i64>>,
    upstream_connect_timeout_ms: Option<S<i64>>,
    shutdown_timeout_ms: Option<S<i64>>,
    http2_streams_max: Option<S<i64>>,
    #[serde(default)]
    tls: Vec<S<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    certs: Vec<S<RawCert>>,
    client_ca: Option<S<String>>,
    client_auth: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: Option<S<String>>,
    key: Option<S<String>>,
    #[serde(default)]
    domains: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<S<String>>,
    token: Option<S<String>>,
    debug_endpoints: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    name: Option<S<String>>,
    protocol: Option<S<String>>,
    host: Option<S<String>>,
    base_path: Option<S<String>>,
    // Websocket APIs only.
    route_selection: Option<S<String>>,
    subprotocols: Option<S<Vec<S<String>>>>,
    frame_bytes_max: Option<S<i64>>,
    message_bytes_max: Option<S<i64>>,
    idle_timeout_ms: Option<S<i64>>,
    connection_age_max_ms: Option<S<i64>>,
    ping_interval_ms: Option<S<i64>>,
    connection_throttle: Option<S<RawThrottle>>,
    #[serde(default)]
    route: Vec<S<RawRoute>>,
    #[serde(default)]
    stage: Vec<S<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    key: Option<S<String>>,
    body_bytes_max: Option<S<i64>>,
    integration: Option<S<RawIntegration>>,
    return_response: Option<S<bool>>,
}

/// Flat rather than a tagged enum: serde's internally tagged enums buffer their content and lose
/// the spans, and a flat struct lets us say "uri is not a field of a mock integration".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    #[serde(rename = "type")]
    kind: Option<S<String>>,
    status: Option<S<i64>>,
    headers: Option<RawMap>,
    body: Option<S<String>>,
    uri: Option<S<String>>,
    timeout_ms: Option<S<i64>>,
    echo: Option<S<bool>>,
    ca: Option<S<String>>,
    upstream_protocol: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Option<S<String>>,
    variables: Option<RawMap>,
    throttle: Option<S<RawThrottle>>,
    route_throttle: Option<S<BTreeMap<S<String>, S<RawThrottle>>>>,
    cache: Option<S<RawCache>>,
    route_cache: Option<S<BTreeMap<S<String>, S<RawRouteCache>>>>,
}

/// `cache = { .. }` of a stage.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    enabled: Option<S<bool>>,
    ttl_s: Option<S<i64>>,
    capacity_mb: Option<S<i64>>,
    key_query: Option<S<Vec<S<String>>>>,
    key_headers: Option<S<Vec<S<String>>>>,
    require_authorization: Option<S<bool>>,
    unauthorized_strategy: Option<S<String>>,
    statuses: Option<S<Vec<S<i64>>>>,
    invalidation_token: Option<S<String>>,
}

/// One value of `route_cache = { "GET /x" = { .. } }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteCache {
    enabled: Option<S<bool>>,
    ttl_s: Option<S<i64>>,
    methods: Option<S<Vec<S<String>>>>,
    key_query: Option<S<Vec<S<String>>>>,
    key_headers: Option<S<Vec<S<String>>>>,
    statuses: Option<S<Vec<S<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    throttle: Option<S<RawAccountThrottle>>,
    reconcile_tick_ms: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    rate: Option<S<i64>>,
    burst: Option<S<i64>>,
}

/// `[account.throttle]`: a throttle that can also be switched off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccountThrottle {
    enabled: Option<S<bool>>,
    rate: Option<S<i64>>,
    burst: Option<S<i64>>,
}

// ---------------------------------------------------------------------------------------------
// Positions and the error collector.

/// Byte offsets → 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex { text, starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // `starts[0] == 0 <= offset`, so the count is at least 1.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, col + 1)
    }
}

struct Errors<'a> {
    lines: LineIndex<'a>,
    /// (byte offset, message), in the order found.
    found: Vec<(usize, String)>,
    /// The same check can fire twice for one value (a variable used twice); say it once.
    seen: HashSet<(usize, String)>,
}

impl<'a> Errors<'a> {
    fn new(lines: LineIndex<'a>) -> Self {
        Errors {
            lines,
            found: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn at<T>(&mut self, value: &S<T>, message: impl Into<String>) {
        self.at_offset(value.span().start, message);
    }

    fn at_offset(&mut self, offset: usize, message: impl Into<String>) {
        let key = (offset, message.into());
        if self.seen.insert(key.clone()) {
            self.found.push(key);
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.lines.position(offset).0
    }

    fn finish(mut self) -> Result<(), Vec<ConfigError>> {
        if self.found.is_empty() {
            return Ok(());
        }
        // Stable: errors at one position stay in the order they were found.
        self.found.sort_by_key(|(offset, _)| *offset);
        Err(self
            .found
            .into_iter()
            .map(|(offset, message)| {
                let (line, col) = self.lines.position(offset);
                ConfigError { line, col, message }
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: raw → model. On error a placeholder value is returned so checking goes on; the
// model is thrown away when any error was found.

fn validate(raw: &RawConfig, errs: &mut Errors) -> Config {
    let (server, listeners) = server(errs, raw.server.as_ref());
    let admin = admin(errs, raw.admin.as_ref(), &listeners);
    let account = account(errs, raw.account.as_ref());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut apis = Vec::with_capacity(raw.api.len());
    for raw_api in &raw.api {
        let api = api(errs, raw_api);
        if let Some(name) = &raw_api.get_ref().name
            && !api.name.is_empty()
        {
            if let Some(&first) = names.get(&api.name) {
                let message = format!(
                    "duplicate API name {} (first at line {})",
                    api.name,
                    errs.line(first)
                );
                errs.at(name, message);
            } else {
                names.insert(api.name.clone(), name.span().start);
            }
        }
        apis.push(api);
    }
    Config {
        server,
        admin,
        account,
        apis,
    }
}

fn account(errs: &mut Errors, raw: Option<&S<RawAccount>>) -> AccountConfig {
    let Some(raw) = raw else {
        return AccountConfig::default();
    };
    let r = raw.get_ref();
    AccountConfig {
        throttle: r
            .throttle
            .as_ref()
            .map_or(AccountConfig::default().throttle, |t| {
                account_throttle(errs, t)
            }),
        reconcile_tick_ms: int(
            errs,
            r.reconcile_tick_ms.as_ref(),
            "account.reconcile_tick_ms",
            1..=1000,
            RECONCILE_TICK_MS,
        ),
    }
}

/// `[account.throttle]`: `None` with `enabled = false`. Switched off, rate and burst may stay
/// written (turning it back on is one key) and are still range-checked, but need not be there.
fn account_throttle(errs: &mut Errors, raw: &S<RawAccountThrottle>) -> Option<Throttle> {
    let r = raw.get_ref();
    if r.enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
        for (v, field) in [(&r.rate, "rate"), (&r.burst, "burst")] {
            let name = format!("account.throttle.{field}");
            int(errs, v.as_ref(), &name, 0..=THROTTLE_MAX, 0u64);
        }
        return None;
    }
    Some(limit(
        errs,
        raw,
        r.rate.as_ref(),
        r.burst.as_ref(),
        "account.throttle",
    ))
}

/// `{ rate = r, burst = b }`, both required, both 0..=THROTTLE_MAX.
fn throttle(errs: &mut Errors, raw: &S<RawThrottle>, what: &str) -> Throttle {
    let r = raw.get_ref();
    limit(errs, raw, r.rate.as_ref(), r.burst.as_ref(), what)
}

/// A limit's rate and burst (errors at `at` when one is missing).
fn limit<T>(
    errs: &mut Errors,
    at: &S<T>,
    rate: Option<&S<i64>>,
    burst: Option<&S<i64>>,
    what: &str,
) -> Throttle {
    let mut get = |v: Option<&S<i64>>, field: &str| match v {
        None => {
            errs.at(
                at,
                format!("{what}: needs {field} (e.g. {{ rate = 100, burst = 50 }})"),
            );
            0
        }
        Some(v) => int(
            errs,
            Some(v),
            &format!("{what}.{field}"),
            0..=THROTTLE_MAX,
            0u64,
        ),
    };
    let rate = get(rate, "rate");
    let burst = get(burst, "burst");
    Throttle { rate, burst }
}

/// An integer in `range` converted to `T`, or `default` (with an error when it was given).
fn int<T: TryFrom<i64>>(
    errs: &mut Errors,
    value: Option<&S<i64>>,
    name: &str,
    range: RangeInclusive<i64>,
    default: T,
) -> T {
    let Some(value) = value else {
        return default;
    };
    let n = *value.get_ref();
    if range.contains(&n)
        && let Ok(v) = T::try_from(n)
    {
        return v;
    }
    let expected = if *range.end() == i64::MAX {
        format!("at least {}", range.start())
    } else {
        format!("{}..={}", range.start(), range.end())
    };
    errs.at(value, format!("{name}: expected {expected}, got {n}"));
    default
}

fn server(
    errs: &mut Errors,
    raw: Option<&S<RawServer>>,
) -> (ServerConfig, Vec<(SocketAddr, usize)>) {
    let empty = RawServer::default();
    let (r, at) = raw.map_or((&empty, 0), |s| (s.get_ref(), s.span().start));
    let mut listeners = listeners(errs, r.listen.as_ref(), at);
    let listen = listeners.iter().map(|(a, _)| *a).collect();
    let tls: Vec<TlsListenerConfig> = r
        .tls
        .iter()
        .map(|t| tls_listener(errs, t, &mut listeners))
        .collect();
    let ms = 1..=SERVER_TIMEOUT_MS_MAX;
    let config = ServerConfig {
        cores: r
            .cores
            .as_ref()
            .map(|c| int(errs, Some(c), "cores", 1..=CORES_MAX, 1)),
        listen,
        backlog: int(
            errs,
            r.backlog.as_ref(),
            "backlog",
            1..=BACKLOG_MAX,
            LISTEN_BACKLOG,
        ),
        header_read_timeout_ms: int(
            errs,
            r.header_read_timeout_ms.as_ref(),
            "header_read_timeout_ms",
            ms.clone(),
            HEADER_READ_TIMEOUT_MS,
        ),
        keepalive_idle_timeout_ms: int(
            errs,
            r.keepalive_idle_timeout_ms.as_ref(),
            "keepalive_idle_timeout_ms",
            ms.clone(),
            KEEPALIVE_IDLE_TIMEOUT_MS,
        ),
        header_bytes_max: int(
            errs,
            r.header_bytes_max.as_ref(),
            "header_bytes_max",
            HEADER_BYTES_MAX_RANGE,
            HEADER_BYTES_MAX,
        ),
        headers_max: int(
            errs,
            r.headers_max.as_ref(),
            "headers_max",
            1..=HEADERS_CEILING as i64,
            HEADERS_MAX,
        ),
        body_bytes_max: int(
            errs,
            r.body_bytes_max.as_ref(),
            "body_bytes_max",
            0..=i64::MAX,
            BODY_BYTES_MAX,
        ),
        upstream_idle_per_host_max: int(
            errs,
            r.upstream_idle_per_host_max.as_ref(),
            "upstream_idle_per_host_max",
            0..=UPSTREAM_IDLE_PER_HOST_MAX_MAX,
            UPSTREAM_IDLE_PER_HOST_MAX,
        ),
        upstream_idle_timeout_ms: int(
            errs,
            r.upstream_idle_timeout_ms.as_ref(),
            "upstream_idle_timeout_ms",
            ms.clone(),
            UPSTREAM_IDLE_TIMEOUT_MS,
        ),
        upstream_connect_timeout_ms: int(
            errs,
            r.upstream_connect_timeout_ms.as_ref(),
            "upstream_connect_timeout_ms",
            ms.clone(),
            UPSTREAM_CONNECT_TIMEOUT_MS,
        ),
        shutdown_timeout_ms: int(
            errs,
            r.shutdown_timeout_ms.as_ref(),
            "shutdown_timeout_ms",
            ms,
            SHUTDOWN_TIMEOUT_MS,
        ),
        tls,
        http2_streams_max: int(
            errs,
            r.http2_streams_max.as_ref(),
            "http2_streams_max",
            1..=H2_STREAMS_MAX_MAX,
            H2_STREAMS_MAX,
        ),
    };
    (config, listeners)
}

/// The plain-HTTP listeners with the offset of each, for later conflicts.
fn listeners(
    errs: &mut Errors,
    raw: Option<&S<Vec<S<String>>>>,
    server_at: usize,
) -> Vec<(SocketAddr, usize)> {
    let Some(list) = raw else {
        errs.at_offset(
            server_at,
            "server.listen is required: at least one address, e.g. listen = [\"0.0.0.0:8080\"]",
        );
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        errs.at(
            list,
            "listen: expected at least one address, e.g. [\"0.0.0.0:8080\"]",
        );
    }
    let mut out: Vec<(SocketAddr, usize)> = Vec::new();
    for s in list.get_ref() {
        let Ok(addr) = s.get_ref().parse::<SocketAddr>() else {
            errs.at(s, format!("listen: {}", expected_addr(s.get_ref())));
            continue;
        };
        // Port 0 asks the kernel for a fresh port each time, so it never collides.
        if addr.port() != 0 && out.iter().any(|(a, _)| *a == addr) {
            errs.at(s, format!("listen: {addr} is listed twice"));
            continue;
        }
        out.push((addr, s.span().start));
    }
    out
}

/// One `[[server.tls]]` table. Its addresses join `taken` (every listener so far), so that an
/// address used twice, plain or TLS, is an error where it appears the second time.
fn tls_listener(
    errs: &mut Errors,
    raw: &S<RawTls>,
    taken: &mut Vec<(SocketAddr, usize)>,
) -> TlsListenerConfig {
    let r = raw.get_ref();
    let mut listen = Vec::new();
    match &r.listen {
        None => errs.at(
            raw,
            "server.tls needs listen, e.g. listen = [\"0.0.0.0:8443\"]",
        ),
        Some(list) if list.get_ref().is_empty() => errs.at(
            list,
            "server.tls.listen: expected at least one address, e.g. [\"0.0.0.0:8443\"]",
        ),
        Some(list) => {
            for s in list.get_ref() {
                let Ok(addr) = s.get_ref().parse::<SocketAddr>() else {
                    errs.at(
                        s,
                        format!("server.tls.listen: {}", expected_addr(s.get_ref())),
                    );
                    continue;
                };
                if addr.port() != 0
                    && let Some(&(_, first)) = taken.iter().find(|(a, _)| *a == addr)
                {
                    let message = format!(
                        "server.tls.listen: {addr} is already a listener (line {})",
                        errs.line(first)
                    );
                    errs.at(s, message);
                    continue;
                }
                taken.push((addr, s.span().start));
                listen.push(addr);
            }
        }
    }
    if r.certs.is_empty() {
        errs.at(
            raw,
            "server.tls needs certs, e.g. certs = [{ cert = \"api.pem\", key = \"api.key\", domains = [\"api.example.com\"] }]",
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let certs = r
        .certs
        .iter()
        .map(|c| cert_entry(errs, c, &mut seen))
        .collect();
    let client_ca = r
        .client_ca
        .as_ref()
        .map(|p| file_path(errs, p, "client_ca"));
    let client_auth = match &r.client_auth {
        None if client_ca.is_some() => ClientAuth::Required,
        None => ClientAuth::None,
        Some(a) => match a.get_ref().as_str() {
            "required" | "optional" if client_ca.is_none() => {
                errs.at(
                    a,
                    "client_auth needs client_ca: the CA bundle (PEM) client certificates must chain to",
                );
                ClientAuth::None
            }
            "required" => ClientAuth::Required,
            "optional" => ClientAuth::Optional,
            "none" if client_ca.is_some() => {
                errs.at(
                    a,
                    "client_auth = \"none\" with a client_ca: remove one of them",
                );
                ClientAuth::None
            }
            "none" => ClientAuth::None,
            other => {
                errs.at(
                    a,
                    format!(
                        "client_auth: expected \"required\", \"optional\" or \"none\", got {other:?}"
                    ),
                );
                ClientAuth::None
            }
        },
    };
    TlsListenerConfig {
        listen,
        certs,
        client_ca,
        client_auth,
    }
}

/// `{ cert, key, domains }`; a domain named by two certificates of one listener is an error.
fn cert_entry(
    errs: &mut Errors,
    raw: &S<RawCert>,
    seen: &mut HashMap<String, usize>,
) -> CertConfig {
    let r = raw.get_ref();
    let mut need = |v: &Option<S<String>>, field: &str| match v {
        Some(p) => file_path(errs, p, field),
        None => {
            errs.at(
                raw,
                format!("certs: each entry needs {field} (a PEM file path)"),
            );
            PathBuf::new()
        }
    };
    let cert = need(&r.cert, "cert");
    let key = need(&r.key, "key");
    let mut domains = Vec::with_capacity(r.domains.len());
    for d in &r.domains {
        let name = d.get_ref().to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        if !is_dns_name(bare) {
            errs.at(
                d,
                format!(
                    "domains: expected a DNS name or *.name, got {:?}",
                    d.get_ref()
                ),
            );
            continue;
        }
        if let Some(&first) = seen.get(&name) {
            let message = format!(
                "domains: {name} is already served by the certificate at line {}",
                errs.line(first)
            );
            errs.at(d, message);
            continue;
        }
        seen.insert(name.clone(), d.span().start);
        domains.push(name);
    }
    CertConfig { cert, key, domains }
}

fn file_path(errs: &mut Errors, raw: &S<String>, field: &str) -> PathBuf {
    if raw.get_ref().is_empty() || raw.get_ref().contains('\0') {
        errs.at(raw, format!("{field}: expected a file path"));
    }
    PathBuf::from(raw.get_ref())
}

fn expected_addr(got: &str) -> String {
    format!("expected an address like \"127.0.0.1:8080\" or \"[::1]:8080\", got {got:?}")
}

fn admin(
    errs: &mut Errors,
    raw: Option<&S<RawAdmin>>,
    listeners: &[(SocketAddr, usize)],
) -> AdminConfig {
    let raw_listen = raw.and_then(|a| a.get_ref().listen.as_ref());
    let listen = match raw_listen {
        None => Some(SocketAddr::from(ADMIN_LISTEN_DEFAULT)),
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let message = format!(
                    "admin.listen: {}, or \"\" to disable",
                    expected_addr(s.get_ref())
                );
                errs.at(s, message);
                None
            }
        },
    };
    if let Some(addr) = listen
        && addr.port() != 0
        && let Some(&(_, at)) = listeners.iter().find(|(a, _)| *a == addr)
    {
        match raw_listen {
            Some(s) => {
                let message = format!(
                    "admin.listen: {addr} is also a server listener (line {})",
                    errs.line(at)
                );
                errs.at(s, message);
            }
            None => errs.at_offset(
                at,
                format!(
                    "listen: {addr} is also the admin listener (the default admin.listen); \
                     set admin.listen to another address or \"\""
                ),
            ),
        }
    }
    let token = raw.and_then(|a| a.get_ref().token.as_ref()).map(|t| {
        let ok = !t.get_ref().is_empty() && t.get_ref().bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            errs.at(
                t,
                "admin.token: expected a non-empty string of visible ASCII characters (no spaces)",
            );
        }
        t.get_ref().clone()
    });
    let debug_endpoints = raw
        .and_then(|a| a.get_ref().debug_endpoints)
        .unwrap_or(false);
    AdminConfig {
        listen,
        token,
        debug_endpoints,
    }
}

fn api(errs: &mut Errors, raw: &S<RawApi>) -> ApiConfig {
    let r = raw.get_ref();
    let at = raw.span().start;
    let name = match &r.name {
        None => {
            errs.at_offset(at, "api needs a name, e.g. name = \"shop\"");
            String::new()
        }
        Some(n) if is_identifier(n.get_ref(), API_NAME_BYTES_MAX) => n.get_ref().clone(),
        Some(n) => {
            errs.at(
                n,
                format!(
                    "name: expected 1..={API_NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ -, got {:?}",
                    n.get_ref()
                ),
            );
            String::new()
        }
    };
    let protocol = match &r.protocol {
        None => Protocol::Http,
        Some(p) => match p.get_ref().as_str() {
            "http" => Protocol::Http,
            "websocket" => Protocol::Websocket,
            other => {
                errs.at(
                    p,
                    format!("protocol: expected \"http\" or \"websocket\", got {other:?}"),
                );
                Protocol::Http
            }
        },
    };
    let host = r.host.as_ref().and_then(|h| api_host(errs, h));
    let base_path = r.base_path.as_ref().and_then(|b| base_path(errs, b));
    let stages = stages(errs, &r.stage);
    if r.route.is_empty() {
        let who = if name.is_empty() {
            "this API".to_string()
        } else {
            format!("API {name}")
        };
        errs.at_offset(
            at,
            format!("{who} has no routes: add at least one [[api.route]]"),
        );
    }
    let websocket = websocket_settings(errs, r, protocol);
    let routes: Vec<RouteConfig> = if protocol == Protocol::Websocket {
        let mut keys = HashMap::new();
        r.route
            .iter()
            .map(|route_raw| ws_route(errs, route_raw, &stages, &mut keys))
            .collect()
    } else {
        let mut keys = HashMap::new();
        r.route
            .iter()
            .map(|route_raw| route(errs, route_raw, &stages, &mut keys))
            .collect()
    };
    let mut stages = stages;
    for (stage, raw_stage) in stages.iter_mut().zip(&r.stage) {
        stage_throttles(errs, stage, raw_stage, &routes, &name, protocol);
        stage_cache(errs, stage, raw_stage, &routes, &name, protocol);
    }
    ApiConfig {
        name,
        protocol,
        host,
        base_path,
        websocket,
        routes,
        stages,
    }
}

fn api_host(errs: &mut Errors, raw: &S<String>) -> Option<String> {
    let host = raw.get_ref().to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if is_dns_name(name) {
        return Some(host);
    }
    errs.at(
        raw,
        format!(
            "host: expected a DNS name like \"api.example.com\" or \"*.example.com\" (no port), got {:?}",
            raw.get_ref()
        ),
    );
    None
}

fn base_path(errs: &mut Errors, raw: &S<String>) -> Option<String> {
    let path = raw.get_ref().trim_matches('/');
    if path.is_empty() {
        return None;
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let ok = path
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.bytes().all(unreserved));
    if ok {
        return Some(path.to_string());
    }
    errs.at(
        raw,
        format!(
            "base_path: expected '/'-separated segments of A-Z a-z 0-9 - . _ ~ (none empty, \".\" or \"..\"), got {:?}",
            raw.get_ref()
        ),
    );
    None
}

fn stages(errs: &mut Errors, raw: &[S<RawStage>]) -> Vec<StageConfig> {
    if raw.is_empty() {
        return vec![StageConfig {
            name: DEFAULT_STAGE.to_string(),
            variables: BTreeMap::new(),
            throttle: None,
            route_throttle: Vec::new(),
            cache: CacheConfig::default(),
            cache_invalidation_token: None,
            route_cache: Vec::new(),
        }];
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for s in raw {
        let r = s.get_ref();
        let name = match &r.name {
            None => {
                errs.at(
                    s,
                    "stage needs a name, e.g. name = \"prod\" (or \"$default\")",
                );
                "(unnamed)".to_string()
            }
            Some(n) => {
                let text = n.get_ref().as_str();
                if text != DEFAULT_STAGE && !is_identifier(text, STAGE_NAME_BYTES_MAX) {
                    errs.at(
                        n,
                        format!(
                            "name: expected \"$default\" or 1..={STAGE_NAME_BYTES_MAX} \
                             characters of A-Z a-z 0-9 _ -, got {text:?}"
                        ),
                    );
                } else if let Some(&first) = seen.get(text) {
                    let message = format!(
                        "duplicate stage name {text} (first at line {})",
                        errs.line(first)
                    );
                    errs.at(n, message);
                } else {
                    seen.insert(text, n.span().start);
                }
                text.to_string()
            }
        };
        let mut variables = BTreeMap::new();
        for (k, v) in r.variables.iter().flat_map(|m| m.get_ref()) {
            if !template::is_name(k.get_ref()) {
                errs.at(
                    k,
                    format!(
                        "stage variable name {:?}: expected letters, digits or '_'",
                        k.get_ref()
                    ),
                );
            }
            variables.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out.push(StageConfig {
            name,
            variables,
            throttle: None,
            route_throttle: Vec::new(),
            cache: CacheConfig::default(),
            cache_invalidation_token: None,
            route_cache: Vec::new(),
        });
    }
    out
}

/// A stage's `throttle` and `route_throttle` (whose keys must be routes of the API).
fn stage_throttles(
    errs: &mut Errors,
    stage: &mut StageConfig,
    raw: &S<RawStage>,
    routes: &[RouteConfig],
    api: &str,
    protocol: Protocol,
) {
    let r = raw.get_ref();
    stage.throttle = r.throttle.as_ref().map(|t| throttle(errs, t, "throttle"));
    for (key, t) in r.route_throttle.iter().flat_map(|m| m.get_ref()) {
        let limit = throttle(errs, t, &format!("route_throttle {:?}", key.get_ref()));
        if protocol == Protocol::Websocket {
            // Websocket route keys are plain names: matched as written.
            match routes.iter().find(|route| route.key_text == *key.get_ref()) {
                Some(route) => stage.route_throttle.push((route.key_text.clone(), limit)),
                None => errs.at(
                    key,
                    format!("route_throttle: API {api} has no route {:?}", key.get_ref()),
                ),
            }
            continue;
        }
        match RouteKey::parse(key.get_ref()) {
            Err(e) => errs.at(key, format!("route_throttle: {e}")),
            Ok(k) => match routes.iter().find(|route| route.key == k) {
                Some(route) => stage.route_throttle.push((route.key_text.clone(), limit)),
                None => errs.at(
                    key,
                    format!("route_throttle: API {api} has no route {:?}", key.get_ref()),
                ),
            },
        }
    }
}

/// A stage's `cache` and `route_cache` (whose keys must be `http_proxy` routes of the API).
fn stage_cache(
    errs: &mut Errors,
    stage: &mut StageConfig,
    raw: &S<RawStage>,
    routes: &[RouteConfig],
    api: &str,
    protocol: Protocol,
) {
    let r = raw.get_ref();
    if protocol == Protocol::Websocket {
        if let Some(c) = &r.cache {
            errs.at(
                c,
                "cache is for HTTP APIs (a websocket API has no responses to cache)",
            );
        }
        if let Some(c) = &r.route_cache {
            errs.at(c, "route_cache is for HTTP APIs");
        }
        return;
    }
    if let Some(raw_cache) = &r.cache {
        let (cfg, token) = cache_config(errs, raw_cache);
        stage.cache = cfg;
        stage.cache_invalidation_token = token;
    }
    for (key, raw_over) in r.route_cache.iter().flat_map(|m| m.get_ref()) {
        let over = route_cache_override(errs, raw_over);
        let route = match RouteKey::parse(key.get_ref()) {
            Err(e) => {
                errs.at(key, format!("route_cache: {e}"));
                continue;
            }
            Ok(k) => routes.iter().find(|route| route.key == k),
        };
        match route {
            None => errs.at(
                key,
                format!("route_cache: API {api} has no route {:?}", key.get_ref()),
            ),
            Some(route) if !matches!(route.integration, IntegrationConfig::HttpProxy { .. }) => {
                errs.at(
                    key,
                    format!(
                        "route_cache: route {:?} is not an http_proxy route (only backend responses are cached)",
                        key.get_ref()
                    ),
                )
            }
            Some(route) => stage.route_cache.push((route.key_text.clone(), over)),
        }
    }
}

/// `cache = { .. }`: the stage's settings and its invalidation token.
fn cache_config(errs: &mut Errors, raw: &S<RawCache>) -> (CacheConfig, Option<String>) {
    let r = raw.get_ref();
    let d = CacheConfig::default();
    let unauthorized_strategy = match &r.unauthorized_strategy {
        None => d.unauthorized_strategy,
        Some(v) => UnauthorizedStrategy::from_config(v.get_ref()).unwrap_or_else(|| {
            errs.at(
                v,
                format!(
                    "cache.unauthorized_strategy: expected \"fail_with_403\", \"succeed_with_response_header\" \
                     or \"succeed_without_response_header\", got {:?}",
                    v.get_ref()
                ),
            );
            d.unauthorized_strategy
        }),
    };
    let cfg = CacheConfig {
        enabled: r.enabled.as_ref().map_or(d.enabled, |v| *v.get_ref()),
        ttl_s: int(
            errs,
            r.ttl_s.as_ref(),
            "cache.ttl_s",
            0..=i64::from(CACHE_TTL_S_MAX),
            d.ttl_s,
        ),
        capacity_mb: int(
            errs,
            r.capacity_mb.as_ref(),
            "cache.capacity_mb",
            1..=i64::from(CACHE_CAPACITY_MB_MAX),
            d.capacity_mb,
        ),
        key_query: names(errs, r.key_query.as_ref(), "cache.key_query", false),
        key_headers: names(errs, r.key_headers.as_ref(), "cache.key_headers", true),
        require_authorization: r
            .require_authorization
            .as_ref()
            .map_or(d.require_authorization, |v| *v.get_ref()),
        unauthorized_strategy,
        statuses: r
            .statuses
            .as_ref()
            .map_or(d.statuses, |v| statuses(errs, v, "cache.statuses")),
    };
    // The checks above located each problem; this catches whatever they do not know of.
    if let Err(e) = cfg.validate() {
        errs.at(raw, e);
    }
    let token = r.invalidation_token.as_ref().and_then(|t| {
        let v = t.get_ref();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
            Some(v.clone())
        } else {
            errs.at(
                t,
                "cache.invalidation_token: expected visible ASCII characters without spaces",
            );
            None
        }
    });
    (cfg, token)
}

/// One `route_cache` value.
fn route_cache_override(errs: &mut Errors, raw: &S<RawRouteCache>) -> RouteCacheOverride {
    let r = raw.get_ref();
    let methods = r.methods.as_ref().map(|ms| {
        ms.get_ref()
            .iter()
            .filter_map(|m| {
                let method = Method::from_config(m.get_ref());
                if method.is_none() {
                    errs.at(
                        m,
                        format!("route_cache methods: {:?} is not a method", m.get_ref()),
                    );
                }
                method
            })
            .collect()
    });
    let over = RouteCacheOverride {
        enabled: r.enabled.as_ref().map(|v| *v.get_ref()),
        ttl_s: r.ttl_s.as_ref().map(|v| {
            int(
                errs,
                Some(v),
                "route_cache ttl_s",
                0..=i64::from(CACHE_TTL_S_MAX),
                0,
            )
        }),
        methods,
        key_query: r
            .key_query
            .as_ref()
            .map(|v| names(errs, Some(v), "route_cache key_query", false)),
        key_headers: r
            .key_headers
            .as_ref()
            .map(|v| names(errs, Some(v), "route_cache key_headers", true)),
        statuses: r
            .statuses
            .as_ref()
            .map(|v| statuses(errs, v, "route_cache statuses")),
    };
    if let Err(e) = over.validate() {
        errs.at(raw, e);
    }
    over
}

/// Query parameter (`header = false`) or header names of a cache key, each checked where it is.
fn names(
    errs: &mut Errors,
    raw: Option<&S<Vec<S<String>>>>,
    what: &str,
    header: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for n in raw.iter().flat_map(|v| v.get_ref()) {
        let v = n.get_ref();
        let ok = if header {
            is_token(v)
        } else {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b > b' ' && b != b'&' && b != b'=' && b < 0x7f)
        };
        if header && v.to_ascii_lowercase().starts_with("x-client-cert-") {
            // The gateway sets these from the verified client certificate on the way to the
            // backend, but the key is built from the headers the client sent: listing one
            // would let a client pick another client's cached responses.
            errs.at(
                n,
                format!(
                    "{what}: {v:?} cannot vary the cache key: the client sends its own value \
                     (the gateway only sets it for the backend); do not cache responses that \
                     depend on the client certificate"
                ),
            );
        } else if ok {
            out.push(if header {
                v.to_ascii_lowercase()
            } else {
                v.clone()
            });
        } else {
            let kind = if header { "header" } else { "query parameter" };
            errs.at(n, format!("{what}: {v:?} is not a {kind} name"));
        }
    }
    out
}

/// Cached statuses: final statuses, 200..=599.
fn statuses(errs: &mut Errors, raw: &S<Vec<S<i64>>>, what: &str) -> Vec<u16> {
    raw.get_ref()
        .iter()
        .map(|s| int(errs, Some(s), what, 200..=599, 200u16))
        .collect()
}

/// What a route's templates may refer to.
struct Scope<'a> {
    /// `None` when the key itself is invalid: parameter references are then not checked.
    key: Option<&'a RouteKey>,
    stages: &'a [StageConfig],
}

fn route(
    errs: &mut Errors,
    raw: &S<RawRoute>,
    stages: &[StageConfig],
    keys: &mut HashMap<RouteKey, usize>,
) -> RouteConfig {
    let r = raw.get_ref();
    let key = match &r.key {
        None => {
            errs.at(
                raw,
                "route needs a key, e.g. key = \"GET /hello\" or \"$default\"",
            );
            None
        }
        Some(k) => route_key(errs, k, keys),
    };
    let body_bytes_max = r
        .body_bytes_max
        .as_ref()
        .map(|b| int(errs, Some(b), "body_bytes_max", 0..=i64::MAX, 0));
    let scope = Scope {
        key: key.as_ref(),
        stages,
    };
    let integration = match &r.integration {
        None => {
            errs.at(
                raw,
                "route needs an integration, e.g. integration = { type = \"mock\" }",
            );
            placeholder_integration()
        }
        Some(i) => integration(errs, i, &scope),
    };
    if let Some(rr) = &r.return_response {
        errs.at(
            rr,
            "return_response is for routes of websocket APIs (an http_proxy route always returns the backend's response)",
        );
    }
    RouteConfig {
        key_text: r
            .key
            .as_ref()
            .map(|k| k.get_ref().clone())
            .unwrap_or_default(),
        key: key.unwrap_or(RouteKey::Default),
        body_bytes_max,
        integration,
        return_response: false,
    }
}

fn route_key(
    errs: &mut Errors,
    raw: &S<String>,
    keys: &mut HashMap<RouteKey, usize>,
) -> Option<RouteKey> {
    let key = match RouteKey::parse(raw.get_ref()) {
        Ok(key) => key,
        Err(message) => {
            errs.at(raw, message);
            return None;
        }
    };
    let params = key.param_names().len();
    if params > PATH_PARAMS_MAX {
        errs.at(
            raw,
            format!("route key {key}: {params} path parameters, at most {PATH_PARAMS_MAX} allowed"),
        );
    }
    if let Some(&first) = keys.get(&key) {
        let message = format!(
            "duplicate route key {key} (first at line {})",
            errs.line(first)
        );
        errs.at(raw, message);
    } else {
        keys.insert(key.clone(), raw.span().start);
    }
    Some(key)
}

// ---------------------------------------------------------------------------------------------
// Websocket APIs.

/// Route keys with a meaning of their own in a websocket API.
const WS_SPECIAL_KEYS: [&str; 3] = ["$connect", "$disconnect", "$default"];
/// Longest message route key.
const WS_ROUTE_KEY_CHARS_MAX: usize = 128;
/// Longest `connection_age_max_ms`: a week.
const WS_CONNECTION_AGE_MS_MAX: i64 = 7 * 86_400_000;

/// The websocket keys of an `[[api]]` table: `Some` for a websocket API; for an HTTP API each
/// one given is an error.
fn websocket_settings(
    errs: &mut Errors,
    r: &RawApi,
    protocol: Protocol,
) -> Option<WebSocketSettings> {
    if protocol != Protocol::Websocket {
        let only = |errs: &mut Errors, at: Option<usize>, field: &str| {
            if let Some(at) = at {
                errs.at_offset(
                    at,
                    format!("{field} is for websocket APIs (protocol = \"websocket\")"),
                );
            }
        };
        only(
            errs,
            r.route_selection.as_ref().map(|v| v.span().start),
            "route_selection",
        );
        only(
            errs,
            r.subprotocols.as_ref().map(|v| v.span().start),
            "subprotocols",
        );
        for (v, field) in [
            (&r.frame_bytes_max, "frame_bytes_max"),
            (&r.message_bytes_max, "message_bytes_max"),
            (&r.idle_timeout_ms, "idle_timeout_ms"),
            (&r.connection_age_max_ms, "connection_age_max_ms"),
            (&r.ping_interval_ms, "ping_interval_ms"),
        ] {
            only(errs, v.as_ref().map(|v| v.span().start), field);
        }
        only(
            errs,
            r.connection_throttle.as_ref().map(|v| v.span().start),
            "connection_throttle",
        );
        return None;
    }
    let route_selection = match &r.route_selection {
        None => crate::websocket::RouteSelection::DEFAULT_EXPRESSION.to_string(),
        Some(e) => {
            if let Err(err) = crate::websocket::RouteSelection::parse(e.get_ref()) {
                errs.at(e, format!("route_selection: {err}"));
            }
            e.get_ref().clone()
        }
    };
    let mut subprotocols: Vec<String> = Vec::new();
    for p in r.subprotocols.iter().flat_map(|l| l.get_ref()) {
        if !is_token(p.get_ref()) {
            errs.at(
                p,
                format!(
                    "subprotocols: {:?} is not a token (letters, digits and !#$%&'*+-.^_`|~)",
                    p.get_ref()
                ),
            );
        } else if subprotocols.contains(p.get_ref()) {
            errs.at(p, format!("subprotocols: {} is listed twice", p.get_ref()));
        } else {
            subprotocols.push(p.get_ref().clone());
        }
    }
    let bytes = 1..=WS_PAYLOAD_BYTES_CEILING as i64;
    let ms = 1..=SERVER_TIMEOUT_MS_MAX;
    Some(WebSocketSettings {
        route_selection,
        subprotocols,
        frame_bytes_max: int(
            errs,
            r.frame_bytes_max.as_ref(),
            "frame_bytes_max",
            bytes.clone(),
            WS_FRAME_BYTES_MAX,
        ),
        message_bytes_max: int(
            errs,
            r.message_bytes_max.as_ref(),
            "message_bytes_max",
            bytes,
            WS_MESSAGE_BYTES_MAX,
        ),
        idle_timeout_ms: int(
            errs,
            r.idle_timeout_ms.as_ref(),
            "idle_timeout_ms",
            ms.clone(),
            WS_IDLE_TIMEOUT_MS,
        ),
        connection_age_max_ms: int(
            errs,
            r.connection_age_max_ms.as_ref(),
            "connection_age_max_ms",
            1..=WS_CONNECTION_AGE_MS_MAX,
            WS_CONNECTION_AGE_MAX_MS,
        ),
        ping_interval_ms: int(
            errs,
            r.ping_interval_ms.as_ref(),
            "ping_interval_ms",
            0..=SERVER_TIMEOUT_MS_MAX,
            WS_PING_INTERVAL_MS,
        ),
        connection_throttle: r
            .connection_throttle
            .as_ref()
            .map(|t| throttle(errs, t, "connection_throttle")),
    })
}

/// A route of a websocket API: `$connect`, `$disconnect`, `$default` or a message route key.
fn ws_route(
    errs: &mut Errors,
    raw: &S<RawRoute>,
    stages: &[StageConfig],
    keys: &mut HashMap<String, usize>,
) -> RouteConfig {
    let r = raw.get_ref();
    let key_text = match &r.key {
        None => {
            errs.at(
                raw,
                "route needs a key, e.g. key = \"$connect\", \"$default\" or \"sendMessage\"",
            );
            String::new()
        }
        Some(k) => {
            let text = k.get_ref();
            let special = WS_SPECIAL_KEYS.contains(&text.as_str());
            if !special && text.starts_with('$') {
                errs.at(
                    k,
                    format!(
                        "route key {text:?}: keys starting with '$' are reserved \
                         ($connect, $disconnect, $default)"
                    ),
                );
            } else if text.is_empty()
                || text.chars().count() > WS_ROUTE_KEY_CHARS_MAX
                || text.chars().any(char::is_control)
            {
                errs.at(
                    k,
                    format!(
                        "route key {text:?}: expected 1..={WS_ROUTE_KEY_CHARS_MAX} characters \
                         without control characters"
                    ),
                );
            } else if let Some(&first) = keys.get(text) {
                let message = format!(
                    "duplicate route key {text} (first at line {})",
                    errs.line(first)
                );
                errs.at(k, message);
            } else {
                keys.insert(text.clone(), k.span().start);
            }
            text.clone()
        }
    };
    if let Some(b) = &r.body_bytes_max {
        errs.at(
            b,
            "body_bytes_max is for HTTP APIs; a websocket API limits messages with message_bytes_max",
        );
    }
    let lifecycle = key_text == "$connect" || key_text == "$disconnect";
    let return_response = match &r.return_response {
        Some(rr) if *rr.get_ref() && lifecycle => {
            errs.at(
                rr,
                format!("return_response: {key_text} has no client message to answer"),
            );
            false
        }
        Some(rr) => *rr.get_ref(),
        None => false,
    };
    let scope = Scope { key: None, stages };
    let integration = match &r.integration {
        None => {
            errs.at(
                raw,
                "route needs an integration, e.g. integration = { type = \"mock\", echo = true }",
            );
            placeholder_integration()
        }
        Some(i) => ws_integration(errs, i, &scope, lifecycle),
    };
    if return_response
        && !matches!(integration, IntegrationConfig::Http { .. })
        && let Some(rr) = &r.return_response
    {
        errs.at(
            rr,
            "return_response is for http integrations (a mock always sends its body, echo the message)",
        );
    }
    RouteConfig {
        key: RouteKey::Default,
        key_text,
        body_bytes_max: None,
        integration,
        return_response,
    }
}

/// A websocket route's integration: `mock` (status and body, or `echo = true`) or `http`.
fn ws_integration(
    errs: &mut Errors,
    raw: &S<RawIntegration>,
    scope: &Scope,
    lifecycle: bool,
) -> IntegrationConfig {
    let r = raw.get_ref();
    let Some(kind) = &r.kind else {
        errs.at(raw, "integration needs a type: \"mock\" or \"http\"");
        return placeholder_integration();
    };
    let not_field = |errs: &mut Errors, at: Option<usize>, field: &str, kind: &str, takes: &str| {
        if let Some(at) = at {
            errs.at_offset(
                at,
                format!(
                    "{field} is not a field of a {kind} integration of a websocket API (it takes {takes})"
                ),
            );
        }
    };
    let start = |v: &Option<S<i64>>| v.as_ref().map(|v| v.span().start);
    match kind.get_ref().as_str() {
        "mock" => {
            let takes = "status, body, echo";
            not_field(
                errs,
                r.uri.as_ref().map(|v| v.span().start),
                "uri",
                "mock",
                takes,
            );
            not_field(errs, start(&r.timeout_ms), "timeout_ms", "mock", takes);
            not_field(
                errs,
                r.headers.as_ref().map(|v| v.span().start),
                "headers",
                "mock",
                takes,
            );
            if let Some(e) = &r.echo
                && *e.get_ref()
            {
                if lifecycle {
                    errs.at(e, "echo: $connect and $disconnect have no message to echo");
                }
                if r.status.is_some() || r.body.is_some() {
                    errs.at(
                        e,
                        "echo = true sends the message back: it takes no status or body",
                    );
                }
                return IntegrationConfig::Echo;
            }
            let m = mock(errs, r, scope);
            if let (IntegrationConfig::Mock { body, .. }, Some(b)) = (&m, &r.body)
                && let Some(p) = body.path_params().next()
            {
                errs.at(
                    b,
                    format!("a websocket route has no path parameters (found {{{p}}})"),
                );
            }
            m
        }
        "http" => {
            let takes = "uri, timeout_ms";
            not_field(errs, start(&r.status), "status", "http", takes);
            not_field(
                errs,
                r.headers.as_ref().map(|v| v.span().start),
                "headers",
                "http",
                takes,
            );
            not_field(
                errs,
                r.body.as_ref().map(|v| v.span().start),
                "body",
                "http",
                takes,
            );
            not_field(
                errs,
                r.echo.as_ref().map(|v| v.span().start),
                "echo",
                "http",
                takes,
            );
            let IntegrationConfig::HttpProxy {
                uri,
                timeout_ms,
                ca,
                ..
            } = http_proxy(errs, raw, scope)
            else {
                return placeholder_integration();
            };
            if let (Some(p), Some(u)) = (uri.path_params().next(), &r.uri) {
                errs.at(
                    u,
                    format!("a websocket route has no path parameters (found {{{p}}})"),
                );
            }
            IntegrationConfig::Http {
                uri,
                timeout_ms,
                ca,
            }
        }
        "http_proxy" => {
            errs.at(
                kind,
                "a websocket route's integration is \"mock\" or \"http\" (the event JSON POSTed to a backend)",
            );
            placeholder_integration()
        }
        other => {
            errs.at(
                kind,
                format!("type: expected \"mock\" or \"http\", got {other:?}"),
            );
            placeholder_integration()
        }
    }
}

fn placeholder_integration() -> IntegrationConfig {
    IntegrationConfig::Mock {
        status: 200,
        headers: Vec::new(),
        body: Template { parts: Vec::new() },
    }
}

fn integration(errs: &mut Errors, raw: &S<RawIntegration>, scope: &Scope) -> IntegrationConfig {
    let r = raw.get_ref();
    let Some(kind) = &r.kind else {
        errs.at(raw, "integration needs a type: \"mock\" or \"http_proxy\"");
        return placeholder_integration();
    };
    match kind.get_ref().as_str() {
        "mock" => {
            not_a_field(errs, "mock", "uri", r.uri.as_ref());
            not_a_field(errs, "mock", "timeout_ms", r.timeout_ms.as_ref());
            if let Some(e) = &r.echo {
                errs.at(e, "echo is for mock integrations of websocket APIs");
            }
            not_a_field(errs, "mock", "ca", r.ca.as_ref());
            not_a_field(
                errs,
                "mock",
                "upstream_protocol",
                r.upstream_protocol.as_ref(),
            );
            mock(errs, r, scope)
        }
        "http_proxy" => {
            not_a_field(errs, "http_proxy", "status", r.status.as_ref());
            not_a_field(errs, "http_proxy", "headers", r.headers.as_ref());
            not_a_field(errs, "http_proxy", "body", r.body.as_ref());
            not_a_field(errs, "http_proxy", "echo", r.echo.as_ref());
            http_proxy(errs, raw, scope)
        }
        "http" => {
            errs.at(
                kind,
                "type \"http\" (the event JSON POSTed to a backend) is for websocket APIs; \
                 an HTTP API forwards requests with \"http_proxy\"",
            );
            placeholder_integration()
        }
        other => {
            errs.at(
                kind,
                format!("type: expected \"mock\" or \"http_proxy\", got {other:?}"),
            );
            placeholder_integration()
        }
    }
}

fn not_a_field<T>(errs: &mut Errors, kind: &str, field: &str, value: Option<&S<T>>) {
    if let Some(v) = value {
        let takes = if kind == "mock" {
            "status, headers, body"
        } else {
            "uri, timeout_ms, ca, upstream_protocol"
        };
        errs.at(
            v,
            format!("{field} is not a field of a {kind} integration (it takes {takes})"),
        );
    }
}

fn mock(errs: &mut Errors, r: &RawIntegration, scope: &Scope) -> IntegrationConfig {
    let mut status = int(errs, r.status.as_ref(), "status", 100..=599, 200);
    if status == 101
        && let Some(s) = &r.status
    {
        errs.at(
            s,
            "status: expected 100..=599 except 101 (a mock cannot switch protocols), got 101",
        );
        status = 200;
    }
    let headers = r
        .headers
        .as_ref()
        .map(|h| mock_headers(errs, h, scope))
        .unwrap_or_default();
    let body = r.body.as_ref().map_or(Template { parts: Vec::new() }, |b| {
        text_template(errs, b, scope)
    });
    IntegrationConfig::Mock {
        status,
        headers,
        body,
    }
}

fn mock_headers(errs: &mut Errors, raw: &RawMap, scope: &Scope) -> Vec<(String, Template)> {
    // The map is ordered by name; the spans give back the order of the file.
    let mut entries: Vec<_> = raw.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let name = k.get_ref().to_ascii_lowercase();
        if !is_token(&name) {
            errs.at(
                k,
                format!(
                    "header name {:?}: expected a token (letters, digits and !#$%&'*+-.^_`|~)",
                    k.get_ref()
                ),
            );
            continue;
        }
        if MOCK_HEADERS_FORBIDDEN.contains(&name.as_str()) {
            errs.at(
                k,
                format!("header {name} is set by the gateway and cannot be mocked"),
            );
            continue;
        }
        if let Some(&first) = seen.get(&name) {
            let message = format!(
                "header {name} is set twice (first at line {})",
                errs.line(first)
            );
            errs.at(k, message);
            continue;
        }
        seen.insert(name.clone(), k.span().start);
        if let Some(c) = v.get_ref().chars().find(|&c| is_ctl(c)) {
            errs.at(
                v,
                format!(
                    "header {name}: the value must not contain control characters \
                     such as CR or LF, found {c:?}"
                ),
            );
            continue;
        }
        let value = text_template(errs, v, scope);
        // Stage variables end up in the header too.
        for stage in scope.stages {
            for var in value.stage_vars() {
                if stage
                    .variables
                    .get(var)
                    .is_some_and(|s| s.chars().any(is_ctl))
                {
                    errs.at(
                        v,
                        format!(
                            "header {name}: stage variable {var} of stage {} contains \
                             a control character such as CR or LF",
                            stage.name
                        ),
                    );
                }
            }
        }
        out.push((name, value));
    }
    out
}

fn http_proxy(errs: &mut Errors, raw: &S<RawIntegration>, scope: &Scope) -> IntegrationConfig {
    let r = raw.get_ref();
    let timeout_ms = int(
        errs,
        r.timeout_ms.as_ref(),
        "timeout_ms",
        1..=INTEGRATION_TIMEOUT_MS_MAX,
        INTEGRATION_TIMEOUT_MS,
    );
    let uri = match &r.uri {
        None => {
            errs.at(
                raw,
                "http_proxy integration needs a uri, e.g. uri = \"http://127.0.0.1:9000/{proxy}\"",
            );
            Template { parts: Vec::new() }
        }
        Some(u) => match Template::parse_uri(u.get_ref()) {
            Err(message) => {
                errs.at(u, message);
                Template { parts: Vec::new() }
            }
            Ok(t) => {
                check_references(errs, u.span().start, &t, scope);
                check_uri_in_stages(errs, u.span().start, &t, scope.stages);
                t
            }
        },
    };
    let ca = r.ca.as_ref().map(|p| file_path(errs, p, "ca"));
    let protocol = match &r.upstream_protocol {
        None => UpstreamProtocol::Http1,
        Some(p) => match p.get_ref().as_str() {
            "http/1.1" => UpstreamProtocol::Http1,
            "h2" => UpstreamProtocol::H2,
            other => {
                errs.at(
                    p,
                    format!("upstream_protocol: expected \"http/1.1\" or \"h2\", got {other:?}"),
                );
                UpstreamProtocol::Http1
            }
        },
    };
    IntegrationConfig::HttpProxy {
        uri,
        timeout_ms,
        ca,
        protocol,
    }
}

/// A mock header value or body.
fn text_template(errs: &mut Errors, raw: &S<String>, scope: &Scope) -> Template {
    match Template::parse_text(raw.get_ref()) {
        Ok(t) => {
            check_references(errs, raw.span().start, &t, scope);
            t
        }
        Err(message) => {
            errs.at(raw, message);
            Template { parts: Vec::new() }
        }
    }
}

fn check_references(errs: &mut Errors, at: usize, t: &Template, scope: &Scope) {
    if let Some(key) = scope.key {
        let names = key.param_names();
        for p in t.path_params() {
            if !names.contains(&p) {
                errs.at_offset(at, format!("route {key} has no path parameter {{{p}}}"));
            }
        }
    }
    for var in t.stage_vars() {
        for stage in scope.stages {
            if !stage.variables.contains_key(var) {
                let defined = if stage.variables.is_empty() {
                    "none".to_string()
                } else {
                    stage
                        .variables
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                errs.at_offset(
                    at,
                    format!(
                        "stage variable {var} is not defined in stage {} (defined: {defined})",
                        stage.name
                    ),
                );
            }
        }
    }
}

/// A URI whose stage variables differ per stage is checked once per stage, as each will send it.
fn check_uri_in_stages(errs: &mut Errors, at: usize, t: &Template, stages: &[StageConfig]) {
    if t.stage_vars().next().is_none() {
        if let Err(message) = check_uri(t) {
            errs.at_offset(at, message);
        }
        return;
    }
    for stage in stages {
        let uri = t.substitute_stage_vars(&stage.variables);
        if uri.stage_vars().next().is_some() {
            continue; // an undefined variable, reported already
        }
        if let Err(message) = check_uri(&uri) {
            errs.at_offset(
                at,
                format!(
                    "{message} (in stage {}, where the uri is {:?})",
                    stage.name,
                    uri_text(&uri)
                ),
            );
        }
    }
}

/// Checks a proxy URI without stage variables: `http[s]://host[:port]` then an optional path.
fn check_uri(t: &Template) -> Result<(), String> {
    let head = match t.parts.first() {
        Some(Part::Literal(l)) => l.as_str(),
        _ => "",
    };
    let has_prefix = |p: &str| {
        head.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    let scheme_len = if has_prefix("https://") {
        "https://".len()
    } else if has_prefix("http://") {
        "http://".len()
    } else {
        return Err(format!(
            "uri: expected http://host[:port]/path or https://..., got {:?}",
            uri_text(t)
        ));
    };
    let rest = &head[scheme_len..];
    let authority = match rest.find('/') {
        Some(i) => &rest[..i],
        None => {
            if let Some(Part::PathParam(p)) = t.parts.get(1) {
                return Err(format!(
                    "uri: a path parameter ({{{p}}}) cannot be part of the host[:port]"
                ));
            }
            rest
        }
    };
    if authority.is_empty() {
        return Err("uri: no host (expected http[s]://host[:port]/path)".to_string());
    }
    check_authority(authority)?;
    // What follows the authority goes into the request line sent to the backend.
    let path_head = &rest[authority.len()..];
    let literals = std::iter::once(path_head).chain(t.parts[1..].iter().filter_map(|p| match p {
        Part::Literal(l) => Some(l.as_str()),
        _ => None,
    }));
    for lit in literals {
        // Braces here came from a stage variable: literal text, which a request target
        // cannot hold, not a parameter.
        if let Some(c) = lit
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '#' | '{' | '}'))
        {
            return Err(format!(
                "uri: the path contains {c:?}, which cannot be sent in a request line (percent-encode it)"
            ));
        }
    }
    Ok(())
}

fn check_authority(authority: &str) -> Result<(), String> {
    let (host_ok, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) => (ip.parse::<Ipv6Addr>().is_ok(), after),
            None => (false, ""),
        }
    } else {
        match authority.find(':') {
            Some(i) => (
                is_dns_name(&authority[..i].to_ascii_lowercase()),
                &authority[i..],
            ),
            None => (is_dns_name(&authority.to_ascii_lowercase()), ""),
        }
    };
    if !host_ok {
        return Err(format!(
            "uri: invalid host in {authority:?} (expected host[:port] with a DNS name, an IPv4 address or [IPv6])"
        ));
    }
    if port.is_empty() {
        return Ok(());
    }
    let valid_port = port.strip_prefix(':').is_some_and(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n != 0)
    });
    if valid_port {
        Ok(())
    } else {
        Err(format!(
            "uri: invalid port in {authority:?} (expected host:1..=65535)"
        ))
    }
}

/// A URI template as written in config (`{p}` for path parameters).
fn uri_text(t: &Template) -> String {
    let mut s = String::new();
    for part in &t.parts {
        match part {
            Part::Literal(l) => s.push_str(l),
            Part::StageVar(v) => s.push_str(&format!("${{stageVariables.{v}}}")),
            Part::PathParam(p) => s.push_str(&format!("{{{p}}}")),
        }
    }
    s
}

/// API and stage names: 1..=`max` bytes of `[A-Za-z0-9_-]`.
fn is_identifier(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A lower-case DNS name: dot-separated labels of `[a-z0-9-]`, 1..=63 bytes, no leading or
/// trailing '-', at most 253 bytes in all. IPv4 addresses pass too.
fn is_dns_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Control characters a header value cannot hold (HTAB is allowed).
fn is_ctl(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || c == '\u{7f}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Method, Segment};
    use proptest::prelude::*;

    /// The schema from the design brief, comments and all.
    const SCHEMA: &str = r#"[server]
cores = 2                     # optional; default: all online CPUs (None); 1..=1024
listen = ["127.0.0.1:8080"]   # plain-HTTP listeners, at least one, SocketAddr, no duplicates
backlog = 4096                # default LISTEN_BACKLOG; 1..=65535
header_read_timeout_ms = 10000   # defaults from src/limits.rs; every *_ms >= 1
keepalive_idle_timeout_ms = 60000
header_bytes_max = 16384      # 1024..=1048576
headers_max = 100             # 1..=HEADERS_CEILING
body_bytes_max = 10485760     # default request body limit per route
upstream_idle_per_host_max = 64
upstream_idle_timeout_ms = 30000
upstream_connect_timeout_ms = 5000
[admin]
listen = "127.0.0.1:9901"     # default 127.0.0.1:9901; "" disables the admin listener
token = "secret"              # optional; non-empty, visible ASCII
[[api]]
name = "shop"                 # required, unique, 1..=64 of [A-Za-z0-9_-]
protocol = "http"             # "http" (default) or "websocket"
host = "api.example.com"      # optional; exact hostname or "*.example.com"
base_path = "v1"              # optional; leading/trailing '/' stripped
[[api.route]]
key = "GET /hello/{name}"     # RouteKey::parse; its error message goes to the key's line
body_bytes_max = 1048576      # optional
integration = { type = "mock", status = 200, headers = { "content-type" = "application/json" }, body = "{\"hi\":\"${request.path.name}\"}" }
[[api.stage]]
name = "prod"                 # "$default" or 1..=128 of [A-Za-z0-9_-]; unique in the API
variables = { backend = "127.0.0.1:9000" }  # names [A-Za-z0-9_]+, string values
"#;

    /// A valid `[server]` and the start of an API, 4 lines; tests append routes and stages.
    const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[api]]\nname = \"a\"\n";

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(c) => c,
            Err(errs) => panic!("{text}\nunexpected errors: {errs:#?}"),
        }
    }

    /// (line, col, message) of every error.
    fn errors(text: &str) -> Vec<(usize, usize, String)> {
        match parse(text) {
            Ok(_) => panic!("{text}\nshould have been refused"),
            Err(errs) => errs
                .into_iter()
                .map(|e| (e.line, e.col, e.message))
                .collect(),
        }
    }

    /// The one error `text` gives, checked to contain `want` and to be on `line`.
    fn one_error(text: &str, line: usize, want: &str) {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{text}\n{errs:#?}");
        assert_eq!(errs[0].0, line, "{text}\n{errs:#?}");
        assert!(
            errs[0].2.contains(want),
            "{text}\nwanted {want:?} in {errs:#?}"
        );
    }

    fn with_route(integration: &str) -> String {
        format!("{HEAD}[[api.route]]\nkey = \"GET /x/{{id}}\"\nintegration = {integration}\n")
    }

    fn api(c: &Config) -> &ApiConfig {
        &c.apis[0]
    }

    #[test]
    fn schema_example_parses() {
        let c = ok(SCHEMA);
        assert_eq!(c.server.cores, Some(2));
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(c.admin.token.as_deref(), Some("secret"));
        let a = api(&c);
        assert_eq!(a.name, "shop");
        assert_eq!(a.protocol, Protocol::Http);
        assert_eq!(a.host.as_deref(), Some("api.example.com"));
        assert_eq!(a.base_path.as_deref(), Some("v1"));
        let r = &a.routes[0];
        assert_eq!(r.key_text, "GET /hello/{name}");
        assert_eq!(
            r.key,
            RouteKey::Path {
                method: Method::Get,
                segments: vec![
                    Segment::Literal("hello".into()),
                    Segment::Param("name".into())
                ]
            }
        );
        assert_eq!(r.body_bytes_max, Some(1_048_576));
        let IntegrationConfig::Mock {
            status,
            headers,
            body,
        } = &r.integration
        else {
            panic!("not a mock: {:?}", r.integration);
        };
        assert_eq!(*status, 200);
        assert_eq!(headers[0].0, "content-type");
        assert_eq!(headers[0].1.is_literal(), Some("application/json"));
        assert_eq!(body.to_string(), r#"{"hi":"${request.path.name}"}"#);
        assert_eq!(a.stages.len(), 1);
        assert_eq!(a.stages[0].name, "prod");
        assert_eq!(a.stages[0].variables["backend"], "127.0.0.1:9000");
    }

    #[test]
    fn defaults() {
        let c = ok(&with_route("{ type = \"mock\" }"));
        let s = &c.server;
        assert_eq!(s.cores, None);
        assert_eq!(s.backlog, LISTEN_BACKLOG);
        assert_eq!(s.header_read_timeout_ms, HEADER_READ_TIMEOUT_MS);
        assert_eq!(s.keepalive_idle_timeout_ms, KEEPALIVE_IDLE_TIMEOUT_MS);
        assert_eq!(s.header_bytes_max, HEADER_BYTES_MAX);
        assert_eq!(s.headers_max, HEADERS_MAX);
        assert_eq!(s.body_bytes_max, BODY_BYTES_MAX);
        assert_eq!(s.upstream_idle_per_host_max, UPSTREAM_IDLE_PER_HOST_MAX);
        assert_eq!(s.upstream_idle_timeout_ms, UPSTREAM_IDLE_TIMEOUT_MS);
        assert_eq!(s.upstream_connect_timeout_ms, UPSTREAM_CONNECT_TIMEOUT_MS);
        assert_eq!(
            c.admin,
            AdminConfig {
                listen: Some("127.0.0.1:9901".parse().unwrap()),
                token: None,
                debug_endpoints: false,
            }
        );
        let a = api(&c);
        assert_eq!(a.protocol, Protocol::Http);
        assert_eq!((a.host.as_ref(), a.base_path.as_ref()), (None, None));
        assert_eq!(a.routes[0].body_bytes_max, None);
        assert_eq!(
            a.routes[0].integration,
            IntegrationConfig::Mock {
                status: 200,
                headers: vec![],
                body: Template { parts: vec![] }
            }
        );
        // No [[api.stage]]: an implicit $default stage without variables.
        assert_eq!(
            a.stages,
            vec![StageConfig {
                name: "$default".into(),
                variables: BTreeMap::new(),
                throttle: None,
                route_throttle: Vec::new(),
                cache: CacheConfig::default(),
                cache_invalidation_token: None,
                route_cache: Vec::new(),
            }]
        );
        let c = ok(&with_route("{ type = \"http_proxy\", uri = \"http://b\" }"));
        let IntegrationConfig::HttpProxy { timeout_ms, .. } = api(&c).routes[0].integration else {
            panic!("not a proxy");
        };
        assert_eq!(timeout_ms, INTEGRATION_TIMEOUT_MS);
    }

    #[test]
    fn server_ranges() {
        for (key, bad, expected) in [
            ("cores", "0", "expected 1..=1024, got 0"),
            ("cores", "1025", "expected 1..=1024, got 1025"),
            ("backlog", "0", "expected 1..=65535, got 0"),
            ("backlog", "65536", "expected 1..=65535, got 65536"),
            (
                "header_read_timeout_ms",
                "0",
                "expected 1..=86400000, got 0",
            ),
            (
                "keepalive_idle_timeout_ms",
                "-5",
                "expected 1..=86400000, got -5",
            ),
            (
                "header_bytes_max",
                "1023",
                "expected 1024..=1048576, got 1023",
            ),
            (
                "header_bytes_max",
                "1048577",
                "expected 1024..=1048576, got 1048577",
            ),
            ("headers_max", "0", "expected 1..=256, got 0"),
            ("headers_max", "257", "expected 1..=256, got 257"),
            ("body_bytes_max", "-1", "expected at least 0, got -1"),
            (
                "upstream_idle_per_host_max",
                "-1",
                "expected 0..=65535, got -1",
            ),
            (
                "upstream_idle_timeout_ms",
                "0",
                "expected 1..=86400000, got 0",
            ),
            (
                "upstream_connect_timeout_ms",
                "0",
                "expected 1..=86400000, got 0",
            ),
            ("shutdown_timeout_ms", "0", "expected 1..=86400000, got 0"),
        ] {
            let text = with_route("{ type = \"mock\" }").replacen(
                "[server]\n",
                &format!("[server]\n{key} = {bad}\n"),
                1,
            );
            one_error(&text, 2, &format!("{key}: {expected}"));
        }
        let text = with_route("{ type = \"mock\" }").replacen(
            "[server]\n",
            "[server]\ncores = 1024\nbacklog = 1\nheader_bytes_max = 1048576\nheaders_max = 256\nbody_bytes_max = 0\nupstream_idle_per_host_max = 0\n",
            1,
        );
        let c = ok(&text);
        assert_eq!(c.server.cores, Some(1024));
        assert_eq!(c.server.header_bytes_max, 1_048_576);
        assert_eq!(c.server.body_bytes_max, 0);
    }

    #[test]
    fn listeners() {
        let route = "[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"$default\"\nintegration = { type = \"mock\" }\n";
        one_error(
            &format!("[server]\ncores = 1\n{route}"),
            1,
            "server.listen is required",
        );
        one_error(route, 1, "server.listen is required");
        one_error(
            &format!("[server]\nlisten = []\n{route}"),
            2,
            "at least one address",
        );
        let errs = errors(&format!(
            "[server]\nlisten = [\"127.0.0.1:8080\", \"localhost:80\", \"127.0.0.1:8080\"]\n{route}"
        ));
        assert_eq!(errs, vec![
            (2, 29, r#"listen: expected an address like "127.0.0.1:8080" or "[::1]:8080", got "localhost:80""#.to_string()),
            (2, 45, "listen: 127.0.0.1:8080 is listed twice".to_string()),
        ]);
        // Port 0 never collides.
        let c = ok(&format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\", \"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n{route}"
        ));
        assert_eq!(c.server.listen.len(), 3);
    }

    #[test]
    fn admin() {
        let base = with_route("{ type = \"mock\" }");
        let c = ok(&format!("{base}[admin]\nlisten = \"\"\n"));
        assert_eq!(c.admin.listen, None);
        let c = ok(&format!(
            "{base}[admin]\nlisten = \"[::1]:9000\"\ntoken = \"a-b_c!~\"\n"
        ));
        assert_eq!(c.admin.listen, Some("[::1]:9000".parse().unwrap()));
        one_error(
            &format!("{base}[admin]\nlisten = \"9901\"\n"),
            9,
            "admin.listen: expected an address",
        );
        one_error(
            &format!("{base}[admin]\ntoken = \"\"\n"),
            9,
            "admin.token: expected a non-empty",
        );
        one_error(
            &format!("{base}[admin]\ntoken = \"a b\"\n"),
            9,
            "visible ASCII",
        );
        one_error(
            &format!("{base}[admin]\ntoken = \"é\"\n"),
            9,
            "visible ASCII",
        );
        one_error(
            &format!("{base}[admin]\nlisten = \"127.0.0.1:8080\"\n"),
            9,
            "admin.listen: 127.0.0.1:8080 is also a server listener (line 2)",
        );
        let text = base.replace("127.0.0.1:8080", "127.0.0.1:9901");
        one_error(
            &text,
            2,
            "listen: 127.0.0.1:9901 is also the admin listener",
        );
        // ... unless the admin listener moves or is disabled.
        ok(&format!("{text}[admin]\nlisten = \"\"\n"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let base = with_route("{ type = \"mock\" }");
        one_error(
            &format!("{base}[account]\nthrottles = {{ rate = 1, burst = 1 }}\n"),
            9,
            "unknown field `throttles`",
        );
        let text = base.replacen("[server]\n", "[server]\nlisten_tls = 1\n", 1);
        one_error(&text, 2, "unknown field `listen_tls`");
        one_error(
            &with_route("{ type = \"mock\", stats = 1 }"),
            7,
            "unknown field `stats`",
        );
        one_error(
            &format!("{base}[[api.stage]]\nname = \"p\"\ncaching = 1\n"),
            10,
            "unknown field `caching`",
        );
    }

    #[test]
    fn syntax_and_type_errors_stop_at_the_first() {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\nbacklog = 0\ncores = \"two\"\nheaders_max = 0\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!((errs[0].0, errs[0].1), (4, 9));
        assert!(errs[0].2.contains("invalid type"), "{errs:#?}");
        let errs = errors("[server]\nlisten = [\"127.0.0.1:8080\"\n[[api]]\n");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].0, 3);
        one_error("[server]\ncores = 1\ncores = 2\n", 3, "duplicate key");
    }

    #[test]
    fn every_semantic_error_is_collected_in_order() {
        let text = r#"[server]
listen = ["127.0.0.1:8080"]
backlog = 0
[admin]
token = " x"
[[api]]
name = "shop"
host = "API.example.com:80"
[[api.route]]
key = "GET /a/{id}"
integration = { type = "mock", status = 700, body = "${request.path.nope}" }
[[api.route]]
key = "GET /a/{id}"
integration = { type = "http_proxy", uri = "ftp://b/{id}" }
[[api]]
name = "shop"
protocol = "rest"
[[api.route]]
key = "FETCH /"
[[api.stage]]
name = "$default"
[[api.stage]]
name = "$default"
"#;
        let errs = errors(text);
        let got: Vec<_> = errs
            .iter()
            .map(|(l, c, m)| format!("{l}:{c}: {m}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "3:11: backlog: expected 1..=65535, got 0",
                "5:9: admin.token: expected a non-empty string of visible ASCII characters (no spaces)",
                r#"8:8: host: expected a DNS name like "api.example.com" or "*.example.com" (no port), got "API.example.com:80""#,
                "11:41: status: expected 100..=599, got 700",
                "11:53: route GET /a/{id} has no path parameter {nope}",
                "13:7: duplicate route key GET /a/{id} (first at line 10)",
                "14:44: uri: expected http://host[:port]/path or https://..., got \"ftp://b/{id}\"",
                "16:8: duplicate API name shop (first at line 7)",
                r#"17:12: protocol: expected "http" or "websocket", got "rest""#,
                "18:1: route needs an integration, e.g. integration = { type = \"mock\" }",
                r#"19:7: route key "FETCH /": unknown method "FETCH" (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY)"#,
                "23:8: duplicate stage name $default (first at line 21)",
            ]
        );
    }

    #[test]
    fn api_names_and_protocol() {
        let tail = "[[api.route]]\nkey = \"$default\"\nintegration = { type = \"mock\" }\n";
        let server = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
        one_error(&format!("{server}[[api]]\n{tail}"), 3, "api needs a name");
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            one_error(
                &format!("{server}[[api]]\nname = {bad:?}\n{tail}"),
                4,
                "name: expected 1..=64",
            );
        }
        ok(&format!(
            "{server}[[api]]\nname = \"{}\"\n{tail}",
            "A-z_9".repeat(12)
        ));
        one_error(
            &format!("{server}[[api]]\nname = \"a\"\nprotocol = \"rest\"\n{tail}"),
            5,
            "protocol: expected \"http\" or \"websocket\", got \"rest\"",
        );
        one_error(HEAD, 3, "API a has no routes");
        // No APIs at all is a valid (if useless) gateway.
        assert!(ok(server).apis.is_empty());
    }

    #[test]
    fn hosts() {
        let text = |host: &str| {
            with_route("{ type = \"mock\" }").replacen(
                "name = \"a\"\n",
                &format!("name = \"a\"\nhost = {host:?}\n"),
                1,
            )
        };
        for (given, want) in [
            ("API.Example.com", "api.example.com"),
            ("*.Example.com", "*.example.com"),
            ("localhost", "localhost"),
            ("a-1.b2", "a-1.b2"),
        ] {
            assert_eq!(api(&ok(&text(given))).host.as_deref(), Some(want));
        }
        for bad in [
            "",
            "a.example.com:8080",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "*",
            "*.",
            "a.*.b",
            "**.b",
            "a.b.",
            "é.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            one_error(&text(bad), 5, "host: expected a DNS name");
        }
    }

    #[test]
    fn base_paths() {
        let text = |p: &str| {
            with_route("{ type = \"mock\" }").replacen(
                "name = \"a\"\n",
                &format!("name = \"a\"\nbase_path = {p:?}\n"),
                1,
            )
        };
        for (given, want) in [
            ("", None),
            ("/", None),
            ("v1", Some("v1")),
            ("/v1/", Some("v1")),
            ("/a/b.c~_-/", Some("a/b.c~_-")),
        ] {
            assert_eq!(api(&ok(&text(given))).base_path.as_deref(), want, "{given}");
        }
        for bad in ["a//b", "a b", "a/./b", "..", "a/{x}", "a?b", "é"] {
            one_error(&text(bad), 5, "base_path: expected");
        }
    }

    #[test]
    fn route_keys() {
        one_error(
            &format!("{HEAD}[[api.route]]\nintegration = {{ type = \"mock\" }}\n"),
            5,
            "route needs a key",
        );
        one_error(
            &format!(
                "{HEAD}[[api.route]]\nkey = \"GET /a//b\"\nintegration = {{ type = \"mock\" }}\n"
            ),
            6,
            "empty path segment",
        );
        let many: String = (0..17).map(|i| format!("/{{p{i}}}")).collect();
        one_error(
            &format!(
                "{HEAD}[[api.route]]\nkey = \"GET {many}\"\nintegration = {{ type = \"mock\" }}\n"
            ),
            6,
            "17 path parameters, at most 16",
        );
        let r = |k: &str| {
            format!("[[api.route]]\nkey = \"{k}\"\nintegration = {{ type = \"mock\" }}\n")
        };
        // Same key value (same parameter names) is a duplicate; another method or name is not.
        one_error(
            &format!(
                "{HEAD}{}{}{}",
                r("GET /a/{b}"),
                r("POST /a/{b}"),
                r("GET /a/{b}")
            ),
            12,
            "duplicate route key GET /a/{b} (first at line 6)",
        );
        ok(&format!(
            "{HEAD}{}{}{}",
            r("GET /a/{b}"),
            r("ANY /a/{b}"),
            r("$default")
        ));
        one_error(
            &format!("{HEAD}{}{}", r("$default"), r("$default")),
            9,
            "duplicate route key $default",
        );
        let c = ok(&format!(
            "{HEAD}{}",
            r("ANY /files/{path+}").replace(
                "integration = { type = \"mock\" }",
                "body_bytes_max = 0\nintegration = { type = \"mock\" }"
            )
        ));
        assert_eq!(api(&c).routes[0].body_bytes_max, Some(0));
        one_error(
            &format!(
                "{HEAD}{}",
                r("GET /").replace("key", "body_bytes_max = -1\nkey")
            ),
            6,
            "body_bytes_max: expected at least 0, got -1",
        );
    }

    #[test]
    fn integration_types_and_fields() {
        one_error(
            &with_route("{ status = 200 }"),
            7,
            "integration needs a type",
        );
        one_error(
            &with_route("{ type = \"lambda\" }"),
            7,
            "type: expected \"mock\" or \"http_proxy\", got \"lambda\"",
        );
        one_error(
            &with_route("{ type = \"mock\", uri = \"http://b\" }"),
            7,
            "uri is not a field of a mock integration (it takes status, headers, body)",
        );
        one_error(
            &with_route("{ type = \"mock\", timeout_ms = 5 }"),
            7,
            "timeout_ms is not a field of a mock",
        );
        one_error(
            &with_route("{ type = \"http_proxy\", uri = \"http://b\", body = \"\" }"),
            7,
            "body is not a field of a http_proxy integration (it takes uri, timeout_ms, ca, upstream_protocol)",
        );
        one_error(
            &with_route("{ type = \"http_proxy\", uri = \"http://b\", status = 200 }"),
            7,
            "status is not a field of a http_proxy",
        );
        one_error(
            &with_route("{ type = \"http_proxy\", uri = \"http://b\", headers = {} }"),
            7,
            "headers is not a field of a http_proxy",
        );
        one_error(
            &format!(
                "{HEAD}[[api.route]]\nkey = \"GET /\"\n[api.route.integration]\ntype = \"http_proxy\"\n"
            ),
            7,
            "http_proxy integration needs a uri",
        );
    }

    #[test]
    fn mock_status() {
        for (s, want) in [("100", 100), ("204", 204), ("599", 599)] {
            let c = ok(&with_route(&format!("{{ type = \"mock\", status = {s} }}")));
            assert!(
                matches!(api(&c).routes[0].integration, IntegrationConfig::Mock { status, .. } if status == want)
            );
        }
        one_error(
            &with_route("{ type = \"mock\", status = 99 }"),
            7,
            "status: expected 100..=599, got 99",
        );
        one_error(
            &with_route("{ type = \"mock\", status = 600 }"),
            7,
            "status: expected 100..=599, got 600",
        );
        one_error(
            &with_route("{ type = \"mock\", status = 101 }"),
            7,
            "expected 100..=599 except 101",
        );
    }

    #[test]
    fn mock_headers() {
        let text = format!(
            "{HEAD}[[api.route]]\nkey = \"GET /x/{{id}}\"\n[api.route.integration]\ntype = \"mock\"\n[api.route.integration.headers]\nX-Zeta = \"z\"\n\"Content-Type\" = \"text/plain\"\nx-id = \"${{request.path.id}}\"\n"
        );
        let c = ok(&text);
        let IntegrationConfig::Mock { headers, .. } = &api(&c).routes[0].integration else {
            panic!("not a mock");
        };
        let names: Vec<_> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-zeta", "content-type", "x-id"],
            "config order, lower-cased"
        );
        assert_eq!(headers[2].1.parts, vec![Part::PathParam("id".into())]);

        let h = |headers: &str| {
            with_route(&format!("{{ type = \"mock\", headers = {{ {headers} }} }}"))
        };
        one_error(
            &h("\"bad name\" = \"v\""),
            7,
            "header name \"bad name\": expected a token",
        );
        one_error(&h("\"\" = \"v\""), 7, "expected a token");
        one_error(
            &h("Content-Length = \"1\""),
            7,
            "header content-length is set by the gateway",
        );
        one_error(
            &h("connection = \"close\""),
            7,
            "header connection is set by the gateway",
        );
        one_error(
            &h("Transfer-Encoding = \"chunked\""),
            7,
            "header transfer-encoding is set by the gateway",
        );
        one_error(
            &h("X-A = \"1\", x-a = \"2\""),
            7,
            "header x-a is set twice (first at line 7)",
        );
        one_error(
            &h("x-a = \"a\\r\\nb\""),
            7,
            "must not contain control characters such as CR or LF, found '\\r'",
        );
        one_error(&h("x-a = \"a\\u0000\""), 7, "control characters");
        ok(&h("x-a = \"a\\tb é\""));
        one_error(
            &h("x-a = \"${foo}\""),
            7,
            "unknown template variable ${foo}",
        );
        one_error(
            &h("x-a = \"${request.path.other}\""),
            7,
            "route GET /x/{id} has no path parameter {other}",
        );
        // A stage variable's value is checked where it lands in a header.
        let text = format!(
            "{}[[api.stage]]\nname = \"s\"\nvariables = {{ v = \"a\\nb\" }}\n",
            h("x-a = \"${stageVariables.v}\"")
        );
        one_error(
            &text,
            7,
            "header x-a: stage variable v of stage s contains a control character",
        );
    }

    #[test]
    fn mock_body_templates() {
        let c = ok(&with_route(
            "{ type = \"mock\", body = \"{\\\"id\\\": \\\"${request.path.id}\\\"} $5 {\" }",
        ));
        let IntegrationConfig::Mock { body, .. } = &api(&c).routes[0].integration else {
            panic!("not a mock");
        };
        assert_eq!(body.to_string(), "{\"id\": \"${request.path.id}\"} $5 {");
        one_error(
            &with_route("{ type = \"mock\", body = \"${request.path.id\" }"),
            7,
            "unclosed \"${\"",
        );
        one_error(
            &with_route("{ type = \"mock\", body = \"${request.path.id2}\" }"),
            7,
            "no path parameter {id2}",
        );
        one_error(
            &with_route("{ type = \"mock\", body = \"${context.requestId}\" }"),
            7,
            "unknown template variable ${context.requestId}",
        );
    }

    #[test]
    fn stage_variables_must_be_defined_in_every_stage() {
        // Implicit $default stage: any stage variable reference is an error.
        one_error(
            &with_route("{ type = \"mock\", body = \"${stageVariables.env}\" }"),
            7,
            "stage variable env is not defined in stage $default (defined: none)",
        );
        let stages = "[[api.stage]]\nname = \"prod\"\nvariables = { env = \"p\", backend = \"10.0.0.1:80\" }\n[[api.stage]]\nname = \"dev\"\nvariables = { backend = \"127.0.0.1:9000\" }\n";
        let text = format!(
            "{}{stages}",
            with_route(
                "{ type = \"mock\", body = \"${stageVariables.env} ${stageVariables.env}\" }"
            )
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            vec![(
                7,
                39,
                "stage variable env is not defined in stage dev (defined: backend)".to_string()
            )]
        );
        let text = format!(
            "{}{stages}",
            with_route(
                "{ type = \"http_proxy\", uri = \"http://${stageVariables.backend}/{id}\" }"
            )
        );
        let c = ok(&text);
        let a = api(&c);
        assert_eq!(
            a.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["prod", "dev"]
        );
        let IntegrationConfig::HttpProxy { uri, .. } = &a.routes[0].integration else {
            panic!("not a proxy");
        };
        assert_eq!(
            uri.substitute_stage_vars(&a.stages[1].variables).parts,
            vec![
                Part::Literal("http://127.0.0.1:9000/".into()),
                Part::PathParam("id".into()),
            ]
        );
    }

    #[test]
    fn cache_parses_with_defaults_overrides_and_checks() {
        let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[api]]\nname = \"a\"\n\
                    [[api.route]]\nkey = \"GET /x/{id}\"\n\
                    integration = { type = \"http_proxy\", uri = \"http://b/{id}\" }\n\
                    [[api.route]]\nkey = \"GET /live\"\n\
                    integration = { type = \"http_proxy\", uri = \"http://b/live\" }\n\
                    [[api.route]]\nkey = \"GET /m\"\nintegration = { type = \"mock\" }\n\
                    [[api.stage]]\nname = \"prod\"\n";
        let c = ok(&format!(
            "{base}cache = {{ enabled = true, ttl_s = 60, capacity_mb = 16, key_query = [\"page\"], \
             key_headers = [\"Accept-Language\"], unauthorized_strategy = \"fail_with_403\", \
             invalidation_token = \"s3cret\" }}\n\
             route_cache = {{ \"GET /x/{{id}}\" = {{ ttl_s = 30, methods = [\"GET\", \"POST\"] }}, \
             \"GET /live\" = {{ enabled = false }} }}\n"
        ));
        let stage = &c.apis[0].stages[0];
        assert_eq!(
            stage.cache,
            CacheConfig {
                enabled: true,
                ttl_s: 60,
                capacity_mb: 16,
                key_query: vec!["page".into()],
                key_headers: vec!["accept-language".into()],
                require_authorization: true,
                unauthorized_strategy: UnauthorizedStrategy::FailWith403,
                statuses: vec![200],
            }
        );
        assert_eq!(stage.cache_invalidation_token.as_deref(), Some("s3cret"));
        assert_eq!(
            stage.route_cache,
            vec![
                (
                    "GET /live".to_string(),
                    RouteCacheOverride {
                        enabled: Some(false),
                        ..Default::default()
                    }
                ),
                (
                    "GET /x/{id}".to_string(),
                    RouteCacheOverride {
                        ttl_s: Some(30),
                        methods: Some(vec![Method::Get, Method::Post]),
                        ..Default::default()
                    }
                ),
            ]
        );
        // Absent: off, with the documented defaults.
        let c = ok(base);
        assert_eq!(c.apis[0].stages[0].cache, CacheConfig::default());

        let bad = format!(
            "{base}cache = {{ ttl_s = 3601, capacity_mb = 0, key_query = [\"a=b\"], \
             key_headers = [\"bad header\"], statuses = [101], unauthorized_strategy = \"deny\", \
             invalidation_token = \"has space\" }}\n\
             route_cache = {{ \"GET /nope\" = {{ ttl_s = 1 }}, \"GET /m\" = {{ ttl_s = 1 }}, \
             \"GET /live\" = {{ methods = [\"HEAD\"] }}, \"GET /x/{{id}}\" = {{ methods = [\"FETCH\"] }} }}\n"
        );
        let errs = parse(&bad).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for (i, want) in [
            "cache.ttl_s: expected 0..=3600, got 3601",
            "cache.capacity_mb: expected 1..=65536, got 0",
            "cache.key_query: \"a=b\" is not a query parameter name",
            "cache.key_headers: \"bad header\" is not a header name",
            "cache.statuses: expected 200..=599, got 101",
            "cache.unauthorized_strategy: expected",
            "cache.invalidation_token: expected visible ASCII",
            "route_cache: API a has no route \"GET /nope\"",
            "route_cache: route \"GET /m\" is not an http_proxy route",
            "HEAD is served from GET entries",
            "route_cache methods: \"FETCH\" is not a method",
        ]
        .iter()
        .enumerate()
        {
            // `cache` is on line 16, `route_cache` on line 17.
            let line = if i < 7 { "line 16," } else { "line 17," };
            assert!(
                text.iter().any(|e| e.starts_with(line) && e.contains(want)),
                "{want:?} not in {text:#?}"
            );
        }
        assert_eq!(text.len(), 11, "{text:#?}");
        let ws = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[api]]\nname = \"w\"\nprotocol = \"websocket\"\n\
                  [[api.route]]\nkey = \"$default\"\nintegration = { type = \"mock\", echo = true }\n\
                  [[api.stage]]\nname = \"p\"\ncache = { enabled = true }\n";
        one_error(ws, 11, "cache is for HTTP APIs");
    }

    #[test]
    fn throttles_parse_with_defaults_and_checks() {
        let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
        let c = ok(&format!(
            "{base}[account.throttle]\nrate = 2000\nburst = 1000\n[[api]]\nname = \"a\"\n\
             [[api.route]]\nkey = \"GET /x/{{id}}\"\nintegration = {{ type = \"mock\" }}\n\
             [[api.stage]]\nname = \"prod\"\nthrottle = {{ rate = 10, burst = 0 }}\n\
             route_throttle = {{ \"GET /x/{{id}}\" = {{ rate = 1, burst = 2 }} }}\n"
        ));
        assert_eq!(
            c.account.throttle,
            Some(Throttle {
                rate: 2000,
                burst: 1000
            })
        );
        assert_eq!(
            c.account.reconcile_tick_ms,
            crate::limits::RECONCILE_TICK_MS
        );
        let stage = &c.apis[0].stages[0];
        assert_eq!(stage.throttle, Some(Throttle { rate: 10, burst: 0 }));
        assert_eq!(
            stage.route_throttle,
            vec![("GET /x/{id}".to_string(), Throttle { rate: 1, burst: 2 })]
        );

        let c = ok(&format!(
            "{base}[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\nintegration = {{ type = \"mock\" }}\n"
        ));
        assert_eq!(
            c.account.throttle,
            Some(Throttle {
                rate: 10_000,
                burst: 5_000
            })
        );

        let bad = format!(
            "{base}[account.throttle]\nrate = -1\nburst = 5\n[[api]]\nname = \"a\"\n\
             [[api.route]]\nkey = \"GET /\"\nintegration = {{ type = \"mock\" }}\n\
             [[api.stage]]\nname = \"prod\"\nthrottle = {{ rate = 1 }}\n\
             route_throttle = {{ \"GET /nope\" = {{ rate = 1, burst = 1 }} }}\n"
        );
        let errs = parse(&bad).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.starts_with("line 4,")
                && e.contains("account.throttle.rate: expected 0..=1000000000, got -1")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("throttle: needs burst")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("route_throttle: API a has no route \"GET /nope\"")),
            "{text:?}"
        );
    }

    #[test]
    fn account_throttle_can_be_switched_off() {
        let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
        let api = "[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\nintegration = { type = \"mock\" }\n";
        let off = |throttle: &str| format!("{base}[account.throttle]\n{throttle}\n{api}");
        // Off: no rate or burst needed; written ones stay (to switch back with one key).
        assert_eq!(ok(&off("enabled = false")).account.throttle, None);
        assert_eq!(
            ok(&off("enabled = false\nrate = 5\nburst = 5"))
                .account
                .throttle,
            None
        );
        assert_eq!(
            ok(&off("enabled = true\nrate = 5\nburst = 6"))
                .account
                .throttle,
            Some(Throttle { rate: 5, burst: 6 })
        );
        // Switched off, a written rate is still checked; switched on, both are still required.
        one_error(
            &off("enabled = false\nrate = -1"),
            5,
            "account.throttle.rate: expected 0..=1000000000, got -1",
        );
        one_error(
            &off("enabled = true\nrate = 5"),
            3,
            "account.throttle: needs burst",
        );
        let errs = parse(&off("enabled = \"no\"")).unwrap_err();
        assert!(
            errs[0].to_string().contains("expected a boolean"),
            "{errs:?}"
        );
    }

    #[test]
    fn stages() {
        let s = |body: &str| format!("{}[[api.stage]]\n{body}", with_route("{ type = \"mock\" }"));
        one_error(&s("variables = {}\n"), 8, "stage needs a name");
        for bad in ["", "$prod", "a.b", &"s".repeat(129)] {
            one_error(
                &s(&format!("name = {bad:?}\n")),
                9,
                "name: expected \"$default\" or 1..=128",
            );
        }
        ok(&s(&format!("name = \"{}\"\n", "s".repeat(128))));
        ok(&s("name = \"$default\"\n"));
        one_error(
            &s("name = \"p\"\nvariables = { \"a-b\" = \"x\" }\n"),
            10,
            "stage variable name \"a-b\": expected letters, digits or '_'",
        );
        one_error(
            &s("name = \"p\"\nvariables = { a = 1 }\n"),
            10,
            "invalid type",
        );
        one_error(
            &s("name = \"p\"\n[[api.stage]]\nname = \"p\"\n"),
            11,
            "duplicate stage name p (first at line 9)",
        );
    }

    #[test]
    fn proxy_uris() {
        let p = |uri: &str| with_route(&format!("{{ type = \"http_proxy\", uri = {uri:?} }}"));
        for good in [
            "http://backend",
            "http://backend:9000",
            "HTTP://Backend.Local:1/",
            "http://10.0.0.1:65535/a/{id}?q=${request.path.id}",
            "http://[::1]:9000/x",
            "http://[::1]",
            "http://b/{id}/rest",
            "https://b",
            "HTTPS://b:8443/x",
        ] {
            ok(&p(good));
        }
        for (bad, want) in [
            (
                "ftp://b",
                "uri: expected http://host[:port]/path or https://..., got \"ftp://b\"",
            ),
            ("https://", "uri: no host"),
            ("b:80", "uri: expected http://"),
            ("{id}", "uri: expected http://"),
            ("http://", "uri: no host"),
            ("http:///x", "uri: no host"),
            (
                "http://{id}/x",
                "a path parameter ({id}) cannot be part of the host[:port]",
            ),
            (
                "http://b:{id}/x",
                "a path parameter ({id}) cannot be part of the host[:port]",
            ),
            ("http://user@b/x", "uri: invalid host in \"user@b\""),
            ("http://b_c", "uri: invalid host"),
            ("http://b?x=1", "uri: invalid host"),
            ("http://[::1/", "uri: invalid host"),
            ("http://[zz]:80/", "uri: invalid host"),
            ("http://b:0/", "uri: invalid port in \"b:0\""),
            ("http://b:65536/", "uri: invalid port"),
            ("http://b:/", "uri: invalid port"),
            ("http://b:+80/", "uri: invalid port"),
            ("http://[::1]x/", "uri: invalid port"),
            ("http://b/a b", "the path contains ' '"),
            ("http://b/a#f", "the path contains '#'"),
            ("http://b/é", "the path contains 'é'"),
            ("http://b/{proxy+}", "without '+'"),
            (
                "http://b/{nope}",
                "route GET /x/{id} has no path parameter {nope}",
            ),
        ] {
            one_error(&p(bad), 7, want);
        }
        one_error(
            &with_route("{ type = \"http_proxy\", uri = \"http://b\", timeout_ms = 0 }"),
            7,
            "timeout_ms: expected 1..=600000, got 0",
        );
        one_error(
            &with_route("{ type = \"http_proxy\", uri = \"http://b\", timeout_ms = 600001 }"),
            7,
            "got 600001",
        );
        let c = ok(&with_route(
            "{ type = \"http_proxy\", uri = \"http://b\", timeout_ms = 600000 }",
        ));
        assert!(matches!(
            api(&c).routes[0].integration,
            IntegrationConfig::HttpProxy {
                timeout_ms: 600_000,
                ..
            }
        ));
    }

    #[test]
    fn greedy_parameter_in_uri() {
        let text = format!(
            "{HEAD}[[api.route]]\nkey = \"ANY /files/{{proxy+}}\"\nintegration = {{ type = \"http_proxy\", uri = \"http://b:81/store/{{proxy}}\" }}\n"
        );
        let c = ok(&text);
        let IntegrationConfig::HttpProxy { uri, .. } = &api(&c).routes[0].integration else {
            panic!("not a proxy");
        };
        assert_eq!(uri.path_params().collect::<Vec<_>>(), ["proxy"]);
    }

    #[test]
    fn proxy_uri_checked_per_stage() {
        let stages = "[[api.stage]]\nname = \"prod\"\nvariables = { host = \"10.0.0.1:80\", path = \"v1\" }\n[[api.stage]]\nname = \"dev\"\nvariables = { host = \"bad host\", path = \"a b\" }\n";
        let text = format!(
            "{}{stages}",
            with_route(
                "{ type = \"http_proxy\", uri = \"http://${stageVariables.host}/${stageVariables.path}\" }"
            )
        );
        one_error(
            &text,
            7,
            "uri: invalid host in \"bad host\" (expected host[:port] with a DNS name, an IPv4 address or [IPv6]) (in stage dev, where the uri is \"http://bad host/a b\")",
        );
        // A whole URI in a stage variable.
        let stages = "[[api.stage]]\nname = \"prod\"\nvariables = { url = \"http://b/{x}\" }\n[[api.stage]]\nname = \"dev\"\nvariables = { url = \"gopher://b\" }\n";
        let text = format!(
            "{}{stages}",
            with_route("{ type = \"http_proxy\", uri = \"${stageVariables.url}\" }")
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        // Substituted text is literal: braces from a variable are not parameters.
        assert!(
            errs[0].2.contains("the path contains '{'") && errs[0].2.contains("in stage prod"),
            "{errs:#?}"
        );
        assert!(
            errs[1].2.starts_with("uri: expected http://") && errs[1].2.contains("in stage dev"),
            "{errs:#?}"
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = with_route("{ type = \"mock\", body = \"é\", status = 1 }");
        let errs = errors(&text);
        // 53 characters in; "é" is two bytes, so 54 bytes in.
        assert_eq!((errs[0].0, errs[0].1), (7, 53));
        let text = with_route("{ type = \"mock\", body = \"ééé\", status = 1 }");
        assert_eq!(errors(&text)[0].1, 55);
    }

    #[test]
    fn display() {
        let e = ConfigError {
            line: 3,
            col: 7,
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "line 3, column 7: m");
        let e = ConfigError {
            line: 0,
            col: 0,
            message: "cannot read".into(),
        };
        assert_eq!(e.to_string(), "cannot read");
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tollgate-config-{}-{name}", std::process::id()))
    }

    #[test]
    fn load_reads_files() {
        let path = temp_path("ok.toml");
        std::fs::write(&path, SCHEMA).unwrap();
        let c = load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.unwrap().apis[0].name, "shop");

        let errs = load(&temp_path("missing.toml")).unwrap_err();
        assert_eq!((errs.len(), errs[0].line, errs[0].col), (1, 0, 0));
        assert!(
            errs[0].message.starts_with("cannot read config file"),
            "{errs:?}"
        );

        let path = temp_path("big.toml");
        let f = File::create(&path).unwrap();
        f.set_len(CONFIG_BYTES_MAX + 1).unwrap(); // sparse: no 64 MiB written
        let errs = load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(errs, vec![too_large()]);

        let path = temp_path("latin1.toml");
        std::fs::write(&path, b"[server]\nlisten = [\"\xe9\"]\n").unwrap();
        let errs = load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            errs,
            vec![ConfigError {
                line: 2,
                col: 12,
                message: "the file is not valid UTF-8".into()
            }]
        );
    }

    // ---- websocket APIs ----

    /// A websocket API (lines 3..=5), then `rest`.
    fn ws(rest: &str) -> String {
        format!("{HEAD}protocol = \"websocket\"\n{rest}")
    }

    const ECHO: &str =
        "[[api.route]]\nkey = \"$default\"\nintegration = { type = \"mock\", echo = true }\n";

    #[test]
    fn websocket_api_parses() {
        let c = ok(r#"[server]
listen = ["127.0.0.1:8080"]
[[api]]
name = "chat"
protocol = "websocket"
route_selection = "$request.body.action"
subprotocols = ["v2.chat", "v1"]
frame_bytes_max = 65536
message_bytes_max = 1048576
idle_timeout_ms = 60000
connection_age_max_ms = 3600000
ping_interval_ms = 0
connection_throttle = { rate = 5, burst = 10 }
[[api.route]]
key = "$connect"
integration = { type = "http", uri = "http://127.0.0.1:9000/connect" }
[[api.route]]
key = "sendMessage"
integration = { type = "http", uri = "http://${stageVariables.b}/send", timeout_ms = 3000 }
return_response = true
[[api.route]]
key = "$default"
integration = { type = "mock", body = "{\"error\":\"unknown action\"}" }
[[api.route]]
key = "echo"
integration = { type = "mock", echo = true }
[[api.stage]]
name = "prod"
variables = { b = "127.0.0.1:9001" }
route_throttle = { sendMessage = { rate = 10, burst = 5 } }
"#);
        let a = api(&c);
        assert_eq!(a.protocol, Protocol::Websocket);
        let w = a.websocket.as_ref().unwrap();
        assert_eq!(
            *w,
            WebSocketSettings {
                route_selection: "$request.body.action".into(),
                subprotocols: vec!["v2.chat".into(), "v1".into()],
                frame_bytes_max: 65536,
                message_bytes_max: 1_048_576,
                idle_timeout_ms: 60_000,
                connection_age_max_ms: 3_600_000,
                ping_interval_ms: 0,
                connection_throttle: Some(Throttle { rate: 5, burst: 10 }),
            }
        );
        let keys: Vec<_> = a.routes.iter().map(|r| r.key_text.as_str()).collect();
        assert_eq!(keys, ["$connect", "sendMessage", "$default", "echo"]);
        assert!(a.routes.iter().all(|r| r.key == RouteKey::Default));
        assert!(
            matches!(a.routes[0].integration, IntegrationConfig::Http { timeout_ms, .. } if timeout_ms == INTEGRATION_TIMEOUT_MS)
        );
        assert!(matches!(
            a.routes[1].integration,
            IntegrationConfig::Http {
                timeout_ms: 3000,
                ..
            }
        ));
        assert!(a.routes[1].return_response && !a.routes[0].return_response);
        assert!(matches!(
            a.routes[2].integration,
            IntegrationConfig::Mock { status: 200, .. }
        ));
        assert_eq!(a.routes[3].integration, IntegrationConfig::Echo);
        assert_eq!(
            a.stages[0].route_throttle,
            vec![("sendMessage".to_string(), Throttle { rate: 10, burst: 5 })]
        );
    }

    #[test]
    fn websocket_defaults_are_amazons() {
        let c = ok(&ws(ECHO));
        let w = api(&c).websocket.clone().unwrap();
        assert_eq!(w.route_selection, "$request.body.action");
        assert!(w.subprotocols.is_empty());
        assert_eq!(
            (w.frame_bytes_max, w.message_bytes_max),
            (32 * 1024, 128 * 1024)
        );
        assert_eq!(w.idle_timeout_ms, 10 * 60 * 1000);
        assert_eq!(w.connection_age_max_ms, 2 * 60 * 60 * 1000);
        assert_eq!(w.ping_interval_ms, WS_PING_INTERVAL_MS);
        // An HTTP API has none.
        assert_eq!(api(&ok(&with_route("{ type = \"mock\" }"))).websocket, None);
    }

    #[test]
    fn websocket_api_errors() {
        one_error(
            &ws(&format!("route_selection = \"$request.header.x\"\n{ECHO}")),
            6,
            "route_selection: route selection expression \"$request.header.x\"",
        );
        one_error(
            &ws(&format!("frame_bytes_max = 0\n{ECHO}")),
            6,
            "frame_bytes_max: expected 1..=67108864, got 0",
        );
        one_error(
            &ws(&format!("idle_timeout_ms = 0\n{ECHO}")),
            6,
            "idle_timeout_ms: expected 1..=86400000",
        );
        one_error(
            &ws(&format!("ping_interval_ms = -1\n{ECHO}")),
            6,
            "ping_interval_ms: expected 0..=86400000",
        );
        one_error(
            &ws(&format!("subprotocols = [\"a b\"]\n{ECHO}")),
            6,
            "subprotocols: \"a b\" is not a token",
        );
        one_error(
            &ws(&format!("subprotocols = [\"a\", \"a\"]\n{ECHO}")),
            6,
            "subprotocols: a is listed twice",
        );
        let route = |key: &str, integration: &str, extra: &str| {
            ws(&format!(
                "[[api.route]]\nkey = {key:?}\nintegration = {integration}\n{extra}"
            ))
        };
        one_error(
            &route("$foo", "{ type = \"mock\" }", ""),
            7,
            "keys starting with '$' are reserved",
        );
        one_error(
            &route("", "{ type = \"mock\" }", ""),
            7,
            "expected 1..=128 characters",
        );
        one_error(
            &route("a\tb", "{ type = \"mock\" }", ""),
            7,
            "without control characters",
        );
        one_error(
            &ws(
                "[[api.route]]\nkey = \"a\"\nintegration = { type = \"mock\" }\n[[api.route]]\nkey = \"a\"\nintegration = { type = \"mock\" }\n",
            ),
            10,
            "duplicate route key a (first at line 7)",
        );
        one_error(
            &route("$connect", "{ type = \"mock\", echo = true }", ""),
            8,
            "echo: $connect and $disconnect have no message to echo",
        );
        one_error(
            &route("a", "{ type = \"mock\", echo = true, body = \"x\" }", ""),
            8,
            "echo = true sends the message back: it takes no status or body",
        );
        one_error(
            &route("a", "{ type = \"mock\", headers = { a = \"b\" } }", ""),
            8,
            "headers is not a field of a mock integration of a websocket API",
        );
        one_error(
            &route(
                "a",
                "{ type = \"mock\", body = \"${request.path.id}\" }",
                "",
            ),
            8,
            "a websocket route has no path parameters (found {id})",
        );
        one_error(
            &route("a", "{ type = \"http\", uri = \"http://b/{id}\" }", ""),
            8,
            "a websocket route has no path parameters (found {id})",
        );
        one_error(
            &route("a", "{ type = \"http\" }", ""),
            8,
            "integration needs a uri",
        );
        one_error(
            &route(
                "a",
                "{ type = \"http\", uri = \"http://b\", body = \"x\" }",
                "",
            ),
            8,
            "body is not a field of a http integration of a websocket API (it takes uri, timeout_ms)",
        );
        one_error(
            &route("a", "{ type = \"http_proxy\", uri = \"http://b\" }", ""),
            8,
            "a websocket route's integration is \"mock\" or \"http\"",
        );
        one_error(
            &route("a", "{ type = \"lambda\" }", ""),
            8,
            "type: expected \"mock\" or \"http\", got \"lambda\"",
        );
        one_error(
            &route(
                "$disconnect",
                "{ type = \"http\", uri = \"http://b\" }",
                "return_response = true\n",
            ),
            9,
            "return_response: $disconnect has no client message to answer",
        );
        one_error(
            &route("a", "{ type = \"mock\" }", "return_response = true\n"),
            9,
            "return_response is for http integrations",
        );
        one_error(
            &route("a", "{ type = \"mock\" }", "body_bytes_max = 5\n"),
            9,
            "body_bytes_max is for HTTP APIs",
        );
        one_error(
            &ws(&format!(
                "{ECHO}[[api.stage]]\nname = \"p\"\nroute_throttle = {{ nope = {{ rate = 1, burst = 1 }} }}\n"
            )),
            11,
            "route_throttle: API a has no route \"nope\"",
        );
    }

    #[test]
    fn websocket_keys_in_http_apis_are_refused() {
        one_error(
            &format!(
                "{HEAD}route_selection = \"$request.body.a\"\n[[api.route]]\nkey = \"GET /\"\nintegration = {{ type = \"mock\" }}\n"
            ),
            5,
            "route_selection is for websocket APIs",
        );
        one_error(
            &format!(
                "{HEAD}idle_timeout_ms = 5\n[[api.route]]\nkey = \"GET /\"\nintegration = {{ type = \"mock\" }}\n"
            ),
            5,
            "idle_timeout_ms is for websocket APIs",
        );
        one_error(
            &with_route("{ type = \"mock\", echo = true }"),
            7,
            "echo is for mock integrations of websocket APIs",
        );
        one_error(
            &with_route("{ type = \"http\", uri = \"http://b\" }"),
            7,
            "type \"http\" (the event JSON POSTed to a backend) is for websocket APIs",
        );
        one_error(
            &format!(
                "{}return_response = true\n",
                with_route("{ type = \"mock\" }")
            ),
            8,
            "return_response is for routes of websocket APIs",
        );
    }

    /// Lines of valid and invalid configs, to shuffle into mostly-parseable garbage.
    const LINES: &[&str] = &[
        "[server]",
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\"127.0.0.1:9901\", \"x\"]",
        "cores = 0",
        "[admin]",
        "listen = \"\"",
        "token = \" \"",
        "[[api]]",
        "name = \"a\"",
        "name = \"a b\"",
        "host = \"*.A.com\"",
        "base_path = \"/v1/../\"",
        "protocol = \"websocket\"",
        "[[api.route]]",
        "key = \"GET /a/{id}\"",
        "key = \"ANY /{p+}\"",
        "key = \"$default\"",
        "key = \"GET /{a}/{a}\"",
        "integration = { type = \"mock\", body = \"${request.path.id}${stageVariables.v}\" }",
        "integration = { type = \"http_proxy\", uri = \"http://${stageVariables.h}/{p}\" }",
        "integration = { type = \"http_proxy\", uri = \"http://{id}\", status = 1 }",
        "[api.route.integration]",
        "type = \"mock\"",
        "[api.route.integration.headers]",
        "\"X-A\" = \"${stageVariables.v}\"",
        "x-a = \"1\"",
        "[[api.stage]]",
        "name = \"$default\"",
        "variables = { v = \"\\r\\n\", h = \"b:80\" }",
        "variables = { h = \"[::1]:x\" }",
        "status = 101",
        "route_selection = \"$request.body.a\"",
        "integration = { type = \"mock\", echo = true }",
        "integration = { type = \"http\", uri = \"http://b/x\" }",
        "return_response = true",
        "key = \"sendMessage\"",
        "key = \"$connect\"",
        "frame_bytes_max = 0",
    ];

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_text(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_shuffled_lines(picks in prop::collection::vec(0..LINES.len(), 0..40)) {
            let text: String = picks.iter().map(|&i| format!("{}\n", LINES[i])).collect();
            if let Err(errs) = parse(&text) {
                // Every error is located in the text, in order.
                let lines = text.lines().count();
                prop_assert!(!errs.is_empty());
                for e in &errs {
                    prop_assert!((1..=lines.max(1)).contains(&e.line) && e.col >= 1, "{:?}", e);
                }
                prop_assert!(errs.windows(2).all(|w| (w[0].line, w[0].col) <= (w[1].line, w[1].col)));
            }
        }
    }
}

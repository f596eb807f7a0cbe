//! Validated `Config` → immutable `Snapshot`: router built, stage variables substituted into every
//! template per stage, path parameters resolved to indices, backend addresses resolved, metric
//! labels rendered. Runs on the control thread, never on a core; a core only reads the result.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::cache::{CacheConfig, RoutePolicy, StageId};
use crate::ratelimit::{Limit, LimitId, LimitTable, Nanos, Reconciler};
use crate::router::{ApiSpec, Params, RouteKey, Router};
use crate::telemetry::metrics::{route_labels, stage_labels};

use super::template::{Part, Template};
use super::{Config, ConfigError, IntegrationConfig, Protocol, ServerConfig, Throttle};

/// What every core serves from. Swapped whole on reload; never mutated.
#[derive(Debug)]
pub struct Snapshot {
    /// The config it was compiled from (listeners, limits, admin).
    pub config: Arc<Config>,
    pub router: Router,
    /// Indexed like the router's APIs (`Match::api`).
    pub apis: Vec<CompiledApi>,
    /// Metric label sets, indexed by `CompiledRoute::metric_id`; the last one is for requests
    /// that matched no route.
    pub route_labels: Vec<Arc<str>>,
    /// Increases by one per successful reload.
    pub generation: u64,
    /// Limit generations for the cores' limiter shards; filled by `attach_limits`.
    pub limit_table: LimitTable,
    /// One per `server.tls` listener, in config order (certificates loaded and checked).
    pub tls: Vec<Arc<rustls::ServerConfig>>,
    /// Every stage with at least one cached route: what each core's `CacheShard` is configured
    /// with, and the metric labels of its cache series.
    pub cache_stages: Vec<CacheStage>,
}

/// A stage whose responses may be cached.
#[derive(Debug)]
pub struct CacheStage {
    pub id: StageId,
    /// `api="..",stage=".."`, escaped for Prometheus.
    pub labels: Arc<str>,
    pub config: CacheConfig,
}

impl CacheStage {
    /// `(stage, per-core budget)` of every cached stage, for `CacheShard::configure`.
    pub fn budgets(stages: &[CacheStage], cores: usize) -> Vec<(StageId, u64)> {
        stages
            .iter()
            .map(|s| (s.id, s.config.core_budget_bytes(cores)))
            .collect()
    }
}

/// A cached route's policy and who may invalidate its entries.
#[derive(Debug)]
pub struct RouteCache {
    pub policy: RoutePolicy,
    /// `cache.invalidation_token` of the stage.
    pub invalidation_token: Option<Box<[u8]>>,
}

impl RouteCache {
    /// Whether the request's caller may invalidate this stage's cache (`Cache-Control:
    /// max-age=0`). For now: `Authorization: Bearer <invalidation_token>`. Authorizers will
    /// plug in here: a principal they allowed (`cache.invalidators`) answers `true` as well.
    pub fn authorizes(&self, headers: &[httparse::Header<'_>]) -> bool {
        let Some(token) = &self.invalidation_token else {
            return false;
        };
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
            .any(|h| {
                h.value
                    .strip_prefix(b"Bearer ")
                    .is_some_and(|v| constant_time_eq(v, token))
            })
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Snapshot {
    pub fn server(&self) -> &ServerConfig {
        &self.config.server
    }

    /// Registers every throttle of the snapshot with the control thread's reconciler (limits
    /// that did not change keep their buckets) and fills in the ids and table the cores use.
    pub fn attach_limits(&mut self, reconciler: &mut Reconciler, now: Nanos) {
        let mut limits: Vec<(String, Limit)> = Vec::new();
        for route in self
            .apis
            .iter()
            .flat_map(|a| &a.stages)
            .flat_map(|s| &s.routes)
        {
            for (key, t, _) in &route.throttles {
                limits.push((key.clone(), Limit::per_second(t.rate, t.burst)));
            }
            if let CompiledIntegration::WebSocket(ws) = &route.integration {
                for (key, t, _) in ws.routes.iter().flat_map(|r| &r.throttles) {
                    limits.push((key.clone(), Limit::per_second(t.rate, t.burst)));
                }
            }
        }
        limits.sort_by(|a, b| a.0.cmp(&b.0));
        limits.dedup_by(|a, b| a.0 == b.0);
        self.limit_table = reconciler.set_limits(limits, now);
        for api in &mut self.apis {
            for stage in &mut api.stages {
                for route in &mut stage.routes {
                    // Every key was just registered, so `id` finds it.
                    route.limit_ids = route
                        .throttles
                        .iter()
                        .filter_map(|(k, _, _)| reconciler.id(k))
                        .collect();
                    if let CompiledIntegration::WebSocket(ws) = &mut route.integration {
                        for r in ws.routes.iter_mut() {
                            r.limit_ids = r
                                .throttles
                                .iter()
                                .filter_map(|(k, _, _)| reconciler.id(k))
                                .collect();
                        }
                    }
                }
            }
        }
    }

    /// The metric id for requests no route matched.
    pub fn unmatched_metric_id(&self) -> usize {
        self.route_labels.len() - 1
    }
}

#[derive(Debug)]
pub struct CompiledApi {
    pub name: String,
    /// Indexed like `Match::stage`.
    pub stages: Vec<StageRoutes>,
}

/// One stage of an API: every route with the stage's variables applied.
#[derive(Debug)]
pub struct StageRoutes {
    pub name: String,
    /// Indexed like `Match::route`.
    pub routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
pub struct CompiledRoute {
    /// The route key as written, e.g. `GET /hello/{name}`.
    pub key: String,
    pub body_bytes_max: u64,
    pub metric_id: usize,
    pub integration: CompiledIntegration,
    /// The throttles that apply, in checking order (account, stage, route): limiter key, limit
    /// and scope (index into `metrics::THROTTLE_SCOPES`).
    pub throttles: Vec<(String, Throttle, u8)>,
    /// `throttles`' ids in the control thread's reconciler; filled by `attach_limits`.
    pub limit_ids: Vec<LimitId>,
    /// `Some` when the route's responses are cached (an `http_proxy` route with caching
    /// enabled by its stage or its `route_cache` entry, TTL above 0).
    pub cache: Option<Box<RouteCache>>,
}

#[derive(Debug)]
pub enum CompiledIntegration {
    Mock(MockResponse),
    HttpProxy(ProxyTarget),
    /// The one route of a websocket API's stage: a request routed here is an upgrade (its
    /// `$connect`); the stage's message routes are inside.
    WebSocket(Box<crate::websocket::api::WsStage>),
}

/// A mock integration's answer, with only path parameters left to fill per request.
#[derive(Debug)]
pub struct MockResponse {
    pub status: u16,
    /// Lower-case names; values rendered per request.
    pub headers: Vec<(Box<[u8]>, Rendered)>,
    pub body: Rendered,
    /// When nothing above depends on the request: the status line, the headers and the
    /// `content-length`, encoded once here instead of per request.
    pub head_static: Option<Box<[u8]>>,
}

impl MockResponse {
    pub fn new(status: u16, headers: Vec<(Box<[u8]>, Rendered)>, body: Rendered) -> Self {
        let mut m = MockResponse {
            status,
            headers,
            body,
            head_static: None,
        };
        m.head_static = m.encode_static_head();
        m
    }

    /// No body on the wire whatever the config says (RFC 9110 §6.4.1).
    pub fn bodiless(&self) -> bool {
        self.status == 204 || self.status == 304 || (100..200).contains(&self.status)
    }

    /// Headers the gateway writes itself; configured ones with these names are ignored.
    pub fn is_managed(name: &[u8]) -> bool {
        [
            &b"content-length"[..],
            b"transfer-encoding",
            b"connection",
            b"date",
            b"x-request-id",
        ]
        .iter()
        .any(|m| name.eq_ignore_ascii_case(m))
    }

    fn encode_static_head(&self) -> Option<Box<[u8]>> {
        let mut out = Vec::new();
        crate::http1::encode::status_line(&mut out, self.status);
        for (name, value) in &self.headers {
            if Self::is_managed(name) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_static()?);
            out.extend_from_slice(b"\r\n");
        }
        if !self.bodiless() {
            let len = self.body.as_static()?.len();
            crate::http1::encode::header_u64(&mut out, b"content-length", len as u64);
        }
        Some(out.into())
    }
}

/// An `http_proxy` integration's backend for one stage.
#[derive(Debug)]
pub struct ProxyTarget {
    /// Resolved once at compile time.
    pub addr: SocketAddr,
    /// `host[:port]` as written in the URI: the `Host` header sent to the backend.
    pub authority: Box<str>,
    /// The URI's path (starting with '/') with `{param}` holes.
    pub path: Rendered,
    /// A query string written in the URI (without '?'), sent before the client's.
    pub query: Option<Box<str>>,
    pub timeout_ms: u64,
    /// `https://` backends: the client config and server name.
    pub tls: Option<Arc<crate::net::tls::BackendTls>>,
    /// `upstream_protocol = "h2"`.
    pub h2: bool,
}

/// A template after stage-variable substitution: literal bytes and path-parameter holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    parts: Vec<RenderedPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RenderedPart {
    Literal(Box<[u8]>),
    /// Index into the route's parameters (`RouteKey::param_names` order).
    Param(usize),
}

impl Rendered {
    /// A template with no holes.
    pub fn literal(bytes: &[u8]) -> Rendered {
        Rendered {
            parts: vec![RenderedPart::Literal(bytes.into())],
        }
    }

    /// The bytes, when the template has no parameter holes.
    pub fn as_static(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [RenderedPart::Literal(l)] => Some(l),
            _ => None,
        }
    }

    /// Length of the rendered output for this request.
    pub fn len(&self, path: &str, params: &Params) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                RenderedPart::Literal(l) => l.len(),
                RenderedPart::Param(i) => params.get(path, *i).map_or(0, str::len),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends the rendered bytes to `out`. `path` is the path given to `Router::find`.
    pub fn render(&self, path: &str, params: &Params, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                RenderedPart::Literal(l) => out.extend_from_slice(l),
                RenderedPart::Param(i) => {
                    out.extend_from_slice(params.get(path, *i).unwrap_or("").as_bytes())
                }
            }
        }
    }
}

/// Builds the snapshot. Errors have no line (`line == 0`): they are about the config as a whole
/// (two APIs on one host and base path) or the world (a backend name that does not resolve).
pub fn compile(config: Config, generation: u64) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let specs: Vec<ApiSpec> = config
        .apis
        .iter()
        .map(|api| ApiSpec {
            host: api.host.clone(),
            base_path: api.base_path.clone(),
            stages: api.stages.iter().map(|s| s.name.clone()).collect(),
            // A websocket API's stage is one route (the upgrade); messages are routed later by
            // their route key.
            routes: if api.protocol == Protocol::Websocket {
                vec![RouteKey::Default]
            } else {
                api.routes.iter().map(|r| r.key.clone()).collect()
            },
        })
        .collect();
    let router = match Router::build(&specs) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(whole(e.0));
            None
        }
    };

    let mut route_labels = Vec::new();
    let mut cache_stages = Vec::new();
    let mut stage_ids: std::collections::HashMap<StageId, (&str, &str)> =
        std::collections::HashMap::new();
    let mut apis = Vec::with_capacity(config.apis.len());
    for api in &config.apis {
        let mut stages = Vec::with_capacity(api.stages.len());
        for stage in &api.stages {
            if api.protocol == Protocol::Websocket {
                match crate::websocket::api::compile_stage(&config, api, stage, &mut route_labels) {
                    Ok(ws) => {
                        route_labels.push(route_labels_for(&api.name, &stage.name, "$connect"));
                        stages.push(StageRoutes {
                            name: stage.name.clone(),
                            routes: vec![CompiledRoute {
                                key: "$connect".to_string(),
                                body_bytes_max: 0,
                                metric_id: route_labels.len() - 1,
                                integration: CompiledIntegration::WebSocket(Box::new(ws)),
                                // Upgrades count against the account and stage limits (and a
                                // `route_throttle` on "$connect"), as requests do.
                                throttles: route_throttles(&config, api, stage, "$connect"),
                                limit_ids: Vec::new(),
                                cache: None,
                            }],
                        });
                    }
                    Err(es) => errors.extend(
                        es.into_iter()
                            .map(|e| whole(format!("api {} stage {}: {e}", api.name, stage.name))),
                    ),
                }
                continue;
            }
            let stage_id = StageId::new(&api.name, &stage.name);
            if let Some(other) = stage_ids.insert(stage_id, (&api.name, &stage.name)) {
                // A 64-bit collision: improbable, but two stages must never share entries.
                errors.push(whole(format!(
                    "api {} stage {} and api {} stage {} have the same cache id; rename one",
                    other.0, other.1, api.name, stage.name
                )));
            }
            let mut stage_cached = false;
            let mut routes = Vec::with_capacity(api.routes.len());
            for route in &api.routes {
                let names = route.key.param_names();
                let where_ = format!(
                    "api {} stage {} route {}",
                    api.name, stage.name, route.key_text
                );
                let integration = match &route.integration {
                    IntegrationConfig::Mock {
                        status,
                        headers,
                        body,
                    } => {
                        let mut hs = Vec::with_capacity(headers.len());
                        for (name, value) in headers {
                            match resolve(value, &stage.variables, &names) {
                                Ok(v) => hs.push((name.as_bytes().into(), v)),
                                Err(e) => {
                                    errors.push(whole(format!("{where_}: header {name}: {e}")))
                                }
                            }
                        }
                        match resolve(body, &stage.variables, &names) {
                            Ok(body) => Some(CompiledIntegration::Mock(MockResponse::new(
                                *status, hs, body,
                            ))),
                            Err(e) => {
                                errors.push(whole(format!("{where_}: body: {e}")));
                                None
                            }
                        }
                    }
                    IntegrationConfig::HttpProxy {
                        uri,
                        timeout_ms,
                        ca,
                        protocol,
                    } => {
                        let how = BackendHow {
                            timeout_ms: *timeout_ms,
                            ca: ca.as_deref(),
                            h2: *protocol == super::UpstreamProtocol::H2,
                        };
                        match proxy_target(uri, &stage.variables, &names, &how) {
                            Ok(t) => Some(CompiledIntegration::HttpProxy(t)),
                            Err(e) => {
                                errors.push(whole(format!("{where_}: uri: {e}")));
                                None
                            }
                        }
                    }
                    // `load` refuses these outside websocket APIs.
                    IntegrationConfig::Echo | IntegrationConfig::Http { .. } => {
                        errors.push(whole(format!(
                            "{where_}: this integration is for websocket APIs"
                        )));
                        None
                    }
                };
                let Some(integration) = integration else {
                    continue;
                };
                route_labels.push(route_labels_for(&api.name, &stage.name, &route.key_text));
                let throttles = route_throttles(&config, api, stage, &route.key_text);
                let cache = match integration {
                    CompiledIntegration::HttpProxy(_) => route_cache(stage_id, stage, route),
                    _ => None,
                };
                stage_cached |= cache.is_some();
                routes.push(CompiledRoute {
                    key: route.key_text.clone(),
                    body_bytes_max: route.body_bytes_max.unwrap_or(config.server.body_bytes_max),
                    metric_id: route_labels.len() - 1,
                    integration,
                    throttles,
                    limit_ids: Vec::new(),
                    cache,
                });
            }
            if stage_cached {
                cache_stages.push(CacheStage {
                    id: stage_id,
                    labels: stage_labels(&api.name, &stage.name),
                    config: stage.cache.clone(),
                });
            }
            stages.push(StageRoutes {
                name: stage.name.clone(),
                routes,
            });
        }
        apis.push(CompiledApi {
            name: api.name.clone(),
            stages,
        });
    }
    route_labels.push(route_labels_for("", "", ""));
    let tls = tls_listeners(&config, &mut errors);

    match router {
        Some(router) if errors.is_empty() => Ok(Snapshot {
            config: Arc::new(config),
            router,
            apis,
            route_labels,
            generation,
            limit_table: LimitTable::default(),
            tls,
            cache_stages,
        }),
        _ => Err(errors),
    }
}

/// The throttles a route passes, in checking order: account (unless switched off), stage, route.
pub(crate) fn route_throttles(
    config: &Config,
    api: &super::ApiConfig,
    stage: &super::StageConfig,
    route_key: &str,
) -> Vec<(String, Throttle, u8)> {
    let mut throttles = Vec::new();
    if let Some(t) = config.account.throttle {
        throttles.push(("account".to_string(), t, 0u8));
    }
    if let Some(t) = stage.throttle {
        throttles.push((format!("stage:{}/{}", api.name, stage.name), t, 1));
    }
    if let Some((_, t)) = stage.route_throttle.iter().find(|(k, _)| k == route_key) {
        throttles.push((
            format!("route:{}/{}/{}", api.name, stage.name, route_key),
            *t,
            2,
        ));
    }
    throttles
}

/// The cache policy of an `http_proxy` route: the stage's settings with the route's
/// `route_cache` entry applied; `None` when that leaves caching off.
fn route_cache(
    stage_id: StageId,
    stage: &super::StageConfig,
    route: &super::RouteConfig,
) -> Option<Box<RouteCache>> {
    let over = stage
        .route_cache
        .iter()
        .find(|(k, _)| *k == route.key_text)
        .map(|(_, o)| o);
    let policy = RoutePolicy::resolve(stage_id, &stage.cache, over);
    policy.enabled.then(|| {
        Box::new(RouteCache {
            policy,
            invalidation_token: stage
                .cache_invalidation_token
                .as_ref()
                .map(|t| t.as_bytes().into()),
        })
    })
}

/// Each TLS listener's rustls config; certificate and key files are read here, so a broken one
/// refuses the whole config (at start, or a reload: the old config keeps serving).
fn tls_listeners(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<Arc<rustls::ServerConfig>> {
    let mut out = Vec::with_capacity(config.server.tls.len());
    for l in &config.server.tls {
        match crate::net::tls::server_config(l) {
            Ok(c) => out.push(c),
            Err(e) => {
                let addrs: Vec<String> = l.listen.iter().map(|a| a.to_string()).collect();
                errors.push(whole(format!(
                    "server.tls listener {}: {e}",
                    addrs.join(", ")
                )));
            }
        }
    }
    out
}

/// How an `http_proxy` integration talks to its backend, besides the URI.
pub(crate) struct BackendHow<'a> {
    pub timeout_ms: u64,
    pub ca: Option<&'a std::path::Path>,
    pub h2: bool,
}

pub(crate) fn route_labels_for(api: &str, stage: &str, route: &str) -> Arc<str> {
    route_labels(api, stage, route)
}

fn whole(message: String) -> ConfigError {
    ConfigError {
        line: 0,
        col: 0,
        message,
    }
}

/// Substitutes stage variables and turns path-parameter names into indices.
pub(crate) fn resolve(
    t: &Template,
    vars: &std::collections::BTreeMap<String, String>,
    names: &[&str],
) -> Result<Rendered, String> {
    let t = t.substitute_stage_vars(vars);
    let mut parts: Vec<RenderedPart> = Vec::with_capacity(t.parts.len());
    for p in &t.parts {
        match p {
            Part::Literal(l) => match parts.last_mut() {
                Some(RenderedPart::Literal(prev)) => {
                    let mut v = prev.to_vec();
                    v.extend_from_slice(l.as_bytes());
                    *prev = v.into();
                }
                _ => parts.push(RenderedPart::Literal(l.as_bytes().into())),
            },
            Part::PathParam(name) => {
                let i = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| format!("the route has no path parameter {{{name}}}"))?;
                parts.push(RenderedPart::Param(i));
            }
            Part::StageVar(name) => return Err(format!("stage variable {name} is not defined")),
        }
    }
    Ok(Rendered { parts })
}

/// Splits a substituted proxy URI into a resolved address, authority, path template and query.
pub(crate) fn proxy_target(
    uri: &Template,
    vars: &std::collections::BTreeMap<String, String>,
    names: &[&str],
    how: &BackendHow<'_>,
) -> Result<ProxyTarget, String> {
    let full = resolve(uri, vars, names)?;
    // The scheme and authority must be literal once stage variables are in.
    let head: &[u8] = match full.parts.first() {
        Some(RenderedPart::Literal(l)) => l,
        _ => return Err("the URI must start with http://host".into()),
    };
    let https = head.len() >= 8 && head[..8].eq_ignore_ascii_case(b"https://");
    let rest = if https {
        &head[8..]
    } else if head.len() >= 7 && head[..7].eq_ignore_ascii_case(b"http://") {
        &head[7..]
    } else {
        return Err("only http:// and https:// backends are supported".to_string());
    };
    let auth_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    if auth_end == rest.len() && full.parts.len() > 1 {
        return Err("a path parameter cannot be part of the backend's host or port".into());
    }
    let authority = std::str::from_utf8(&rest[..auth_end])
        .map_err(|_| "the backend's host is not UTF-8".to_string())?;
    if authority.is_empty() {
        return Err("the URI has no host".into());
    }
    let addr = resolve_authority(authority, if https { 443 } else { 80 })?;
    let tls = if https {
        let host = host_of(authority);
        let tls = crate::net::tls::backend_tls(host, how.ca, how.h2)?;
        Some(Arc::new(tls))
    } else {
        None
    };

    // Everything after the authority: path (with holes) and an optional literal query.
    let mut tail = full.clone();
    tail.parts[0] = RenderedPart::Literal(rest[auth_end..].into());
    let mut path = Rendered { parts: Vec::new() };
    let mut query = None;
    for p in tail.parts {
        match p {
            RenderedPart::Literal(l) if query.is_none() && l.contains(&b'?') => {
                let q = l.iter().position(|&b| b == b'?').unwrap_or(l.len());
                if q > 0 {
                    path.parts.push(RenderedPart::Literal(l[..q].into()));
                }
                query = Some(String::from_utf8_lossy(&l[q + 1..]).into_owned());
            }
            p if query.is_some() => {
                // Only literal text may follow '?'.
                match p {
                    RenderedPart::Literal(l) => {
                        if let Some(q) = query.as_mut() {
                            q.push_str(&String::from_utf8_lossy(&l));
                        }
                    }
                    RenderedPart::Param(_) => {
                        return Err("path parameters are not supported in the URI's query".into());
                    }
                }
            }
            RenderedPart::Literal(l) if l.is_empty() => {}
            p => path.parts.push(p),
        }
    }
    match path.parts.first() {
        Some(RenderedPart::Literal(l)) if l.starts_with(b"/") => {}
        None => path.parts.push(RenderedPart::Literal(b"/"[..].into())),
        _ => path.parts.insert(0, RenderedPart::Literal(b"/"[..].into())),
    }
    Ok(ProxyTarget {
        addr,
        authority: authority.into(),
        path,
        query: query.filter(|q| !q.is_empty()).map(Into::into),
        timeout_ms: how.timeout_ms,
        tls,
        h2: how.h2,
    })
}

/// The host of `host[:port]` (IPv6 keeps its brackets).
fn host_of(authority: &str) -> &str {
    if has_port(authority) {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    } else {
        authority
    }
}

fn resolve_authority(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let with_port = if has_port(authority) {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve backend {authority}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("backend {authority} resolved to no address"))
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_compile(text: &str) -> Snapshot {
        let config = super::super::parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        compile(config, 1).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\n";

    #[test]
    fn proxy_uri_splits_into_address_path_and_query() {
        let snap = parse_compile(&format!(
            "{BASE}[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"ANY /o/{{id}}/{{proxy+}}\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://${{stageVariables.b}}/x/{{id}}/y/{{proxy}}?k=v\" }}\n\
             [[api.stage]]\nname = \"prod\"\nvariables = {{ b = \"127.0.0.1:9000\" }}\n"
        ));
        let CompiledIntegration::HttpProxy(t) = &snap.apis[0].stages[0].routes[0].integration
        else {
            panic!("not a proxy")
        };
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(&*t.authority, "127.0.0.1:9000");
        assert_eq!(t.query.as_deref(), Some("k=v"));
        let path = "/o/7/a/b";
        let mut params = Params::default();
        params.push(3, 4);
        params.push(5, 8);
        let mut out = Vec::new();
        t.path.render(path, &params, &mut out);
        assert_eq!(out, b"/x/7/y/a/b");
        assert_eq!(t.path.len(path, &params), out.len());
    }

    #[test]
    fn a_switched_off_account_limit_leaves_stage_and_route_limits() {
        let api = "[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /x\"\nintegration = { type = \"mock\" }\n\
                   [[api.route]]\nkey = \"GET /y\"\nintegration = { type = \"mock\" }\n\
                   [[api.stage]]\nname = \"p\"\nthrottle = { rate = 7, burst = 8 }\n\
                   route_throttle = { \"GET /x\" = { rate = 1, burst = 2 } }\n";
        let scopes = |snap: &Snapshot| -> Vec<Vec<(String, u8)>> {
            snap.apis[0].stages[0]
                .routes
                .iter()
                .map(|r| {
                    r.throttles
                        .iter()
                        .map(|(k, _, s)| (k.clone(), *s))
                        .collect()
                })
                .collect()
        };
        let on = parse_compile(&format!("{BASE}{api}"));
        let off = parse_compile(&format!("{BASE}[account.throttle]\nenabled = false\n{api}"));
        let (account, stage, route) = (
            ("account".to_string(), 0),
            ("stage:a/p".to_string(), 1),
            ("route:a/p/GET /x".to_string(), 2),
        );
        assert_eq!(
            scopes(&on),
            [
                vec![account.clone(), stage.clone(), route.clone()],
                vec![account, stage.clone()]
            ]
        );
        assert_eq!(scopes(&off), [vec![stage.clone(), route], vec![stage]]);
        // With nothing else limiting it, a route has no throttle to check at all.
        let bare = parse_compile(&format!(
            "{BASE}[account.throttle]\nenabled = false\n\
             [[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /x\"\nintegration = {{ type = \"mock\" }}\n"
        ));
        assert!(bare.apis[0].stages[0].routes[0].throttles.is_empty());
    }

    #[test]
    fn proxy_without_path_gets_root() {
        let snap = parse_compile(&format!(
            "{BASE}[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://localhost:9\" }}\n"
        ));
        let CompiledIntegration::HttpProxy(t) = &snap.apis[0].stages[0].routes[0].integration
        else {
            panic!("not a proxy")
        };
        assert_eq!(t.path.as_static(), Some(&b"/"[..]));
        assert_eq!(t.addr.port(), 9);
    }

    #[test]
    fn mock_templates_resolve_params_and_stage_vars() {
        let snap = parse_compile(&format!(
            "{BASE}[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /hello/{{name}}\"\n\
             integration = {{ type = \"mock\", body = \"hi ${{request.path.name}} from ${{stageVariables.who}}\" }}\n\
             [[api.stage]]\nname = \"$default\"\nvariables = {{ who = \"tg\" }}\n"
        ));
        let CompiledIntegration::Mock(m) = &snap.apis[0].stages[0].routes[0].integration else {
            panic!("not a mock")
        };
        let mut params = Params::default();
        params.push(7, 10);
        let mut out = Vec::new();
        m.body.render("/hello/bob", &params, &mut out);
        assert_eq!(out, b"hi bob from tg");
        assert_eq!(m.status, 200);
        assert_eq!(snap.route_labels.len(), 2);
        assert_eq!(snap.unmatched_metric_id(), 1);
    }

    #[test]
    fn cache_policies_compile_per_route_and_stage() {
        let snap = parse_compile(&format!(
            "{BASE}[[api]]\nname = \"a\"\n\
             [[api.route]]\nkey = \"GET /x\"\nintegration = {{ type = \"http_proxy\", uri = \"http://127.0.0.1:9/x\" }}\n\
             [[api.route]]\nkey = \"GET /live\"\nintegration = {{ type = \"http_proxy\", uri = \"http://127.0.0.1:9/l\" }}\n\
             [[api.route]]\nkey = \"GET /m\"\nintegration = {{ type = \"mock\" }}\n\
             [[api.stage]]\nname = \"on\"\n\
             cache = {{ enabled = true, capacity_mb = 8, invalidation_token = \"t\" }}\n\
             route_cache = {{ \"GET /x\" = {{ ttl_s = 30 }}, \"GET /live\" = {{ enabled = false }} }}\n\
             [[api.stage]]\nname = \"off\"\n\
             [[api.stage]]\nname = \"one\"\nroute_cache = {{ \"GET /x\" = {{ enabled = true }} }}\n"
        ));
        let routes = |stage: usize| &snap.apis[0].stages[stage].routes;
        let on = routes(0);
        let x = on[0].cache.as_ref().expect("GET /x is cached");
        assert_eq!(x.policy.ttl, std::time::Duration::from_secs(30));
        assert_eq!(x.policy.stage, StageId::new("a", "on"));
        assert_eq!(x.invalidation_token.as_deref(), Some(&b"t"[..]));
        assert!(on[1].cache.is_none(), "route_cache enabled = false");
        assert!(on[2].cache.is_none(), "mock routes are never cached");
        assert!(routes(1).iter().all(|r| r.cache.is_none()));
        assert!(routes(2)[0].cache.is_some(), "a route may opt in alone");
        let ids: Vec<StageId> = snap.cache_stages.iter().map(|s| s.id).collect();
        assert_eq!(ids, [StageId::new("a", "on"), StageId::new("a", "one")]);
        assert_eq!(&*snap.cache_stages[0].labels, "api=\"a\",stage=\"on\"");
        assert_eq!(
            CacheStage::budgets(&snap.cache_stages, 2)[0],
            (StageId::new("a", "on"), 4 * 1024 * 1024)
        );
        let h = |name, value: &'static str| httparse::Header {
            name,
            value: value.as_bytes(),
        };
        assert!(x.authorizes(&[h("Authorization", "Bearer t")]));
        assert!(!x.authorizes(&[h("authorization", "Bearer x")]));
        assert!(!x.authorizes(&[h("authorization", "t")]));
        assert!(
            !routes(2)[0]
                .cache
                .as_ref()
                .unwrap()
                .authorizes(&[h("authorization", "Bearer t")])
        );
    }

    #[test]
    fn unresolvable_backend_is_an_error() {
        let config = super::super::parse(&format!(
            "{BASE}[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://no-such-host.invalid/\" }}\n"
        ))
        .unwrap();
        let errs = compile(config, 1).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("cannot resolve backend no-such-host.invalid"),
            "{errs:?}"
        );
    }
}

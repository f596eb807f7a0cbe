//! Cache policy as pure functions: the stage config and route overrides, whether a response may
//! be stored and for how long (`cacheability`), and what a client's `Cache-Control: max-age=0`
//! does (`invalidation`). No state, no I/O.
//!
//! Decisions where Amazon API Gateway and HTTP caching differ:
//! - **TTL is the configured TTL.** A backend's `max-age`/`s-maxage`/`Expires` are ignored, as
//!   API Gateway does; the operator's TTL is the contract.
//! - **A backend can still veto storing:** `Cache-Control: no-store`, `private` or `no-cache` (we
//!   never revalidate, so storing a `no-cache` response would serve it unrevalidated), `Vary: *`,
//!   or any `Set-Cookie`. API Gateway ignores these; a gateway must not leak one user's cookie.
//! - **Only the listed parts vary the key.** Other `Vary` headers are ignored; if responses depend
//!   on `Authorization` or a cookie, list that header in `key_headers` (or do not cache the route).

use std::time::Duration;

use crate::router::Method;

use super::key::{CacheKey, KeyBuf, KeyRequest, KeySpec, StageId};
use super::{
    CACHE_CAPACITY_MB_DEFAULT, CACHE_CAPACITY_MB_MAX, CACHE_ENTRY_BYTES_MAX, CACHE_TTL_S_DEFAULT,
    CACHE_TTL_S_MAX,
};

/// `[api.stage.cache]` as loaded (the lead's config loader fills it and reports errors with
/// lines; `validate` says what is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub enabled: bool,
    /// 0..=3600; 0 disables caching.
    pub ttl_s: u32,
    /// The stage's memory bound for cached responses, all cores together.
    pub capacity_mb: u32,
    pub key_query: Vec<String>,
    pub key_headers: Vec<String>,
    /// Only callers authorized to invalidate may use `Cache-Control: max-age=0`.
    pub require_authorization: bool,
    pub unauthorized_strategy: UnauthorizedStrategy,
    /// Statuses that are stored; default `[200]`.
    pub statuses: Vec<u16>,
}

/// What an unauthorized `Cache-Control: max-age=0` gets (API Gateway's
/// `unauthorizedCacheControlHeaderStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthorizedStrategy {
    /// `fail_with_403`: answer 403 `{"message":"Forbidden"}`.
    FailWith403,
    /// `succeed_with_response_header` (API Gateway's default): ignore the directive, serve as
    /// usual and add `INVALIDATION_IGNORED_HEADER`.
    SucceedWithResponseHeader,
    /// `succeed_without_response_header`: ignore the directive silently.
    SucceedWithoutResponseHeader,
}

impl UnauthorizedStrategy {
    pub fn from_config(s: &str) -> Option<UnauthorizedStrategy> {
        Some(match s {
            "fail_with_403" => UnauthorizedStrategy::FailWith403,
            "succeed_with_response_header" => UnauthorizedStrategy::SucceedWithResponseHeader,
            "succeed_without_response_header" => UnauthorizedStrategy::SucceedWithoutResponseHeader,
            _ => return None,
        })
    }
}

/// One entry of `route_cache = { "GET /hello/{name}" = { ttl_s = 30 } }`: what a route changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCacheOverride {
    pub enabled: Option<bool>,
    pub ttl_s: Option<u32>,
    /// Methods whose responses are cached. Default `[GET]`; HEAD is answered from GET entries
    /// whenever GET is cached and is never listed itself.
    pub methods: Option<Vec<Method>>,
    pub key_query: Option<Vec<String>>,
    pub key_headers: Option<Vec<String>>,
    pub statuses: Option<Vec<u16>>,
}

/// The header added by `SucceedWithResponseHeader` when a client's invalidation is ignored.
pub const INVALIDATION_IGNORED_HEADER: (&str, &str) = (
    "warning",
    "199 tollgate \"cache invalidation not authorized; served from cache\"",
);

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl_s: CACHE_TTL_S_DEFAULT,
            capacity_mb: CACHE_CAPACITY_MB_DEFAULT,
            key_query: Vec::new(),
            key_headers: Vec::new(),
            require_authorization: true,
            unauthorized_strategy: UnauthorizedStrategy::SucceedWithResponseHeader,
            statuses: vec![200],
        }
    }
}

impl CacheConfig {
    /// What is wrong with the stage's cache settings, for `tollgate validate`.
    pub fn validate(&self) -> Result<(), String> {
        check_ttl(self.ttl_s)?;
        if self.capacity_mb == 0 || self.capacity_mb > CACHE_CAPACITY_MB_MAX {
            return Err(format!(
                "cache.capacity_mb must be 1..={CACHE_CAPACITY_MB_MAX}, not {}",
                self.capacity_mb
            ));
        }
        check_key_parts(&self.key_query, &self.key_headers)?;
        check_statuses(&self.statuses)
    }

    /// This stage's budget on each of `cores` cores. The bound is split, not shared: an entry
    /// every core holds is charged on every core, so the stage's distinct cached content is at
    /// most `capacity / cores` while the memory held is at most `capacity`.
    pub fn core_budget_bytes(&self, cores: usize) -> u64 {
        u64::from(self.capacity_mb) * 1024 * 1024 / cores.max(1) as u64
    }
}

impl RouteCacheOverride {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ttl) = self.ttl_s {
            check_ttl(ttl)?;
        }
        let methods = self.methods.as_deref().unwrap_or(&[]);
        if methods
            .iter()
            .any(|m| matches!(m, Method::Head | Method::Any))
        {
            return Err(
                "route_cache methods: HEAD is served from GET entries and ANY is not a method; list concrete methods such as \"GET\""
                    .into(),
            );
        }
        check_key_parts(
            self.key_query.as_deref().unwrap_or(&[]),
            self.key_headers.as_deref().unwrap_or(&[]),
        )?;
        match &self.statuses {
            Some(s) => check_statuses(s),
            None => Ok(()),
        }
    }
}

fn check_ttl(ttl_s: u32) -> Result<(), String> {
    if ttl_s > CACHE_TTL_S_MAX {
        return Err(format!(
            "cache ttl_s must be 0..={CACHE_TTL_S_MAX} (0 disables caching), not {ttl_s}"
        ));
    }
    Ok(())
}

fn check_key_parts(query: &[String], headers: &[String]) -> Result<(), String> {
    for q in query {
        if q.is_empty()
            || q.bytes()
                .any(|b| b <= b' ' || b == b'&' || b == b'=' || b >= 0x7f)
        {
            return Err(format!(
                "cache key_query {q:?} is not a query parameter name"
            ));
        }
    }
    for h in headers {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(format!("cache key_headers {h:?} is not a header name"));
        }
    }
    Ok(())
}

fn check_statuses(statuses: &[u16]) -> Result<(), String> {
    match statuses.iter().find(|s| !(200..=599).contains(*s)) {
        Some(s) => Err(format!(
            "cache statuses: {s} is not a final status (200..=599)"
        )),
        None => Ok(()),
    }
}

/// A route's effective cache settings: the stage's, with the route's override applied.
/// Compiled once per snapshot; read on every request of the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    pub stage: StageId,
    /// Enabled and TTL > 0.
    pub enabled: bool,
    pub ttl: Duration,
    /// Bit per `Method as u8` of the methods whose responses are cached.
    methods: u8,
    pub key: KeySpec,
    pub require_authorization: bool,
    pub unauthorized: UnauthorizedStrategy,
    pub statuses: Box<[u16]>,
}

impl RoutePolicy {
    pub fn resolve(stage: StageId, cfg: &CacheConfig, over: Option<&RouteCacheOverride>) -> Self {
        let o = over.cloned().unwrap_or_default();
        let ttl_s = o.ttl_s.unwrap_or(cfg.ttl_s);
        let methods = o
            .methods
            .as_deref()
            .unwrap_or(&[Method::Get])
            .iter()
            .fold(0u8, |acc, m| acc | 1 << (*m as u8));
        RoutePolicy {
            stage,
            enabled: o.enabled.unwrap_or(cfg.enabled) && ttl_s > 0,
            ttl: Duration::from_secs(u64::from(ttl_s)),
            methods,
            key: KeySpec::new(
                o.key_query.as_deref().unwrap_or(&cfg.key_query),
                o.key_headers.as_deref().unwrap_or(&cfg.key_headers),
            ),
            require_authorization: cfg.require_authorization,
            unauthorized: cfg.unauthorized_strategy,
            statuses: o.statuses.unwrap_or_else(|| cfg.statuses.clone()).into(),
        }
    }

    /// A route that never caches.
    pub fn disabled(stage: StageId) -> Self {
        RoutePolicy::resolve(stage, &CacheConfig::default(), None)
    }

    /// The method whose entries answer a request of `method`: itself when it is cached, GET for
    /// HEAD when GET is cached, `None` when the request bypasses the cache.
    pub fn lookup_method(&self, method: Method) -> Option<Method> {
        let m = if method == Method::Head {
            Method::Get
        } else {
            method
        };
        (self.enabled && self.methods & (1 << (m as u8)) != 0).then_some(m)
    }

    /// Builds the key of a request with this route's key spec. `method` is the request's;
    /// `None` when the request bypasses the cache.
    pub fn key<'k>(
        &self,
        buf: &'k mut KeyBuf,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &[httparse::Header<'_>],
    ) -> Option<CacheKey<'k>> {
        let method = self.lookup_method(method)?;
        let req = KeyRequest {
            stage: self.stage,
            method,
            path,
            query,
            headers,
        };
        self.key.build(buf, &req)
    }
}

/// Whether a backend response may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheability {
    Store { ttl: Duration },
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Caching is off for the route, its TTL is 0, or the method is not cached.
    Disabled,
    Status,
    /// `Cache-Control: no-store`, `private` or `no-cache`, or `Vary: *`.
    BackendDirective,
    SetCookie,
    /// `Content-Length` above `CACHE_ENTRY_BYTES_MAX`: stream it, do not store it.
    TooLarge,
}

/// Whether the response to a request of `method` may be stored, and for how long.
/// `content_length` is the response's, when it announced one.
pub fn cacheability(
    policy: &RoutePolicy,
    method: Method,
    status: u16,
    headers: &[httparse::Header<'_>],
    content_length: Option<u64>,
) -> Cacheability {
    if method == Method::Head || policy.lookup_method(method).is_none() {
        // A HEAD response has no body to answer a GET with.
        return Cacheability::Skip(SkipReason::Disabled);
    }
    if !policy.statuses.contains(&status) {
        return Cacheability::Skip(SkipReason::Status);
    }
    if content_length.is_some_and(|n| n > CACHE_ENTRY_BYTES_MAX as u64) {
        return Cacheability::Skip(SkipReason::TooLarge);
    }
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("set-cookie") {
            return Cacheability::Skip(SkipReason::SetCookie);
        }
        let veto = if name.eq_ignore_ascii_case("cache-control") {
            directives(h.value).any(|(d, _)| {
                ["no-store", "private", "no-cache"]
                    .iter()
                    .any(|v| d.eq_ignore_ascii_case(v.as_bytes()))
            })
        } else if name.eq_ignore_ascii_case("vary") {
            directives(h.value).any(|(d, _)| d == b"*")
        } else {
            false
        };
        if veto {
            return Cacheability::Skip(SkipReason::BackendDirective);
        }
    }
    Cacheability::Store { ttl: policy.ttl }
}

/// Whether a backend response header is stored for replay. Framing, connection and
/// per-response headers are written fresh by the response path for every hit.
pub fn replay_header(name: &str) -> bool {
    const FRESH: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "date",
        "x-request-id",
        "x-cache",
    ];
    !FRESH.iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Whether the request carries `Cache-Control: max-age=0`, a client's request to refetch.
pub fn wants_refresh(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
        .flat_map(|h| directives(h.value))
        .any(|(d, v)| {
            d.eq_ignore_ascii_case(b"max-age") && {
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                !v.is_empty() && v.iter().all(|&b| b == b'0')
            }
        })
}

/// What a request's invalidation directive does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// No directive (or caching is off): look up as usual.
    None,
    /// Fetch from the backend, replace the entry on every core (`CacheShard::refetch`).
    Refetch,
    /// Not authorized: look up as usual; add `INVALIDATION_IGNORED_HEADER` when `warn`.
    Ignore { warn: bool },
    /// Not authorized: answer 403.
    Forbidden,
}

/// The decision for a request: `wants_refresh` from `wants_refresh(headers)`, `authorized`
/// from the authorizer (the caller may invalidate this stage's cache).
pub fn invalidation(policy: &RoutePolicy, wants_refresh: bool, authorized: bool) -> Invalidation {
    if !wants_refresh || !policy.enabled {
        return Invalidation::None;
    }
    if authorized || !policy.require_authorization {
        return Invalidation::Refetch;
    }
    match policy.unauthorized {
        UnauthorizedStrategy::FailWith403 => Invalidation::Forbidden,
        UnauthorizedStrategy::SucceedWithResponseHeader => Invalidation::Ignore { warn: true },
        UnauthorizedStrategy::SucceedWithoutResponseHeader => Invalidation::Ignore { warn: false },
    }
}

/// The directives of a `Cache-Control`-like list: `(name, value)` with OWS trimmed; value empty
/// when there is none.
fn directives(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|&b| b == b',').filter_map(|d| {
        let d = d.trim_ascii();
        if d.is_empty() {
            return None;
        }
        Some(match memchr::memchr(b'=', d) {
            Some(eq) => (d[..eq].trim_ascii(), d[eq + 1..].trim_ascii()),
            None => (d, &b""[..]),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn policy() -> RoutePolicy {
        let cfg = CacheConfig {
            enabled: true,
            ..CacheConfig::default()
        };
        RoutePolicy::resolve(StageId(7), &cfg, None)
    }

    const STORE: Cacheability = Cacheability::Store {
        ttl: Duration::from_secs(CACHE_TTL_S_DEFAULT as u64),
    };

    #[test]
    fn stores_plain_200_get_for_the_configured_ttl() {
        let p = policy();
        assert_eq!(
            cacheability(
                &p,
                Method::Get,
                200,
                &[h("cache-control", "max-age=5")],
                Some(10)
            ),
            STORE
        );
        assert_eq!(
            cacheability(&p, Method::Get, 200, &[h("vary", "accept-encoding")], None),
            STORE
        );
    }

    #[test]
    fn skips_what_must_not_be_stored() {
        let p = policy();
        let skip = |m, status, headers: &[httparse::Header<'_>], len| match cacheability(
            &p, m, status, headers, len,
        ) {
            Cacheability::Skip(r) => Some(r),
            Cacheability::Store { .. } => None,
        };
        assert_eq!(
            skip(Method::Post, 200, &[], None),
            Some(SkipReason::Disabled)
        );
        assert_eq!(
            skip(Method::Head, 200, &[], None),
            Some(SkipReason::Disabled)
        );
        assert_eq!(skip(Method::Get, 404, &[], None), Some(SkipReason::Status));
        assert_eq!(skip(Method::Get, 204, &[], None), Some(SkipReason::Status));
        for cc in [
            "no-store",
            "Private",
            "public, no-cache",
            "private=\"x\"",
            " max-age=5 ,NO-STORE",
        ] {
            assert_eq!(
                skip(Method::Get, 200, &[h("Cache-Control", cc)], None),
                Some(SkipReason::BackendDirective),
                "{cc}"
            );
        }
        assert_eq!(
            skip(Method::Get, 200, &[h("vary", "accept, *")], None),
            Some(SkipReason::BackendDirective)
        );
        assert_eq!(
            skip(Method::Get, 200, &[h("Set-Cookie", "a=b")], None),
            Some(SkipReason::SetCookie)
        );
        let over = CACHE_ENTRY_BYTES_MAX as u64 + 1;
        assert_eq!(
            skip(Method::Get, 200, &[], Some(over)),
            Some(SkipReason::TooLarge)
        );
        assert_eq!(skip(Method::Get, 200, &[], Some(over - 1)), None);
    }

    #[test]
    fn ttl_zero_disabled_and_route_overrides() {
        let stage = CacheConfig {
            enabled: true,
            key_query: vec!["page".into()],
            ..CacheConfig::default()
        };
        let off = RouteCacheOverride {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(!RoutePolicy::resolve(StageId(1), &stage, Some(&off)).enabled);
        let zero = RouteCacheOverride {
            ttl_s: Some(0),
            ..Default::default()
        };
        assert_eq!(
            RoutePolicy::resolve(StageId(1), &stage, Some(&zero)).lookup_method(Method::Get),
            None
        );
        let post = RouteCacheOverride {
            ttl_s: Some(30),
            methods: Some(vec![Method::Get, Method::Post]),
            statuses: Some(vec![200, 404]),
            ..Default::default()
        };
        let p = RoutePolicy::resolve(StageId(1), &stage, Some(&post));
        assert_eq!(p.ttl, Duration::from_secs(30));
        assert_eq!(p.lookup_method(Method::Post), Some(Method::Post));
        assert_eq!(p.lookup_method(Method::Head), Some(Method::Get));
        assert_eq!(p.lookup_method(Method::Put), None);
        assert_eq!(
            p.key,
            KeySpec::new(&["page"], &[] as &[&str]),
            "key parts inherited"
        );
        assert_eq!(
            cacheability(&p, Method::Get, 404, &[], None),
            Cacheability::Store {
                ttl: Duration::from_secs(30)
            }
        );
        let head_only = RouteCacheOverride {
            methods: Some(vec![Method::Post]),
            ..Default::default()
        };
        let p = RoutePolicy::resolve(StageId(1), &stage, Some(&head_only));
        assert_eq!(
            p.lookup_method(Method::Head),
            None,
            "HEAD needs GET entries"
        );
    }

    #[test]
    fn validation() {
        assert!(CacheConfig::default().validate().is_ok());
        let bad = [
            CacheConfig {
                ttl_s: 3601,
                ..CacheConfig::default()
            },
            CacheConfig {
                capacity_mb: 0,
                ..CacheConfig::default()
            },
            CacheConfig {
                key_query: vec!["a=b".into()],
                ..CacheConfig::default()
            },
            CacheConfig {
                key_headers: vec!["bad header".into()],
                ..CacheConfig::default()
            },
            CacheConfig {
                statuses: vec![101],
                ..CacheConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(
            CacheConfig {
                ttl_s: 3600,
                ..CacheConfig::default()
            }
            .validate()
            .is_ok()
        );
        let head = RouteCacheOverride {
            methods: Some(vec![Method::Head]),
            ..Default::default()
        };
        assert!(head.validate().is_err());
        assert_eq!(
            UnauthorizedStrategy::from_config("fail_with_403"),
            Some(UnauthorizedStrategy::FailWith403)
        );
        assert_eq!(UnauthorizedStrategy::from_config("FAIL_WITH_403"), None);
    }

    #[test]
    fn budget_is_split_across_cores() {
        let c = CacheConfig {
            capacity_mb: 256,
            ..CacheConfig::default()
        };
        assert_eq!(c.core_budget_bytes(4), 64 * 1024 * 1024);
        assert_eq!(c.core_budget_bytes(0), 256 * 1024 * 1024);
    }

    #[test]
    fn refresh_directive() {
        assert!(wants_refresh(&[h("Cache-Control", "max-age=0")]));
        assert!(wants_refresh(&[h(
            "cache-control",
            "no-transform, MAX-AGE = \"00\""
        )]));
        assert!(wants_refresh(&[
            h("x", "y"),
            h("cache-control", "a"),
            h("cache-control", "max-age=0")
        ]));
        assert!(!wants_refresh(&[h("cache-control", "max-age=10")]));
        assert!(!wants_refresh(&[h("cache-control", "max-age=")]));
        assert!(!wants_refresh(&[h("cache-control", "no-cache")]));
        assert!(!wants_refresh(&[h("pragma", "max-age=0")]));
    }

    #[test]
    fn invalidation_strategies() {
        let mut p = policy();
        assert_eq!(invalidation(&p, false, false), Invalidation::None);
        assert_eq!(invalidation(&p, true, true), Invalidation::Refetch);
        assert_eq!(
            invalidation(&p, true, false),
            Invalidation::Ignore { warn: true }
        );
        p.unauthorized = UnauthorizedStrategy::FailWith403;
        assert_eq!(invalidation(&p, true, false), Invalidation::Forbidden);
        p.unauthorized = UnauthorizedStrategy::SucceedWithoutResponseHeader;
        assert_eq!(
            invalidation(&p, true, false),
            Invalidation::Ignore { warn: false }
        );
        p.require_authorization = false;
        assert_eq!(invalidation(&p, true, false), Invalidation::Refetch);
        p.enabled = false;
        assert_eq!(invalidation(&p, true, true), Invalidation::None);
    }

    #[test]
    fn replayed_headers() {
        assert!(replay_header("content-type"));
        assert!(replay_header("etag"));
        assert!(!replay_header("Content-Length"));
        assert!(!replay_header("transfer-encoding"));
        assert!(!replay_header("Date"));
    }
}

//! The protocol-neutral part of answering a request: which API, stage and route it reaches,
//! whether a limit refuses it (body size, throttles), whether the response cache answers it
//! (`server::cache`), and which integration answers it otherwise.
//!
//! The HTTP/1.1 driver (`conn`) and the HTTP/2 driver call `decide` with a `RequestView` of
//! their own request and render the `Decision` their own way. Pure given the core's state: no
//! I/O, no allocation (but a cache miss's key, kept by its fill).

use std::rc::Rc;

use crate::cache::EntryRef;
use crate::config::{CompiledIntegration, CompiledRoute, MockResponse, ProxyTarget};
use crate::error::ErrorKind;
use crate::router::Params;

use super::cache::{self, CacheStep, Step};
use super::core::{CoreCtx, CoreSnapshot};

/// What `decide` needs to know about a request, whatever its protocol.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path, without the query string, as received (not percent-decoded).
    pub path: &'a str,
    /// The host the request names, without its port; `""` when none.
    pub host: &'a str,
    /// The body length declared up front (`Content-Length`), if any.
    pub content_length: Option<u64>,
    /// The query string, without the `?` (the cache key may use some of its parameters).
    pub query: Option<&'a str>,
    /// The request's header fields (the cache key, `Cache-Control`, `Authorization`).
    pub headers: ReqHeaders<'a>,
}

/// A request's header fields as its protocol holds them.
#[derive(Debug, Clone, Copy)]
pub enum ReqHeaders<'a> {
    /// Parsed in place by httparse (HTTP/1.1).
    H1(&'a [httparse::Header<'a>]),
    /// Decoded by h2 (HTTP/2).
    H2(&'a http::HeaderMap),
    /// Not to be looked at: the request bypasses the cache (a WebSocket upgrade).
    None,
}

/// The route a request reached: indices into the snapshot's APIs, stages and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRef {
    pub api: usize,
    pub stage: usize,
    pub route: usize,
}

impl RouteRef {
    pub fn compiled<'s>(&self, snap: &'s CoreSnapshot) -> &'s CompiledRoute {
        &snap.snap.apis[self.api].stages[self.stage].routes[self.route]
    }

    /// "api A stage S route R", for log lines.
    pub fn describe(&self, snap: &CoreSnapshot) -> String {
        let api = &snap.snap.apis[self.api];
        let stage = &api.stages[self.stage];
        format!(
            "api {} stage {} route {}",
            api.name, stage.name, stage.routes[self.route].key
        )
    }
}

/// How a request is answered. `slot` is the request's metrics series on this core.
#[derive(Debug)]
pub enum Decision<'s> {
    /// An error answered by the gateway itself.
    Refuse {
        kind: ErrorKind,
        slot: u32,
        route: Option<RouteRef>,
        retry_after_s: Option<u64>,
    },
    Mock {
        slot: u32,
        route: RouteRef,
        mock: &'s MockResponse,
        body_limit: u64,
    },
    Proxy {
        slot: u32,
        route: RouteRef,
        target: &'s ProxyTarget,
        body_limit: u64,
        /// What the response cache does with it.
        cache: CacheStep,
    },
    /// Answered from the response cache (`x-cache: Hit`); the request body, if any, is read
    /// and discarded like a mock's. `warn`: add the ignored-invalidation warning.
    CacheHit {
        slot: u32,
        route: RouteRef,
        entry: EntryRef,
        warn: bool,
        body_limit: u64,
    },
    /// An upgrade to a websocket API's stage.
    WebSocket { slot: u32, route: RouteRef },
}

impl Decision<'_> {
    pub fn slot(&self) -> u32 {
        match self {
            Decision::Refuse { slot, .. }
            | Decision::Mock { slot, .. }
            | Decision::Proxy { slot, .. }
            | Decision::CacheHit { slot, .. }
            | Decision::WebSocket { slot, .. } => *slot,
        }
    }
}

/// Routes the request and applies the limits in order: no route → 404; a declared body over
/// the route's limit → 413; the throttles (account, stage, route: the first without a token
/// answers 429 and the request goes no further); for a cached proxy route, the cache (a hit
/// answers, an unauthorized invalidation may answer 403); then the integration.
pub fn decide<'s>(
    ctx: &CoreCtx,
    snap: &'s Rc<CoreSnapshot>,
    req: &RequestView<'_>,
    params: &mut Params,
) -> Decision<'s> {
    params.clear();
    let Some(m) = snap
        .snap
        .router
        .find(req.host, req.method, req.path, params)
    else {
        let slot = snap.slots[snap.snap.unmatched_metric_id()];
        return Decision::Refuse {
            kind: ErrorKind::NotFound,
            slot,
            route: None,
            retry_after_s: None,
        };
    };
    let route_ref = RouteRef {
        api: m.api,
        stage: m.stage,
        route: m.route,
    };
    let route = route_ref.compiled(snap);
    let slot = snap.slots[route.metric_id];
    if req.content_length.is_some_and(|n| n > route.body_bytes_max) {
        return Decision::Refuse {
            kind: ErrorKind::PayloadTooLarge,
            slot,
            route: Some(route_ref),
            retry_after_s: None,
        };
    }
    if !route.limit_ids.is_empty() {
        let mut limiter = ctx.limiter.borrow_mut();
        let checked = limiter.check(&route.limit_ids);
        // A refusal, or the last token of a lease spent: one message asks for more now; the
        // request does not wait for the answer.
        let ask = limiter.early_ask(ctx.nanos());
        drop(limiter);
        if let Some(report) = ask {
            ctx.send_limiter_report(report);
        }
        if let Err(t) = checked {
            let scope = route
                .throttles
                .get(t.which)
                .map_or(0, |(_, _, s)| *s as usize);
            ctx.metrics.borrow_mut().record_throttled(slot, scope);
            return Decision::Refuse {
                kind: ErrorKind::TooManyRequests,
                slot,
                route: Some(route_ref),
                retry_after_s: Some(t.retry_after_secs()),
            };
        }
    }
    match &route.integration {
        CompiledIntegration::Mock(mock) => Decision::Mock {
            slot,
            route: route_ref,
            mock,
            body_limit: route.body_bytes_max,
        },
        CompiledIntegration::HttpProxy(target) => {
            let step = match &route.cache {
                Some(rc) => cache::step(ctx, snap, route_ref, rc, req),
                None => Step::Proxy(CacheStep::Off),
            };
            match step {
                Step::Proxy(cache) => Decision::Proxy {
                    slot,
                    route: route_ref,
                    target,
                    body_limit: route.body_bytes_max,
                    cache,
                },
                Step::Hit { entry, warn } => Decision::CacheHit {
                    slot,
                    route: route_ref,
                    entry,
                    warn,
                    body_limit: route.body_bytes_max,
                },
                Step::Forbidden => Decision::Refuse {
                    kind: ErrorKind::Forbidden,
                    slot,
                    route: Some(route_ref),
                    retry_after_s: None,
                },
            }
        }
        CompiledIntegration::WebSocket(_) => Decision::WebSocket {
            slot,
            route: route_ref,
        },
    }
}

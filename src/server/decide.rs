//! The protocol-neutral part of answering a request: which API, stage and route it reaches,
//! whether a limit refuses it (body size, throttles), and which integration answers it.
//!
//! The HTTP/1.1 driver (`conn`) and the HTTP/2 driver call `decide` with a `RequestView` of
//! their own request and render the `Decision` their own way. Pure given the core's state: no
//! I/O, no allocation.

use crate::config::{CompiledIntegration, CompiledRoute, MockResponse, ProxyTarget};
use crate::error::ErrorKind;
use crate::router::Params;

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
            | Decision::WebSocket { slot, .. } => *slot,
        }
    }
}

/// Routes the request and applies the limits in order: no route → 404; a declared body over
/// the route's limit → 413; the throttles (account, stage, route: the first without a token
/// answers 429 and the request goes no further); then the integration.
pub fn decide<'s>(
    ctx: &CoreCtx,
    snap: &'s CoreSnapshot,
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
        CompiledIntegration::HttpProxy(target) => Decision::Proxy {
            slot,
            route: route_ref,
            target,
            body_limit: route.body_bytes_max,
        },
        CompiledIntegration::WebSocket(_) => Decision::WebSocket {
            slot,
            route: route_ref,
        },
    }
}

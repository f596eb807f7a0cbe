//! The HTTP/1.1 connection driver: reads request heads, routes them, answers from a mock or
//! forwards them, in order, until the connection ends.
//!
//! Phases of one request:
//! ```text
//! read head (idle timeout before the first byte, header timeout after it: 408)
//!   → parse in place (400/414/431/501/505 close the connection)
//!   → route (404) → body limit (413) → throttles (429) → cache (hit: answered from the entry)
//!   → plan: mock response, or backend request head (a cache miss fills as it relays)
//!   → body: drained (mock, errors) or streamed to the backend (proxy)
//!   → response into the output buffer; written before the next read (pipelined responses
//!     are written together) → metrics
//! ```
//! Upgrades leave this loop: a websocket API's stage hands the socket to
//! `websocket::conn::serve`; an `http_proxy` route whose backend answers `101` to a WebSocket
//! upgrade relays bytes both ways (`integration::tunnel`); either way the connection then ends.
//! Parsing and planning are synchronous and borrow the read buffer; everything that waits on
//! I/O works on owned state (`Exchange`), so no head outlives a read.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::CompiledIntegration;
use crate::error::ErrorKind;
use crate::http1::{self, BodyDecoder, Framing, HeadLimits, RequestHead, Version};
use crate::integration::http_proxy::{self, Exchange, Failure};
use crate::limits::HEADERS_CEILING;
use crate::router::Params;
use crate::telemetry::request_id::{self, REQUEST_ID_LEN};

use crate::cache::Entry;

use super::accept::ConnInfo;
use super::cache::{self, CacheStep, CacheTag};
use super::core::{CoreCtx, CoreSnapshot};
use super::decide::{Decision, ReqHeaders, RequestView, RouteRef, decide};
use super::downstream::{Downstream, ReadError};
use super::respond::{self, CONTINUE, Meta, RequestId};

/// Output bytes of pipelined responses held back before a write.
const PIPELINE_FLUSH_BYTES: usize = 64 * 1024;

/// Serves one client connection to its end (`accept` made `down` and counts the connection).
pub async fn serve(ctx: Rc<CoreCtx>, down: Downstream, info: ConnInfo) {
    let mut conn = Conn {
        ctx: ctx.clone(),
        down,
        peer: info.peer,
        info,
        req: Vec::new(),
        params: Params::default(),
    };
    conn.run().await;
}

struct Conn {
    ctx: Rc<CoreCtx>,
    down: Downstream,
    peer: Option<SocketAddr>,
    info: ConnInfo,
    /// Reused buffer for backend request heads and body chunks.
    req: Vec<u8>,
    params: Params,
}

/// What to do once a head is parsed and planned.
enum Plan {
    /// A response is in `out` from `resp_start`.
    Respond {
        x: Exchange,
        status: u16,
        slot: u32,
        resp_start: usize,
        body: BodyPlan,
    },
    /// The backend request head is in `req`.
    Proxy {
        x: Exchange,
        slot: u32,
        snap: Rc<CoreSnapshot>,
        route: RouteRef,
        /// A fill to collect, or another request's fill to wait for.
        cache: CacheStep,
    },
    /// An upgrade to a websocket API's stage: the connection becomes a WebSocket task.
    WebSocket(Box<crate::websocket::conn::UpgradeRequest>),
    /// The head was refused; the error response is in `out`; close after writing.
    Refuse {
        status: u16,
        slot: u32,
        started: Instant,
        why: String,
    },
}

/// What happens to the connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Read the next request.
    Keep,
    /// Write what is pending and close.
    Close,
    /// Request bytes may be left unread: close with a lingering close.
    Linger,
}

impl After {
    fn closing(x: &Exchange) -> After {
        if x.body.is_done() {
            After::Close
        } else {
            After::Linger
        }
    }
}

/// What happens to the request body of a `Respond` plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyPlan {
    /// Read and discard it (bounded by the route's limit), then keep the connection.
    Drain,
    /// It is already consumed (or there is none).
    None,
}

impl Conn {
    async fn run(&mut self) {
        let mut head_started: Option<Instant> = None;
        // A connection accepted just before a drain began gets its first request served: the
        // client has already sent it (or is about to), and closing it unread would reset it.
        let mut served = 0u64;
        loop {
            if self.ctx.draining() && self.down.avail().is_empty() && served > 0 {
                let _ = self.down.flush().await;
                return;
            }
            let snap = self.ctx.snapshot();
            let server = snap.snap.server();
            let limits = HeadLimits {
                header_bytes_max: server.header_bytes_max,
                headers_max: server.headers_max,
            };

            let plan = if self.down.avail().is_empty() {
                None
            } else {
                let started = *head_started.get_or_insert_with(Instant::now);
                self.plan(&snap, &limits, started).map(|(plan, head_len)| {
                    self.down.consume(head_len);
                    plan
                })
            };

            let Some(plan) = plan else {
                // Need more bytes: write what is pending first (the client may wait for it).
                if self.down.flush().await.is_err() {
                    return;
                }
                let deadline = match head_started {
                    None => {
                        self.ctx.timers.now()
                            + Duration::from_millis(server.keepalive_idle_timeout_ms)
                    }
                    Some(t) => t + Duration::from_millis(server.header_read_timeout_ms),
                };
                let was_empty = self.down.avail().is_empty();
                // Waiting for a new request is an idle wait: a drain ends it at once, and it
                // holds only small buffers.
                let idle = head_started.is_none() && served > 0;
                if idle {
                    self.down.relax();
                }
                match self
                    .down
                    .fill_head(&self.ctx.timers, deadline, idle, limits.header_bytes_max)
                    .await
                {
                    Ok(_) => {
                        if was_empty {
                            head_started = Some(Instant::now());
                        }
                    }
                    Err(ReadError::Timeout) if head_started.is_some() => {
                        self.refuse_now(
                            &snap,
                            ErrorKind::RequestTimeout,
                            "request head not complete within header_read_timeout_ms",
                        )
                        .await;
                        return;
                    }
                    // Idle keep-alive timeout, end of stream, reset: close quietly.
                    Err(_) => return,
                }
                continue;
            };
            head_started = None;

            let after = match plan {
                Plan::Refuse {
                    status,
                    slot,
                    started,
                    why,
                } => {
                    crate::log_debug!("http1", "{}: {status}: {why}", peer_str(self.peer));
                    self.record(slot, status, started);
                    After::Linger
                }
                Plan::Respond {
                    x,
                    status,
                    slot,
                    resp_start,
                    body,
                } => self.respond(x, status, slot, resp_start, body).await,
                Plan::Proxy {
                    x,
                    slot,
                    snap,
                    route,
                    cache,
                } => {
                    // Boxed: the proxy's state machine is several times the size of the rest,
                    // and only proxied requests should pay for it (idle connections stay small).
                    Box::pin(self.proxy(x, slot, &snap, route, cache)).await
                }
                Plan::WebSocket(up) => {
                    // Earlier pipelined responses go first; the socket is the WebSocket's now.
                    if self.down.flush().await.is_err() {
                        return;
                    }
                    Box::pin(crate::websocket::conn::serve(
                        &self.ctx,
                        &mut self.down,
                        *up,
                        self.peer,
                    ))
                    .await;
                    return;
                }
            };
            served += 1;
            match after {
                After::Keep => {}
                After::Close => {
                    self.down.close_notify();
                    let _ = self.down.flush().await;
                    return;
                }
                After::Linger => {
                    self.down.linger_close(&self.ctx.timers).await;
                    return;
                }
            }
            if !self.down.avail().is_empty() {
                head_started = Some(Instant::now());
            }
            if self.down.out.len() >= PIPELINE_FLUSH_BYTES && self.down.flush().await.is_err() {
                return;
            }
        }
    }

    /// Parses the buffered head and decides. `None`: the head is incomplete. The `usize` is the
    /// head's length, for the caller to consume once the borrow of the buffer ends.
    fn plan(
        &mut self,
        snap: &Rc<CoreSnapshot>,
        limits: &HeadLimits,
        started: Instant,
    ) -> Option<(Plan, usize)> {
        let ctx = &*self.ctx;
        let (avail, out) = self.down.parts();
        let mut headers = http1::header_slots::<HEADERS_CEILING>();
        let head = match http1::parse_request(avail, &mut headers, limits) {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(e) => {
                let kind = ErrorKind::from(e);
                let id = new_request_id(ctx, None);
                let date = ctx.date();
                let meta = Meta {
                    date: &date,
                    request_id: &id,
                    keep_alive: false,
                    http10: false,
                };
                respond::error(out, kind, &meta, false);
                let plan = Plan::Refuse {
                    status: kind.status(),
                    slot: snap.slots[snap.snap.unmatched_metric_id()],
                    started,
                    why: e.to_string(),
                };
                return Some((plan, 0));
            }
        };
        let head_len = head.head_len;
        Some((
            plan_head(
                ctx,
                snap,
                &head,
                avail,
                out,
                &mut self.req,
                &mut self.params,
                &self.info,
                started,
            ),
            head_len,
        ))
    }

    /// Finishes a locally answered request: drains its body if needed, records it.
    async fn respond(
        &mut self,
        mut x: Exchange,
        status: u16,
        slot: u32,
        resp_start: usize,
        body: BodyPlan,
    ) -> After {
        let mut status = status;
        if body == BodyPlan::Drain && !x.body.is_done() {
            // Hold the response back until the body is read: if the body breaks a limit, the
            // client gets 413/400 instead.
            let resp = self.down.out.split_off(resp_start);
            if x.expect_continue && self.down.avail().is_empty() {
                self.down.out.extend_from_slice(CONTINUE);
            }
            match self.drain(&mut x).await {
                Ok(()) => self.down.out.extend_from_slice(&resp),
                Err(Some(kind)) => {
                    x.keep_alive = false;
                    status = kind.status();
                    let date = self.ctx.date();
                    let meta = Meta {
                        date: &date,
                        request_id: &x.request_id,
                        keep_alive: false,
                        http10: x.http10,
                    };
                    respond::error(&mut self.down.out, kind, &meta, x.is_head);
                }
                Err(None) => {
                    self.record(slot, 499, x.started);
                    return After::Close;
                }
            }
        }
        self.record(slot, status, x.started);
        if x.keep_alive {
            After::Keep
        } else {
            After::closing(&x)
        }
    }

    /// Reads and discards the rest of the request body. `Err(Some(kind))`: answer with that
    /// error and close; `Err(None)`: the client is gone.
    async fn drain(&mut self, x: &mut Exchange) -> Result<(), Option<ErrorKind>> {
        loop {
            let (used, n) = http_proxy::pump(&mut x.body, self.down.avail(), None, false)
                .map_err(|_| Some(ErrorKind::BadRequest))?;
            self.down.consume(used);
            x.body_seen += n;
            if x.body_seen > x.body_limit {
                return Err(Some(ErrorKind::PayloadTooLarge));
            }
            if x.body.is_done() {
                return Ok(());
            }
            if self.down.flush().await.is_err() {
                return Err(None);
            }
            let deadline = self.ctx.timers.now() + x.client_read_timeout;
            match self.down.fill_body(&self.ctx.timers, deadline).await {
                Ok(_) => {}
                Err(_) => return Err(None),
            }
        }
    }

    async fn proxy(
        &mut self,
        mut x: Exchange,
        slot: u32,
        snap: &Rc<CoreSnapshot>,
        route: RouteRef,
        cache: CacheStep,
    ) -> After {
        let CompiledIntegration::HttpProxy(target) = &route.compiled(snap).integration else {
            // plan_head only makes Proxy plans for proxy routes.
            unreachable!("proxy plan for a non-proxy route")
        };
        // Earlier pipelined responses go first.
        if self.down.flush().await.is_err() {
            cache.discard(&self.ctx);
            return After::Close;
        }
        let cache = match cache {
            CacheStep::Wait { wait, warn } => {
                let timeout = Duration::from_millis(target.timeout_ms);
                match cache::await_fill(&self.ctx, wait, timeout).await {
                    Some(entry) => return self.answer_hit(x, slot, &entry, warn).await,
                    None => CacheStep::Pass { warn },
                }
            }
            other => other,
        };
        (x.cache, x.cache_tag) = cache.into_fill();
        let forwarded =
            http_proxy::forward(&self.ctx, &mut self.down, &mut self.req, target, &mut x).await;
        if let Some(mut fill) = x.cache.take() {
            fill.finish(&self.ctx, forwarded.is_ok());
        }
        match forwarded {
            Ok(r) if x.upgraded.is_some() => {
                // The backend switched to WebSocket: relay both ways until either side closes.
                self.record(slot, r.status, x.started);
                if let Some(up) = x.upgraded.take() {
                    crate::integration::tunnel::relay(&self.ctx, &mut self.down, up).await;
                }
                After::Close
            }
            Ok(r) => {
                self.record(slot, r.status, x.started);
                if r.keep_alive {
                    After::Keep
                } else {
                    After::Close
                }
            }
            Err(Failure::Respond(kind, why)) => {
                if let Some(dropped) = self.ctx.may_log() {
                    crate::log_warn!(
                        "proxy",
                        "{} {}: {why}{}{}",
                        kind.status(),
                        route.describe(snap),
                        self.info.client_str(),
                        suppressed(dropped)
                    );
                }
                // The request body may be half read: the connection cannot carry another request
                // unless the body was fully consumed.
                let keep = x.keep_alive
                    && x.body.is_done()
                    && !kind.closes_connection()
                    && kind != ErrorKind::PayloadTooLarge;
                let date = self.ctx.date();
                let meta = Meta {
                    date: &date,
                    request_id: &x.request_id,
                    keep_alive: keep,
                    http10: x.http10,
                };
                respond::error(&mut self.down.out, kind, &meta, x.is_head);
                self.record(slot, kind.status(), x.started);
                if keep {
                    After::Keep
                } else {
                    After::closing(&x)
                }
            }
            Err(Failure::Abort(why)) => {
                if let Some(dropped) = self.ctx.may_log() {
                    crate::log_warn!(
                        "proxy",
                        "connection from {}{} cut: {why}{}",
                        peer_str(self.peer),
                        self.info.client_str(),
                        suppressed(dropped)
                    );
                }
                self.record(slot, 499, x.started);
                After::Close
            }
        }
    }

    /// Answers from a cache entry another request just filled (after reading and discarding
    /// any request body, as for a mock).
    async fn answer_hit(&mut self, mut x: Exchange, slot: u32, entry: &Entry, warn: bool) -> After {
        let resp_start = self.down.out.len();
        // A drain that began while we waited still gets its `connection: close`.
        x.keep_alive &= !self.ctx.draining();
        let date = self.ctx.date();
        let meta = Meta {
            date: &date,
            request_id: &x.request_id,
            keep_alive: x.keep_alive,
            http10: x.http10,
        };
        let now = self.ctx.timers.now();
        cache::write_hit(&mut self.down.out, entry, now, &meta, warn, x.is_head);
        self.respond(x, entry.status, slot, resp_start, BodyPlan::Drain)
            .await
    }

    /// Answers an error outside any parsed request (header timeout) and closes.
    async fn refuse_now(&mut self, snap: &Rc<CoreSnapshot>, kind: ErrorKind, why: &str) {
        crate::log_debug!("http1", "{}: {}: {why}", peer_str(self.peer), kind.status());
        let id = new_request_id(&self.ctx, None);
        let date = self.ctx.date();
        let meta = Meta {
            date: &date,
            request_id: &id,
            keep_alive: false,
            http10: false,
        };
        respond::error(&mut self.down.out, kind, &meta, false);
        let _ = self.down.flush().await;
        let slot = snap.slots[snap.snap.unmatched_metric_id()];
        self.record(slot, kind.status(), Instant::now());
    }

    fn record(&self, slot: u32, status: u16, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.ctx.metrics.borrow_mut().record(slot, status, us);
    }
}

fn peer_str(p: Option<SocketAddr>) -> String {
    p.map_or_else(|| "?".to_string(), |p| p.to_string())
}

fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}

fn new_request_id(ctx: &CoreCtx, incoming: Option<&[u8]>) -> RequestId {
    match incoming {
        Some(v) if request_id::is_well_formed(v) => RequestId::new(v),
        _ => {
            let mut buf = [0u8; REQUEST_ID_LEN];
            ctx.ids.next(&mut buf);
            RequestId::new(&buf)
        }
    }
}

/// Routes a parsed head and writes either the response (into `out`) or the backend request head
/// (into `req`).
#[allow(clippy::too_many_arguments)]
fn plan_head(
    ctx: &CoreCtx,
    snap: &Rc<CoreSnapshot>,
    head: &RequestHead<'_, '_>,
    avail: &[u8],
    out: &mut Vec<u8>,
    req: &mut Vec<u8>,
    params: &mut Params,
    info: &ConnInfo,
    started: Instant,
) -> Plan {
    let server = snap.snap.server();
    let request_id = new_request_id(ctx, http1::header_value(head.headers, "x-request-id"));
    let date = ctx.date();
    let is_head = head.method == "HEAD";
    let http10 = head.version == Version::Http10;
    let mut x = Exchange {
        started,
        request_id,
        date,
        body: BodyDecoder::new(head.framing),
        body_chunked: head.framing == Framing::Chunked,
        body_limit: server.body_bytes_max,
        body_seen: 0,
        expect_continue: head.expect_continue,
        // While draining, every response closes its connection.
        keep_alive: head.keep_alive && !ctx.draining(),
        http10,
        is_head,
        idempotent: matches!(
            head.method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        client_read_timeout: Duration::from_millis(server.keepalive_idle_timeout_ms),
        head_limits: HeadLimits {
            header_bytes_max: server.header_bytes_max,
            headers_max: server.headers_max,
        },
        connect_timeout: Duration::from_millis(server.upstream_connect_timeout_ms),
        upgrade: http_proxy::is_websocket_upgrade(head),
        upgraded: None,
        cache: None,
        cache_tag: CacheTag::default(),
    };
    let head_len = head.head_len;
    let resp_start = out.len();

    let view = RequestView {
        method: head.method,
        path: head.path,
        host: head.host.map(http1::host_without_port).unwrap_or(""),
        content_length: match head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        query: head.query,
        // An upgrade is not a request whose response can be cached.
        headers: if x.upgrade {
            ReqHeaders::None
        } else {
            ReqHeaders::H1(head.headers)
        },
    };
    match decide(ctx, snap, &view, params) {
        Decision::Refuse {
            kind,
            slot,
            retry_after_s,
            ..
        } => local_error(ctx, x, kind, slot, retry_after_s, avail, head_len, out),
        Decision::Mock {
            slot,
            mock,
            body_limit,
            ..
        } => {
            x.body_limit = body_limit;
            let meta = Meta {
                date: &date,
                request_id: &x.request_id,
                keep_alive: x.keep_alive,
                http10,
            };
            respond::mock(out, mock, head.path, params, &meta, is_head);
            Plan::Respond {
                status: mock.status,
                slot,
                resp_start,
                body: BodyPlan::Drain,
                x,
            }
        }
        Decision::CacheHit {
            slot,
            entry,
            warn,
            body_limit,
            ..
        } => {
            x.body_limit = body_limit;
            let meta = Meta {
                date: &date,
                request_id: &x.request_id,
                keep_alive: x.keep_alive,
                http10,
            };
            cache::write_hit(out, &entry, ctx.timers.now(), &meta, warn, is_head);
            Plan::Respond {
                status: entry.status,
                slot,
                resp_start,
                body: BodyPlan::Drain,
                x,
            }
        }
        Decision::WebSocket { slot, route } => {
            let request_id = x.request_id;
            match crate::websocket::conn::plan_upgrade(
                ctx,
                snap,
                (route.api, route.stage, slot),
                head,
                started,
                request_id,
            ) {
                Ok(up) => Plan::WebSocket(Box::new(up)),
                Err(refusal) => {
                    refusal.write(out, &date, &request_id);
                    Plan::Refuse {
                        status: refusal.status,
                        slot,
                        started,
                        why: refusal.why,
                    }
                }
            }
        }
        Decision::Proxy {
            slot,
            route,
            target,
            body_limit,
            cache,
        } => {
            x.body_limit = body_limit;
            req.clear();
            if x.upgrade && (info.tls.is_some() || target.tls.is_some()) {
                cache.discard(ctx);
                // The tunnel relays raw bytes; with TLS on either side it would need to open and
                // seal records in both directions, which it does not do yet.
                crate::log_warn!(
                    "proxy",
                    "{}: WebSocket proxying over TLS is not supported (client tls: {}, backend https: {})",
                    route.describe(snap),
                    info.tls.is_some(),
                    target.tls.is_some()
                );
                return local_error(
                    ctx,
                    x,
                    ErrorKind::NotImplemented,
                    slot,
                    None,
                    avail,
                    head_len,
                    out,
                );
            }
            http_proxy::render_request(req, head, target, params, info, &x.request_id);
            Plan::Proxy {
                x,
                slot,
                snap: snap.clone(),
                route,
                cache,
            }
        }
    }
}

/// An error answered without reading a body the client may still send: the connection stays
/// open only when the whole body is already buffered (it is skipped) or there is none.
#[allow(clippy::too_many_arguments)]
fn local_error(
    ctx: &CoreCtx,
    mut x: Exchange,
    kind: ErrorKind,
    slot: u32,
    retry_after_s: Option<u64>,
    avail: &[u8],
    head_len: usize,
    out: &mut Vec<u8>,
) -> Plan {
    let resp_start = out.len();
    let mut probe = x.body.clone();
    let rest = &avail[head_len..];
    let fits = http_proxy::pump(&mut probe, rest, None, false).is_ok() && probe.is_done();
    if kind == ErrorKind::PayloadTooLarge || !fits {
        x.keep_alive = false;
    }
    let date = ctx.date();
    let meta = Meta {
        date: &date,
        request_id: &x.request_id,
        keep_alive: x.keep_alive,
        http10: x.http10,
    };
    respond::error_with(out, kind, &meta, x.is_head, retry_after_s);
    // The body (if any, and if it fits) is drained from the buffer without I/O.
    let body = if x.keep_alive {
        BodyPlan::Drain
    } else {
        BodyPlan::None
    };
    Plan::Respond {
        status: kind.status(),
        slot,
        resp_start,
        body,
        x,
    }
}

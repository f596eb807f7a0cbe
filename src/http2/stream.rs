//! One HTTP/2 stream: its request through `server::decide`, answered with an error, a mock,
//! a cache entry, or a forward to the backend (`proxy`, filling the cache on a miss); recorded
//! in the core's metrics like HTTP/1.1.
//!
//! Responses carry what HTTP/1.1 ones do (`date`, `x-request-id`, the same JSON error bodies
//! and statuses, `retry-after` on 429), minus what HTTP/2 forbids (`connection`).

use std::future::poll_fn;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, HeaderName, HeaderValue};
use http::{Request, Response};

use crate::cache::Entry;
use crate::config::MockResponse;
use crate::error::ErrorKind;
use crate::http1;
use crate::router::Params;
use crate::server::accept::ConnInfo;
use crate::server::cache::{self, CacheStep};
use crate::server::core::CoreCtx;
use crate::server::decide::{Decision, ReqHeaders, RequestView, decide};
use crate::server::respond::RequestId;
use crate::telemetry::request_id::{self, REQUEST_ID_LEN};

use super::Activity;

/// Bodies up to this size are handed to h2 at once (it buffers them); larger ones are sent as
/// the client's flow-control window opens.
const SEND_AT_ONCE_BYTES: usize = 16 * 1024;

/// Marks the stream finished for the connection's idle accounting, however the task ends.
struct Done(Rc<Activity>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.last_done.set(Instant::now());
    }
}

/// What the response to one request depends on besides its status.
pub(super) struct Ctx<'a> {
    pub ctx: &'a CoreCtx,
    pub info: &'a ConnInfo,
    pub request_id: RequestId,
    pub date: [u8; 29],
    pub started: Instant,
    pub is_head: bool,
    /// Idle time allowed between pieces of the client's body.
    pub client_read_timeout: Duration,
}

pub(super) async fn serve(
    ctx: Rc<CoreCtx>,
    info: Rc<ConnInfo>,
    activity: Rc<Activity>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let _done = Done(activity);
    let started = Instant::now();
    let snap = ctx.snapshot();
    let (parts, mut body) = req.into_parts();
    let incoming_id = parts.headers.get("x-request-id").map(HeaderValue::as_bytes);
    let server = snap.snap.server();
    let sx = Ctx {
        ctx: &ctx,
        info: &info,
        request_id: new_request_id(&ctx, incoming_id),
        date: ctx.date(),
        started,
        is_head: parts.method == http::Method::HEAD,
        client_read_timeout: Duration::from_millis(server.keepalive_idle_timeout_ms),
    };
    let host = match parts.uri.authority() {
        Some(a) => a.host(),
        None => parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(http1::host_without_port)
            .unwrap_or(""),
    };
    let path = parts.uri.path();
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let view = RequestView {
        method: parts.method.as_str(),
        path,
        host,
        content_length,
        query: parts.uri.query(),
        headers: ReqHeaders::H2(&parts.headers),
    };
    let mut params = Params::default();
    let (slot, status) = match decide(&ctx, &snap, &view, &mut params) {
        // A websocket API's stage over HTTP/2: WebSockets need HTTP/1.1's Upgrade (RFC 8441's
        // extended CONNECT is not offered), so the client is told to use HTTP/1.1.
        Decision::WebSocket { slot, .. } => {
            send_error(&sx, &mut respond, ErrorKind::UpgradeRequired, None);
            (slot, ErrorKind::UpgradeRequired.status())
        }
        Decision::Refuse {
            kind,
            slot,
            retry_after_s,
            ..
        } => {
            send_error(&sx, &mut respond, kind, retry_after_s);
            (slot, kind.status())
        }
        Decision::Mock {
            slot,
            mock,
            body_limit,
            ..
        } => {
            // Read the body first, as HTTP/1.1 does: one over the route's limit gets 413.
            match drain(&sx, &mut body, body_limit).await {
                Ok(()) => {
                    send_mock(&sx, &mut respond, mock, path, &params).await;
                    (slot, mock.status)
                }
                Err(Some(kind)) => {
                    send_error(&sx, &mut respond, kind, None);
                    (slot, kind.status())
                }
                Err(None) => (slot, 499),
            }
        }
        Decision::CacheHit {
            slot,
            entry,
            warn,
            body_limit,
            ..
        } => {
            let status = answer_hit(&sx, &mut body, &mut respond, &entry, warn, body_limit).await;
            (slot, status)
        }
        Decision::Proxy {
            slot,
            route,
            target,
            body_limit,
            cache,
        } => {
            let cache = match cache {
                CacheStep::Wait { wait, warn } => {
                    let timeout = Duration::from_millis(target.timeout_ms);
                    match cache::await_fill(&ctx, wait, timeout).await {
                        Some(entry) => {
                            let status =
                                answer_hit(&sx, &mut body, &mut respond, &entry, warn, body_limit)
                                    .await;
                            let us = started.elapsed().as_micros() as u64;
                            ctx.metrics.borrow_mut().record(slot, status, us);
                            return;
                        }
                        None => CacheStep::Pass { warn },
                    }
                }
                other => other,
            };
            let (mut fill, tag) = cache.into_fill();
            let cx = super::proxy::CacheCx {
                fill: fill.as_deref_mut(),
                tag,
            };
            let result = super::proxy::forward(
                &sx, &parts, body, respond, target, path, &params, body_limit, cx,
            )
            .await;
            if let Some(mut f) = fill {
                f.finish(&ctx, result.is_ok());
            }
            let status = result.unwrap_or_else(|why| {
                if let Some(dropped) = ctx.may_log() {
                    crate::log_warn!(
                        "proxy",
                        "h2 stream from {}{} cut: {} {why}{}",
                        info.peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
                        info.client_str(),
                        route.describe(&snap),
                        suppressed(dropped)
                    );
                }
                499
            });
            (slot, status)
        }
    };
    let us = started.elapsed().as_micros() as u64;
    ctx.metrics.borrow_mut().record(slot, status, us);
}

pub(super) fn suppressed(n: u64) -> String {
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

/// A response head with the headers every response carries.
pub(super) fn head(sx: &Ctx<'_>, status: u16) -> http::response::Builder {
    let mut b = Response::builder().status(status);
    if let Some(h) = b.headers_mut() {
        if let Ok(v) = HeaderValue::from_bytes(&sx.date) {
            h.insert(DATE, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(sx.request_id.as_bytes()) {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
    }
    b
}

/// Answers from a cache entry, once any request body is read (and discarded, as for a mock;
/// one over the route's limit gets 413). Returns the status sent (499: the client went away).
async fn answer_hit(
    sx: &Ctx<'_>,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    entry: &Entry,
    warn: bool,
    body_limit: u64,
) -> u16 {
    match drain(sx, body, body_limit).await {
        Ok(()) => {}
        Err(Some(kind)) => {
            send_error(sx, respond, kind, None);
            return kind.status();
        }
        Err(None) => return 499,
    }
    let mut b = head(sx, entry.status);
    if let Some(h) = b.headers_mut() {
        for (name, value) in cache::hit_headers(entry, sx.ctx.timers.now(), warn) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(&value),
            ) {
                h.append(n, v);
            }
        }
    }
    let Ok(resp) = b.body(()) else {
        return 500;
    };
    let end = sx.is_head || entry.body.is_empty();
    if let Ok(mut send) = respond.send_response(resp, end)
        && !end
    {
        // Small bodies are copied (no shared reference count touched from this core); large
        // ones share the entry's buffer.
        let data = if entry.body.len() <= SEND_AT_ONCE_BYTES {
            Bytes::copy_from_slice(&entry.body)
        } else {
            Bytes::from_owner(entry.body.clone())
        };
        let timeout = sx.client_read_timeout;
        let _ = sx
            .ctx
            .timers
            .timeout(timeout, send_data(&mut send, data, true))
            .await;
    }
    entry.status
}

/// A JSON error response (the bodies of `ErrorKind::body`), with `retry-after` when given.
pub(super) fn send_error(
    sx: &Ctx<'_>,
    respond: &mut SendResponse<Bytes>,
    kind: ErrorKind,
    retry_after_s: Option<u64>,
) {
    let body = kind.body();
    let mut b = head(sx, kind.status())
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len());
    if let Some(s) = retry_after_s {
        b = b.header(http::header::RETRY_AFTER, s);
    }
    let Ok(resp) = b.body(()) else {
        return;
    };
    let end = sx.is_head;
    if let Ok(mut send) = respond.send_response(resp, end)
        && !end
    {
        let _ = send.send_data(Bytes::from_static(body), true);
    }
}

async fn send_mock(
    sx: &Ctx<'_>,
    respond: &mut SendResponse<Bytes>,
    m: &MockResponse,
    path: &str,
    params: &Params,
) {
    let bodiless = m.bodiless();
    let mut b = head(sx, m.status);
    let mut scratch = Vec::new();
    if let Some(h) = b.headers_mut() {
        for (name, value) in &m.headers {
            if MockResponse::is_managed(name) {
                continue;
            }
            scratch.clear();
            value.render(path, params, &mut scratch);
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(&scratch),
            ) {
                h.append(n, v);
            }
        }
    }
    let body = if bodiless {
        Bytes::new()
    } else {
        match m.body.as_static() {
            Some(s) => Bytes::copy_from_slice(s),
            None => {
                let mut v = Vec::with_capacity(m.body.len(path, params));
                m.body.render(path, params, &mut v);
                Bytes::from(v)
            }
        }
    };
    if !bodiless {
        b = b.header(CONTENT_LENGTH, body.len());
    }
    let Ok(resp) = b.body(()) else {
        return;
    };
    let end = sx.is_head || body.is_empty();
    if let Ok(mut send) = respond.send_response(resp, end)
        && !end
    {
        let timeout = sx.client_read_timeout;
        let _ = sx
            .ctx
            .timers
            .timeout(timeout, send_data(&mut send, body, true))
            .await;
    }
}

/// Sends `data` as the client's window allows (small bodies at once).
pub(super) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.len() <= SEND_AT_ONCE_BYTES {
        return send.send_data(data, end);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// Reads and discards the request body, up to `limit` bytes. `Err(Some(413))` over the limit;
/// `Err(None)`: the client reset the stream, went away or stalled.
async fn drain(sx: &Ctx<'_>, body: &mut RecvStream, limit: u64) -> Result<(), Option<ErrorKind>> {
    let mut seen = 0u64;
    while !body.is_end_stream() {
        let next = sx
            .ctx
            .timers
            .timeout(sx.client_read_timeout, body.data())
            .await;
        match next {
            Ok(Some(Ok(chunk))) => {
                seen += chunk.len() as u64;
                let _ = body.flow_control().release_capacity(chunk.len());
                if seen > limit {
                    return Err(Some(ErrorKind::PayloadTooLarge));
                }
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(_))) | Err(_) => return Err(None),
        }
    }
    Ok(())
}

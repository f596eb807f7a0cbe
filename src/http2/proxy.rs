//! An HTTP/2 stream forwarded to an HTTP/1.1 backend through the core's keep-alive pool: the
//! request head rendered by `integration::http_proxy::render_head` (the same header rules as
//! for HTTP/1.1 clients), the request body streamed from the stream's `RecvStream` as it
//! arrives (flow-control capacity released as each piece is written to the backend; chunked
//! when no `content-length` was given, with the client's trailers), the response body streamed
//! back within the client's window.
//!
//! A cached route's miss fills the cache as the response streams (`CacheCx`).
//!
//! Failures before the response head went out are the same JSON errors as for HTTP/1.1 (502,
//! 504, 413, 400); after it, the stream is reset (`INTERNAL_ERROR`). A stale pooled connection
//! is retried once, only for idempotent requests without a body.

use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_LENGTH, COOKIE, HOST, HeaderName, HeaderValue};

use crate::cache::INVALIDATION_IGNORED_HEADER;
use crate::config::ProxyTarget;
use crate::error::ErrorKind;
use crate::http1::{self, BodyDecoder, Framing, HeadLimits, encode};
use crate::integration::http_proxy::{
    self, Failure, Outgoing, is_hop_by_hop, pump, reserve_read, timeout_failure,
};
use crate::integration::pool::UpstreamConn;
use crate::limits::HEADERS_CEILING;
use crate::router::Params;
use crate::server::cache::{CacheTag, Fill};
use crate::server::downstream::{ReadError, compact};

use super::stream::{Ctx, head, send_data, send_error, suppressed};

/// Largest backend read while relaying a body.
const RELAY_READ_BYTES: usize = 64 * 1024;

/// A failed attempt at one backend connection.
enum Attempt {
    /// Nothing of a response seen: may be retried on a fresh connection.
    Stale(String),
    Fail(Failure),
}

/// The response head as sent to the client, and what relaying its body needs.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    resp: http::Response<()>,
}

/// What a forwarded stream does with the response cache.
pub(super) struct CacheCx<'f> {
    /// A miss being filled: told of the response head and every body chunk (the caller
    /// finishes it).
    pub fill: Option<&'f mut Fill>,
    /// The cache headers the response gets.
    pub tag: CacheTag,
}

impl CacheCx<'_> {
    /// Adds the tag's headers to a response head.
    pub(super) fn tag_headers(&self, map: &mut http::HeaderMap) {
        if self.tag.miss {
            map.insert(
                HeaderName::from_static("x-cache"),
                HeaderValue::from_static("Miss"),
            );
        }
        if self.tag.warn {
            let (n, v) = INVALIDATION_IGNORED_HEADER;
            map.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
    }
}

/// Forwards the request and answers the stream. `Ok(status)`: a response (the backend's or an
/// error) was sent; `Err(why)`: the stream was cut (client gone, or the backend failed after
/// the response started).
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    sx: &Ctx<'_>,
    parts: &http::request::Parts,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    target: &ProxyTarget,
    path: &str,
    params: &Params,
    body_limit: u64,
    mut cx: CacheCx<'_>,
) -> Result<u16, String> {
    let ctx = sx.ctx;
    let (connect_timeout, limits) = {
        let snap = ctx.snapshot();
        let s = snap.snap.server();
        (
            Duration::from_millis(s.upstream_connect_timeout_ms),
            HeadLimits {
                header_bytes_max: s.header_bytes_max,
                headers_max: s.headers_max,
            },
        )
    };
    let deadline = sx.started + Duration::from_millis(target.timeout_ms);
    let framing = if body.is_end_stream() {
        Framing::Empty
    } else {
        match parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    };
    let req = render(sx, parts, target, path, params, framing);
    if target.h2 {
        return super::upstream::forward_from_h2(
            sx,
            &req,
            body,
            respond,
            target,
            body_limit,
            connect_timeout,
            cx,
        )
        .await;
    }
    let replayable = framing == Framing::Empty
        && matches!(
            parts.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        );

    let mut retried = false;
    let (up, head) = loop {
        let connect_by = deadline.min(ctx.timers.now() + connect_timeout);
        let attempt = match http_proxy::acquire(ctx, target, connect_by).await {
            Ok(mut up) => {
                let pooled = up.uses > 0;
                let r = exchange(sx, &mut up, &req, &mut body, framing, body_limit, deadline).await;
                match r {
                    Ok(()) => match read_head(sx, &mut up, &limits, deadline, &mut cx).await {
                        Ok(h) => Ok((up, h)),
                        Err(e) => Err((pooled, e)),
                    },
                    Err(e) => Err((pooled, e)),
                }
            }
            Err(f) => Err((false, Attempt::Fail(f))),
        };
        match attempt {
            Ok(ok) => break ok,
            Err((true, Attempt::Stale(why))) if replayable && !retried => {
                crate::log_debug!("proxy", "stale pooled connection ({why}); retrying");
                retried = true;
            }
            Err((_, Attempt::Stale(why))) => {
                let f = Failure::Respond(
                    ErrorKind::BadGateway,
                    format!("backend {}: {why}", target.addr),
                );
                return answer_failure(sx, &mut respond, f);
            }
            Err((_, Attempt::Fail(f))) => return answer_failure(sx, &mut respond, f),
        }
    };
    relay(sx, respond, up, head, target.timeout_ms, cx).await
}

/// The backend request head.
fn render(
    sx: &Ctx<'_>,
    parts: &http::request::Parts,
    target: &ProxyTarget,
    path: &str,
    params: &Params,
    framing: Framing,
) -> Vec<u8> {
    // HTTP/2 may split cookies into several fields (RFC 9113 §8.2.3); HTTP/1.1 wants one.
    let mut cookies: Vec<u8> = Vec::new();
    for v in parts.headers.get_all(COOKIE) {
        if !cookies.is_empty() {
            cookies.extend_from_slice(b"; ");
        }
        cookies.extend_from_slice(v.as_bytes());
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()));
    let out = Outgoing {
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        host,
        framing,
        connection: b"",
        // HTTP/2 has no Upgrade (RFC 9113 §8.6); WebSocket over h2 (RFC 8441) is not offered.
        upgrade_websocket: false,
    };
    let fields = parts
        .headers
        .iter()
        .filter(|(n, _)| **n != COOKIE)
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .chain((!cookies.is_empty()).then_some(("cookie", cookies.as_slice())));
    let mut req = Vec::with_capacity(1024);
    http_proxy::render_head(
        &mut req,
        &out,
        fields,
        target,
        params,
        sx.info,
        &sx.request_id,
    );
    req
}

/// Sends the head and the whole body to the backend.
async fn exchange(
    sx: &Ctx<'_>,
    up: &mut UpstreamConn,
    req: &[u8],
    body: &mut RecvStream,
    framing: Framing,
    body_limit: u64,
    deadline: Instant,
) -> Result<(), Attempt> {
    let timers = &sx.ctx.timers;
    up.buf.clear();
    let addr = up.addr;
    let write_err = |e: std::io::Error, stale: bool| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Attempt::Fail(timeout_failure(addr))
        } else if stale {
            Attempt::Stale(format!("send request: {e}"))
        } else {
            Attempt::Fail(Failure::Respond(
                ErrorKind::BadGateway,
                format!("backend {addr}: send body: {e}"),
            ))
        }
    };
    let compio::buf::BufResult(res, _) = up.write_all(timers, req.to_vec(), deadline).await;
    res.map_err(|e| write_err(e, true))?;
    if framing == Framing::Empty {
        return Ok(());
    }
    let chunked = framing == Framing::Chunked;
    let mut seen = 0u64;
    let mut wbuf = Vec::new();
    loop {
        let next = timers.timeout(sx.client_read_timeout, body.data()).await;
        wbuf.clear();
        let data = match next {
            Ok(Some(Ok(d))) => d,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Attempt::Fail(Failure::Abort(format!("client stream: {e}"))));
            }
            Err(_) => {
                return Err(Attempt::Fail(Failure::Abort(
                    "client request body timed out".into(),
                )));
            }
        };
        seen += data.len() as u64;
        if seen > body_limit {
            return Err(Attempt::Fail(Failure::Respond(
                ErrorKind::PayloadTooLarge,
                format!("request body over {body_limit} bytes"),
            )));
        }
        if data.is_empty() {
            continue;
        }
        if chunked {
            encode::chunk_header(&mut wbuf, data.len());
            wbuf.extend_from_slice(&data);
            encode::chunk_end(&mut wbuf);
        } else {
            wbuf.extend_from_slice(&data);
        }
        let buf = std::mem::take(&mut wbuf);
        let compio::buf::BufResult(res, buf) = up.write_all(timers, buf, deadline).await;
        wbuf = buf;
        res.map_err(|e| write_err(e, false))?;
        // Only now may the client send more: the backend has taken this piece.
        let _ = body.flow_control().release_capacity(data.len());
    }
    if chunked {
        wbuf.clear();
        let trailers = timers
            .timeout(sx.client_read_timeout, body.trailers())
            .await;
        wbuf.extend_from_slice(b"0\r\n");
        if let Ok(Ok(Some(t))) = trailers {
            for (name, value) in &t {
                if is_hop_by_hop(name.as_str().as_bytes()) {
                    continue;
                }
                encode::header(&mut wbuf, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        wbuf.extend_from_slice(b"\r\n");
        let compio::buf::BufResult(res, _) = up.write_all(timers, wbuf, deadline).await;
        res.map_err(|e| write_err(e, false))?;
    }
    Ok(())
}

/// Reads the backend's response head (skipping 1xx) and turns it into the client's.
async fn read_head(
    sx: &Ctx<'_>,
    up: &mut UpstreamConn,
    limits: &HeadLimits,
    deadline: Instant,
    cx: &mut CacheCx<'_>,
) -> Result<Head, Attempt> {
    let mut seen_any = false;
    loop {
        if !up.buf.is_empty() {
            seen_any = true;
            let mut headers = http1::header_slots::<HEADERS_CEILING>();
            let parsed = http1::parse_response(&up.buf, &mut headers, limits, sx.is_head);
            match parsed {
                Ok(Some(h)) if h.status == 101 => {
                    return Err(Attempt::Fail(Failure::Respond(
                        ErrorKind::BadGateway,
                        format!("backend {} answered 101 on an HTTP route", up.addr),
                    )));
                }
                Ok(Some(h)) if (100..200).contains(&h.status) => {
                    let n = h.head_len;
                    compact(&mut up.buf, n);
                    continue;
                }
                Ok(Some(h)) => {
                    let head = client_head(sx, &h, cx);
                    if let Some(fill) = cx.fill.as_deref_mut() {
                        let length = match h.framing {
                            Framing::Length(n) => Some(n),
                            _ => None,
                        };
                        fill.on_head(sx.ctx, h.status, h.headers, length);
                    }
                    let n = h.head_len;
                    compact(&mut up.buf, n);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Attempt::Fail(Failure::Respond(
                        ErrorKind::BadGateway,
                        format!("backend {}: invalid response head: {e}", up.addr),
                    )));
                }
            }
        }
        up.buf = reserve_read(std::mem::take(&mut up.buf), limits.header_bytes_max);
        match up.read_append(&sx.ctx.timers, deadline).await {
            Ok(_) => {}
            Err(ReadError::Timeout) => return Err(Attempt::Fail(timeout_failure(up.addr))),
            Err(ReadError::Eof) if !seen_any => {
                return Err(Attempt::Stale("closed before answering".into()));
            }
            Err(ReadError::Io(e)) if !seen_any => return Err(Attempt::Stale(format!("read: {e}"))),
            Err(e) => {
                return Err(Attempt::Fail(Failure::Respond(
                    ErrorKind::BadGateway,
                    format!("backend {}: response head: {e:?}", up.addr),
                )));
            }
        }
    }
}

/// The backend's status and end-to-end headers, `content-length` when the body has one, the
/// backend's `date` (or ours) and our `x-request-id`.
fn client_head(sx: &Ctx<'_>, h: &http1::ResponseHead<'_, '_>, cx: &CacheCx<'_>) -> Head {
    let mut b = head(sx, h.status);
    let connection = http1::header_value(h.headers, "connection").unwrap_or(b"");
    if let Some(map) = b.headers_mut() {
        for f in h.headers.iter() {
            let name = f.name.as_bytes();
            // A body's length is ours to state (below); a bodiless answer (HEAD, 204, 304)
            // keeps the backend's.
            if is_hop_by_hop(name)
                || name.eq_ignore_ascii_case(b"x-request-id")
                || (name.eq_ignore_ascii_case(b"content-length") && h.framing != Framing::Empty)
                || http1::has_token(connection, f.name)
            {
                continue;
            }
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(f.value),
            ) else {
                continue;
            };
            if n == http::header::DATE {
                map.insert(n, v);
            } else {
                map.append(n, v);
            }
        }
        if let Framing::Length(n) = h.framing {
            map.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        cx.tag_headers(map);
    }
    Head {
        status: h.status,
        framing: h.framing,
        keep_alive: h.keep_alive,
        // Cannot fail: the status came from the parser (100..=999) and every header was
        // validated by `HeaderName`/`HeaderValue` above.
        resp: b.body(()).unwrap_or_default(),
    }
}

/// Answers a failure that happened before any response went out.
fn answer_failure(
    sx: &Ctx<'_>,
    respond: &mut SendResponse<Bytes>,
    f: Failure,
) -> Result<u16, String> {
    match f {
        Failure::Respond(kind, why) => {
            if let Some(dropped) = sx.ctx.may_log() {
                crate::log_warn!(
                    "proxy",
                    "{} (h2): {why}{}{}",
                    kind.status(),
                    sx.info.client_str(),
                    suppressed(dropped)
                );
            }
            send_error(sx, respond, kind, None);
            Ok(kind.status())
        }
        Failure::Abort(why) => {
            respond.send_reset(h2::Reason::CANCEL);
            Err(why)
        }
    }
}

/// Sends the response head and streams the body; pools the backend connection if it can
/// carry another request.
async fn relay(
    sx: &Ctx<'_>,
    mut respond: SendResponse<Bytes>,
    mut up: UpstreamConn,
    head: Head,
    timeout_ms: u64,
    mut cx: CacheCx<'_>,
) -> Result<u16, String> {
    let timers = &sx.ctx.timers;
    let status = head.status;
    let end_now = sx.is_head || matches!(head.framing, Framing::Empty | Framing::Length(0));
    let mut send = respond
        .send_response(head.resp, end_now)
        .map_err(|e| format!("client stream: {e}"))?;
    up.uses += 1;
    let mut decoder = BodyDecoder::new(if sx.is_head {
        Framing::Empty
    } else {
        head.framing
    });
    let read_timeout = Duration::from_millis(timeout_ms);
    let cut = |send: &mut h2::SendStream<Bytes>, why: String| {
        send.send_reset(h2::Reason::INTERNAL_ERROR);
        Err(why)
    };
    if !end_now {
        loop {
            let mut chunk = Vec::with_capacity(up.buf.len());
            let (used, _) = match pump(&mut decoder, &up.buf, Some(&mut chunk), false) {
                Ok(r) => r,
                Err(e) => {
                    return cut(
                        &mut send,
                        format!("backend {}: response body: {e}", up.addr),
                    );
                }
            };
            compact(&mut up.buf, used);
            if let Some(fill) = cx.fill.as_deref_mut() {
                fill.on_data(sx.ctx, &chunk);
            }
            let done = decoder.is_done();
            if !chunk.is_empty() || done {
                let sent = timers
                    .timeout(read_timeout, send_data(&mut send, Bytes::from(chunk), done))
                    .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return cut(&mut send, format!("client stream: {e}")),
                    Err(_) => return cut(&mut send, "client did not read the response".into()),
                }
            }
            if done {
                break;
            }
            up.buf = reserve_read(std::mem::take(&mut up.buf), RELAY_READ_BYTES);
            match up.read_append(timers, timers.now() + read_timeout).await {
                Ok(_) => {}
                Err(ReadError::Eof) if head.framing == Framing::UntilClose => {
                    let _ = send.send_data(Bytes::new(), true);
                    return Ok(status);
                }
                Err(e) => {
                    return cut(
                        &mut send,
                        format!("backend {} failed mid-response: {e:?}", up.addr),
                    );
                }
            }
        }
    }
    if head.keep_alive && up.buf.is_empty() && decoder.is_done() {
        sx.ctx.pool.borrow_mut().put(up, Instant::now());
    }
    Ok(status)
}

//! The `http_proxy` integration: forwards a request to an HTTP/1.1 backend over a per-core
//! keep-alive pool and relays the response, streaming bodies both ways (never buffering a whole
//! body), removing hop-by-hop headers and adding `X-Forwarded-*` and `x-request-id`.
//!
//! Failure mapping: connect refused/reset, a malformed or truncated response head → 502
//! `{"message":"Bad Gateway"}`; no response head within `timeout_ms` (or no connection within
//! `upstream_connect_timeout_ms`) → 504 `{"message":"Endpoint request timed out"}`. A pooled
//! connection that turns out to be stale is retried once on a fresh one, only for idempotent
//! methods whose whole request is still in hand. Once the response head went out, a backend
//! failure can only cut the client connection (the client sees a truncated body).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compio::buf::BufResult;
use compio::net::TcpStream;

use crate::config::ProxyTarget;
use crate::error::ErrorKind;
use crate::http1::{self, BodyDecoder, Framing, HeadLimits, RequestHead, encode};
use crate::limits::HEADERS_CEILING;
use crate::router::Params;
use crate::server::accept::ConnInfo;
use crate::server::cache::{CacheTag, Fill};
use crate::server::core::CoreCtx;
use crate::server::downstream::{Downstream, ReadError, compact};
use crate::server::respond::{CONTINUE, RequestId};

use super::pool::UpstreamConn;

/// Largest read from a backend while relaying a body, in bytes: what one client write carries.
const RELAY_READ_BYTES: usize = 64 * 1024;

/// What the connection driver knows about the exchange, owned (no borrow of the read buffer).
#[derive(Debug)]
pub struct Exchange {
    pub started: Instant,
    pub request_id: RequestId,
    /// The `Date` value for the response, read from the core's clock when the head arrived.
    pub date: [u8; 29],
    /// Decodes the client's request body.
    pub body: BodyDecoder,
    pub body_chunked: bool,
    pub body_limit: u64,
    pub body_seen: u64,
    pub expect_continue: bool,
    pub keep_alive: bool,
    pub http10: bool,
    pub is_head: bool,
    pub idempotent: bool,
    /// Idle time allowed between reads of the client's body.
    pub client_read_timeout: Duration,
    pub head_limits: HeadLimits,
    pub connect_timeout: Duration,
    /// A WebSocket upgrade (`is_websocket_upgrade`): its `Upgrade` and `Connection` go to the
    /// backend, and a `101` from it is relayed instead of refused.
    pub upgrade: bool,
    /// Set by `forward` when the backend switched protocols: the connection to relay with
    /// (`tunnel::relay`), holding any bytes the backend sent after its `101`.
    pub upgraded: Option<UpstreamConn>,
    /// A cache miss being filled from this response: told of its head and every body chunk;
    /// the connection driver finishes it when `forward` returns.
    pub cache: Option<Box<Fill>>,
    /// The cache headers the response gets (`x-cache: Miss` on a cached route).
    pub cache_tag: CacheTag,
}

/// How a forward ended when it did not complete.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was sent to the client yet: answer with this error.
    Respond(ErrorKind, String),
    /// The client connection must be closed now (client gone, or a response already started).
    Abort(String),
}

/// The response the client got.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    pub status: u16,
    /// The client connection may carry another request.
    pub keep_alive: bool,
}

/// An HTTP/1.1 `Upgrade: websocket` request (with `Connection: upgrade`), which an
/// `http_proxy` route forwards as such.
pub fn is_websocket_upgrade(head: &RequestHead<'_, '_>) -> bool {
    head.upgrade.is_some_and(|u| {
        u.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// Writes the request head for the backend into `req`.
pub fn render_request(
    req: &mut Vec<u8>,
    head: &RequestHead<'_, '_>,
    target: &ProxyTarget,
    params: &Params,
    info: &ConnInfo,
    request_id: &RequestId,
) {
    let out = Outgoing {
        method: head.method,
        path: head.path,
        query: head.query,
        host: head.host,
        framing: head.framing,
        connection: http1::header_value(head.headers, "connection").unwrap_or(b""),
        upgrade_websocket: is_websocket_upgrade(head),
    };
    let fields = head.headers.iter().map(|h| (h.name, h.value));
    render_head(req, &out, fields, target, params, info, request_id);
}

/// The parts of a client request the backend request is made of, whatever the client spoke.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// As routed (the path `params` index into).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The host the client named (`Host` or `:authority`), for `x-forwarded-host`.
    pub host: Option<&'a str>,
    /// How the body is sent to the backend.
    pub framing: Framing,
    /// The client's `Connection` header: the fields it names are hop-by-hop too.
    pub connection: &'a [u8],
    /// An HTTP/1.1 `Upgrade: websocket` to relay: `Connection`/`Upgrade` go to the backend.
    pub upgrade_websocket: bool,
}

/// Writes an HTTP/1.1 request head for the backend into `req`: the target's path and query,
/// the client's end-to-end `fields`, then ours (`x-forwarded-*`, `x-request-id`, the client
/// certificate's identity, framing).
pub fn render_head<'f>(
    req: &mut Vec<u8>,
    out: &Outgoing<'_>,
    fields: impl Iterator<Item = (&'f str, &'f [u8])>,
    target: &ProxyTarget,
    params: &Params,
    info: &ConnInfo,
    request_id: &RequestId,
) {
    req.extend_from_slice(out.method.as_bytes());
    req.push(b' ');
    target.path.render(out.path, params, req);
    match (&target.query, out.query) {
        (Some(q), Some(c)) if !c.is_empty() => {
            req.push(b'?');
            req.extend_from_slice(q.as_bytes());
            req.push(b'&');
            req.extend_from_slice(c.as_bytes());
        }
        (Some(q), _) => {
            req.push(b'?');
            req.extend_from_slice(q.as_bytes());
        }
        (None, Some(c)) => {
            req.push(b'?');
            req.extend_from_slice(c.as_bytes());
        }
        (None, None) => {}
    }
    req.extend_from_slice(b" HTTP/1.1\r\n");
    encode::header(req, b"host", target.authority.as_bytes());

    let mut xff: Option<&[u8]> = None;
    for (field, value) in fields {
        let name = field.as_bytes();
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff = Some(value);
            continue;
        }
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || name.eq_ignore_ascii_case(b"x-request-id")
            // Only the gateway vouches for a client certificate.
            || name.eq_ignore_ascii_case(b"x-client-cert-subject")
            || name.eq_ignore_ascii_case(b"x-client-cert-fingerprint")
            || http1::has_token(out.connection, field)
        {
            continue;
        }
        encode::header(req, name, value);
    }
    req.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff.filter(|v| !v.is_empty()) {
        req.extend_from_slice(prev);
        req.extend_from_slice(b", ");
    }
    if let Some(p) = info.peer {
        let mut ip = [0u8; 64];
        let n = format_ip(p, &mut ip);
        req.extend_from_slice(&ip[..n]);
    }
    req.extend_from_slice(b"\r\n");
    let proto: &[u8] = if info.tls.is_some() {
        b"https"
    } else {
        b"http"
    };
    encode::header(req, b"x-forwarded-proto", proto);
    if let Some(h) = out.host {
        encode::header(req, b"x-forwarded-host", h.as_bytes());
    }
    encode::header(req, b"x-request-id", request_id.as_bytes());
    if out.upgrade_websocket {
        // Hop-by-hop, so dropped above; an upgrade is the one case they are meant for the
        // next hop. The Sec-WebSocket-* headers are end-to-end and went through.
        encode::header(req, b"connection", b"upgrade");
        encode::header(req, b"upgrade", b"websocket");
    }
    if let Some(c) = &info.client_cert {
        encode::header(req, b"x-client-cert-subject", c.subject.as_bytes());
        encode::header(req, b"x-client-cert-fingerprint", c.fingerprint.as_bytes());
    }
    match out.framing {
        Framing::Length(n) => encode::header_u64(req, b"content-length", n),
        Framing::Chunked => encode::header(req, b"transfer-encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    encode::end_head(req);
}

fn format_ip(p: SocketAddr, buf: &mut [u8; 64]) -> usize {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{}", p.ip());
    cur.position() as usize
}

/// Connection-specific header fields that are never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Decodes as much of `input` as the decoder takes, appending the data to `out` (re-chunked
/// when `chunked_out`; discarded when `out` is `None`). Returns (bytes consumed, data bytes).
/// Writes the last chunk when the body ends and `chunked_out`.
pub fn pump(
    decoder: &mut BodyDecoder,
    input: &[u8],
    out: Option<&mut Vec<u8>>,
    chunked_out: bool,
) -> Result<(usize, u64), http1::BodyError> {
    pump_observe(decoder, input, out, chunked_out, |_| {})
}

/// `pump`, also showing every decoded piece of data to `observe` (a cache fill collecting the
/// body as it streams).
pub fn pump_observe(
    decoder: &mut BodyDecoder,
    input: &[u8],
    mut out: Option<&mut Vec<u8>>,
    chunked_out: bool,
    mut observe: impl FnMut(&[u8]),
) -> Result<(usize, u64), http1::BodyError> {
    let mut consumed = 0;
    let mut data = 0u64;
    while !decoder.is_done() && consumed < input.len() {
        let (used, range) = decoder.decode(&input[consumed..])?;
        let chunk = &input[consumed..][range];
        if !chunk.is_empty() {
            observe(chunk);
            data += chunk.len() as u64;
            if let Some(out) = out.as_deref_mut() {
                if chunked_out {
                    encode::chunk_header(out, chunk.len());
                    out.extend_from_slice(chunk);
                    encode::chunk_end(out);
                } else {
                    out.extend_from_slice(chunk);
                }
            }
        }
        consumed += used;
        if used == 0 {
            break;
        }
    }
    if decoder.is_done()
        && chunked_out
        && let Some(out) = out
    {
        encode::last_chunk(out);
    }
    Ok((consumed, data))
}

/// Forwards the exchange whose backend request head is in `req` and relays the response into
/// `down.out`. `req` is left in an unspecified state.
pub async fn forward(
    ctx: &CoreCtx,
    down: &mut Downstream,
    req: &mut Vec<u8>,
    target: &ProxyTarget,
    x: &mut Exchange,
) -> Result<Relayed, Failure> {
    if target.h2 {
        return crate::http2::upstream::forward_from_h1(ctx, down, req, target, x).await;
    }
    let deadline = x.started + Duration::from_millis(target.timeout_ms);

    // The part of the body that arrived with the head goes out with it.
    take_body(down, req, x)?;
    let replayable = x.idempotent && x.body.is_done();

    let mut retried = false;
    let (mut up, resp) = loop {
        let connect_by = deadline.min(ctx.timers.now() + x.connect_timeout);
        let mut up = acquire(ctx, target, connect_by).await?;
        let pooled = up.uses > 0;
        match exchange_head(ctx, down, req, &mut up, x, deadline).await {
            Ok(resp) => break (up, resp),
            Err(Stale::Retry(why)) if pooled && replayable && !retried => {
                crate::log_debug!(
                    "proxy",
                    "stale pooled connection to {} ({why}); retrying on a fresh one",
                    target.addr
                );
                retried = true;
            }
            Err(Stale::Retry(why)) => {
                return Err(Failure::Respond(
                    ErrorKind::BadGateway,
                    format!("backend {}: {why}", target.addr),
                ));
            }
            Err(Stale::Fail(f)) => return Err(f),
        }
    };
    up.uses += 1;
    if resp.status == 101 {
        compact(&mut up.buf, resp.head_len);
        x.upgraded = Some(up);
        return Ok(Relayed {
            status: 101,
            keep_alive: false,
        });
    }
    relay_response(ctx, down, up, x, resp, target.timeout_ms).await
}

/// Moves what the decoder takes from the client's buffered bytes into `req`.
fn take_body(down: &mut Downstream, req: &mut Vec<u8>, x: &mut Exchange) -> Result<(), Failure> {
    if x.body.is_done() || down.avail().is_empty() {
        return Ok(());
    }
    let (used, n) = pump(&mut x.body, down.avail(), Some(req), x.body_chunked)
        .map_err(|e| Failure::Respond(ErrorKind::BadRequest, format!("request body: {e}")))?;
    down.consume(used);
    x.body_seen += n;
    if x.body_seen > x.body_limit {
        return Err(Failure::Respond(
            ErrorKind::PayloadTooLarge,
            format!("request body over {} bytes", x.body_limit),
        ));
    }
    Ok(())
}

/// A pooled connection to the target's backend, or a new one (TLS handshake included).
pub async fn acquire(
    ctx: &CoreCtx,
    target: &ProxyTarget,
    connect_by: Instant,
) -> Result<UpstreamConn, Failure> {
    let addr = target.addr;
    let tls_id = target.tls.as_ref().map_or(0, |t| t.id);
    if let Some(c) = ctx.pool.borrow_mut().take(addr, tls_id, ctx.timers.now()) {
        return Ok(c);
    }
    match ctx
        .timers
        .timeout_at(connect_by, TcpStream::connect(addr))
        .await
    {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            match &target.tls {
                None => Ok(UpstreamConn::new(stream, addr)),
                Some(tls) => UpstreamConn::connect_tls(stream, addr, tls, &ctx.timers, connect_by)
                    .await
                    .map_err(|why| {
                        let kind = if why.ends_with("timed out") {
                            ErrorKind::GatewayTimeout
                        } else {
                            ErrorKind::BadGateway
                        };
                        Failure::Respond(kind, format!("backend {addr}: {why}"))
                    }),
            }
        }
        Ok(Err(e)) => Err(Failure::Respond(
            ErrorKind::BadGateway,
            format!("connect to backend {addr}: {e}"),
        )),
        Err(_) => Err(Failure::Respond(
            ErrorKind::GatewayTimeout,
            format!("connect to backend {addr}: timed out"),
        )),
    }
}

/// A failed attempt: retryable on a fresh connection (nothing of the response seen), or final.
enum Stale {
    Retry(String),
    Fail(Failure),
}

/// The parts of a backend response head the relay needs after the head bytes are gone.
struct RespHead {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// Bytes of `up.buf` the head used.
    head_len: usize,
}

/// Sends the request (head, buffered body, then the rest of the body streamed from the client)
/// and reads the backend's response head, rendering the client's response head into `down.out`.
async fn exchange_head(
    ctx: &CoreCtx,
    down: &mut Downstream,
    req: &mut Vec<u8>,
    up: &mut UpstreamConn,
    x: &mut Exchange,
    deadline: Instant,
) -> Result<RespHead, Stale> {
    up.buf.clear();
    let first = std::mem::take(req);
    let BufResult(res, first) = up.write_all(&ctx.timers, first, deadline).await;
    *req = first;
    if let Err(e) = res {
        return Err(if e.kind() == std::io::ErrorKind::TimedOut {
            Stale::Fail(timeout_failure(up.addr))
        } else {
            Stale::Retry(format!("send request: {e}"))
        });
    }

    // The rest of the body, as the client sends it.
    if !x.body.is_done() {
        if x.expect_continue {
            down.out.extend_from_slice(CONTINUE);
            down.flush()
                .await
                .map_err(|e| Stale::Fail(Failure::Abort(format!("client write: {e}"))))?;
        }
        while !x.body.is_done() {
            req.clear();
            let by = ctx.timers.now() + x.client_read_timeout;
            match down.fill_body(&ctx.timers, by).await {
                Ok(_) => {}
                Err(ReadError::Eof) => {
                    return Err(Stale::Fail(Failure::Abort(
                        "client closed during the request body".into(),
                    )));
                }
                Err(ReadError::Timeout) => {
                    return Err(Stale::Fail(Failure::Abort(
                        "client request body timed out".into(),
                    )));
                }
                Err(ReadError::Io(e)) => {
                    return Err(Stale::Fail(Failure::Abort(format!("client read: {e}"))));
                }
            }
            take_body(down, req, x).map_err(Stale::Fail)?;
            if req.is_empty() {
                continue;
            }
            let chunk = std::mem::take(req);
            let BufResult(res, chunk) = up.write_all(&ctx.timers, chunk, deadline).await;
            *req = chunk;
            res.map_err(|e| {
                Stale::Fail(if e.kind() == std::io::ErrorKind::TimedOut {
                    timeout_failure(up.addr)
                } else {
                    Failure::Respond(
                        ErrorKind::BadGateway,
                        format!("backend {}: send body: {e}", up.addr),
                    )
                })
            })?;
        }
    }

    // The response head, skipping interim 1xx responses.
    let mut seen_any = false;
    loop {
        if !up.buf.is_empty() {
            seen_any = true;
            let mut headers = http1::header_slots::<HEADERS_CEILING>();
            match http1::parse_response(&up.buf, &mut headers, &x.head_limits, x.is_head) {
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    let n = h.head_len;
                    compact(&mut up.buf, n);
                    continue;
                }
                Ok(Some(h)) if h.status == 101 && x.upgrade => {
                    render_switching_head(&mut down.out, &h, x);
                    return Ok(RespHead {
                        status: 101,
                        framing: Framing::Empty,
                        keep_alive: false,
                        head_len: h.head_len,
                    });
                }
                Ok(Some(h)) if h.status == 101 => {
                    return Err(Stale::Fail(Failure::Respond(
                        ErrorKind::BadGateway,
                        format!(
                            "backend {} answered 101 Switching Protocols on an HTTP route",
                            up.addr
                        ),
                    )));
                }
                Ok(Some(h)) => {
                    // A drain that began while the backend worked still gets its
                    // `connection: close` on this response.
                    x.keep_alive &= !ctx.draining();
                    let resp = RespHead {
                        status: h.status,
                        framing: h.framing,
                        keep_alive: h.keep_alive,
                        head_len: h.head_len,
                    };
                    render_client_head(&mut down.out, &h, x, resp.framing);
                    if let Some(fill) = x.cache.as_mut() {
                        let length = match h.framing {
                            Framing::Length(n) => Some(n),
                            _ => None,
                        };
                        fill.on_head(ctx, h.status, h.headers, length);
                    }
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Stale::Fail(Failure::Respond(
                        ErrorKind::BadGateway,
                        format!("backend {}: invalid response head: {e}", up.addr),
                    )));
                }
            }
        }
        up.buf = reserve_read(std::mem::take(&mut up.buf), x.head_limits.header_bytes_max);
        match up.read_append(&ctx.timers, deadline).await {
            Ok(_) => {}
            Err(ReadError::Timeout) => return Err(Stale::Fail(timeout_failure(up.addr))),
            Err(ReadError::Eof) if !seen_any => {
                return Err(Stale::Retry("closed before answering".into()));
            }
            Err(ReadError::Eof) => {
                return Err(Stale::Fail(Failure::Respond(
                    ErrorKind::BadGateway,
                    format!(
                        "backend {}: closed in the middle of the response head",
                        up.addr
                    ),
                )));
            }
            Err(ReadError::Io(e)) if !seen_any => return Err(Stale::Retry(format!("read: {e}"))),
            Err(ReadError::Io(e)) => {
                return Err(Stale::Fail(Failure::Respond(
                    ErrorKind::BadGateway,
                    format!("backend {}: read: {e}", up.addr),
                )));
            }
        }
    }
}

pub fn timeout_failure(addr: SocketAddr) -> Failure {
    Failure::Respond(
        ErrorKind::GatewayTimeout,
        format!("backend {addr}: no response within the integration timeout"),
    )
}

/// The client's response head: the backend's status and end-to-end headers, our framing and
/// common headers. The backend's `date` is kept (it is the origin's, RFC 9110 §6.6.1); ours is
/// added only when it sent none.
fn render_client_head(
    out: &mut Vec<u8>,
    h: &http1::ResponseHead<'_, '_>,
    x: &Exchange,
    framing: Framing,
) {
    let chunked = client_chunked(x, framing);
    let keep_alive = client_keep_alive(x, framing);
    encode::status_line(out, h.status);
    let connection = http1::header_value(h.headers, "connection").unwrap_or(b"");
    let mut has_date = false;
    for f in h.headers {
        let name = f.name.as_bytes();
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"x-request-id")
            || http1::has_token(connection, f.name)
            || (name.eq_ignore_ascii_case(b"content-length") && framing != Framing::Empty)
        {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case(b"date");
        encode::header(out, name, f.value);
    }
    match framing {
        Framing::Length(n) => encode::header_u64(out, b"content-length", n),
        _ if chunked => encode::header(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    if !has_date {
        encode::header(out, b"date", &x.date);
    }
    encode::header(out, b"x-request-id", x.request_id.as_bytes());
    x.cache_tag.write(out);
    if !keep_alive {
        encode::header(out, b"connection", b"close");
    } else if x.http10 {
        encode::header(out, b"connection", b"keep-alive");
    }
    encode::end_head(out);
}

/// The client's `101`: the backend's headers (its `Sec-WebSocket-Accept` and
/// `Sec-WebSocket-Protocol` among them) with `Connection`/`Upgrade` set for this hop.
fn render_switching_head(out: &mut Vec<u8>, h: &http1::ResponseHead<'_, '_>, x: &Exchange) {
    encode::status_line(out, 101);
    let connection = http1::header_value(h.headers, "connection").unwrap_or(b"");
    for f in h.headers {
        let name = f.name.as_bytes();
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"x-request-id")
            || name.eq_ignore_ascii_case(b"content-length")
            || http1::has_token(connection, f.name)
        {
            continue;
        }
        encode::header(out, name, f.value);
    }
    encode::header(out, b"connection", b"upgrade");
    encode::header(out, b"upgrade", b"websocket");
    encode::header(out, b"x-request-id", x.request_id.as_bytes());
    encode::end_head(out);
}

fn client_chunked(x: &Exchange, framing: Framing) -> bool {
    matches!(framing, Framing::Chunked | Framing::UntilClose) && !x.http10 && !x.is_head
}

fn client_keep_alive(x: &Exchange, framing: Framing) -> bool {
    x.keep_alive && !(framing == Framing::UntilClose && x.http10)
}

/// Streams the response body from the backend to the client (and into the cache fill, if
/// any), then pools the backend connection if it can carry another request.
async fn relay_response(
    ctx: &CoreCtx,
    down: &mut Downstream,
    mut up: UpstreamConn,
    x: &mut Exchange,
    resp: RespHead,
    timeout_ms: u64,
) -> Result<Relayed, Failure> {
    let relayed = Relayed {
        status: resp.status,
        keep_alive: client_keep_alive(x, resp.framing),
    };
    compact(&mut up.buf, resp.head_len);
    let chunked_out = client_chunked(x, resp.framing);
    let mut decoder = BodyDecoder::new(resp.framing);
    let read_timeout = Duration::from_millis(timeout_ms);
    loop {
        let fill = &mut x.cache;
        let (used, _) = pump_observe(
            &mut decoder,
            &up.buf,
            Some(&mut down.out),
            chunked_out,
            |data| {
                if let Some(f) = fill.as_mut() {
                    f.on_data(ctx, data);
                }
            },
        )
        .map_err(|e| Failure::Abort(format!("backend {}: response body: {e}", up.addr)))?;
        compact(&mut up.buf, used);
        if decoder.is_done() {
            break;
        }
        // Whatever is decoded goes out before the next backend read, so memory stays flat.
        if !down.out.is_empty() {
            down.flush()
                .await
                .map_err(|e| Failure::Abort(format!("client write: {e}")))?;
        }
        up.buf = reserve_read(std::mem::take(&mut up.buf), RELAY_READ_BYTES);
        match up
            .read_append(&ctx.timers, ctx.timers.now() + read_timeout)
            .await
        {
            Ok(_) => {}
            Err(ReadError::Eof) if resp.framing == Framing::UntilClose => {
                if chunked_out {
                    encode::last_chunk(&mut down.out);
                }
                return Ok(relayed);
            }
            Err(ReadError::Eof) => {
                return Err(Failure::Abort(format!(
                    "backend {} closed mid-response",
                    up.addr
                )));
            }
            Err(ReadError::Timeout) => {
                return Err(Failure::Abort(format!(
                    "backend {} stalled mid-response",
                    up.addr
                )));
            }
            Err(ReadError::Io(e)) => {
                return Err(Failure::Abort(format!("backend {}: read: {e}", up.addr)));
            }
        }
    }
    if resp.keep_alive && up.buf.is_empty() {
        ctx.pool.borrow_mut().put(up, Instant::now());
    }
    Ok(relayed)
}

/// `buf` with room for a read: doubled (between `READ_BUF_BYTES` and `max`) when nearly full.
pub fn reserve_read(mut buf: Vec<u8>, max: usize) -> Vec<u8> {
    if buf.capacity() - buf.len() < 4096 {
        let want = (buf.capacity() * 2).clamp(
            crate::limits::READ_BUF_BYTES,
            max.max(crate::limits::READ_BUF_BYTES),
        );
        buf.reserve(want.saturating_sub(buf.len()).max(4096));
    }
    buf
}

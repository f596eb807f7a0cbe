//! HTTP/2 to backends (`upstream_protocol = "h2"`): one client connection per backend (address
//! and TLS settings) per core, shared by every request on the core (streams multiplex), made on
//! first use: TLS with ALPN `h2` for `https://`, prior knowledge for `http://`.
//!
//! The backend request is first rendered as an HTTP/1.1 head by
//! `integration::http_proxy::render_head` (so header rules stay in one place), then turned into
//! an `http::Request` here. Bodies stream both ways within flow control; trailers pass from an
//! HTTP/2 client to the backend and back. Errors before the response are the usual 502/504.
//!
//! Per-core state is a thread-local map (each core is one thread), so nothing here is shared
//! between cores.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use compio::net::TcpStream;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE, HeaderName, HeaderValue};

use crate::config::ProxyTarget;
use crate::error::ErrorKind;
use crate::http1::{self, Framing, encode};
use crate::integration::http_proxy::{Exchange, Failure, Relayed, is_hop_by_hop, pump};
use crate::integration::pool::UpstreamConn;
use crate::limits::{H2_CONN_WINDOW_BYTES, H2_STREAM_WINDOW_BYTES, HEADERS_CEILING};
use crate::net::io_compat::CompatStream;
use crate::server::core::CoreCtx;
use crate::server::downstream::{Downstream, ReadError};
use crate::server::respond::CONTINUE;

use super::stream::{Ctx, head, send_data, send_error};

thread_local! {
    static CONNS: RefCell<AHashMap<(SocketAddr, u64), SendRequest<Bytes>>> =
        RefCell::new(AHashMap::new());
}

/// A sender ready for one more stream to the target's backend.
async fn sender(
    ctx: &CoreCtx,
    target: &ProxyTarget,
    connect_by: Instant,
) -> Result<SendRequest<Bytes>, Failure> {
    let key = (target.addr, target.tls.as_ref().map_or(0, |t| t.id));
    if let Some(s) = CONNS.with(|c| c.borrow().get(&key).cloned()) {
        if let Ok(Ok(s)) = ctx.timers.timeout_at(connect_by, s.ready()).await {
            return Ok(s);
        }
        CONNS.with(|c| c.borrow_mut().remove(&key));
    }
    let s = connect(ctx, target, connect_by).await?;
    CONNS.with(|c| c.borrow_mut().insert(key, s.clone()));
    match ctx.timers.timeout_at(connect_by, s.ready()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(bad_gateway(target, format!("h2: {e}"))),
        Err(_) => Err(timed_out(target)),
    }
}

async fn connect(
    ctx: &CoreCtx,
    target: &ProxyTarget,
    connect_by: Instant,
) -> Result<SendRequest<Bytes>, Failure> {
    let addr = target.addr;
    let stream = match ctx
        .timers
        .timeout_at(connect_by, TcpStream::connect(addr))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(bad_gateway(target, format!("connect: {e}"))),
        Err(_) => return Err(timed_out(target)),
    };
    let _ = stream.set_nodelay(true);
    let io = match &target.tls {
        None => CompatStream::new(stream, None, Vec::new()),
        Some(tls) => {
            let up = UpstreamConn::connect_tls(stream, addr, tls, &ctx.timers, connect_by)
                .await
                .map_err(|why| bad_gateway(target, why))?;
            if !up.is_h2() {
                return Err(bad_gateway(
                    target,
                    "did not agree to HTTP/2 by ALPN (upstream_protocol = \"h2\")".into(),
                ));
            }
            let (s, t, buf) = up.into_parts();
            CompatStream::new(s, t, buf)
        }
    };
    let mut b = h2::client::Builder::new();
    b.initial_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONN_WINDOW_BYTES)
        .enable_push(false);
    let (send, conn) = match ctx.timers.timeout_at(connect_by, b.handshake(io)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(bad_gateway(target, format!("h2 handshake: {e}"))),
        Err(_) => return Err(timed_out(target)),
    };
    compio::runtime::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    Ok(send)
}

fn bad_gateway(target: &ProxyTarget, why: String) -> Failure {
    Failure::Respond(
        ErrorKind::BadGateway,
        format!("backend {}: {why}", target.addr),
    )
}

fn timed_out(target: &ProxyTarget) -> Failure {
    crate::integration::http_proxy::timeout_failure(target.addr)
}

/// The rendered HTTP/1.1 head as an HTTP/2 request to the target, and how its body is framed.
fn request(rendered: &[u8], target: &ProxyTarget) -> Result<(http::Request<()>, Framing), String> {
    let mut headers = http1::header_slots::<HEADERS_CEILING>();
    let limits = http1::HeadLimits {
        header_bytes_max: rendered.len().max(1024),
        headers_max: HEADERS_CEILING,
    };
    let h = match http1::parse_request(rendered, &mut headers, &limits) {
        Ok(Some(h)) => h,
        _ => return Err("cannot convert the request head".into()),
    };
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let target_path = match h.query {
        Some(q) => format!("{}?{q}", h.path),
        None => h.path.to_string(),
    };
    let uri = format!("{scheme}://{}{target_path}", target.authority);
    let mut b = http::Request::builder().method(h.method).uri(uri);
    if let Some(map) = b.headers_mut() {
        for f in h.headers.iter() {
            let name = f.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") || is_hop_by_hop(name) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(f.value),
            ) {
                map.append(n, v);
            }
        }
    }
    let framing = h.framing;
    b.body(()).map(|r| (r, framing)).map_err(|e| e.to_string())
}

/// The backend's response headers for the client: end-to-end ones, the backend's `date` or
/// ours, our `x-request-id`.
fn response_fields(
    resp: &http::response::Parts,
) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    resp.headers.iter().filter(|(n, _)| {
        let b = n.as_str().as_bytes();
        !is_hop_by_hop(b) && !b.eq_ignore_ascii_case(b"x-request-id")
    })
}

/// Sends `data` on an upstream stream as its window opens.
async fn send_up(send: &mut SendStream<Bytes>, data: Bytes, end: bool) -> Result<(), h2::Error> {
    send_data(send, data, end).await
}

/// An HTTP/2 client's request (its head rendered in `rendered`) to an HTTP/2 backend.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward_from_h2(
    sx: &Ctx<'_>,
    rendered: &[u8],
    mut body: RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
    target: &ProxyTarget,
    body_limit: u64,
    connect_timeout: Duration,
    mut cx: super::proxy::CacheCx<'_>,
) -> Result<u16, String> {
    let ctx = sx.ctx;
    let deadline = sx.started + Duration::from_millis(target.timeout_ms);
    let fail = |respond: &mut h2::server::SendResponse<Bytes>, f: Failure| match f {
        Failure::Respond(kind, why) => {
            crate::log_warn!(
                "proxy",
                "{} (h2 backend): {why}{}",
                kind.status(),
                sx.info.client_str()
            );
            send_error(sx, respond, kind, None);
            Ok(kind.status())
        }
        Failure::Abort(why) => {
            respond.send_reset(h2::Reason::CANCEL);
            Err(why)
        }
    };
    let (req, _) = match request(rendered, target) {
        Ok(r) => r,
        Err(why) => return fail(&mut respond, bad_gateway(target, why)),
    };
    let connect_by = deadline.min(ctx.timers.now() + connect_timeout);
    let mut send = match sender(ctx, target, connect_by).await {
        Ok(s) => s,
        Err(f) => return fail(&mut respond, f),
    };
    let end = body.is_end_stream();
    let (resp, mut up) = match send.send_request(req, end) {
        Ok(r) => r,
        Err(e) => return fail(&mut respond, bad_gateway(target, format!("h2: {e}"))),
    };
    if !end {
        let mut seen = 0u64;
        loop {
            match ctx
                .timers
                .timeout(sx.client_read_timeout, body.data())
                .await
            {
                Ok(Some(Ok(d))) => {
                    seen += d.len() as u64;
                    if seen > body_limit {
                        up.send_reset(h2::Reason::CANCEL);
                        return fail(
                            &mut respond,
                            Failure::Respond(ErrorKind::PayloadTooLarge, "request body".into()),
                        );
                    }
                    let n = d.len();
                    let sent = ctx
                        .timers
                        .timeout_at(deadline, send_up(&mut up, d, false))
                        .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return fail(&mut respond, bad_gateway(target, "send body".into()));
                    }
                    let _ = body.flow_control().release_capacity(n);
                }
                Ok(None) => break,
                _ => {
                    up.send_reset(h2::Reason::CANCEL);
                    return fail(&mut respond, Failure::Abort("client body".into()));
                }
            }
        }
        match ctx
            .timers
            .timeout(sx.client_read_timeout, body.trailers())
            .await
        {
            Ok(Ok(Some(t))) => {
                let _ = up.send_trailers(t);
            }
            _ => {
                let _ = up.send_data(Bytes::new(), true);
            }
        }
    }
    let resp = match ctx.timers.timeout_at(deadline, resp).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(&mut respond, bad_gateway(target, format!("h2: {e}"))),
        Err(_) => return fail(&mut respond, timed_out(target)),
    };
    let (parts, mut rbody) = resp.into_parts();
    let status = parts.status.as_u16();
    let mut b = head(sx, status);
    if let Some(map) = b.headers_mut() {
        for (n, v) in response_fields(&parts) {
            if *n == DATE {
                map.insert(n.clone(), v.clone());
            } else {
                map.append(n.clone(), v.clone());
            }
        }
        cx.tag_headers(map);
    }
    if let Some(fill) = cx.fill.as_deref_mut() {
        fill.on_head_map(ctx, status, &parts.headers);
    }
    let Ok(client_resp) = b.body(()) else {
        return Err("response head".into());
    };
    let end_now = sx.is_head || rbody.is_end_stream();
    let mut down = respond
        .send_response(client_resp, end_now)
        .map_err(|e| format!("client stream: {e}"))?;
    if end_now {
        return Ok(status);
    }
    let read_timeout = Duration::from_millis(target.timeout_ms);
    loop {
        match ctx.timers.timeout(read_timeout, rbody.data()).await {
            Ok(Some(Ok(d))) => {
                let n = d.len();
                if let Some(fill) = cx.fill.as_deref_mut() {
                    fill.on_data(ctx, &d);
                }
                match ctx
                    .timers
                    .timeout(read_timeout, send_data(&mut down, d, false))
                    .await
                {
                    Ok(Ok(())) => {}
                    _ => {
                        down.send_reset(h2::Reason::CANCEL);
                        return Err("client did not read the response".into());
                    }
                }
                let _ = rbody.flow_control().release_capacity(n);
            }
            Ok(None) => break,
            _ => {
                down.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err("backend failed mid-response".into());
            }
        }
    }
    match ctx.timers.timeout(read_timeout, rbody.trailers()).await {
        Ok(Ok(Some(t))) => {
            let _ = down.send_trailers(t);
        }
        _ => {
            let _ = down.send_data(Bytes::new(), true);
        }
    }
    Ok(status)
}

/// An HTTP/1.1 client's request (head rendered in `req`, body still with the client) to an
/// HTTP/2 backend; the response is written into `down.out` as HTTP/1.1.
pub async fn forward_from_h1(
    ctx: &CoreCtx,
    down: &mut Downstream,
    req: &[u8],
    target: &ProxyTarget,
    x: &mut Exchange,
) -> Result<Relayed, Failure> {
    let deadline = x.started + Duration::from_millis(target.timeout_ms);
    let (request, framing) = request(req, target).map_err(|why| bad_gateway(target, why))?;
    let connect_by = deadline.min(ctx.timers.now() + x.connect_timeout);
    let mut send = sender(ctx, target, connect_by).await?;
    let end = framing == Framing::Empty || x.body.is_done();
    let (resp, mut up) = send
        .send_request(request, end)
        .map_err(|e| bad_gateway(target, format!("h2: {e}")))?;
    if !end {
        if x.expect_continue && down.avail().is_empty() {
            down.out.extend_from_slice(CONTINUE);
        }
        loop {
            let mut chunk = Vec::new();
            let (used, n) =
                pump(&mut x.body, down.avail(), Some(&mut chunk), false).map_err(|e| {
                    Failure::Respond(ErrorKind::BadRequest, format!("request body: {e}"))
                })?;
            down.consume(used);
            x.body_seen += n;
            if x.body_seen > x.body_limit {
                up.send_reset(h2::Reason::CANCEL);
                return Err(Failure::Respond(
                    ErrorKind::PayloadTooLarge,
                    format!("request body over {} bytes", x.body_limit),
                ));
            }
            let done = x.body.is_done();
            if !chunk.is_empty() || done {
                let sent = ctx
                    .timers
                    .timeout_at(deadline, send_up(&mut up, Bytes::from(chunk), done))
                    .await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Err(bad_gateway(target, "send body".into()));
                }
            }
            if done {
                break;
            }
            down.flush()
                .await
                .map_err(|e| Failure::Abort(format!("client write: {e}")))?;
            let by = ctx.timers.now() + x.client_read_timeout;
            match down.fill_body(&ctx.timers, by).await {
                Ok(_) => {}
                Err(ReadError::Eof) => return Err(Failure::Abort("client closed".into())),
                Err(ReadError::Timeout) => {
                    return Err(Failure::Abort("client body timed out".into()));
                }
                Err(ReadError::Io(e)) => return Err(Failure::Abort(format!("client read: {e}"))),
            }
        }
    }
    let resp = match ctx.timers.timeout_at(deadline, resp).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(bad_gateway(target, format!("h2: {e}"))),
        Err(_) => return Err(timed_out(target)),
    };
    x.keep_alive &= !ctx.draining();
    let (parts, mut rbody) = resp.into_parts();
    let status = parts.status.as_u16();
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bodiless = x.is_head || status == 204 || status == 304;
    let chunked = !bodiless && length.is_none() && !x.http10;
    let keep_alive = x.keep_alive && (bodiless || length.is_some() || chunked);
    let out = &mut down.out;
    encode::status_line(out, status);
    let mut has_date = false;
    for (n, v) in response_fields(&parts) {
        if *n == CONTENT_LENGTH {
            continue;
        }
        has_date |= *n == DATE;
        encode::header(out, n.as_str().as_bytes(), v.as_bytes());
    }
    if let Some(n) = length {
        encode::header_u64(out, b"content-length", n);
    } else if chunked {
        encode::header(out, b"transfer-encoding", b"chunked");
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
    if let Some(fill) = x.cache.as_mut() {
        fill.on_head_map(ctx, status, &parts.headers);
    }
    let relayed = Relayed { status, keep_alive };
    if bodiless {
        return Ok(relayed);
    }
    let read_timeout = Duration::from_millis(target.timeout_ms);
    loop {
        match ctx.timers.timeout(read_timeout, rbody.data()).await {
            Ok(Some(Ok(d))) => {
                let n = d.len();
                if let Some(fill) = x.cache.as_mut() {
                    fill.on_data(ctx, &d);
                }
                if chunked {
                    encode::chunk_header(&mut down.out, n);
                    down.out.extend_from_slice(&d);
                    encode::chunk_end(&mut down.out);
                } else {
                    down.out.extend_from_slice(&d);
                }
                down.flush()
                    .await
                    .map_err(|e| Failure::Abort(format!("client write: {e}")))?;
                let _ = rbody.flow_control().release_capacity(n);
            }
            Ok(None) => break,
            _ => {
                return Err(Failure::Abort(format!(
                    "backend {} failed mid-response",
                    target.addr
                )));
            }
        }
    }
    if chunked {
        encode::last_chunk(&mut down.out);
    }
    Ok(relayed)
}

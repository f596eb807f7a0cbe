//! "POST this body, get the status and body back": the backend call behind integrations that
//! send a document of their own rather than relay the client's request (WebSocket events).
//!
//! Reuses the `http_proxy` integration's pieces: the per-core keep-alive pool, its connect
//! timeout, its deadline-bound writes and reads. The response body is buffered (up to
//! `INTEGRATION_RESPONSE_BYTES_MAX`): callers need it whole (to send it as one message).
//!
//! Failures map as the proxy's do: connect refused, reset, malformed or oversized response →
//! `BadGateway`; no response within `timeout_ms` (or no connection within the connect timeout)
//! → `GatewayTimeout`. A pooled connection that the backend closed before answering is retried
//! once on a fresh one: the event is still in hand, and such a backend read nothing of it.

use std::time::{Duration, Instant};

use compio::buf::BufResult;

use crate::config::ProxyTarget;
use crate::error::ErrorKind;
use crate::http1::{self, BodyDecoder, HeadLimits, encode};
use crate::limits::{HEADERS_CEILING, INTEGRATION_RESPONSE_BYTES_MAX};
use crate::router::Params;
use crate::server::core::CoreCtx;
use crate::server::downstream::{ReadError, compact};

use super::http_proxy::{self, Failure, acquire, reserve_read};
use super::pool::UpstreamConn;

/// What the backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse {
    pub status: u16,
    /// Header names lower-cased, values as sent (hop-by-hop ones dropped).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl CallResponse {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a call failed: the error the caller reports, and a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    pub why: String,
}

/// POSTs `body` (`content-type: application/json`) to `target` with `x-request-id` and the
/// `extra` headers (valid field text), and reads the whole response.
pub async fn post_json(
    ctx: &CoreCtx,
    target: &ProxyTarget,
    body: &[u8],
    request_id: &[u8],
    extra: &[(&str, &str)],
) -> Result<CallResponse, CallError> {
    let deadline = ctx.timers.now() + Duration::from_millis(target.timeout_ms);
    let (limits, connect_timeout) = {
        let snap = ctx.snapshot();
        let server = snap.snap.server();
        (
            HeadLimits {
                header_bytes_max: server.header_bytes_max,
                headers_max: server.headers_max,
            },
            Duration::from_millis(server.upstream_connect_timeout_ms),
        )
    };
    let mut req = Vec::with_capacity(256 + body.len());
    render(&mut req, target, body, request_id, extra);
    let mut retried = false;
    loop {
        let connect_by = deadline.min(ctx.timers.now() + connect_timeout);
        let mut up = acquire(ctx, target, connect_by)
            .await
            .map_err(from_failure)?;
        let pooled = up.uses > 0;
        match exchange(ctx, &mut up, req, deadline, &limits).await {
            Ok((resp, reusable)) => {
                up.uses += 1;
                if reusable {
                    ctx.pool.borrow_mut().put(up, Instant::now());
                }
                return Ok(resp);
            }
            Err((Attempt::Stale(why), back)) if pooled && !retried => {
                crate::log_debug!(
                    "http_call",
                    "stale pooled connection to {} ({why}); retrying on a fresh one",
                    target.addr
                );
                retried = true;
                req = back;
            }
            Err((Attempt::Stale(why), _)) => {
                return Err(CallError {
                    kind: ErrorKind::BadGateway,
                    why: format!("backend {}: {why}", target.addr),
                });
            }
            Err((Attempt::Failed(e), _)) => return Err(e),
        }
    }
}

fn from_failure(f: Failure) -> CallError {
    match f {
        Failure::Respond(kind, why) => CallError { kind, why },
        Failure::Abort(why) => CallError {
            kind: ErrorKind::BadGateway,
            why,
        },
    }
}

/// The request: head and body in one buffer, so they go out in one write.
fn render(
    req: &mut Vec<u8>,
    target: &ProxyTarget,
    body: &[u8],
    request_id: &[u8],
    extra: &[(&str, &str)],
) {
    req.extend_from_slice(b"POST ");
    // A websocket integration's URI has no path parameters, so nothing is filled in.
    target.path.render("", &Params::default(), req);
    if let Some(q) = &target.query {
        req.push(b'?');
        req.extend_from_slice(q.as_bytes());
    }
    req.extend_from_slice(b" HTTP/1.1\r\n");
    encode::header(req, b"host", target.authority.as_bytes());
    encode::header(req, b"content-type", b"application/json");
    encode::header_u64(req, b"content-length", body.len() as u64);
    encode::header(req, b"x-request-id", request_id);
    for (name, value) in extra {
        encode::header(req, name.as_bytes(), value.as_bytes());
    }
    encode::end_head(req);
    req.extend_from_slice(body);
}

enum Attempt {
    /// Nothing of a response came back: the connection was stale; the request may be retried.
    Stale(String),
    Failed(CallError),
}

/// One attempt on one connection. Gives the request buffer back on failure (for a retry).
/// `Ok`'s flag: the connection may go back to the pool.
async fn exchange(
    ctx: &CoreCtx,
    up: &mut UpstreamConn,
    req: Vec<u8>,
    deadline: Instant,
    limits: &HeadLimits,
) -> Result<(CallResponse, bool), (Attempt, Vec<u8>)> {
    up.buf.clear();
    // Through the connection, so an `https://` backend's bytes are sealed.
    let BufResult(res, req) = up.write_all(&ctx.timers, req, deadline).await;
    if let Err(e) = res {
        let a = if e.kind() == std::io::ErrorKind::TimedOut {
            Attempt::Failed(timed_out(up))
        } else {
            Attempt::Stale(format!("send request: {e}"))
        };
        return Err((a, req));
    }
    let failed = |kind, why: String| (Attempt::Failed(CallError { kind, why }), Vec::new());

    // The head, skipping interim responses.
    let (status, headers, framing, keep_alive) = loop {
        if !up.buf.is_empty() {
            let mut slots = http1::header_slots::<HEADERS_CEILING>();
            match http1::parse_response(&up.buf, &mut slots, limits, false) {
                Ok(Some(h)) if (100..200).contains(&h.status) => {
                    let n = h.head_len;
                    compact(&mut up.buf, n);
                    continue;
                }
                Ok(Some(h)) => {
                    let headers = h
                        .headers
                        .iter()
                        .filter(|f| !http_proxy::is_hop_by_hop(f.name.as_bytes()))
                        .map(|f| (f.name.to_ascii_lowercase(), f.value.to_vec()))
                        .collect();
                    let r = (h.status, headers, h.framing, h.keep_alive);
                    let n = h.head_len;
                    compact(&mut up.buf, n);
                    break r;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(failed(
                        ErrorKind::BadGateway,
                        format!("backend {}: invalid response head: {e}", up.addr),
                    ));
                }
            }
        }
        let seen = !up.buf.is_empty();
        match read_more(ctx, up, deadline, limits.header_bytes_max).await {
            Ok(()) => {}
            Err(ReadError::Timeout) => return Err((Attempt::Failed(timed_out(up)), req)),
            Err(ReadError::Eof) if !seen => {
                return Err((Attempt::Stale("closed before answering".into()), req));
            }
            Err(ReadError::Io(e)) if !seen => {
                return Err((Attempt::Stale(format!("read: {e}")), req));
            }
            Err(e) => {
                return Err(failed(
                    ErrorKind::BadGateway,
                    format!("backend {}: response head: {e:?}", up.addr),
                ));
            }
        }
    };

    // The body, whole.
    let mut decoder = BodyDecoder::new(framing);
    let mut body = Vec::new();
    loop {
        let (used, _) =
            http_proxy::pump(&mut decoder, &up.buf, Some(&mut body), false).map_err(|e| {
                failed(
                    ErrorKind::BadGateway,
                    format!("backend {}: response body: {e}", up.addr),
                )
            })?;
        compact(&mut up.buf, used);
        if body.len() > INTEGRATION_RESPONSE_BYTES_MAX {
            return Err(failed(
                ErrorKind::BadGateway,
                format!(
                    "backend {}: response body over {INTEGRATION_RESPONSE_BYTES_MAX} bytes",
                    up.addr
                ),
            ));
        }
        if decoder.is_done() {
            break;
        }
        match read_more(ctx, up, deadline, 64 * 1024).await {
            Ok(()) => {}
            Err(ReadError::Eof) if framing == http1::Framing::UntilClose => {
                return Ok((
                    CallResponse {
                        status,
                        headers,
                        body,
                    },
                    false,
                ));
            }
            Err(ReadError::Timeout) => return Err((Attempt::Failed(timed_out(up)), Vec::new())),
            Err(e) => {
                return Err(failed(
                    ErrorKind::BadGateway,
                    format!("backend {}: response body: {e:?}", up.addr),
                ));
            }
        }
    }
    let reusable = keep_alive && up.buf.is_empty();
    Ok((
        CallResponse {
            status,
            headers,
            body,
        },
        reusable,
    ))
}

async fn read_more(
    ctx: &CoreCtx,
    up: &mut UpstreamConn,
    deadline: Instant,
    max: usize,
) -> Result<(), ReadError> {
    up.buf = reserve_read(std::mem::take(&mut up.buf), max);
    up.read_append(&ctx.timers, deadline).await.map(|_| ())
}

fn timed_out(up: &UpstreamConn) -> CallError {
    CallError {
        kind: ErrorKind::GatewayTimeout,
        why: format!(
            "backend {}: no response within the integration timeout",
            up.addr
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let config = crate::config::parse(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[api]]\nname = \"w\"\nprotocol = \"websocket\"\n\
             [[api.route]]\nkey = \"$default\"\n\
             integration = { type = \"http\", uri = \"http://127.0.0.1:9/events/in?v=1\" }\n",
        )
        .unwrap();
        let snap = crate::config::compile(config, 1).unwrap();
        let crate::config::CompiledIntegration::WebSocket(ws) =
            &snap.apis[0].stages[0].routes[0].integration
        else {
            panic!()
        };
        let Some(crate::websocket::api::WsIntegration::Http(t)) =
            ws.default_route().map(|r| &r.integration)
        else {
            panic!()
        };
        let mut req = Vec::new();
        render(&mut req, t, b"{}", b"rid", &[("x-extra", "1")]);
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /events/in?v=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\n\
             content-length: 2\r\nx-request-id: rid\r\nx-extra: 1\r\n\r\n{}"
        );
    }
}

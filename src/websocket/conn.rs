//! The WebSocket connection task: from an HTTP/1.1 upgrade request routed to a websocket API's
//! stage, through `$connect`, the `101`, every message and the close handshake, to
//! `$disconnect`. Runs on the core that accepted the socket, on the same socket.
//!
//! Phases:
//! ```text
//! plan_upgrade (sync, borrows the head): handshake::validate → 400/426; draining → 503;
//!   owned facts for later (accept key, subprotocol, $connect headers and query)
//! serve: id from the core's Registry (encodes the core)
//!   → $connect: mock status / http backend status; not 2xx → that status, close
//!   → 101 (Sec-WebSocket-Protocol: the API's `subprotocols` choice, or the one an http
//!     $connect backend names in its own Sec-WebSocket-Protocol header)
//!   → Session::run until closed → registry entry removed → $disconnect (best effort)
//! Session::run: one read always in flight; while it waits, the task also waits on the
//!   connection's inbox (pushes and DELETE from /@connections) and on one deadline (idle,
//!   age, ping, close wait) on the core's coarse timers; a drain ends idle waits at once.
//!   Each message: route key → route (else $default, else a Forbidden message) → integration
//!   (echo, mock, http POST of the event) → answer frames into `out` → written.
//! ```
//!
//! Decisions (see README): messages are handled one at a time per connection, in order; pings
//! and pongs do not reset the idle timer (only client messages do) but prove the peer alive;
//! a reload never closes a connection: each message is routed with the newest snapshot that
//! still has the connection's API and stage (else the one it has), while the limits it
//! connected with stay; with no route for a message and no `$default`, the client gets
//! `{"message":"Forbidden","connectionId":..,"requestId":..}` and the connection stays open.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::FutureExt;
use futures_util::future::{Either, Fuse, select};

use super::api::{WsIntegration, WsLimits, WsRoute, WsStage};
use super::event::{self, ConnectFacts, DisconnectFacts, EventBody, EventContext, EventType};
use super::handshake::{self, AcceptKey};
use super::registry::{Command, ConnShared, epoch_ms};
use super::{
    CloseCode, CloseState, Decoder, Event, MessageKind, Opcode, Step, encode_close,
    encode_close_reply, encode_frame,
};
use crate::config::CompiledIntegration;
use crate::http1::{self, Framing, RequestHead, encode};
use crate::integration::http_call;
use crate::limits::{WS_CLOSE_WAIT_MS, WS_WRITE_TIMEOUT_MS};
use crate::net::tls::TlsIo;
use crate::server::core::{CoreCtx, CoreSnapshot};
use crate::server::downstream::Downstream;
use crate::server::respond::{self, Meta, RequestId};
use crate::telemetry::request_id::REQUEST_ID_LEN;

/// The smallest read buffer of a connection; it grows for bigger frames and bursts.
const READ_BYTES_MIN: usize = 4 * 1024;
/// Reads grow the buffer up to this much spare room when they keep filling it.
const READ_BYTES_BURST: usize = 64 * 1024;
/// Buffers above this are given back once empty.
const BUF_KEEP_BYTES: usize = 64 * 1024;

/// An upgrade request, planned: what the task needs once the request head is gone.
pub struct UpgradeRequest {
    pub snap: Rc<CoreSnapshot>,
    pub api: usize,
    pub stage: usize,
    /// The metric slot of the upgrade (`$connect`) on this core.
    pub slot: u32,
    pub started: Instant,
    pub request_id: RequestId,
    accept: AcceptKey,
    /// The API's choice among the client's offers.
    protocol: Option<Box<str>>,
    offered: Vec<Box<str>>,
    /// For an http `$connect` only.
    headers: Vec<(Box<str>, Box<str>)>,
    query: Option<Box<str>>,
    host: Option<Box<str>>,
}

/// An upgrade refused before `$connect`: the status, an extra header, why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub header: Option<(&'static str, &'static str)>,
    pub why: String,
}

impl Refusal {
    /// The response, `connection: close`, body `{"message":"<reason phrase>"}`.
    pub fn write(&self, out: &mut Vec<u8>, date: &[u8; 29], request_id: &RequestId) {
        write_refusal(out, self.status, self.header, None, date, request_id);
    }
}

/// Checks an upgrade request routed to a websocket stage and keeps what `serve` needs.
pub fn plan_upgrade(
    ctx: &CoreCtx,
    snap: &Rc<CoreSnapshot>,
    (api, stage, slot): (usize, usize, u32),
    head: &RequestHead<'_, '_>,
    started: Instant,
    request_id: RequestId,
) -> Result<UpgradeRequest, Refusal> {
    let refuse = |status, why: &str| Refusal {
        status,
        header: None,
        why: why.to_string(),
    };
    let ws = ws_stage(snap, api, stage).ok_or_else(|| refuse(500, "not a websocket stage"))?;
    if ctx.draining() {
        return Err(refuse(503, "draining: no new WebSocket connections"));
    }
    let up = handshake::validate(head.method, head.headers).map_err(|e| Refusal {
        status: e.status(),
        header: e.response_header(),
        why: e.to_string(),
    })?;
    if head.framing != Framing::Empty {
        return Err(refuse(400, "an upgrade request has no body"));
    }
    let http_connect = matches!(
        ws.connect().map(|r| &r.integration),
        Some(WsIntegration::Http(_))
    );
    let (headers, query) = if http_connect {
        let headers = head
            .headers
            .iter()
            .map(|h| (h.name.into(), String::from_utf8_lossy(h.value).into()))
            .collect();
        (headers, head.query.map(Box::from))
    } else {
        (Vec::new(), None)
    };
    Ok(UpgradeRequest {
        snap: snap.clone(),
        api,
        stage,
        slot,
        started,
        request_id,
        accept: up.accept,
        protocol: ws.choose_protocol(up.offered_protocols()).map(Box::from),
        offered: up.offered_protocols().map(Box::from).collect(),
        headers,
        query,
        host: head.host.map(|h| http1::host_without_port(h).into()),
    })
}

/// The websocket stage `api`/`stage` of a snapshot, if it is one.
pub fn ws_stage(snap: &CoreSnapshot, api: usize, stage: usize) -> Option<&WsStage> {
    match &snap
        .snap
        .apis
        .get(api)?
        .stages
        .get(stage)?
        .routes
        .first()?
        .integration
    {
        CompiledIntegration::WebSocket(ws) => Some(ws),
        _ => None,
    }
}

/// Where API `api` and stage `stage` (by name) are in a snapshot, if still a websocket stage.
fn find_stage(snap: &CoreSnapshot, api: &str, stage: &str) -> Option<(usize, usize)> {
    let a = snap.snap.apis.iter().position(|x| x.name == api)?;
    let s = snap.snap.apis[a]
        .stages
        .iter()
        .position(|x| x.name == stage)?;
    ws_stage(snap, a, s).map(|_| (a, s))
}

/// Serves an upgrade to its end. `down` holds the socket and any bytes read past the head.
pub async fn serve(
    ctx: &Rc<CoreCtx>,
    down: &mut Downstream,
    up: UpgradeRequest,
    peer: Option<SocketAddr>,
) {
    let snap = up.snap.clone();
    let Some(ws) = ws_stage(&snap, up.api, up.stage) else {
        return;
    };
    let source_ip = peer.map(|p| p.ip());
    let connected_at_ms = epoch_ms();
    let opened = ctx.ws.borrow_mut().open(
        source_ip,
        connected_at_ms,
        ctx.timers.now(),
        ws.limits.decoder.message_bytes_max,
    );
    let shared = match opened {
        Ok(s) => s,
        Err(e) => {
            crate::log_error!("websocket", "{e}");
            finish_refusal(ctx, down, &up, 500, None).await;
            return;
        }
    };
    let id = shared.id;
    let facts = Facts {
        connection_id: id.as_str().into(),
        connected_at_ms,
        source_ip,
        host: up.host.clone(),
    };

    // $connect.
    let mut protocol = up.protocol.clone();
    if let Some(route) = ws.connect() {
        match run_connect(ctx, ws, route, &up, &facts).await {
            Ok(chosen) => {
                if chosen.is_some() {
                    protocol = chosen;
                }
            }
            Err((status, body)) => {
                ctx.ws.borrow_mut().close(&id);
                finish_refusal(ctx, down, &up, status, body).await;
                return;
            }
        }
    }

    let rid = up.request_id;
    let rid_text = std::str::from_utf8(rid.as_bytes()).unwrap_or("");
    handshake::write_switching_protocols(
        &mut down.out,
        &up.accept,
        protocol.as_deref(),
        &[("x-request-id", rid_text)],
    );
    let wrote = down.flush().await;
    record(ctx, up.slot, 101, up.started);
    if wrote.is_err() {
        ctx.ws.borrow_mut().close(&id);
        return;
    }
    ctx.metrics.borrow_mut().ws_opened();

    // Bytes the client sent right after its request (it may not wait for the 101).
    let mut rbuf = Vec::with_capacity(READ_BYTES_MIN.max(down.avail().len()));
    rbuf.extend_from_slice(down.avail());
    let n = down.avail().len();
    down.consume(n);
    down.relax();
    let now = ctx.timers.now();
    // Over TLS the session seals and opens records itself; the Downstream is done with them.
    let tls = down.take_tls().map(RefCell::new);
    let mut session = Session {
        ctx,
        shared: shared.clone(),
        stream: &down.stream,
        tls: tls.as_ref(),
        out: Vec::new(),
        snap: snap.clone(),
        api: up.api,
        stage: up.stage,
        api_name: ws.api.clone(),
        stage_name: ws.stage.clone(),
        limits: ws.limits,
        facts,
        connected: now,
        last_message: now,
        last_seen: now,
        ping_sent: None,
        closing: None,
        end: None,
        bucket: None,
    };
    session.run(rbuf).await;
    session.close_notify().await;
    let (code, reason) = session.end.take().unwrap_or((1006, String::new()));
    let (api, stage, disconnect_snap) = (session.api, session.stage, session.snap.clone());
    let facts = session.facts;
    // The socket is closed before $disconnect runs: the client is not kept waiting for it.
    let _ = (&mut &down.stream).shutdown().await;
    ctx.ws.borrow_mut().close(&id);
    ctx.metrics.borrow_mut().ws_closed(code);
    if let Some(ws) = ws_stage(&disconnect_snap, api, stage)
        && let Some(route) = ws.disconnect()
    {
        run_disconnect(ctx, ws, route, &facts, code, &reason).await;
    }
}

/// What every event of one connection carries.
struct Facts {
    connection_id: Box<str>,
    connected_at_ms: u64,
    source_ip: Option<std::net::IpAddr>,
    host: Option<Box<str>>,
}

impl Facts {
    fn event<'a>(
        &'a self,
        ws: &'a WsStage,
        route_key: &'a str,
        event_type: EventType,
        request_id: &'a str,
    ) -> EventContext<'a> {
        EventContext {
            route_key,
            event_type,
            connection_id: &self.connection_id,
            request_id,
            connected_at_ms: self.connected_at_ms,
            request_time_ms: epoch_ms(),
            source_ip: self.source_ip,
            stage: &ws.stage,
            api_id: &ws.api,
            domain_name: self.host.as_deref(),
        }
    }
}

/// Runs `$connect`. `Ok`: accepted, with the subprotocol an http backend chose (if it named
/// one the client offered). `Err`: the status to refuse with and a body (a mock's).
async fn run_connect(
    ctx: &CoreCtx,
    ws: &WsStage,
    route: &WsRoute,
    up: &UpgradeRequest,
    facts: &Facts,
) -> Result<Option<Box<str>>, (u16, Option<Box<[u8]>>)> {
    match &route.integration {
        WsIntegration::Mock { status, body } => {
            if (200..300).contains(status) {
                Ok(None)
            } else {
                Err((*status, (!body.is_empty()).then(|| body.clone())))
            }
        }
        // `load` refuses echo on $connect.
        WsIntegration::Echo => Ok(None),
        WsIntegration::Http(target) => {
            let rid = std::str::from_utf8(up.request_id.as_bytes()).unwrap_or("");
            let body = event::render(
                &facts.event(ws, &route.key, EventType::Connect, rid),
                EventBody::None,
                Some(ConnectFacts {
                    headers: &up.headers,
                    query: up.query.as_deref(),
                }),
                None,
            );
            match http_call::post_json(ctx, target, &body, up.request_id.as_bytes(), &[]).await {
                Ok(resp) if (200..300).contains(&resp.status) => Ok(resp
                    .header("sec-websocket-protocol")
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .map(str::trim)
                    .filter(|p| up.offered.iter().any(|o| &**o == *p))
                    .map(Box::from)),
                Ok(resp) => Err((resp.status.clamp(400, 599), None)),
                Err(e) => {
                    log_failure(ctx, ws, &route.key, &e.why);
                    Err((e.kind.status(), None))
                }
            }
        }
    }
}

/// Runs `$disconnect`; nothing can be answered, so failures are only logged.
async fn run_disconnect(
    ctx: &CoreCtx,
    ws: &WsStage,
    route: &WsRoute,
    facts: &Facts,
    code: u16,
    reason: &str,
) {
    let WsIntegration::Http(target) = &route.integration else {
        return;
    };
    let rid = new_request_id(ctx);
    let rid = std::str::from_utf8(&rid).unwrap_or("");
    let body = event::render(
        &facts.event(ws, &route.key, EventType::Disconnect, rid),
        EventBody::None,
        None,
        Some(DisconnectFacts {
            status_code: code,
            reason,
        }),
    );
    if let Err(e) = http_call::post_json(ctx, target, &body, rid.as_bytes(), &[]).await {
        log_failure(ctx, ws, &route.key, &e.why);
    }
}

fn log_failure(ctx: &CoreCtx, ws: &WsStage, route: &str, why: &str) {
    if let Some(dropped) = ctx.may_log() {
        let more = if dropped == 0 {
            String::new()
        } else {
            format!(" ({dropped} similar lines suppressed)")
        };
        crate::log_warn!(
            "websocket",
            "api {} stage {} route {route}: {why}{more}",
            ws.api,
            ws.stage
        );
    }
}

async fn finish_refusal(
    ctx: &CoreCtx,
    down: &mut Downstream,
    up: &UpgradeRequest,
    status: u16,
    body: Option<Box<[u8]>>,
) {
    let date = ctx.date();
    write_refusal(
        &mut down.out,
        status,
        None,
        body.as_deref(),
        &date,
        &up.request_id,
    );
    let _ = down.flush().await;
    record(ctx, up.slot, status, up.started);
}

/// An error response to an upgrade; the connection closes after it.
fn write_refusal(
    out: &mut Vec<u8>,
    status: u16,
    header: Option<(&str, &str)>,
    body: Option<&[u8]>,
    date: &[u8; 29],
    request_id: &RequestId,
) {
    let fallback;
    let body = match body {
        Some(b) => b,
        None => {
            fallback = serde_json::json!({ "message": encode::reason(status) }).to_string();
            fallback.as_bytes()
        }
    };
    encode::status_line(out, status);
    encode::header(out, b"content-type", b"application/json");
    encode::header_u64(out, b"content-length", body.len() as u64);
    if let Some((n, v)) = header {
        encode::header(out, n.as_bytes(), v.as_bytes());
    }
    respond::common_headers(
        out,
        &Meta {
            date,
            request_id,
            keep_alive: false,
            http10: false,
        },
    );
    encode::end_head(out);
    out.extend_from_slice(body);
}

fn record(ctx: &CoreCtx, slot: u32, status: u16, started: Instant) {
    let us = started.elapsed().as_micros() as u64;
    ctx.metrics.borrow_mut().record(slot, status, us);
}

fn new_request_id(ctx: &CoreCtx) -> [u8; REQUEST_ID_LEN] {
    let mut buf = [0u8; REQUEST_ID_LEN];
    ctx.ids.next(&mut buf);
    buf
}

/// One open connection after the 101. The decoder is the run loop's local (message bytes
/// borrow it while the session handles them).
struct Session<'a> {
    ctx: &'a Rc<CoreCtx>,
    shared: Rc<ConnShared>,
    stream: &'a TcpStream,
    /// The connection's TLS session, when it came over TLS (wss://).
    tls: Option<&'a RefCell<TlsIo>>,
    out: Vec<u8>,
    /// The snapshot messages are routed with; follows reloads (see the module doc).
    snap: Rc<CoreSnapshot>,
    api: usize,
    stage: usize,
    api_name: Box<str>,
    stage_name: Box<str>,
    limits: WsLimits,
    facts: Facts,
    connected: Instant,
    /// The last message from the client (the idle timer).
    last_message: Instant,
    /// The last bytes from the client (the ping timer).
    last_seen: Instant,
    /// A keep-alive ping is out, sent then.
    ping_sent: Option<Instant>,
    /// We sent a close: wait for the client's until then.
    closing: Option<Instant>,
    /// How the connection ended: the close code (ours, the client's, 1005 for a close without
    /// one, 1006 for none) and reason.
    end: Option<(u16, String)>,
    /// `connection_throttle`: this connection's own message bucket.
    bucket: Option<ConnBucket>,
}

/// A token bucket owned by one connection. A connection lives on one core, so this needs no
/// reconciliation: integer arithmetic in nano-tokens, time from the core's coarse clock.
#[derive(Debug, Clone, Copy)]
struct ConnBucket {
    rate: u128,
    cap: u128,
    level: u128,
    at: u64,
}

impl ConnBucket {
    const NANO: u128 = 1_000_000_000;

    fn new(t: crate::config::Throttle, now: u64) -> Self {
        let cap = u128::from(t.burst) * Self::NANO;
        ConnBucket {
            rate: u128::from(t.rate),
            cap,
            level: cap,
            at: now,
        }
    }

    /// Takes a token if there is one. Rate 0 or burst 0 admits nothing, as for shared limits.
    fn take(&mut self, now: u64) -> bool {
        if self.rate == 0 || self.cap == 0 {
            return false;
        }
        let dt = u128::from(now.saturating_sub(self.at));
        self.at = self.at.max(now);
        // rate tokens/s × dt ns = rate × dt nano-tokens.
        self.level = (self.level + self.rate * dt).min(self.cap);
        if self.level >= Self::NANO {
            self.level -= Self::NANO;
            true
        } else {
            false
        }
    }
}

/// What decoding the buffered bytes left to do.
enum Flow {
    /// Read more: the next frame needs this many bytes from where decoding stopped.
    Read(usize),
    /// The connection is over (close handshake done, or failed): close TCP.
    Done,
}

/// One read of the socket into the spare capacity of `buf`.
async fn read_once(stream: &TcpStream, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
    let mut r = stream;
    r.append(buf).await
}

/// One read of plaintext appended to `buf`: straight from the socket, or decrypted from TLS
/// records (reading again when a record carried no application data).
async fn read_plain(
    stream: &TcpStream,
    tls: Option<&RefCell<TlsIo>>,
    mut buf: Vec<u8>,
) -> BufResult<usize, Vec<u8>> {
    let Some(tls) = tls else {
        return read_once(stream, buf).await;
    };
    loop {
        let cin = Vec::with_capacity(TLS_RECORD_READ_BYTES);
        let BufResult(res, cin) = read_once(stream, cin).await;
        match res {
            Ok(0) => return BufResult(Ok(0), buf),
            Err(e) => return BufResult(Err(e), buf),
            Ok(_) => {}
        }
        let before = buf.len();
        match tls.borrow_mut().feed(&cin, &mut buf) {
            Ok(fed) => {
                let n = buf.len() - before;
                if n > 0 || fed.closed {
                    return BufResult(Ok(n), buf);
                }
            }
            Err(e) => return BufResult(Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
        }
    }
}

/// Ciphertext read per TLS record read on a wss:// connection.
const TLS_RECORD_READ_BYTES: usize = 16 * 1024 + 512;

impl Session<'_> {
    async fn run(&mut self, mut rbuf: Vec<u8>) {
        let mut dec = Decoder::new(self.limits.decoder);
        let mut read = pin!(Fuse::terminated());
        let ctx = self.ctx;
        let shared = self.shared.clone();
        loop {
            let mut start = 0;
            let need = match self.decode(&mut dec, &mut rbuf, &mut start).await {
                Flow::Read(n) => n,
                Flow::Done => {
                    let _ = self.flush().await;
                    return;
                }
            };
            if self.flush().await.is_err() {
                return self.gone();
            }
            rbuf.drain(..start);
            prepare_read(&mut rbuf, need);
            read.set(read_plain(self.stream, self.tls, rbuf).fuse());
            rbuf = loop {
                let deadline = self.deadline();
                let wait = if self.closing.is_some() {
                    ctx.timers.timeout_at(deadline, shared.ready())
                } else {
                    ctx.timers.idle_timeout_at(deadline, shared.ready())
                };
                let wait = pin!(wait);
                match select(read.as_mut(), wait).await {
                    Either::Left((BufResult(res, buf), _)) => match res {
                        Ok(n) if n > 0 => {
                            let now = ctx.timers.now();
                            self.last_seen = now;
                            self.ping_sent = None;
                            self.shared.touch(now);
                            break buf;
                        }
                        // End of stream or an error: after our close that is the expected end.
                        _ => return self.gone(),
                    },
                    Either::Right((Ok(()), _)) => self.commands(&mut dec),
                    Either::Right((Err(_elapsed), _)) => {
                        if !self.on_timer(&mut dec) {
                            return;
                        }
                        dec.shrink();
                    }
                }
                if self.flush().await.is_err() {
                    return self.gone();
                }
            };
        }
    }

    /// Decodes and acts on every whole frame in `rbuf[start..]`.
    async fn decode(&mut self, dec: &mut Decoder, rbuf: &mut [u8], start: &mut usize) -> Flow {
        loop {
            let step = dec.decode(&mut rbuf[*start..]);
            let (event, consumed) = match step {
                Ok(Step::Event { event, consumed }) => (event, consumed),
                Ok(Step::NeedMore {
                    consumed,
                    frame_bytes,
                }) => {
                    *start += consumed;
                    return Flow::Read(frame_bytes);
                }
                Err(code) => {
                    self.fail(dec, code).await;
                    return Flow::Done;
                }
            };
            let input = &rbuf[*start..];
            match event {
                Event::Message { kind, payload } => {
                    let bytes = dec.payload(input, &payload);
                    self.on_message(kind, bytes).await;
                }
                Event::Ping(r) => {
                    if dec.state() == CloseState::Open {
                        encode_frame(&mut self.out, Opcode::Pong, &input[r]);
                    }
                }
                Event::Pong(_) => {}
                Event::Close {
                    code,
                    reason,
                    reply,
                } => {
                    if reply {
                        encode_close_reply(&mut self.out, code);
                        dec.close_sent();
                        let reason = String::from_utf8_lossy(&input[reason]).into_owned();
                        self.end = Some((code.map_or(1005, |c| c.0), reason));
                    }
                    // Else the client answered our close; `end` says why we closed.
                    return Flow::Done;
                }
            }
            *start += consumed;
        }
    }

    /// A protocol error: close with its code (unless a close went out already), then wait
    /// briefly for the client to finish sending so our close is not lost to a reset.
    async fn fail(&mut self, dec: &mut Decoder, code: CloseCode) {
        if matches!(dec.state(), CloseState::Open | CloseState::CloseReceived) {
            encode_close(&mut self.out, code, "");
            dec.close_sent();
        }
        if self.end.is_none() {
            self.end = Some((code.0, String::new()));
        }
        if self.flush().await.is_err() {
            return;
        }
        self.close_notify().await;
        let mut w = self.stream;
        if w.shutdown().await.is_err() {
            return;
        }
        let until = self.ctx.timers.now() + Duration::from_millis(WS_CLOSE_WAIT_MS);
        let mut buf = Vec::with_capacity(READ_BYTES_MIN);
        loop {
            buf.clear();
            let read = read_plain(self.stream, self.tls, buf);
            match self.ctx.timers.timeout_at(until, read).await {
                Ok(BufResult(Ok(n), b)) if n > 0 => buf = b,
                _ => return,
            }
        }
    }

    /// The connection ended without a close handshake we took part in (or after ours).
    fn gone(&mut self) {
        if self.end.is_none() {
            self.end = Some((1006, String::new()));
        }
    }

    /// Routes and answers one message.
    async fn on_message(&mut self, kind: MessageKind, bytes: &[u8]) {
        let now = self.ctx.timers.now();
        self.last_message = now;
        self.refresh_snapshot();
        let snap = self.snap.clone();
        let Some(ws) = ws_stage(&snap, self.api, self.stage) else {
            return;
        };
        // Request ids are made only where they are used (events, error messages): echo and
        // mock routes need none.
        let Some(route) = ws.route_for(kind, bytes) else {
            let rid = new_request_id(self.ctx);
            self.send_error("Forbidden", std::str::from_utf8(&rid).unwrap_or(""));
            return;
        };
        let slot = snap.slots[route.metric_id];
        self.ctx.metrics.borrow_mut().ws_message_in(slot);
        // Throttles: the connection's own bucket, then the shared account, stage and route
        // limits (as for HTTP requests). An exhausted one answers "Too Many Requests" and skips
        // the integration, keeping the connection open, as Amazon API Gateway does.
        if let Some(scope) = self.throttle(route) {
            self.ctx.metrics.borrow_mut().record_throttled(slot, scope);
            let rid = new_request_id(self.ctx);
            self.send_error("Too Many Requests", std::str::from_utf8(&rid).unwrap_or(""));
            return;
        }
        let sent = match &route.integration {
            WsIntegration::Echo => {
                let op = match kind {
                    MessageKind::Text => Opcode::Text,
                    MessageKind::Binary => Opcode::Binary,
                };
                encode_frame(&mut self.out, op, bytes);
                true
            }
            WsIntegration::Mock { body, .. } => {
                if !body.is_empty() {
                    encode_frame(&mut self.out, Opcode::Text, body);
                }
                !body.is_empty()
            }
            WsIntegration::Http(target) => {
                let rid = new_request_id(self.ctx);
                let rid = std::str::from_utf8(&rid).unwrap_or("");
                let body = match kind {
                    MessageKind::Text => {
                        EventBody::Text(std::str::from_utf8(bytes).unwrap_or_default())
                    }
                    MessageKind::Binary => EventBody::Binary(bytes),
                };
                let event = event::render(
                    &self.facts.event(ws, &route.key, EventType::Message, rid),
                    body,
                    None,
                    None,
                );
                match http_call::post_json(self.ctx, target, &event, rid.as_bytes(), &[]).await {
                    Ok(resp) if route.return_response && !resp.body.is_empty() => {
                        let op = if std::str::from_utf8(&resp.body).is_ok() {
                            Opcode::Text
                        } else {
                            Opcode::Binary
                        };
                        encode_frame(&mut self.out, op, &resp.body);
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        log_failure(self.ctx, ws, &route.key, &e.why);
                        self.send_error("Internal server error", rid);
                        false
                    }
                }
            }
        };
        if sent {
            self.ctx.metrics.borrow_mut().ws_message_out(slot);
        }
    }

    /// Amazon API Gateway's error message to a client, as a text message.
    /// `Some(scope)` (index into `THROTTLE_SCOPES`) when a limit refuses this message.
    fn throttle(&mut self, route: &crate::websocket::api::WsRoute) -> Option<usize> {
        let now = self.ctx.nanos();
        if let Some(t) = self.limits.connection_throttle {
            let bucket = self.bucket.get_or_insert_with(|| ConnBucket::new(t, now));
            if !bucket.take(now) {
                return Some(3);
            }
        }
        if route.limit_ids.is_empty() {
            return None;
        }
        let mut limiter = self.ctx.limiter.borrow_mut();
        let checked = limiter.check(&route.limit_ids);
        let ask = limiter.early_ask(now);
        drop(limiter);
        if let Some(report) = ask {
            self.ctx.send_limiter_report(report);
        }
        checked.err().map(|t| {
            route
                .throttles
                .get(t.which)
                .map_or(0, |(_, _, s)| *s as usize)
        })
    }

    fn send_error(&mut self, message: &str, request_id: &str) {
        let body = serde_json::json!({
            "message": message,
            "connectionId": &*self.facts.connection_id,
            "requestId": request_id,
        })
        .to_string();
        encode_frame(&mut self.out, Opcode::Text, body.as_bytes());
    }

    /// Moves to the newest snapshot that still serves this connection's API and stage.
    fn refresh_snapshot(&mut self) {
        let current = self.ctx.snapshot();
        if Rc::ptr_eq(&current, &self.snap) {
            return;
        }
        if let Some((api, stage)) = find_stage(&current, &self.api_name, &self.stage_name) {
            self.snap = current;
            self.api = api;
            self.stage = stage;
        }
    }

    /// Acts on the inbox: pushed messages, close requests.
    fn commands(&mut self, dec: &mut Decoder) {
        while let Some(cmd) = self.shared.pop() {
            match cmd {
                Command::Send { payload, text } => {
                    if dec.state() == CloseState::Open {
                        let op = if text { Opcode::Text } else { Opcode::Binary };
                        encode_frame(&mut self.out, op, &payload);
                        self.ctx.metrics.borrow_mut().ws_pushed();
                    }
                }
                Command::Close(code) => self.start_close(dec, code, ""),
            }
        }
    }

    /// Sends our close and starts waiting for the client's.
    fn start_close(&mut self, dec: &mut Decoder, code: CloseCode, reason: &str) {
        if dec.state() != CloseState::Open {
            return;
        }
        encode_close(&mut self.out, code, reason);
        dec.close_sent();
        self.end = Some((code.0, reason.to_string()));
        self.closing = Some(self.ctx.timers.now() + Duration::from_millis(WS_CLOSE_WAIT_MS));
    }

    /// The deadline passed (or the core drains). `false`: close the socket now.
    fn on_timer(&mut self, dec: &mut Decoder) -> bool {
        let now = self.ctx.timers.now();
        if let Some(until) = self.closing {
            return now < until;
        }
        if self.ctx.draining() {
            self.start_close(dec, CloseCode::GOING_AWAY, "server shutting down");
        } else if now >= self.connected + self.limits.age_max {
            self.start_close(dec, CloseCode::GOING_AWAY, "connection age limit");
        } else if now >= self.last_message + self.limits.idle_timeout {
            self.start_close(dec, CloseCode::GOING_AWAY, "idle timeout");
        } else if let Some(every) = self.limits.ping_interval {
            match self.ping_sent {
                Some(sent) if now >= sent + every => {
                    // Nothing came back for a whole interval after a ping: the peer is gone.
                    self.gone();
                    return false;
                }
                None if now >= self.last_seen + every => {
                    encode_frame(&mut self.out, Opcode::Ping, b"");
                    self.ping_sent = Some(now);
                }
                _ => {}
            }
        }
        true
    }

    /// The next instant something is due: the close wait, else the earliest of the age limit,
    /// the idle timeout and the ping timer.
    fn deadline(&self) -> Instant {
        if let Some(until) = self.closing {
            return until;
        }
        let mut d = (self.connected + self.limits.age_max)
            .min(self.last_message + self.limits.idle_timeout);
        if let Some(every) = self.limits.ping_interval {
            d = d.min(self.ping_sent.unwrap_or(self.last_seen) + every);
        }
        d
    }

    /// Over TLS: sends `close_notify` (once), so the client sees a clean end of the session.
    async fn close_notify(&mut self) {
        let Some(tls) = self.tls else { return };
        {
            let mut t = tls.borrow_mut();
            if t.is_handshaking() {
                return;
            }
            t.close_notify();
        }
        let _ = self.flush().await;
    }

    /// Writes `out` (bounded by `WS_WRITE_TIMEOUT_MS`: a client that does not read is cut).
    /// Over TLS the plaintext is sealed first, with anything else the session has to send.
    async fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls {
            let mut sealed = Vec::with_capacity(self.out.len() + 64);
            {
                let mut t = tls.borrow_mut();
                if !self.out.is_empty() {
                    t.seal(&self.out, &mut sealed);
                }
                t.take_pending(&mut sealed);
            }
            self.out = sealed;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let mut w = self.stream;
        let write = w.write_all(out);
        match self
            .ctx
            .timers
            .timeout(Duration::from_millis(WS_WRITE_TIMEOUT_MS), write)
            .await
        {
            Ok(BufResult(res, mut out)) => {
                out.clear();
                if out.capacity() <= BUF_KEEP_BYTES {
                    self.out = out;
                }
                res
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }
}

/// Makes room for the next read: at least the frame in progress (`need` bytes from the start),
/// and some spare room that grows while reads keep filling it.
fn prepare_read(buf: &mut Vec<u8>, need: usize) {
    if buf.is_empty() && buf.capacity() > BUF_KEEP_BYTES.max(need) {
        *buf = Vec::with_capacity(READ_BYTES_MIN);
    }
    let spare_min = if buf.capacity() - buf.len() < READ_BYTES_MIN / 2 {
        (buf.capacity() * 2).clamp(READ_BYTES_MIN, READ_BYTES_BURST)
    } else {
        0
    };
    let want = need.max(buf.len() + spare_min);
    if buf.capacity() < want {
        buf.reserve_exact(want - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_bucket_admits_burst_then_rate() {
        let s = 1_000_000_000u64;
        let mut b = ConnBucket::new(crate::config::Throttle { rate: 2, burst: 3 }, 0);
        assert!(b.take(0) && b.take(0) && b.take(0), "the burst");
        assert!(!b.take(0));
        assert!(!b.take(s / 4), "half a token after 250 ms");
        assert!(b.take(s / 2), "one token after 500 ms");
        assert!(!b.take(s / 2));
        // A long pause refills to the burst, not beyond.
        for _ in 0..3 {
            assert!(b.take(100 * s));
        }
        assert!(!b.take(100 * s));
        let mut closed = ConnBucket::new(crate::config::Throttle { rate: 0, burst: 5 }, 0);
        assert!(!closed.take(1000 * s), "rate 0 throttles everything");
    }

    #[test]
    fn read_buffer_makes_room_for_the_frame_and_grows_for_bursts() {
        let mut b = Vec::with_capacity(READ_BYTES_MIN);
        prepare_read(&mut b, 2);
        assert_eq!(b.capacity(), READ_BYTES_MIN);
        // A 100 KiB frame must fit whole.
        b.extend_from_slice(&[0; 10]);
        prepare_read(&mut b, 100 * 1024);
        assert!(b.capacity() >= 100 * 1024);
        // Once empty, a big buffer is given back.
        b.clear();
        prepare_read(&mut b, 2);
        assert_eq!(b.capacity(), READ_BYTES_MIN);
        // A full buffer gets spare room.
        b.resize(READ_BYTES_MIN, 0);
        prepare_read(&mut b, 2);
        assert!(b.capacity() - b.len() >= READ_BYTES_MIN);
        assert!(b.capacity() <= READ_BYTES_MIN + READ_BYTES_BURST);
    }

    #[test]
    fn refusal_is_json_with_close() {
        let mut out = Vec::new();
        let rid = RequestId::new(b"rid-1");
        Refusal {
            status: 426,
            header: Some(("Sec-WebSocket-Version", "13")),
            why: String::new(),
        }
        .write(&mut out, b"Sun, 06 Nov 1994 08:49:37 GMT", &rid);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 "), "{text}");
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.contains("x-request-id: rid-1\r\n"));
        assert!(
            text.ends_with(r#"{"message":"Upgrade Required"}"#),
            "{text}"
        );
    }
}

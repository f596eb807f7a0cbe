//! WebSocket APIs and WebSocket proxying driven by an independent implementation: the
//! `tungstenite` crate (sync, std sockets) is the client, and for proxied WebSockets the
//! backend too. Nothing here frames, masks or parses WebSocket bytes with the gateway's own
//! codec, so a bug that the gateway and `tests/common`'s `WsClient` share (both use
//! `tollgate::websocket::frame`) still fails these tests.
//!
//! Covered: echo and mock routes (text, binary, ping), a `$connect` refused by its mock and
//! http integrations, `@connections` pushes and DELETE, the 429 for a client whose push queue
//! is full, an `http_proxy` relay to a tungstenite echo backend (both directions, large
//! messages, subprotocol), and close handshakes with their codes from either side.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{Request as HsRequest, Response as HsResponse};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, Message, WebSocket};

type Ws = WebSocket<TcpStream>;

// ---- client helpers ----

/// Upgrades with tungstenite at `ws://addr{path}` with `headers`; the error is tungstenite's
/// (for a refused upgrade: `Error::Http` with the gateway's response).
fn try_open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a ws:// url");
    for (n, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(n.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    match tungstenite::client(req, stream) {
        Ok((ws, _resp)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking socket interrupted"),
    }
}

fn open(addr: SocketAddr, path: &str) -> Ws {
    try_open(addr, path, &[]).unwrap_or_else(|e| panic!("upgrade at {path} refused: {e:?}"))
}

/// The next data or close message (pings are answered by tungstenite itself; pongs skipped).
fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("a message from the peer") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

fn next_text(ws: &mut Ws) -> String {
    match next(ws) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn ask(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).expect("send");
    next_text(ws)
}

/// Expects a close with `code` (and `reason`, when given) from the peer; tungstenite answers
/// it, and the peer then ends the TCP connection.
fn expect_close(ws: &mut Ws, code: u16, reason: Option<&str>) {
    match next(ws) {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), code, "{f:?}");
            if let Some(r) = reason {
                assert_eq!(f.reason.as_str(), r);
            }
        }
        other => panic!("expected a close {code}, got {other:?}"),
    }
    expect_closed(ws);
}

/// After a close handshake: tungstenite reports it done (having sent its reply, if it owed
/// one), and the peer ends the TCP connection with nothing more sent.
fn expect_closed(ws: &mut Ws) {
    loop {
        match ws.read() {
            Err(WsError::ConnectionClosed) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected the end of the connection, got {other:?}"),
        }
    }
    let mut rest = Vec::new();
    let n = ws.get_mut().read_to_end(&mut rest).expect("read to EOF");
    assert_eq!(n, 0, "bytes after the close: {rest:?}");
}

/// Closes with `code`/`reason` and expects the peer's close to echo the code.
fn close_with(ws: &mut Ws, code: u16, reason: &str) {
    ws.close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
    .expect("send close");
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), code, "{f:?}"),
        other => panic!("expected the close reply, got {other:?}"),
    }
    expect_closed(ws);
}

// ---- config helpers ----

/// A `whoami` route answering with the event an echoing http backend received.
fn whoami_route(echo_backend: &Backend) -> String {
    format!(
        "{}return_response = true\n",
        ws_route("whoami", &ws_http(echo_backend.addr, "/whoami"))
    )
}

fn whoami(ws: &mut Ws) -> String {
    let v: Value = serde_json::from_str(&ask(ws, r#"{"action":"whoami"}"#)).expect("event");
    v["requestContext"]["connectionId"]
        .as_str()
        .expect("connectionId")
        .to_string()
}

// ---- mock routes ----

#[test]
fn tungstenite_echoes_through_a_mock_route() {
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("fixed", "{ type = \"mock\", body = \"a fixed reply\" }"),
            ws_route("$default", WS_ECHO)
        ),
    ));
    // tungstenite checks Sec-WebSocket-Accept against its own key: a wrong one fails here.
    let mut ws = open(gw.addr, "/");
    assert_eq!(ask(&mut ws, "héllo wörld"), "héllo wörld");
    assert_eq!(ask(&mut ws, r#"{"action":"fixed"}"#), "a fixed reply");
    // Lengths on each side of the 7-bit, 16-bit and 64-bit length encodings, up to the
    // default 32 KiB frame limit.
    for n in [0usize, 1, 125, 126, 127, 4096, 32 * 1024] {
        let text = "é".repeat(n / 2) + &"x".repeat(n % 2);
        assert_eq!(ask(&mut ws, &text), text, "{n} bytes");
    }
    let bin: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    ws.send(Message::binary(bin.clone())).expect("send");
    match next(&mut ws) {
        Message::Binary(b) => assert_eq!(&b[..], &bin[..]),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.send(Message::Ping(b"ping?".to_vec().into()))
        .expect("ping");
    match ws.read().expect("pong") {
        Message::Pong(p) => assert_eq!(&p[..], b"ping?"),
        other => panic!("expected a pong, got {other:?}"),
    }
    close_with(&mut ws, 1000, "done");
}

// ---- $connect ----

#[test]
fn tungstenite_connect_refused_by_its_integration() {
    let no = Backend::start(Reply::Fixed {
        status: 401,
        headers: vec![],
        body: b"{\"message\":\"who?\"}".to_vec(),
    });
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$connect", &ws_http(no.addr, "/connect")),
            ws_route("$default", WS_ECHO)
        ),
    ));
    match try_open(gw.addr, "/?token=bad", &[]) {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            // The gateway answers with its own JSON error for the backend's status.
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().expect("a body")).expect("JSON");
            assert_eq!(body["message"], "Unauthorized");
        }
        other => panic!("expected a 401 refusal, got {:?}", other.map(|_| "101")),
    }
    let seen = no.requests();
    assert_eq!(seen.len(), 1);
    let e: Value = serde_json::from_slice(&seen[0].body).expect("event");
    assert_eq!(e["requestContext"]["eventType"], "CONNECT");
    assert_eq!(e["queryStringParameters"]["token"], "bad");

    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$connect", "{ type = \"mock\", status = 403 }"),
            ws_route("$default", WS_ECHO)
        ),
    ));
    match try_open(gw.addr, "/", &[]) {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!("expected a 403 refusal, got {:?}", other.map(|_| "101")),
    }
}

// ---- @connections ----

#[test]
fn tungstenite_receives_connections_pushes_and_delete() {
    let echo = Backend::start(Reply::Echo);
    let gw = Gateway::start(&ws_config(
        "",
        &format!("{}{}", whoami_route(&echo), ws_route("$default", WS_ECHO)),
    ));
    let mut ws = open(gw.addr, "/");
    let id = whoami(&mut ws);
    let path = format!("/@connections/{id}");
    let r = gw.admin_body("POST", &path, "pushed ✓".as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(next_text(&mut ws), "pushed ✓");
    // Not UTF-8: sent as a binary message. A long one takes a 64-bit length.
    let bin: Vec<u8> = (0..100_000u32)
        .map(|i| (i * 7 % 251) as u8 | 0x80)
        .collect();
    let r = gw.admin_body("POST", &path, &bin);
    assert_eq!(r.status, 200, "{}", r.text());
    match next(&mut ws) {
        Message::Binary(b) => assert_eq!(&b[..], &bin[..]),
        other => panic!("expected binary, got {other:?}"),
    }
    assert_eq!(ask(&mut ws, "still open"), "still open");
    assert_eq!(gw.admin_request("DELETE", &path, &[]).status, 204);
    expect_close(&mut ws, 1000, None);
    assert_eq!(gw.admin_request("GET", &path, &[]).status, 410);
}

#[test]
fn a_client_that_does_not_read_its_pushes_gets_them_after_429() {
    let echo = Backend::start(Reply::Echo);
    let gw = Gateway::start(&ws_config(
        "",
        &format!("{}{}", whoami_route(&echo), ws_route("$default", WS_ECHO)),
    ));
    let mut ws = open(gw.addr, "/");
    let id = whoami(&mut ws);
    let path = format!("/@connections/{id}");
    // The client reads nothing: the socket buffers fill, then the connection's queue
    // (1 MiB), then pushes are refused. 2000 × 100 KB is far more than loopback buffers hold.
    let chunk = 100_000;
    let mut accepted = 0usize;
    let refused = loop {
        assert!(accepted < 2000, "never refused after {accepted} pushes");
        let mut body = vec![b'a' + (accepted % 26) as u8; chunk];
        body[..8].copy_from_slice(format!("{accepted:08}").as_bytes());
        let r = gw.admin_body("POST", &path, &body);
        match r.status {
            200 => accepted += 1,
            429 => break r,
            s => panic!("push {accepted}: {s} {}", r.text()),
        }
    };
    assert_eq!(refused.json()["message"], "Too Many Requests");
    // More than the queue alone: some went out to the socket.
    assert!(accepted * chunk > 1 << 20, "{accepted}");
    // Once the client reads, every accepted push arrives, in order, and the connection works.
    for i in 0..accepted {
        let text = next_text(&mut ws);
        assert_eq!(text.len(), chunk);
        assert_eq!(&text[..8], format!("{i:08}"), "push {i} out of order");
    }
    assert_eq!(ask(&mut ws, "drained"), "drained");
    assert_eq!(gw.admin_body("POST", &path, b"after").status, 200);
    assert_eq!(next_text(&mut ws), "after");
}

// ---- close handshakes ----

#[test]
fn close_handshake_codes_both_ways() {
    let bye = Backend::start(Reply::ok(""));
    let gw = Gateway::start(&ws_config(
        "frame_bytes_max = 100\nidle_timeout_ms = 800\nping_interval_ms = 0",
        &format!(
            "{}{}",
            ws_route("$default", WS_ECHO),
            ws_route("$disconnect", &ws_http(bye.addr, "/bye"))
        ),
    ));
    // Client first: the gateway echoes the code, and $disconnect sees it and the reason.
    let mut ws = open(gw.addr, "/");
    assert_eq!(ask(&mut ws, "x"), "x");
    close_with(&mut ws, 4321, "client says bye");
    let e = eventually("$disconnect after the client's close", || {
        bye.requests().first().cloned()
    });
    let e: Value = serde_json::from_slice(&e.body).expect("event");
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 4321);
    assert_eq!(e["requestContext"]["disconnectReason"], "client says bye");

    // A plain 1000 without a reason.
    let mut ws = open(gw.addr, "/");
    close_with(&mut ws, 1000, "");

    // Gateway first: a frame over the limit (1009), then silence (1001 idle timeout).
    let mut ws = open(gw.addr, "/");
    ws.send(Message::text("y".repeat(101))).expect("send");
    expect_close(&mut ws, 1009, None);
    let mut ws = open(gw.addr, "/");
    expect_close(&mut ws, 1001, Some("idle timeout"));
    for code in ["4321", "1000", "1009", "1001"] {
        let line = format!("tollgate_websocket_closes_total{{code=\"{code}\"}} 1");
        eventually(&line, || gw.metrics().contains(&line).then_some(()));
    }
}

// ---- plain WebSocket proxying ----

/// What the tungstenite echo backend saw.
#[derive(Default)]
struct BackendLog {
    /// Request target of each upgrade.
    targets: Vec<String>,
    /// `X-Custom` header of each upgrade.
    custom: Vec<Option<String>>,
    /// Close frames received from the gateway: (code, reason).
    closes: Vec<(u16, String)>,
}

/// An echo server built on tungstenite's server side, on 127.0.0.1 port 0. It picks the first
/// subprotocol offered, echoes data messages, answers a text `"close <code>"` by closing with
/// that code, and records upgrades and close frames.
struct TungsteniteEcho {
    addr: SocketAddr,
    log: Arc<Mutex<BackendLog>>,
}

impl TungsteniteEcho {
    fn start() -> TungsteniteEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(BackendLog::default()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log2.clone();
                std::thread::spawn(move || tungstenite_echo_conn(stream, &log));
            }
        });
        TungsteniteEcho { addr, log }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, BackendLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// The handshake callback's signature is tungstenite's (its error is a whole HTTP response).
#[allow(clippy::result_large_err)]
fn tungstenite_echo_conn(stream: TcpStream, log: &Mutex<BackendLog>) {
    let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
    let callback = |req: &HsRequest, mut resp: HsResponse| {
        let mut l = lock();
        l.targets.push(req.uri().to_string());
        l.custom.push(
            req.headers()
                .get("x-custom")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        if let Some(first) = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                first.trim().parse().expect("value"),
            );
        }
        resp.headers_mut()
            .insert("x-backend", "tungstenite".parse().expect("value"));
        Ok(resp)
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(config)) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if let Some(code) = t.as_str().strip_prefix("close ") {
                    let code: u16 = code.parse().expect("a close code");
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "backend closes".into(),
                    }));
                } else if ws.send(Message::Text(t)).is_err() {
                    return;
                }
            }
            Ok(Message::Binary(b)) => {
                if ws.send(Message::Binary(b)).is_err() {
                    return;
                }
            }
            Ok(Message::Close(f)) => {
                if let Some(f) = f {
                    lock()
                        .closes
                        .push((u16::from(f.code), f.reason.to_string()));
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn proxy_config(backend: SocketAddr) -> String {
    config(&format!(
        "[[api]]\nname = \"p\"\n[[api.route]]\nkey = \"ANY /chat/{{proxy+}}\"\n\
         integration = {{ type = \"http_proxy\", uri = \"http://{backend}/ws/{{proxy}}\" }}\n"
    ))
}

#[test]
fn tungstenite_relay_through_http_proxy_to_a_tungstenite_backend() {
    let backend = TungsteniteEcho::start();
    let gw = Gateway::start(&proxy_config(backend.addr));
    let mut ws = try_open(
        gw.addr,
        "/chat/room1?x=1",
        &[
            ("Sec-WebSocket-Protocol", "chat.v1, chat.v0"),
            ("X-Custom", "yes"),
        ],
    )
    .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    assert_eq!(ask(&mut ws, "through the proxy"), "through the proxy");
    {
        let log = backend.log();
        assert_eq!(log.targets, ["/ws/room1?x=1"]);
        assert_eq!(log.custom, [Some("yes".to_string())]);
    }
    // Large messages both ways, in many TCP segments on each side.
    for n in [126usize, 65_536, 300_000, 2_000_000] {
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        ws.send(Message::binary(data.clone())).expect("send");
        match next(&mut ws) {
            Message::Binary(b) => assert!(b[..] == data[..], "{n} bytes differ"),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    // Many messages written at once come back in order.
    for i in 0..100 {
        ws.write(Message::text(format!("m{i}"))).expect("queue");
    }
    ws.flush().expect("flush");
    for i in 0..100 {
        assert_eq!(next_text(&mut ws), format!("m{i}"));
    }
    // Client-initiated close: the backend sees the client's code and reason, and its reply
    // comes back through the relay.
    close_with(&mut ws, 4001, "client done");
    eventually("backend saw the close", || {
        backend.log().closes.first().cloned()
    });
    assert_eq!(backend.log().closes[0], (4001, "client done".to_string()));

    // Backend-initiated close: the client gets the backend's code and reason.
    let mut ws = open(gw.addr, "/chat/room2");
    assert_eq!(ask(&mut ws, "hi"), "hi");
    ws.send(Message::text("close 4002")).expect("send");
    expect_close(&mut ws, 4002, Some("backend closes"));
}

#[test]
fn reload_leaves_an_open_proxied_websocket_working() {
    let first = TungsteniteEcho::start();
    let second = TungsteniteEcho::start();
    let gw = Gateway::start(&proxy_config(first.addr));
    let mut old = open(gw.addr, "/chat/a");
    assert_eq!(ask(&mut old, "before"), "before");
    // The route now names another backend: the open relay stays with the first one, a new
    // upgrade goes to the second.
    gw.rewrite_config(&proxy_config(second.addr));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(ask(&mut old, "after the reload"), "after the reload");
    let mut new = open(gw.addr, "/chat/b");
    assert_eq!(ask(&mut new, "new"), "new");
    assert_eq!(first.log().targets, ["/ws/a"]);
    assert_eq!(second.log().targets, ["/ws/b"]);
    // A reload that drops the API: both relays keep working, new upgrades find no route.
    gw.rewrite_config(&config(
        "[[api]]\nname = \"other\"\n[[api.route]]\nkey = \"GET /x\"\nintegration = { type = \"mock\" }\n",
    ));
    assert_eq!(gw.reload().status, 200);
    let big = vec![9u8; 200_000];
    for ws in [&mut old, &mut new] {
        assert_eq!(ask(ws, "still here"), "still here");
        ws.send(Message::binary(big.clone())).expect("send");
        match next(ws) {
            Message::Binary(b) => assert!(b[..] == big[..]),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    match try_open(gw.addr, "/chat/c", &[]) {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected a 404, got {:?}", other.map(|_| "101")),
    }
    close_with(&mut old, 1000, "");
    close_with(&mut new, 1000, "");
    assert_eq!(first.log().closes.len() + second.log().closes.len(), 2);
}

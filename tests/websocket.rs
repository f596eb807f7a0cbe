//! WebSocket APIs end to end over real sockets: the handshake, `$connect` (mock and http
//! backends), echo, routing by route key, `$default`, `return_response`, `$disconnect`, the
//! `@connections` management API across cores, idle timeout, maximum age, pings, size limits,
//! reloads, drain (1001 to open connections, 503 to new upgrades), plain WebSocket proxying
//! through an `http_proxy` route and its 501 when TLS is on either side, and the 426 for a
//! websocket stage reached over HTTP/2. `tests/websocket_interop.rs` drives much of the same
//! with an independent client and backend (tungstenite).

mod common;
mod tls_common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The events a backend received, parsed.
fn events(b: &Backend) -> Vec<Value> {
    b.requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("event JSON"))
        .collect()
}

/// A client's connection id, asked through a `whoami` route whose http backend echoes the
/// event back (`return_response`).
fn whoami(ws: &mut WsClient) -> String {
    let v: Value = serde_json::from_str(&ws.ask(r#"{"action":"whoami"}"#)).expect("event");
    v["requestContext"]["connectionId"]
        .as_str()
        .expect("connectionId")
        .to_string()
}

fn whoami_route(echo_backend: &Backend) -> String {
    format!(
        "{}return_response = true\n",
        ws_route("whoami", &ws_http(echo_backend.addr, "/whoami"))
    )
}

// ---- handshake ----

#[test]
fn handshake_accept_key_and_subprotocols() {
    let gw = Gateway::start(&ws_config(
        "subprotocols = [\"v2\", \"v1\"]",
        &ws_route("$default", WS_ECHO),
    ));
    let ws = WsClient::connect(gw.addr, "/", &[("Sec-WebSocket-Protocol", "v0, v1, v2")])
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(ws.head.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(
        ws.head
            .header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    // The client's order decides among the ones the API allows.
    assert_eq!(ws.head.header("sec-websocket-protocol"), Some("v1"));
    assert!(ws.head.header("x-request-id").is_some_and(is_uuid_shape));
    ws.close();
    let ws = WsClient::connect(gw.addr, "/", &[("Sec-WebSocket-Protocol", "v3")]).unwrap();
    assert_eq!(ws.head.header("sec-websocket-protocol"), None);
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.head.header("sec-websocket-protocol"), None);
    assert_eq!(ws.ask("hi"), "hi");
}

#[test]
fn handshake_refusals() {
    let gw = Gateway::start(&ws_config("", &ws_route("$default", WS_ECHO)));
    let r = WsClient::connect(gw.addr, "/", &[("Sec-WebSocket-Version", "8")])
        .err()
        .unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(r.json()["message"], "Upgrade Required");
    let r = WsClient::connect(gw.addr, "/", &[("Sec-WebSocket-Key", "short")])
        .err()
        .unwrap();
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, "Bad Request".into())
    );
    // A plain GET to a websocket API is not an upgrade.
    let r = gw.request(&get("/"));
    assert_eq!(r.status, 400);
    assert!(r.says_close());
    // Nor is a POST.
    let r = gw.request(&request(
        "POST",
        "/",
        &[("Upgrade", "websocket"), ("Connection", "upgrade")],
        b"",
    ));
    assert_eq!(r.status, 400);
    // Metrics count the refusals on the stage's upgrade route.
    let m = gw.metrics();
    assert!(m.contains("route=\"$connect\",status=\"426\"} 1"), "{m}");
}

// ---- $connect ----

#[test]
fn connect_mock_allows_or_refuses() {
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}[[api.stage]]\nname = \"open\"\n[[api.stage]]\nname = \"shut\"\nvariables = {{ s = \"x\" }}\n",
            ws_route("$connect", "{ type = \"mock\", status = 200 }"),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/open");
    assert_eq!(ws.ask("x"), "x");
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route(
                "$connect",
                "{ type = \"mock\", status = 403, body = \"{\\\"message\\\":\\\"no entry\\\"}\" }"
            ),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let r = WsClient::connect(gw.addr, "/", &[]).err().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["message"], "no entry");
    assert!(r.says_close());
}

#[test]
fn connect_http_backend_gets_headers_and_query_and_decides() {
    let yes = Backend::start(Reply::Fixed {
        status: 200,
        headers: vec![("Sec-WebSocket-Protocol".into(), "chosen".into())],
        body: Vec::new(),
    });
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$connect", &ws_http(yes.addr, "/connect")),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let mut ws = WsClient::connect(
        gw.addr,
        "/?token=a%20b&room=1&room=2",
        &[("X-Tag", "t1"), ("Sec-WebSocket-Protocol", "other, chosen")],
    )
    .unwrap_or_else(|r| panic!("{r:?}"));
    // The backend named a subprotocol the client offered: that one is accepted.
    assert_eq!(ws.head.header("sec-websocket-protocol"), Some("chosen"));
    assert_eq!(ws.ask("after connect"), "after connect");
    let seen = yes.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/connect")
    );
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    let e = &events(&yes)[0];
    let rc = &e["requestContext"];
    assert_eq!(rc["routeKey"], "$connect");
    assert_eq!(rc["eventType"], "CONNECT");
    assert_eq!(rc["stage"], "$default");
    assert_eq!(rc["apiId"], "w");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["domainName"], HOST);
    assert!(rc["connectedAt"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(rc["connectionId"].as_str().unwrap().len(), 24);
    assert_eq!(rc["requestId"].as_str(), ws.head.header("x-request-id"));
    assert_eq!(e["headers"]["X-Tag"], "t1");
    assert_eq!(e["headers"]["Sec-WebSocket-Key"], WS_KEY);
    assert_eq!(e["queryStringParameters"]["token"], "a b");
    assert_eq!(
        e["multiValueQueryStringParameters"]["room"],
        serde_json::json!(["1", "2"])
    );
    assert!(e.get("body").is_none());

    let no = Backend::start(Reply::Fixed {
        status: 401,
        headers: vec![],
        body: b"{\"message\":\"who?\"}".to_vec(),
    });
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$connect", &ws_http(no.addr, "/c")),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let r = WsClient::connect(gw.addr, "/", &[]).err().unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(no.requests().len(), 1);
    // A backend that cannot be reached refuses with 502.
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$connect", &ws_http(refused_addr(), "/c")),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let r = WsClient::connect(gw.addr, "/", &[]).err().unwrap();
    assert_eq!(r.status, 502);
}

// ---- messages ----

#[test]
fn echo_text_binary_and_fragments() {
    let gw = Gateway::start(&ws_config("", &ws_route("$default", WS_ECHO)));
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.ask("héllo"), "héllo");
    ws.send_binary(&[0, 159, 146, 150, 255]);
    let f = ws.recv();
    assert_eq!(
        (f.opcode, f.payload.clone()),
        (2, vec![0, 159, 146, 150, 255])
    );
    // Fragmented with a ping in between: the pong first, then the whole message.
    ws.send_frame(false, 1, b"frag");
    ws.send_frame(true, 9, b"p!");
    ws.send_frame(false, 0, b"men");
    ws.send_frame(true, 0, b"ted");
    let pong = ws.recv();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"p!"[..]));
    assert_eq!(ws.recv_text(), "fragmented");
    // Up to the default frame limit (32 KiB) in one frame.
    let big = "x".repeat(32 * 1024);
    assert_eq!(ws.ask(&big), big);
    // Many messages in one write come back in order.
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(ws_client_frame(true, 1, format!("m{i}").as_bytes()));
    }
    ws.c.send(&burst);
    for i in 0..50 {
        assert_eq!(ws.recv_text(), format!("m{i}"));
    }
    ws.close();
}

#[test]
fn messages_route_by_action_else_default() {
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}{}",
            ws_route("a", "{ type = \"mock\", body = \"route a\" }"),
            ws_route("b", "{ type = \"mock\", body = \"route b\" }"),
            ws_route("$default", "{ type = \"mock\", body = \"default\" }")
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.ask(r#"{"action":"a"}"#), "route a");
    assert_eq!(ws.ask(r#"{"x":1,"action":"b"}"#), "route b");
    assert_eq!(ws.ask(r#"{"action":"c"}"#), "default");
    assert_eq!(ws.ask(r#"{"action":"$connect"}"#), "default");
    assert_eq!(ws.ask("not json"), "default");
    ws.send_binary(br#"{"action":"a"}"#);
    assert_eq!(ws.recv_text(), "default");
    let m = gw.metrics();
    assert!(
        m.contains("tollgate_websocket_messages_total{api=\"w\",stage=\"$default\",route=\"a\",direction=\"in\"} 1"),
        "{m}"
    );
    assert!(m.contains("route=\"$default\",direction=\"in\"} 4"), "{m}");
    assert!(m.contains("route=\"$default\",direction=\"out\"} 4"), "{m}");
    assert!(m.contains("tollgate_websocket_connections_open 1"), "{m}");
    ws.close();
    let m = eventually("close counted", || {
        let m = gw.metrics();
        m.contains("tollgate_websocket_closes_total{code=\"1000\"} 1")
            .then_some(m)
    });
    assert!(m.contains("tollgate_websocket_connections_open 0"), "{m}");
}

#[test]
fn route_selection_expression_is_configurable() {
    let gw = Gateway::start(&ws_config(
        "route_selection = \"$request.body.meta.op\"",
        &format!(
            "{}{}",
            ws_route("ping", "{ type = \"mock\", body = \"pong\" }"),
            ws_route("$default", "{ type = \"mock\", body = \"default\" }")
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.ask(r#"{"meta":{"op":"ping"}}"#), "pong");
    assert_eq!(ws.ask(r#"{"action":"ping"}"#), "default");
}

#[test]
fn no_route_and_no_default_answers_forbidden_and_stays_open() {
    let gw = Gateway::start(&ws_config("", &ws_route("a", WS_ECHO)));
    let mut ws = WsClient::open(gw.addr, "/");
    let v: Value = serde_json::from_str(&ws.ask(r#"{"action":"zzz"}"#)).unwrap();
    assert_eq!(v["message"], "Forbidden");
    assert_eq!(v["connectionId"].as_str().unwrap().len(), 24);
    assert!(v["requestId"].as_str().is_some_and(is_uuid_shape));
    assert_eq!(ws.ask(r#"{"action":"a"}"#), r#"{"action":"a"}"#);
}

#[test]
fn http_route_with_return_response_sends_the_backend_body() {
    let echo = Backend::start(Reply::Echo);
    let quiet = Backend::start(Reply::ok("not sent"));
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}return_response = true\n{}{}",
            ws_route("send", &ws_http(echo.addr, "/send?k=v")),
            ws_route("fire", &ws_http(quiet.addr, "/fire")),
            ws_route("$default", WS_ECHO)
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    let msg = r#"{"action":"send","text":"hi \"there\""}"#;
    let v: Value = serde_json::from_str(&ws.ask(msg)).unwrap();
    assert_eq!(v["body"], msg);
    assert_eq!(v["isBase64Encoded"], false);
    let rc = &v["requestContext"];
    assert_eq!(rc["routeKey"], "send");
    assert_eq!(rc["eventType"], "MESSAGE");
    assert_eq!(rc["messageDirection"], "IN");
    assert_eq!(rc["stage"], "$default");
    assert_eq!(rc["apiId"], "w");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert!(rc["requestId"].as_str().is_some_and(is_uuid_shape));
    let id = rc["connectionId"].as_str().unwrap().to_string();
    let seen = echo.requests();
    assert_eq!(seen[0].target, "/send?k=v");
    assert_eq!(seen[0].header("x-request-id"), rc["requestId"].as_str());
    // Without return_response the backend is called and the client gets nothing: the next
    // answer is the echo of the message after it.
    ws.send_text(r#"{"action":"fire"}"#);
    assert_eq!(ws.ask("after"), "after");
    let fired = events(&quiet);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["requestContext"]["connectionId"], id.as_str());
    assert_eq!(fired[0]["body"], r#"{"action":"fire"}"#);
    ws.close();
}

#[test]
fn http_route_failure_sends_an_error_message() {
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}return_response = true\n",
            ws_route("$default", &ws_http(refused_addr(), "/x"))
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    let v: Value = serde_json::from_str(&ws.ask("x")).unwrap();
    assert_eq!(v["message"], "Internal server error");
    assert!(ws.ask("again").contains("Internal server error"));
}

// ---- $disconnect ----

#[test]
fn disconnect_runs_after_a_close_and_after_an_abrupt_drop() {
    let echo = Backend::start(Reply::Echo);
    let bye = Backend::start(Reply::ok(""));
    let gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            whoami_route(&echo),
            ws_route("$disconnect", &ws_http(bye.addr, "/bye"))
        ),
    ));
    let mut a = WsClient::open(gw.addr, "/");
    let id_a = whoami(&mut a);
    a.send_frame(true, 8, b"\x0f\xa0see you");
    let f = a.recv();
    assert_eq!(f.close_code(), Some(4000));
    a.expect_eof();
    let e = eventually("$disconnect after a close", || {
        events(&bye).into_iter().next()
    });
    let rc = &e["requestContext"];
    assert_eq!(rc["eventType"], "DISCONNECT");
    assert_eq!(rc["routeKey"], "$disconnect");
    assert_eq!(rc["connectionId"], id_a.as_str());
    assert_eq!(rc["disconnectStatusCode"], 4000);
    assert_eq!(rc["disconnectReason"], "see you");

    let mut b = WsClient::open(gw.addr, "/");
    let id_b = whoami(&mut b);
    drop(b); // TCP close, no close frame
    let e = eventually("$disconnect after a drop", || {
        events(&bye).into_iter().nth(1)
    });
    assert_eq!(e["requestContext"]["connectionId"], id_b.as_str());
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1006);
    // The connection is gone from the registry.
    let r = gw.admin_request("GET", &format!("/@connections/{id_b}"), &[]);
    assert_eq!(r.status, 410);
}

// ---- @connections ----

#[test]
fn connections_api_post_get_delete() {
    let echo = Backend::start(Reply::Echo);
    let gw = Gateway::start(&ws_config(
        "",
        &format!("{}{}", whoami_route(&echo), ws_route("$default", WS_ECHO)),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    let before = registry_now_ms();
    let id = whoami(&mut ws);
    let path = format!("/@connections/{id}");

    let r = gw.admin_body("POST", &path, b"pushed text");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.recv_text(), "pushed text");
    let r = gw.admin_body("POST", &path, &[0xff, 0x00]);
    assert_eq!(r.status, 200);
    let f = ws.recv();
    assert_eq!((f.opcode, f.payload), (2, vec![0xff, 0x00]));
    // Over the API's message limit (128 KiB).
    let r = gw.admin_body("POST", &path, &vec![b'a'; 128 * 1024 + 1]);
    assert_eq!(r.status, 413);

    let r = gw.admin_request("GET", &path, &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    let connected = v["connectedAt"].as_str().unwrap();
    let active = v["lastActiveAt"].as_str().unwrap();
    assert!(
        connected.ends_with('Z') && connected.len() == 24,
        "{connected}"
    );
    assert!(active >= connected, "{active} < {connected}");
    assert!(connected[..10] == iso_day(before) || connected[..10] == iso_day(registry_now_ms()));

    let r = gw.admin_request("DELETE", &path, &[]);
    assert_eq!(r.status, 204);
    ws.expect_close(1000);
    let r = gw.admin_request("GET", &path, &[]);
    assert_eq!(
        (r.status, r.text()),
        (410, r#"{"message":"Gone"}"#.to_string())
    );
    let r = gw.admin_body("POST", &path, b"late");
    assert_eq!(r.status, 410);
    // Ids that never existed, and text that is no id.
    let r = gw.admin_request("GET", "/@connections/AAAAAAAAAAAAAAAAAAAAAAAA", &[]);
    assert_eq!(r.status, 410);
    let r = gw.admin_request("DELETE", "/@connections/not-an-id", &[]);
    assert_eq!(r.status, 410);
    // A core that does not exist.
    let r = gw.admin_request("GET", "/@connections/AAD_AAAAAAAAAAAAAAAAAAAA", &[]);
    assert_eq!(r.status, 410);
}

#[test]
fn connections_api_requires_the_admin_token() {
    let echo = Backend::start(Reply::Echo);
    let gw = Gateway::start(&config_with(
        "",
        "token = \"s3cret\"",
        &format!(
            "[[api]]\nname = \"w\"\nprotocol = \"websocket\"\n{}",
            whoami_route(&echo)
        ),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    let id = whoami(&mut ws);
    let path = format!("/@connections/{id}");
    assert_eq!(gw.admin_request("GET", &path, &[]).status, 401);
    let r = gw.admin_request("GET", &path, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(r.status, 200);
}

#[test]
fn connections_api_reaches_every_core() {
    let echo = Backend::start(Reply::Echo);
    let gw = Gateway::start_cores(
        &ws_config(
            "",
            &format!("{}{}", whoami_route(&echo), ws_route("$default", WS_ECHO)),
        ),
        Some(2),
    );
    let mut clients: Vec<(WsClient, String)> = (0..40)
        .map(|_| {
            let mut ws = WsClient::open(gw.addr, "/");
            let id = whoami(&mut ws);
            (ws, id)
        })
        .collect();
    let cores: std::collections::BTreeSet<u16> =
        clients.iter().map(|(_, id)| ws_id_core(id)).collect();
    // SO_REUSEPORT spreads 40 connections over both cores (all on one: p = 2^-39).
    assert_eq!(cores.into_iter().collect::<Vec<_>>(), [0, 1]);
    for (i, (_, id)) in clients.iter().enumerate() {
        let r = gw.admin_body(
            "POST",
            &format!("/@connections/{id}"),
            format!("to {i}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        assert_eq!(ws.recv_text(), format!("to {i}"));
    }
    // Every connection is still usable, and GET answers from the owning core.
    for (ws, id) in &mut clients {
        assert_eq!(ws.ask("still here"), "still here");
        let r = gw.admin_request("GET", &format!("/@connections/{id}"), &[]);
        assert_eq!(r.status, 200);
    }
    let m = gw.metrics();
    assert!(m.contains("tollgate_websocket_connections_open 40"), "{m}");
    assert!(m.contains("tollgate_websocket_pushed_total 40"), "{m}");
    for (ws, id) in clients.drain(..) {
        assert_eq!(
            gw.admin_request("DELETE", &format!("/@connections/{id}"), &[])
                .status,
            204
        );
        let mut ws = ws;
        ws.expect_close(1000);
    }
}

// ---- timers ----

#[test]
fn idle_timeout_closes_with_1001() {
    let gw = Gateway::start(&ws_config(
        "idle_timeout_ms = 1000\nping_interval_ms = 0",
        &ws_route("$default", WS_ECHO),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    // Messages keep it open...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ws.ask("x"), "x");
    }
    // ...pings do not.
    let t = Instant::now();
    ws.send_frame(true, 9, b"");
    assert_eq!(ws.recv().opcode, 10);
    let f = ws.recv();
    assert_eq!(f.close_code(), Some(1001));
    assert_eq!(&f.payload[2..], b"idle timeout");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    ws.send_close(1001);
    ws.expect_eof();
    eventually("1001 counted", || {
        gw.metrics()
            .contains("tollgate_websocket_closes_total{code=\"1001\"} 1")
            .then_some(())
    });
}

#[test]
fn maximum_age_closes_busy_connections_too() {
    let gw = Gateway::start(&ws_config(
        "connection_age_max_ms = 500",
        &ws_route("$default", WS_ECHO),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    let t = Instant::now();
    let f = loop {
        ws.send_text("busy");
        let f = ws.recv();
        if f.opcode == 8 {
            break f;
        }
        assert_eq!(f.text(), "busy");
        assert!(t.elapsed() < Duration::from_secs(5), "never closed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(f.close_code(), Some(1001));
    assert_eq!(&f.payload[2..], b"connection age limit");
    // The age counts from the upgrade, a little before `t`.
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn pings_are_answered_and_sent() {
    let gw = Gateway::start(&ws_config(
        "ping_interval_ms = 500",
        &ws_route("$default", WS_ECHO),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    ws.send_frame(true, 9, b"are you there");
    let f = ws.recv();
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (10, &b"are you there"[..])
    );
    // Silent client: the gateway pings; a pong keeps the connection.
    for _ in 0..3 {
        let f = ws.recv();
        assert_eq!(f.opcode, 9, "{f:?}");
        ws.send_frame(true, 10, &f.payload);
    }
    assert_eq!(ws.ask("alive"), "alive");
    // A peer that stops answering is dropped after one more interval.
    let f = ws.recv();
    assert_eq!(f.opcode, 9);
    let t = Instant::now();
    ws.expect_eof();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

// ---- limits ----

#[test]
fn frame_and_message_limits_close_with_1009() {
    let gw = Gateway::start(&ws_config(
        "frame_bytes_max = 100\nmessage_bytes_max = 150",
        &ws_route("$default", WS_ECHO),
    ));
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.ask(&"a".repeat(100)), "a".repeat(100));
    ws.send_text(&"a".repeat(101));
    ws.expect_close(1009);

    let mut ws = WsClient::open(gw.addr, "/");
    ws.send_frame(false, 1, &[b'a'; 100]);
    ws.send_frame(true, 0, &[b'a'; 50]);
    assert_eq!(ws.recv_text(), "a".repeat(150));
    ws.send_frame(false, 1, &[b'a'; 100]);
    ws.send_frame(true, 0, &[b'a'; 51]);
    ws.expect_close(1009);

    // Protocol errors close with their codes: an unmasked frame, invalid UTF-8.
    let mut ws = WsClient::open(gw.addr, "/");
    ws.c.send(b"\x81\x02hi");
    ws.expect_close(1002);
    let mut ws = WsClient::open(gw.addr, "/");
    ws.send_frame(true, 1, b"\xff");
    ws.expect_close(1007);
    eventually("1009 counted twice", || {
        gw.metrics()
            .contains("tollgate_websocket_closes_total{code=\"1009\"} 2")
            .then_some(())
    });
}

// ---- reload and drain ----

#[test]
fn reload_keeps_connections_and_new_messages_use_new_routes() {
    let cfg = |body: &str| {
        ws_config(
            "",
            &format!(
                "{}{}",
                ws_route(
                    "$default",
                    &format!("{{ type = \"mock\", body = \"{body}\" }}")
                ),
                ws_route("e", WS_ECHO)
            ),
        )
    };
    let gw = Gateway::start(&cfg("v1"));
    let mut ws = WsClient::open(gw.addr, "/");
    assert_eq!(ws.ask("x"), "v1");
    gw.rewrite_config(&cfg("v2"));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(ws.ask("x"), "v2");
    // The API disappears: the connection stays, on the routes it had.
    gw.rewrite_config(&config(
        "[[api]]\nname = \"other\"\n[[api.route]]\nkey = \"GET /\"\nintegration = { type = \"mock\" }\n",
    ));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(ws.ask("x"), "v2");
    assert_eq!(ws.ask(r#"{"action":"e"}"#), r#"{"action":"e"}"#);
    // New upgrades follow the new config: the HTTP API's mock answers them (no 101).
    assert_eq!(
        WsClient::connect(gw.addr, "/", &[]).err().map(|r| r.status),
        Some(200)
    );
    ws.close();
}

#[test]
fn drain_closes_websockets_with_1001() {
    let bye = Backend::start(Reply::ok(""));
    let mut gw = Gateway::start(&ws_config(
        "",
        &format!(
            "{}{}",
            ws_route("$default", WS_ECHO),
            ws_route("$disconnect", &ws_http(bye.addr, "/bye"))
        ),
    ));
    let mut a = WsClient::open(gw.addr, "/");
    let mut b = WsClient::open(gw.addr, "/");
    assert_eq!(a.ask("x"), "x");
    gw.signal(libc::SIGTERM);
    for ws in [&mut a, &mut b] {
        let f = ws.recv();
        assert_eq!(f.close_code(), Some(1001), "{f:?}");
        assert_eq!(&f.payload[2..], b"server shutting down");
        ws.send_close(1001);
        ws.expect_eof();
    }
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
    let codes: Vec<Value> = events(&bye)
        .iter()
        .map(|e| e["requestContext"]["disconnectStatusCode"].clone())
        .collect();
    assert_eq!(codes, [1001, 1001]);
}

#[test]
fn drain_refuses_new_upgrades_with_503() {
    let mut gw = Gateway::start(&ws_config("", &ws_route("$default", WS_ECHO)));
    let mut a = WsClient::open(gw.addr, "/");
    assert_eq!(a.ask("x"), "x");
    // A connection accepted before the drain gets its first request served; its upgrade
    // request is completed only once the drain has begun.
    let mut c = gw.client();
    let req = ws_upgrade_request("/", &[]);
    let (first, rest) = req.split_at(req.len() - 2);
    c.send(first);
    eventually("the second connection accepted", || {
        gw.metrics()
            .contains("tollgate_connections_total 2")
            .then_some(())
    });
    gw.signal(libc::SIGTERM);
    // The open WebSocket's 1001 shows the drain has begun.
    let f = a.recv();
    assert_eq!(f.close_code(), Some(1001), "{f:?}");
    c.send(rest);
    let r = c.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["message"], "Service Unavailable");
    assert!(r.says_close());
    a.send_close(1001);
    a.expect_eof();
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
}

// ---- HTTP/2 ----

#[test]
fn websocket_stage_over_http2_answers_426() {
    let gw = Gateway::start(&ws_config("", &ws_route("$default", WS_ECHO)));
    let r = tls_common::block_on(async {
        let mut send = tls_common::h2c(gw.addr).await;
        tls_common::h2_request(&mut send, "GET", &format!("http://{HOST}/"), &[], b"").await
    })
    .expect("an h2 response");
    assert_eq!(r.status, 426, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(v["message"], "Upgrade Required");
}

// ---- plain WebSocket proxying ----

#[test]
fn http_proxy_route_relays_websockets() {
    let backend = WsEchoBackend::start();
    let gw = Gateway::start(&config(&format!(
        "[[api]]\nname = \"p\"\n[[api.route]]\nkey = \"ANY /chat/{{proxy+}}\"\n\
         integration = {{ type = \"http_proxy\", uri = \"http://{}/ws/{{proxy}}\" }}\n",
        backend.addr
    )));
    let mut ws = WsClient::connect(
        gw.addr,
        "/chat/room1?x=1",
        &[("Sec-WebSocket-Protocol", "chat.v1"), ("X-Custom", "yes")],
    )
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert_eq!(ws.head.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(ws.head.header("sec-websocket-protocol"), Some("chat.v1"));
    assert_eq!(ws.head.header("x-backend"), Some("ws-echo"));
    assert!(ws.head.header("x-request-id").is_some());
    let head = &backend.heads()[0];
    assert!(head.starts_with("GET /ws/room1?x=1 HTTP/1.1\r\n"), "{head}");
    for h in [
        "upgrade: websocket",
        "connection: upgrade",
        "Sec-WebSocket-Key: ",
        "Sec-WebSocket-Version: 13",
        "X-Custom: yes",
        "x-forwarded-for: 127.0.0.1",
    ] {
        assert!(
            head.to_ascii_lowercase().contains(&h.to_ascii_lowercase()),
            "{h} missing in {head}"
        );
    }
    assert_eq!(ws.ask("through the proxy"), "through the proxy");
    let big = vec![7u8; 300_000];
    ws.send_binary(&big);
    let f = ws.recv();
    assert_eq!((f.opcode, f.payload.len()), (2, big.len()));
    ws.send_frame(true, 9, b"pp");
    assert_eq!(ws.recv().opcode, 10);
    ws.close();
    // A normal request on the same route still works as HTTP.
    let r = gw.request(&get("/chat/x"));
    assert_eq!(
        r.status,
        400,
        "the ws backend refuses non-upgrades: {}",
        r.text()
    );
}

#[test]
fn proxied_websockets_get_1001_at_drain() {
    let backend = WsEchoBackend::start();
    let mut gw = Gateway::start(&config(&format!(
        "[[api]]\nname = \"p\"\n[[api.route]]\nkey = \"GET /ws\"\n\
         integration = {{ type = \"http_proxy\", uri = \"http://{}/\" }}\n",
        backend.addr
    )));
    let mut ws = WsClient::open(gw.addr, "/ws");
    assert_eq!(ws.ask("x"), "x");
    gw.signal(libc::SIGTERM);
    let f = ws.recv();
    assert_eq!(f.close_code(), Some(1001));
    ws.expect_eof();
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn proxying_a_websocket_with_tls_on_either_side_answers_501() {
    let pki = tls_common::Pki::new();
    let backend = WsEchoBackend::start();
    let gw = Gateway::start(&config_with(
        &format!(
            "[[server.tls]]\nlisten = [\"127.0.0.1:0\"]\n\
             certs = [{{ cert = \"{}\", key = \"{}\", domains = [\"localhost\"] }}]\n",
            pki.server.cert.display(),
            pki.server.key.display()
        ),
        "",
        &format!(
            "[[api]]\nname = \"p\"\n\
             [[api.route]]\nkey = \"GET /plain\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://{b}/\" }}\n\
             [[api.route]]\nkey = \"GET /secure\"\n\
             integration = {{ type = \"http_proxy\", uri = \"https://{b}/\" }}\n",
            b = backend.addr
        ),
    ));
    let check = |r: &Response, what: &str| {
        assert_eq!(r.status, 501, "{what}: {}", r.text());
        assert_eq!(r.json()["message"], "Not Implemented", "{what}");
    };
    // An https backend, plain client.
    let r = WsClient::connect(gw.addr, "/secure", &[])
        .err()
        .expect("refused");
    check(&r, "https backend");
    // A TLS client, plain backend.
    let mut s = tls_common::tls_connect(
        gw.https[0],
        "localhost",
        tls_common::client_config(Some(&pki.ca.pem), &[b"http/1.1"], None),
    )
    .expect("tls");
    let r = tls_common::roundtrip(&mut s, &ws_upgrade_request("/plain", &[])).expect("answer");
    assert_eq!(r.status, 501, "tls client: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(v["message"], "Not Implemented");
    // Neither reached the backend, and both were logged.
    assert!(backend.heads().is_empty(), "{:?}", backend.heads());
    let log = eventually("the refusals logged", || {
        let log = gw.stderr();
        (log.matches("WebSocket proxying over TLS is not supported")
            .count()
            == 2)
            .then_some(log)
    });
    assert!(log.contains("backend https: true"), "{log}");
    assert!(log.contains("client tls: true"), "{log}");
    // The same route without TLS relays.
    let mut ws = WsClient::open(gw.addr, "/plain");
    assert_eq!(ws.ask("plain works"), "plain works");
    ws.close();
}

// ---- helpers ----

fn registry_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `YYYY-MM-DD` of a time in ms, via the date command's independent formatter.
fn iso_day(ms: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn validate_checks_websocket_apis_with_lines() {
    let ok = write_temp_config(&ws_config("", &ws_route("$default", WS_ECHO)));
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg(&ok)
        .output()
        .expect("run validate");
    assert!(out.status.success(), "{out:?}");
    let bad = write_temp_config(&ws_config(
        "ping_interval_ms = -5",
        &format!(
            "{}{}",
            ws_route("$connect", WS_ECHO),
            ws_route("$nope", WS_ECHO)
        ),
    ));
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("run validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The config helper puts [server] and [admin] first: the API starts at line 9.
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].ends_with(":12:20: error: ping_interval_ms: expected 0..=86400000, got -5"),
        "{err}"
    );
    assert!(
        lines[1].contains(":15:39: error: echo: $connect and $disconnect have no message to echo"),
        "{err}"
    );
    assert!(
        lines[2].contains(":17:7: error: route key \"$nope\": keys starting with '$' are reserved"),
        "{err}"
    );
}

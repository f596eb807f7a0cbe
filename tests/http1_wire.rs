//! HTTP/1.1 on the wire, byte-scripted: smuggling shapes, head and body limits, timeouts,
//! keep-alive, pipelining, HEAD, `Connection: close`, HTTP/1.0, `Expect: 100-continue`, `Date`.

mod common;

use std::io::Write;
use std::time::{Duration, SystemTime};

use common::{Backend, Client, Gateway, Reply, chunked, config_with, get, request};

/// A mock API plus a proxy route to `backend`, with extra `[server]` lines.
fn wire_config(server_extra: &str, backend: &Backend) -> String {
    let apis = format!(
        r#"
[[api]]
name = "wire"

[[api.route]]
key = "ANY /m"
integration = {{ type = "mock", status = 200, headers = {{ "content-type" = "text/plain" }}, body = "mock" }}

[[api.route]]
key = "GET /m/{{n}}"
integration = {{ type = "mock", body = "mock ${{request.path.n}}" }}

[[api.route]]
key = "POST /small"
body_bytes_max = 10
integration = {{ type = "mock", body = "small" }}

[[api.route]]
key = "ANY /p/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}", timeout_ms = 10000 }}

[[api.route]]
key = "POST /psmall/{{proxy+}}"
body_bytes_max = 10
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}", timeout_ms = 10000 }}
"#,
        backend = backend.addr
    );
    config_with(server_extra, "", &apis)
}

fn start(server_extra: &str) -> (Gateway, Backend) {
    let backend = Backend::start(Reply::Echo);
    let gw = Gateway::start(&wire_config(server_extra, &backend));
    (gw, backend)
}

/// Sends `bytes` on a fresh connection; the gateway must answer `status` with a JSON error body,
/// say `connection: close`, and close without answering anything else in `bytes`.
fn assert_refused_and_closed(gw: &Gateway, bytes: &[u8], status: u16) {
    let mut c = gw.client();
    c.send(bytes);
    let r = c.read_response();
    assert_eq!(
        r.status,
        status,
        "request {:?} got {} {}",
        String::from_utf8_lossy(bytes),
        r.status,
        r.text()
    );
    assert!(r.says_close(), "no connection: close in {:?}", r.raw_head);
    assert!(r.json()["message"].is_string());
    assert!(r.header("x-request-id").is_some(), "{:?}", r.raw_head);
    assert!(r.header("date").is_some(), "{:?}", r.raw_head);
    c.assert_closed();
}

/// A valid request after each smuggling shape, in the same write: it must never be answered.
const FOLLOW_UP: &str = "GET /m HTTP/1.1\r\nHost: test.local\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Smuggling shapes

#[test]
fn content_length_with_transfer_encoding_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!(
        "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{FOLLOW_UP}"
    );
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
}

#[test]
fn duplicate_differing_content_length_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!(
        "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!{FOLLOW_UP}"
    );
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
    // Control: equal duplicates are one length (RFC 9112 §6.3), and the body is used.
    let mut c = gw.client();
    let r = c.roundtrip(
        b"POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 200);
    assert_eq!(c.roundtrip(get("/m").as_slice()).text(), "mock");
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!(
        "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{FOLLOW_UP}"
    );
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
}

#[test]
fn transfer_coding_before_chunked_is_501_and_closes() {
    let (gw, _b) = start("");
    let req = format!(
        "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{FOLLOW_UP}"
    );
    assert_refused_and_closed(&gw, req.as_bytes(), 501);
}

#[test]
fn bad_chunk_size_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!(
        "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{FOLLOW_UP}"
    );
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
}

#[test]
fn whitespace_before_colon_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!("POST /m HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello{FOLLOW_UP}");
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
}

#[test]
fn obs_fold_is_400_and_closes() {
    let (gw, _b) = start("");
    let req = format!("GET /m HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n{FOLLOW_UP}");
    assert_refused_and_closed(&gw, req.as_bytes(), 400);
}

#[test]
fn valid_chunked_body_to_mock_keeps_the_connection() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let mut req = b"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(b"hello world", &[3, 5]));
    let r = c.roundtrip(&req);
    assert_eq!(r.status, 200);
    assert!(!r.says_close());
    assert_eq!(c.roundtrip(&get("/m/2")).text(), "mock 2");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn header_block_over_16_kib_is_431() {
    let (gw, _b) = start("");
    let big = "a".repeat(17 * 1024);
    let req = format!("GET /m HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    assert_refused_and_closed(&gw, req.as_bytes(), 431);
    // Control: a 15 KiB header is fine.
    let ok = "a".repeat(15 * 1024);
    let r = gw.request(format!("GET /m HTTP/1.1\r\nHost: x\r\nX-Big: {ok}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn request_line_over_16_kib_is_414() {
    let (gw, _b) = start("");
    let long = "a".repeat(17 * 1024);
    let req = format!("GET /m/{long} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_refused_and_closed(&gw, req.as_bytes(), 414);
}

#[test]
fn more_than_100_headers_is_431() {
    let (gw, _b) = start("");
    let headers = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    // Host plus 100 more: 101 fields.
    let req = format!("GET /m HTTP/1.1\r\nHost: x\r\n{}\r\n", headers(100));
    assert_refused_and_closed(&gw, req.as_bytes(), 431);
    // Host plus 99: exactly 100 fields is allowed.
    let r = gw.request(format!("GET /m HTTP/1.1\r\nHost: x\r\n{}\r\n", headers(99)).as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn content_length_over_route_limit_is_413_before_the_body() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    // Only the head: the gateway must not wait for a body it will refuse.
    c.send(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["message"], "Request Entity Too Large");
    assert!(r.says_close());
    c.assert_closed();
    // Control: at the limit is fine.
    let r = gw.request(&request("POST", "/small", &[], b"0123456789"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "small");
}

#[test]
fn chunked_body_over_route_limit_is_413_mock() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let mut req = b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(b"0123456789ab", &[6]));
    c.send(&req);
    let r = c.read_response();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.says_close());
    c.assert_closed();
}

#[test]
fn chunked_body_over_route_limit_is_413_proxy_and_backend_gets_no_complete_body() {
    let (gw, backend) = start("");
    let mut c = gw.client();
    let mut req =
        b"POST /psmall/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(b"0123456789ab", &[6]));
    c.send(&req);
    let r = c.read_response();
    assert_eq!(r.status, 413, "{}", r.text());
    c.assert_closed();
    assert!(
        backend.requests().iter().all(|s| s.body_len <= 10),
        "an over-limit body reached the backend whole"
    );
}

#[test]
fn header_read_timeout_is_408_and_close() {
    let (gw, _b) = start("header_read_timeout_ms = 300");
    let mut c = gw.client();
    c.send(b"GET /m HTTP/1.1\r\nHost: x\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 408);
    assert!(r.says_close());
    c.assert_closed();
}

#[test]
fn keepalive_idle_timeout_closes_without_a_response() {
    let (gw, _b) = start("keepalive_idle_timeout_ms = 300");
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get("/m")).status, 200);
    assert!(
        c.closed_without_data(),
        "an idle keep-alive connection must be closed quietly"
    );
    // A connection that never sends a byte is closed the same way.
    let mut idle = gw.client();
    assert!(idle.closed_without_data());
}

#[test]
fn header_bytes_max_override_applies() {
    let (gw, _b) = start("header_bytes_max = 2048");
    let req = |n: usize| {
        format!(
            "GET /m HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    assert_refused_and_closed(&gw, req(3000).as_bytes(), 431);
    assert_eq!(gw.request(req(1500).as_bytes()).status, 200);
    // The same 3000-byte header is fine under the default limit.
    let (default_gw, _b2) = start("");
    assert_eq!(default_gw.request(req(3000).as_bytes()).status, 200);
}

#[test]
fn headers_max_override_applies() {
    let (gw, _b) = start("headers_max = 10");
    let req = |n: usize| {
        let h: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /m HTTP/1.1\r\nHost: x\r\n{h}\r\n")
    };
    assert_refused_and_closed(&gw, req(10).as_bytes(), 431);
    assert_eq!(gw.request(req(9).as_bytes()).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Connection behaviour

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    for i in 0..10 {
        let r = c.roundtrip(&get(&format!("/m/{i}")));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("mock {i}"));
        assert!(!r.says_close());
    }
    let r = c.roundtrip(&request("POST", "/p/echo", &[], b"through"));
    assert_eq!(r.text(), "through");
    assert_eq!(c.roundtrip(&get("/m/last")).text(), "mock last");
}

#[test]
fn pipelined_requests_are_answered_in_order_mixing_mock_and_proxy() {
    let (gw, backend) = start("");
    let mut c = gw.client();
    let mut all = Vec::new();
    all.extend(get("/m/1"));
    all.extend(request("POST", "/p/echo", &[], b"proxy 2"));
    all.extend(get("/m/3"));
    all.extend(request("POST", "/p/echo", &[], b"proxy 4"));
    all.extend(get("/m/5"));
    c.send(&all);
    let bodies: Vec<String> = (0..5).map(|_| c.read_response().text()).collect();
    assert_eq!(bodies, ["mock 1", "proxy 2", "mock 3", "proxy 4", "mock 5"]);
    assert_eq!(backend.requests().len(), 2);
    // Still usable.
    assert_eq!(c.roundtrip(&get("/m/6")).text(), "mock 6");
}

#[test]
fn head_has_content_length_and_no_body() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    c.send(&request("HEAD", "/m", &[], b""));
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4"));
    // Any body bytes would be read as the next response's status line.
    assert_eq!(c.roundtrip(&get("/m/after")).text(), "mock after");
}

#[test]
fn head_through_the_proxy_has_content_length_and_no_body() {
    let backend = Backend::start(Reply::ok("hello"));
    let gw = Gateway::start(&wire_config("", &backend));
    let mut c = gw.client();
    c.send(&request("HEAD", "/p/thing", &[], b""));
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(backend.requests()[0].method, "HEAD");
    assert_eq!(c.roundtrip(&get("/m/after")).text(), "mock after");
    assert_eq!(c.roundtrip(&get("/p/again")).text(), "hello");
}

#[test]
fn connection_close_closes_after_the_response() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let r = c.roundtrip(&request("GET", "/m", &[("Connection", "close")], b""));
    assert_eq!(r.status, 200);
    assert!(r.says_close());
    c.assert_closed();
    let mut c = gw.client();
    let r = c.roundtrip(&request("POST", "/p/x", &[("Connection", "close")], b"abc"));
    assert_eq!(r.text(), "abc");
    assert!(r.says_close());
    c.assert_closed();
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let r = c.roundtrip(b"GET /m HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "mock");
    c.assert_closed();

    let mut c = gw.client();
    let r = c.roundtrip(b"GET /m/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "mock 1");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive")
    );
    let r = c.roundtrip(b"GET /m/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "mock 2");
    let r = c.roundtrip(b"GET /m/3 HTTP/1.0\r\n\r\n");
    assert_eq!(r.text(), "mock 3");
    c.assert_closed();
}

#[test]
fn http10_proxied_response_is_not_chunked_and_closes() {
    let backend = Backend::start(Reply::Chunked(vec![b"ab".to_vec(), b"cd".to_vec()]));
    let gw = Gateway::start(&wire_config("", &backend));
    let mut c = gw.client();
    c.send(b"GET /p/x HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(
        !r.chunked,
        "HTTP/1.0 clients cannot read chunked: {:?}",
        r.raw_head
    );
    assert_eq!(r.text(), "abcd");
}

#[test]
fn expect_100_continue_to_a_mock() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    c.send(b"POST /m HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "expected 100 Continue before the body");
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "mock");
    assert_eq!(c.roundtrip(&get("/m/again")).text(), "mock again");
}

#[test]
fn expect_100_continue_through_the_proxy() {
    let (gw, backend) = start("");
    let mut c = gw.client();
    c.send(b"POST /p/up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "expected 100 Continue before the body");
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert!(
        !seen[0].has_header("expect"),
        "Expect is hop-by-hop for us: {:?}",
        seen[0].headers
    );
}

#[test]
fn date_header_is_present_and_an_imf_fixdate() {
    let (gw, _b) = start("");
    for bytes in [get("/m"), get("/nope"), request("POST", "/p/x", &[], b"d")] {
        let r = gw.request(&bytes);
        assert_eq!(r.header_count("date"), 1, "{:?}", r.raw_head);
        let date = r.header("date").unwrap_or_default();
        let t = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("date {date:?}: {e}"));
        assert_eq!(httpdate::fmt_http_date(t), date, "not IMF-fixdate");
        let skew = match t.duration_since(SystemTime::now()) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            skew < Duration::from_secs(24 * 3600),
            "date {date} is far from now"
        );
    }
}

#[test]
fn unknown_route_is_404_json_and_keeps_the_connection() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let r = c.roundtrip(&get("/nope"));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"message":"Not Found"}"#);
    assert!(!r.says_close());
    assert_eq!(c.roundtrip(&get("/m")).status, 200);
}

#[test]
fn client_half_close_after_request_still_gets_the_response() {
    let (gw, _b) = start("");
    let mut c: Client = gw.client();
    c.send(&get("/m/hc"));
    c.shutdown_write();
    let r = c.read_response();
    assert_eq!(r.text(), "mock hc");
}

// ---------------------------------------------------------------------------------------------
// More request shapes

#[test]
fn http11_without_host_is_400() {
    let (gw, _b) = start("");
    assert_refused_and_closed(&gw, b"GET /m HTTP/1.1\r\n\r\n", 400);
    assert_refused_and_closed(&gw, b"GET /m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

#[test]
fn unsupported_version_is_505() {
    let (gw, _b) = start("");
    assert_refused_and_closed(&gw, b"GET /m HTTP/1.2\r\nHost: x\r\n\r\n", 505);
}

#[test]
fn unknown_expectation_is_417() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let r =
        c.roundtrip(b"POST /m HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 417);
}

#[test]
fn expect_continue_with_an_oversized_length_is_413_without_100() {
    let (gw, backend) = start("");
    for path in ["/small", "/psmall/x"] {
        let mut c = gw.client();
        c.send(format!("POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(
            r.status, 413,
            "{path}: the client must not be invited to send the body"
        );
        c.assert_closed();
    }
    assert!(
        backend.requests().is_empty(),
        "the refused request reached the backend"
    );
}

#[test]
fn an_error_for_a_request_with_a_small_body_keeps_the_connection_in_sync() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let r = c.roundtrip(&request("POST", "/nope", &[], b"hello"));
    assert_eq!(r.status, 404);
    if !r.says_close() {
        // The body was skipped, not parsed as the next request.
        assert_eq!(c.roundtrip(&get("/m/next")).text(), "mock next");
    }
}

#[test]
fn many_pipelined_requests_are_all_answered_in_order() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    let all: Vec<u8> = (0..200).flat_map(|i| get(&format!("/m/{i}"))).collect();
    c.send(&all);
    for i in 0..200 {
        assert_eq!(c.read_response().text(), format!("mock {i}"));
    }
}

#[test]
fn chunked_request_with_extensions_and_trailers_is_accepted() {
    let (gw, backend) = start("");
    let mut c = gw.client();
    let body = b"POST /p/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let r = c.roundtrip(body);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(backend.requests()[0].body, b"hello world");
    assert_eq!(c.roundtrip(&get("/m/after")).text(), "mock after");
}

#[test]
fn head_of_an_error_has_no_body() {
    let (gw, _b) = start("");
    let mut c = gw.client();
    c.send(&request("HEAD", "/nope", &[], b""));
    let r = c.read_head_response();
    assert_eq!(r.status, 404);
    assert_eq!(c.roundtrip(&get("/m/after")).text(), "mock after");
}

#[test]
fn header_read_timeout_counts_from_the_first_byte_not_the_last() {
    // A client trickling its head (slowloris) still gets 408 once the whole-head budget is spent.
    let (gw, _b) = start("header_read_timeout_ms = 300");
    let mut c = gw.client();
    let head = b"GET /m HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head.chunks(1) {
        if c.stream.write_all(b).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c.read_response();
    assert_eq!(r.status, 408);
    c.assert_closed();
}

#[test]
fn keepalive_idle_timeout_does_not_cut_a_slow_backend_response() {
    let backend = Backend::start_spec(common::BackendSpec {
        delay: Duration::from_millis(600),
        ..common::BackendSpec::new(Reply::ok("late"))
    });
    let gw = Gateway::start(&wire_config("keepalive_idle_timeout_ms = 200", &backend));
    let mut c = gw.client();
    let r = c.roundtrip(&get("/p/slow"));
    assert_eq!((r.status, r.text()), (200, "late".to_string()));
}

#[test]
fn a_backend_connection_left_mid_body_by_a_413_is_not_reused() {
    let (gw, backend) = start("");
    // Prime the pool so a reusable connection exists.
    assert_eq!(
        gw.request(&request("POST", "/p/prime", &[], b"x")).text(),
        "x"
    );
    let mut c = gw.client();
    // The head and first chunk go out; the second chunk breaks the route's limit.
    c.send(
        b"POST /psmall/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n",
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"6\r\n6789ab\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 413, "{}", r.text());
    // Were the half-sent request's connection pooled, this one would land inside its body.
    for i in 0..3 {
        let body = format!("after {i}");
        let r = gw.request(&request("POST", "/p/after", &[], body.as_bytes()));
        assert_eq!((r.status, r.text()), (200, body.clone()));
    }
    let last = backend.requests().into_iter().last().map(|s| s.target);
    assert_eq!(last.as_deref(), Some("/after"));
}

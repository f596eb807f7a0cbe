//! The `http_proxy` integration over real sockets: URI templates, header rewriting, chunked
//! bodies both ways, 100 MB streams with flat memory, backend failures, the keep-alive pool and
//! its stale-connection retry rule.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Backend, BackendSpec, Gateway, ReadFail, Reply, chunked, config, get, pattern_matches,
    refused_addr, request, write_pattern,
};

/// Routes to `backend` (the `$default` stage) and `beta` (the `beta` stage), every integration
/// timing out after `timeout_ms`.
fn proxy_config(backend: SocketAddr, beta: SocketAddr, timeout_ms: u64) -> String {
    config(&format!(
        r#"
[[api]]
name = "px"

[[api.route]]
key = "GET /users/{{id}}"
integration = {{ type = "http_proxy", uri = "http://${{stageVariables.backend}}/u/{{id}}/profile", timeout_ms = {timeout_ms} }}

[[api.route]]
key = "ANY /files/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://${{stageVariables.backend}}/store/{{proxy}}", timeout_ms = {timeout_ms} }}

[[api.route]]
key = "GET /fixedq"
integration = {{ type = "http_proxy", uri = "http://${{stageVariables.backend}}/q?k=v", timeout_ms = {timeout_ms} }}

[[api.route]]
key = "ANY /big/{{proxy+}}"
body_bytes_max = 209715200
integration = {{ type = "http_proxy", uri = "http://${{stageVariables.backend}}/{{proxy}}", timeout_ms = 120000 }}

[[api.stage]]
name = "$default"
variables = {{ backend = "{backend}" }}

[[api.stage]]
name = "beta"
variables = {{ backend = "{beta}" }}
"#
    ))
}

fn start(reply: Reply) -> (Gateway, Backend) {
    start_spec(BackendSpec::new(reply), 10_000)
}

fn start_spec(spec: BackendSpec, timeout_ms: u64) -> (Gateway, Backend) {
    let backend = Backend::start_spec(spec);
    let gw = Gateway::start(&proxy_config(backend.addr, refused_addr(), timeout_ms));
    (gw, backend)
}

// ---------------------------------------------------------------------------------------------
// URI templates, query strings, stages

#[test]
fn uri_template_fills_params_and_passes_the_query() {
    let (gw, backend) = start(Reply::ok("ok"));
    let r = gw.request(&get("/users/42?x=1&y=two"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    let seen = backend.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/u/42/profile?x=1&y=two");
}

#[test]
fn greedy_proxy_param_carries_the_rest_of_the_path() {
    let (gw, backend) = start(Reply::ok("ok"));
    let r = gw.request(&request("DELETE", "/files/a/b/c.txt?q=1", &[], b""));
    assert_eq!(r.status, 200);
    let r2 = gw.request(&get("/files/one"));
    assert_eq!(r2.status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].target, "/store/a/b/c.txt?q=1");
    assert_eq!(seen[1].target, "/store/one");
}

#[test]
fn uri_query_is_sent_before_the_clients() {
    let (gw, backend) = start(Reply::ok("ok"));
    assert_eq!(gw.request(&get("/fixedq?a=1")).status, 200);
    assert_eq!(gw.request(&get("/fixedq")).status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].target, "/q?k=v&a=1");
    assert_eq!(seen[1].target, "/q?k=v");
}

#[test]
fn stage_variables_pick_the_backend_per_stage() {
    let default = Backend::start(Reply::ok("default"));
    let beta = Backend::start(Reply::ok("beta"));
    let gw = Gateway::start(&proxy_config(default.addr, beta.addr, 10_000));
    assert_eq!(gw.request(&get("/users/1")).text(), "default");
    assert_eq!(gw.request(&get("/beta/users/7")).text(), "beta");
    assert_eq!(beta.requests()[0].target, "/u/7/profile");
    assert_eq!(default.requests()[0].target, "/u/1/profile");
    // The stage's Host is its own backend's authority.
    assert_eq!(
        beta.requests()[0].header("host"),
        Some(beta.addr.to_string().as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Headers

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let (gw, backend) = start(Reply::ok("ok"));
    let r = gw.request(&request(
        "GET",
        "/files/h",
        &[
            ("Connection", "keep-alive, X-Conn-Named"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Conn-Named", "secret"),
            ("X-Keep", "yes"),
        ],
        b"",
    ));
    assert_eq!(r.status, 200);
    let s = &backend.requests()[0];
    for h in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-conn-named",
    ] {
        assert!(!s.has_header(h), "{h} was forwarded: {:?}", s.headers);
    }
    if let Some(c) = s.header("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-conn-named"),
            "client's Connection forwarded: {c}"
        );
    }
    assert_eq!(
        s.header("x-keep"),
        Some("yes"),
        "end-to-end headers must pass"
    );
}

#[test]
fn forwarded_headers_are_added_and_host_is_the_backend_authority() {
    let (gw, backend) = start(Reply::ok("ok"));
    let host = [("Host", "shop.example.com")];
    assert_eq!(
        gw.request(&request("GET", "/files/a", &host, b"")).status,
        200
    );
    let spoof = [
        ("Host", "shop.example.com:8443"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ];
    assert_eq!(
        gw.request(&request("GET", "/files/b", &spoof, b"")).status,
        200
    );
    let seen = backend.requests();
    let authority = backend.addr.to_string();

    let first = &seen[0];
    assert_eq!(first.header("host"), Some(authority.as_str()));
    assert_eq!(first.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(first.header("x-forwarded-proto"), Some("http"));
    assert_eq!(first.header("x-forwarded-host"), Some("shop.example.com"));

    let second = &seen[1];
    let count = |name: &str| {
        second
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1);
    assert_eq!(second.header("host"), Some(authority.as_str()));
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(
        second.header("x-forwarded-for"),
        Some("10.0.0.1, 127.0.0.1"),
        "appended"
    );
    assert_eq!(count("x-forwarded-proto"), 1);
    assert_eq!(
        second.header("x-forwarded-proto"),
        Some("http"),
        "ours, not the client's"
    );
    assert_eq!(count("x-forwarded-host"), 1);
    assert_eq!(
        second.header("x-forwarded-host"),
        Some("shop.example.com:8443")
    );
}

#[test]
fn backend_status_and_end_to_end_headers_reach_the_client() {
    let (gw, _backend) = start(Reply::Fixed {
        status: 201,
        headers: vec![
            ("X-From-Backend".into(), "yes".into()),
            ("Keep-Alive".into(), "timeout=3".into()),
            ("Connection".into(), "X-Drop-Me".into()),
            ("X-Drop-Me".into(), "1".into()),
        ],
        body: b"created".to_vec(),
    });
    let r = gw.request(&get("/files/x"));
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "created");
    assert_eq!(r.header("x-from-backend"), Some("yes"));
    assert!(r.header("keep-alive").is_none(), "{:?}", r.raw_head);
    assert!(r.header("x-drop-me").is_none(), "{:?}", r.raw_head);
    assert!(r.header("x-request-id").is_some());
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[test]
fn chunked_request_body_arrives_intact_at_the_backend() {
    let (gw, backend) = start(Reply::Echo);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut req =
        b"POST /files/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, &[1, 7, 100, 4096, 3]));
    let mut c = gw.client();
    let r = c.roundtrip(&req);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body, "echo through the gateway");
    let s = &backend.requests()[0];
    assert_eq!(s.body, body);
    assert!(s.body_was_chunked, "a chunked request is forwarded chunked");
    assert!(!s.has_header("content-length"));
    // The connection is still in sync.
    assert_eq!(
        c.roundtrip(&request("POST", "/files/again", &[], b"abc"))
            .text(),
        "abc"
    );
}

#[test]
fn chunked_backend_response_arrives_intact_and_chunked() {
    let chunks: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        vec![b'b'; 5000],
        b"".to_vec(),
        b"tail".to_vec(),
    ];
    let expected: Vec<u8> = chunks.concat();
    // An empty chunk would end the body: the backend must not send it.
    let chunks: Vec<Vec<u8>> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
    let (gw, _backend) = start(Reply::Chunked(chunks));
    let mut c = gw.client();
    let r = c.roundtrip(&get("/files/c"));
    assert_eq!(r.status, 200);
    assert!(r.chunked, "chunked to an HTTP/1.1 client: {:?}", r.raw_head);
    assert!(r.header("content-length").is_none());
    assert_eq!(r.body, expected);
    assert_eq!(c.roundtrip(&get("/files/c")).body, expected);
}

const HUNDRED_MB: u64 = 100 * 1024 * 1024;
/// Growth of the gateway's peak RSS allowed while streaming 100 MB.
const MEMORY_GROWTH_KIB_MAX: u64 = 32 * 1024;

#[test]
fn a_100_mb_request_body_streams_through_with_flat_memory() {
    let (gw, backend) = start_spec(
        BackendSpec {
            keep_body_bytes_max: 0,
            ..BackendSpec::new(Reply::CountBody)
        },
        10_000,
    );
    // Warm up: pool, buffers, the first request's allocations.
    assert_eq!(
        gw.request(&request("POST", "/big/count", &[], b"warm"))
            .text(),
        "4 false"
    );
    let before = gw.vm_hwm_kib();

    let mut c = gw.client();
    c.send(
        format!("POST /big/count HTTP/1.1\r\nHost: x\r\nContent-Length: {HUNDRED_MB}\r\n\r\n")
            .as_bytes(),
    );
    write_pattern(&mut c.stream, HUNDRED_MB).expect("stream the body");
    c.stream.flush().expect("flush");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("{HUNDRED_MB} true"),
        "the backend got every byte, in order"
    );

    let after = gw.vm_hwm_kib();
    eprintln!("VmHWM before {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < MEMORY_GROWTH_KIB_MAX,
        "peak RSS grew from {before} KiB to {after} KiB while streaming 100 MB"
    );
    assert_eq!(
        backend.requests().last().map(|s| s.body_len),
        Some(HUNDRED_MB)
    );
}

#[test]
fn a_100_mb_response_streams_back_with_flat_memory() {
    let (gw, _backend) = start(Reply::Stream(HUNDRED_MB));
    // Warm up (pool, buffers) with a HEAD: same backend, no body.
    let mut w = gw.client();
    w.send(&request("HEAD", "/big/download", &[], b""));
    assert_eq!(w.read_head_response().status, 200);
    let before = gw.vm_hwm_kib();

    let mut c = gw.client();
    c.send(&get("/big/download"));
    let mut len = 0u64;
    let mut in_order = true;
    let r = c
        .read_response_with(false, &mut |d| {
            in_order &= pattern_matches(len, d);
            len += d.len() as u64;
        })
        .unwrap_or_else(|e| panic!("response: {e:?}"));
    assert_eq!(r.status, 200);
    assert_eq!(len, HUNDRED_MB);
    assert!(in_order, "the body arrived altered");

    let after = gw.vm_hwm_kib();
    eprintln!("VmHWM before {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < MEMORY_GROWTH_KIB_MAX,
        "peak RSS grew from {before} KiB to {after} KiB while streaming 100 MB"
    );
}

// ---------------------------------------------------------------------------------------------
// Backend failures

#[test]
fn hanging_backend_is_504_json_after_the_timeout() {
    let (gw, _backend) = start_spec(BackendSpec::new(Reply::Hang), 500);
    let mut c = gw.client();
    let t0 = Instant::now();
    let r = c.roundtrip(&get("/users/1"));
    let elapsed = t0.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"message":"Endpoint request timed out"}"#);
    // Not before the configured timeout (a lower bound only; the upper bound is the read timeout).
    assert!(
        elapsed >= Duration::from_millis(450),
        "504 after only {elapsed:?}"
    );
    // The client connection survives a backend timeout on a body-less request.
    if !r.says_close() {
        assert_eq!(c.roundtrip(&get("/nope")).status, 404);
    }
}

#[test]
fn refused_backend_is_502_json() {
    let gw = Gateway::start(&proxy_config(refused_addr(), refused_addr(), 10_000));
    let r = gw.request(&get("/users/1"));
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"message":"Bad Gateway"}"#);
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn backend_closing_mid_response_truncates_and_closes_the_client_connection() {
    let (gw, _backend) = start(Reply::CloseMid);
    let mut c = gw.client();
    c.send(&get("/files/x"));
    match c.try_read_response(false) {
        Err(ReadFail::Closed(_)) => {}
        Ok(r) => panic!(
            "a complete response from a truncated backend: {} {:?}",
            r.status, r.raw_head
        ),
        Err(e) => panic!("expected the connection cut, got {e:?}"),
    }
    // The gateway itself is fine.
    assert_eq!(gw.request(&get("/nope")).status, 404);
}

#[test]
fn malformed_backend_head_is_502() {
    let (gw, _backend) = start(Reply::Malformed);
    let r = gw.request(&get("/files/x"));
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"message":"Bad Gateway"}"#);
}

// ---------------------------------------------------------------------------------------------
// Keep-alive pool

#[test]
fn sequential_requests_reuse_one_backend_connection() {
    let (gw, backend) = start(Reply::ok("pooled"));
    let mut c = gw.client();
    for _ in 0..10 {
        assert_eq!(c.roundtrip(&get("/files/p")).text(), "pooled");
    }
    // Also across client connections (one core, one pool).
    for _ in 0..10 {
        assert_eq!(gw.request(&get("/users/9")).text(), "pooled");
    }
    assert_eq!(backend.requests().len(), 20);
    assert_eq!(
        backend.connections(),
        1,
        "20 sequential requests must share one backend connection"
    );
}

#[test]
fn stale_pooled_connection_is_retried_for_get() {
    let (gw, backend) = start_spec(
        BackendSpec {
            close_after_each: true,
            ..BackendSpec::new(Reply::ok("fresh"))
        },
        10_000,
    );
    let mut c = gw.client();
    for i in 0..5 {
        // Let the backend's close reach the gateway, so the pooled connection is stale.
        std::thread::sleep(Duration::from_millis(100));
        let r = c.roundtrip(&get("/files/s"));
        assert_eq!(
            r.status,
            200,
            "GET #{i} on a stale pooled connection: {}",
            r.text()
        );
        assert_eq!(r.text(), "fresh");
    }
    assert_eq!(backend.requests().len(), 5);
}

#[test]
fn idempotent_get_is_retried_when_a_pooled_connection_dies_mid_request() {
    let (gw, backend) = start_spec(
        BackendSpec {
            answer_first_only: true,
            ..BackendSpec::new(Reply::ok("first"))
        },
        10_000,
    );
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get("/files/a")).status, 200);
    let r = c.roundtrip(&get("/files/b"));
    assert_eq!(
        r.status,
        200,
        "GET on a pooled connection that died must be retried: {}",
        r.text()
    );
    let b_count = backend
        .requests()
        .iter()
        .filter(|s| s.target == "/store/b")
        .count();
    assert_eq!(
        b_count, 2,
        "sent once on the dead connection, once on a fresh one"
    );
}

#[test]
fn post_is_never_sent_twice_when_a_pooled_connection_dies_mid_request() {
    let (gw, backend) = start_spec(
        BackendSpec {
            answer_first_only: true,
            ..BackendSpec::new(Reply::ok("first"))
        },
        10_000,
    );
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get("/files/a")).status, 200);
    let r = c.roundtrip(&request("POST", "/files/pay", &[], b"charge-once"));
    assert_eq!(r.status, 502, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    let sent = backend
        .requests()
        .iter()
        .filter(|s| s.body == b"charge-once")
        .count();
    assert_eq!(sent, 1, "a POST must not be replayed");
}

#[test]
fn post_on_a_stale_pooled_connection_is_not_retried() {
    let (gw, backend) = start_spec(
        BackendSpec {
            close_after_each: true,
            ..BackendSpec::new(Reply::Echo)
        },
        10_000,
    );
    let mut c = gw.client();
    let mut statuses = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        let body = format!("post {i}");
        let r = c.roundtrip(&request("POST", "/files/p", &[], body.as_bytes()));
        assert!(
            matches!(r.status, 200 | 502),
            "POST #{i}: {} {}",
            r.status,
            r.text()
        );
        statuses.push(r.status);
        if r.says_close() {
            c = gw.client();
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    eprintln!("statuses of POSTs on stale connections: {statuses:?}");
    let seen = backend.requests();
    for (i, status) in statuses.iter().enumerate() {
        let body = format!("post {i}");
        let n = seen.iter().filter(|s| s.body == body.as_bytes()).count();
        assert!(n <= 1, "POST #{i} reached the backend {n} times");
        assert_eq!(
            n == 1,
            *status == 200,
            "POST #{i}: status {status} but the backend saw it {n} times"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backend response shapes

#[test]
fn body_delimited_by_close_is_rechunked_for_http11_clients() {
    let (gw, _backend) = start(Reply::UntilClose(b"until the very end".to_vec()));
    let mut c = gw.client();
    let r = c.roundtrip(&get("/files/u"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "until the very end");
    assert!(
        r.chunked,
        "no length known: chunked to a 1.1 client: {:?}",
        r.raw_head
    );
    // The client connection does not depend on the backend one.
    if !r.says_close() {
        assert_eq!(c.roundtrip(&get("/files/u")).text(), "until the very end");
    }
}

#[test]
fn interim_100_from_the_backend_is_not_relayed() {
    let (gw, _backend) = start(Reply::AfterInterim(b"final".to_vec()));
    let mut c = gw.client();
    let r = c.roundtrip(&get("/files/i"));
    assert_eq!((r.status, r.text()), (200, "final".to_string()));
    assert_eq!(c.roundtrip(&get("/files/i")).text(), "final");
}

#[test]
fn no_content_from_the_backend_has_no_body_and_keeps_the_connection() {
    let (gw, backend) = start(Reply::Fixed {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    });
    let mut c = gw.client();
    let r = c.roundtrip(&request("DELETE", "/files/x", &[], b""));
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(!r.says_close());
    assert_eq!(
        c.roundtrip(&request("DELETE", "/files/y", &[], b"")).status,
        204
    );
    assert_eq!(backend.connections(), 1);
}

#[test]
fn oversized_backend_head_is_502() {
    let (gw, _backend) = start(Reply::Fixed {
        status: 200,
        headers: vec![("X-Big".into(), "a".repeat(20 * 1024))],
        body: b"x".to_vec(),
    });
    let r = gw.request(&get("/files/big-head"));
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"message":"Bad Gateway"}"#);
}

#[test]
fn conflicting_content_lengths_from_the_backend_are_502() {
    let (gw, _backend) = start(Reply::Fixed {
        status: 200,
        headers: vec![("Content-Length".into(), "7".into())],
        body: b"x".to_vec(),
    });
    let r = gw.request(&get("/files/cl"));
    assert_eq!(r.status, 502, "{:?}", r.raw_head);
}

#[test]
fn path_params_are_forwarded_still_percent_encoded() {
    let (gw, backend) = start(Reply::ok("ok"));
    assert_eq!(gw.request(&get("/users/a%2Fb%20c")).status, 200);
    assert_eq!(gw.request(&get("/files/x%3Fy/z?q=%26")).status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].target, "/u/a%2Fb%20c/profile");
    assert_eq!(seen[1].target, "/store/x%3Fy/z?q=%26");
}

#[test]
fn empty_post_is_forwarded_with_content_length_zero() {
    let (gw, backend) = start(Reply::Echo);
    let r = gw.request(&request("POST", "/files/empty", &[], b""));
    assert_eq!(r.status, 200);
    assert_eq!(backend.requests()[0].header("content-length"), Some("0"));
}

// ---------------------------------------------------------------------------------------------
// Backend resets (RST)

/// A backend that reads each request head, writes `prefix`, then resets the connection
/// (SO_LINGER 0 and close: the kernel sends RST instead of FIN). Counts the requests it read.
fn resetting_backend(prefix: &'static [u8]) -> (SocketAddr, std::sync::Arc<AtomicUsize>) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while common::find(&head, b"\r\n\r\n").is_none() {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(prefix);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on the open fd of `s` with a pointer to a live `linger` and its
            // exact size.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
            drop(s); // RST
        }
    });
    (addr, count)
}

fn assert_reset_is_502(prefix: &'static [u8]) {
    let (addr, count) = resetting_backend(prefix);
    let gw = Gateway::start(&proxy_config(addr, refused_addr(), 10_000));
    let mut c = gw.client();
    for (i, req) in [
        get("/users/1"),
        request("POST", "/files/pay", &[], b"charge-once"),
    ]
    .iter()
    .enumerate()
    {
        let r = c.roundtrip(req);
        assert_eq!(r.status, 502, "request {i}: {}", r.text());
        assert_eq!(r.json(), serde_json::json!({"message": "Bad Gateway"}));
        assert!(r.header("x-request-id").is_some());
    }
    // A reset on a fresh connection is not a stale pooled one: neither request is replayed.
    assert_eq!(count.load(Ordering::SeqCst), 2, "requests the backend read");
    // The client connection survived both 502s, and the gateway logged the cause.
    assert_eq!(c.roundtrip(&get("/nope")).status, 404);
    common::eventually("a warn line per reset", || {
        let log = gw.stderr();
        let warned = log
            .lines()
            .filter(|l| l.contains("warn") && l.contains("502 api px") && l.contains("reset"))
            .count();
        (warned == 2).then_some(())
    });
}

#[test]
fn backend_reset_before_answering_is_502_json() {
    assert_reset_is_502(b"");
}

#[test]
fn backend_reset_in_the_middle_of_the_head_is_502_json() {
    assert_reset_is_502(b"HTTP/1.1 200 OK\r\nContent-Le");
}

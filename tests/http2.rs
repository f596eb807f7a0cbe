//! HTTP/2 over real sockets: h2c by prior knowledge and h2 over TLS, the same routing, errors
//! and request ids as HTTP/1.1, 10 MB bodies streamed both ways, 150 concurrent streams on one
//! connection, GOAWAY on drain and idle, protection against CONTINUATION floods and rapid
//! resets, and curl and nghttp as real clients (skipped with a message when not installed).

mod common;
mod tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Backend, BackendSpec, Gateway, Reply, config_with, pattern_at, pattern_matches};
use tls_common::{block_on, h2_request, h2c};

const TEN_MB: u64 = 10 * 1024 * 1024;

fn h2_config(backend: SocketAddr, server_extra: &str) -> String {
    config_with(
        server_extra,
        "",
        &format!(
            r#"
[[api]]
name = "h"

[[api.route]]
key = "GET /hello/{{name}}"
integration = {{ type = "mock", body = "hi ${{request.path.name}}", headers = {{ x-mock = "yes" }} }}

[[api.route]]
key = "POST /small"
body_bytes_max = 1000
integration = {{ type = "mock", status = 201 }}

[[api.route]]
key = "ANY /px/{{proxy+}}"
body_bytes_max = {TEN_MB}
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}" }}

[[api.route]]
key = "GET /down"
integration = {{ type = "http_proxy", uri = "http://{}/" }}
"#,
            common::refused_addr()
        ),
    )
}

fn start(reply: Reply) -> (Gateway, Backend) {
    start_spec(BackendSpec::new(reply), "")
}

fn start_spec(spec: BackendSpec, server_extra: &str) -> (Gateway, Backend) {
    let backend = Backend::start_spec(spec);
    let gw = Gateway::start(&h2_config(backend.addr, server_extra));
    (gw, backend)
}

#[test]
fn h2c_serves_routes_errors_and_request_ids_like_http11() {
    let (gw, backend) = start(Reply::ok("proxied"));
    let addr = gw.addr;
    let id = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let rs = block_on(async move {
        let mut s = h2c(addr).await;
        let mut out = Vec::new();
        for (method, path, hdrs) in [
            ("GET", "/hello/bob", vec![]),
            ("GET", "/nope", vec![]),
            ("GET", "/hello/x", vec![("x-request-id", id)]),
            ("HEAD", "/hello/bob", vec![]),
            (
                "GET",
                "/px/a?b=c",
                vec![("cookie", "a=1"), ("cookie", "b=2")],
            ),
            ("GET", "/down", vec![]),
            ("DELETE", "/hello/bob", vec![]),
        ] {
            let uri = format!("http://localhost{path}");
            out.push(h2_request(&mut s, method, &uri, &hdrs, b"").await.unwrap());
        }
        out
    });
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), "hi bob");
    assert_eq!(rs[0].header("x-mock"), Some("yes"));
    assert_eq!(rs[0].header("content-length"), Some("6"));
    assert!(common::is_uuid_shape(rs[0].header("x-request-id").unwrap()));
    assert!(rs[0].header("date").is_some());
    assert_eq!(rs[1].status, 404);
    assert_eq!(rs[1].text(), r#"{"message":"Not Found"}"#);
    assert_eq!(rs[1].header("content-type"), Some("application/json"));
    assert_eq!(rs[2].header("x-request-id"), Some(id));
    assert_eq!((rs[3].status, rs[3].body.len()), (200, 0));
    assert_eq!(rs[3].header("content-length"), Some("6"));
    assert_eq!(rs[4].text(), "proxied");
    assert_eq!(rs[5].status, 502);
    assert_eq!(rs[5].text(), r#"{"message":"Bad Gateway"}"#);
    assert_eq!(rs[6].status, 404);
    let seen = &backend.requests()[0];
    assert_eq!(seen.target, "/a?b=c");
    assert_eq!(seen.header("host"), Some(backend.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("localhost"));
    assert_eq!(seen.header("cookie"), Some("a=1; b=2"));
    assert_eq!(
        seen.header("x-request-id"),
        rs[4].header("x-request-id"),
        "the backend sees the id the client gets"
    );
    let m = gw.metrics();
    assert!(
        m.contains("tollgate_connections_by_protocol_total{protocol=\"h2\",tls=\"none\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("route=\"GET /hello/{name}\",status=\"200\"} 3"),
        "{m}"
    );
    assert!(m.contains("status=\"404\"} 2"), "{m}");
}

#[test]
fn ten_megabyte_bodies_stream_both_ways() {
    let (gw, backend) = start(Reply::CountBody);
    let addr = gw.addr;
    let body: Vec<u8> = (0..TEN_MB)
        .step_by(65536)
        .flat_map(|off| pattern_at(off, 65536.min((TEN_MB - off) as usize)).to_vec())
        .collect();
    assert_eq!(body.len() as u64, TEN_MB);
    let up = block_on(async move {
        let mut s = h2c(addr).await;
        h2_request(&mut s, "POST", "http://localhost/px/up", &[], &body)
            .await
            .unwrap()
    });
    assert_eq!(up.status, 200);
    assert_eq!(up.text(), format!("{TEN_MB} true"));
    // Without content-length, the backend got it chunked.
    assert!(backend.requests()[0].body_was_chunked);

    let down = Backend::start(Reply::Stream(TEN_MB));
    let gw2 = Gateway::start(&h2_config(down.addr, ""));
    let addr = gw2.addr;
    let got = block_on(async move {
        let mut s = h2c(addr).await;
        h2_request(&mut s, "GET", "http://localhost/px/down", &[], b"")
            .await
            .unwrap()
    });
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len() as u64, TEN_MB);
    assert!(pattern_matches(0, &got.body));
    assert_eq!(
        got.header("content-length"),
        Some(TEN_MB.to_string().as_str())
    );
    // Streamed, not buffered whole (a generous bound: the process, not the body).
    assert!(
        gw2.vm_hwm_kib() < 64 * 1024,
        "peak RSS {} KiB",
        gw2.vm_hwm_kib()
    );
}

#[test]
fn bodies_over_the_route_limit_get_413() {
    let (gw, _backend) = start(Reply::ok("x"));
    let addr = gw.addr;
    let (declared, streamed, fits) = block_on(async move {
        let mut s = h2c(addr).await;
        let big = vec![b'x'; 5000];
        let a = h2_request(
            &mut s,
            "POST",
            "http://localhost/small",
            &[("content-length", "5000")],
            &big,
        )
        .await;
        let b = h2_request(&mut s, "POST", "http://localhost/small", &[], &big).await;
        let c = h2_request(&mut s, "POST", "http://localhost/small", &[], b"ok")
            .await
            .unwrap();
        (a, b, c)
    });
    // Declared too large: 413 at once (the client may see the reset of its unread body).
    if let Ok(r) = declared {
        assert_eq!(r.status, 413);
    }
    let r = streamed.expect("413 after reading past the limit");
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), r#"{"message":"Request Entity Too Large"}"#);
    assert_eq!(fits.status, 201);
}

#[test]
fn many_concurrent_streams_share_one_connection() {
    let mut spec = BackendSpec::new(Reply::ok("slow"));
    spec.delay = Duration::from_millis(300);
    let (gw, backend) = start_spec(spec, "");
    let addr = gw.addr;
    let started = Instant::now();
    let (statuses, limit) = block_on(async move {
        let mut s = h2c(addr).await;
        // The server's SETTINGS (its stream limit) arrive with the first exchange; a client
        // that opens more streams before that gets REFUSED_STREAM for the extra ones.
        h2_request(&mut s, "GET", "http://localhost/hello/x", &[], b"")
            .await
            .unwrap();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..150 {
            let mut s = s.clone();
            set.spawn(async move {
                let path = if i % 2 == 0 { "/px/slow" } else { "/hello/x" };
                let uri = format!("http://localhost{path}");
                h2_request(&mut s, "GET", &uri, &[], b"")
                    .await
                    .map(|r| r.status)
            });
        }
        let mut statuses = Vec::new();
        while let Some(r) = set.join_next().await {
            statuses.push(r.unwrap().unwrap());
        }
        let s = s.ready().await.unwrap();
        (statuses, s.current_max_send_streams())
    });
    assert_eq!(statuses.len(), 150);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(limit, 128, "the server's SETTINGS_MAX_CONCURRENT_STREAMS");
    // 75 backend requests of 300 ms each, concurrently: far less than 75 × 300 ms.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.requests().len(), 75);
    assert!(
        backend.connections() > 1,
        "backend requests ran in parallel"
    );
}

#[test]
fn concurrent_stream_limit_is_configurable() {
    let (gw, _b) = start_spec(BackendSpec::new(Reply::ok("x")), "http2_streams_max = 7");
    let addr = gw.addr;
    let limit = block_on(async move {
        let s = h2c(addr).await;
        let mut s = s.ready().await.unwrap();
        // SETTINGS arrive with the first exchange.
        let _ = h2_request(&mut s, "GET", "http://localhost/hello/a", &[], b"").await;
        s.current_max_send_streams()
    });
    assert_eq!(limit, 7);
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Connects, sends the preface and an empty SETTINGS.
fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(4, 0, 0, &[])).unwrap();
    s
}

/// Reads frames until a GOAWAY (its error code) or the end of the connection (`None`).
fn read_until_goaway(s: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        while buf.len() >= 9 {
            let len = ((buf[0] as usize) << 16) | ((buf[1] as usize) << 8) | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 7 && len >= 8 {
                return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// HPACK for GET http://localhost/hello/x, all from the static table but the path.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x41, 9];
    b.extend_from_slice(b"localhost");
    b.extend_from_slice(&[0x04, 8]);
    b.extend_from_slice(b"/hello/x");
    b
}

#[test]
fn continuation_floods_are_cut() {
    let (gw, _b) = start(Reply::ok("x"));
    let mut s = raw_h2(gw.addr);
    // HEADERS without END_HEADERS, then CONTINUATION frames of header fields (literal, new
    // name) far past header_bytes_max.
    s.write_all(&frame(1, 0, 1, &get_block())).unwrap();
    let mut field = vec![0x00, 5];
    field.extend_from_slice(b"x-pad");
    field.push(100); // value length, no Huffman
    field.extend_from_slice(&[b'a'; 100]);
    // Whole fields per frame, so that the block stays valid HPACK however long it gets.
    let block: Vec<u8> = field
        .iter()
        .copied()
        .cycle()
        .take(field.len() * 149)
        .collect();
    let mut sent = 0usize;
    let mut reader = s.try_clone().unwrap();
    let watcher = std::thread::spawn(move || read_until_goaway(&mut reader));
    for _ in 0..2000 {
        if s.write_all(&frame(9, 0, 1, &block)).is_err() {
            break;
        }
        sent += block.len();
        if watcher.is_finished() {
            break;
        }
    }
    let goaway = watcher.join().unwrap();
    // ENHANCE_YOUR_CALM (too many CONTINUATION frames), long before the 32 MB on offer.
    assert_eq!(goaway, Some(0xb), "after {sent} bytes of one header block");
    // The gateway is fine.
    assert_eq!(gw.request(&common::get("/hello/x")).status, 200);
}

#[test]
fn rapid_resets_do_not_hurt_the_server() {
    let (gw, _b) = start(Reply::ok("x"));
    // A well-behaved HTTP/2 client, connected before the flood and used after it.
    let mut other = raw_h2(gw.addr);
    let mut s = raw_h2(gw.addr);
    let mut reader = s.try_clone().unwrap();
    let watcher = std::thread::spawn(move || read_until_goaway(&mut reader));
    let block = get_block();
    let mut batch = Vec::new();
    let mut id = 1u32;
    let mut sent = 0;
    'flood: for _ in 0..50 {
        batch.clear();
        for _ in 0..200 {
            batch.extend(frame(1, 0x4 | 0x1, id, &block));
            batch.extend(frame(3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
            id += 2;
        }
        if s.write_all(&batch).is_err() || watcher.is_finished() {
            break 'flood;
        }
        sent += 200;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    // The flooding connection is told ENHANCE_YOUR_CALM (past 32 streams reset before accepted).
    assert_eq!(
        watcher.join().unwrap(),
        Some(0xb),
        "GOAWAY after {sent} resets"
    );
    // The other connection and new clients are served.
    other.write_all(&frame(1, 0x4 | 0x1, 1, &block)).unwrap();
    assert_eq!(
        read_response_status(&mut other, 1),
        Some(0x88),
        "200 on the other connection"
    );
    assert_eq!(gw.request(&common::get("/hello/x")).status, 200);
}

/// Reads frames until the HEADERS of `stream`: its first byte (an HPACK static `:status`, 0x88
/// for 200), `None` if the connection ends or says GOAWAY first.
fn read_response_status(s: &mut TcpStream, stream: u32) -> Option<u8> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        while buf.len() >= 9 {
            let len = ((buf[0] as usize) << 16) | ((buf[1] as usize) << 8) | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            match buf[3] {
                7 => return None,
                1 if id == stream => return Some(buf[9]),
                _ => {}
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

#[test]
fn drain_sends_goaway_and_finishes_streams_in_flight() {
    let mut spec = BackendSpec::new(Reply::ok("finished"));
    spec.delay = Duration::from_millis(800);
    let (mut gw, _backend) = start_spec(spec, "shutdown_timeout_ms = 5000");
    let addr = gw.addr;
    let pid = gw.pid;
    // An idle connection, served (its SETTINGS read) before the drain: it must see the GOAWAY.
    let mut idle = raw_h2(addr);
    let mut head = [0u8; 9];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(head[3], 4, "SETTINGS first");
    let len = ((head[0] as usize) << 16) | ((head[1] as usize) << 8) | head[2] as usize;
    idle.read_exact(&mut vec![0u8; len]).unwrap();
    let (inflight, after) = block_on(async move {
        let mut s = h2c(addr).await;
        let mut s2 = s.clone();
        let slow = tokio::spawn(async move {
            h2_request(&mut s2, "GET", "http://localhost/px/slow", &[], b"").await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SAFETY: our own child, still running.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = h2_request(&mut s, "GET", "http://localhost/hello/x", &[], b"").await;
        (slow.await.unwrap(), after)
    });
    let r = inflight.expect("the stream in flight completes");
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    assert!(after.is_err(), "no new stream after GOAWAY");
    assert_eq!(read_until_goaway(&mut idle), Some(0), "GOAWAY NO_ERROR");
    // A client closes an idle connection once it has the GOAWAY.
    drop(idle);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn idle_connections_get_goaway() {
    let (gw, _b) = start_spec(
        BackendSpec::new(Reply::ok("x")),
        "keepalive_idle_timeout_ms = 300",
    );
    let mut s = raw_h2(gw.addr);
    let t = Instant::now();
    let code = read_until_goaway(&mut s);
    assert_eq!(code, Some(0), "GOAWAY NO_ERROR");
    assert!(t.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Real clients

fn have(tool: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty());
    if !ok {
        eprintln!("{tool} not installed: skipping (test.sh installs it)");
    }
    ok
}

fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tls_gateway(pki: &tls_common::Pki, backend: SocketAddr) -> Gateway {
    let server = format!(
        "[[server.tls]]\nlisten = [\"127.0.0.1:0\"]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        pki.server.cert.display(),
        pki.server.key.display()
    );
    Gateway::start(&h2_config(backend, &server))
}

#[test]
fn curl_speaks_h2_over_tls_and_h2c() {
    if !have("curl") {
        return;
    }
    let pki = tls_common::Pki::new();
    let backend = Backend::start(Reply::Echo);
    let gw = tls_gateway(&pki, backend.addr);
    let https = format!("https://localhost:{}", gw.https[0].port());
    let (ok, out, err) = run(std::process::Command::new("curl").args([
        "-sS",
        "--http2",
        "--cacert",
        pki.ca.pem.to_str().unwrap(),
        "-w",
        " %{http_version} %{http_code}",
        &format!("{https}/hello/curl"),
    ]));
    assert!(ok, "{err}");
    assert_eq!(out, "hi curl 2 200");
    // A POST with a body through the proxy, over h2c.
    let (ok, out, err) = run(std::process::Command::new("curl").args([
        "-sS",
        "--http2-prior-knowledge",
        "--data-binary",
        "payload",
        "-w",
        " %{http_version} %{http_code}",
        &format!("http://{}/px/echo", gw.addr),
    ]));
    assert!(ok, "{err}");
    assert_eq!(out, "payload 2 200");
}

#[test]
fn nghttp_speaks_h2_over_tls_and_h2c() {
    if !have("nghttp") {
        return;
    }
    let pki = tls_common::Pki::new();
    let backend = Backend::start(Reply::ok("from backend"));
    let gw = tls_gateway(&pki, backend.addr);
    // nghttp does not verify certificates; the TLS tests do.
    for url in [
        format!("https://localhost:{}/hello/ng", gw.https[0].port()),
        format!("http://{}/hello/ng", gw.addr),
    ] {
        let (ok, out, err) = run(std::process::Command::new("nghttp").args(["-n", "-s", &url]));
        assert!(ok, "{url}: {out} {err}");
        let (ok, out, err) = run(std::process::Command::new("nghttp").arg(&url));
        assert!(ok, "{url}: {err}");
        assert_eq!(out, "hi ng");
    }
    // Several concurrent streams on one connection, and a POST.
    let url = format!("http://{}/px/a", gw.addr);
    let (ok, out, err) =
        run(std::process::Command::new("nghttp").args(["-n", "-s", "-m", "20", &url]));
    assert!(ok, "{out} {err}");
    assert!(out.contains("200"), "{out}");
    assert_eq!(backend.requests().len(), 20);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 to backends

fn h2_backend_config(pki: &tls_common::Pki, h2c_backend: SocketAddr, tls_port: u16) -> String {
    config_with(
        "",
        "",
        &format!(
            r#"
[[api]]
name = "up"

[[api.route]]
key = "ANY /c/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{h2c_backend}/{{proxy}}", upstream_protocol = "h2" }}

[[api.route]]
key = "ANY /t/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "https://localhost:{tls_port}/{{proxy}}", upstream_protocol = "h2", ca = "{}" }}
"#,
            pki.ca.pem.display()
        ),
    )
}

#[test]
fn http2_backends_serve_http11_and_http2_clients() {
    let pki = tls_common::Pki::new();
    let plain = tls_common::h2_backend(None);
    let tls = tls_common::h2_backend(Some(&pki.server));
    let gw = Gateway::start(&h2_backend_config(&pki, plain, tls.port()));
    // HTTP/1.1 clients: a GET, a POST with a body, to both backends.
    for prefix in ["/c", "/t"] {
        let r = gw.request(&common::get(&format!("{prefix}/a?x=1")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "h2 backend: GET /a?x=1 proto=http body=0");
        assert!(r.header("x-request-id").is_some());
        let r = gw.request(&common::request(
            "POST",
            &format!("{prefix}/p"),
            &[],
            b"12345",
        ));
        assert_eq!(r.text(), "h2 backend: POST /p proto=http body=5");
    }
    // An HTTP/2 client: the body streams, the backend's trailers come back.
    let addr = gw.addr;
    let (r, trailer) = block_on(async move {
        let mut s = h2c(addr).await;
        let req = http::Request::builder()
            .method("POST")
            .uri("http://localhost/t/up")
            .body(())
            .unwrap();
        let (resp, mut stream) = s.send_request(req, false).unwrap();
        tls_common::send_all(&mut stream, bytes::Bytes::from(vec![7u8; 300_000]))
            .await
            .unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(c) = body.data().await {
            let c = c.unwrap();
            let _ = body.flow_control().release_capacity(c.len());
            out.extend_from_slice(&c);
        }
        let t = body.trailers().await.unwrap();
        (
            (status, String::from_utf8(out).unwrap()),
            t.and_then(|t| {
                t.get("x-backend-trailer")
                    .map(|v| v.to_str().unwrap().to_string())
            }),
        )
    });
    assert_eq!(
        r,
        (
            200,
            "h2 backend: POST /up proto=http body=300000".to_string()
        )
    );
    assert_eq!(trailer.as_deref(), Some("yes"));
    // A backend that does not speak HTTP/2 is a 502.
    let h1 = Backend::start(Reply::ok("h1 only"));
    let gw2 = Gateway::start(&h2_backend_config(&pki, h1.addr, tls.port()));
    let r = gw2.request(&common::get("/c/x"));
    assert_eq!(r.status, 502, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Request trailers

/// An h2c backend on port 0 answering `"trailer=<x-client-trailer> body=<bytes>"`: what it got
/// as the request's trailers.
fn trailer_echo_h2_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut n = 0;
                            while let Some(Ok(c)) = body.data().await {
                                n += c.len();
                                let _ = body.flow_control().release_capacity(c.len());
                            }
                            let t = body.trailers().await.ok().flatten();
                            let v = t
                                .as_ref()
                                .and_then(|t| t.get("x-client-trailer"))
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string();
                            let resp = http::Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let text = format!("trailer={v} body={n}");
                                let _ = send.send_data(bytes::Bytes::from(text), true);
                            }
                        });
                    }
                });
            }
        });
    });
    addr
}

/// An HTTP/1.1 backend on port 0 for one request: sends back (over `tx`) everything the
/// request was, up to the end of a chunked body's trailer section, and answers 200 "ok".
fn raw_h1_backend() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_read_timeout(Some(common::IO_TIMEOUT));
        let mut got = Vec::new();
        let mut tmp = [0u8; 65536];
        // The last chunk, its trailer fields, then an empty line.
        while !(got.ends_with(b"\r\n\r\n") && common::find(&got, b"\r\n0\r\n").is_some()) {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
    });
    (addr, rx)
}

/// A POST from an h2 client with a body and then trailers.
async fn post_with_trailer(addr: SocketAddr, uri: &str) -> (u16, String) {
    let mut s = h2c(addr).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(uri)
        .body(())
        .unwrap();
    let (resp, mut stream) = s.send_request(req, false).unwrap();
    stream.reserve_capacity(5);
    stream
        .send_data(bytes::Bytes::from_static(b"12345"), false)
        .unwrap();
    let mut t = http::HeaderMap::new();
    t.insert("x-client-trailer", http::HeaderValue::from_static("t1"));
    stream.send_trailers(t).unwrap();
    let r = tls_common::read_h2_response(resp).await.unwrap();
    (r.status, r.text())
}

#[test]
fn request_trailers_from_an_h2_client_reach_h2_and_http11_backends() {
    let h2 = trailer_echo_h2_backend();
    let (h1, seen) = raw_h1_backend();
    let gw = Gateway::start(&config_with(
        "",
        "",
        &format!(
            r#"
[[api]]
name = "tr"

[[api.route]]
key = "POST /h2"
integration = {{ type = "http_proxy", uri = "http://{h2}/up", upstream_protocol = "h2" }}

[[api.route]]
key = "POST /h1"
integration = {{ type = "http_proxy", uri = "http://{h1}/up" }}
"#
        ),
    ));
    let addr = gw.addr;
    let (to_h2, to_h1) = block_on(async move {
        (
            post_with_trailer(addr, "http://localhost/h2").await,
            post_with_trailer(addr, "http://localhost/h1").await,
        )
    });
    assert_eq!(to_h2, (200, "trailer=t1 body=5".to_string()));
    assert_eq!(to_h1, (200, "ok".to_string()));
    // No content-length from the client: chunked to the HTTP/1.1 backend, the trailer after
    // the last chunk.
    let raw = seen.recv_timeout(common::IO_TIMEOUT).unwrap();
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{raw}");
    assert!(
        lower.ends_with("\r\n5\r\n12345\r\n0\r\nx-client-trailer: t1\r\n\r\n"),
        "{raw}"
    );
}

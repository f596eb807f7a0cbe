//! HTTPS over real sockets: HTTP/1.1 and HTTP/2 chosen by ALPN, certificates chosen by SNI,
//! client certificates (required, optional, untrusted), old protocol versions refused, an
//! `https://` backend verified against a test CA, certificate reload (good and broken), and
//! the connection metrics by protocol and TLS version. Certificates are made at test time.

mod common;
mod tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Backend, Gateway, Reply, config_with};
use tls_common::{
    H2Resp, Pki, client_config, get_req, h2_request, h2_tls, roundtrip, tls_backend, tls_connect,
};

/// A TLS listener with `extra` lines in its `[[server.tls]]` table, and routes: a mock at
/// `/hello` and a proxy to `backend` under `/px/`.
fn tls_config(pki: &Pki, extra: &str, backend: SocketAddr) -> String {
    let server = format!(
        r#"
[[server.tls]]
listen = ["127.0.0.1:0"]
certs = [
  {{ cert = "{}", key = "{}", domains = ["localhost", "api.example.com"] }},
  {{ cert = "{}", key = "{}", domains = ["*.example.net"] }},
]
{extra}
"#,
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.net.cert.display(),
        pki.net.key.display(),
    );
    config_with(
        &server,
        "",
        &format!(
            r#"
[[api]]
name = "t"

[[api.route]]
key = "GET /hello"
integration = {{ type = "mock", body = "hi" }}

[[api.route]]
key = "ANY /px/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "http://{backend}/{{proxy}}" }}
"#
        ),
    )
}

fn start(pki: &Pki, extra: &str) -> (Gateway, Backend) {
    let backend = Backend::start(Reply::ok("from backend"));
    let gw = Gateway::start(&tls_config(pki, extra, backend.addr));
    assert_eq!(gw.https.len(), 1, "one https listener line");
    (gw, backend)
}

fn h1_get(gw: &Gateway, pki: &Pki, path: &str) -> tls_common::Resp {
    let cfg = client_config(Some(&pki.ca.pem), &[b"http/1.1"], None);
    let mut s = tls_connect(gw.https[0], "localhost", cfg).expect("tls connect");
    roundtrip(&mut s, &get_req(path, "localhost")).expect("response")
}

#[test]
fn https_serves_http11_mock_and_proxy() {
    let pki = Pki::new();
    let (gw, backend) = start(&pki, "");
    let r = h1_get(&gw, &pki, "/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    assert!(r.header("x-request-id").is_some());
    let r = h1_get(&gw, &pki, "/px/a/b?q=1");
    assert_eq!((r.status, r.text().as_str()), (200, "from backend"));
    let seen = &backend.requests()[0];
    assert_eq!(seen.target, "/a/b?q=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert!(!seen.has_header("x-client-cert-subject"));
    // Keep-alive over TLS: several requests on one connection.
    let cfg = client_config(Some(&pki.ca.pem), &[], None);
    let mut s = tls_connect(gw.https[0], "localhost", cfg).unwrap();
    for _ in 0..5 {
        let r = roundtrip(&mut s, &get_req("/hello", "localhost")).unwrap();
        assert_eq!(r.status, 200);
    }
    // `connection: close` ends with close_notify: the client sees a clean end, not a cut.
    let cfg = client_config(Some(&pki.ca.pem), &[], None);
    let mut s = tls_connect(gw.https[0], "localhost", cfg).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("a clean TLS close");
    assert!(
        all.ends_with(b"\r\n\r\nhi"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    // The plain listener still speaks plain HTTP.
    assert_eq!(gw.request(&common::get("/hello")).text(), "hi");
}

#[test]
fn alpn_picks_h2_over_tls() {
    let pki = Pki::new();
    let (gw, backend) = start(&pki, "");
    let cfg = client_config(Some(&pki.ca.pem), &[b"h2", b"http/1.1"], None);
    let addr = gw.https[0];
    let (hello, proxied, alpn) = tls_common::block_on(async move {
        let (mut send, alpn) = h2_tls(addr, "localhost", cfg).await;
        let a = h2_request(&mut send, "GET", "https://localhost/hello", &[], b"")
            .await
            .unwrap();
        let b = h2_request(&mut send, "GET", "https://localhost/px/z", &[], b"")
            .await
            .unwrap();
        (a, b, alpn)
    });
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!((hello.status, hello.text().as_str()), (200, "hi"));
    assert!(hello.header("x-request-id").is_some() && hello.header("date").is_some());
    assert_eq!(proxied.text(), "from backend");
    assert_eq!(
        backend.requests()[0].header("x-forwarded-proto"),
        Some("https")
    );
    // A client without ALPN gets HTTP/1.1.
    let cfg = client_config(Some(&pki.ca.pem), &[], None);
    let mut s = tls_connect(gw.https[0], "localhost", cfg).unwrap();
    assert_eq!(s.conn.alpn_protocol(), None);
    assert_eq!(
        roundtrip(&mut s, &get_req("/hello", "x")).unwrap().status,
        200
    );
}

/// The end-entity certificate the server presents for `sni`.
fn served_cert(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let cfg = client_config(None, &[], None);
    let s = tls_connect(addr, sni, cfg).expect("connect");
    s.conn.peer_certificates().expect("server certs")[0].to_vec()
}

#[test]
fn sni_picks_the_certificate() {
    let pki = Pki::new();
    let (gw, _b) = start(&pki, "");
    let addr = gw.https[0];
    assert_eq!(served_cert(addr, "api.example.com"), pki.server.der);
    assert_eq!(served_cert(addr, "foo.example.net"), pki.net.der);
    assert_eq!(served_cert(addr, "FOO.Example.NET"), pki.net.der);
    // A wildcard covers one label only; unknown names get the first certificate.
    assert_eq!(served_cert(addr, "a.b.example.net"), pki.server.der);
    assert_eq!(served_cert(addr, "unknown.org"), pki.server.der);
    // And verification succeeds for the names each certificate carries.
    let cfg = client_config(Some(&pki.ca.pem), &[], None);
    let mut s = tls_connect(addr, "x.example.net", cfg).expect("verified *.example.net");
    assert_eq!(
        roundtrip(&mut s, &get_req("/hello", "x")).unwrap().status,
        200
    );
}

/// Connects with an optional client certificate and makes one HTTP/1.1 request; `Err` when
/// the handshake or the request fails.
fn mtls_get(
    gw: &Gateway,
    pki: &Pki,
    cert: Option<&tls_common::Leaf>,
    req: &[u8],
) -> std::io::Result<tls_common::Resp> {
    let cfg = client_config(Some(&pki.ca.pem), &[], cert);
    let mut s = tls_connect(gw.https[0], "localhost", cfg)?;
    roundtrip(&mut s, req)
}

#[test]
fn mtls_required_forwards_the_identity_and_refuses_others() {
    let pki = Pki::new();
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"required\"",
        pki.client_ca.pem.display()
    );
    let (gw, backend) = start(&pki, &extra);
    // A client spoofing the identity headers does not get them through.
    let req = b"GET /px/me HTTP/1.1\r\nhost: localhost\r\nx-client-cert-subject: CN=admin\r\nx-client-cert-fingerprint: 00\r\n\r\n";
    let r = mtls_get(&gw, &pki, Some(&pki.client), req).expect("valid client cert");
    assert_eq!(r.status, 200);
    let seen = &backend.requests()[0];
    assert_eq!(
        seen.header("x-client-cert-subject"),
        Some("CN=client-1,O=Tollgate Tests")
    );
    assert_eq!(
        seen.header("x-client-cert-fingerprint"),
        Some(pki.client.fingerprint().as_str())
    );
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-client-cert-subject"))
            .count(),
        1
    );
    // No certificate, or one from an untrusted CA: the handshake fails, no request is served.
    assert!(mtls_get(&gw, &pki, None, &get_req("/hello", "x")).is_err());
    assert!(mtls_get(&gw, &pki, Some(&pki.rogue_client), &get_req("/hello", "x")).is_err());
    assert_eq!(backend.requests().len(), 1);
    let m = gw.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_tls_handshake_failures_total ") && !l.ends_with(" 0")),
        "{m}"
    );
}

#[test]
fn mtls_optional_serves_anonymous_clients_without_identity() {
    let pki = Pki::new();
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"",
        pki.client_ca.pem.display()
    );
    let (gw, backend) = start(&pki, &extra);
    let r = mtls_get(&gw, &pki, None, &get_req("/px/anon", "x")).expect("anonymous");
    assert_eq!(r.status, 200);
    let r = mtls_get(&gw, &pki, Some(&pki.client), &get_req("/px/known", "x")).expect("cert");
    assert_eq!(r.status, 200);
    let seen = backend.requests();
    assert!(!seen[0].has_header("x-client-cert-subject"));
    assert_eq!(
        seen[1].header("x-client-cert-subject"),
        Some("CN=client-1,O=Tollgate Tests")
    );
    // A certificate that does not verify still fails the handshake.
    assert!(mtls_get(&gw, &pki, Some(&pki.rogue_client), &get_req("/hello", "x")).is_err());
}

/// A TLS 1.1 ClientHello (record version 0x0301, client_version 0x0302), no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // 2 suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0, 0, hello.len() as u8];
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn tls_1_1_is_refused() {
    let pki = Pki::new();
    let (gw, _b) = start(&pki, "");
    let mut s = TcpStream::connect(gw.https[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&tls11_client_hello()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // A fatal alert (record type 21, level 2) and nothing else: no ServerHello (type 22).
    assert!(buf.len() >= 7, "expected an alert, got {buf:?}");
    assert_eq!(buf[0], 0x15, "alert record, got {buf:?}");
    assert_eq!(buf[5], 2, "fatal");
    assert!(
        matches!(buf[6], 70 | 40),
        "protocol_version or handshake_failure, got {}",
        buf[6]
    );
    // openssl, when installed, agrees (its TLS 1.1 may be disabled at its security level too,
    // which fails the same way).
    if let Ok(out) = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-connect",
        ])
        .arg(gw.https[0].to_string())
        .stdin(std::process::Stdio::null())
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Cipher is (NONE)"),
            "openssl -tls1_1 connected: {text}"
        );
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    } else {
        eprintln!("openssl not installed: only the raw ClientHello was tried");
    }
    // TLS 1.2 and 1.3 both work.
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                pki.ca.cert.der().to_vec(),
            ))
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[v])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut s = tls_connect(gw.https[0], "localhost", std::sync::Arc::new(cfg)).unwrap();
        assert_eq!(s.conn.protocol_version(), Some(v.version));
        assert_eq!(
            roundtrip(&mut s, &get_req("/hello", "x")).unwrap().status,
            200
        );
    }
    let m = gw.metrics();
    assert!(
        m.contains("tollgate_connections_by_protocol_total{protocol=\"h1\",tls=\"1.2\"} 1"),
        "{m}"
    );
    assert!(m.contains("tollgate_connections_by_protocol_total{protocol=\"h1\",tls=\"1.3\"} 1"));
}

#[test]
fn https_backend_is_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let backend = tls_backend(&pki.server);
    let port = backend.port();
    // Serves *.example.net: not a certificate for "localhost".
    let misnamed = tls_backend(&pki.net).port();
    let other_ca = tls_common::Ca::new(&pki.dir, "Other CA");
    let gw = Gateway::start(&config_with(
        "",
        "",
        &format!(
            r#"
[[api]]
name = "t"

[[api.route]]
key = "GET /good/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "https://localhost:{port}/b/{{proxy}}", ca = "{}" }}

[[api.route]]
key = "GET /bad/{{proxy+}}"
integration = {{ type = "http_proxy", uri = "https://localhost:{port}/b/{{proxy}}", ca = "{}" }}

[[api.route]]
key = "GET /wrongname"
integration = {{ type = "http_proxy", uri = "https://localhost:{misnamed}/", ca = "{}" }}
"#,
            pki.ca.pem.display(),
            other_ca.pem.display(),
            pki.ca.pem.display(),
        ),
    ));
    let r = gw.request(&common::get("/good/x?y=1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls backend: /b/x?y=1; proto=http");
    // Pooled: a second request reuses the TLS connection.
    assert_eq!(gw.request(&common::get("/good/again")).status, 200);
    // An untrusted certificate, or one for another name, is a 502.
    let r = gw.request(&common::get("/bad/x"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, r#"{"message":"Bad Gateway"}"#)
    );
    let r = gw.request(&common::get("/wrongname"));
    assert_eq!(r.status, 502);
}

/// Writes `leaf` over the listener's certificate files.
fn install(pki: &Pki, cert: &std::path::Path, key: &std::path::Path) {
    std::fs::copy(cert, &pki.server.cert).unwrap();
    std::fs::copy(key, &pki.server.key).unwrap();
}

#[test]
fn certificates_reload_and_a_broken_one_is_refused() {
    let pki = Pki::new();
    let (gw, _b) = start(&pki, "");
    let addr = gw.https[0];
    let first = pki.server.der.clone();
    assert_eq!(served_cert(addr, "localhost"), first);

    // A renewed certificate, swapped in on disk, is served after SIGHUP.
    let renewed = pki
        .ca
        .leaf(&pki.dir, "renewed", "localhost", &["localhost"], false);
    install(&pki, &renewed.cert, &renewed.key);
    gw.sighup();
    common::eventually("the renewed certificate is served", || {
        (served_cert(addr, "localhost") == renewed.der).then_some(())
    });

    // A broken one (key of another certificate) is refused by the admin reload, naming the
    // file; the renewed one keeps serving.
    let other = pki
        .ca
        .leaf(&pki.dir, "other", "localhost", &["localhost"], false);
    std::fs::copy(&other.key, &pki.server.key).unwrap();
    let r = gw.reload();
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("server.key"), "{}", r.text());
    assert!(r.text().contains("does not belong"), "{}", r.text());
    assert_eq!(served_cert(addr, "localhost"), renewed.der);
    // Garbage and SIGHUP: refused too, logged, still serving.
    std::fs::write(&pki.server.cert, "garbage").unwrap();
    gw.sighup();
    common::eventually("the refusal is logged", || {
        gw.stderr().contains("server.pem").then_some(())
    });
    assert_eq!(served_cert(addr, "localhost"), renewed.der);
    let cfg = client_config(Some(&pki.ca.pem), &[], None);
    let mut s = tls_connect(addr, "localhost", cfg).unwrap();
    assert_eq!(
        roundtrip(&mut s, &get_req("/hello", "x")).unwrap().status,
        200
    );
}

#[test]
fn changing_tls_listen_needs_a_restart() {
    let pki = Pki::new();
    let backend = Backend::start(Reply::ok("x"));
    let gw = Gateway::start(&tls_config(&pki, "", backend.addr));
    let text = tls_config(&pki, "", backend.addr).replacen(
        "listen = [\"127.0.0.1:0\"]\ncerts",
        "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\ncerts",
        1,
    );
    gw.rewrite_config(&text);
    let r = gw.reload();
    assert_ne!(r.status, 200);
    assert!(r.text().contains("restart"), "{}", r.text());
}

#[test]
fn broken_certificates_stop_validate_and_start() {
    let pki = Pki::new();
    std::fs::write(
        pki.dir.join("bad.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls]]\nlisten = [\"127.0.0.1:0\"]\n\
         certs = [{ cert = \"server.pem\", key = \"bad.key\" }]\n[[api]]\nname = \"a\"\n\
         [[api.route]]\nkey = \"GET /\"\nintegration = { type = \"mock\" }\n";
    // Relative to the config file's directory.
    let path = pki.dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.key"), "{err}");
}

#[test]
fn h2_and_h1_over_tls_count_by_protocol() {
    let pki = Pki::new();
    let (gw, _b) = start(&pki, "");
    let cfg = client_config(Some(&pki.ca.pem), &[b"h2"], None);
    let addr = gw.https[0];
    let r: H2Resp = tls_common::block_on(async move {
        let (mut send, _) = h2_tls(addr, "localhost", cfg).await;
        h2_request(&mut send, "GET", "https://localhost/hello", &[], b"")
            .await
            .unwrap()
    });
    assert_eq!(r.status, 200);
    let _ = h1_get(&gw, &pki, "/hello");
    let m = gw.metrics();
    assert!(
        m.contains("tollgate_connections_by_protocol_total{protocol=\"h2\",tls=\"1.3\"} 1"),
        "{m}"
    );
    assert!(m.contains("tollgate_connections_by_protocol_total{protocol=\"h1\",tls=\"1.3\"} 1"));
}

/// wss://: the WebSocket session seals and opens TLS records itself after the upgrade.
#[test]
fn websocket_over_tls_echoes() {
    let pki = Pki::new();
    let cfg = config_with(
        &format!(
            r#"
[[server.tls]]
listen = ["127.0.0.1:0"]
certs = [{{ cert = "{}", key = "{}", domains = ["localhost"] }}]
"#,
            pki.server.cert.display(),
            pki.server.key.display()
        ),
        "",
        r#"
[[api]]
name = "chat"
protocol = "websocket"

[[api.route]]
key = "$default"
integration = { type = "mock", echo = true }
"#,
    );
    let gw = Gateway::start(&cfg);
    let mut s = tls_connect(
        gw.https[0],
        "localhost",
        client_config(Some(&pki.ca.pem), &[b"http/1.1"], None),
    )
    .expect("tls");
    s.write_all(&common::ws_upgrade_request("/", &[]))
        .expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains(common::WS_ACCEPT), "{head}");
    for msg in ["hello over tls", &"x".repeat(20_000)] {
        // A masked text frame (client to server), with a 16-bit length when needed.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81];
        if msg.len() < 126 {
            frame.push(0x80 | msg.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&frame).expect("send");
        let mut h = [0u8; 2];
        s.read_exact(&mut h).expect("frame head");
        assert_eq!(h[0], 0x81, "a final text frame");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).expect("len");
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("payload");
        assert_eq!(payload, msg.as_bytes(), "echoed over TLS");
    }
}

// ---------------------------------------------------------------------------------------------
// Session resumption and the handshake deadline

/// A client config trusting the test CA, for `versions` only, with `resumption`. Its session
/// store is shared by every connection made with it.
fn resuming_client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    resumption: rustls::client::Resumption,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca.pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = resumption;
    std::sync::Arc::new(config)
}

/// One connection and one request (which also reads the session tickets the server sends after
/// a TLS 1.3 handshake); how the handshake went.
fn handshake_kind(addr: SocketAddr, cfg: &std::sync::Arc<rustls::ClientConfig>) -> String {
    let mut s = tls_connect(addr, "localhost", cfg.clone()).expect("tls connect");
    let r = roundtrip(&mut s, &get_req("/hello", "localhost")).expect("response");
    assert_eq!(r.status, 200);
    format!("{:?}", s.conn.handshake_kind().expect("handshake done"))
}

#[test]
fn sessions_resume_on_every_core_and_across_reloads() {
    let pki = Pki::new();
    let backend = Backend::start(Reply::ok("x"));
    // Two cores: the connections land on either, and each core must accept the other's tickets
    // and session ids.
    let gw = Gateway::start_cores(&tls_config(&pki, "", backend.addr), Some(2));
    let addr = gw.https[0];
    let cases = [
        ("TLS 1.3 ticket", &rustls::version::TLS13, None),
        (
            "TLS 1.2 ticket",
            &rustls::version::TLS12,
            Some(rustls::client::Tls12Resumption::SessionIdOrTickets),
        ),
        (
            "TLS 1.2 session id",
            &rustls::version::TLS12,
            Some(rustls::client::Tls12Resumption::SessionIdOnly),
        ),
    ];
    for (what, version, tls12) in cases {
        let mut resumption = rustls::client::Resumption::in_memory_sessions(64);
        if let Some(t) = tls12 {
            resumption = resumption.tls12_resumption(t);
        }
        let cfg = resuming_client(&pki, &[version], resumption);
        assert_eq!(handshake_kind(addr, &cfg), "Full", "{what}: the first");
        for i in 0..8 {
            assert_eq!(
                handshake_kind(addr, &cfg),
                "Resumed",
                "{what}: connection {i}"
            );
        }
        // A reload builds new TLS configs; the ticket key and session cache carry over.
        let r = gw.reload();
        assert_eq!(r.status, 200, "{}", r.text());
        for i in 0..4 {
            assert_eq!(
                handshake_kind(addr, &cfg),
                "Resumed",
                "{what}: after reload, connection {i}"
            );
        }
    }
    // A client without a session gets a full handshake (resumption is not faked).
    let fresh = resuming_client(
        &pki,
        &[&rustls::version::TLS13],
        rustls::client::Resumption::disabled(),
    );
    assert_eq!(handshake_kind(addr, &fresh), "Full");
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_closed() {
    let pki = Pki::new();
    let backend = Backend::start(Reply::ok("x"));
    // header_read_timeout_ms bounds the handshake; the [server] line goes before the TLS table.
    let cfg = tls_config(&pki, "", backend.addr).replacen(
        "[[server.tls]]",
        "header_read_timeout_ms = 300\n\n[[server.tls]]",
        1,
    );
    let gw = Gateway::start(&cfg);
    let addr = gw.https[0];
    // One sends nothing, one half a ClientHello record header.
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    for (what, s) in [("silent", &mut silent), ("partial", &mut partial)] {
        // The bound only keeps a broken gateway from hanging the test.
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: {n} unexpected bytes"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ),
                "{what}: not closed: {e}"
            ),
        }
    }
    common::eventually("both counted as failed handshakes", || {
        gw.metrics()
            .contains("tollgate_tls_handshake_failures_total 2")
            .then_some(())
    });
    // Others are served.
    assert_eq!(h1_get(&gw, &pki, "/hello").status, 200);
}

#[test]
fn proxy_warnings_name_the_client_certificate_subject() {
    let pki = Pki::new();
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"",
        pki.client_ca.pem.display()
    );
    // Every /px/ request fails: 502 and a warning.
    let gw = Gateway::start(&tls_config(&pki, &extra, common::refused_addr()));
    let subject = "(client CN=client-1,O=Tollgate Tests)";
    // HTTP/1.1 with a certificate, then without one.
    let r = mtls_get(&gw, &pki, Some(&pki.client), &get_req("/px/h1", "x")).expect("h1");
    assert_eq!(r.status, 502);
    let r = mtls_get(&gw, &pki, None, &get_req("/px/anon", "x")).expect("anonymous");
    assert_eq!(r.status, 502);
    // HTTP/2 with a certificate.
    let cfg = client_config(Some(&pki.ca.pem), &[b"h2"], Some(&pki.client));
    let addr = gw.https[0];
    let r = tls_common::block_on(async move {
        let (mut send, _) = h2_tls(addr, "localhost", cfg).await;
        h2_request(&mut send, "GET", "https://localhost/px/h2", &[], b"")
            .await
            .unwrap()
    });
    assert_eq!(r.status, 502);
    let log = common::eventually("three proxy warnings", || {
        let log = gw.stderr();
        (log.matches("502").count() >= 3).then_some(log)
    });
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("502")).collect();
    assert_eq!(warnings.len(), 3, "{log}");
    assert!(warnings[0].ends_with(subject), "h1: {}", warnings[0]);
    assert!(
        !warnings[1].contains("(client "),
        "anonymous: {}",
        warnings[1]
    );
    assert!(
        warnings[2].contains("(h2)") && warnings[2].ends_with(subject),
        "h2: {}",
        warnings[2]
    );
}

/// The identity headers a client sends are never what a backend sees, over HTTP/1.1 or HTTP/2,
/// with a certificate or without one; and they cannot vary the cache key (the key is built
/// from the client's headers, so a client could name another client's identity).
#[test]
fn client_sent_identity_headers_are_replaced_and_cannot_key_the_cache() {
    let pki = Pki::new();
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"",
        pki.client_ca.pem.display()
    );
    let (gw, backend) = start(&pki, &extra);
    let forged = [
        ("x-client-cert-subject", "CN=admin"),
        ("x-client-cert-fingerprint", "00"),
    ];
    let addr = gw.https[0];
    for cert in [None, Some(&pki.client)] {
        let mut req = b"GET /px/h1 HTTP/1.1\r\nhost: localhost\r\n".to_vec();
        for (n, v) in forged {
            req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(mtls_get(&gw, &pki, cert, &req).unwrap().status, 200);
        let cfg = client_config(Some(&pki.ca.pem), &[b"h2"], cert);
        let r = tls_common::block_on(async move {
            let (mut send, _) = h2_tls(addr, "localhost", cfg).await;
            h2_request(&mut send, "GET", "https://localhost/px/h2", &forged, b"")
                .await
                .unwrap()
        });
        assert_eq!(r.status, 200);
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 4);
    let want = Some("CN=client-1,O=Tollgate Tests");
    for (s, subject) in seen.iter().zip([None, None, want, want]) {
        assert_eq!(s.header("x-client-cert-subject"), subject, "{}", s.target);
        let n = s
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-client-cert-"))
            .count();
        assert_eq!(n, if subject.is_some() { 2 } else { 0 }, "{}", s.target);
    }

    // `validate` refuses them as cache key headers, stage-wide and per route.
    for cache in [
        r#"cache = { enabled = true, key_headers = ["accept", "X-Client-Cert-Subject"] }"#,
        r#"route_cache = { "GET /" = { key_headers = ["x-client-cert-fingerprint"] } }"#,
    ] {
        let text = common::config(&format!(
            "[[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\n\
             integration = {{ type = \"http_proxy\", uri = \"http://127.0.0.1:9/\" }}\n\
             [[api.stage]]\nname = \"prod\"\n{cache}\n"
        ));
        let out = std::process::Command::new(common::bin())
            .arg("validate")
            .arg(common::write_temp_config(&text))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cache}");
        assert!(
            err.contains("cannot vary the cache key: the client sends its own value"),
            "{err}"
        );
    }
}

/// `examples/https.toml` with the README's steps: refused without its certificate, valid with
/// one made by the README's openssl command, and served to curl over TLS (the openssl and curl
/// parts are skipped with a message when the tools are missing).
#[test]
fn the_https_example_validates_and_serves_with_the_readme_certificate() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/https.toml");
    let dir = tls_common::temp_dir("example");
    let config = dir.join("https.toml");
    std::fs::copy(example, &config).unwrap();
    let validate = || {
        let out = std::process::Command::new(common::bin())
            .arg("validate")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = validate();
    assert!(!ok && err.contains("certs/api.pem"), "{err}");

    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let (cert, key) = (dir.join("certs/api.pem"), dir.join("certs/api.key"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .output();
    if !openssl.is_ok_and(|o| o.status.success()) {
        eprintln!("openssl not installed: using the test CA's certificate, and no curl");
        let pki = Pki::new();
        std::fs::copy(&pki.server.cert, &cert).unwrap();
        std::fs::copy(&pki.server.key, &key).unwrap();
        let (ok, err) = validate();
        assert!(ok, "{err}");
        return;
    }
    let (ok, err) = validate();
    assert!(ok, "{err}");

    // Served, on free ports, with the certificate paths made absolute.
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("\"certs/", &format!("\"{}/certs/", dir.display()));
    let gw = Gateway::start(&text);
    let port = gw.https[0].port();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", " %{http_version}"])
        .arg(format!("https://localhost:{port}/hello/you"))
        .output();
    let Ok(out) = curl else {
        eprintln!("curl not installed: skipping the request");
        return;
    };
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.starts_with(r#"{"hello":"you"}"#), "{body}");
    assert!(body.ends_with(" 2"), "HTTP/2 by ALPN: {body}");
}

//! TLS and HTTP/2 test helpers: a test PKI made at test time with rcgen (CA, server certificates
//! for localhost and SNI names, client certificates from a trusted and a rogue CA), rustls
//! clients over std sockets, an h2 client on a tokio runtime, and a TLS backend.
//!
//! Owns no assertion about the gateway: the test files do that.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

static N: AtomicU64 = AtomicU64::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-tls-{tag}-{}-{n}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A certificate authority that signs test certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
    /// PEM file of the CA certificate.
    pub pem: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("self-signed ca");
        let pem = dir.join(format!("{name}.pem").replace(' ', "-"));
        std::fs::write(&pem, cert.pem()).expect("write ca");
        Ca { cert, key, pem }
    }

    /// A leaf certificate for `names` (DNS names or IPs), written as `<file>.pem` and
    /// `<file>.key` in `dir`.
    pub fn leaf(&self, dir: &Path, file: &str, cn: &str, names: &[&str], client: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).expect("leaf params");
        // Most general first, as issuers write them: RFC 4514 prints them the other way.
        p.distinguished_name = rcgen::DistinguishedName::new();
        if client {
            p.distinguished_name
                .push(DnType::OrganizationName, "Tollgate Tests");
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            cert: cert_path,
            key: key_path,
        }
    }
}

/// A certificate and key on disk, and the DER bytes of the certificate.
#[derive(Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.clone()).expect("pkcs8 key")
    }

    /// SHA-256 of the certificate, lower-case hex.
    pub fn fingerprint(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.der);
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Everything the TLS tests need, in one temp dir.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
    /// localhost, 127.0.0.1, api.example.com.
    pub server: Leaf,
    /// *.example.net.
    pub net: Leaf,
    pub client_ca: Ca,
    /// CN=client-1, O=Tollgate Tests, signed by `client_ca`.
    pub client: Leaf,
    /// Signed by a CA the gateway does not trust.
    pub rogue_client: Leaf,
}

impl Pki {
    pub fn new() -> Pki {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = temp_dir("pki");
        let ca = Ca::new(&dir, "Tollgate Test CA");
        let server = ca.leaf(
            &dir,
            "server",
            "localhost",
            &["localhost", "127.0.0.1", "api.example.com"],
            false,
        );
        let net = ca.leaf(&dir, "net", "example.net", &["*.example.net"], false);
        let client_ca = Ca::new(&dir, "Tollgate Client CA");
        let client = client_ca.leaf(&dir, "client", "client-1", &["client-1"], true);
        let rogue = Ca::new(&dir, "Rogue CA");
        let rogue_client = rogue.leaf(&dir, "rogue", "client-1", &["client-1"], true);
        Pki {
            dir,
            ca,
            server,
            net,
            client_ca,
            client,
            rogue_client,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A rustls client config trusting `ca` (or anything, when `None`), offering `alpn`, with an
/// optional client certificate.
pub fn client_config(
    ca: Option<&Path>,
    alpn: &[&[u8]],
    client_cert: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder();
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).expect("read ca");
            for c in rustls_pemfile_certs(&pem) {
                roots.add(c).expect("add root");
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny)),
    };
    let mut config = match client_cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain(), c.private_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("pem certs")
}

/// Accepts any server certificate (to look at which one was served).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection from a std socket.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake.
pub fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from(sni.to_string()).expect("sni");
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    // TLS 1.3: a refused client certificate shows up only when the server's alert is read.
    Ok(s)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads one `content-length` response from a stream.
pub fn roundtrip(s: &mut impl ReadWrite, req: &[u8]) -> io::Result<Resp> {
    s.write_all(req)?;
    s.flush()?;
    read_response(s)
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

pub fn read_response(s: &mut impl Read) -> io::Result<Resp> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub fn get_req(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// h2 client (tokio current-thread runtime)

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async move {
            tokio::time::timeout(Duration::from_secs(120), f)
                .await
                .expect("test future timed out")
        })
}

/// An h2 client over cleartext TCP (prior knowledge). The connection task runs in the
/// background of the current runtime.
pub async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// An h2 client over TLS with ALPN `h2`. Returns the negotiated ALPN too.
pub async fn h2_tls(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> (h2::client::SendRequest<bytes::Bytes>, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(sni.to_string()).expect("sni");
    let tls = connector.connect(name, tcp).await.expect("tls connect");
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, alpn)
}

/// A finished h2 response: status, headers, whole body.
pub struct H2Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl H2Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with `body` (none when empty) and reads the whole response.
pub async fn h2_request(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<H2Resp, h2::Error> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(()).expect("request");
    let mut ready = send.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        send_all(&mut stream, bytes::Bytes::copy_from_slice(body)).await?;
    }
    read_h2_response(resp).await
}

/// Sends `data` and ends the stream, within the peer's flow-control window.
pub async fn send_all(
    stream: &mut h2::SendStream<bytes::Bytes>,
    mut data: bytes::Bytes,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len().min(1 << 20));
        let cap = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .expect("stream open")?;
        let chunk = data.split_to(cap.min(data.len()));
        stream.send_data(chunk, data.is_empty())?;
    }
    Ok(())
}

pub async fn read_h2_response(resp: h2::client::ResponseFuture) -> Result<H2Resp, h2::Error> {
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(H2Resp {
        status,
        headers,
        body: out,
    })
}

// ---------------------------------------------------------------------------------------------
// A TLS backend

/// An HTTPS backend on 127.0.0.1 port 0 serving `leaf`, answering every request with 200 and
/// `"tls backend: <target>; proto=<x-forwarded-proto>"`. Threads live until the process ends.
pub fn tls_backend(leaf: &Leaf) -> SocketAddr {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.private_key())
        .expect("backend config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                loop {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let proto = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-forwarded-proto: "))
                        .unwrap_or("-")
                        .to_string();
                    let body = format!("tls backend: {target}; proto={proto}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes())
                        .and_then(|_| s.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// An HTTP/2 backend

/// An HTTP/2 backend on 127.0.0.1 port 0: cleartext (prior knowledge) without `leaf`, TLS with
/// ALPN `h2` with it. Answers `"h2 backend: <method> <path?query> proto=<x-forwarded-proto>
/// body=<bytes>"` and the trailer `x-backend-trailer: yes`.
pub fn h2_backend(leaf: Option<&Leaf>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let acceptor = leaf.map(|leaf| {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(leaf.chain(), leaf.private_key())
            .expect("backend config");
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve_h2(tls).await;
                            }
                        }
                        None => serve_h2(tcp).await,
                    }
                });
            }
        });
    });
    addr
}

async fn serve_h2<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: T) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        tokio::spawn(async move {
            let (parts, mut body) = req.into_parts();
            let mut n = 0usize;
            while let Some(Ok(chunk)) = body.data().await {
                n += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let proto = parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let text = format!(
                "h2 backend: {} {} proto={proto} body={n}",
                parts.method,
                parts.uri.path_and_query().map_or("", |p| p.as_str())
            );
            let resp = http::Response::builder().status(200).body(()).unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            let _ = send.send_data(bytes::Bytes::from(text), false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-backend-trailer", http::HeaderValue::from_static("yes"));
            let _ = send.send_trailers(trailers);
        });
    }
}

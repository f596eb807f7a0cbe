//! TLS with rustls (ring provider): the configs built from `[[server.tls]]` and from `https://`
//! backends, and `TlsIo`, which drives one rustls connection over the caller's buffers.
//!
//! Owns: protocol versions (1.2 and 1.3 only), the cipher list, certificate choice by SNI,
//! client-certificate verification, ALPN (`h2`, `http/1.1`), session resumption (tickets whose
//! key is shared by every core and survives reloads, plus a session-id cache), and reading
//! PEM files into those configs with errors that name the file. Does not own sockets: callers
//! read ciphertext into a buffer, hand it to `TlsIo::feed`, and write what `TlsIo::seal` and
//! `TlsIo::take_pending` give them (`server::downstream`, `integration::pool`,
//! `net::io_compat`).
//!
//! Configs are built on the control thread when a config loads (start, reload); a core only
//! clones an `Arc` per connection.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ahash::AHashMap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Connection, RootCertStore, ServerConfig};

use crate::config::{ClientAuth, TlsListenerConfig};
use crate::limits::TLS_SESSION_CACHE_MAX;

use super::x509::ClientCert;

/// ALPN protocol ids, in our order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ring provider with our cipher list: AEAD suites with forward secrecy only (the TLS 1.3
/// suites, and ECDHE with AES-GCM or ChaCha20-Poly1305 for 1.2), AES-128 first (fastest with
/// AES-NI; the client's preference is ignored).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite as cs;
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites = vec![
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(p)
        })
        .clone()
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The session-ticket key: one per process, so that a ticket issued on one core resumes on any
/// other, and across reloads. rustls rotates it every 6 hours.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    static TICKETER: OnceLock<Result<Arc<dyn rustls::server::ProducesTickets>, String>> =
        OnceLock::new();
    TICKETER
        .get_or_init(|| {
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))
        })
        .clone()
}

/// Session-id resumption (TLS 1.2 clients without tickets), shared like the ticket key. Locked
/// only during handshakes, never per request.
fn session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn rustls::server::StoresServerSessions>> = OnceLock::new();
    CACHE
        .get_or_init(|| rustls::server::ServerSessionMemoryCache::new(TLS_SESSION_CACHE_MAX))
        .clone()
}

/// The rustls config of one `[[server.tls]]` listener. Errors name the file and the problem.
pub fn server_config(l: &TlsListenerConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let mut resolver = SniResolver::default();
    for c in &l.certs {
        let key = Arc::new(certified_key(&c.cert, &c.key, &provider)?);
        resolver.add(&c.domains, key);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = match (&l.client_ca, l.client_auth) {
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let roots = load_roots(ca, "client_ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if l.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.ignore_client_order = true;
    config.session_storage = session_cache();
    config.ticketer = ticketer()?;
    Ok(Arc::new(config))
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = load_certs(cert, "cert")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "key {}: {} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            key.display(),
            pem_error(e)
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("key {}: unusable private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(format!(
                "key {} does not belong to certificate {}",
                key.display(),
                cert.display()
            ))
        }
        Err(e) => Err(format!("cert {}: {e}", cert.display())),
    }
}

/// Every certificate in a PEM file; at least one.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path, what)? {
        roots
            .add(c)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => format!("cannot read: {e}"),
        E::NoItemsFound => "nothing of the expected kind in the file".to_string(),
        e => format!("malformed PEM: {e:?}"),
    }
}

/// Picks a listener's certificate by the SNI name: an exact domain, else a `*.` wildcard for
/// the name's parent (one label only, as browsers match), else the first certificate.
#[derive(Debug, Default)]
struct SniResolver {
    exact: AHashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: AHashMap<Box<str>, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn add(&mut self, domains: &[String], key: Arc<CertifiedKey>) {
        for d in domains {
            match d.strip_prefix("*.") {
                Some(parent) => self.wildcard.insert(parent.into(), key.clone()),
                None => self.exact.insert(d.as_str().into(), key.clone()),
            };
        }
        self.default.get_or_insert(key);
    }

    fn pick(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let found = sni.and_then(|name| {
            let mut buf = [0u8; 256];
            let lower = lowercase(name, &mut buf)?;
            self.exact.get(lower).or_else(|| {
                let (_, parent) = lower.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref())
    }
}

/// `name` lower-cased into `buf`, without allocating; `None` if it does not fit.
fn lowercase<'b>(name: &str, buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let b = buf.get_mut(..name.len())?;
    b.copy_from_slice(name.as_bytes());
    b.make_ascii_lowercase();
    std::str::from_utf8(b).ok()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name()).cloned()
    }
}

/// How to reach an `https://` backend (or an `h2` one).
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must carry: the URI's host.
    pub name: ServerName<'static>,
    /// Equal for equal (host, ca, protocol): pooled connections are shared only between
    /// targets with the same id. Never 0 (plain connections' id).
    pub id: u64,
}

/// The client config for a backend at `host` (as written in the URI, IPv6 in brackets),
/// trusting `ca` or else the system's roots, offering `h2` or `http/1.1` by ALPN.
pub fn backend_tls(host: &str, ca: Option<&Path>, h2: bool) -> Result<BackendTls, String> {
    let roots = match ca {
        Some(ca) => Arc::new(load_roots(ca, "ca")?),
        None => system_roots()?,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 { ALPN_H2 } else { ALPN_HTTP11 }.to_vec()];
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = ServerName::try_from(bare.to_string())
        .map_err(|e| format!("backend host {host}: not a valid TLS server name: {e}"))?;
    let id = {
        ahash::RandomState::with_seeds(1, 2, 3, 4)
            .hash_one((host, ca, h2))
            .max(1)
    };
    Ok(BackendTls {
        config: Arc::new(config),
        name,
        id,
    })
}

/// The operating system's trusted roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system root certificates found ({} error(s)); set ca = \"...pem\" on \
                     the integration",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// What one `feed` produced besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// The peer sent close_notify: no more plaintext will come.
    pub closed: bool,
}

/// One TLS connection (either side) driven over the caller's buffers.
#[derive(Debug)]
pub struct TlsIo {
    conn: Connection,
}

impl TlsIo {
    pub fn server(config: Arc<ServerConfig>) -> Result<TlsIo, rustls::Error> {
        let mut conn = rustls::ServerConnection::new(config)?;
        // Output is bounded by the callers (they write what `seal` gives them before sealing
        // more), so rustls need not refuse writes.
        conn.set_buffer_limit(None);
        Ok(TlsIo {
            conn: Connection::Server(conn),
        })
    }

    pub fn client(backend: &BackendTls) -> Result<TlsIo, rustls::Error> {
        let mut conn = rustls::ClientConnection::new(backend.config.clone(), backend.name.clone())?;
        conn.set_buffer_limit(None);
        Ok(TlsIo {
            conn: Connection::Client(conn),
        })
    }

    /// Takes received ciphertext and appends the plaintext it carried to `plain`. On error the
    /// alert for the peer is pending (`take_pending`) and the connection is unusable.
    pub fn feed(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>) -> Result<Fed, rustls::Error> {
        let mut closed = false;
        while !cipher.is_empty() {
            let n = self
                .conn
                .read_tls(&mut cipher)
                .map_err(|e| rustls::Error::General(format!("tls read: {e}")))?;
            let state = self.conn.process_new_packets()?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let at = plain.len();
                plain.resize(at + ready, 0);
                // Cannot come short: rustls said this many bytes are buffered.
                let got = self.conn.reader().read(&mut plain[at..]).unwrap_or(0);
                plain.truncate(at + got);
            }
            closed |= state.peer_has_closed();
            if n == 0 {
                break;
            }
        }
        Ok(Fed { closed })
    }

    /// Encrypts `plain` and appends the records, after any pending handshake bytes, to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if !plain.is_empty() {
            // Cannot fail: the buffer limit is off, so the writer takes everything.
            let _ = self.conn.writer().write_all(plain);
        }
        self.take_pending(out);
    }

    /// Appends whatever rustls has to send (handshake, alerts, tickets, sealed records).
    pub fn take_pending(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(out).unwrap_or(0) == 0 {
                break;
            }
        }
    }

    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Queues close_notify (sent by the next `take_pending`).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// The client and server agreed on HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        self.conn.alpn_protocol() == Some(ALPN_H2)
    }

    /// `"1.3"` or `"1.2"` (once the handshake is done), for metrics and logs.
    pub fn version(&self) -> &'static str {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "?",
        }
    }

    /// The verified client certificate, if the client sent one.
    pub fn client_cert(&self) -> Option<ClientCert> {
        let certs = self.conn.peer_certificates()?;
        Some(ClientCert::from_der(certs.first()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        let der = PrivateKeyDer::try_from(k.serialize_der()).unwrap();
        let signing = provider().key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing))
    }

    #[test]
    fn sni_prefers_exact_then_one_label_wildcard_then_the_first() {
        let (a, b, c) = (key_for("a"), key_for("b"), key_for("c"));
        let mut r = SniResolver::default();
        r.add(&["api.example.com".into()], a.clone());
        r.add(&["*.example.net".into(), "example.net".into()], b.clone());
        r.add(&["x.example.net".into()], c.clone());
        let pick = |n: Option<&str>| r.pick(n).unwrap().clone();
        assert!(Arc::ptr_eq(&pick(Some("api.example.com")), &a));
        assert!(Arc::ptr_eq(&pick(Some("API.Example.COM")), &a));
        assert!(Arc::ptr_eq(&pick(Some("foo.example.net")), &b));
        assert!(Arc::ptr_eq(&pick(Some("example.net")), &b));
        assert!(
            Arc::ptr_eq(&pick(Some("x.example.net")), &c),
            "exact beats wildcard"
        );
        assert!(
            Arc::ptr_eq(&pick(Some("a.b.example.net")), &a),
            "one label only"
        );
        assert!(Arc::ptr_eq(&pick(Some("other.org")), &a));
        assert!(Arc::ptr_eq(&pick(None), &a));
    }

    #[test]
    fn broken_files_are_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k1 = rcgen::KeyPair::generate().unwrap();
        let k2 = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".to_string()])
            .unwrap()
            .self_signed(&k1)
            .unwrap();
        let (c, good, other, junk) = (
            dir.join("c.pem"),
            dir.join("k1.pem"),
            dir.join("k2.pem"),
            dir.join("junk.pem"),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&good, k1.serialize_pem()).unwrap();
        std::fs::write(&other, k2.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        let p = provider();
        assert!(certified_key(&c, &good, &p).is_ok());
        let e = certified_key(&c, &other, &p).unwrap_err();
        assert!(
            e.contains("does not belong to certificate") && e.contains("k2.pem"),
            "{e}"
        );
        let e = certified_key(&junk, &good, &p).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = certified_key(&c, &junk, &p).unwrap_err();
        assert!(e.contains("junk.pem"), "{e}");
        let e = certified_key(&dir.join("missing.pem"), &good, &p).unwrap_err();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn handshake_over_buffers_carries_data_both_ways() {
        let dir = std::env::temp_dir().join(format!("tollgate-tls-hs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), k.serialize_pem()).unwrap();
        let listener = TlsListenerConfig {
            listen: vec![],
            certs: vec![crate::config::CertConfig {
                cert: dir.join("c.pem"),
                key: dir.join("k.pem"),
                domains: vec![],
            }],
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        let mut server = TlsIo::server(server_config(&listener).unwrap()).unwrap();
        let backend = backend_tls("localhost", Some(&dir.join("c.pem")), true).unwrap();
        let mut client = TlsIo::client(&backend).unwrap();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        client.seal(b"ping", &mut to_server);
        for _ in 0..10 {
            server
                .feed(&std::mem::take(&mut to_server), &mut at_server)
                .unwrap();
            server.take_pending(&mut to_client);
            client
                .feed(&std::mem::take(&mut to_client), &mut at_client)
                .unwrap();
            client.take_pending(&mut to_server);
        }
        assert!(!server.is_handshaking() && server.is_h2());
        assert_eq!(server.version(), "1.3");
        assert_eq!(at_server, b"ping");
        server.seal(b"pong", &mut to_client);
        server.close_notify();
        server.take_pending(&mut to_client);
        let fed = client.feed(&to_client, &mut at_client).unwrap();
        assert_eq!(at_client, b"pong");
        assert!(fed.closed);
    }
}

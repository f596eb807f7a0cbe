//! A new client connection, up to the protocol driver that serves it:
//!
//! ```text
//! plain listener:  first bytes → "PRI * HTTP/2.0..." (h2c prior knowledge) → http2
//!                                anything else                              → http1 (conn)
//! TLS listener:    handshake (header_read_timeout_ms) → ALPN "h2" → http2, else http1
//! ```
//!
//! Owns the per-connection facts the request path may use (`ConnInfo`: peer, TLS version,
//! client certificate) and the connection counters by protocol. Does not parse requests.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use compio::net::TcpStream;

use crate::config::ServerConfig;
use crate::net::tls::TlsIo;
use crate::net::x509::ClientCert;

use super::core::CoreCtx;
use super::downstream::Downstream;

/// What a listening socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// HTTP/1.1, or HTTP/2 by prior knowledge.
    Plain,
    /// TLS with the config of `server.tls[i]` (the snapshot's `tls[i]`).
    Tls(usize),
}

/// Facts about the connection a request came on.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
    /// `"1.2"` or `"1.3"` on a TLS connection.
    pub tls: Option<&'static str>,
    /// The client's verified certificate (listeners with `client_ca`).
    pub client_cert: Option<Rc<ClientCert>>,
}

impl ConnInfo {
    /// `" (client <subject>)"` when the client showed a verified certificate, else empty: the
    /// tail of a log line about one of its requests.
    pub fn client_str(&self) -> String {
        self.client_cert
            .as_ref()
            .map_or_else(String::new, |c| format!(" (client {})", c.subject))
    }
}

/// Every address to listen on, plain ones first, with what each speaks.
pub fn listener_plan(server: &ServerConfig) -> (Vec<SocketAddr>, Vec<ListenerKind>) {
    let mut addrs = server.listen.clone();
    let mut kinds = vec![ListenerKind::Plain; addrs.len()];
    for (i, t) in server.tls.iter().enumerate() {
        addrs.extend_from_slice(&t.listen);
        kinds.extend(std::iter::repeat_n(ListenerKind::Tls(i), t.listen.len()));
    }
    (addrs, kinds)
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one accepted connection to its end.
pub async fn serve(ctx: Rc<CoreCtx>, stream: TcpStream, kind: ListenerKind) {
    let _guard = ctx.conn_guard();
    let peer = stream.peer_addr().ok();
    match kind {
        ListenerKind::Plain => plain(ctx, stream, peer).await,
        // Boxed: the TLS and HTTP/2 state machines are large, and every connection's task is as
        // big as its largest state; plain HTTP/1.1 connections should not pay for them.
        ListenerKind::Tls(i) => Box::pin(tls(ctx, stream, peer, i)).await,
    }
}

async fn plain(ctx: Rc<CoreCtx>, stream: TcpStream, peer: Option<SocketAddr>) {
    let (idle_ms, head_ms, head_max) = {
        let snap = ctx.snapshot();
        let s = snap.snap.server();
        (
            s.keepalive_idle_timeout_ms,
            s.header_read_timeout_ms,
            s.header_bytes_max,
        )
    };
    let mut down = Downstream::new(stream);
    // The first read is the one the HTTP/1.1 driver would do; only a client whose first bytes
    // could be the h2 preface costs more reads.
    let mut deadline = ctx.timers.now() + Duration::from_millis(idle_ms);
    let h2 = loop {
        if down
            .fill_head(&ctx.timers, deadline, false, head_max)
            .await
            .is_err()
        {
            return;
        }
        let a = down.avail();
        let n = a.len().min(H2_PREFACE.len());
        if a[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
        deadline = ctx.timers.now() + Duration::from_millis(head_ms);
    };
    let info = ConnInfo {
        peer,
        tls: None,
        client_cert: None,
    };
    ctx.metrics.borrow_mut().connection_protocol(h2, None);
    if h2 {
        Box::pin(crate::http2::serve(ctx, down, info)).await;
    } else {
        super::conn::serve(ctx, down, info).await;
    }
}

async fn tls(ctx: Rc<CoreCtx>, stream: TcpStream, peer: Option<SocketAddr>, i: usize) {
    let (config, head_ms) = {
        let snap = ctx.snapshot();
        let head_ms = snap.snap.server().header_read_timeout_ms;
        (snap.snap.tls.get(i).cloned(), head_ms)
    };
    let Some(io) = config.and_then(|c| TlsIo::server(c).ok()) else {
        return;
    };
    let mut down = Downstream::tls(stream, io);
    let deadline = ctx.timers.now() + Duration::from_millis(head_ms);
    if let Err(e) = down.handshake(&ctx.timers, deadline).await {
        ctx.metrics.borrow_mut().tls_handshake_failed();
        crate::log_debug!(
            "tls",
            "{}: handshake failed: {e:?}",
            peer.map_or_else(|| "?".to_string(), |p| p.to_string())
        );
        return;
    }
    let Some(session) = down.tls_session() else {
        return;
    };
    let h2 = session.is_h2();
    let info = ConnInfo {
        peer,
        tls: Some(session.version()),
        client_cert: session.client_cert().map(Rc::new),
    };
    ctx.metrics.borrow_mut().connection_protocol(h2, info.tls);
    if h2 {
        Box::pin(crate::http2::serve(ctx, down, info)).await;
    } else {
        super::conn::serve(ctx, down, info).await;
    }
}

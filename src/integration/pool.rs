//! Per-core keep-alive pools of backend connections, keyed by backend address.
//!
//! Core-local (no locks). A connection goes back to the pool only after a response was read to
//! its end with nothing left over; idle connections older than `upstream_idle_timeout_ms` are
//! dropped by the core's once-a-second sweep, and at most `upstream_idle_per_host_max` are
//! kept per backend.
//!
//! An `https://` backend's connections carry their TLS session (`UpstreamConn::read_append`
//! and `write_all` encrypt and decrypt); they are pooled apart from plain ones to the same
//! address, and apart from TLS connections made with other settings (`tls_id`).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use compio::buf::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use crate::config::ServerConfig;
use crate::limits::{READ_BUF_BYTES, TLS_READ_BYTES};
use crate::net::tls::{BackendTls, TlsIo};
use crate::runtime::Timers;
use crate::server::downstream::{ReadError, read_append};

/// A backend connection with its read buffer (kept with it so reuse costs no allocation).
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Plaintext received and not consumed. Empty whenever the connection is in the pool.
    pub buf: Vec<u8>,
    /// Requests this connection has carried; 0 for a fresh one.
    pub uses: u64,
    /// 0 for plain connections; else `BackendTls::id` of the settings it was made with.
    pub tls_id: u64,
    tls: Option<Box<UpstreamTls>>,
}

#[derive(Debug)]
struct UpstreamTls {
    io: TlsIo,
    cin: Vec<u8>,
    cout: Vec<u8>,
}

impl UpstreamConn {
    pub fn new(stream: TcpStream, addr: SocketAddr) -> Self {
        UpstreamConn {
            stream,
            addr,
            buf: Vec::with_capacity(READ_BUF_BYTES),
            uses: 0,
            tls_id: 0,
            tls: None,
        }
    }

    /// A fresh connection with its TLS handshake done (the backend's certificate verified for
    /// `backend.name`) before `deadline`.
    pub async fn connect_tls(
        stream: TcpStream,
        addr: SocketAddr,
        backend: &BackendTls,
        timers: &Timers,
        deadline: Instant,
    ) -> Result<Self, String> {
        let io = TlsIo::client(backend).map_err(|e| format!("tls: {e}"))?;
        let mut c = UpstreamConn::new(stream, addr);
        c.tls_id = backend.id;
        c.tls = Some(Box::new(UpstreamTls {
            io,
            cin: Vec::new(),
            cout: Vec::new(),
        }));
        loop {
            let BufResult(res, _) = c.write_all(timers, Vec::new(), deadline).await;
            res.map_err(|e| format!("tls handshake: {e}"))?;
            if !c.tls.as_ref().is_some_and(|t| t.io.is_handshaking()) {
                return Ok(c);
            }
            match c.read_tls_once(timers, deadline).await {
                Ok(_) => {}
                Err(ReadError::Timeout) => return Err("tls handshake: timed out".into()),
                Err(ReadError::Eof) => return Err("tls handshake: closed by the backend".into()),
                Err(ReadError::Io(e)) => return Err(format!("tls handshake: {e}")),
            }
        }
    }

    /// The backend agreed on HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.io.is_h2())
    }

    /// Takes the connection apart (for the HTTP/2 client): socket, TLS session, buffered input.
    pub fn into_parts(self) -> (TcpStream, Option<TlsIo>, Vec<u8>) {
        (self.stream, self.tls.map(|t| t.io), self.buf)
    }

    /// Reads more of the backend's bytes (decrypted) onto the end of `buf`; never 0 bytes
    /// (end of stream is `Eof`). The caller reserves room in `buf` first.
    pub async fn read_append(
        &mut self,
        timers: &Timers,
        deadline: Instant,
    ) -> Result<usize, ReadError> {
        if self.tls.is_none() {
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = read_append(timers, &self.stream, buf, deadline).await;
            self.buf = buf;
            return res;
        }
        loop {
            let n = self.read_tls_once(timers, deadline).await?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    async fn read_tls_once(
        &mut self,
        timers: &Timers,
        deadline: Instant,
    ) -> Result<usize, ReadError> {
        let Some(t) = self.tls.as_deref_mut() else {
            return Ok(0);
        };
        let mut cin = std::mem::take(&mut t.cin);
        cin.clear();
        cin.reserve(TLS_READ_BYTES);
        let (res, cin) = read_append(timers, &self.stream, cin, deadline).await;
        t.cin = cin;
        res?;
        let before = self.buf.len();
        match t.io.feed(&t.cin, &mut self.buf) {
            Ok(fed) if fed.closed && self.buf.len() == before => Err(ReadError::Eof),
            Ok(_) => Ok(self.buf.len() - before),
            Err(e) => Err(ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }

    /// Writes all of `buf` (sealed first on a TLS connection, with anything else TLS has to
    /// send), before `deadline`. Gives `buf` back.
    pub async fn write_all(
        &mut self,
        timers: &Timers,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> BufResult<(), Vec<u8>> {
        let Some(t) = self.tls.as_deref_mut() else {
            if buf.is_empty() {
                return BufResult(Ok(()), buf);
            }
            return write_by(timers, &self.stream, buf, deadline).await;
        };
        t.io.seal(&buf, &mut t.cout);
        if t.cout.is_empty() {
            return BufResult(Ok(()), buf);
        }
        let cout = std::mem::take(&mut t.cout);
        let BufResult(res, mut cout) = write_by(timers, &self.stream, cout, deadline).await;
        cout.clear();
        t.cout = cout;
        BufResult(res, buf)
    }
}

async fn write_by(
    timers: &Timers,
    stream: &TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
) -> BufResult<(), Vec<u8>> {
    let mut w = stream;
    match timers.timeout_at(deadline, w.write_all(buf)).await {
        Ok(r) => r,
        Err(_) => BufResult(
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            Vec::new(),
        ),
    }
}

/// Idle time after which a pooled connection is checked before reuse.
const CHECK_AFTER: Duration = Duration::from_secs(1);

/// Whether the backend has neither closed nor sent anything unexpected on an idle connection.
fn still_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv on a valid, open fd into a 1-byte stack buffer we own; MSG_PEEK|MSG_DONTWAIT
    // neither consumes data nor blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // -1 with EAGAIN: nothing to read, still open. 0: closed. >0: unsolicited bytes (unusable).
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Connections are interchangeable only with the same address and the same TLS settings.
type PoolKey = (SocketAddr, u64);

#[derive(Debug)]
pub struct UpstreamPool {
    idle: AHashMap<PoolKey, Vec<(UpstreamConn, Instant)>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    pub fn new(server: &ServerConfig) -> Self {
        UpstreamPool {
            idle: AHashMap::new(),
            max_idle_per_host: server.upstream_idle_per_host_max,
            idle_timeout: Duration::from_millis(server.upstream_idle_timeout_ms),
        }
    }

    /// Applies new limits from a reloaded config; idle connections stay.
    pub fn reconfigure(&mut self, server: &ServerConfig) {
        self.max_idle_per_host = server.upstream_idle_per_host_max;
        self.idle_timeout = Duration::from_millis(server.upstream_idle_timeout_ms);
    }

    /// The most recently used idle connection to `addr` (made with TLS settings `tls_id`, 0:
    /// plain) that has not expired and, if it sat idle for a while, that the backend has not
    /// closed meanwhile.
    pub fn take(&mut self, addr: SocketAddr, tls_id: u64, now: Instant) -> Option<UpstreamConn> {
        let list = self.idle.get_mut(&(addr, tls_id))?;
        while let Some((conn, since)) = list.pop() {
            let idle = now.duration_since(since);
            if idle >= self.idle_timeout {
                continue;
            }
            // Backends close idle keep-alive connections on their own schedule (5 s is common).
            // A connection that idled past CHECK_AFTER gets one non-blocking peek (a syscall, but
            // never on a busy connection); a closed one would cost a non-idempotent request a 502.
            if idle >= CHECK_AFTER && !still_open(&conn.stream) {
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Returns a connection whose last response was fully read.
    pub fn put(&mut self, mut conn: UpstreamConn, now: Instant) {
        if self.max_idle_per_host == 0 {
            return;
        }
        conn.buf.clear();
        let list = self.idle.entry((conn.addr, conn.tls_id)).or_default();
        if list.len() >= self.max_idle_per_host {
            // Drop the oldest: the most recent ones are the least likely to be closed by the backend.
            // More than one when a reload lowered the cap below what is idle.
            list.drain(..=list.len() - self.max_idle_per_host);
        }
        list.push((conn, now));
    }

    /// Drops expired idle connections.
    pub fn sweep(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.idle.retain(|_, list| {
            list.retain(|(_, since)| now.duration_since(*since) < timeout);
            !list.is_empty()
        });
    }

    /// Idle plain connections held for `addr` (for tests and metrics).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.get(&(addr, 0)).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};

    /// A `[server]` section with these pool limits, through the config parser (so the keys are
    /// the ones users write).
    fn server(idle_max: usize, idle_timeout_ms: u64) -> ServerConfig {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nupstream_idle_per_host_max = {idle_max}\n\
             upstream_idle_timeout_ms = {idle_timeout_ms}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[api]]\nname = \"a\"\n[[api.route]]\nkey = \"GET /\"\n\
             integration = {{ type = \"mock\" }}\n"
        );
        crate::config::parse(&text).expect("valid config").server
    }

    /// A backend on port 0 and `n` connections to it, tagged 1..=n in `uses`; the backend's ends
    /// are returned too, so that the test decides when they close.
    fn connections(n: u64) -> (SocketAddr, Vec<UpstreamConn>, Vec<StdStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut conns = Vec::new();
        let mut peers = Vec::new();
        for tag in 1..=n {
            let std = StdStream::connect(addr).expect("connect");
            peers.push(listener.accept().expect("accept").0);
            let mut c = UpstreamConn::new(TcpStream::from_std(std).expect("compio stream"), addr);
            c.uses = tag;
            conns.push(c);
        }
        (addr, conns, peers)
    }

    /// Runs `f` on a compio runtime (compio sockets need one to exist and to be dropped).
    fn on_runtime(f: impl FnOnce()) {
        let rt = crate::runtime::build_runtime(None).expect("runtime");
        rt.block_on(async move { f() });
    }

    fn take_tag(pool: &mut UpstreamPool, addr: SocketAddr, now: Instant) -> Option<u64> {
        pool.take(addr, 0, now).map(|c| c.uses)
    }

    #[test]
    fn cap_keeps_the_newest_and_drops_the_oldest() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(2, 60_000));
            let (addr, conns, _peers) = connections(3);
            let t0 = Instant::now();
            for (i, c) in conns.into_iter().enumerate() {
                pool.put(c, t0 + Duration::from_millis(i as u64));
            }
            assert_eq!(pool.idle_count(addr), 2);
            let now = t0 + Duration::from_millis(10);
            // Most recently returned first; 1, the oldest, was dropped when 3 came back.
            assert_eq!(take_tag(&mut pool, addr, now), Some(3));
            assert_eq!(take_tag(&mut pool, addr, now), Some(2));
            assert_eq!(take_tag(&mut pool, addr, now), None);
        });
    }

    #[test]
    fn cap_of_zero_pools_nothing() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(0, 60_000));
            let (addr, conns, _peers) = connections(2);
            let t0 = Instant::now();
            for c in conns {
                pool.put(c, t0);
            }
            assert_eq!(pool.idle_count(addr), 0);
            assert_eq!(take_tag(&mut pool, addr, t0), None);
        });
    }

    #[test]
    fn a_lowered_cap_applies_to_the_next_put() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(3, 60_000));
            let (addr, conns, _peers) = connections(4);
            let t0 = Instant::now();
            let mut conns = conns.into_iter();
            for c in conns.by_ref().take(3) {
                pool.put(c, t0);
            }
            pool.reconfigure(&server(1, 60_000));
            // Idle connections stay through a reload...
            assert_eq!(pool.idle_count(addr), 3);
            // ...until the next put, which brings the list down to the new cap, newest kept.
            pool.put(conns.next().expect("a fourth"), t0);
            assert_eq!(pool.idle_count(addr), 1);
            assert_eq!(take_tag(&mut pool, addr, t0), Some(4));
        });
    }

    #[test]
    fn take_skips_expired_connections() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(8, 1_000));
            let (addr, conns, _peers) = connections(2);
            let t0 = Instant::now();
            let mut conns = conns.into_iter();
            pool.put(conns.next().expect("1"), t0);
            pool.put(conns.next().expect("2"), t0 + Duration::from_millis(900));
            // At t0+1.2 s: 2 has idled 300 ms (kept), 1 has idled 1.2 s (past the timeout).
            let now = t0 + Duration::from_millis(1_200);
            assert_eq!(take_tag(&mut pool, addr, now), Some(2));
            assert_eq!(take_tag(&mut pool, addr, now), None);
            assert_eq!(pool.idle_count(addr), 0, "the expired one was dropped");
        });
    }

    #[test]
    fn a_connection_idle_at_exactly_the_timeout_has_expired() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(8, 500));
            let (addr, conns, _peers) = connections(1);
            let t0 = Instant::now();
            pool.put(conns.into_iter().next().expect("1"), t0);
            assert_eq!(
                take_tag(&mut pool, addr, t0 + Duration::from_millis(500)),
                None
            );
        });
    }

    #[test]
    fn sweep_drops_only_expired_connections() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(8, 1_000));
            let (addr, conns, _peers) = connections(3);
            let t0 = Instant::now();
            for (i, c) in conns.into_iter().enumerate() {
                pool.put(c, t0 + Duration::from_millis(400 * i as u64));
            }
            pool.sweep(t0 + Duration::from_millis(999));
            assert_eq!(pool.idle_count(addr), 3);
            // 1 (put at 0) and 2 (put at 400) have idled ≥ 1 s at 1.4 s; 3 (put at 800) has not.
            pool.sweep(t0 + Duration::from_millis(1_400));
            assert_eq!(pool.idle_count(addr), 1);
            assert_eq!(
                take_tag(&mut pool, addr, t0 + Duration::from_millis(1_400)),
                Some(3)
            );
            pool.sweep(t0 + Duration::from_secs(10));
            assert_eq!(pool.idle_count(addr), 0);
        });
    }

    #[test]
    fn a_long_idle_connection_the_backend_closed_is_not_handed_out() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(8, 60_000));
            let (addr, conns, mut peers) = connections(2);
            let t0 = Instant::now();
            for c in conns {
                pool.put(c, t0);
            }
            // The backend closes 2 (the one `take` would give first); 1 stays open.
            drop(peers.remove(1));
            // Make sure the FIN has arrived before the peek (loopback: immediate, but not ordered
            // with our own syscalls by any guarantee).
            std::thread::sleep(Duration::from_millis(20));
            let later = t0 + CHECK_AFTER + Duration::from_millis(1);
            assert_eq!(take_tag(&mut pool, addr, later), Some(1));
            assert_eq!(take_tag(&mut pool, addr, later), None);
        });
    }

    #[test]
    fn pools_are_per_address_and_per_tls_settings() {
        on_runtime(|| {
            let mut pool = UpstreamPool::new(&server(8, 60_000));
            let (addr, conns, _peers) = connections(1);
            let (other, _, _) = connections(0);
            let t0 = Instant::now();
            pool.put(conns.into_iter().next().expect("1"), t0);
            assert!(pool.take(other, 0, t0).is_none());
            assert!(pool.take(addr, 7, t0).is_none(), "a TLS pool is apart");
            assert_eq!(take_tag(&mut pool, addr, t0), Some(1));
        });
    }
}

//! Per-core keep-alive pools of backend connections, keyed by backend address.
//!
//! Core-local (no locks). A connection goes back to the pool only after a response was read to
//! its end with nothing left over; idle connections older than `upstream_idle_timeout_ms` are
//! dropped by the core's once-a-second sweep, and at most `upstream_idle_per_host_max` are
//! kept per backend.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use compio::net::TcpStream;

use crate::config::ServerConfig;
use crate::limits::READ_BUF_BYTES;

/// A backend connection with its read buffer (kept with it so reuse costs no allocation).
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Empty whenever the connection is in the pool.
    pub buf: Vec<u8>,
    /// Requests this connection has carried; 0 for a fresh one.
    pub uses: u64,
}

impl UpstreamConn {
    pub fn new(stream: TcpStream, addr: SocketAddr) -> Self {
        UpstreamConn {
            stream,
            addr,
            buf: Vec::with_capacity(READ_BUF_BYTES),
            uses: 0,
        }
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

#[derive(Debug)]
pub struct UpstreamPool {
    idle: AHashMap<SocketAddr, Vec<(UpstreamConn, Instant)>>,
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

    /// The most recently used idle connection to `addr` that has not expired and, if it sat
    /// idle for a while, that the backend has not closed meanwhile.
    pub fn take(&mut self, addr: SocketAddr, now: Instant) -> Option<UpstreamConn> {
        let list = self.idle.get_mut(&addr)?;
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
        let list = self.idle.entry(conn.addr).or_default();
        if list.len() >= self.max_idle_per_host {
            // Drop the oldest: the most recent ones are the least likely to be closed by the backend.
            list.remove(0);
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

    /// Idle connections held for `addr` (for tests and metrics).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, Vec::len)
    }
}

//! The client side of a connection: the socket, its read buffer and its write buffer.
//!
//! The read buffer holds unconsumed bytes in `rbuf[start..]`; heads are parsed in place there
//! and bodies decoded in place. The write buffer `out` collects response bytes; pipelined
//! responses accumulate in it and go out in one write.
//!
//! Memory: an idle keep-alive connection keeps a read buffer of `READ_BUF_IDLE_BYTES` (its
//! pending read needs one) and an output buffer of at most `OUT_BUF_IDLE_BYTES`. Heads grow the
//! read buffer on demand up to `header_bytes_max`; bodies read in `BODY_READ_BYTES` chunks;
//! `relax` shrinks both back before the connection waits for its next request.
//!
//! TLS (`Downstream::tls`): `rbuf` and `out` stay plaintext, so the HTTP/1.1 driver does not
//! know about it. Reads take ciphertext into `cin` and decrypt into `rbuf`; `flush` seals `out`
//! into `cout` and writes that. The handshake runs before the first request (`handshake`).

use std::io;
use std::time::Instant;

use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

use crate::limits::{BODY_READ_BYTES, OUT_BUF_IDLE_BYTES, READ_BUF_IDLE_BYTES, TLS_READ_BYTES};
use crate::net::tls::TlsIo;
use crate::runtime::Timers;

/// Why a read did not deliver bytes.
/// How long a lingering close keeps reading.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How much a lingering close reads before giving up.
const LINGER_BYTES_MAX: usize = 1 << 20;

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed its side.
    Eof,
    /// The deadline passed first.
    Timeout,
    Io(io::Error),
}

#[derive(Debug)]
pub struct Downstream {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    start: usize,
    pub out: Vec<u8>,
    tls: Option<Box<TlsLayer>>,
}

/// A TLS session and its ciphertext buffers (boxed: plain connections pay one pointer).
#[derive(Debug)]
struct TlsLayer {
    io: TlsIo,
    /// Ciphertext as read; emptied by every read.
    cin: Vec<u8>,
    /// Ciphertext to write; emptied by every flush.
    cout: Vec<u8>,
}

impl Downstream {
    pub fn new(stream: TcpStream) -> Self {
        Downstream {
            stream,
            rbuf: Vec::with_capacity(READ_BUF_IDLE_BYTES),
            start: 0,
            out: Vec::new(),
            tls: None,
        }
    }

    /// A connection that speaks TLS through `io` (its handshake not done yet: `handshake`).
    pub fn tls(stream: TcpStream, io: TlsIo) -> Self {
        let mut d = Downstream::new(stream);
        d.tls = Some(Box::new(TlsLayer {
            io,
            cin: Vec::new(),
            cout: Vec::new(),
        }));
        d
    }

    /// Takes the TLS session out, for a protocol that drives the socket itself from now on
    /// (a WebSocket): it must decrypt what it reads and seal what it writes with it.
    pub fn take_tls(&mut self) -> Option<TlsIo> {
        self.tls.take().map(|t| t.io)
    }

    /// The TLS session, for connections that have one.
    pub fn tls_session(&self) -> Option<&TlsIo> {
        self.tls.as_deref().map(|t| &t.io)
    }

    /// Runs the TLS handshake to its end (before `deadline`). Plaintext that arrived with the
    /// client's last flight is in `avail()` afterwards. A plain connection returns at once.
    pub async fn handshake(&mut self, timers: &Timers, deadline: Instant) -> Result<(), ReadError> {
        loop {
            self.flush().await.map_err(ReadError::Io)?;
            match &self.tls {
                Some(t) if t.io.is_handshaking() => {}
                _ => return Ok(()),
            }
            self.read_tls_once(timers, deadline, false).await?;
        }
    }

    /// On a TLS connection, queues close_notify (sent by the next `flush`), so that the client
    /// knows the response ended on purpose; nothing on a plain one.
    pub fn close_notify(&mut self) {
        if let Some(t) = self.tls.as_deref_mut() {
            // After what is pending, not before it.
            t.io.seal(&self.out, &mut t.cout);
            self.out.clear();
            t.io.close_notify();
        }
    }

    /// Takes the connection apart for another protocol driver (HTTP/2): the socket, its TLS
    /// session, and the plaintext received but not consumed. Pending output is lost: flush first.
    pub fn into_parts(mut self) -> (TcpStream, Option<TlsIo>, Vec<u8>) {
        compact_front(&mut self.rbuf, &mut self.start);
        (self.stream, self.tls.map(|t| t.io), self.rbuf)
    }

    /// Bytes received and not yet consumed.
    pub fn avail(&self) -> &[u8] {
        &self.rbuf[self.start..]
    }

    /// The unconsumed input and the output buffer, borrowed together (a head parsed from the
    /// first is answered into the second).
    pub fn parts(&mut self) -> (&[u8], &mut Vec<u8>) {
        (&self.rbuf[self.start..], &mut self.out)
    }

    /// Marks `n` bytes of `avail()` as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.rbuf.len());
        if self.start >= self.rbuf.len() {
            self.start = 0;
            self.rbuf.clear();
        }
    }

    /// Reads more of a request head after `avail()`, growing the buffer (when full) up to
    /// `head_max` bytes. `idle` marks a wait for a new request (a drain ends it: `Timeout`).
    /// Returns the number of new bytes (never 0: end of stream is `Eof`).
    pub async fn fill_head(
        &mut self,
        timers: &Timers,
        deadline: Instant,
        idle: bool,
        head_max: usize,
    ) -> Result<usize, ReadError> {
        compact_front(&mut self.rbuf, &mut self.start);
        if self.rbuf.len() == self.rbuf.capacity() {
            let want = (self.rbuf.capacity() * 2)
                .clamp(READ_BUF_IDLE_BYTES, head_max.max(READ_BUF_IDLE_BYTES));
            self.rbuf
                .reserve_exact(want.saturating_sub(self.rbuf.len()).max(1));
        }
        self.read(timers, deadline, idle).await
    }

    /// Reads more of a body after `avail()`, in chunks of up to `BODY_READ_BYTES`.
    pub async fn fill_body(
        &mut self,
        timers: &Timers,
        deadline: Instant,
    ) -> Result<usize, ReadError> {
        compact_front(&mut self.rbuf, &mut self.start);
        if self.rbuf.capacity() - self.rbuf.len() < BODY_READ_BYTES / 2 {
            self.rbuf.reserve_exact(BODY_READ_BYTES);
        }
        self.read(timers, deadline, false).await
    }

    async fn read(
        &mut self,
        timers: &Timers,
        deadline: Instant,
        idle: bool,
    ) -> Result<usize, ReadError> {
        if self.tls.is_some() {
            loop {
                let n = self.read_tls_once(timers, deadline, idle).await?;
                if n > 0 {
                    return Ok(n);
                }
            }
        }
        let buf = std::mem::take(&mut self.rbuf);
        let (res, buf) = read_append_with(timers, &self.stream, buf, deadline, idle).await;
        self.rbuf = buf;
        res
    }

    /// One ciphertext read, decrypted into `rbuf`: the plaintext bytes it carried (0 when it
    /// held only handshake data or part of a record).
    async fn read_tls_once(
        &mut self,
        timers: &Timers,
        deadline: Instant,
        idle: bool,
    ) -> Result<usize, ReadError> {
        let Downstream {
            stream, rbuf, tls, ..
        } = self;
        let Some(t) = tls.as_deref_mut() else {
            return Ok(0);
        };
        let mut cin = std::mem::take(&mut t.cin);
        cin.clear();
        cin.reserve(TLS_READ_BYTES);
        let (res, cin) = read_append_with(timers, stream, cin, deadline, idle).await;
        t.cin = cin;
        res?;
        let before = rbuf.len();
        match t.io.feed(&t.cin, rbuf) {
            Ok(fed) => {
                let got = rbuf.len() - before;
                if got == 0 && fed.closed {
                    return Err(ReadError::Eof);
                }
                Ok(got)
            }
            Err(e) => {
                // Tell the peer why (the alert), best effort, then give up on the connection.
                t.io.take_pending(&mut t.cout);
                let cout = std::mem::take(&mut t.cout);
                let _ = (&*stream).write_all(cout).await;
                Err(ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
            }
        }
    }

    /// Gives back memory before an idle wait: buffers grown for a big head or a body shrink to
    /// their idle sizes (only when empty, so nothing is lost).
    pub fn relax(&mut self) {
        if let Some(t) = self.tls.as_deref_mut() {
            t.cin = Vec::new();
            if t.cout.capacity() > OUT_BUF_IDLE_BYTES {
                t.cout = Vec::new();
            }
        }
        if self.start == self.rbuf.len() && self.rbuf.capacity() > READ_BUF_IDLE_BYTES {
            self.rbuf = Vec::with_capacity(READ_BUF_IDLE_BYTES);
            self.start = 0;
        }
        if self.out.is_empty() && self.out.capacity() > OUT_BUF_IDLE_BYTES {
            self.out = Vec::new();
        }
    }

    /// Closes after an answer that left request bytes unread: writes `out`, shuts down our
    /// sending side, then reads and discards what the client still sends for a short while.
    /// Closing with unread input would make the kernel send RST, and a client that is still
    /// sending could lose the response we just wrote (the "lingering close" of RFC 9112 §9.6).
    pub async fn linger_close(&mut self, timers: &Timers) {
        self.close_notify();
        if self.flush().await.is_err() {
            return;
        }
        let mut w = &self.stream;
        if w.shutdown().await.is_err() {
            return;
        }
        let until = timers.now() + LINGER;
        let mut discarded = 0usize;
        while discarded < LINGER_BYTES_MAX {
            self.rbuf.clear();
            self.start = 0;
            match self.fill_body(timers, until).await {
                Ok(n) => discarded += n,
                Err(_) => return,
            }
        }
    }

    /// Writes all of `out` and clears it.
    pub async fn flush(&mut self) -> io::Result<()> {
        if let Some(t) = self.tls.as_deref_mut() {
            if self.out.is_empty() && !t.io.wants_write() {
                return Ok(());
            }
            t.io.seal(&self.out, &mut t.cout);
            self.out.clear();
            let cout = std::mem::take(&mut t.cout);
            let BufResult(res, mut cout) = (&self.stream).write_all(cout).await;
            cout.clear();
            t.cout = cout;
            return res;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let BufResult(res, mut out) = (&self.stream).write_all(out).await;
        out.clear();
        self.out = out;
        res
    }
}

/// Moves unconsumed bytes to the front so the spare capacity is all at the end.
fn compact_front(buf: &mut Vec<u8>, start: &mut usize) {
    if *start > 0 {
        buf.copy_within(*start.., 0);
        buf.truncate(buf.len() - *start);
        *start = 0;
    }
}

/// One read appended to `buf`, with a deadline on the core's coarse clock.
pub async fn read_append(
    timers: &Timers,
    stream: &TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
) -> (Result<usize, ReadError>, Vec<u8>) {
    read_append_with(timers, stream, buf, deadline, false).await
}

async fn read_append_with(
    timers: &Timers,
    stream: &TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
    idle: bool,
) -> (Result<usize, ReadError>, Vec<u8>) {
    let mut reader = stream;
    let read = reader.append(buf);
    let res = if idle {
        timers.idle_timeout_at(deadline, read).await
    } else {
        timers.timeout_at(deadline, read).await
    };
    let BufResult(res, buf) = match res {
        Ok(r) => r,
        // The read op was cancelled with the future; its buffer is gone with it, so the
        // connection is unusable for reading. Callers close it.
        Err(_) => return (Err(ReadError::Timeout), Vec::new()),
    };
    let res = match res {
        Ok(0) => Err(ReadError::Eof),
        Ok(n) => Ok(n),
        Err(e) => Err(ReadError::Io(e)),
    };
    (res, buf)
}

/// Reads into a buffer that keeps its unconsumed bytes at the front (upstream buffers):
/// compacts `buf[consumed..]` to the front first.
pub fn compact(buf: &mut Vec<u8>, consumed: usize) {
    if consumed == 0 {
        return;
    }
    if consumed >= buf.len() {
        buf.clear();
    } else {
        buf.copy_within(consumed.., 0);
        buf.truncate(buf.len() - consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_front_keeps_the_unconsumed_tail() {
        let mut buf = b"consumed|rest".to_vec();
        let mut start = 9;
        compact_front(&mut buf, &mut start);
        assert_eq!((buf.as_slice(), start), (&b"rest"[..], 0));
    }

    #[test]
    fn compact_keeps_the_tail() {
        let mut b = b"abcdef".to_vec();
        compact(&mut b, 4);
        assert_eq!(b, b"ef");
        compact(&mut b, 2);
        assert!(b.is_empty());
    }
}

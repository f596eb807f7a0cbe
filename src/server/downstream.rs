//! The client side of a connection: the socket, its read buffer and its write buffer.
//!
//! The read buffer holds unconsumed bytes in `rbuf[start..]`; heads are parsed in place there
//! and bodies decoded in place. The write buffer `out` collects response bytes; pipelined
//! responses accumulate in it and go out in one write.

use std::io;
use std::time::Instant;

use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

use crate::limits::READ_BUF_BYTES;
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
}

impl Downstream {
    pub fn new(stream: TcpStream) -> Self {
        Downstream {
            stream,
            rbuf: Vec::with_capacity(READ_BUF_BYTES),
            start: 0,
            out: Vec::with_capacity(4096),
        }
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

    /// Reads more bytes after `avail()`, growing the buffer up to `max_buffered` unconsumed bytes.
    /// Returns the number of new bytes (never 0: end of stream is `Eof`).
    pub async fn fill(
        &mut self,
        timers: &Timers,
        deadline: Instant,
        max_buffered: usize,
    ) -> Result<usize, ReadError> {
        self.fill_with(timers, deadline, false, max_buffered).await
    }

    /// `fill`, where `idle` marks a wait for a new request (a drain ends it: `Timeout`).
    pub async fn fill_with(
        &mut self,
        timers: &Timers,
        deadline: Instant,
        idle: bool,
        max_buffered: usize,
    ) -> Result<usize, ReadError> {
        let mut buf = std::mem::take(&mut self.rbuf);
        make_room(&mut buf, &mut self.start, max_buffered);
        let res = read_append_with(timers, &self.stream, buf, deadline, idle).await;
        let (res, buf) = res;
        self.rbuf = buf;
        res
    }

    /// Closes after an answer that left request bytes unread: writes `out`, shuts down our
    /// sending side, then reads and discards what the client still sends for a short while.
    /// Closing with unread input would make the kernel send RST, and a client that is still
    /// sending could lose the response we just wrote (the "lingering close" of RFC 9112 §9.6).
    pub async fn linger_close(&mut self, timers: &Timers) {
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
            match self.fill(timers, until, READ_BUF_BYTES).await {
                Ok(n) => discarded += n,
                Err(_) => return,
            }
        }
    }

    /// Writes all of `out` and clears it.
    pub async fn flush(&mut self) -> io::Result<()> {
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

/// Compacts consumed bytes away and makes sure there is spare capacity to read into.
fn make_room(buf: &mut Vec<u8>, start: &mut usize, max_buffered: usize) {
    if *start > 0 && (*start == buf.len() || buf.capacity() - buf.len() < READ_BUF_BYTES / 4) {
        buf.copy_within(*start.., 0);
        buf.truncate(buf.len() - *start);
        *start = 0;
    }
    if buf.capacity() == buf.len() {
        let want = (buf.capacity() * 2).clamp(READ_BUF_BYTES, max_buffered.max(READ_BUF_BYTES));
        buf.reserve_exact(want.saturating_sub(buf.len()).max(1));
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
    fn make_room_compacts_and_grows() {
        let mut buf = Vec::with_capacity(READ_BUF_BYTES);
        buf.extend(std::iter::repeat_n(7u8, READ_BUF_BYTES));
        let mut start = READ_BUF_BYTES - 10;
        make_room(&mut buf, &mut start, 1 << 20);
        assert_eq!(start, 0);
        assert_eq!(buf.len(), 10);
        assert!(buf.capacity() > buf.len());

        let mut full = Vec::with_capacity(READ_BUF_BYTES);
        full.extend(std::iter::repeat_n(1u8, READ_BUF_BYTES));
        let mut s = 0;
        make_room(&mut full, &mut s, 4 * READ_BUF_BYTES);
        assert!(full.capacity() > READ_BUF_BYTES);
        assert_eq!(full.len(), READ_BUF_BYTES);
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

//! A compio socket (plain or TLS) behind tokio's poll-based `AsyncRead`/`AsyncWrite`, which is
//! what the h2 crate is written against.
//!
//! compio's I/O is completion-based: an operation owns its buffer until the kernel is done. So
//! each direction keeps at most one operation in flight as a boxed future that owns a buffer,
//! and the poll methods copy between those buffers and the caller's:
//!
//! - reads: one socket read at a time into an owned buffer; on TLS its ciphertext is decrypted
//!   into `input`, from which `poll_read` copies out.
//! - writes: `poll_write` appends to `out` (on TLS: to `plain`, sealed into `out` at the next
//!   flush, so that a batch of small frames becomes one TLS record, not one each) and returns
//!   at once while under `H2_WRITE_BUFFER_BYTES`; `poll_flush` moves `out` into one `write_all`
//!   at a time. h2 writes all the frames it has, then flushes: one socket write per batch.
//!
//! Owns no protocol: it moves bytes. No runtime beyond compio's is involved: the futures are
//! polled by h2's own polls on the core's task.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite as _, AsyncWriteExt};
use compio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::{H2_WRITE_BUFFER_BYTES, TLS_READ_BYTES};

use super::tls::TlsIo;

type ReadOp = Pin<Box<dyn Future<Output = BufResult<usize, Vec<u8>>>>>;
type WriteOp = Pin<Box<dyn Future<Output = BufResult<(), Vec<u8>>>>>;
type ShutdownOp = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// A socket, its TLS session if any, and the buffers between it and a poll-based reader/writer.
pub struct CompatStream {
    stream: TcpStream,
    tls: Option<TlsIo>,
    /// Plaintext received and not yet read: `input[ipos..]`.
    input: Vec<u8>,
    ipos: usize,
    eof: bool,
    reading: Option<ReadOp>,
    /// The buffer the next socket read uses (handed back by the last one).
    spare_in: Vec<u8>,
    /// Bytes for the socket (ciphertext on TLS), not yet handed to a write.
    out: Vec<u8>,
    /// TLS only: plaintext written and not sealed yet.
    plain: Vec<u8>,
    writing: Option<WriteOp>,
    spare_out: Vec<u8>,
    shutdown: Option<ShutdownOp>,
    /// close_notify is queued (once).
    closing: bool,
}

impl std::fmt::Debug for CompatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompatStream")
            .field("tls", &self.tls.is_some())
            .field("input", &(self.input.len() - self.ipos))
            .field("out", &self.out.len())
            .finish()
    }
}

impl CompatStream {
    /// `received` is plaintext already read from the socket (e.g. the h2c preface).
    pub fn new(stream: TcpStream, tls: Option<TlsIo>, received: Vec<u8>) -> Self {
        CompatStream {
            stream,
            tls,
            input: received,
            ipos: 0,
            eof: false,
            reading: None,
            spare_in: Vec::new(),
            out: Vec::new(),
            plain: Vec::new(),
            writing: None,
            spare_out: Vec::new(),
            shutdown: None,
            closing: false,
        }
    }

    /// Starts (or keeps) a socket read and takes its bytes in. `Ready(Ok)` means `input` grew
    /// or the stream ended (`eof`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let op = self.reading.get_or_insert_with(|| {
                let mut buf = std::mem::take(&mut self.spare_in);
                buf.clear();
                buf.reserve(TLS_READ_BYTES);
                let s = self.stream.clone();
                Box::pin(async move {
                    let mut r = &s;
                    r.append(buf).await
                })
            });
            let BufResult(res, buf) = ready!(op.as_mut().poll(cx));
            self.reading = None;
            let n = match res {
                Ok(n) => n,
                Err(e) => {
                    self.spare_in = buf;
                    return Poll::Ready(Err(e));
                }
            };
            if n == 0 {
                self.eof = true;
                self.spare_in = buf;
                return Poll::Ready(Ok(()));
            }
            if self.ipos == self.input.len() {
                self.input.clear();
                self.ipos = 0;
            }
            match &mut self.tls {
                None if self.input.is_empty() => {
                    // Hand the filled buffer over instead of copying it.
                    self.spare_in = std::mem::replace(&mut self.input, buf);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    self.input.extend_from_slice(&buf);
                    self.spare_in = buf;
                    return Poll::Ready(Ok(()));
                }
                Some(tls) => {
                    let before = self.input.len();
                    let fed = tls.feed(&buf, &mut self.input);
                    self.spare_in = buf;
                    // Key updates and alerts go out with the next flush.
                    tls.take_pending(&mut self.out);
                    match fed {
                        Err(e) => {
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                        Ok(fed) => {
                            self.eof |= fed.closed;
                            if self.input.len() > before || self.eof {
                                return Poll::Ready(Ok(()));
                            }
                            // Only part of a record, or handshake bytes: read on.
                        }
                    }
                }
            }
        }
    }

    /// Hands `out` (after sealing `plain`) to the socket until all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(tls) = &mut self.tls {
            tls.seal(&self.plain, &mut self.out);
            self.plain.clear();
        }
        loop {
            if let Some(op) = &mut self.writing {
                let BufResult(res, mut buf) = ready!(op.as_mut().poll(cx));
                self.writing = None;
                buf.clear();
                self.spare_out = buf;
                res?;
            }
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let buf = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare_out));
            let s = self.stream.clone();
            self.writing = Some(Box::pin(async move {
                let mut w = &s;
                w.write_all(buf).await
            }));
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.tls.is_some() {
            self.plain.extend_from_slice(data);
        } else {
            self.out.extend_from_slice(data);
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() + self.plain.len()
    }

    /// Room for more output: `Pending` while `out` is full and the socket busy.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending_out() < H2_WRITE_BUFFER_BYTES {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        if self.pending_out() < H2_WRITE_BUFFER_BYTES {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl AsyncRead for CompatStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ipos < this.input.len() {
                let n = buf.remaining().min(this.input.len() - this.ipos);
                buf.put_slice(&this.input[this.ipos..this.ipos + n]);
                this.ipos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl AsyncWrite for CompatStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.push(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            this.push(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(tls) = &mut this.tls {
            tls.take_pending(&mut this.out);
        }
        this.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shutdown.is_none() {
            if !this.closing
                && let Some(tls) = &mut this.tls
            {
                tls.seal(&this.plain, &mut this.out);
                this.plain.clear();
                tls.close_notify();
                tls.take_pending(&mut this.out);
            }
            this.closing = true;
            ready!(this.poll_drain(cx))?;
            let s = this.stream.clone();
            this.shutdown = Some(Box::pin(async move {
                let mut w = &s;
                w.shutdown().await
            }));
        }
        match this.shutdown.as_mut() {
            Some(op) => op.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

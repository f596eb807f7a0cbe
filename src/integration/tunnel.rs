//! Relaying an upgraded connection: once an `http_proxy` backend answered a WebSocket upgrade
//! with `101`, bytes are copied both ways until both sides have closed (a side's end of stream
//! is passed on as a half-close), either side fails, nothing moves for
//! `WS_TUNNEL_IDLE_TIMEOUT_MS`, or the core drains.
//!
//! Frames are not parsed, only delimited: each direction tracks where frames start (header
//! lengths only), so that a drain can end both sides with a close frame (1001) where the
//! stream is between frames. Where it is not, the TCP connection is simply closed.

use std::cell::{Cell, RefCell};
use std::future::pending;
use std::pin::pin;
use std::time::{Duration, Instant};

use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{Either, select, try_join};

use crate::limits::{BODY_READ_BYTES, WS_TUNNEL_IDLE_TIMEOUT_MS};
use crate::server::core::CoreCtx;
use crate::server::downstream::Downstream;
use crate::websocket::CloseCode;
use crate::websocket::frame::{self, HeaderStatus};

use super::pool::UpstreamConn;

/// Relays between the client (`down`, whose `out` holds the `101` head) and the backend
/// (`up`, whose buffer holds what the backend sent after its `101`) to the end.
pub async fn relay(ctx: &CoreCtx, down: &mut Downstream, mut up: UpstreamConn) {
    let to_client = RefCell::new(FrameEdge::default());
    let to_backend = RefCell::new(FrameEdge::default());
    // The 101 head is not part of the WebSocket stream; what follows it is.
    let early = std::mem::take(&mut up.buf);
    to_client.borrow_mut().feed(&early);
    down.out.extend_from_slice(&early);
    if down.flush().await.is_err() {
        return;
    }
    if !down.avail().is_empty() {
        let early = down.avail().to_vec();
        down.consume(early.len());
        to_backend.borrow_mut().feed(&early);
        let mut w = &up.stream;
        if w.write_all(early).await.0.is_err() {
            return;
        }
    }
    let activity = Cell::new(ctx.timers.now());
    let both = try_join(
        pump(ctx, &down.stream, &up.stream, &activity, &to_backend),
        pump(ctx, &up.stream, &down.stream, &activity, &to_client),
    );
    let watch = watchdog(ctx, &activity);
    if let Either::Right(((), _)) = select(pin!(both), pin!(watch)).await {
        // Idle or draining: the pumps are dropped (their reads cancelled); say goodbye where
        // the streams are between frames.
        let client_edge = to_client.borrow().at_boundary();
        let backend_edge = to_backend.borrow().at_boundary();
        let bye = |masked| close_frame(CloseCode::GOING_AWAY, masked);
        let limit = Duration::from_millis(crate::limits::WS_CLOSE_WAIT_MS);
        if client_edge {
            let mut w = &down.stream;
            let _ = ctx.timers.timeout(limit, w.write_all(bye(false))).await;
        }
        if backend_edge {
            let mut w = &up.stream;
            let _ = ctx.timers.timeout(limit, w.write_all(bye(true))).await;
        }
    }
}

/// Copies `from` → `to` until `from` ends (then half-closes `to`). `Err`: a side failed.
async fn pump(
    ctx: &CoreCtx,
    from: &TcpStream,
    to: &TcpStream,
    activity: &Cell<Instant>,
    edge: &RefCell<FrameEdge>,
) -> Result<(), ()> {
    let mut buf = Vec::with_capacity(BODY_READ_BYTES);
    loop {
        buf.clear();
        let mut r = from;
        let BufResult(res, b) = r.append(buf).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                let mut w = to;
                let _ = w.shutdown().await;
                return Ok(());
            }
            Err(_) => return Err(()),
        }
        activity.set(ctx.timers.now());
        let mut w = to;
        let BufResult(res, b) = w.write_all(buf).await;
        buf = b;
        res.map_err(|_| ())?;
        edge.borrow_mut().feed(&buf);
    }
}

/// Returns when nothing moved for the idle timeout, or at once when the core drains.
async fn watchdog(ctx: &CoreCtx, activity: &Cell<Instant>) {
    let idle = Duration::from_millis(WS_TUNNEL_IDLE_TIMEOUT_MS);
    loop {
        let at = activity.get() + idle;
        let _ = ctx.timers.idle_timeout_at(at, pending::<()>()).await;
        if ctx.draining() || ctx.timers.now() >= activity.get() + idle {
            return;
        }
    }
}

/// A close frame (server frames unmasked; toward the backend we are the client: masked).
fn close_frame(code: CloseCode, masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    if masked {
        let mut key = [0u8; 4];
        // A failed draw leaves a zero key: still a valid frame, and only a close.
        let _ = getrandom::fill(&mut key);
        let mut payload = code.0.to_be_bytes();
        frame::apply_mask(&mut payload, key, 0);
        out.extend_from_slice(&[0x88, 0x80 | 2]);
        out.extend_from_slice(&key);
        out.extend_from_slice(&payload);
    } else {
        frame::encode_close(&mut out, code, "");
    }
    out
}

/// Where frames start in one direction of a WebSocket stream, from header lengths alone.
#[derive(Debug, Default)]
struct FrameEdge {
    head: [u8; frame::HEADER_BYTES_MAX],
    /// Bytes of a header seen so far (0: between frames or inside a payload).
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The stream is not WebSocket framing (a protocol error or another protocol): never
    /// inject anything into it.
    broken: bool,
}

impl FrameEdge {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.broken {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let take = (self.head.len() - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
            match frame::parse_header(&self.head[..self.head_len + take]) {
                Ok(HeaderStatus::Complete(h)) => {
                    data = &data[h.header_len - self.head_len..];
                    self.head_len = 0;
                    self.remaining = h.payload_len;
                }
                Ok(HeaderStatus::Incomplete { .. }) => {
                    self.head_len += take;
                    data = &data[take..];
                }
                Err(_) => self.broken = true,
            }
        }
    }

    fn at_boundary(&self) -> bool {
        !self.broken && self.head_len == 0 && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server_frame(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, frame::Opcode::Binary, &vec![7u8; len]);
        out
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            close_frame(CloseCode::GOING_AWAY, false),
            b"\x88\x02\x03\xe9"
        );
        let m = close_frame(CloseCode::GOING_AWAY, true);
        assert_eq!(&m[..2], b"\x88\x82");
        let mut payload = [m[6], m[7]];
        frame::apply_mask(&mut payload, [m[2], m[3], m[4], m[5]], 0);
        assert_eq!(payload, [0x03, 0xe9]);
    }

    proptest! {
        /// Fed in any pieces, the tracker is at a boundary exactly at the ends of frames.
        #[test]
        fn boundaries_at_frame_ends(lens in prop::collection::vec(0usize..70_000, 1..5), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let frames: Vec<Vec<u8>> = lens.iter().map(|&l| server_frame(l)).collect();
            let stream: Vec<u8> = frames.concat();
            let mut ends = std::collections::BTreeSet::new();
            let mut at = 0;
            for f in &frames {
                at += f.len();
                ends.insert(at);
            }
            let mut cut: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cut.push(stream.len());
            cut.sort_unstable();
            let mut edge = FrameEdge::default();
            let mut pos = 0;
            for c in cut {
                edge.feed(&stream[pos..c]);
                pos = c;
                prop_assert_eq!(edge.at_boundary(), pos == 0 || ends.contains(&pos), "at {}", pos);
            }
        }
    }

    #[test]
    fn garbage_is_never_a_boundary() {
        let mut edge = FrameEdge::default();
        edge.feed(b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00");
        assert!(!edge.at_boundary());
        edge.feed(&server_frame(3));
        assert!(!edge.at_boundary());
    }
}

//! HTTP/2 (RFC 9113) with the h2 crate, over TLS (ALPN `h2`) or cleartext by prior knowledge.
//!
//! One connection is one task on its core: it drives `h2::server::Connection` (framing, HPACK,
//! flow control, SETTINGS, PING, GOAWAY) and spawns a local task per stream. A stream asks
//! `server::decide` what to do, exactly as an HTTP/1.1 request does, and renders the answer its
//! own way (`stream`): a mock or error response, or a forward to the backend (`proxy`). So
//! routing, limits, throttles and integrations behave the same over both protocols.
//!
//! ```text
//! preface + SETTINGS (within header_read_timeout_ms)
//!   → accept streams (at most http2_streams_max open; header lists ≤ header_bytes_max)
//!       → each: decide → mock | error | proxy (request body streamed from the client, response
//!         body streamed back within the client's flow-control window)
//!   → no stream for keepalive_idle_timeout_ms, or the core drains: GOAWAY, finish open
//!     streams, close
//! ```
//!
//! Abuse limits: rapid reset (streams reset before we accept them, CVE-2023-44487) is capped by
//! `max_pending_accept_reset_streams`; streams the client makes us reset for its protocol
//! errors by `max_local_error_reset_streams`; CONTINUATION floods by the header list size (h2
//! stops buffering a header block at `max_header_list_size` and refuses the stream).

mod proxy;
mod stream;
pub mod upstream;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::limits::{
    H2_CONN_WINDOW_BYTES, H2_LOCAL_ERROR_RESETS_MAX, H2_PENDING_ACCEPT_RESETS_MAX,
    H2_SEND_BUFFER_BYTES, H2_STREAM_WINDOW_BYTES,
};
use crate::net::io_compat::CompatStream;
use crate::server::accept::ConnInfo;
use crate::server::core::CoreCtx;
use crate::server::downstream::Downstream;

/// What the connection task and its stream tasks share.
#[derive(Debug)]
struct Activity {
    /// Streams being served.
    open: Cell<usize>,
    /// When the last stream finished (the idle timeout counts from here).
    last_done: Cell<Instant>,
}

/// Serves an HTTP/2 connection to its end. `down` has done its TLS handshake (if any) and may
/// hold the first bytes the client sent (the preface).
pub async fn serve(ctx: Rc<CoreCtx>, down: Downstream, info: ConnInfo) {
    let (stream, tls, received) = down.into_parts();
    let io = CompatStream::new(stream, tls, received);
    let (builder, head_ms, idle, streams_max) = {
        let snap = ctx.snapshot();
        let server = snap.snap.server();
        let mut b = h2::server::Builder::new();
        b.max_concurrent_streams(server.http2_streams_max)
            .max_header_list_size(server.header_bytes_max as u32)
            .initial_window_size(H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(H2_CONN_WINDOW_BYTES)
            .max_send_buffer_size(H2_SEND_BUFFER_BYTES)
            .max_pending_accept_reset_streams(H2_PENDING_ACCEPT_RESETS_MAX)
            .max_local_error_reset_streams(Some(H2_LOCAL_ERROR_RESETS_MAX));
        (
            b,
            server.header_read_timeout_ms,
            Duration::from_millis(server.keepalive_idle_timeout_ms),
            server.http2_streams_max as usize,
        )
    };
    let mut conn = match ctx
        .timers
        .timeout(Duration::from_millis(head_ms), builder.handshake(io))
        .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            crate::log_debug!("http2", "{}: handshake: {e}", peer_str(&info));
            return;
        }
        Err(_) => return,
    };
    let info = Rc::new(info);
    let activity = Rc::new(Activity {
        open: Cell::new(0),
        last_done: Cell::new(ctx.timers.now()),
    });
    let mut closing = false;
    let mut idle_from = ctx.timers.now();
    loop {
        let next = if closing {
            // Open streams finish; a client that neither reads nor closes once they have is
            // given up on.
            match ctx.timers.timeout(idle, conn.accept()).await {
                Ok(next) => Ok(next),
                Err(_) if activity.open.get() == 0 => break,
                Err(_) => continue,
            }
        } else {
            // An idle wait: a drain ends it at once. While streams are open the connection is
            // not idle; the wait only re-checks then.
            let deadline = if activity.open.get() > 0 {
                ctx.timers.now() + idle
            } else {
                idle_from.max(activity.last_done.get()) + idle
            };
            ctx.timers.idle_timeout_at(deadline, conn.accept()).await
        };
        match next {
            Ok(Some(Ok((_, mut respond)))) if activity.open.get() >= streams_max => {
                // Streams the client reset while we still work on them do not count against
                // its SETTINGS_MAX_CONCURRENT_STREAMS, but they do cost us: a client that
                // opens and resets streams (rapid reset) gets new ones refused until ours end.
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            }
            Ok(Some(Ok((req, respond)))) => {
                activity.open.set(activity.open.get() + 1);
                idle_from = ctx.timers.now();
                let task = stream::serve(ctx.clone(), info.clone(), activity.clone(), req, respond);
                compio::runtime::spawn(task).detach();
            }
            Ok(Some(Err(e))) => {
                crate::log_debug!("http2", "{}: {e}", peer_str(&info));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                let quiet = activity.open.get() == 0
                    && ctx.timers.now() >= activity.last_done.get().max(idle_from) + idle;
                if ctx.draining() || quiet {
                    // GOAWAY; streams already open finish, then `accept` ends.
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

fn peer_str(info: &ConnInfo) -> String {
    info.peer.map_or_else(|| "?".to_string(), |p| p.to_string())
}

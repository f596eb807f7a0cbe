//! Messages between the control thread and the cores. Sent in batches at a core's tick or on
//! rare events (reload, metrics read, stop), never per request.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::config::Snapshot;
use crate::telemetry::MetricsShard;

/// Control thread → core.
#[derive(Debug)]
pub enum ToCore {
    /// Serve new requests from this snapshot; requests in flight finish on the old one.
    Snapshot(Arc<Snapshot>),
    /// Send a copy of your metrics to this channel.
    Collect(Sender<MetricsShard>),
    /// Throttle tokens and targets for this core's limiter shard.
    Grant(crate::ratelimit::Grant),
    /// Every core's cache fills and invalidations (and admin flushes) of one reconciler tick;
    /// the same `Arc` goes to every core, which skips its own.
    Cache(crate::cache::Fanout),
    /// Graceful stop: stop accepting, close idle connections, let requests in flight finish
    /// (their responses say `connection: close`), and leave the event loop once no connection
    /// is left or at `deadline`, closing what remains.
    Drain { deadline: std::time::Instant },
    /// Test hook (`admin.debug_endpoints`): block this core's thread for the duration, as a stuck
    /// event loop would.
    Stall(std::time::Duration),
    /// A `/@connections/{id}` request for a WebSocket connection this core owns (by the core
    /// index in the id); the core answers on the command's reply channel.
    WebSocket(crate::websocket::registry::AdminCommand),
}

/// Core → control thread.
#[derive(Debug)]
pub enum FromCore {
    /// The core listens on every listener and serves.
    Ready { core: usize },
    /// The core swapped in the snapshot of this generation.
    Swapped { core: usize, generation: u64 },
    /// The core could not start; the process cannot serve as configured.
    Failed { core: usize, error: String },
    /// The core left its event loop; `abandoned` connections were still open at the deadline.
    Stopped { core: usize, abandoned: usize },
    /// The limiter shard's report: once per reconcile tick, or early after a refusal.
    Limiter(crate::ratelimit::CoreReport),
    /// What the core's cache filled and invalidated since its last reconcile tick.
    Cache(crate::cache::CacheBatch),
}

//! One core: its context (snapshot, metrics shard, upstream pool, clock, request ids) and its
//! event loop (accept loops, the tick that reads the control channel).
//!
//! Everything here is core-local: `Rc`, `Cell`, `RefCell`. Nothing in a `CoreCtx` is touched by
//! another thread; the control thread reaches a core only through its channel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use futures_util::StreamExt;

use crate::config::Snapshot;
use crate::integration::pool::UpstreamPool;
use crate::limits::CORE_TICK_MS;
use crate::ratelimit::{CoreLimiter, LeaseConfig};
use crate::runtime::{FromCore, Timers, ToCore};
use crate::telemetry::{CoreMetrics, RequestIds};
use crate::{log_debug, log_error, log_warn};

/// A snapshot as one core holds it: the shared immutable config plus this core's metric slots
/// for its routes. Requests clone the `Rc` (not the `Arc`: no shared atomic per request).
#[derive(Debug)]
pub struct CoreSnapshot {
    pub snap: Arc<Snapshot>,
    /// `slots[metric_id]`: this core's series for that route.
    pub slots: Vec<u32>,
}

/// Per-core state shared by the core's tasks.
#[derive(Debug)]
pub struct CoreCtx {
    pub id: usize,
    snapshot: RefCell<Rc<CoreSnapshot>>,
    pub metrics: RefCell<CoreMetrics>,
    pub pool: RefCell<UpstreamPool>,
    pub ids: RequestIds,
    /// Deadlines of every read and write on this core, fired by the tick.
    pub timers: Timers,
    /// Caps per-request warnings (backend failures) on this core.
    pub log_gate: crate::telemetry::log::LogGate,
    /// This core's shard of every throttle: leases spent per request, reported per tick.
    pub limiter: RefCell<CoreLimiter>,
    /// Limiter reports that could not be sent yet (channel full); retried at the next tick,
    /// never dropped (a lost report would keep spent tokens counted as leased).
    pending_reports: RefCell<Vec<crate::ratelimit::CoreReport>>,
    /// Reports to the control thread (early limiter asks; the tick sends the rest).
    report_tx: Sender<FromCore>,
    /// This core's open WebSocket connections (`/@connections` reaches them through it).
    pub ws: RefCell<crate::websocket::registry::Registry>,
    date: RefCell<DateCache>,
    /// Client connections open on this core (the drain waits for 0).
    open_conns: Cell<usize>,
    /// Milliseconds since `epoch`, stored at every tick; the control thread reads it for the
    /// systemd watchdog (once per watchdog period, never on the request path).
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
}

impl CoreCtx {
    pub fn new(
        id: usize,
        snap: Arc<Snapshot>,
        seed: u64,
        heartbeat: Arc<AtomicU64>,
        epoch: Instant,
        report_tx: Sender<FromCore>,
    ) -> Self {
        let lease = LeaseConfig::with_tick_ms(snap.config.account.reconcile_tick_ms);
        let mut limiter = CoreLimiter::new(id, &lease, 0);
        limiter.sync(&snap.limit_table);
        let mut metrics = CoreMetrics::new();
        let core_snap = Rc::new(map_slots(&mut metrics, snap));
        let pool = UpstreamPool::new(core_snap.snap.server());
        CoreCtx {
            id,
            snapshot: RefCell::new(core_snap),
            metrics: RefCell::new(metrics),
            pool: RefCell::new(pool),
            ids: RequestIds::new(seed, id),
            timers: Timers::new(),
            log_gate: Default::default(),
            limiter: RefCell::new(limiter),
            pending_reports: RefCell::new(Vec::new()),
            report_tx,
            ws: RefCell::new(crate::websocket::registry::Registry::new(id)),
            date: RefCell::new(DateCache::new()),
            open_conns: Cell::new(0),
            heartbeat,
            epoch,
        }
    }

    /// The snapshot new requests are served from.
    pub fn snapshot(&self) -> Rc<CoreSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// The current `Date` header value (29 bytes, RFC 9110 IMF-fixdate), refreshed by the tick.
    pub fn date(&self) -> [u8; 29] {
        self.date.borrow().value
    }

    /// Whether a per-request warning may be logged now; `Some(n)`: n were suppressed before it.
    pub fn may_log(&self) -> Option<u64> {
        self.log_gate.admit(self.date.borrow().second)
    }

    /// Nanoseconds since the process epoch on the core's coarse clock: the limiter's time.
    pub fn nanos(&self) -> u64 {
        self.timers.now().duration_since(self.epoch).as_nanos() as u64
    }

    /// Sends a limiter report now, or keeps it for the next tick if the channel is full.
    pub fn send_limiter_report(&self, report: crate::ratelimit::CoreReport) {
        let mut pending = self.pending_reports.borrow_mut();
        if !pending.is_empty() {
            pending.push(report);
            return;
        }
        if let Err(crossbeam_channel::TrySendError::Full(FromCore::Limiter(r))) =
            self.report_tx.try_send(FromCore::Limiter(report))
        {
            pending.push(r);
        }
    }

    fn flush_pending_reports(&self) {
        let mut pending = self.pending_reports.borrow_mut();
        while !pending.is_empty() {
            let r = pending.remove(0);
            if let Err(crossbeam_channel::TrySendError::Full(FromCore::Limiter(r))) =
                self.report_tx.try_send(FromCore::Limiter(r))
            {
                pending.insert(0, r);
                return;
            }
        }
    }

    /// A graceful stop is under way: answer what is in flight with `connection: close`.
    pub fn draining(&self) -> bool {
        self.timers.draining()
    }

    /// Counts a connection for as long as the guard lives.
    pub fn conn_guard(self: &Rc<Self>) -> ConnGuard {
        self.open_conns.set(self.open_conns.get() + 1);
        self.metrics.borrow_mut().connection_opened();
        ConnGuard(self.clone())
    }

    fn swap(&self, snap: Arc<Snapshot>) {
        self.limiter.borrow_mut().sync(&snap.limit_table);
        let core_snap = map_slots(&mut self.metrics.borrow_mut(), snap);
        self.pool.borrow_mut().reconfigure(core_snap.snap.server());
        *self.snapshot.borrow_mut() = Rc::new(core_snap);
    }
}

/// Keeps a connection counted; dropped when its task ends or is dropped at shutdown.
pub struct ConnGuard(Rc<CoreCtx>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0
            .open_conns
            .set(self.0.open_conns.get().saturating_sub(1));
        self.0.metrics.borrow_mut().connection_closed();
    }
}

fn map_slots(metrics: &mut CoreMetrics, snap: Arc<Snapshot>) -> CoreSnapshot {
    let slots = snap.route_labels.iter().map(|l| metrics.slot(l)).collect();
    CoreSnapshot { snap, slots }
}

/// The `Date` header, reformatted at most once per second.
#[derive(Debug)]
struct DateCache {
    second: u64,
    value: [u8; 29],
}

impl DateCache {
    fn new() -> Self {
        let mut d = DateCache {
            second: u64::MAX,
            value: [b' '; 29],
        };
        d.refresh(SystemTime::now());
        d
    }

    fn refresh(&mut self, now: SystemTime) {
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                self.value.copy_from_slice(s.as_bytes());
            }
        }
    }
}

/// What a core thread starts with.
pub struct CoreStart {
    pub id: usize,
    pub cpu: Option<usize>,
    pub listeners: Vec<std::net::TcpListener>,
    /// What each of `listeners` speaks.
    pub kinds: Vec<super::accept::ListenerKind>,
    pub snap: Arc<Snapshot>,
    pub seed: u64,
    pub heartbeat: Arc<AtomicU64>,
    pub epoch: Instant,
    pub rx: Receiver<ToCore>,
    pub tx: Sender<FromCore>,
    /// The limiter shard's first lease, applied before the core serves.
    pub grant: Option<crate::ratelimit::Grant>,
}

/// Runs one core until told to stop. Blocks the calling thread (the core's own thread).
pub fn run_core(start: CoreStart) {
    let CoreStart {
        id,
        cpu,
        listeners,
        kinds,
        snap,
        seed,
        heartbeat,
        epoch,
        rx,
        tx,
        grant,
    } = start;
    let rt = match crate::runtime::build_runtime(cpu) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(FromCore::Failed {
                core: id,
                error: format!("io_uring runtime: {e}"),
            });
            let _ = tx.send(FromCore::Stopped {
                core: id,
                abandoned: 0,
            });
            return;
        }
    };
    rt.block_on(async move {
        let ctx = Rc::new(CoreCtx::new(id, snap, seed, heartbeat, epoch, tx.clone()));
        if let Some(g) = grant {
            ctx.limiter.borrow_mut().apply(g);
        }
        let mut accepting = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let addr = l.local_addr().ok();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
            let kind = kinds
                .get(i)
                .copied()
                .unwrap_or(super::accept::ListenerKind::Plain);
            match compio::net::TcpListener::from_std(l) {
                Ok(l) => accepting.push((
                    fd,
                    compio::runtime::spawn(accept_loop(ctx.clone(), l, kind)),
                )),
                Err(e) => {
                    let _ = tx.send(FromCore::Failed {
                        core: id,
                        error: format!("listener {addr:?}: {e}"),
                    });
                    let _ = tx.send(FromCore::Stopped {
                        core: id,
                        abandoned: 0,
                    });
                    return;
                }
            }
        }
        let _ = tx.send(FromCore::Ready { core: id });
        log_debug!(&format!("core {id}"), "serving on cpu {cpu:?}");
        let abandoned = tick_loop(&ctx, &rx, &tx, &accepting).await;
        if abandoned > 0 {
            log_warn!(
                &format!("core {id}"),
                "shutdown deadline: closing {abandoned} connection(s) still open"
            );
        }
        let _ = tx.send(FromCore::Stopped {
            core: id,
            abandoned,
        });
        log_debug!(&format!("core {id}"), "stopped");
    });
}

/// The core's housekeeping loop: clock, timers, pool sweep, heartbeat, control messages.
/// Returns when a drain completes (the number of connections abandoned at its deadline).
async fn tick_loop(
    ctx: &Rc<CoreCtx>,
    rx: &Receiver<ToCore>,
    tx: &Sender<FromCore>,
    accepting: &[(std::os::fd::RawFd, compio::runtime::JoinHandle<()>)],
) -> usize {
    let tick = Duration::from_millis(CORE_TICK_MS);
    let mut last_sweep = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    let mut last_report = 0u64;
    let reconcile_ns = ctx.snapshot().snap.config.account.reconcile_tick_ms * 1_000_000;
    loop {
        compio::time::sleep(tick).await;
        let now = Instant::now();
        ctx.timers.fire(now);
        let nanos = ctx.nanos();
        ctx.flush_pending_reports();
        if nanos.saturating_sub(last_report) >= reconcile_ns {
            last_report = nanos;
            let report = ctx.limiter.borrow_mut().report(nanos);
            if let Some(r) = report {
                ctx.send_limiter_report(r);
            }
        }
        ctx.heartbeat.store(
            now.duration_since(ctx.epoch).as_millis() as u64,
            Ordering::Relaxed,
        );
        if let Some(deadline) = drain_deadline {
            let open = ctx.open_conns.get();
            if open == 0 || now >= deadline {
                return open;
            }
        }
        ctx.date.borrow_mut().refresh(SystemTime::now());
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            ctx.pool.borrow_mut().sweep(now);
        }
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ToCore::Snapshot(snap) => {
                    let generation = snap.generation;
                    ctx.swap(snap);
                    let _ = tx.send(FromCore::Swapped {
                        core: ctx.id,
                        generation,
                    });
                }
                ToCore::Collect(reply) => {
                    let _ = reply.send(ctx.metrics.borrow().shard());
                }
                ToCore::Grant(grant) => ctx.limiter.borrow_mut().apply(grant),
                ToCore::Drain { deadline } => {
                    // shutdown() takes each listening socket out of its SO_REUSEPORT group at
                    // once (new connections go to the sockets that remain, e.g. a new
                    // process's) and, with net.ipv4.tcp_migrate_req=1, moves the connections
                    // waiting in its queue there too. Dropping the accept task instead would
                    // also discard connections the kernel already accepted for us (completions
                    // not yet read), resetting them; this way the accept loop serves those and
                    // ends on its own when the socket reports the shutdown.
                    for (fd, _) in accepting.iter() {
                        // SAFETY: `fd` is a listening socket owned by a live accept task (its
                        // handle is in `accepting`, so the socket is not closed yet).
                        unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
                    }
                    ctx.timers.drain();
                    drain_deadline = Some(deadline);
                }
                ToCore::Stall(d) => std::thread::sleep(d),
                ToCore::WebSocket(cmd) => {
                    let reply = ctx.ws.borrow().apply(&cmd.id, cmd.op);
                    let _ = cmd.reply.send(reply);
                }
            }
        }
    }
}

async fn accept_loop(
    ctx: Rc<CoreCtx>,
    listener: compio::net::TcpListener,
    kind: super::accept::ListenerKind,
) {
    let whence = format!("core {}", ctx.id);
    let mut incoming = listener.incoming();
    while let Some(res) = incoming.next().await {
        match res {
            Ok(stream) => {
                let ctx = ctx.clone();
                compio::runtime::spawn(async move {
                    super::accept::serve(ctx, stream, kind).await;
                })
                .detach();
            }
            Err(_) if ctx.draining() => return,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                log_warn!(&whence, "accept failed: {e}");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    if !ctx.draining() {
        log_error!(&whence, "listener stopped accepting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_imf_fixdate_and_cached_per_second() {
        let mut d = DateCache::new();
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        d.refresh(t);
        assert_eq!(&d.value, b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.refresh(t + Duration::from_millis(500));
        assert_eq!(&d.value, b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.refresh(t + Duration::from_secs(1));
        assert_eq!(&d.value, b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}

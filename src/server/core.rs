//! One core: its context (snapshot, metrics shard, upstream pool, clock, request ids, throttle
//! and cache shards) and its event loop (accept loops, the tick that reads the control channel
//! and reports to it).
//!
//! Everything here is core-local: `Rc`, `Cell`, `RefCell`. Nothing in a `CoreCtx` is touched by
//! another thread; the control thread reaches a core only through its channel.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use crossbeam_channel::{Receiver, Sender};
use futures_util::StreamExt;

use crate::cache::{CACHE_SWEEP_NODES_PER_TICK, CacheShard, KeyBuf, StageId};
use crate::config::{CacheStage, Snapshot};
use crate::integration::pool::UpstreamPool;
use crate::limits::CORE_TICK_MS;
use crate::ratelimit::{CoreLimiter, LeaseConfig};
use crate::runtime::{FromCore, Timers, ToCore};
use crate::telemetry::metrics::CacheCounts;
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
    /// Reports that could not be sent yet (channel full): limiter reports and cache batches,
    /// retried in order at the next tick, never dropped (a lost limiter report would keep spent
    /// tokens counted as leased; a lost cache batch would lose an invalidation).
    pending_reports: RefCell<VecDeque<FromCore>>,
    /// This core's response cache: entries, fills in flight, what to publish at the tick.
    pub cache: RefCell<CacheShard>,
    /// The buffer cache keys are built in, reused by every request.
    pub cache_key: RefCell<KeyBuf>,
    /// Cache results the shard does not count itself (`server::cache::RESULT_*`), by stage.
    cache_counts: RefCell<AHashMap<StageId, [u64; 6]>>,
    /// Cores serving (each gets `capacity / cores` of every cached stage).
    cores: usize,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        cores: usize,
        snap: Arc<Snapshot>,
        seed: u64,
        heartbeat: Arc<AtomicU64>,
        epoch: Instant,
        report_tx: Sender<FromCore>,
    ) -> Self {
        let lease = LeaseConfig::with_tick_ms(snap.config.account.reconcile_tick_ms);
        let mut limiter = CoreLimiter::new(id, &lease, 0);
        limiter.sync(&snap.limit_table);
        let mut cache = CacheShard::new(id as u16);
        cache.configure(&CacheStage::budgets(&snap.cache_stages, cores));
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
            pending_reports: RefCell::new(VecDeque::new()),
            cache: RefCell::new(cache),
            cache_key: RefCell::new(KeyBuf::default()),
            cache_counts: RefCell::new(AHashMap::new()),
            cores,
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
        self.send_report(FromCore::Limiter(report));
    }

    /// Sends a report now, or keeps it (behind any kept before it) for the next tick if the
    /// channel is full.
    fn send_report(&self, msg: FromCore) {
        let mut pending = self.pending_reports.borrow_mut();
        if !pending.is_empty() {
            pending.push_back(msg);
            return;
        }
        if let Err(crossbeam_channel::TrySendError::Full(m)) = self.report_tx.try_send(msg) {
            pending.push_back(m);
        }
    }

    fn flush_pending_reports(&self) {
        let mut pending = self.pending_reports.borrow_mut();
        while let Some(m) = pending.pop_front() {
            if let Err(crossbeam_channel::TrySendError::Full(m)) = self.report_tx.try_send(m) {
                pending.push_front(m);
                return;
            }
        }
    }

    /// Counts a cache result the shard does not count (`server::cache::RESULT_*`).
    pub fn count_cache(&self, stage: StageId, result: usize) {
        if let Some(n) = self
            .cache_counts
            .borrow_mut()
            .entry(stage)
            .or_default()
            .get_mut(result)
        {
            *n += 1;
        }
    }

    /// This core's metrics, with its cache's counters by stage.
    fn metrics_shard(&self) -> crate::telemetry::MetricsShard {
        let mut shard = self.metrics.borrow().shard();
        let snap = self.snapshot();
        let counts = self.cache_counts.borrow();
        let cache = self.cache.borrow();
        let by_stage = cache
            .stats()
            .filter_map(|(id, st)| {
                let stage = snap.snap.cache_stages.iter().find(|s| s.id == id)?;
                let extra = counts.get(&id).copied().unwrap_or_default();
                let mut c = CacheCounts {
                    results: [st.hits, st.misses, st.coalesced, st.passes, 0, 0],
                    evictions: st.evictions,
                    entries: st.entries,
                    bytes: st.bytes,
                    budget_bytes: st.budget_bytes,
                };
                for (r, e) in c.results.iter_mut().zip(extra) {
                    *r += e;
                }
                Some((stage.labels.clone(), c))
            })
            .collect();
        shard.set_cache(by_stage);
        shard
    }

    /// The cache's work at a core tick: expired entries swept; at the reconcile tick, what this
    /// core filled and invalidated goes to the control thread.
    fn cache_tick(&self, now: Instant, publish: bool) {
        let mut cache = self.cache.borrow_mut();
        cache.sweep(now, CACHE_SWEEP_NODES_PER_TICK);
        if publish && let Some(batch) = cache.drain_publish() {
            drop(cache);
            self.send_report(FromCore::Cache(batch));
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
        self.cache
            .borrow_mut()
            .configure(&CacheStage::budgets(&snap.cache_stages, self.cores));
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
    /// How many cores serve (this one included).
    pub cores: usize,
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
        cores,
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
        let ctx = Rc::new(CoreCtx::new(
            id,
            cores,
            snap,
            seed,
            heartbeat,
            epoch,
            tx.clone(),
        ));
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
        let reconcile = nanos.saturating_sub(last_report) >= reconcile_ns;
        if reconcile {
            last_report = nanos;
            let report = ctx.limiter.borrow_mut().report(nanos);
            if let Some(r) = report {
                ctx.send_limiter_report(r);
            }
        }
        ctx.cache_tick(ctx.timers.now(), reconcile);
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
                    let _ = reply.send(ctx.metrics_shard());
                }
                ToCore::Grant(grant) => ctx.limiter.borrow_mut().apply(grant),
                ToCore::Cache(fanout) => {
                    let now = ctx.timers.now();
                    ctx.cache.borrow_mut().apply_remote(&fanout, now);
                }
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

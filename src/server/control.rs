//! The control thread: owns the config file, the current snapshot and the channels to every
//! core. It starts the cores, reloads (SIGHUP, admin `POST /reload`), collects metrics for
//! `/metrics`, reconciles the cores' throttle leases and response caches (admin cache flushes
//! included), and stops the process on SIGTERM/SIGINT.
//!
//! It never blocks a core: cores read their channel at their tick; the control thread waits
//! only on its own inbox (signals, admin requests, core reports).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use crate::config::{self, Config, ConfigError, Snapshot};
use crate::limits::CONTROL_CHANNEL_CAPACITY;
use crate::net::bind_listeners;
use crate::ratelimit::{LeaseConfig, Reconciler};
use crate::runtime::{FromCore, ToCore, allowed_cpus, online_cpus};
use crate::server::core::{CoreStart, run_core};
use crate::server::notify::{Notifier, watchdog_interval};
use crate::telemetry::{metrics, request_id};
use crate::{log_error, log_info, log_warn};

/// How long the control thread waits for every core to answer (swap, metrics).
const CORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests from the admin listener.
#[derive(Debug)]
pub enum AdminRequest {
    /// Test hook: block a core's thread (`admin.debug_endpoints`); answers whether it was sent.
    Stall {
        core: usize,
        duration: Duration,
        reply: Sender<bool>,
    },
    /// Reload the config file; answer with the new generation or every error.
    Reload(Sender<Result<u64, Vec<String>>>),
    /// Merged Prometheus text.
    Metrics(Sender<String>),
    /// `/@connections/{id}`: forwarded to the core that owns the connection.
    WebSocket(crate::websocket::registry::AdminCommand),
    /// `DELETE /cache/{api}/{stage}`: flush the stage's cache on every core; answers `false`
    /// when the snapshot has no such API or stage.
    CacheFlush {
        api: String,
        stage: String,
        reply: Sender<bool>,
    },
}

/// State the admin thread reads without asking the control thread.
#[derive(Debug, Default)]
pub struct AdminShared {
    /// Every core listens.
    pub ready: AtomicBool,
    /// `admin.token` of the current config.
    pub token: Mutex<Option<String>>,
    /// `admin.debug_endpoints` of the current config.
    pub debug_endpoints: AtomicBool,
}

/// How `tollgate serve` was invoked.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_path: PathBuf,
    /// `--cores`, overriding `server.cores`.
    pub cores: Option<usize>,
}

/// A problem that keeps the server from starting, with what to tell the operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Formats config errors as `path:line:col: error: message`.
pub fn format_errors(path: &std::path::Path, errors: &[ConfigError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            if e.line == 0 {
                format!("{}: error: {}", path.display(), e.message)
            } else {
                format!(
                    "{}:{}:{}: error: {}",
                    path.display(),
                    e.line,
                    e.col,
                    e.message
                )
            }
        })
        .collect()
}

/// Loads and compiles the config file.
pub fn load_snapshot(path: &std::path::Path, generation: u64) -> Result<Snapshot, Vec<String>> {
    let config = config::load(path).map_err(|e| format_errors(path, &e))?;
    config::compile(config, generation).map_err(|e| format_errors(path, &e))
}

/// Runs the server until SIGTERM, SIGINT or SIGQUIT, then drains. Returns once every core has
/// stopped (within `server.shutdown_timeout_ms` plus a little).
pub fn serve(opts: ServeOptions) -> Result<(), StartError> {
    let epoch = Instant::now();
    let mut snap = load_snapshot(&opts.config_path, 1).map_err(|e| StartError(e.join("\n")))?;
    let server = &snap.config.server;
    let cores = opts
        .cores
        .or(server.cores)
        .unwrap_or_else(online_cpus)
        .max(1);
    let (addrs, kinds) = crate::server::accept::listener_plan(server);
    let bound =
        bind_listeners(&addrs, cores, server.backlog).map_err(|e| StartError(e.to_string()))?;
    // SO_REUSEPORT here too: during a zero-downtime upgrade the new process binds the admin
    // port while the old one still holds it.
    let admin_listener = match snap.config.admin.listen {
        Some(addr) => Some(
            crate::net::bind_reuseport(addr, 128)
                .map_err(|e| StartError(format!("cannot listen on admin address {addr}: {e}")))?,
        ),
        None => None,
    };

    let signals =
        signal_channel().map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    let shared = Arc::new(AdminShared::default());
    *lock(&shared.token) = snap.config.admin.token.clone();
    shared
        .debug_endpoints
        .store(snap.config.admin.debug_endpoints, Ordering::Release);
    // Throttles: the reconciler holds every limit's global bucket; the snapshot gets the ids.
    let mut limiter = Reconciler::new(
        cores,
        LeaseConfig::with_tick_ms(snap.config.account.reconcile_tick_ms),
    );
    snap.attach_limits(&mut limiter, nanos_since(epoch));
    // First leases go in with each core's start, so the first request finds tokens.
    let mut first_grants: Vec<Option<crate::ratelimit::Grant>> = (0..cores).map(|_| None).collect();
    for grant in limiter.tick(nanos_since(epoch)) {
        let core = grant.core();
        if let Some(slot) = first_grants.get_mut(core) {
            *slot = Some(grant);
        }
    }
    let snap = Arc::new(snap);

    // Cores.
    let cpus = allowed_cpus();
    let seed = request_id::process_seed();
    let (report_tx, report_rx) = bounded::<FromCore>(CONTROL_CHANNEL_CAPACITY);
    let mut core_tx = Vec::with_capacity(cores);
    let mut heartbeats = Vec::with_capacity(cores);
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(cores);
    for (id, listeners) in bound.per_core.into_iter().enumerate() {
        let (tx, rx) = bounded::<ToCore>(CONTROL_CHANNEL_CAPACITY);
        core_tx.push(tx);
        let heartbeat = Arc::new(AtomicU64::new(0));
        heartbeats.push(heartbeat.clone());
        let start = CoreStart {
            id,
            cores,
            cpu: (!cpus.is_empty()).then(|| cpus[id % cpus.len()]),
            listeners,
            kinds: kinds.clone(),
            snap: snap.clone(),
            seed,
            heartbeat,
            epoch,
            rx,
            tx: report_tx.clone(),
            grant: first_grants.get_mut(id).and_then(Option::take),
        };
        let t = std::thread::Builder::new()
            .name(format!("tollgate-core-{id}"))
            .spawn(move || run_core(start))
            .map_err(|e| StartError(format!("cannot start core thread: {e}")))?;
        threads.push(t);
    }
    let mut ready = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while ready < cores {
        match report_rx.recv_deadline(until) {
            Ok(FromCore::Ready { .. }) => ready += 1,
            Ok(FromCore::Failed { core, error }) => {
                drain_cores(&core_tx, &report_rx, threads, Duration::ZERO);
                return Err(StartError(format!("core {core} failed to start: {error}")));
            }
            Ok(_) => {}
            Err(_) => {
                drain_cores(&core_tx, &report_rx, threads, Duration::ZERO);
                return Err(StartError("cores did not start within 10 s".into()));
            }
        }
    }
    shared.ready.store(true, Ordering::Release);

    // Admin listener.
    let (admin_tx, admin_rx) = bounded::<AdminRequest>(64);
    let admin_addr = match admin_listener {
        Some(l) => {
            let addr = l.local_addr().ok();
            crate::admin::spawn(l, admin_tx, shared.clone())
                .map_err(|e| StartError(format!("cannot start admin thread: {e}")))?;
            addr
        }
        None => None,
    };

    // The lines tests and scripts wait for (stdout), then a human one (stderr), then systemd.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for (a, kind) in bound.addrs.iter().zip(&kinds) {
            let scheme = match kind {
                crate::server::accept::ListenerKind::Plain => "http",
                crate::server::accept::ListenerKind::Tls(_) => "https",
            };
            let _ = writeln!(out, "tollgate listening {scheme} {a}");
        }
        if let Some(a) = admin_addr {
            let _ = writeln!(out, "tollgate listening admin {a}");
        }
        let _ = writeln!(out, "tollgate ready");
        let _ = out.flush();
    }
    let listen: Vec<String> = bound.addrs.iter().map(|a| a.to_string()).collect();
    log_info!(
        "control",
        "serving {} API(s) on {} with {cores} core(s); admin {}",
        snap.apis.len(),
        listen.join(", "),
        admin_addr.map_or("disabled".to_string(), |a| a.to_string())
    );
    let notifier = Notifier::from_env();
    let mut control = Control {
        path: opts.config_path,
        snap,
        core_tx,
        report_rx,
        shared,
        cores_started: cores,
        notifier,
        heartbeats,
        epoch,
        last_requests: (Instant::now(), 0),
        limiter,
        cache: crate::cache::Reconciler::new(),
    };
    // The cores start with empty leases: the first grants go out now, not a tick from now.
    control.reconcile();
    let status = control.status_line(None);
    control.notifier.ready(&status);
    control.run(&signals, &admin_rx);

    let grace = Duration::from_millis(control.snap.server().shutdown_timeout_ms);
    log_info!(
        "control",
        "draining: no new connections; in-flight requests have {} ms",
        grace.as_millis()
    );
    control.notifier.stopping();
    let abandoned = drain_cores(&control.core_tx, &control.report_rx, threads, grace);
    log_info!(
        "control",
        "stopped ({abandoned} connection(s) closed at the deadline)"
    );
    Ok(())
}

struct Control {
    path: PathBuf,
    snap: Arc<Snapshot>,
    core_tx: Vec<Sender<ToCore>>,
    report_rx: Receiver<FromCore>,
    shared: Arc<AdminShared>,
    cores_started: usize,
    notifier: Notifier,
    heartbeats: Vec<Arc<AtomicU64>>,
    epoch: Instant,
    /// When requests were last counted for `STATUS=`, and the total then.
    last_requests: (Instant, u64),
    /// Every throttle's global bucket and the leases handed to cores.
    limiter: Reconciler,
    /// The cores' cache fills and invalidations since the last tick, and admin flushes.
    cache: crate::cache::Reconciler,
}

/// A core whose heartbeat is older than this is considered stuck: the watchdog goes quiet.
const HEARTBEAT_STALE: Duration = Duration::from_millis(1000);
/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

impl Control {
    /// Serves control requests until a stop signal.
    fn run(&mut self, signals: &Receiver<i32>, admin: &Receiver<AdminRequest>) {
        let watchdog = watchdog_interval();
        let watchdog_tick = match watchdog {
            Some(every) if self.notifier.enabled() => crossbeam_channel::tick(every),
            _ => crossbeam_channel::never(),
        };
        let reconcile_tick = crossbeam_channel::tick(Duration::from_millis(
            self.snap.config.account.reconcile_tick_ms,
        ));
        let status_tick = if self.notifier.enabled() {
            crossbeam_channel::tick(STATUS_EVERY)
        } else {
            crossbeam_channel::never()
        };
        loop {
            select! {
                recv(signals) -> sig => match sig {
                    Ok(signal_hook::consts::SIGHUP) => {
                        self.notifier.reloading();
                        if let Err(errors) = self.reload() {
                            log_error!("control", "reload (SIGHUP) refused; still serving generation {}:", self.snap.generation);
                            for e in errors {
                                log_error!("control", "  {e}");
                            }
                        }
                        let status = self.status_line(None);
                        self.notifier.ready(&status);
                    }
                    Ok(sig) => {
                        log_info!("control", "signal {sig}: stopping");
                        return;
                    }
                    Err(_) => return,
                },
                recv(admin) -> req => match req {
                    Ok(AdminRequest::Reload(reply)) => {
                        self.notifier.reloading();
                        let r = self.reload();
                        if let Err(errors) = &r {
                            log_error!("control", "reload (admin) refused; still serving generation {}: {}", self.snap.generation, errors.join("; "));
                        }
                        let status = self.status_line(None);
                        self.notifier.ready(&status);
                        let _ = reply.send(r);
                    }
                    Ok(AdminRequest::Metrics(reply)) => {
                        let _ = reply.send(metrics::render(&self.collect_shards()));
                    }
                    Ok(AdminRequest::WebSocket(cmd)) => self.forward_ws(cmd),
                    Ok(AdminRequest::CacheFlush { api, stage, reply }) => {
                        let _ = reply.send(self.flush_cache(&api, &stage));
                    }
                    Ok(AdminRequest::Stall { core, duration, reply }) => {
                        let ok = self.core_tx.get(core).is_some_and(|tx| tx.send(ToCore::Stall(duration)).is_ok());
                        let _ = reply.send(ok);
                    }
                    Err(_) => {}
                },
                recv(self.report_rx) -> r => {
                    if let Ok(r) = r {
                        self.on_core_report(r);
                    }
                }
                recv(reconcile_tick) -> _ => self.reconcile(),
                recv(watchdog_tick) -> _ => {
                    match self.stuck_core() {
                        None => self.notifier.watchdog(),
                        Some((core, ms)) => log_error!("control", "core {core} has not ticked for {ms} ms; withholding WATCHDOG=1"),
                    }
                }
                recv(status_tick) -> _ => {
                    let shards = self.collect_shards();
                    let line = self.status_line(Some(&shards));
                    self.notifier.status(&line);
                }
            }
        }
    }

    /// Nanoseconds since the process epoch: the reconciler's clock, shared with the cores.
    fn nanos(&self) -> u64 {
        nanos_since(self.epoch)
    }

    /// One reconcile tick: refills and new leases for every core; every core's cache deltas
    /// to every core.
    fn reconcile(&mut self) {
        let now = self.nanos();
        for grant in self.limiter.tick(now) {
            self.send_grant(grant);
        }
        self.fan_out_cache();
    }

    /// Sends what the cores' caches published since the last tick to every core. A blocking
    /// send, like grants: a lost invalidation would leave a stale entry served for its TTL.
    fn fan_out_cache(&mut self) {
        if let Some(fanout) = self.cache.tick() {
            for tx in &self.core_tx {
                let _ = tx.send(ToCore::Cache(fanout.clone()));
            }
        }
    }

    /// `DELETE /cache/{api}/{stage}`: a flush of the stage on every core, as of now. Returns
    /// once every core has applied it (or after `CORE_ANSWER_TIMEOUT`), so the next request on
    /// any core misses. `false`: no such API or stage.
    fn flush_cache(&mut self, api: &str, stage: &str) -> bool {
        let known = self
            .snap
            .apis
            .iter()
            .any(|a| a.name == api && a.stages.iter().any(|s| s.name == stage));
        if !known {
            return false;
        }
        self.cache
            .flush_stage(crate::cache::StageId::new(api, stage), Instant::now());
        self.fan_out_cache();
        // A core handles its channel in order: once it answered this, it applied the flush.
        let _ = self.collect_shards();
        log_info!("control", "cache of api {api} stage {stage} flushed");
        true
    }

    /// Grants are sent with a blocking send: a lost grant would take its tokens out of
    /// circulation for good. Cores drain their channel every tick, so this does not wait long.
    fn send_grant(&self, grant: crate::ratelimit::Grant) {
        if let Some(tx) = self.core_tx.get(grant.core()) {
            let _ = tx.send(ToCore::Grant(grant));
        }
    }

    /// A message from a core outside of start-up and shutdown.
    fn on_core_report(&mut self, r: FromCore) {
        match r {
            FromCore::Failed { core, error } => log_error!("control", "core {core}: {error}"),
            FromCore::Cache(batch) => self.cache.ingest(batch),
            FromCore::Limiter(report) => {
                // `now` read after the report was received: the reconciler's exactness needs it.
                let now = self.nanos();
                if let Some(grant) = self.limiter.on_report(report, now) {
                    self.send_grant(grant);
                }
            }
            FromCore::Ready { .. } | FromCore::Swapped { .. } | FromCore::Stopped { .. } => {}
        }
    }

    /// Hands a `/@connections` command to the core named in the connection id; the core
    /// answers the admin thread directly. Never blocks: a full channel answers 503.
    fn forward_ws(&self, cmd: crate::websocket::registry::AdminCommand) {
        use crate::websocket::registry::AdminReply;
        let Some(tx) = self.core_tx.get(usize::from(cmd.id.core())) else {
            // An id from another process (or node): no such connection here.
            let _ = cmd.reply.send(AdminReply::Gone);
            return;
        };
        match tx.try_send(ToCore::WebSocket(cmd)) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(ToCore::WebSocket(cmd)))
            | Err(crossbeam_channel::TrySendError::Disconnected(ToCore::WebSocket(cmd))) => {
                let _ = cmd.reply.send(AdminReply::Unavailable);
            }
            Err(_) => {}
        }
    }

    /// The first core whose event loop has not ticked recently, with its silence in ms.
    fn stuck_core(&self) -> Option<(usize, u64)> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.heartbeats.iter().enumerate().find_map(|(i, hb)| {
            let silent = now_ms.saturating_sub(hb.load(Ordering::Relaxed));
            (silent > HEARTBEAT_STALE.as_millis() as u64).then_some((i, silent))
        })
    }

    /// `STATUS=` text: cores, APIs, generation and (given fresh shards) requests per second.
    fn status_line(&mut self, shards: Option<&[metrics::MetricsShard]>) -> String {
        let mut line = format!(
            "{} core(s), {} API(s), config generation {}",
            self.cores_started,
            self.snap.apis.len(),
            self.snap.generation
        );
        if let Some(shards) = shards {
            let total: u64 = shards.iter().map(metrics::MetricsShard::requests).sum();
            let (then, before) = self.last_requests;
            let secs = then.elapsed().as_secs_f64().max(0.001);
            let rps = total.saturating_sub(before) as f64 / secs;
            self.last_requests = (Instant::now(), total);
            line.push_str(&format!(", {rps:.0} req/s"));
        }
        line
    }

    /// Loads, validates and compiles the file, then swaps it in on every core. All or nothing:
    /// on any error the old snapshot keeps serving everywhere.
    fn reload(&mut self) -> Result<u64, Vec<String>> {
        let generation = self.snap.generation + 1;
        let mut snap = load_snapshot(&self.path, generation)?;
        restart_only_changes(&self.snap.config, &snap.config, self.cores_started)?;
        // Limits that did not change keep their buckets; new or changed ones get their first
        // grants right behind the snapshot (the channel keeps the order).
        let now = self.nanos();
        snap.attach_limits(&mut self.limiter, now);
        let snap = Arc::new(snap);
        for tx in &self.core_tx {
            // Cannot block long: each core drains its channel every tick.
            let _ = tx.send(ToCore::Snapshot(snap.clone()));
        }
        self.reconcile();
        // Wait until every core serves the new snapshot, so that an admin reload that answered
        // 200 is in effect for the next request on any core.
        let until = Instant::now() + CORE_ANSWER_TIMEOUT;
        let mut swapped = 0;
        while swapped < self.core_tx.len() {
            match self.report_rx.recv_deadline(until) {
                Ok(FromCore::Swapped { generation: g, .. }) if g == generation => swapped += 1,
                // Everything else is handled as usual: a reload must not eat other reports.
                Ok(r) => self.on_core_report(r),
                Err(_) => {
                    log_warn!(
                        "control",
                        "only {swapped} of {} cores confirmed generation {generation} in time",
                        self.core_tx.len()
                    );
                    break;
                }
            }
        }
        *lock(&self.shared.token) = snap.config.admin.token.clone();
        self.shared
            .debug_endpoints
            .store(snap.config.admin.debug_endpoints, Ordering::Release);
        self.snap = snap;
        log_info!(
            "control",
            "reloaded {}: generation {generation}, {} API(s)",
            self.path.display(),
            self.snap.apis.len()
        );
        Ok(generation)
    }

    /// Every core's metrics shard (cores that do not answer in time are left out).
    fn collect_shards(&self) -> Vec<metrics::MetricsShard> {
        let (tx, rx) = bounded(self.core_tx.len());
        let mut asked = 0;
        for core in &self.core_tx {
            if core.send(ToCore::Collect(tx.clone())).is_ok() {
                asked += 1;
            }
        }
        let until = Instant::now() + CORE_ANSWER_TIMEOUT;
        let mut shards = Vec::with_capacity(asked);
        while shards.len() < asked {
            match rx.recv_deadline(until) {
                Ok(s) => shards.push(s),
                Err(_) => break,
            }
        }
        shards
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// Settings that only a restart can change; a reload that changes them is refused whole.
fn restart_only_changes(old: &Config, new: &Config, cores: usize) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if old.server.listen != new.server.listen {
        errors.push(
            "server.listen changed: listeners are bound at start; restart to apply".to_string(),
        );
    }
    let tls_listen = |c: &Config| -> Vec<Vec<std::net::SocketAddr>> {
        c.server.tls.iter().map(|t| t.listen.clone()).collect()
    };
    if tls_listen(old) != tls_listen(new) {
        errors.push(
            "server.tls listen addresses changed: listeners are bound at start; restart to apply \
             (certificates reload without one)"
                .to_string(),
        );
    }
    if old.server.backlog != new.server.backlog {
        errors.push("server.backlog changed: restart to apply".to_string());
    }
    if new.server.cores.is_some_and(|c| c != cores) {
        errors.push(format!(
            "server.cores changed ({cores} running): restart to apply"
        ));
    }
    if old.account.reconcile_tick_ms != new.account.reconcile_tick_ms {
        errors.push("account.reconcile_tick_ms changed: restart to apply".to_string());
    }
    if old.admin.listen != new.admin.listen {
        errors.push("admin.listen changed: restart to apply".to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Tells every core to drain, waits for them to stop (the deadline plus a margin) and joins
/// their threads. Returns the connections closed at the deadline.
fn drain_cores(
    core_tx: &[Sender<ToCore>],
    reports: &Receiver<FromCore>,
    threads: Vec<JoinHandle<()>>,
    grace: Duration,
) -> usize {
    let deadline = Instant::now() + grace;
    for tx in core_tx {
        let _ = tx.send(ToCore::Drain { deadline });
    }
    let mut stopped = 0;
    let mut abandoned = 0;
    let wait_until = deadline + Duration::from_secs(2);
    while stopped < threads.len() {
        match reports.recv_deadline(wait_until) {
            Ok(FromCore::Stopped { abandoned: n, .. }) => {
                stopped += 1;
                abandoned += n;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if stopped < threads.len() {
        // A core stuck past the deadline cannot be joined; leave it to process exit.
        log_error!(
            "control",
            "{} core(s) did not stop in time; exiting anyway",
            threads.len() - stopped
        );
        return abandoned;
    }
    for t in threads {
        let _ = t.join();
    }
    abandoned
}

/// SIGHUP (reload), SIGTERM, SIGINT and SIGQUIT (graceful stop; SIGQUIT is what an upgrade
/// sends the old process), delivered as messages by a small thread.
fn signal_channel() -> std::io::Result<Receiver<i32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT])?;
    let (tx, rx) = bounded(16);
    std::thread::Builder::new()
        .name("tollgate-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Locks a mutex, ignoring poisoning (the data is a plain value that is always valid).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! Per-core metrics shards and their merge into Prometheus text.
//!
//! A core owns one `CoreMetrics` and updates it with plain arithmetic (no atomics, no locks).
//! When `/metrics` is read, the control thread asks every core for a `MetricsShard` (a copy,
//! sent over the core's channel once per read), merges them and renders the text here.
//! Series are keyed by a pre-rendered label string so a reload that keeps a route keeps its
//! counters; a core maps the routes of its current snapshot to series slots once per swap.

use std::fmt::Write as _;
use std::sync::Arc;

use ahash::AHashMap;
use hdrhistogram::Histogram;

/// Upper bounds of the `tollgate_request_duration_seconds` buckets, in microseconds.
const BUCKETS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
/// Longest duration the histogram tracks exactly; longer ones are clamped.
const DURATION_US_MAX: u64 = 3_600_000_000;

/// Renders the label set of a route series, escaped for the Prometheus text format.
pub fn route_labels(api: &str, stage: &str, route: &str) -> Arc<str> {
    let mut s = String::with_capacity(api.len() + stage.len() + route.len() + 24);
    s.push_str("api=\"");
    escape_into(&mut s, api);
    s.push_str("\",stage=\"");
    escape_into(&mut s, stage);
    s.push_str("\",route=\"");
    escape_into(&mut s, route);
    s.push('"');
    s.into()
}

/// Renders the label set of a stage series (the cache's), escaped like `route_labels`.
pub fn stage_labels(api: &str, stage: &str) -> Arc<str> {
    let mut s = String::with_capacity(api.len() + stage.len() + 16);
    s.push_str("api=\"");
    escape_into(&mut s, api);
    s.push_str("\",stage=\"");
    escape_into(&mut s, stage);
    s.push('"');
    s.into()
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[derive(Debug, Clone)]
struct Series {
    labels: Arc<str>,
    /// By exact status code; a handful per route, so a linear scan beats a map.
    statuses: Vec<(u16, u64)>,
    /// Requests refused with 429, by the scope of the limit that refused (`THROTTLE_SCOPES`).
    throttled: [u64; 4],
    /// WebSocket messages routed here (from clients) and sent to clients by this route.
    ws_in: u64,
    ws_out: u64,
}

/// Label values of `tollgate_throttled_total`'s `scope`, indexed as `record_throttled` takes them.
pub const THROTTLE_SCOPES: [&str; 4] = ["account", "stage", "route", "connection"];

/// One core's metrics. Not `Sync`; lives in the core's context.
#[derive(Debug)]
pub struct CoreMetrics {
    series: Vec<Series>,
    index: AHashMap<Arc<str>, u32>,
    duration_us: Histogram<u64>,
    duration_sum_us: u64,
    connections_open: u64,
    connections_total: u64,
    ws: WsCounts,
    /// Connections by protocol and TLS version: `[h2 as usize][TLS_LABELS index]`.
    by_protocol: [[u64; 3]; 2],
    tls_handshake_failures: u64,
}

/// WebSocket connection counters of one core (or merged).
#[derive(Debug, Clone, Default)]
struct WsCounts {
    open: u64,
    total: u64,
    /// Connections ended, by close code (1006: no close frame; 1005: a close without a code).
    close_codes: Vec<(u16, u64)>,
    /// Messages pushed through `POST /@connections/{id}`.
    pushed: u64,
}

/// Label values of `tollgate_connections_by_protocol_total`.
const PROTOCOL_LABELS: [&str; 2] = ["h1", "h2"];
const TLS_LABELS: [&str; 3] = ["none", "1.2", "1.3"];

impl Default for CoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoreMetrics {
    pub fn new() -> Self {
        CoreMetrics {
            series: Vec::new(),
            index: AHashMap::new(),
            duration_us: new_histogram(),
            duration_sum_us: 0,
            connections_open: 0,
            connections_total: 0,
            ws: WsCounts::default(),
            by_protocol: [[0; 3]; 2],
            tls_handshake_failures: 0,
        }
    }

    /// The slot of a series, created on first use. Called when a snapshot is swapped in, not
    /// per request.
    pub fn slot(&mut self, labels: &Arc<str>) -> u32 {
        if let Some(&i) = self.index.get(labels) {
            return i;
        }
        let i = self.series.len() as u32;
        self.series.push(Series {
            labels: labels.clone(),
            statuses: Vec::new(),
            throttled: [0; 4],
            ws_in: 0,
            ws_out: 0,
        });
        self.index.insert(labels.clone(), i);
        i
    }

    /// Counts one finished request.
    pub fn record(&mut self, slot: u32, status: u16, elapsed_us: u64) {
        if let Some(s) = self.series.get_mut(slot as usize) {
            match s.statuses.iter_mut().find(|(code, _)| *code == status) {
                Some((_, n)) => *n += 1,
                None => s.statuses.push((status, 1)),
            }
        }
        self.duration_us
            .saturating_record(elapsed_us.clamp(1, DURATION_US_MAX));
        self.duration_sum_us = self.duration_sum_us.saturating_add(elapsed_us);
    }

    /// Counts a 429 by the scope (index into `THROTTLE_SCOPES`) of the limit that refused it.
    pub fn record_throttled(&mut self, slot: u32, scope: usize) {
        if let Some(s) = self.series.get_mut(slot as usize)
            && let Some(n) = s.throttled.get_mut(scope)
        {
            *n += 1;
        }
    }

    pub fn connection_opened(&mut self) {
        self.connections_open += 1;
        self.connections_total += 1;
    }

    /// Counts a connection by the protocol it settled on and its TLS version (`"1.2"`, `"1.3"`).
    pub fn connection_protocol(&mut self, h2: bool, tls: Option<&str>) {
        let t = match tls {
            None => 0,
            Some("1.2") => 1,
            Some(_) => 2,
        };
        self.by_protocol[h2 as usize][t] += 1;
    }

    pub fn tls_handshake_failed(&mut self) {
        self.tls_handshake_failures += 1;
    }

    pub fn connection_closed(&mut self) {
        self.connections_open = self.connections_open.saturating_sub(1);
    }

    /// A WebSocket upgrade completed.
    pub fn ws_opened(&mut self) {
        self.ws.open += 1;
        self.ws.total += 1;
    }

    /// A WebSocket connection ended with this close code.
    pub fn ws_closed(&mut self, code: u16) {
        self.ws.open = self.ws.open.saturating_sub(1);
        match self.ws.close_codes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.ws.close_codes.push((code, 1)),
        }
    }

    /// A message from a client, routed to the route of `slot`.
    pub fn ws_message_in(&mut self, slot: u32) {
        if let Some(s) = self.series.get_mut(slot as usize) {
            s.ws_in += 1;
        }
    }

    /// A message sent to a client by the route of `slot`.
    pub fn ws_message_out(&mut self, slot: u32) {
        if let Some(s) = self.series.get_mut(slot as usize) {
            s.ws_out += 1;
        }
    }

    /// A message pushed to a client through the management API.
    pub fn ws_pushed(&mut self) {
        self.ws.pushed += 1;
    }

    /// A copy to send to the control thread.
    pub fn shard(&self) -> MetricsShard {
        MetricsShard {
            series: self
                .series
                .iter()
                .map(|s| (s.labels.clone(), s.statuses.clone()))
                .collect(),
            throttled: self
                .series
                .iter()
                .filter(|s| s.throttled.iter().any(|&n| n > 0))
                .map(|s| (s.labels.clone(), s.throttled))
                .collect(),
            duration_us: self.duration_us.clone(),
            duration_sum_us: self.duration_sum_us,
            connections_open: self.connections_open,
            connections_total: self.connections_total,
            ws_messages: self
                .series
                .iter()
                .filter(|s| s.ws_in + s.ws_out > 0)
                .map(|s| (s.labels.clone(), s.ws_in, s.ws_out))
                .collect(),
            ws: self.ws.clone(),
            by_protocol: self.by_protocol,
            tls_handshake_failures: self.tls_handshake_failures,
            cache: Vec::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 2 significant digits: ~1% error, a few KiB per core.
    // Cannot fail: the bounds are constants that satisfy low >= 1, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, DURATION_US_MAX, 2).expect("constant histogram bounds are valid")
}

/// One stage's response-cache counters and sizes on one core (or merged): what
/// `tollgate_cache_*` report. Filled by the core from its `CacheShard` when asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// By `CACHE_RESULTS`: answered from the cache, fetched to fill, waited on another
    /// request's fill, sent to the backend without the cache, refetched by an authorized
    /// `Cache-Control: max-age=0`, refused an invalidation with 403.
    pub results: [u64; 6],
    pub evictions: u64,
    pub entries: u64,
    /// Bytes charged against the budget (entries and fills in progress).
    pub bytes: u64,
    pub budget_bytes: u64,
}

/// Label values of `tollgate_cache_requests_total`'s `result`, indexed like
/// `CacheCounts::results`.
pub const CACHE_RESULTS: [&str; 6] = [
    "hit",
    "miss",
    "coalesced",
    "pass",
    "invalidated",
    "forbidden",
];

impl CacheCounts {
    fn add(&mut self, o: &CacheCounts) {
        for (a, b) in self.results.iter_mut().zip(o.results) {
            *a += b;
        }
        self.evictions += o.evictions;
        self.entries += o.entries;
        self.bytes += o.bytes;
        self.budget_bytes += o.budget_bytes;
    }
}

/// One series' label set and its counts by status.
type SeriesCounts = (Arc<str>, Vec<(u16, u64)>);

/// What a core sends when asked for its metrics.
#[derive(Debug, Clone)]
pub struct MetricsShard {
    series: Vec<SeriesCounts>,
    throttled: Vec<(Arc<str>, [u64; 4])>,
    duration_us: Histogram<u64>,
    duration_sum_us: u64,
    connections_open: u64,
    connections_total: u64,
    /// (labels, messages in, messages out) of routes with WebSocket traffic.
    ws_messages: Vec<(Arc<str>, u64, u64)>,
    ws: WsCounts,
    by_protocol: [[u64; 3]; 2],
    tls_handshake_failures: u64,
    /// Per cached stage (`stage_labels`); set by the core (`set_cache`).
    cache: Vec<(Arc<str>, CacheCounts)>,
}

impl MetricsShard {
    /// The core's cache counters, by stage labels.
    pub fn set_cache(&mut self, cache: Vec<(Arc<str>, CacheCounts)>) {
        self.cache = cache;
    }

    /// Requests counted in this shard, all routes and statuses.
    pub fn requests(&self) -> u64 {
        self.series
            .iter()
            .flat_map(|(_, st)| st.iter().map(|&(_, n)| n))
            .sum()
    }
}

/// Merges shards and renders the Prometheus text exposition format (version 0.0.4).
pub fn render(shards: &[MetricsShard]) -> String {
    let mut totals: AHashMap<(&str, u16), u64> = AHashMap::new();
    let mut hist = new_histogram();
    let (mut sum_us, mut open, mut total_conns) = (0u64, 0u64, 0u64);
    let mut by_protocol = [[0u64; 3]; 2];
    let mut handshake_failures = 0u64;
    for sh in shards {
        for (p, row) in sh.by_protocol.iter().enumerate() {
            for (t, n) in row.iter().enumerate() {
                by_protocol[p][t] += n;
            }
        }
        handshake_failures += sh.tls_handshake_failures;
        for (labels, statuses) in &sh.series {
            for &(status, n) in statuses {
                *totals.entry((labels, status)).or_default() += n;
            }
        }
        // Cannot fail: both histograms have the same bounds (new_histogram).
        let _ = hist.add(&sh.duration_us);
        sum_us = sum_us.saturating_add(sh.duration_sum_us);
        open += sh.connections_open;
        total_conns += sh.connections_total;
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_unstable();
    let mut throttled: AHashMap<(&str, usize), u64> = AHashMap::new();
    for sh in shards {
        for (labels, by_scope) in &sh.throttled {
            for (scope, &n) in by_scope.iter().enumerate() {
                if n > 0 {
                    *throttled.entry((labels, scope)).or_default() += n;
                }
            }
        }
    }
    let mut throttled: Vec<_> = throttled.into_iter().collect();
    throttled.sort_unstable();
    let ws_text = render_ws(shards);

    let mut out = String::with_capacity(256 + rows.len() * 96);
    out.push_str(
        "# HELP tollgate_requests_total Requests answered, by API, stage, route and status.\n",
    );
    out.push_str("# TYPE tollgate_requests_total counter\n");
    for ((labels, status), n) in &rows {
        let _ = writeln!(
            out,
            "tollgate_requests_total{{{labels},status=\"{status}\"}} {n}"
        );
    }
    out.push_str("# HELP tollgate_throttled_total Requests refused with 429, by the scope of the limit that refused them.\n");
    out.push_str("# TYPE tollgate_throttled_total counter\n");
    for ((labels, scope), n) in &throttled {
        let _ = writeln!(
            out,
            "tollgate_throttled_total{{{labels},scope=\"{}\"}} {n}",
            THROTTLE_SCOPES[*scope]
        );
    }
    out.push_str("# HELP tollgate_request_duration_seconds Time from a complete request head to the last response byte written.\n");
    out.push_str("# TYPE tollgate_request_duration_seconds histogram\n");
    for &b in &BUCKETS_US {
        let n = hist.count_between(0, b);
        let _ = writeln!(
            out,
            "tollgate_request_duration_seconds_bucket{{le=\"{}\"}} {n}",
            seconds(b)
        );
    }
    let _ = writeln!(
        out,
        "tollgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        hist.len()
    );
    let _ = writeln!(
        out,
        "tollgate_request_duration_seconds_sum {}",
        seconds(sum_us)
    );
    let _ = writeln!(
        out,
        "tollgate_request_duration_seconds_count {}",
        hist.len()
    );
    out.push_str("# HELP tollgate_connections_open Client connections open now.\n");
    out.push_str("# TYPE tollgate_connections_open gauge\n");
    let _ = writeln!(out, "tollgate_connections_open {open}");
    out.push_str("# HELP tollgate_connections_total Client connections accepted.\n");
    out.push_str("# TYPE tollgate_connections_total counter\n");
    let _ = writeln!(out, "tollgate_connections_total {total_conns}");
    out.push_str("# HELP tollgate_connections_by_protocol_total Client connections by the protocol they settled on (ALPN, h2c preface) and TLS version.\n");
    out.push_str("# TYPE tollgate_connections_by_protocol_total counter\n");
    for (p, row) in by_protocol.iter().enumerate() {
        for (t, n) in row.iter().enumerate() {
            let _ = writeln!(
                out,
                "tollgate_connections_by_protocol_total{{protocol=\"{}\",tls=\"{}\"}} {n}",
                PROTOCOL_LABELS[p], TLS_LABELS[t]
            );
        }
    }
    out.push_str(
        "# HELP tollgate_tls_handshake_failures_total TLS handshakes that failed or timed out.\n",
    );
    out.push_str("# TYPE tollgate_tls_handshake_failures_total counter\n");
    let _ = writeln!(
        out,
        "tollgate_tls_handshake_failures_total {handshake_failures}"
    );
    out.push_str(&ws_text);
    out.push_str(&render_cache(shards));
    out
}

/// The response-cache families, per stage, summed over cores.
fn render_cache(shards: &[MetricsShard]) -> String {
    let mut stages: AHashMap<&str, CacheCounts> = AHashMap::new();
    for sh in shards {
        for (labels, c) in &sh.cache {
            stages.entry(labels).or_default().add(c);
        }
    }
    let mut stages: Vec<_> = stages.into_iter().collect();
    stages.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(512 + stages.len() * 512);
    out.push_str("# HELP tollgate_cache_requests_total Requests to cached routes by what the cache did: hit, miss (fetched to fill), coalesced (waited on another request's fill), pass (to the backend without the cache), invalidated (authorized Cache-Control: max-age=0), forbidden (unauthorized one refused with 403).\n");
    out.push_str("# TYPE tollgate_cache_requests_total counter\n");
    for (labels, c) in &stages {
        for (name, n) in CACHE_RESULTS.iter().zip(c.results) {
            let _ = writeln!(
                out,
                "tollgate_cache_requests_total{{{labels},result=\"{name}\"}} {n}"
            );
        }
    }
    type Family = (&'static str, &'static str, fn(&CacheCounts) -> u64);
    let gauges: [Family; 4] = [
        (
            "tollgate_cache_bytes",
            "Bytes held by the stage's cache on every core together (entries, their keys and bookkeeping).",
            |c| c.bytes,
        ),
        (
            "tollgate_cache_capacity_bytes",
            "The stage's cache capacity (capacity_mb), split across cores.",
            |c| c.budget_bytes,
        ),
        (
            "tollgate_cache_entries",
            "Responses held by the stage's cache (an entry replicated on n cores counts n times).",
            |c| c.entries,
        ),
        (
            "tollgate_cache_evictions_total",
            "Entries evicted to make room.",
            |c| c.evictions,
        ),
    ];
    for (name, help, f) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, c) in &stages {
            let _ = writeln!(out, "{name}{{{labels}}} {}", f(c));
        }
    }
    out
}

/// The WebSocket families: connections open and opened, close codes, messages by route.
fn render_ws(shards: &[MetricsShard]) -> String {
    let mut messages: AHashMap<&str, (u64, u64)> = AHashMap::new();
    let mut codes: AHashMap<u16, u64> = AHashMap::new();
    let mut ws = WsCounts::default();
    for sh in shards {
        for (labels, i, o) in &sh.ws_messages {
            let e = messages.entry(labels).or_default();
            e.0 += i;
            e.1 += o;
        }
        for &(code, n) in &sh.ws.close_codes {
            *codes.entry(code).or_default() += n;
        }
        ws.open += sh.ws.open;
        ws.total += sh.ws.total;
        ws.pushed += sh.ws.pushed;
    }
    let mut messages: Vec<_> = messages.into_iter().collect();
    messages.sort_unstable();
    let mut codes: Vec<_> = codes.into_iter().collect();
    codes.sort_unstable();
    let mut out = String::with_capacity(512 + messages.len() * 160);
    out.push_str("# HELP tollgate_websocket_connections_open WebSocket connections open now.\n");
    out.push_str("# TYPE tollgate_websocket_connections_open gauge\n");
    let _ = writeln!(out, "tollgate_websocket_connections_open {}", ws.open);
    out.push_str("# HELP tollgate_websocket_connections_total WebSocket upgrades completed.\n");
    out.push_str("# TYPE tollgate_websocket_connections_total counter\n");
    let _ = writeln!(out, "tollgate_websocket_connections_total {}", ws.total);
    out.push_str("# HELP tollgate_websocket_closes_total WebSocket connections ended, by close code (1006: closed without a close frame).\n");
    out.push_str("# TYPE tollgate_websocket_closes_total counter\n");
    for (code, n) in codes {
        let _ = writeln!(
            out,
            "tollgate_websocket_closes_total{{code=\"{code}\"}} {n}"
        );
    }
    out.push_str("# HELP tollgate_websocket_messages_total WebSocket messages by API, stage, route and direction (in: from clients, out: to clients).\n");
    out.push_str("# TYPE tollgate_websocket_messages_total counter\n");
    for (labels, (i, o)) in messages {
        let _ = writeln!(
            out,
            "tollgate_websocket_messages_total{{{labels},direction=\"in\"}} {i}"
        );
        let _ = writeln!(
            out,
            "tollgate_websocket_messages_total{{{labels},direction=\"out\"}} {o}"
        );
    }
    out.push_str(
        "# HELP tollgate_websocket_pushed_total Messages sent through POST /@connections/{id}.\n",
    );
    out.push_str("# TYPE tollgate_websocket_pushed_total counter\n");
    let _ = writeln!(out, "tollgate_websocket_pushed_total {}", ws.pushed);
    out
}

fn seconds(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_by_labels_and_status() {
        let a_labels = route_labels("shop", "prod", "GET /x");
        let b_labels = route_labels("shop", "prod", "GET /y");
        let mut c0 = CoreMetrics::new();
        let mut c1 = CoreMetrics::new();
        let a0 = c0.slot(&a_labels);
        let a1 = c1.slot(&a_labels);
        let b1 = c1.slot(&b_labels);
        c0.record(a0, 200, 50);
        c0.record(a0, 200, 70);
        c1.record(a1, 200, 3_000);
        c1.record(a1, 404, 10);
        c1.record(b1, 200, 2_000_000);
        let text = render(&[c0.shard(), c1.shard()]);
        assert!(text.contains("tollgate_requests_total{api=\"shop\",stage=\"prod\",route=\"GET /x\",status=\"200\"} 3\n"), "{text}");
        assert!(text.contains("route=\"GET /x\",status=\"404\"} 1\n"));
        assert!(text.contains("route=\"GET /y\",status=\"200\"} 1\n"));
        assert!(
            text.contains("tollgate_request_duration_seconds_bucket{le=\"0.0001\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("tollgate_request_duration_seconds_bucket{le=\"0.005\"} 4\n"));
        assert!(text.contains("tollgate_request_duration_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("tollgate_request_duration_seconds_count 5\n"));
        assert!(
            text.contains("tollgate_request_duration_seconds_sum 2.00313\n"),
            "{text}"
        );
    }

    #[test]
    fn throttled_counts_merge_by_scope() {
        let l = route_labels("shop", "prod", "GET /x");
        let mut c0 = CoreMetrics::new();
        let mut c1 = CoreMetrics::new();
        let (s0, s1) = (c0.slot(&l), c1.slot(&l));
        c0.record_throttled(s0, 0);
        c1.record_throttled(s1, 0);
        c1.record_throttled(s1, 2);
        let text = render(&[c0.shard(), c1.shard()]);
        assert!(text.contains("tollgate_throttled_total{api=\"shop\",stage=\"prod\",route=\"GET /x\",scope=\"account\"} 2\n"), "{text}");
        assert!(text.contains("scope=\"route\"} 1\n"));
        assert!(!text.contains("scope=\"stage\""));
    }

    #[test]
    fn websocket_counters_merge() {
        let l = route_labels("chat", "prod", "send");
        let mut c0 = CoreMetrics::new();
        let mut c1 = CoreMetrics::new();
        let (s0, s1) = (c0.slot(&l), c1.slot(&l));
        c0.ws_opened();
        c0.ws_opened();
        c1.ws_opened();
        c0.ws_message_in(s0);
        c0.ws_message_out(s0);
        c1.ws_message_in(s1);
        c0.ws_closed(1000);
        c1.ws_closed(1000);
        c1.ws_closed(1006);
        c1.ws_pushed();
        let text = render(&[c0.shard(), c1.shard()]);
        for line in [
            // c0: 2 opened, 1 closed; c1: 1 opened, 2 closed (never below 0).
            "tollgate_websocket_connections_open 1\n",
            "tollgate_websocket_connections_total 3\n",
            "tollgate_websocket_closes_total{code=\"1000\"} 2\n",
            "tollgate_websocket_closes_total{code=\"1006\"} 1\n",
            "tollgate_websocket_messages_total{api=\"chat\",stage=\"prod\",route=\"send\",direction=\"in\"} 2\n",
            "tollgate_websocket_messages_total{api=\"chat\",stage=\"prod\",route=\"send\",direction=\"out\"} 1\n",
            "tollgate_websocket_pushed_total 1\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(render(&[c1.shard()]).contains("tollgate_websocket_connections_open 0\n"));
    }

    #[test]
    fn connections_by_protocol_merge() {
        let mut c0 = CoreMetrics::new();
        let mut c1 = CoreMetrics::new();
        c0.connection_protocol(false, None);
        c0.connection_protocol(true, Some("1.3"));
        c1.connection_protocol(true, Some("1.3"));
        c1.connection_protocol(false, Some("1.2"));
        c1.tls_handshake_failed();
        let text = render(&[c0.shard(), c1.shard()]);
        assert!(
            text.contains(
                "tollgate_connections_by_protocol_total{protocol=\"h2\",tls=\"1.3\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("{protocol=\"h1\",tls=\"1.2\"} 1\n"));
        assert!(text.contains("{protocol=\"h1\",tls=\"none\"} 1\n"));
        assert!(text.contains("{protocol=\"h2\",tls=\"none\"} 0\n"));
        assert!(text.contains("tollgate_tls_handshake_failures_total 1\n"));
    }

    #[test]
    fn cache_counts_merge_by_stage() {
        let l = stage_labels("shop", "prod");
        let mut c0 = CoreMetrics::new().shard();
        let mut c1 = CoreMetrics::new().shard();
        let counts = |hit, bytes| CacheCounts {
            results: [hit, 1, 0, 2, 0, 0],
            evictions: 1,
            entries: 3,
            bytes,
            budget_bytes: 100,
        };
        c0.set_cache(vec![(l.clone(), counts(5, 10))]);
        c1.set_cache(vec![(l, counts(7, 20))]);
        let text = render(&[c0, c1]);
        for line in [
            "tollgate_cache_requests_total{api=\"shop\",stage=\"prod\",result=\"hit\"} 12\n",
            "tollgate_cache_requests_total{api=\"shop\",stage=\"prod\",result=\"miss\"} 2\n",
            "tollgate_cache_requests_total{api=\"shop\",stage=\"prod\",result=\"pass\"} 4\n",
            "tollgate_cache_bytes{api=\"shop\",stage=\"prod\"} 30\n",
            "tollgate_cache_capacity_bytes{api=\"shop\",stage=\"prod\"} 200\n",
            "tollgate_cache_entries{api=\"shop\",stage=\"prod\"} 6\n",
            "tollgate_cache_evictions_total{api=\"shop\",stage=\"prod\"} 2\n",
            "# TYPE tollgate_cache_evictions_total counter\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(
            &*route_labels("a\"b", "s\\", "x\ny"),
            r#"api="a\"b",stage="s\\",route="x\ny""#
        );
    }

    #[test]
    fn slots_are_stable() {
        let mut m = CoreMetrics::new();
        let l = route_labels("a", "b", "c");
        assert_eq!(m.slot(&l), m.slot(&route_labels("a", "b", "c")));
    }
}

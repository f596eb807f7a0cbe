//! Throttling: sharded token buckets, reconciled to an exact global limit (ARCHITECTURE.md §4).
//!
//! This module owns the arithmetic and the lease protocol: a [`CoreLimiter`] per data core (the
//! per-request check: no lock, no atomic, no channel), and one [`Reconciler`] on the control
//! thread (the global bucket of every limit and the leases handed out of it). Both are pure state
//! machines: no I/O, no clock (time comes in as [`Nanos`]), no blocking. It does not own the
//! channels, the timers, the 429 response, the metrics or the mapping from config to limit keys.
//!
//! # Wiring
//!
//! ```text
//!  control thread                                        core k
//!  set_limits(keys, now) -> LimitTable ───snapshot────▶  sync(&table)    (on snapshot swap)
//!  tick(now) -> Vec<Grant> ──────at most one per core──▶  apply(grant)
//!                                                        per request:
//!                                                          check(&[account, stage, route][..n])
//!                                                            Err(t) → 429, Retry-After: t.retry_after_secs()
//!                                                          if let Some(r) = early_ask(now) { send r }
//!  on_report(report, now) -> Option<Grant> ◀──────────── each core tick: if let Some(r) = report(now) { send r }
//!     Some(g) only for an early ask: send g back at once
//! ```
//!
//! - Keys are opaque strings the config compiler builds ("account", "stage:api/prod",
//!   "route:api/prod/GET /x"); [`Reconciler::id`] turns each into a compact [`LimitId`] at compile
//!   time, so the request path indexes an array. `Throttled::which` indexes the slice given to
//!   `check`, i.e. says the scope (account, stage, route) for the metric.
//! - After [`Reconciler::set_limits`], call [`Reconciler::tick`] at once and send those grants
//!   with the snapshot: a new or changed limit has no tokens on a core until its first grant.
//! - Give the reconciler a `now` read *after* the reports it is about to process were received
//!   (drain the channel, then read the clock): exactness needs every processed report to have
//!   been written no later than `now`. Cores need no exact clock: `check` takes none; the core's
//!   `now` only measures report periods and spaces early asks.
//! - Call `early_ask` after every `check`, admitted or not: it is a flag test unless the core
//!   refused or spent a lease down to half its target, and it builds at most one message per
//!   `ask_gap_ns` (default: one tick). Upward traffic is thus at most two messages per core per
//!   tick, downward at most two grants; idle cores send nothing.
//!
//! # The protocol
//!
//! Per limit, the reconciler holds a *stock* `G` (fixed point, 10⁻¹² token, so rates are exact in
//! milli-tokens per second) and per core the lease it believes the core holds: granted, minus what
//! the core reported spent or handed back. Call its view `X = G + Σ leases`. The refill is
//! `G += min(r·Δt, b − X)`, done for a limit at every entry point *before* applying what the
//! message says. Grants move whole tokens from `G` into a lease; reports take spent tokens out of
//! the lease and put handed-back ones into `G`. Tokens are created only by the refill.
//!
//! A core spends only what it holds. Each report says, per limit, since the previous one: spent,
//! refused for want of a token (unmet demand), and handed back (lease above the target the
//! reconciler set), plus the send time of the newest grant applied (the reconciler's round-trip
//! estimate). Each core's demand rate is smoothed over a tick; its *horizon* is the configured
//! one plus its round trip. Targets: while no core is short and demand is below the rate, the
//! most generous the supply covers, in tiers (demand × horizon; one token for quiet cores that
//! had traffic, so sparse requests find a token where they last came; an idle reserve of
//! `b / (4·cores)` that shrinks evenly as the supply does). When contended (a core refused
//! within its horizon and a tick, demand ≥ rate, or demand × horizon ≥ supply), targets are
//! demand × horizon only, so quiet cores hand their leases back at their next report; the stock
//! goes out by demand, short ("hungry") cores first, each at most its demand until the grant
//! after next, so a burst drains as fast as requests come but no lump is parked on a core whose
//! traffic moves on.
//!
//! # Why "never over" is exact
//!
//! Let `T` be the tokens that really exist: `G`, leases cores really hold, tokens in messages.
//! The view overstates leases by the spends not yet reported (`U ≥ 0`): `T = X − U`. Let `V` be a
//! single ideal bucket `(r, b)` starting full, fed the admissions when they happened. Claim:
//! `T ≤ V` always; with `T ≥ 0`, `V` never goes negative, i.e. the admissions are ones a single
//! bucket could admit, which is exactly "admitted ≤ b + r·t over every interval of length t".
//! Spends lower both alike; between refills `V` only grows. At a refill at `t_k` (previous at
//! `t_{k−1}`), every spend `S_k` made in `(t_{k−1}, t_k]` is still unreported (reports processed
//! at `t_k` are applied after its refill, and were written before it), so `U ≥ S_k` and
//! `T' = min(T + r·Δt, b − U) ≤ min(V + r·Δt, b) − S_k ≤ V(t_k)`, the last step because a bucket
//! loses least when its spends come as late as possible. (Capping the view `X`, not `T`, is what
//! makes it work.) Returns and grants move tokens without changing `X`; a report can only lower
//! it. The property tests check the resulting sequences against a single integer bucket.
//!
//! # Reload
//!
//! [`Reconciler::set_limits`] keeps an unchanged key as it is (stock, leases, generation). A
//! changed key keeps its id but gets a new generation: its bucket carries the level over,
//! clamped to the new burst (`min(b', X)`: a reload neither hands out a fresh burst nor refills a
//! drained bucket), and every lease of the old generation is revoked: cores drop it on
//! [`CoreLimiter::sync`] (or at the first grant of the new generation) and report it back; until
//! then it still counts against the new bucket. So admissions are feasible for a bucket that ran
//! `(r, b)` until the change, then `(r', b')` from the clamped level. Exception: a reload that
//! lowers the burst below the tokens cores hold starts the new bucket in debt (no refill until
//! repaid, returns beyond `b'` destroyed); `b' + r'·t` is then exact for intervals starting once
//! every core has the new snapshot. Removed keys are dropped; their id is reused only by a later
//! reload, at a newer generation, so late reports about the old key are ignored.
//!
//! # What "never much under" costs, and where it cannot hold
//!
//! Under sustained overload the shortfall against `b + r·T` is time × rate: refill lost while
//! the first spends of a full bucket travel to the reconciler, tokens in the pipeline when the
//! window closes, and, right after traffic moves between cores, the lease the core it left
//! still holds until its quiet report (a whole tick without requests; a shorter quiet period
//! only damps the demand estimate, so the core reports once more) has made the round trip.
//! Measured: typically `r·(3·delay + tick)` (delay = one-way message latency), at most 0.87 of
//! the tested bound `r·(5·delay + 3·tick) + cores + 2` over 3,000 random cases (`promises::shortfall_scan`), on every
//! pattern (one core, moving cores, skewed, random), whenever the burst holds the tokens
//! circulating in the lease loop plus that stranded lease, `b ≥ r·(4·delay + 3·tick) + 2·cores`
//! (with a burst between `r·(3·delay + 2·tick)` and that, each move of the traffic can cost up
//! to `r·(delay + tick)` of refill: the stranded lease keeps the bucket at its cap). Hence ≥ 99%
//! over 10 s while `3·delay + tick` stays under ~100 ms: with the default 5 ms tick and delays up to 2 ticks, 99.64–99.95% (tables in
//! `promises.rs`). It cannot hold (a) for tiny `b + r·T`, where one token is over 1%: rate 1,
//! burst 1, 8 cores admits 10 of 11 in 10 s, exactly what a single bucket admits from the same
//! arrivals (the 11th token is minted at t = 10 s); (b) when the loop latency eats the budget
//! (20 ms ticks with 40 ms delays: 98.2–98.7%); (c) when the burst is smaller than the tokens in
//! the loop: throughput is then about `b` per lease round trip (rate 10,000, burst 100, 5 ms
//! delay: 60–67%). In production the delay is a channel hop (microseconds), so (b) and (c) need
//! `b ≳ r·3·tick`, e.g. 150 tokens for 10,000 rps at a 5 ms tick. Also: requests that land on a
//! core without a token are refused even if another core holds one; for limits with `b` below
//! the number of cores and traffic spread thinly over cores this is the common case until the
//! reconciler moves the tokens (one round trip).

#[cfg(test)]
mod promises;
mod reconciler;
mod shard;
#[cfg(test)]
mod sim;

pub use reconciler::Reconciler;
pub use shard::CoreLimiter;

/// Nanoseconds on the caller's monotonic clock (any epoch, as long as all parties share it).
pub type Nanos = u64;

pub use crate::limits::{
    RECONCILE_TICK_MS, RETRY_AFTER_CLOSED_MS, THROTTLE_RESERVE_DIVISOR as RESERVE_DIVISOR,
};

/// Fixed-point unit of a bucket's stock: 10⁻¹² token, so that a rate in milli-tokens per second
/// times a duration in nanoseconds is an exact integer amount.
const UNIT: u128 = 1_000_000_000_000;

/// A compact per-reconciler index of a limit; cores use it to index an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitId(u32);

impl LimitId {
    /// The array index this id stands for.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A token bucket's parameters: `rate` tokens per second (kept in thousandths, so fractional
/// rates such as 0.5 rps are exact), `burst` tokens of capacity. Rate 0 or burst 0 admits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    rate_milli: u64,
    burst: u64,
}

impl Limit {
    /// `rate` whole tokens per second, `burst` tokens.
    pub const fn per_second(rate: u64, burst: u64) -> Self {
        Limit {
            rate_milli: rate.saturating_mul(1000),
            burst,
        }
    }

    /// `rate_milli` thousandths of a token per second, `burst` tokens.
    pub const fn per_second_milli(rate_milli: u64, burst: u64) -> Self {
        Limit { rate_milli, burst }
    }

    /// Thousandths of a token per second.
    pub fn rate_milli(self) -> u64 {
        self.rate_milli
    }

    /// Bucket capacity in tokens.
    pub fn burst(self) -> u64 {
        self.burst
    }

    /// True when the limit admits nothing at all.
    pub fn is_closed(self) -> bool {
        self.rate_milli == 0 || self.burst == 0
    }
}

/// The generation of every limit id, for [`CoreLimiter::sync`]: sent to cores with each config
/// snapshot. A core drops any lease whose generation is older than the table's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitTable {
    generations: Vec<u32>,
}

impl LimitTable {
    /// Number of ids (live or vacant) the table covers.
    pub fn len(&self) -> usize {
        self.generations.len()
    }

    /// True when no limit was ever configured.
    pub fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }
}

/// Refusal of [`CoreLimiter::check`]: the first listed limit that had no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Index into the `ids` slice given to `check`.
    pub which: usize,
    /// Estimated wait until that limit is likely to have a token again.
    pub retry_after_ms: u64,
}

impl Throttled {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// Timing knobs shared by both sides; build it once from the config and give it to both
/// (the core uses only `ask_gap_ns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Reconciliation tick: cores report and the control thread grants this often.
    pub tick_ns: u64,
    /// How long a lease should last at a core's recent demand (covers one tick plus the round trip).
    pub horizon_ns: u64,
    /// Minimum spacing of a core's early asks.
    pub ask_gap_ns: u64,
}

impl LeaseConfig {
    /// Defaults derived from a tick: horizon two ticks, at most one early ask per tick.
    pub fn with_tick_ms(tick_ms: u64) -> Self {
        let tick_ns = tick_ms.max(1) * 1_000_000;
        LeaseConfig {
            tick_ns,
            horizon_ns: 2 * tick_ns,
            ask_gap_ns: tick_ns,
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::with_tick_ms(RECONCILE_TICK_MS)
    }
}

/// What one core tells the control thread once per tick (or early, after a refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreReport {
    core: usize,
    early: bool,
    period_ns: u64,
    /// `sent_at` of the newest grant applied since the previous report: the reconciler learns
    /// the round trip from it, and sizes leases to cover the tokens in flight.
    echo: Option<Nanos>,
    entries: Vec<ReportEntry>,
}

impl CoreReport {
    /// The core that wrote it.
    pub fn core(&self) -> usize {
        self.core
    }

    /// True for an early ask, which the control thread answers at once.
    pub fn is_early(&self) -> bool {
        self.early
    }
}

/// One limit's line in a [`CoreReport`], all counts since the previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReportEntry {
    id: u32,
    generation: u32,
    /// Tokens spent (requests admitted).
    spent: u64,
    /// Requests refused because this limit's lease was empty.
    unmet: u64,
    /// Tokens handed back unspent (surplus over the target, or a revoked generation).
    returned: u64,
}

/// The control thread's answer for one core: more tokens and new targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    core: usize,
    /// The reconciler's `now` when it wrote the grant, echoed back in a report.
    sent_at: Nanos,
    entries: Vec<GrantEntry>,
}

impl Grant {
    /// The core this grant is for.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Tokens granted in total, over all limits (for metrics and tests).
    pub fn tokens(&self) -> u64 {
        self.entries.iter().map(|e| e.tokens).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GrantEntry {
    id: u32,
    generation: u32,
    /// Tokens added to the core's lease.
    tokens: u64,
    /// Lease the core may keep across a report; it hands back anything above.
    target: u64,
    retry_after_ms: u32,
}

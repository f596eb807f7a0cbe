//! Throttling: sharded token buckets, reconciled to an exact global limit (ARCHITECTURE.md §4).
//!
//! This module owns the arithmetic and the lease protocol: a [`CoreLimiter`] per data core (the
//! per-request check, no lock, no atomic, no channel), and one [`Reconciler`] on the control
//! thread (the global bucket of every limit and the leases handed out of it). Both are pure state
//! machines: they do no I/O, read no clock (time comes in as [`Nanos`]) and never block. It does
//! not own the channels, the tick timers, the 429 response, the metrics or the mapping from config
//! to limit keys: the runtime and the config compiler drive it.
//!
//! # Wiring
//!
//! ```text
//!  control thread                                      core k
//!  ──────────────                                      ──────
//!  set_limits(keys, now) -> LimitTable ──snapshot──▶   sync(&table)   (with the new snapshot)
//!  tick(now) -> Vec<Grant>   ─────────one per core──▶  apply(grant)
//!                                                      per request:
//!                                                        check(&[account, stage, route][..n])
//!                                                        Err(t) → 429, Retry-After t.retry_after_secs()
//!                                                               → if let Some(r) = early_ask(now) { send r }
//!  on_report(report, now) -> Option<Grant> ◀─────────  every core tick: if let Some(r) = report(now) { send r }
//!     (Some only for an early ask: send it back at once)
//! ```
//!
//! - Limit keys are opaque strings the config compiler builds ("account", "stage:api/prod",
//!   "route:api/prod/GET /x"); [`Reconciler::id`] turns one into a compact [`LimitId`] once, at
//!   compile time, so the request path indexes an array instead of hashing.
//! - After [`Reconciler::set_limits`], call [`Reconciler::tick`] at once and send the grants with
//!   the snapshot: a new or changed limit has no tokens on any core until its first grant lands.
//! - `now` given to the reconciler must be read *after* the reports it is about to process were
//!   received (read the clock after draining the channel, not before): the exactness argument
//!   below needs every processed report to have been written no later than `now`.
//! - Cores do not need an exact clock: [`CoreLimiter::check`] takes none, and the core's `now`
//!   only measures report periods (demand rates) and spaces early asks.
//!
//! # The protocol
//!
//! Per limit, the reconciler holds a *stock* `G` (fixed point, 10⁻¹² token), and per core the
//! lease it believes the core still holds: what it granted, minus what the core reported spent
//! or gave back. Call `X = G + Σ leases` (its view). The refill is `G += min(r·Δt, b − X)`, done
//! lazily for a limit at every entry point (`tick`, `on_report`, `set_limits`) *before* applying
//! anything the message says. Grants move whole tokens from `G` into a lease; reports move spent
//! tokens out of the lease and returned ones back into `G`. So tokens are created only by the
//! refill, at most `r·Δt` per `Δt`.
//!
//! A core spends only tokens it holds. At each core tick it reports, per limit: tokens spent,
//! requests refused for lack of a token (unmet demand), and tokens it gives back (its lease above
//! the `target` the reconciler last set for it). A refusal also lets it send one *early ask* (the
//! same report, flagged), at most one per `ask_gap_ns`; the reconciler answers that one at once.
//!
//! Lease sizing, per limit, per core: `base = demand rate × horizon`. If the stock and the leases
//! cover every core's `max(base, reserve)` (uncontended; `reserve = max(1, b / (4·cores))`, so
//! an idle core can admit a short burst without asking), that is each core's target; otherwise
//! (contended) targets are `base` and the stock is split in proportion to the shortfalls. An idle
//! core's target then drops to 0, so it hands its lease back at its next report. An early ask
//! gets everything that the other cores' shortfalls leave over (all of it when only that core is
//! busy: a burst drains at once, as it would from a single bucket), else its proportional share.
//!
//! # Why "never over" is exact
//!
//! Let `T` be the tokens that really exist: `G`, the leases cores really hold, and tokens in
//! flight in messages. The reconciler's view overstates the leases by the spends it has not yet
//! heard of (`U ≥ 0`), so `T = X − U`. Let `V` be a single ideal bucket `(r, b)`, starting full,
//! fed the admissions at the moments they happened. Claim: `T ≤ V` always, hence `V ≥ T ≥ 0`, i.e.
//! the admissions are exactly those a single bucket could have admitted, which is the same as
//! "admitted ≤ b + r·t over every interval of length t". Spends lower `T` and `V` alike; between
//! refills `V` only grows. At a refill at `t_k` (previous one at `t_{k−1}`), every spend `S_k` made
//! in `(t_{k−1}, t_k]` is still unreported, because reports are applied after the refill of the
//! moment they are processed and were written before it. So `U ≥ S_k` and
//! `T_new = min(T + r·Δt, b − U) ≤ min(V_{k−1} + r·Δt, b) − S_k ≤ V(t_k)`, the last step because a
//! bucket loses the least when its spends come as late as possible. (Counting unreported spends
//! as still leased is what makes this work: capping `X`, not `T`, at `b`.)
//!
//! # Reload
//!
//! [`Reconciler::set_limits`] keeps a key whose `Limit` is unchanged as it is. A changed key keeps
//! its `LimitId` but gets a new generation: its new bucket inherits the old one's level clamped to
//! the new burst (`min(b', X)`, so a reload neither hands out a fresh burst nor resets a drained
//! bucket), and every outstanding lease of the old generation is revoked: cores drop it on
//! [`CoreLimiter::sync`] (or on the first grant of the new generation) and report it back. Until
//! they have, those tokens still count against the new bucket (as "phantom" leases), so the
//! admissions after the change are feasible for a bucket that ran with `(r, b)` until the change
//! and then with `(r', b')` from level `min(b', level)`. Exception: a reload that lowers the
//! burst below the tokens cores hold at that moment; the new bucket then starts in debt (no
//! refill until it is repaid), and the bound `b' + r'·t` is exact for intervals starting after
//! every core has seen the new snapshot. Removed keys are dropped; their id is reused only by a
//! later reload, with a newer generation, and stale reports about it are ignored.
//!
//! # What "never much under" costs
//!
//! Under sustained overload everything the refill creates is admitted except (a) tokens still in
//! the pipeline when the window ends (about `r·(ask_gap + 2·delay)`, delay = one-way message
//! latency) and (b) refill lost while `X` sits at `b` with spends not yet reported (about
//! `r·(ask_gap + 2·delay)` once, when a full bucket starts being drained). Both are bounded by
//! time × rate, so the 99% promise over 10 s holds whenever `b + 10·r` is large next to
//! `r·(tick + 2·delay)` and the burst covers the tokens in flight, `b ≳ 2·r·(tick + 2·delay)`;
//! see the tables in `sim.rs` and the limitation notes there for small limits.

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

/// Default reconciliation tick, in milliseconds (`[account] reconcile_tick_ms`).
// Tuning constants of this module; they belong next to the other limits in `crate::limits`
// once the config wires `reconcile_tick_ms`.
pub const RECONCILE_TICK_MS: u64 = 5;
/// Retry-After for a limit that admits nothing (rate 0 or burst 0), in milliseconds.
pub const RETRY_AFTER_CLOSED_MS: u32 = 60_000;
/// An uncontended core keeps at least `burst / (RESERVE_DIVISOR · cores)` tokens (and at least 1).
pub const RESERVE_DIVISOR: u64 = 4;

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

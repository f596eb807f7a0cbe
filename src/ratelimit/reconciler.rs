//! The control-thread side: the global bucket of every limit, the leases handed out of it, the
//! lease sizing, and reload (ids, generations, revocation).
//!
//! Owns no channel and no timer: the control thread calls [`Reconciler::tick`] on its timer and
//! [`Reconciler::on_report`] per message, and sends what they return.

use std::collections::HashMap;

use super::{
    CoreReport, Grant, GrantEntry, LeaseConfig, Limit, LimitId, LimitTable, Nanos, RESERVE_DIVISOR,
    RETRY_AFTER_CLOSED_MS, ReportEntry, UNIT,
};

/// The global state of every limit, and the only place tokens are created.
#[derive(Debug)]
pub struct Reconciler {
    config: LeaseConfig,
    cores: usize,
    keys: HashMap<Box<str>, u32>,
    /// Indexed by `LimitId`.
    ids: Vec<IdSlot>,
    /// Ids vacated by earlier reloads, reusable by later ones.
    free: Vec<u32>,
    /// Generations are never reused, so any two of them compare by age.
    last_gen: u32,
    /// Per core: smoothed time from writing a grant to processing the report that echoes it.
    rtt_ns: Vec<u64>,
}

#[derive(Debug)]
struct IdSlot {
    /// Generation of the live bucket, or the one at which the id was vacated.
    generation: u32,
    bucket: Option<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    limit: Limit,
    /// First generation of this key on this id; older reports belong to another key.
    first_gen: u32,
    /// Tokens not leased out, in `UNIT`s. Invariant (outside a debt after reload):
    /// `stock + outstanding · UNIT ≤ burst · UNIT`.
    stock: u128,
    refilled_at: Nanos,
    /// Σ over cores of `lease + phantom`, in tokens.
    outstanding: u64,
    shares: Vec<Share>,
    /// Where the next leftover token of a contended split goes, so rounding favours no core.
    rr: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Share {
    /// Tokens granted in this generation, minus those reported spent or handed back.
    lease: u64,
    /// The same for older generations of this key, until the core reports them dropped.
    phantom: u64,
    /// Demand (spent + refused) at the last report, in milli-tokens per second.
    rate_milli: u64,
    /// When a report last showed demand, `None` if never.
    demand_at: Option<Nanos>,
    /// When a report last counted refused requests: for a while after, this core is short
    /// ("hungry"), whatever its target says.
    refused_at: Option<Nanos>,
    /// Target last sent to the core, `None` before the first one of this generation.
    target_sent: Option<u64>,
    // Scratch of one planning pass.
    lingering: bool,
    hungry: bool,
    lump: u64,
    target: u64,
    short: u64,
    grant: u64,
}

impl Reconciler {
    /// A reconciler for `cores` data cores (numbered 0..cores) with no limits yet.
    pub fn new(cores: usize, config: LeaseConfig) -> Self {
        Reconciler {
            config,
            cores: cores.max(1),
            keys: HashMap::new(),
            ids: Vec::new(),
            free: Vec::new(),
            last_gen: 0,
            rtt_ns: vec![0; cores.max(1)],
        }
    }

    /// Replaces the set of limits (at start and on every reload) and returns the table cores
    /// sync to. Unchanged keys keep their bucket and leases; changed ones get a new generation
    /// (level carried over, clamped to the new burst; old leases revoked, see the module doc);
    /// new keys start full; keys not listed are removed. A key listed twice: the last one wins.
    pub fn set_limits<K: AsRef<str>>(
        &mut self,
        limits: impl IntoIterator<Item = (K, Limit)>,
        now: Nanos,
    ) -> LimitTable {
        // Ids listed in this reload; ids beyond the old length are new and listed by definition.
        let mut listed = vec![false; self.ids.len()];
        for (key, limit) in limits {
            let key = key.as_ref();
            if let Some(&id) = self.keys.get(key) {
                let id = id as usize;
                listed[id] = true;
                let changed = self.ids[id]
                    .bucket
                    .as_ref()
                    .is_some_and(|b| b.limit != limit);
                if changed {
                    let generation = self.next_gen();
                    let slot = &mut self.ids[id];
                    if let Some(bucket) = slot.bucket.as_mut() {
                        bucket.recreate(limit, now);
                        slot.generation = generation;
                    }
                }
                continue;
            }
            let generation = self.next_gen();
            let slot = IdSlot {
                generation,
                bucket: Some(Bucket::new(limit, generation, self.cores, now)),
            };
            let id = match self.free.pop() {
                Some(id) => {
                    listed[id as usize] = true;
                    self.ids[id as usize] = slot;
                    id
                }
                None => {
                    self.ids.push(slot);
                    (self.ids.len() - 1) as u32
                }
            };
            self.keys.insert(key.into(), id);
        }
        // Remove after adding, so an id freed now is not handed to another key in the same
        // reload, while cores may still run requests of the old snapshot against it.
        let mut freed = Vec::new();
        for (id, &seen) in listed.iter().enumerate() {
            if !seen && self.ids[id].bucket.is_some() {
                let generation = self.next_gen();
                self.ids[id] = IdSlot {
                    generation,
                    bucket: None,
                };
                freed.push(id as u32);
            }
        }
        self.keys
            .retain(|_, id| self.ids[*id as usize].bucket.is_some());
        self.free.extend(freed);
        self.table()
    }

    /// The id of a configured key, for compiling snapshots.
    pub fn id(&self, key: &str) -> Option<LimitId> {
        self.keys.get(key).map(|&id| LimitId(id))
    }

    /// The current generations of all ids.
    pub fn table(&self) -> LimitTable {
        LimitTable {
            generations: self.ids.iter().map(|s| s.generation).collect(),
        }
    }

    /// The limit configured for `id`.
    pub fn limit(&self, id: LimitId) -> Option<Limit> {
        self.bucket(id).map(|b| b.limit)
    }

    /// Whole tokens in the global stock of `id` (not leased out), as of its last refill.
    pub fn available(&self, id: LimitId) -> Option<u64> {
        self.bucket(id).map(Bucket::avail)
    }

    /// Tokens leased out for `id` and not yet reported spent or handed back.
    pub fn outstanding(&self, id: LimitId) -> Option<u64> {
        self.bucket(id).map(|b| b.outstanding)
    }

    /// Takes in one core's report. Returns the answer to send back at once when it is an early
    /// ask (possibly empty-handed: `None`); regular reports are answered by the next tick.
    pub fn on_report(&mut self, report: CoreReport, now: Nanos) -> Option<Grant> {
        let core = report.core;
        if core >= self.cores {
            return None;
        }
        let tick = self.config.tick_ns.max(1);
        let period_ns = report.period_ns;
        if let Some(sent_at) = report.echo {
            let sample = now.saturating_sub(sent_at);
            let rtt = &mut self.rtt_ns[core];
            *rtt = if *rtt == 0 {
                sample
            } else {
                (7 * *rtt + sample) / 8
            };
        }
        let mut answer = Vec::new();
        for e in &report.entries {
            let Some(slot) = self.ids.get_mut(e.id as usize) else {
                continue;
            };
            let Some(bucket) = slot.bucket.as_mut() else {
                continue;
            };
            // Refill before applying: the spends in this report may be the reason the bucket
            // looked full until now, and the refill up to now must not count on their room.
            bucket.refill(now);
            if e.generation == slot.generation {
                bucket.settle(core, e, false);
                let share = &mut bucket.shares[core];
                share.rate_milli =
                    demand_rate(share.rate_milli, e.spent + e.unmet, period_ns, tick);
                if e.unmet > 0 {
                    share.refused_at = Some(now);
                }
                if e.spent + e.unmet > 0 {
                    share.demand_at = Some(now);
                }
                // An early ask is about the limits it is spending (refused, or down to half).
                if report.early && e.spent + e.unmet > 0 {
                    let who = (e.id, slot.generation, Some(core));
                    bucket.plan(&self.config, now, &self.rtt_ns, who, |_, g| answer.push(g));
                }
            } else if (bucket.first_gen..slot.generation).contains(&e.generation) {
                bucket.settle(core, e, true);
            }
        }
        (!answer.is_empty()).then_some(Grant {
            core,
            sent_at: now,
            entries: answer,
        })
    }

    /// The periodic pass: refills every bucket and tops up every core's leases towards its
    /// target. At most one grant per core; cores with nothing new get none.
    pub fn tick(&mut self, now: Nanos) -> Vec<Grant> {
        let mut per_core: Vec<Vec<GrantEntry>> = vec![Vec::new(); self.cores];
        for (id, slot) in self.ids.iter_mut().enumerate() {
            let Some(bucket) = slot.bucket.as_mut() else {
                continue;
            };
            bucket.refill(now);
            let who = (id as u32, slot.generation, None);
            bucket.plan(&self.config, now, &self.rtt_ns, who, |core, g| {
                per_core[core].push(g)
            });
        }
        per_core
            .into_iter()
            .enumerate()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(core, entries)| Grant {
                core,
                sent_at: now,
                entries,
            })
            .collect()
    }

    fn bucket(&self, id: LimitId) -> Option<&Bucket> {
        self.ids.get(id.index()).and_then(|s| s.bucket.as_ref())
    }

    fn next_gen(&mut self) -> u32 {
        self.last_gen += 1;
        self.last_gen
    }
}

impl Bucket {
    fn new(limit: Limit, generation: u32, cores: usize, now: Nanos) -> Self {
        let stock = if limit.is_closed() {
            0
        } else {
            u128::from(limit.burst) * UNIT
        };
        Bucket {
            limit,
            first_gen: generation,
            stock,
            refilled_at: now,
            outstanding: 0,
            shares: vec![Share::default(); cores],
            rr: 0,
        }
    }

    /// Whole tokens in the stock. The stock never exceeds the burst (refill, returns and
    /// reloads all clamp to it), so this fits.
    fn avail(&self) -> u64 {
        (self.stock / UNIT) as u64
    }

    fn cap(&self) -> u128 {
        u128::from(self.limit.burst) * UNIT
    }

    fn held(&self) -> u128 {
        self.stock + u128::from(self.outstanding) * UNIT
    }

    /// The only place tokens are created: `r·Δt`, capped so that stock plus every lease the
    /// reconciler still counts (unreported spends included) stays within the burst.
    fn refill(&mut self, now: Nanos) {
        let dt = now.saturating_sub(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        if self.limit.is_closed() {
            return;
        }
        let headroom = self.cap().saturating_sub(self.held());
        self.stock += (u128::from(self.limit.rate_milli) * u128::from(dt)).min(headroom);
    }

    /// Applies a report line: spends leave the lease (or the phantom of an older generation),
    /// returned tokens go back into the stock. Never raises `stock + outstanding`.
    fn settle(&mut self, core: usize, e: &ReportEntry, phantom: bool) {
        let share = &mut self.shares[core];
        let held = if phantom {
            &mut share.phantom
        } else {
            &mut share.lease
        };
        let spent = e.spent.min(*held);
        *held -= spent;
        let returned = e.returned.min(*held);
        *held -= returned;
        self.outstanding -= spent + returned;
        // Returned tokens keep their room in the bucket; after a reload into debt they only
        // refill the stock up to the new burst, and the rest is destroyed.
        let room = self.cap().saturating_sub(self.held());
        self.stock += (u128::from(returned) * UNIT).min(room);
    }

    /// Re-creates the bucket under a new limit: the level carries over, clamped to the new
    /// burst; every lease becomes phantom (revoked, still counted until reported dropped).
    fn recreate(&mut self, limit: Limit, now: Nanos) {
        self.refill(now);
        let level = self.held().min(u128::from(limit.burst) * UNIT);
        for share in &mut self.shares {
            share.phantom += share.lease;
            share.lease = 0;
            share.target_sent = None;
        }
        let leased = u128::from(self.outstanding) * UNIT;
        self.stock = if limit.is_closed() {
            0
        } else {
            level.saturating_sub(leased)
        };
        self.limit = limit;
    }

    /// Sets every core's target and grants towards it (all cores on a tick, one on an early
    /// ask), calling `emit` for each core whose lease or target changed.
    fn plan(
        &mut self,
        config: &LeaseConfig,
        now: Nanos,
        rtt_ns: &[u64],
        (id, generation, only): (u32, u32, Option<usize>),
        mut emit: impl FnMut(usize, GrantEntry),
    ) {
        let avail = if self.limit.is_closed() {
            0
        } else {
            self.avail()
        };
        let contended = self.set_targets(config, now, rtt_ns, avail);
        match (contended, only) {
            (false, None) => self.top_up(avail),
            (false, Some(core)) => {
                let s = &mut self.shares[core];
                s.grant = s.short.min(avail);
            }
            (true, None) => self.share_out(avail),
            (true, Some(core)) => {
                // Its part of the stock by demand, among the hungry cores if it is one, else
                // among all; the rest stays for the others (they ask too, or get it at the
                // tick). An empty-handed hungry core gets at least a token if there is one.
                let hungry = self.shares[core].hungry;
                let rate: u128 = self
                    .shares
                    .iter()
                    .filter(|s| s.hungry || !hungry)
                    .map(|s| u128::from(s.rate_milli))
                    .sum();
                let s = &mut self.shares[core];
                let part = (u128::from(avail) * u128::from(s.rate_milli) / rate.max(1)) as u64;
                let floor = u64::from(hungry && s.lease == 0);
                s.grant = s.short.min(part).max(floor).min(avail);
                s.target = s.target.max(s.lease + s.grant);
            }
        }

        let retry_after_ms = self.retry_after_ms();
        for (core, s) in self.shares.iter_mut().enumerate() {
            if only.is_some_and(|c| c != core) {
                continue;
            }
            if s.grant == 0 && s.target_sent == Some(s.target) {
                continue;
            }
            s.lease += s.grant;
            self.outstanding += s.grant;
            self.stock -= u128::from(s.grant) * UNIT;
            s.target_sent = Some(s.target);
            emit(
                core,
                GrantEntry {
                    id,
                    generation,
                    tokens: s.grant,
                    target: s.target,
                    retry_after_ms,
                },
            );
        }
    }

    /// Sets every core's target; says whether the limit is contended.
    ///
    /// A core's horizon is the configured one plus its measured round trip, so that a lease
    /// covers the tokens in flight to it as well as its demand until the next grant.
    ///
    /// Contended: some core refused requests within its horizon and a tick ("hungry"), total
    /// demand is at or above the rate (the stock is draining), or demand over the horizon
    /// exceeds the supply (stock plus leases). Then targets are current demand only, so quiet
    /// cores hand their leases back; hungry cores aim one tick further and share the stock by
    /// demand (see `share_out`). Otherwise targets are the most generous the supply covers,
    /// tier by tier: current demand over the horizon; one token for quiet cores that had
    /// demand (those already holding one first, then the most recently busy), so sparse
    /// traffic (under a request per tick) finds a token where it last came; and the idle
    /// reserve, which shrinks evenly as the supply does (no cliff that would make every core
    /// hand its lease back at once).
    fn set_targets(
        &mut self,
        config: &LeaseConfig,
        now: Nanos,
        rtt_ns: &[u64],
        avail: u64,
    ) -> bool {
        let closed = self.limit.is_closed();
        let reserve = (self.limit.burst / (RESERVE_DIVISOR * self.shares.len() as u64)).max(1);
        let (mut fast, mut held, mut lingerers, mut demand) = (0u128, 0u128, 0u128, 0u128);
        let mut hungry = false;
        for (s, &rtt) in self.shares.iter_mut().zip(rtt_ns) {
            let horizon_ns = config.horizon_ns + rtt;
            let lump_ns = horizon_ns + config.tick_ns;
            s.target = if closed {
                0
            } else {
                tokens_for(s.rate_milli, horizon_ns)
            };
            s.lingering = !closed && s.target == 0 && s.demand_at.is_some();
            s.hungry = !closed
                && s.refused_at
                    .is_some_and(|at| now.saturating_sub(at) <= lump_ns);
            s.lump = tokens_for(s.rate_milli, lump_ns);
            s.grant = 0;
            fast += u128::from(s.target);
            held += u128::from(s.lease);
            lingerers += u128::from(s.lingering);
            demand += u128::from(s.rate_milli);
            hungry |= s.hungry;
        }
        let supply = u128::from(avail) + held;
        let draining = demand >= u128::from(self.limit.rate_milli);
        let contended = !closed && (hungry || draining || fast >= supply);
        if contended {
            // A hungry core keeps at least a token even when its demand estimate is zero:
            // sparse traffic (under a request per tick) refused once would otherwise have every
            // lease taken back until the hunger expires, and the next request refused again.
            for s in self.shares.iter_mut().filter(|s| s.hungry) {
                s.target = s.lump.max(1);
            }
        } else if !closed {
            let mut left = supply - fast;
            if lingerers <= left {
                left -= lingerers;
                for s in self.shares.iter_mut().filter(|s| s.lingering) {
                    s.target = 1;
                }
            } else {
                for s in self
                    .shares
                    .iter_mut()
                    .filter(|s| s.lingering && s.lease > 0)
                {
                    if left > 0 {
                        s.target = 1;
                        left -= 1;
                    }
                }
                while left > 0 {
                    let next = self
                        .shares
                        .iter_mut()
                        .filter(|s| s.lingering && s.target == 0)
                        .max_by_key(|s| s.demand_at);
                    let Some(s) = next else { break };
                    s.target = 1;
                    left -= 1;
                }
            }
            let extra: u128 = self
                .shares
                .iter()
                .map(|s| u128::from(reserve.saturating_sub(s.target)))
                .sum();
            let per_core = if extra <= left {
                reserve
            } else {
                (left / self.shares.len() as u128) as u64
            };
            for s in &mut self.shares {
                s.target = s.target.max(reserve.min(s.target + per_core));
            }
        }
        for s in &mut self.shares {
            s.short = s.target.saturating_sub(s.lease);
        }
        contended
    }

    /// Uncontended: every shortfall, as far as the stock goes.
    fn top_up(&mut self, mut avail: u64) {
        for s in &mut self.shares {
            s.grant = s.short.min(avail);
            avail -= s.grant;
        }
    }

    /// Contended: every core's shortfall, at most its part of the stock by demand, where the
    /// hungry cores share what the others leave (a single bucket would serve their waiting
    /// requests first come, first served, which is by demand too). Without demand anywhere,
    /// by shortfall. Leftover tokens of the rounding go round the cores one by one.
    fn share_out(&mut self, avail: u64) {
        let total_rate: u128 = self.shares.iter().map(|s| u128::from(s.rate_milli)).sum();
        let hungry_rate: u128 = self
            .shares
            .iter()
            .filter(|s| s.hungry)
            .map(|s| u128::from(s.rate_milli))
            .sum();
        let total_short: u128 = self.shares.iter().map(|s| u128::from(s.short)).sum();
        let mut left = avail;
        for s in self.shares.iter_mut().filter(|s| !s.hungry) {
            let part = (u128::from(avail) * u128::from(s.rate_milli))
                .checked_div(total_rate)
                .unwrap_or_else(|| u128::from(avail) * u128::from(s.short) / total_short.max(1));
            s.grant = s.short.min(part as u64);
            left -= s.grant;
        }
        let pool = u128::from(left);
        for s in self.shares.iter_mut().filter(|s| s.hungry) {
            let part = (pool * u128::from(s.rate_milli))
                .checked_div(hungry_rate)
                .unwrap_or(0);
            s.grant = s.short.min(part as u64);
            left -= s.grant;
        }
        let n = self.shares.len();
        let mut i = self.rr;
        // Rounding loses less than one token per core, so one round suffices.
        for _ in 0..n {
            if left == 0 {
                break;
            }
            let s = &mut self.shares[i % n];
            if s.grant < s.short {
                s.grant += 1;
                left -= 1;
            }
            i += 1;
        }
        self.rr = i % n;
    }

    /// Time to mint one token (1 s at 1 rps), or a minute for a limit that admits nothing.
    fn retry_after_ms(&self) -> u32 {
        if self.limit.is_closed() {
            return RETRY_AFTER_CLOSED_MS;
        }
        let ms = 1_000_000u64.div_ceil(self.limit.rate_milli);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }
}

/// The demand rate after `count` requests over the last `period_ns`, in milli-tokens per
/// second: the plain average over a period of a tick or more, else a moving average with a
/// time constant of a tick (`R ← R·(1 − p/τ) + count/τ`, which settles on the true rate of a
/// steady flow however short the periods, e.g. an early ask just after a tick report).
fn demand_rate(previous: u64, count: u64, period_ns: u64, tick_ns: u64) -> u64 {
    let fresh = |ns: u64| u128::from(count) * UNIT / u128::from(ns.max(1));
    let rate = if period_ns >= tick_ns {
        fresh(period_ns)
    } else {
        let kept = u128::from(previous) * u128::from(tick_ns - period_ns) / u128::from(tick_ns);
        kept + fresh(tick_ns)
    };
    u64::try_from(rate).unwrap_or(u64::MAX)
}

/// Whole tokens (rounded up) that `rate_milli` consumes over `ns`.
fn tokens_for(rate_milli: u64, ns: u64) -> u64 {
    let units = u128::from(rate_milli) * u128::from(ns);
    u64::try_from(units.div_ceil(UNIT)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::{CoreLimiter, LimitTable};
    use super::*;

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    fn config() -> LeaseConfig {
        LeaseConfig::with_tick_ms(5)
    }

    fn report(core: usize, early: bool, lines: &[(u32, u32, u64, u64, u64)]) -> CoreReport {
        CoreReport {
            core,
            early,
            period_ns: 5 * MS,
            echo: None,
            entries: lines
                .iter()
                .map(|&(id, generation, spent, unmet, returned)| ReportEntry {
                    id,
                    generation,
                    spent,
                    unmet,
                    returned,
                })
                .collect(),
        }
    }

    fn entry(grant: &Grant, id: u32) -> GrantEntry {
        *grant
            .entries
            .iter()
            .find(|e| e.id == id)
            .expect("an entry for the limit")
    }

    #[test]
    fn new_limits_start_full_with_compact_ids() {
        let mut rec = Reconciler::new(2, config());
        let table = rec.set_limits(
            [
                ("account", Limit::per_second(100, 50)),
                ("route", Limit::per_second(10, 10)),
            ],
            0,
        );
        assert_eq!(
            table,
            LimitTable {
                generations: vec![1, 2]
            }
        );
        let (a, r) = (rec.id("account").unwrap(), rec.id("route").unwrap());
        assert_eq!((a.index(), r.index()), (0, 1));
        assert_eq!(rec.available(a), Some(50));
        assert_eq!(rec.limit(r), Some(Limit::per_second(10, 10)));
        assert_eq!(rec.id("nope"), None);
    }

    #[test]
    fn first_tick_hands_every_core_its_reserve() {
        let mut rec = Reconciler::new(2, config());
        rec.set_limits([("a", Limit::per_second(100, 80))], 0);
        let grants = rec.tick(0);
        assert_eq!(grants.len(), 2);
        // reserve = burst / (4 · cores) = 10 each
        assert!(grants.iter().all(|g| g.tokens() == 10));
        let a = rec.id("a").unwrap();
        assert_eq!((rec.available(a), rec.outstanding(a)), (Some(60), Some(20)));
    }

    #[test]
    fn refill_counts_leases_against_the_burst() {
        let mut rec = Reconciler::new(2, config());
        rec.set_limits([("a", Limit::per_second(1000, 80))], 0);
        rec.tick(0);
        let a = rec.id("a").unwrap();
        // Core 0 spent its 10, core 1 nothing; an hour later the stock holds only the room
        // the reported spends made, never a full burst beside the leases.
        rec.on_report(report(0, false, &[(0, 1, 10, 0, 0)]), 3600 * SEC);
        rec.tick(3600 * SEC);
        let (avail, out) = (rec.available(a).unwrap(), rec.outstanding(a).unwrap());
        assert!(
            avail + out <= 80,
            "stock {avail} + leases {out} over the burst"
        );
        assert!(out > 10, "core 0 got more");
    }

    #[test]
    fn refill_before_applying_a_report_is_what_keeps_it_exact() {
        // Full bucket, all of it leased to core 0, which spends it all just before reporting.
        // The refill up to the report must not use the room those spends made.
        let mut rec = Reconciler::new(1, config());
        rec.set_limits([("a", Limit::per_second(1000, 4))], 0);
        rec.tick(0); // reserve = 4/4 = 1
        let a = rec.id("a").unwrap();
        let answer = rec.on_report(report(0, true, &[(0, 1, 0, 5, 0)]), 0);
        assert_eq!(answer.unwrap().tokens(), 3);
        assert_eq!((rec.available(a), rec.outstanding(a)), (Some(0), Some(4)));
        // 1 s later the core reports all 4 spent: refill first (no room: the view is still
        // full), then apply. Refilling after applying would credit a whole second of refill.
        rec.on_report(report(0, false, &[(0, 1, 4, 0, 0)]), SEC);
        assert_eq!(
            rec.available(a),
            Some(0),
            "no room was credited for the unreported spends"
        );
        rec.tick(SEC + MS);
        assert_eq!(rec.available(a).unwrap() + rec.outstanding(a).unwrap(), 1);
    }

    #[test]
    fn early_ask_is_answered_and_idle_leases_are_revoked_under_contention() {
        let mut rec = Reconciler::new(2, config());
        rec.set_limits([("a", Limit::per_second(1000, 80))], 0);
        rec.tick(0);
        // Core 0 is out and refusing; core 1 is idle with its reserve.
        let answer = rec
            .on_report(report(0, true, &[(0, 1, 10, 50, 0)]), MS)
            .unwrap();
        assert!(answer.tokens() > 0);
        let grants = rec.tick(5 * MS);
        let idle = grants
            .iter()
            .find(|g| g.core() == 1)
            .expect("a message for core 1");
        assert_eq!(
            entry(idle, 0).target,
            0,
            "idle core is asked to hand its lease back"
        );
        // Its report hands back the 10; they return to the stock.
        let a = rec.id("a").unwrap();
        let before = rec.available(a).unwrap();
        rec.on_report(report(1, false, &[(0, 1, 0, 0, 10)]), 5 * MS);
        assert_eq!(rec.available(a).unwrap(), before + 10);
        // A regular report is never answered on the spot.
        assert!(
            rec.on_report(report(0, false, &[(0, 1, 1, 1, 0)]), 6 * MS)
                .is_none()
        );
    }

    #[test]
    fn reload_keeps_unchanged_recreates_changed_and_drops_removed() {
        let mut rec = Reconciler::new(2, config());
        rec.set_limits(
            [
                ("a", Limit::per_second(100, 80)),
                ("b", Limit::per_second(10, 16)),
            ],
            0,
        );
        rec.tick(0); // a: 10 per core; b: 2 per core
        let (a, b) = (rec.id("a").unwrap(), rec.id("b").unwrap());
        let table = rec.set_limits(
            [
                ("a", Limit::per_second(100, 80)),
                ("b", Limit::per_second(20, 8)),
            ],
            SEC,
        );
        assert_eq!(table.generations, vec![1, 3]);
        assert_eq!((rec.available(a), rec.outstanding(a)), (Some(60), Some(20)));
        // b: level min(8, 16) = 8, of which the 4 leased tokens are revoked but still counted.
        assert_eq!((rec.available(b), rec.outstanding(b)), (Some(4), Some(4)));
        // A core drops its old-generation lease and says so: the tokens come back, capped.
        rec.on_report(report(0, false, &[(1, 2, 0, 0, 2)]), SEC);
        assert_eq!((rec.available(b), rec.outstanding(b)), (Some(6), Some(2)));
        // Removing a frees its id with a new generation; stale lines about it are ignored.
        let table = rec.set_limits([("b", Limit::per_second(20, 8))], 2 * SEC);
        assert_eq!(rec.id("a"), None);
        assert_eq!(table.generations, vec![4, 3]);
        assert!(
            rec.on_report(report(0, true, &[(0, 1, 5, 5, 5)]), 2 * SEC)
                .is_none()
        );
        // A later key reuses the id, newer than any report about the old one.
        let table = rec.set_limits(
            [
                ("b", Limit::per_second(20, 8)),
                ("c", Limit::per_second(1, 1)),
            ],
            3 * SEC,
        );
        assert_eq!(rec.id("c"), Some(a));
        assert_eq!(table.generations, vec![5, 3]);
        rec.on_report(report(0, false, &[(0, 1, 0, 0, 1)]), 3 * SEC);
        assert_eq!(
            rec.available(a),
            Some(1),
            "a report of the old key did not add to the new"
        );
    }

    #[test]
    fn reload_into_debt_does_not_hand_out_the_old_leases_again() {
        let mut rec = Reconciler::new(1, config());
        rec.set_limits([("a", Limit::per_second(1, 400))], 0);
        rec.tick(0); // reserve 100
        let a = rec.id("a").unwrap();
        rec.on_report(report(0, true, &[(0, 1, 1, 1, 0)]), 0);
        let out = rec.outstanding(a).unwrap();
        assert!(out > 10);
        rec.set_limits([("a", Limit::per_second(1, 10))], 0);
        assert_eq!(
            rec.available(a),
            Some(0),
            "in debt: the revoked leases exceed the new burst"
        );
        rec.on_report(report(0, false, &[(0, 1, 0, 0, out)]), 0);
        assert_eq!((rec.available(a), rec.outstanding(a)), (Some(10), Some(0)));
    }

    #[test]
    fn closed_limits_grant_nothing_and_say_retry_in_a_minute() {
        let mut rec = Reconciler::new(1, config());
        rec.set_limits(
            [
                ("zero", Limit::per_second(0, 100)),
                ("empty", Limit::per_second(5, 0)),
            ],
            0,
        );
        let grants = rec.tick(0);
        assert_eq!(grants[0].tokens(), 0);
        assert!(
            grants[0]
                .entries
                .iter()
                .all(|e| e.retry_after_ms == RETRY_AFTER_CLOSED_MS)
        );
        assert!(
            rec.on_report(report(0, true, &[(0, 1, 0, 9, 0)]), SEC)
                .is_none()
        );
        assert_eq!(rec.available(rec.id("zero").unwrap()), Some(0));
    }

    #[test]
    fn retry_after_is_the_time_to_mint_a_token() {
        let mut rec = Reconciler::new(1, config());
        rec.set_limits(
            [
                ("half", Limit::per_second_milli(500, 1)),
                ("ten", Limit::per_second(10, 1)),
            ],
            0,
        );
        let grants = rec.tick(0);
        assert_eq!(entry(&grants[0], 0).retry_after_ms, 2000);
        assert_eq!(entry(&grants[0], 1).retry_after_ms, 100);
    }

    #[test]
    fn demand_rate_settles_on_the_true_rate_whatever_the_periods() {
        let tick = 5 * MS;
        // 1000 rps in reports of 1 ms: the moving average settles at 1000.
        let mut r = 0;
        for _ in 0..200 {
            r = demand_rate(r, 1, MS, tick);
        }
        assert!((990_000..=1_000_000).contains(&r), "{r}");
        assert_eq!(
            demand_rate(r, 20, 10 * MS, tick),
            2_000_000,
            "plain average over a long period"
        );
        assert_eq!(demand_rate(r, 0, tick, tick), 0, "a quiet tick resets it");
    }

    #[test]
    fn a_shard_and_the_reconciler_agree_end_to_end() {
        let cfg = config();
        let mut rec = Reconciler::new(1, cfg);
        let table = rec.set_limits([("a", Limit::per_second(100, 8))], 0);
        let mut core = CoreLimiter::new(0, &cfg, 0);
        core.sync(&table);
        for g in rec.tick(0) {
            core.apply(g);
        }
        let a = rec.id("a").unwrap();
        let mut admitted = 0;
        let mut now = 0;
        // 1000 requests per second for one second, a tick every 5 ms, no delay.
        for ms in 0..1000u64 {
            now = ms * MS;
            if ms % 5 == 0 {
                if let Some(r) = core.report(now) {
                    rec.on_report(r, now);
                }
                for g in rec.tick(now) {
                    core.apply(g);
                }
            }
            if core.check(&[a]).is_ok() {
                admitted += 1;
            }
            if let Some(g) = core.early_ask(now).and_then(|r| rec.on_report(r, now)) {
                core.apply(g);
            }
        }
        // A single bucket admits 8 + 100·0.999 = 107 of these; the sharded one within a tick.
        assert!((100..=107).contains(&admitted), "{admitted} at {now}");
    }
}

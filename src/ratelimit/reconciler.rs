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
        self.bucket(id).map(|b| (b.stock / UNIT) as u64)
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
            (self.stock / UNIT) as u64
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
            for s in self.shares.iter_mut().filter(|s| s.hungry) {
                s.target = s.lump;
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
            let part = if total_rate > 0 {
                u128::from(avail) * u128::from(s.rate_milli) / total_rate
            } else {
                u128::from(avail) * u128::from(s.short) / total_short.max(1)
            };
            s.grant = s.short.min(part as u64);
            left -= s.grant;
        }
        if hungry_rate > 0 {
            let pool = u128::from(left);
            for s in self.shares.iter_mut().filter(|s| s.hungry) {
                let part = (pool * u128::from(s.rate_milli) / hungry_rate) as u64;
                s.grant = s.short.min(part);
                left -= s.grant;
            }
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

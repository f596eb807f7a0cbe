//! Test harness: one [`Reconciler`], N [`CoreLimiter`]s and the message queues between them, with
//! a configurable one-way delay (plus jitter, FIFO kept), driven by a virtual clock in fixed
//! steps; arrival patterns; and the naive references the results are judged against: a single
//! integer token bucket (greedy, it admits the most any feasible policy can) and the exact
//! feasibility check of an admission sequence.
//!
//! Requests arrive in batches at step boundaries (all requests of a step at the same instant),
//! which is itself a legal arrival process, so the "never over" check is exact for it.

use std::collections::VecDeque;

use super::{CoreLimiter, CoreReport, Grant, LeaseConfig, Limit, LimitId, Nanos, Reconciler, UNIT};

pub(super) const MS: Nanos = 1_000_000;
pub(super) const SEC: Nanos = 1_000_000_000;

/// A single token bucket `(r, b)` starting full, in exact integer arithmetic.
#[derive(Debug, Clone)]
pub(super) struct RefBucket {
    limit: Limit,
    level: u128,
    at: Nanos,
}

impl RefBucket {
    pub(super) fn new(limit: Limit) -> Self {
        RefBucket {
            limit,
            level: u128::from(limit.burst) * UNIT,
            at: 0,
        }
    }

    /// Switches to `limit` at `now`, keeping the level clamped to the new burst (reload).
    pub(super) fn relimit(&mut self, now: Nanos, limit: Limit) {
        self.advance(now);
        self.limit = limit;
        self.level = self.level.min(u128::from(limit.burst) * UNIT);
    }

    fn advance(&mut self, now: Nanos) {
        let cap = u128::from(self.limit.burst) * UNIT;
        let dt = u128::from(now.saturating_sub(self.at));
        self.level = (self.level + u128::from(self.limit.rate_milli) * dt).min(cap);
        self.at = self.at.max(now);
    }

    /// Greedy: admits as many of `n` requests arriving at `now` as there are whole tokens.
    pub(super) fn admit(&mut self, now: Nanos, n: u64) -> u64 {
        self.advance(now);
        let k = n.min((self.level / UNIT) as u64);
        self.level -= u128::from(k) * UNIT;
        k
    }

    /// Takes `n` tokens at `now`, or says the sequence so far is not feasible.
    pub(super) fn take(&mut self, now: Nanos, n: u64) -> bool {
        self.advance(now);
        let need = u128::from(n) * UNIT;
        if need > self.level {
            return false;
        }
        self.level -= need;
        true
    }
}

/// Exact "never over": `admits` (time, count), in time order, is feasible for one bucket
/// `limit` starting full, i.e. every closed interval `[t1, t2]` holds at most `b + r·(t2 − t1)`.
pub(super) fn feasible(limit: Limit, admits: &[(Nanos, u64)]) -> Result<(), String> {
    let mut bucket = RefBucket::new(limit);
    for (i, &(t, n)) in admits.iter().enumerate() {
        if !bucket.take(t, n) {
            return Err(format!("admission #{i} ({n} at {t} ns) exceeds {limit:?}"));
        }
    }
    Ok(())
}

/// Who offers how much, when: requests per second per core at time `t`.
#[derive(Debug, Clone)]
pub(super) enum Pattern {
    /// `rate` spread evenly over all cores.
    Even { rate: f64 },
    /// All of `rate` on core 0 (one connection).
    OneCore { rate: f64 },
    /// 90% of `rate` on core 0, the rest spread over the others.
    Skewed { rate: f64 },
    /// `rate` evenly, but only during the first `on` of every `on + off`.
    Bursty { rate: f64, on: Nanos, off: Nanos },
    /// All of `rate` on one core, moving to the next core every `every`.
    Moving { rate: f64, every: Nanos },
    /// Piecewise constant: segments of (length, per-core rates) from a seed, repeating.
    Random { segments: Vec<(Nanos, Vec<f64>)> },
}

/// The patterns that keep offering `rate` in total all the time, by name.
pub(super) fn sustained(rate: f64, cores: usize, seed: u64) -> Vec<(&'static str, Pattern)> {
    vec![
        ("even", Pattern::Even { rate }),
        ("one core", Pattern::OneCore { rate }),
        ("skewed 90/10", Pattern::Skewed { rate }),
        (
            "moving 0.5 s",
            Pattern::Moving {
                rate,
                every: SEC / 2,
            },
        ),
        (
            "random split",
            Pattern::random_split(seed, cores, rate, 10 * SEC),
        ),
    ]
}

impl Pattern {
    /// Random segments of 10 ms to 1 s; each core gets 0 to `rate_max` with some cores idle.
    pub(super) fn random(seed: u64, cores: usize, rate_max: f64, until: Nanos) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut segments = Vec::new();
        let mut t = 0;
        while t < until {
            let len = 10 * MS + rng.below(990 * MS);
            let rates = (0..cores)
                .map(|_| match rng.below(4) {
                    0 => 0.0,
                    _ => rate_max * (rng.below(1001) as f64 / 1000.0),
                })
                .collect();
            segments.push((len, rates));
            t += len;
        }
        Pattern::Random { segments }
    }

    /// Random segments of 10 ms to 1 s, each splitting `rate` over the cores at random.
    pub(super) fn random_split(seed: u64, cores: usize, rate: f64, until: Nanos) -> Self {
        let Pattern::Random { mut segments } = Pattern::random(seed, cores, 1.0, until) else {
            unreachable!("random() builds Random")
        };
        for (_, rates) in &mut segments {
            let total: f64 = rates.iter().sum();
            if total == 0.0 {
                rates[0] = 1.0;
            }
            let total: f64 = rates.iter().sum();
            rates.iter_mut().for_each(|r| *r *= rate / total);
        }
        Pattern::Random { segments }
    }

    fn rate(&self, core: usize, cores: usize, t: Nanos) -> f64 {
        match self {
            Pattern::Even { rate } => rate / cores as f64,
            Pattern::OneCore { rate } => {
                if core == 0 {
                    *rate
                } else {
                    0.0
                }
            }
            Pattern::Skewed { rate } if cores == 1 => *rate,
            Pattern::Skewed { rate } => {
                if core == 0 {
                    0.9 * rate
                } else {
                    0.1 * rate / (cores - 1) as f64
                }
            }
            Pattern::Bursty { rate, on, off } => {
                if t % (on + off) < *on {
                    rate / cores as f64
                } else {
                    0.0
                }
            }
            Pattern::Moving { rate, every } => {
                if (t / every) as usize % cores == core {
                    *rate
                } else {
                    0.0
                }
            }
            Pattern::Random { segments } => {
                let total: Nanos = segments.iter().map(|s| s.0).sum();
                let mut t = t % total.max(1);
                for (len, rates) in segments {
                    if t < *len {
                        return rates[core];
                    }
                    t -= len;
                }
                0.0
            }
        }
    }
}

/// xorshift64*: deterministic and dependency-free.
#[derive(Debug, Clone)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How to build a simulated system.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub(super) cores: usize,
    pub(super) lease: LeaseConfig,
    /// One-way delay of every message, both directions.
    pub(super) delay: Nanos,
    /// Extra random delay per message, 0..=jitter (order per channel kept).
    pub(super) jitter: Nanos,
    pub(super) step: Nanos,
    pub(super) seed: u64,
    /// Limits; each request takes limit 0 and, when there are more, one of the others in turn
    /// (an account limit and per-route limits).
    pub(super) limits: Vec<Limit>,
}

impl Setup {
    pub(super) fn new(cores: usize, tick: Nanos, delay: Nanos, limits: Vec<Limit>) -> Self {
        let lease = LeaseConfig {
            tick_ns: tick,
            horizon_ns: 2 * tick,
            ask_gap_ns: tick,
        };
        Setup {
            cores,
            lease,
            delay,
            jitter: 0,
            step: 100_000,
            seed: 7,
            limits,
        }
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Per limit: (time, count) of admissions, in time order.
    pub(super) admits: Vec<Vec<(Nanos, u64)>>,
    pub(super) offered: u64,
    /// Admissions of the greedy single bucket of limit 0 fed the same arrivals.
    pub(super) reference: u64,
    /// Messages core → control (reports and early asks), and early asks alone.
    pub(super) reports: u64,
    pub(super) early_asks: u64,
    /// Messages control → core.
    pub(super) grants: u64,
    /// Requests refused while the reference bucket of limit 0 admitted them.
    pub(super) refused: u64,
    /// Times the reference bucket started draining from full (admissions while full).
    pub(super) full_episodes: u64,
    /// First step at which more had been admitted (limit 0) than the greedy reference admitted.
    pub(super) ahead_of_reference: Option<Nanos>,
}

impl Outcome {
    pub(super) fn admitted(&self, limit: usize) -> u64 {
        self.admits[limit].iter().map(|a| a.1).sum()
    }

    pub(super) fn admitted_between(&self, limit: usize, from: Nanos, until: Nanos) -> u64 {
        self.admits[limit]
            .iter()
            .filter(|a| a.0 >= from && a.0 < until)
            .map(|a| a.1)
            .sum()
    }
}

pub(super) struct Sim {
    setup: Setup,
    pub(super) rec: Reconciler,
    pub(super) shards: Vec<CoreLimiter>,
    pub(super) ids: Vec<LimitId>,
    up: Vec<VecDeque<(Nanos, CoreReport)>>,
    down: Vec<VecDeque<(Nanos, Grant)>>,
    pub(super) now: Nanos,
    control_tick_at: Nanos,
    core_tick_at: Vec<Nanos>,
    acc: Vec<f64>,
    rng: Rng,
    reference: RefBucket,
    route_turn: usize,
    /// Running total of admissions of limit 0.
    admitted: u64,
    pub(super) out: Outcome,
}

impl Sim {
    pub(super) fn new(setup: Setup) -> Self {
        let n = setup.cores;
        let mut rng = Rng(setup.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let tick = setup.lease.tick_ns;
        let mut rec = Reconciler::new(n, setup.lease);
        let keys: Vec<(String, Limit)> = setup
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("limit:{i}"), *l))
            .collect();
        let table = rec.set_limits(keys.iter().map(|(k, l)| (k.as_str(), *l)), 0);
        let ids = keys
            .iter()
            .map(|(k, _)| rec.id(k).expect("just configured"))
            .collect();
        let mut shards: Vec<CoreLimiter> = (0..n)
            .map(|c| CoreLimiter::new(c, &setup.lease, 0))
            .collect();
        for shard in &mut shards {
            shard.sync(&table);
        }
        let core_tick_at = (0..n).map(|_| rng.below(tick)).collect();
        let control_tick_at = rng.below(tick);
        let reference = RefBucket::new(setup.limits[0]);
        let out = Outcome {
            admits: vec![Vec::new(); setup.limits.len()],
            ..Outcome::default()
        };
        let mut sim = Sim {
            up: (0..n).map(|_| VecDeque::new()).collect(),
            down: (0..n).map(|_| VecDeque::new()).collect(),
            now: 0,
            control_tick_at,
            core_tick_at,
            acc: vec![0.0; n],
            rng,
            reference,
            route_turn: 0,
            admitted: 0,
            out,
            setup,
            rec,
            shards,
            ids,
        };
        // The control thread sends the first grants with the first snapshot.
        for g in sim.rec.tick(0) {
            sim.send_down(g);
        }
        sim.events();
        sim
    }

    /// Runs `pattern` until virtual time `until`.
    pub(super) fn run(&mut self, pattern: &Pattern, until: Nanos) {
        while self.now < until {
            self.events();
            self.arrivals(pattern);
            self.events();
            self.now += self.setup.step;
        }
    }

    /// A reload at the current time: new limits for the same keys, tables synced by every core
    /// at once (as if the snapshot landed with no delay). Call `kick` after to send the grants.
    pub(super) fn reload(&mut self, limits: &[Limit]) {
        let keys: Vec<(String, Limit)> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("limit:{i}"), *l))
            .collect();
        let table = self
            .rec
            .set_limits(keys.iter().map(|(k, l)| (k.as_str(), *l)), self.now);
        for shard in &mut self.shards {
            shard.sync(&table);
        }
    }

    /// An out-of-turn control tick, as after a reload.
    pub(super) fn kick(&mut self) {
        for g in self.rec.tick(self.now) {
            self.send_down(g);
        }
        self.events();
    }

    fn delay(&mut self) -> Nanos {
        let jitter = self.setup.jitter;
        self.setup.delay
            + if jitter > 0 {
                self.rng.below(jitter + 1)
            } else {
                0
            }
    }

    fn send_up(&mut self, r: CoreReport) {
        self.out.reports += 1;
        self.out.early_asks += u64::from(r.is_early());
        let due = self.now + self.delay();
        let q = &mut self.up[r.core()];
        let due = q.back().map_or(due, |b| b.0.max(due));
        q.push_back((due, r));
    }

    fn send_down(&mut self, g: Grant) {
        self.out.grants += 1;
        let due = self.now + self.delay();
        let q = &mut self.down[g.core()];
        let due = q.back().map_or(due, |b| b.0.max(due));
        q.push_back((due, g));
    }

    /// Delivers every message due by now and runs the ticks due by now, until nothing is left.
    fn events(&mut self) {
        let tick = self.setup.lease.tick_ns;
        loop {
            let mut busy = false;
            for c in 0..self.setup.cores {
                while self.up[c].front().is_some_and(|m| m.0 <= self.now) {
                    let (_, r) = self.up[c].pop_front().expect("front checked");
                    if let Some(g) = self.rec.on_report(r, self.now) {
                        self.send_down(g);
                    }
                    busy = true;
                }
            }
            if self.control_tick_at <= self.now {
                for g in self.rec.tick(self.now) {
                    self.send_down(g);
                }
                self.control_tick_at += tick;
                busy = true;
            }
            for c in 0..self.setup.cores {
                while self.down[c].front().is_some_and(|m| m.0 <= self.now) {
                    let (_, g) = self.down[c].pop_front().expect("front checked");
                    self.shards[c].apply(g);
                    busy = true;
                }
                if self.core_tick_at[c] <= self.now {
                    if let Some(r) = self.shards[c].report(self.now) {
                        self.send_up(r);
                    }
                    self.core_tick_at[c] += tick;
                    busy = true;
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn arrivals(&mut self, pattern: &Pattern) {
        let n = self.setup.cores;
        let step_s = self.setup.step as f64 / SEC as f64;
        let mut counts = vec![0u64; self.ids.len()];
        let mut offered = 0;
        for c in 0..n {
            self.acc[c] += pattern.rate(c, n, self.now) * step_s;
            let k = self.acc[c].floor();
            self.acc[c] -= k;
            offered += k as u64;
            for _ in 0..k as u64 {
                let route = 1 + self.route_turn % (self.ids.len() - 1).max(1);
                self.route_turn += 1;
                let ids = [self.ids[0], self.ids[route.min(self.ids.len() - 1)]];
                let ids = if self.ids.len() == 1 {
                    &ids[..1]
                } else {
                    &ids[..]
                };
                if self.shards[c].check(ids).is_ok() {
                    counts[0] += 1;
                    if ids.len() > 1 {
                        counts[route] += 1;
                    }
                }
                if let Some(r) = self.shards[c].early_ask(self.now) {
                    self.send_up(r);
                    if self.setup.delay == 0 && self.setup.jitter == 0 {
                        self.events();
                    }
                }
            }
        }
        self.out.offered += offered;
        if offered > 0 {
            self.reference.advance(self.now);
            self.out.full_episodes +=
                u64::from(self.reference.level == u128::from(self.reference.limit.burst) * UNIT);
        }
        self.out.reference += self.reference.admit(self.now, offered);
        self.out.refused += offered - counts[0];
        self.admitted += counts[0];
        if self.admitted > self.out.reference && self.out.ahead_of_reference.is_none() {
            self.out.ahead_of_reference = Some(self.now);
        }
        for (i, &k) in counts.iter().enumerate() {
            if k > 0 {
                self.out.admits[i].push((self.now, k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Brute force "never over": every pair of admission times.
    fn feasible_pairwise(limit: Limit, admits: &[(Nanos, u64)]) -> bool {
        let cap = u128::from(limit.burst) * UNIT;
        (0..admits.len()).all(|i| {
            let mut count = 0u128;
            (i..admits.len()).all(|j| {
                count += u128::from(admits[j].1);
                let dt = u128::from(admits[j].0 - admits[i].0);
                count * UNIT <= cap + u128::from(limit.rate_milli) * dt
            })
        })
    }

    proptest! {
        #[test]
        fn feasibility_check_is_the_interval_bound(
            rate in 0u64..5_000,
            burst in 0u64..6,
            gaps in proptest::collection::vec((0u64..3 * SEC, 1u64..4), 0..40),
        ) {
            let limit = Limit::per_second_milli(rate, burst);
            let mut t = 0;
            let admits: Vec<_> = gaps.iter().map(|&(g, n)| { t += g; (t, n) }).collect();
            prop_assert_eq!(feasible(limit, &admits).is_ok(), feasible_pairwise(limit, &admits));
        }
    }
}

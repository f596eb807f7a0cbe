//! The three promises of issue 3, checked on the whole system (reconciler, core shards,
//! delayed message queues) in simulation, against the naive single bucket.
//!
//! Dense overload (3× the limit, and at least 2,000 requests per second) is used for promise
//! 2: with sparse arrivals even a single bucket falls short of `b + r·T`, because a token minted
//! between two requests waits for the next one.
//!
//! Promise 2, measured (`table` below; admitted in 10 s of sustained overload as a share of
//! `b + 10·r`, and in brackets the shortfall in milliseconds of rate; patterns: even / one core /
//! skewed 90/10 / moving every 0.5 s / random split; delay = one-way, both directions):
//!
//! | rate:burst | tick ms | delay ms | cores | even | one core | skewed | moving | random |
//! |---|---|---|---|---|---|---|---|---|
//! | 10000:5000 | 5 | 0 | 1 | 99.94% (6) | 99.94% (6) | 99.94% (6) | 99.94% (6) | 99.94% (6) |
//! | 10000:5000 | 5 | 0 | 2 | 99.94% (6) | 99.94% (6) | 99.95% (6) | 99.92% (8) | 99.93% (7) |
//! | 10000:5000 | 5 | 0 | 8 | 99.95% (5) | 99.94% (6) | 99.94% (6) | 99.94% (6) | 99.95% (6) |
//! | 10000:5000 | 5 | 5 | 1 | 99.80% (21) | 99.80% (21) | 99.80% (21) | 99.80% (21) | 99.80% (21) |
//! | 10000:5000 | 5 | 5 | 2 | 99.79% (22) | 99.81% (20) | 99.82% (19) | 99.78% (23) | 99.79% (22) |
//! | 10000:5000 | 5 | 5 | 8 | 99.82% (19) | 99.80% (21) | 99.80% (21) | 99.79% (22) | 99.81% (20) |
//! | 10000:5000 | 5 | 10 | 1 | 99.66% (36) | 99.66% (36) | 99.66% (36) | 99.66% (36) | 99.66% (36) |
//! | 10000:5000 | 5 | 10 | 2 | 99.66% (35) | 99.64% (38) | 99.66% (35) | 99.64% (38) | 99.65% (37) |
//! | 10000:5000 | 5 | 10 | 8 | 99.68% (33) | 99.66% (36) | 99.66% (36) | 99.64% (38) | 99.67% (34) |
//! | 10000:5000 | 1 | 0 | 8 | 99.99% (1) | 99.98% (2) | 99.99% (1) | 99.98% (2) | 99.99% (1) |
//! | 10000:5000 | 20 | 0 | 8 | 99.89% (11) | 99.89% (11) | 99.89% (11) | 99.89% (11) | 99.87% (14) |
//! | 10000:5000 | 20 | 20 | 8 | 99.31% (73) | 99.13% (91) | 99.20% (84) | 99.11% (93) | 99.30% (74) |
//! | 10000:5000 | 20 | 40 | 8 | 98.74% (133) | 98.35% (173) | 98.50% (157) | 98.35% (173) | 98.72% (134) |
//! | 100000:50000 | 1 | 0 | 8 | 99.99% (1) | 99.98% (2) | 99.99% (2) | 99.98% (2) | 99.99% (1) |
//! | 100000:50000 | 20 | 40 | 8 | 98.74% (133) | 98.35% (173) | 98.50% (157) | 98.35% (173) | 98.72% (134) |
//! | 100:50 | 5 | 5 | 8 | 99.71% (30) | 99.81% (20) | 99.71% (30) | 99.81% (20) | 99.81% (20) |
//! | 10:5 | 5 | 5 | 8 | 99.05% (100) | 99.05% (100) | 99.05% (100) | 99.05% (100) | 99.05% (100) |
//! | 1:1 | 5 | 5 | 8 | 90.91% (1000) | 90.91% (1000) | 90.91% (1000) | 90.91% (1000) | 90.91% (1000) |
//! | 10000:300 | 5 | 5 | 8 | 99.77% (23) | 99.68% (32) | 99.72% (28) | 98.98% (103) | 99.75% (25) |
//! | 10000:100 | 5 | 0 | 8 | 99.95% (5) | 99.88% (12) | 99.91% (10) | 99.14% (86) | 99.93% (7) |
//! | 10000:100 | 5 | 5 | 8 | 67.76% (3227) | 62.37% (3767) | 63.55% (3648) | 60.58% (3946) | 68.27% (3177) |
//!
//! The 1:1 and 10:5 rows are exactly what a single bucket admits from the same arrivals (the
//! last token is minted at t = 10 s). The last rows are bursts smaller than the tokens in the
//! lease loop (see the module doc of `ratelimit`).

use proptest::prelude::*;

use super::sim::{MS, Outcome, Pattern, RefBucket, SEC, Setup, Sim, feasible, sustained};
use super::{Limit, Throttled};

fn run(setup: Setup, pattern: &Pattern, until: u64) -> Outcome {
    let mut sim = Sim::new(setup);
    sim.run(pattern, until);
    sim.out
}

/// Offered load for promise 2: 3× the limit (rate, and the burst spread over 10 s), and dense,
/// so that the limit, not the offered load, decides what is admitted.
fn overload(limit: Limit) -> f64 {
    let rate = limit.rate_milli() as f64 / 1000.0 + limit.burst() as f64 / 10.0;
    (3.0 * rate).max(2_000.0)
}

/// Tokens the system may fall short of `b + r·T` under sustained overload: the refill lost
/// while the first spends travel to the reconciler (about a delay and a tick at the start),
/// the tokens still in the pipeline when the window closes (about two delays), and, when
/// traffic has just moved, the lease the core it left still holds (until its quiet report has
/// made the round trip: about a delay and a tick). Measured up to 0.87 of this over 3,000
/// random cases (600 per pattern; `shortfall_scan` below prints it); allowed `r·(5·delay + 3·tick)`, plus a token of rounding
/// per core and one at each end.
fn shortfall_allowed(setup: &Setup, limit: Limit) -> f64 {
    let lag_ns = 5 * setup.delay + 3 * setup.lease.tick_ns;
    limit.rate_milli() as f64 / 1000.0 * lag_ns as f64 / SEC as f64 + 2.0 + setup.cores as f64
}

/// The burst must hold the tokens that circulate in the lease loop (spent, not yet reported,
/// re-granted, in flight: `r·(3·delay + 2·tick)`) and the lease of a core that traffic just
/// left, until it is handed back (`r·(delay + tick)`). Below the first, throughput is capped
/// near b per round trip; below the second, the stranded lease keeps the bucket at its cap and
/// every move of the traffic between cores costs refill.
fn loop_fits(setup: &Setup, limit: Limit) -> bool {
    let loop_ns = 4 * setup.delay + 3 * setup.lease.tick_ns;
    let in_loop = limit.rate_milli() as f64 / 1000.0 * loop_ns as f64 / SEC as f64;
    limit.burst() as f64 >= in_loop + 2.0 * setup.cores as f64
}

#[test]
fn never_much_under_every_pattern_default_account_limit() {
    let limit = Limit::per_second(10_000, 5_000);
    let ideal = 5_000.0 + 10.0 * 10_000.0;
    for delay_ticks in [0, 1, 2] {
        for cores in [1, 2, 8] {
            for (name, pattern) in sustained(overload(limit), cores, 11) {
                let setup = Setup::new(cores, 5 * MS, delay_ticks * 5 * MS, vec![limit]);
                let out = run(setup, &pattern, 10 * SEC);
                let ratio = out.admitted(0) as f64 / ideal;
                assert!(
                    feasible(limit, &out.admits[0]).is_ok(),
                    "{name}: over the limit"
                );
                assert!(
                    ratio >= 0.99,
                    "{name}, {cores} cores, delay {delay_ticks} ticks: {ratio:.4} of b + r·T"
                );
            }
        }
    }
}

#[test]
fn bursty_traffic_tracks_the_single_bucket() {
    let limit = Limit::per_second(10_000, 5_000);
    let pattern = Pattern::Bursty {
        rate: 30_000.0,
        on: 200 * MS,
        off: 300 * MS,
    };
    for cores in [1, 8] {
        let out = run(
            Setup::new(cores, 5 * MS, 5 * MS, vec![limit]),
            &pattern,
            10 * SEC,
        );
        assert!(feasible(limit, &out.admits[0]).is_ok());
        assert!(out.ahead_of_reference.is_none());
        let ratio = out.admitted(0) as f64 / out.reference as f64;
        assert!(
            ratio >= 0.99,
            "{cores} cores: {ratio:.4} of the single bucket"
        );
    }
}

#[test]
fn traffic_under_the_limit_is_almost_never_refused() {
    let limit = Limit::per_second(10_000, 5_000);
    let cases = [
        Pattern::Even { rate: 5_000.0 },
        Pattern::OneCore { rate: 8_000.0 },
        Pattern::Moving {
            rate: 8_000.0,
            every: SEC / 2,
        },
    ];
    for pattern in &cases {
        // Traffic starts once the first grants have landed, as after a start or reload.
        let mut sim = Sim::new(Setup::new(8, 5 * MS, 5 * MS, vec![limit]));
        sim.run(&Pattern::Even { rate: 0.0 }, 20 * MS);
        sim.run(pattern, 5 * SEC);
        let out = sim.out;
        eprintln!("{pattern:?}: {} refused of {}", out.refused, out.offered);
        assert_eq!(
            out.reference, out.offered,
            "the single bucket admits all of it"
        );
        assert!(
            out.refused * 1000 <= out.offered,
            "{pattern:?}: {} refused of {}",
            out.refused,
            out.offered
        );
    }
}

#[test]
fn limit_zero_admits_nothing() {
    for limit in [Limit::per_second(0, 100), Limit::per_second(100, 0)] {
        let mut sim = Sim::new(Setup::new(4, 5 * MS, 5 * MS, vec![limit]));
        sim.run(&Pattern::Even { rate: 1_000.0 }, SEC);
        assert_eq!(sim.out.admitted(0), 0, "{limit:?}");
        let err = sim.shards[0].check(&[sim.ids[0]]).unwrap_err();
        assert_eq!(
            err,
            Throttled {
                which: 0,
                retry_after_ms: 60_000
            }
        );
        assert_eq!(err.retry_after_secs(), 60);
    }
}

#[test]
fn reconciliation_is_batched() {
    let limit = Limit::per_second(10_000, 5_000);
    for (name, pattern) in sustained(overload(limit), 8, 3) {
        let setup = Setup::new(8, 5 * MS, 5 * MS, vec![limit]);
        let out = run(setup, &pattern, 5 * SEC);
        // Per core per tick: one report and at most one early ask; one tick grant and at most
        // one answer to the ask.
        let ticks = 5 * SEC / (5 * MS);
        assert!(
            out.reports <= 8 * (2 * ticks + 1),
            "{name}: {} reports, {} early",
            out.reports,
            out.early_asks
        );
        assert!(
            out.grants <= 8 * (2 * ticks + 1),
            "{name}: {} grants",
            out.grants
        );
    }
}

#[test]
fn reload_keeps_unchanged_limits_and_bounds_changed_ones() {
    let account = Limit::per_second(10_000, 5_000);
    let (old, new) = (
        Limit::per_second(4_000, 2_000),
        Limit::per_second(1_000, 500),
    );
    let mut setup = Setup::new(4, 5 * MS, 5 * MS, vec![account, old]);
    setup.seed = 5;
    let mut sim = Sim::new(setup);
    let pattern = Pattern::Skewed { rate: 20_000.0 };
    sim.run(&pattern, 2 * SEC);
    let change = sim.now;
    let account_id = sim.ids[0];
    let (avail, out) = (
        sim.rec.available(account_id),
        sim.rec.outstanding(account_id),
    );
    let generations = sim.rec.table();
    sim.reload(&[account, new]);
    assert_eq!(
        sim.rec.available(account_id),
        avail,
        "unchanged limit keeps its stock"
    );
    assert_eq!(sim.rec.outstanding(account_id), out, "and its leases");
    assert_eq!(sim.rec.table().generations[0], generations.generations[0]);
    assert!(sim.rec.table().generations[1] > generations.generations[1]);
    sim.kick();
    sim.run(&pattern, 5 * SEC);

    assert!(
        feasible(account, &sim.out.admits[0]).is_ok(),
        "account bound across the reload"
    );
    // The route limit: (r, b) until the change, then (r', b') from the level clamped to b'.
    let mut bucket = RefBucket::new(old);
    let mut switched = false;
    for &(t, n) in &sim.out.admits[1] {
        if t >= change && !switched {
            bucket.relimit(change, new);
            switched = true;
        }
        assert!(
            bucket.take(t, n),
            "route limit over its piecewise bound at {t}"
        );
    }
    let after = sim.out.admitted_between(1, change, 5 * SEC) as f64;
    let ideal = 1_000.0 * 3.0; // it starts near empty: it was drained by the overload
    assert!(after >= 0.98 * ideal, "new limit under-admits: {after}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    // Rates are in milli-tokens per second (fractional rates included), bursts in tokens;
    // each range is drawn from small, medium and large so that tiny limits come up often.

    /// Promise 1, exactly: every admission sequence of every limit is one a single bucket
    /// starting full could have admitted, whatever the pattern, delays, jitter and limits.
    #[test]
    fn never_over(
        seed in any::<u64>(),
        limits in proptest::collection::vec(
            (
                prop_oneof![0u64..1_000, 0u64..100_000, 0u64..100_000_000],
                prop_oneof![0u64..4, 0u64..100, 0u64..50_000],
            ),
            1..4,
        ),
        cores in 1usize..=8,
        tick_ms in 1u64..=20,
        delay_quarters in 0u64..=8,
        jitter in any::<bool>(),
    ) {
        let limits: Vec<Limit> =
            limits.iter().map(|&(r, b)| Limit::per_second_milli(r, b)).collect();
        let tick = tick_ms * MS;
        let mut setup = Setup::new(cores, tick, delay_quarters * tick / 4, limits.clone());
        setup.jitter = if jitter { tick } else { 0 };
        setup.seed = seed;
        let rate_max = 4.0 * limits[0].rate_milli() as f64 / 1000.0 / cores as f64;
        let pattern = Pattern::random(seed, cores, rate_max.clamp(10.0, 50_000.0), 3 * SEC);
        let out = run(setup, &pattern, 3 * SEC);
        for (i, limit) in limits.iter().enumerate() {
            prop_assert!(feasible(*limit, &out.admits[i]).is_ok(), "limit {i} {limit:?}");
        }
        if limits.len() == 1 {
            prop_assert!(out.ahead_of_reference.is_none(), "ahead of the greedy single bucket");
        }
    }

    /// Promise 2 over random limits, cores, ticks and delays, for every sustained pattern.
    /// Where the burst holds the lease loop and the lease a core keeps for a round trip after
    /// traffic leaves it (`loop_fits`), the shortfall against `b + r·T` stays within
    /// `shortfall_allowed` (which is under 1% whenever `r·lag` is under 1% of `b + r·T`).
    #[test]
    fn never_much_under(
        seed in any::<u64>(),
        rate in 1u64..=100_000,
        burst in 1u64..=50_000,
        cores in 1usize..=8,
        tick_ms in 1u64..=20,
        delay_quarters in 0u64..=8,
        which in 0usize..5,
    ) {
        let limit = Limit::per_second(rate, burst);
        let tick = tick_ms * MS;
        let mut setup = Setup::new(cores, tick, delay_quarters * tick / 4, vec![limit]);
        setup.seed = seed;
        prop_assume!(loop_fits(&setup, limit));
        let allowed = shortfall_allowed(&setup, limit);
        let (name, pattern) = sustained(overload(limit), cores, seed).swap_remove(which);
        let out = run(setup, &pattern, 10 * SEC);
        let ideal = burst as f64 + 10.0 * rate as f64;
        let admitted = out.admitted(0) as f64;
        // The window ends at the last step, 0.1 ms before 10 s. Arrivals are whole requests
        // per core per step, so the single bucket fed the same arrivals may also end a few
        // tokens short (seen: 4 of 100,310 with 7 cores); a token per core is allowed for it.
        let last_step = rate as f64 * 1e-4;
        prop_assert!(out.reference as f64 >= ideal - last_step - 3.0 - cores as f64, "not limit-bound: {} of {ideal}, offered {}", out.reference, out.offered);
        prop_assert!(
            admitted >= ideal - allowed,
            "{name}: admitted {admitted} of {ideal}, allowed shortfall {allowed:.1}"
        );
        if allowed <= 0.01 * ideal {
            prop_assert!(admitted >= 0.99 * ideal);
        }
    }

    /// The naive model: with one core and no delay the system admits what a single bucket
    /// admits: never more at any moment, and under sustained overload within `r·tick` tokens
    /// plus one (the refill of the first tick, while the reconciler cannot yet know that the
    /// full bucket is being drained), so within one token when `r·tick ≤ 1`.
    #[test]
    fn one_core_no_delay_matches_the_single_bucket(
        seed in any::<u64>(),
        rate in 1u64..=100_000,
        burst in 1u64..=50_000,
        tick_ms in 1u64..=20,
    ) {
        let limit = Limit::per_second(rate, burst);
        let mut setup = Setup::new(1, tick_ms * MS, 0, vec![limit]);
        setup.lease.ask_gap_ns = 0;
        setup.seed = seed;
        prop_assume!(loop_fits(&setup, limit));
        let out = run(setup.clone(), &Pattern::OneCore { rate: overload(limit) }, 3 * SEC);
        prop_assert!(out.ahead_of_reference.is_none());
        let first_tick = (rate * tick_ms).div_ceil(1000);
        prop_assert!(
            out.reference - out.admitted(0) <= first_tick + 1,
            "{} vs {}", out.admitted(0), out.reference
        );

        let pattern = Pattern::random(seed, 1, 2.0 * rate as f64, 3 * SEC);
        let out = run(setup, &pattern, 3 * SEC);
        prop_assert!(out.ahead_of_reference.is_none());
        prop_assert!(feasible(limit, &out.admits[0]).is_ok());
    }
}

/// Prints the promise-2 table (admitted over 10 s of sustained overload against `b + r·T`).
/// `TABLE_LIMITS=10000:5000 TABLE_TICKS_MS=5 TABLE_DELAYS_MS=0,5,10 TABLE_CORES=1,2,8
/// cargo test --lib ratelimit::promises::table -- --ignored --nocapture`
#[test]
#[ignore]
fn table() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let list = |k: &str, d: &str| -> Vec<u64> {
        var(k, d)
            .split(',')
            .map(|x| x.trim().parse().expect("a number"))
            .collect()
    };
    for pair in var("TABLE_LIMITS", "10000:5000").split(',') {
        let (r, b) = pair.split_once(':').expect("rate:burst");
        let limit = Limit::per_second(r.parse().expect("rate"), b.parse().expect("burst"));
        let r = limit.rate_milli() as f64 / 1000.0;
        let ideal = limit.burst() as f64 + 10.0 * r;
        for tick in list("TABLE_TICKS_MS", "5") {
            for delay in list("TABLE_DELAYS_MS", "0,5,10") {
                for cores in list("TABLE_CORES", "1,2,8") {
                    let mut row = format!("| {pair} | {tick} | {delay} | {cores} |");
                    for (_, pattern) in sustained(overload(limit), cores as usize, 11) {
                        let setup = Setup::new(cores as usize, tick * MS, delay * MS, vec![limit]);
                        let out = run(setup, &pattern, 10 * SEC);
                        assert!(feasible(limit, &out.admits[0]).is_ok());
                        let admitted = out.admitted(0) as f64;
                        let lag_ms = (ideal - admitted) / r * 1000.0;
                        row += &format!(" {:.2}% ({lag_ms:.0}) |", 100.0 * admitted / ideal);
                    }
                    eprintln!("{row}");
                }
            }
        }
    }
}

/// Traces one run: `DEBUG=rate:burst:cores:tick_ms:delay_us:pattern_index`.
#[test]
#[ignore]
fn debug_case() {
    let spec = std::env::var("DEBUG").unwrap_or_else(|_| "10000:5000:8:5:0:0".into());
    let v: Vec<u64> = spec
        .split(':')
        .map(|x| x.parse().expect("number"))
        .collect();
    let limit = Limit::per_second(v[0], v[1]);
    let setup = Setup::new(v[2] as usize, v[3] * MS, v[4] * 1000, vec![limit]);
    let (name, pattern) = sustained(overload(limit), v[2] as usize, 0).swap_remove(v[5] as usize);
    let mut sim = Sim::new(setup);
    let mut last = 0;
    for s in 1..=20 {
        sim.run(&pattern, s * SEC / 2);
        let id = sim.ids[0];
        let leases: Vec<u64> = sim.shards.iter().map(|c| c.lease(id)).collect();
        eprintln!(
            "{name} t={}ms +{} stock {:?} out {:?} leases {leases:?} reports {} asks {} grants {}",
            s * 500,
            sim.out.admitted(0) - last,
            sim.rec.available(id),
            sim.rec.outstanding(id),
            sim.out.reports,
            sim.out.early_asks,
            sim.out.grants
        );
        last = sim.out.admitted(0);
    }
}

#[test]
fn sparse_traffic_after_a_refused_burst_is_not_refused() {
    // A pipelined burst over a small burst limit leaves the core hungry with a large demand
    // estimate; the sparse traffic after it (a request every 25 ms, far under the rate) must
    // then pass as it does through a single bucket. It used to be refused for seconds: each
    // whole quiet tick zeroed the demand estimate while the core was still hungry, its lease
    // was taken back, and the next request, refused on an empty lease, renewed the hunger.
    for (rate, burst) in [(1000, 3), (100, 3), (1000, 30), (10_000, 5)] {
        for cores in [1, 2] {
            for delay in [0, MS / 10, 5 * MS] {
                let limit = Limit::per_second(rate, burst);
                let mut sim = Sim::new(Setup::new(cores, 5 * MS, delay, vec![limit]));
                sim.run(&Pattern::Even { rate: 0.0 }, 100 * MS);
                sim.run(&Pattern::OneCore { rate: 20_000.0 }, 105 * MS);
                let refused = sim.out.refused;
                assert!(refused > 0, "the burst is over the limit");
                // Settle a few round trips, then 40 rps on the same core for 3 s.
                sim.run(&Pattern::Even { rate: 0.0 }, 150 * MS);
                let (offered, reference) = (sim.out.offered, sim.out.reference);
                sim.run(&Pattern::OneCore { rate: 40.0 }, 3 * SEC);
                let offered = sim.out.offered - offered;
                assert_eq!(
                    sim.out.reference - reference,
                    offered,
                    "a single bucket admits all"
                );
                assert_eq!(
                    sim.out.refused - refused,
                    0,
                    "{rate}/{burst}, {cores} cores, delay {delay} ns: refused some of {offered}"
                );
            }
        }
    }
}

/// Prints, per sustained pattern, the largest shortfall against `b + r·T` as a share of
/// `shortfall_allowed` over random limits, cores, ticks and delays where `loop_fits` (the
/// figure quoted in the module doc of `ratelimit`).
/// `SCAN_N=600 cargo test --release --lib ratelimit::promises::shortfall_scan -- --ignored --nocapture`
#[test]
#[ignore]
fn shortfall_scan() {
    let n: u64 = std::env::var("SCAN_N").map_or(600, |v| v.parse().expect("a number"));
    let mut rng = super::sim::Rng(21);
    let mut worst = [0.0f64; 5];
    let mut runs = 0;
    while runs < n {
        let seed = rng.next();
        let limit = Limit::per_second(1 + rng.below(100_000), 1 + rng.below(50_000));
        let (cores, tick) = (1 + rng.below(8) as usize, (1 + rng.below(20)) * MS);
        let mut setup = Setup::new(cores, tick, rng.below(9) * tick / 4, vec![limit]);
        setup.seed = seed;
        if !loop_fits(&setup, limit) {
            continue;
        }
        runs += 1;
        let allowed = shortfall_allowed(&setup, limit);
        let ideal = limit.burst() as f64 + 10.0 * limit.rate_milli() as f64 / 1000.0;
        for (i, (_, pattern)) in sustained(overload(limit), cores, seed)
            .into_iter()
            .enumerate()
        {
            let out = run(setup.clone(), &pattern, 10 * SEC);
            worst[i] = worst[i].max((ideal - out.admitted(0) as f64) / allowed);
        }
    }
    let names = sustained(1.0, 1, 0).into_iter().map(|(name, _)| name);
    for (name, w) in names.zip(worst) {
        eprintln!("{name}: worst shortfall {w:.2} of the allowed, {n} cases");
    }
}

//! Behaviour of shards and their reconciliation: unit tests for each rule, a property test of
//! one shard against a naive `HashMap` model on a virtual clock, and a multi-core simulation with
//! a tick-delayed bus.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::router::Method;

const STAGE: StageId = StageId(0x5747);
const TTL: Duration = Duration::from_secs(300);
const MB: u64 = 1024 * 1024;

struct Keys {
    buf: KeyBuf,
    spec: KeySpec,
}

impl Keys {
    fn new() -> Self {
        Keys {
            buf: KeyBuf::default(),
            spec: KeySpec::new(&["k"], &[] as &[&str]),
        }
    }

    fn key(&mut self, k: u32) -> CacheKey<'_> {
        self.stage_key(STAGE, k)
    }

    fn stage_key(&mut self, stage: StageId, k: u32) -> CacheKey<'_> {
        let q = format!("k={k}");
        let req = KeyRequest {
            stage,
            method: Method::Get,
            path: "/items",
            query: Some(&q),
            headers: &[],
        };
        self.spec.build(&mut self.buf, &req).expect("short key")
    }
}

fn shard(core: u16, budget: u64) -> CacheShard {
    let mut s = CacheShard::new(core);
    s.configure(&[(STAGE, budget)]);
    s
}

fn miss(s: &mut CacheShard, key: &CacheKey<'_>, now: Instant) -> FillTicket {
    match s.lookup(key, now) {
        Lookup::Miss(t) => t,
        other => panic!("expected a miss, got {other:?}"),
    }
}

fn fill(s: &mut CacheShard, key: &CacheKey<'_>, body: &[u8], ttl: Duration, now: Instant) -> bool {
    let mut t = miss(s, key, now);
    t.collect(body);
    s.complete(t, 200, &b"content-type: text/plain\r\n"[..], ttl, now)
}

fn hit_body(s: &mut CacheShard, key: &CacheKey<'_>, now: Instant) -> Option<Vec<u8>> {
    match s.lookup(key, now) {
        Lookup::Hit(e) => Some(e.body.to_vec()),
        Lookup::Miss(t) => {
            s.abort(t, AbortReason::Failed, now);
            None
        }
        _ => None,
    }
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn poll_wait(w: &mut FillWait, waker: &Waker) -> Poll<FillOutcome> {
    Pin::new(w).poll(&mut Context::from_waker(waker))
}

#[test]
fn miss_fill_then_hit_until_expiry() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    assert!(fill(&mut s, &k, b"hello", Duration::from_secs(30), t0));
    assert_eq!(
        hit_body(&mut s, &k, t0 + Duration::from_secs(29)).as_deref(),
        Some(&b"hello"[..])
    );
    let e = match s.lookup(&k, t0) {
        Lookup::Hit(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (e.status, &*e.head),
        (200, &b"content-type: text/plain\r\n"[..])
    );
    // Never served at or after its expiry.
    assert!(matches!(
        s.lookup(&k, t0 + Duration::from_secs(30)),
        Lookup::Miss(_)
    ));
    let st = s.stats().next().unwrap().1;
    assert_eq!((st.hits, st.misses, st.fills, st.expirations), (2, 2, 1, 1));
    s.check();
}

#[test]
fn concurrent_misses_coalesce_onto_one_ticket() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(7);
    let ticket = miss(&mut s, &k, t0);
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut waits: Vec<FillWait> = (0..9)
        .map(|_| match s.lookup(&k, t0) {
            Lookup::Wait(w) => w,
            other => panic!("expected a wait, got {other:?}"),
        })
        .collect();
    for w in &mut waits {
        assert!(poll_wait(w, &waker).is_pending());
        assert!(
            poll_wait(w, &waker).is_pending(),
            "re-polling does not add a waker"
        );
    }
    assert_eq!(ticket.waiters(), 9);
    let mut ticket = ticket;
    ticket.collect(b"body");
    assert!(s.complete(ticket, 200, &b""[..], TTL, t0));
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        9,
        "every waiter woken once"
    );
    let mut first: Option<EntryRef> = None;
    for w in &mut waits {
        match poll_wait(w, &waker) {
            Poll::Ready(FillOutcome::Filled(e)) => {
                assert_eq!(&*e.body, b"body");
                if let Some(f) = &first {
                    assert!(Arc::ptr_eq(&f.body, &e.body), "one entry for all waiters");
                }
                first = Some(e);
            }
            other => panic!("{other:?}"),
        }
    }
    let st = s.stats().next().unwrap().1;
    assert_eq!((st.misses, st.coalesced, st.fills), (1, 9, 1));
    s.check();
}

#[test]
fn aborted_or_dropped_fills_release_waiters() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    let t = miss(&mut s, &k, t0);
    let Lookup::Wait(w) = s.lookup(&k, t0) else {
        panic!()
    };
    s.abort(t, AbortReason::Failed, t0);
    assert!(matches!(w.outcome(), Some(FillOutcome::Aborted)));
    // A failed fill leaves no marker: the next lookup fills again.
    let t = miss(&mut s, &k, t0);
    let Lookup::Wait(w) = s.lookup(&k, t0) else {
        panic!()
    };
    drop(t);
    assert!(matches!(w.outcome(), Some(FillOutcome::Aborted)));
    assert!(
        matches!(s.lookup(&k, t0), Lookup::Miss(_)),
        "an abandoned fill is replaced"
    );
    s.check();
}

#[test]
fn uncacheable_responses_pass_for_a_while() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    let t = miss(&mut s, &k, t0);
    s.abort(t, AbortReason::Uncacheable, t0);
    let pass = Duration::from_millis(CACHE_PASS_MS);
    assert!(matches!(s.lookup(&k, t0), Lookup::Pass));
    assert!(matches!(
        s.lookup(&k, t0 + pass - Duration::from_millis(1)),
        Lookup::Pass
    ));
    assert!(matches!(s.lookup(&k, t0 + pass), Lookup::Miss(_)));
    assert!(
        s.drain_publish().is_none(),
        "a plain uncacheable miss publishes nothing"
    );
    s.check();
}

#[test]
fn oversized_bodies_stream_but_are_not_stored() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, 64 * MB);
    let k = keys.key(1);
    let mut t = miss(&mut s, &k, t0);
    let Lookup::Wait(w) = s.lookup(&k, t0) else {
        panic!()
    };
    let chunk = vec![0u8; 64 * 1024];
    let mut kept = true;
    for _ in 0..(CACHE_ENTRY_BYTES_MAX / chunk.len() + 1) {
        kept &= t.collect(&chunk);
    }
    assert!(!kept);
    assert!(!s.complete(t, 200, &b""[..], TTL, t0));
    assert!(matches!(w.outcome(), Some(FillOutcome::Aborted)));
    assert!(matches!(s.lookup(&k, t0), Lookup::Pass));
    // A body at the maximum is stored.
    let k2 = keys.key(2);
    assert!(fill(
        &mut s,
        &k2,
        &vec![1u8; CACHE_ENTRY_BYTES_MAX],
        TTL,
        t0
    ));
    s.check();
}

#[test]
fn small_budgets_cap_entries_at_a_share() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let budget = 80 * 1024;
    let mut s = shard(0, budget);
    let share = (budget / CACHE_ENTRY_BUDGET_SHARE) as usize;
    let k = keys.key(1);
    assert!(!fill(&mut s, &k, &vec![0u8; share + 1], TTL, t0));
    let k = keys.key(2);
    assert!(
        fill(&mut s, &k, &vec![0u8; share], TTL, t0),
        "a body of the share fits"
    );
}

#[test]
fn eviction_keeps_the_byte_bound_and_spares_visited_entries() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let body = vec![0u8; 1000];
    let budget = 10 * (1000 + 26 + 40 + CACHE_ENTRY_OVERHEAD_BYTES as u64);
    let mut s = shard(0, budget);
    for i in 0..10 {
        let k = keys.key(i);
        assert!(fill(&mut s, &k, &body, TTL, t0));
    }
    // Visit the even entries; the next fills must evict odd ones.
    for i in (0..10).step_by(2) {
        let k = keys.key(i);
        assert!(hit_body(&mut s, &k, t0).is_some());
    }
    for i in 10..15 {
        let k = keys.key(i);
        assert!(fill(&mut s, &k, &body, TTL, t0));
        assert!(s.bytes() <= budget);
        s.check();
    }
    for i in (0..10).step_by(2) {
        let k = keys.key(i);
        assert!(
            hit_body(&mut s, &k, t0).is_some(),
            "visited entry {i} evicted"
        );
    }
    let st = s.stats().next().unwrap().1;
    assert_eq!(st.evictions, 5);
    assert!(st.bytes <= budget);
}

#[test]
fn eviction_prefers_expired_entries() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let body = vec![0u8; 1000];
    let budget = 10 * (1000 + 26 + 40 + CACHE_ENTRY_OVERHEAD_BYTES as u64);
    let mut s = shard(0, budget);
    for i in 0..10 {
        let k = keys.key(i);
        let ttl = if i == 2 { Duration::from_secs(1) } else { TTL };
        assert!(fill(&mut s, &k, &body, ttl, t0));
        let k = keys.key(i);
        hit_body(&mut s, &k, t0); // visit all
    }
    let later = t0 + Duration::from_secs(2);
    let k = keys.key(99);
    assert!(fill(&mut s, &k, &body, TTL, later));
    for i in (0..10).filter(|&i| i != 2) {
        let k = keys.key(i);
        assert!(
            hit_body(&mut s, &k, later).is_some(),
            "{i} evicted instead of the expired 2"
        );
    }
}

#[test]
fn invalidation_detaches_a_fill_in_flight() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    let mut t = miss(&mut s, &k, t0);
    let Lookup::Wait(w) = s.lookup(&k, t0) else {
        panic!()
    };
    s.invalidate(&k, t0);
    t.collect(b"maybe stale");
    assert!(
        !s.complete(t, 200, &b""[..], TTL, t0),
        "a detached fill is not stored"
    );
    assert!(
        matches!(w.outcome(), Some(FillOutcome::Filled(_))),
        "its waiters still get it"
    );
    assert!(matches!(s.lookup(&k, t0), Lookup::Miss(_)));
    s.check();
}

#[test]
fn sweep_removes_expired_and_abandoned_nodes() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    for i in 0..20 {
        let k = keys.key(i);
        assert!(fill(
            &mut s,
            &k,
            b"x",
            Duration::from_secs(1 + u64::from(i % 2)),
            t0
        ));
    }
    let k = keys.key(100);
    drop(miss(&mut s, &k, t0));
    let removed = s.sweep(t0 + Duration::from_millis(1500), 1000);
    assert_eq!(removed, 11, "10 expired entries and one abandoned fill");
    assert_eq!(s.len(), 10);
    s.check();
}

#[test]
fn configure_shrinks_and_drops_stages() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let other = StageId(99);
    let mut s = CacheShard::new(0);
    s.configure(&[(STAGE, MB), (other, MB)]);
    for i in 0..50 {
        let k = keys.key(i);
        assert!(fill(&mut s, &k, &[0u8; 1000], TTL, t0));
        let k = keys.stage_key(other, i);
        assert!(fill(&mut s, &k, &[0u8; 1000], TTL, t0));
    }
    let small = 10 * 1400;
    s.configure(&[(STAGE, small)]);
    s.check();
    let stats: Vec<_> = s.stats().collect();
    assert_eq!(stats.len(), 1);
    assert!(stats[0].1.bytes <= small && stats[0].1.entries > 0);
    let k = keys.stage_key(other, 1);
    assert!(
        matches!(s.lookup(&k, t0), Lookup::Pass),
        "dropped stage bypasses"
    );
    // Re-adding a stage starts it empty.
    s.configure(&[(STAGE, small), (other, MB)]);
    let k = keys.stage_key(other, 1);
    assert!(matches!(s.lookup(&k, t0), Lookup::Miss(_)));
}

#[test]
fn head_requests_peek_without_filling() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    assert!(s.peek(&k, t0).is_none());
    assert!(
        matches!(s.lookup(&k, t0), Lookup::Miss(_)),
        "peek left no fill behind"
    );
    let k = keys.key(2);
    assert!(fill(&mut s, &k, b"x", TTL, t0));
    assert!(s.peek(&k, t0).is_some());
    assert!(s.peek(&k, t0 + TTL).is_none());
}

#[test]
fn insert_replaces_and_answers_waiters() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    let t = miss(&mut s, &k, t0);
    let Lookup::Wait(w) = s.lookup(&k, t0) else {
        panic!()
    };
    assert!(s.insert(&k, 200, &b""[..], &b"direct"[..], TTL, t0));
    assert!(matches!(w.outcome(), Some(FillOutcome::Filled(e)) if &*e.body == b"direct"));
    drop(t);
    assert_eq!(hit_body(&mut s, &k, t0).as_deref(), Some(&b"direct"[..]));
    s.check();
}

#[test]
fn entry_overhead_covers_real_sizes() {
    use std::mem::size_of;
    // Rc header, three Arc headers (key, head, body), an index node (bounded at 96), a table
    // slot (hash, node, key and entry handle: 40, in a table at most 8/7 full, plus its control
    // byte).
    let real = size_of::<Entry>() + 16 + 3 * 16 + 96 + 40 * 8 / 7 + 1;
    assert!(real <= CACHE_ENTRY_OVERHEAD_BYTES, "{real}");
}

// ---- Cores and the reconciler ----

#[test]
fn replication_messages_cross_threads() {
    fn sendable<T: Send>() {}
    fn shareable<T: Send + Sync>() {}
    sendable::<CacheBatch>();
    shareable::<Fanout>();
    shareable::<Entry>();
}

/// `n` shards and a reconciler; `tick` moves every core's log through the reconciler and
/// applies the fanout everywhere (the bus delay is one tick).
struct Cluster {
    shards: Vec<CacheShard>,
    rec: Reconciler,
}

impl Cluster {
    fn new(n: u16, budget: u64) -> Self {
        Cluster {
            shards: (0..n).map(|c| shard(c, budget)).collect(),
            rec: Reconciler::new(),
        }
    }

    fn tick(&mut self, now: Instant) -> usize {
        for s in &mut self.shards {
            if let Some(b) = s.drain_publish() {
                self.rec.ingest(b);
            }
        }
        let Some(f) = self.rec.tick() else {
            return 0;
        };
        for s in &mut self.shards {
            s.apply_remote(&f, now);
            s.check();
        }
        f.len()
    }
}

#[test]
fn a_fill_on_one_core_hits_everywhere_after_one_tick() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut c = Cluster::new(4, MB);
    let k = keys.key(1);
    assert!(fill(&mut c.shards[2], &k, b"from core 2", TTL, t0));
    // Before the tick, other cores miss (and would fill themselves).
    assert!(c.shards[0].peek(&k, t0).is_none());
    assert_eq!(c.tick(t0), 1);
    let mut bodies = Vec::new();
    for s in &mut c.shards {
        let Lookup::Hit(e) = s.lookup(&k, t0) else {
            panic!("core {} missed", s.core())
        };
        bodies.push(e.body.clone());
    }
    // The same Arc everywhere: no copy.
    assert!(bodies.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    let st = c.shards[0].stats().next().unwrap().1;
    assert_eq!(st.remote_fills, 1);
}

#[test]
fn an_invalidation_reaches_every_core_within_a_tick() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(5);
    let mut keys = Keys::new();
    let mut c = Cluster::new(3, MB);
    let k = keys.key(1);
    assert!(fill(&mut c.shards[0], &k, b"v1", TTL, t0));
    c.tick(t0);
    c.shards[1].invalidate(&k, t1);
    assert!(matches!(c.shards[1].lookup(&k, t1), Lookup::Miss(_)));
    c.tick(t1);
    for s in &mut c.shards {
        assert!(
            s.peek(&k, t1).is_none(),
            "core {} still serves it",
            s.core()
        );
    }
}

#[test]
fn a_fill_that_raced_an_invalidation_is_refused() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(5);
    let mut keys = Keys::new();
    let mut c = Cluster::new(3, MB);
    let k = keys.key(1);
    // Core 0 fills at t0 (stale), core 1 invalidates at t1 and its batch travels first.
    assert!(fill(&mut c.shards[0], &k, b"stale", TTL, t0));
    c.shards[1].invalidate(&k, t1);
    let b1 = c.shards[1].drain_publish().unwrap();
    let b0 = c.shards[0].drain_publish().unwrap();
    c.rec.ingest(b1);
    let f = c.rec.tick().unwrap();
    c.shards.iter_mut().for_each(|s| s.apply_remote(&f, t1));
    c.rec.ingest(b0);
    let f = c.rec.tick().unwrap();
    c.shards.iter_mut().for_each(|s| s.apply_remote(&f, t1));
    for s in &mut c.shards {
        assert!(
            s.peek(&k, t1).is_none(),
            "core {} kept a stale fill",
            s.core()
        );
    }
}

#[test]
fn concurrent_fills_converge_on_the_newest() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut c = Cluster::new(3, MB);
    let k = keys.key(1);
    assert!(fill(&mut c.shards[0], &k, b"older", TTL, t0));
    assert!(fill(
        &mut c.shards[1],
        &k,
        b"newer",
        TTL,
        t0 + Duration::from_millis(1)
    ));
    assert!(fill(&mut c.shards[2], &k, b"tie-low", TTL, t0));
    c.tick(t0 + Duration::from_millis(1));
    for s in &mut c.shards {
        assert_eq!(
            s.peek(&k, t0).map(|e| e.body.to_vec()).as_deref(),
            Some(&b"newer"[..])
        );
    }
}

#[test]
fn a_remote_fill_answers_local_waiters() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut c = Cluster::new(2, MB);
    let k = keys.key(1);
    let mut mine = miss(&mut c.shards[1], &k, t0);
    let Lookup::Wait(w) = c.shards[1].lookup(&k, t0) else {
        panic!()
    };
    assert!(fill(&mut c.shards[0], &k, b"core 0", TTL, t0));
    c.tick(t0);
    assert!(matches!(w.outcome(), Some(FillOutcome::Filled(e)) if &*e.body == b"core 0"));
    mine.collect(b"core 1");
    assert!(
        !c.shards[1].complete(mine, 200, &b""[..], TTL, t0),
        "the key is no longer its fill"
    );
    assert_eq!(
        hit_body(&mut c.shards[1], &k, t0).as_deref(),
        Some(&b"core 0"[..])
    );
    assert_eq!(c.tick(t0), 0, "nothing republished");
}

#[test]
fn refetch_replaces_the_entry_on_every_core() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(10);
    let mut keys = Keys::new();
    let mut c = Cluster::new(3, MB);
    let k = keys.key(1);
    assert!(fill(&mut c.shards[0], &k, b"v1", TTL, t0));
    c.tick(t0);
    let mut t = c.shards[2].refetch(&k, t1).expect("room");
    assert!(
        matches!(c.shards[2].lookup(&k, t1), Lookup::Wait(_)),
        "local lookups wait for it"
    );
    assert!(
        c.shards[0].peek(&k, t1).is_some(),
        "others serve v1 meanwhile"
    );
    t.collect(b"v2");
    assert!(c.shards[2].complete(t, 200, &b""[..], TTL, t1));
    c.tick(t1);
    for s in &mut c.shards {
        assert_eq!(hit_body(s, &k, t1).as_deref(), Some(&b"v2"[..]));
    }
}

#[test]
fn an_uncacheable_refetch_invalidates_everywhere() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(10);
    let mut keys = Keys::new();
    let mut c = Cluster::new(3, MB);
    let k = keys.key(1);
    assert!(fill(&mut c.shards[0], &k, b"v1", TTL, t0));
    c.tick(t0);
    let t = c.shards[1].refetch(&k, t1).unwrap();
    c.shards[1].abort(t, AbortReason::Uncacheable, t1);
    c.tick(t1);
    for s in &mut c.shards {
        assert!(s.peek(&k, t1).is_none(), "core {}", s.core());
    }
}

#[test]
fn admin_flush_empties_a_stage_on_every_core() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(10);
    let mut keys = Keys::new();
    let other = StageId(42);
    let mut c = Cluster::new(2, MB);
    for s in &mut c.shards {
        s.configure(&[(STAGE, MB), (other, MB)]);
    }
    for i in 0..5 {
        let k = keys.key(i);
        assert!(fill(&mut c.shards[0], &k, b"x", TTL, t0));
        let k = keys.stage_key(other, i);
        assert!(fill(&mut c.shards[1], &k, b"y", TTL, t0));
    }
    c.tick(t0);
    c.rec.flush_stage(STAGE, t1);
    // A stale fill of the flushed stage, still in a core's log, is refused when it lands.
    let k = keys.key(9);
    assert!(fill(&mut c.shards[1], &k, b"stale", TTL, t1));
    c.tick(t1);
    for s in &mut c.shards {
        assert_eq!(s.stats().find(|(st, _)| *st == STAGE).unwrap().1.entries, 0);
        assert_eq!(s.stats().find(|(st, _)| *st == other).unwrap().1.entries, 5);
    }
}

#[test]
fn an_invalidation_storm_becomes_a_stage_flush() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut c = Cluster::new(2, 64 * MB);
    for i in 0..10 {
        let k = keys.key(100_000 + i);
        assert!(fill(&mut c.shards[0], &k, b"x", TTL, t0));
    }
    c.tick(t0);
    for i in 0..(CACHE_PUBLISH_INVALIDATIONS_MAX as u32 + 5) {
        let k = keys.key(i);
        c.shards[0].invalidate(&k, t0);
    }
    let b = c.shards[0].drain_publish().unwrap();
    assert_eq!(b.deltas.len(), CACHE_PUBLISH_INVALIDATIONS_MAX + 1);
    assert!(matches!(b.deltas.last(), Some(Delta::Flush { stage, .. }) if *stage == STAGE));
    c.rec.ingest(b);
    let f = c.rec.tick().unwrap();
    c.shards[1].apply_remote(&f, t0);
    assert!(c.shards[1].is_empty(), "the other core flushed the stage");
}

#[test]
fn own_deltas_and_expired_fills_are_skipped() {
    let t0 = Instant::now();
    let mut keys = Keys::new();
    let mut s = shard(0, MB);
    let k = keys.key(1);
    assert!(fill(&mut s, &k, b"x", Duration::from_secs(1), t0));
    let b = s.drain_publish().unwrap();
    let mut rec = Reconciler::new();
    rec.ingest(b);
    let f = rec.tick().unwrap();
    let mut other = shard(1, MB);
    other.apply_remote(&f, t0 + Duration::from_secs(1));
    assert!(other.is_empty(), "an expired fill is not stored");
    s.apply_remote(&f, t0);
    assert_eq!(s.stats().next().unwrap().1.remote_fills, 0);
}

// ---- Property tests ----

#[derive(Debug, Clone)]
enum Op {
    /// Look up; on a miss, fill with a body of `size` bytes (or abort as uncacheable).
    Get {
        key: u32,
        size: usize,
        ttl_s: u64,
        cacheable: bool,
    },
    Invalidate {
        key: u32,
    },
    Advance {
        ms: u64,
    },
    Sweep,
    Flush,
}

fn op(keys: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        80 => (0..keys, 0usize..3000, 1u64..20, prop::bool::weighted(0.9))
            .prop_map(|(key, size, ttl_s, cacheable)| Op::Get { key, size, ttl_s, cacheable }),
        20 => (0..keys).prop_map(|key| Op::Invalidate { key }),
        30 => (0u64..4000).prop_map(|ms| Op::Advance { ms }),
        10 => Just(Op::Sweep),
        1 => Just(Op::Flush),
    ]
}

/// The naive model: a map with expiry times and pass markers, no budget.
#[derive(Default)]
struct Model {
    entries: HashMap<u32, (u64, Instant)>,
    pass: HashMap<u32, Instant>,
}

fn run_model(ops: &[Op], budget: u64) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut keys = Keys::new();
    let mut s = shard(0, budget);
    let mut m = Model::default();
    let mut version = 0u64;
    // With a small budget the shard may evict; it must then only ever answer a subset.
    let exact = budget >= 64 * MB;
    for op in ops {
        match *op {
            Op::Get {
                key,
                size,
                ttl_s,
                cacheable,
            } => {
                let k = keys.key(key);
                let model_hit = m
                    .entries
                    .get(&key)
                    .filter(|(_, exp)| now < *exp)
                    .map(|(v, _)| *v);
                let model_pass = m.pass.get(&key).is_some_and(|&u| now < u);
                match s.lookup(&k, now) {
                    Lookup::Hit(e) => {
                        let v = u64::from_le_bytes(e.body[..8].try_into().unwrap());
                        assert_eq!(
                            Some(v),
                            model_hit,
                            "served {key} that the model does not have"
                        );
                        assert!(now < e.expires_at);
                    }
                    Lookup::Miss(mut t) => {
                        assert!(
                            !exact || model_hit.is_none(),
                            "missed {key} that the model has"
                        );
                        assert!(!exact || !model_pass, "{key} should pass");
                        m.pass.remove(&key);
                        if cacheable {
                            version += 1;
                            let mut body = version.to_le_bytes().to_vec();
                            body.resize(size.max(8), 0);
                            t.collect(&body);
                            let ttl = Duration::from_secs(ttl_s);
                            let stored = s.complete(t, 200, &b""[..], ttl, now);
                            assert!(!exact || stored);
                            if stored {
                                m.entries.insert(key, (version, now + ttl));
                            } else {
                                m.entries.remove(&key);
                            }
                        } else {
                            s.abort(t, AbortReason::Uncacheable, now);
                            m.entries.remove(&key);
                            m.pass
                                .insert(key, now + Duration::from_millis(CACHE_PASS_MS));
                        }
                    }
                    Lookup::Pass => {
                        assert!(!exact || model_pass, "{key} passed without a marker");
                    }
                    Lookup::Wait(_) => panic!("no fill is ever left in flight here"),
                }
            }
            Op::Invalidate { key } => {
                let k = keys.key(key);
                s.invalidate(&k, now);
                m.entries.remove(&key);
            }
            Op::Advance { ms } => now += Duration::from_millis(ms),
            Op::Sweep => {
                s.sweep(now, 64);
            }
            Op::Flush => {
                s.flush_stage(STAGE, now);
                m.entries.clear();
                m.pass.clear();
            }
        }
        s.check();
        assert!(s.bytes() <= budget);
        let _ = s.drain_publish();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn shard_agrees_with_a_naive_map(ops in prop::collection::vec(op(40), 1..300)) {
        run_model(&ops, 64 * MB);
    }

    #[test]
    fn a_small_shard_answers_a_subset_within_its_budget(
        ops in prop::collection::vec(op(60), 1..300),
        budget in 4_000u64..40_000,
    ) {
        run_model(&ops, budget);
    }
}

#[derive(Debug, Clone)]
enum SimOp {
    Get { core: usize, key: u32, ttl_s: u64 },
    Invalidate { core: usize, key: u32 },
    Tick,
    Advance { ms: u64 },
    Flush,
}

fn sim_op(cores: usize, keys: u32) -> impl Strategy<Value = SimOp> {
    prop_oneof![
        80 => (0..cores, 0..keys, 1u64..30).prop_map(|(core, key, ttl_s)| SimOp::Get { core, key, ttl_s }),
        20 => (0..cores, 0..keys).prop_map(|(core, key)| SimOp::Invalidate { core, key }),
        30 => Just(SimOp::Tick),
        20 => (0u64..3000).prop_map(|ms| SimOp::Advance { ms }),
        1 => Just(SimOp::Flush),
    ]
}

/// Runs `ops` on `cores` shards. Checks: no core serves an entry after its expiry; once a core
/// has applied an invalidation (or flush) as of `at`, it never serves an entry stored at or
/// before `at`, except one it filled itself after applying it (a fill at the same instant, after
/// the invalidation); after every tick, each core hits every key whose last fill is fresh and
/// later than every other fill, invalidation of it and flush.
fn run_sim(cores: usize, ops: &[SimOp]) {
    /// An invalidation or flush as applied on one core: its instant, and the last version
    /// created before the core applied it.
    #[derive(Clone, Copy)]
    struct Applied {
        at: Instant,
        version: u64,
    }
    let t0 = Instant::now();
    let mut now = t0;
    let mut keys = Keys::new();
    let mut c = Cluster::new(cores as u16, 64 * MB);
    let mut applied: Vec<HashMap<u32, Applied>> = vec![HashMap::new(); cores];
    let mut flushed: Vec<Option<Applied>> = vec![None; cores];
    // Published but not yet delivered: (origin, key, at); a flush queued at the reconciler.
    let mut in_flight: Vec<(usize, u32, Instant)> = Vec::new();
    let mut flush_pending: Option<Instant> = None;
    // key → (stored_at, expires_at, whether another fill of the key has the same instant).
    let mut last_fill: HashMap<u32, (Instant, Instant, bool)> = HashMap::new();
    let mut last_inv: HashMap<u32, Instant> = HashMap::new();
    let mut last_flush: Option<Instant> = None;
    let mut version = 0u64;
    // version → (stored_at, filling core)
    let mut fills: HashMap<u64, (Instant, usize)> = HashMap::new();
    // Keeps the latest invalidation; an older one arriving later changes nothing.
    let apply = |slot: &mut Option<Applied>, at: Instant, version: u64| {
        if slot.is_none_or(|a| a.at < at) {
            *slot = Some(Applied { at, version });
        }
    };
    for op in ops {
        match *op {
            SimOp::Get { core, key, ttl_s } => {
                let k = keys.key(key);
                match c.shards[core].lookup(&k, now) {
                    Lookup::Hit(e) => {
                        assert!(now < e.expires_at, "served after expiry");
                        let v = u64::from_le_bytes(e.body[..8].try_into().unwrap());
                        let (at, origin) = fills[&v];
                        let allowed = |a: &Applied| at > a.at || (origin == core && v > a.version);
                        if let Some(a) = applied[core].get(&key) {
                            assert!(allowed(a), "core {core} served {key} after an invalidation");
                        }
                        if let Some(a) = &flushed[core] {
                            assert!(allowed(a), "core {core} served {key} after a flush");
                        }
                    }
                    Lookup::Miss(mut t) => {
                        version += 1;
                        t.collect(&version.to_le_bytes());
                        fills.insert(version, (now, core));
                        let ttl = Duration::from_secs(ttl_s);
                        assert!(c.shards[core].complete(t, 200, &b""[..], ttl, now));
                        let tie = last_fill.get(&key).is_some_and(|f| f.0 == now);
                        last_fill.insert(key, (now, now + ttl, tie));
                    }
                    other => panic!("{other:?}"),
                }
            }
            SimOp::Invalidate { core, key } => {
                let k = keys.key(key);
                c.shards[core].invalidate(&k, now);
                let mut slot = applied[core].get(&key).copied();
                apply(&mut slot, now, version);
                applied[core].insert(key, slot.unwrap());
                in_flight.push((core, key, now));
                let l = last_inv.entry(key).or_insert(now);
                *l = (*l).max(now);
            }
            SimOp::Flush => {
                c.rec.flush_stage(STAGE, now);
                flush_pending = Some(flush_pending.map_or(now, |f| f.max(now)));
                last_flush = Some(now);
            }
            SimOp::Advance { ms } => now += Duration::from_millis(ms),
            SimOp::Tick => {
                c.tick(now);
                for (origin, key, at) in in_flight.drain(..) {
                    for (core, a) in applied.iter_mut().enumerate() {
                        if core != origin {
                            let mut slot = a.get(&key).copied();
                            apply(&mut slot, at, version);
                            a.insert(key, slot.unwrap());
                        }
                    }
                }
                if let Some(f) = flush_pending.take() {
                    flushed.iter_mut().for_each(|x| apply(x, f, version));
                }
                for (&key, &(at, exp, tie)) in &last_fill {
                    // Fills at one instant: which one every core keeps is the tie-break's choice.
                    let live = !tie
                        && now < exp
                        && last_inv.get(&key).is_none_or(|&i| at > i)
                        && last_flush.is_none_or(|f| at > f);
                    if !live {
                        continue;
                    }
                    let k = keys.key(key);
                    for s in &mut c.shards {
                        assert!(
                            s.peek(&k, now).is_some(),
                            "core {} misses {key} after a tick",
                            s.core()
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cores_converge_within_a_tick(
        cores in 2usize..5,
        ops in prop::collection::vec(sim_op(4, 12), 1..200),
    ) {
        let ops: Vec<SimOp> = ops
            .into_iter()
            .map(|o| match o {
                SimOp::Get { core, key, ttl_s } => SimOp::Get { core: core % cores, key, ttl_s },
                SimOp::Invalidate { core, key } => SimOp::Invalidate { core: core % cores, key },
                o => o,
            })
            .collect();
        run_sim(cores, &ops);
    }
}

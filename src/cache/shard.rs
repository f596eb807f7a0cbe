//! One core's cache: an index of entries, in-flight fills and pass markers, with a hard byte
//! budget per stage, SIEVE eviction, coalescing of concurrent misses, and the log of what this
//! core filled or invalidated for the other cores. Not `Send`, not `Sync`: one per core, no lock.
//!
//! Storage: a slab of nodes (`u32` links) indexed by a `HashMap` from the key hash to the first
//! node with that hash; nodes with equal hashes chain through `next_same`, and a lookup compares
//! the key bytes, so a collision never answers with another key's response. The table slot
//! mirrors its node's key and entry handle, so a hit reads the slot, the key bytes and the entry
//! (the last two in parallel) without first visiting the node: one dependent cache miss fewer
//! when the index is far larger than the CPU caches.
//!
//! Eviction is SIEVE (Zhang et al., NSDI '24) per stage: entries sit in insertion order; a hit
//! only sets a `visited` bit, kept in a dense bitset beside the slab so that the write lands in
//! a line that is almost always cached (no list surgery on the hot path); to make room a hand
//! walks from
//! the oldest entry, sparing and clearing visited entries and evicting the first unvisited or
//! expired one. It keeps popular entries like LRU does, resists one-hit scans better, and costs
//! a hit one store instead of six pointer writes.
//!
//! Budget invariant (checked by `check` in tests): for every stage, the sum of the charges of its
//! nodes (`Entry::charge` for entries, key + overhead for fills and pass markers) is at most the
//! stage's budget on this core. Nothing is stored unless room was made for it first.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::{self, BodyCollector, Entry, EntryRef, FillOutcome, FillState, FillWait};
use super::key::{CacheKey, IdBuild, OwnedKey, StageId};
use super::reconcile::{CacheBatch, Delta, Fanout};
use super::{
    CACHE_ENTRY_BUDGET_SHARE, CACHE_ENTRY_BYTES_MAX, CACHE_PASS_MS, CACHE_PUBLISH_FILLS_MAX,
    CACHE_PUBLISH_INVALIDATIONS_MAX, CACHE_TOMBSTONE_MS, CACHE_TOMBSTONES_MAX,
};

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Answer from this entry (`x-cache: Hit`).
    Hit(EntryRef),
    /// Nobody on this core is fetching this key: fetch it, stream it to the client while
    /// collecting it into the ticket, then `complete` or `abort` the ticket.
    Miss(FillTicket),
    /// Another request on this core is fetching this key: await this, then answer from the
    /// entry, or on `Aborted` go to the backend without the cache.
    Wait(FillWait),
    /// Go to the backend and do not store: the stage is not cached here, the key was found
    /// uncacheable moments ago (a pass marker), or the budget is full of fills in progress.
    Pass,
}

/// The right, and the duty, to fill one key. Dropping it without `complete`/`abort` aborts the
/// fill for its waiters (a cancelled request task cannot strand them).
#[derive(Debug)]
pub struct FillTicket {
    key: OwnedKey,
    state: Rc<FillState>,
    body: BodyCollector,
    /// From `refetch`: if it ends unstored, the old entry must go on every core too.
    refetch: bool,
    done: bool,
}

/// Why a fill did not produce a storable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The backend failed or timed out, or the client went away: nothing learnt about the key.
    Failed,
    /// The response may not be stored (`Cacheability::Skip`, or the body outgrew the maximum):
    /// the key bypasses coalescing for `CACHE_PASS_MS`, so requests for an uncacheable resource
    /// do not queue behind each other.
    Uncacheable,
}

/// Counters and sizes of one stage on one core. Counters only grow; the lead's metrics shard
/// reads them (or their differences) at collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageStats {
    pub hits: u64,
    /// Lookups that got a fill ticket.
    pub misses: u64,
    /// Lookups that waited on another request's fill.
    pub coalesced: u64,
    /// Lookups sent to the backend without the cache.
    pub passes: u64,
    /// Entries stored from this core's fills.
    pub fills: u64,
    /// Entries stored from other cores' fills.
    pub remote_fills: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub invalidations: u64,
    /// Current entries and charged bytes (entries plus fills in progress).
    pub entries: u64,
    pub bytes: u64,
    pub budget_bytes: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Debug)]
enum State {
    Free,
    Ready(EntryRef),
    Filling(Rc<FillState>),
    /// Uncacheable until this instant: lookups pass.
    Pass(Instant),
}

#[derive(Debug)]
struct Node {
    hash: u64,
    key: Arc<[u8]>,
    part: u32,
    /// Next node with the same hash.
    next_same: u32,
    /// SIEVE list links (entries only): toward the newest and toward the oldest.
    newer: u32,
    older: u32,
    charge: u64,
    state: State,
}

/// A table slot: the first node of a hash chain, with copies of its key and entry handle.
/// Invariant: `key` and `entry` equal `nodes[node]`'s key and `Ready` handle (set in `alloc`
/// and `remove`, the only places a node's key or state changes).
#[derive(Debug)]
struct Head {
    node: u32,
    key: Arc<[u8]>,
    entry: Option<EntryRef>,
}

#[derive(Debug)]
struct Partition {
    stage: StageId,
    active: bool,
    budget: u64,
    bytes: u64,
    newest: u32,
    oldest: u32,
    /// SIEVE hand; `NIL` means start from the oldest.
    hand: u32,
    /// Fills stored at or before this instant were flushed and are refused.
    flushed_at: Option<Instant>,
    stats: StageStats,
}

/// One core's cache.
#[derive(Debug)]
pub struct CacheShard {
    core: u16,
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: HashMap<u64, Head, IdBuild>,
    parts: Vec<Partition>,
    part_of: HashMap<StageId, u32, IdBuild>,
    /// Latest invalidation per key hash: remote fills stored at or before it are refused.
    /// A hash collision only refuses a fill, which is safe.
    tombstones: HashMap<u64, Instant, IdBuild>,
    tomb_order: VecDeque<(u64, Instant)>,
    log: Vec<Delta>,
    log_fills: usize,
    log_invalidations: usize,
    /// Fills not published because the log was full (the other cores just miss).
    pub publish_dropped: u64,
    sweep_cursor: usize,
    /// Shared by free nodes, so freeing a node allocates nothing.
    empty_key: Arc<[u8]>,
    /// SIEVE's visited bit per node (1 MiB of bits covers 8M nodes).
    visited: Vec<u64>,
}

fn bit(bits: &[u64], i: u32) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: u32, on: bool) {
    let w = &mut bits[(i / 64) as usize];
    if on {
        *w |= 1 << (i % 64);
    } else {
        *w &= !(1 << (i % 64));
    }
}

impl CacheShard {
    /// An empty shard for core `core`; no stage is cached until `configure`.
    pub fn new(core: u16) -> Self {
        CacheShard {
            core,
            nodes: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            parts: Vec::new(),
            part_of: HashMap::default(),
            tombstones: HashMap::default(),
            tomb_order: VecDeque::new(),
            log: Vec::new(),
            log_fills: 0,
            log_invalidations: 0,
            publish_dropped: 0,
            sweep_cursor: 0,
            empty_key: Arc::from(&b""[..]),
            visited: Vec::new(),
        }
    }

    pub fn core(&self) -> u16 {
        self.core
    }

    /// Sets the cached stages and their budgets on this core (`CacheConfig::core_budget_bytes`),
    /// at start and at every snapshot swap. Stages left out are emptied; shrunk budgets evict
    /// down to the new bound at once.
    pub fn configure(&mut self, stages: &[(StageId, u64)]) {
        for p in &mut self.parts {
            p.active = false;
        }
        for &(stage, budget) in stages {
            let p = match self.part_of.get(&stage) {
                Some(&p) => p,
                None => {
                    self.parts.push(Partition::new(stage));
                    let p = (self.parts.len() - 1) as u32;
                    self.part_of.insert(stage, p);
                    p
                }
            };
            let part = &mut self.parts[p as usize];
            part.active = true;
            part.budget = budget;
            part.stats.budget_bytes = budget;
        }
        let over: Vec<u32> = (0..self.parts.len() as u32)
            .filter(|&p| {
                let part = &self.parts[p as usize];
                !part.active || part.bytes > part.budget
            })
            .collect();
        for p in over {
            while self.parts[p as usize].bytes > self.parts[p as usize].budget
                || !self.parts[p as usize].active
            {
                if !self.evict_one(p, None) {
                    break;
                }
            }
            // Fills and pass markers are not in the eviction list; detach them if still over.
            let part = &self.parts[p as usize];
            if !part.active || part.bytes > part.budget {
                self.remove_where(|n| n.part == p);
            }
        }
    }

    /// Looks `key` up at `now`, coalescing misses: see `Lookup`.
    pub fn lookup(&mut self, key: &CacheKey<'_>, now: Instant) -> Lookup {
        let Some(p) = self.partition(key.stage) else {
            return Lookup::Pass;
        };
        // The hit path, from the table slot alone.
        if let Some(h) = self.index.get(&key.hash)
            && let Some(e) = &h.entry
            && *h.key == *key.bytes
            && e.is_fresh(now)
        {
            set_bit(&mut self.visited, h.node, true);
            self.parts[p as usize].stats.hits += 1;
            return Lookup::Hit(e.clone());
        }
        if let Some(i) = self.find(key) {
            let n = &mut self.nodes[i as usize];
            let stats = &mut self.parts[p as usize].stats;
            match &n.state {
                State::Ready(e) if e.is_fresh(now) => {
                    set_bit(&mut self.visited, i, true);
                    stats.hits += 1;
                    return Lookup::Hit(e.clone());
                }
                State::Ready(_) => stats.expirations += 1,
                State::Filling(st) if !st.is_finished() => {
                    stats.coalesced += 1;
                    return Lookup::Wait(FillWait::new(st.clone()));
                }
                State::Pass(until) if now < *until => {
                    stats.passes += 1;
                    return Lookup::Pass;
                }
                // An abandoned fill or a stale pass marker.
                State::Filling(_) | State::Pass(_) | State::Free => {}
            }
            self.remove(i);
        }
        match self.start_fill(p, key, now, false) {
            Some(t) => {
                self.parts[p as usize].stats.misses += 1;
                Lookup::Miss(t)
            }
            None => {
                self.parts[p as usize].stats.passes += 1;
                Lookup::Pass
            }
        }
    }

    /// A fresh entry for `key`, without coalescing or filling: for HEAD requests, which cannot
    /// fill a GET entry. On `None`, forward the HEAD and do not store.
    pub fn peek(&mut self, key: &CacheKey<'_>, now: Instant) -> Option<EntryRef> {
        let p = self.partition(key.stage)?;
        let i = self.find(key)?;
        let n = &mut self.nodes[i as usize];
        match &n.state {
            State::Ready(e) if e.is_fresh(now) => {
                set_bit(&mut self.visited, i, true);
                self.parts[p as usize].stats.hits += 1;
                Some(e.clone())
            }
            _ => None,
        }
    }

    /// A client's authorized `Cache-Control: max-age=0`: a ticket to fetch `key` afresh. The
    /// current entry is dropped here at once (later lookups on this core wait for the refetch);
    /// a fill already in flight is detached (its waiters still get its response, it is not
    /// stored). Other cores keep their entry until the refetched one replaces it (it is newer),
    /// or, if the refetch aborts, until the invalidation `abort` publishes. `None`: pass.
    pub fn refetch(&mut self, key: &CacheKey<'_>, now: Instant) -> Option<FillTicket> {
        let p = self.partition(key.stage)?;
        if let Some(i) = self.find(key) {
            self.remove(i);
        }
        let t = self.start_fill(p, key, now, true);
        let stats = &mut self.parts[p as usize].stats;
        match t {
            Some(_) => stats.misses += 1,
            None => stats.passes += 1,
        }
        t
    }

    /// Finishes a fill with the response's status, replayed header bytes and TTL
    /// (`Cacheability::Store`); the body is what the ticket collected. Waiters get the entry
    /// either way; it is stored and published when the ticket still owns the key, the body
    /// fitted, and the stage's budget has room. Returns whether it was stored.
    pub fn complete(
        &mut self,
        mut ticket: FillTicket,
        status: u16,
        head: impl Into<Arc<[u8]>>,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(body) = ticket.body.take() else {
            self.abort(ticket, AbortReason::Uncacheable, now);
            return false;
        };
        ticket.done = true;
        let entry = Entry {
            key: ticket.key.clone(),
            status,
            head: head.into(),
            // One copy of the collected body, at fill time only.
            body: body.into(),
            stored_at: now,
            expires_at: now + ttl,
            origin: self.core,
        };
        let eref = EntryRef::new(entry.clone());
        ticket.state.finish(FillOutcome::Filled(eref.clone()));
        let Some(i) = self.owned_by(&ticket) else {
            return false;
        };
        let p = self.nodes[i as usize].part;
        self.remove(i);
        let stored = !ttl.is_zero() && self.store(eref, now);
        if stored {
            self.parts[p as usize].stats.fills += 1;
            self.publish(Delta::Fill(entry));
        } else if ticket.refetch {
            self.invalidate_owned(ticket.key.clone(), now);
        }
        stored
    }

    /// Ends a fill without storing. Waiters go to the backend themselves (`Aborted`). For
    /// `Uncacheable`, a pass marker remembers it for `CACHE_PASS_MS`; and if the ticket came from
    /// `refetch`, the key is invalidated on every core (the backend no longer lets us keep it).
    /// A plain miss that turns out uncacheable publishes nothing: other cores' entries are still
    /// within their TTL, and a flood of uncacheable keys must not turn into invalidations.
    pub fn abort(&mut self, mut ticket: FillTicket, reason: AbortReason, now: Instant) {
        ticket.done = true;
        ticket.state.finish(FillOutcome::Aborted);
        let Some(i) = self.owned_by(&ticket) else {
            return;
        };
        let p = self.nodes[i as usize].part;
        self.remove(i);
        if reason == AbortReason::Uncacheable {
            if ticket.refetch {
                self.invalidate_owned(ticket.key.clone(), now);
            }
            let charge = entry::charge(ticket.key.bytes.len(), 0);
            if self.make_room(p, charge, now) {
                let until = now + Duration::from_millis(CACHE_PASS_MS);
                self.alloc(&ticket.key, p, charge, State::Pass(until));
            }
        }
    }

    /// Stores a response without a ticket (replacing any entry, finishing any fill in flight
    /// with it) and publishes it. Returns whether it was stored.
    pub fn insert(
        &mut self,
        key: &CacheKey<'_>,
        status: u16,
        head: impl Into<Arc<[u8]>>,
        body: impl Into<Arc<[u8]>>,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(p) = self.partition(key.stage) else {
            return false;
        };
        let entry = Entry {
            key: key.to_owned_key(),
            status,
            head: head.into(),
            body: body.into(),
            stored_at: now,
            expires_at: now + ttl,
            origin: self.core,
        };
        let eref = EntryRef::new(entry.clone());
        if let Some(i) = self.find(key) {
            if let State::Filling(st) = &self.nodes[i as usize].state {
                st.finish(FillOutcome::Filled(eref.clone()));
            }
            self.remove(i);
        }
        if ttl.is_zero() || !self.store(eref, now) {
            return false;
        }
        self.parts[p as usize].stats.fills += 1;
        self.publish(Delta::Fill(entry));
        true
    }

    /// Drops `key` on this core now and on every other core within a tick. A fill in flight is
    /// detached (its waiters get its response, it is not stored); fills of this key stored at or
    /// before `now` on other cores are refused when they arrive.
    pub fn invalidate(&mut self, key: &CacheKey<'_>, now: Instant) {
        self.invalidate_owned(key.to_owned_key(), now);
    }

    /// Drops every entry of `stage` stored at or before `at`, and refuses such fills later.
    /// The admin flush reaches cores through `Reconciler::flush_stage`, which calls this on
    /// every core; calling it directly affects this core only.
    pub fn flush_stage(&mut self, stage: StageId, at: Instant) {
        let Some(p) = self.partition(stage) else {
            return;
        };
        let part = &mut self.parts[p as usize];
        part.flushed_at = Some(part.flushed_at.map_or(at, |f| f.max(at)));
        let n = self.remove_where(|n| {
            n.part == p && !matches!(&n.state, State::Ready(e) if e.stored_at > at)
        });
        self.parts[p as usize].stats.invalidations += n as u64;
    }

    /// Removes up to `nodes_max` expired entries, stale pass markers and abandoned fills,
    /// resuming where the last call stopped, and forgets tombstones older than
    /// `CACHE_TOMBSTONE_MS`. Call at the core's tick; lookups remove what they trip over anyway.
    pub fn sweep(&mut self, now: Instant, nodes_max: usize) -> usize {
        let mut removed = 0;
        for _ in 0..nodes_max.min(self.nodes.len()) {
            self.sweep_cursor = (self.sweep_cursor + 1) % self.nodes.len();
            let i = self.sweep_cursor as u32;
            let n = &self.nodes[i as usize];
            let dead = match &n.state {
                State::Free => false,
                State::Ready(e) => !e.is_fresh(now),
                State::Filling(st) => st.is_finished(),
                State::Pass(until) => *until <= now,
            };
            if dead {
                if matches!(n.state, State::Ready(_)) {
                    self.parts[n.part as usize].stats.expirations += 1;
                }
                self.remove(i);
                removed += 1;
            }
        }
        let keep = Duration::from_millis(CACHE_TOMBSTONE_MS);
        while let Some(&(h, at)) = self.tomb_order.front() {
            if at + keep > now {
                break;
            }
            self.tomb_order.pop_front();
            self.forget_tombstone(h, at);
        }
        removed
    }

    /// What this core filled and invalidated since the last call, as one message for the
    /// control thread; `None` when there is nothing to say.
    pub fn drain_publish(&mut self) -> Option<CacheBatch> {
        if self.log.is_empty() {
            return None;
        }
        self.log_fills = 0;
        self.log_invalidations = 0;
        Some(CacheBatch {
            core: self.core,
            deltas: std::mem::take(&mut self.log),
        })
    }

    /// Applies what other cores published (this core's own deltas in `fanout` are skipped).
    /// Fills share the filling core's buffers; a fill newer than the local entry replaces it, and
    /// one arriving while this core is fetching the key answers that fetch's waiters at once.
    pub fn apply_remote(&mut self, fanout: &Fanout, now: Instant) {
        for (origin, delta) in fanout.iter() {
            if origin == self.core {
                continue;
            }
            match delta {
                Delta::Fill(e) => self.apply_fill(e, now),
                Delta::Invalidate { key, at } => self.apply_invalidate(key, *at),
                Delta::Flush { stage, at } => self.flush_stage(*stage, *at),
            }
        }
    }

    /// Per-stage counters and sizes of the configured stages.
    pub fn stats(&self) -> impl Iterator<Item = (StageId, StageStats)> + '_ {
        self.parts.iter().filter(|p| p.active).map(|p| {
            (
                p.stage,
                StageStats {
                    bytes: p.bytes,
                    ..p.stats
                },
            )
        })
    }

    /// Charged bytes over every stage.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    /// Stored entries over every stage.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.stats.entries as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FillTicket {
    pub fn key(&self) -> &OwnedKey {
        &self.key
    }

    /// Adds a chunk of the body as it streams to the client. `false` once the body has outgrown
    /// the per-entry maximum: keep streaming, and `abort(Uncacheable)` (or `complete`, which
    /// then aborts) at the end.
    pub fn collect(&mut self, chunk: &[u8]) -> bool {
        self.body.push(chunk)
    }

    /// Whether the body outgrew the per-entry maximum (the fill will not be stored).
    pub fn overflowed(&self) -> bool {
        self.body.is_over()
    }

    /// Requests on this core waiting for this fill.
    pub fn waiters(&self) -> usize {
        self.state.waiters()
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        if !self.done {
            self.state.finish(FillOutcome::Aborted);
        }
    }
}

impl Partition {
    fn new(stage: StageId) -> Self {
        Partition {
            stage,
            active: false,
            budget: 0,
            bytes: 0,
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            flushed_at: None,
            stats: StageStats::default(),
        }
    }

    /// The largest body one entry of this stage may have.
    fn entry_max(&self) -> usize {
        let share = (self.budget / CACHE_ENTRY_BUDGET_SHARE) as usize;
        CACHE_ENTRY_BYTES_MAX.min(share)
    }
}

// Internals: index, slab, list and budget.
impl CacheShard {
    fn partition(&self, stage: StageId) -> Option<u32> {
        let &p = self.part_of.get(&stage)?;
        self.parts[p as usize].active.then_some(p)
    }

    fn find(&self, key: &CacheKey<'_>) -> Option<u32> {
        let h = self.index.get(&key.hash)?;
        if *h.key == *key.bytes {
            return Some(h.node);
        }
        let mut i = h.node;
        loop {
            let n = &self.nodes[i as usize];
            if *n.key == *key.bytes {
                return Some(i);
            }
            if n.next_same == NIL {
                return None;
            }
            i = n.next_same;
        }
    }

    /// The node of the ticket's key, if it still is this ticket's fill.
    fn owned_by(&self, t: &FillTicket) -> Option<u32> {
        let i = self.find(&t.key.as_key())?;
        match &self.nodes[i as usize].state {
            State::Filling(st) if Rc::ptr_eq(st, &t.state) => Some(i),
            _ => None,
        }
    }

    fn start_fill(
        &mut self,
        p: u32,
        key: &CacheKey<'_>,
        now: Instant,
        refetch: bool,
    ) -> Option<FillTicket> {
        let charge = entry::charge(key.bytes.len(), 0);
        if !self.make_room(p, charge, now) {
            return None;
        }
        let state = Rc::new(FillState::default());
        let owned = key.to_owned_key();
        self.alloc(&owned, p, charge, State::Filling(state.clone()));
        Some(FillTicket {
            key: owned,
            state,
            body: BodyCollector::new(self.parts[p as usize].entry_max()),
            refetch,
            done: false,
        })
    }

    /// Stores an entry whose key has no node, making room first. `false` if it cannot fit.
    fn store(&mut self, e: EntryRef, now: Instant) -> bool {
        let Some(p) = self.partition(e.key.stage) else {
            return false;
        };
        if e.body.len() > self.parts[p as usize].entry_max() {
            return false;
        }
        let charge = e.charge();
        if !self.make_room(p, charge, now) {
            return false;
        }
        let key = e.key.clone();
        let i = self.alloc(&key, p, charge, State::Ready(e));
        self.list_push_newest(p, i);
        self.parts[p as usize].stats.entries += 1;
        true
    }

    fn apply_fill(&mut self, e: &Entry, now: Instant) {
        let Some(p) = self.partition(e.key.stage) else {
            return;
        };
        let refused = !e.is_fresh(now)
            || self.parts[p as usize]
                .flushed_at
                .is_some_and(|f| e.stored_at <= f)
            || self
                .tombstones
                .get(&e.key.hash)
                .is_some_and(|&t| e.stored_at <= t);
        if refused {
            return;
        }
        let eref = EntryRef::new(e.clone());
        if let Some(i) = self.find(&e.key.as_key()) {
            match &self.nodes[i as usize].state {
                State::Ready(old) if !e.newer_than(old) => return,
                State::Filling(st) => st.finish(FillOutcome::Filled(eref.clone())),
                _ => {}
            }
            self.remove(i);
        }
        if self.store(eref, now) {
            self.parts[p as usize].stats.remote_fills += 1;
        }
    }

    fn invalidate_owned(&mut self, key: OwnedKey, now: Instant) {
        self.apply_invalidate(&key, now);
        self.publish(Delta::Invalidate { key, at: now });
    }

    fn apply_invalidate(&mut self, key: &OwnedKey, at: Instant) {
        self.push_tombstone(key.hash, at);
        let Some(p) = self.partition(key.stage) else {
            return;
        };
        let Some(i) = self.find(&key.as_key()) else {
            return;
        };
        let drop = match &self.nodes[i as usize].state {
            State::Ready(e) => e.stored_at <= at,
            // It may have been sent before the change that prompted the invalidation.
            State::Filling(_) => true,
            State::Pass(_) | State::Free => false,
        };
        if drop {
            self.remove(i);
            self.parts[p as usize].stats.invalidations += 1;
        }
    }

    fn push_tombstone(&mut self, hash: u64, at: Instant) {
        let t = self.tombstones.entry(hash).or_insert(at);
        *t = (*t).max(at);
        self.tomb_order.push_back((hash, at));
        if self.tomb_order.len() > CACHE_TOMBSTONES_MAX {
            // Past the bound the oldest tombstone goes early: a fill that raced it may then be
            // kept on some cores. The bound only bites under an invalidation storm.
            if let Some((h, at)) = self.tomb_order.pop_front() {
                self.forget_tombstone(h, at);
            }
        }
    }

    /// Drops the tombstone of `hash` unless a later invalidation renewed it.
    fn forget_tombstone(&mut self, hash: u64, at: Instant) {
        if self.tombstones.get(&hash) == Some(&at) {
            self.tombstones.remove(&hash);
        }
    }

    fn publish(&mut self, d: Delta) {
        match d {
            Delta::Fill(_) if self.log_fills >= CACHE_PUBLISH_FILLS_MAX => {
                self.publish_dropped += 1;
                return;
            }
            Delta::Fill(_) => self.log_fills += 1,
            Delta::Invalidate { key, at }
                if self.log_invalidations >= CACHE_PUBLISH_INVALIDATIONS_MAX =>
            {
                // Invalidations must not be lost: past the bound, flush the stage everywhere
                // else instead (a superset of what was asked, so still safe).
                let stage = key.stage;
                let flush = self.log.iter_mut().find_map(|d| match d {
                    Delta::Flush { stage: s, at } if *s == stage => Some(at),
                    _ => None,
                });
                match flush {
                    Some(a) => *a = (*a).max(at),
                    None => self.log.push(Delta::Flush { stage, at }),
                }
                return;
            }
            Delta::Invalidate { .. } => self.log_invalidations += 1,
            Delta::Flush { .. } => {}
        }
        self.log.push(d);
    }

    /// Evicts entries of partition `p` until `need` more bytes fit. `false` when they cannot
    /// (the need exceeds the budget, or only fills and pass markers are left).
    fn make_room(&mut self, p: u32, need: u64, now: Instant) -> bool {
        loop {
            let part = &self.parts[p as usize];
            if part.bytes + need <= part.budget {
                return true;
            }
            if need > part.budget || !self.evict_one(p, Some(now)) {
                return false;
            }
        }
    }

    /// SIEVE: from the hand toward the newest (wrapping to the oldest), clear visited bits until
    /// an unvisited or expired entry is found; evict it.
    fn evict_one(&mut self, p: u32, now: Option<Instant>) -> bool {
        let part = &self.parts[p as usize];
        let mut c = if part.hand != NIL {
            part.hand
        } else {
            part.oldest
        };
        if c == NIL {
            return false;
        }
        loop {
            let n = &self.nodes[c as usize];
            let expired = match (&n.state, now) {
                (State::Ready(e), Some(now)) => !e.is_fresh(now),
                _ => false,
            };
            if !bit(&self.visited, c) || expired {
                break;
            }
            set_bit(&mut self.visited, c, false);
            c = if n.newer != NIL {
                n.newer
            } else {
                self.parts[p as usize].oldest
            };
        }
        // `remove` moves the hand past `c`.
        self.parts[p as usize].hand = c;
        self.remove(c);
        self.parts[p as usize].stats.evictions += 1;
        true
    }

    fn alloc(&mut self, key: &OwnedKey, p: u32, charge: u64, state: State) -> u32 {
        let node = Node {
            hash: key.hash,
            key: key.bytes.clone(),
            part: p,
            next_same: NIL,
            newer: NIL,
            older: NIL,
            charge,
            state,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                if self.nodes.len() > self.visited.len() * 64 {
                    self.visited.push(0);
                }
                (self.nodes.len() - 1) as u32
            }
        };
        set_bit(&mut self.visited, i, false);
        let head = self.head_of(i);
        self.nodes[i as usize].next_same =
            self.index.insert(key.hash, head).map_or(NIL, |h| h.node);
        self.parts[p as usize].bytes += charge;
        i
    }

    fn head_of(&self, i: u32) -> Head {
        let n = &self.nodes[i as usize];
        Head {
            node: i,
            key: n.key.clone(),
            entry: match &n.state {
                State::Ready(e) => Some(e.clone()),
                _ => None,
            },
        }
    }

    fn remove(&mut self, i: u32) {
        let (hash, next_same, p) = {
            let n = &self.nodes[i as usize];
            (n.hash, n.next_same, n.part)
        };
        // Unlink from the hash chain. Invariant: every live node is on its hash's chain.
        match self.index.get(&hash).map(|h| h.node) {
            Some(head) if head == i => {
                if next_same == NIL {
                    self.index.remove(&hash);
                } else {
                    let next = self.head_of(next_same);
                    self.index.insert(hash, next);
                }
            }
            Some(mut prev) => {
                while self.nodes[prev as usize].next_same != i {
                    prev = self.nodes[prev as usize].next_same;
                }
                self.nodes[prev as usize].next_same = next_same;
            }
            None => debug_assert!(false, "node {i} missing from the index"),
        }
        if matches!(self.nodes[i as usize].state, State::Ready(_)) {
            self.list_unlink(p, i);
            self.parts[p as usize].stats.entries -= 1;
        }
        let n = &mut self.nodes[i as usize];
        self.parts[p as usize].bytes -= n.charge;
        n.charge = 0;
        n.state = State::Free;
        n.key = self.empty_key.clone();
        self.free.push(i);
    }

    /// Removes every live node `f` selects; returns how many.
    fn remove_where(&mut self, f: impl Fn(&Node) -> bool) -> usize {
        let doomed: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                !matches!(n.state, State::Free) && f(n)
            })
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        doomed.len()
    }

    fn list_push_newest(&mut self, p: u32, i: u32) {
        let part = &mut self.parts[p as usize];
        let old_newest = part.newest;
        part.newest = i;
        if old_newest == NIL {
            part.oldest = i;
        }
        let n = &mut self.nodes[i as usize];
        n.older = old_newest;
        n.newer = NIL;
        if old_newest != NIL {
            self.nodes[old_newest as usize].newer = i;
        }
    }

    fn list_unlink(&mut self, p: u32, i: u32) {
        let (newer, older) = {
            let n = &self.nodes[i as usize];
            (n.newer, n.older)
        };
        let part = &mut self.parts[p as usize];
        if part.hand == i {
            part.hand = newer;
        }
        if newer == NIL {
            part.newest = older;
        } else {
            self.nodes[newer as usize].older = older;
        }
        let part = &mut self.parts[p as usize];
        if older == NIL {
            part.oldest = newer;
        } else {
            self.nodes[older as usize].newer = newer;
        }
    }

    /// Checks every structural invariant; panics with what is broken. For tests.
    #[doc(hidden)]
    pub fn check(&self) {
        let mut bytes = vec![0u64; self.parts.len()];
        let mut entries = vec![0u64; self.parts.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if matches!(n.state, State::Free) {
                assert_eq!(n.charge, 0);
                continue;
            }
            let found = self.find(&CacheKey {
                stage: StageId(0),
                hash: n.hash,
                bytes: &n.key,
            });
            assert_eq!(
                found,
                Some(i as u32),
                "node {i} not reachable from the index"
            );
            bytes[n.part as usize] += n.charge;
            if let State::Ready(e) = &n.state {
                entries[n.part as usize] += 1;
                assert_eq!(n.charge, e.charge());
                assert_eq!(e.key.hash, n.hash);
            }
        }
        for (&hash, h) in &self.index {
            let n = &self.nodes[h.node as usize];
            assert_eq!(n.hash, hash, "slot of {hash} names another node");
            assert!(
                Arc::ptr_eq(&h.key, &n.key),
                "slot key of node {} stale",
                h.node
            );
            let same = match (&h.entry, &n.state) {
                (None, State::Filling(_) | State::Pass(_)) => true,
                (Some(a), State::Ready(b)) => a.ptr_eq(b),
                _ => false,
            };
            assert!(same, "slot entry of node {} stale", h.node);
        }
        for (p, part) in self.parts.iter().enumerate() {
            assert_eq!(part.bytes, bytes[p], "stage {p} byte count");
            let bound = if part.active { part.budget } else { 0 };
            assert!(
                part.bytes <= bound,
                "stage {p} over budget: {} > {bound}",
                part.bytes
            );
            assert_eq!(part.stats.entries, entries[p], "stage {p} entry count");
            let mut c = part.oldest;
            let mut walked = 0;
            let mut prev = NIL;
            while c != NIL {
                let n = &self.nodes[c as usize];
                assert!(matches!(n.state, State::Ready(_)));
                assert_eq!(n.older, prev);
                prev = c;
                c = n.newer;
                walked += 1;
            }
            assert_eq!(prev, part.newest);
            assert_eq!(walked, entries[p], "stage {p} list length");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_node_fits_its_share_of_the_overhead() {
        // `CACHE_ENTRY_OVERHEAD_BYTES` counts 96 bytes for the node (see `cache::tests`).
        assert!(
            std::mem::size_of::<Node>() <= 96,
            "{}",
            std::mem::size_of::<Node>()
        );
    }
}

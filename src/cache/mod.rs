//! The response cache (API Gateway's stage cache): keys, policy, per-core shards and their
//! reconciliation. Pure: no I/O, no clock (every call takes `now`), no threads. It owns what is
//! stored, for how long, under which key, what is evicted, and what other cores must learn. It
//! does not own reading or writing responses, the auth decision, channels or timers: the
//! connection driver, the core loop and the control thread drive it as drawn below.
//!
//! ```text
//! request ─ RoutePolicy::key ── none ─────────────────────────────────────────────▶ proxy
//!              │ (KeyBuf, no allocation)
//!              ▼
//!           invalidation(policy, wants_refresh(headers), authorized)
//!              ├ Forbidden ───────────────────────────────────────────────────────▶ 403
//!              ├ Refetch ── shard.refetch ─▶ ticket (as Miss) / None (proxy)
//!              └ None | Ignore{warn} ── HEAD: shard.peek ─ hit ▶ answer / none ▶ proxy HEAD
//!                                      other: shard.lookup
//!                ├ Hit(entry) ───────────────────────────▶ answer from entry, x-cache: Hit
//!                ├ Miss(ticket) ─ proxy; on the response head: cacheability(..)
//!                │      ├ Skip ─ shard.abort(ticket, Uncacheable); stream as usual
//!                │      └ Store{ttl} ─ stream to the client, ticket.collect(chunk) each chunk,
//!                │                     then shard.complete(ticket, status, head, ttl, now);
//!                │                     backend error: shard.abort(ticket, Failed) (or drop it)
//!                ├ Wait(w) ─ w.await ─ Filled(entry) ▶ answer / Aborted ▶ proxy, no cache
//!                └ Pass ─────────────────────────────────▶ proxy, no cache, x-cache: Miss
//! ```
//!
//! Wiring (for the lead):
//! - **Config/compile.** `CacheConfig` per stage (`cache = {..}`) and `RouteCacheOverride` per
//!   route (`route_cache = {..}`), each with `validate()`. Compile a `RoutePolicy` per route with
//!   `RoutePolicy::resolve(StageId::new(api, stage), &stage_cfg, route_override)` and the
//!   per-core budgets `[(StageId, cfg.core_budget_bytes(cores))]` of the cache-enabled stages.
//! - **Core.** `CoreCtx` holds `RefCell<CacheShard>` (`CacheShard::new(core)`) and
//!   `RefCell<KeyBuf>`; every call is synchronous, so no borrow lives across an `.await`. On a
//!   snapshot swap: `shard.configure(&budgets)`. At each tick: `shard.sweep(now,
//!   CACHE_SWEEP_NODES_PER_TICK)`, then `shard.drain_publish()` → `FromCore::Cache(batch)` (send
//!   it even if the channel is busy: an invalidation must not be dropped); on
//!   `ToCore::Cache(fanout)`: `shard.apply_remote(&fanout, now)`.
//! - **Control thread.** `Reconciler`: `ingest` each `FromCore::Cache`, and at its tick send
//!   `tick()`'s `Fanout` (cheap clone) to every core. The admin flush of a stage
//!   (`DELETE /cache/{api}/{stage}`): `reconciler.flush_stage(stage, Instant::now())`.
//! - **Response.** A hit replays `entry.status`, `entry.head` (header lines the driver
//!   pre-encoded from the backend response, keeping those `replay_header` accepts), a fresh
//!   `content-length`, `date`, `x-request-id`, `x-cache: Hit` and, optionally, `age`. A waiter
//!   served from a fill is a hit for the backend's sake; call it `Hit` or `Miss` as you prefer.
//! - **Metrics.** `shard.stats()` per stage (hits, misses, coalesced, passes, fills, evictions,
//!   bytes...).
//!
//! Streaming: the ticket holder streams the backend response to its client while collecting
//! it; waiters get the whole entry when the fill completes (they are not fed chunk by chunk). A
//! body that outgrows the per-entry maximum keeps streaming to the first client and is not
//! stored; its waiters get `Aborted` and go to the backend themselves.
//!
//! Guarantees: within a TTL a key costs at most one backend call per core at a time (misses
//! coalesce), and once a fill has gone through one reconciler round every core hits it. An
//! invalidation or flush reaches every core in one round and fills stored before it are refused
//! afterwards. No entry is served at or after its `expires_at`. Memory: each core charges every
//! entry it holds (bytes + `CACHE_ENTRY_OVERHEAD_BYTES`) against its share of the stage's
//! capacity, so the sum over cores never exceeds `capacity_mb`; the price is that an entry held
//! by all cores is charged on each, so distinct content is `capacity / cores` when everything is
//! replicated. Not counted: bodies being collected by fills in flight (at most the per-entry
//! maximum each, `CACHE_ENTRY_BYTES_MAX` or less, one per concurrent miss) and entries held by
//! responses being written or by messages in transit.
//!
//! Limits live here rather than in `limits.rs` only because this module was built apart; they
//! belong there.

mod entry;
mod key;
mod policy;
mod reconcile;
mod shard;

#[cfg(test)]
mod tests;

pub use entry::{Entry, EntryRef, FillOutcome, FillWait};
pub use key::{CacheKey, KeyBuf, KeyRequest, KeySpec, OwnedKey, StageId};
pub use policy::{
    CacheConfig, Cacheability, INVALIDATION_IGNORED_HEADER, Invalidation, RouteCacheOverride,
    RoutePolicy, SkipReason, UnauthorizedStrategy, cacheability, invalidation, replay_header,
    wants_refresh,
};
pub use reconcile::{CONTROL_ORIGIN, CacheBatch, Delta, Fanout, Reconciler};
pub use shard::{AbortReason, CacheShard, FillTicket, Lookup, StageStats};

/// Default `ttl_s`.
pub const CACHE_TTL_S_DEFAULT: u32 = 300;
/// Largest `ttl_s` (one hour, as API Gateway).
pub const CACHE_TTL_S_MAX: u32 = 3600;
/// Default `capacity_mb` of a stage, all cores together.
pub const CACHE_CAPACITY_MB_DEFAULT: u32 = 128;
/// Largest `capacity_mb` of a stage.
pub const CACHE_CAPACITY_MB_MAX: u32 = 64 * 1024;
/// Largest body stored for one response (API Gateway's 1 MB); larger responses are streamed
/// and not stored. (The head is bounded by the response head limits.)
pub const CACHE_ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// An entry's body is also at most this fraction (1/n) of a core's stage budget, so one
/// response cannot empty a small cache.
pub const CACHE_ENTRY_BUDGET_SHARE: u64 = 8;
/// Bytes charged per entry, fill or pass marker beyond its key and data: `Entry`, `Arc`, `Rc`,
/// index node, table slot and allocator slack (checked against the real sizes in tests).
pub const CACHE_ENTRY_OVERHEAD_BYTES: usize = 320;
/// Largest cache key in bytes; requests with larger keys bypass the cache.
pub const CACHE_KEY_BYTES_MAX: usize = 8 * 1024;
/// How long a key whose response was not cacheable bypasses coalescing on a core, in ms.
pub const CACHE_PASS_MS: u64 = 5_000;
/// How long a core remembers an invalidation to refuse fills that raced it, in ms. Far above
/// the time a delta takes to reach every core (a few ticks).
pub const CACHE_TOMBSTONE_MS: u64 = 10_000;
/// Invalidations a core remembers at once.
pub const CACHE_TOMBSTONES_MAX: usize = 16 * 1024;
/// Fills a core publishes per tick; more are not published (other cores miss and fill).
pub const CACHE_PUBLISH_FILLS_MAX: usize = 4096;
/// Key invalidations a core publishes per tick; more become a flush of their stage.
pub const CACHE_PUBLISH_INVALIDATIONS_MAX: usize = 1024;
/// Nodes `CacheShard::sweep` visits per core tick.
pub const CACHE_SWEEP_NODES_PER_TICK: usize = 1024;

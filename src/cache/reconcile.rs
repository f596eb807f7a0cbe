//! The control-thread side of cache replication: cores send one `CacheBatch` per tick (what
//! they filled and invalidated), the `Reconciler` concatenates the batches it got since its last
//! tick, plus admin flushes, into one `Fanout`, and the same `Fanout` (one `Arc`) goes to every
//! core, which skips its own deltas. No I/O, no clock: `at` instants come from the cores, or
//! from the control thread for a flush.
//!
//! Deltas commute: a fill is kept only if it is newer than what a core holds and newer than any
//! invalidation or flush it knows of for its key or stage, so cores converge whatever order
//! batches arrive in (within `CACHE_TOMBSTONE_MS`).

use std::sync::Arc;
use std::time::Instant;

use super::entry::Entry;
use super::key::{OwnedKey, StageId};

/// Origin of deltas made by the control thread (admin flush); no core skips them.
pub const CONTROL_ORIGIN: u16 = u16::MAX;

/// One replicated change.
#[derive(Debug, Clone)]
pub enum Delta {
    /// Store this entry (its buffers shared by every core).
    Fill(Entry),
    /// Drop `key` where it was stored at or before `at`, and refuse such fills.
    Invalidate { key: OwnedKey, at: Instant },
    /// Drop every entry of `stage` stored at or before `at`, and refuse such fills.
    Flush { stage: StageId, at: Instant },
}

/// What one core published since its last tick: one message core → control thread.
#[derive(Debug)]
pub struct CacheBatch {
    pub core: u16,
    pub deltas: Vec<Delta>,
}

/// Every core's deltas of one reconciler tick: one message control thread → each core (a clone
/// of the `Arc`, no copy per core).
#[derive(Debug, Clone)]
pub struct Fanout {
    items: Arc<[(u16, Delta)]>,
}

impl Fanout {
    /// `(origin core, delta)` in the order the reconciler received them.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Delta)> {
        self.items.iter().map(|(o, d)| (*o, d))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Merges the cores' batches between ticks.
#[derive(Debug, Default)]
pub struct Reconciler {
    pending: Vec<(u16, Delta)>,
}

impl Reconciler {
    pub fn new() -> Self {
        Reconciler::default()
    }

    /// Takes a core's batch (in the order they arrive; order between cores does not matter).
    pub fn ingest(&mut self, batch: CacheBatch) {
        let core = batch.core;
        self.pending
            .extend(batch.deltas.into_iter().map(|d| (core, d)));
    }

    /// An admin flush of `stage` on every core, as of `at` (the control thread's clock).
    pub fn flush_stage(&mut self, stage: StageId, at: Instant) {
        self.pending
            .push((CONTROL_ORIGIN, Delta::Flush { stage, at }));
    }

    /// Everything since the last tick, to send to every core; `None` when there is nothing.
    pub fn tick(&mut self) -> Option<Fanout> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Fanout {
            items: std::mem::take(&mut self.pending).into(),
        })
    }

    /// Deltas waiting for the next tick.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

//! Cached responses and the pieces of an in-progress fill: the `Entry` (metadata over shared
//! immutable buffers), the core-local handle hits hand out (`EntryRef`), and the coalescing
//! state that waiters on one core await (`FillWait`). No I/O; the wait is a plain `Future` woken
//! by `CacheShard`.

use std::cell::RefCell;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::CACHE_ENTRY_OVERHEAD_BYTES;
use super::key::OwnedKey;

/// One cached response: a few words of metadata over immutable shared buffers. A fill on one
/// core reaches the others as a clone (three `Arc` increments, once per core), never a copy of
/// the bytes.
#[derive(Clone)]
pub struct Entry {
    pub key: OwnedKey,
    pub status: u16,
    /// Header lines to replay, pre-encoded by the response path (`name: value\r\n` each; see
    /// `policy::replay_header` for what is left out).
    pub head: Arc<[u8]>,
    /// The complete, de-chunked body.
    pub body: Arc<[u8]>,
    pub stored_at: Instant,
    pub expires_at: Instant,
    /// The core that filled it (`CONTROL_ORIGIN` never fills). Breaks ties between two fills
    /// of one key stored at the same instant, so every core keeps the same one.
    pub origin: u16,
}

impl Entry {
    /// What the entry is charged against a core's budget: its bytes and a fixed estimate of the
    /// memory around them (the `Entry` in its `Rc`, the `Arc` headers, index node, table slot).
    pub fn charge(&self) -> u64 {
        charge(self.key.bytes.len(), self.head.len() + self.body.len())
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Seconds since it was stored, for an `Age` header.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    /// Which of two fills of one key every core keeps: the later one; for fills at one instant,
    /// the one that lives longer, then the higher core.
    pub(crate) fn newer_than(&self, other: &Entry) -> bool {
        (self.stored_at, self.expires_at, self.origin)
            > (other.stored_at, other.expires_at, other.origin)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("hash", &self.key.hash)
            .field("status", &self.status)
            .field("head_len", &self.head.len())
            .field("body_len", &self.body.len())
            .field("stored_at", &self.stored_at)
            .field("expires_at", &self.expires_at)
            .field("origin", &self.origin)
            .finish()
    }
}

pub(crate) fn charge(key_len: usize, data_len: usize) -> u64 {
    (key_len + data_len + CACHE_ENTRY_OVERHEAD_BYTES) as u64
}

/// A core-local handle on an entry. Hits clone this `Rc` (a plain increment): the shared `Arc`
/// counts are touched once per core per entry, so a hot key read on every core does not bounce
/// a reference-count cache line between them. Holding it keeps the entry alive after eviction
/// (for a response still being written).
#[derive(Debug, Clone)]
pub struct EntryRef(Rc<Entry>);

impl EntryRef {
    pub(crate) fn new(e: Entry) -> Self {
        EntryRef(Rc::new(e))
    }

    pub(crate) fn ptr_eq(&self, other: &EntryRef) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for EntryRef {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        &self.0
    }
}

/// How a fill ended, as its waiters see it.
#[derive(Debug, Clone)]
pub enum FillOutcome {
    /// Answer from this entry (it may or may not have been stored).
    Filled(EntryRef),
    /// The fill failed, was too large or not cacheable, or its task was dropped: go to the
    /// backend yourself, without the cache.
    Aborted,
}

/// The coalescing point of one key's fill on one core: the ticket holder finishes it, waiters
/// await it. Core-local (`Rc`).
#[derive(Debug, Default)]
pub(crate) struct FillState {
    inner: RefCell<FillInner>,
}

#[derive(Debug, Default)]
struct FillInner {
    outcome: Option<FillOutcome>,
    /// One slot per live `FillWait` that has been polled; `None` once it dropped.
    wakers: Vec<Option<Waker>>,
    waiters: usize,
}

impl FillState {
    /// Sets the outcome (the first one wins) and wakes every waiter.
    pub(crate) fn finish(&self, outcome: FillOutcome) {
        let wakers = {
            let mut s = self.inner.borrow_mut();
            if s.outcome.is_some() {
                return;
            }
            s.outcome = Some(outcome);
            std::mem::take(&mut s.wakers)
        };
        // Woken outside the borrow: a waker may poll synchronously in a test executor.
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.inner.borrow().outcome.is_some()
    }

    pub(crate) fn waiters(&self) -> usize {
        self.inner.borrow().waiters
    }
}

/// A request waiting for another request's fill of the same key on this core. Await it; a
/// dropped wait unregisters itself.
#[derive(Debug)]
pub struct FillWait {
    state: Rc<FillState>,
    slot: Option<usize>,
}

impl FillWait {
    pub(crate) fn new(state: Rc<FillState>) -> Self {
        state.inner.borrow_mut().waiters += 1;
        FillWait { state, slot: None }
    }

    /// The outcome if the fill has finished, without waiting.
    pub fn outcome(&self) -> Option<FillOutcome> {
        self.state.inner.borrow().outcome.clone()
    }
}

impl Future for FillWait {
    type Output = FillOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FillOutcome> {
        let this = &mut *self;
        let mut s = this.state.inner.borrow_mut();
        if let Some(o) = &s.outcome {
            return Poll::Ready(o.clone());
        }
        match this.slot {
            Some(i) => match &mut s.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                this.slot = Some(s.wakers.len());
                s.wakers.push(Some(cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for FillWait {
    fn drop(&mut self) {
        let mut s = self.state.inner.borrow_mut();
        s.waiters -= 1;
        if let Some(w) = self.slot.and_then(|i| s.wakers.get_mut(i)) {
            *w = None;
        }
    }
}

/// Collects a body while it streams to the first client, up to a maximum; past it the body is
/// dropped and the fill is not stored (the stream to the client goes on).
#[derive(Debug)]
pub(crate) struct BodyCollector {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl BodyCollector {
    pub(crate) fn new(max: usize) -> Self {
        BodyCollector {
            buf: Vec::new(),
            max,
            over: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        if self.over {
            return false;
        }
        if self.buf.len() + chunk.len() > self.max {
            self.over = true;
            self.buf = Vec::new();
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    pub(crate) fn is_over(&self) -> bool {
        self.over
    }

    pub(crate) fn take(&mut self) -> Option<Box<[u8]>> {
        (!self.over).then(|| std::mem::take(&mut self.buf).into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_gives_up_past_the_maximum() {
        let mut c = BodyCollector::new(5);
        assert!(c.push(b"abc"));
        assert!(c.push(b"de"));
        assert_eq!(c.take().as_deref(), Some(&b"abcde"[..]));
        let mut c = BodyCollector::new(5);
        assert!(c.push(b"abc"));
        assert!(!c.push(b"def"));
        assert!(!c.push(b""));
        assert!(c.is_over());
        assert_eq!(c.take(), None);
    }
}

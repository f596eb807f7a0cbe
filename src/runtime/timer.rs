//! Core-local coarse deadlines for I/O timeouts.
//!
//! Every read on a connection has a deadline (idle, header, body, backend), so a timer per read
//! must cost next to nothing. compio's timers cost a heap entry, a hash-map entry and a clock
//! read each (measured: ~5% of CPU per request on the mock route). Here a deadline is a slot in
//! a core-local slab holding its instant and waker; the core's tick (every `CORE_TICK_MS`) reads
//! the clock once and wakes the slots that expired. Resolution is therefore the tick (a few
//! ms), which is plenty for timeouts measured in hundreds of milliseconds or seconds.
//!
//! A deadline may be marked *idle* (a keep-alive connection waiting for its next request): when
//! the core starts draining for shutdown, `drain` expires every idle deadline at once so those
//! connections close now, while reads that belong to a request in flight keep their deadlines.
//!
//! Not `Send`/`Sync`: one `Timers` per core, used only by that core's tasks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One core's deadlines and its coarse clock.
#[derive(Debug)]
pub struct Timers {
    now: Cell<Instant>,
    draining: Cell<bool>,
    slots: RefCell<Slots>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    idle: bool,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// No live deadline is earlier than this (it may be earlier than all of them: a lower bound).
    earliest: Option<Instant>,
}

impl Default for Timers {
    fn default() -> Self {
        Self::new()
    }
}

impl Timers {
    pub fn new() -> Self {
        Timers {
            now: Cell::new(Instant::now()),
            draining: Cell::new(false),
            slots: RefCell::new(Slots::default()),
        }
    }

    /// The clock as of the last tick.
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Advances the clock to `now` and wakes every deadline at or before it.
    pub fn fire(&self, now: Instant) {
        self.now.set(now);
        let mut wake = Vec::new();
        {
            let mut s = self.slots.borrow_mut();
            if s.earliest.is_none_or(|e| e > now) {
                return;
            }
            let mut earliest: Option<Instant> = None;
            for e in s.entries.iter_mut().flatten() {
                if e.at <= now {
                    if let Some(w) = e.waker.take() {
                        wake.push(w);
                    }
                } else {
                    earliest = Some(earliest.map_or(e.at, |x| x.min(e.at)));
                }
            }
            s.earliest = earliest;
        }
        // Wake outside the borrow: a woken task is only scheduled here, but keep it simple.
        for w in wake {
            w.wake();
        }
    }

    /// Starts draining: every idle deadline, now and from now on, expires at once.
    pub fn drain(&self) {
        self.draining.set(true);
        let wake: Vec<Waker> = {
            let mut s = self.slots.borrow_mut();
            s.entries
                .iter_mut()
                .flatten()
                .filter(|e| e.idle)
                .filter_map(|e| e.waker.take())
                .collect()
        };
        for w in wake {
            w.wake();
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Live deadlines (for tests).
    pub fn len(&self) -> usize {
        let s = self.slots.borrow();
        s.entries.len() - s.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, at: Instant, idle: bool, waker: Waker) -> usize {
        let mut s = self.slots.borrow_mut();
        s.earliest = Some(s.earliest.map_or(at, |e| e.min(at)));
        let entry = Entry {
            at,
            idle,
            waker: Some(waker),
        };
        match s.free.pop() {
            Some(k) => {
                s.entries[k] = Some(entry);
                k
            }
            None => {
                s.entries.push(Some(entry));
                s.entries.len() - 1
            }
        }
    }

    fn update(&self, key: usize, waker: &Waker) {
        let mut s = self.slots.borrow_mut();
        if let Some(Some(Entry { waker: slot, .. })) = s.entries.get_mut(key) {
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    fn remove(&self, key: usize) {
        let mut s = self.slots.borrow_mut();
        if let Some(e) = s.entries.get_mut(key)
            && e.take().is_some()
        {
            s.free.push(key);
        }
    }

    /// `timeout_at` for an idle wait: also ends (with `Elapsed`) as soon as the core drains.
    pub fn idle_timeout_at<F: Future>(&self, at: Instant, fut: F) -> Timeout<'_, F> {
        Timeout {
            timers: self,
            at,
            idle: true,
            key: None,
            fut,
        }
    }

    /// Runs `fut` until it finishes or `at` passes (checked at the core's ticks).
    pub fn timeout_at<F: Future>(&self, at: Instant, fut: F) -> Timeout<'_, F> {
        Timeout {
            timers: self,
            at,
            idle: false,
            key: None,
            fut,
        }
    }

    /// `timeout_at(now + d)`, with the coarse clock.
    pub fn timeout<F: Future>(&self, d: Duration, fut: F) -> Timeout<'_, F> {
        self.timeout_at(self.now() + d, fut)
    }
}

/// The deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// A future with a deadline. Dropping it drops the inner future (cancelling its I/O).
pub struct Timeout<'t, F> {
    timers: &'t Timers,
    at: Instant,
    idle: bool,
    key: Option<usize>,
    fut: F,
}

impl<F: Future> Future for Timeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `self` and `Timeout`
        // has no `Unpin` impl that would allow moving it; the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.fut` stays at its address for the life of `this`.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.timers.now() >= this.at || (this.idle && this.timers.draining()) {
            return Poll::Ready(Err(Elapsed));
        }
        match this.key {
            None => this.key = Some(this.timers.insert(this.at, this.idle, cx.waker().clone())),
            Some(k) => this.timers.update(k, cx.waker()),
        }
        Poll::Pending
    }
}

impl<F> Drop for Timeout<'_, F> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.timers.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>, count: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(count.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn fires_only_after_the_deadline_with_a_virtual_clock() {
        let timers = Timers::new();
        let t0 = timers.now();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = Box::pin(timers.timeout_at(
            t0 + Duration::from_millis(100),
            std::future::pending::<()>(),
        ));
        assert!(poll_once(f.as_mut(), &count).is_pending());
        assert_eq!(timers.len(), 1);
        timers.fire(t0 + Duration::from_millis(99));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        timers.fire(t0 + Duration::from_millis(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(f.as_mut(), &count), Poll::Ready(Err(Elapsed)));
        drop(f);
        assert!(timers.is_empty());
    }

    #[test]
    fn drain_expires_idle_deadlines_only() {
        let timers = Timers::new();
        let t0 = timers.now();
        let idle = Arc::new(Count(AtomicUsize::new(0)));
        let busy = Arc::new(Count(AtomicUsize::new(0)));
        let far = t0 + Duration::from_secs(60);
        let mut a = Box::pin(timers.idle_timeout_at(far, std::future::pending::<()>()));
        let mut b = Box::pin(timers.timeout_at(far, std::future::pending::<()>()));
        assert!(poll_once(a.as_mut(), &idle).is_pending());
        assert!(poll_once(b.as_mut(), &busy).is_pending());
        timers.drain();
        assert_eq!(
            (idle.0.load(Ordering::SeqCst), busy.0.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert_eq!(poll_once(a.as_mut(), &idle), Poll::Ready(Err(Elapsed)));
        assert!(poll_once(b.as_mut(), &busy).is_pending());
        // A new idle wait after the drain started ends at once.
        let mut c = Box::pin(timers.idle_timeout_at(far, std::future::pending::<()>()));
        assert_eq!(poll_once(c.as_mut(), &idle), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn a_ready_future_wins_and_frees_its_slot() {
        let timers = Timers::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut f = Box::pin(timers.timeout(Duration::from_secs(1), std::future::ready(5)));
        assert_eq!(poll_once(f.as_mut(), &count), Poll::Ready(Ok(5)));
        drop(f);
        assert!(timers.is_empty());
    }

    #[test]
    fn slots_are_reused_and_only_expired_ones_wake() {
        let timers = Timers::new();
        let t0 = timers.now();
        let early = Arc::new(Count(AtomicUsize::new(0)));
        let late = Arc::new(Count(AtomicUsize::new(0)));
        let mut a = Box::pin(
            timers.timeout_at(t0 + Duration::from_millis(10), std::future::pending::<()>()),
        );
        let mut b = Box::pin(
            timers.timeout_at(t0 + Duration::from_millis(50), std::future::pending::<()>()),
        );
        assert!(poll_once(a.as_mut(), &early).is_pending());
        assert!(poll_once(b.as_mut(), &late).is_pending());
        timers.fire(t0 + Duration::from_millis(20));
        assert_eq!(
            (
                early.0.load(Ordering::SeqCst),
                late.0.load(Ordering::SeqCst)
            ),
            (1, 0)
        );
        drop(a);
        let mut c = Box::pin(
            timers.timeout_at(t0 + Duration::from_millis(30), std::future::pending::<()>()),
        );
        assert!(poll_once(c.as_mut(), &early).is_pending());
        assert_eq!(timers.len(), 2, "the freed slot is reused");
        timers.fire(t0 + Duration::from_millis(60));
        assert_eq!(
            (
                early.0.load(Ordering::SeqCst),
                late.0.load(Ordering::SeqCst)
            ),
            (2, 1)
        );
    }
}

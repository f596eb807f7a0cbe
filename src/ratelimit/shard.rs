//! The per-core side: leases of whole tokens, spent by [`CoreLimiter::check`] with plain
//! arithmetic, and the counters that go into the next [`CoreReport`].
//!
//! Owns nothing global and knows no rates: it cannot mint a token, only spend what a [`Grant`]
//! brought, which is what keeps the global bound independent of how requests land on cores.

use std::cell::Cell;
use std::marker::PhantomData;

use super::{CoreReport, Grant, LeaseConfig, LimitId, LimitTable, Nanos, ReportEntry, Throttled};

/// Retry-After for a limit this core has never been told about (no grant yet).
const RETRY_AFTER_UNKNOWN_MS: u32 = 1000;

/// One core's shard of every limit. Lives on its core (`!Sync`); one per data core.
#[derive(Debug)]
pub struct CoreLimiter {
    core: usize,
    ask_gap_ns: u64,
    tick_ns: u64,
    /// Indexed by `LimitId`; grows when a grant or a table names a larger id.
    slots: Vec<Slot>,
    /// Lines about superseded generations (dropped leases, stale grants), sent with the next report.
    stale: Vec<ReportEntry>,
    last_report_at: Nanos,
    last_ask_at: Option<Nanos>,
    /// `sent_at` of the newest grant applied since the last report.
    echo: Option<Nanos>,
    /// Since the last report, some check was refused or spent a lease down to half its target:
    /// an early ask may help (asking before the next refusal lets the reconciler see the spends
    /// and top the lease up in time, which matters when demand rises or the burst is small).
    wanting: bool,
    _not_sync: PhantomData<Cell<()>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    generation: u32,
    /// Tokens this core may spend. Invariant: only grants raise it.
    lease: u64,
    spent: u64,
    unmet: u64,
    target: u64,
    /// Half the target: spending down to it is worth an early ask, so that a core whose
    /// demand rises asks for more before it runs dry.
    low_water: u64,
    retry_after_ms: u32,
    /// The core has reported activity and not yet a quiet period of a whole tick: the next
    /// report goes out even if it is quiet, so the reconciler's demand estimate falls to zero
    /// without a timeout. (A quiet report over a shorter period, e.g. just after an early ask,
    /// only damps the estimate, and the core stays silent afterwards: without the tick-long
    /// one the reconciler would go on topping up the lease of a core that traffic left.)
    active_last: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        generation: 0,
        lease: 0,
        spent: 0,
        unmet: 0,
        target: 0,
        low_water: 0,
        retry_after_ms: RETRY_AFTER_UNKNOWN_MS,
        active_last: false,
    };
}

impl CoreLimiter {
    /// The shard of data core `core` (0-based, as the reconciler counts them).
    pub fn new(core: usize, config: &LeaseConfig, now: Nanos) -> Self {
        CoreLimiter {
            core,
            ask_gap_ns: config.ask_gap_ns,
            tick_ns: config.tick_ns,
            slots: Vec::new(),
            stale: Vec::new(),
            last_report_at: now,
            last_ask_at: None,
            echo: None,
            wanting: false,
            _not_sync: PhantomData,
        }
    }

    /// Takes one token from every listed limit, or none: the all-or-nothing check of one request.
    ///
    /// On refusal, says which listed limit (the first without a token) refused, and counts the
    /// request as unmet demand of every listed limit that had no token. The ids should be
    /// distinct; a repeated id is charged once per listing, as long as its lease lasts.
    #[inline]
    pub fn check(&mut self, ids: &[LimitId]) -> Result<(), Throttled> {
        let mut refused: Option<usize> = None;
        for (i, id) in ids.iter().enumerate() {
            let slot = self.slot_mut(*id);
            if slot.lease == 0 {
                slot.unmet += 1;
                refused.get_or_insert(i);
            }
        }
        if let Some(which) = refused {
            self.wanting = true;
            let retry = self.slots[ids[which].index()].retry_after_ms;
            return Err(Throttled {
                which,
                retry_after_ms: u64::from(retry),
            });
        }
        for id in ids {
            // Every slot exists (the first pass created it) and had a token; only a repeated id
            // can find its lease already spent, and then it is not charged again.
            let slot = &mut self.slots[id.index()];
            if slot.lease > 0 {
                slot.lease -= 1;
                slot.spent += 1;
                self.wanting |= slot.lease <= slot.low_water;
            }
        }
        Ok(())
    }

    /// True when, since the last report, a check was refused or spent a lease down to half its
    /// target, and the last early ask is at least `ask_gap_ns` old.
    pub fn wants_refill(&self, now: Nanos) -> bool {
        self.wanting
            && self
                .last_ask_at
                .is_none_or(|at| now.saturating_sub(at) >= self.ask_gap_ns)
    }

    /// An early ask, if [`wants_refill`](Self::wants_refill): the report so far, flagged so the
    /// control thread answers it at once. Call after every check (it is a flag test when there
    /// is nothing to ask); the request is never held for the answer.
    pub fn early_ask(&mut self, now: Nanos) -> Option<CoreReport> {
        if !self.wants_refill(now) {
            return None;
        }
        self.last_ask_at = Some(now);
        Some(self.take_report(now, true))
    }

    /// The per-tick report: spends, unmet demand and tokens handed back since the last report.
    /// `None` when there is nothing to say (no activity now or in the previous report, nothing
    /// to hand back), which is the common case for an idle core.
    pub fn report(&mut self, now: Nanos) -> Option<CoreReport> {
        let quiet = self.stale.is_empty()
            && self
                .slots
                .iter()
                .all(|s| s.spent == 0 && s.unmet == 0 && !s.active_last && s.lease <= s.target);
        if quiet {
            self.last_report_at = now;
            return None;
        }
        Some(self.take_report(now, false))
    }

    /// Takes in a grant from the control thread: tokens, targets, Retry-After estimates, and
    /// newer generations (which drop the lease of the older one).
    pub fn apply(&mut self, grant: Grant) {
        debug_assert_eq!(grant.core, self.core, "grant delivered to the wrong core");
        self.echo = self.echo.max(Some(grant.sent_at));
        for e in grant.entries {
            let id = LimitId(e.id);
            let generation = self.slot_mut(id).generation;
            if e.generation < generation {
                // Tokens of a generation this core already left behind: hand them straight back.
                self.stale.push(ReportEntry {
                    id: e.id,
                    generation: e.generation,
                    spent: 0,
                    unmet: 0,
                    returned: e.tokens,
                });
                continue;
            }
            if e.generation > generation {
                self.supersede(id, e.generation);
            }
            let slot = &mut self.slots[id.index()];
            slot.lease += e.tokens;
            slot.target = e.target;
            slot.low_water = e.target / 2;
            slot.retry_after_ms = e.retry_after_ms;
        }
    }

    /// Adopts a new config snapshot's generations: drops leases of limits that were re-created
    /// or removed (they are reported back with the next report). Call when swapping snapshots.
    pub fn sync(&mut self, table: &LimitTable) {
        for (i, &generation) in table.generations.iter().enumerate() {
            let id = LimitId(i as u32);
            if generation > self.slot_mut(id).generation {
                self.supersede(id, generation);
            }
        }
    }

    /// Tokens this core holds for `id` (tests, metrics).
    pub fn lease(&self, id: LimitId) -> u64 {
        self.slots.get(id.index()).map_or(0, |s| s.lease)
    }

    fn take_report(&mut self, now: Nanos, early: bool) -> CoreReport {
        let mut entries = std::mem::take(&mut self.stale);
        let period_ns = now.saturating_sub(self.last_report_at);
        let whole_tick = period_ns >= self.tick_ns;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let returned = slot.lease.saturating_sub(slot.target);
            let active = slot.spent > 0 || slot.unmet > 0;
            if active || returned > 0 || slot.active_last {
                entries.push(ReportEntry {
                    id: i as u32,
                    generation: slot.generation,
                    spent: slot.spent,
                    unmet: slot.unmet,
                    returned,
                });
            }
            slot.lease -= returned;
            slot.spent = 0;
            slot.unmet = 0;
            slot.active_last = active || (slot.active_last && !whole_tick);
        }
        self.last_report_at = now;
        self.wanting = false;
        CoreReport {
            core: self.core,
            early,
            period_ns,
            echo: self.echo.take(),
            entries,
        }
    }

    /// Moves slot `id` to generation `generation`, queueing what it held under the old one as stale.
    fn supersede(&mut self, id: LimitId, generation: u32) {
        let slot = &mut self.slots[id.index()];
        if slot.lease > 0 || slot.spent > 0 || slot.unmet > 0 {
            self.stale.push(ReportEntry {
                id: id.0,
                generation: slot.generation,
                spent: slot.spent,
                unmet: slot.unmet,
                returned: slot.lease,
            });
        }
        *slot = Slot {
            generation,
            ..Slot::EMPTY
        };
    }

    #[inline]
    fn slot_mut(&mut self, id: LimitId) -> &mut Slot {
        if id.index() >= self.slots.len() {
            self.grow(id);
        }
        &mut self.slots[id.index()]
    }

    // Only until the first grant or table naming this id arrives; not on the steady request path.
    #[cold]
    fn grow(&mut self, id: LimitId) {
        self.slots.resize(id.index() + 1, Slot::EMPTY);
    }
}

#[cfg(test)]
mod tests {
    use super::super::GrantEntry;
    use super::*;

    fn grant(core: usize, entries: &[(u32, u32, u64, u64)]) -> Grant {
        Grant {
            core,
            sent_at: 0,
            entries: entries
                .iter()
                .map(|&(id, generation, tokens, target)| GrantEntry {
                    id,
                    generation,
                    tokens,
                    target,
                    retry_after_ms: 2500,
                })
                .collect(),
        }
    }

    fn limiter() -> CoreLimiter {
        CoreLimiter::new(0, &LeaseConfig::with_tick_ms(4), 0)
    }

    #[test]
    fn check_is_all_or_nothing() {
        let mut c = limiter();
        c.apply(grant(0, &[(0, 1, 2, 2), (1, 1, 1, 1)]));
        let ids = [LimitId(0), LimitId(1)];
        assert_eq!(c.check(&ids), Ok(()));
        let err = c.check(&ids).unwrap_err();
        assert_eq!(err.which, 1);
        assert_eq!(err.retry_after_ms, 2500);
        assert_eq!(err.retry_after_secs(), 3);
        // The account-like limit 0 kept its token: the refusal by limit 1 took nothing.
        assert_eq!(c.lease(LimitId(0)), 1);
        assert_eq!(c.lease(LimitId(1)), 0);
        let r = c.report(1_000).unwrap();
        assert_eq!(r.period_ns, 1_000);
        assert_eq!(
            r.entries,
            vec![
                ReportEntry {
                    id: 0,
                    generation: 1,
                    spent: 1,
                    unmet: 0,
                    returned: 0
                },
                ReportEntry {
                    id: 1,
                    generation: 1,
                    spent: 1,
                    unmet: 1,
                    returned: 0
                },
            ]
        );
    }

    #[test]
    fn unknown_limit_refuses_with_default_retry() {
        let mut c = limiter();
        let err = c.check(&[LimitId(3)]).unwrap_err();
        assert_eq!(
            err,
            Throttled {
                which: 0,
                retry_after_ms: 1000
            }
        );
        assert_eq!(err.retry_after_secs(), 1);
    }

    #[test]
    fn early_asks_are_spaced() {
        let mut c = limiter(); // ask gap = tick = 4 ms
        assert!(c.early_ask(0).is_none(), "nothing refused yet");
        assert!(c.check(&[LimitId(0)]).is_err());
        let ask = c.early_ask(10).unwrap();
        assert!(ask.is_early());
        assert!(c.early_ask(20).is_none(), "refusal already reported");
        assert!(c.check(&[LimitId(0)]).is_err());
        assert!(
            c.early_ask(3_999_999).is_none(),
            "too soon after the last ask"
        );
        assert!(c.wants_refill(4_000_010));
        assert!(c.early_ask(4_000_010).is_some());
        // Spending a lease down to half its target is also worth an ask.
        c.report(4_000_020);
        c.apply(grant(0, &[(0, 1, 4, 4)]));
        c.check(&[LimitId(0)]).unwrap();
        assert!(!c.wants_refill(8_000_010), "3 of 4 left");
        c.check(&[LimitId(0)]).unwrap();
        assert!(c.wants_refill(8_000_010), "2 of 4 left");
    }

    #[test]
    fn quiet_core_reports_once_then_nothing() {
        const TICK: Nanos = 4_000_000;
        let mut c = limiter();
        c.apply(grant(0, &[(0, 1, 5, 5)]));
        assert!(
            c.report(TICK).is_none(),
            "holding a lease at target is nothing to report"
        );
        c.check(&[LimitId(0)]).unwrap();
        assert_eq!(c.report(2 * TICK).unwrap().entries[0].spent, 1);
        let quiet = c.report(3 * TICK).unwrap();
        assert_eq!(
            quiet.entries,
            vec![ReportEntry {
                id: 0,
                generation: 1,
                spent: 0,
                unmet: 0,
                returned: 0
            }]
        );
        assert!(c.report(4 * TICK).is_none());
    }

    #[test]
    fn the_closing_quiet_report_covers_a_whole_tick() {
        // Refused, asks early, then traffic leaves: the tick report that follows the early ask
        // by less than a tick is quiet but too short to say the demand is gone, so one more
        // (a whole quiet tick) follows before the core falls silent.
        const TICK: Nanos = 4_000_000;
        let mut c = limiter();
        c.apply(grant(0, &[(0, 1, 1, 8)]));
        c.check(&[LimitId(0)]).unwrap();
        assert!(c.check(&[LimitId(0)]).is_err());
        let ask = c.early_ask(TICK / 2).expect("refused: an early ask");
        assert_eq!(ask.entries[0].unmet, 1);
        let short = c.report(TICK).expect("after activity");
        assert_eq!(short.period_ns, TICK / 2);
        assert_eq!(short.entries[0].spent + short.entries[0].unmet, 0);
        let whole = c
            .report(2 * TICK)
            .expect("a whole quiet tick still to report");
        assert_eq!(whole.period_ns, TICK);
        assert_eq!(whole.entries[0].spent + whole.entries[0].unmet, 0);
        assert!(c.report(3 * TICK).is_none(), "then silence");
    }

    #[test]
    fn surplus_over_target_is_handed_back() {
        let mut c = limiter();
        c.apply(grant(0, &[(0, 1, 10, 10)]));
        c.apply(grant(0, &[(0, 1, 0, 3)]));
        let r = c.report(1).unwrap();
        assert_eq!(r.entries[0].returned, 7);
        assert_eq!(c.lease(LimitId(0)), 3);
    }

    #[test]
    fn newer_generation_drops_the_old_lease() {
        let mut c = limiter();
        c.apply(grant(0, &[(0, 1, 10, 10)]));
        c.check(&[LimitId(0)]).unwrap();
        c.sync(&LimitTable {
            generations: vec![4],
        });
        assert_eq!(c.lease(LimitId(0)), 0);
        // A grant of the dead generation is handed straight back; one of the new one is taken.
        c.apply(grant(0, &[(0, 1, 6, 6)]));
        c.apply(grant(0, &[(0, 4, 2, 2)]));
        assert_eq!(c.lease(LimitId(0)), 2);
        let r = c.report(5).unwrap();
        assert_eq!(
            r.entries,
            vec![
                ReportEntry {
                    id: 0,
                    generation: 1,
                    spent: 1,
                    unmet: 0,
                    returned: 9
                },
                ReportEntry {
                    id: 0,
                    generation: 1,
                    spent: 0,
                    unmet: 0,
                    returned: 6
                },
            ]
        );
        // An older table does not undo the newer generation.
        c.sync(&LimitTable {
            generations: vec![2],
        });
        assert_eq!(c.lease(LimitId(0)), 2);
    }
}

//! The hosted HAL: [`ntspin::Hal`] for the user-mode machine. Registered for the whole
//! program by this crate (`ntspin::set_hal!(SimHal)`).
//!
//! The hot path — IRQL read, raise, lower, the owner tag — is a thread-local load plus
//! plain loads and stores on the processor's own cache line; with the verifier off that
//! is all, and with fat LTO it inlines into the lock routines.

use ntspin::bugcheck::verifier as sub;
use ntspin::hal::{LockEvent, Prcb, SpinWait};
use ntspin::{BugCheck, Irql, Rule};

use crate::processor::{self, Processor};
use crate::stop;
use crate::verifier;

/// Spins (each one `pause`) before a processor spinning on a lock word starts giving its
/// host core back.
const SPINS_BEFORE_YIELD: u32 = 128;

/// The same for a processor queued behind others (or waiting for its successor to link).
/// A queue hand-over between running processors takes well under a microsecond; a wait
/// longer than this means the chain is stalled on a processor whose thread the host
/// descheduled, and the fastest way to restart it is to give it this core.
const QUEUED_SPINS_BEFORE_YIELD: u32 = 8;

/// The user-mode machine's HAL.
#[derive(Debug)]
pub struct SimHal;

ntspin::set_hal!(SimHal);

impl ntspin::Hal for SimHal {
    #[inline(always)]
    fn current_prcb() -> &'static Prcb {
        processor::current_prcb()
    }

    #[inline(always)]
    fn current_irql() -> Irql {
        let p = processor::current();
        if p.stop_requested() {
            stop::stop_here(p);
        }
        p.irql()
    }

    #[inline(always)]
    fn raise_irql(new: Irql) -> Irql {
        let p = processor::current();
        let cur = p.irql();
        if p.verifies() {
            check_raise(p, cur, new);
        } else if p.stop_requested() {
            stop::stop_here(p); // before an acquire: a safe point
        }
        p.prcb.set_irql(new);
        cur
    }

    #[inline(always)]
    fn lower_irql(new: Irql) {
        let p = processor::current();
        if p.verifies() {
            check_lower(p, p.irql(), new);
        } else if p.stop_requested() {
            // After a release is a safe point to stop (the lock is already free).
            stop::stop_here(p);
        }
        p.prcb.set_irql(new);
    }

    #[inline(always)]
    fn current_processor() -> u32 {
        processor::current().index
    }

    #[inline]
    fn spin_wait(spins: u32, wait: SpinWait) {
        if spins % 64 == 0 {
            let p = processor::current();
            if p.stop_requested() {
                match wait {
                    SpinWait::Acquire => stop::stop_here(p),
                    // Linked into a queue: cannot leave. Wait for the grant a little; if it
                    // never comes (the owner was stopped holding it), freeze the processor.
                    SpinWait::Queued | SpinWait::Handoff => stop::freeze_if_stuck(p, spins),
                }
            }
        }
        let limit = match wait {
            SpinWait::Acquire => SPINS_BEFORE_YIELD,
            SpinWait::Queued | SpinWait::Handoff => QUEUED_SPINS_BEFORE_YIELD,
        };
        if spins > limit {
            // More virtual processors than host cores: the owner (or the waiter a queued
            // lock just handed to) may be waiting for this core.
            std::thread::yield_now();
        }
    }

    #[inline(always)]
    fn lock_event(event: &LockEvent) {
        let p = processor::current();
        if p.verifies() {
            verifier::on_event(p, event);
        } else if event.is_stop_point() && p.stop_requested() {
            stop::stop_here(p);
        }
    }

    fn bug_check(bug: BugCheck) -> ! {
        let p = processor::current();
        stop::raise(p, bug);
        // `raise` returns only when the thread is already unwinding from a panic, and a
        // second unwind would abort anyway: say why first.
        eprintln!("ntspin: bug check {bug} raised while unwinding from a panic; aborting");
        std::process::abort()
    }
}

#[cold]
#[inline(never)]
fn check_raise(p: &Processor, cur: Irql, new: Irql) {
    if !verifier::entry(p, true) {
        return;
    }
    if new < cur || new > Irql::HIGH {
        let bug = BugCheck::verifier(
            sub::IRQL_RAISE_LOWER,
            cur.raw().into(),
            new.raw().into(),
            0,
            Rule::IRQL_RAISE,
        );
        verifier::violation(p, bug, true);
    }
}

#[cold]
#[inline(never)]
fn check_lower(p: &Processor, cur: Irql, new: Irql) {
    if !verifier::entry(p, true) {
        return;
    }
    let (c, n) = (cur.raw().into(), new.raw().into());
    if new > cur || new > Irql::HIGH {
        let bug = BugCheck::verifier(sub::IRQL_LOWER_HIGHER, c, n, 0, Rule::IRQL_LOWER);
        verifier::violation(p, bug, true);
    } else if new < Irql::DISPATCH && p.held_count() > 0 {
        let bug = BugCheck::verifier(sub::IRQL_LOWER_HIGHER, c, n, 2, Rule::IRQL_LOWER_HELD);
        verifier::violation(p, bug, true);
    }
}

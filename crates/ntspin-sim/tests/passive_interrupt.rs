//! Passive-level interrupts: the service routine runs at PASSIVE_LEVEL on the worker under
//! the object's wait lock and may block; a level-sensitive line stays masked until it
//! returns; `synchronize` and the wait-lock guards exclude it; IRQL-WORKER-EXIT,
//! ISL-RECURSE on the wait lock, IRQL-WAIT for a synchronize above PASSIVE, and the
//! passive rows of CONN-PARAMS.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ntspin::bugcheck::code;
use ntspin::event::{Event, EventType};
use ntspin::interrupt::{
    Interrupt, InterruptConfig, InterruptMode, KInterrupt, PassiveInterrupt, PassiveInterruptConfig,
};
use ntspin::{Irql, NtStatus, Rule};
use ntspin_sim::Machine;

mod common;
use common::{bug_check_of, eventually};

fn level(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

#[test]
fn passive_isr_runs_at_passive_on_a_processor_and_may_block() {
    let m = Machine::new(2);
    let go = Event::new(EventType::Notification, false);
    let (entered, done, irql_seen) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(99));
    m.run_on(0, || {
        let intr = pin!(PassiveInterrupt::new(
            PassiveInterruptConfig::new(10, level(6)),
            || {
                irql_seen.store(ntspin::current_irql().raw().into(), Relaxed);
                entered.fetch_add(1, Relaxed);
                go.wait(None); // blocks: allowed at PASSIVE
                done.fetch_add(1, Relaxed);
                true
            }
        ));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(10);
        eventually("the routine to start", || entered.load(Relaxed) == 1);
        assert_eq!(done.load(Relaxed), 0, "it is blocked");
        assert_eq!(
            intr.raw().wait_lock_owner().map(|_| ()),
            Some(()),
            "the routine runs holding the wait lock"
        );
        go.set();
        eventually("the routine to finish", || done.load(Relaxed) == 1);
    })
    .unwrap();
    assert_eq!(irql_seen.load(Relaxed), 0, "PASSIVE_LEVEL");
    assert_eq!(m.interrupts_asserted(10), 1);
    assert_eq!(m.interrupts_serviced(10), 1);
    assert_eq!(m.irql_of(1), Irql::PASSIVE);
}

/// Level-sensitive: the line is masked from acknowledgment until the routine returns, so
/// assertions meanwhile cause no second run during the first; they merge into exactly one
/// more run that starts after the first returns.
#[test]
fn level_sensitive_passive_line_stays_masked_until_the_routine_returns() {
    let m = Machine::new(2);
    let go = Event::new(EventType::Notification, false);
    let (entered, running, overlap) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    m.run_on(0, || {
        let intr = pin!(PassiveInterrupt::new(
            PassiveInterruptConfig::new(11, level(5)),
            || {
                if running.fetch_add(1, Relaxed) != 0 {
                    overlap.fetch_add(1, Relaxed);
                }
                entered.fetch_add(1, Relaxed);
                go.wait(None);
                running.fetch_sub(1, Relaxed);
                true
            }
        ));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(11);
        eventually("the first run", || entered.load(Relaxed) == 1);
        for _ in 0..3 {
            m.assert_interrupt(11);
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            entered.load(Relaxed),
            1,
            "masked: no delivery during the run"
        );
        go.set();
        eventually("the merged second run", || entered.load(Relaxed) == 2);
        eventually("it to return", || running.load(Relaxed) == 0);
        std::thread::sleep(Duration::from_millis(20));
    })
    .unwrap();
    assert_eq!(overlap.load(Relaxed), 0);
    assert_eq!(m.interrupts_asserted(11), 4);
    assert_eq!(
        m.interrupts_serviced(11),
        2,
        "the three merged into one run"
    );
}

/// Latched: the line is not masked; an assertion during the run leads to exactly one more
/// run after it (never concurrently: one worker per line).
#[test]
fn latched_passive_line_reruns_after_an_assertion_during_the_run() {
    let m = Machine::new(3);
    let go = Event::new(EventType::Notification, false);
    let (entered, running, overlap) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    m.run_on(0, || {
        let cfg = PassiveInterruptConfig {
            mode: InterruptMode::Latched,
            ..PassiveInterruptConfig::new(12, level(5))
        };
        let intr = pin!(PassiveInterrupt::new(cfg, || {
            if running.fetch_add(1, Relaxed) != 0 {
                overlap.fetch_add(1, Relaxed);
            }
            // Claims on its first call of each run; the rescan pass then claims nothing.
            let first_call = entered.fetch_add(1, Relaxed) % 2 == 0;
            go.wait(None);
            running.fetch_sub(1, Relaxed);
            first_call
        }));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(12);
        eventually("the first run", || entered.load(Relaxed) == 1);
        // One assertion during the run (more could each land after a rerun has started
        // and cause one more: delivery is asynchronous).
        m.assert_interrupt(12);
        go.set();
        eventually("the rerun", || entered.load(Relaxed) == 4);
        eventually("it to return", || running.load(Relaxed) == 0);
        std::thread::sleep(Duration::from_millis(20));
    })
    .unwrap();
    assert_eq!(overlap.load(Relaxed), 0);
    // Two runs, each a claiming pass and a rescan pass that claims nothing.
    assert_eq!(m.interrupts_serviced(12), 4);
}

/// On one processor holding the wait lock, the worker cannot start (it would wait for its
/// own stack); it runs as soon as the lock is freed, before the next statement.
#[test]
fn synchronize_excludes_the_passive_routine_which_runs_right_after_release() {
    let m = Machine::new(1);
    let runs = AtomicU32::new(0);
    let (inside, after) = m
        .run_on(0, || {
            let intr = pin!(PassiveInterrupt::new(
                PassiveInterruptConfig::new(13, level(7)),
                || {
                    runs.fetch_add(1, Relaxed);
                    true
                }
            ));
            intr.as_ref().connect().unwrap();
            let inside = intr.synchronize(|| {
                m.assert_interrupt(13);
                std::thread::sleep(Duration::from_millis(10));
                runs.load(Relaxed)
            });
            (inside, runs.load(Relaxed))
        })
        .unwrap();
    assert_eq!(inside, 0, "excluded while synchronize held the wait lock");
    assert_eq!(after, 1, "ran at the release (waking is a dispatch point)");
}

#[test]
fn synchronize_on_a_passive_object_returns_the_routines_value() {
    let m = Machine::new(1);
    let r = m
        .run_on(0, || {
            let intr = pin!(PassiveInterrupt::new(
                PassiveInterruptConfig::new(14, level(5)),
                || true
            ));
            intr.as_ref().connect().unwrap();
            let raw: &KInterrupt = intr.raw();
            (intr.synchronize(|| 2), raw.synchronize(|| 3))
        })
        .unwrap();
    assert_eq!(r, (2, 3));
}

/// What KMDF's TryToAcquireLock builds on: succeeds when free, fails with nothing held
/// while the routine holds the lock on another processor.
#[test]
fn try_lock_succeeds_when_free_and_fails_while_the_routine_holds_it() {
    let m = Machine::new(2);
    let go = Event::new(EventType::Notification, false);
    let entered = AtomicU32::new(0);
    let (free, busy, owner, after) = m
        .run_on(0, || {
            let cfg = PassiveInterruptConfig {
                affinity: 0b10,
                ..PassiveInterruptConfig::new(15, level(5))
            };
            let intr = pin!(PassiveInterrupt::new(cfg, || {
                entered.fetch_add(1, Relaxed);
                go.wait(None);
                true
            }));
            intr.as_ref().connect().unwrap();
            let free = intr.try_lock().is_some();
            m.assert_interrupt(15);
            eventually("the routine", || entered.load(Relaxed) == 1);
            let busy = intr.try_lock().is_some();
            let owner = intr.raw().wait_lock_owner();
            go.set();
            let after = intr.lock().old_irql_is_passive();
            (free, busy, owner, after)
        })
        .unwrap();
    assert!(free);
    assert!(!busy);
    assert_eq!(
        owner,
        Some(1),
        "the routine runs on processor 1 (its affinity)"
    );
    assert!(after);
}

trait PassiveGuardExt {
    fn old_irql_is_passive(&self) -> bool;
}
impl PassiveGuardExt for ntspin::interrupt::PassiveGuard<'_> {
    fn old_irql_is_passive(&self) -> bool {
        ntspin::current_irql() == Irql::PASSIVE
    }
}

#[test]
fn irql_worker_exit_passive_routine_returning_at_dispatch_bugchecks_0xe1() {
    let m = Machine::new(2);
    let (routine, item) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let r = m.run_on(0, || {
        let cfg = PassiveInterruptConfig {
            affinity: 0b10,
            ..PassiveInterruptConfig::new(16, level(5))
        };
        let intr = pin!(PassiveInterrupt::new(cfg, || {
            let _ = ntspin::raise_irql(Irql::DISPATCH); // and never lowers
            true
        }));
        routine.store(intr.raw().routine_addr(), Relaxed);
        item.store(intr.raw().addr(), Relaxed);
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(16);
        loop {
            std::thread::sleep(Duration::from_millis(1)); // until the machine stops
            ntspin::lower_irql(Irql::PASSIVE);
        }
    });
    let report = bug_check_of(&m);
    assert!(r.is_err());
    assert_eq!(report.bug.code, code::WORKER_THREAD_RETURNED_AT_BAD_IRQL);
    assert_eq!(
        report.bug.params,
        [routine.load(Relaxed), 2, 0, item.load(Relaxed)]
    );
    assert_eq!(report.bug.rule, Rule::IRQL_WORKER_EXIT);
    assert_eq!(report.processor, 1);
}

#[test]
fn isl_recurse_synchronize_inside_synchronize_of_a_passive_object_bugchecks_0x0f() {
    let m = Machine::new(1);
    let lock = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let intr = pin!(PassiveInterrupt::new(
                PassiveInterruptConfig::new(17, level(5)),
                || true
            ));
            intr.as_ref().connect().unwrap();
            lock.store(intr.raw().wait_lock_addr(), Relaxed);
            intr.synchronize(|| intr.synchronize(|| ()));
        })
        .unwrap_err();
    assert_eq!(err.bug.code, code::SPIN_LOCK_ALREADY_OWNED);
    assert_eq!(err.bug.params, [lock.load(Relaxed), 0, 0, 0]);
    assert_eq!(err.bug.rule, Rule::ISL_RECURSE);
}

#[test]
fn irql_wait_synchronize_on_a_passive_object_at_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let intr = pin!(PassiveInterrupt::new(
                PassiveInterruptConfig::new(18, level(5)),
                || true
            ));
            intr.as_ref().connect().unwrap();
            lock.store(intr.raw().wait_lock_addr(), Relaxed);
            let _old = ntspin::raise_irql(Irql::DISPATCH);
            intr.synchronize(|| ());
        })
        .unwrap_err();
    assert_eq!(err.bug.code, 0xC4);
    assert_eq!(err.bug.params[0], 0x121, "at DISPATCH with no timeout");
    assert_eq!(err.bug.params[2], lock.load(Relaxed));
    assert_eq!(err.bug.rule, Rule::IRQL_WAIT);
}

#[test]
fn conn_params_passive_rows() {
    let m = Machine::new(1);
    m.run_on(0, || {
        // The line's level must be a device level, above DISPATCH.
        for bad in [Irql::PASSIVE, Irql::DISPATCH] {
            let cfg = InterruptConfig::passive(19, bad);
            assert_eq!(cfg.validate(), Err(NtStatus::INVALID_PARAMETER));
            let intr = pin!(PassiveInterrupt::new(
                PassiveInterruptConfig::new(19, bad),
                || true
            ));
            assert_eq!(intr.as_ref().connect(), Err(NtStatus::INVALID_PARAMETER));
        }
        // Passive-level and DIRQL objects never share a line.
        let shared = |c: PassiveInterruptConfig| PassiveInterruptConfig {
            share_vector: true,
            ..c
        };
        let passive = pin!(PassiveInterrupt::new(
            shared(PassiveInterruptConfig::new(20, level(5))),
            || true
        ));
        passive.as_ref().connect().unwrap();
        let dirql = pin!(Interrupt::new(
            InterruptConfig {
                share_vector: true,
                ..InterruptConfig::new(20, level(5))
            },
            || true
        ));
        assert_eq!(dirql.as_ref().connect(), Err(NtStatus::INVALID_PARAMETER));
        // Two shareable passive objects at one level do.
        let second = pin!(PassiveInterrupt::new(
            shared(PassiveInterruptConfig::new(20, level(5))),
            || true
        ));
        assert_eq!(second.as_ref().connect(), Ok(()));
        // A DIRQL-typed object given a passive configuration is refused.
        let wrong = pin!(Interrupt::new(
            InterruptConfig::passive(21, level(5)),
            || true
        ));
        assert_eq!(wrong.as_ref().connect(), Err(NtStatus::INVALID_PARAMETER));
    })
    .unwrap();
}

/// A routine blocked for good when another processor bug-checks: the run ends with the
/// bug check instead of hanging.
#[test]
fn a_passive_routine_blocked_when_the_machine_stops_does_not_hang_the_run() {
    let m = Machine::new(2);
    let never = Event::new(EventType::Notification, false);
    let entered = AtomicU32::new(0);
    let err = m
        .run_on(0, || {
            let cfg = PassiveInterruptConfig {
                affinity: 0b10,
                ..PassiveInterruptConfig::new(22, level(5))
            };
            let intr = pin!(PassiveInterrupt::new(cfg, || {
                entered.fetch_add(1, Relaxed);
                never.wait(None);
                true
            }));
            intr.as_ref().connect().unwrap();
            m.assert_interrupt(22);
            eventually("the routine", || entered.load(Relaxed) == 1);
            let old = ntspin::raise_irql(Irql::DISPATCH);
            ntspin::lower_irql(level(5)); // IRQL-LOWER: stops the machine
            ntspin::lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(err.bug.rule, Rule::IRQL_LOWER);
}

/// A work item runs at PASSIVE on the worker; queuing a queued one returns `false`; one
/// returning at DISPATCH is IRQL-WORKER-EXIT with its routine and item. One processor, so
/// nothing can start the item between the two queue calls: it runs at the lower.
#[test]
fn work_items_run_at_passive_and_irql_worker_exit_names_the_item() {
    use ntspin::workitem::WorkItem;
    let m = Machine::new(1);
    let ran = AtomicU32::new(0);
    m.run_on(0, || {
        let item = pin!(WorkItem::new(|| {
            assert_eq!(ntspin::current_irql(), Irql::PASSIVE);
            ran.fetch_add(1, Relaxed);
        }));
        let old = ntspin::raise_irql(Irql::DISPATCH); // as a DPC would queue it
        assert!(item.as_ref().queue());
        assert!(!item.as_ref().queue(), "already queued");
        assert_eq!(ran.load(Relaxed), 0, "not at DISPATCH");
        ntspin::lower_irql(old); // the worker runs it here
        assert_eq!(ran.load(Relaxed), 1);
    })
    .unwrap();

    let m = Machine::new(1);
    let (routine, addr) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let err = m
        .run_on(0, || {
            let item = pin!(WorkItem::new(|| {
                let _ = ntspin::raise_irql(Irql::DISPATCH); // and never lowers
            }));
            routine.store(item.raw().routine_addr(), Relaxed);
            addr.store(item.raw().addr(), Relaxed);
            item.as_ref().queue(); // runs right here: this processor is the worker
        })
        .unwrap_err();
    assert_eq!(err.bug.code, code::WORKER_THREAD_RETURNED_AT_BAD_IRQL);
    assert_eq!(
        err.bug.params,
        [routine.load(Relaxed), 2, 0, addr.load(Relaxed)]
    );
    assert_eq!(err.bug.rule, Rule::IRQL_WORKER_EXIT);
}

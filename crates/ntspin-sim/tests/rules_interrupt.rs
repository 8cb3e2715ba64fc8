//! The *Interrupt objects*, *DPCs* and *ExInterlocked* rules of `RULES.md`, and the
//! remaining IRQL rules (IRQL-WAIT, IRQL-LOWER-DPC, IRQL-ISR-EXIT, IRQL-DPC-EXIT): each
//! correct use passes, each violation gets exactly its bug check, code and parameters.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ntspin::bugcheck::code;
use ntspin::dpc::Dpc;
use ntspin::event::{Event, EventType, WaitStatus};
use ntspin::interlocked::*;
use ntspin::interrupt::{Interrupt, InterruptConfig, InterruptMode, KInterrupt};
use ntspin::{Irql, NtStatus, RawSpinLock, Rule, SpinLock};
use ntspin_sim::{Machine, Verifier};

mod common;
use common::{bug_check_of, eventually};

fn dirql(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

/// A read-modify-write that loses updates unless its callers exclude each other.
fn racy_bump(c: &AtomicU64) {
    let v = c.load(Relaxed);
    for _ in 0..64 {
        std::hint::spin_loop();
    }
    c.store(v + 1, Relaxed);
}

#[test]
fn isl_passive_acquire_on_a_passive_object_bugchecks_0x13b() {
    let m = Machine::new(1);
    let obj_addr = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let cfg = InterruptConfig {
                synchronize_irql: Irql::PASSIVE,
                ..InterruptConfig::new(1, Irql::PASSIVE)
            };
            unsafe fn never(_: *const KInterrupt) -> bool {
                false
            }
            // SAFETY: the routine touches nothing; no lock is supplied.
            let obj = pin!(unsafe { KInterrupt::new(&cfg, never, 0) });
            obj_addr.store(obj.addr(), Relaxed);
            obj.acquire_lock();
        })
        .unwrap_err();
    assert_eq!(err.bug.code, code::PASSIVE_INTERRUPT_ERROR);
    assert_eq!(err.bug.params, [1, obj_addr.load(Relaxed), 0, 0]);
    assert_eq!(err.bug.rule, Rule::ISL_PASSIVE);
}

#[test]
fn isl_irql_acquire_above_synchronize_irql_bugchecks() {
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            intr.as_ref().connect().unwrap();
            let old = ntspin::raise_irql(dirql(6));
            let _g = intr.lock();
            ntspin::lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(err.bug.code, 0xC4);
    assert_eq!(err.bug.params, [0x30, 6, 5, 0]);
    assert_eq!(err.bug.rule, Rule::ISL_IRQL);
}

#[test]
fn isl_obj_lock_of_an_unconnected_object_bugchecks() {
    let m = Machine::new(1);
    let addr = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            addr.store(intr.raw().addr(), Relaxed);
            intr.synchronize(|| ());
        })
        .unwrap_err();
    assert_eq!(err.bug.params, [0xE1, addr.load(Relaxed), 0, 0]);
    assert_eq!(err.bug.rule, Rule::ISL_OBJ);
}

#[test]
fn isl_recurse_synchronize_inside_synchronize_bugchecks() {
    let m = Machine::new(1);
    let lock = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            intr.as_ref().connect().unwrap();
            lock.store(intr.raw().spin_lock().addr(), Relaxed);
            intr.synchronize(|| intr.synchronize(|| ()));
        })
        .unwrap_err();
    assert_eq!(err.bug.code, code::SPIN_LOCK_ALREADY_OWNED);
    assert_eq!(err.bug.params, [lock.load(Relaxed), 0, 0, 0]);
    assert_eq!(err.bug.rule, Rule::ISL_RECURSE);
}

#[test]
fn isl_oldirql_release_with_another_irql_bugchecks() {
    let m = Machine::new(1);
    let lock = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            intr.as_ref().connect().unwrap();
            lock.store(intr.raw().spin_lock().addr(), Relaxed);
            let old = intr.raw().acquire_lock();
            assert_eq!(old, Irql::PASSIVE);
            // SAFETY: held above; the wrong IRQL is the point (the verifier catches it).
            unsafe { intr.raw().release_lock(Irql::APC) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug.params,
        [
            0x0002_0015,
            Rule::ISL_OLDIRQL.name_ptr(),
            lock.load(Relaxed),
            0
        ]
    );
    assert_eq!(err.bug.rule, Rule::ISL_OLDIRQL);
}

#[test]
fn sync_result_synchronize_returns_the_routines_value() {
    let m = Machine::new(1);
    let (two, irql_inside) = m
        .run_on(0, || {
            let cfg = InterruptConfig {
                synchronize_irql: dirql(7),
                ..InterruptConfig::new(2, dirql(5))
            };
            let intr = pin!(Interrupt::new(cfg, || true));
            intr.as_ref().connect().unwrap();
            let two = intr.synchronize(|| 2);
            (two, intr.synchronize(ntspin::current_irql))
        })
        .unwrap();
    assert_eq!(two, 2);
    assert_eq!(irql_inside, dirql(7), "synchronize runs at SynchronizeIrql");
}

#[test]
fn isr_exclusion_isr_on_another_processor_excludes_synchronize() {
    const SYNCS: u64 = 20_000;
    let m = Machine::new(2);
    let counter = AtomicU64::new(0);
    let isr_runs = AtomicU64::new(0);
    let line = m.interrupt_line(5);
    m.run_on(0, || {
        // Only processor 1 takes the interrupt; processor 0 holds the lock.
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(5, dirql(5))
        };
        let intr = pin!(Interrupt::new(cfg, || {
            assert_eq!(ntspin::hal::current_processor(), 1);
            assert_eq!(ntspin::current_irql(), dirql(5));
            racy_bump(&counter);
            isr_runs.fetch_add(1, Relaxed);
            true
        }));
        intr.as_ref().connect().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..20_000 {
                    line.assert();
                }
            });
            for _ in 0..SYNCS {
                intr.synchronize(|| racy_bump(&counter));
            }
        });
        eventually("the last interrupts", || m.processor_counts(1).0 > 0);
        intr.disconnect(); // waits for a running service routine
    })
    .unwrap();
    let isrs = isr_runs.load(Relaxed);
    assert!(isrs > 0);
    assert_eq!(counter.load(Relaxed), SYNCS + isrs, "an update was lost");
}

#[test]
fn conn_params_connect_above_passive_bugchecks() {
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            let _old = ntspin::raise_irql(Irql::DISPATCH);
            let _ = intr.as_ref().connect();
        })
        .unwrap_err();
    assert_eq!(
        err.bug.params,
        [0x0002_000B, Rule::CONN_PARAMS.name_ptr(), 0, 0]
    );
    assert_eq!(err.bug.rule, Rule::CONN_PARAMS);
}

#[test]
fn conn_params_irql_rule_is_the_verifiers_a_retail_machine_connects() {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::Off)
        .build();
    let connected = m
        .run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(2, dirql(5)), || true));
            let old = ntspin::raise_irql(Irql::DISPATCH);
            let r = intr.as_ref().connect();
            ntspin::lower_irql(old);
            r
        })
        .unwrap();
    assert_eq!(connected, Ok(()));
}

#[test]
fn conn_params_invalid_connects_fail_and_connect_nothing() {
    let m = Machine::new(1);
    let calls = AtomicU32::new(0);
    let shared = RawSpinLock::new();
    m.run_on(0, || {
        let isr = || {
            calls.fetch_add(1, Relaxed);
            true
        };
        let empty_mask = InterruptConfig {
            affinity: 0,
            ..InterruptConfig::new(9, dirql(5))
        };
        let low_sync = InterruptConfig {
            synchronize_irql: dirql(4),
            ..InterruptConfig::new(9, dirql(5))
        };
        let passive_with_lock = InterruptConfig {
            synchronize_irql: Irql::PASSIVE,
            spin_lock: Some(&shared),
            ..InterruptConfig::new(9, Irql::PASSIVE)
        };
        for cfg in [empty_mask, low_sync, passive_with_lock] {
            let intr = pin!(Interrupt::new(cfg, isr));
            assert_eq!(intr.as_ref().connect(), Err(NtStatus::INVALID_PARAMETER));
            assert!(!intr.raw().is_connected());
        }
        // Vector already connected unshareably.
        let first = pin!(Interrupt::new(InterruptConfig::new(9, dirql(5)), isr));
        first.as_ref().connect().unwrap();
        let second = pin!(Interrupt::new(
            InterruptConfig {
                share_vector: true,
                ..InterruptConfig::new(9, dirql(5))
            },
            isr
        ));
        assert_eq!(second.as_ref().connect(), Err(NtStatus::INVALID_PARAMETER));
        first.disconnect();
        // Nothing is connected now: an assertion is latched, no routine runs.
        m.assert_interrupt(9);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(calls.load(Relaxed), 0);
    })
    .unwrap();
}

#[test]
fn shared_vector_level_sensitive_stops_at_the_first_claim() {
    let m = Machine::new(1);
    let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
    m.run_on(0, || {
        let cfg = InterruptConfig {
            share_vector: true,
            mode: InterruptMode::LevelSensitive,
            ..InterruptConfig::new(3, dirql(6))
        };
        let first = pin!(Interrupt::new(cfg, || {
            a.fetch_add(1, Relaxed);
            true
        }));
        let second = pin!(Interrupt::new(cfg, || {
            b.fetch_add(1, Relaxed);
            false
        }));
        first.as_ref().connect().unwrap();
        second.as_ref().connect().unwrap();
        m.assert_interrupt(3); // to this processor, at PASSIVE: runs before returning
        eventually("the ISR", || a.load(Relaxed) == 1);
    })
    .unwrap();
    assert_eq!((a.load(Relaxed), b.load(Relaxed)), (1, 0));
}

#[test]
fn shared_vector_latched_rescans_until_a_pass_claims_nothing() {
    let m = Machine::new(1);
    let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
    m.run_on(0, || {
        let cfg = InterruptConfig {
            share_vector: true,
            mode: InterruptMode::Latched,
            ..InterruptConfig::new(3, dirql(6))
        };
        // The first device had three events latched; the second had none.
        let first = pin!(Interrupt::new(cfg, || a.fetch_add(1, Relaxed) < 3));
        let second = pin!(Interrupt::new(cfg, || {
            b.fetch_add(1, Relaxed);
            false
        }));
        first.as_ref().connect().unwrap();
        second.as_ref().connect().unwrap();
        m.assert_interrupt(3);
        eventually("the chain", || b.load(Relaxed) == 4);
    })
    .unwrap();
    // Three claiming passes and one empty one; every object is called on each pass.
    assert_eq!((a.load(Relaxed), b.load(Relaxed)), (4, 4));
}

#[test]
fn lazy_irql_pending_interrupts_replay_on_lower_highest_first() {
    let m = Machine::new(1);
    let order = std::sync::Mutex::new(Vec::new());
    let log = AtomicU32::new(0);
    m.run_on(0, || {
        let (order, log) = (&order, &log);
        let record = |level: u8| {
            move || {
                log.fetch_add(1, Relaxed);
                // Service routines run at their DIRQL, in order; the Mutex is only touched
                // from them and after they are done.
                order.lock().unwrap().push(level);
                true
            }
        };
        let a = pin!(Interrupt::new(
            InterruptConfig::new(10, dirql(5)),
            record(5)
        ));
        let b = pin!(Interrupt::new(
            InterruptConfig::new(11, dirql(8)),
            record(8)
        ));
        let c = pin!(Interrupt::new(
            InterruptConfig::new(12, dirql(6)),
            record(6)
        ));
        a.as_ref().connect().unwrap();
        b.as_ref().connect().unwrap();
        c.as_ref().connect().unwrap();
        let old = ntspin::raise_irql(Irql::HIGH);
        for v in [10, 11, 12] {
            m.assert_interrupt(v);
        }
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(log.load(Relaxed), 0, "masked by IRQL: pending");
        ntspin::lower_irql(old);
        assert_eq!(log.load(Relaxed), 3, "replayed by the lower");
    })
    .unwrap();
    assert_eq!(*order.lock().unwrap(), [8, 6, 5]);
}

#[test]
fn irql_isr_exit_isr_returning_at_another_irql_bugchecks_in_interrupt_context() {
    let m = Machine::new(2);
    let routine = AtomicUsize::new(0);
    m.run_on(0, || {
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(4, dirql(5))
        };
        // Leaks a raise: returns at DIRQL 9.
        let intr = Box::pin(Interrupt::new(cfg, || {
            let _ = ntspin::raise_irql(dirql(9));
            true
        }));
        routine.store(intr.raw().routine_addr(), Relaxed);
        intr.as_ref().connect().unwrap();
        // The object must outlive the frozen processor that is inside its routine.
        std::mem::forget(intr);
    })
    .unwrap();
    m.assert_interrupt(4);
    let err = bug_check_of(&m);
    assert_eq!(err.bug.params, [0x111, routine.load(Relaxed), 5, 9]);
    assert_eq!(err.bug.rule, Rule::IRQL_ISR_EXIT);
    assert_eq!(err.processor, 1);
    // The machine is stopped: further routines get the same bug check.
    assert_eq!(m.run_on(0, || ()).unwrap_err().bug, err.bug);
}

#[test]
fn dpc_once_second_queue_returns_false_and_keeps_the_first_arguments() {
    let m = Machine::new(1);
    let got = std::sync::Mutex::new(Vec::new());
    m.run_on(0, || {
        let dpc = pin!(Dpc::new(|_, a, b| got.lock().unwrap().push((a, b))));
        let old = ntspin::raise_irql_to_dpc_level();
        assert!(dpc.as_ref().queue(1, 2));
        assert!(!dpc.as_ref().queue(3, 4));
        ntspin::lower_irql(old);
        // Queued again once it ran.
        assert!(dpc.as_ref().queue(5, 6));
    })
    .unwrap();
    assert_eq!(*got.lock().unwrap(), [(1, 2), (5, 6)]);
}

#[test]
fn dpc_level_dpcs_run_at_dispatch_on_the_queuing_or_target_processor() {
    let m = Machine::new(2);
    let seen = std::sync::Mutex::new(Vec::new());
    m.run_on(0, || {
        let here = pin!(Dpc::new(|_, tag, _| {
            seen.lock().unwrap().push((
                tag,
                ntspin::hal::current_processor(),
                ntspin::current_irql(),
            ))
        }));
        let there = pin!(Dpc::new(|_, tag, _| {
            seen.lock().unwrap().push((
                tag,
                ntspin::hal::current_processor(),
                ntspin::current_irql(),
            ))
        }));
        there.set_target_processor(1);
        // Queued at PASSIVE: runs at once on this processor (DISPATCH software interrupt).
        assert!(here.as_ref().queue(1, 0));
        assert!(there.as_ref().queue(2, 0));
        ntspin::dpc::flush_queued_dpcs();
    })
    .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, [(1, 0, Irql::DISPATCH), (2, 1, Irql::DISPATCH)]);
}

#[test]
fn dpc_queued_from_an_isr_runs_after_it_and_may_requeue_itself() {
    let m = Machine::new(2);
    let runs = AtomicU32::new(0);
    m.run_on(0, || {
        let dpc = pin!(Dpc::new(|_, _, _| {
            runs.fetch_add(1, Relaxed);
        }));
        let dpc = dpc.as_ref();
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(6, dirql(7))
        };
        let intr = pin!(Interrupt::new(cfg, || {
            dpc.queue(0, 0);
            true
        }));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(6);
        eventually("the DPC", || runs.load(Relaxed) == 1);
        intr.disconnect();
    })
    .unwrap();
    assert_eq!(m.processor_counts(1), (1, 1));

    let again = AtomicU32::new(0);
    m.run_on(0, || {
        let dpc = pin!(Dpc::new(|_, n, _| {
            again.fetch_add(1, Relaxed);
            let _ = n;
        }));
        // A DPC re-queuing itself from its routine (through a raw pointer to the pinned
        // object, as a C driver would keep it).
        let _ = dpc.as_ref().queue(0, 0);
    })
    .unwrap();
    assert_eq!(again.load(Relaxed), 1);
}

#[test]
fn irql_lower_dpc_lowering_inside_a_dpc_bugchecks() {
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            let dpc = pin!(Dpc::new(|_, _, _| ntspin::lower_irql(Irql::PASSIVE)));
            dpc.as_ref().queue(0, 0);
        })
        .unwrap_err();
    assert_eq!(err.bug.params, [0x31, 2, 0, 1]);
    assert_eq!(err.bug.rule, Rule::IRQL_LOWER_DPC);
}

#[test]
fn irql_dpc_exit_dpc_returning_with_a_lock_held_bugchecks_0xc8() {
    let m = Machine::new(1);
    // Leaked: the DPC leaves it held, and dropping a held lock is DL-FREE-HELD.
    let lock: &SpinLock<i32> = Box::leak(Box::new(SpinLock::new(0)));
    let ids = std::sync::Mutex::new((0, 0));
    let err = m
        .run_on(0, || {
            let dpc = pin!(Dpc::new(|at_dispatch, _, _| {
                std::mem::forget(lock.lock_at_dpc_level(at_dispatch));
            }));
            *ids.lock().unwrap() = (dpc.raw().routine_addr(), dpc.raw() as *const _ as usize);
            dpc.as_ref().queue(0, 0);
        })
        .unwrap_err();
    let (routine, addr) = *ids.lock().unwrap();
    assert_eq!(err.bug.code, code::IRQL_UNEXPECTED_VALUE);
    assert_eq!(err.bug.params, [(2 << 16) | (2 << 8) | 4, routine, addr, 0]);
    assert_eq!(err.bug.rule, Rule::IRQL_DPC_EXIT);
}

#[test]
fn irql_wait_waits_at_or_above_dispatch_bugcheck() {
    for (raise_to, timeout, subcode) in [
        (dirql(5), Some(Duration::ZERO), 0x120),
        (Irql::DISPATCH, None, 0x121),
        (Irql::DISPATCH, Some(Duration::from_millis(1)), 0x122),
    ] {
        let m = Machine::new(1);
        let ev = Event::new(EventType::Notification, false);
        let err = m
            .run_on(0, || {
                let _old = ntspin::raise_irql(raise_to);
                ev.wait(timeout);
            })
            .unwrap_err();
        assert_eq!(err.bug.code, 0xC4);
        assert_eq!(err.bug.params[0], subcode);
        assert_ne!(err.bug.params[1], 0, "address of the IRQL value");
        assert_eq!(err.bug.params[2], &ev as *const Event as usize);
        assert_eq!(err.bug.params[3] == 0, timeout.is_none());
        assert_eq!(err.bug.rule, Rule::IRQL_WAIT);
    }
}

#[test]
fn irql_wait_zero_timeout_at_dispatch_polls() {
    let m = Machine::new(1);
    let ev = Event::new(EventType::Synchronization, true);
    let r = m
        .run_on(0, || {
            let old = ntspin::raise_irql_to_dpc_level();
            let first = ev.wait(Some(Duration::ZERO));
            let second = ev.wait(Some(Duration::ZERO));
            ntspin::lower_irql(old);
            (first, second)
        })
        .unwrap();
    assert_eq!(r, (WaitStatus::Success, WaitStatus::Timeout));
}

#[test]
fn events_a_dpc_wakes_a_thread_waiting_at_passive_which_takes_the_interrupt() {
    let m = Machine::new(1);
    let done = Event::new(EventType::Synchronization, false);
    let status = m
        .run_on(0, || {
            let dpc = pin!(Dpc::new(|_, _, _| {
                done.set();
            }));
            let dpc = dpc.as_ref();
            let intr = pin!(Interrupt::new(InterruptConfig::new(8, dirql(4)), || {
                dpc.queue(0, 0);
                true
            }));
            intr.as_ref().connect().unwrap();
            let line = m.interrupt_line(8);
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                line.assert();
            });
            // Blocked at PASSIVE: the interrupt and its DPC run on this very thread.
            let s = done.wait(Some(Duration::from_secs(10)));
            t.join().unwrap();
            (s, done.wait(Some(Duration::from_millis(5))))
        })
        .unwrap();
    assert_eq!(status, (WaitStatus::Success, WaitStatus::Timeout));
    assert_eq!(m.processor_counts(0), (1, 1));
}

#[test]
fn exi_empty_remove_and_pop_on_empty_lists_return_null_even_from_an_isr() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let results = std::sync::Mutex::new(Vec::new());
    let count = AtomicU32::new(0);
    m.run_on(0, || {
        let mut head = ListEntry::new();
        let mut single = SingleListEntry::new();
        let mut e = ListEntry::new();
        // SAFETY: the lists and entries live on this frame until the end of the routine,
        // and every access goes through `lock` (the ISR runs before the frame ends).
        unsafe { initialize_list_head(&mut head) };
        let head_ptr = &mut head as *mut ListEntry as usize;
        let single_ptr = &mut single as *mut SingleListEntry as usize;
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(2, dirql(9))
        };
        let intr = pin!(Interrupt::new(cfg, || {
            // SAFETY: see above.
            let removed =
                unsafe { ex_interlocked_remove_head_list(head_ptr as *mut ListEntry, &lock) };
            // SAFETY: see above.
            let popped =
                unsafe { ex_interlocked_pop_entry_list(single_ptr as *mut SingleListEntry, &lock) };
            results
                .lock()
                .unwrap()
                .push((removed as usize, popped.is_null()));
            count.fetch_add(1, Relaxed);
            true
        }));
        intr.as_ref().connect().unwrap();
        // One entry queued: the ISR takes it. Then nothing: NULL.
        // SAFETY: see above.
        unsafe { ex_interlocked_insert_tail_list(&mut head, &mut e, &lock) };
        m.assert_interrupt(2);
        eventually("the first ISR", || count.load(Relaxed) == 1);
        m.assert_interrupt(2);
        eventually("the second ISR", || count.load(Relaxed) == 2);
        intr.disconnect();
        let e_addr = &mut e as *mut ListEntry as usize;
        assert_eq!(
            *results.lock().unwrap(),
            [(e_addr, true), (0, true)],
            "first removal returns the entry, the next ones NULL"
        );
    })
    .unwrap();
}

#[test]
fn verifier_off_machine_still_delivers_and_drains() {
    let m = Machine::builder()
        .processors(2)
        .verifier(Verifier::Off)
        .build();
    let runs = AtomicU32::new(0);
    m.run_on(0, || {
        let dpc = pin!(Dpc::new(|_, _, _| {
            runs.fetch_add(1, Relaxed);
        }));
        let dpc = dpc.as_ref();
        let intr = pin!(Interrupt::new(InterruptConfig::new(1, dirql(3)), || {
            dpc.queue(0, 0);
            true
        }));
        intr.as_ref().connect().unwrap();
        let lock = SpinLock::new(0u32);
        for _ in 0..200 {
            m.assert_interrupt(1);
            *lock.lock() += 1; // lowering after the release drains what the ISR queued
        }
        eventually("the DPCs", || runs.load(Relaxed) > 0);
        ntspin::dpc::flush_queued_dpcs();
    })
    .unwrap();
    assert!(runs.load(Relaxed) >= 1);
    assert_eq!(m.irql_of(0), Irql::PASSIVE);
    assert_eq!(m.irql_of(1), Irql::PASSIVE);
}

#[test]
fn dpc_level_a_dpc_queued_by_a_plain_test_thread_runs_on_it() {
    // A fresh thread is no processor yet: queuing must attach it (default machine), not
    // queue on the placeholder control block.
    let seen = std::thread::spawn(|| {
        let seen = std::sync::Mutex::new(None);
        let dpc = pin!(Dpc::new(|_, a, _| {
            *seen.lock().unwrap() = Some((a, ntspin::current_irql()));
        }));
        assert!(dpc.as_ref().queue(7, 0));
        ntspin::dpc::flush_queued_dpcs();
        *seen.lock().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(seen, Some((7, Irql::DISPATCH)));
}

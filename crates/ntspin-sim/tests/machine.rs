//! The machine's own behaviour: a bug check stops every processor and reaches the caller;
//! the process neither hangs nor aborts and can build a new machine; the default machine
//! serves plain threads.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use ntspin::{BugCheck, Irql, RawSpinLock, Rule, SpinLock, current_irql};
use ntspin_sim::{Machine, Verifier, catch_bug_check};

#[test]
fn bug_check_stops_every_processor_and_the_machine_stays_stopped() {
    let m = Machine::new(3);
    let lock = SpinLock::new(0u64);
    let go = AtomicBool::new(false);
    let results = m.run_each(|cpu| {
        if cpu == 2 {
            while !go.load(SeqCst) {
                std::thread::yield_now();
            }
            let _g = lock.lock();
            let _again = lock.lock(); // SL-RECURSE
        } else {
            go.store(true, SeqCst);
            // Busy forever with the lock: only the machine's stop ends this.
            loop {
                *lock.lock() += 1;
            }
        }
    });
    let expected = BugCheck::new(0x0F, [lock.raw().addr(), 0, 0, 0], Rule::SL_RECURSE);
    for r in &results {
        let report = r.as_ref().unwrap_err();
        assert_eq!(report.bug, expected);
        assert_eq!(report.processor, 2);
        assert_eq!(report.irql, Irql::DISPATCH);
    }
    // Every guard was released on the way out.
    assert!(lock.test());
    assert_eq!(m.bug_check().unwrap().bug, expected);
    // A stopped machine stays stopped.
    assert_eq!(m.run_on(0, current_irql).unwrap_err().bug, expected);
    // The process goes on: a new machine works.
    let m2 = Machine::new(2);
    assert_eq!(m2.run_on(1, || *lock.lock() + 1).map(|_| ()).ok(), Some(()));
}

#[test]
fn report_names_rule_fix_processor_and_backtrace() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let err = m
        .run_on(1, || {
            ntspin::raise_irql(Irql::new(9).unwrap());
            lock.acquire();
        })
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("0x000000C4 DRIVER_VERIFIER_DETECTED_VIOLATION (0x42, 0x9,"),
        "{text}"
    );
    assert!(text.contains("[SL-ACQ-IRQL]"), "{text}");
    assert!(text.contains("PROCESSOR: 1  IRQL: DIRQL(9)"), "{text}");
    assert!(
        text.contains("Fix: acquire executive spin locks at IRQL <= DISPATCH_LEVEL"),
        "{text}"
    );
    assert!(text.contains("STACK:"), "{text}");
    let arg3 = format!("Arg3: {:016x}, lock", lock.addr());
    assert!(text.contains(&arg3), "{text}");
}

#[test]
fn plain_panic_in_a_routine_reaches_the_caller_and_releases_guards() {
    let m = Machine::new(1);
    let lock = SpinLock::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = m.run_on(0, || {
            let _g = lock.lock();
            panic!("driver bug");
        });
    }));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"driver bug"));
    assert!(lock.test());
    // The processor is reusable and back at PASSIVE.
    assert_eq!(m.run_on(0, current_irql).unwrap(), Irql::PASSIVE);
}

#[test]
fn verifier_off_checks_nothing() {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::Off)
        .build();
    let r = m.run_on(0, || {
        let old = ntspin::raise_irql(Irql::new(5).unwrap());
        ntspin::raise_irql(Irql::DISPATCH); // IRQL-RAISE, unchecked
        ntspin::lower_irql(old);
        current_irql()
    });
    assert_eq!(r.unwrap(), Irql::PASSIVE);
    assert!(m.live_dumps().is_empty());
}

#[test]
fn continue_mode_records_and_goes_on_but_still_stops_for_recursion() {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::StandardContinue)
        .build();
    let lock = RawSpinLock::new();
    let err = m
        .run_on(0, || {
            let old = ntspin::raise_irql(Irql::new(4).unwrap());
            lock.acquire(); // SL-ACQ-IRQL: recorded, goes on (IRQL-RAISE then too)
            lock.acquire(); // SL-RECURSE: would spin forever, so it stops
            let _ = old;
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x0F, [lock.addr(), 0, 0, 0], Rule::SL_RECURSE)
    );
    let dumps: Vec<BugCheck> = m.live_dumps().iter().map(|d| d.bug).collect();
    assert_eq!(
        dumps,
        [
            BugCheck::new(0x1C4, [0x42, 4, lock.addr(), 0], Rule::SL_ACQ_IRQL),
            BugCheck::new(0x1C4, [0x30, 4, 2, 0], Rule::IRQL_RAISE),
        ]
    );
}

#[test]
fn default_machine_serves_plain_threads() {
    let lock = SpinLock::new(0u32);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    *lock.lock() += 1;
                }
                assert_eq!(current_irql(), Irql::PASSIVE);
            });
        }
    });
    assert_eq!(*lock.lock(), 4000);
    // A bug check on the default machine comes back to this thread only.
    let err = catch_bug_check(|| ntspin::lower_irql(Irql::DISPATCH)).unwrap_err();
    assert_eq!(err.bug, BugCheck::verifier(0x31, 0, 2, 0, Rule::IRQL_LOWER));
    assert_eq!(current_irql(), Irql::PASSIVE);
}

#[test]
fn processor_numbers_are_the_machines() {
    let m = Machine::new(4);
    let ids: Vec<u32> = m
        .run_each(|_| ntspin::hal::current_processor())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, [0, 1, 2, 3]);
}

#[test]
fn queued_waiter_behind_an_abandoned_raw_owner_freezes_instead_of_hanging() {
    use std::sync::atomic::AtomicUsize;
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let owner_entry = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let results = m.run_each(|cpu| {
        // As a C caller's KLOCK_QUEUE_HANDLE: no Drop to release it on the way out.
        let mut h = std::mem::ManuallyDrop::new(ntspin::LockQueueHandle::new());
        if cpu == 0 {
            // SAFETY: `h` stays on this frame; the deliberate bug below abandons it held.
            unsafe { lock.acquire_in_stack_queued(&mut *h) };
            owner_entry.store(&raw const *h as usize, SeqCst);
            while h.lock_queue().next().is_null() {
                std::thread::yield_now(); // wait until processor 1 is linked behind us
            }
            let mut h2 = ntspin::LockQueueHandle::new();
            // SAFETY: deliberately wrong (recursive); the verifier stops it before use.
            unsafe { lock.acquire_in_stack_queued_at_dpc_level(&mut h2) };
        } else {
            while owner_entry.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            // SAFETY: `h` stays on this frame (the processor freezes rather than unwind).
            unsafe { lock.acquire_in_stack_queued(&mut *h) };
        }
    });
    let expected = BugCheck::new(0x0F, [lock.addr(), 0, 0, 0], Rule::QSL_RECURSE);
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err().bug, expected);
    }
    // It took the freeze delay (about a second), not forever.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    // Processor 1 froze (it is linked behind an owner that will never release): its thread
    // stays parked; the machine handle can go.
    drop(m);
}

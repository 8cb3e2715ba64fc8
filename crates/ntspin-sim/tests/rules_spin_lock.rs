//! The executive spin-lock rules of `RULES.md` in this scope, one test per rule id:
//! the correct use passes, the violation yields exactly its code and parameters.

use std::sync::atomic::{AtomicBool, Ordering};

use ntspin::{BugCheck, Irql, RawSpinLock, Rule, SpinLock, current_irql, lower_irql, raise_irql};
use ntspin_sim::{Machine, Verifier};

fn dirql(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

/// The correct use: one acquire, one release with the saved IRQL, back at PASSIVE.
fn correct_acquire_release(m: &Machine, lock: &RawSpinLock) {
    let back = m
        .run_on(0, || {
            let old = lock.acquire();
            // SAFETY: acquired just above on this processor.
            unsafe { lock.release(old) };
            current_irql()
        })
        .unwrap();
    assert_eq!(back, Irql::PASSIVE);
}

#[test]
fn sl_acq_irql_acquire_above_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    let at_dispatch = m
        .run_on(0, || {
            let old = raise_irql(Irql::DISPATCH);
            let inner = lock.acquire(); // at DISPATCH is allowed
            // SAFETY: acquired just above on this processor.
            unsafe { lock.release(inner) };
            lower_irql(old);
            inner
        })
        .unwrap();
    assert_eq!(at_dispatch, Irql::DISPATCH);
    let err = m
        .run_on(0, || {
            raise_irql(dirql(5));
            lock.acquire();
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x42, 5, lock.addr(), 0, Rule::SL_ACQ_IRQL)
    );
}

#[test]
fn sl_atdpc_irql_acquire_below_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = SpinLock::new(1);
    let other = SpinLock::new(2);
    let sum = m
        .run_on(0, || {
            let g = other.lock();
            let inner = lock.lock_at_dpc_level(g.dpc_level());
            *g + *inner
        })
        .unwrap();
    assert_eq!(sum, 3);
    let raw = lock.raw();
    let err = m.run_on(0, || raw.acquire_at_dpc_level()).unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x40, 0, raw.addr(), 0, Rule::SL_ATDPC_IRQL)
    );
    let err = m.run_on(0, || raw.try_acquire_at_dpc_level()).unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x40, 0, raw.addr(), 0, Rule::SL_ATDPC_IRQL)
    );
}

#[test]
fn sl_fromdpc_irql_release_below_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    // Correct: release at DISPATCH.
    m.run_on(0, || {
        let old = raise_irql(Irql::DISPATCH);
        lock.acquire_at_dpc_level();
        // SAFETY: acquired above on this processor.
        unsafe { lock.release_from_dpc_level() };
        lower_irql(old);
    })
    .unwrap();
    // A FromDpcLevel release at PASSIVE: the IRQL rule is checked before ownership.
    let err = m
        .run_on(0, || {
            // SAFETY: deliberately wrong (not held, wrong IRQL); the verifier judges it.
            unsafe { lock.release_from_dpc_level() };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x41, 0, lock.addr(), 0, Rule::SL_FROMDPC_IRQL)
    );

    // Holding the lock and going down to APC first: in continue mode both the lowering
    // (IRQL-LOWER-HELD) and then the release (SL-FROMDPC-IRQL) are recorded, in order.
    let lock = RawSpinLock::new();
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::StandardContinue)
        .build();
    m.run_on(0, || {
        raise_irql(Irql::DISPATCH);
        lock.acquire_at_dpc_level();
        unsafe_release_from_dpc_at(&lock, Irql::APC);
        lower_irql(Irql::PASSIVE);
    })
    .unwrap();
    let dumps: Vec<BugCheck> = m.live_dumps().iter().map(|r| r.bug).collect();
    assert_eq!(
        dumps,
        [
            BugCheck::verifier(0x31, 2, 1, 2, Rule::IRQL_LOWER_HELD).as_live_dump(),
            BugCheck::verifier(0x41, 1, lock.addr(), 0, Rule::SL_FROMDPC_IRQL).as_live_dump(),
        ]
    );
    assert!(lock.test(), "the release still happened");
}

/// Lowers to `irql` with the lock still held, then releases it FromDpcLevel.
fn unsafe_release_from_dpc_at(lock: &RawSpinLock, irql: Irql) {
    lower_irql(irql);
    // SAFETY: the caller acquired `lock` at DPC level on this processor; the point of the
    // test is the IRQL of the release, which the verifier judges.
    unsafe { lock.release_from_dpc_level() };
}

#[test]
fn sl_rel_irql_double_release_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    correct_acquire_release(&m, &lock);
    let err = m
        .run_on(0, || {
            let old = lock.acquire();
            // SAFETY: acquired above; the second release is the deliberate bug.
            unsafe { lock.release(old) };
            // SAFETY: see above.
            unsafe { lock.release(old) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x32, 0, lock.addr(), 0, Rule::SL_REL_IRQL)
    );
}

#[test]
fn sl_rel_irql_release_above_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    correct_acquire_release(&m, &lock);
    let err = m
        .run_on(0, || {
            let old = lock.acquire();
            raise_irql(dirql(4));
            // SAFETY: acquired above; releasing at DIRQL is the deliberate bug.
            unsafe { lock.release(old) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x32, 4, lock.addr(), 0, Rule::SL_REL_IRQL)
    );
}

#[test]
fn sl_oldirql_release_with_wrong_old_irql_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    // Correct: the saved APC_LEVEL goes back in.
    let back = m
        .run_on(0, || {
            let old = raise_irql(Irql::APC);
            let saved = lock.acquire();
            // SAFETY: acquired just above; `saved` is what it returned.
            unsafe { lock.release(saved) };
            let at = current_irql();
            lower_irql(old);
            (saved, at)
        })
        .unwrap();
    assert_eq!(back, (Irql::APC, Irql::APC));
    let err = m
        .run_on(0, || {
            let old = raise_irql(Irql::APC);
            let saved = lock.acquire(); // saved = APC
            // SAFETY: acquired above; the wrong NewIrql is the deliberate bug.
            unsafe { lock.release(Irql::PASSIVE) };
            let _ = (old, saved);
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(
            0x0002_0015,
            Rule::SL_OLDIRQL.name_ptr(),
            lock.addr(),
            0,
            Rule::SL_OLDIRQL
        )
    );
    // The rule-name pointer names the rule.
    // SAFETY: `name_ptr` is the address of a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(err.bug.params[1] as *const std::ffi::c_char) };
    assert_eq!(name.to_str().unwrap(), "SL-OLDIRQL");
}

#[test]
fn sl_recurse_every_variant_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    // Correct: nesting two different locks, and re-acquiring after a release.
    let other = RawSpinLock::new();
    m.run_on(0, || {
        let old = lock.acquire();
        other.acquire_at_dpc_level();
        // SAFETY: both acquired just above on this processor, released in reverse order.
        unsafe { other.release_from_dpc_level() };
        // SAFETY: as above.
        unsafe { lock.release(old) };
        let again = lock.acquire();
        // SAFETY: acquired just above.
        unsafe { lock.release(again) };
    })
    .unwrap();
    let expected = BugCheck::new(0x0F, [lock.addr(), 0, 0, 0], Rule::SL_RECURSE);
    let err = m
        .run_on(0, || {
            lock.acquire();
            lock.acquire();
        })
        .unwrap_err();
    assert_eq!(err.bug, expected);
    let err = m
        .run_on(0, || {
            lock.acquire();
            lock.acquire_at_dpc_level();
        })
        .unwrap_err();
    assert_eq!(err.bug, expected);
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    let err = m
        .run_on(0, || {
            lock.acquire();
            lock.try_acquire_at_dpc_level();
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x0F, [lock.addr(), 0, 0, 0], Rule::SL_RECURSE)
    );
}

#[test]
fn sl_recurse_through_the_safe_guard_bugchecks() {
    let lock = SpinLock::new(0);
    let err = ntspin_sim::catch_bug_check(|| {
        let _a = lock.lock();
        let _b = lock.lock();
    })
    .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x0F, [lock.raw().addr(), 0, 0, 0], Rule::SL_RECURSE)
    );
    // The thread is back at PASSIVE with the lock free: the guard was released on unwind.
    assert_eq!(current_irql(), Irql::PASSIVE);
    assert!(lock.test());
    assert_eq!(*lock.lock(), 0);
}

#[test]
fn sl_not_owned_release_of_free_lock_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    correct_acquire_release(&m, &lock);
    let err = m
        .run_on(0, || {
            raise_irql(Irql::DISPATCH);
            // SAFETY: deliberately wrong: nothing holds the lock.
            unsafe { lock.release_from_dpc_level() };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x10, [lock.addr(), 0, 0, 0], Rule::SL_NOT_OWNED)
    );
}

#[test]
fn sl_not_owned_release_of_other_processors_lock_bugchecks() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let held = AtomicBool::new(false);
    let results = m.run_each(|cpu| {
        if cpu == 0 {
            let old = lock.acquire();
            held.store(true, Ordering::SeqCst);
            // Hold until the machine stops (each IRQL query is an ntspin call).
            loop {
                let _ = current_irql();
                std::thread::yield_now();
                let _ = old;
            }
        } else {
            while !held.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            raise_irql(Irql::DISPATCH);
            // SAFETY: deliberately wrong: processor 0 holds the lock.
            unsafe { lock.release_from_dpc_level() };
        }
    });
    let expected = BugCheck::new(0x10, [lock.addr(), 0, 0, 0], Rule::SL_NOT_OWNED);
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err().bug, expected);
    }
    assert_eq!(results[0].as_ref().unwrap_err().processor, 1);
    // The lock word still names processor 0: nothing was corrupted.
    assert_ne!(lock.word(), 0);
}

#[test]
fn sl_mix_ordinary_acquire_of_queued_lock_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    // Correct: one mode at a time (queued, released, then ordinary) is not mixing.
    m.run_on(0, || {
        let mut h = ntspin::LockQueueHandle::new();
        // SAFETY: `h` stays on this frame until released just below.
        unsafe { lock.acquire_in_stack_queued(&mut h) };
        // SAFETY: acquired just above.
        unsafe { ntspin::release_in_stack_queued(&mut h) };
        let old = lock.acquire();
        // SAFETY: acquired just above.
        unsafe { lock.release(old) };
    })
    .unwrap();
    let err = m
        .run_on(0, || {
            let mut h = ntspin::LockQueueHandle::new();
            // SAFETY: `h` stays on this frame until the machine stops this routine.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            lock.acquire_at_dpc_level(); // same processor: SL-MIX before SL-RECURSE
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x1008, lock.addr(), 0, 0, Rule::SL_MIX)
    );
}

#[test]
fn sl_mix_queued_acquire_of_ordinary_lock_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    let err = m
        .run_on(0, || {
            lock.acquire();
            let mut h = ntspin::LockQueueHandle::new();
            // SAFETY: `h` stays on this frame until the machine stops this routine.
            unsafe { lock.acquire_in_stack_queued_at_dpc_level(&mut h) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x1008, lock.addr(), 0, 0, Rule::SL_MIX)
    );
}

#[test]
fn sl_init_garbage_word_bugchecks_instead_of_hanging() {
    let m = Machine::new(1);
    // Correct: a word initialized to 0 (KeInitializeSpinLock) works through the same view.
    let mut good = 0usize;
    let good_addr = &raw mut good as usize;
    m.run_on(0, || {
        // SAFETY: `good` outlives the routine and only this view touches it.
        let lock = unsafe { RawSpinLock::from_ptr(good_addr as *mut usize) };
        let old = lock.acquire();
        // SAFETY: acquired just above.
        unsafe { lock.release(old) };
    })
    .unwrap();
    assert_eq!(good, 0);
    // An odd word naming no machine, an even word that is no queue entry (MSVC's 0xCC fill).
    for garbage in [0x0BAD_0000_0001usize, 0xCCCC_CCCC_CCCC_CCC0] {
        let mut word = garbage;
        let addr = &raw mut word as usize;
        let err = m
            .run_on(0, || {
                // SAFETY: `word` outlives the routine and only this view touches it.
                let lock = unsafe { RawSpinLock::from_ptr(addr as *mut usize) };
                lock.acquire();
            })
            .unwrap_err();
        assert_eq!(
            err.bug,
            BugCheck::verifier(0x1002, addr, 0, 0, Rule::SL_INIT)
        );
        assert_eq!(word, garbage, "the garbage word was not written");
        let m2 = Machine::new(1);
        let err = m2
            .run_on(0, || {
                // SAFETY: as above.
                let lock = unsafe { RawSpinLock::from_ptr(addr as *mut usize) };
                let mut h = ntspin::LockQueueHandle::new();
                // SAFETY: `h` stays on this frame until the machine stops this routine.
                unsafe { lock.acquire_in_stack_queued(&mut h) };
            })
            .unwrap_err();
        assert_eq!(
            err.bug,
            BugCheck::verifier(0x1002, addr, 0, 0, Rule::SL_INIT)
        );
        assert_eq!(word, garbage, "the garbage word was not written");
    }
}

#[test]
fn sl_init_plausible_word_that_nobody_holds_bugchecks_after_a_bounded_spin() {
    let m = Machine::new(2);
    // Learn what processor 1's ordinary acquire writes, then plant it in a lock it never took.
    let probe = RawSpinLock::new();
    let tag = m
        .run_on(1, || {
            let old = probe.acquire();
            let w = probe.word();
            // SAFETY: acquired above on this processor.
            unsafe { probe.release(old) };
            w
        })
        .unwrap();
    let mut word = tag;
    let addr = &raw mut word as usize;
    let err = m
        .run_on(0, || {
            // SAFETY: `word` outlives the routine and only this view touches it.
            let lock = unsafe { RawSpinLock::from_ptr(addr as *mut usize) };
            lock.acquire();
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x1002, addr, 0, 0, Rule::SL_INIT)
    );
}

#[test]
fn dl_free_held_lock_dropped_under_a_leaked_guard_bugchecks() {
    static ADDR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let m = Machine::new(2);
    let err = m
        .run_on(1, || {
            let lock = Box::new(SpinLock::new(0));
            ADDR.store(lock.raw().addr(), Ordering::SeqCst);
            std::mem::forget(lock.lock());
            drop(lock);
        })
        .unwrap_err();
    let addr = ADDR.load(Ordering::SeqCst);
    // P3 is the owner processor: 1.
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x100B, addr, 1, 0, Rule::DL_FREE_HELD)
    );
}

#[test]
fn sl_acq_irql_try_lock_above_dispatch_bugchecks() {
    let m = Machine::new(2);
    let lock = SpinLock::new(0);
    let held = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    // Correct: free -> a guard at DISPATCH; busy (held on processor 0) -> None, IRQL restored.
    let r = m.run_each(|cpu| {
        if cpu == 0 {
            let g = lock.try_lock().expect("free");
            held.store(true, Ordering::SeqCst);
            while !done.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            drop(g);
            (true, current_irql())
        } else {
            while !held.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let got = lock.try_lock().is_some();
            done.store(true, Ordering::SeqCst);
            (got, current_irql())
        }
    });
    let r: Vec<_> = r.into_iter().map(Result::unwrap).collect();
    assert_eq!(r, [(true, Irql::PASSIVE), (false, Irql::PASSIVE)]);
    // Wrong: above DISPATCH.
    let err = m
        .run_on(0, || {
            raise_irql(dirql(8));
            let _g = lock.try_lock();
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x42, 8, lock.raw().addr(), 0, Rule::SL_ACQ_IRQL)
    );
}

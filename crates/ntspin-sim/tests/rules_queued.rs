//! The in-stack queued spin-lock rules of `RULES.md` (QSL-*), the FIFO property, and the
//! lock-word / `KLOCK_QUEUE_HANDLE` contents the Windows protocol prescribes.

use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use ntspin::queued::{LOCK_QUEUE_OWNER, LOCK_QUEUE_WAIT};
use ntspin::{
    BugCheck, Irql, LockQueueHandle, QueuedSpinLock, RawSpinLock, Rule, SpinLock, current_irql,
    lower_irql, raise_irql, release_in_stack_queued, release_in_stack_queued_from_dpc_level,
};
use ntspin_sim::Machine;

fn dirql(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

/// The correct use: acquire and release once, then again with the same handle.
fn correct_acquire_release(m: &Machine, lock: &RawSpinLock) {
    m.run_on(0, || {
        let mut h = LockQueueHandle::new();
        for _ in 0..2 {
            // SAFETY: `h` stays on this frame until released just below.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            // SAFETY: acquired just above.
            unsafe { release_in_stack_queued(&mut h) };
        }
        assert_eq!(current_irql(), Irql::PASSIVE);
    })
    .unwrap();
}

#[test]
fn qsl_acq_irql_acquire_above_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = QueuedSpinLock::new(0);
    m.run_on(0, || {
        let old = raise_irql(Irql::DISPATCH);
        let mut h = pin!(LockQueueHandle::new());
        *lock.lock(h.as_mut()) += 1; // at DISPATCH is allowed
        lower_irql(old);
    })
    .unwrap();
    let err = m
        .run_on(0, || {
            raise_irql(dirql(6));
            let mut h = pin!(LockQueueHandle::new());
            let _g = lock.lock(h.as_mut());
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x42, 6, lock.raw().addr(), 0, Rule::QSL_ACQ_IRQL)
    );
}

#[test]
fn qsl_atdpc_irql_acquire_below_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    // Correct: at DISPATCH.
    m.run_on(0, || {
        let old = raise_irql(Irql::DISPATCH);
        let mut h = LockQueueHandle::new();
        // SAFETY: `h` stays on this frame until released just below.
        unsafe { lock.acquire_in_stack_queued_at_dpc_level(&mut h) };
        // SAFETY: acquired just above.
        unsafe { release_in_stack_queued_from_dpc_level(&mut h) };
        lower_irql(old);
    })
    .unwrap();
    let err = m
        .run_on(0, || {
            let mut h = LockQueueHandle::new();
            // SAFETY: `h` stays on this frame until the machine stops the routine.
            unsafe { lock.acquire_in_stack_queued_at_dpc_level(&mut h) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x40, 0, lock.addr(), 0, Rule::QSL_ATDPC_IRQL)
    );
}

#[test]
fn qsl_rel_irql_release_not_at_dispatch_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    correct_acquire_release(&m, &lock);
    let err = m
        .run_on(0, || {
            let mut h = LockQueueHandle::new();
            // SAFETY: `h` stays on this frame until released or the routine is stopped.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            raise_irql(dirql(3));
            // SAFETY: acquired above; releasing at DIRQL is the deliberate bug.
            unsafe { release_in_stack_queued(&mut h) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x32, 3, lock.addr(), 0, Rule::QSL_REL_IRQL)
    );

    // FromDpcLevel below DISPATCH (a second release, after the IRQL came back down). The
    // first machine has bug-checked (it stays stopped, as Windows does): use a new one.
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            let mut h = LockQueueHandle::new();
            // SAFETY: as above.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            // SAFETY: acquired above.
            unsafe { release_in_stack_queued(&mut h) };
            // SAFETY: deliberately wrong: released already, now at PASSIVE.
            unsafe { release_in_stack_queued_from_dpc_level(&mut h) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x41, 0, lock.addr(), 0, Rule::QSL_REL_IRQL)
    );
}

#[test]
fn qsl_handle_reused_while_held_bugchecks() {
    let m = Machine::new(1);
    let a = RawSpinLock::new();
    let b = RawSpinLock::new();
    // Correct: the same handle for `a`, then, once released, for `b`.
    m.run_on(0, || {
        let mut h = LockQueueHandle::new();
        for lock in [&a, &b] {
            // SAFETY: `h` stays on this frame until released just below.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            // SAFETY: acquired just above.
            unsafe { release_in_stack_queued(&mut h) };
        }
    })
    .unwrap();
    let (err, handle) = {
        let handle = AtomicUsize::new(0);
        let err = m
            .run_on(0, || {
                let mut h = LockQueueHandle::new();
                handle.store(&raw const h as usize, SeqCst);
                // SAFETY: `h` stays on this frame until the machine stops the routine.
                unsafe { a.acquire_in_stack_queued(&mut h) };
                // SAFETY: deliberately wrong: `h` is still the owner entry for `a`.
                unsafe { b.acquire_in_stack_queued_at_dpc_level(&mut h) };
            })
            .unwrap_err();
        (err, handle.load(SeqCst))
    };
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x1009, b.addr(), handle, 0, Rule::QSL_HANDLE)
    );
}

#[test]
fn qsl_handle_of_a_leaked_guard_is_refused_in_safe_code() {
    let lock = QueuedSpinLock::new(0);
    let err = ntspin_sim::catch_bug_check(|| {
        let mut h = pin!(LockQueueHandle::new());
        let addr = &*h as *const LockQueueHandle as usize;
        std::mem::forget(lock.lock(h.as_mut()));
        let _again = lock.lock(h.as_mut()); // would corrupt the queue: refused
        addr
    });
    let err = err.unwrap_err();
    assert_eq!(err.bug.rule, Rule::QSL_HANDLE);
    assert_eq!(err.bug.params[..2], [0x1009, lock.raw().addr()]);
    // The handle's Drop released what the leaked guard owned: the lock is usable again.
    assert!(lock.raw().test());
    let mut h = pin!(LockQueueHandle::new());
    assert_eq!(*lock.lock(h.as_mut()), 0);
}

#[test]
fn qsl_recurse_bugchecks() {
    let m = Machine::new(1);
    let lock = QueuedSpinLock::new(());
    // Correct: two different queued locks nested, each with its own handle.
    let other = QueuedSpinLock::new(());
    m.run_on(0, || {
        let mut h1 = pin!(LockQueueHandle::new());
        let mut h2 = pin!(LockQueueHandle::new());
        let g1 = lock.lock(h1.as_mut());
        let g2 = other.lock_at_dpc_level(h2.as_mut(), g1.dpc_level());
        drop(g2);
        drop(g1);
    })
    .unwrap();
    let err = m
        .run_on(0, || {
            let mut h1 = pin!(LockQueueHandle::new());
            let mut h2 = pin!(LockQueueHandle::new());
            let _g1 = lock.lock(h1.as_mut());
            let _g2 = lock.lock(h2.as_mut());
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x0F, [lock.raw().addr(), 0, 0, 0], Rule::QSL_RECURSE)
    );
}

#[test]
fn qsl_not_owned_release_of_unacquired_handle_bugchecks() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    correct_acquire_release(&m, &lock);
    let err = m
        .run_on(0, || {
            let mut h = LockQueueHandle::new();
            // SAFETY: `h` stays on this frame until released below.
            unsafe { lock.acquire_in_stack_queued(&mut h) };
            // SAFETY: acquired above.
            unsafe { release_in_stack_queued(&mut h) };
            raise_irql(Irql::DISPATCH);
            // SAFETY: deliberately wrong: the handle owns nothing any more.
            unsafe { release_in_stack_queued(&mut h) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x10, [lock.addr(), 0, 0, 0], Rule::SL_NOT_OWNED)
    );
}

#[test]
fn queued_protocol_word_and_handle_contents() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let l = lock.addr();
    // Handles live in this frame; processors reach them by address (they are !Send).
    let mut h0 = LockQueueHandle::new();
    let mut h1 = LockQueueHandle::new();
    let (a0, a1) = (&raw mut h0 as usize, &raw mut h1 as usize);
    let stage = AtomicUsize::new(0);
    let seen = Mutex::new(Vec::new());
    let handle = |a: usize| {
        // SAFETY: both handles outlive the machine run; fields are read atomically.
        unsafe { &*(a as *const LockQueueHandle) }
    };
    let results = m.run_each(|cpu| {
        let wait = |s| {
            while stage.load(SeqCst) != s {
                std::thread::yield_now();
            }
        };
        if cpu == 0 {
            // SAFETY: h0 outlives the run and is used by this processor only.
            unsafe { lock.acquire_in_stack_queued(a0 as *mut LockQueueHandle) };
            let h = handle(a0);
            seen.lock().unwrap().push((
                "owner alone",
                lock.word(),
                h.lock_queue().lock_field(),
                h.lock_queue().next() as usize,
                h.old_irql(),
            ));
            stage.store(1, SeqCst);
            // Wait until processor 1 is queued behind us and linked.
            while h.lock_queue().next().is_null() {
                std::thread::yield_now();
            }
            let w = handle(a1);
            seen.lock().unwrap().push((
                "waiter",
                lock.word(),
                w.lock_queue().lock_field(),
                h.lock_queue().next() as usize,
                w.old_irql(),
            ));
            // SAFETY: acquired above on this processor.
            unsafe { release_in_stack_queued(a0 as *mut LockQueueHandle) };
            seen.lock().unwrap().push((
                "after handoff",
                lock.word(),
                h.lock_queue().lock_field(),
                0,
                h.old_irql(),
            ));
            stage.store(2, SeqCst);
        } else {
            wait(1);
            raise_irql(Irql::APC);
            // SAFETY: h1 outlives the run and is used by this processor only.
            unsafe { lock.acquire_in_stack_queued(a1 as *mut LockQueueHandle) };
            wait(2);
            let h = handle(a1);
            seen.lock().unwrap().push((
                "new owner",
                lock.word(),
                h.lock_queue().lock_field(),
                h.lock_queue().next() as usize,
                h.old_irql(),
            ));
            // SAFETY: acquired above on this processor.
            unsafe { release_in_stack_queued(a1 as *mut LockQueueHandle) };
            seen.lock().unwrap().push((
                "free",
                lock.word(),
                h.lock_queue().lock_field(),
                0,
                current_irql(),
            ));
            lower_irql(Irql::PASSIVE);
        }
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen,
        [
            ("owner alone", a0, l | LOCK_QUEUE_OWNER, 0, Irql::PASSIVE),
            ("waiter", a1, l | LOCK_QUEUE_WAIT, a1, Irql::APC),
            ("after handoff", a1, l, 0, Irql::PASSIVE),
            ("new owner", a1, l | LOCK_QUEUE_OWNER, 0, Irql::APC),
            ("free", 0, l, 0, Irql::APC),
        ]
    );
}

#[test]
fn qsl_fifo_waiters_are_granted_in_arrival_order() {
    const WAITERS: usize = 3;
    let m = Machine::new(WAITERS + 1);
    let lock = QueuedSpinLock::new(Vec::new());
    let held = AtomicBool::new(false);
    // tail[k]: the lock word just before waiter k swapped in (0 = not yet).
    let tail: [AtomicUsize; WAITERS + 1] = std::array::from_fn(|_| AtomicUsize::new(0));
    let queued_behind = |k: usize| {
        // Waiter k is queued once the word moved past what it saw.
        let t = tail[k].load(SeqCst);
        t != 0 && lock.raw().word() != t
    };
    let results = m.run_each(|cpu| {
        let mut h = pin!(LockQueueHandle::new());
        if cpu == 0 {
            let mut g = lock.lock(h.as_mut());
            held.store(true, SeqCst);
            while !queued_behind(WAITERS) {
                std::thread::yield_now();
            }
            g.push(0);
        } else {
            while !(if cpu == 1 {
                held.load(SeqCst)
            } else {
                queued_behind(cpu - 1)
            }) {
                std::thread::yield_now();
            }
            tail[cpu].store(lock.raw().word(), SeqCst);
            lock.lock(h.as_mut()).push(cpu);
        }
    });
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        *lock.lock(pin!(LockQueueHandle::new()).as_mut()),
        [0, 1, 2, 3]
    );
}

#[test]
fn queued_lock_nests_inside_an_executive_lock() {
    let outer = SpinLock::new(1);
    let inner = QueuedSpinLock::new(2);
    let g = outer.lock();
    let mut h = pin!(LockQueueHandle::new());
    let gi = inner.lock_at_dpc_level(h.as_mut(), g.dpc_level());
    assert_eq!(*g + *gi, 3);
    drop(gi);
    assert_eq!(current_irql(), Irql::DISPATCH);
    drop(g);
    assert_eq!(current_irql(), Irql::PASSIVE);
}

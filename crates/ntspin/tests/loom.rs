//! Model checks of the lock protocols under `loom`: every interleaving (up to loom's
//! bounds) of 2-3 threads on the real `RawSpinLock` code.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ntspin --release --test loom`.
//!
//! The HAL here is a minimal one for the model: IRQL in a loom thread-local, no verifier.
//! The atomics inside the locks are loom's (through `ntspin::sync`), so loom sees every
//! access and every spin (the spin hint is a loom yield).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

use ntspin::{BugCheck, Irql, LockQueueHandle, RawSpinLock, release_in_stack_queued};

loom::thread_local! {
    static IRQL: std::cell::Cell<Irql> = std::cell::Cell::new(Irql::PASSIVE);
}

struct ModelHal;

impl ntspin::Hal for ModelHal {
    fn current_irql() -> Irql {
        IRQL.with(|i| i.get())
    }
    fn raise_irql(new: Irql) -> Irql {
        let old = IRQL.with(|i| i.replace(new));
        assert!(new >= old, "raise to a lower level in the model");
        old
    }
    fn lower_irql(new: Irql) {
        let old = IRQL.with(|i| i.replace(new));
        assert!(new <= old, "lower to a higher level in the model");
    }
    fn current_processor() -> u32 {
        0
    }
    fn lock_owner_tag() -> usize {
        1
    }
    fn spin_wait(_spins: u32, _wait: ntspin::hal::SpinWait) {}
    fn lock_event(_event: &ntspin::hal::LockEvent) {}
    fn bug_check(bug: BugCheck) -> ! {
        panic!("bug check in the model: {bug}")
    }
}

ntspin::set_hal!(ModelHal);

/// Data whose every access loom tracks: a racing access fails the model.
struct Shared {
    lock: RawSpinLock,
    data: UnsafeCell<usize>,
}

// SAFETY: `data` is only touched while `lock` is held (that is what the model checks).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

fn ordinary_increment(s: &Shared) {
    let old = s.lock.acquire();
    assert_eq!(ntspin::current_irql(), Irql::DISPATCH);
    // SAFETY: the lock is held, so this is the only access (loom verifies it).
    s.data.with_mut(|p| unsafe { *p += 1 });
    // SAFETY: acquired above on this thread.
    unsafe { s.lock.release(old) };
    assert_eq!(ntspin::current_irql(), old);
}

fn queued_increment(s: &Shared) {
    let mut h = LockQueueHandle::new();
    // SAFETY: `h` lives on this frame until the release below.
    unsafe { s.lock.acquire_in_stack_queued(&mut h) };
    // SAFETY: the lock is held (loom verifies exclusivity).
    s.data.with_mut(|p| unsafe { *p += 1 });
    // SAFETY: acquired above on this thread.
    unsafe { release_in_stack_queued(&mut h) };
    assert_eq!(ntspin::current_irql(), Irql::PASSIVE);
}

/// Three threads explode the state space; bound the preemptions (loom's advice) and allow
/// the longer executions spin loops produce.
fn three_thread_model() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 200_000;
    b
}

fn new_shared() -> Arc<Shared> {
    Arc::new(Shared {
        lock: RawSpinLock::new(),
        data: UnsafeCell::new(0),
    })
}

fn total(s: &Shared) -> usize {
    // SAFETY: every other thread has been joined.
    s.data.with(|p| unsafe { *p })
}

#[test]
fn ordinary_lock_mutual_exclusion_two_threads() {
    loom::model(|| {
        let s = new_shared();
        let t = {
            let s = s.clone();
            thread::spawn(move || ordinary_increment(&s))
        };
        ordinary_increment(&s);
        t.join().unwrap();
        assert_eq!(total(&s), 2);
        assert_eq!(s.lock.word(), 0);
    });
}

#[test]
fn ordinary_lock_mutual_exclusion_three_threads() {
    // Test-and-test-and-set spinners re-read the word on every schedule; one preemption
    // keeps three of them tractable.
    let mut b = three_thread_model();
    b.preemption_bound = Some(1);
    b.check(|| {
        let s = new_shared();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || ordinary_increment(&s))
            })
            .collect();
        ordinary_increment(&s);
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(total(&s), 3);
    });
}

#[test]
fn ordinary_try_acquire_never_enters_a_held_lock() {
    loom::model(|| {
        let s = new_shared();
        let t = {
            let s = s.clone();
            thread::spawn(move || ordinary_increment(&s))
        };
        let old = ntspin::raise_irql_to_dpc_level();
        if s.lock.try_acquire_at_dpc_level() {
            // SAFETY: the lock is held.
            s.data.with_mut(|p| unsafe { *p += 10 });
            // SAFETY: acquired above.
            unsafe { s.lock.release_from_dpc_level() };
        }
        ntspin::lower_irql(old);
        t.join().unwrap();
        let n = total(&s);
        assert!(n == 1 || n == 11, "{n}");
    });
}

/// Two threads: covers the hand-over and the release race where the successor has
/// swapped itself in but not yet linked (`wait_for_successor`).
#[test]
fn queued_lock_mutual_exclusion_and_handoff_two_threads() {
    loom::model(|| {
        let s = new_shared();
        let t = {
            let s = s.clone();
            thread::spawn(move || queued_increment(&s))
        };
        queued_increment(&s);
        t.join().unwrap();
        assert_eq!(total(&s), 2);
        assert_eq!(s.lock.word(), 0, "free after both released");
    });
}

#[test]
fn queued_lock_mutual_exclusion_three_threads() {
    let b = three_thread_model();
    b.check(|| {
        let s = new_shared();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || queued_increment(&s))
            })
            .collect();
        queued_increment(&s);
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(total(&s), 3);
        assert_eq!(s.lock.word(), 0);
    });
}

/// QSL-FIFO: the main thread holds the lock; waiter 1 swaps in, then waiter 2; whatever the
/// interleaving after that, 1 is granted before 2.
#[test]
fn queued_lock_grants_in_arrival_order() {
    // The waits that force the arrival order are themselves spin loops; one preemption
    // keeps the model to minutes while still exploring every grant interleaving after it.
    let mut b = three_thread_model();
    b.preemption_bound = Some(1);
    b.check(|| {
        let s = new_shared();
        let order = Arc::new(AtomicUsize::new(0)); // digits appended in grant order
        let entry1 = Arc::new(AtomicUsize::new(0));
        let mut h0 = LockQueueHandle::new();
        // SAFETY: `h0` lives until released below.
        unsafe { s.lock.acquire_in_stack_queued(&mut h0) };
        let waiter =
            |id: usize, after: Option<Arc<AtomicUsize>>, publish: Option<Arc<AtomicUsize>>| {
                let s = s.clone();
                let order = order.clone();
                thread::spawn(move || {
                    let mut h = LockQueueHandle::new();
                    let me = &raw const h as usize;
                    if let Some(after) = after {
                        // Wait until waiter 1 is the tail: it arrived first.
                        while s.lock.word() != after.load(SeqCst) || after.load(SeqCst) == 0 {
                            thread::yield_now();
                        }
                    }
                    if let Some(p) = publish {
                        p.store(me, SeqCst);
                    }
                    // SAFETY: `h` lives until released below.
                    unsafe { s.lock.acquire_in_stack_queued(&mut h) };
                    let o = order.load(SeqCst);
                    order.store(o * 10 + id, SeqCst);
                    // SAFETY: acquired above.
                    unsafe { release_in_stack_queued(&mut h) };
                })
            };
        let t1 = waiter(1, None, Some(entry1.clone()));
        let t2 = waiter(2, Some(entry1.clone()), None);
        // Release only once both are queued (the tail is no longer waiter 1's entry or ours).
        loop {
            let w = s.lock.word();
            let e1 = entry1.load(SeqCst);
            if e1 != 0 && w != e1 && w != &raw const h0 as usize {
                break;
            }
            thread::yield_now();
        }
        // SAFETY: acquired above on this thread.
        unsafe { release_in_stack_queued(&mut h0) };
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(order.load(SeqCst), 12);
    });
}

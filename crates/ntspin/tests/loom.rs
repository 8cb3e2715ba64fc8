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

use ntspin::hal::Prcb;
use ntspin::{BugCheck, Irql, LockQueueHandle, RawSpinLock, release_in_stack_queued};

loom::thread_local! {
    // One control block per model thread (leaked: a few bytes per explored execution).
    static PRCB: &'static Prcb = Box::leak(Box::new(Prcb::new(1)));
}

struct ModelHal;

impl ntspin::Hal for ModelHal {
    fn current_prcb() -> &'static Prcb {
        PRCB.with(|p| *p)
    }
    fn current_irql() -> Irql {
        Self::current_prcb().irql()
    }
    fn raise_irql(new: Irql) -> Irql {
        let prcb = Self::current_prcb();
        let old = prcb.irql();
        assert!(new >= old, "raise to a lower level in the model");
        prcb.set_irql(new);
        old
    }
    fn lower_irql(new: Irql) {
        let prcb = Self::current_prcb();
        assert!(new <= prcb.irql(), "lower to a higher level in the model");
        prcb.set_irql(new);
    }
    fn current_processor() -> u32 {
        0
    }
    fn spin_wait(_spins: u32, _wait: ntspin::hal::SpinWait) {}
    fn lock_event(_event: &ntspin::hal::LockEvent) {}
    fn bug_check(bug: BugCheck) -> ! {
        panic!("bug check in the model: {bug}")
    }
    // The models cover the lock protocols and the DPC queue: no interrupts or waits happen
    // in them, and each of those says so if one ever does. A DPC lands on the inserting
    // thread's own queue (there is no processor numbering), which the model drains itself.
    fn prcb_of(_processor: u32) -> Option<&'static Prcb> {
        None
    }
    fn request_dpc(_target: &'static Prcb) {}
    fn disable_interrupts() -> bool {
        true
    }
    fn restore_interrupts(_enabled: bool) {}
    unsafe fn connect_interrupt(
        _obj: core::ptr::NonNull<ntspin::interrupt::KInterrupt>,
    ) -> Result<(), ntspin::NtStatus> {
        Err(ntspin::NtStatus::NOT_SUPPORTED)
    }
    fn disconnect_interrupt(_obj: core::ptr::NonNull<ntspin::interrupt::KInterrupt>) {}
    fn wait_on(_word: &ntspin::sync::AtomicU32, _expected: u32, _timeout_ns: Option<u64>) -> bool {
        panic!("the loom models do not wait on events")
    }
    fn wake(_word: &ntspin::sync::AtomicU32, _count: u32) {}
    unsafe fn queue_work_item(_item: core::ptr::NonNull<ntspin::workitem::KWorkItem>) {
        unreachable!("the loom models queue no work items")
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
    // Test-and-test-and-set spinners re-read the word at every schedule point, which with
    // three threads and two preemptions runs for hours; one preemption runs in seconds. The
    // two-thread model above is unbounded.
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

/// Queue entries that outlive the threads using them, so the links can be read afterwards.
struct Entries([LockQueueHandle; 3]);
// SAFETY: each entry is used by one thread at a time (its acquirer), and read by the main
// thread only after every other thread has been joined.
unsafe impl Send for Entries {}
// SAFETY: as above.
unsafe impl Sync for Entries {}

/// QSL-FIFO: grants follow the queue's links. The main thread holds the lock while two
/// waiters enqueue in whatever order loom picks (and the main thread releases at whatever
/// point); afterwards, for every link `P.Next == S` the queue formed, P was granted before
/// S. No waits in the model other than the lock's own, so loom explores it exhaustively.
#[test]
fn queued_lock_grants_in_link_order() {
    let b = three_thread_model();
    b.check(|| {
        let s = new_shared();
        let entries = Arc::new(Entries([
            LockQueueHandle::new(),
            LockQueueHandle::new(),
            LockQueueHandle::new(),
        ]));
        let order = Arc::new(AtomicUsize::new(0)); // digits appended in grant order
        let entry = |i: usize| &entries.0[i] as *const LockQueueHandle as *mut LockQueueHandle;
        // SAFETY: entry 0 is used only by this thread until released below.
        unsafe { s.lock.acquire_in_stack_queued(entry(0)) };
        let waiters: Vec<_> = (1..3)
            .map(|id| {
                let (s, order, entries) = (s.clone(), order.clone(), entries.clone());
                thread::spawn(move || {
                    let h = &entries.0[id] as *const LockQueueHandle as *mut LockQueueHandle;
                    // SAFETY: entry `id` is used only by this thread; it outlives the thread.
                    unsafe { s.lock.acquire_in_stack_queued(h) };
                    let o = order.load(SeqCst);
                    order.store(o * 10 + id, SeqCst);
                    // SAFETY: acquired above.
                    unsafe { release_in_stack_queued(h) };
                })
            })
            .collect();
        // SAFETY: acquired above on this thread.
        unsafe { release_in_stack_queued(entry(0)) };
        waiters.into_iter().for_each(|t| t.join().unwrap());
        let order = order.load(SeqCst);
        let granted = [0, order / 10, order % 10]; // main first, then the two waiters
        let rank = |id: usize| granted.iter().position(|&g| g == id).unwrap();
        for p in 0..3 {
            let next = entries.0[p].lock_queue().next() as usize;
            for q in 1..3 {
                if next == entry(q) as usize {
                    assert!(
                        rank(p) < rank(q),
                        "entry {q} was linked behind {p} but granted first"
                    );
                }
            }
        }
        assert!(order == 12 || order == 21, "{order}");
        assert_eq!(s.lock.word(), 0);
    });
}

/// `KeInsertQueueDpc` / `KeRemoveQueueDpc` against a drain running at the same time: a DPC
/// that is removed does not run for that insertion, one inserted again after its removal
/// (while possibly still linked on the queue) runs exactly once with the new arguments,
/// and the queue is never corrupted (every queue drains empty).
#[test]
fn dpc_insert_remove_and_drain_run_each_standing_insertion_once() {
    use std::pin::Pin;
    loom::model(|| {
        let runs = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(AtomicUsize::new(0));
        let (r, l) = (Arc::clone(&runs), Arc::clone(&last));
        let dpc = Arc::new(ntspin::dpc::Dpc::new(move |_, a1, _| {
            r.fetch_add(1, SeqCst);
            l.store(a1, SeqCst);
        }));
        // SAFETY: the DPC lives in an `Arc` that is dropped only after every queue holding
        // it has been drained, and is never moved out of it (the same for the pin below).
        let pinned = unsafe { Pin::new_unchecked(&*dpc) };
        assert!(pinned.queue(1, 0)); // on this thread's queue
        let d2 = Arc::clone(&dpc);
        let t = thread::spawn(move || {
            // SAFETY: as above.
            let pinned = unsafe { Pin::new_unchecked(&*d2) };
            let removed = d2.raw().remove();
            let reinserted = removed && pinned.queue(2, 0);
            let prcb: &'static Prcb = <ModelHal as ntspin::Hal>::current_prcb();
            (removed, reinserted, prcb)
        });
        let mine: &'static Prcb = <ModelHal as ntspin::Hal>::current_prcb();
        ntspin::dpc::drain(mine, |_, run| run());
        let (removed, reinserted, theirs) = t.join().unwrap();
        ntspin::dpc::drain(mine, |_, run| run());
        ntspin::dpc::drain(theirs, |_, run| run());
        assert_eq!(runs.load(SeqCst), 1, "removed={removed}");
        if removed {
            assert!(reinserted, "a removed DPC can be inserted again");
            assert_eq!(last.load(SeqCst), 2);
        } else {
            assert_eq!(last.load(SeqCst), 1);
        }
        assert!(!dpc.raw().is_queued());
    });
}

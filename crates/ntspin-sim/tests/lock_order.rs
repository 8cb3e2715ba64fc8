//! The lock-order verifier (SL-ORDER, LD-IRQ): inversions are reported from a run in which
//! nothing deadlocked, with the cycle or the two IRQLs named; consistent orders and
//! try-acquires are not reported.

use std::pin::pin;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use ntspin::interlocked::{ListEntry, ex_interlocked_insert_tail_list, initialize_list_head};
use ntspin::interrupt::{Interrupt, InterruptConfig};
use ntspin::{BugCheck, Irql, RawSpinLock, Rule, SpinLock};
use ntspin_sim::{LockOrder, Machine, ReportDetail, Verifier};

mod common;
use common::{bug_check_of, eventually};

fn sl_order(lock: usize) -> BugCheck {
    BugCheck::verifier(0x1001, lock, 0, 0, Rule::SL_ORDER)
}

fn ld_irq(lock: usize) -> BugCheck {
    BugCheck::verifier(0x1001, lock, 0, 1, Rule::LD_IRQ)
}

/// Takes `outer` then `inner` (nested), as a driver path would.
fn nested(outer: &SpinLock<u32>, inner: &SpinLock<u32>) {
    let go = outer.lock();
    let mut gi = inner.lock_at_dpc_level(go.dpc_level());
    *gi += 1;
}

fn cycle_of(report: &ntspin_sim::BugCheckReport) -> Vec<(usize, usize, u32)> {
    let edges = report
        .details
        .iter()
        .find_map(|d| match d {
            ReportDetail::LockOrderCycle { edges } => Some(edges),
            _ => None,
        })
        .expect("an SL-ORDER report shows its cycle");
    edges
        .iter()
        .map(|e| (e.held.lock, e.taken.lock, e.taken.processor))
        .collect()
}

#[test]
fn sl_order_ab_ba_on_two_processors_is_reported_although_nothing_deadlocked() {
    let m = Machine::new(2);
    let a = SpinLock::new(0);
    let b = SpinLock::new(0);
    // Processor 0 runs A→B to completion; only then does processor 1 run B→A. No deadlock
    // can happen in this run, yet the order is inconsistent.
    m.run_on(0, || nested(&a, &b)).unwrap();
    let err = m.run_on(1, || nested(&b, &a)).unwrap_err();
    let (a_addr, b_addr) = (a.raw().addr(), b.raw().addr());
    assert_eq!(err.bug, sl_order(a_addr));
    assert_eq!(err.processor, 1);
    assert_eq!(cycle_of(&err), [(a_addr, b_addr, 0), (b_addr, a_addr, 1)]);
    // The report names where each acquisition was made (this file) and what processor 1
    // held: B, and A still being acquired.
    let text = err.to_string();
    assert!(text.contains("LOCK-ORDER CYCLE (2 locks"), "{text}");
    assert!(text.contains("tests/lock_order.rs"), "{text}");
    let held: Vec<(usize, bool)> = err.held.iter().map(|h| (h.lock, h.acquiring)).collect();
    assert_eq!(held, [(b_addr, false), (a_addr, true)]);
    // Nothing was lost: the first routine's update stands.
    assert_eq!(*b.lock(), 1);
}

#[test]
fn sl_order_class_mode_finds_an_inversion_across_two_instances() {
    struct Device {
        state: SpinLock<u32>,
        queue: SpinLock<u32>,
    }
    fn device() -> Device {
        Device {
            state: SpinLock::new(0),
            queue: SpinLock::new(0),
        }
    }
    let (d1, d2) = (device(), device());
    let run = |order: LockOrder| {
        let m = Machine::builder().processors(2).lock_order(order).build();
        m.run_on(0, || nested(&d1.state, &d1.queue)).unwrap();
        m.run_on(1, || nested(&d2.queue, &d2.state))
    };
    // By instance, d1's and d2's locks are four unrelated locks.
    run(LockOrder::default()).unwrap();
    // By class ("the state lock of a Device" / "the queue lock"), it is an inversion.
    let classes = LockOrder {
        classes: true,
        ..LockOrder::default()
    };
    let err = run(classes).unwrap_err();
    assert_eq!(err.bug, sl_order(d2.state.raw().addr()));
    let edges = cycle_of(&err);
    assert_eq!(
        edges,
        [
            (d1.state.raw().addr(), d1.queue.raw().addr(), 0),
            (d2.queue.raw().addr(), d2.state.raw().addr(), 1)
        ]
    );
    let ReportDetail::LockOrderCycle { edges } = &err.details[0] else {
        panic!("{err}")
    };
    assert_eq!(
        edges[0].held.class.as_deref(),
        Some(d1.state.class().to_string().as_str())
    );
}

#[test]
fn sl_order_a_three_lock_cycle_is_reported_with_all_three_edges() {
    let m = Machine::new(3);
    let (a, b, c) = (SpinLock::new(0), SpinLock::new(0), SpinLock::new(0));
    m.run_on(0, || nested(&a, &b)).unwrap();
    m.run_on(1, || nested(&b, &c)).unwrap();
    let err = m.run_on(2, || nested(&c, &a)).unwrap_err();
    let (pa, pb, pc) = (a.raw().addr(), b.raw().addr(), c.raw().addr());
    assert_eq!(err.bug, sl_order(pa));
    assert_eq!(cycle_of(&err), [(pa, pb, 0), (pb, pc, 1), (pc, pa, 2)]);
}

#[test]
fn consistent_nesting_on_every_processor_is_never_reported() {
    let m = Machine::new(4);
    let (a, b, c) = (SpinLock::new(0), SpinLock::new(0), SpinLock::new(0));
    let results = m.run_each(|_| {
        for _ in 0..2_000 {
            let ga = a.lock();
            let gb = b.lock_at_dpc_level(ga.dpc_level());
            let mut gc = c.lock_at_dpc_level(ga.dpc_level());
            *gc += 1;
            drop(gb);
            drop(gc);
            // A and C alone, in the same order.
            let _gc = c.lock_at_dpc_level(ga.dpc_level());
        }
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(*c.lock(), 8_000);
    let stats = m.lock_order_stats().unwrap();
    // A→B, A→C, B→C.
    assert_eq!((stats.locks, stats.edges), (3, 3));
    assert!(!stats.capped);
}

#[test]
fn a_try_acquire_adds_no_order_edge() {
    let m = Machine::new(1);
    let (a, b) = (SpinLock::new(0), SpinLock::new(0));
    m.run_on(0, || {
        // B held, A only *tried*: a try never waits, so it cannot deadlock.
        let gb = b.lock();
        let ga = a.try_lock_at_dpc_level(gb.dpc_level()).expect("free");
        drop(ga);
        drop(gb);
        // A→B for real: no cycle, because B→A was never an edge.
        nested(&a, &b);
    })
    .unwrap();
    assert_eq!(m.lock_order_stats().unwrap().edges, 1);
}

#[test]
fn locks_dropped_and_rebuilt_at_the_same_addresses_start_clean() {
    // Each call's two locks live in the same stack slots; the second call nests them the
    // other way round. They are new locks, so there is no inversion.
    fn pair(reverse: bool) {
        let first = SpinLock::new(0);
        let second = SpinLock::new(0);
        if reverse {
            nested(&second, &first);
        } else {
            nested(&first, &second);
        }
    }
    let m = Machine::new(1);
    m.run_on(0, || {
        for i in 0..10 {
            pair(i % 2 == 1);
        }
    })
    .unwrap();
    assert_eq!(
        m.lock_order_stats().unwrap().locks,
        0,
        "dropped locks leave"
    );
}

#[test]
fn lock_order_can_be_switched_off_alone() {
    let m = Machine::builder()
        .processors(1)
        .lock_order(LockOrder::off())
        .build();
    let (a, b) = (SpinLock::new(0), SpinLock::new(0));
    m.run_on(0, || {
        nested(&a, &b);
        nested(&b, &a);
    })
    .unwrap();
    assert!(m.lock_order_stats().is_none());
    // The rest of the standard verifier is still on.
    let err = m
        .run_on(0, || {
            let _g = a.lock();
            let _again = a.lock();
        })
        .unwrap_err();
    assert_eq!(err.bug.rule, Rule::SL_RECURSE);
}

#[test]
fn continue_mode_records_the_inversion_and_goes_on() {
    let m = Machine::builder()
        .processors(2)
        .verifier(Verifier::StandardContinue)
        .build();
    let (a, b) = (SpinLock::new(0), SpinLock::new(0));
    m.run_on(0, || nested(&a, &b)).unwrap();
    assert_eq!(m.run_on(1, || nested(&b, &a)).unwrap(), ());
    assert_eq!(*a.lock() + *b.lock(), 2);
    let dumps = m.live_dumps();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert_eq!(
        dumps[0].bug,
        sl_order(a.raw().addr()).as_live_dump(),
        "0x1C4, same parameters"
    );
    assert_eq!(cycle_of(&dumps[0]).len(), 2);
    // Once recorded, the same inversion is not recorded again.
    m.run_on(1, || nested(&b, &a)).unwrap();
    assert_eq!(m.live_dumps().len(), 1);
}

#[test]
fn ld_irq_a_lock_taken_by_an_isr_and_held_at_dispatch_elsewhere() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let isrs = AtomicU32::new(0);
    // The thread side first: held at DISPATCH.
    m.run_on(0, || {
        let old = lock.acquire();
        // SAFETY: acquired just above.
        unsafe { lock.release(old) };
    })
    .unwrap();
    let r = m.run_on(0, || {
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(4, Irql::new(7).unwrap())
        };
        let intr = pin!(Interrupt::new(cfg, || {
            // At DIRQL 7: "AtDpcLevel" is legal above DISPATCH, but this lock is also held
            // at DISPATCH with interrupts enabled: the ISR can interrupt that holder.
            lock.acquire_at_dpc_level();
            // SAFETY: acquired just above.
            unsafe { lock.release_from_dpc_level() };
            isrs.fetch_add(1, Relaxed);
            true
        }));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(4);
        eventually("the ISR", || isrs.load(Relaxed) == 1);
        intr.disconnect();
    });
    // Found in interrupt context, judged at the next verifier call in thread context.
    let err = match r {
        Err(e) => e,
        Ok(()) => bug_check_of(&m),
    };
    assert_eq!(err.bug, ld_irq(lock.addr()));
    let (high, low) = err
        .details
        .iter()
        .find_map(|d| match d {
            ReportDetail::IrqlInversion { high, low, .. } => Some((high.clone(), low.clone())),
            _ => None,
        })
        .expect("the two levels");
    assert_eq!((high.irql, high.processor), (7, 1));
    assert_eq!((low.irql, low.processor), (2, 0));
}

#[test]
fn ld_irq_exinterlocked_from_an_isr_and_ke_acquire_spin_lock_on_the_same_lock() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let done = AtomicU32::new(0);
    let r = m.run_on(0, || {
        let mut head = ListEntry::new();
        let mut entry = ListEntry::new();
        // SAFETY: the list and entry live on this frame until the interrupt is
        // disconnected below; every access goes through `lock`.
        unsafe { initialize_list_head(&mut head) };
        let (h, e) = (
            &mut head as *mut ListEntry as usize,
            &mut entry as *mut ListEntry as usize,
        );
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(3, Irql::new(6).unwrap())
        };
        let intr = pin!(Interrupt::new(cfg, || {
            // SAFETY: see above.
            unsafe {
                ex_interlocked_insert_tail_list(h as *mut ListEntry, e as *mut ListEntry, &lock)
            };
            done.fetch_add(1, Relaxed);
            true
        }));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(3);
        eventually("the ISR", || done.load(Relaxed) == 1);
        intr.disconnect();
        // The same lock with KeAcquireSpinLock: held at DISPATCH, interruptible by that
        // ISR on this processor. EXI-LOCK is judged as LD-IRQ.
        let old = lock.acquire();
        // SAFETY: acquired just above.
        unsafe { lock.release(old) };
    });
    let err = r.expect_err("LD-IRQ");
    assert_eq!(err.bug, ld_irq(lock.addr()));
}

#[test]
fn exinterlocked_used_only_by_exinterlocked_routines_at_any_irql_is_fine() {
    let m = Machine::new(1);
    let lock = RawSpinLock::new();
    m.run_on(0, || {
        let mut head = ListEntry::new();
        let mut e1 = ListEntry::new();
        let mut e2 = ListEntry::new();
        // SAFETY: the list and entries live on this frame and are only used through `lock`.
        unsafe { initialize_list_head(&mut head) };
        // SAFETY: as above.
        unsafe { ex_interlocked_insert_tail_list(&mut head, &mut e1, &lock) };
        let old = ntspin::raise_irql(Irql::new(8).unwrap());
        // SAFETY: as above.
        unsafe { ex_interlocked_insert_tail_list(&mut head, &mut e2, &lock) };
        ntspin::lower_irql(old);
    })
    .unwrap();
}

#[test]
fn ld_irq_edge_form_a_lock_used_at_dirql_above_a_lock_held_at_dispatch() {
    // A is only ever held at DIRQL 8 (so A alone is consistent). B is taken under A at
    // DIRQL 8 — B's own use at 8 and its hold at DISPATCH elsewhere is the inversion.
    let m = Machine::new(1);
    let a = RawSpinLock::new();
    let b = RawSpinLock::new();
    let err = m
        .run_on(0, || {
            let old = b.acquire();
            // SAFETY: acquired just above.
            unsafe { b.release(old) };
            let old = ntspin::raise_irql(Irql::new(8).unwrap());
            a.acquire_at_dpc_level();
            b.acquire_at_dpc_level();
            // SAFETY: acquired just above, released in reverse order.
            unsafe { b.release_from_dpc_level() };
            // SAFETY: as above.
            unsafe { a.release_from_dpc_level() };
            ntspin::lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(err.bug, ld_irq(b.addr()));
}

#[test]
fn a_real_ab_ba_deadlock_with_order_tracking_off_ends_in_0x133_naming_both() {
    let m = Machine::builder()
        .processors(2)
        .lock_order(LockOrder::off())
        .watchdog(ntspin_sim::Watchdog {
            hang: std::time::Duration::from_millis(300),
            ..Default::default()
        })
        .build();
    let (a, b) = (SpinLock::new(0), SpinLock::new(0));
    let both = Barrier::new(2);
    let started = std::time::Instant::now();
    let results = m.run_each(|cpu| {
        let (first, second) = if cpu == 0 { (&a, &b) } else { (&b, &a) };
        let g = first.lock();
        both.wait();
        let _never = second.lock_at_dpc_level(g.dpc_level());
    });
    let err = results[0].as_ref().unwrap_err();
    assert!(results[1].is_err());
    assert_eq!(err.bug.code, 0x133);
    assert_eq!(err.bug.rule, Rule::DL_HANG);
    assert_eq!(err.bug.params[0], 1);
    assert!(err.bug.params[1] >= 300, "{:?}", err.bug);
    assert_eq!(err.bug.params[2], 300);
    let ReportDetail::Hang { waiters } = &err.details[0] else {
        panic!("{err}")
    };
    let mut who: Vec<(u32, usize, Option<u32>)> = waiters
        .iter()
        .map(|w| (w.processor, w.lock, w.owner))
        .collect();
    who.sort();
    assert_eq!(
        who,
        [(0, b.raw().addr(), Some(1)), (1, a.raw().addr(), Some(0))]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Both processors unwound: the locks are free again.
    assert!(a.test() && b.test());
}

//! Watchdogs and lifetime rules: SL-HOLDTIME (a DPC, an ISR or a stay at DISPATCH that
//! runs too long), DL-EXIT-HELD, PAGED-CODE, and the duration statistics.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ntspin::dpc::Dpc;
use ntspin::interrupt::{Interrupt, InterruptConfig};
use ntspin::{BugCheck, Irql, RawSpinLock, Rule, SpinLock};
use ntspin_sim::{Machine, Watchdog};

mod common;
use common::eventually;

fn watchdog(f: impl FnOnce(&mut Watchdog)) -> Watchdog {
    let mut w = Watchdog::default();
    f(&mut w);
    w
}

/// Burns processor time at the current IRQL for up to `max`, making an ntspin call now and
/// then (where a stopped processor stops).
fn busy(lock: &RawSpinLock, max: Duration) {
    let start = Instant::now();
    while start.elapsed() < max {
        lock.acquire_at_dpc_level();
        // SAFETY: acquired just above.
        unsafe { lock.release_from_dpc_level() };
    }
}

#[test]
fn sl_holdtime_a_dpc_that_runs_too_long() {
    let m = Machine::builder()
        .processors(1)
        .watchdog(watchdog(|w| w.dpc = Duration::from_millis(100)))
        .build();
    let lock = RawSpinLock::new();
    let started = Instant::now();
    let err = m
        .run_on(0, || {
            let dpc = pin!(Dpc::new(|_, _, _| busy(&lock, Duration::from_secs(20))));
            let old = ntspin::raise_irql_to_dpc_level();
            dpc.as_ref().queue(0, 0);
            ntspin::lower_irql(old); // the DPC runs here
        })
        .unwrap_err();
    assert_eq!(err.bug.code, 0x133);
    assert_eq!(err.bug.rule, Rule::SL_HOLDTIME);
    assert_eq!(err.bug.params[0], 0, "a single DPC");
    assert!(err.bug.params[1] >= 100, "{:?}", err.bug);
    assert_eq!(err.bug.params[2], 100);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped by the watchdog"
    );
    assert!(err.to_string().contains("one DPC routine"), "{err}");
}

#[test]
fn sl_holdtime_a_continuous_stay_at_dispatch() {
    let m = Machine::builder()
        .processors(1)
        .watchdog(watchdog(|w| w.dispatch = Duration::from_millis(150)))
        .build();
    let lock = SpinLock::new(0u64);
    let err = m
        .run_on(0, || {
            let old = ntspin::raise_irql_to_dpc_level();
            let start = Instant::now();
            // Locks taken and released, but the IRQL never drops below DISPATCH.
            while start.elapsed() < Duration::from_secs(20) {
                *lock.lock() += 1;
            }
            ntspin::lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(err.bug.rule, Rule::SL_HOLDTIME);
    assert_eq!(err.bug.code, 0x133);
    assert_eq!(err.bug.params[0], 1, "cumulative");
    assert!(err.bug.params[1] >= 150);
    assert_eq!(err.bug.params[2], 150);
}

#[test]
fn dropping_to_passive_between_critical_sections_never_fires() {
    // 300 ms of nothing but lock traffic, with a 100 ms stay limit: each stay is short.
    let m = Machine::builder()
        .processors(2)
        .watchdog(watchdog(|w| w.dispatch = Duration::from_millis(100)))
        .build();
    let lock = SpinLock::new(0u64);
    let results = m.run_each(|_| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            *lock.lock() += 1;
        }
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[test]
fn contention_and_oversubscription_alone_never_fire_the_hang_watchdog() {
    // Six processors on this machine's cores, all hammering one lock with a 50 ms hang
    // limit: waiters wait long in wall time (their owners get descheduled), but the lock
    // keeps changing hands, so no DL-HANG; nor SL-HOLDTIME with a 50 ms stay limit, since
    // every critical section is short in processor time.
    let m = Machine::builder()
        .processors(6)
        .watchdog(watchdog(|w| {
            w.hang = Duration::from_millis(50);
            w.dispatch = Duration::from_millis(50);
        }))
        .build();
    let lock = SpinLock::new(0u64);
    let mut h = [0u64; 6];
    let results = m.run_each(|_| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(1500) {
            let mut g = lock.lock();
            for _ in 0..50 {
                *g = std::hint::black_box(*g + 1);
            }
            n += 1;
        }
        n
    });
    for (i, r) in results.iter().enumerate() {
        h[i] = *r.as_ref().unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(*lock.lock(), h.iter().sum::<u64>() * 50);
}

#[test]
fn isr_and_dpc_durations_are_counted_as_statistics() {
    let m = Machine::new(2);
    let isrs = AtomicU32::new(0);
    m.run_on(0, || {
        let cfg = InterruptConfig {
            affinity: 0b10,
            ..InterruptConfig::new(6, Irql::new(5).unwrap())
        };
        let intr = pin!(Interrupt::new(cfg, || {
            // A 1 ms ISR: far over the 25 µs guideline, far under the watchdog.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1) {
                std::hint::spin_loop();
            }
            isrs.fetch_add(1, Relaxed);
            true
        }));
        intr.as_ref().connect().unwrap();
        m.assert_interrupt(6);
        eventually("the ISR", || isrs.load(Relaxed) == 1);
        intr.disconnect();
    })
    .unwrap();
    let stats = m.watchdog_stats(1);
    assert_eq!(stats.isrs_over_25us, 1, "{stats:?}");
    assert!(stats.isr_max_ns >= 500_000, "{stats:?}");
    assert_eq!(m.watchdog_stats(0).isrs_over_25us, 0);
}

#[test]
fn dl_exit_held_a_routine_returning_holding_a_lock() {
    let m = Machine::new(2);
    let lock = RawSpinLock::new();
    let err = m
        .run_on(1, || {
            let old = ntspin::raise_irql_to_dpc_level();
            lock.acquire_at_dpc_level();
            let _ = old; // returns at DISPATCH holding the lock
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x100A, 1, lock.addr(), 0, Rule::DL_EXIT_HELD)
    );
}

#[test]
fn paged_code_above_apc_level_bugchecks_0xd1() {
    fn pageable() -> &'static std::panic::Location<'static> {
        ntspin::paged_code!();
        std::panic::Location::caller()
    }
    let m = Machine::new(1);
    assert!(m.run_on(0, pageable).is_ok(), "fine at PASSIVE");
    let err = m
        .run_on(0, || {
            let _old = ntspin::raise_irql_to_dpc_level();
            pageable();
        })
        .unwrap_err();
    assert_eq!(err.bug.code, 0xD1);
    assert_eq!(err.bug.rule, Rule::PAGED_CODE);
    let [site, cur, eight, site2] = err.bug.params;
    assert_eq!((cur, eight), (2, 8));
    assert_eq!(site, site2);
    // The site is the macro's source location record: this file.
    // SAFETY: PAGED-CODE's P1 is the address of a `&'static Location` (RULES.md: site).
    let loc = unsafe { &*(site as *const std::panic::Location<'static>) };
    assert!(loc.file().ends_with("watchdog.rs"), "{loc}");
    assert!(err.to_string().contains("PAGED-CODE"));
}

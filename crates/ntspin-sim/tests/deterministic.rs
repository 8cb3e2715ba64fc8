//! Deterministic delivery: interrupts arrive only at HAL calls, injected from a seed, so
//! the same seed replays the same interleaving on one processor.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ntspin::dpc::Dpc;
use ntspin::event::{Event, EventType, WaitStatus};
use ntspin::interrupt::{Interrupt, InterruptConfig};
use ntspin::{Irql, SpinLock};
use ntspin_sim::{Delivery, Injection, Machine, Verifier};

fn dirql(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

/// What one run observed: the injections, and for each service-routine run the step of
/// the routine it interrupted.
#[derive(Debug, PartialEq)]
struct Trace {
    injections: Vec<Injection>,
    isr_steps: Vec<(u32, u32)>,
    asserted: u64,
    serviced: u64,
}

/// A driver-like routine on one processor: locks, `synchronize`, IRQL changes and its own
/// assertions, with two interrupts whose routines log where they landed and count under
/// the interrupt lock.
fn run(delivery: Delivery) -> Trace {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::Standard)
        .delivery(delivery)
        .build();
    let step = AtomicU32::new(0);
    // Lock-free: a routine at level 7 may interrupt one at level 5 mid-push.
    let log: Vec<AtomicU64> = (0..4096).map(|_| AtomicU64::new(0)).collect();
    let log_len = AtomicUsize::new(0);
    let shared = AtomicU64::new(0);
    let (routine_adds, isr_adds) = (AtomicU64::new(0), AtomicU64::new(0));
    let plain = SpinLock::new(0u64);
    m.run_on(0, || {
        let isr = |vector: u32| {
            let (log, log_len, step, shared, isr_adds) =
                (&log, &log_len, &step, &shared, &isr_adds);
            move || {
                let at = log_len.fetch_add(1, Relaxed);
                log[at].store(
                    u64::from(vector) << 32 | u64::from(step.load(Relaxed)),
                    Relaxed,
                );
                shared.store(shared.load(Relaxed) + 1, Relaxed);
                isr_adds.fetch_add(1, Relaxed);
                true
            }
        };
        let a = pin!(Interrupt::new(InterruptConfig::new(3, dirql(5)), isr(3)));
        let b = pin!(Interrupt::new(InterruptConfig::new(4, dirql(7)), isr(4)));
        a.as_ref().connect().unwrap();
        b.as_ref().connect().unwrap();
        for i in 0..400u32 {
            step.store(i, Relaxed);
            match i % 4 {
                0 => a.synchronize(|| {
                    shared.store(shared.load(Relaxed) + 1, Relaxed);
                    routine_adds.fetch_add(1, Relaxed);
                }),
                1 => *plain.lock() += 1,
                2 => {
                    let old = ntspin::raise_irql(dirql(6));
                    ntspin::lower_irql(old);
                }
                _ => b.synchronize(|| {
                    shared.store(shared.load(Relaxed) + 1, Relaxed);
                    routine_adds.fetch_add(1, Relaxed);
                }),
            }
            if i % 50 == 0 {
                m.assert_interrupt(3); // the routine's own assertion
            }
        }
    })
    .unwrap();
    // Both interrupts' routines and the routine's synchronize calls update `shared`
    // without atomics' help: exact only if they excluded each other.
    assert_eq!(
        shared.load(Relaxed),
        routine_adds.load(Relaxed) + isr_adds.load(Relaxed)
    );
    let isr_steps: Vec<(u32, u32)> = log[..log_len.load(Relaxed)]
        .iter()
        .map(|e| {
            let e = e.load(Relaxed);
            ((e >> 32) as u32, e as u32)
        })
        .collect();
    assert_eq!(isr_steps.len() as u64, isr_adds.load(Relaxed));
    Trace {
        injections: m.injections(),
        isr_steps,
        asserted: m.interrupts_asserted(3) + m.interrupts_asserted(4),
        serviced: m.interrupts_serviced(3) + m.interrupts_serviced(4),
    }
}

#[test]
fn same_seed_replays_the_same_interleaving_on_one_processor() {
    let d = |seed| Delivery::Deterministic { seed, one_in: 8 };
    let first = run(d(42));
    assert!(
        first.injections.len() > 20,
        "the seed injects: {:?}",
        first.injections.len()
    );
    // The routine's 8 own assertions plus every injection; requests made while the line
    // was already requested merge, so there are at most as many runs, and some.
    assert_eq!(first.asserted, first.injections.len() as u64 + 8);
    assert!(first.serviced <= first.asserted && first.serviced > first.asserted / 2);
    assert!(first.isr_steps.iter().any(|&(v, _)| v == 4));
    for _ in 0..3 {
        assert_eq!(run(d(42)), first, "same seed, same interleaving");
    }
    let other = run(d(43));
    assert_ne!(
        other.injections, first.injections,
        "another seed, another one"
    );
}

#[test]
fn one_in_zero_injects_nothing_and_delivers_the_routines_assertions_at_hal_calls() {
    let t = run(Delivery::Deterministic { seed: 1, one_in: 0 });
    assert!(t.injections.is_empty());
    assert_eq!(t.serviced, 8);
    // Each own assertion (made at the end of step 50k, after its HAL calls) is taken at
    // the routine's next HAL call, the first of step 50k + 1.
    let steps: Vec<u32> = t.isr_steps.iter().map(|&(_, s)| s).collect();
    assert_eq!(steps, [1, 51, 101, 151, 201, 251, 301, 351]);
}

/// A running routine is never interrupted between HAL calls: an assertion from another
/// thread waits for the processor's next HAL call.
#[test]
fn no_signal_interrupts_a_running_routine() {
    let m = Machine::builder()
        .processors(1)
        .delivery(Delivery::Deterministic { seed: 9, one_in: 0 })
        .build();
    let hits = AtomicU32::new(0);
    let asserted = AtomicBool::new(false);
    let (during, after) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(2));
            m.assert_interrupt(6);
            asserted.store(true, Relaxed);
        });
        m.run_on(0, || {
            let intr = pin!(Interrupt::new(InterruptConfig::new(6, dirql(5)), || {
                hits.fetch_add(1, Relaxed);
                true
            }));
            intr.as_ref().connect().unwrap();
            // No HAL call while the assertion arrives.
            let start = Instant::now();
            while !asserted.load(Relaxed) || start.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
            let during = hits.load(Relaxed);
            assert_eq!(ntspin::current_irql(), Irql::PASSIVE); // a plain read, no injection point
            let old = ntspin::raise_irql(Irql::DISPATCH); // the next HAL call
            ntspin::lower_irql(old);
            (during, hits.load(Relaxed))
        })
        .unwrap()
    });
    assert_eq!(m.interrupts_asserted(6), 1);
    assert_eq!(during, 0, "no interrupt between HAL calls");
    assert_eq!(after, 1, "taken at the next HAL call");
}

/// A processor blocked in a wait is still signalled: its interrupt's DPC wakes it.
#[test]
fn a_blocked_processor_still_takes_interrupts() {
    let m = Machine::builder()
        .processors(1)
        .delivery(Delivery::Deterministic { seed: 5, one_in: 0 })
        .build();
    let done = Event::new(EventType::Notification, false);
    let dpc = pin!(Dpc::new(|_, _, _| {
        done.set();
    }));
    let waiting = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            while !waiting.load(Relaxed) {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(10));
            m.assert_interrupt(7);
        });
        m.run_on(0, || {
            let dpc = dpc.as_ref();
            let intr = pin!(Interrupt::new(InterruptConfig::new(7, dirql(5)), || {
                dpc.queue(0, 0);
                true
            }));
            intr.as_ref().connect().unwrap();
            waiting.store(true, Relaxed);
            done.wait(Some(Duration::from_secs(10)))
        })
        .unwrap()
    });
    assert_eq!(status, WaitStatus::Success);
    assert_eq!(m.interrupts_serviced(7), 1);
}

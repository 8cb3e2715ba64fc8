//! The stress run of the interrupts issue: 4 processors of passive-level submitters taking
//! executive, queued and interrupt locks and calling `synchronize`, while 2 DMA devices
//! raise tens of thousands of asynchronous interrupts whose ISRs queue DPCs.
//!
//! At the end: every completion the devices produced was consumed exactly once and
//! verified end to end, every lock-protected counter is exact, no processor is above
//! PASSIVE. Every wait is bounded, so a stalled delivery fails the test instead of hanging
//! it. A second test does the same for a passive-level interrupt. Run it in release:
//! `cargo test -p ntspin-sim --release --test stress`.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ntspin::dpc::Dpc;
use ntspin::event::{Event, EventType, WaitStatus};
use ntspin::interrupt::{
    Interrupt, InterruptConfig, InterruptMode, KInterrupt, PassiveInterrupt, PassiveInterruptConfig,
};
use ntspin::{Irql, LockQueueHandle, QueuedSpinLock, SpinLock};
use ntspin_sim::Machine;
use ntspin_sim::device::{Descriptor, DmaDevice};

const CPUS: usize = 4;
const DEVICES: usize = 2;
/// Requests per submitter (debug builds do fewer: same coverage, less time).
const REQUESTS: u64 = if cfg!(debug_assertions) {
    2_000
} else {
    10_000
};
const BUFFER: usize = 1024;

/// Completions the ISR has taken from the device and the DPC has not: written only under
/// the interrupt spin lock (by the ISR, and by the DPC inside `synchronize`). Plain loads
/// and stores, so a broken exclusion loses entries and the counts below catch it.
struct IsrBuffer {
    ids: [AtomicU64; BUFFER],
    results: [AtomicU64; BUFFER],
    len: AtomicUsize,
}

impl IsrBuffer {
    fn new() -> Self {
        IsrBuffer {
            ids: std::array::from_fn(|_| AtomicU64::new(0)),
            results: std::array::from_fn(|_| AtomicU64::new(0)),
            len: AtomicUsize::new(0),
        }
    }
}

/// The counters submitters bump under each kind of lock.
struct Counters {
    executive: SpinLock<u64>,
    queued: QueuedSpinLock<u64>,
    /// One per device: each is protected by that device's interrupt lock.
    sync: [AtomicU64; DEVICES],
}

/// One submitter's outstanding request.
struct Slot {
    result: AtomicU64,
    done: Event,
}

#[test]
fn stress_interrupts_dpcs_and_locks_with_nothing_lost() {
    let m = Machine::new(CPUS);
    let devices: Vec<DmaDevice> = (0..DEVICES)
        .map(|d| DmaDevice::new(&m, 1 + d as u32, Duration::ZERO, 64))
        .collect();
    let buffers: Vec<IsrBuffer> = (0..DEVICES).map(|_| IsrBuffer::new()).collect();
    let slots: Vec<Slot> = (0..CPUS)
        .map(|_| Slot {
            result: AtomicU64::new(0),
            done: Event::new(EventType::Synchronization, false),
        })
        .collect();
    let counters = Counters {
        executive: SpinLock::new(0u64),
        queued: QueuedSpinLock::new(0u64),
        sync: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    let dpc_count = SpinLock::new(0u64);
    let overflow = AtomicU64::new(0);

    // Interrupt objects and DPCs live on processor 0's frame for the whole run: that
    // routine connects, lets the others run, and disconnects at the end.
    let ready = Event::new(EventType::Notification, false);
    let finished = AtomicUsize::new(0);
    let all_done = Event::new(EventType::Notification, false);
    let interrupts: std::sync::OnceLock<[usize; DEVICES]> = std::sync::OnceLock::new();

    let results = m.run_each(|cpu| {
        if cpu == 0 {
            // Per device: DPC (takes the ISR's completions inside `synchronize`, completes
            // the requests) and interrupt object (acknowledges, takes completions, queues
            // the DPC). The DPC needs the interrupt and the ISR the DPC: the interrupt's
            // address reaches the DPC through `interrupts`.
            let make_dpc = |d: usize| {
                let (buffers, slots, dpc_count, interrupts) =
                    (&buffers, &slots, &dpc_count, &interrupts);
                Dpc::new(move |at_dispatch, _, _| {
                    let addr = interrupts.get().expect("connected")[d];
                    // SAFETY: the interrupt objects outlive every DPC run: processor 0
                    // flushes DPCs before it drops them.
                    let intr = unsafe { &*(addr as *const ntspin::interrupt::KInterrupt) };
                    let mut taken = [(0u64, 0u64); 64];
                    let mut more = true;
                    while more {
                        let n = intr.synchronize(|| {
                            let b = &buffers[d];
                            let len = b.len.load(Relaxed);
                            let n = len.min(taken.len());
                            for (i, t) in taken.iter_mut().enumerate().take(n) {
                                *t = (
                                    b.ids[len - 1 - i].load(Relaxed),
                                    b.results[len - 1 - i].load(Relaxed),
                                );
                            }
                            b.len.store(len - n, Relaxed);
                            more = len > n;
                            n
                        });
                        for &(id, result) in &taken[..n] {
                            let slot = &slots[(id >> 32) as usize];
                            slot.result.store(result, Relaxed);
                            *dpc_count.lock_at_dpc_level(at_dispatch) += 1;
                            slot.done.set();
                        }
                    }
                })
            };
            let dpc0 = pin!(make_dpc(0));
            let dpc1 = pin!(make_dpc(1));
            let dpcs = [dpc0.as_ref(), dpc1.as_ref()];
            let make_isr = |d: usize| {
                let (devices, buffers, overflow) = (&devices, &buffers, &overflow);
                let dpc = dpcs[d];
                move || {
                    let dev = &devices[d];
                    let mine = dev.acknowledge();
                    let b = &buffers[d];
                    let mut took = false;
                    loop {
                        let len = b.len.load(Relaxed);
                        if len == BUFFER {
                            // Leave the rest in the device; the DPC drains the buffer and
                            // the next completion re-asserts.
                            overflow.fetch_add(1, Relaxed);
                            break;
                        }
                        let Some(c) = dev.take_completion() else {
                            break;
                        };
                        b.ids[len].store(c.id, Relaxed);
                        b.results[len].store(c.result, Relaxed);
                        b.len.store(len + 1, Relaxed);
                        took = true;
                    }
                    if took {
                        dpc.queue(0, 0);
                    }
                    mine || took
                }
            };
            let cfg0 = InterruptConfig::new(1, Irql::new(5).unwrap());
            let cfg1 = InterruptConfig::new(2, Irql::new(7).unwrap());
            let i0 = pin!(Interrupt::new(cfg0, make_isr(0)));
            let i1 = pin!(Interrupt::new(cfg1, make_isr(1)));
            i0.as_ref().connect().expect("connect device 0");
            i1.as_ref().connect().expect("connect device 1");
            interrupts
                .set([i0.raw().addr(), i1.raw().addr()])
                .expect("set once");
            ready.set();
            submit(&m, cpu, &devices, [i0.raw(), i1.raw()], &slots, &counters);
            finished.fetch_add(1, Relaxed);
            if finished.load(Relaxed) == CPUS {
                all_done.set();
            }
            assert_eq!(
                all_done.wait(Some(Duration::from_secs(60))),
                WaitStatus::Success
            );
            ntspin::dpc::flush_queued_dpcs();
            i0.disconnect();
            i1.disconnect();
            ntspin::dpc::flush_queued_dpcs();
        } else {
            assert_eq!(
                ready.wait(Some(Duration::from_secs(10))),
                WaitStatus::Success
            );
            let addrs = interrupts.get().expect("connected");
            // SAFETY: processor 0 keeps the objects connected until every submitter has
            // finished (`all_done`).
            let objs = addrs.map(|a| unsafe { &*(a as *const ntspin::interrupt::KInterrupt) });
            submit(&m, cpu, &devices, objs, &slots, &counters);
            if finished.fetch_add(1, Relaxed) + 1 == CPUS {
                all_done.set();
            }
        }
        ntspin::current_irql()
    });
    for (cpu, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("no bug check"), Irql::PASSIVE, "processor {cpu}");
    }

    let total = REQUESTS * CPUS as u64;
    let produced: u64 = devices.iter().map(DmaDevice::produced).sum();
    let consumed: u64 = devices.iter().map(DmaDevice::consumed).sum();
    let programmed: u64 = devices.iter().map(DmaDevice::programmed).sum();
    assert_eq!(programmed, total);
    assert_eq!(produced, total, "the devices completed every request");
    assert_eq!(consumed, produced, "every completion consumed exactly once");
    assert_eq!(
        *dpc_count.lock(),
        total,
        "every completion reached a DPC once"
    );
    assert_eq!(*counters.executive.lock(), total);
    let mut h = pin!(LockQueueHandle::new());
    assert_eq!(*counters.queued.lock(h.as_mut()), total);
    let synced: u64 = counters.sync.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!(synced, total);
    let asserted: u64 = (1..=DEVICES as u32).map(|v| m.interrupts_asserted(v)).sum();
    assert_eq!(asserted, total, "one assertion per completion");
    let (isrs, dpcs): (u64, u64) = (0..CPUS)
        .map(|c| m.processor_counts(c))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(isrs > 0 && dpcs > 0);
    for cpu in 0..CPUS {
        assert_eq!(m.irql_of(cpu), Irql::PASSIVE);
    }
    eprintln!(
        "stress: {total} requests, {asserted} assertions, {isrs} ISR runs, {dpcs} DPC runs, \
         {} ISR buffer overflows",
        overflow.load(Relaxed)
    );
}

/// One submitter: `REQUESTS` round trips through a device, each under the executive, the
/// queued and the interrupt lock, and a `synchronize`.
fn submit(
    m: &Machine,
    cpu: usize,
    devices: &[DmaDevice],
    interrupts: [&ntspin::interrupt::KInterrupt; DEVICES],
    slots: &[Slot],
    counters: &Counters,
) {
    for seq in 0..REQUESTS {
        let d = (seq as usize + cpu) % DEVICES;
        *counters.executive.lock() += 1;
        {
            let mut h = pin!(LockQueueHandle::new());
            *counters.queued.lock(h.as_mut()) += 1;
        }
        interrupts[d].synchronize(|| {
            let v = counters.sync[d].load(Relaxed);
            counters.sync[d].store(v + 1, Relaxed);
        });
        let id = ((cpu as u64) << 32) | seq;
        let data = id.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Program the descriptor under the interrupt spin lock (EvtProgramDma).
        let old = interrupts[d].acquire_lock();
        let programmed = devices[d].program(Descriptor { id, data });
        // SAFETY: acquired just above on this processor.
        unsafe { interrupts[d].release_lock(old) };
        assert!(programmed, "descriptor ring full");
        let slot = &slots[cpu];
        if slot.done.wait(Some(Duration::from_secs(10))) != WaitStatus::Success {
            panic!(
                "request {id:#x} on device {d} never completed: delivery stalled\n{}\ndevices: {:?}\nbug check: {:?}",
                m.delivery_state(),
                devices,
                m.bug_check()
            );
        }
        assert_eq!(slot.result.load(Relaxed), DmaDevice::transform(data));
    }
}

/// Passive-level interrupts under load: 4 processors hammer `synchronize` (the wait lock)
/// on one passive-level interrupt while a host thread asserts its line thousands of times;
/// the routine blocks briefly on each run. For both line modes: the routine and the
/// `synchronize` callers excluded each other on every processor (a plain read-modify-write
/// stays exact), the last assertion was followed by a run that started after it, nothing
/// is left above PASSIVE, and it ends in bounded time.
#[test]
fn stress_passive_level_interrupt_with_busy_processors() {
    for mode in [InterruptMode::LevelSensitive, InterruptMode::Latched] {
        let assertions: u64 = if cfg!(debug_assertions) {
            2_000
        } else {
            10_000
        };
        let m = Machine::new(CPUS);
        let shared = AtomicU64::new(0);
        let (routine_adds, isr_runs) = (AtomicU64::new(0), AtomicU64::new(0));
        let (seq, seen) = (AtomicU64::new(0), AtomicU64::new(0));
        let nap = Event::new(EventType::Notification, false);
        let ready = Event::new(EventType::Notification, false);
        let all_asserted = Event::new(EventType::Notification, false);
        let finished = AtomicUsize::new(0);
        let object: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let bump = |c: &AtomicU64| {
            let v = c.load(Relaxed);
            std::hint::spin_loop();
            c.store(v + 1, Relaxed);
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    ready.wait(Some(Duration::from_secs(10))),
                    WaitStatus::Success
                );
                for i in 1..=assertions {
                    seq.store(i, Relaxed);
                    m.assert_interrupt(9);
                    if i % 8 == 0 {
                        // Paced, so runs interleave with the processors' work.
                        std::thread::sleep(Duration::from_micros(10));
                    }
                }
                all_asserted.set();
            });
            let results = m.run_each(|cpu| {
                let work = |intr: &KInterrupt| {
                    for _ in 0..assertions / 4 {
                        intr.synchronize(|| {
                            bump(&shared);
                            routine_adds.fetch_add(1, Relaxed);
                        });
                    }
                };
                if cpu == 0 {
                    let cfg = PassiveInterruptConfig {
                        mode,
                        ..PassiveInterruptConfig::new(9, Irql::new(6).unwrap())
                    };
                    let sensor = pin!(PassiveInterrupt::new(cfg, || {
                        // The "device" has news if an assertion came since the last look
                        // (a latched chain rescans until a pass claims nothing).
                        let now = seq.load(Relaxed);
                        let news = seen.fetch_max(now, Relaxed) < now;
                        bump(&shared);
                        isr_runs.fetch_add(1, Relaxed);
                        // Blocks (a short bus transfer): allowed at PASSIVE.
                        let _ = nap.wait(Some(Duration::from_micros(20)));
                        news
                    }));
                    sensor.as_ref().connect().expect("connect the sensor");
                    object.set(sensor.raw().addr()).expect("set once");
                    ready.set();
                    work(sensor.raw());
                    finished.fetch_add(1, Relaxed);
                    assert_eq!(
                        all_asserted.wait(Some(Duration::from_secs(60))),
                        WaitStatus::Success
                    );
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while seen.load(Relaxed) != assertions || finished.load(Relaxed) != CPUS {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "passive delivery stalled: seen {} of {assertions}\n{}",
                            seen.load(Relaxed),
                            m.delivery_state()
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    sensor.disconnect();
                } else {
                    assert_eq!(
                        ready.wait(Some(Duration::from_secs(10))),
                        WaitStatus::Success
                    );
                    // SAFETY: processor 0 keeps the object connected until every processor
                    // has finished (`finished`).
                    let intr = unsafe { &*(*object.get().unwrap() as *const KInterrupt) };
                    work(intr);
                    finished.fetch_add(1, Relaxed);
                }
                ntspin::current_irql()
            });
            for (cpu, r) in results.into_iter().enumerate() {
                assert_eq!(r.expect("no bug check"), Irql::PASSIVE, "processor {cpu}");
            }
        });
        let runs = isr_runs.load(Relaxed);
        assert_eq!(
            shared.load(Relaxed),
            routine_adds.load(Relaxed) + runs,
            "{mode:?}"
        );
        assert_eq!(routine_adds.load(Relaxed), assertions / 4 * CPUS as u64);
        assert_eq!(m.interrupts_asserted(9), assertions);
        assert_eq!(m.interrupts_serviced(9), runs);
        assert!(runs >= 1 && runs <= assertions, "{mode:?}: {runs} runs");
        for cpu in 0..CPUS {
            assert_eq!(m.irql_of(cpu), Irql::PASSIVE);
        }
        eprintln!(
            "stress ({mode:?}): {assertions} assertions of a passive line, {runs} routine runs"
        );
    }
}

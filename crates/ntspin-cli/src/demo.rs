//! The demonstration driver: DMA devices with DIRQL interrupts and DPCs, submitters at
//! PASSIVE on every processor, and one passive-level (KMDF-style) sensor — with an optional
//! deliberate bug (`--inject`) for the verifier to catch.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ntspin::dpc::Dpc;
use ntspin::event::{Event, EventType, WaitStatus};
use ntspin::interrupt::{Interrupt, InterruptConfig, KInterrupt};
use ntspin::wdf::{
    InterruptResource, WdfDevice, WdfInterrupt, WdfInterruptConfig, WdfInterruptHandle,
};
use ntspin::{Irql, LockQueueHandle, QueuedSpinLock, RawSpinLock, SpinLock};
use ntspin_sim::device::{Descriptor, DmaDevice};
use ntspin_sim::{BugCheckReport, Machine, Verifier};

use crate::stats::{IrqlShare, LockStats, LockSummary};
use crate::trace::{Slice, Tracer};

/// The bugs `--inject` can plant, by `RULES.md` id.
pub const INJECTABLE: &[&str] = &[
    "SL-RECURSE",
    "SL-ACQ-IRQL",
    "ISL-PASSIVE",
    "IRQL-LOWER-HELD",
    "WDF-STATE",
    "SL-ORDER",
    "LD-IRQ",
];

/// Most devices a demo machine gets (one line and one DIRQL each).
pub const MAX_DEVICES: usize = 4;

const SENSOR_VECTOR: u32 = 20;
/// Completions one ISR may hold for its DPC.
const INBOX: usize = 256;

/// What the demo is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub processors: usize,
    pub seconds: f64,
    pub devices: usize,
    pub seed: u64,
    pub verifier: Verifier,
    pub inject: Option<&'static str>,
    pub progress: bool,
    /// Record a trace (written by the caller from `Summary::trace`).
    pub trace: bool,
}

/// What the demo measured (printed as a table or as JSON).
#[derive(Debug, Default)]
pub struct Summary {
    pub processors: usize,
    pub devices: usize,
    pub seconds: f64,
    pub submitted: u64,
    pub completed: u64,
    pub verified: u64,
    pub interrupts_asserted: u64,
    pub isr_runs: u64,
    pub dpc_runs: u64,
    pub sensor_samples: u64,
    pub sensor_reads: u64,
    pub sensor_busy: u64,
    pub per_processor: Vec<(u64, u64)>,
    /// Per processor, sampled IRQL (PASSIVE/APC, DISPATCH, DIRQL).
    pub irql_share: Vec<IrqlShare>,
    pub locks: Vec<LockSummary>,
    pub bug_check: Option<BugCheckReport>,
    /// The recorded trace, with `Options::trace`.
    pub trace: Option<Tracer>,
}

/// One outstanding request per submitter.
struct Slot {
    data: AtomicU64,
    result: AtomicU64,
    done: Event,
}

/// Completions an ISR took from its device, for its DPC: written under the interrupt
/// lock only (plain loads and stores: a broken exclusion loses entries, and the counts
/// catch it).
struct Inbox {
    ids: Vec<AtomicU64>,
    results: Vec<AtomicU64>,
    len: AtomicUsize,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            ids: (0..INBOX).map(|_| AtomicU64::new(0)).collect(),
            results: (0..INBOX).map(|_| AtomicU64::new(0)).collect(),
            len: AtomicUsize::new(0),
        }
    }
}

/// Requests in flight, per device: the DPC finds its submitter here (AtDpcLevel lock).
#[derive(Default)]
struct InFlight {
    count: u64,
}

fn sample_of(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED
}

/// Runs the demo and returns what it measured; a bug check (injected or real) is in
/// `bug_check`.
pub fn run(o: &Options) -> Summary {
    let m = Machine::builder()
        .processors(o.processors)
        .verifier(o.verifier)
        .build();
    let devs: Vec<DmaDevice> = (0..o.devices)
        .map(|d| DmaDevice::new(&m, 1 + d as u32, Duration::from_micros(2), 64))
        .collect();
    let slots: Vec<Slot> = (0..o.processors)
        .map(|_| Slot {
            data: AtomicU64::new(0),
            result: AtomicU64::new(0),
            done: Event::new(EventType::Synchronization, false),
        })
        .collect();
    let inboxes: Vec<Inbox> = (0..o.devices).map(|_| Inbox::new()).collect();
    let in_flight: Vec<SpinLock<InFlight>> = (0..o.devices)
        .map(|_| SpinLock::new(InFlight::default()))
        .collect();
    let submitted_total = QueuedSpinLock::new(0u64);
    let list_stats: Vec<LockStats> = (0..o.devices)
        .map(|d| LockStats::new(format!("request list {d} (executive)"), false))
        .collect();
    let intr_stats: Vec<LockStats> = (0..o.devices)
        .map(|d| LockStats::new(format!("interrupt {d} (DIRQL {})", 5 + d), true))
        .collect();
    let total_stats = LockStats::new("submitted count (queued)", false);
    let sensor_stats = LockStats::new("sensor (passive wait lock)", false);
    let tracer_owned = o.trace.then(|| Tracer::new(o.processors));
    let tracer = tracer_owned.as_ref();
    // Marks a slice's begin or end when tracing (atomics only: ISRs call it).
    let mark = |slice: Slice, end: bool| {
        if let Some(t) = tracer {
            t.mark(slice, end);
        }
    };
    let (completed, verified) = (AtomicU64::new(0), AtomicU64::new(0));
    let interrupts: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    let sensor_handle: std::sync::OnceLock<WdfInterruptHandle> = std::sync::OnceLock::new();

    // The sensor (passive-level, KMDF style): registers and its driver's copy.
    let (sensor_seq, sensor_sample) = (AtomicU64::new(0), AtomicU64::new(0));
    let (reading_seq, reading_sample) = (AtomicU64::new(0), AtomicU64::new(0));
    let (sensor_reads, sensor_busy) = (AtomicU64::new(0), AtomicU64::new(0));
    let sensor_stop = AtomicBool::new(false);

    // Per device: the DPC completes what the ISR took.
    let make_dpc = |d: usize| {
        let (inboxes, slots, in_flight, interrupts, completed, verified) = (
            &inboxes,
            &slots,
            &in_flight,
            &interrupts,
            &completed,
            &verified,
        );
        let (list_stats, intr_stats) = (&list_stats[d], &intr_stats[d]);
        Dpc::new(move |at_dispatch, _, _| {
            mark(Slice::Dpc, false);
            let addr = interrupts.get().expect("connected")[d];
            // SAFETY: the interrupt objects outlive every DPC run: they are disconnected
            // and the DPCs flushed before they go.
            let intr = unsafe { &*(addr as *const KInterrupt) };
            loop {
                let mut batch = [(0u64, 0u64); 32];
                let contended = !intr.spin_lock().test();
                let n = intr.synchronize(|| {
                    mark(Slice::InterruptLock, false);
                    let held = Instant::now();
                    let b = &inboxes[d];
                    let len = b.len.load(Relaxed);
                    let n = len.min(batch.len());
                    for (i, t) in batch.iter_mut().enumerate().take(n) {
                        *t = (
                            b.ids[len - 1 - i].load(Relaxed),
                            b.results[len - 1 - i].load(Relaxed),
                        );
                    }
                    b.len.store(len - n, Relaxed);
                    intr_stats.record(contended, held);
                    mark(Slice::InterruptLock, true);
                    n
                });
                if n == 0 {
                    break;
                }
                for &(id, result) in &batch[..n] {
                    {
                        let contended = !in_flight[d].raw().test();
                        let mut list = in_flight[d].lock_at_dpc_level(at_dispatch);
                        let held = Instant::now();
                        list.count -= 1;
                        list_stats.record(contended, held);
                    }
                    let slot = &slots[(id >> 32) as usize];
                    if result == DmaDevice::transform(slot.data.load(Relaxed)) {
                        verified.fetch_add(1, Relaxed);
                    }
                    slot.result.store(result, Relaxed);
                    completed.fetch_add(1, Relaxed);
                    slot.done.set();
                }
            }
            mark(Slice::Dpc, true);
        })
    };
    let dpcs: Vec<_> = (0..o.devices).map(make_dpc).collect();
    let dpcs: Vec<_> = dpcs.into_iter().map(Box::pin).collect();
    let make_isr = |d: usize| {
        let (devs, inboxes, dpc, stats) = (&devs, &inboxes, dpcs[d].as_ref(), &intr_stats[d]);
        move || {
            mark(Slice::Isr, false);
            let held = Instant::now();
            let dev = &devs[d];
            let mine = dev.acknowledge();
            let b = &inboxes[d];
            let mut took = false;
            loop {
                let len = b.len.load(Relaxed);
                if len == INBOX {
                    break; // the DPC empties it; the device keeps the rest
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
            stats.record(false, held);
            mark(Slice::Isr, true);
            mine || took
        }
    };
    let isrs: Vec<_> = (0..o.devices)
        .map(|d| {
            Box::pin(Interrupt::new(
                InterruptConfig::new(1 + d as u32, Irql::new(5 + d as u8).expect("DIRQL")),
                make_isr(d),
            ))
        })
        .collect();
    let sensor_isr = |_h: WdfInterruptHandle, _msg: u32| {
        mark(Slice::PassiveIsr, false);
        let seq = sensor_seq.load(Relaxed);
        std::thread::sleep(Duration::from_micros(30)); // a bus transfer: blocks
        let news = seq > reading_seq.load(Relaxed);
        if news {
            reading_seq.store(seq, Relaxed);
            reading_sample.store(sensor_sample.load(Relaxed), Relaxed);
        }
        mark(Slice::PassiveIsr, true);
        news
    };
    let sensor = Box::pin(WdfInterrupt::new(
        WdfInterruptConfig {
            passive_handling: true,
            ..WdfInterruptConfig::new(&sensor_isr, None)
        },
        InterruptResource::new(SENSOR_VECTOR, Irql::new(4).expect("line level")),
    ));
    let mut sensor_dev = Box::pin(WdfDevice::new());

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let inject_at = start + Duration::from_secs_f64(o.seconds * 0.3);
    let mut summary = Summary {
        processors: o.processors,
        devices: o.devices,
        ..Summary::default()
    };

    // D0 entry on processor 0.
    let up = m.run_on(0, || {
        for i in &isrs {
            i.as_ref().connect().expect("connect a DMA interrupt");
        }
        interrupts
            .set(isrs.iter().map(|i| i.raw().addr()).collect())
            .expect("once");
        let h = sensor_dev
            .as_mut()
            .create_interrupt(sensor.as_ref())
            .expect("WdfInterruptCreate");
        sensor_dev.start().expect("D0 entry");
        sensor_handle.set(h).expect("once");
    });
    if let Err(report) = up {
        summary.bug_check = Some(report);
        return summary;
    }
    let sensor_h = *sensor_handle.get().expect("started");
    let line = m.interrupt_line(SENSOR_VECTOR);

    let progress = o.progress.then(|| {
        let bar = indicatif::ProgressBar::new((o.seconds * 10.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let results = std::thread::scope(|s| {
        // The sensor's hardware.
        s.spawn(|| {
            while !sensor_stop.load(Relaxed) {
                let next = sensor_seq.load(Relaxed) + 1;
                sensor_sample.store(sample_of(next), Relaxed);
                sensor_seq.store(next, Relaxed);
                if let Some(t) = tracer {
                    t.device("sensor asserts its line");
                }
                line.assert();
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        let sampler = s.spawn(|| {
            let mut shares = vec![IrqlShare::default(); o.processors];
            while Instant::now() < deadline {
                for (cpu, share) in shares.iter_mut().enumerate() {
                    let irql = m.irql_of(cpu);
                    share.note(irql);
                    if let Some(t) = tracer {
                        t.irql(cpu, irql);
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            shares
        });
        if let Some(bar) = &progress {
            let (completed, bar) = (&completed, bar.clone());
            s.spawn(move || {
                while Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    bar.inc(1);
                    bar.set_message(format!("{} requests", completed.load(Relaxed)));
                }
            });
        }
        let r = m.run_each(|cpu| {
            let slot = &slots[cpu];
            let mut h = pin!(LockQueueHandle::new());
            let mut rng = o.seed ^ (cpu as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
            let mut seq = 0u64;
            let mut injected = false;
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let d = (rng as usize) % devs.len();
                let id = ((cpu as u64) << 32) | seq;
                seq += 1;
                let data = rng;
                slot.data.store(data, Relaxed);
                // The request list (executive lock) and, under it, the driver-wide count
                // (queued lock): one order everywhere, list then count.
                {
                    let contended = !in_flight[d].raw().test();
                    let mut list = in_flight[d].lock();
                    let held = Instant::now();
                    list.count += 1;
                    {
                        let contended = !submitted_total.raw().test();
                        let mut total =
                            submitted_total.lock_at_dpc_level(h.as_mut(), list.dpc_level());
                        let held = Instant::now();
                        *total += 1;
                        total_stats.record(contended, held);
                    }
                    list_stats[d].record(contended, held);
                }
                // The start routine: program the descriptor under the interrupt spin lock.
                let contended = !isrs[d].raw().spin_lock().test();
                let programmed = isrs[d].synchronize(|| {
                    mark(Slice::InterruptLock, false);
                    let held = Instant::now();
                    let ok = devs[d].program(Descriptor { id, data });
                    intr_stats[d].record(contended, held);
                    mark(Slice::InterruptLock, true);
                    ok
                });
                assert!(programmed, "descriptor ring full");
                if slot.done.wait(Some(Duration::from_secs(10))) != WaitStatus::Success {
                    panic!("request {id:#x} on device {d} never completed: delivery stalled");
                }
                // A queue callback reads the sensor without blocking on its lock.
                if seq % 8 == 0 {
                    ntspin::wdf::arbitrary_thread(|| {
                        if sensor_h.try_to_acquire_lock() {
                            let held = Instant::now();
                            let s = reading_seq.load(Relaxed);
                            let v = reading_sample.load(Relaxed);
                            sensor_stats.record(false, held);
                            // SAFETY: taken by the successful try just above.
                            unsafe { sensor_h.release_lock() };
                            if s == 0 || v == sample_of(s) {
                                sensor_reads.fetch_add(1, Relaxed);
                            }
                        } else {
                            sensor_busy.fetch_add(1, Relaxed);
                            sensor_stats.record(true, Instant::now());
                        }
                    });
                }
                if cpu == 1 % o.processors && !injected && Instant::now() >= inject_at {
                    injected = true;
                    if let Some(rule) = o.inject {
                        inject(rule, &in_flight[d], &submitted_total, &sensor, sensor_h);
                    }
                }
            }
        });
        sensor_stop.store(true, Relaxed);
        (r, sampler.join().expect("the IRQL sampler"))
    });
    let (results, irql_share) = results;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    summary.seconds = start.elapsed().as_secs_f64();

    // D0 exit on processor 0 (unless the machine has stopped).
    let down = m.run_on(0, || {
        sensor_dev.stop();
        ntspin::dpc::flush_queued_dpcs();
        for i in &isrs {
            i.disconnect();
        }
        ntspin::dpc::flush_queued_dpcs();
    });
    summary.bug_check = results
        .into_iter()
        .find_map(Result::err)
        .or(down.err())
        .or_else(|| m.bug_check());
    summary.submitted = *submitted_total.lock(pin!(LockQueueHandle::new()).as_mut());
    summary.completed = completed.load(Relaxed);
    summary.verified = verified.load(Relaxed);
    summary.interrupts_asserted = (0..o.devices as u32)
        .map(|d| m.interrupts_asserted(1 + d))
        .sum::<u64>()
        + m.interrupts_asserted(SENSOR_VECTOR);
    summary.per_processor = (0..o.processors).map(|c| m.processor_counts(c)).collect();
    summary.isr_runs = summary.per_processor.iter().map(|p| p.0).sum();
    summary.dpc_runs = summary.per_processor.iter().map(|p| p.1).sum();
    summary.sensor_samples = sensor_seq.load(Relaxed);
    summary.sensor_reads = sensor_reads.load(Relaxed);
    summary.sensor_busy = sensor_busy.load(Relaxed);
    summary.irql_share = irql_share;
    summary.locks = list_stats
        .iter()
        .chain(&intr_stats)
        .chain([&total_stats, &sensor_stats])
        .map(LockStats::summary)
        .collect();
    if summary.bug_check.is_some() {
        // A stopped machine may still hold pointers to these objects (a DPC queued on a
        // processor that will never drain it, a connected interrupt): they are never
        // freed. What they borrow lives until the machine's threads are joined below.
        std::mem::forget(sensor_dev);
        std::mem::forget(sensor);
        std::mem::forget(isrs);
        std::mem::forget(dpcs);
    } else {
        drop(sensor_dev);
        drop(sensor);
        drop(isrs);
        drop(dpcs);
    }
    drop(m);
    summary.trace = tracer_owned;
    summary
}

/// Plants the bug `rule` names, on the current processor.
fn inject(
    rule: &str,
    list: &SpinLock<InFlight>,
    total: &QueuedSpinLock<u64>,
    sensor: &WdfInterrupt<'_>,
    sensor_h: WdfInterruptHandle,
) {
    match rule {
        // The count's lock, then the list's: the reverse of the submit path's order. Nothing
        // deadlocks in this run; the lock-order graph has the cycle.
        "SL-ORDER" => {
            let mut h = pin!(LockQueueHandle::new());
            let t = total.lock(h.as_mut());
            let _l = list.lock_at_dpc_level(t.dpc_level());
        }
        // The request list's lock taken at DIRQL (as from an ISR), while the submit path
        // holds it at DISPATCH with interrupts enabled.
        "LD-IRQ" => {
            let old = ntspin::raise_irql(Irql::new(5).expect("DIRQL"));
            list.raw().acquire_at_dpc_level();
            // SAFETY: unreachable after the bug check; paired for form.
            unsafe { list.raw().release_from_dpc_level() };
            ntspin::lower_irql(old);
        }
        // Re-acquire the request list's lock while holding it.
        "SL-RECURSE" => {
            let _held = list.lock();
            let _again = list.lock();
        }
        // KeAcquireSpinLock from an ISR-level context (above DISPATCH).
        "SL-ACQ-IRQL" => {
            let old = ntspin::raise_irql(Irql::new(5).expect("DIRQL"));
            let _g = list.lock();
            ntspin::lower_irql(old);
        }
        // KeAcquireInterruptSpinLock on the passive-level sensor's interrupt object.
        "ISL-PASSIVE" => {
            let old = sensor.raw().acquire_lock();
            // SAFETY: unreachable after the bug check; paired for form.
            unsafe { sensor.raw().release_lock(old) };
        }
        // Lower below DISPATCH while a spin lock is still held.
        "IRQL-LOWER-HELD" => {
            let raw: &RawSpinLock = list.raw();
            let old = raw.acquire();
            ntspin::lower_irql(Irql::PASSIVE);
            // SAFETY: unreachable after the bug check.
            unsafe { raw.release(old) };
        }
        // WdfInterruptAcquireLock after the interrupt was disabled.
        "WDF-STATE" => {
            sensor_h.disable();
            sensor_h.acquire_lock();
        }
        other => unreachable!("--inject {other} was validated"),
    }
}

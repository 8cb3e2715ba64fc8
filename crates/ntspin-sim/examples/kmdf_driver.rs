//! A KMDF-style driver on the machine, as the `WdfInterruptAcquireLock` page describes it.
//!
//! - **A DMA device with a DIRQL interrupt** (the PLX9x5x pattern). Queue callbacks
//!   (EvtIoWrite) on three processors submit requests. The driver's EvtProgramDma
//!   programs descriptors into the device's registers under `WdfInterruptAcquireLock`,
//!   because the ISR touches the same registers. The device's hardware thread transforms
//!   the data and raises the interrupt. EvtInterruptIsr acknowledges it, takes the
//!   completions and queues the DPC. EvtInterruptDpc takes the ISR's completions inside
//!   `WdfInterruptSynchronize`, checks each result against the data, completes the request,
//!   and programs the next pending one.
//! - **A passive-level sensor**, for example on an I2C bus. Its hardware thread latches a
//!   new sample and raises a passive-level interrupt. EvtInterruptIsr runs at PASSIVE and
//!   reads the sample over the "bus", which blocks. A queue callback (EvtIoRead, an
//!   arbitrary thread) reads the driver's copy with `WdfInterruptTryToAcquireLock` and
//!   never blocks on the lock, which is the fix the DDI page gives for the deadlock.
//!
//! Every request's data is checked end to end, and every sample the sensor produced is
//! checked against what the driver read. The program exits non-zero if anything is off.
//!
//! Run: `cargo run --release -p ntspin-sim --example kmdf_driver`.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ntspin::event::{Event, EventType, WaitStatus};
use ntspin::wdf::{
    InterruptResource, WdfDevice, WdfInterrupt, WdfInterruptConfig, WdfInterruptHandle,
    arbitrary_thread,
};
use ntspin::{Irql, SpinLock};
use ntspin_sim::Machine;
use ntspin_sim::device::{Descriptor, DmaDevice};

const SUBMITTERS: usize = 3;
const REQUESTS: u64 = 3_000;
const DMA_VECTOR: u32 = 5;
const SENSOR_VECTOR: u32 = 9;

/// The sensor's registers: a sample and its sequence number, latched by its hardware
/// thread, which then raises the passive-level line.
struct Sensor {
    sample: AtomicU64,
    seq: AtomicU64,
    stop: AtomicBool,
}

/// What each sample is, so the driver's readings can be checked.
fn sample_of(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED
}

/// One outstanding request per submitter.
struct Slot {
    data: AtomicU64,
    result: AtomicU64,
    done: Event,
}

/// Completions the ISR took from the device, for the DPC: touched only under the
/// interrupt lock.
struct IsrInbox {
    ids: Vec<AtomicU64>,
    results: Vec<AtomicU64>,
    len: AtomicUsize,
}

fn main() {
    let m = Machine::new(4);
    let dev = DmaDevice::new(&m, DMA_VECTOR, Duration::from_micros(5), 64);
    let slots: Vec<Slot> = (0..SUBMITTERS)
        .map(|_| Slot {
            data: AtomicU64::new(0),
            result: AtomicU64::new(0),
            done: Event::new(EventType::Synchronization, false),
        })
        .collect();
    let inbox = IsrInbox {
        ids: (0..256).map(|_| AtomicU64::new(0)).collect(),
        results: (0..256).map(|_| AtomicU64::new(0)).collect(),
        len: AtomicUsize::new(0),
    };
    // Requests waiting for ring space (the DPC programs them as completions free it).
    let pending: SpinLock<Vec<Descriptor>> = SpinLock::new(Vec::with_capacity(SUBMITTERS));
    let (completed, verified, dpcs) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));

    let sensor = Arc::new(Sensor {
        sample: AtomicU64::new(0),
        seq: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    // The driver's copy of the latest reading, under the passive interrupt's lock (atomics
    // only so the borrow checker lets the ISR and the queue callback share it).
    let (reading_seq, reading_sample) = (AtomicU64::new(0), AtomicU64::new(0));
    let (reads_ok, reads_busy, sensor_isrs) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));

    // EvtProgramDma: program as many pending descriptors as the ring takes, holding the
    // interrupt lock (the ISR reads the same registers).
    let program_dma = |h: WdfInterruptHandle| {
        let mut q = pending.lock();
        let _regs = h.lock(); // WdfInterruptAcquireLock ... WdfInterruptReleaseLock
        while let Some(d) = q.first().copied() {
            if !dev.program(d) {
                break; // ring full: the next completion's DPC programs it
            }
            q.remove(0);
        }
    };

    // DIRQL: acknowledge, take completions into the inbox, queue the DPC.
    let dma_isr = |h: WdfInterruptHandle, _msg: u32| {
        let mine = dev.acknowledge();
        let mut took = false;
        loop {
            let len = inbox.len.load(Relaxed);
            if len == inbox.ids.len() {
                break; // the DPC empties it; the device keeps the rest
            }
            let Some(c) = dev.take_completion() else {
                break;
            };
            inbox.ids[len].store(c.id, Relaxed);
            inbox.results[len].store(c.result, Relaxed);
            inbox.len.store(len + 1, Relaxed);
            took = true;
        }
        if took {
            h.queue_dpc_for_isr();
        }
        mine || took
    };
    let dma_dpc = |h: WdfInterruptHandle| {
        dpcs.fetch_add(1, Relaxed);
        loop {
            let mut batch = [(0u64, 0u64); 32];
            let n = h.synchronize(|_| {
                let len = inbox.len.load(Relaxed);
                let n = len.min(batch.len());
                for (i, b) in batch.iter_mut().enumerate().take(n) {
                    *b = (
                        inbox.ids[len - 1 - i].load(Relaxed),
                        inbox.results[len - 1 - i].load(Relaxed),
                    );
                }
                inbox.len.store(len - n, Relaxed);
                n
            });
            if n == 0 {
                break;
            }
            for &(id, result) in &batch[..n] {
                let slot = &slots[(id >> 32) as usize];
                if result == DmaDevice::transform(slot.data.load(Relaxed)) {
                    verified.fetch_add(1, Relaxed);
                }
                slot.result.store(result, Relaxed);
                completed.fetch_add(1, Relaxed);
                slot.done.set();
            }
        }
        program_dma(h);
    };

    // Passive: read the latched sample over the (slow) bus into the driver's copy.
    let sensor_isr = |_h: WdfInterruptHandle, _msg: u32| {
        let seq = sensor.seq.load(Relaxed);
        std::thread::sleep(Duration::from_micros(50)); // an I2C transfer: blocks
        let sample = sensor.sample.load(Relaxed);
        let news = seq > reading_seq.load(Relaxed);
        if news {
            reading_seq.store(seq, Relaxed);
            reading_sample.store(sample, Relaxed);
        }
        sensor_isrs.fetch_add(1, Relaxed);
        news
    };

    let dma_cfg = WdfInterruptConfig::new(&dma_isr, Some(&dma_dpc));
    let sensor_cfg = WdfInterruptConfig {
        passive_handling: true,
        ..WdfInterruptConfig::new(&sensor_isr, None)
    };
    let started = Instant::now();
    let handles: std::sync::OnceLock<(WdfInterruptHandle, WdfInterruptHandle)> =
        std::sync::OnceLock::new();
    let ready = Event::new(EventType::Notification, false);
    let finished = Event::new(EventType::Notification, false);
    let submitters_done = AtomicUsize::new(0);

    let results = m.run_each(|cpu| {
        if cpu == 0 {
            // EvtDeviceAdd + D0 entry on processor 0; the objects live on its frame.
            let dma = pin!(WdfInterrupt::new(
                dma_cfg,
                InterruptResource::new(DMA_VECTOR, Irql::new(6).unwrap())
            ));
            let snr = pin!(WdfInterrupt::new(
                sensor_cfg,
                InterruptResource::new(SENSOR_VECTOR, Irql::new(5).unwrap())
            ));
            let mut device = pin!(WdfDevice::new());
            let hd = device
                .as_mut()
                .create_interrupt(dma.as_ref())
                .expect("create");
            let hs = device
                .as_mut()
                .create_interrupt(snr.as_ref())
                .expect("create");
            device.start().expect("D0 entry");
            handles.set((hd, hs)).expect("once");
            ready.set();
            // The sensor's hardware.
            let line = m.interrupt_line(SENSOR_VECTOR);
            let hw = {
                let sensor = Arc::clone(&sensor);
                std::thread::spawn(move || {
                    while !sensor.stop.load(Relaxed) {
                        let next = sensor.seq.load(Relaxed) + 1;
                        sensor.sample.store(sample_of(next), Relaxed);
                        sensor.seq.store(next, Relaxed);
                        line.assert();
                        std::thread::sleep(Duration::from_micros(300));
                    }
                })
            };
            assert_eq!(
                finished.wait(Some(Duration::from_secs(60))),
                WaitStatus::Success
            );
            sensor.stop.store(true, Relaxed);
            hw.join().expect("sensor thread");
            // The last sample is read before D0 exit.
            let last = sensor.seq.load(Relaxed);
            let deadline = Instant::now() + Duration::from_secs(10);
            while hs.synchronize(|_| reading_seq.load(Relaxed)) != last {
                assert!(Instant::now() < deadline, "the last sample was never read");
                std::thread::sleep(Duration::from_millis(1));
            }
            device.stop();
            return 0;
        }
        assert_eq!(
            ready.wait(Some(Duration::from_secs(10))),
            WaitStatus::Success
        );
        let (hd, hs) = *handles.get().expect("started");
        let slot = &slots[cpu - 1];
        let mut busy_here = 0u64;
        for seq in 0..REQUESTS {
            // EvtIoWrite: queue the request, start DMA.
            let id = ((cpu as u64 - 1) << 32) | seq;
            let data = id.wrapping_mul(0x2545_F491_4F6C_DD1D);
            slot.data.store(data, Relaxed);
            pending.lock().push(Descriptor { id, data });
            arbitrary_thread(|| program_dma(hd));
            assert_eq!(
                slot.done.wait(Some(Duration::from_secs(10))),
                WaitStatus::Success,
                "request {id:#x} never completed"
            );
            // EvtIoRead now and then: the sensor's latest reading, without blocking.
            if seq % 10 == 0 {
                arbitrary_thread(|| {
                    if hs.try_to_acquire_lock() {
                        let (s, v) = (reading_seq.load(Relaxed), reading_sample.load(Relaxed));
                        // SAFETY: taken by the successful try just above.
                        unsafe { hs.release_lock() };
                        if s == 0 || v == sample_of(s) {
                            reads_ok.fetch_add(1, Relaxed);
                        }
                    } else {
                        busy_here += 1; // STATUS_DEVICE_BUSY to the caller; retried later
                    }
                });
            }
        }
        reads_busy.fetch_add(busy_here, Relaxed);
        if submitters_done.fetch_add(1, Relaxed) + 1 == SUBMITTERS {
            finished.set();
        }
        REQUESTS
    });

    let elapsed = started.elapsed();
    let mut ok = true;
    for (cpu, r) in results.iter().enumerate() {
        if let Err(report) = r {
            eprintln!("processor {cpu}: {report}");
            ok = false;
        }
    }
    let total = REQUESTS * SUBMITTERS as u64;
    let (submitted, done, good) = (
        dev.programmed(),
        completed.load(Relaxed),
        verified.load(Relaxed),
    );
    let (seq, read_seq, read_sample) = (
        sensor.seq.load(Relaxed),
        reading_seq.load(Relaxed),
        reading_sample.load(Relaxed),
    );
    println!(
        "kmdf_driver: {:.2} s on 4 processors",
        elapsed.as_secs_f64()
    );
    println!(
        "  DMA: {submitted} programmed, {done} completed, {good} verified of {total}; \
         {} interrupts, {} DPC runs",
        m.interrupts_serviced(DMA_VECTOR),
        dpcs.load(Relaxed)
    );
    println!(
        "  sensor: {seq} samples, last read #{read_seq}, {} passive ISR runs; queue reads: \
         {} ok, {} busy (TryToAcquireLock failed, nothing blocked)",
        sensor_isrs.load(Relaxed),
        reads_ok.load(Relaxed),
        reads_busy.load(Relaxed)
    );
    ok &= submitted == total && done == total && good == total;
    ok &= dev.produced() == total && dev.consumed() == total;
    ok &= read_seq == seq && read_sample == sample_of(seq) && seq > 0;
    ok &= m.bug_check().is_none();
    if ok {
        println!("  every request verified end to end; no violations");
    } else {
        eprintln!("kmdf_driver: FAILED");
        std::process::exit(1);
    }
}

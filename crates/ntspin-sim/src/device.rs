//! Simulated devices: a DMA engine with descriptor and completion rings, an interrupt
//! status register, and a "hardware" thread that does the transfers.
//!
//! The driver programs a [`Descriptor`] (typically under the interrupt spin lock, the
//! `EvtProgramDma` pattern); the hardware thread takes it, waits the device's latency,
//! transforms the data ([`DmaDevice::transform`]), posts a [`Completion`], sets the
//! interrupt-status bit and asserts the line. The ISR acknowledges
//! ([`DmaDevice::acknowledge`]) and takes the completions. Everything the device produces
//! and everything taken from it is counted, so a test can prove each completion was
//! consumed exactly once. The rings are preallocated and lock-free, so an ISR (a signal
//! handler) can use them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::machine::{InterruptLine, Machine};

/// What the driver programs: a request id and the data to transfer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Descriptor {
    /// The driver's request id.
    pub id: u64,
    /// The data.
    pub data: u64,
}

/// What the device posts when a transfer is done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Completion {
    /// The request id from the descriptor.
    pub id: u64,
    /// `DmaDevice::transform(data)`.
    pub result: u64,
}

struct Shared {
    line: InterruptLine,
    submit: ArrayQueue<Descriptor>,
    complete: ArrayQueue<Completion>,
    /// Bit 0: the device is asserting its interrupt.
    status: AtomicU32,
    latency: Duration,
    stop: AtomicBool,
    programmed: AtomicU64,
    produced: AtomicU64,
    consumed: AtomicU64,
}

/// A simulated DMA device attached to one interrupt line of a machine.
///
/// ```
/// use ntspin_sim::{Machine, device::{DmaDevice, Descriptor}};
/// use std::time::Duration;
///
/// let m = Machine::new(1);
/// let dev = DmaDevice::new(&m, 3, Duration::ZERO, 16);
/// assert!(dev.program(Descriptor { id: 1, data: 5 }));
/// // Nothing is connected to line 3 here, so poll the status register like a driver
/// // with interrupts off.
/// while !dev.acknowledge() { std::thread::yield_now(); }
/// let c = dev.take_completion().unwrap();
/// assert_eq!(c.result, DmaDevice::transform(5));
/// assert_eq!((dev.produced(), dev.consumed()), (1, 1));
/// ```
pub struct DmaDevice {
    shared: Arc<Shared>,
    hw: Option<JoinHandle<()>>,
}

impl DmaDevice {
    /// A device on line `vector` of `machine`, completing each transfer `latency` after it
    /// takes it, with rings of `depth` entries. Starts its hardware thread.
    pub fn new(machine: &Machine, vector: u32, latency: Duration, depth: usize) -> DmaDevice {
        let shared = Arc::new(Shared {
            line: machine.interrupt_line(vector),
            submit: ArrayQueue::new(depth),
            complete: ArrayQueue::new(depth),
            status: AtomicU32::new(0),
            latency,
            stop: AtomicBool::new(false),
            programmed: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let hw = thread::Builder::new()
            .name(format!("ntspin-dev{vector}"))
            .spawn(move || hardware(&s))
            .expect("spawn a device thread");
        DmaDevice {
            shared,
            hw: Some(hw),
        }
    }

    /// What the hardware does to the data (so the driver can check results end to end).
    ///
    /// ```
    /// use ntspin_sim::device::DmaDevice;
    /// assert_ne!(DmaDevice::transform(1), 1);
    /// ```
    pub fn transform(data: u64) -> u64 {
        data.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15
    }

    /// Writes a descriptor and rings the doorbell; `false` if the descriptor ring is full.
    pub fn program(&self, d: Descriptor) -> bool {
        if self.shared.submit.push(d).is_err() {
            return false;
        }
        self.shared.programmed.fetch_add(1, Relaxed);
        if let Some(hw) = &self.hw {
            hw.thread().unpark();
        }
        true
    }

    /// Reads and clears the interrupt status (what an ISR does first): whether the device
    /// was asserting its interrupt.
    pub fn acknowledge(&self) -> bool {
        self.shared.status.swap(0, AcqRel) & 1 == 1
    }

    /// Takes the oldest completion, if any. Async-signal-safe.
    pub fn take_completion(&self) -> Option<Completion> {
        let c = self.shared.complete.pop()?;
        self.shared.consumed.fetch_add(1, Relaxed);
        Some(c)
    }

    /// Descriptors programmed.
    pub fn programmed(&self) -> u64 {
        self.shared.programmed.load(Relaxed)
    }

    /// Completions the device posted.
    pub fn produced(&self) -> u64 {
        self.shared.produced.load(Relaxed)
    }

    /// Completions taken by the driver.
    pub fn consumed(&self) -> u64 {
        self.shared.consumed.load(Relaxed)
    }

    /// The line.
    pub fn vector(&self) -> u32 {
        self.shared.line.vector()
    }
}

fn hardware(s: &Shared) {
    while !s.stop.load(Relaxed) {
        let Some(d) = s.submit.pop() else {
            thread::park_timeout(Duration::from_millis(1));
            continue;
        };
        if !s.latency.is_zero() {
            let until = Instant::now() + s.latency;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let mut c = Completion {
            id: d.id,
            result: DmaDevice::transform(d.data),
        };
        // A full completion ring stalls the engine until the driver catches up.
        while let Err(back) = s.complete.push(c) {
            if s.stop.load(Relaxed) {
                return;
            }
            c = back;
            thread::yield_now();
        }
        s.produced.fetch_add(1, Relaxed);
        s.status.fetch_or(1, AcqRel);
        s.line.assert();
    }
}

impl Drop for DmaDevice {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(hw) = self.hw.take() {
            hw.thread().unpark();
            let _ = hw.join();
        }
    }
}

impl std::fmt::Debug for DmaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaDevice")
            .field("vector", &self.vector())
            .field("programmed", &self.programmed())
            .field("produced", &self.produced())
            .field("consumed", &self.consumed())
            .finish()
    }
}

//! `ntspin demo --trace FILE`: a Chrome trace-event file (opens in Perfetto and
//! `chrome://tracing`). One track per processor with its ISR, DPC and interrupt-lock hold
//! slices, an IRQL counter per processor (sampled), and a devices track with the sensor's
//! assertions.
//!
//! Recording is lock-free into preallocated per-processor buffers (an ISR records from the
//! signal handler): the first 50 000 events per processor are kept, later ones are counted
//! as dropped (`otherData.dropped_events`), so a long run traces its beginning. The export sorts
//! each track by time and keeps begin/end pairs matched.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Events kept per processor.
const PER_PROCESSOR: usize = 50_000;

/// What a slice is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Slice {
    Isr = 0,
    Dpc = 1,
    InterruptLock = 2,
    PassiveIsr = 3,
}

const NAMES: [&str; 4] = ["ISR", "DPC", "interrupt lock held", "passive ISR (worker)"];

/// One recorded event, packed: ns since start << 8 | slice << 1 | end.
struct Buffer {
    events: Vec<AtomicU64>,
    len: AtomicUsize,
}

/// The recorder.
pub struct Tracer {
    start: Instant,
    buffers: Vec<Buffer>,
    dropped: AtomicU64,
    /// Host-side series (no signal handler writes these): IRQL samples and device events.
    irql: Mutex<Vec<(u64, usize, u8)>>,
    devices: Mutex<Vec<(u64, &'static str)>>,
}

impl Tracer {
    pub fn new(processors: usize) -> Tracer {
        Tracer {
            start: Instant::now(),
            buffers: (0..processors)
                .map(|_| Buffer {
                    events: (0..PER_PROCESSOR).map(|_| AtomicU64::new(0)).collect(),
                    len: AtomicUsize::new(0),
                })
                .collect(),
            dropped: AtomicU64::new(0),
            irql: Mutex::new(Vec::new()),
            devices: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX >> 8)
    }

    /// A slice begins (`end = false`) or ends on the current processor. Atomics only.
    pub fn mark(&self, slice: Slice, end: bool) {
        let cpu = ntspin::hal::current_processor() as usize;
        let Some(b) = self.buffers.get(cpu) else {
            return;
        };
        let i = b.len.fetch_add(1, Relaxed);
        let Some(slot) = b.events.get(i) else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        // The time after the slot: a nested handler's events get later slots and times.
        let packed = (self.now() << 8) | ((slice as u64) << 1) | u64::from(end);
        slot.store(packed, Relaxed);
    }

    /// An IRQL sample of processor `cpu` (host thread).
    pub fn irql(&self, cpu: usize, irql: ntspin::Irql) {
        let t = self.now();
        self.irql
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, cpu, irql.raw()));
    }

    /// A device event (host thread).
    pub fn device(&self, what: &'static str) {
        let t = self.now();
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, what));
    }

    /// Events dropped because a processor's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Writes the trace-event JSON (`{"traceEvents": [...]}`).
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        use serde_json::json;
        let mut events = Vec::new();
        let us = |ns: u64| ns as f64 / 1000.0;
        for (cpu, b) in self.buffers.iter().enumerate() {
            events.push(
                json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": cpu,
                "args": {"name": format!("processor {cpu}")}}),
            );
            let n = b.len.load(Relaxed).min(PER_PROCESSOR);
            let mut raw: Vec<(u64, u8, bool)> = b.events[..n]
                .iter()
                .map(|e| e.load(Relaxed))
                .filter(|&e| e != 0)
                .map(|e| (e >> 8, ((e >> 1) & 0x7F) as u8, e & 1 == 1))
                .collect();
            raw.sort_by_key(|&(t, _, end)| (t, end)); // at one instant, ends after begins
            // Keep pairs matched: an end with no open begin is dropped; begins still open
            // at the end close at the last time.
            let mut open: Vec<u8> = Vec::new();
            let mut last = 0;
            for (t, s, end) in raw {
                let name = NAMES.get(s as usize).copied().unwrap_or("?");
                if end {
                    if open.last() != Some(&s) {
                        continue;
                    }
                    open.pop();
                } else {
                    open.push(s);
                }
                last = t;
                events.push(json!({"ph": if end { "E" } else { "B" }, "name": name,
                    "pid": 1, "tid": cpu, "ts": us(t)}));
            }
            while let Some(s) = open.pop() {
                let name = NAMES.get(s as usize).copied().unwrap_or("?");
                events.push(json!({"ph": "E", "name": name, "pid": 1, "tid": cpu, "ts": us(last)}));
            }
        }
        let devices_tid = self.buffers.len() + 100;
        events.push(
            json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": devices_tid,
            "args": {"name": "devices"}}),
        );
        let mut dev = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        dev.sort_by_key(|d| d.0);
        for (t, what) in dev {
            events.push(json!({"ph": "i", "s": "t", "name": what, "pid": 1,
                "tid": devices_tid, "ts": us(t)}));
        }
        let mut irql = self.irql.lock().unwrap_or_else(|e| e.into_inner()).clone();
        irql.sort_by_key(|s| s.0);
        for (t, cpu, level) in irql {
            events.push(
                json!({"ph": "C", "name": format!("IRQL processor {cpu}"), "pid": 1,
                "tid": 200 + cpu, "ts": us(t), "args": {"irql": level}}),
            );
        }
        let doc = json!({
            "traceEvents": events,
            "displayTimeUnit": "ns",
            "otherData": {"dropped_events": self.dropped()},
        });
        serde_json::to_writer(&mut *out, &doc)?;
        out.flush()
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("processors", &self.buffers.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

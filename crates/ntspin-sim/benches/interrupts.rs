//! Interrupt delivery on this machine, against the raw real-time signal it is built on,
//! measured in the same run.
//!
//! - `delivery/ntspin_{idle,busy}`: `Machine::assert_interrupt` from a host thread until
//!   the service routine starts, on a processor idle at PASSIVE (no routine: its thread is
//!   blocked in the kernel) or running a routine that spins at PASSIVE;
//! - `delivery/raw_signal_{idle,busy}`: the floor — `pthread_kill` of another real-time
//!   signal, with a bare handler, to *the same processor thread in the same state*, until
//!   that handler starts. Same thread, same core, same moment: the two differ only by
//!   what ntspin adds (routing, the handler's dispatch, the interrupt lock, the routine);
//! - `replay/lower_{plain,with_pending}`: `KeLowerIrql` from the line's DIRQL to PASSIVE,
//!   without and with an interrupt left pending by lazy IRQL (the difference is what a
//!   replay costs: dispatch, the lock, the routine, the exit check).
//!
//! After criterion, a fixed-count pass of single deliveries, raw and ntspin alternating so
//! that the host's noise falls on both alike, prints median and p99 latency of each and
//! the ratios ntspin / raw signal (the target: within 1.5×).
//!
//! Run: `cargo bench -p ntspin-sim --bench interrupts`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::pin::pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use ntspin::Irql;
use ntspin::event::{Event, EventType};
use ntspin::interrupt::{Interrupt, InterruptConfig};
use ntspin_sim::{Machine, Verifier};

/// Nanoseconds since the bench started (async-signal-safe: `clock_gettime` in the vDSO).
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// When the last handler / service routine started, and how many have.
static ENTERED_AT: AtomicU64 = AtomicU64::new(0);
static ENTERED: AtomicU64 = AtomicU64::new(0);

fn note_entry() {
    ENTERED_AT.store(now_ns(), SeqCst);
    ENTERED.fetch_add(1, SeqCst);
}

/// Waits (spinning) for the entry after `before`; its latency from `sent`.
fn await_entry(before: u64, sent: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ENTERED.load(SeqCst) == before {
        assert!(Instant::now() < deadline, "a delivery was lost");
        std::hint::spin_loop();
    }
    ENTERED_AT.load(SeqCst).saturating_sub(sent)
}

// ---- the floor: a raw real-time signal to a thread ----

extern "C" fn raw_handler(_: libc::c_int) {
    note_entry();
}

fn raw_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2 // ntspin-sim plays interrupts on SIGRTMIN+1
}

/// Installs the bare handler for `raw_signal` once.
fn install_raw_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed `sigaction` is a valid empty value to fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = raw_handler as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: installs a handler for a signal nothing else in this program uses;
        // `sa` is fully initialized.
        let r = unsafe { libc::sigaction(raw_signal(), &sa, std::ptr::null_mut()) };
        assert_eq!(r, 0, "cannot install the raw-signal handler");
    });
}

// ---- ntspin: an interrupt on processor 1, asserted from this thread ----

const VECTOR: u32 = 5;

fn dirql() -> Irql {
    Irql::new(8).unwrap()
}

/// Runs `body` on this thread while processor 1 of a 2-processor machine has a connected
/// interrupt and is idle (`busy = false`: the connecting routine runs on processor 0 and
/// then blocks on an event) or spins at PASSIVE in the routine that connected it. Either
/// way the host runs the same number of threads as the raw-signal case: this one and the
/// target.
fn with_target<R>(busy: bool, body: impl FnOnce(&Target<'_>) -> R) -> R {
    install_raw_handler();
    let m = Machine::builder()
        .processors(2)
        .verifier(Verifier::Off)
        .build();
    // SAFETY: `pthread_self` has no preconditions.
    let thread = m
        .run_on(1, || unsafe { libc::pthread_self() } as usize)
        .unwrap();
    let stop = Event::new(EventType::Notification, false);
    let connected = AtomicBool::new(false);
    std::thread::scope(|s| {
        let owner = s.spawn(|| {
            m.run_on(usize::from(busy), || {
                let cfg = InterruptConfig {
                    affinity: 0b10,
                    ..InterruptConfig::new(VECTOR, dirql())
                };
                let intr = pin!(Interrupt::new(cfg, || {
                    note_entry();
                    true
                }));
                intr.as_ref().connect().unwrap();
                connected.store(true, SeqCst);
                if busy {
                    while !stop.is_set() {
                        std::hint::spin_loop();
                    }
                } else {
                    stop.wait(None);
                }
            })
            .unwrap();
        });
        while !connected.load(SeqCst) {
            std::thread::yield_now();
        }
        let r = body(&Target {
            m: &m,
            thread: thread as libc::pthread_t,
        });
        stop.set();
        owner.join().unwrap();
        r
    })
}

/// Processor 1 of a running machine, and its thread.
struct Target<'m> {
    m: &'m Machine,
    thread: libc::pthread_t,
}

impl Target<'_> {
    /// One interrupt: assertion to service-routine entry.
    fn ntspin(&self) -> u64 {
        let before = ENTERED.load(SeqCst);
        let sent = now_ns();
        self.m.assert_interrupt(VECTOR);
        await_entry(before, sent)
    }

    /// One bare signal to the same thread: `pthread_kill` to handler entry.
    fn raw(&self) -> u64 {
        let before = ENTERED.load(SeqCst);
        let sent = now_ns();
        // SAFETY: the processor thread lives as long as its machine, which outlives `self`.
        unsafe { libc::pthread_kill(self.thread, raw_signal()) };
        await_entry(before, sent)
    }
}

/// `iters` deliveries' total latency.
fn total(iters: u64, mut one: impl FnMut() -> u64) -> Duration {
    Duration::from_nanos((0..iters).map(|_| one()).sum())
}

fn delivery(c: &mut Criterion) {
    let mut g = c.benchmark_group("delivery");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for busy in [false, true] {
        let which = if busy { "busy" } else { "idle" };
        with_target(busy, |t| {
            g.bench_function(format!("raw_signal_{which}"), |b| {
                b.iter_custom(|iters| total(iters, || t.raw()))
            });
            g.bench_function(format!("ntspin_{which}"), |b| {
                b.iter_custom(|iters| total(iters, || t.ntspin()))
            });
        });
    }
    g.finish();
}

/// Lower from the line's DIRQL to PASSIVE on processor 0, with an interrupt of that line
/// left pending (asserted while at DIRQL: lazy IRQL) or without.
fn replay(c: &mut Criterion) {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::Off)
        .build();
    let mut g = c.benchmark_group("replay");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for pending in [false, true] {
        let name = if pending {
            "lower_with_pending"
        } else {
            "lower_plain"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| m.run_on(0, || lower_cost(&m, iters, pending)).unwrap())
        });
    }
    g.finish();
}

/// `iters` lowers' total time, each from DIRQL with or without a pending interrupt.
fn lower_cost(m: &Machine, iters: u64, pending: bool) -> Duration {
    let cfg = InterruptConfig {
        affinity: 0b1,
        ..InterruptConfig::new(VECTOR, dirql())
    };
    let intr = pin!(Interrupt::new(cfg, || {
        note_entry();
        true
    }));
    intr.as_ref().connect().unwrap();
    let mut sum = Duration::ZERO;
    for _ in 0..iters {
        let old = ntspin::raise_irql(dirql());
        let before = ENTERED.load(SeqCst);
        if pending {
            // Self-directed: the signal arrives before `assert` returns and is left
            // pending, since this processor is at the line's level.
            m.assert_interrupt(VECTOR);
        }
        let t0 = Instant::now();
        ntspin::lower_irql(old);
        sum += t0.elapsed();
        assert_eq!(
            ENTERED.load(SeqCst) - before,
            u64::from(pending),
            "the pending interrupt replays inside the lower"
        );
    }
    sum
}

criterion_group!(benches, delivery, replay);

/// Median and p99 (µs) of a sorted sample.
fn percentiles(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.5), at(0.99))
}

fn latency_table() {
    const N: usize = 4000;
    println!(
        "\ninterrupt delivery latency, {N} single deliveries each, raw and ntspin alternating (µs):"
    );
    println!(
        "  {:<6} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8}",
        "target", "raw med", "raw p99", "ntspin med", "ntspin p99", "med ×", "p99 ×"
    );
    for busy in [false, true] {
        let (raw, nt) = with_target(busy, |t| {
            let (mut raw, mut nt) = (Vec::with_capacity(N), Vec::with_capacity(N));
            for i in 0..N {
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(200)); // let the target settle
                }
                // Alternate which goes first, so neither always follows the other.
                if i % 2 == 0 {
                    raw.push(t.raw());
                    nt.push(t.ntspin());
                } else {
                    nt.push(t.ntspin());
                    raw.push(t.raw());
                }
            }
            (raw, nt)
        });
        let ((rm, rp), (nm, np)) = (percentiles(raw), percentiles(nt));
        println!(
            "  {:<6} {:>10.2} {:>10.2} {:>12.2} {:>12.2} {:>8.2} {:>8.2}",
            if busy { "busy" } else { "idle" },
            rm,
            rp,
            nm,
            np,
            nm / rm,
            np / rp
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    latency_table();
}

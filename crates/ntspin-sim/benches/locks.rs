//! Lock comparison, in one run: the atomic floor (`AtomicBool` swap + store), ntspin
//! `SpinLock` (IRQL raise and lower included), ntspin in-stack queued lock, `spin::Mutex`,
//! `parking_lot::Mutex` and `std::sync::Mutex`.
//!
//! - `uncontended/*`: one processor, verifier off (and the ntspin locks again with the
//!   standard verifier);
//! - `contended2/*`: two processors hammering one lock (time per acquisition, all
//!   processors together);
//! - oversubscription (after criterion, fixed time): the queued lock with 2 and with 4
//!   virtual processors on the host's cores — throughput ratio and per-processor shares.
//!   Not a criterion group: criterion sizes its runs from a warm-up, which a lock whose
//!   throughput collapses would turn into an endless run.
//!
//! Every sample runs on a `Machine` processor (`iter_custom`), so ntspin pays its real HAL
//! costs. After criterion, the bench prints each median as a ratio to the floor measured in
//! the same run, and a fixed-time throughput/fairness check of the oversubscribed queued
//! lock.
//!
//! Run: `cargo bench -p ntspin-sim --bench locks`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};

use ntspin::{LockQueueHandle, QueuedSpinLock, SpinLock};
use ntspin_sim::{Machine, Verifier};

mod common;

/// A lock under test: one acquire/release pair with an empty critical section.
trait Bench: Sync {
    fn name(&self) -> &'static str;
    fn run(&self, iters: u64);
}

struct Floor(AtomicBool);
impl Bench for Floor {
    fn name(&self) -> &'static str {
        "floor_atomic_swap_store"
    }
    fn run(&self, iters: u64) {
        for _ in 0..iters {
            while self.0.swap(true, Ordering::Acquire) {
                std::hint::spin_loop();
            }
            black_box(&self.0);
            self.0.store(false, Ordering::Release);
        }
    }
}

struct Nt(SpinLock<u64>);
impl Bench for Nt {
    fn name(&self) -> &'static str {
        "ntspin_spinlock"
    }
    fn run(&self, iters: u64) {
        for _ in 0..iters {
            let g = self.0.lock();
            black_box(&*g);
        }
    }
}

struct NtQueued(QueuedSpinLock<u64>);
impl Bench for NtQueued {
    fn name(&self) -> &'static str {
        "ntspin_queued"
    }
    fn run(&self, iters: u64) {
        let mut h = pin!(LockQueueHandle::new());
        for _ in 0..iters {
            let g = self.0.lock(h.as_mut());
            black_box(&*g);
        }
    }
}

struct Spin(spin::Mutex<u64>);
impl Bench for Spin {
    fn name(&self) -> &'static str {
        "spin_mutex"
    }
    fn run(&self, iters: u64) {
        for _ in 0..iters {
            black_box(&*self.0.lock());
        }
    }
}

struct Pl(parking_lot::Mutex<u64>);
impl Bench for Pl {
    fn name(&self) -> &'static str {
        "parking_lot_mutex"
    }
    fn run(&self, iters: u64) {
        for _ in 0..iters {
            black_box(&*self.0.lock());
        }
    }
}

struct StdM(std::sync::Mutex<u64>);
impl Bench for StdM {
    fn name(&self) -> &'static str {
        "std_mutex"
    }
    fn run(&self, iters: u64) {
        for _ in 0..iters {
            black_box(&*self.0.lock().unwrap());
        }
    }
}

fn all_locks() -> Vec<Box<dyn Bench>> {
    vec![
        Box::new(Floor(AtomicBool::new(false))),
        Box::new(Nt(SpinLock::new(0))),
        Box::new(NtQueued(QueuedSpinLock::new(0))),
        Box::new(Spin(spin::Mutex::new(0))),
        Box::new(Pl(parking_lot::Mutex::new(0))),
        Box::new(StdM(std::sync::Mutex::new(0))),
    ]
}

/// Time for `iters` acquisitions on each of the machine's processors at once, divided by
/// the processor count: the time per acquisition of the whole machine.
fn timed_on(m: &Machine, lock: &dyn Bench, iters: u64) -> Duration {
    let start = Instant::now();
    for r in m.run_each(|_| lock.run(iters)) {
        r.expect("bench routine bug-checked");
    }
    start.elapsed() / m.processors() as u32
}

fn uncontended(c: &mut Criterion) {
    for (group, verifier) in [
        ("uncontended", Verifier::Off),
        ("uncontended_verifier", Verifier::Standard),
    ] {
        let m = Machine::builder().processors(1).verifier(verifier).build();
        let mut g = c.benchmark_group(group);
        for lock in all_locks() {
            if verifier == Verifier::Standard && !lock.name().starts_with("ntspin") {
                continue;
            }
            g.bench_function(lock.name(), |b| {
                b.iter_custom(|iters| {
                    m.run_on(0, || {
                        let t = Instant::now();
                        lock.run(iters);
                        t.elapsed()
                    })
                    .expect("bench routine bug-checked")
                })
            });
        }
        g.finish();
    }
}

fn contended(c: &mut Criterion) {
    let m = Machine::builder()
        .processors(2)
        .verifier(Verifier::Off)
        .build();
    let mut g = c.benchmark_group("contended2");
    for lock in all_locks() {
        g.bench_function(lock.name(), |b| {
            b.iter_custom(|iters| timed_on(&m, lock.as_ref(), iters))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = uncontended, contended
}

/// When this bench process started: estimates older than this are from another run.
static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// This run's median for `group/name` (see `common::median_ns`).
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let since = *STARTED.get().expect("set at the start of main");
    common::median_ns(group, name, since)
}

fn ratio_table() {
    println!("\nratios to the floor measured in this run (median time per acquisition):");
    let floor = "floor_atomic_swap_store";
    for group in ["uncontended", "uncontended_verifier", "contended2"] {
        let base = match median_ns(
            if group == "uncontended_verifier" {
                "uncontended"
            } else {
                group
            },
            floor,
        ) {
            Some(b) => b,
            None => continue,
        };
        println!("  {group} (floor {base:.2} ns)");
        for lock in all_locks() {
            if let Some(t) = median_ns(group, lock.name()) {
                println!("    {:<26} {:>9.2} ns  {:>6.2}x", lock.name(), t, t / base);
            }
        }
    }
}

/// Fixed-time throughput of the queued lock with 2 and with 4 processors, and each
/// processor's share (starvation check), with a short critical section.
fn oversubscription_check() {
    fn run(n: usize, secs: f64) -> (f64, Vec<u64>) {
        let m = Machine::builder()
            .processors(n)
            .verifier(Verifier::Off)
            .build();
        let lock = QueuedSpinLock::new(0u64);
        let stop = AtomicBool::new(false);
        let total = AtomicU64::new(0);
        let start = Instant::now();
        let counts = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_secs_f64(secs));
                stop.store(true, Ordering::Relaxed);
            });
            m.run_each(|_| {
                let mut h = pin!(LockQueueHandle::new());
                let mut mine = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    *lock.lock(h.as_mut()) += 1;
                    mine += 1;
                }
                total.fetch_add(mine, Ordering::Relaxed);
                mine
            })
        });
        let el = start.elapsed().as_secs_f64();
        (
            total.load(Ordering::Relaxed) as f64 / el,
            counts.into_iter().map(|r| r.unwrap()).collect(),
        )
    }
    let (two, _) = run(2, 2.0);
    let (four, shares) = run(4, 2.0);
    let min = *shares.iter().min().unwrap();
    let max = *shares.iter().max().unwrap();
    println!(
        "\noversubscription (queued lock, {} host cores):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  2 processors: {:>12.0} acquisitions/s", two);
    println!(
        "  4 processors: {:>12.0} acquisitions/s = {:.1}% of 2-processor throughput",
        four,
        100.0 * four / two
    );
    println!(
        "  per-processor acquisitions with 4: {shares:?} (min/max = {:.2})",
        min as f64 / max as f64
    );
}

fn main() {
    STARTED.get_or_init(std::time::SystemTime::now);
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio_table();
    oversubscription_check();
}

//! `ntspin bench`: the lock comparison, side by side in one process, as time per
//! acquire/release pair and its ratio to the atomic floor measured in the same run:
//! uncontended (one processor), contended (two processors hammering one lock), and
//! oversubscribed (four virtual processors on the host's cores). Fixed-time cells, verifier
//! off (ntspin's locks pay their real HAL costs on machine processors). For
//! statistically careful figures use the criterion benches (`cargo bench -p ntspin-sim`);
//! this is the quick look.

use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ntspin::interrupt::{Interrupt, InterruptConfig};
use ntspin::{Irql, LockQueueHandle, QueuedSpinLock, SpinLock};
use ntspin_sim::{Machine, Verifier};

/// The scenarios, by processors used.
pub const SCENARIOS: [(&str, usize); 3] = [
    ("uncontended", 1),
    ("contended2", 2),
    ("oversubscribed4", 4),
];

/// The locks compared.
pub const LOCKS: [&str; 7] = [
    "floor_atomic_swap_store",
    "ntspin_spinlock",
    "ntspin_queued",
    "ntspin_interrupt_lock",
    "spin_mutex",
    "parking_lot_mutex",
    "std_mutex",
];

/// One cell: nanoseconds per acquire/release pair (all processors together) and the
/// ratio to the floor in the same scenario.
#[derive(Debug, Clone)]
pub struct Cell {
    pub lock: &'static str,
    pub scenario: &'static str,
    pub ns_per_pair: f64,
    pub ratio: f64,
}

/// Runs every cell for `per_cell`.
pub fn run(per_cell: Duration) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (scenario, cpus) in SCENARIOS {
        let m = Machine::builder()
            .processors(cpus)
            .verifier(Verifier::Off)
            .build();
        let mut floor = None;
        for lock in LOCKS {
            let ns = measure(&m, lock, per_cell);
            let base = *floor.get_or_insert(ns);
            cells.push(Cell {
                lock,
                scenario,
                ns_per_pair: ns,
                ratio: ns / base,
            });
        }
    }
    cells
}

/// Time per pair of `lock` with every processor of `m` hammering it.
fn measure(m: &Machine, lock: &str, per_cell: Duration) -> f64 {
    let floor = AtomicBool::new(false);
    let nt = SpinLock::new(0u64);
    let queued = QueuedSpinLock::new(0u64);
    let spin_m = spin::Mutex::new(0u64);
    let pl = parking_lot::Mutex::new(0u64);
    let std_m = std::sync::Mutex::new(0u64);
    let intr = Box::pin(Interrupt::new(
        InterruptConfig::new(30, Irql::new(5).expect("DIRQL")),
        || false,
    ));
    if lock == "ntspin_interrupt_lock" {
        m.run_on(0, || intr.as_ref().connect().expect("connect"))
            .expect("no bug check");
    }
    let ns = match lock {
        "floor_atomic_swap_store" => hammer(m, per_cell, || {
            while floor.swap(true, Ordering::Acquire) {
                std::hint::spin_loop();
            }
            black_box(&floor);
            floor.store(false, Ordering::Release);
        }),
        "ntspin_spinlock" => hammer(m, per_cell, || *nt.lock() += 1),
        "ntspin_queued" => hammer(m, per_cell, || {
            let mut h = pin!(LockQueueHandle::new());
            *queued.lock(h.as_mut()) += 1;
        }),
        "ntspin_interrupt_lock" => hammer(m, per_cell, || {
            let _g = intr.lock();
            black_box(&intr);
        }),
        "spin_mutex" => hammer(m, per_cell, || *spin_m.lock() += 1),
        "parking_lot_mutex" => hammer(m, per_cell, || *pl.lock() += 1),
        _ => hammer(m, per_cell, || {
            *std_m.lock().unwrap_or_else(|e| e.into_inner()) += 1
        }),
    };
    if lock == "ntspin_interrupt_lock" {
        m.run_on(0, || intr.disconnect()).expect("no bug check");
    }
    ns
}

/// Every processor of `m` runs `pair` until `per_cell` is over; time per pair, all
/// processors together. Monomorphized per lock, so the loop adds the same few
/// instructions to every cell.
fn hammer(m: &Machine, per_cell: Duration, pair: impl Fn() + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(per_cell);
            stop.store(true, Ordering::Relaxed);
        });
        let r = m.run_each(|_| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    pair();
                }
                n += 64;
            }
            total.fetch_add(n, Ordering::Relaxed);
        });
        assert!(r.iter().all(Result::is_ok), "a bench cell bug-checked");
    });
    start.elapsed().as_nanos() as f64 / total.load(Ordering::Relaxed).max(1) as f64
}

/// The cells as a table: one row per lock, one column pair per scenario.
pub fn table(cells: &[Cell]) {
    print!("{:<26}", "lock (ns/pair, ×floor)");
    for (scenario, _) in SCENARIOS {
        print!(" {:>24}", scenario);
    }
    println!();
    for lock in LOCKS {
        print!("{lock:<26}");
        for (scenario, _) in SCENARIOS {
            let c = cells
                .iter()
                .find(|c| c.lock == lock && c.scenario == scenario);
            match c {
                Some(c) => print!(" {:>14.2} ns {:>5.2}×", c.ns_per_pair, c.ratio),
                None => print!(" {:>24}", "-"),
            }
        }
        println!();
    }
}

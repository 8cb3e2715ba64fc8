//! Runs `N` uncontended acquire/release pairs of one lock (or `N` nestings of three locks,
//! `nest3_*`) on a machine processor (verifier off unless the name says otherwise), for
//! instruction counting under callgrind (`ci/instructions.sh` runs it with
//! `N = 0` and a large `N` and reports the difference per pair: a figure that machine noise
//! does not move).
//!
//! ```text
//! cargo run --release -p ntspin-sim --example lock_instructions -- ntspin_spinlock 100000
//! ```

use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};

use ntspin::{LockQueueHandle, QueuedSpinLock, SpinLock};
use ntspin_sim::{LockOrder, Machine, Verifier};

/// The locks this example knows, by the names the benchmark uses.
const LOCKS: [&str; 10] = [
    "floor_atomic_swap_store",
    "ntspin_spinlock",
    "ntspin_spinlock_verifier",
    "nest3_off",
    "nest3_standard_no_order",
    "nest3_standard",
    "ntspin_queued",
    "spin_mutex",
    "parking_lot_mutex",
    "std_mutex",
];

/// Kept out of `run`, and on `SpinLock<u32>`, so the single-lock loop on `SpinLock<u64>`
/// compiles as it would on its own (a guard type dropped in several places gets its drop
/// glue outlined, which would be counted as the lock's cost).
#[inline(never)]
fn nest3(n: u64) {
    let (a, b, c) = (
        SpinLock::new(0u32),
        SpinLock::new(0u32),
        SpinLock::new(0u32),
    );
    for _ in 0..n {
        let ga = a.lock();
        let gb = b.lock_at_dpc_level(ga.dpc_level());
        let gc = c.lock_at_dpc_level(ga.dpc_level());
        black_box((&*ga, &*gb, &*gc));
    }
}

fn run(name: &str, n: u64) {
    match name {
        "floor_atomic_swap_store" => {
            let f = AtomicBool::new(false);
            for _ in 0..n {
                while f.swap(true, Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                black_box(&f);
                f.store(false, Ordering::Release);
            }
        }
        "ntspin_spinlock" | "ntspin_spinlock_verifier" => {
            let l = SpinLock::new(0u64);
            for _ in 0..n {
                black_box(&*l.lock());
            }
        }
        "nest3_off" | "nest3_standard_no_order" | "nest3_standard" => nest3(n),
        "ntspin_queued" => {
            let l = QueuedSpinLock::new(0u64);
            let mut h = pin!(LockQueueHandle::new());
            for _ in 0..n {
                black_box(&*l.lock(h.as_mut()));
            }
        }
        "spin_mutex" => {
            let l = spin::Mutex::new(0u64);
            for _ in 0..n {
                black_box(&*l.lock());
            }
        }
        "parking_lot_mutex" => {
            let l = parking_lot::Mutex::new(0u64);
            for _ in 0..n {
                black_box(&*l.lock());
            }
        }
        "std_mutex" => {
            let l = std::sync::Mutex::new(0u64);
            for _ in 0..n {
                black_box(&*l.lock().unwrap());
            }
        }
        _ => unreachable!("checked in main"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!(
            "usage: lock_instructions <lock> <iterations>\nlocks: {}",
            LOCKS.join(", ")
        );
        std::process::exit(2);
    };
    if !LOCKS.contains(&name.as_str()) {
        eprintln!("unknown lock {name:?}; known: {}", LOCKS.join(", "));
        std::process::exit(2);
    }
    let verifier = if name.ends_with("_verifier") || name.starts_with("nest3_standard") {
        Verifier::Standard
    } else {
        Verifier::Off
    };
    let order = if name == "nest3_standard_no_order" {
        LockOrder::off()
    } else {
        LockOrder::default()
    };
    let m = Machine::builder()
        .processors(1)
        .verifier(verifier)
        .lock_order(order)
        .build();
    m.run_on(0, || run(&name, n))
        .expect("no bug check in an uncontended loop");
}

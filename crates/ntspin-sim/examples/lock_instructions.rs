//! Runs `N` uncontended acquire/release pairs of one lock on a verifier-off machine
//! processor, for instruction counting under callgrind (`ci/instructions.sh` runs it with
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
use ntspin_sim::{Machine, Verifier};

/// The locks this example knows, by the names the benchmark uses.
const LOCKS: [&str; 7] = [
    "floor_atomic_swap_store",
    "ntspin_spinlock",
    "ntspin_spinlock_verifier",
    "ntspin_queued",
    "spin_mutex",
    "parking_lot_mutex",
    "std_mutex",
];

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
    let verifier = if name.ends_with("_verifier") {
        Verifier::Standard
    } else {
        Verifier::Off
    };
    let m = Machine::builder().processors(1).verifier(verifier).build();
    m.run_on(0, || run(&name, n))
        .expect("no bug check in an uncontended loop");
}

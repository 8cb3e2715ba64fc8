//! What the verifier costs, in one run:
//!
//! - `verifier_nest3/*`: steady-state nesting of three `SpinLock`s (A, then B and C at
//!   DISPATCH under A), uncontended on one processor, with the verifier off, standard
//!   without lock-order tracking, and standard with it. Printed afterwards as ratios to
//!   "off" from this run (targets: standard ≤ 3×, with lock order ≤ 5×).
//! - scaling (after criterion, fixed work): 10 000 distinct locks and 1 000 000
//!   acquisitions at nesting depth 3, in one consistent global order, with lock-order
//!   tracking: time, the graph's size and its estimated heap use, and the process's
//!   resident-memory growth.
//!
//! Run: `cargo bench -p ntspin-sim --bench verifier`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};

use ntspin::SpinLock;
use ntspin_sim::{LockOrder, Machine, Verifier};

mod common;
use common::median_ns;

/// The three configurations, by bench name.
const CONFIGS: [(&str, Verifier, bool); 3] = [
    ("off", Verifier::Off, false),
    ("standard_no_order", Verifier::Standard, false),
    ("standard", Verifier::Standard, true),
];

fn machine(verifier: Verifier, order: bool) -> Machine {
    let order = if order {
        LockOrder::default()
    } else {
        LockOrder::off()
    };
    Machine::builder()
        .processors(1)
        .verifier(verifier)
        .lock_order(order)
        .build()
}

fn nest3(a: &SpinLock<u64>, b: &SpinLock<u64>, c: &SpinLock<u64>, iters: u64) {
    for _ in 0..iters {
        let ga = a.lock();
        let gb = b.lock_at_dpc_level(ga.dpc_level());
        let gc = c.lock_at_dpc_level(ga.dpc_level());
        black_box((&*ga, &*gb, &*gc));
    }
}

fn nesting(c: &mut Criterion) {
    let mut g = c.benchmark_group("verifier_nest3");
    for (name, verifier, order) in CONFIGS {
        let m = machine(verifier, order);
        let (a, b, l3) = (SpinLock::new(0), SpinLock::new(0), SpinLock::new(0));
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                m.run_on(0, || {
                    let t = Instant::now();
                    nest3(&a, &b, &l3, iters);
                    t.elapsed()
                })
                .expect("no bug check in a consistent nesting")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = nesting
}

/// The process's resident memory in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 10 000 locks, 1 000 000 acquisitions at depth 3 in one global order (ascending index),
/// each triple drawn near the previous lock so the graph has many distinct edges.
fn scaling() {
    const LOCKS: usize = 10_000;
    const ACQUISITIONS: usize = 1_000_000;
    let m = machine(Verifier::Standard, true);
    let locks: Vec<SpinLock<u64>> = (0..LOCKS).map(|_| SpinLock::new(0)).collect();
    let before = rss_kib();
    let start = Instant::now();
    m.run_on(0, || {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..ACQUISITIONS / 3 {
            let i = (next() % (LOCKS as u64 - 40)) as usize;
            let j = i + 1 + (next() % 16) as usize;
            let k = j + 1 + (next() % 16) as usize;
            let gi = locks[i].lock();
            let gj = locks[j].lock_at_dpc_level(gi.dpc_level());
            let gk = locks[k].lock_at_dpc_level(gi.dpc_level());
            black_box((&*gi, &*gj, &*gk));
        }
    })
    .expect("one global order: no report");
    let took = start.elapsed();
    let after = rss_kib();
    let stats = m.lock_order_stats().expect("tracking is on");
    println!("\nscaling: {LOCKS} locks, {ACQUISITIONS} acquisitions at depth 3, lock order on");
    println!(
        "  time {:.2} s ({:.0} ns per acquisition)",
        took.as_secs_f64(),
        took.as_nanos() as f64 / ACQUISITIONS as f64
    );
    println!(
        "  graph: {} locks, {} edges, {} chains validated, {} backtraces kept, ~{:.1} MiB estimated{}",
        stats.locks,
        stats.edges,
        stats.chains_validated,
        stats.backtraces,
        stats.approx_bytes as f64 / (1 << 20) as f64,
        if stats.capped { " (CAPPED)" } else { "" }
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  resident memory grew {:.1} MiB",
            a.saturating_sub(b) as f64 / 1024.0
        );
    }
}

fn main() {
    let since = std::time::SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    let off = median_ns("verifier_nest3", "off", since);
    println!(
        "\nverifier cost, steady-state nesting of 3 locks (median, ratio to off in this run):"
    );
    for (name, _, _) in CONFIGS {
        match (median_ns("verifier_nest3", name, since), off) {
            (Some(t), Some(base)) => {
                println!("  {name:<18} {t:>9.1} ns  {:>5.2}x", t / base)
            }
            _ => println!("  {name:<18} (not measured in this run)"),
        }
    }
    println!("  targets: standard_no_order <= 3x, standard <= 5x");
    scaling();
}

//! `ntspin`: driver synchronization code on a simulated machine.
//!
//! With no arguments (`cargo run --release`) it runs the demonstration: virtual processors
//! at PASSIVE_LEVEL contend for an executive spin lock, an in-stack queued spin lock and a
//! lock taken at DISPATCH_LEVEL under another (the AtDpcLevel pattern), moving "requests"
//! between a submission queue and a completion list. At the end every count is checked
//! exactly, and the verifier is shown catching a deliberate bug.

use std::collections::VecDeque;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ntspin::{Irql, LockQueueHandle, QueuedSpinLock, SpinLock, current_irql};
use ntspin_sim::{Machine, Verifier};

/// Runs contending virtual processors on a simulated NT machine and checks every count.
#[derive(Parser, Debug)]
#[command(name = "ntspin", version, about)]
struct Args {
    /// Virtual processors (may exceed the host's cores).
    #[arg(long, default_value_t = 4)]
    processors: usize,
    /// How long the processors contend.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Run with the verifier off (like a retail kernel).
    #[arg(long)]
    no_verifier: bool,
}

/// A request moving through the "driver": submitted, then completed by whichever
/// processor dequeues it.
struct Request {
    id: u64,
    payload: u64,
}

/// State behind the executive spin lock: the submission queue.
#[derive(Default)]
struct Submissions {
    queue: VecDeque<Request>,
    next_id: u64,
}

/// State behind the queued lock: completion totals.
#[derive(Default)]
struct Completions {
    count: u64,
    checksum: u64,
}

#[derive(Default, Clone, Copy)]
struct PerCpu {
    executive: u64,
    submitted: u64,
    completed: u64,
    checksum: u64,
    dpc_level_nested: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let verifier = if args.no_verifier {
        Verifier::Off
    } else {
        Verifier::Standard
    };
    let m = Machine::builder()
        .processors(args.processors)
        .verifier(verifier)
        .build();
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ntspin: {} virtual processors on {host} host cores, verifier {:?}, {:.1} s",
        m.processors(),
        m.verifier(),
        args.seconds
    );

    let submissions = SpinLock::new(Submissions::default());
    let completions = QueuedSpinLock::new(Completions::default());
    let nested = SpinLock::new(0u64);
    let stop = AtomicBool::new(false);
    let start = Instant::now();

    let results = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
            stop.store(true, Ordering::Relaxed);
        });
        m.run_each(|cpu| {
            let mut mine = PerCpu::default();
            let mut handle = pin!(LockQueueHandle::new());
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ cpu as u64;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 2 == 0 {
                    // Submit: KeAcquireSpinLock on the submission queue.
                    let mut q = submissions.lock();
                    mine.executive += 1;
                    let id = q.next_id;
                    q.next_id += 1;
                    q.queue.push_back(Request {
                        id,
                        payload: rng >> 8,
                    });
                    mine.submitted += 1;
                } else {
                    // Complete: dequeue under the executive lock, then, still at DISPATCH,
                    // count under a nested AtDpcLevel lock, then total under the queued lock.
                    let req = {
                        let mut q = submissions.lock();
                        mine.executive += 1;
                        let r = q.queue.pop_front();
                        if r.is_some() {
                            *nested.lock_at_dpc_level(q.dpc_level()) += 1;
                            mine.dpc_level_nested += 1;
                        }
                        r
                    };
                    if let Some(r) = req {
                        let mut c = completions.lock(handle.as_mut());
                        c.count += 1;
                        c.checksum = c.checksum.wrapping_add(r.payload ^ r.id);
                        mine.completed += 1;
                        mine.checksum = mine.checksum.wrapping_add(r.payload ^ r.id);
                    }
                }
            }
            assert_eq!(current_irql(), Irql::PASSIVE);
            mine
        })
    });
    let elapsed = start.elapsed().as_secs_f64();

    let mut per_cpu = Vec::new();
    for (cpu, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => per_cpu.push(p),
            Err(report) => {
                eprintln!("processor {cpu} bug-checked:\n{report:#}");
                return ExitCode::FAILURE;
            }
        }
    }

    // Drain what is still queued (the processors stopped mid-stream).
    let left = submissions.lock().queue.len() as u64;
    let sum = |f: fn(&PerCpu) -> u64| per_cpu.iter().map(f).sum::<u64>();
    let submitted = sum(|p| p.submitted);
    let completed = sum(|p| p.completed);
    let checksum = per_cpu.iter().fold(0u64, |a, p| a.wrapping_add(p.checksum));
    let mut handle = pin!(LockQueueHandle::new());
    let totals = completions.lock(handle.as_mut());
    let nested_total = *nested.lock();
    let next_id = submissions.lock().next_id;

    println!(
        "\n{:>4} {:>12} {:>12} {:>12}",
        "cpu", "submitted", "completed", "nested@DPC"
    );
    for (i, p) in per_cpu.iter().enumerate() {
        println!(
            "{i:>4} {:>12} {:>12} {:>12}",
            p.submitted, p.completed, p.dpc_level_nested
        );
    }
    let executive = sum(|p| p.executive);
    let ops = executive + completed + nested_total;
    println!(
        "\n{ops} lock acquisitions in {elapsed:.2} s ({:.2} M/s): executive {executive}, queued {completed}, AtDpcLevel {nested_total}",
        ops as f64 / elapsed / 1e6,
    );

    let checks = [
        ("ids handed out = requests submitted", next_id == submitted),
        (
            "submitted = completed + still queued",
            submitted == completed + left,
        ),
        (
            "queued-lock total = completions counted per processor",
            totals.count == completed,
        ),
        (
            "checksum of completed requests matches",
            totals.checksum == checksum,
        ),
        (
            "AtDpcLevel nested count = completions",
            nested_total == completed,
        ),
    ];
    drop(totals);
    let mut ok = true;
    println!();
    for (what, good) in checks {
        println!("  [{}] {what}", if good { "ok" } else { "FAILED" });
        ok &= good;
    }

    // The verifier at work: a deliberate SL-RECURSE on a fresh machine.
    let demo = Machine::new(1);
    let lock = SpinLock::new(());
    let caught = demo.run_on(0, || {
        let _g = lock.lock();
        let _again = lock.lock();
    });
    match caught {
        Err(report) => {
            println!("\nverifier demonstration (deliberate recursive acquire):\n{report}")
        }
        Ok(()) => {
            println!("\nverifier demonstration: the recursive acquire was NOT caught");
            ok = false;
        }
    }

    if ok {
        println!("all counts verified; no violations in the contention run");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

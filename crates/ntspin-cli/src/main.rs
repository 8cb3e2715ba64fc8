//! `ntspin`: driver synchronization code on a simulated machine.
//!
//! - `ntspin demo` (also what `cargo run --release` runs): a sample DMA driver on a
//!   simulated machine. Submitters at PASSIVE on every processor queue requests under an
//!   executive and a queued spin lock, and program each device's descriptor under its
//!   interrupt spin lock (`KeSynchronizeExecution`). The device's hardware thread
//!   transforms the data and raises its interrupt. The ISR acknowledges and takes the
//!   completions and queues a DPC. The DPC takes them inside `synchronize`, updates the
//!   request list under an AtDpcLevel lock, checks each result end to end, and wakes the
//!   submitter. A passive-level (KMDF-style) sensor is read by queue callbacks with
//!   `WdfInterruptTryToAcquireLock`. It ends with a summary and the verifier's verdict.
//!   `--json` prints the summary as one JSON object; `--inject RULE` plants one bug for
//!   the verifier to catch. Exit status: 0 all verified and no violations, 1 a count
//!   mismatch, 2 bad arguments (clap's), 3 the verifier stopped the machine.
//! - `ntspin rules`: every rule the verifier checks, with its bug check code and parameters.
//! - `ntspin bench`: ntspin's spin lock, queued lock and interrupt lock against the atomic
//!   floor, `spin`, `parking_lot` and `std`, uncontended, contended and oversubscribed; a
//!   table or `--json` (`lock`, `scenario`, `ns_per_pair`, `ratio_to_floor` per cell).
//!
//! JSON fields (`--json`), one object:
//!
//! ```text
//! processors, devices, seconds (wall time),
//! submitted, completed, verified (requests), interrupts_asserted, isr_runs, dpc_runs,
//! sensor: { samples, reads, busy },
//! per_processor: [ { processor, isr_runs, dpc_runs,
//!                    percent_passive, percent_dispatch, percent_dirql (sampled) } ],
//! locks: [ { name, acquisitions, contended (found held), hold_p50_ns, hold_p99_ns,
//!            hold_max_ns, dirql_holds_over_25us (null for non-DIRQL locks) } ],
//! verdict: "no violations" | "bug check",
//! bug_check: null | { code, name, parameters (4), rule, processor, irql, message,
//!                     rule_text, param_meanings (4), held: [ { lock, kind, irql,
//!                     location, acquiring } ], details: [ lock_order_cycle |
//!                     irql_inversion | hang | note, as ntspin_sim::ReportDetail ] }
//! ```

mod bench;
mod demo;
mod stats;
mod trace;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ntspin::Rule;
use ntspin_sim::Verifier;

/// Driver synchronization code on a simulated NT machine, with a verifier.
#[derive(Parser, Debug)]
#[command(name = "ntspin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The demo's options when no subcommand is given.
    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the sample DMA driver on a simulated machine (the default).
    Demo(DemoArgs),
    /// List every rule the verifier checks.
    Rules,
    /// Compare ntspin's locks with spin, parking_lot and std, side by side.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct BenchArgs {
    /// Seconds per cell (lock × scenario).
    #[arg(long, default_value_t = 0.3)]
    seconds_per_cell: f64,
    /// Print the cells as one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct DemoArgs {
    /// Virtual processors (may exceed the host's cores).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    processors: u32,
    /// How long the submitters run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// DMA devices (one interrupt line and DIRQL each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=demo::MAX_DEVICES as i64))]
    devices: u32,
    /// Seed for the submitters' request streams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Plant one deliberate bug, by RULES.md id, for the verifier to catch.
    #[arg(long, value_name = "RULE", value_parser = clap::builder::PossibleValuesParser::new(demo::INJECTABLE))]
    inject: Option<String>,
    /// Run with the verifier off (like a retail kernel).
    #[arg(long)]
    no_verifier: bool,
    /// Write a Chrome trace-event file (Perfetto, chrome://tracing): ISR, DPC and
    /// interrupt-lock slices per processor, IRQL counters, device events.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rules) => {
            rules();
            ExitCode::SUCCESS
        }
        Some(Command::Demo(a)) => run_demo(&a),
        Some(Command::Bench(b)) => {
            let per_cell = std::time::Duration::from_secs_f64(b.seconds_per_cell.clamp(0.01, 60.0));
            if !b.json {
                println!(
                    "ntspin bench: {} s per cell, verifier off, ratios to the atomic floor in the same scenario",
                    per_cell.as_secs_f64()
                );
            }
            let cells = bench::run(per_cell);
            if b.json {
                let v: Vec<_> = cells
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "lock": c.lock, "scenario": c.scenario,
                            "ns_per_pair": c.ns_per_pair, "ratio_to_floor": c.ratio,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(v));
            } else {
                bench::table(&cells);
            }
            ExitCode::SUCCESS
        }
        None => run_demo(&cli.demo),
    }
}

fn rules() {
    println!(
        "{:<18} bug check (RULES.md; SIM: ntspin's own mapping)",
        "rule"
    );
    for r in Rule::ALL {
        let code = ntspin_sim::rules_table::RULES
            .iter()
            .find(|spec| spec.id == r.id())
            .map_or("—", |spec| spec.bug_check);
        println!("{:<18} {code}", r.id());
    }
}

fn run_demo(a: &DemoArgs) -> ExitCode {
    let inject = a.inject.as_deref().map(|name| {
        *demo::INJECTABLE
            .iter()
            .find(|n| **n == name)
            .expect("clap validated the name")
    });
    let o = demo::Options {
        processors: a.processors as usize,
        seconds: a.seconds.max(0.1),
        devices: a.devices as usize,
        seed: a.seed,
        verifier: if a.no_verifier {
            Verifier::Off
        } else {
            Verifier::Standard
        },
        inject,
        progress: !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        trace: a.trace.is_some(),
    };
    if !a.json {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "ntspin demo: {} virtual processors on {host} host cores, {} DMA devices + 1 \
             passive-level sensor, verifier {:?}, {:.1} s{}",
            o.processors,
            o.devices,
            o.verifier,
            o.seconds,
            inject.map_or(String::new(), |r| format!(", injecting {r}"))
        );
    }
    let s = demo::run(&o);
    if let (Some(path), Some(t)) = (&a.trace, &s.trace) {
        let written = std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .and_then(|mut f| t.write(&mut f));
        match written {
            Ok(()) if !a.json => println!(
                "trace written to {} ({} events dropped: buffers full)",
                path.display(),
                t.dropped()
            ),
            Ok(()) => {}
            Err(e) => {
                eprintln!("ntspin: cannot write the trace to {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let clean = s.bug_check.is_none()
        && s.submitted == s.completed
        && s.completed == s.verified
        && s.submitted > 0;
    if a.json {
        println!("{}", json(&s));
    } else {
        table(&s);
    }
    if s.bug_check.is_some() {
        ExitCode::from(3)
    } else if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn table(s: &demo::Summary) {
    println!("\n{:<28} {:>12}", "requests submitted", s.submitted);
    println!("{:<28} {:>12}", "requests completed", s.completed);
    println!("{:<28} {:>12}", "requests verified", s.verified);
    println!(
        "{:<28} {:>12}",
        "interrupts asserted", s.interrupts_asserted
    );
    println!("{:<28} {:>12}", "ISR runs", s.isr_runs);
    println!("{:<28} {:>12}", "DPC runs", s.dpc_runs);
    let sensor = format!(
        "{} / {} / {}",
        s.sensor_samples, s.sensor_reads, s.sensor_busy
    );
    println!("{:<28} {:>12}", "sensor samples/reads/busy", sensor);
    println!(
        "\n{:<10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "processor", "ISR runs", "DPC runs", "PASSIVE", "DISPATCH", "DIRQL"
    );
    for (cpu, (isrs, dpcs)) in s.per_processor.iter().enumerate() {
        let (p, d, h) = s
            .irql_share
            .get(cpu)
            .map_or((0.0, 0.0, 0.0), |x| x.percent());
        println!("{cpu:<10} {isrs:>10} {dpcs:>10} {p:>8.1}% {d:>8.1}% {h:>8.1}%");
    }
    println!(
        "\n{:<32} {:>10} {:>10} {:>9} {:>9} {:>9}  DIRQL > 25 µs",
        "lock", "acquired", "contended", "hold p50", "p99", "max"
    );
    for l in &s.locks {
        let us = |ns: u64| format!("{:.2}µs", ns as f64 / 1000.0);
        let line = format!(
            "{:<32} {:>10} {:>9.1}% {:>9} {:>9} {:>9}  {}",
            l.name,
            l.acquisitions,
            100.0 * l.contended as f64 / l.acquisitions.max(1) as f64,
            us(l.p50_ns),
            us(l.p99_ns),
            us(l.max_ns),
            l.over_25us.map_or(String::new(), |n| n.to_string())
        );
        println!("{}", line.trim_end());
    }
    println!(
        "\n{:.2} s, {:.0} requests/s",
        s.seconds,
        s.completed as f64 / s.seconds.max(1e-9)
    );
    match &s.bug_check {
        None if s.submitted == s.completed && s.completed == s.verified => println!(
            "submitted = completed = verified = {}; no violations",
            s.submitted
        ),
        None => println!("MISMATCH: the counts above must be equal"),
        Some(report) => println!("\nthe verifier stopped the machine:\n{report:#}"),
    }
}

fn json(s: &demo::Summary) -> String {
    use serde_json::json;
    let bug = s.bug_check.as_ref().map(|r| {
        let full = serde_json::to_value(r).unwrap_or_default();
        json!({
            "code": r.bug.code,
            "name": ntspin::bugcheck::code::name(r.bug.code),
            "parameters": r.bug.params,
            "rule": r.bug.rule.id(),
            "processor": r.processor,
            "irql": r.irql.raw(),
            "message": r.message,
            "rule_text": full["rule_text"],
            "param_meanings": full["param_meanings"],
            "held": full["held"],
            "details": full["details"],
        })
    });
    let v = json!({
        "processors": s.processors,
        "devices": s.devices,
        "seconds": s.seconds,
        "submitted": s.submitted,
        "completed": s.completed,
        "verified": s.verified,
        "interrupts_asserted": s.interrupts_asserted,
        "isr_runs": s.isr_runs,
        "dpc_runs": s.dpc_runs,
        "sensor": {
            "samples": s.sensor_samples,
            "reads": s.sensor_reads,
            "busy": s.sensor_busy,
        },
        "per_processor": s.per_processor.iter().enumerate().map(|(i, (a, b))| {
            let (p, d, h) = s.irql_share.get(i).map_or((0.0, 0.0, 0.0), |x| x.percent());
            json!({
                "processor": i, "isr_runs": a, "dpc_runs": b,
                "percent_passive": p, "percent_dispatch": d, "percent_dirql": h,
            })
        }).collect::<Vec<_>>(),
        "locks": s.locks.iter().map(|l| json!({
            "name": l.name, "acquisitions": l.acquisitions, "contended": l.contended,
            "hold_p50_ns": l.p50_ns, "hold_p99_ns": l.p99_ns, "hold_max_ns": l.max_ns,
            "dirql_holds_over_25us": l.over_25us,
        })).collect::<Vec<_>>(),
        "verdict": if s.bug_check.is_some() { "bug check" } else { "no violations" },
        "bug_check": bug,
    });
    v.to_string()
}

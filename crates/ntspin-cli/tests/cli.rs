//! The `ntspin` command as a user runs it: the demo's JSON summary, every `--inject` rule
//! caught with its code and a non-zero exit, a bad rule name answered with the valid ones,
//! and `ntspin rules`.

use std::process::Command;

use ntspin_sim as _; // the HAL, for `ntspin::Rule`

fn ntspin(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ntspin"))
        .args(args)
        .output()
        .expect("run ntspin");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn demo_json_reports_every_request_verified_and_no_violations() {
    let (code, out, err) = ntspin(&["demo", "--json", "--seconds", "3", "--processors", "3"]);
    assert_eq!(code, Some(0), "stderr: {err}");
    let v = json(&out);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("field {k}: {v}"));
    assert!(n("submitted") > 0);
    assert_eq!(n("submitted"), n("completed"));
    assert_eq!(n("completed"), n("verified"));
    assert!(n("isr_runs") > 0 && n("dpc_runs") > 0);
    assert!(n("interrupts_asserted") >= n("submitted"));
    assert_eq!(v["processors"], 3);
    assert_eq!(v["per_processor"].as_array().map(Vec::len), Some(3));
    assert!(v["sensor"]["samples"].as_u64() > Some(0));
    assert_eq!(v["verdict"], "no violations");
    assert!(v["bug_check"].is_null());
    // Sampled IRQL shares add up; every lock was used and its percentiles are ordered.
    for p in v["per_processor"].as_array().unwrap() {
        let sum: f64 = ["percent_passive", "percent_dispatch", "percent_dirql"]
            .iter()
            .map(|k| p[*k].as_f64().unwrap())
            .sum();
        assert!((sum - 100.0).abs() < 0.01, "{p}");
    }
    let locks = v["locks"].as_array().unwrap();
    assert!(locks.len() >= 4);
    for l in locks {
        let (a, p50, p99, max) = (
            l["acquisitions"].as_u64().unwrap(),
            l["hold_p50_ns"].as_u64().unwrap(),
            l["hold_p99_ns"].as_u64().unwrap(),
            l["hold_max_ns"].as_u64().unwrap(),
        );
        assert!(a > 0, "{l}");
        assert!(p50 <= p99 && p99 <= max + max / 4 + 1, "{l}");
    }
    // The request lists see an add and a remove per request.
    let lists: u64 = locks
        .iter()
        .filter(|l| l["name"].as_str().unwrap().starts_with("request list"))
        .map(|l| l["acquisitions"].as_u64().unwrap())
        .sum();
    assert_eq!(lists, 2 * n("submitted"));
}

#[test]
fn every_injected_rule_is_caught_with_its_code_and_a_nonzero_exit() {
    for (rule, code, p1) in [
        ("SL-RECURSE", 0x0F, None),
        ("SL-ACQ-IRQL", 0xC4, Some(0x42)),
        ("ISL-PASSIVE", 0x13B, Some(1)),
        ("IRQL-LOWER-HELD", 0xC4, Some(0x31)),
        ("WDF-STATE", 0x10D, Some(0x9)),
        ("SL-ORDER", 0xC4, Some(0x1001)),
        ("LD-IRQ", 0xC4, Some(0x1001)),
    ] {
        let (exit, out, err) = ntspin(&["demo", "--json", "--seconds", "1", "--inject", rule]);
        assert_eq!(exit, Some(3), "{rule}: stderr {err}");
        let v = json(&out);
        assert_eq!(v["verdict"], "bug check", "{rule}");
        let b = &v["bug_check"];
        assert_eq!(b["rule"], rule);
        assert_eq!(b["code"], code, "{rule}");
        if let Some(p1) = p1 {
            assert_eq!(b["parameters"][0], p1, "{rule}");
        }
        // The report's findings come along: the cycle for SL-ORDER, the two IRQLs for
        // LD-IRQ, the explained arguments for all.
        assert_eq!(b["param_meanings"].as_array().unwrap().len(), 4, "{rule}");
        match rule {
            "SL-ORDER" => {
                assert_eq!(b["details"][0]["type"], "lock_order_cycle", "{b}");
                assert_eq!(b["details"][0]["edges"].as_array().unwrap().len(), 2);
                assert_eq!(b["parameters"][3], 0);
            }
            "LD-IRQ" => {
                assert_eq!(b["details"][0]["type"], "irql_inversion", "{b}");
                assert_eq!(b["details"][0]["high"]["irql"], 5);
                assert_eq!(b["details"][0]["low"]["irql"], 2);
                assert_eq!(b["parameters"][3], 1);
            }
            _ => {}
        }
    }
}

#[test]
fn a_bad_inject_name_lists_the_valid_ones() {
    let (exit, _, err) = ntspin(&["demo", "--inject", "SL-NOPE"]);
    assert_eq!(exit, Some(2));
    for valid in ["SL-RECURSE", "ISL-PASSIVE", "WDF-STATE"] {
        assert!(err.contains(valid), "{err}");
    }
}

#[test]
fn rules_lists_every_rule_id() {
    let (exit, out, _) = ntspin(&["rules"]);
    assert_eq!(exit, Some(0));
    for r in ntspin::Rule::ALL {
        assert!(out.contains(r.id()), "{} missing", r.id());
    }
    // With its code.
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_string();
    assert!(line("SL-RECURSE ").contains("0x0F (lock, 0, 0, 0)"));
    assert!(line("ISL-PASSIVE ").contains("0x13B"));
    assert!(line("WDF-HANDLE ").contains("0x10D (0x5, handle, 0x1027, 0)"));
}

#[test]
fn bench_json_has_every_lock_in_every_scenario_against_the_floor() {
    let (exit, out, err) = ntspin(&["bench", "--json", "--seconds-per-cell", "0.02"]);
    assert_eq!(exit, Some(0), "{err}");
    let v = json(&out);
    let cells = v.as_array().expect("an array of cells");
    assert_eq!(cells.len(), 7 * 3);
    for c in cells {
        assert!(c["ns_per_pair"].as_f64().unwrap() > 0.0, "{c}");
        if c["lock"] == "floor_atomic_swap_store" {
            assert_eq!(c["ratio_to_floor"].as_f64(), Some(1.0));
        }
    }
    for lock in [
        "ntspin_spinlock",
        "ntspin_queued",
        "ntspin_interrupt_lock",
        "std_mutex",
    ] {
        assert_eq!(cells.iter().filter(|c| c["lock"] == lock).count(), 3);
    }
}

/// The trace is well-formed JSON in the trace-event format: per track, timestamps never go
/// back and every begin has its end; it has ISR, DPC and lock slices and IRQL counters.
#[test]
fn demo_trace_is_valid_trace_event_json() {
    let path = std::env::temp_dir().join(format!("ntspin-trace-{}.json", std::process::id()));
    let p = path.to_str().unwrap();
    let (exit, _, err) = ntspin(&["demo", "--seconds", "0.5", "--trace", p]);
    assert_eq!(exit, Some(0), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("JSON");
    std::fs::remove_file(&path).ok();
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let mut last: std::collections::HashMap<u64, f64> = Default::default();
    let mut open: std::collections::HashMap<u64, Vec<String>> = Default::default();
    let mut names = std::collections::HashSet::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap();
        if ph == "M" {
            continue;
        }
        let (tid, ts) = (e["tid"].as_u64().unwrap(), e["ts"].as_f64().unwrap());
        assert!(
            ts >= *last.get(&tid).unwrap_or(&0.0),
            "time went back on track {tid}"
        );
        last.insert(tid, ts);
        let name = e["name"].as_str().unwrap().to_string();
        match ph {
            "B" => open.entry(tid).or_default().push(name.clone()),
            "E" => assert_eq!(open.entry(tid).or_default().pop(), Some(name.clone())),
            "C" | "i" => {}
            other => panic!("unexpected phase {other}"),
        }
        names.insert(if ph == "C" { "IRQL".to_string() } else { name });
    }
    assert!(open.values().all(Vec::is_empty), "unmatched begins");
    for want in ["ISR", "DPC", "interrupt lock held", "IRQL"] {
        assert!(names.contains(want), "no {want} events");
    }
}

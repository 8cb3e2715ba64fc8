//! Helpers shared by the interrupt test suites.

use std::time::{Duration, Instant};

use ntspin_sim::{BugCheckReport, Machine};

/// Waits (bounded) until `f` holds; fails the test instead of hanging.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// The machine's bug check once it has one (bounded wait: interrupt-context bug checks
/// arrive asynchronously).
#[allow(dead_code)] // not every suite that includes this module needs it
pub fn bug_check_of(m: &Machine) -> BugCheckReport {
    eventually("the bug check", || m.bug_check().is_some());
    m.bug_check().unwrap()
}

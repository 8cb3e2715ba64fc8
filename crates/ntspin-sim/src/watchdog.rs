//! Watchdogs: SL-HOLDTIME (one ISR, one DPC, or one continuous stay at or above DISPATCH
//! lasting too long) and DL-HANG (a processor spinning on a lock whose owner never
//! releases), as Windows' DPC watchdog and Driver Verifier's deadlock detection do.
//!
//! Time is each processor thread's **CPU time** (`CLOCK_THREAD_CPUTIME_ID`, or the
//! thread's clock read from the watchdog thread), so a processor whose OS thread is
//! descheduled — contention with other processors, more processors than host cores — does
//! not age. A spinning waiter's own CPU time only grows while it runs, and it gives its
//! core back between spins, so oversubscription delays a hang report but never makes one.
//!
//! - ISR and DPC durations and the stay at DISPATCH and above are watched by one thread
//!   per machine, which samples every processor's clock; the victim stops at its next
//!   ntspin call (a routine that never calls ntspin again cannot be stopped from outside).
//! - A spinning waiter times its own wait and raises DL-HANG itself, naming every waiting
//!   processor and the owners of the locks they wait for.
//! - ISRs longer than 25 µs and DPCs longer than 100 µs are counted as statistics
//!   ([`Machine::watchdog_stats`](crate::Machine::watchdog_stats)).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize};
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ntspin::bugcheck::code;
use ntspin::{BugCheck, Irql, Rule};

use crate::machine::MachineShared;
use crate::processor::{HeldState, Processor};
use crate::report::{BugCheckReport, ReportDetail, Waiter};

/// Watchdog limits (defaults from `RULES.md`), for
/// [`MachineBuilder::watchdog`](crate::MachineBuilder::watchdog). Times are processor
/// (thread CPU) time.
///
/// ```
/// use std::time::Duration;
/// use ntspin_sim::{Machine, Watchdog};
/// let m = Machine::builder()
///     .processors(1)
///     .watchdog(Watchdog { dpc: Duration::from_millis(50), ..Watchdog::default() })
///     .build();
/// assert_eq!(m.watchdog().dpc, Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchdog {
    /// Watch at all (default `true`; only with the verifier on).
    pub enabled: bool,
    /// One service routine (default 1 s).
    pub isr: Duration,
    /// One DPC routine (default 1 s).
    pub dpc: Duration,
    /// One continuous stay at or above DISPATCH_LEVEL (default 5 s).
    pub dispatch: Duration,
    /// One spin on a lock whose owner does not release (default 10 s).
    pub hang: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            enabled: true,
            isr: Duration::from_secs(1),
            dpc: Duration::from_secs(1),
            dispatch: Duration::from_secs(5),
            hang: Duration::from_secs(10),
        }
    }
}

/// Duration statistics of one processor, from
/// [`Machine::watchdog_stats`](crate::Machine::watchdog_stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WatchdogStats {
    /// Service routines that ran longer than 25 µs of processor time.
    pub isrs_over_25us: u64,
    /// The longest service routine, in nanoseconds of processor time.
    pub isr_max_ns: u64,
    /// DPC routines that ran longer than 100 µs of processor time.
    pub dpcs_over_100us: u64,
    /// The longest DPC routine, in nanoseconds of processor time.
    pub dpc_max_ns: u64,
}

/// ISR statistics threshold (`RULES.md`: ISRs should run under 25 µs).
pub(crate) const ISR_NOTE_NS: u64 = 25_000;
/// DPC statistics threshold (DPCs should run under 100 µs).
pub(crate) const DPC_NOTE_NS: u64 = 100_000;
/// Spins between two looks at the clock in a spin-wait.
pub(crate) const HANG_CHECK_SPINS: u32 = 4096;

/// The running time of one kind of routine (service routines, or DPC routines) on one
/// processor, in its CPU time: the routine running now, and statistics.
#[derive(Default)]
pub(crate) struct RoutineClock {
    /// CPU-time start of the routine running now (0: none).
    start: AtomicU64,
    /// Routines that ran longer than the kind's threshold.
    long: AtomicU64,
    /// The longest run, in nanoseconds.
    max: AtomicU64,
}

impl RoutineClock {
    /// A routine starts: returns its start time and the start of the one it interrupted
    /// (nested routines count toward the outer one's time, as on Windows).
    pub(crate) fn begin(&self) -> (u64, u64) {
        let t = self_cpu_ns();
        (t, self.start.swap(t, Relaxed))
    }

    /// The routine begun at `start` (over `outer`) ends; a run over `note_ns`
    /// ([`ISR_NOTE_NS`], [`DPC_NOTE_NS`]) is counted.
    pub(crate) fn end(&self, (start, outer): (u64, u64), note_ns: u64) {
        self.start.store(outer, Relaxed);
        let ns = self_cpu_ns().saturating_sub(start);
        if ns > note_ns {
            self.long.fetch_add(1, Relaxed);
        }
        self.max.fetch_max(ns, Relaxed);
    }
}

/// One processor's watchdog state (atomics: the watchdog thread reads it).
#[derive(Default)]
pub(crate) struct ProcessorWatch {
    /// The processor thread's CPU clock, readable from other threads; `has_clock` says it
    /// is set.
    clock: AtomicI32,
    has_clock: AtomicBool,
    /// The service routines and the DPC routines that run on this processor.
    pub(crate) isr: RoutineClock,
    pub(crate) dpc: RoutineClock,
    /// Bumped whenever the IRQL drops below DISPATCH: a stay at DISPATCH or above that
    /// sees the same value twice was continuous in between.
    pub(crate) lowered: AtomicU64,
    /// The watchdog stopped the machine for this processor, which runs in interrupt
    /// context: it freezes at its next ntspin call instead of going on.
    pub(crate) freeze_in_interrupt: AtomicBool,
    /// The current spin-wait: CPU time at its first look, and what progress looked like
    /// then (the lock's owner and how many releases that owner had made).
    spin_start: AtomicU64,
    spin_progress: AtomicUsize,
    /// Releases this processor has made (its progress, for other processors' DL-HANG).
    pub(crate) releases: AtomicUsize,
}

impl ProcessorWatch {
    pub(crate) fn stats(&self) -> WatchdogStats {
        WatchdogStats {
            isrs_over_25us: self.isr.long.load(Relaxed),
            isr_max_ns: self.isr.max.load(Relaxed),
            dpcs_over_100us: self.dpc.long.load(Relaxed),
            dpc_max_ns: self.dpc.max.load(Relaxed),
        }
    }

    /// Called on the processor's own thread when it starts.
    pub(crate) fn attach_clock(&self) {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `pthread_self` has no preconditions.
        let me = unsafe { libc::pthread_self() };
        // SAFETY: `me` is this live thread; `id` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(me, &mut id) } == 0 {
            self.clock.store(id, Relaxed);
            self.has_clock.store(true, SeqCst);
        }
    }

    pub(crate) fn detach_clock(&self) {
        self.has_clock.store(false, SeqCst);
    }

    /// The processor's CPU time now (its own clock, from any thread), 0 if unknown.
    fn cpu_ns(&self) -> u64 {
        if !self.has_clock.load(SeqCst) {
            return 0;
        }
        clock_ns(self.clock.load(Relaxed))
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock id only returns an error.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's CPU time (async-signal-safe: `clock_gettime` is).
fn self_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// From a spin-wait (every [`HANG_CHECK_SPINS`] spins): DL-HANG when this processor has
/// spun past the limit on a lock whose word has not changed. Async-signal-safe (no
/// allocation): the caller builds the report with [`hang_report`] in thread context.
pub(crate) fn spin_check(p: &Processor, spins: u32) -> Option<BugCheck> {
    let limit = p.machine().watchdog.hang;
    let (lock, _) = waiting_for(p)?;
    let m = p.machine();
    // Progress: the owner changed, or released something since the last look (a lock
    // handed back and forth by one busy owner is contention, not a hang).
    let progress = match crate::verifier::owner_processor(m, lock) {
        Some(o) => {
            let releases = m
                .processors
                .get(o as usize)
                .map_or(0, |q| q.watch.releases.load(Relaxed));
            (o as usize)
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(releases)
                .wrapping_add(1)
        }
        None => crate::verifier::word_now(lock),
    };
    let now = self_cpu_ns();
    let w = &p.watch;
    if spins == HANG_CHECK_SPINS || w.spin_progress.load(Relaxed) != progress {
        // A new wait, or the owner made progress: start over.
        w.spin_start.store(now, Relaxed);
        w.spin_progress.store(progress, Relaxed);
        return None;
    }
    let elapsed = now.saturating_sub(w.spin_start.load(Relaxed));
    if elapsed <= limit.as_nanos() as u64 {
        return None;
    }
    Some(BugCheck::new(
        code::DPC_WATCHDOG_VIOLATION,
        [
            1,
            (elapsed / 1_000_000) as usize,
            limit.as_millis() as usize,
            0,
        ],
        Rule::DL_HANG,
    ))
}

/// The DL-HANG report: `bug` on `p`, naming every waiting processor and the owners.
pub(crate) fn hang_report(p: &Processor, bug: BugCheck) -> BugCheckReport {
    BugCheckReport::on(p, bug).with_detail(ReportDetail::Hang {
        waiters: waiters(p.machine()),
    })
}

/// The lock `p` is acquiring (its newest entry still acquiring) and where.
fn waiting_for(p: &Processor) -> Option<(usize, Option<String>)> {
    let n = p.held_count().min(crate::processor::MAX_HELD);
    (0..n).rev().map(|i| p.held(i)).find_map(|h| {
        (h.state == HeldState::Acquiring).then(|| (h.lock, h.site.map(ToString::to_string)))
    })
}

/// Every processor of `m` that is acquiring a lock, with the lock's owner.
fn waiters(m: &MachineShared) -> Vec<Waiter> {
    m.processors
        .iter()
        .filter_map(|q| {
            let (lock, location) = waiting_for(q)?;
            Some(Waiter {
                processor: q.index,
                lock,
                owner: crate::verifier::owner_processor(m, lock),
                location,
            })
        })
        .collect()
}

/// The watchdog thread of a machine: samples every processor's clock.
pub(crate) struct WatchdogThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchdogThread {
    pub(crate) fn start(m: &Arc<MachineShared>) -> WatchdogThread {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = Arc::downgrade(m);
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("ntspin-watchdog".into())
            .spawn(move || watch(weak, flag))
            .expect("spawn the watchdog thread");
        WatchdogThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for WatchdogThread {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What the watchdog remembers of one processor's stay at DISPATCH or above.
#[derive(Clone, Copy, Default)]
struct Stay {
    /// `lowered` when the stay was first seen, and the CPU time then.
    lowered: u64,
    since: u64,
    active: bool,
}

fn watch(m: Weak<MachineShared>, stop: Arc<AtomicBool>) {
    let mut stays: Vec<Stay> = Vec::new();
    while !stop.load(SeqCst) {
        let Some(m) = m.upgrade() else { return };
        let period = (m.watchdog.isr.min(m.watchdog.dpc).min(m.watchdog.dispatch) / 20)
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        if m.dead.load(SeqCst) {
            return;
        }
        stays.resize(m.processors.len(), Stay::default());
        for (p, stay) in m.processors.iter().zip(stays.iter_mut()) {
            if let Some(report) = sample(&m, p, stay) {
                if p.in_handler.load(SeqCst) > 0 {
                    p.watch.freeze_in_interrupt.store(true, SeqCst);
                }
                m.stop(report);
                return;
            }
        }
        drop(m);
        thread::park_timeout(period);
    }
}

/// One look at processor `p`: a report if a limit is passed.
fn sample(m: &MachineShared, p: &Processor, stay: &mut Stay) -> Option<BugCheckReport> {
    if p.frozen.load(Relaxed) || !p.watch.has_clock.load(SeqCst) {
        *stay = Stay::default();
        return None;
    }
    let w = &p.watch;
    let now = w.cpu_ns();
    let cfg = &m.watchdog;
    let over = |start: u64, limit: Duration| {
        (start != 0 && now > start && now - start > limit.as_nanos() as u64).then(|| now - start)
    };
    let single = over(w.isr.start.load(Relaxed), cfg.isr)
        .map(|e| (e, cfg.isr))
        .or_else(|| over(w.dpc.start.load(Relaxed), cfg.dpc).map(|e| (e, cfg.dpc)));
    if let Some((elapsed, limit)) = single {
        return Some(holdtime(p, 0, elapsed, limit));
    }
    let lowered = w.lowered.load(SeqCst);
    if p.irql() < Irql::DISPATCH || p.idle.load(SeqCst) {
        *stay = Stay::default();
        return None;
    }
    if !stay.active || stay.lowered != lowered {
        *stay = Stay {
            lowered,
            since: now,
            active: true,
        };
        return None;
    }
    let elapsed = now.saturating_sub(stay.since);
    (elapsed > cfg.dispatch.as_nanos() as u64).then(|| holdtime(p, 1, elapsed, cfg.dispatch))
}

fn holdtime(p: &Processor, kind: usize, elapsed_ns: u64, limit: Duration) -> BugCheckReport {
    let bug = BugCheck::new(
        code::DPC_WATCHDOG_VIOLATION,
        [
            kind,
            (elapsed_ns / 1_000_000) as usize,
            limit.as_millis() as usize,
            0,
        ],
        Rule::SL_HOLDTIME,
    );
    let mut r = BugCheckReport::on(p, bug);
    r.backtrace = Arc::new(std::backtrace::Backtrace::disabled());
    let what = match (kind, p.in_dpc.load(Relaxed) > 0) {
        (1, _) => "one continuous stay at or above DISPATCH_LEVEL",
        (_, true) => "one DPC routine",
        _ => "one service routine",
    };
    r.with_detail(ReportDetail::Note {
        text: format!(
            "found by the watchdog: {what} has used {} ms of processor {}'s time (limit {} ms); the processor stops at its next ntspin call",
            elapsed_ns / 1_000_000,
            p.index,
            limit.as_millis()
        ),
    })
}

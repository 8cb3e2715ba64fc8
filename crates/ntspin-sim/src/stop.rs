//! How a bug check travels: raised on a processor, recorded on its machine, and delivered
//! to the machine's caller — by unwinding the routine (thread context), by stopping the
//! other processors at their next safe HAL call, or, for a processor linked into a lock
//! queue that can neither go on nor unwind, by freezing it. Also the default machine that
//! plain threads attach to, and [`catch_bug_check`] for code running there.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread;

use ntspin::{BugCheck, Irql};

use crate::machine::{Delivery, MachineShared, Verifier};
use crate::processor::{self, Processor};
use crate::report::{BugCheckReport, ReportDetail};

/// Unwind payload: this processor stops because the machine bug-checked.
pub(crate) struct Stop;

/// Most threads attached to the default machine at the same time.
const DEFAULT_SLOTS: usize = 256;

fn default_machine() -> &'static Arc<MachineShared> {
    static DEFAULT: OnceLock<Arc<MachineShared>> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        MachineShared::new(
            Verifier::Standard,
            Delivery::Asynchronous,
            DEFAULT_SLOTS,
            true,
            crate::order::LockOrder::default(),
            crate::watchdog::Watchdog::default(),
        )
    })
}

/// Frees this thread's default-machine slot when the thread ends.
struct DefaultSlot(&'static Processor);

impl Drop for DefaultSlot {
    fn drop(&mut self) {
        processor::set_current(None);
        self.0.reset(Irql::PASSIVE, 0);
        self.0.in_use.store(false, SeqCst);
    }
}

thread_local! {
    static DEFAULT_SLOT: std::cell::RefCell<Option<DefaultSlot>> = const { std::cell::RefCell::new(None) };
}

pub(crate) fn attach_to_default() -> &'static Processor {
    let m: &'static MachineShared = default_machine();
    let p = m
        .processors
        .iter()
        .find(|p| {
            p.in_use
                .compare_exchange(false, true, SeqCst, Relaxed)
                .is_ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "ntspin-sim: more than {DEFAULT_SLOTS} threads use the default machine at once; \
                 build a Machine for large thread counts"
            )
        });
    p.reset(Irql::PASSIVE, 0);
    processor::set_current(Some(p));
    // If the thread is already tearing down its thread-locals the slot is simply kept.
    let _ = DEFAULT_SLOT.try_with(|s| *s.borrow_mut() = Some(DefaultSlot(p)));
    p
}

/// Runs `f` on the current thread and returns the bug check it raised, if any, instead of
/// letting it unwind further. For code on the default machine (plain tests); inside a
/// [`Machine`](crate::Machine) routine the machine's own result carries the bug check.
///
/// The processor's IRQL and held-lock list are restored to what they were at the call.
///
/// ```
/// use ntspin::{RawSpinLock, Rule};
/// let lock = RawSpinLock::new();
/// let err = ntspin_sim::catch_bug_check(|| {
///     let _old = lock.acquire();
///     lock.acquire(); // recursive acquire
/// })
/// .unwrap_err();
/// assert_eq!(err.bug.rule, Rule::SL_RECURSE);
/// assert_eq!(err.bug.params, [lock.addr(), 0, 0, 0]);
/// ```
pub fn catch_bug_check<T>(f: impl FnOnce() -> T) -> Result<T, BugCheckReport> {
    let p = processor::current();
    let (irql, held) = (p.irql(), p.held_count());
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    match r {
        Ok(v) => Ok(v),
        Err(payload) => {
            p.reset(irql, held);
            match payload.downcast::<BugCheckReport>() {
                Ok(report) => Err(*report),
                Err(payload) => match payload.downcast::<Stop>() {
                    Ok(_) => Err(p
                        .machine()
                        .first_bug_check()
                        .expect("a stopped machine has a bug check")),
                    Err(other) => panic::resume_unwind(other),
                },
            }
        }
    }
}

/// Raises a bug check on processor `p`: records it and leaves the routine by unwinding.
///
/// If the thread is already unwinding (a guard's release checked during a panic), it
/// cannot unwind again: the report is recorded (a built machine stops; on the default
/// machine it is printed) and the call returns, so the release completes.
pub(crate) fn raise(p: &Processor, bug: BugCheck) {
    raise_with(p, bug, Vec::new());
}

/// [`raise`] with what the verifier found beyond the parameters (lost in interrupt
/// context, where nothing may allocate).
pub(crate) fn raise_with(p: &Processor, bug: BugCheck, details: Vec<ReportDetail>) {
    if p.in_handler.load(Relaxed) > 0 {
        raise_in_interrupt(p, bug);
    }
    let mut report = BugCheckReport::on(p, bug);
    report.details = details.into();
    raise_report(p, report);
}

/// Raises a report built by the caller (thread context only): as [`raise`].
pub(crate) fn raise_report(p: &Processor, report: BugCheckReport) {
    let m = p.machine();
    if thread::panicking() {
        eprintln!("ntspin: bug check while unwinding:\n{report}");
        if !m.is_default {
            m.stop(report);
        }
        return;
    }
    p.set_stopping(true);
    if m.is_default {
        eprintln!("ntspin: bug check on the default machine:\n{report:#}");
        panic::resume_unwind(Box::new(report));
    }
    m.stop(report);
    panic::resume_unwind(Box::new(Stop));
}

/// A bug check in interrupt context (a service routine or a DPC run by the signal
/// handler): no unwinding across the signal frame, no allocation, no lock. The report goes
/// to the processor's preallocated slot, every processor is asked to stop, and this one
/// freezes, as a CPU does at a bug check. The machine's caller builds the report from the
/// slot (`MachineShared::first_bug_check`). The frozen thread is parked in `pause` for the
/// rest of the process: its stack may be referenced by what it interrupted.
pub(crate) fn raise_in_interrupt(p: &Processor, bug: BugCheck) -> ! {
    p.isr_bug.record(bug, p.irql());
    if !p.machine().is_default {
        p.machine().dead.store(true, SeqCst);
    }
    for other in p.machine().processors.iter() {
        other.request_stop();
    }
    freeze(p)
}

/// Parks processor `p`'s thread for good inside interrupt context (no unwinding through a
/// signal frame): the machine is stopped and its caller is told.
pub(crate) fn freeze(p: &Processor) -> ! {
    p.set_stopping(true);
    p.frozen.store(true, SeqCst);
    loop {
        // SAFETY: `pause` has no preconditions and is async-signal-safe.
        unsafe { libc::pause() };
    }
}

/// Stops this processor because another one bug-checked.
#[cold]
pub(crate) fn stop_here(p: &Processor) {
    // Never from a signal handler: the interrupted thread stops at its own next safe call
    // (unless the watchdog stopped the machine because of this very interrupt context:
    // then it freezes here, as a CPU does at a bug check).
    if p.in_handler.load(Relaxed) > 0 && p.watch.freeze_in_interrupt.load(Relaxed) {
        freeze(p);
    }
    if thread::panicking() || p.stopping.load(Relaxed) || p.in_handler.load(Relaxed) > 0 {
        return;
    }
    p.set_stopping(true);
    panic::resume_unwind(Box::new(Stop));
}

/// How long a processor linked into a lock queue waits for its grant after the machine
/// stopped, before it freezes.
const FREEZE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Called from a queued spin-wait while the machine is stopped. The entry is linked into
/// the queue, so unwinding would leave the predecessor writing into a dead frame; going on
/// needs the owner to release. Owners that unwind through guards do; an owner stopped while
/// holding a raw acquisition never will. After [`FREEZE_AFTER`], freeze: park this thread
/// for good (its stack, and so the queue entry, stays valid), as a bug check freezes a CPU.
/// The machine's caller gets the bug check for this processor without waiting for it.
pub(crate) fn freeze_if_stuck(p: &Processor, spins: u32) {
    thread_local! {
        /// When this wait was first seen stopped, and the spin count then.
        static SINCE: std::cell::Cell<Option<(std::time::Instant, u32)>> =
            const { std::cell::Cell::new(None) };
    }
    // `spins` only grows within one wait; a smaller count is a new wait.
    let since = SINCE.with(|s| match s.get() {
        Some((t, seen)) if seen < spins => t,
        _ => {
            let now = std::time::Instant::now();
            s.set(Some((now, spins)));
            now
        }
    });
    if since.elapsed() < FREEZE_AFTER || p.machine().is_default {
        return;
    }
    p.frozen.store(true, SeqCst);
    loop {
        thread::park();
    }
}

/// Records a continue-mode violation as a live dump.
pub(crate) fn record_live_dump(p: &Processor, bug: BugCheck, details: Vec<ReportDetail>) {
    if p.in_handler.load(Relaxed) > 0 {
        // No allocation in a signal handler: interrupt context stops instead.
        raise_in_interrupt(p, bug);
    }
    let mut report = BugCheckReport::on(p, bug.as_live_dump());
    report.details = details.into();
    p.machine()
        .live_dumps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(report);
}

/// Records a verifier warning (never stops anything). In interrupt context it is dropped:
/// no allocation in a signal handler, and a warning is not worth freezing a processor.
pub(crate) fn record_warning(p: &Processor, bug: BugCheck) {
    if p.in_handler.load(Relaxed) > 0 {
        return;
    }
    let _own = crate::alloc::Exempt::new();
    let report = BugCheckReport::on(p, bug);
    p.machine()
        .warnings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(report);
}

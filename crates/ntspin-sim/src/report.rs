//! Bug-check reports: what the machine's caller gets when a rule is broken — the bug check
//! (code, four parameters, rule), where it happened (processor, IRQL), a message that names
//! the rule and the fix, and a backtrace.

use std::backtrace::Backtrace;
use std::fmt;
use std::sync::Arc;

use ntspin::{BugCheck, Irql, Rule};

/// A bug check as the machine reports it.
///
/// ```
/// use ntspin_sim::Machine;
/// let m = Machine::builder().processors(1).build();
/// let err = m.run_on(0, || ntspin::lower_irql(ntspin::Irql::DISPATCH)).unwrap_err();
/// assert_eq!(err.bug.rule, ntspin::Rule::IRQL_LOWER);
/// assert_eq!(err.bug.params, [0x31, 0, 2, 0]);
/// assert!(err.to_string().contains("IRQL-LOWER"));
/// ```
#[derive(Clone)]
pub struct BugCheckReport {
    /// The bug check: code, parameters, rule.
    pub bug: BugCheck,
    /// The processor that raised it.
    pub processor: u32,
    /// That processor's IRQL at the offending call.
    pub irql: Irql,
    /// What was wrong and what to do instead.
    pub message: String,
    /// Where (captured at the offending call; symbolized when displayed).
    pub backtrace: Arc<Backtrace>,
}

impl BugCheckReport {
    pub(crate) fn new(bug: BugCheck, processor: u32, irql: Irql) -> BugCheckReport {
        BugCheckReport {
            bug,
            processor,
            irql,
            message: message_for(bug.rule),
            backtrace: Arc::new(Backtrace::force_capture()),
        }
    }
}

impl BugCheckReport {
    /// A report for a bug check raised in interrupt context, built later on the caller's
    /// thread: no backtrace of the interrupted stack is available.
    pub(crate) fn from_interrupt(bug: BugCheck, processor: u32, irql: Irql) -> BugCheckReport {
        BugCheckReport {
            bug,
            processor,
            irql,
            message: format!(
                "{} (Raised in interrupt context: the processor froze; no backtrace.)",
                message_for(bug.rule)
            ),
            backtrace: Arc::new(Backtrace::disabled()),
        }
    }
}

impl fmt::Debug for BugCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BugCheckReport")
            .field("bug", &self.bug)
            .field("processor", &self.processor)
            .field("irql", &self.irql)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for BugCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "*** STOP: {}", self.bug)?;
        writeln!(f, "    processor {} at {}", self.processor, self.irql)?;
        writeln!(f, "    {}", self.message)?;
        if f.alternate() {
            writeln!(f, "backtrace:\n{}", self.backtrace)?;
        }
        Ok(())
    }
}

impl std::error::Error for BugCheckReport {}

/// What each rule means and what to do instead; `true` marks ntspin's own (SIM) mapping.
fn rule_text(rule: Rule) -> (&'static str, &'static str, bool) {
    match rule.id() {
        "IRQL-RAISE" => (
            "KeRaiseIrql was asked to lower the IRQL (or to go above HIGH_LEVEL)",
            "raise only to a level at or above the current one; use KeLowerIrql to go down",
            false,
        ),
        "IRQL-LOWER" => (
            "KeLowerIrql was asked to raise the IRQL (or to go above HIGH_LEVEL)",
            "lower only to the value the matching raise returned",
            false,
        ),
        "IRQL-LOWER-HELD" => (
            "the IRQL dropped below DISPATCH_LEVEL while a spin lock is still held on this processor",
            "release spin locks in the reverse order of acquisition, and release every lock before lowering",
            true,
        ),
        "SL-INIT" => (
            "the spin lock's word holds a value no acquire of this machine put there: the lock was never initialized, or was overwritten",
            "call KeInitializeSpinLock (RawSpinLock::new) before the first use",
            false,
        ),
        "SL-ACQ-IRQL" => (
            "KeAcquireSpinLock was called above DISPATCH_LEVEL",
            "acquire executive spin locks at IRQL <= DISPATCH_LEVEL; at DIRQL use the interrupt spin lock",
            false,
        ),
        "SL-ATDPC-IRQL" => (
            "KeAcquireSpinLockAtDpcLevel was called below DISPATCH_LEVEL",
            "use KeAcquireSpinLock (SpinLock::lock), which raises, or raise to DISPATCH_LEVEL first",
            false,
        ),
        "SL-FROMDPC-IRQL" => (
            "KeReleaseSpinLockFromDpcLevel was called below DISPATCH_LEVEL",
            "release at the IRQL the lock was acquired at; release before lowering",
            false,
        ),
        "SL-REL-IRQL" => (
            "KeReleaseSpinLock was called at an IRQL other than DISPATCH_LEVEL (often a second release of the same lock)",
            "release each acquisition exactly once, while still at DISPATCH_LEVEL",
            false,
        ),
        "SL-OLDIRQL" => (
            "KeReleaseSpinLock was given a NewIrql different from the OldIrql its acquire saved",
            "pass back exactly the OldIrql the acquire returned, one variable per lock",
            true,
        ),
        "SL-RECURSE" | "QSL-RECURSE" => (
            "this processor acquired a spin lock it already holds (spin locks are not recursive: on Windows this spins forever)",
            "do not re-acquire; restructure so the inner path runs with the lock already held",
            false,
        ),
        "SL-NOT-OWNED" => (
            "a spin lock was released that this processor does not hold (free, or held by another processor)",
            "release only locks you acquired, on the processor that acquired them, once",
            false,
        ),
        "SL-MIX" => (
            "ordinary and queued acquires were mixed on one spin lock",
            "use either the KeAcquireSpinLock family or the in-stack queued family on a given lock, never both",
            false,
        ),
        "QSL-ACQ-IRQL" => (
            "KeAcquireInStackQueuedSpinLock was called above DISPATCH_LEVEL",
            "acquire at IRQL <= DISPATCH_LEVEL",
            false,
        ),
        "QSL-ATDPC-IRQL" => (
            "KeAcquireInStackQueuedSpinLockAtDpcLevel was called below DISPATCH_LEVEL",
            "use KeAcquireInStackQueuedSpinLock, which raises, or raise to DISPATCH_LEVEL first",
            false,
        ),
        "QSL-REL-IRQL" => (
            "an in-stack queued spin lock was released at the wrong IRQL (KeReleaseInStackQueuedSpinLock needs exactly DISPATCH_LEVEL, FromDpcLevel at least DISPATCH_LEVEL)",
            "release before lowering, once per acquisition",
            true,
        ),
        "QSL-HANDLE" => (
            "a KLOCK_QUEUE_HANDLE still queued or holding a lock was passed to another acquire",
            "use one handle per acquisition, typically a local variable of the acquiring frame",
            true,
        ),
        "DL-FREE-HELD" => (
            "a spin lock (or a queue handle holding one) was destroyed while held",
            "release every lock before dropping it; never leak a guard",
            false,
        ),
        _ => (
            "a verifier rule was broken",
            "see RULES.md for this rule",
            false,
        ),
    }
}

fn message_for(rule: Rule) -> String {
    let (what, fix, sim) = rule_text(rule);
    let mut m = format!("{rule}: {what}. Fix: {fix}.");
    if sim {
        m.push_str(" (Windows states this rule but does not check it this way; this code and these parameters are ntspin's own mapping.)");
    }
    m
}

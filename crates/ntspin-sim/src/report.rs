//! Bug-check reports: what the machine's caller gets when a rule is broken — the bug check
//! (code, four parameters, rule), where it happened (processor, IRQL), a message that names
//! the rule and the fix, and a backtrace.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::fmt;
use std::sync::Arc;

use ntspin::bugcheck::code;
use ntspin::{BugCheck, Irql, Rule};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::rules_table::{RULES, RuleSpec};

/// A bug check as the machine reports it: the bug check, where it happened, what the
/// processor held, the rule's text from `RULES.md`, what the verifier found (a lock-order
/// cycle, an IRQL inversion, the processors of a hang), and the backtrace.
///
/// `Display` renders it like a debugger's analysis (`{:#}` adds the backtrace);
/// `serde::Serialize` gives the same data to tools.
///
/// ```
/// use ntspin_sim::Machine;
/// let m = Machine::builder().processors(1).build();
/// let err = m.run_on(0, || ntspin::lower_irql(ntspin::Irql::DISPATCH)).unwrap_err();
/// assert_eq!(err.bug.rule, ntspin::Rule::IRQL_LOWER);
/// assert_eq!(err.bug.params, [0x31, 0, 2, 0]);
/// let text = err.to_string();
/// assert!(text.contains("DRIVER_VERIFIER_DETECTED_VIOLATION (c4)"));
/// assert!(text.contains("IRQL-LOWER"));
/// let json = serde_json::to_value(&err).unwrap();
/// assert_eq!(json["code"], 0xC4);
/// assert_eq!(json["rule"], "IRQL-LOWER");
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
    pub message: Box<str>,
    /// The spin locks that processor held (or was acquiring) at the offending call, oldest
    /// first.
    pub held: Box<[HeldLock]>,
    /// What the verifier found beyond the parameters.
    pub details: Box<[ReportDetail]>,
    /// Where (captured at the offending call; symbolized when displayed).
    pub backtrace: Arc<Backtrace>,
}

/// A spin lock a processor holds, in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldLock {
    /// The `KSPIN_LOCK` address.
    pub lock: usize,
    /// How it was acquired (`Raise`, `AtDpc`, `Queued`, `Interrupt`, ...).
    pub kind: String,
    /// The IRQL it is held at.
    pub irql: u8,
    /// Where it was acquired (`file:line:column`), if known.
    pub location: Option<String>,
    /// `true` while the processor is still spinning for it.
    pub acquiring: bool,
}

/// One acquisition the lock-order verifier remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockSite {
    /// The `KSPIN_LOCK` address.
    pub lock: usize,
    /// Where it was acquired, if known.
    pub location: Option<String>,
    /// Where the lock was constructed (its class), if known.
    pub class: Option<String>,
    /// The processor that acquired it.
    pub processor: u32,
    /// The IRQL it was held at.
    pub irql: u8,
}

/// One edge of the lock-order graph: `taken` was acquired while `held` was held.
#[derive(Clone, Serialize)]
pub struct OrderEdge {
    /// The lock already held.
    pub held: LockSite,
    /// The lock acquired under it.
    pub taken: LockSite,
    /// The acquisition ran in interrupt context (no backtrace can be taken there).
    pub in_interrupt: bool,
    /// The backtrace of the acquisition that created the edge (the first edges only,
    /// see `LockOrder::max_backtraces`).
    #[serde(serialize_with = "backtrace_text")]
    pub backtrace: Option<Arc<Backtrace>>,
}

impl fmt::Debug for OrderEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderEdge")
            .field("held", &self.held)
            .field("taken", &self.taken)
            .field("in_interrupt", &self.in_interrupt)
            .field("backtrace", &self.backtrace.as_ref().map(|_| "captured"))
            .finish()
    }
}

impl PartialEq for OrderEdge {
    fn eq(&self, other: &Self) -> bool {
        self.held == other.held && self.taken == other.taken
    }
}

/// A processor in a hang (DL-HANG): what it waits for and who owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiter {
    /// The waiting processor.
    pub processor: u32,
    /// The lock it spins on.
    pub lock: usize,
    /// The processor that owns that lock, if the lock word names one.
    pub owner: Option<u32>,
    /// Where the waiter's acquire was called, if known.
    pub location: Option<String>,
}

/// What a report adds beyond the four parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReportDetail {
    /// SL-ORDER: the cycle the new edge (the last one) closes.
    LockOrderCycle {
        /// The edges, each one's `taken` lock being the next one's `held` lock.
        edges: Vec<OrderEdge>,
    },
    /// LD-IRQ: a lock used at `high.irql` and held at `low.irql` with interrupts enabled
    /// (through `edge` when the lower lock is another one taken under the first).
    IrqlInversion {
        /// The acquisition at the higher IRQL.
        high: LockSite,
        /// The hold at the lower IRQL.
        low: LockSite,
        /// The order edge that joins them, for the edge form of the rule.
        edge: Option<Box<OrderEdge>>,
    },
    /// DL-HANG / SL-HOLDTIME: every waiting processor and the owners of what they wait for.
    Hang {
        /// The waiters.
        waiters: Vec<Waiter>,
    },
    /// Anything else worth saying.
    Note {
        /// The text.
        text: String,
    },
}

impl BugCheckReport {
    pub(crate) fn new(bug: BugCheck, processor: u32, irql: Irql) -> BugCheckReport {
        BugCheckReport {
            bug,
            processor,
            irql,
            message: message_for(bug.rule).into(),
            held: Box::new([]),
            details: Box::new([]),
            backtrace: Arc::new(Backtrace::force_capture()),
        }
    }

    /// A report raised on processor `p`, with what it holds.
    pub(crate) fn on(p: &crate::processor::Processor, bug: BugCheck) -> BugCheckReport {
        let mut r = BugCheckReport::new(bug, p.index, p.irql());
        r.held = held_locks(p).into();
        r
    }

    /// Adds a finding.
    pub(crate) fn with_detail(mut self, d: ReportDetail) -> BugCheckReport {
        let mut v = std::mem::take(&mut self.details).into_vec();
        v.push(d);
        self.details = v.into();
        self
    }

    /// A report for a bug check raised in interrupt context, built later on the caller's
    /// thread: no backtrace of the interrupted stack is available.
    pub(crate) fn from_interrupt(
        bug: BugCheck,
        p: &crate::processor::Processor,
        irql: Irql,
    ) -> BugCheckReport {
        BugCheckReport {
            bug,
            processor: p.index,
            irql,
            message: format!(
                "{} (Raised in interrupt context: the processor froze; no backtrace.)",
                message_for(bug.rule)
            )
            .into(),
            held: held_locks(p).into(),
            details: Box::new([]),
            backtrace: Arc::new(Backtrace::disabled()),
        }
    }

    /// The rule's row of `RULES.md`.
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(1);
    /// let err = m.run_on(0, || ntspin::lower_irql(ntspin::Irql::DISPATCH)).unwrap_err();
    /// assert_eq!(err.rule_spec().unwrap().rule, "KeLowerIrql never raises");
    /// ```
    pub fn rule_spec(&self) -> Option<&'static RuleSpec> {
        let id = self.bug.rule.id();
        RULES.iter().find(|r| r.id == id)
    }

    /// The parameters with what `RULES.md` says each one is, `(value, meaning)`.
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(1);
    /// let err = m.run_on(0, || ntspin::lower_irql(ntspin::Irql::DISPATCH)).unwrap_err();
    /// let args = err.arguments();
    /// assert_eq!(args[0], (0x31, "subcode 0x31".to_string()));
    /// assert_eq!(args[1], (0, "cur".to_string()));
    /// assert_eq!(args[2], (2, "new".to_string()));
    /// ```
    pub fn arguments(&self) -> [(usize, String); 4] {
        let names = self.rule_spec().map(|r| param_names(r.bug_check));
        let verifier = matches!(
            self.bug.code,
            code::DRIVER_VERIFIER_DETECTED_VIOLATION
                | code::DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP
        );
        std::array::from_fn(|i| {
            let v = self.bug.params[i];
            let name = if verifier && i == 0 {
                format!("subcode {v:#x}")
            } else {
                let j = if verifier { i - 1 } else { i };
                names
                    .as_ref()
                    .and_then(|n| n.get(j).cloned())
                    .unwrap_or_default()
            };
            (v, name)
        })
    }
}

/// The names in the first bracket of a bug-check cell ("0xC4/0x42 (cur, lock, 0)"),
/// split at top-level commas.
fn param_names(cell: &str) -> Vec<String> {
    let Some(open) = cell.find('(') else {
        return Vec::new();
    };
    let mut depth = 0;
    let mut cur = String::new();
    let mut out = Vec::new();
    for c in cell[open + 1..].chars() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                out.push(cur.trim().to_string());
                return out;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out
}

fn held_locks(p: &crate::processor::Processor) -> Vec<HeldLock> {
    (0..p.held_count().min(crate::processor::MAX_HELD))
        .map(|i| {
            let h = p.held(i);
            HeldLock {
                lock: h.lock,
                kind: format!("{:?}", h.kind),
                irql: h.level.raw(),
                location: h.site.map(ToString::to_string),
                acquiring: h.state == crate::processor::HeldState::Acquiring,
            }
        })
        .collect()
}

impl fmt::Debug for BugCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BugCheckReport")
            .field("bug", &self.bug)
            .field("processor", &self.processor)
            .field("irql", &self.irql)
            .field("message", &self.message)
            .field("held", &self.held)
            .field("details", &self.details)
            .finish_non_exhaustive()
    }
}

fn fmt_site(f: &mut fmt::Formatter<'_>, s: &LockSite) -> fmt::Result {
    write!(f, "lock {:#x}", s.lock)?;
    if let Some(c) = &s.class {
        write!(f, " (constructed at {c})")?;
    }
    write!(f, " on processor {} at IRQL {}", s.processor, s.irql)?;
    if let Some(l) = &s.location {
        write!(f, ", acquired at {l}")?;
    }
    Ok(())
}

fn fmt_edge(f: &mut fmt::Formatter<'_>, e: &OrderEdge, alternate: bool) -> fmt::Result {
    write!(f, "    holding ")?;
    fmt_site(f, &e.held)?;
    write!(f, "\n      took ")?;
    fmt_site(f, &e.taken)?;
    if e.in_interrupt {
        write!(f, " (in interrupt context)")?;
    }
    writeln!(f)?;
    if alternate && let Some(b) = &e.backtrace {
        writeln!(f, "      backtrace of that acquisition:\n{b}")?;
    }
    Ok(())
}

impl fmt::Display for BugCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alt = f.alternate();
        let name = code::name(self.bug.code).unwrap_or("BUG_CHECK");
        writeln!(f, "*** STOP: {}", self.bug)?;
        writeln!(f)?;
        writeln!(f, "{name} ({:x})", self.bug.code)?;
        writeln!(f, "Arguments:")?;
        for (i, (v, meaning)) in self.arguments().iter().enumerate() {
            writeln!(f, "Arg{}: {v:016x}, {meaning}", i + 1)?;
        }
        writeln!(f)?;
        match self.rule_spec() {
            Some(spec) => {
                writeln!(f, "RULE: {} — {}", spec.id, spec.rule)?;
                writeln!(f, "VIOLATION: {}", spec.violation)?;
            }
            None => writeln!(f, "RULE: {}", self.bug.rule)?,
        }
        writeln!(f, "PROCESSOR: {}  IRQL: {}", self.processor, self.irql)?;
        writeln!(f, "{}", self.message)?;
        if self.held.is_empty() {
            writeln!(f, "LOCKS HELD: none")?;
        } else {
            writeln!(
                f,
                "LOCKS HELD on processor {} (oldest first):",
                self.processor
            )?;
            for h in &self.held {
                write!(f, "    {:#x} {} at IRQL {}", h.lock, h.kind, h.irql)?;
                if let Some(l) = &h.location {
                    write!(f, ", acquired at {l}")?;
                }
                if h.acquiring {
                    write!(f, " (still acquiring)")?;
                }
                writeln!(f)?;
            }
        }
        for d in &self.details {
            match d {
                ReportDetail::LockOrderCycle { edges } => {
                    writeln!(
                        f,
                        "LOCK-ORDER CYCLE ({} locks; the last edge closes it, no deadlock has happened yet):",
                        edges.len()
                    )?;
                    for e in edges {
                        fmt_edge(f, e, alt)?;
                    }
                }
                ReportDetail::IrqlInversion { high, low, edge } => {
                    writeln!(f, "IRQL INVERSION:")?;
                    write!(f, "    used at IRQL {}: ", high.irql)?;
                    fmt_site(f, high)?;
                    write!(
                        f,
                        "\n    held at IRQL {} with interrupts enabled: ",
                        low.irql
                    )?;
                    fmt_site(f, low)?;
                    writeln!(f)?;
                    if let Some(e) = edge {
                        writeln!(f, "    joined by the order edge:")?;
                        fmt_edge(f, e, alt)?;
                    }
                }
                ReportDetail::Hang { waiters } => {
                    writeln!(f, "WAITING PROCESSORS:")?;
                    for w in waiters {
                        write!(
                            f,
                            "    processor {} spins on lock {:#x}",
                            w.processor, w.lock
                        )?;
                        match w.owner {
                            Some(o) => write!(f, " owned by processor {o}")?,
                            None => write!(f, " (owner unknown)")?,
                        }
                        if let Some(l) = &w.location {
                            write!(f, ", acquire called at {l}")?;
                        }
                        writeln!(f)?;
                    }
                }
                ReportDetail::Note { text } => writeln!(f, "NOTE: {text}")?,
            }
        }
        if alt {
            writeln!(f, "STACK:\n{}", self.backtrace)?;
        }
        Ok(())
    }
}

fn backtrace_text<S: Serializer>(b: &Option<Arc<Backtrace>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) if b.status() == BacktraceStatus::Captured => s.serialize_some(&b.to_string()),
        _ => s.serialize_none(),
    }
}

impl Serialize for BugCheckReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BugCheckReport", 13)?;
        st.serialize_field("code", &self.bug.code)?;
        st.serialize_field("code_name", &code::name(self.bug.code))?;
        st.serialize_field("params", &self.bug.params)?;
        let meanings: Vec<String> = self.arguments().into_iter().map(|(_, m)| m).collect();
        st.serialize_field("param_meanings", &meanings)?;
        st.serialize_field("rule", self.bug.rule.id())?;
        st.serialize_field("rule_text", &self.rule_spec().map(|r| r.rule))?;
        st.serialize_field("processor", &self.processor)?;
        st.serialize_field("irql", &self.irql.raw())?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("held", &self.held)?;
        st.serialize_field("details", &self.details)?;
        let bt = (self.backtrace.status() == BacktraceStatus::Captured)
            .then(|| self.backtrace.to_string());
        st.serialize_field("backtrace", &bt)?;
        st.end()
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
        "SL-ORDER" => (
            "this acquisition closes a cycle in the lock-order graph: the locks below have been taken in inconsistent orders, so two processors running these paths at once can deadlock (this run did not)",
            "pick one global order for these locks and take them in that order on every path (release and re-acquire, or restructure so the inner lock is not needed)",
            false,
        ),
        "LD-IRQ" => (
            "a lock is used at a high IRQL (an ISR, or under an interrupt lock) and held elsewhere at a lower IRQL with interrupts enabled: the high-IRQL user can interrupt the holder on its processor and spin forever",
            "take the lock at the highest IRQL it is ever used at everywhere (KeAcquireInterruptSpinLock / KeSynchronizeExecution for data an ISR shares), or use a lock that only the ISR path takes",
            true,
        ),
        "DL-HANG" => (
            "a processor spun on a lock past the watchdog while the owner never released it: a deadlock",
            "see the waiting processors below: each waits for a lock another one holds; take the locks in one order",
            true,
        ),
        "SL-HOLDTIME" => (
            "code ran too long at DISPATCH_LEVEL or above (one ISR, one DPC, or one continuous stay)",
            "do the long work at PASSIVE_LEVEL (a work item or a passive-level interrupt); keep ISRs under 25 us and DPCs under 100 us",
            true,
        ),
        "DL-EXIT-HELD" => (
            "a routine returned while still holding a spin lock",
            "release every lock before returning; never leak a guard",
            false,
        ),
        "PAGED-CODE" => (
            "pageable code (marked with paged_code!() / PAGED_CODE()) ran above APC_LEVEL, where a page fault cannot be served",
            "call it at PASSIVE_LEVEL or APC_LEVEL only, or move it out of the pageable section",
            true,
        ),
        "ALLOC-IRQL" => (
            "memory was allocated above DISPATCH_LEVEL",
            "allocate at or below DISPATCH_LEVEL (nonpaged pool) before raising, and use preallocated storage in ISRs",
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

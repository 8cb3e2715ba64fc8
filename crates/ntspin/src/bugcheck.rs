//! Bug checks: the NT stop codes by name, the verifier rules of `RULES.md` by id, and the
//! [`BugCheck`] value a violation produces.
//!
//! A bug check names its code and its four parameters exactly as Windows (or, for rules
//! marked SIM in `RULES.md`, as ntspin) would, plus the id of the rule that raised it.

use core::ffi::CStr;
use core::fmt;

/// NT bug-check codes used by ntspin.
pub mod code {
    /// `IRQL_NOT_LESS_OR_EQUAL` (0x0A).
    pub const IRQL_NOT_LESS_OR_EQUAL: u32 = 0x0A;
    /// `SPIN_LOCK_ALREADY_OWNED` (0x0F): a processor re-acquires a lock it holds.
    pub const SPIN_LOCK_ALREADY_OWNED: u32 = 0x0F;
    /// `SPIN_LOCK_NOT_OWNED` (0x10): release of a lock the caller does not hold.
    pub const SPIN_LOCK_NOT_OWNED: u32 = 0x10;
    /// `DRIVER_VERIFIER_DETECTED_VIOLATION` (0xC4): P1 is the verifier's subcode.
    pub const DRIVER_VERIFIER_DETECTED_VIOLATION: u32 = 0xC4;
    /// `IRQL_NOT_LESS_OR_EQUAL` as raised for a DPC (0xC8, `IRQL_UNEXPECTED_VALUE`).
    pub const IRQL_UNEXPECTED_VALUE: u32 = 0xC8;
    /// `DRIVER_IRQL_NOT_LESS_OR_EQUAL` (0xD1).
    pub const DRIVER_IRQL_NOT_LESS_OR_EQUAL: u32 = 0xD1;
    /// `WORKER_THREAD_RETURNED_AT_BAD_IRQL` (0xE1).
    pub const WORKER_THREAD_RETURNED_AT_BAD_IRQL: u32 = 0xE1;
    /// `WDF_VIOLATION` (0x10D).
    pub const WDF_VIOLATION: u32 = 0x10D;
    /// `DPC_WATCHDOG_VIOLATION` (0x133).
    pub const DPC_WATCHDOG_VIOLATION: u32 = 0x133;
    /// `PASSIVE_INTERRUPT_ERROR` (0x13B).
    pub const PASSIVE_INTERRUPT_ERROR: u32 = 0x13B;
    /// `DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP` (0x1C4): a violation recorded in
    /// continue mode.
    pub const DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP: u32 = 0x1C4;

    /// The WDK name of a code, if ntspin knows it.
    ///
    /// ```
    /// assert_eq!(ntspin::bugcheck::code::name(0x0F), Some("SPIN_LOCK_ALREADY_OWNED"));
    /// ```
    pub const fn name(code: u32) -> Option<&'static str> {
        Some(match code {
            IRQL_NOT_LESS_OR_EQUAL => "IRQL_NOT_LESS_OR_EQUAL",
            SPIN_LOCK_ALREADY_OWNED => "SPIN_LOCK_ALREADY_OWNED",
            SPIN_LOCK_NOT_OWNED => "SPIN_LOCK_NOT_OWNED",
            DRIVER_VERIFIER_DETECTED_VIOLATION => "DRIVER_VERIFIER_DETECTED_VIOLATION",
            IRQL_UNEXPECTED_VALUE => "IRQL_UNEXPECTED_VALUE",
            DRIVER_IRQL_NOT_LESS_OR_EQUAL => "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
            WORKER_THREAD_RETURNED_AT_BAD_IRQL => "WORKER_THREAD_RETURNED_AT_BAD_IRQL",
            WDF_VIOLATION => "WDF_VIOLATION",
            DPC_WATCHDOG_VIOLATION => "DPC_WATCHDOG_VIOLATION",
            PASSIVE_INTERRUPT_ERROR => "PASSIVE_INTERRUPT_ERROR",
            DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP => {
                "DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP"
            }
            _ => return None,
        })
    }
}

/// Driver Verifier subcodes: P1 of `DRIVER_VERIFIER_DETECTED_VIOLATION` (0xC4).
pub mod verifier {
    /// Raise to a lower IRQL (IRQL-RAISE).
    pub const IRQL_RAISE_LOWER: usize = 0x30;
    /// Lower to a higher IRQL (IRQL-LOWER, IRQL-LOWER-DPC, IRQL-LOWER-HELD).
    pub const IRQL_LOWER_HIGHER: usize = 0x31;
    /// `KeReleaseSpinLock` not at `DISPATCH_LEVEL` (SL-REL-IRQL, QSL-REL-IRQL).
    pub const RELEASE_NOT_AT_DISPATCH: usize = 0x32;
    /// AtDpcLevel acquire below `DISPATCH_LEVEL` (SL-ATDPC-IRQL).
    pub const ACQUIRE_AT_DPC_BELOW_DISPATCH: usize = 0x40;
    /// FromDpcLevel release below `DISPATCH_LEVEL` (SL-FROMDPC-IRQL).
    pub const RELEASE_FROM_DPC_BELOW_DISPATCH: usize = 0x41;
    /// `KeAcquireSpinLock` above `DISPATCH_LEVEL` (SL-ACQ-IRQL).
    pub const ACQUIRE_ABOVE_DISPATCH: usize = 0x42;
    /// Deadlock detection: lock-order cycle or IRQL inversion (SL-ORDER, LD-IRQ).
    pub const DEADLOCK: usize = 0x1001;
    /// Memory allocated above DISPATCH_LEVEL (ALLOC-IRQL).
    pub const ALLOC_ABOVE_DISPATCH: usize = 0x02;
    /// Deadlock detection: uninitialized lock (SL-INIT).
    pub const UNINITIALIZED_LOCK: usize = 0x1002;
    /// Deadlock detection: ordinary and queued acquires mixed on one lock (SL-MIX).
    pub const MIXED_LOCK_MODES: usize = 0x1008;
    /// A queue handle used by two acquisitions at once (QSL-HANDLE).
    pub const QUEUE_HANDLE_REUSED: usize = 0x1009;
    /// A thread ended holding a lock (DL-EXIT-HELD).
    pub const THREAD_EXIT_HOLDING_LOCK: usize = 0x100A;
    /// A lock destroyed while held (DL-FREE-HELD).
    pub const LOCK_FREED_WHILE_HELD: usize = 0x100B;
    /// DDI compliance rule failure (SL-OLDIRQL, ISL-OLDIRQL, SL-OLDIRQL-SHARED).
    pub const DDI_COMPLIANCE: usize = 0x0002_0015;
    /// IoConnectInterrupt(Ex) called above PASSIVE_LEVEL (a DDI-compliance rule).
    pub const CONNECT_NOT_PASSIVE: usize = 0x0002_000B;
    /// A wait above DISPATCH_LEVEL.
    pub const WAIT_ABOVE_DISPATCH: usize = 0x120;
    /// A wait at DISPATCH_LEVEL with no timeout.
    pub const WAIT_AT_DISPATCH_FOREVER: usize = 0x121;
    /// A wait at DISPATCH_LEVEL with a non-zero timeout.
    pub const WAIT_AT_DISPATCH_TIMEOUT: usize = 0x122;
    /// An ISR returned at another IRQL than it was entered at.
    pub const ISR_IRQL_CHANGED: usize = 0x111;
    /// Not a live interrupt object.
    pub const BAD_INTERRUPT_OBJECT: usize = 0xE1;
}

/// A verifier rule of `RULES.md`, by id.
///
/// The id is stored as a static NUL-terminated string, so its address is the
/// "rule-name ptr" some bug checks carry as a parameter ([`Rule::name_ptr`]).
///
/// ```
/// use ntspin::Rule;
/// assert_eq!(Rule::SL_RECURSE.id(), "SL-RECURSE");
/// assert_ne!(Rule::SL_OLDIRQL.name_ptr(), 0);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule(&'static CStr);

macro_rules! rules {
    ($($(#[$m:meta])* $name:ident = $id:literal;)*) => {
        impl Rule {
            $($(#[$m])* pub const $name: Rule = Rule($id);)*
            /// Every rule ntspin knows, in `RULES.md` order.
            pub const ALL: &'static [Rule] = &[$(Rule::$name),*];
        }
    };
}

rules! {
    /// KeRaiseIrql never lowers.
    IRQL_RAISE = c"IRQL-RAISE";
    /// KeLowerIrql never raises.
    IRQL_LOWER = c"IRQL-LOWER";
    /// A DPC routine stays at DISPATCH.
    IRQL_LOWER_DPC = c"IRQL-LOWER-DPC";
    /// No spin lock is held below its level.
    IRQL_LOWER_HELD = c"IRQL-LOWER-HELD";
    /// No blocking at or above DISPATCH.
    IRQL_WAIT = c"IRQL-WAIT";
    /// An ISR returns at the IRQL it entered at.
    IRQL_ISR_EXIT = c"IRQL-ISR-EXIT";
    /// A DPC returns at DISPATCH holding nothing.
    IRQL_DPC_EXIT = c"IRQL-DPC-EXIT";
    /// A work item / passive ISR returns at PASSIVE.
    IRQL_WORKER_EXIT = c"IRQL-WORKER-EXIT";
    /// Pageable code runs at IRQL <= APC.
    PAGED_CODE = c"PAGED-CODE";
    /// No allocation above DISPATCH.
    ALLOC_IRQL = c"ALLOC-IRQL";
    /// KeInitializeSpinLock before first use.
    SL_INIT = c"SL-INIT";
    /// KeAcquireSpinLock at IRQL <= DISPATCH.
    SL_ACQ_IRQL = c"SL-ACQ-IRQL";
    /// AtDpcLevel acquire only at IRQL >= DISPATCH.
    SL_ATDPC_IRQL = c"SL-ATDPC-IRQL";
    /// FromDpcLevel release only at IRQL >= DISPATCH.
    SL_FROMDPC_IRQL = c"SL-FROMDPC-IRQL";
    /// KeReleaseSpinLock at DISPATCH.
    SL_REL_IRQL = c"SL-REL-IRQL";
    /// Release restores the IRQL its acquire saved.
    SL_OLDIRQL = c"SL-OLDIRQL";
    /// One OldIrql location per lock.
    SL_OLDIRQL_SHARED = c"SL-OLDIRQL-SHARED";
    /// Never re-acquire a held lock.
    SL_RECURSE = c"SL-RECURSE";
    /// Release only what you hold.
    SL_NOT_OWNED = c"SL-NOT-OWNED";
    /// Ordinary and queued acquires never mix on one lock.
    SL_MIX = c"SL-MIX";
    /// Locks are taken in one global order.
    SL_ORDER = c"SL-ORDER";
    /// Critical sections at DISPATCH and above are short.
    SL_HOLDTIME = c"SL-HOLDTIME";
    /// In-stack queued acquire at IRQL <= DISPATCH.
    QSL_ACQ_IRQL = c"QSL-ACQ-IRQL";
    /// In-stack queued AtDpcLevel acquire only at IRQL >= DISPATCH.
    QSL_ATDPC_IRQL = c"QSL-ATDPC-IRQL";
    /// In-stack queued release at DISPATCH (FromDpcLevel: at or above).
    QSL_REL_IRQL = c"QSL-REL-IRQL";
    /// A queue handle is used by one acquisition at a time.
    QSL_HANDLE = c"QSL-HANDLE";
    /// Never re-acquire a held queued lock.
    QSL_RECURSE = c"QSL-RECURSE";
    /// Waiters are granted in arrival order.
    QSL_FIFO = c"QSL-FIFO";
    /// KeAcquire/ReleaseInterruptSpinLock need a spin-lock (not passive-level) interrupt.
    ISL_PASSIVE = c"ISL-PASSIVE";
    /// Interrupt-lock callers run at or below the object's SynchronizeIrql.
    ISL_IRQL = c"ISL-IRQL";
    /// An interrupt object came from a successful connect and is still connected.
    ISL_OBJ = c"ISL-OBJ";
    /// Never re-acquire an interrupt spin lock.
    ISL_RECURSE = c"ISL-RECURSE";
    /// Release an interrupt spin lock with the IRQL its acquire returned.
    ISL_OLDIRQL = c"ISL-OLDIRQL";
    /// The ISR, SynchCritSection and interrupt-lock holders exclude each other.
    ISR_EXCLUSION = c"ISR-EXCLUSION";
    /// KeSynchronizeExecution returns the routine's value unchanged.
    SYNC_RESULT = c"SYNC-RESULT";
    /// IoConnectInterrupt(Ex) validates its parameters.
    CONN_PARAMS = c"CONN-PARAMS";
    /// A lock used at IRQL X is never held below X.
    LD_IRQ = c"LD-IRQ";
    /// A DPC is queued at most once at a time.
    DPC_ONCE = c"DPC-ONCE";
    /// A DPC runs at DISPATCH, on the queuing processor unless targeted.
    DPC_LEVEL = c"DPC-LEVEL";
    /// A DPC never waits.
    DPC_WAIT = c"DPC-WAIT";
    /// ExInterlocked Remove/Pop on an empty list returns NULL.
    EXI_EMPTY = c"EXI-EMPTY";
    /// An ExInterlocked lock is used only by ExInterlocked routines above DISPATCH.
    EXI_LOCK = c"EXI-LOCK";
    /// Deadlock detection: a thread never ends holding a lock.
    DL_EXIT_HELD = c"DL-EXIT-HELD";
    /// Deadlock detection: a lock is never destroyed while held.
    DL_FREE_HELD = c"DL-FREE-HELD";
    /// Deadlock detection: a waiting processor makes progress.
    DL_HANG = c"DL-HANG";
    /// KMDF: handles are valid WDFINTERRUPTs.
    WDF_HANDLE = c"WDF-HANDLE";
    /// KMDF: required callbacks are given.
    WDF_NULL = c"WDF-NULL";
    /// KMDF: lock calls only while the interrupt is enabled.
    WDF_STATE = c"WDF-STATE";
    /// KMDF: no second AcquireLock before ReleaseLock, none inside framework-locked callbacks.
    WDF_RECURSE = c"WDF-RECURSE";
    /// KMDF: release only a lock this caller acquired.
    WDF_RELEASE = c"WDF-RELEASE";
    /// KMDF: passive-level interrupt locks are taken at PASSIVE.
    WDF_PASSIVE_IRQL = c"WDF-PASSIVE-IRQL";
    /// KMDF: DIRQL interrupt locks are taken at or below SynchronizeIrql.
    WDF_DIRQL_IRQL = c"WDF-DIRQL-IRQL";
    /// KMDF: TryToAcquireLock is for passive interrupts, at PASSIVE.
    WDF_TRY = c"WDF-TRY";
    /// KMDF: no blocking AcquireLock of a passive interrupt from an arbitrary thread.
    WDF_ARBITRARY = c"WDF-ARBITRARY";
    /// KMDF: a callback returns holding no lock it took.
    WDF_BALANCE = c"WDF-BALANCE";
}

impl Rule {
    /// The rule id as `RULES.md` writes it, e.g. `"SL-RECURSE"`.
    pub fn id(self) -> &'static str {
        // The ids above are ASCII literals.
        self.0.to_str().unwrap_or("?")
    }

    /// The address of the rule's static NUL-terminated name: the "rule-name ptr" parameter.
    pub fn name_ptr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The rule with this id, if ntspin knows it.
    ///
    /// ```
    /// assert_eq!(ntspin::Rule::from_id("SL-MIX"), Some(ntspin::Rule::SL_MIX));
    /// ```
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A bug check: the stop code, its four parameters, and the rule that raised it.
///
/// ```
/// use ntspin::{BugCheck, Rule, bugcheck::code};
/// let bc = BugCheck::new(code::SPIN_LOCK_ALREADY_OWNED, [0x1000, 0, 0, 0], Rule::SL_RECURSE);
/// assert_eq!(bc.to_string(), "0x0000000F SPIN_LOCK_ALREADY_OWNED (0x1000, 0x0, 0x0, 0x0) [SL-RECURSE]");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BugCheck {
    /// The stop code, e.g. [`code::SPIN_LOCK_ALREADY_OWNED`].
    pub code: u32,
    /// Parameters 1 to 4.
    pub params: [usize; 4],
    /// The `RULES.md` rule whose violation raised it.
    pub rule: Rule,
}

impl BugCheck {
    /// A bug check with this code, parameters and rule.
    pub const fn new(code: u32, params: [usize; 4], rule: Rule) -> BugCheck {
        BugCheck { code, params, rule }
    }

    /// A `DRIVER_VERIFIER_DETECTED_VIOLATION` (0xC4) with subcode `sub` and P2..P4.
    pub const fn verifier(sub: usize, p2: usize, p3: usize, p4: usize, rule: Rule) -> BugCheck {
        BugCheck::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [sub, p2, p3, p4],
            rule,
        )
    }

    /// The same violation as a continue-mode live dump (0x1C4, same parameters), as the
    /// verifier records it when told to go on.
    ///
    /// ```
    /// use ntspin::{BugCheck, Rule};
    /// let bc = BugCheck::verifier(0x42, 2, 0x10, 0, Rule::SL_ACQ_IRQL).as_live_dump();
    /// assert_eq!(bc.code, 0x1C4);
    /// assert_eq!(bc.params, [0x42, 2, 0x10, 0]);
    /// ```
    pub const fn as_live_dump(self) -> BugCheck {
        let code = if self.code == code::DRIVER_VERIFIER_DETECTED_VIOLATION {
            code::DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP
        } else {
            self.code
        };
        BugCheck { code, ..self }
    }
}

impl fmt::Display for BugCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p1, p2, p3, p4] = self.params;
        write!(f, "{:#010X}", self.code)?;
        if let Some(name) = code::name(self.code) {
            write!(f, " {name}")?;
        }
        write!(f, " ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x}) [{}]", self.rule)
    }
}

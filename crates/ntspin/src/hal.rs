//! The hardware-abstraction layer: the only door from the lock algorithms to "the machine".
//!
//! One HAL is registered per program with [`set_hal!`](crate::set_hal), in the style of
//! `critical-section`'s `set_impl!`: the macro defines link-time symbols the core calls, so
//! lock types carry no type parameter. A program that registers none fails to link, and the
//! undefined symbol's name says what to do:
//! `ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_irql`.
//!
//! The user-mode machine (`ntspin-sim`) registers itself; depending on it and naming it once
//! (`use ntspin_sim as _;`) is enough.
//!
//! # The fast path
//!
//! Like NT's KPRCB, each processor has a [`Prcb`] the core reads directly: its IRQL, its
//! owner tag, and one `hal_wants` byte. While `hal_wants` is 0 (verifier off, nothing
//! pending, no stop requested) the lock routines raise and lower IRQL themselves and send
//! no events: one thread-local load (`current_prcb`), one byte test, the IRQL byte, and the
//! lock's own atomics. When it is non-zero, every IRQL change and lock step goes through the
//! HAL functions below, which verify, deliver what is pending, and stop the processor at a
//! safe point. With fat LTO (the workspace's release and bench profiles) `current_prcb`
//! inlines too.

use core::panic::Location;
use core::ptr::NonNull;

use crate::dpc::DpcQueue;
use crate::interrupt::KInterrupt;
use crate::sync::{AtomicU8, AtomicU32, Ordering};
use crate::workitem::KWorkItem;
use crate::{BugCheck, Irql, NtStatus};

/// A processor control block: the per-processor state the lock fast path reads without a
/// HAL call. The HAL owns one per processor and hands it out with
/// [`Hal::current_prcb`].
///
/// ```
/// use ntspin::hal::Prcb;
/// let prcb = Prcb::new(0x2 | 1);
/// assert_eq!(prcb.irql(), ntspin::Irql::PASSIVE);
/// assert!(!prcb.hal_wants());
/// prcb.set_hal_wants(1);
/// assert!(prcb.hal_wants());
/// ```
#[doc(alias = "KPRCB")]
#[repr(C)]
pub struct Prcb {
    irql: AtomicU8,
    hal_wants: AtomicU8,
    owner_tag: usize,
    /// The processor's DPC queue (`KPRCB.DpcData`): filled from any processor, drained by
    /// this one at DISPATCH_LEVEL.
    pub(crate) dpcs: DpcQueue,
    /// Passive-level interrupt wait locks held by the code running on this processor.
    wait_locks: AtomicU32,
    /// Depth of "arbitrary thread" contexts (KMDF queue callbacks) on this processor.
    arbitrary: AtomicU32,
}

impl Prcb {
    /// A control block at `PASSIVE_LEVEL` whose ordinary acquires write `owner_tag` into
    /// lock words: odd, so it can never be mistaken for a queue-entry address (queued
    /// mode), and different for every processor.
    ///
    /// # Panics
    ///
    /// If `owner_tag` is even.
    #[cfg(not(loom))]
    pub const fn new(owner_tag: usize) -> Prcb {
        Prcb::with_hal_wants(owner_tag, 0)
    }

    /// A control block whose `hal_wants` starts as `bits` — e.g. a static placeholder for
    /// threads not yet attached to a processor, which must always take the HAL path.
    ///
    /// ```
    /// static UNATTACHED: ntspin::hal::Prcb = ntspin::hal::Prcb::with_hal_wants(1, 0x80);
    /// assert!(UNATTACHED.hal_wants());
    /// ```
    ///
    /// # Panics
    ///
    /// If `owner_tag` is even.
    #[cfg(not(loom))]
    pub const fn with_hal_wants(owner_tag: usize, bits: u8) -> Prcb {
        assert!(owner_tag & 1 == 1, "an owner tag is odd");
        Prcb {
            irql: AtomicU8::new(0),
            hal_wants: AtomicU8::new(bits),
            owner_tag,
            dpcs: DpcQueue::new(),
            wait_locks: AtomicU32::new(0),
            arbitrary: AtomicU32::new(0),
        }
    }

    /// A control block at `PASSIVE_LEVEL` (loom build).
    #[cfg(loom)]
    pub fn new(owner_tag: usize) -> Prcb {
        assert!(owner_tag & 1 == 1, "an owner tag is odd");
        Prcb {
            irql: AtomicU8::new(0),
            hal_wants: AtomicU8::new(0),
            owner_tag,
            dpcs: DpcQueue::new(),
            wait_locks: AtomicU32::new(0),
            arbitrary: AtomicU32::new(0),
        }
    }

    /// How many passive-level interrupt wait locks the code running on this processor
    /// holds. A HAL runs a passive-level service routine over interrupted code only when
    /// this is 0: the routine must never wait for a lock held beneath it on its own stack.
    pub fn wait_locks_held(&self) -> u32 {
        self.wait_locks.load(Ordering::Relaxed)
    }

    /// How deep the code running now is inside contexts marked "arbitrary thread"
    /// ([`wdf::arbitrary_thread`](crate::wdf::arbitrary_thread)).
    pub fn arbitrary_depth(&self) -> u32 {
        self.arbitrary.load(Ordering::Relaxed)
    }

    /// For a HAL running other code (a DPC, a passive-level routine) over the interrupted
    /// code: takes the interrupted code's arbitrary-thread depth away (returns it) so the
    /// inserted code starts unmarked; give it back with
    /// [`restore_arbitrary`](Self::restore_arbitrary).
    pub fn take_arbitrary(&self) -> u32 {
        self.arbitrary.swap(0, Ordering::Relaxed)
    }

    /// Gives back what [`take_arbitrary`](Self::take_arbitrary) took.
    pub fn restore_arbitrary(&self, depth: u32) {
        self.arbitrary.store(depth, Ordering::Relaxed);
    }

    #[cfg_attr(loom, allow(dead_code))] // only `wdf` marks contexts; it is not modelled
    pub(crate) fn enter_arbitrary(&self) {
        self.arbitrary.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn leave_arbitrary(&self) {
        self.arbitrary.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn note_wait_lock_taken(&self) {
        self.wait_locks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_wait_lock_released(&self) {
        self.wait_locks.fetch_sub(1, Ordering::Relaxed);
    }

    /// The processor's IRQL, as stored (no HAL call).
    #[inline(always)]
    pub fn irql(&self) -> Irql {
        Irql::from_raw(self.irql.load(Ordering::Relaxed))
    }

    /// Sets the stored IRQL. For the HAL (and the fast path): no checks, no delivery.
    #[inline(always)]
    pub fn set_irql(&self, irql: Irql) {
        self.irql.store(irql.raw(), Ordering::Relaxed)
    }

    /// Whether the HAL wants to see every IRQL change and lock step on this processor.
    #[inline(always)]
    pub fn hal_wants(&self) -> bool {
        self.hal_wants.load(Ordering::Relaxed) != 0
    }

    /// Sets the HAL's reasons (any non-zero bits send the lock routines down the HAL path).
    /// The bits are the HAL's own.
    pub fn set_hal_wants(&self, bits: u8) {
        self.hal_wants.store(bits, Ordering::SeqCst)
    }

    /// Adds reasons to [`hal_wants`](Self::hal_wants) (from any thread).
    pub fn add_hal_wants(&self, bits: u8) {
        self.hal_wants.fetch_or(bits, Ordering::SeqCst);
    }

    /// Removes reasons from [`hal_wants`](Self::hal_wants).
    pub fn clear_hal_wants(&self, bits: u8) {
        self.hal_wants.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The reasons set now.
    pub fn hal_wants_bits(&self) -> u8 {
        self.hal_wants.load(Ordering::Relaxed)
    }

    /// The odd value this processor's ordinary acquires store in a lock word.
    #[inline(always)]
    pub fn owner_tag(&self) -> usize {
        self.owner_tag
    }

    /// Whether DPCs are queued on this processor (the HAL drains them with
    /// [`dpc::drain`](crate::dpc::drain) when the IRQL drops below DISPATCH).
    #[inline]
    pub fn dpcs_pending(&self) -> bool {
        self.dpcs.pending()
    }
}

/// Which routine of the acquire family a [`LockEvent`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AcquireKind {
    /// `KeAcquireSpinLock` / `KeAcquireSpinLockRaiseToDpc`: raises to DISPATCH.
    Raise,
    /// `KeAcquireSpinLockAtDpcLevel`.
    AtDpc,
    /// `KeTryToAcquireSpinLockAtDpcLevel`.
    TryAtDpc,
    /// [`SpinLock::try_lock`](crate::SpinLock::try_lock): raises to DISPATCH, then tries.
    TryRaise,
    /// `KeAcquireInStackQueuedSpinLock`: raises to DISPATCH.
    Queued,
    /// `KeAcquireInStackQueuedSpinLockAtDpcLevel`.
    QueuedAtDpc,
    /// `KeAcquireInterruptSpinLock` / `KeSynchronizeExecution`: raises to the interrupt
    /// object's SynchronizeIrql. The event's `handle` is the interrupt object's address.
    Interrupt,
    /// The interrupt dispatcher taking an object's lock before its service routine, at the
    /// line's DIRQL (already raised). `handle` is the interrupt object's address.
    Isr,
    /// An `ExInterlocked` routine: interrupts masked on this processor, IRQL unchanged.
    Interlocked,
}

impl AcquireKind {
    /// Whether this acquire uses the queued (MCS) protocol.
    pub fn is_queued(self) -> bool {
        matches!(self, AcquireKind::Queued | AcquireKind::QueuedAtDpc)
    }

    /// Whether this is a try-acquire (it never spins, so it adds no lock-order edge).
    ///
    /// ```
    /// assert!(ntspin::hal::AcquireKind::TryAtDpc.is_try());
    /// ```
    pub fn is_try(self) -> bool {
        matches!(self, AcquireKind::TryAtDpc | AcquireKind::TryRaise)
    }

    /// Whether this acquire raises the IRQL itself (and so must start at <= DISPATCH).
    pub fn raises(self) -> bool {
        matches!(
            self,
            AcquireKind::Raise | AcquireKind::TryRaise | AcquireKind::Queued
        )
    }
}

/// Which routine of the release family a [`LockEvent`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReleaseKind {
    /// `KeReleaseSpinLock`: lowers to the saved IRQL.
    Lower,
    /// `KeReleaseSpinLockFromDpcLevel`.
    FromDpc,
    /// `KeReleaseInStackQueuedSpinLock`: lowers to the handle's saved IRQL.
    Queued,
    /// `KeReleaseInStackQueuedSpinLockFromDpcLevel`.
    QueuedFromDpc,
    /// `KeReleaseInterruptSpinLock` / the end of `KeSynchronizeExecution`: lowers to the
    /// saved IRQL. `handle` is the interrupt object's address.
    Interrupt,
    /// The interrupt dispatcher after a service routine returned (IRQL unchanged).
    Isr,
    /// The end of an `ExInterlocked` routine (IRQL unchanged).
    Interlocked,
}

impl ReleaseKind {
    /// Whether this release uses the queued (MCS) protocol.
    pub fn is_queued(self) -> bool {
        matches!(self, ReleaseKind::Queued | ReleaseKind::QueuedFromDpc)
    }
}

/// What a spin-wait loop is waiting for: tells the HAL whether the processor may be
/// stopped (by a bug check elsewhere) at this point.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpinWait {
    /// An ordinary acquire spinning on the lock word: nothing is held or linked yet, so the
    /// processor may stop here.
    Acquire,
    /// A queued acquire whose entry is linked into the queue: it must stay until granted
    /// (its predecessor will write into the entry).
    Queued,
    /// A queued release waiting for its successor to link: it must finish the hand-over.
    Handoff,
}

/// What a lock routine tells the HAL's verifier. Addresses are plain numbers: a verifier
/// must judge them (a C caller's garbage included) without dereferencing them.
///
/// The protocol keeps the common case to one event per acquire and one per release:
///
/// - `Acquire` (then the raise, if the routine raises). A blocking acquire that finds the
///   lock free takes it and sends nothing more: once `Acquire` has returned, the verifier
///   counts the lock held by this processor. One that must wait sends `Waiting` (ordinary
///   lock) or `QueuedBehind` (queued lock) first and `Acquired` when it has the lock.
///   A try-acquire always ends in `Acquired` or `TryFailed`.
/// - `Release` (then the word is freed, then the lowering, if any): once `Release` has
///   returned the verifier counts the lock as being released by this processor.
///
/// The blocking routines on the ordinary word protocol (`RawSpinLock` and the interrupt-lock
/// and `ExInterlocked` routines over it) offer their `Acquire` and `Release` to
/// [`Hal::lock_event_fast`] first and send them to [`Hal::lock_event`] only if it declines;
/// either way the event is delivered exactly once.
#[derive(Clone, Copy, Debug)]
pub enum LockEvent {
    /// Before an acquire touches the IRQL or the lock word.
    Acquire {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// Which routine.
        kind: AcquireKind,
        /// The queue entry (`KLOCK_QUEUE_HANDLE`) address for queued acquires, else 0.
        handle: usize,
        /// Where the caller acquired (`#[track_caller]` through the public routine).
        site: &'static Location<'static>,
        /// The lock's class, for [`SpinLock`](crate::SpinLock) and
        /// [`QueuedSpinLock`](crate::QueuedSpinLock): the place it was constructed (a
        /// lock-order verifier may key locks by class, as Linux's lockdep does). `None` for
        /// a raw `KSPIN_LOCK`.
        class: Option<&'static Location<'static>>,
    },
    /// Sent by a C ABI's `KeAcquireSpinLock` just before the acquire of `lock`: the
    /// caller's `OldIrql` variable is at `slot` (one variable may not save two held locks'
    /// IRQLs at once: SL-OLDIRQL-SHARED).
    OldIrqlSlot {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// The address of the caller's `OldIrql` variable.
        slot: usize,
    },
    /// The lock at `lock` is being destroyed (or re-initialized): a verifier forgets what
    /// it learned about that address, which a new lock may reuse. Sent after
    /// [`FreedWhileHeld`](Self::FreedWhileHeld) when that applies.
    Retired {
        /// The `KSPIN_LOCK` address.
        lock: usize,
    },
    /// The lock word now names this processor (or its queue entry) as owner: sent by a
    /// try-acquire that succeeded, and by an acquire that had to wait.
    Acquired {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// Which routine.
        kind: AcquireKind,
        /// The queue entry address for queued acquires, else 0.
        handle: usize,
        /// The IRQL the acquire saved (raising acquires only).
        old_irql: Option<Irql>,
    },
    /// A try-acquire found the lock busy; nothing is held.
    TryFailed {
        /// The `KSPIN_LOCK` address.
        lock: usize,
    },
    /// A queued acquire swapped its entry in as the tail and found `pred` there. The core
    /// dereferences `pred` (to link behind it) only after this event returns, so a verifier
    /// can stop a garbage tail here.
    QueuedBehind {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// This acquire's queue entry.
        handle: usize,
        /// The previous tail found in the lock word.
        pred: usize,
    },
    /// A spin on the lock word has gone on for a while (sent periodically from the slow
    /// path, never from the fast path).
    Contended {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// The word's value last seen.
        word: usize,
    },
    /// Before a release touches the lock word or the IRQL.
    Release {
        /// The `KSPIN_LOCK` address (for a queued release, read from the handle).
        lock: usize,
        /// Which routine.
        kind: ReleaseKind,
        /// The queue entry address for queued releases, else 0.
        handle: usize,
        /// The IRQL the caller asks to return to (`KeReleaseSpinLock`'s NewIrql).
        new_irql: Option<Irql>,
    },
    /// An ordinary acquire found the lock busy and is about to spin for it: the
    /// acquisition is pending until [`Acquired`](Self::Acquired).
    Waiting {
        /// The `KSPIN_LOCK` address.
        lock: usize,
    },
    /// An ntspin-owned lock is being destroyed while its word says it is held.
    FreedWhileHeld {
        /// The `KSPIN_LOCK` address.
        lock: usize,
        /// The word's value.
        word: usize,
    },
    /// Before an interrupt object is connected (`IoConnectInterruptEx`): the verifier's
    /// CONN-PARAMS IRQL rule.
    Connect {
        /// The interrupt object's address.
        object: usize,
    },
    /// Before a wait on a dispatcher object (`KeWaitForSingleObject`) may block: the
    /// verifier's IRQL-WAIT. Addresses as the bug check's parameters want them.
    Wait {
        /// Where the caller's IRQL value is stored for this call.
        irql_addr: usize,
        /// The object waited on.
        object: usize,
        /// Where the timeout is stored, or 0 for "no timeout" (wait forever).
        timeout_addr: usize,
        /// The timeout in nanoseconds, `None` for none.
        timeout_ns: Option<u64>,
    },
    /// A violation the core found in state only it keeps (the KMDF object's lock owner and
    /// power state): the verifier raises it, records it (continue mode, when
    /// `continuable`), or, verifier off, ignores it.
    Violation {
        /// The bug check the rule prescribes.
        bug: BugCheck,
        /// Whether continue mode may record it and go on.
        continuable: bool,
    },
    /// A verifier warning (a rule whose breach only returns a failure, e.g. WDF-TRY): the
    /// verifier records it; it never stops the machine.
    Warning {
        /// The rule and the parameters a report would show.
        bug: BugCheck,
    },
}

impl LockEvent {
    /// Whether the processor may be stopped (for a bug check elsewhere) at this event:
    /// only before an acquire and after a release is nothing half-done. At the others it is
    /// between taking a lock and handing out its guard, or linked into a queue.
    ///
    /// ```
    /// use ntspin::hal::LockEvent;
    /// assert!(!LockEvent::Waiting { lock: 0x1000 }.is_stop_point());
    /// assert!(!LockEvent::TryFailed { lock: 0x1000 }.is_stop_point());
    /// ```
    pub fn is_stop_point(&self) -> bool {
        // `Retired` is not one: a lock is dropped while unwinding from a stop too.
        matches!(self, LockEvent::Acquire { .. })
    }
}

/// A hardware-abstraction layer: what the lock algorithms need from a machine.
///
/// Implement it, then register it once with [`set_hal!`](crate::set_hal). Every method is
/// an associated function (the HAL is per program, its state per processor).
///
/// The user-mode machine in `ntspin-sim` is the reference implementation; a bare-metal HAL
/// keeps IRQL in CR8.
pub trait Hal {
    /// The current processor's control block (`KeGetPcr()->Prcb`). Called on every lock
    /// operation: make it one thread-local (or per-CPU register) load.
    fn current_prcb() -> &'static Prcb;
    /// The current processor's IRQL (`KeGetCurrentIrql`).
    fn current_irql() -> Irql;
    /// Raise to `new`, return the previous level (`KeRaiseIrql`); check IRQL-RAISE.
    fn raise_irql(new: Irql) -> Irql;
    /// Lower to `new` (`KeLowerIrql`); check IRQL-LOWER and IRQL-LOWER-HELD; run what
    /// became deliverable (DPCs, pending interrupts).
    fn lower_irql(new: Irql);
    /// The current processor's number (`KeGetCurrentProcessorNumber`).
    fn current_processor() -> u32;
    /// Called once per iteration of every spin-wait loop, `spins` counting from 1: pause,
    /// and after a bounded spin give the core back (a machine may have more processors than
    /// the host has cores). If the machine has bug-checked, it may stop the processor, but
    /// only where `wait` says that is safe.
    fn spin_wait(spins: u32, wait: SpinWait);
    /// A lock routine's report to the verifier; returns if the verifier has no objection.
    /// The processor may be stopped for a bug check elsewhere only at events for which
    /// [`LockEvent::is_stop_point`] holds.
    fn lock_event(event: &LockEvent);
    /// A verifier's fast path for the events of steady-state acquires and releases
    /// ([`LockEvent::Acquire`] and [`LockEvent::Release`]): judge and record `event` now
    /// and return `true`, or return `false` having done nothing, and the lock routine sends
    /// it through [`lock_event`](Self::lock_event). Keep it small and free of calls that
    /// return: the lock routines inline it, and their fast tails then need no stack frame.
    /// The default judges nothing.
    #[inline(always)]
    fn lock_event_fast(event: &LockEvent) -> bool {
        let _ = event;
        false
    }
    /// Stop the machine with this bug check. Never returns to the caller.
    fn bug_check(bug: BugCheck) -> !;
    /// The control block of processor `processor`, if the machine has it (a DPC's
    /// target).
    fn prcb_of(processor: u32) -> Option<&'static Prcb>;
    /// A DPC was queued on `target`: make sure it drains its queue — at once if its IRQL is
    /// below DISPATCH (a DISPATCH software interrupt, or an IPI to another processor),
    /// otherwise when its IRQL next drops below DISPATCH.
    fn request_dpc(target: &'static Prcb);
    /// Masks interrupts on the current processor (`_disable`), returning whether they were
    /// enabled. Interrupts arriving meanwhile stay pending. Calls nest: every call is
    /// paired with one [`restore_interrupts`](Self::restore_interrupts).
    fn disable_interrupts() -> bool;
    /// Undoes the matching [`disable_interrupts`](Self::disable_interrupts), which returned
    /// `enabled`: interrupts are unmasked again when the outermost pair ends (`enabled`
    /// true), and what became pending is delivered then.
    fn restore_interrupts(enabled: bool);
    /// Connects an interrupt object to its vector (the controller's half of
    /// `IoConnectInterrupt`; the core has validated the parameters). Fails with
    /// `STATUS_INVALID_PARAMETER` if the vector is connected unshareably, or with the
    /// HAL's reason if it cannot connect interrupts at all.
    ///
    /// # Safety
    ///
    /// `obj` stays valid at its address until [`disconnect_interrupt`] for it returns.
    ///
    /// [`disconnect_interrupt`]: Self::disconnect_interrupt
    unsafe fn connect_interrupt(obj: NonNull<KInterrupt>) -> Result<(), NtStatus>;
    /// Disconnects `obj` and returns once no processor runs its service routine.
    fn disconnect_interrupt(obj: NonNull<KInterrupt>);
    /// Blocks the current thread while `word` holds `expected` (a futex wait): returns
    /// `true` when woken or the word differs, `false` when `timeout_ns` elapsed. Interrupts
    /// and DPCs are still taken while blocked.
    fn wait_on(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> bool;
    /// Wakes up to `count` threads blocked in [`wait_on`](Self::wait_on) on `word`.
    fn wake(word: &AtomicU32, count: u32);
    /// Hands a queued work item to a system worker thread, which runs it at
    /// PASSIVE_LEVEL with [`KWorkItem::run`](crate::workitem::KWorkItem::run). Called from
    /// any IRQL (an ISR, a DPC). A HAL with no threads of its own may run it at the
    /// caller's next return to PASSIVE.
    ///
    /// # Safety
    ///
    /// `item` stays valid at its address until it has run.
    unsafe fn queue_work_item(item: NonNull<KWorkItem>);
}

/// Registers `$t` as the program's [`Hal`]. Use it exactly once, in one crate of the
/// program (the simulator does it for you).
///
/// ```ignore
/// struct MyHal;
/// impl ntspin::Hal for MyHal { /* ... */ }
/// ntspin::set_hal!(MyHal);
/// ```
#[macro_export]
macro_rules! set_hal {
    ($t:ty) => {
        const _: () = {
            #[unsafe(no_mangle)]
            #[inline(always)]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_prcb()
            -> &'static $crate::hal::Prcb {
                <$t as $crate::Hal>::current_prcb()
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_irql()
            -> $crate::Irql {
                <$t as $crate::Hal>::current_irql()
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__raise_irql(
                new: $crate::Irql,
            ) -> $crate::Irql {
                <$t as $crate::Hal>::raise_irql(new)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lower_irql(
                new: $crate::Irql,
            ) {
                <$t as $crate::Hal>::lower_irql(new)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_processor()
            -> u32 {
                <$t as $crate::Hal>::current_processor()
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__spin_wait(
                spins: u32,
                wait: $crate::hal::SpinWait,
            ) {
                <$t as $crate::Hal>::spin_wait(spins, wait)
            }
            #[unsafe(no_mangle)]
            #[inline(always)]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event(
                event: &$crate::hal::LockEvent,
            ) {
                <$t as $crate::Hal>::lock_event(event)
            }
            #[unsafe(no_mangle)]
            #[inline(always)]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event_fast(
                event: &$crate::hal::LockEvent,
            ) -> bool {
                <$t as $crate::Hal>::lock_event_fast(event)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__bug_check(
                bug: $crate::BugCheck,
            ) -> ! {
                <$t as $crate::Hal>::bug_check(bug)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__prcb_of(
                processor: u32,
            ) -> ::core::option::Option<&'static $crate::hal::Prcb> {
                <$t as $crate::Hal>::prcb_of(processor)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__request_dpc(
                target: &'static $crate::hal::Prcb,
            ) {
                <$t as $crate::Hal>::request_dpc(target)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disable_interrupts()
            -> bool {
                <$t as $crate::Hal>::disable_interrupts()
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__restore_interrupts(
                enabled: bool,
            ) {
                <$t as $crate::Hal>::restore_interrupts(enabled)
            }
            /// # Safety
            ///
            /// As [`Hal::connect_interrupt`]($crate::Hal::connect_interrupt).
            #[unsafe(no_mangle)]
            #[inline]
            unsafe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__connect_interrupt(
                obj: ::core::ptr::NonNull<$crate::interrupt::KInterrupt>,
            ) -> ::core::result::Result<(), $crate::NtStatus> {
                // SAFETY: the caller's contract is the trait method's.
                unsafe { <$t as $crate::Hal>::connect_interrupt(obj) }
            }
            /// # Safety
            ///
            /// As [`Hal::queue_work_item`]($crate::Hal::queue_work_item).
            #[unsafe(no_mangle)]
            #[inline]
            unsafe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__queue_work_item(
                item: ::core::ptr::NonNull<$crate::workitem::KWorkItem>,
            ) {
                // SAFETY: the caller's contract is the trait method's.
                unsafe { <$t as $crate::Hal>::queue_work_item(item) }
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disconnect_interrupt(
                obj: ::core::ptr::NonNull<$crate::interrupt::KInterrupt>,
            ) {
                <$t as $crate::Hal>::disconnect_interrupt(obj)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wait_on(
                word: &$crate::sync::AtomicU32,
                expected: u32,
                timeout_ns: ::core::option::Option<u64>,
            ) -> bool {
                <$t as $crate::Hal>::wait_on(word, expected, timeout_ns)
            }
            #[unsafe(no_mangle)]
            #[inline]
            fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wake(
                word: &$crate::sync::AtomicU32,
                count: u32,
            ) {
                <$t as $crate::Hal>::wake(word, count)
            }
        };
    };
}

// The registered HAL's symbols. Declared `safe`: `set_hal!` defines each as a safe Rust
// function with exactly this signature.
unsafe extern "Rust" {
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_prcb()
    -> &'static Prcb;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_irql()
    -> Irql;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__raise_irql(
        new: Irql,
    ) -> Irql;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lower_irql(
        new: Irql,
    );
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_processor()
    -> u32;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__spin_wait(
        spins: u32,
        wait: SpinWait,
    );
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event(
        event: &LockEvent,
    );
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event_fast(
        event: &LockEvent,
    ) -> bool;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__bug_check(
        bug: BugCheck,
    ) -> !;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__prcb_of(
        processor: u32,
    ) -> Option<&'static Prcb>;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__request_dpc(
        target: &'static Prcb,
    );
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disable_interrupts()
    -> bool;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__restore_interrupts(
        enabled: bool,
    );
    // Not `safe`: the object must stay put until it is disconnected.
    fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__connect_interrupt(
        obj: NonNull<KInterrupt>,
    ) -> Result<(), NtStatus>;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disconnect_interrupt(
        obj: NonNull<KInterrupt>,
    );
    // Not `safe`: the item must stay put until it has run.
    fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__queue_work_item(
        item: NonNull<KWorkItem>,
    );
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wait_on(
        word: &AtomicU32,
        expected: u32,
        timeout_ns: Option<u64>,
    ) -> bool;
    safe fn ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wake(
        word: &AtomicU32,
        count: u32,
    );
}

#[inline(always)]
pub(crate) fn current_prcb() -> &'static Prcb {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_prcb()
}
#[inline(always)]
pub(crate) fn current_irql() -> Irql {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_irql()
}
#[inline(always)]
pub(crate) fn raise_irql(new: Irql) -> Irql {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__raise_irql(new)
}
#[inline(always)]
pub(crate) fn lower_irql(new: Irql) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lower_irql(new)
}
/// The current processor's number, from the registered HAL.
///
/// ```
/// # use ntspin_sim as _;
/// let _n: u32 = ntspin::hal::current_processor();
/// ```
#[doc(alias = "KeGetCurrentProcessorNumber")]
#[inline(always)]
pub fn current_processor() -> u32 {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__current_processor()
}
#[inline(always)]
pub(crate) fn spin_wait(spins: u32, wait: SpinWait) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__spin_wait(spins, wait)
}
#[inline(always)]
pub(crate) fn lock_event(event: &LockEvent) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event(event)
}
#[inline(always)]
pub(crate) fn lock_event_fast(event: &LockEvent) -> bool {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__lock_event_fast(event)
}
/// Reports a violation found outside the lock routines (a C ABI's own checks): with the
/// verifier on, the HAL raises it (or, `continuable` and in continue mode, records it);
/// with nothing to report to, nothing happens.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{BugCheck, Rule};
/// let bug = BugCheck::verifier(0x1002, 0x10, 0, 0, Rule::SL_INIT);
/// let err = ntspin_sim::catch_bug_check(|| ntspin::hal::report_violation(bug, false)).unwrap_err();
/// assert_eq!(err.bug, bug);
/// ```
pub fn report_violation(bug: BugCheck, continuable: bool) {
    if current_prcb().hal_wants() {
        lock_event(&LockEvent::Violation { bug, continuable });
    }
}

/// For a C ABI's `KeAcquireSpinLock`, just before it acquires `lock`: tells the verifier
/// where the caller's `OldIrql` variable is ([`LockEvent::OldIrqlSlot`]).
pub fn report_oldirql_slot(lock: usize, slot: usize) {
    if current_prcb().hal_wants() {
        lock_event(&LockEvent::OldIrqlSlot { lock, slot });
    }
}

/// Stops the machine with `bug` through the registered HAL (`KeBugCheckEx`).
#[doc(alias = "KeBugCheckEx")]
#[inline(always)]
pub fn bug_check(bug: BugCheck) -> ! {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__bug_check(bug)
}
#[inline(always)]
pub(crate) fn prcb_of(processor: u32) -> Option<&'static Prcb> {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__prcb_of(processor)
}
#[inline(always)]
pub(crate) fn request_dpc(target: &'static Prcb) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__request_dpc(target)
}
/// Masks interrupts on the current processor (`_disable`); returns whether they were
/// enabled. Pair with [`restore_interrupts`].
///
/// ```
/// # use ntspin_sim as _;
/// let was = ntspin::hal::disable_interrupts();
/// ntspin::hal::restore_interrupts(was);
/// ```
#[doc(alias = "_disable")]
#[inline(always)]
pub fn disable_interrupts() -> bool {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disable_interrupts()
}
/// Restores the interrupt mask [`disable_interrupts`] returned, delivering what became
/// pending.
#[doc(alias = "_enable")]
#[inline(always)]
pub fn restore_interrupts(enabled: bool) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__restore_interrupts(
        enabled,
    )
}
/// # Safety
///
/// As [`Hal::connect_interrupt`].
#[inline(always)]
pub(crate) unsafe fn connect_interrupt(obj: NonNull<KInterrupt>) -> Result<(), NtStatus> {
    // SAFETY: the caller's contract is the HAL method's.
    unsafe {
        ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__connect_interrupt(
            obj,
        )
    }
}
/// # Safety
///
/// As [`Hal::queue_work_item`].
#[inline(always)]
pub(crate) unsafe fn queue_work_item(item: NonNull<KWorkItem>) {
    // SAFETY: the caller's contract is the HAL method's.
    unsafe {
        ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__queue_work_item(
            item,
        )
    }
}
#[inline(always)]
pub(crate) fn disconnect_interrupt(obj: NonNull<KInterrupt>) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__disconnect_interrupt(
        obj,
    )
}
#[inline(always)]
pub(crate) fn wait_on(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> bool {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wait_on(
        word, expected, timeout_ns,
    )
}
#[inline(always)]
pub(crate) fn wake(word: &AtomicU32, count: u32) {
    ntspin_hal__missing__register_one_with_ntspin_set_hal_or_link_ntspin_sim__wake(word, count)
}

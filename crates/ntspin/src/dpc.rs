//! Deferred procedure calls: `KeInitializeDpc`, `KeInsertQueueDpc`,
//! `KeSetTargetProcessorDpc`, `KeSetImportanceDpc`, `KeFlushQueuedDpcs`.
//!
//! A DPC is queued from any IRQL (typically by an ISR) and runs later at `DISPATCH_LEVEL`
//! on its target processor, when that processor's IRQL drops below DISPATCH. Each
//! processor's queue lives in its [`Prcb`], like `KPRCB.DpcData`: an intrusive lock-free
//! list (a push is one compare-exchange, so an ISR interrupting the drain, or another
//! processor targeting this one, needs no lock), taken whole by the draining processor and
//! run in arrival order, high-importance DPCs first.
//!
//! A [`Dpc`] that is queued or running is referenced by the machine, so it is queued
//! through `Pin<&Dpc>` and its `Drop` waits until it is neither (DPC-ONCE: a queued DPC is
//! queued at most once, and a second queue returns `false` keeping the first arguments).

use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr;

use crate::hal::{self, Prcb, SpinWait};
use crate::sync::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use crate::{DpcLevel, Irql};

/// On a queue and to run.
const QUEUED: u8 = 1;
/// Its routine is running.
const RUNNING: u8 = 2;
/// Still linked on a queue, but removed (`KeRemoveQueueDpc`): the drain unlinks it
/// without running it, unless an insert revives it first.
const CANCELLED: u8 = 4;
/// An insert is reviving a cancelled DPC (writing its arguments).
const CLAIMED: u8 = 8;
/// The upper four bits count revivals, so the drain's claim (which reads the arguments,
/// then compares-and-swaps the state) cannot mistake "removed and queued again with new
/// arguments" for "still queued".
const GENERATION: u8 = 0x10;
const NO_TARGET: u32 = u32::MAX;

/// How urgent a DPC is (`KDPC_IMPORTANCE`). High-importance DPCs run before the others
/// queued on the same processor.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[doc(alias = "KDPC_IMPORTANCE")]
pub enum Importance {
    /// `LowImportance`.
    Low,
    /// `MediumImportance` (the default).
    #[default]
    Medium,
    /// `MediumHighImportance`.
    MediumHigh,
    /// `HighImportance`: queued at the head.
    High,
}

/// The machine-visible part of a DPC (`KDPC`): queue link, state, arguments, target, and
/// the routine to call. [`Dpc`] wraps it with a Rust closure; the C ABI wraps it with a C
/// routine and context.
///
/// # Invariants
///
/// While `state` has `QUEUED`, `CANCELLED` (removed but still linked), `CLAIMED` or
/// `RUNNING` set, the object is on (or being run from) one processor's queue and stays at
/// its address: its owner's `Drop` waits until none is set.
#[doc(alias = "KDPC")]
#[repr(C)]
pub struct KDpc {
    next: AtomicPtr<KDpc>,
    state: AtomicU8,
    importance: AtomicU8,
    target: AtomicU32,
    arg1: AtomicUsize,
    arg2: AtomicUsize,
    /// Calls the owner's routine: `(this, arg1, arg2)`.
    run: unsafe fn(*const KDpc, usize, usize),
    /// The routine's address, for reports.
    routine: usize,
    _pin: PhantomPinned,
}

impl KDpc {
    /// A DPC header that calls `run(this, arg1, arg2)`; `routine` is the address reports
    /// show for it.
    ///
    /// # Safety
    ///
    /// `run` may be called with a pointer to this header at any time between a successful
    /// [`insert`](Self::insert) and the owner's `Drop`, from DISPATCH_LEVEL on any
    /// processor; it must be sound to call then.
    pub unsafe fn new(run: unsafe fn(*const KDpc, usize, usize), routine: usize) -> KDpc {
        KDpc {
            next: AtomicPtr::new(ptr::null_mut()),
            state: AtomicU8::new(0),
            importance: AtomicU8::new(Importance::Medium as u8),
            target: AtomicU32::new(NO_TARGET),
            arg1: AtomicUsize::new(0),
            arg2: AtomicUsize::new(0),
            run,
            routine,
            _pin: PhantomPinned,
        }
    }

    /// `KeSetTargetProcessorDpc`: run on processor `n` instead of the queuing one.
    #[doc(alias = "KeSetTargetProcessorDpc")]
    pub fn set_target_processor(&self, n: u32) {
        self.target.store(n, Ordering::Relaxed);
    }

    /// `KeSetImportanceDpc`.
    #[doc(alias = "KeSetImportanceDpc")]
    pub fn set_importance(&self, importance: Importance) {
        self.importance.store(importance as u8, Ordering::Relaxed);
    }

    /// Whether the DPC is queued (not yet started).
    pub fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) & QUEUED != 0
    }

    /// The routine's address (what reports show).
    pub fn routine_addr(&self) -> usize {
        self.routine
    }

    /// `KeInsertQueueDpc`: queues the DPC with two arguments on its target processor (the
    /// current one unless set). Callable at any IRQL. Returns `false`, leaving the first
    /// call's arguments in place, if it is already queued (DPC-ONCE).
    ///
    /// A DPC whose target processor does not exist runs on the current processor.
    #[doc(alias = "KeInsertQueueDpc")]
    pub fn insert(self: Pin<&Self>, arg1: usize, arg2: usize) -> bool {
        let this = self.get_ref();
        loop {
            let s = this.state.load(Ordering::Acquire);
            if s & (QUEUED | CLAIMED) != 0 {
                return false; // queued, or another insert is queueing it
            }
            if s & CANCELLED != 0 {
                // Removed but still linked: queue it again where it is (a second link
                // would corrupt the queue). Masked: a drain on this processor waits while
                // CLAIMED is set, so it must not run in the middle.
                let enabled = hal::disable_interrupts();
                if this
                    .state
                    .compare_exchange(s, s | CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    hal::restore_interrupts(enabled);
                    continue;
                }
                this.arg1.store(arg1, Ordering::Relaxed);
                this.arg2.store(arg2, Ordering::Relaxed);
                // A drain waits while CLAIMED is set, so it is still linked (CANCELLED).
                let revived = ((s & !CANCELLED) | QUEUED).wrapping_add(GENERATION);
                this.state.store(revived, Ordering::Release);
                hal::restore_interrupts(enabled);
                return true;
            }
            if this
                .state
                .compare_exchange(s, s | QUEUED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                this.arg1.store(arg1, Ordering::Relaxed);
                this.arg2.store(arg2, Ordering::Relaxed);
                break;
            }
        }
        // Asking for the processor number (not just the control block) makes a thread
        // that is no processor yet become one first, so the DPC lands on a real queue.
        let here = hal::current_processor();
        let wanted = match this.target.load(Ordering::Relaxed) {
            NO_TARGET => here,
            n => n,
        };
        let target = hal::prcb_of(wanted).unwrap_or_else(hal::current_prcb);
        let high = this.importance.load(Ordering::Relaxed) == Importance::High as u8;
        target.dpcs.push(this, high);
        hal::request_dpc(target);
        true
    }

    /// `KeRemoveQueueDpc`: takes the DPC off its queue if it is queued (its routine will
    /// not run for that insertion) and returns whether it was. Callable at any IRQL; a
    /// routine already running is not affected.
    ///
    /// ```
    /// use core::pin::pin;
    /// use core::sync::atomic::{AtomicU32, Ordering};
    /// use ntspin::dpc::Dpc;
    ///
    /// let m = ntspin_sim::Machine::new(1);
    /// let runs = AtomicU32::new(0);
    /// m.run_on(0, || {
    ///     let dpc = pin!(Dpc::new(|_, _, _| { runs.fetch_add(1, Ordering::Relaxed); }));
    ///     let old = ntspin::raise_irql_to_dpc_level();
    ///     assert!(dpc.as_ref().queue(0, 0));
    ///     assert!(dpc.raw().remove());   // was queued: removed
    ///     assert!(!dpc.raw().remove());  // not queued any more
    ///     ntspin::lower_irql(old);       // nothing runs
    /// }).unwrap();
    /// assert_eq!(runs.load(Ordering::Relaxed), 0);
    /// ```
    #[doc(alias = "KeRemoveQueueDpc")]
    pub fn remove(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & QUEUED != 0).then_some((s & !QUEUED) | CANCELLED)
            })
            .is_ok()
    }

    /// Waits until the DPC is neither queued nor running (its owner is about to go away).
    pub(crate) fn wait_idle(&self) {
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) & (QUEUED | RUNNING | CANCELLED | CLAIMED) != 0 {
            // It may be queued on this very processor.
            drain_here();
            spins = spins.wrapping_add(1);
            crate::sync::spin_hint();
            // Like a queued waiter: the machine holds a pointer to this object, so the
            // owner cannot leave; if the machine has stopped and the DPC will never run,
            // the HAL freezes this processor rather than free memory still referenced.
            hal::spin_wait(spins, SpinWait::Queued);
        }
    }
}

/// Runs what is queued on the current processor if its IRQL allows: a raise to DISPATCH
/// and the lower back are where the HAL drains (a no-op at DISPATCH or above).
fn drain_here() {
    if crate::current_irql() < Irql::DISPATCH {
        let old = crate::raise_irql(Irql::DISPATCH);
        crate::lower_irql(old);
    }
}

/// One processor's DPC queue: two intrusive LIFO stacks (normal and high importance),
/// reversed into arrival order when drained, plus counters for `KeFlushQueuedDpcs`.
pub(crate) struct DpcQueue {
    normal: AtomicPtr<KDpc>,
    high: AtomicPtr<KDpc>,
    queued: AtomicUsize,
    ran: AtomicUsize,
}

impl DpcQueue {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> DpcQueue {
        DpcQueue {
            normal: AtomicPtr::new(ptr::null_mut()),
            high: AtomicPtr::new(ptr::null_mut()),
            queued: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> DpcQueue {
        DpcQueue {
            normal: AtomicPtr::new(ptr::null_mut()),
            high: AtomicPtr::new(ptr::null_mut()),
            queued: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
        }
    }

    pub(crate) fn pending(&self) -> bool {
        !self.normal.load(Ordering::Acquire).is_null()
            || !self.high.load(Ordering::Acquire).is_null()
    }

    fn push(&self, dpc: &KDpc, high: bool) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let head = if high { &self.high } else { &self.normal };
        // A queued `KDpc` stays at its address until it has run (its owner's `Drop` waits).
        crate::stack::push(head, dpc);
    }

    /// Takes one stack whole and returns it in arrival order.
    fn take(head: &AtomicPtr<KDpc>) -> *mut KDpc {
        crate::stack::take(head)
    }
}

impl crate::stack::Linked for KDpc {
    fn link(&self) -> &AtomicPtr<KDpc> {
        &self.next
    }
}

/// A DPC the HAL is about to run: see [`drain`].
#[derive(Debug)]
pub struct QueuedDpc<'a> {
    dpc: &'a KDpc,
}

impl QueuedDpc<'_> {
    /// The `KDPC` address.
    pub fn addr(&self) -> usize {
        self.dpc as *const KDpc as usize
    }

    /// The routine's address.
    pub fn routine(&self) -> usize {
        self.dpc.routine
    }
}

impl core::fmt::Debug for KDpc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "KDpc({:#x}, routine {:#x})",
            self as *const _ as usize, self.routine
        )
    }
}

/// Runs every DPC queued on `prcb`, the current processor's, in arrival order, high
/// importance first, until the queue is empty (DPCs queued meanwhile, including a DPC
/// re-queuing itself, run in the same drain). For HALs: the caller has raised to
/// `DISPATCH_LEVEL`. `around` is called once per DPC with the DPC and a function that runs
/// it, so the HAL can check what the routine did (IRQL-DPC-EXIT).
pub fn drain(prcb: &Prcb, mut around: impl FnMut(&QueuedDpc<'_>, &mut dyn FnMut())) {
    loop {
        let high = DpcQueue::take(&prcb.dpcs.high);
        let normal = DpcQueue::take(&prcb.dpcs.normal);
        if high.is_null() && normal.is_null() {
            return;
        }
        for mut cur in [high, normal] {
            while !cur.is_null() {
                // SAFETY: a queued `KDpc` stays at its address until it has run (invariant
                // of `KDpc`); only this drain holds this list.
                let dpc = unsafe { &*cur };
                // Read the link before running: the routine may re-queue this DPC.
                cur = dpc.next.load(Ordering::Relaxed);
                let Some((a1, a2)) = claim_for_run(prcb, dpc) else {
                    continue; // removed: unlinked without running
                };
                let q = QueuedDpc { dpc };
                around(&q, &mut || run_one(prcb, dpc, a1, a2));
            }
        }
    }
}

/// A DPC just taken off its queue by the drain: its arguments if it is to run (it is
/// `RUNNING` now: a remove no longer finds it queued, an insert queues it anew), `None` if
/// it was removed (it is unlinked now and counted as done for `KeFlushQueuedDpcs`).
fn claim_for_run(prcb: &Prcb, dpc: &KDpc) -> Option<(usize, usize)> {
    let mut spins = 0u32;
    loop {
        let s = dpc.state.load(Ordering::Acquire);
        if s & QUEUED != 0 {
            // While QUEUED no insert writes the arguments; a remove and a revival in
            // between change the generation, and the exchange fails.
            let a1 = dpc.arg1.load(Ordering::Relaxed);
            let a2 = dpc.arg2.load(Ordering::Relaxed);
            let running = (s & !(QUEUED | CANCELLED)) | RUNNING;
            if dpc
                .state
                .compare_exchange(s, running, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some((a1, a2));
            }
            continue;
        }
        if s & CLAIMED != 0 {
            // An insert (interrupts masked on its processor) is reviving it: QUEUED is a
            // few stores away.
            spins = spins.wrapping_add(1);
            crate::sync::spin_hint();
            hal::spin_wait(spins, SpinWait::Handoff);
            continue;
        }
        // Removed (CANCELLED): unlink it.
        if dpc
            .state
            .compare_exchange(s, s & !CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            prcb.dpcs.ran.fetch_add(1, Ordering::Release);
            return None;
        }
    }
}

/// Runs a DPC [`claim_for_run`] dequeued (it is `RUNNING`) with its arguments.
fn run_one(prcb: &Prcb, dpc: &KDpc, a1: usize, a2: usize) {
    /// Marks the run finished even if the routine unwinds (a bug check in thread context),
    /// so the owner's `Drop` does not wait for a run that ended.
    struct Finished<'a>(&'a Prcb, &'a KDpc);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.1.state.fetch_and(!RUNNING, Ordering::Release);
            self.0.dpcs.ran.fetch_add(1, Ordering::Release);
        }
    }
    let _finished = Finished(prcb, dpc);
    // SAFETY: `KDpc::new`'s contract: `run` is sound to call while the DPC is queued or
    // running, from DISPATCH_LEVEL (the drain's caller raised there).
    unsafe { (dpc.run)(dpc, a1, a2) };
}

/// A DPC with a Rust routine: `routine(proof_of_dispatch, arg1, arg2)`.
///
/// ```
/// use core::pin::pin;
/// use core::sync::atomic::{AtomicUsize, Ordering};
/// use ntspin::dpc::Dpc;
///
/// let m = ntspin_sim::Machine::new(1);
/// let sum = AtomicUsize::new(0);
/// m.run_on(0, || {
///     let dpc = pin!(Dpc::new(|_at_dispatch, a, b| { sum.fetch_add(a + b, Ordering::Relaxed); }));
///     let old = ntspin::raise_irql_to_dpc_level();
///     assert!(dpc.as_ref().queue(1, 2));
///     assert!(!dpc.as_ref().queue(10, 20)); // already queued: first arguments kept
///     ntspin::lower_irql(old); // the DPC runs here
///     assert_eq!(sum.load(Ordering::Relaxed), 3);
/// }).unwrap();
/// ```
#[repr(C)]
pub struct Dpc<F> {
    raw: KDpc,
    routine: F,
}

impl<F: Fn(&DpcLevel, usize, usize) + Sync> Dpc<F> {
    /// `KeInitializeDpc`.
    #[doc(alias = "KeInitializeDpc")]
    pub fn new(routine: F) -> Dpc<F> {
        // The routine's identity in reports: its monomorphized trampoline.
        let addr = run_rust::<F> as *const () as usize;
        Dpc {
            // SAFETY: `run_rust::<F>` is called only with a pointer to this header, which
            // is the first field of a `repr(C)` `Dpc<F>`; `Dpc`'s `Drop` waits until the
            // DPC is neither queued nor running, so the routine is alive for every call.
            raw: unsafe { KDpc::new(run_rust::<F>, addr) },
            routine,
        }
    }

    /// `KeInsertQueueDpc`: see [`KDpc::insert`].
    #[doc(alias = "KeInsertQueueDpc")]
    pub fn queue(self: Pin<&Self>, arg1: usize, arg2: usize) -> bool {
        self.raw_pinned().insert(arg1, arg2)
    }

    /// The `KDPC` inside.
    pub fn raw(&self) -> &KDpc {
        &self.raw
    }

    fn raw_pinned(self: Pin<&Self>) -> Pin<&KDpc> {
        // SAFETY: structural pinning of the first field: `Dpc` never moves out of `raw`.
        unsafe { self.map_unchecked(|d| &d.raw) }
    }

    /// `KeSetTargetProcessorDpc`.
    #[doc(alias = "KeSetTargetProcessorDpc")]
    pub fn set_target_processor(&self, n: u32) {
        self.raw.set_target_processor(n)
    }

    /// `KeSetImportanceDpc`.
    #[doc(alias = "KeSetImportanceDpc")]
    pub fn set_importance(&self, importance: Importance) {
        self.raw.set_importance(importance)
    }
}

/// # Safety
///
/// `this` points to the `raw` field of a live `Dpc<F>`.
unsafe fn run_rust<F: Fn(&DpcLevel, usize, usize) + Sync>(this: *const KDpc, a1: usize, a2: usize) {
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` `Dpc<F>`.
    let dpc = unsafe { &*this.cast::<Dpc<F>>() };
    (dpc.routine)(DpcLevel::assumed(), a1, a2)
}

impl<F> Drop for Dpc<F> {
    fn drop(&mut self) {
        self.raw.wait_idle();
    }
}

impl<F> core::fmt::Debug for Dpc<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.raw.fmt(f)
    }
}

/// `KeFlushQueuedDpcs`: returns once every DPC queued on any processor before the call has
/// run. Call at PASSIVE_LEVEL.
///
/// ```
/// # use ntspin_sim as _;
/// ntspin::dpc::flush_queued_dpcs();
/// ```
#[doc(alias = "KeFlushQueuedDpcs")]
pub fn flush_queued_dpcs() {
    let mut n = 0;
    while let Some(prcb) = hal::prcb_of(n) {
        let target = prcb.dpcs.queued.load(Ordering::Acquire);
        let mut spins = 0u32;
        while prcb.dpcs.ran.load(Ordering::Acquire) < target {
            if core::ptr::eq(prcb, hal::current_prcb()) {
                drain_here();
            }
            spins = spins.wrapping_add(1);
            crate::sync::spin_hint();
            hal::spin_wait(spins, SpinWait::Acquire);
        }
        n += 1;
    }
}

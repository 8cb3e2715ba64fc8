//! Work items (`IoQueueWorkItem`, KMDF's `WdfWorkItemEnqueue`): a routine queued from any
//! IRQL — typically an ISR or a DPC — that runs later at PASSIVE_LEVEL on a system worker
//! thread, so it may block. A work item is queued at most once at a time: queuing a queued
//! item returns `false`. It must return at PASSIVE (IRQL-WORKER-EXIT, 0xE1).
//!
//! The worker is the HAL's: [`Hal::queue_work_item`](crate::Hal::queue_work_item) hands it
//! an item; the HAL runs it with [`KWorkItem::run`] when it has a thread at PASSIVE.

use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr::{self, NonNull};

use crate::hal::{self, SpinWait};
use crate::sync::{AtomicPtr, AtomicU8, Ordering};

const QUEUED: u8 = 1;
const RUNNING: u8 = 2;

/// The machine-visible part of a work item (`IO_WORKITEM`): queue link, state, and the
/// routine to call. [`WorkItem`] wraps it with a Rust closure; the C ABI with a C routine
/// and context.
///
/// # Invariants
///
/// While `state` is not 0 the object is on (or being run from) a worker queue and stays
/// at its address: its owner's `Drop` waits for `state == 0`.
#[doc(alias = "IO_WORKITEM")]
#[repr(C)]
pub struct KWorkItem {
    next: AtomicPtr<KWorkItem>,
    state: AtomicU8,
    run: unsafe fn(*const KWorkItem),
    routine: usize,
    context: usize,
    _pin: PhantomPinned,
}

impl KWorkItem {
    /// A work item that calls `run(this)`; `routine` and `context` are what reports show.
    ///
    /// # Safety
    ///
    /// `run` may be called with a pointer to this header at PASSIVE_LEVEL on a worker
    /// thread at any time between a successful [`queue`](Self::queue) and the owner's
    /// `Drop`; it must be sound to call then.
    pub unsafe fn new(run: unsafe fn(*const KWorkItem), routine: usize, context: usize) -> Self {
        KWorkItem {
            next: AtomicPtr::new(ptr::null_mut()),
            state: AtomicU8::new(0),
            run,
            routine,
            context,
            _pin: PhantomPinned,
        }
    }

    /// `IoQueueWorkItem`: queues the item for a worker thread, from any IRQL. `false` if it
    /// is already queued (not yet started): the queued run covers this request too.
    #[doc(alias = "IoQueueWorkItem")]
    pub fn queue(self: Pin<&Self>) -> bool {
        let this = self.get_ref();
        if this.state.fetch_or(QUEUED, Ordering::AcqRel) & QUEUED != 0 {
            return false;
        }
        // SAFETY: the object is pinned and its owner's `Drop` waits until it has run
        // (state 0), so it stays valid while the HAL holds it.
        unsafe { hal::queue_work_item(NonNull::from(this)) };
        true
    }

    /// Whether it is queued (not yet started).
    pub fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) & QUEUED != 0
    }

    /// The routine's address (what reports show).
    pub fn routine_addr(&self) -> usize {
        self.routine
    }

    /// The routine's context (what reports show).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The object's address (what bug-check parameters name).
    pub fn addr(&self) -> usize {
        self as *const KWorkItem as usize
    }

    /// For the HAL's worker, at PASSIVE_LEVEL: marks the item started (a queue from now
    /// on queues it again), calls its routine, and marks it done.
    ///
    /// # Safety
    ///
    /// `item` was handed to the HAL by [`queue`](Self::queue) and has not been run since.
    pub unsafe fn run(item: NonNull<KWorkItem>) {
        // SAFETY: the caller's contract: a queued item, alive until its state is 0.
        let this = unsafe { item.as_ref() };
        this.state.store(RUNNING, Ordering::Release);
        // SAFETY: `new`'s contract: sound to call now.
        unsafe { (this.run)(this) };
        // A queue while running set QUEUED again (and handed the item to the HAL again):
        // keep that bit.
        this.state.fetch_and(!RUNNING, Ordering::AcqRel);
    }

    /// Waits until the item is neither queued nor running (its owner is about to go away).
    pub(crate) fn wait_idle(&self) {
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) != 0 {
            // At PASSIVE this processor may be the worker that runs it: a lower to
            // PASSIVE is where the HAL lets the worker in.
            if crate::current_irql() == crate::Irql::PASSIVE {
                let old = crate::raise_irql(crate::Irql::PASSIVE);
                crate::lower_irql(old);
            }
            spins = spins.wrapping_add(1);
            crate::sync::spin_hint();
            // The worker holds a pointer to this object: like a queued waiter, the owner
            // cannot leave, and a stopped machine freezes this processor instead.
            hal::spin_wait(spins, SpinWait::Queued);
        }
    }
}

impl crate::stack::Linked for KWorkItem {
    fn link(&self) -> &AtomicPtr<KWorkItem> {
        &self.next
    }
}

impl core::fmt::Debug for KWorkItem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KWorkItem")
            .field("routine", &self.routine)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// A worker queue for a HAL: an intrusive lock-free list of queued items (a push is one
/// compare-exchange, so an ISR may queue while the worker drains), taken whole and run in
/// arrival order.
#[derive(Debug)]
pub struct WorkQueue {
    head: AtomicPtr<KWorkItem>,
}

impl WorkQueue {
    /// An empty queue.
    #[cfg(not(loom))]
    pub const fn new() -> WorkQueue {
        WorkQueue {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// An empty queue (loom build).
    #[cfg(loom)]
    pub fn new() -> WorkQueue {
        WorkQueue {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Adds a queued item.
    ///
    /// # Safety
    ///
    /// `item` came from [`Hal::queue_work_item`](crate::Hal::queue_work_item) and is on
    /// no queue.
    pub unsafe fn push(&self, item: NonNull<KWorkItem>) {
        // SAFETY: the caller's contract: a queued item, alive until it has run.
        let node = unsafe { item.as_ref() };
        crate::stack::push(&self.head, node);
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }

    /// Takes every queued item, oldest first, calling `f` for each (which should
    /// [`run`](KWorkItem::run) it).
    pub fn drain(&self, mut f: impl FnMut(NonNull<KWorkItem>)) {
        let mut reversed = crate::stack::take(&self.head);
        while let Some(item) = NonNull::new(reversed) {
            // SAFETY: as above; read the link before the routine may re-queue the item.
            reversed = unsafe { item.as_ref() }.next.load(Ordering::Relaxed);
            f(item);
        }
    }
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::new()
    }
}

/// A work item with a Rust routine, queued through a pin; `Drop` waits until it is
/// neither queued nor running.
///
/// ```
/// use core::pin::pin;
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use ntspin::workitem::WorkItem;
///
/// let m = ntspin_sim::Machine::new(2);
/// let ran = AtomicU32::new(0);
/// m.run_on(0, || {
///     let item = pin!(WorkItem::new(|| {
///         assert_eq!(ntspin::current_irql(), ntspin::Irql::PASSIVE);
///         ran.fetch_add(1, Ordering::Relaxed);
///     }));
///     assert!(item.as_ref().queue());
///     while ran.load(Ordering::Relaxed) == 0 { std::thread::yield_now(); }
/// }).unwrap();
/// ```
#[repr(C)]
pub struct WorkItem<F> {
    raw: KWorkItem,
    routine: F,
}

impl<F: Fn() + Sync> WorkItem<F> {
    /// `IoAllocateWorkItem` + the routine.
    pub fn new(routine: F) -> WorkItem<F> {
        let addr = run_rust::<F> as *const () as usize;
        WorkItem {
            // SAFETY: `run_rust::<F>` is called only with a pointer to this header, the
            // first field of a `repr(C)` `WorkItem<F>`; `Drop` waits until the item is
            // neither queued nor running.
            raw: unsafe { KWorkItem::new(run_rust::<F>, addr, 0) },
            routine,
        }
    }

    /// `IoQueueWorkItem`: see [`KWorkItem::queue`].
    pub fn queue(self: Pin<&Self>) -> bool {
        // SAFETY: structural pinning of the first field.
        unsafe { self.map_unchecked(|w| &w.raw) }.queue()
    }

    /// The `IO_WORKITEM` inside.
    pub fn raw(&self) -> &KWorkItem {
        &self.raw
    }
}

/// # Safety
///
/// `this` points to the `raw` field of a live `WorkItem<F>`.
unsafe fn run_rust<F: Fn() + Sync>(this: *const KWorkItem) {
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` struct.
    let item = unsafe { &*this.cast::<WorkItem<F>>() };
    (item.routine)()
}

impl<F> Drop for WorkItem<F> {
    fn drop(&mut self) {
        self.raw.wait_idle();
    }
}

impl<F> core::fmt::Debug for WorkItem<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.raw.fmt(f)
    }
}

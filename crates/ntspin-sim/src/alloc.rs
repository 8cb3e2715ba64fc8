//! ALLOC-IRQL: a checking global allocator. Installed in a test binary, it notices an
//! allocation made above DISPATCH_LEVEL on a machine processor (with the verifier on). A
//! global allocator must neither unwind nor fail for this, so the allocation succeeds and
//! the bug check, 0xC4/0x02 (IRQL at the allocation, 0, size), is raised at that
//! processor's next ntspin call.
//!
//! The machine's own bookkeeping (reports, the lock-order graph) is exempt: it is the
//! driver code's allocations that the rule is about.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;

use ntspin::bugcheck::verifier as sub;
use ntspin::{BugCheck, Irql, Rule};

use crate::processor::{self, Processor};

/// A global allocator that checks ALLOC-IRQL, wrapping another one (the system's by
/// default). Install it in a test binary:
///
/// ```
/// #[global_allocator]
/// static ALLOC: ntspin_sim::CheckingAllocator = ntspin_sim::CheckingAllocator::new();
///
/// let m = ntspin_sim::Machine::new(1);
/// let err = m.run_on(0, || {
///     let old = ntspin::raise_irql(ntspin::Irql::new(5).unwrap());
///     let v = vec![0u8; 100]; // succeeds...
///     ntspin::lower_irql(old); // ...and the next ntspin call bug-checks
///     drop(v);
/// }).unwrap_err();
/// assert_eq!(err.bug.params, [0x02, 5, 0, 100]);
/// ```
#[derive(Debug, Default)]
pub struct CheckingAllocator<A = System> {
    inner: A,
}

impl CheckingAllocator<System> {
    /// Checks around the system allocator.
    pub const fn new() -> Self {
        CheckingAllocator { inner: System }
    }
}

impl<A> CheckingAllocator<A> {
    /// Checks around `inner`.
    ///
    /// ```
    /// static ALLOC: ntspin_sim::CheckingAllocator<std::alloc::System> =
    ///     ntspin_sim::CheckingAllocator::wrapping(std::alloc::System);
    /// ```
    pub const fn wrapping(inner: A) -> Self {
        CheckingAllocator { inner }
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged; the
// check before it only reads thread-local and atomic state (no allocation, no unwinding,
// async-signal-safe).
unsafe impl<A: GlobalAlloc> GlobalAlloc for CheckingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

thread_local! {
    /// The machine's own allocations in progress on this thread (exempt).
    static EXEMPT: Cell<u32> = const { Cell::new(0) };
}

/// Marks the machine's own work on this thread: allocations meanwhile are not ALLOC-IRQL.
pub(crate) struct Exempt(());

impl Exempt {
    pub(crate) fn new() -> Exempt {
        let _ = EXEMPT.try_with(|e| e.set(e.get() + 1));
        Exempt(())
    }
}

impl Drop for Exempt {
    fn drop(&mut self) {
        let _ = EXEMPT.try_with(|e| e.set(e.get().saturating_sub(1)));
    }
}

fn note(size: usize) {
    let Some(p) = processor::current_if_attached() else {
        return;
    };
    if !p.verifies() || p.irql() <= Irql::DISPATCH || p.stopping.load(Relaxed) {
        return;
    }
    if EXEMPT.try_with(Cell::get).unwrap_or(1) > 0 {
        return;
    }
    // The first one is reported.
    if p.alloc_size.load(Relaxed) == 0 {
        p.alloc_irql.store(p.irql().raw(), Relaxed);
        p.alloc_size.store(size.max(1), Relaxed);
        p.update_slow();
    }
}

/// At the processor's next ntspin call: the allocation noted, if any, is ALLOC-IRQL.
#[cold]
pub(crate) fn raise_noted(p: &Processor) {
    let size = p.alloc_size.swap(0, Relaxed);
    p.update_slow();
    let irql = p.alloc_irql.load(Relaxed);
    let bug = BugCheck::verifier(
        sub::ALLOC_ABOVE_DISPATCH,
        irql.into(),
        0,
        size,
        Rule::ALLOC_IRQL,
    );
    crate::verifier::violation(p, bug, true);
}

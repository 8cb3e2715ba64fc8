//! In-stack queued spin locks (`KeAcquireInStackQueuedSpinLock` and family): an MCS lock
//! on the same `KSPIN_LOCK` word, with the Windows layouts. The safe `QueuedSpinLock<T>`
//! over it is in `queued_lock.rs`.
//!
//! # Protocol
//!
//! - The lock word is 0 when free and holds the address of the **tail** queue entry while
//!   held in queued mode.
//! - A queue entry is `KSPIN_LOCK_QUEUE { Next, Lock }`; `Lock` is the `KSPIN_LOCK` address
//!   with two flag bits: `LOCK_QUEUE_WAIT` (1) while the entry waits, `LOCK_QUEUE_OWNER` (2)
//!   while it owns the lock.
//! - Acquire: `Next = NULL`, `Lock = lock`; swap the entry into the word. If the word was 0
//!   the entry owns the lock (`Lock |= OWNER`). Otherwise set `WAIT`, link behind the
//!   previous tail (`prev->Next = entry`) and spin on the entry's own `WAIT` bit — one cache
//!   line per waiter.
//! - Release: if `Next` is NULL, compare-exchange the word from this entry to 0; if that
//!   fails a successor has swapped in but not linked yet, so wait for `Next`. Then clear the
//!   entry's `OWNER` and hand over with one `Next->Lock ^= WAIT | OWNER`. Grants are FIFO.
//!
//! # Why a pinned guard
//!
//! The entry must not move or be reused while queued: the predecessor writes into it and the
//! successor's release reads it. The safe API takes `Pin<&mut LockQueueHandle>`, so the
//! handle stays put and the guard borrows it exclusively; a closure API would be simpler
//! but forbids the hand-over-hand and non-nested patterns drivers use with
//! `KLOCK_QUEUE_HANDLE`. A leaked guard cannot leave a dangling entry in the queue: the
//! handle's own `Drop` (which `Pin` guarantees runs before its memory is reused) releases
//! the lock it still owns and reports DL-FREE-HELD; reusing the handle of a leaked guard is
//! QSL-HANDLE, caught before the entry is touched.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::{PhantomData, PhantomPinned};
use core::panic::Location;
use core::ptr;

use crate::hal::{self, AcquireKind, LockEvent, ReleaseKind, SpinWait};
use crate::irql::lower_on;
use crate::raw::CONTENDED_REPORT_EVERY;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering, spin_hint};
use crate::{Irql, RawSpinLock};

/// `LOCK_QUEUE_WAIT`: the entry waits for the lock.
pub const LOCK_QUEUE_WAIT: usize = 1;
/// `LOCK_QUEUE_OWNER`: the entry owns the lock.
pub const LOCK_QUEUE_OWNER: usize = 2;
const FLAGS: usize = LOCK_QUEUE_WAIT | LOCK_QUEUE_OWNER;

/// `KSPIN_LOCK_QUEUE`: one waiter's or the owner's entry in a queued lock.
#[doc(alias = "KSPIN_LOCK_QUEUE")]
#[repr(C)]
pub struct KSpinLockQueue {
    next: AtomicPtr<KSpinLockQueue>,
    lock: AtomicUsize,
}

impl KSpinLockQueue {
    /// The `Next` field: the entry queued behind this one, or null.
    ///
    /// ```
    /// let h = ntspin::LockQueueHandle::new();
    /// assert!(h.lock_queue().next().is_null());
    /// ```
    pub fn next(&self) -> *const KSpinLockQueue {
        self.next.load(Ordering::Relaxed)
    }

    /// The `Lock` field: the lock's address with the WAIT/OWNER flag bits.
    ///
    /// ```
    /// let h = ntspin::LockQueueHandle::new();
    /// assert_eq!(h.lock_queue().lock_field(), 0);
    /// ```
    pub fn lock_field(&self) -> usize {
        self.lock.load(Ordering::Relaxed)
    }
}

/// `KLOCK_QUEUE_HANDLE`: an in-stack queue entry plus the IRQL its acquire saved.
/// Layout-compatible with the WDK (x64: 24 bytes, `LockQueue` at 0, `OldIrql` at 16).
///
/// ```
/// # use ntspin_sim as _;
/// use core::pin::pin;
/// use ntspin::{LockQueueHandle, QueuedSpinLock};
/// let lock = QueuedSpinLock::new(0u32);
/// let mut handle = pin!(LockQueueHandle::new());
/// *lock.lock(handle.as_mut()) += 1;
/// ```
#[doc(alias = "KLOCK_QUEUE_HANDLE")]
#[repr(C)]
pub struct LockQueueHandle {
    lock_queue: KSpinLockQueue,
    old_irql: UnsafeCell<Irql>,
    _pinned: PhantomPinned,
    // The release must happen on the processor that acquired.
    _not_send: PhantomData<*mut ()>,
}

#[cfg(all(not(loom), target_pointer_width = "64"))]
const _: () = {
    assert!(core::mem::size_of::<KSpinLockQueue>() == 16);
    assert!(core::mem::size_of::<LockQueueHandle>() == 24);
    assert!(core::mem::offset_of!(LockQueueHandle, old_irql) == 16);
};

impl Default for LockQueueHandle {
    fn default() -> Self {
        LockQueueHandle::new()
    }
}

impl LockQueueHandle {
    /// An unused handle.
    #[cfg(not(loom))]
    pub const fn new() -> LockQueueHandle {
        LockQueueHandle {
            lock_queue: KSpinLockQueue {
                next: AtomicPtr::new(ptr::null_mut()),
                lock: AtomicUsize::new(0),
            },
            old_irql: UnsafeCell::new(Irql::PASSIVE),
            _pinned: PhantomPinned,
            _not_send: PhantomData,
        }
    }

    /// An unused handle.
    #[cfg(loom)]
    pub fn new() -> LockQueueHandle {
        LockQueueHandle {
            lock_queue: KSpinLockQueue {
                next: AtomicPtr::new(ptr::null_mut()),
                lock: AtomicUsize::new(0),
            },
            old_irql: UnsafeCell::new(Irql::PASSIVE),
            _pinned: PhantomPinned,
            _not_send: PhantomData,
        }
    }

    /// The `LockQueue` field.
    pub fn lock_queue(&self) -> &KSpinLockQueue {
        &self.lock_queue
    }

    /// The `OldIrql` field: what the last raising acquire saved.
    ///
    /// ```
    /// assert_eq!(ntspin::LockQueueHandle::new().old_irql(), ntspin::Irql::PASSIVE);
    /// ```
    pub fn old_irql(&self) -> Irql {
        // SAFETY: `old_irql` is written only by an acquire on the handle's own processor
        // (the handle is !Send and borrowed mutably by that acquire), never concurrently
        // with this read.
        unsafe { *self.old_irql.get() }
    }

    /// Whether the handle is queued or owns a lock right now.
    /// The address of the lock the handle's `Lock` field names (flag bits masked off).
    pub(crate) fn lock_addr(&self) -> usize {
        self.lock_queue.lock_field() & !FLAGS
    }

    pub(crate) fn in_use(&self) -> bool {
        self.lock_queue.lock.load(Ordering::Relaxed) & FLAGS != 0
    }

    pub(crate) fn addr(&self) -> usize {
        self as *const LockQueueHandle as usize
    }
}

impl Drop for LockQueueHandle {
    /// A handle whose guard was leaked still owns its lock: release it (so no other entry
    /// ever writes into this memory again), then report DL-FREE-HELD.
    fn drop(&mut self) {
        if self.in_use() {
            let lock = self.lock_addr();
            let handle: *mut LockQueueHandle = self;
            // SAFETY: `in_use` with a Rust-made handle means a queued acquire on this
            // processor completed (a waiting entry cannot be dropped: its thread is spinning
            // in the acquire) and its guard was leaked; this is the release that guard owed.
            unsafe { release_in_stack_queued(handle) };
            hal::lock_event(&LockEvent::FreedWhileHeld {
                lock,
                word: handle as usize,
            });
        }
    }
}

impl fmt::Debug for LockQueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockQueueHandle")
            .field("next", &self.lock_queue.next())
            .field("lock", &format_args!("{:#x}", self.lock_queue.lock_field()))
            .field("old_irql", &self.old_irql())
            .finish()
    }
}

/// The handle's `LockQueue` entry (its first field, `repr(C)`): no dereference needed.
fn entry_of(handle: *mut LockQueueHandle) -> *const KSpinLockQueue {
    handle.cast::<KSpinLockQueue>().cast_const()
}

/// The handle's `OldIrql` field, by offset: no dereference needed.
fn old_irql_of(handle: *mut LockQueueHandle) -> *mut Irql {
    handle
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(LockQueueHandle, old_irql))
        .cast::<Irql>()
}

impl RawSpinLock {
    /// Raises to `DISPATCH_LEVEL` and acquires in queued mode, with `handle` as this
    /// acquisition's queue entry (`KeAcquireInStackQueuedSpinLock`). The saved IRQL goes
    /// into the handle.
    ///
    /// # Safety
    ///
    /// `handle` points to a writable `KLOCK_QUEUE_HANDLE` that is not moved, reused or freed
    /// until [`release_in_stack_queued`] on this processor has returned for it.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// use ntspin::{RawSpinLock, LockQueueHandle, release_in_stack_queued};
    /// let lock = RawSpinLock::new();
    /// let mut handle = LockQueueHandle::new();
    /// // SAFETY: `handle` lives on this frame and stays put until released below.
    /// unsafe { lock.acquire_in_stack_queued(&mut handle) };
    /// assert_eq!(lock.word(), &handle as *const _ as usize);
    /// // SAFETY: acquired above on this processor.
    /// unsafe { release_in_stack_queued(&mut handle) };
    /// assert_eq!(lock.word(), 0);
    /// ```
    #[doc(alias = "KeAcquireInStackQueuedSpinLock")]
    #[inline(always)]
    #[track_caller]
    pub unsafe fn acquire_in_stack_queued(&self, handle: *mut LockQueueHandle) {
        // SAFETY: the caller's contract is this function's.
        unsafe { self.acquire_in_stack_queued_of(handle, None) }
    }

    /// [`acquire_in_stack_queued`](Self::acquire_in_stack_queued) for a lock wrapper of
    /// class `class`.
    ///
    /// # Safety
    ///
    /// As [`acquire_in_stack_queued`](Self::acquire_in_stack_queued).
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn acquire_in_stack_queued_of(
        &self,
        handle: *mut LockQueueHandle,
        class: Option<&'static Location<'static>>,
    ) {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            // SAFETY: the caller's contract is this function's.
            return unsafe { self.acquire_queued_reported(handle, AcquireKind::Queued, class) };
        }
        let old = prcb.irql();
        prcb.set_irql(Irql::DISPATCH);
        // SAFETY: the caller guarantees `handle` is writable and ours alone.
        unsafe { old_irql_of(handle).write(old) };
        // SAFETY: as above; the entry is the handle's first field.
        unsafe { self.queue_acquire(entry_of(handle)) };
    }

    /// Acquires in queued mode without changing IRQL; the caller runs at `DISPATCH_LEVEL`
    /// or above (`KeAcquireInStackQueuedSpinLockAtDpcLevel`).
    ///
    /// # Safety
    ///
    /// As [`acquire_in_stack_queued`](Self::acquire_in_stack_queued), released with
    /// [`release_in_stack_queued_from_dpc_level`].
    #[doc(alias = "KeAcquireInStackQueuedSpinLockAtDpcLevel")]
    #[inline(always)]
    #[track_caller]
    pub unsafe fn acquire_in_stack_queued_at_dpc_level(&self, handle: *mut LockQueueHandle) {
        // SAFETY: the caller's contract is this function's.
        unsafe { self.acquire_in_stack_queued_at_dpc_level_of(handle, None) }
    }

    /// [`acquire_in_stack_queued_at_dpc_level`](Self::acquire_in_stack_queued_at_dpc_level)
    /// for a lock wrapper of class `class`.
    ///
    /// # Safety
    ///
    /// As [`acquire_in_stack_queued_at_dpc_level`](Self::acquire_in_stack_queued_at_dpc_level).
    #[inline(always)]
    #[track_caller]
    pub(crate) unsafe fn acquire_in_stack_queued_at_dpc_level_of(
        &self,
        handle: *mut LockQueueHandle,
        class: Option<&'static Location<'static>>,
    ) {
        if hal::current_prcb().hal_wants() {
            // SAFETY: the caller's contract is this function's.
            return unsafe {
                self.acquire_queued_reported(handle, AcquireKind::QueuedAtDpc, class)
            };
        }
        // SAFETY: the caller guarantees `handle` is writable and ours alone.
        unsafe { self.queue_acquire(entry_of(handle)) };
    }

    /// A queued acquire the HAL wants to see: each step reported to the verifier.
    ///
    /// # Safety
    ///
    /// As [`acquire_in_stack_queued`](Self::acquire_in_stack_queued).
    #[cold]
    #[inline(never)]
    #[track_caller]
    unsafe fn acquire_queued_reported(
        &self,
        handle: *mut LockQueueHandle,
        kind: AcquireKind,
        class: Option<&'static Location<'static>>,
    ) {
        let (lock, h) = (self.addr(), handle as usize);
        hal::lock_event(&LockEvent::Acquire {
            lock,
            kind,
            handle: h,
            site: Location::caller(),
            class,
        });
        let saved = if kind.raises() {
            let old = hal::raise_irql(Irql::DISPATCH);
            // SAFETY: the caller guarantees `handle` is writable and ours alone.
            unsafe { old_irql_of(handle).write(old) };
            Some(old)
        } else {
            None
        };
        // SAFETY: as above; the entry is the handle's first field.
        let waited = unsafe { self.queue_acquire(entry_of(handle)) };
        // Granted at once: the verifier already counts it held. After a wait (announced
        // by `QueuedBehind`), report the grant.
        if waited {
            hal::lock_event(&LockEvent::Acquired {
                lock,
                kind,
                handle: h,
                old_irql: saved,
            });
        }
    }

    /// The MCS acquire on the word.
    ///
    /// # Safety
    ///
    /// `entry` is valid, exclusively this acquisition's, and stays put until released.
    ///
    /// Returns whether it had to wait behind a predecessor.
    #[inline(always)]
    unsafe fn queue_acquire(&self, entry: *const KSpinLockQueue) -> bool {
        // SAFETY: the caller guarantees `entry` is valid.
        let e = unsafe { &*entry };
        // `Next` must be clear before the swap publishes the entry: a successor may link
        // into it right after.
        e.next.store(ptr::null_mut(), Ordering::Relaxed);
        // AcqRel: Release publishes the entry's initialisation to the successor that will
        // read it; Acquire pairs with the previous owner's release of the word.
        let pred = self.atomic().swap(entry as usize, Ordering::AcqRel);
        if pred == 0 {
            // Only this processor writes its own entry's `Lock` while it owns the lock.
            e.lock
                .store(self.addr() | LOCK_QUEUE_OWNER, Ordering::Relaxed);
            return false;
        }
        // WAIT is set before the link below publishes the entry to the predecessor, whose
        // release is the only other writer of this field.
        e.lock
            .store(self.addr() | LOCK_QUEUE_WAIT, Ordering::Relaxed);
        self.queue_wait(e, pred);
        true
    }

    #[cold]
    #[inline(never)]
    fn queue_wait(&self, e: &KSpinLockQueue, pred: usize) {
        let handle = e as *const KSpinLockQueue as usize;
        let reported = hal::current_prcb().hal_wants();
        if reported {
            // The verifier judges `pred` before it is dereferenced (garbage stops here).
            hal::lock_event(&LockEvent::QueuedBehind {
                lock: self.addr(),
                handle,
                pred,
            });
        }
        let pred = pred as *const KSpinLockQueue;
        // SAFETY: `pred` was the tail; its owner cannot finish releasing (and so cannot free
        // its entry) until it sees this link: its compare-exchange of the word from `pred`
        // to 0 fails now that the word holds our entry, so it waits for `Next`.
        let pred = unsafe { &*pred };
        // Release: the successor's WAIT bit and fields are visible before the link.
        pred.next.store(
            e as *const KSpinLockQueue as *mut KSpinLockQueue,
            Ordering::Release,
        );
        let mut spins: u32 = 0;
        while e.lock.load(Ordering::Acquire) & LOCK_QUEUE_WAIT != 0 {
            spins = spins.wrapping_add(1);
            spin_hint();
            hal::spin_wait(spins, SpinWait::Queued);
            if reported && spins % CONTENDED_REPORT_EVERY == 0 {
                hal::lock_event(&LockEvent::Contended {
                    lock: self.addr(),
                    word: self.word(),
                });
            }
        }
    }

    /// The MCS release on the word.
    ///
    /// # Safety
    ///
    /// `entry` is the owner entry of this lock on this processor.
    #[inline(always)]
    unsafe fn queue_release(&self, entry: *const KSpinLockQueue) {
        // SAFETY: the caller guarantees `entry` is our live owner entry.
        let e = unsafe { &*entry };
        let owned = self.addr() | LOCK_QUEUE_OWNER;
        let mut next = e.next.load(Ordering::Acquire);
        if next.is_null() {
            if self
                .atomic()
                .compare_exchange(entry as usize, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                e.lock.store(owned & !LOCK_QUEUE_OWNER, Ordering::Relaxed);
                return;
            }
            next = self.wait_for_successor(e);
        }
        // Our own entry: nobody else writes its `Lock` once we own the lock.
        e.lock.store(owned & !LOCK_QUEUE_OWNER, Ordering::Relaxed);
        // SAFETY: `next` linked itself behind us and spins on its WAIT bit until this
        // store; its entry is live until it has acquired and released.
        let n = unsafe { &*next };
        // The grant (`Lock ^= WAIT | OWNER` in NT): the waiter's `Lock` is `lock | WAIT`
        // and only this release writes it now, so a plain store is the same exchange.
        n.lock.store(owned, Ordering::Release);
    }

    /// A successor swapped itself in but has not linked yet: wait for the link.
    #[cold]
    #[inline(never)]
    fn wait_for_successor(&self, e: &KSpinLockQueue) -> *mut KSpinLockQueue {
        let mut spins: u32 = 0;
        loop {
            let next = e.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            spins = spins.wrapping_add(1);
            spin_hint();
            hal::spin_wait(spins, SpinWait::Handoff);
        }
    }
}

/// Releases the queued lock `handle` owns, then lowers to the IRQL saved in the handle
/// (`KeReleaseInStackQueuedSpinLock`).
///
/// # Safety
///
/// `handle` was passed to [`RawSpinLock::acquire_in_stack_queued`] on this processor and
/// that acquire returned; it has not been released since. (With the verifier on, a handle
/// that owns nothing is a bug check — SL-NOT-OWNED — and is not dereferenced further.)
#[doc(alias = "KeReleaseInStackQueuedSpinLock")]
#[inline(always)]
pub unsafe fn release_in_stack_queued(handle: *mut LockQueueHandle) {
    // SAFETY: the caller guarantees the handle is readable.
    let old = unsafe { old_irql_of(handle).read() };
    // SAFETY: as above.
    unsafe { release_queued(handle, ReleaseKind::Queued, Some(old)) };
}

/// Releases the queued lock `handle` owns without changing IRQL
/// (`KeReleaseInStackQueuedSpinLockFromDpcLevel`).
///
/// # Safety
///
/// As [`release_in_stack_queued`], for a handle acquired either way.
#[doc(alias = "KeReleaseInStackQueuedSpinLockFromDpcLevel")]
#[inline(always)]
pub unsafe fn release_in_stack_queued_from_dpc_level(handle: *mut LockQueueHandle) {
    // SAFETY: the caller's contract is this function's.
    unsafe { release_queued(handle, ReleaseKind::QueuedFromDpc, None) };
}

/// # Safety
///
/// As [`release_in_stack_queued`].
#[inline(always)]
unsafe fn release_queued(handle: *mut LockQueueHandle, kind: ReleaseKind, new_irql: Option<Irql>) {
    let prcb = hal::current_prcb();
    if prcb.hal_wants() {
        // SAFETY: the caller's contract is this function's.
        return unsafe { release_queued_reported(handle, kind, new_irql) };
    }
    // SAFETY: the caller guarantees the handle is readable.
    let lock = unsafe { (*handle).lock_addr() };
    // SAFETY: the caller guarantees the handle owns its lock, so `lock` is a live lock.
    let raw = unsafe { &*(lock as *const RawSpinLock) };
    // SAFETY: the entry is the handle's owner entry for `raw`.
    unsafe { raw.queue_release(entry_of(handle)) };
    if let Some(new) = new_irql {
        lower_on(prcb, new);
    }
}

/// A release the HAL wants to see: the verifier judges the handle before its lock is
/// touched.
///
/// # Safety
///
/// As [`release_in_stack_queued`].
#[cold]
#[inline(never)]
unsafe fn release_queued_reported(
    handle: *mut LockQueueHandle,
    kind: ReleaseKind,
    new_irql: Option<Irql>,
) {
    // SAFETY: the caller guarantees the handle is readable.
    let lock = unsafe { (*handle).lock_addr() };
    hal::lock_event(&LockEvent::Release {
        lock,
        kind,
        handle: handle as usize,
        new_irql,
    });
    // SAFETY: the verifier accepted the release, so the handle owns `lock`, a live lock.
    let raw = unsafe { &*(lock as *const RawSpinLock) };
    // SAFETY: the entry is the handle's owner entry for `raw`.
    unsafe { raw.queue_release(entry_of(handle)) };
    if let Some(new) = new_irql {
        hal::lower_irql(new);
    }
}

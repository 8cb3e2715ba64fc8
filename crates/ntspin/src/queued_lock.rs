//! `QueuedSpinLock<T>`: the in-stack queued spin lock with the data it protects, over the
//! MCS protocol of [`queued`](crate::queued). The pinned-handle design is explained there.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::pin::Pin;

use crate::hal;
use crate::irql::DpcLevel;
use crate::queued::{
    LockQueueHandle, release_in_stack_queued, release_in_stack_queued_from_dpc_level,
};
use crate::{BugCheck, RawSpinLock, Rule};

/// Data protected by an in-stack queued spin lock: FIFO, one cache line spun on per
/// waiter.
///
/// Each acquisition needs its own pinned [`LockQueueHandle`]; the guard borrows it until
/// the release.
///
/// ```
/// # use ntspin_sim as _;
/// use core::pin::pin;
/// use ntspin::{LockQueueHandle, QueuedSpinLock, Irql, current_irql};
/// let list = QueuedSpinLock::new(Vec::new());
/// let mut h = pin!(LockQueueHandle::new());
/// {
///     let mut g = list.lock(h.as_mut());
///     g.push(1);
///     assert_eq!(current_irql(), Irql::DISPATCH);
/// }
/// assert_eq!(current_irql(), Irql::PASSIVE);
/// assert_eq!(*list.lock(h.as_mut()), [1]);
/// ```
pub struct QueuedSpinLock<T: ?Sized> {
    raw: RawSpinLock,
    /// Where the lock was constructed: its class for the lock-order verifier's class mode.
    class: &'static Location<'static>,
    data: UnsafeCell<T>,
}

// SAFETY: as for `SpinLock`: one holder at a time gets the `T`.
unsafe impl<T: ?Sized + Send> Sync for QueuedSpinLock<T> {}
// SAFETY: moving the lock moves the `T`.
unsafe impl<T: ?Sized + Send> Send for QueuedSpinLock<T> {}

impl<T> QueuedSpinLock<T> {
    /// A free lock around `data`.
    #[doc(alias = "KeInitializeSpinLock")]
    #[cfg(not(loom))]
    #[track_caller]
    pub const fn new(data: T) -> QueuedSpinLock<T> {
        QueuedSpinLock {
            raw: RawSpinLock::new(),
            class: Location::caller(),
            data: UnsafeCell::new(data),
        }
    }

    /// A free lock around `data`.
    #[cfg(loom)]
    #[track_caller]
    pub fn new(data: T) -> QueuedSpinLock<T> {
        QueuedSpinLock {
            raw: RawSpinLock::new(),
            class: Location::caller(),
            data: UnsafeCell::new(data),
        }
    }
}

impl<T: ?Sized> QueuedSpinLock<T> {
    /// Raises to `DISPATCH_LEVEL` and acquires with `handle` as the queue entry
    /// (`KeAcquireInStackQueuedSpinLock`).
    #[doc(alias = "KeAcquireInStackQueuedSpinLock")]
    #[inline(always)]
    #[track_caller]
    pub fn lock<'a>(&'a self, handle: Pin<&'a mut LockQueueHandle>) -> QueuedGuard<'a, T> {
        let h = Self::claim(handle);
        // SAFETY: `h` is pinned (it cannot move before its Drop runs) and borrowed by the
        // guard until the release; `claim` ensured it is not in use.
        unsafe { self.raw.acquire_in_stack_queued_of(h, Some(self.class)) };
        QueuedGuard {
            lock: self,
            handle: h,
            raised: true,
            _borrow: PhantomData,
        }
    }

    /// Acquires without touching IRQL; `proof` shows IRQL >= DISPATCH
    /// (`KeAcquireInStackQueuedSpinLockAtDpcLevel`).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// use core::pin::pin;
    /// use ntspin::{LockQueueHandle, QueuedSpinLock, SpinLock};
    /// let outer = SpinLock::new(());
    /// let inner = QueuedSpinLock::new(5);
    /// let g = outer.lock();
    /// let mut h = pin!(LockQueueHandle::new());
    /// assert_eq!(*inner.lock_at_dpc_level(h.as_mut(), g.dpc_level()), 5);
    /// ```
    #[doc(alias = "KeAcquireInStackQueuedSpinLockAtDpcLevel")]
    #[inline]
    #[track_caller]
    pub fn lock_at_dpc_level<'a>(
        &'a self,
        handle: Pin<&'a mut LockQueueHandle>,
        proof: &'a DpcLevel,
    ) -> QueuedGuard<'a, T> {
        let _ = proof;
        let h = Self::claim(handle);
        // SAFETY: as in `lock`.
        unsafe {
            self.raw
                .acquire_in_stack_queued_at_dpc_level_of(h, Some(self.class))
        };
        QueuedGuard {
            lock: self,
            handle: h,
            raised: false,
            _borrow: PhantomData,
        }
    }

    /// Where this lock was constructed: its class for the lock-order verifier's class
    /// mode.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// assert_eq!(ntspin::QueuedSpinLock::new(()).class().file(), file!());
    /// ```
    pub fn class(&self) -> &'static Location<'static> {
        self.class
    }

    /// The underlying `KSPIN_LOCK`.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// assert_eq!(ntspin::QueuedSpinLock::new(()).raw().word(), 0);
    /// ```
    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// Mutable access without locking.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let mut l = ntspin::QueuedSpinLock::new(1);
    /// *l.get_mut() = 2;
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The handle as a raw pointer, refusing one still in use (a leaked guard's): reusing
    /// it would corrupt the queue, so this is checked whatever the verifier level.
    #[inline(always)]
    fn claim(handle: Pin<&mut LockQueueHandle>) -> *mut LockQueueHandle {
        // SAFETY: the pointer is only used in place; the handle is never moved out.
        let h = unsafe { Pin::get_unchecked_mut(handle) };
        if h.in_use() {
            let lock = h.lock_addr();
            hal::bug_check(BugCheck::verifier(
                crate::bugcheck::verifier::QUEUE_HANDLE_REUSED,
                lock,
                h.addr(),
                0,
                Rule::QSL_HANDLE,
            ));
        }
        h
    }
}

impl<T: ?Sized> fmt::Debug for QueuedSpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedSpinLock")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// A held [`QueuedSpinLock`]. Dropping it hands the lock to the next waiter (or frees it),
/// then restores the IRQL saved in the handle (raising acquires only).
#[must_use = "dropping the guard releases the lock at once"]
pub struct QueuedGuard<'a, T: ?Sized> {
    lock: &'a QueuedSpinLock<T>,
    handle: *mut LockQueueHandle,
    raised: bool,
    _borrow: PhantomData<&'a mut LockQueueHandle>,
}

impl<T: ?Sized> QueuedGuard<'_, T> {
    /// Proof that IRQL is at least `DISPATCH_LEVEL` while this guard lives.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// use core::pin::pin;
    /// let l = ntspin::QueuedSpinLock::new(());
    /// let mut h = pin!(ntspin::LockQueueHandle::new());
    /// let g = l.lock(h.as_mut());
    /// let _proof = g.dpc_level();
    /// ```
    pub fn dpc_level(&self) -> &DpcLevel {
        DpcLevel::assumed()
    }
}

impl<T: ?Sized> Deref for QueuedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard means this processor owns the lock: exclusive access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for QueuedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for QueuedGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.raised {
            // SAFETY: the guard's acquire on this processor (guards are !Send) returned for
            // this handle, which the guard still borrows.
            unsafe { release_in_stack_queued(self.handle) }
        } else {
            // SAFETY: as above, for the AtDpcLevel acquire.
            unsafe { release_in_stack_queued_from_dpc_level(self.handle) }
        }
    }
}

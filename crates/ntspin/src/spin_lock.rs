//! `SpinLock<T>`: the executive spin lock with the data it protects, and a guard that owns
//! the IRQL its acquire saved (the `KeAcquireSpinLock` page's "two locks share one OldIrql
//! variable" race cannot be written: each guard carries its own).

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::panic::Location;

use crate::hal::{self, Prcb};
use crate::irql::DpcLevel;
use crate::{Irql, RawSpinLock};

/// Data protected by an executive spin lock.
///
/// [`lock`](Self::lock) raises to `DISPATCH_LEVEL` and acquires; dropping the guard
/// releases first and restores the saved IRQL second, as `KeReleaseSpinLock` does.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{SpinLock, Irql, current_irql};
/// let counter = SpinLock::new(0u64);
/// {
///     let mut n = counter.lock();
///     *n += 1;
///     assert_eq!(current_irql(), Irql::DISPATCH);
/// }
/// assert_eq!(current_irql(), Irql::PASSIVE);
/// assert_eq!(*counter.lock(), 1);
/// ```
pub struct SpinLock<T: ?Sized> {
    raw: RawSpinLock,
    /// Where the lock was constructed: its class for the lock-order verifier's class mode.
    class: &'static Location<'static>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `T` to one holder at a time, on whichever processor
// holds it, so `T` must be `Send`; nothing else is shared.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T` with it.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A free lock around `data` (`KeInitializeSpinLock`).
    #[doc(alias = "KeInitializeSpinLock")]
    #[cfg(not(loom))]
    #[track_caller]
    pub const fn new(data: T) -> SpinLock<T> {
        SpinLock {
            raw: RawSpinLock::new(),
            class: Location::caller(),
            data: UnsafeCell::new(data),
        }
    }

    /// A free lock around `data` (`KeInitializeSpinLock`).
    #[cfg(loom)]
    #[track_caller]
    pub fn new(data: T) -> SpinLock<T> {
        SpinLock {
            raw: RawSpinLock::new(),
            class: Location::caller(),
            data: UnsafeCell::new(data),
        }
    }

    /// The protected value, consuming the lock.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// assert_eq!(ntspin::SpinLock::new(5).into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        this.raw.retire();
        // SAFETY: `this` is never used or dropped again; `data` is read exactly once.
        unsafe { core::ptr::read(this.data.get()) }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Raises to `DISPATCH_LEVEL` and acquires (`KeAcquireSpinLock`). Callable at IRQL <=
    /// DISPATCH (SL-ACQ-IRQL).
    #[doc(alias = "KeAcquireSpinLock")]
    #[doc(alias = "KeAcquireSpinLockRaiseToDpc")]
    #[inline]
    #[track_caller]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let prcb = hal::current_prcb();
        let (old, fast) = self.raw.acquire_on(prcb, Some(self.class));
        self.guard(Some(old), fast.then_some(prcb))
    }

    /// The guard for an acquisition this processor just made; `fast` holds its control
    /// block if the acquire took the fast path.
    #[inline(always)]
    fn guard(&self, old_irql: Option<Irql>, fast: Option<&'static Prcb>) -> SpinLockGuard<'_, T> {
        SpinLockGuard {
            lock: self,
            old_irql,
            fast,
            _not_send: PhantomData,
        }
    }

    /// Raises to `DISPATCH_LEVEL` and acquires if the lock is free; otherwise restores the
    /// IRQL and returns `None`. Never spins. Callable at IRQL <= DISPATCH (SL-ACQ-IRQL).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// let g = a.try_lock().expect("free");
    /// drop(g);
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let old = self.raw.try_acquire_of(Some(self.class))?;
        Some(self.guard(Some(old), None))
    }

    /// Acquires without touching IRQL (`KeAcquireSpinLockAtDpcLevel`): `proof` shows the
    /// processor already runs at `DISPATCH_LEVEL` or above. The guard releases with
    /// `KeReleaseSpinLockFromDpcLevel` and cannot outlive the proof.
    #[doc(alias = "KeAcquireSpinLockAtDpcLevel")]
    #[inline]
    #[track_caller]
    pub fn lock_at_dpc_level<'a>(&'a self, proof: &'a DpcLevel) -> SpinLockGuard<'a, T> {
        let _ = proof;
        self.raw.acquire_at_dpc_level_of(Some(self.class));
        self.guard(None, None)
    }

    /// Acquires if free, at DISPATCH or above, without spinning
    /// (`KeTryToAcquireSpinLockAtDpcLevel`).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(1);
    /// let b = ntspin::SpinLock::new(2);
    /// let ga = a.lock();
    /// assert!(b.try_lock_at_dpc_level(ga.dpc_level()).is_some());
    /// ```
    #[doc(alias = "KeTryToAcquireSpinLockAtDpcLevel")]
    #[inline]
    #[track_caller]
    pub fn try_lock_at_dpc_level<'a>(
        &'a self,
        proof: &'a DpcLevel,
    ) -> Option<SpinLockGuard<'a, T>> {
        let _ = proof;
        self.raw
            .try_acquire_at_dpc_level_of(Some(self.class))
            .then(|| self.guard(None, None))
    }

    /// Where this lock was constructed (`SpinLock::new`'s caller): the lock's class when
    /// the verifier keys the lock-order graph by class.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// assert_eq!(a.class().file(), file!());
    /// ```
    pub fn class(&self) -> &'static Location<'static> {
        self.class
    }

    /// Whether the lock is free right now (`KeTestSpinLock`); a hint only.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// assert!(a.test());
    /// ```
    #[doc(alias = "KeTestSpinLock")]
    pub fn test(&self) -> bool {
        self.raw.test()
    }

    /// The underlying `KSPIN_LOCK` (for addresses in bug checks and for inspection).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// assert_eq!(a.raw().word(), 0);
    /// ```
    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// Mutable access without locking: `&mut self` proves no one else can hold it.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let mut a = ntspin::SpinLock::new(1);
    /// *a.get_mut() += 1;
    /// assert_eq!(*a.lock(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinLock")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// A held [`SpinLock`]. Dropping it releases the lock, then restores the IRQL the acquire
/// saved (or, for an AtDpcLevel acquire, leaves IRQL alone).
///
/// `!Send`: the release must happen on the processor that acquired.
#[must_use = "dropping the guard releases the lock at once"]
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    old_irql: Option<Irql>,
    /// The acquiring processor's control block when the acquire took the fast path (the
    /// release happens on that processor: the guard is `!Send`).
    fast: Option<&'static Prcb>,
    _not_send: PhantomData<*mut ()>,
}

// SAFETY: a shared guard only gives `&T`; that is safe to share when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for SpinLockGuard<'_, T> {}

impl<'a, T: ?Sized> SpinLockGuard<'a, T> {
    /// Proof that IRQL is at least `DISPATCH_LEVEL` while this guard lives, for
    /// [`SpinLock::lock_at_dpc_level`] and the queued equivalents.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// let g = a.lock();
    /// let _proof = g.dpc_level();
    /// ```
    pub fn dpc_level(&self) -> &DpcLevel {
        DpcLevel::assumed()
    }

    /// The IRQL this guard will restore, `None` for an AtDpcLevel guard.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let a = ntspin::SpinLock::new(());
    /// assert_eq!(a.lock().old_irql(), Some(ntspin::Irql::PASSIVE));
    /// ```
    pub fn old_irql(&self) -> Option<Irql> {
        self.old_irql
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard's existence means this processor holds the lock, which gives
        // exclusive access to the data until the guard drops.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        match self.old_irql {
            // SAFETY: the guard was made by a raising acquire on this processor (guards are
            // !Send) and `old` is the IRQL that acquire saved.
            Some(old) => match self.fast {
                // SAFETY: as above, and the acquire took the fast path on `prcb`.
                Some(prcb) => unsafe { self.lock.raw.release_fast(prcb, old) },
                // SAFETY: as above.
                None => unsafe { self.lock.raw.release(old) },
            },
            // SAFETY: the guard was made by an AtDpcLevel acquire on this processor.
            None => unsafe { self.lock.raw.release_from_dpc_level() },
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

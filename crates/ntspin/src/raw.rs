//! `RawSpinLock`: the `KSPIN_LOCK` word and the executive spin-lock protocol on it
//! (`KeAcquireSpinLock`, `KeReleaseSpinLock`, the AtDpcLevel/FromDpcLevel pair,
//! `KeTryToAcquireSpinLockAtDpcLevel`, `KeTestSpinLock`). The in-stack queued protocol on
//! the same word is in [`queued`](crate::queued).
//!
//! # The word
//!
//! - `0`: free.
//! - odd: held in ordinary mode; the value is the owner's tag ([`Prcb::owner_tag`]).
//! - even, non-zero: held in queued mode; the value is the address of the tail
//!   `KSPIN_LOCK_QUEUE` (queue entries are pointer-aligned, so their low bit is clear).
//!
//! [`Prcb::owner_tag`]: crate::hal::Prcb::owner_tag

use core::panic::Location;

use crate::Irql;
use crate::hal::{self, AcquireKind, LockEvent, Prcb, ReleaseKind, SpinWait};
use crate::irql::lower_on;
use crate::sync::{AtomicUsize, Ordering, spin_hint};

/// How many spins between two `Contended` reports to the verifier.
pub(crate) const CONTENDED_REPORT_EVERY: u32 = 1 << 10;

/// An executive spin lock: exactly one `KSPIN_LOCK` (a pointer-sized word, 0 when free).
///
/// This is the raw protocol, for the C ABI and for building other locks; Rust code
/// normally wants [`SpinLock<T>`](crate::SpinLock). Acquiring is safe (at worst it
/// deadlocks, which the verifier reports); releasing is `unsafe`, because releasing a lock
/// someone else holds would break *their* exclusion when the verifier is off.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{RawSpinLock, Irql, current_irql};
/// let lock = RawSpinLock::new();
/// let old = lock.acquire();
/// assert_eq!(current_irql(), Irql::DISPATCH);
/// assert!(!lock.test());
/// // SAFETY: this processor acquired `lock` just above, and `old` is what it returned.
/// unsafe { lock.release(old) };
/// assert!(lock.test());
/// ```
#[doc(alias = "KSPIN_LOCK")]
#[repr(transparent)]
pub struct RawSpinLock {
    word: AtomicUsize,
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<RawSpinLock>() == core::mem::size_of::<usize>());
    assert!(core::mem::align_of::<RawSpinLock>() == core::mem::align_of::<usize>());
};

impl Drop for RawSpinLock {
    /// A lock dropped while held (a leaked guard or a raw acquisition never released) is
    /// DL-FREE-HELD; the verifier also forgets the address (lock-order graph).
    fn drop(&mut self) {
        self.retire();
    }
}

impl Default for RawSpinLock {
    fn default() -> Self {
        RawSpinLock::new()
    }
}

impl RawSpinLock {
    /// A free lock (`KeInitializeSpinLock`).
    #[doc(alias = "KeInitializeSpinLock")]
    #[cfg(not(loom))]
    pub const fn new() -> RawSpinLock {
        RawSpinLock {
            word: AtomicUsize::new(0),
        }
    }

    /// A free lock (`KeInitializeSpinLock`).
    #[cfg(loom)]
    pub fn new() -> RawSpinLock {
        RawSpinLock {
            word: AtomicUsize::new(0),
        }
    }

    /// Views a C `KSPIN_LOCK` as a `RawSpinLock`.
    ///
    /// # Safety
    ///
    /// `ptr` is non-null, aligned, valid for reads and writes for `'a`, and only accessed
    /// atomically (through ntspin) while `'a` lasts.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let mut word: usize = 0; // a C `KSPIN_LOCK`
    /// // SAFETY: `word` is a live, aligned usize that only this view touches.
    /// let lock = unsafe { ntspin::RawSpinLock::from_ptr(&mut word) };
    /// assert!(lock.test());
    /// ```
    #[cfg(not(loom))]
    pub unsafe fn from_ptr<'a>(ptr: *mut usize) -> &'a RawSpinLock {
        // SAFETY: `RawSpinLock` is `repr(transparent)` over `AtomicUsize`, which has the
        // size and alignment of `usize`; the caller guarantees validity and atomic-only use.
        unsafe { &*ptr.cast::<RawSpinLock>() }
    }

    /// The lock's address: what a `PKSPIN_LOCK` holds, and what bug-check parameters name.
    #[inline]
    pub fn addr(&self) -> usize {
        self as *const RawSpinLock as usize
    }

    /// The word's current value (see the module docs for its meaning). For inspection and
    /// tests; never a basis for deciding to touch the protected data.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let lock = ntspin::RawSpinLock::new();
    /// assert_eq!(lock.word(), 0);
    /// ```
    pub fn word(&self) -> usize {
        self.word.load(Ordering::Relaxed)
    }

    /// For the owners of a lock word being destroyed: a word that still says "held" (a
    /// leaked guard) is reported to the verifier (DL-FREE-HELD).
    pub(crate) fn report_if_held(&self) {
        let word = self.word();
        if word != 0 {
            hal::lock_event(&LockEvent::FreedWhileHeld {
                lock: self.addr(),
                word,
            });
        }
    }

    /// The lock ends here: DL-FREE-HELD if it is still held, then (verifier on) the
    /// verifier forgets the address, which a new lock may reuse.
    pub(crate) fn retire(&self) {
        self.report_if_held();
        if hal::current_prcb().hal_wants() {
            hal::lock_event(&LockEvent::Retired { lock: self.addr() });
        }
    }

    pub(crate) fn atomic(&self) -> &AtomicUsize {
        &self.word
    }

    /// Raises to `DISPATCH_LEVEL`, then acquires; returns the IRQL to pass to
    /// [`release`](Self::release). Callable at IRQL <= DISPATCH (SL-ACQ-IRQL).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let lock = ntspin::RawSpinLock::new();
    /// let old = lock.acquire();
    /// // SAFETY: acquired above on this processor.
    /// unsafe { lock.release(old) };
    /// ```
    #[doc(alias = "KeAcquireSpinLock")]
    #[doc(alias = "KeAcquireSpinLockRaiseToDpc")]
    #[inline]
    #[track_caller]
    pub fn acquire(&self) -> Irql {
        self.acquire_on(hal::current_prcb(), None).0
    }

    /// [`acquire`](Self::acquire) on `prcb`, the current processor's control block; also
    /// says whether it took the fast path (the HAL wanted nothing), so that a guard can
    /// release on the fast path too without asking again.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn acquire_on(
        &self,
        prcb: &Prcb,
        class: Option<&'static Location<'static>>,
    ) -> (Irql, bool) {
        if prcb.hal_wants() {
            return (self.acquire_reported_raise(class), false);
        }
        let old = prcb.irql();
        prcb.set_irql(Irql::DISPATCH);
        self.spin_acquire(prcb.owner_tag());
        (old, true)
    }

    /// Releases, then lowers to `old_irql`.
    ///
    /// # Safety
    ///
    /// This processor holds the lock through [`acquire`](Self::acquire), and `old_irql` is
    /// the value that acquire returned. (With the verifier on, a violation is a bug check
    /// — SL-REL-IRQL, SL-NOT-OWNED, SL-OLDIRQL — instead of undefined behaviour.)
    #[doc(alias = "KeReleaseSpinLock")]
    #[inline]
    pub unsafe fn release(&self, old_irql: Irql) {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            return self.release_reported_lower(old_irql);
        }
        // SAFETY: the caller's contract, and the HAL wants nothing reported.
        unsafe { self.release_fast(prcb, old_irql) }
    }

    /// The release after a fast-path acquire: nothing to report (the HAL's wish to verify
    /// does not change while a lock is held), so only the lowering asks the HAL.
    ///
    /// # Safety
    ///
    /// As [`release`](Self::release); `prcb` is the current processor's, and its acquire
    /// took the fast path (or the HAL wants nothing now).
    #[inline(always)]
    pub(crate) unsafe fn release_fast(&self, prcb: &Prcb, old_irql: Irql) {
        self.word.store(0, Ordering::Release);
        lower_on(prcb, old_irql);
    }

    /// Acquires without changing IRQL; the caller is already at `DISPATCH_LEVEL` or above
    /// (SL-ATDPC-IRQL).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let lock = ntspin::RawSpinLock::new();
    /// let old = ntspin::raise_irql_to_dpc_level();
    /// lock.acquire_at_dpc_level();
    /// // SAFETY: acquired above on this processor.
    /// unsafe { lock.release_from_dpc_level() };
    /// ntspin::lower_irql(old);
    /// ```
    #[doc(alias = "KeAcquireSpinLockAtDpcLevel")]
    #[inline]
    #[track_caller]
    pub fn acquire_at_dpc_level(&self) {
        self.acquire_at_dpc_level_of(None)
    }

    /// [`acquire_at_dpc_level`](Self::acquire_at_dpc_level) for a lock wrapper whose class
    /// (construction site) the HAL may ask for.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn acquire_at_dpc_level_of(&self, class: Option<&'static Location<'static>>) {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            self.acquire_reported_at_dpc(class);
        } else {
            self.spin_acquire(prcb.owner_tag());
        }
    }

    /// Releases without changing IRQL (SL-FROMDPC-IRQL).
    ///
    /// # Safety
    ///
    /// This processor holds the lock, acquired in ordinary (non-queued) mode.
    #[doc(alias = "KeReleaseSpinLockFromDpcLevel")]
    #[inline]
    pub unsafe fn release_from_dpc_level(&self) {
        if hal::current_prcb().hal_wants() {
            self.release_reported_from_dpc();
        } else {
            self.word.store(0, Ordering::Release);
        }
    }

    /// Acquires if free, without spinning and without changing IRQL; the caller is at
    /// `DISPATCH_LEVEL` or above. Returns whether the lock is now held.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let lock = ntspin::RawSpinLock::new();
    /// let old = ntspin::raise_irql_to_dpc_level();
    /// assert!(lock.try_acquire_at_dpc_level());
    /// // SAFETY: acquired above on this processor.
    /// unsafe { lock.release_from_dpc_level() };
    /// ntspin::lower_irql(old);
    /// ```
    #[doc(alias = "KeTryToAcquireSpinLockAtDpcLevel")]
    #[inline]
    #[track_caller]
    pub fn try_acquire_at_dpc_level(&self) -> bool {
        self.try_acquire_at_dpc_level_of(None)
    }

    /// [`try_acquire_at_dpc_level`](Self::try_acquire_at_dpc_level) for a lock wrapper of
    /// class `class`.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn try_acquire_at_dpc_level_of(
        &self,
        class: Option<&'static Location<'static>>,
    ) -> bool {
        let prcb = hal::current_prcb();
        if !prcb.hal_wants() {
            return self.try_word(prcb.owner_tag());
        }
        self.try_reported(AcquireKind::TryAtDpc, class).is_some()
    }

    /// Raises to `DISPATCH_LEVEL` and acquires if free; otherwise lowers again. Returns the
    /// IRQL to release with, or `None` (IRQL unchanged) if the lock was busy. Callable at
    /// IRQL <= DISPATCH, like [`acquire`](Self::acquire) (SL-ACQ-IRQL).
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// let lock = ntspin::RawSpinLock::new();
    /// let old = lock.try_acquire().expect("free");
    /// // SAFETY: acquired above on this processor.
    /// unsafe { lock.release(old) };
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_acquire(&self) -> Option<Irql> {
        self.try_acquire_of(None)
    }

    /// [`try_acquire`](Self::try_acquire) for a lock wrapper of class `class`.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn try_acquire_of(&self, class: Option<&'static Location<'static>>) -> Option<Irql> {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            return self.try_reported(AcquireKind::TryRaise, class);
        }
        let old = prcb.irql();
        prcb.set_irql(Irql::DISPATCH);
        if self.try_word(prcb.owner_tag()) {
            Some(old)
        } else {
            lower_on(prcb, old);
            None
        }
    }

    /// A try-acquire the HAL wants to see; raises first for [`AcquireKind::TryRaise`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn try_reported(
        &self,
        kind: AcquireKind,
        class: Option<&'static Location<'static>>,
    ) -> Option<Irql> {
        let lock = self.addr();
        hal::lock_event(&LockEvent::Acquire {
            lock,
            kind,
            handle: 0,
            site: Location::caller(),
            class,
        });
        let raised = kind.raises().then(|| hal::raise_irql(Irql::DISPATCH));
        let prcb = hal::current_prcb();
        // Read before the try: no HAL call (and so no stop) between taking the lock and
        // handing it to the caller.
        let old = raised.unwrap_or_else(|| prcb.irql());
        if self.try_word(prcb.owner_tag()) {
            hal::lock_event(&LockEvent::Acquired {
                lock,
                kind,
                handle: 0,
                old_irql: raised,
            });
            Some(old)
        } else {
            hal::lock_event(&LockEvent::TryFailed { lock });
            if let Some(old) = raised {
                hal::lower_irql(old);
            }
            None
        }
    }

    /// `KeTestSpinLock`: `true` if the lock is free right now (so an acquire would likely
    /// succeed at once), `false` if it is held. A hint for spinning, never a guarantee.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// assert!(ntspin::RawSpinLock::new().test());
    /// ```
    #[doc(alias = "KeTestSpinLock")]
    #[inline]
    pub fn test(&self) -> bool {
        self.word.load(Ordering::Relaxed) == 0
    }

    #[inline(always)]
    fn try_word(&self, tag: usize) -> bool {
        self.word.load(Ordering::Relaxed) == 0
            && self
                .word
                .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// [`acquire`](Self::acquire) when the HAL wants to see it: each step reported.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_reported_raise(&self, class: Option<&'static Location<'static>>) -> Irql {
        self.acquire_kind_reporting(AcquireKind::Raise, 0, Some(Irql::DISPATCH), class)
    }

    /// [`acquire_at_dpc_level`](Self::acquire_at_dpc_level) when the HAL wants to see it.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_reported_at_dpc(&self, class: Option<&'static Location<'static>>) {
        self.acquire_kind_reporting(AcquireKind::AtDpc, 0, None, class);
    }

    /// The acquire of the interrupt-object and `ExInterlocked` routines: raise to
    /// `raise_to` if given, then take the word; returns the IRQL before. `handle` is what
    /// the events carry (the interrupt object's address, or 0).
    #[inline]
    #[track_caller]
    pub(crate) fn acquire_kind(
        &self,
        kind: AcquireKind,
        handle: usize,
        raise_to: Option<Irql>,
    ) -> Irql {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            return self.acquire_kind_reported(kind, handle, raise_to);
        }
        let old = match raise_to {
            Some(level) => crate::irql::raise_on(prcb, level),
            None => prcb.irql(),
        };
        self.spin_acquire(prcb.owner_tag());
        old
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_kind_reported(
        &self,
        kind: AcquireKind,
        handle: usize,
        raise_to: Option<Irql>,
    ) -> Irql {
        self.acquire_kind_reporting(kind, handle, raise_to, None)
    }

    /// The body of the reported acquires, inlined into each cold entry point so that a
    /// HAL's inline fast path sees its arguments (and a constant kind where there is one).
    #[inline(always)]
    #[track_caller]
    fn acquire_kind_reporting(
        &self,
        kind: AcquireKind,
        handle: usize,
        raise_to: Option<Irql>,
        class: Option<&'static Location<'static>>,
    ) -> Irql {
        let site = Location::caller();
        let event = LockEvent::Acquire {
            lock: self.addr(),
            kind,
            handle,
            site,
            class,
        };
        if !hal::lock_event_fast(&event) {
            return self.acquire_after_event(kind, handle, raise_to, site, class);
        }
        self.take_after_event(kind, handle, raise_to)
    }

    /// A reported acquire the HAL's fast path left alone: the full event, then the rest.
    /// (The event's parts travel in registers, so the fast path's caller can tail-call
    /// this without a stack frame.)
    #[cold]
    #[inline(never)]
    fn acquire_after_event(
        &self,
        kind: AcquireKind,
        handle: usize,
        raise_to: Option<Irql>,
        site: &'static Location<'static>,
        class: Option<&'static Location<'static>>,
    ) -> Irql {
        hal::lock_event(&LockEvent::Acquire {
            lock: self.addr(),
            kind,
            handle,
            site,
            class,
        });
        self.take_after_event(kind, handle, raise_to)
    }

    /// The rest of a reported acquire after its `Acquire` event: raise if the routine
    /// raises, then take the word; returns the IRQL before.
    #[inline(always)]
    fn take_after_event(&self, kind: AcquireKind, handle: usize, raise_to: Option<Irql>) -> Irql {
        let old = match raise_to {
            Some(level) => hal::raise_irql(level),
            None => hal::current_prcb().irql(),
        };
        let tag = hal::current_prcb().owner_tag();
        // Free (the common case): taken, and the verifier already counts it held.
        if self
            .word
            .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return self.acquire_busy_reported(kind, handle, raise_to.is_some(), old, tag);
        }
        old
    }

    /// A reported acquire that found the word busy: says so before spinning, and reports
    /// the acquisition when it happens (`raised`: the acquire raised from `old`). Returns
    /// `old`.
    #[cold]
    #[inline(never)]
    fn acquire_busy_reported(
        &self,
        kind: AcquireKind,
        handle: usize,
        raised: bool,
        old: Irql,
        tag: usize,
    ) -> Irql {
        let lock = self.addr();
        hal::lock_event(&LockEvent::Waiting { lock });
        self.spin_acquire(tag);
        hal::lock_event(&LockEvent::Acquired {
            lock,
            kind,
            handle,
            old_irql: raised.then_some(old),
        });
        old
    }

    /// The release matching [`acquire_kind`](Self::acquire_kind): free the word, then
    /// lower to `lower_to` if given.
    ///
    /// # Safety
    ///
    /// This processor holds the lock through `acquire_kind`.
    #[inline]
    pub(crate) unsafe fn release_kind(
        &self,
        kind: ReleaseKind,
        handle: usize,
        lower_to: Option<Irql>,
    ) {
        let prcb = hal::current_prcb();
        if prcb.hal_wants() {
            return self.release_kind_reported(kind, handle, lower_to);
        }
        self.word.store(0, Ordering::Release);
        if let Some(level) = lower_to {
            lower_on(prcb, level);
        }
    }

    /// [`release`](Self::release) when the HAL wants to see it.
    #[cold]
    #[inline(never)]
    fn release_reported_lower(&self, old_irql: Irql) {
        self.release_kind_reporting(ReleaseKind::Lower, 0, Some(old_irql))
    }

    /// [`release_from_dpc_level`](Self::release_from_dpc_level) when the HAL wants to see
    /// it.
    #[cold]
    #[inline(never)]
    fn release_reported_from_dpc(&self) {
        self.release_kind_reporting(ReleaseKind::FromDpc, 0, None)
    }

    #[cold]
    #[inline(never)]
    fn release_kind_reported(&self, kind: ReleaseKind, handle: usize, new_irql: Option<Irql>) {
        self.release_kind_reporting(kind, handle, new_irql)
    }

    /// The body of the reported releases (see
    /// [`acquire_kind_reporting`](Self::acquire_kind_reporting)).
    #[inline(always)]
    fn release_kind_reporting(&self, kind: ReleaseKind, handle: usize, new_irql: Option<Irql>) {
        let event = LockEvent::Release {
            lock: self.addr(),
            kind,
            handle,
            new_irql,
        };
        if !hal::lock_event_fast(&event) {
            return self.release_after_event(kind, handle, new_irql);
        }
        self.free_and_lower(new_irql);
    }

    /// A reported release the HAL's fast path left alone: the full event, then the rest.
    #[cold]
    #[inline(never)]
    fn release_after_event(&self, kind: ReleaseKind, handle: usize, new_irql: Option<Irql>) {
        hal::lock_event(&LockEvent::Release {
            lock: self.addr(),
            kind,
            handle,
            new_irql,
        });
        self.free_and_lower(new_irql);
    }

    /// The end of a reported release: free the word, then lower if the routine lowers.
    #[inline(always)]
    fn free_and_lower(&self, new_irql: Option<Irql>) {
        self.word.store(0, Ordering::Release);
        if let Some(new) = new_irql {
            hal::lower_irql(new);
        }
    }

    /// The ordinary-mode acquire on the word: one compare-exchange when free (the NT fast
    /// path is one interlocked operation too), then test-and-test-and-set.
    #[inline(always)]
    fn spin_acquire(&self, tag: usize) {
        if self
            .word
            .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.spin_acquire_contended(tag);
        }
    }

    #[cold]
    #[inline(never)]
    fn spin_acquire_contended(&self, tag: usize) {
        let mut spins: u32 = 0;
        loop {
            let word = self.word.load(Ordering::Relaxed);
            if word == 0 {
                if self
                    .word
                    .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            spins = spins.wrapping_add(1);
            spin_hint();
            hal::spin_wait(spins, SpinWait::Acquire);
            if spins % CONTENDED_REPORT_EVERY == 0 && hal::current_prcb().hal_wants() {
                hal::lock_event(&LockEvent::Contended {
                    lock: self.addr(),
                    word,
                });
            }
        }
    }
}

impl core::fmt::Debug for RawSpinLock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RawSpinLock({:#x} @ {:#x})", self.word(), self.addr())
    }
}

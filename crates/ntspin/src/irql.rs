//! Interrupt request levels: the `KIRQL` type, its x64 values, and the raise/lower routines
//! (`KeRaiseIrql`, `KeLowerIrql`, `KeRaiseIrqlToDpcLevel`, `KeGetCurrentIrql`).
//!
//! IRQL is per processor and lives in the HAL; this module only names the levels and gives
//! the safe, verifier-checked doors to change it.

use core::fmt;
use core::marker::PhantomData;

use crate::hal;

/// An interrupt request level (`KIRQL`), with the x64 numbering.
///
/// Ordered: a higher value masks everything at or below it on the current processor.
///
/// ```
/// use ntspin::Irql;
/// assert!(Irql::DISPATCH > Irql::PASSIVE);
/// assert_eq!(Irql::DISPATCH.to_string(), "DISPATCH_LEVEL");
/// assert_eq!(Irql::new(7).unwrap().to_string(), "DIRQL(7)");
/// assert!(Irql::new(16).is_none());
/// ```
#[doc(alias = "KIRQL")]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Irql(u8);

impl Irql {
    /// `PASSIVE_LEVEL` (0): threads run here; everything may interrupt them.
    pub const PASSIVE: Irql = Irql(0);
    /// `APC_LEVEL` (1).
    pub const APC: Irql = Irql(1);
    /// `DISPATCH_LEVEL` (2): no thread dispatching; spin locks are held here.
    pub const DISPATCH: Irql = Irql(2);
    /// The lowest device level (`DIRQL`), 3.
    pub const DEVICE_MIN: Irql = Irql(3);
    /// The highest device level (`DIRQL`), 12.
    pub const DEVICE_MAX: Irql = Irql(12);
    /// `SYNCH_LEVEL` on x64 (12).
    pub const SYNCH: Irql = Irql(12);
    /// `CLOCK_LEVEL` (13).
    pub const CLOCK: Irql = Irql(13);
    /// `IPI_LEVEL` (14).
    pub const IPI: Irql = Irql(14);
    /// `POWER_LEVEL` (14).
    pub const POWER: Irql = Irql(14);
    /// `PROFILE_LEVEL` (15).
    pub const PROFILE: Irql = Irql(15);
    /// `HIGH_LEVEL` (15): masks everything.
    pub const HIGH: Irql = Irql(15);

    /// The level with this number, if it is a valid x64 IRQL (0..=15).
    ///
    /// ```
    /// assert_eq!(ntspin::Irql::new(2), Some(ntspin::Irql::DISPATCH));
    /// ```
    pub const fn new(level: u8) -> Option<Irql> {
        if level <= Self::HIGH.0 {
            Some(Irql(level))
        } else {
            None
        }
    }

    /// The level with this number, unchecked: for values a C caller passes, which the
    /// verifier then judges (`KeRaiseIrql(16)` is IRQL-RAISE, not undefined behaviour).
    ///
    /// ```
    /// assert_eq!(ntspin::Irql::from_raw(16).raw(), 16);
    /// ```
    pub const fn from_raw(level: u8) -> Irql {
        Irql(level)
    }

    /// The numeric value (what a C `KIRQL` holds).
    ///
    /// ```
    /// assert_eq!(ntspin::Irql::HIGH.raw(), 15);
    /// ```
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// Whether this is a device level (3..=12), the range a `DIRQL` lives in.
    ///
    /// ```
    /// assert!(ntspin::Irql::new(5).unwrap().is_device());
    /// assert!(!ntspin::Irql::DISPATCH.is_device());
    /// ```
    pub const fn is_device(self) -> bool {
        self.0 >= Self::DEVICE_MIN.0 && self.0 <= Self::DEVICE_MAX.0
    }

    /// The WDK name of the level, or `None` for device levels (shown as `DIRQL(n)`).
    const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "PASSIVE_LEVEL",
            1 => "APC_LEVEL",
            2 => "DISPATCH_LEVEL",
            13 => "CLOCK_LEVEL",
            14 => "IPI_LEVEL",
            15 => "HIGH_LEVEL",
            _ => return None,
        })
    }
}

impl fmt::Display for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None if self.is_device() => write!(f, "DIRQL({})", self.0),
            None => write!(f, "INVALID_IRQL({})", self.0),
        }
    }
}

impl fmt::Debug for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The current processor's IRQL.
///
/// ```
/// # use ntspin_sim as _;
/// assert_eq!(ntspin::current_irql(), ntspin::Irql::PASSIVE);
/// ```
#[doc(alias = "KeGetCurrentIrql")]
#[inline]
pub fn current_irql() -> Irql {
    let prcb = hal::current_prcb();
    if prcb.hal_wants() {
        hal::current_irql()
    } else {
        prcb.irql()
    }
}

/// Raises the current processor's IRQL to `new` and returns the level it was at.
///
/// Raising to a lower level than the current one (or above `HIGH_LEVEL`) is the bug check
/// IRQL-RAISE. Prefer [`IrqlGuard::raise`], which lowers again when dropped.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{Irql, raise_irql, lower_irql, current_irql};
/// let old = raise_irql(Irql::DISPATCH);
/// assert_eq!(current_irql(), Irql::DISPATCH);
/// lower_irql(old);
/// assert_eq!(current_irql(), Irql::PASSIVE);
/// ```
#[doc(alias = "KeRaiseIrql")]
#[inline]
pub fn raise_irql(new: Irql) -> Irql {
    raise_on(hal::current_prcb(), new)
}

/// Raise on `prcb` (the current processor's): inline unless the HAL wants to see it.
#[inline(always)]
pub(crate) fn raise_on(prcb: &hal::Prcb, new: Irql) -> Irql {
    if prcb.hal_wants() {
        return hal::raise_irql(new);
    }
    let old = prcb.irql();
    prcb.set_irql(new);
    old
}

/// Lower on `prcb` (the current processor's): inline unless the HAL wants to see it (it
/// must, for instance, run DPCs that became deliverable).
#[inline(always)]
pub(crate) fn lower_on(prcb: &hal::Prcb, new: Irql) {
    if prcb.hal_wants() {
        lower_via_hal(new)
    } else {
        prcb.set_irql(new);
        // An interrupt taken between the test and the store may have queued a DPC or left
        // an interrupt pending for this level: look again after the store (the handler runs
        // on this thread, so a compiler fence is the ordering needed), and let the HAL
        // deliver it. Lowering to the level already stored is a no-op for the checks.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        if prcb.hal_wants() {
            lower_via_hal(new)
        }
    }
}

/// The HAL's lowering, kept out of line: the fast paths that call it stay small.
#[cold]
#[inline(never)]
fn lower_via_hal(new: Irql) {
    hal::lower_irql(new)
}

/// Lowers the current processor's IRQL to `new` (normally the value a raise returned).
///
/// Lowering to a higher level is IRQL-LOWER; lowering below `DISPATCH_LEVEL` while a spin
/// lock is still held on this processor is IRQL-LOWER-HELD.
///
/// ```
/// # use ntspin_sim as _;
/// let old = ntspin::raise_irql(ntspin::Irql::new(5).unwrap());
/// ntspin::lower_irql(old);
/// ```
#[doc(alias = "KeLowerIrql")]
#[inline]
pub fn lower_irql(new: Irql) {
    lower_on(hal::current_prcb(), new)
}

/// Raises to `DISPATCH_LEVEL` and returns the previous level.
///
/// ```
/// # use ntspin_sim as _;
/// let old = ntspin::raise_irql_to_dpc_level();
/// assert_eq!(ntspin::current_irql(), ntspin::Irql::DISPATCH);
/// ntspin::lower_irql(old);
/// ```
#[doc(alias = "KeRaiseIrqlToDpcLevel")]
#[inline]
pub fn raise_irql_to_dpc_level() -> Irql {
    raise_irql(Irql::DISPATCH)
}

/// A raised IRQL that is lowered again when the guard drops.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{Irql, IrqlGuard, current_irql};
/// {
///     let g = IrqlGuard::raise(Irql::DISPATCH);
///     assert_eq!(g.old_irql(), Irql::PASSIVE);
///     assert_eq!(current_irql(), Irql::DISPATCH);
/// }
/// assert_eq!(current_irql(), Irql::PASSIVE);
/// ```
#[must_use = "dropping the guard lowers the IRQL at once"]
pub struct IrqlGuard {
    old: Irql,
    // Lowering must happen on the processor that raised.
    _not_send: PhantomData<*mut ()>,
}

impl IrqlGuard {
    /// Raises to `new` (IRQL-RAISE rules apply) until the guard drops.
    #[doc(alias = "KeRaiseIrql")]
    #[inline]
    pub fn raise(new: Irql) -> IrqlGuard {
        IrqlGuard {
            old: raise_irql(new),
            _not_send: PhantomData,
        }
    }

    /// The level the guard restores.
    pub fn old_irql(&self) -> Irql {
        self.old
    }

    /// Proof that IRQL is at least `DISPATCH_LEVEL`, if the guard raised that high.
    ///
    /// ```
    /// # use ntspin_sim as _;
    /// use ntspin::{Irql, IrqlGuard};
    /// assert!(IrqlGuard::raise(Irql::APC).dpc_level().is_none());
    /// assert!(IrqlGuard::raise(Irql::DISPATCH).dpc_level().is_some());
    /// ```
    pub fn dpc_level(&self) -> Option<&DpcLevel> {
        DpcLevel::check_ref()
    }
}

impl Drop for IrqlGuard {
    #[inline]
    fn drop(&mut self) {
        lower_irql(self.old);
    }
}

/// Proof that the current processor runs at `DISPATCH_LEVEL` or above.
///
/// Zero-sized and `!Send`. It is only ever handed out by reference, borrowed from something
/// that keeps the IRQL raised (a spin-lock guard, an [`IrqlGuard`], later a DPC or ISR
/// entry), so it cannot outlive the raised level. The AtDpcLevel lock routines take it
/// instead of an `unsafe` contract; the verifier still checks the real IRQL behind it, for
/// the C ABI and for code that lowers IRQL by hand.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::{SpinLock, Irql, IrqlGuard};
/// let a = SpinLock::new(1);
/// let b = SpinLock::new(2);
/// let ga = a.lock();
/// let gb = b.lock_at_dpc_level(ga.dpc_level());
/// assert_eq!(*ga + *gb, 3);
/// ```
pub struct DpcLevel {
    _not_send: PhantomData<*mut ()>,
}

/// The one value every `&DpcLevel` points to (a zero-sized static).
static DPC_LEVEL_TOKEN: DpcLevelToken = DpcLevelToken(DpcLevel {
    _not_send: PhantomData,
});

/// `DpcLevel` is `!Sync` on purpose; the static only needs a shared address for a ZST.
struct DpcLevelToken(DpcLevel);
// SAFETY: `DpcLevel` is a zero-sized marker with no data; sharing its address across
// threads shares nothing. Its `!Send`/`!Sync` exist to keep *references handed out by
// guards* on their processor, and those references' lifetimes are bound to the guard.
unsafe impl Sync for DpcLevelToken {}

impl DpcLevel {
    /// A proof token with an unbounded lifetime; callers bind it to a guard's borrow.
    /// Checks the IRQL at run time.
    pub(crate) fn check_ref<'a>() -> Option<&'a DpcLevel> {
        if current_irql() >= Irql::DISPATCH {
            Some(&DPC_LEVEL_TOKEN.0)
        } else {
            None
        }
    }

    /// The token, for code that has just raised to DISPATCH itself (a guard's constructor).
    pub(crate) fn assumed<'a>() -> &'a DpcLevel {
        &DPC_LEVEL_TOKEN.0
    }
}

/// `PAGED_CODE()`: pageable code must run at IRQL <= APC_LEVEL. Above it, the verifier
/// raises PAGED-CODE: 0xD1 (site, cur, 8, site), where `site` is the address of the
/// macro's source location record (ntspin's own mapping: Windows asserts in checked
/// builds, and touching trimmed pageable code above APC_LEVEL is this 0xD1). With the
/// verifier off it costs one IRQL read and checks nothing.
///
/// ```
/// # use ntspin_sim as _;
/// fn read_registry_config() {
///     ntspin::paged_code!();
///     // ... code that may page fault ...
/// }
/// read_registry_config(); // at PASSIVE_LEVEL: fine
/// ```
#[macro_export]
macro_rules! paged_code {
    () => {
        $crate::paged_code_at(::core::panic::Location::caller())
    };
}

/// What [`paged_code!`] calls; `site` identifies the call site in the bug check.
#[doc(hidden)]
#[inline]
pub fn paged_code_at(site: &'static core::panic::Location<'static>) {
    paged_code_site(site as *const core::panic::Location<'static> as usize);
}

/// `PAGED_CODE()` for a caller that names its site by an address of its own (the C ABI
/// passes the function's name string).
#[doc(hidden)]
#[inline]
pub fn paged_code_site(site: usize) {
    let cur = current_irql();
    if cur > Irql::APC {
        paged_code_violation(site, cur);
    }
}

#[cold]
#[inline(never)]
fn paged_code_violation(s: usize, cur: Irql) {
    hal::lock_event(&crate::hal::LockEvent::Violation {
        bug: crate::BugCheck::new(
            crate::bugcheck::code::DRIVER_IRQL_NOT_LESS_OR_EQUAL,
            [s, cur.raw() as usize, 8, s],
            crate::Rule::PAGED_CODE,
        ),
        continuable: true,
    });
}

//! Interrupt objects and their spin locks: `IoConnectInterrupt(Ex)`,
//! `IoDisconnectInterrupt(Ex)`, `KeAcquireInterruptSpinLock`, `KeReleaseInterruptSpinLock`,
//! `KeSynchronizeExecution`.
//!
//! One connection covers every processor in the affinity, and all of them use one spin
//! lock: the object's own, or one the caller supplies and shares among several objects
//! (one device with several vectors). The service routine runs holding that lock at the
//! line's DIRQL, on whichever processor took the interrupt; the lock routines raise to the
//! object's SynchronizeIrql and take the same lock, so the ISR, `synchronize` routines and
//! lock holders exclude each other on every processor (ISR-EXCLUSION).
//!
//! The delivery itself — which processor, when, chaining on shared vectors — is the HAL's
//! interrupt controller; it calls [`KInterrupt::service`] for each connected object.
//!
//! A **passive-level** interrupt (Irql = SynchronizeIrql = PASSIVE, no spin lock) is
//! acknowledged at its line's level, and its service routine runs at PASSIVE_LEVEL on a
//! worker under the object's *wait lock* (a synchronization event); `synchronize` takes
//! the same wait lock. In Rust it is its own type, [`PassiveInterrupt`], which has no
//! spin-lock methods; on the raw [`KInterrupt`] (the C ABI's object) the spin-lock
//! routines bug-check instead (ISL-PASSIVE).
//!
//! Specified by the `KeAcquireInterruptSpinLock` DDI page and the *Interrupt objects* rows
//! of `RULES.md`.

use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::ptr::NonNull;

use crate::bugcheck::code;
use crate::event::{Event, EventType, WaitStatus};
use crate::hal::{self, AcquireKind, LockEvent, ReleaseKind};
use crate::sync::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use crate::{BugCheck, Irql, NtStatus, RawSpinLock, Rule};

/// How the line signals (`KINTERRUPT_MODE`).
#[doc(alias = "KINTERRUPT_MODE")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum InterruptMode {
    /// `LevelSensitive`: on a shared vector, dispatch stops at the first routine that
    /// claims the interrupt.
    #[default]
    LevelSensitive,
    /// `Latched` (edge): on a shared vector, every routine is called, and the chain is
    /// scanned again until a full pass claims nothing.
    Latched,
}

/// The parameters of a connection (`IO_CONNECT_INTERRUPT_PARAMETERS`, fully specified).
///
/// ```
/// use ntspin::Irql;
/// use ntspin::interrupt::InterruptConfig;
/// let cfg = InterruptConfig::new(3, Irql::new(5).unwrap());
/// assert_eq!(cfg.synchronize_irql, cfg.irql);
/// assert_eq!(cfg.affinity, u64::MAX);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct InterruptConfig<'l> {
    /// The line (a simulated vector number, independent of IRQL).
    pub vector: u32,
    /// The line's DIRQL, at which the service routine runs.
    pub irql: Irql,
    /// The IRQL the lock routines raise to (>= `irql`; higher when one lock is shared by
    /// objects of several levels).
    pub synchronize_irql: Irql,
    /// Level-sensitive or latched.
    pub mode: InterruptMode,
    /// Whether other objects may connect to the same vector.
    pub share_vector: bool,
    /// The processors that may take the interrupt (`KAFFINITY`).
    pub affinity: u64,
    /// A caller-supplied lock shared by several objects; `None` for the object's own.
    pub spin_lock: Option<&'l RawSpinLock>,
    /// For a passive-level connection only: the level at which the controller acknowledges
    /// (and, level-sensitive, masks) the line — the device resource's IRQL, above
    /// DISPATCH. Ignored for a DIRQL connection, whose line is at `irql`.
    pub line_irql: Irql,
}

impl<'l> InterruptConfig<'l> {
    /// Vector and DIRQL; SynchronizeIrql = DIRQL, level-sensitive, not shared, every
    /// processor, the object's own lock.
    pub fn new(vector: u32, irql: Irql) -> InterruptConfig<'l> {
        InterruptConfig {
            vector,
            irql,
            synchronize_irql: irql,
            mode: InterruptMode::LevelSensitive,
            share_vector: false,
            affinity: u64::MAX,
            spin_lock: None,
            line_irql: irql,
        }
    }

    /// A passive-level connection (Irql = SynchronizeIrql = PASSIVE, no spin lock) of
    /// `vector`, whose line is acknowledged at `line_irql`; level-sensitive, not shared,
    /// every processor.
    ///
    /// ```
    /// use ntspin::Irql;
    /// use ntspin::interrupt::InterruptConfig;
    /// let cfg = InterruptConfig::passive(3, Irql::new(5).unwrap());
    /// assert_eq!(cfg.irql, Irql::PASSIVE);
    /// assert_eq!(cfg.validate(), Ok(()));
    /// ```
    pub fn passive(vector: u32, line_irql: Irql) -> InterruptConfig<'l> {
        InterruptConfig {
            line_irql,
            ..InterruptConfig::new(vector, Irql::PASSIVE)
        }
    }

    /// CONN-PARAMS: the checks `IoConnectInterruptEx` makes before connecting anything
    /// (the HAL adds "vector already connected unshareably").
    ///
    /// ```
    /// use ntspin::{Irql, NtStatus};
    /// use ntspin::interrupt::InterruptConfig;
    /// let mut cfg = InterruptConfig::new(1, Irql::new(6).unwrap());
    /// assert_eq!(cfg.validate(), Ok(()));
    /// cfg.synchronize_irql = Irql::new(5).unwrap();
    /// assert_eq!(cfg.validate(), Err(NtStatus::INVALID_PARAMETER));
    /// ```
    pub fn validate(&self) -> Result<(), NtStatus> {
        check_params(
            self.irql,
            self.synchronize_irql,
            self.affinity,
            self.spin_lock.is_some(),
            self.line_irql,
        )
    }
}

/// The parameters of a passive-level connection: what [`PassiveInterrupt`] takes. It has
/// no spin lock and no SynchronizeIrql to get wrong (both are PASSIVE by construction).
///
/// ```
/// use ntspin::Irql;
/// use ntspin::interrupt::{InterruptConfig, PassiveInterruptConfig};
/// let cfg = PassiveInterruptConfig::new(9, Irql::new(7).unwrap());
/// let raw: InterruptConfig = cfg.into();
/// assert_eq!((raw.irql, raw.synchronize_irql, raw.line_irql.raw()), (Irql::PASSIVE, Irql::PASSIVE, 7));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PassiveInterruptConfig {
    /// The line.
    pub vector: u32,
    /// The level at which the line is acknowledged and (level-sensitive) masked until the
    /// service routine returns: the device resource's IRQL, above DISPATCH.
    pub line_irql: Irql,
    /// Level-sensitive (the line stays masked while the routine runs) or latched (not
    /// masked; an assertion during the run leads to another run).
    pub mode: InterruptMode,
    /// Whether other passive-level objects may connect to the same vector.
    pub share_vector: bool,
    /// The processors that may acknowledge the line and run the worker.
    pub affinity: u64,
}

impl PassiveInterruptConfig {
    /// Vector and line level; level-sensitive, not shared, every processor.
    pub fn new(vector: u32, line_irql: Irql) -> PassiveInterruptConfig {
        PassiveInterruptConfig {
            vector,
            line_irql,
            mode: InterruptMode::LevelSensitive,
            share_vector: false,
            affinity: u64::MAX,
        }
    }
}

impl From<PassiveInterruptConfig> for InterruptConfig<'static> {
    fn from(c: PassiveInterruptConfig) -> InterruptConfig<'static> {
        InterruptConfig {
            mode: c.mode,
            share_vector: c.share_vector,
            affinity: c.affinity,
            ..InterruptConfig::passive(c.vector, c.line_irql)
        }
    }
}

/// The parameter checks of CONN-PARAMS (the HAL adds "vector already connected
/// unshareably").
fn check_params(
    irql: Irql,
    synchronize_irql: Irql,
    affinity: u64,
    lock_supplied: bool,
    line_irql: Irql,
) -> Result<(), NtStatus> {
    let passive = irql == Irql::PASSIVE || synchronize_irql == Irql::PASSIVE;
    let bad = affinity == 0
        || synchronize_irql < irql
        || irql > Irql::HIGH
        || synchronize_irql > Irql::HIGH
        || (passive
            && (lock_supplied
                || irql != Irql::PASSIVE
                || synchronize_irql != Irql::PASSIVE
                || line_irql <= Irql::DISPATCH
                || line_irql > Irql::HIGH));
    if bad {
        Err(NtStatus::INVALID_PARAMETER)
    } else {
        Ok(())
    }
}

/// The machine-visible part of an interrupt object (`KINTERRUPT`). [`Interrupt`] wraps it
/// with a Rust service routine; the C ABI with a C routine and context.
///
/// # Invariants
///
/// While `connected`, the object stays at its address (its owner's `Drop` disconnects
/// first), and `service` is sound to call.
#[doc(alias = "KINTERRUPT")]
#[repr(C)]
pub struct KInterrupt {
    own_lock: RawSpinLock,
    shared_lock: *const RawSpinLock,
    service: unsafe fn(*const KInterrupt) -> bool,
    routine: usize,
    context: usize,
    affinity: u64,
    vector: u32,
    irql: Irql,
    /// Atomic only so a framework can raise it before connecting (KMDF: interrupts sharing
    /// one spin lock all synchronize at the highest level of the set).
    synchronize_irql: AtomicU8,
    line_irql: Irql,
    mode: InterruptMode,
    share_vector: bool,
    connected: AtomicBool,
    /// Passive-level objects: the wait lock (a synchronization event, signaled = free).
    wait_lock: Event,
    /// Passive-level objects: the processor holding the wait lock, plus one; 0 when free.
    wait_owner: AtomicU32,
    _pin: PhantomPinned,
}

// SAFETY: `shared_lock` points to a `RawSpinLock` (which is `Sync`) that outlives the
// object (the `'l` of the owning `Interrupt`, or the C caller's contract); every other
// field is immutable after construction or atomic.
unsafe impl Sync for KInterrupt {}
// SAFETY: as above; nothing in the object is tied to the thread that made it.
unsafe impl Send for KInterrupt {}

impl KInterrupt {
    /// An unconnected object for `config` that calls `service(this)` as its ISR;
    /// `routine` is the address reports show.
    ///
    /// # Safety
    ///
    /// `service` is sound to call with a pointer to this object from any processor at the
    /// line's DIRQL while it is connected, and `config.spin_lock` (if any) outlives the
    /// object.
    pub unsafe fn new(
        config: &InterruptConfig<'_>,
        service: unsafe fn(*const KInterrupt) -> bool,
        routine: usize,
    ) -> KInterrupt {
        KInterrupt {
            own_lock: RawSpinLock::new(),
            shared_lock: config
                .spin_lock
                .map_or(core::ptr::null(), |l| l as *const RawSpinLock),
            service,
            routine,
            context: 0,
            affinity: config.affinity,
            vector: config.vector,
            irql: config.irql,
            synchronize_irql: AtomicU8::new(config.synchronize_irql.raw()),
            line_irql: if config.irql == Irql::PASSIVE {
                config.line_irql
            } else {
                config.irql
            },
            mode: config.mode,
            share_vector: config.share_vector,
            connected: AtomicBool::new(false),
            wait_lock: Event::new(EventType::Synchronization, true),
            wait_owner: AtomicU32::new(0),
            _pin: PhantomPinned,
        }
    }

    /// The same object with `context` as the value reports show for the routine's
    /// context (the C ABI's `ServiceContext`; 0 for a Rust closure, which has none).
    pub fn with_context(mut self, context: usize) -> KInterrupt {
        self.context = context;
        self
    }

    /// The service routine's context as reports show it.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The level the controller acknowledges the line at: the DIRQL, or for a
    /// passive-level object the device resource's IRQL it was configured with.
    pub fn line_irql(&self) -> Irql {
        self.line_irql
    }

    /// The spin lock the ISR and the lock routines use.
    pub fn spin_lock(&self) -> &RawSpinLock {
        if self.shared_lock.is_null() {
            &self.own_lock
        } else {
            // SAFETY: a non-null `shared_lock` came from a reference that outlives the
            // object (`new`'s contract).
            unsafe { &*self.shared_lock }
        }
    }

    /// The vector.
    pub fn vector(&self) -> u32 {
        self.vector
    }
    /// The DIRQL the service routine runs at.
    pub fn irql(&self) -> Irql {
        self.irql
    }
    /// The level the lock routines raise to.
    pub fn synchronize_irql(&self) -> Irql {
        Irql::from_raw(self.synchronize_irql.load(Ordering::Relaxed))
    }

    /// Raises the level the lock routines raise to, before the object is connected (KMDF:
    /// interrupts sharing one spin lock synchronize at the highest DIRQL of the set).
    /// `STATUS_INVALID_DEVICE_STATE` once connected; `STATUS_INVALID_PARAMETER` below the
    /// DIRQL, above HIGH, or on a passive-level object.
    pub fn set_synchronize_irql(&self, irql: Irql) -> Result<(), NtStatus> {
        if self.is_connected() {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if self.is_passive() || irql < self.irql || irql > Irql::HIGH {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        self.synchronize_irql.store(irql.raw(), Ordering::Relaxed);
        Ok(())
    }
    /// Level-sensitive or latched.
    pub fn mode(&self) -> InterruptMode {
        self.mode
    }
    /// Whether the vector may be shared.
    pub fn share_vector(&self) -> bool {
        self.share_vector
    }
    /// The processors that may take it.
    pub fn affinity(&self) -> u64 {
        self.affinity
    }
    /// The service routine's address (for reports).
    pub fn routine_addr(&self) -> usize {
        self.routine
    }
    /// Whether this is a passive-level interrupt (Irql = SynchronizeIrql = PASSIVE).
    pub fn is_passive(&self) -> bool {
        self.irql == Irql::PASSIVE
    }
    /// Whether it is connected.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
    /// The object's address (what bug-check parameters name).
    pub fn addr(&self) -> usize {
        self as *const KInterrupt as usize
    }

    /// `IoConnectInterruptEx` (fully specified) for this object: validates (CONN-PARAMS),
    /// then hands it to the HAL's interrupt controller. A failure connects nothing.
    ///
    /// Must be called at PASSIVE_LEVEL; above it the verifier raises CONN-PARAMS
    /// (0xC4/0x0002000B).
    #[doc(alias = "IoConnectInterruptEx")]
    #[doc(alias = "IoConnectInterrupt")]
    pub fn connect(self: Pin<&Self>) -> Result<(), NtStatus> {
        let this = self.get_ref();
        if hal::current_prcb().hal_wants() {
            // CONN-PARAMS' IRQL rule is the verifier's (a DDI-compliance check).
            hal::lock_event(&LockEvent::Connect {
                object: this.addr(),
            });
        }
        check_params(
            this.irql,
            this.synchronize_irql(),
            this.affinity,
            !this.shared_lock.is_null(),
            this.line_irql,
        )?;
        if this.connected.swap(true, Ordering::AcqRel) {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        // SAFETY: `self` is pinned, so the object stays at its address until dropped, and
        // its owner's `Drop` disconnects before that (invariant of `KInterrupt`).
        let r = unsafe { hal::connect_interrupt(NonNull::from(this)) };
        if r.is_err() {
            this.connected.store(false, Ordering::Release);
        }
        r
    }

    /// `IoDisconnectInterruptEx`: disconnects and returns once no processor runs the
    /// service routine. Does nothing if not connected.
    #[doc(alias = "IoDisconnectInterruptEx")]
    #[doc(alias = "IoDisconnectInterrupt")]
    pub fn disconnect(&self) {
        if self.connected.swap(false, Ordering::AcqRel) {
            hal::disconnect_interrupt(NonNull::from(self));
            // No service routine runs any more; a holder now is a lock routine's caller
            // (DL-FREE-HELD). A shared lock belongs to its other objects too.
            if self.shared_lock.is_null() {
                self.own_lock.report_if_held();
            }
        }
    }

    fn check_not_passive(&self) {
        if self.is_passive() {
            hal::bug_check(BugCheck::new(
                code::PASSIVE_INTERRUPT_ERROR,
                [1, self.addr(), 0, 0],
                Rule::ISL_PASSIVE,
            ));
        }
    }

    /// `KeAcquireInterruptSpinLock`: raises to SynchronizeIrql, then takes the lock;
    /// returns the IRQL to pass to [`release_lock`](Self::release_lock). On a
    /// passive-level object this is the bug check ISL-PASSIVE (0x13B).
    #[doc(alias = "KeAcquireInterruptSpinLock")]
    #[track_caller]
    pub fn acquire_lock(&self) -> Irql {
        self.check_not_passive();
        self.spin_lock().acquire_kind(
            AcquireKind::Interrupt,
            self.addr(),
            Some(self.synchronize_irql()),
        )
    }

    /// `KeReleaseInterruptSpinLock`: frees the lock, then lowers to `old_irql`.
    ///
    /// # Safety
    ///
    /// This processor holds the lock through [`acquire_lock`](Self::acquire_lock), which
    /// returned `old_irql`. (With the verifier on, a violation is a bug check.)
    #[doc(alias = "KeReleaseInterruptSpinLock")]
    pub unsafe fn release_lock(&self, old_irql: Irql) {
        self.check_not_passive();
        // SAFETY: the caller's contract.
        unsafe {
            self.spin_lock()
                .release_kind(ReleaseKind::Interrupt, self.addr(), Some(old_irql))
        }
    }

    /// `KeAcquireInterruptSpinLock` as a guard: raises to SynchronizeIrql and takes the
    /// lock; the guard frees it, then lowers.
    #[doc(alias = "KeAcquireInterruptSpinLock")]
    #[track_caller]
    pub fn lock(&self) -> InterruptGuard<'_> {
        let old = self.acquire_lock();
        InterruptGuard {
            obj: self,
            old,
            _not_send: PhantomData,
        }
    }

    /// `KeSynchronizeExecution`: runs `f` at SynchronizeIrql holding the interrupt spin
    /// lock, so it excludes the service routine on every processor; returns `f`'s value
    /// unchanged (SYNC-RESULT). The lock is released even if `f` unwinds.
    ///
    /// On a passive-level object it waits for the wait lock at PASSIVE_LEVEL instead and
    /// runs `f` there (above DISPATCH, or at DISPATCH, that wait is IRQL-WAIT).
    #[doc(alias = "KeSynchronizeExecution")]
    #[track_caller]
    pub fn synchronize<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.is_passive() {
            let _held = self.lock_passive();
            f()
        } else {
            let _held = self.lock();
            f()
        }
    }

    fn expect_passive(&self, what: &str) {
        assert!(
            self.is_passive(),
            "{what}: the interrupt object at {:#x} is a DIRQL interrupt; it has a spin lock, not a wait lock",
            self.addr()
        );
    }

    /// Takes a passive-level object's wait lock, waiting at PASSIVE_LEVEL (the lock
    /// `KeSynchronizeExecution` and the worker take; what KMDF's `WdfInterruptAcquireLock`
    /// takes for a passive interrupt).
    ///
    /// Taking it again on the processor that holds it would wait for itself for good, so it
    /// is reported at every verifier level as ISL-RECURSE (0x0F: wait lock, 0, 0, 0).
    /// Waiting at DISPATCH or above is IRQL-WAIT.
    ///
    /// # Panics
    ///
    /// On a DIRQL object (it has no wait lock; use [`acquire_lock`](Self::acquire_lock)).
    pub fn acquire_wait_lock(&self) {
        self.expect_passive("acquire_wait_lock");
        let me = self.check_wait_recursion();
        // Counted before the wait, not after: a passive-level routine must never start
        // over code that is between taking the event and noting it.
        hal::current_prcb().note_wait_lock_taken();
        self.wait_lock.wait(None);
        self.wait_owner.store(me, Ordering::Relaxed);
    }

    /// Takes the wait lock if it is free, without waiting (zero timeout); `false` leaves
    /// nothing held. A processor that already holds it gets ISL-RECURSE, as with
    /// [`acquire_wait_lock`](Self::acquire_wait_lock).
    ///
    /// # Panics
    ///
    /// On a DIRQL object.
    pub fn try_acquire_wait_lock(&self) -> bool {
        self.expect_passive("try_acquire_wait_lock");
        let me = self.check_wait_recursion();
        hal::current_prcb().note_wait_lock_taken(); // before the take: see above
        if self.wait_lock.wait(Some(core::time::Duration::ZERO)) == WaitStatus::Success {
            self.wait_owner.store(me, Ordering::Relaxed);
            true
        } else {
            hal::current_prcb().note_wait_lock_released();
            false
        }
    }

    /// Frees the wait lock.
    ///
    /// # Safety
    ///
    /// This processor holds it ([`acquire_wait_lock`](Self::acquire_wait_lock) or a
    /// successful [`try_acquire_wait_lock`](Self::try_acquire_wait_lock)).
    ///
    /// # Panics
    ///
    /// On a DIRQL object.
    pub unsafe fn release_wait_lock(&self) {
        self.expect_passive("release_wait_lock");
        // Masked: the worker must not start on this processor between "holds no wait
        // lock" and the event being set (it would wait on the lock this code is halfway
        // through releasing). Unmasking delivers what arrived meanwhile.
        let enabled = hal::disable_interrupts();
        hal::current_prcb().note_wait_lock_released();
        self.wait_owner.store(0, Ordering::Relaxed);
        self.wait_lock.set();
        hal::restore_interrupts(enabled);
    }

    /// The processor holding a passive-level object's wait lock, if any.
    pub fn wait_lock_owner(&self) -> Option<u32> {
        self.wait_owner.load(Ordering::Relaxed).checked_sub(1)
    }

    /// The wait lock's address (what ISL-RECURSE names for a passive-level object).
    pub fn wait_lock_addr(&self) -> usize {
        &self.wait_lock as *const Event as usize
    }

    /// This processor's tag for `wait_owner`, after ruling out recursion.
    fn check_wait_recursion(&self) -> u32 {
        let me = hal::current_processor() + 1;
        if self.wait_owner.load(Ordering::Relaxed) == me {
            hal::bug_check(BugCheck::new(
                code::SPIN_LOCK_ALREADY_OWNED,
                [self.wait_lock_addr(), 0, 0, 0],
                Rule::ISL_RECURSE,
            ));
        }
        me
    }

    /// The wait lock as a guard (see [`acquire_wait_lock`](Self::acquire_wait_lock)).
    ///
    /// # Panics
    ///
    /// On a DIRQL object.
    pub fn lock_passive(&self) -> PassiveGuard<'_> {
        self.acquire_wait_lock();
        PassiveGuard {
            obj: self,
            _not_send: PhantomData,
        }
    }

    /// The wait lock as a guard if it is free now (see
    /// [`try_acquire_wait_lock`](Self::try_acquire_wait_lock)).
    ///
    /// # Panics
    ///
    /// On a DIRQL object.
    pub fn try_lock_passive(&self) -> Option<PassiveGuard<'_>> {
        // Not `then_some`: its argument is built (and a guard dropped, releasing the lock
        // someone else holds) even when the acquire failed.
        self.try_acquire_wait_lock().then(|| PassiveGuard {
            obj: self,
            _not_send: PhantomData,
        })
    }

    /// For the HAL's interrupt dispatcher: runs the service routine under the object's
    /// lock and returns whether it claimed the interrupt. A DIRQL object: at the line's
    /// DIRQL on the processor that took the interrupt, holding the spin lock. A
    /// passive-level object: at PASSIVE_LEVEL on the worker, holding the wait lock (taken
    /// with a wait).
    ///
    /// # Safety
    ///
    /// The object is connected (so it is alive and `service` is sound to call), and the
    /// current IRQL is the object's DIRQL (PASSIVE for a passive-level object).
    pub unsafe fn service(&self) -> bool {
        if self.is_passive() {
            let _held = self.lock_passive();
            // SAFETY: the caller's contract: connected, so `service` may be called now.
            return unsafe { (self.service)(self) };
        }
        // As KiInterruptDispatch: an object whose SynchronizeIrql is above its DIRQL (a
        // lock shared with a higher line) is serviced at SynchronizeIrql, so the higher
        // line cannot interrupt the lock's holder on this processor.
        let sync = self.synchronize_irql();
        let raised = (sync > hal::current_irql()).then(|| hal::raise_irql(sync));
        let lock = self.spin_lock();
        lock.acquire_kind(AcquireKind::Isr, self.addr(), None);
        // SAFETY: the caller's contract: connected, so `service` may be called now.
        let claimed = unsafe { (self.service)(self) };
        // SAFETY: acquired just above on this processor.
        unsafe { lock.release_kind(ReleaseKind::Isr, self.addr(), None) };
        if let Some(old) = raised {
            hal::lower_irql(old);
        }
        claimed
    }
}

impl core::fmt::Debug for KInterrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KInterrupt")
            .field("vector", &self.vector)
            .field("irql", &self.irql)
            .field("synchronize_irql", &self.synchronize_irql())
            .field("line_irql", &self.line_irql)
            .field("mode", &self.mode)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// A spin-lock (DIRQL) interrupt object with a Rust service routine. The routine returns
/// `true` if its device raised the interrupt.
///
/// Connect it through a pin (`pin!`, `Box::pin`, `Arc::pin`); dropping it disconnects
/// and waits for running service routines.
///
/// ```
/// use core::pin::pin;
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use ntspin::Irql;
/// use ntspin::interrupt::{Interrupt, InterruptConfig};
///
/// let m = ntspin_sim::Machine::new(2);
/// let hits = AtomicU32::new(0);
/// m.run_on(0, || {
///     let intr = pin!(Interrupt::new(InterruptConfig::new(4, Irql::new(5).unwrap()), || {
///         hits.fetch_add(1, Ordering::Relaxed);
///         true
///     }));
///     intr.as_ref().connect().unwrap();
///     // KeSynchronizeExecution: returns the routine's value.
///     assert_eq!(intr.synchronize(|| 2), 2);
/// }).unwrap();
/// ```
#[repr(C)]
pub struct Interrupt<'l, F> {
    raw: KInterrupt,
    isr: F,
    _lock: PhantomData<&'l RawSpinLock>,
}

impl<'l, F: Fn() -> bool + Sync> Interrupt<'l, F> {
    /// An unconnected interrupt object (`IoConnectInterrupt`'s allocation step).
    ///
    /// This type is the spin-lock kind: a passive-level configuration
    /// (Irql = PASSIVE) fails to connect with `STATUS_INVALID_PARAMETER`; use
    /// [`PassiveInterrupt`].
    pub fn new(config: InterruptConfig<'l>, isr: F) -> Interrupt<'l, F> {
        // The routine's identity in reports: its monomorphized trampoline.
        let addr = service_rust::<F> as *const () as usize;
        Interrupt {
            // SAFETY: `service_rust::<F>` is called only with a pointer to this header,
            // the first field of a `repr(C)` `Interrupt<F>`, while connected; `Drop`
            // disconnects (and waits) before `isr` goes away. The lock outlives `'l`.
            raw: unsafe { KInterrupt::new(&config, service_rust::<F>, addr) },
            isr,
            _lock: PhantomData,
        }
    }

    /// `IoConnectInterruptEx`: see [`KInterrupt::connect`].
    #[doc(alias = "IoConnectInterruptEx")]
    pub fn connect(self: Pin<&Self>) -> Result<(), NtStatus> {
        if self.raw.is_passive() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: structural pinning of the first field: `Interrupt` never moves it out.
        unsafe { self.map_unchecked(|i| &i.raw) }.connect()
    }

    /// `IoDisconnectInterruptEx`.
    #[doc(alias = "IoDisconnectInterruptEx")]
    pub fn disconnect(&self) {
        self.raw.disconnect()
    }

    /// `KeAcquireInterruptSpinLock` as a guard: raises to SynchronizeIrql and takes the
    /// lock; the guard frees it, then lowers.
    #[doc(alias = "KeAcquireInterruptSpinLock")]
    #[track_caller]
    pub fn lock(&self) -> InterruptGuard<'_> {
        self.raw.lock()
    }

    /// `KeSynchronizeExecution`: see [`KInterrupt::synchronize`].
    #[doc(alias = "KeSynchronizeExecution")]
    #[track_caller]
    pub fn synchronize<R>(&self, f: impl FnOnce() -> R) -> R {
        self.raw.synchronize(f)
    }

    /// The `KINTERRUPT` inside.
    pub fn raw(&self) -> &KInterrupt {
        &self.raw
    }
}

/// # Safety
///
/// `this` points to the `raw` field of a live `Interrupt<F>`.
unsafe fn service_rust<F: Fn() -> bool + Sync>(this: *const KInterrupt) -> bool {
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` struct, and the
    // lifetime parameter does not change the layout.
    let intr = unsafe { &*this.cast::<Interrupt<'static, F>>() };
    (intr.isr)()
}

impl<F> Drop for Interrupt<'_, F> {
    fn drop(&mut self) {
        self.raw.disconnect();
    }
}

impl<F> core::fmt::Debug for Interrupt<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.raw.fmt(f)
    }
}

/// A passive-level interrupt object with a Rust service routine, which runs at
/// PASSIVE_LEVEL on the machine's worker under the object's wait lock, and may block.
///
/// It has no spin-lock methods: `lock`/`acquire_lock` of a DIRQL object do not exist on
/// this type (what the raw [`KInterrupt`] reports at run time as ISL-PASSIVE is a
/// compile error here). [`synchronize`](Self::synchronize), [`lock`](Self::lock) and
/// [`try_lock`](Self::try_lock) take the wait lock at PASSIVE_LEVEL.
///
/// ```
/// use core::pin::pin;
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use ntspin::Irql;
/// use ntspin::interrupt::{PassiveInterrupt, PassiveInterruptConfig};
///
/// let m = ntspin_sim::Machine::new(2);
/// let reads = AtomicU32::new(0);
/// m.run_on(0, || {
///     let cfg = PassiveInterruptConfig::new(12, Irql::new(6).unwrap());
///     let intr = pin!(PassiveInterrupt::new(cfg, || {
///         assert_eq!(ntspin::current_irql(), Irql::PASSIVE); // and it may block
///         reads.fetch_add(1, Ordering::Relaxed);
///         true
///     }));
///     intr.as_ref().connect().unwrap();
///     m.assert_interrupt(12);
///     while intr.synchronize(|| reads.load(Ordering::Relaxed)) == 0 {
///         std::thread::yield_now();
///     }
/// }).unwrap();
/// ```
#[repr(C)]
pub struct PassiveInterrupt<F> {
    raw: KInterrupt,
    isr: F,
}

impl<F: Fn() -> bool + Sync> PassiveInterrupt<F> {
    /// An unconnected passive-level interrupt object.
    pub fn new(config: PassiveInterruptConfig, isr: F) -> PassiveInterrupt<F> {
        let addr = service_passive_rust::<F> as *const () as usize;
        PassiveInterrupt {
            // SAFETY: `service_passive_rust::<F>` is called only with a pointer to this
            // header, the first field of a `repr(C)` `PassiveInterrupt<F>`, while
            // connected; `Drop` disconnects (and waits) before `isr` goes away. No lock is
            // supplied.
            raw: unsafe { KInterrupt::new(&config.into(), service_passive_rust::<F>, addr) },
            isr,
        }
    }

    /// `IoConnectInterruptEx` with Irql = SynchronizeIrql = PASSIVE_LEVEL: see
    /// [`KInterrupt::connect`].
    #[doc(alias = "IoConnectInterruptEx")]
    pub fn connect(self: Pin<&Self>) -> Result<(), NtStatus> {
        // SAFETY: structural pinning of the first field: the wrapper never moves it out.
        unsafe { self.map_unchecked(|i| &i.raw) }.connect()
    }

    /// `IoDisconnectInterruptEx`: returns once the worker no longer runs the routine.
    #[doc(alias = "IoDisconnectInterruptEx")]
    pub fn disconnect(&self) {
        self.raw.disconnect()
    }

    /// `KeSynchronizeExecution`: runs `f` at PASSIVE_LEVEL holding the wait lock, so it
    /// excludes the service routine; returns `f`'s value unchanged.
    #[doc(alias = "KeSynchronizeExecution")]
    #[track_caller]
    pub fn synchronize<R>(&self, f: impl FnOnce() -> R) -> R {
        self.raw.synchronize(f)
    }

    /// Takes the wait lock, waiting at PASSIVE_LEVEL; the guard frees it.
    pub fn lock(&self) -> PassiveGuard<'_> {
        self.raw.lock_passive()
    }

    /// Takes the wait lock if it is free now (zero-timeout wait): `None` leaves nothing
    /// held — what KMDF's `WdfInterruptTryToAcquireLock` does for a passive interrupt.
    pub fn try_lock(&self) -> Option<PassiveGuard<'_>> {
        self.raw.try_lock_passive()
    }

    /// The `KINTERRUPT` inside.
    pub fn raw(&self) -> &KInterrupt {
        &self.raw
    }
}

/// # Safety
///
/// `this` points to the `raw` field of a live `PassiveInterrupt<F>`.
unsafe fn service_passive_rust<F: Fn() -> bool + Sync>(this: *const KInterrupt) -> bool {
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` struct.
    let intr = unsafe { &*this.cast::<PassiveInterrupt<F>>() };
    (intr.isr)()
}

impl<F> Drop for PassiveInterrupt<F> {
    fn drop(&mut self) {
        self.raw.disconnect();
    }
}

impl<F> core::fmt::Debug for PassiveInterrupt<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.raw.fmt(f)
    }
}

/// A held wait lock of a passive-level interrupt ([`PassiveInterrupt::lock`],
/// [`KInterrupt::lock_passive`]): frees it when dropped. `!Send`: it is released by the
/// processor that took it.
#[must_use = "dropping the guard releases the wait lock at once"]
pub struct PassiveGuard<'a> {
    obj: &'a KInterrupt,
    _not_send: PhantomData<*mut ()>,
}

impl Drop for PassiveGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only after this processor took the wait lock.
        unsafe { self.obj.release_wait_lock() }
    }
}

impl core::fmt::Debug for PassiveGuard<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PassiveGuard")
            .field("interrupt", &self.obj.addr())
            .finish()
    }
}

/// A held interrupt spin lock ([`KInterrupt::lock`], [`Interrupt::lock`]): frees the lock, then restores the
/// IRQL, when dropped. `!Send`: it must be released on the processor that raised.
#[must_use = "dropping the guard releases the interrupt lock at once"]
pub struct InterruptGuard<'a> {
    obj: &'a KInterrupt,
    old: Irql,
    _not_send: PhantomData<*mut ()>,
}

impl InterruptGuard<'_> {
    /// The IRQL the acquire saved.
    pub fn old_irql(&self) -> Irql {
        self.old
    }

    /// Proof that IRQL is at least DISPATCH while the guard lives.
    pub fn dpc_level(&self) -> &crate::DpcLevel {
        crate::DpcLevel::assumed()
    }
}

impl Drop for InterruptGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard was made right after `acquire_lock` returned `old` here.
        unsafe { self.obj.release_lock(self.old) }
    }
}

impl core::fmt::Debug for InterruptGuard<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InterruptGuard")
            .field("interrupt", &self.obj.addr())
            .field("old_irql", &self.old)
            .finish()
    }
}

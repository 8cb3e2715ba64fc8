//! The KMDF interrupt object as a driver sees it: `WdfInterruptCreate`,
//! `WdfInterruptAcquireLock` / `WdfInterruptReleaseLock`, `WdfInterruptTryToAcquireLock`,
//! `WdfInterruptSynchronize`, `WdfInterruptQueueDpcForIsr`, `WdfInterruptEnable` /
//! `WdfInterruptDisable`, and the device power transitions that connect, enable, disable
//! and disconnect it.
//!
//! A driver names an interrupt by its [`WdfInterruptHandle`] (`WDFINTERRUPT`), an opaque
//! value checked against a table with generations on every call: a null, stale or
//! wrong-type handle is WDF-HANDLE (0x10D), never dereferenced.
//!
//! - A **DIRQL** interrupt's lock is the interrupt spin lock (its own, or a [`WdfSpinLock`]
//!   shared by several interrupts, which then all synchronize at the highest DIRQL of the
//!   set); `acquire_lock` raises to SynchronizeIrql and takes it.
//! - A **passive-level** interrupt (`passive_handling`) connects with Irql = SynchronizeIrql
//!   = PASSIVE; its lock is a wait lock (its own, or a [`WdfWaitLock`]) taken at PASSIVE.
//!   Its service routine runs at PASSIVE and may block.
//!
//! The framework holds the lock while it calls EvtInterruptIsr, EvtInterruptEnable,
//! EvtInterruptDisable and a `synchronize` callback, so those exclude each other and every
//! `acquire_lock` holder, on every processor.
//!
//! Specified by the `WdfInterruptAcquireLock` DDI page and the KMDF rows of `RULES.md`.
//! The SIM rules (WDF-STATE, WDF-RECURSE, WDF-RELEASE, WDF-PASSIVE-IRQL, WDF-DIRQL-IRQL,
//! WDF-ARBITRARY, WDF-BALANCE) are checked by the verifier (none at `Verifier::Off`);
//! WDF-HANDLE and WDF-NULL always, as KMDF does.
//!
//! EvtInterruptDpc runs at DISPATCH after `queue_dpc_for_isr`; EvtInterruptWorkItem at
//! PASSIVE on the machine's worker after `queue_work_item_for_isr` (it may block). With
//! automatic serialization they run under the parent device's callback lock (a spin lock
//! for the DPC, a wait lock for the work item).

use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;

use crate::bugcheck::code;
use crate::dpc::KDpc;
use crate::event::{Event, EventType, WaitStatus};
use crate::hal::{self, LockEvent};
use crate::interrupt::{InterruptConfig, InterruptMode, KInterrupt};
use crate::sync::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use crate::workitem::KWorkItem;
use crate::{BugCheck, DpcLevel, Irql, NtStatus, RawSpinLock, Rule};

/// KMDF's object type number for an interrupt, as WDF-HANDLE reports it.
pub const FX_TYPE_INTERRUPT: usize = 0x1027;

/// `WDF_VIOLATION` P1 values the KMDF rules use.
pub mod violation {
    /// A lock routine called recursively (WDF-RECURSE).
    pub const RECURSION: usize = 0x2;
    /// A required callback is NULL (WDF-NULL).
    pub const NULL_CALLBACK: usize = 0x4;
    /// An invalid handle (WDF-HANDLE).
    pub const INVALID_HANDLE: usize = 0x5;
    /// A call in the wrong object state (WDF-STATE).
    pub const INVALID_STATE: usize = 0x9;
    /// A lock released by a caller that does not hold it (WDF-RELEASE, P3 = 1), or a
    /// blocking acquire from an arbitrary thread (WDF-ARBITRARY, P3 = 2).
    pub const LOCK_MISUSE: usize = 0xB;
    /// A callback returned holding a lock or at another IRQL (WDF-BALANCE).
    pub const CALLBACK_IMBALANCE: usize = 0xE;
}

/// Driver Verifier subcode for a passive-level interrupt lock taken above PASSIVE.
pub const WDF_PASSIVE_LOCK_ABOVE_PASSIVE: usize = 0xE5;

// ---- the handle table ----

const SLOTS: usize = 1024;
const TYPE_INTERRUPT: u32 = 1;
const TYPE_DEVICE: u32 = 2;
const TYPE_RESERVED: u32 = 0xFF;

struct Slot {
    /// generation << 8 | type (type 0: free).
    stamp: AtomicU32,
    object: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // the initializer of a static array
const FREE: Slot = Slot {
    stamp: AtomicU32::new(0),
    object: AtomicUsize::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// A handle's value: stamp << 16 | index << 4 | 0xA (never 0, rarely a plausible pointer).
fn encode(stamp: u32, index: usize) -> usize {
    ((stamp as usize) << 16) | (index << 4) | 0xA
}

fn register(object: usize, ty: u32) -> Option<usize> {
    for (index, slot) in TABLE.iter().enumerate() {
        let s = slot.stamp.load(Ordering::Relaxed);
        if s & 0xFF != 0 {
            continue;
        }
        let reserved = (s & !0xFF) | TYPE_RESERVED;
        if slot
            .stamp
            .compare_exchange(s, reserved, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        slot.object.store(object, Ordering::Relaxed);
        // The next generation (16 bits, never 0 once used), with the type.
        let generation = ((s >> 8) & 0xFFFF) % 0xFFFF + 1;
        let stamp = (generation << 8) | ty;
        slot.stamp.store(stamp, Ordering::Release);
        return Some(encode(stamp, index));
    }
    None
}

fn lookup(handle: usize, ty: u32) -> Option<usize> {
    if handle & 0xF != 0xA {
        return None;
    }
    let index = (handle >> 4) & 0xFFF;
    let stamp = u32::try_from(handle >> 16).ok()?;
    let slot = TABLE.get(index)?;
    if stamp & 0xFF != ty || slot.stamp.load(Ordering::Acquire) != stamp {
        return None;
    }
    Some(slot.object.load(Ordering::Relaxed))
}

fn unregister(handle: usize) {
    let index = (handle >> 4) & 0xFFF;
    if let (Some(slot), Ok(stamp)) = (TABLE.get(index), u32::try_from(handle >> 16)) {
        let _ =
            slot.stamp
                .compare_exchange(stamp, stamp & !0xFF, Ordering::AcqRel, Ordering::Relaxed);
    }
}

// ---- locks a driver may supply ----

/// A framework spin lock (`WDFSPINLOCK`) given to several DIRQL interrupts: they share it,
/// and all synchronize at the highest DIRQL among them.
#[doc(alias = "WDFSPINLOCK")]
#[derive(Debug)]
pub struct WdfSpinLock {
    raw: RawSpinLock,
    max_irql: AtomicU8,
}

impl WdfSpinLock {
    /// `WdfSpinLockCreate`.
    #[cfg(not(loom))]
    pub const fn new() -> WdfSpinLock {
        WdfSpinLock {
            raw: RawSpinLock::new(),
            max_irql: AtomicU8::new(0),
        }
    }

    /// The `KSPIN_LOCK` inside.
    pub fn raw(&self) -> &RawSpinLock {
        &self.raw
    }

    /// The SynchronizeIrql of the interrupts that use it: the highest DIRQL among them.
    pub fn synchronize_irql(&self) -> Irql {
        Irql::from_raw(self.max_irql.load(Ordering::Relaxed))
    }
}

impl Default for WdfSpinLock {
    fn default() -> Self {
        WdfSpinLock::new()
    }
}

/// A framework wait lock (`WDFWAITLOCK`) given to a passive-level interrupt.
#[doc(alias = "WDFWAITLOCK")]
#[derive(Debug)]
pub struct WdfWaitLock {
    event: Event,
}

impl WdfWaitLock {
    /// `WdfWaitLockCreate`.
    #[cfg(not(loom))]
    pub const fn new() -> WdfWaitLock {
        WdfWaitLock {
            event: Event::new(EventType::Synchronization, true),
        }
    }

    fn addr(&self) -> usize {
        self as *const WdfWaitLock as usize
    }

    /// Waits for it at PASSIVE. Noted on the processor, so the HAL never runs a
    /// passive-level routine over its holder (which might wait for it).
    fn acquire(&self) {
        // Counted before the wait: never a passive routine over code mid-acquire.
        hal::current_prcb().note_wait_lock_taken();
        self.event.wait(None);
    }

    fn try_acquire(&self) -> bool {
        hal::current_prcb().note_wait_lock_taken();
        let got = self.event.wait(Some(core::time::Duration::ZERO)) == WaitStatus::Success;
        if !got {
            hal::current_prcb().note_wait_lock_released();
        }
        got
    }

    fn release(&self) {
        hal::current_prcb().note_wait_lock_released();
        self.event.set();
    }
}

impl Default for WdfWaitLock {
    fn default() -> Self {
        WdfWaitLock::new()
    }
}

// ---- configuration ----

/// EvtInterruptIsr: `(interrupt, message id) -> claimed`.
pub type EvtInterruptIsr<'a> = dyn Fn(WdfInterruptHandle, u32) -> bool + Sync + 'a;
/// EvtInterruptDpc (and EvtInterruptWorkItem): `(interrupt)`.
pub type EvtInterruptDpc<'a> = dyn Fn(WdfInterruptHandle) + Sync + 'a;
/// EvtInterruptEnable / EvtInterruptDisable: `(interrupt) -> status`.
pub type EvtInterruptEnable<'a> = dyn Fn(WdfInterruptHandle) -> NtStatus + Sync + 'a;

/// `WDF_INTERRUPT_CONFIG`.
#[doc(alias = "WDF_INTERRUPT_CONFIG")]
#[derive(Clone, Copy, Default)]
pub struct WdfInterruptConfig<'a> {
    /// EvtInterruptIsr (required).
    pub evt_isr: Option<&'a EvtInterruptIsr<'a>>,
    /// EvtInterruptDpc (not with a work item).
    pub evt_dpc: Option<&'a EvtInterruptDpc<'a>>,
    /// EvtInterruptWorkItem (not with a DPC): runs at PASSIVE on the machine's worker.
    pub evt_work_item: Option<&'a EvtInterruptDpc<'a>>,
    /// EvtInterruptEnable, called holding the lock after the interrupt is connected.
    pub evt_enable: Option<&'a EvtInterruptEnable<'a>>,
    /// EvtInterruptDisable, called holding the lock before it is disconnected.
    pub evt_disable: Option<&'a EvtInterruptEnable<'a>>,
    /// Passive-level handling: the routine runs at PASSIVE under a wait lock.
    pub passive_handling: bool,
    /// A spin lock shared with other DIRQL interrupts (DIRQL only).
    pub spin_lock: Option<&'a WdfSpinLock>,
    /// The wait lock to use (passive only).
    pub wait_lock: Option<&'a WdfWaitLock>,
    /// The DPC runs holding the parent device's callback lock.
    pub automatic_serialization: bool,
    /// Other interrupts may share the vector.
    pub share_vector: bool,
}

impl<'a> WdfInterruptConfig<'a> {
    /// `WDF_INTERRUPT_CONFIG_INIT(config, isr, dpc)`.
    pub fn new(
        evt_isr: &'a EvtInterruptIsr<'a>,
        evt_dpc: Option<&'a EvtInterruptDpc<'a>>,
    ) -> WdfInterruptConfig<'a> {
        WdfInterruptConfig {
            evt_isr: Some(evt_isr),
            evt_dpc,
            ..WdfInterruptConfig::default()
        }
    }

    /// The checks `WdfInterruptCreate` makes: an ISR is required; a DPC and a work item
    /// exclude each other; a wait lock only for passive handling, a spin lock only for
    /// DIRQL — each `STATUS_INVALID_PARAMETER`.
    pub fn validate(&self) -> Result<(), NtStatus> {
        let bad = self.evt_isr.is_none()
            || (self.evt_dpc.is_some() && self.evt_work_item.is_some())
            || (self.passive_handling && self.spin_lock.is_some())
            || (!self.passive_handling && self.wait_lock.is_some());
        if bad {
            Err(NtStatus::INVALID_PARAMETER)
        } else {
            Ok(())
        }
    }
}

impl core::fmt::Debug for WdfInterruptConfig<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WdfInterruptConfig")
            .field("evt_isr", &self.evt_isr.is_some())
            .field("evt_dpc", &self.evt_dpc.is_some())
            .field("evt_work_item", &self.evt_work_item.is_some())
            .field("evt_enable", &self.evt_enable.is_some())
            .field("evt_disable", &self.evt_disable.is_some())
            .field("passive_handling", &self.passive_handling)
            .field("automatic_serialization", &self.automatic_serialization)
            .field("share_vector", &self.share_vector)
            .finish()
    }
}

/// The device's interrupt resource (from its resource list): the line and its level.
#[derive(Clone, Copy, Debug)]
pub struct InterruptResource {
    /// The line.
    pub vector: u32,
    /// The DIRQL (for a passive-level interrupt, the level its line is acknowledged at).
    pub irql: Irql,
    /// Level-sensitive or latched.
    pub mode: InterruptMode,
    /// The processors it may be delivered to.
    pub affinity: u64,
}

impl InterruptResource {
    /// Line and level; level-sensitive, every processor.
    pub fn new(vector: u32, irql: Irql) -> InterruptResource {
        InterruptResource {
            vector,
            irql,
            mode: InterruptMode::LevelSensitive,
            affinity: u64::MAX,
        }
    }
}

// ---- the object ----

mod state {
    pub(super) const CREATED: u8 = 0;
    pub(super) const CONNECTED: u8 = 1;
    pub(super) const ENABLED: u8 = 2;
    pub(super) const DISABLED: u8 = 3;
}

/// A framework interrupt object (`WDFINTERRUPT`'s storage). Create it on a [`WdfDevice`]
/// through a pin; the device's start connects and enables it, its stop disables and
/// disconnects it. Dropping it disconnects it and retires its handle.
#[repr(C)]
pub struct WdfInterrupt<'a> {
    raw: KInterrupt,
    dpc: KDpc,
    work: KWorkItem,
    config: WdfInterruptConfig<'a>,
    resource: InterruptResource,
    handle: AtomicUsize,
    state: AtomicU8,
    /// The processor (plus one) holding the lock through `acquire_lock` or a
    /// framework-held callback; 0 when none.
    owner: AtomicU32,
    /// The IRQL `acquire_lock` saved, for `release_lock`.
    saved_irql: AtomicU8,
    /// The parent device's callback locks (automatic serialization): a spin lock for the
    /// DPC, a wait lock for the work item.
    parent_lock: AtomicPtr<RawSpinLock>,
    parent_wait_lock: AtomicPtr<WdfWaitLock>,
    /// The parent device's handle (`WdfInterruptGetDevice`), once created.
    device: AtomicUsize,
    _pin: PhantomPinned,
}

// SAFETY: every field is atomic, immutable after construction, or a `Sync` reference.
unsafe impl Sync for WdfInterrupt<'_> {}
// SAFETY: as above.
unsafe impl Send for WdfInterrupt<'_> {}

/// `WDFINTERRUPT`: names a created framework interrupt object. Every call validates it.
#[doc(alias = "WDFINTERRUPT")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WdfInterruptHandle(usize);

impl<'a> WdfInterrupt<'a> {
    /// An uncreated interrupt object for `config` on `resource`.
    pub fn new(config: WdfInterruptConfig<'a>, resource: InterruptResource) -> WdfInterrupt<'a> {
        let kconfig = if config.passive_handling {
            InterruptConfig {
                mode: resource.mode,
                share_vector: config.share_vector,
                affinity: resource.affinity,
                ..InterruptConfig::passive(resource.vector, resource.irql)
            }
        } else {
            InterruptConfig {
                mode: resource.mode,
                share_vector: config.share_vector,
                affinity: resource.affinity,
                spin_lock: config.spin_lock.map(|l| &l.raw),
                ..InterruptConfig::new(resource.vector, resource.irql)
            }
        };
        let addr = wdf_isr as *const () as usize;
        WdfInterrupt {
            // SAFETY: `wdf_isr` is called only with a pointer to this header, the first
            // field of a `repr(C)` `WdfInterrupt`, while connected; `Drop` disconnects
            // (and waits) first. A supplied spin lock outlives `'a`, and so the object.
            raw: unsafe { KInterrupt::new(&kconfig, wdf_isr, addr) },
            // SAFETY: `wdf_dpc` is called only with a pointer to this header, inside a
            // `WdfInterrupt` at a fixed offset, while queued or running; `Drop` waits
            // until the DPC is neither.
            dpc: unsafe { KDpc::new(wdf_dpc, wdf_dpc as *const () as usize) },
            // SAFETY: `wdf_work` is called only with a pointer to this header, inside a
            // `WdfInterrupt` at a fixed offset, while queued or running; `Drop` waits
            // until the item is neither.
            work: unsafe { KWorkItem::new(wdf_work, wdf_work as *const () as usize, 0) },
            config,
            resource,
            handle: AtomicUsize::new(0),
            state: AtomicU8::new(state::CREATED),
            owner: AtomicU32::new(0),
            saved_irql: AtomicU8::new(0),
            parent_lock: AtomicPtr::new(core::ptr::null_mut()),
            parent_wait_lock: AtomicPtr::new(core::ptr::null_mut()),
            device: AtomicUsize::new(0),
            _pin: PhantomPinned,
        }
    }

    /// The handle, once created.
    pub fn handle(&self) -> Option<WdfInterruptHandle> {
        let h = self.handle.load(Ordering::Acquire);
        (h != 0).then_some(WdfInterruptHandle(h))
    }

    /// The `KINTERRUPT` the framework connects.
    pub fn raw(&self) -> &KInterrupt {
        &self.raw
    }

    fn is_passive(&self) -> bool {
        self.config.passive_handling
    }

    fn addr(&self) -> usize {
        self as *const WdfInterrupt<'_> as usize
    }

    /// The address of the lock `acquire_lock` takes (what WDF-RECURSE names).
    fn lock_addr(&self) -> usize {
        match (self.is_passive(), self.config.wait_lock) {
            (true, Some(w)) => w.addr(),
            (true, None) => self.raw.wait_lock_addr(),
            (false, _) => self.raw.spin_lock().addr(),
        }
    }

    /// Takes the interrupt's lock with no checks (the framework's own use). A passive
    /// interrupt's lock is taken at PASSIVE; the critical region KMDF enters with it
    /// (normal kernel APCs disabled) is empty here: the machine has no APCs.
    fn lock_raw(&self) -> Irql {
        if self.is_passive() {
            match self.config.wait_lock {
                Some(w) => w.acquire(),
                None => self.raw.acquire_wait_lock(),
            }
            Irql::PASSIVE
        } else {
            self.raw.acquire_lock()
        }
    }

    /// The try form for passive interrupts (zero-timeout wait).
    fn try_lock_raw(&self) -> bool {
        match self.config.wait_lock {
            Some(w) => w.try_acquire(),
            None => self.raw.try_acquire_wait_lock(),
        }
    }

    /// Frees what `lock_raw` took.
    ///
    /// # Safety
    ///
    /// This processor holds it, with `old` the IRQL `lock_raw` returned.
    unsafe fn unlock_raw(&self, old: Irql) {
        if self.is_passive() {
            match self.config.wait_lock {
                Some(w) => w.release(),
                // SAFETY: the caller's contract.
                None => unsafe { self.raw.release_wait_lock() },
            }
        } else {
            // SAFETY: the caller's contract.
            unsafe { self.raw.release_lock(old) }
        }
    }

    /// Calls a framework-held callback: lock held, owner marked, WDF-BALANCE after.
    fn call_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let me = hal::current_processor() + 1;
        let old = self.lock_raw();
        self.owner.store(me, Ordering::Relaxed);
        let entry = crate::current_irql();
        let r = f();
        check_balance(entry, self.owner.load(Ordering::Relaxed) != me);
        self.owner.store(0, Ordering::Relaxed);
        // SAFETY: taken just above on this processor.
        unsafe { self.unlock_raw(old) };
        r
    }

    /// Connects and runs the enable step (EvtInterruptEnable holding the lock). On failure
    /// nothing stays connected.
    fn start(&self) -> Result<(), NtStatus> {
        let s = self.state.load(Ordering::Acquire);
        if s == state::ENABLED {
            return Ok(());
        }
        if s == state::CREATED || s == state::DISABLED {
            if let Some(lock) = self.config.spin_lock {
                self.raw.set_synchronize_irql(lock.synchronize_irql())?;
            }
            // SAFETY: the object is pinned (created through `Pin`) and its `Drop`
            // disconnects before it goes.
            let pinned = unsafe { Pin::new_unchecked(&self.raw) };
            pinned.connect()?;
            self.state.store(state::CONNECTED, Ordering::Release);
        }
        let status = match self.config.evt_enable {
            Some(enable) => self.call_locked(|| enable(self.handle_unchecked())),
            None => NtStatus::SUCCESS,
        };
        if status != NtStatus::SUCCESS {
            self.raw.disconnect();
            self.state.store(state::DISABLED, Ordering::Release);
            return Err(status);
        }
        self.state.store(state::ENABLED, Ordering::Release);
        Ok(())
    }

    /// The disable step (EvtInterruptDisable holding the lock), flushing its DPC, and
    /// disconnecting.
    fn stop(&self) {
        if self.state.load(Ordering::Acquire) != state::ENABLED {
            return;
        }
        self.state.store(state::DISABLED, Ordering::Release);
        if let Some(disable) = self.config.evt_disable {
            let _ = self.call_locked(|| disable(self.handle_unchecked()));
        }
        crate::dpc::flush_queued_dpcs();
        self.raw.disconnect();
        self.dpc.wait_idle();
        self.work.wait_idle();
    }

    fn handle_unchecked(&self) -> WdfInterruptHandle {
        WdfInterruptHandle(self.handle.load(Ordering::Relaxed))
    }
}

impl Drop for WdfInterrupt<'_> {
    fn drop(&mut self) {
        self.raw.disconnect();
        self.dpc.wait_idle();
        self.work.wait_idle();
        let h = self.handle.swap(0, Ordering::AcqRel);
        if h != 0 {
            unregister(h);
        }
    }
}

impl core::fmt::Debug for WdfInterrupt<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WdfInterrupt")
            .field("handle", &self.handle())
            .field("resource", &self.resource)
            .field("config", &self.config)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// The service routine the `KINTERRUPT` calls: the framework holds the lock (the
/// interrupt's; the driver's wait lock too, for a passive interrupt with one) and calls
/// EvtInterruptIsr.
///
/// # Safety
///
/// `this` is the `raw` field of a live, connected `WdfInterrupt`.
unsafe fn wdf_isr(this: *const KInterrupt) -> bool {
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` struct.
    let intr = unsafe { &*this.cast::<WdfInterrupt<'static>>() };
    let Some(isr) = intr.config.evt_isr else {
        return false; // refused at create: unreachable for a created object
    };
    let extra = intr.is_passive().then_some(intr.config.wait_lock).flatten();
    if let Some(w) = extra {
        w.acquire();
    }
    let me = hal::current_processor() + 1;
    intr.owner.store(me, Ordering::Relaxed);
    let claimed = isr(intr.handle_unchecked(), 0);
    intr.owner.store(0, Ordering::Relaxed);
    if let Some(w) = extra {
        w.release();
    }
    claimed
}

/// The DPC routine: EvtInterruptDpc at DISPATCH, under the parent's callback lock with
/// automatic serialization; WDF-BALANCE after.
///
/// # Safety
///
/// `this` is the `dpc` field of a live `WdfInterrupt`.
unsafe fn wdf_dpc(this: *const KDpc, _: usize, _: usize) {
    let offset = core::mem::offset_of!(WdfInterrupt<'static>, dpc);
    let base = this
        .wrapping_byte_sub(offset)
        .cast::<WdfInterrupt<'static>>();
    // SAFETY: the caller's contract: `this` sits `offset` bytes into a live `WdfInterrupt`,
    // so `base` is that object.
    let intr = unsafe { &*base };
    let Some(dpc) = intr.config.evt_dpc else {
        return;
    };
    let parent = intr.parent_lock.load(Ordering::Acquire);
    // SAFETY: the device outlives the interrupts created on it (they borrow it).
    let parent =
        (intr.config.automatic_serialization && !parent.is_null()).then(|| unsafe { &*parent });
    if let Some(l) = parent {
        l.acquire_at_dpc_level();
    }
    let entry = crate::current_irql();
    let me = hal::current_processor() + 1;
    dpc(intr.handle_unchecked());
    check_balance(entry, intr.owner.load(Ordering::Relaxed) == me);
    if let Some(l) = parent {
        // SAFETY: acquired just above on this processor.
        unsafe { l.release_from_dpc_level() };
    }
}

/// The work item's routine: EvtInterruptWorkItem at PASSIVE, under the parent's
/// passive callback lock with automatic serialization; WDF-BALANCE after.
///
/// # Safety
///
/// `this` is the `work` field of a live `WdfInterrupt`.
unsafe fn wdf_work(this: *const KWorkItem) {
    let offset = core::mem::offset_of!(WdfInterrupt<'static>, work);
    let base = this
        .wrapping_byte_sub(offset)
        .cast::<WdfInterrupt<'static>>();
    // SAFETY: the caller's contract: `this` sits `offset` bytes into a live `WdfInterrupt`.
    let intr = unsafe { &*base };
    let Some(work) = intr.config.evt_work_item else {
        return;
    };
    let parent = intr.parent_wait_lock.load(Ordering::Acquire);
    // SAFETY: the device outlives the interrupts created on it (they borrow it).
    let parent =
        (intr.config.automatic_serialization && !parent.is_null()).then(|| unsafe { &*parent });
    if let Some(l) = parent {
        l.acquire();
    }
    let entry = crate::current_irql();
    let me = hal::current_processor() + 1;
    work(intr.handle_unchecked());
    check_balance(entry, intr.owner.load(Ordering::Relaxed) == me);
    if let Some(l) = parent {
        l.release();
    }
}

/// WDF-BALANCE: a callback returned at another IRQL than it entered at, or holding the
/// interrupt lock it took.
fn check_balance(entry: Irql, holds: bool) {
    let exit = crate::current_irql();
    if exit != entry || holds {
        report(
            BugCheck::new(
                code::WDF_VIOLATION,
                [
                    violation::CALLBACK_IMBALANCE,
                    entry.raw().into(),
                    exit.raw().into(),
                    0,
                ],
                Rule::WDF_BALANCE,
            ),
            false,
        );
    }
}

/// A SIM rule's violation, through the verifier (nothing at `Verifier::Off`).
fn report(bug: BugCheck, continuable: bool) {
    if hal::current_prcb().hal_wants() {
        hal::lock_event(&LockEvent::Violation { bug, continuable });
    }
}

fn warn(bug: BugCheck) {
    if hal::current_prcb().hal_wants() {
        hal::lock_event(&LockEvent::Warning { bug });
    }
}

// ---- the handle's methods: the WdfInterrupt* DDIs ----

impl WdfInterruptHandle {
    /// A handle from its raw value (the C ABI's `WDFINTERRUPT`); any value is accepted
    /// here and checked at each call.
    pub fn from_raw(value: usize) -> WdfInterruptHandle {
        WdfInterruptHandle(value)
    }

    /// The raw value.
    pub fn as_raw(self) -> usize {
        self.0
    }

    /// The object, or WDF-HANDLE (0x10D: 0x5, handle, 0x1027, 0) — at every verifier
    /// level, as KMDF checks handles itself.
    fn object(self) -> &'static WdfInterrupt<'static> {
        match lookup(self.0, TYPE_INTERRUPT) {
            // SAFETY: a registered object stays alive and pinned until its `Drop`
            // unregisters it; the lifetime is the driver's contract (a handle is not used
            // after its object is gone — and if it is, the generation no longer matches).
            Some(addr) => unsafe { &*(addr as *const WdfInterrupt<'static>) },
            None => hal::bug_check(BugCheck::new(
                code::WDF_VIOLATION,
                [violation::INVALID_HANDLE, self.0, FX_TYPE_INTERRUPT, 0],
                Rule::WDF_HANDLE,
            )),
        }
    }

    /// WDF-STATE, then the IRQL rules, for a lock call.
    fn check_call(self, intr: &WdfInterrupt<'_>) {
        if intr.state.load(Ordering::Acquire) != state::ENABLED {
            report(
                BugCheck::new(
                    code::WDF_VIOLATION,
                    [violation::INVALID_STATE, self.0, 0, 0],
                    Rule::WDF_STATE,
                ),
                true,
            );
        }
        let cur = crate::current_irql();
        if intr.is_passive() {
            if cur != Irql::PASSIVE {
                report(
                    BugCheck::verifier(
                        WDF_PASSIVE_LOCK_ABOVE_PASSIVE,
                        cur.raw().into(),
                        self.0,
                        0,
                        Rule::WDF_PASSIVE_IRQL,
                    ),
                    false,
                );
            }
        } else {
            let sync = intr.raw.synchronize_irql();
            if cur > sync {
                report(
                    BugCheck::verifier(
                        crate::bugcheck::verifier::IRQL_RAISE_LOWER,
                        cur.raw().into(),
                        sync.raw().into(),
                        0,
                        Rule::WDF_DIRQL_IRQL,
                    ),
                    false,
                );
            }
        }
    }

    /// WDF-ARBITRARY: a blocking acquire of a passive interrupt's lock in a context marked
    /// as an arbitrary thread.
    fn check_not_arbitrary(self, intr: &WdfInterrupt<'_>) {
        if intr.is_passive() && hal::current_prcb().arbitrary_depth() > 0 {
            report(
                BugCheck::new(
                    code::WDF_VIOLATION,
                    [violation::LOCK_MISUSE, self.0, 2, 0],
                    Rule::WDF_ARBITRARY,
                ),
                true,
            );
        }
    }

    /// WDF-RECURSE: this processor already holds the lock (through `acquire_lock`, or the
    /// framework inside a callback).
    fn check_not_held(self, intr: &WdfInterrupt<'_>) -> u32 {
        let me = hal::current_processor() + 1;
        if intr.owner.load(Ordering::Relaxed) == me {
            report(
                BugCheck::new(
                    code::WDF_VIOLATION,
                    [violation::RECURSION, self.0, intr.lock_addr(), 0],
                    Rule::WDF_RECURSE,
                ),
                false,
            );
        }
        me
    }

    /// `WdfInterruptAcquireLock`: a DIRQL interrupt raises to its SynchronizeIrql and
    /// takes the interrupt spin lock; a passive one takes its wait lock at PASSIVE. Pair
    /// it with [`release_lock`](Self::release_lock) on the same processor, or use
    /// [`lock`](Self::lock).
    #[doc(alias = "WdfInterruptAcquireLock")]
    pub fn acquire_lock(self) {
        let intr = self.object();
        self.check_call(intr);
        self.check_not_arbitrary(intr);
        let me = self.check_not_held(intr);
        let old = intr.lock_raw();
        intr.owner.store(me, Ordering::Relaxed);
        intr.saved_irql.store(old.raw(), Ordering::Relaxed);
    }

    /// `WdfInterruptReleaseLock`: frees the lock and restores the IRQL `acquire_lock`
    /// saved. Releasing a lock this processor did not take is WDF-RELEASE.
    ///
    /// # Safety
    ///
    /// This processor took the lock with [`acquire_lock`](Self::acquire_lock). (With the
    /// verifier on, a violation is a bug check.)
    #[doc(alias = "WdfInterruptReleaseLock")]
    pub unsafe fn release_lock(self) {
        let intr = self.object();
        self.check_call(intr);
        let me = hal::current_processor() + 1;
        if intr.owner.load(Ordering::Relaxed) != me {
            report(
                BugCheck::new(
                    code::WDF_VIOLATION,
                    [violation::LOCK_MISUSE, self.0, 1, 0],
                    Rule::WDF_RELEASE,
                ),
                false,
            );
        }
        intr.owner.store(0, Ordering::Relaxed);
        let old = Irql::from_raw(intr.saved_irql.load(Ordering::Relaxed));
        // SAFETY: the caller's contract.
        unsafe { intr.unlock_raw(old) };
    }

    /// `WdfInterruptAcquireLock` as a guard that releases when dropped.
    pub fn lock(self) -> WdfInterruptGuard {
        self.acquire_lock();
        WdfInterruptGuard {
            handle: self,
            _not_send: PhantomData,
        }
    }

    /// `WdfInterruptTryToAcquireLock`: for a passive-level interrupt at PASSIVE, takes the
    /// wait lock if it is free now (`true`) or returns `false` holding nothing. On a DIRQL
    /// interrupt, or above PASSIVE, it returns `false` and the verifier records a WDF-TRY
    /// warning.
    #[doc(alias = "WdfInterruptTryToAcquireLock")]
    pub fn try_to_acquire_lock(self) -> bool {
        let intr = self.object();
        let cur = crate::current_irql();
        if !intr.is_passive() || cur != Irql::PASSIVE {
            warn(BugCheck::new(
                code::WDF_VIOLATION,
                [violation::INVALID_STATE, self.0, cur.raw().into(), 0],
                Rule::WDF_TRY,
            ));
            return false;
        }
        self.check_call(intr);
        let me = self.check_not_held(intr);
        if !intr.try_lock_raw() {
            return false;
        }
        intr.owner.store(me, Ordering::Relaxed);
        intr.saved_irql
            .store(Irql::PASSIVE.raw(), Ordering::Relaxed);
        true
    }

    /// `WdfInterruptSynchronize`: runs `f` holding the lock (at SynchronizeIrql, or at
    /// PASSIVE for a passive interrupt) and returns its value.
    #[doc(alias = "WdfInterruptSynchronize")]
    pub fn synchronize<R>(self, f: impl FnOnce(WdfInterruptHandle) -> R) -> R {
        let intr = self.object();
        self.check_call(intr);
        self.check_not_arbitrary(intr);
        self.check_not_held(intr);
        intr.call_locked(|| f(self))
    }

    /// `WdfInterruptSynchronize` as C calls it: `callback(interrupt, context)` returning a
    /// BOOLEAN. A missing callback is WDF-NULL (0x10D: 0x4, 0, `caller`, 0), `caller`
    /// being the calling code's address.
    pub fn synchronize_raw(
        self,
        callback: Option<fn(WdfInterruptHandle, usize) -> bool>,
        context: usize,
        caller: usize,
    ) -> bool {
        let intr = self.object();
        let Some(cb) = callback else {
            hal::bug_check(BugCheck::new(
                code::WDF_VIOLATION,
                [violation::NULL_CALLBACK, 0, caller, 0],
                Rule::WDF_NULL,
            ));
        };
        let _validated = intr;
        self.synchronize(|h| cb(h, context))
    }

    /// `WdfInterruptQueueDpcForIsr`: queues the interrupt's EvtInterruptDpc; `false` if it
    /// is already queued (or the interrupt has no DPC).
    #[doc(alias = "WdfInterruptQueueDpcForIsr")]
    pub fn queue_dpc_for_isr(self) -> bool {
        let intr = self.object();
        if intr.config.evt_dpc.is_none() {
            return false;
        }
        // SAFETY: the object is pinned (registered only through `Pin`).
        unsafe { Pin::new_unchecked(&intr.dpc) }.insert(0, 0)
    }

    /// `WdfInterruptQueueWorkItemForIsr`: queues the interrupt's EvtInterruptWorkItem for
    /// the worker (it runs at PASSIVE); `false` if it is already queued (or the interrupt
    /// has no work item).
    #[doc(alias = "WdfInterruptQueueWorkItemForIsr")]
    pub fn queue_work_item_for_isr(self) -> bool {
        let intr = self.object();
        if intr.config.evt_work_item.is_none() {
            return false;
        }
        // SAFETY: the object is pinned (registered only through `Pin`).
        unsafe { Pin::new_unchecked(&intr.work) }.queue()
    }

    /// `WdfInterruptEnable` (PASSIVE): connects if needed and runs the enable step.
    #[doc(alias = "WdfInterruptEnable")]
    pub fn enable(self) -> Result<(), NtStatus> {
        self.object().start()
    }

    /// `WdfInterruptDisable` (PASSIVE): the disable step, then disconnects.
    #[doc(alias = "WdfInterruptDisable")]
    pub fn disable(self) {
        self.object().stop()
    }

    /// Whether the interrupt is enabled (between its enable and disable steps).
    pub fn is_enabled(self) -> bool {
        self.object().state.load(Ordering::Acquire) == state::ENABLED
    }

    /// `WdfInterruptGetDevice`: the device the interrupt was created on.
    ///
    /// ```
    /// use core::pin::pin;
    /// use ntspin::Irql;
    /// use ntspin::wdf::{InterruptResource, WdfDevice, WdfInterrupt, WdfInterruptConfig};
    ///
    /// let m = ntspin_sim::Machine::new(1);
    /// m.run_on(0, || {
    ///     let isr = |_, _| true;
    ///     let intr = pin!(WdfInterrupt::new(
    ///         WdfInterruptConfig::new(&isr, None),
    ///         InterruptResource::new(3, Irql::new(5).unwrap()),
    ///     ));
    ///     let mut dev = pin!(WdfDevice::new());
    ///     let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
    ///     assert_eq!(h.device(), dev.as_ref().handle().unwrap());
    /// }).unwrap();
    /// ```
    #[doc(alias = "WdfInterruptGetDevice")]
    pub fn device(self) -> WdfDeviceHandle {
        WdfDeviceHandle(self.object().device.load(Ordering::Acquire))
    }
}

/// A held framework interrupt lock ([`WdfInterruptHandle::lock`]).
#[must_use = "dropping the guard releases the interrupt lock at once"]
#[derive(Debug)]
pub struct WdfInterruptGuard {
    handle: WdfInterruptHandle,
    _not_send: PhantomData<*mut ()>,
}

impl WdfInterruptGuard {
    /// Proof of IRQL >= DISPATCH, for a DIRQL interrupt's guard (`None` for a passive one).
    pub fn dpc_level(&self) -> Option<&DpcLevel> {
        (crate::current_irql() >= Irql::DISPATCH).then(DpcLevel::assumed)
    }
}

impl Drop for WdfInterruptGuard {
    fn drop(&mut self) {
        // SAFETY: the guard exists only after `acquire_lock` on this processor.
        unsafe { self.handle.release_lock() }
    }
}

// ---- the device ----

/// Most interrupts one device may have.
pub const MAX_INTERRUPTS: usize = 8;

/// A framework device object (`WDFDEVICE`) as far as its interrupts go: the interrupts
/// created on it, its callback lock (automatic serialization), and its power state.
///
/// ```
/// use core::pin::pin;
/// use ntspin::Irql;
/// use ntspin::wdf::{InterruptResource, WdfDevice, WdfInterrupt, WdfInterruptConfig};
///
/// let m = ntspin_sim::Machine::new(1);
/// m.run_on(0, || {
///     let isr = |_, _| true;
///     let intr = pin!(WdfInterrupt::new(
///         WdfInterruptConfig::new(&isr, None),
///         InterruptResource::new(3, Irql::new(5).unwrap()),
///     ));
///     let mut dev = pin!(WdfDevice::new());
///     let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
///     dev.start().unwrap(); // D0 entry: connect, then EvtInterruptEnable
///     assert_eq!(h.synchronize(|_| 7), 7);
///     dev.stop();           // EvtInterruptDisable, flush the DPC, disconnect
///     assert!(!h.is_enabled());
/// }).unwrap();
/// ```
#[doc(alias = "WDFDEVICE")]
pub struct WdfDevice<'a> {
    interrupts: [Option<Pin<&'a WdfInterrupt<'a>>>; MAX_INTERRUPTS],
    count: usize,
    callback_lock: RawSpinLock,
    passive_callback_lock: WdfWaitLock,
    handle: AtomicUsize,
    /// The interrupts point at the callback locks: the device stays put once it has any.
    _pin: PhantomPinned,
}

/// `WDFDEVICE`: names a framework device (see [`WdfDevice::handle`]).
#[doc(alias = "WDFDEVICE")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WdfDeviceHandle(usize);

impl WdfDeviceHandle {
    /// The raw value.
    pub fn as_raw(self) -> usize {
        self.0
    }
}

impl<'a> WdfDevice<'a> {
    /// A device with no interrupts, stopped.
    #[cfg(not(loom))]
    pub const fn new() -> WdfDevice<'a> {
        WdfDevice {
            interrupts: [None; MAX_INTERRUPTS],
            count: 0,
            callback_lock: RawSpinLock::new(),
            passive_callback_lock: WdfWaitLock::new(),
            handle: AtomicUsize::new(0),
            _pin: PhantomPinned,
        }
    }

    /// `WdfInterruptCreate`: validates the configuration (see
    /// [`WdfInterruptConfig::validate`]) and gives the object its handle.
    /// `STATUS_INSUFFICIENT_RESOURCES` past [`MAX_INTERRUPTS`] or a full handle table;
    /// `STATUS_INVALID_DEVICE_STATE` if the object was created already.
    ///
    /// The device keeps a reference: the interrupt must outlive it (declare it first).
    /// The device is pinned: its interrupts point at its callback locks.
    #[doc(alias = "WdfInterruptCreate")]
    pub fn create_interrupt(
        self: Pin<&mut Self>,
        intr: Pin<&'a WdfInterrupt<'a>>,
    ) -> Result<WdfInterruptHandle, NtStatus> {
        // SAFETY: nothing is moved out of the device; the fields written here are not
        // pinned (only the callback locks' addresses matter, and they are not touched).
        let this = unsafe { self.get_unchecked_mut() };
        intr.config.validate()?;
        if intr.handle.load(Ordering::Acquire) != 0 {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if this.count == MAX_INTERRUPTS {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let device = this.registered_handle()?;
        if let Some(lock) = intr.config.spin_lock {
            lock.max_irql
                .fetch_max(intr.resource.irql.raw(), Ordering::Relaxed);
        }
        let h = register(intr.addr(), TYPE_INTERRUPT).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        intr.device.store(device, Ordering::Release);
        intr.handle.store(h, Ordering::Release);
        intr.parent_lock.store(
            &this.callback_lock as *const RawSpinLock as *mut RawSpinLock,
            Ordering::Release,
        );
        intr.parent_wait_lock.store(
            &this.passive_callback_lock as *const WdfWaitLock as *mut WdfWaitLock,
            Ordering::Release,
        );
        this.interrupts[this.count] = Some(intr);
        this.count += 1;
        Ok(WdfInterruptHandle(h))
    }

    /// D0 entry: each interrupt is connected, then its EvtInterruptEnable is called
    /// holding its lock. If one fails, those already enabled are disabled again and the
    /// status is returned.
    pub fn start(&self) -> Result<(), NtStatus> {
        for (i, intr) in self.interrupts[..self.count].iter().flatten().enumerate() {
            if let Err(status) = intr.start() {
                for done in self.interrupts[..i].iter().flatten() {
                    done.stop();
                }
                return Err(status);
            }
        }
        Ok(())
    }

    /// D0 exit: each interrupt's EvtInterruptDisable is called holding its lock, its DPC
    /// and work item are flushed, and it is disconnected.
    pub fn stop(&self) {
        for intr in self.interrupts[..self.count].iter().flatten() {
            intr.stop();
        }
    }

    /// The device's handle (registered on first use, retired when the device is dropped).
    /// Passing it where a `WDFINTERRUPT` is expected is WDF-HANDLE, as in KMDF.
    /// `STATUS_INSUFFICIENT_RESOURCES` if the handle table is full.
    pub fn handle(self: Pin<&Self>) -> Result<WdfDeviceHandle, NtStatus> {
        self.get_ref().registered_handle().map(WdfDeviceHandle)
    }

    /// The handle's raw value, registering it on first use. The caller has the device
    /// pinned (its address is what the handle names).
    fn registered_handle(&self) -> Result<usize, NtStatus> {
        let h = self.handle.load(Ordering::Acquire);
        if h != 0 {
            return Ok(h);
        }
        let addr = self as *const WdfDevice<'_> as usize;
        let h = register(addr, TYPE_DEVICE).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        match self
            .handle
            .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(h),
            Err(won) => {
                unregister(h);
                Ok(won)
            }
        }
    }

    /// The callback lock automatic serialization takes (the device's synchronization
    /// scope).
    pub fn callback_lock(&self) -> &RawSpinLock {
        &self.callback_lock
    }
}

impl Drop for WdfDevice<'_> {
    fn drop(&mut self) {
        let h = self.handle.swap(0, Ordering::AcqRel);
        if h != 0 {
            unregister(h);
        }
    }
}

impl Default for WdfDevice<'_> {
    fn default() -> Self {
        WdfDevice::new()
    }
}

impl core::fmt::Debug for WdfDevice<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WdfDevice")
            .field("interrupts", &self.count)
            .finish()
    }
}

/// Runs `f` as an "arbitrary thread" context (what a KMDF I/O queue callback is): a
/// blocking `acquire_lock` of a passive-level interrupt in it is WDF-ARBITRARY; use
/// [`WdfInterruptHandle::try_to_acquire_lock`].
pub fn arbitrary_thread<R>(f: impl FnOnce() -> R) -> R {
    struct Leave(&'static crate::hal::Prcb);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.leave_arbitrary();
        }
    }
    hal::current_processor(); // attaches a thread that is no processor yet
    let prcb = hal::current_prcb();
    prcb.enter_arbitrary();
    let _leave = Leave(prcb);
    f()
}

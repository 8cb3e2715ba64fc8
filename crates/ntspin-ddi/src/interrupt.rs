//! Interrupt objects for C drivers: `IoConnectInterrupt(Ex)`, `IoDisconnectInterrupt(Ex)`,
//! `KeSynchronizeExecution`, `KeAcquireInterruptSpinLock` / `KeReleaseInterruptSpinLock`.
//!
//! A `PKINTERRUPT` is the address of a heap object ntspin owns from the connect to the
//! disconnect. Every routine that takes one looks it up among the live objects first, so a
//! NULL, garbage or already-disconnected pointer is the bug check ISL-OBJ (0xC4/0xE1,
//! object), never a dereference.

use core::ffi::c_void;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use ntspin::bugcheck::verifier as sub;
use ntspin::interrupt::{InterruptConfig, InterruptMode, KInterrupt};
use ntspin::{BugCheck, Irql, NtStatus, RawSpinLock, Rule};

/// `PKSERVICE_ROUTINE`: `BOOLEAN InterruptService(PKINTERRUPT, PVOID ServiceContext)`.
pub type ServiceRoutine = unsafe extern "C-unwind" fn(*mut CInterrupt, *mut c_void) -> u8;
/// `PKSYNCHRONIZE_ROUTINE`: `BOOLEAN SynchCritSection(PVOID SynchronizeContext)`.
pub type SynchronizeRoutine = unsafe extern "C-unwind" fn(*mut c_void) -> u8;

/// What a `PKINTERRUPT` points to: the machine's interrupt object, then the C routine and
/// its context.
#[repr(C)]
pub struct CInterrupt {
    raw: KInterrupt,
    routine: ServiceRoutine,
    context: *mut c_void,
}

/// The line level a passive-level connection's line is acknowledged at (Windows x64
/// derives it from the vector; the machine's vectors are plain line numbers, so C
/// connections use the lowest device level).
pub const PASSIVE_LINE_IRQL: u8 = 3;

/// Most interrupt objects C code may have connected at once (all machines together).
const MAX_OBJECTS: usize = 1024;

/// The live objects' addresses (0: free slot). Lock-free: looked up from any IRQL,
/// including a DPC inside the signal handler.
static LIVE: [AtomicUsize; MAX_OBJECTS] = [const { AtomicUsize::new(0) }; MAX_OBJECTS];

fn register(addr: usize) -> bool {
    LIVE.iter()
        .any(|s| s.compare_exchange(0, addr, SeqCst, SeqCst).is_ok())
}

fn unregister(addr: usize) -> bool {
    LIVE.iter()
        .any(|s| s.compare_exchange(addr, 0, SeqCst, SeqCst).is_ok())
}

fn is_live(addr: usize) -> bool {
    addr != 0 && LIVE.iter().any(|s| s.load(SeqCst) == addr)
}

/// The live objects connected on a machine, for [`NtspinMachineDestroy`](crate::NtspinMachineDestroy).
pub(crate) fn live_on(m: &ntspin_sim::Machine) -> Vec<usize> {
    LIVE.iter()
        .map(|s| s.load(SeqCst))
        .filter(|&a| a != 0 && m.has_interrupt(a))
        .collect()
}

/// The object behind a `PKINTERRUPT`, or the bug check ISL-OBJ.
fn object<'a>(obj: *mut CInterrupt) -> &'a CInterrupt {
    let addr = obj as usize;
    if !is_live(addr) {
        ntspin::hal::bug_check(BugCheck::verifier(
            sub::BAD_INTERRUPT_OBJECT,
            addr,
            0,
            0,
            Rule::ISL_OBJ,
        ));
    }
    // SAFETY: a live object is one `connect` registered and `disconnect` has not freed;
    // the C contract is not to disconnect it while it is used.
    unsafe { &*obj }
}

fn c_service(this: *const KInterrupt) -> bool {
    let c = this.cast::<CInterrupt>().cast_mut();
    // SAFETY: the machine calls this only for connected objects, which are `CInterrupt`s
    // made by `connect` (`raw` at offset 0 of the `repr(C)` struct).
    let obj = unsafe { &*c };
    let (routine, context) = (obj.routine, obj.context);
    // SAFETY: the driver's routine, called as the kernel calls it.
    unsafe { routine(c, context) != 0 }
}

/// Connects a fully specified interrupt; the object's address on success.
///
/// # Safety
///
/// `spin_lock` is NULL or a `KSPIN_LOCK` that outlives the connection.
#[allow(clippy::too_many_arguments)] // IoConnectInterrupt's own list
unsafe fn connect(
    routine: Option<ServiceRoutine>,
    context: *mut c_void,
    spin_lock: *mut usize,
    vector: u32,
    irql: u8,
    synchronize_irql: u8,
    mode: u32,
    share: u8,
    affinity: usize,
) -> Result<*mut CInterrupt, NtStatus> {
    let routine = routine.ok_or(NtStatus::INVALID_PARAMETER)?;
    let (Some(irql), Some(sync)) = (Irql::new(irql), Irql::new(synchronize_irql)) else {
        return Err(NtStatus::INVALID_PARAMETER);
    };
    if vector >= ntspin_sim::VECTORS {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mode = match mode {
        0 => InterruptMode::LevelSensitive,
        1 => InterruptMode::Latched,
        _ => return Err(NtStatus::INVALID_PARAMETER),
    };
    // SAFETY: the caller's contract: a live KSPIN_LOCK for the connection's life.
    let lock = (!spin_lock.is_null()).then(|| unsafe { RawSpinLock::from_ptr(spin_lock) });
    let mut cfg = InterruptConfig::new(vector, irql);
    cfg.synchronize_irql = sync;
    cfg.mode = mode;
    cfg.share_vector = share != 0;
    cfg.affinity = affinity as u64;
    cfg.spin_lock = lock;
    if irql == Irql::PASSIVE {
        cfg.line_irql = Irql::new(PASSIVE_LINE_IRQL).expect("a valid IRQL");
    }
    // SAFETY: `c_service` is sound for this object while connected (it reads the routine
    // and context stored beside it), and the lock outlives it (the caller's contract).
    let raw = unsafe { KInterrupt::new(&cfg, c_service, routine as usize) };
    let boxed = Box::new(CInterrupt {
        raw: raw.with_context(context as usize),
        routine,
        context,
    });
    let ptr = Box::into_raw(boxed);
    // SAFETY: `ptr` is a live heap object, made just above.
    let object = unsafe { &*ptr };
    // SAFETY: it stays put until `disconnect` frees it.
    let pinned = unsafe { Pin::new_unchecked(&object.raw) };
    match pinned.connect() {
        Ok(()) => {
            if !register(ptr as usize) {
                // SAFETY: connected just above; nothing else knows the object yet.
                unsafe { (*ptr).raw.disconnect() };
                // SAFETY: made by `Box::into_raw` above and disconnected.
                drop(unsafe { Box::from_raw(ptr) });
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            Ok(ptr)
        }
        Err(status) => {
            // SAFETY: made by `Box::into_raw` above; never connected.
            drop(unsafe { Box::from_raw(ptr) });
            Err(status)
        }
    }
}

/// Disconnects and frees a live object (ISL-OBJ for anything else).
pub(crate) fn disconnect(obj: *mut CInterrupt) {
    let o = object(obj);
    o.raw.disconnect();
    if unregister(obj as usize) {
        // SAFETY: made by `Box::into_raw` in `connect`, disconnected (no routine runs any
        // more), and unregistered by this call only.
        drop(unsafe { Box::from_raw(obj) });
    }
}

/// `IoConnectInterrupt`.
///
/// # Safety
///
/// `interrupt_object` is writable; `spin_lock` is NULL or outlives the connection;
/// `routine` is sound to call with `context` at DIRQL on any processor.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // the WDK's signature
pub unsafe extern "C-unwind" fn IoConnectInterrupt(
    interrupt_object: *mut *mut CInterrupt,
    routine: Option<ServiceRoutine>,
    context: *mut c_void,
    spin_lock: *mut usize,
    vector: u32,
    irql: u8,
    synchronize_irql: u8,
    mode: u32,
    share_vector: u8,
    processor_enable_mask: usize,
    floating_save: u8,
) -> i32 {
    let _ = floating_save; // x64 saves floating-point state for every ISR
    if interrupt_object.is_null() {
        return NtStatus::INVALID_PARAMETER.0;
    }
    // SAFETY: the caller's contract.
    let r = unsafe {
        connect(
            routine,
            context,
            spin_lock,
            vector,
            irql,
            synchronize_irql,
            mode,
            share_vector,
            processor_enable_mask,
        )
    };
    match r {
        Ok(p) => {
            // SAFETY: checked non-null; the caller's contract: writable.
            unsafe { interrupt_object.write(p) };
            NtStatus::SUCCESS.0
        }
        Err(s) => s.0,
    }
}

/// `CONNECT_FULLY_SPECIFIED`.
pub const CONNECT_FULLY_SPECIFIED: u32 = 1;
/// `CONNECT_LINE_BASED`.
pub const CONNECT_LINE_BASED: u32 = 2;
/// `CONNECT_MESSAGE_BASED`.
pub const CONNECT_MESSAGE_BASED: u32 = 3;
/// `CONNECT_FULLY_SPECIFIED_GROUP`.
pub const CONNECT_FULLY_SPECIFIED_GROUP: u32 = 4;
/// `CONNECT_MESSAGE_BASED_PASSIVE`.
pub const CONNECT_MESSAGE_BASED_PASSIVE: u32 = 5;

/// `IO_CONNECT_INTERRUPT_FULLY_SPECIFIED_PARAMETERS` (x64 layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FullySpecified {
    /// `PhysicalDeviceObject` (may be NULL on the machine).
    pub physical_device_object: *mut c_void,
    /// `InterruptObject`.
    pub interrupt_object: *mut *mut CInterrupt,
    /// `ServiceRoutine`.
    pub service_routine: Option<ServiceRoutine>,
    /// `ServiceContext`.
    pub service_context: *mut c_void,
    /// `SpinLock`.
    pub spin_lock: *mut usize,
    /// `SynchronizeIrql`.
    pub synchronize_irql: u8,
    /// `FloatingSave`.
    pub floating_save: u8,
    /// `ShareVector`.
    pub share_vector: u8,
    /// `Vector`.
    pub vector: u32,
    /// `Irql`.
    pub irql: u8,
    /// `InterruptMode`.
    pub interrupt_mode: u32,
    /// `ProcessorEnableMask`.
    pub processor_enable_mask: usize,
    /// `Group`.
    pub group: u16,
}

/// `IO_CONNECT_INTERRUPT_PARAMETERS`: `Version`, then the union (only the fully
/// specified member is read; the union is as large as the WDK's largest member).
#[repr(C)]
pub struct ConnectParameters {
    /// `Version`.
    pub version: u32,
    /// `FullySpecified` (the union's first member).
    pub fully_specified: FullySpecified,
}

const _: () = assert!(core::mem::size_of::<FullySpecified>() == 72);
const _: () = assert!(core::mem::size_of::<ConnectParameters>() == 80);

/// `IoConnectInterruptEx`: `CONNECT_FULLY_SPECIFIED` connects (passive-level included:
/// `Irql` and `SynchronizeIrql` PASSIVE_LEVEL, no spin lock). The line- and message-based
/// versions answer as a platform without them does: `STATUS_NOT_SUPPORTED`, with
/// `Version` set to `CONNECT_FULLY_SPECIFIED` so the driver can retry.
///
/// # Safety
///
/// `parameters` is NULL (`STATUS_INVALID_PARAMETER`) or a readable and writable
/// `IO_CONNECT_INTERRUPT_PARAMETERS`, its pointers as [`IoConnectInterrupt`]'s.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn IoConnectInterruptEx(parameters: *mut ConnectParameters) -> i32 {
    // SAFETY: the caller's contract.
    let Some(p) = (unsafe { parameters.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.0;
    };
    match p.version {
        CONNECT_FULLY_SPECIFIED => {}
        CONNECT_LINE_BASED
        | CONNECT_MESSAGE_BASED
        | CONNECT_FULLY_SPECIFIED_GROUP
        | CONNECT_MESSAGE_BASED_PASSIVE => {
            p.version = CONNECT_FULLY_SPECIFIED;
            return NtStatus::NOT_SUPPORTED.0;
        }
        _ => return NtStatus::INVALID_PARAMETER.0,
    }
    let f = p.fully_specified;
    if f.interrupt_object.is_null() {
        return NtStatus::INVALID_PARAMETER.0;
    }
    // SAFETY: the caller's contract.
    let r = unsafe {
        connect(
            f.service_routine,
            f.service_context,
            f.spin_lock,
            f.vector,
            f.irql,
            f.synchronize_irql,
            f.interrupt_mode,
            f.share_vector,
            f.processor_enable_mask,
        )
    };
    match r {
        Ok(obj) => {
            // SAFETY: checked non-null; the caller's contract: writable.
            unsafe { f.interrupt_object.write(obj) };
            NtStatus::SUCCESS.0
        }
        Err(s) => s.0,
    }
}

/// `IoDisconnectInterrupt`: disconnects (waiting for a running service routine) and
/// frees the object. A pointer that is not a connected object is ISL-OBJ.
///
/// # Safety
///
/// Nothing uses `obj` afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn IoDisconnectInterrupt(obj: *mut CInterrupt) {
    disconnect(obj);
}

/// `IO_DISCONNECT_INTERRUPT_PARAMETERS`.
#[repr(C)]
pub struct DisconnectParameters {
    /// `Version` (as the connect's).
    pub version: u32,
    /// `ConnectionContext.InterruptObject`.
    pub interrupt_object: *mut CInterrupt,
}

/// `IoDisconnectInterruptEx`: as [`IoDisconnectInterrupt`] for a `CONNECT_FULLY_SPECIFIED`
/// connection. Any other version names nothing this machine connected: ISL-OBJ.
///
/// # Safety
///
/// `parameters` is NULL (ISL-OBJ) or readable; nothing uses the object afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn IoDisconnectInterruptEx(parameters: *mut DisconnectParameters) {
    // SAFETY: the caller's contract.
    let obj = match unsafe { parameters.as_ref() } {
        Some(p) if p.version == CONNECT_FULLY_SPECIFIED => p.interrupt_object,
        _ => core::ptr::null_mut(),
    };
    disconnect(obj);
}

/// `KeSynchronizeExecution`: calls `routine(context)` at the object's SynchronizeIrql
/// holding its spin lock (a passive-level object: at PASSIVE holding its wait lock) and
/// returns what it returned.
///
/// # Safety
///
/// `routine` is sound to call with `context`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeSynchronizeExecution(
    obj: *mut CInterrupt,
    routine: Option<SynchronizeRoutine>,
    context: *mut c_void,
) -> u8 {
    let o = object(obj);
    let Some(routine) = routine else {
        // A NULL routine would be called at SynchronizeIrql: Windows faults there.
        ntspin::hal::bug_check(BugCheck::verifier(
            sub::BAD_INTERRUPT_OBJECT,
            obj as usize,
            0,
            1,
            Rule::ISL_OBJ,
        ));
    };
    // SAFETY: the caller's contract.
    o.raw.synchronize(|| unsafe { routine(context) })
}

/// `KeAcquireInterruptSpinLock`: raises to SynchronizeIrql and takes the object's lock;
/// returns the IRQL to release with.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeAcquireInterruptSpinLock(obj: *mut CInterrupt) -> u8 {
    object(obj).raw.acquire_lock().raw()
}

/// `KeReleaseInterruptSpinLock`.
///
/// # Safety
///
/// This processor holds the object's lock through [`KeAcquireInterruptSpinLock`] (the
/// verifier checks it: SL-NOT-OWNED, ISL-OLDIRQL).
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeReleaseInterruptSpinLock(obj: *mut CInterrupt, old_irql: u8) {
    let o = object(obj);
    let old = Irql::new(old_irql).unwrap_or(Irql::HIGH);
    // SAFETY: the caller's contract, checked by the verifier.
    unsafe { o.raw.release_lock(old) };
}

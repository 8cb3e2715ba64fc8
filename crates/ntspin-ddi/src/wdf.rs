//! KMDF interrupts for C drivers (`include/ntspin/wdf.h`): `WdfInterruptCreate` and the
//! `WdfInterrupt*` routines over `ntspin::wdf`, and the host's framework device
//! (`NtspinWdfDeviceCreate` / `Start` / `Stop`), which plays the PnP manager.
//!
//! Handles are the framework's own: every `WDFINTERRUPT` is checked by `ntspin::wdf` at
//! each call (a NULL, forged, stale or wrong-type handle is WDF-HANDLE, 0x10D). A
//! `WDFDEVICE` that no `NtspinWdfDeviceCreate` returned is WDF-HANDLE too, with P3 = 0
//! (ntspin's own mapping: `RULES.md` names only interrupt handles).
//!
//! Objects live until `NtspinMachineDestroy`, which stops started devices and frees them
//! (KMDF deletes a device's interrupts with the device).

use core::ffi::c_void;
use std::pin::Pin;
use std::sync::Mutex;

use ntspin::bugcheck::code;
use ntspin::wdf::{
    EvtInterruptDpc, EvtInterruptEnable, EvtInterruptIsr, InterruptResource, WdfDevice,
    WdfInterrupt, WdfInterruptConfig, WdfInterruptHandle, violation,
};
use ntspin::{BugCheck, Irql, NtStatus, Rule};

use crate::NtspinMachine;

/// `WDFINTERRUPT` / `WDFDEVICE` / `WDFOBJECT` as C sees them: the handle's raw value.
pub type WdfHandle = usize;

/// `PFN_WDF_INTERRUPT_ISR`.
pub type PfnIsr = unsafe extern "C-unwind" fn(WdfHandle, u32) -> u8;
/// `PFN_WDF_INTERRUPT_DPC` and `PFN_WDF_INTERRUPT_WORKITEM`: `(interrupt, associated
/// object)`, the object being the device.
pub type PfnDpc = unsafe extern "C-unwind" fn(WdfHandle, WdfHandle);
/// `PFN_WDF_INTERRUPT_ENABLE` / `PFN_WDF_INTERRUPT_DISABLE`: `(interrupt, device)`.
pub type PfnEnable = unsafe extern "C-unwind" fn(WdfHandle, WdfHandle) -> i32;
/// `PFN_WDF_INTERRUPT_SYNCHRONIZE`: `(interrupt, context) -> BOOLEAN`.
pub type PfnSynchronize = unsafe extern "C-unwind" fn(WdfHandle, *mut c_void) -> u8;

/// `WDF_INTERRUPT_CONFIG` (x64 layout, KMDF 1.11+).
#[repr(C)]
pub struct WdfInterruptConfigC {
    /// `Size`: `sizeof(WDF_INTERRUPT_CONFIG)`.
    pub size: u32,
    /// `SpinLock` (a `WDFSPINLOCK`; only NULL is supported here).
    pub spin_lock: WdfHandle,
    /// `ShareVector` (`WDF_TRI_STATE`: WdfFalse 0, WdfTrue 1, WdfUseDefault 2).
    pub share_vector: i32,
    /// `FloatingSave`.
    pub floating_save: u8,
    /// `AutomaticSerialization`.
    pub automatic_serialization: u8,
    /// `EvtInterruptIsr`.
    pub evt_isr: Option<PfnIsr>,
    /// `EvtInterruptDpc`.
    pub evt_dpc: Option<PfnDpc>,
    /// `EvtInterruptEnable`.
    pub evt_enable: Option<PfnEnable>,
    /// `EvtInterruptDisable`.
    pub evt_disable: Option<PfnEnable>,
    /// `EvtInterruptWorkItem`.
    pub evt_work_item: Option<PfnDpc>,
    /// `InterruptRaw` (the device's resource is used; ignored).
    pub interrupt_raw: *mut c_void,
    /// `InterruptTranslated` (ignored, as above).
    pub interrupt_translated: *mut c_void,
    /// `WaitLock` (a `WDFWAITLOCK`; only NULL is supported here).
    pub wait_lock: WdfHandle,
    /// `PassiveHandling`.
    pub passive_handling: u8,
    /// `ReportInactiveOnPowerDown` (`WDF_TRI_STATE`; no power management here).
    pub report_inactive_on_power_down: i32,
    /// `CanWakeDevice`.
    pub can_wake_device: u8,
}

const _: () = assert!(core::mem::size_of::<WdfInterruptConfigC>() == 104);

/// One C interrupt: the framework object and the closures its configuration borrows.
struct CWdfInterrupt {
    /// First: dropped (disconnected) before the closures it points to.
    intr: WdfInterrupt<'static>,
    _isr: Box<EvtInterruptIsr<'static>>,
    _dpc: Option<Box<EvtInterruptDpc<'static>>>,
    _enable: Option<Box<EvtInterruptEnable<'static>>>,
    _disable: Option<Box<EvtInterruptEnable<'static>>>,
}

/// A host-made device with one interrupt resource.
struct CDevice {
    /// First: dropped before the interrupts it refers to.
    device: WdfDevice<'static>,
    interrupts: Vec<Pin<Box<CWdfInterrupt>>>,
    resource: InterruptResource,
    machine: *const NtspinMachine,
    handle: WdfHandle,
    started: bool,
}

/// The devices, by handle. Touched by the host and by `WdfInterruptCreate` /
/// `WdfInterruptGetDevice` (never from interrupt context for a device that is being
/// created or destroyed).
struct Devices(Vec<*mut CDevice>);
// SAFETY: the pointers are owned boxes handed between threads only under the mutex.
unsafe impl Send for Devices {}

static DEVICES: Mutex<Devices> = Mutex::new(Devices(Vec::new()));

fn devices() -> std::sync::MutexGuard<'static, Devices> {
    DEVICES.lock().unwrap_or_else(|e| e.into_inner())
}

fn bad_device(handle: WdfHandle) -> ! {
    ntspin::hal::bug_check(BugCheck::new(
        code::WDF_VIOLATION,
        [violation::INVALID_HANDLE, handle, 0, 0],
        Rule::WDF_HANDLE,
    ))
}

/// The device behind a `WDFDEVICE`, or WDF-HANDLE.
fn device_of(handle: WdfHandle) -> *mut CDevice {
    let found = devices()
        .0
        .iter()
        .copied()
        // SAFETY: every pointer in the list is a live box (removed before it is freed).
        .find(|&d| handle != 0 && unsafe { (*d).handle } == handle);
    found.unwrap_or_else(|| bad_device(handle))
}

/// `NtspinWdfDeviceCreate`: a device with one interrupt resource (line `vector` at
/// `irql`; for a passive-level interrupt, the level its line is acknowledged at). NULL
/// (0) for a NULL machine, a vector outside 0..63 or an IRQL that is not a device level.
///
/// # Safety
///
/// `m` came from `NtspinMachineCreate` and outlives the device (it frees it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn NtspinWdfDeviceCreate(
    m: *mut NtspinMachine,
    vector: u32,
    irql: u8,
) -> WdfHandle {
    if m.is_null() || vector >= ntspin_sim::VECTORS {
        return 0;
    }
    let Some(irql) = Irql::new(irql).filter(|&i| i > Irql::DISPATCH) else {
        return 0;
    };
    let dev = Box::new(CDevice {
        device: WdfDevice::new(),
        interrupts: Vec::new(),
        resource: InterruptResource::new(vector, irql),
        machine: m,
        handle: 0,
        started: false,
    });
    let ptr = Box::into_raw(dev);
    // SAFETY: a live box, made just above.
    let dev_ref = unsafe { &*ptr };
    // SAFETY: never moved (pinned until `destroy_devices` frees it).
    let pinned = unsafe { Pin::new_unchecked(&dev_ref.device) };
    let Ok(h) = pinned.handle() else {
        // SAFETY: made just above, not shared.
        drop(unsafe { Box::from_raw(ptr) });
        return 0;
    };
    // SAFETY: as above.
    unsafe { (*ptr).handle = h.as_raw() };
    devices().0.push(ptr);
    h.as_raw()
}

/// Runs `f` on processor 0 of the device's machine, at PASSIVE in a system-thread
/// context; the bug check that stopped it, if any, as its code.
fn on_machine(dev: *mut CDevice, f: impl FnOnce() -> i32 + Send) -> i32 {
    // SAFETY: a live device (callers looked it up or own it).
    let dev = unsafe { &*dev };
    // SAFETY: a device's machine outlives it (NtspinWdfDeviceCreate's contract).
    let m = unsafe { &*dev.machine };
    match m.machine.run_on(0, f) {
        Ok(s) => s,
        // The machine bug-checked: the start or stop did not complete.
        Err(_) => NtStatus::INVALID_DEVICE_STATE.0,
    }
}

#[derive(Clone, Copy)]
struct DevPtr(*mut CDevice);
// SAFETY: the device is used on the processor while the host waits for it.
unsafe impl Send for DevPtr {}

/// `NtspinWdfDeviceStart`: D0 entry, as the PnP manager does it (connect, then
/// EvtInterruptEnable holding the lock), on a processor of the machine. Returns the first
/// failure (nothing stays started then); `STATUS_INVALID_DEVICE_STATE` if already started
/// or if the machine bug-checked meanwhile.
#[unsafe(no_mangle)]
pub extern "C" fn NtspinWdfDeviceStart(device: WdfHandle) -> i32 {
    let d = DevPtr(device_of(device));
    // SAFETY: a live device; the host serializes Start/Stop (their contract).
    if unsafe { (*d.0).started } {
        return NtStatus::INVALID_DEVICE_STATE.0;
    }
    let status = on_machine(d.0, move || {
        let d = d;
        // SAFETY: as above.
        match unsafe { (*d.0).device.start() } {
            Ok(()) => NtStatus::SUCCESS.0,
            Err(s) => s.0,
        }
    });
    if status == 0 {
        // SAFETY: as above.
        unsafe { (*d.0).started = true };
    }
    status
}

/// `NtspinWdfDeviceStop`: D0 exit (EvtInterruptDisable holding the lock, flush the DPC and
/// work item, disconnect), on a processor of the machine.
#[unsafe(no_mangle)]
pub extern "C" fn NtspinWdfDeviceStop(device: WdfHandle) -> i32 {
    let d = DevPtr(device_of(device));
    // SAFETY: as in `NtspinWdfDeviceStart`.
    if !unsafe { (*d.0).started } {
        return NtStatus::INVALID_DEVICE_STATE.0;
    }
    let status = on_machine(d.0, move || {
        let d = d;
        // SAFETY: as above.
        unsafe { (*d.0).device.stop() };
        NtStatus::SUCCESS.0
    });
    // SAFETY: as above.
    unsafe { (*d.0).started = false };
    status
}

/// Stops and frees the devices of machine `m` (from `NtspinMachineDestroy`, before the
/// processors end).
pub(crate) fn destroy_devices(m: *const NtspinMachine) {
    let mine: Vec<*mut CDevice> = {
        let mut all = devices();
        // SAFETY: live boxes.
        let (mine, rest) = all.0.iter().partition(|&&d| unsafe { (*d).machine } == m);
        all.0 = rest;
        mine
    };
    for d in mine {
        // SAFETY: removed from the list above; nobody else frees it.
        let dev = unsafe { Box::from_raw(d) };
        if dev.started {
            let p = DevPtr(d);
            let _ = on_machine(p.0, move || {
                let p = p;
                // SAFETY: still alive (`dev` is dropped below).
                unsafe { (*p.0).device.stop() };
                0
            });
        }
        // Dropping the interrupts disconnects whatever is still connected.
        let r = ntspin_sim::catch_bug_check(move || drop(dev));
        let _ = r;
    }
}

/// `WdfInterruptCreate`, from driver code at PASSIVE on a processor (as from
/// EvtDriverDeviceAdd). The device's interrupt resource gives the line and level.
/// `STATUS_INVALID_PARAMETER` for a NULL configuration or out pointer, a wrong `Size`, or
/// what KMDF refuses (no ISR, a DPC and a work item together); `STATUS_NOT_SUPPORTED` for
/// a caller-supplied `WDFSPINLOCK` or `WDFWAITLOCK` (not modelled in C yet).
///
/// # Safety
///
/// `config` is NULL or a readable `WDF_INTERRUPT_CONFIG`; `interrupt` is NULL or writable;
/// the callbacks are sound to call as KMDF calls them.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn WdfInterruptCreate(
    device: WdfHandle,
    config: *const WdfInterruptConfigC,
    attributes: *mut c_void,
    interrupt: *mut WdfHandle,
) -> i32 {
    let _ = attributes; // WDF_NO_OBJECT_ATTRIBUTES: no context space is modelled
    let dev = device_of(device);
    // SAFETY: the caller's contract.
    let Some(cfg) = (unsafe { config.as_ref() }) else {
        return NtStatus::INVALID_PARAMETER.0;
    };
    if interrupt.is_null() || cfg.size as usize != core::mem::size_of::<WdfInterruptConfigC>() {
        return NtStatus::INVALID_PARAMETER.0;
    }
    if cfg.spin_lock != 0 || cfg.wait_lock != 0 {
        return NtStatus::NOT_SUPPORTED.0;
    }
    let Some(isr_fn) = cfg.evt_isr else {
        return NtStatus::INVALID_PARAMETER.0;
    };
    let dev_handle = device;
    let isr: Box<EvtInterruptIsr<'static>> =
        // SAFETY: the driver's ISR, called as KMDF calls it.
        Box::new(move |h: WdfInterruptHandle, msg: u32| unsafe { isr_fn(h.as_raw(), msg) } != 0);
    let as_dpc = |f: PfnDpc| -> Box<EvtInterruptDpc<'static>> {
        // SAFETY: the driver's callback, called as KMDF calls it.
        Box::new(move |h: WdfInterruptHandle| unsafe { f(h.as_raw(), dev_handle) })
    };
    let as_enable = |f: PfnEnable| -> Box<EvtInterruptEnable<'static>> {
        // SAFETY: as above.
        Box::new(move |h: WdfInterruptHandle| NtStatus(unsafe { f(h.as_raw(), dev_handle) }))
    };
    let dpc = cfg.evt_dpc.or(cfg.evt_work_item).map(as_dpc);
    let enable = cfg.evt_enable.map(as_enable);
    let disable = cfg.evt_disable.map(as_enable);
    // SAFETY (this and the three lifetime extensions below): each closure is boxed in the
    // `CWdfInterrupt` that holds the `WdfInterrupt` borrowing it, whose field order drops
    // the interrupt (disconnecting it) before the closures; the box never moves them.
    let isr_ptr = &*isr as *const EvtInterruptIsr<'static>;
    // SAFETY: see above.
    let isr_ref: &'static EvtInterruptIsr<'static> = unsafe { &*isr_ptr };
    let dpc_ref = dpc
        .as_deref()
        // SAFETY: as above.
        .map(|d| unsafe { &*(d as *const EvtInterruptDpc<'static>) });
    let enable_ref = enable
        .as_deref()
        // SAFETY: as above.
        .map(|d| unsafe { &*(d as *const EvtInterruptEnable<'static>) });
    let disable_ref = disable
        .as_deref()
        // SAFETY: as above.
        .map(|d| unsafe { &*(d as *const EvtInterruptEnable<'static>) });
    let mut wcfg = WdfInterruptConfig::new(isr_ref, None);
    if cfg.evt_work_item.is_some() && cfg.evt_dpc.is_none() {
        wcfg.evt_work_item = dpc_ref;
    } else {
        wcfg.evt_dpc = dpc_ref;
        if cfg.evt_work_item.is_some() {
            // Both given: KMDF refuses; the validation below says so.
            wcfg.evt_work_item = dpc_ref;
        }
    }
    wcfg.evt_enable = enable_ref;
    wcfg.evt_disable = disable_ref;
    wcfg.passive_handling = cfg.passive_handling != 0;
    wcfg.automatic_serialization = cfg.automatic_serialization != 0;
    wcfg.share_vector = cfg.share_vector == 1;
    if let Err(s) = wcfg.validate() {
        return s.0;
    }
    // SAFETY: a live device (looked up above).
    let resource = unsafe { (*dev).resource };
    let boxed = Box::pin(CWdfInterrupt {
        intr: WdfInterrupt::new(wcfg, resource),
        _isr: isr,
        _dpc: dpc,
        _enable: enable,
        _disable: disable,
    });
    // SAFETY: the pinned box lives in the device until the device is freed, after the
    // device (its first field) that refers to it.
    let intr_static: &'static WdfInterrupt<'static> =
        unsafe { &*(&boxed.intr as *const WdfInterrupt<'static>) };
    // SAFETY: pinned in its box, which never moves it.
    let intr_ref = unsafe { Pin::new_unchecked(intr_static) };
    // SAFETY: a live device (looked up above). Only its `device` and `interrupts` fields
    // are borrowed mutably, by this call only (driver code at PASSIVE before the device
    // starts); other threads read only its `handle` and `machine`.
    let device_ptr = unsafe { &raw mut (*dev).device };
    // SAFETY: as above.
    let device_mut = unsafe { &mut *device_ptr };
    // SAFETY: the device box never moves.
    let device_pin = unsafe { Pin::new_unchecked(device_mut) };
    match device_pin.create_interrupt(intr_ref) {
        Ok(h) => {
            // SAFETY: as for `device_ptr` above.
            unsafe { (*dev).interrupts.push(boxed) };
            // SAFETY: checked non-null; the caller's contract: writable.
            unsafe { interrupt.write(h.as_raw()) };
            NtStatus::SUCCESS.0
        }
        Err(s) => s.0,
    }
}

fn handle(h: WdfHandle) -> WdfInterruptHandle {
    WdfInterruptHandle::from_raw(h)
}

/// `WdfInterruptAcquireLock`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptAcquireLock(interrupt: WdfHandle) {
    handle(interrupt).acquire_lock();
}

/// `WdfInterruptReleaseLock`.
///
/// # Safety
///
/// The caller holds the lock through [`WdfInterruptAcquireLock`] (checked: WDF-RELEASE).
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn WdfInterruptReleaseLock(interrupt: WdfHandle) {
    // SAFETY: the caller's contract, checked by the framework layer.
    unsafe { handle(interrupt).release_lock() };
}

/// `WdfInterruptTryToAcquireLock` (passive-level interrupts): TRUE if acquired.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptTryToAcquireLock(interrupt: WdfHandle) -> u8 {
    u8::from(handle(interrupt).try_to_acquire_lock())
}

/// `WdfInterruptSynchronize`: `callback(interrupt, context)` holding the lock; returns its
/// BOOLEAN. A NULL callback is WDF-NULL.
///
/// # Safety
///
/// `callback` is sound to call with `context`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn WdfInterruptSynchronize(
    interrupt: WdfHandle,
    callback: Option<PfnSynchronize>,
    context: *mut c_void,
) -> u8 {
    let h = handle(interrupt);
    let Some(cb) = callback else {
        // WDF-NULL, with the caller's address as KMDF names it (the callback slot here).
        let _ = h.synchronize_raw(None, 0, 0);
        return 0;
    };
    // SAFETY: the caller's contract.
    u8::from(h.synchronize(|h| unsafe { cb(h.as_raw(), context) } != 0))
}

/// `WdfInterruptQueueDpcForIsr`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptQueueDpcForIsr(interrupt: WdfHandle) -> u8 {
    u8::from(handle(interrupt).queue_dpc_for_isr())
}

/// `WdfInterruptQueueWorkItemForIsr`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptQueueWorkItemForIsr(interrupt: WdfHandle) -> u8 {
    u8::from(handle(interrupt).queue_work_item_for_isr())
}

/// `WdfInterruptEnable`: the status of EvtInterruptEnable.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptEnable(interrupt: WdfHandle) -> i32 {
    match handle(interrupt).enable() {
        Ok(()) => NtStatus::SUCCESS.0,
        Err(s) => s.0,
    }
}

/// `WdfInterruptDisable`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptDisable(interrupt: WdfHandle) {
    handle(interrupt).disable();
}

/// `WdfInterruptGetDevice`: the device the interrupt was created on (WDF-HANDLE for a
/// handle that is not a live interrupt).
#[unsafe(no_mangle)]
pub extern "C-unwind" fn WdfInterruptGetDevice(interrupt: WdfHandle) -> WdfHandle {
    handle(interrupt).device().as_raw()
}

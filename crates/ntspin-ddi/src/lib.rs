//! # ntspin-ddi — the C ABI
//!
//! The kernel's spin-lock, IRQL, DPC and interrupt routines with the WDK's names,
//! signatures and x64 layouts (`include/ntspin/wdm.h`), KMDF's interrupt routines
//! (`include/ntspin/wdf.h`), and a host API to drive the simulated machine from C
//! (`include/ntspin/host.h`). Built as a static library (`libntspin_ddi.a`), a shared
//! library (`libntspin_ddi.so`) and an rlib.
//!
//! Every routine is `extern "C-unwind"`: a bug check inside one unwinds through the C
//! driver's frames (compile them with `-fexceptions`) back to `NtspinRunOnProcessor`, which
//! returns the bug check's code and parameters; the C caller's code after the failing call
//! never runs, and the process stays healthy. A NULL lock pointer is a bug check (SL-INIT,
//! 0xC4/0x1002 with lock 0), never a dereference.
//!
//! Covered: IRQL, the executive and in-stack queued spin locks, the ExInterlocked list
//! routines, DPCs, interrupt objects (`IoConnectInterrupt(Ex)`, `IoDisconnectInterrupt(Ex)`,
//! `KeSynchronizeExecution`, `KeAcquire/ReleaseInterruptSpinLock`), `PAGED_CODE()`, and the
//! host's `NtspinAssertInterrupt` / `NtspinDrain`; `KeRemoveQueueDpc`; KMDF interrupts (`include/ntspin/wdf.h`:
//! `WdfInterruptCreate` and the `WdfInterrupt*` routines, with the host's
//! `NtspinWdfDeviceCreate` / `Start` / `Stop`); the C-only rules SL-INIT (locks
//! `KeInitializeSpinLock` saw, per machine) and SL-OLDIRQL-SHARED. Not yet:
//! caller-supplied `WDFSPINLOCK` / `WDFWAITLOCK` objects.
//!
//! ```
//! use ntspin_ddi::*;
//! let m = NtspinMachineCreate(2, NTSPIN_VERIFIER_STANDARD);
//! assert!(!m.is_null());
//! unsafe extern "C-unwind" fn routine(ctx: *mut core::ffi::c_void) {
//!     let lock = ctx.cast::<usize>();
//!     unsafe {
//!         KeInitializeSpinLock(lock);
//!         let mut old = 0u8;
//!         NtspinAcquireSpinLock(lock, &mut old);
//!         assert_eq!(KeGetCurrentIrql(), 2);
//!         KeReleaseSpinLock(lock, old);
//!     }
//! }
//! let mut lock = 0usize;
//! let code = unsafe {
//!     NtspinRunOnProcessor(m, 0, Some(routine), (&mut lock as *mut usize).cast(), core::ptr::null_mut())
//! };
//! assert_eq!(code, 0);
//! unsafe { NtspinMachineDestroy(m) };
//! ```

#![allow(non_snake_case)] // the WDK's names

use core::ffi::c_void;

mod interrupt;
mod wdf;
pub use interrupt::*;
pub use wdf::*;

use ntspin::bugcheck::verifier as sub;
use ntspin::{BugCheck, Irql, LockQueueHandle, RawSpinLock, Rule};
use ntspin_sim::{Machine, Verifier};

/// `NTSPIN_VERIFIER_STANDARD`: every rule, stop at the first bug check.
pub const NTSPIN_VERIFIER_STANDARD: u32 = 0;
/// `NTSPIN_VERIFIER_OFF`: like a retail kernel.
pub const NTSPIN_VERIFIER_OFF: u32 = 1;

/// The lock behind a C `PKSPIN_LOCK`; NULL is SL-INIT (lock 0), never dereferenced.
///
/// # Safety
///
/// A non-null `lock` points to a live, aligned `KSPIN_LOCK` only accessed through ntspin.
unsafe fn lock_of<'a>(lock: *mut usize) -> &'a RawSpinLock {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_unchecked(lock) };
    if !ntspin_sim::lock_initialized(lock as usize) {
        // Never passed to KeInitializeSpinLock on this machine (zeroed memory included).
        ntspin::hal::bug_check(BugCheck::verifier(
            sub::UNINITIALIZED_LOCK,
            lock as usize,
            0,
            0,
            Rule::SL_INIT,
        ));
    }
    l
}

/// [`lock_of`] without the initialization check (for `KeInitializeSpinLock` itself).
///
/// # Safety
///
/// As [`lock_of`].
unsafe fn lock_unchecked<'a>(lock: *mut usize) -> &'a RawSpinLock {
    if lock.is_null() {
        ntspin::hal::bug_check(BugCheck::verifier(
            sub::UNINITIALIZED_LOCK,
            0,
            0,
            0,
            Rule::SL_INIT,
        ));
    }
    // SAFETY: the caller's contract.
    unsafe { RawSpinLock::from_ptr(lock) }
}

/// A NULL queue handle: reported as QSL-HANDLE (0xC4/0x1009) with handle 0.
fn null_handle(lock: usize) -> ! {
    ntspin::hal::bug_check(BugCheck::verifier(
        sub::QUEUE_HANDLE_REUSED,
        lock,
        0,
        0,
        Rule::QSL_HANDLE,
    ))
}

// ---- IRQL ----

/// `KeGetCurrentProcessorNumber`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeGetCurrentProcessorNumber() -> u32 {
    ntspin::hal::current_processor()
}

/// `KeGetCurrentIrql`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeGetCurrentIrql() -> u8 {
    ntspin::current_irql().raw()
}

/// `KeRaiseIrql`'s function (the header's macro stores the result in `*OldIrql`).
#[unsafe(no_mangle)]
pub extern "C-unwind" fn NtspinRaiseIrql(new: u8) -> u8 {
    ntspin::raise_irql(Irql::from_raw(new)).raw()
}

/// `KeLowerIrql`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeLowerIrql(new: u8) {
    ntspin::lower_irql(Irql::from_raw(new))
}

/// `KeRaiseIrqlToDpcLevel`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeRaiseIrqlToDpcLevel() -> u8 {
    ntspin::raise_irql_to_dpc_level().raw()
}

// ---- executive spin locks ----

/// `KeInitializeSpinLock`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or points to a writable `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeInitializeSpinLock(lock: *mut usize) {
    // SAFETY: the caller's contract (a NULL lock bug-checks inside).
    let l = unsafe { lock_unchecked(lock) };
    ntspin_sim::note_lock_initialized(lock as usize);
    // SAFETY: `l` views a live, aligned `KSPIN_LOCK` (checked non-null just above).
    let word = unsafe { std::sync::atomic::AtomicUsize::from_ptr(l.addr() as *mut usize) };
    word.store(0, std::sync::atomic::Ordering::Release);
}

/// `KeAcquireSpinLock` (the header's macro calls this with the `OldIrql` address).
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`; `old_irql` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn NtspinAcquireSpinLock(lock: *mut usize, old_irql: *mut u8) {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SL-OLDIRQL-SHARED is the verifier's: it knows what this processor holds.
    ntspin::hal::report_oldirql_slot(lock as usize, old_irql as usize);
    let old = l.acquire();
    // SAFETY: the caller's contract: writable.
    unsafe { old_irql.write(old.raw()) };
}

/// `KeAcquireSpinLockRaiseToDpc`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeAcquireSpinLockRaiseToDpc(lock: *mut usize) -> u8 {
    // SAFETY: the caller's contract.
    unsafe { lock_of(lock) }.acquire().raw()
}

/// `KeReleaseSpinLock`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK` this processor holds; `new_irql`
/// is what its acquire returned (the verifier checks both).
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeReleaseSpinLock(lock: *mut usize, new_irql: u8) {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract: this processor holds it.
    unsafe { l.release(Irql::from_raw(new_irql)) }
}

/// `KeAcquireSpinLockAtDpcLevel`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeAcquireSpinLockAtDpcLevel(lock: *mut usize) {
    // SAFETY: the caller's contract.
    unsafe { lock_of(lock) }.acquire_at_dpc_level()
}

/// `KeReleaseSpinLockFromDpcLevel`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK` this processor holds.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeReleaseSpinLockFromDpcLevel(lock: *mut usize) {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract: this processor holds it.
    unsafe { l.release_from_dpc_level() }
}

/// `KeTryToAcquireSpinLockAtDpcLevel`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeTryToAcquireSpinLockAtDpcLevel(lock: *mut usize) -> u8 {
    // SAFETY: the caller's contract.
    u8::from(unsafe { lock_of(lock) }.try_acquire_at_dpc_level())
}

/// `KeTestSpinLock`: TRUE if the lock is free now.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeTestSpinLock(lock: *mut usize) -> u8 {
    // SAFETY: the caller's contract.
    u8::from(unsafe { lock_of(lock) }.test())
}

// ---- in-stack queued spin locks ----

/// `KeAcquireInStackQueuedSpinLock`.
///
/// # Safety
///
/// `lock` is NULL (a bug check) or a live `KSPIN_LOCK`; `handle` is NULL (a bug check) or
/// a `KLOCK_QUEUE_HANDLE` that stays put until released.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeAcquireInStackQueuedSpinLock(
    lock: *mut usize,
    handle: *mut LockQueueHandle,
) {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    if handle.is_null() {
        null_handle(l.addr());
    }
    // SAFETY: the caller's contract.
    unsafe { l.acquire_in_stack_queued(handle) }
}

/// `KeReleaseInStackQueuedSpinLock`.
///
/// # Safety
///
/// `handle` is NULL (a bug check) or the handle of an acquire on this processor.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeReleaseInStackQueuedSpinLock(handle: *mut LockQueueHandle) {
    if handle.is_null() {
        null_handle(0);
    }
    // SAFETY: the caller's contract.
    unsafe { ntspin::queued::release_in_stack_queued(handle) }
}

/// `KeAcquireInStackQueuedSpinLockAtDpcLevel`.
///
/// # Safety
///
/// As [`KeAcquireInStackQueuedSpinLock`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeAcquireInStackQueuedSpinLockAtDpcLevel(
    lock: *mut usize,
    handle: *mut LockQueueHandle,
) {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    if handle.is_null() {
        null_handle(l.addr());
    }
    // SAFETY: the caller's contract.
    unsafe { l.acquire_in_stack_queued_at_dpc_level(handle) }
}

/// `KeReleaseInStackQueuedSpinLockFromDpcLevel`.
///
/// # Safety
///
/// As [`KeReleaseInStackQueuedSpinLock`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeReleaseInStackQueuedSpinLockFromDpcLevel(
    handle: *mut LockQueueHandle,
) {
    if handle.is_null() {
        null_handle(0);
    }
    // SAFETY: the caller's contract.
    unsafe { ntspin::queued::release_in_stack_queued_from_dpc_level(handle) }
}

// ---- ExInterlocked ----

use ntspin::interlocked::{self as exi, ListEntry, SingleListEntry};

/// `ExInterlockedInsertHeadList`: the old first entry, NULL if the list was empty.
///
/// # Safety
///
/// As the WDK's: valid list, entry not on a list, lock NULL (a bug check) or live.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedInsertHeadList(
    head: *mut ListEntry,
    entry: *mut ListEntry,
    lock: *mut usize,
) -> *mut ListEntry {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_insert_head_list(head, entry, l) }
}

/// `ExInterlockedInsertTailList`: the old last entry, NULL if the list was empty.
///
/// # Safety
///
/// As [`ExInterlockedInsertHeadList`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedInsertTailList(
    head: *mut ListEntry,
    entry: *mut ListEntry,
    lock: *mut usize,
) -> *mut ListEntry {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_insert_tail_list(head, entry, l) }
}

/// `ExInterlockedRemoveHeadList`: NULL on an empty list (EXI-EMPTY).
///
/// # Safety
///
/// As [`ExInterlockedInsertHeadList`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedRemoveHeadList(
    head: *mut ListEntry,
    lock: *mut usize,
) -> *mut ListEntry {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_remove_head_list(head, l) }
}

/// `ExInterlockedPushEntryList`: the old first entry.
///
/// # Safety
///
/// As [`ExInterlockedInsertHeadList`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedPushEntryList(
    head: *mut SingleListEntry,
    entry: *mut SingleListEntry,
    lock: *mut usize,
) -> *mut SingleListEntry {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_push_entry_list(head, entry, l) }
}

/// `ExInterlockedPopEntryList`: NULL on an empty list.
///
/// # Safety
///
/// As [`ExInterlockedInsertHeadList`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedPopEntryList(
    head: *mut SingleListEntry,
    lock: *mut usize,
) -> *mut SingleListEntry {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_pop_entry_list(head, l) }
}

/// `ExInterlockedAddUlong`: the value before the addition.
///
/// # Safety
///
/// `addend` is a live `ULONG`; the lock NULL (a bug check) or live.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn ExInterlockedAddUlong(
    addend: *mut u32,
    increment: u32,
    lock: *mut usize,
) -> u32 {
    // SAFETY: the caller's contract.
    let l = unsafe { lock_of(lock) };
    // SAFETY: the caller's contract.
    unsafe { exi::ex_interlocked_add_ulong(addend, increment, l) }
}

// ---- DPCs ----

use ntspin::dpc::KDpc;

/// `PKDEFERRED_ROUTINE`.
pub type DeferredRoutine =
    unsafe extern "C-unwind" fn(*mut CDpc, *mut c_void, *mut c_void, *mut c_void);

/// What lives in a C `KDPC`'s 64 bytes: the machine's header, the C routine and context.
#[repr(C)]
pub struct CDpc {
    raw: KDpc,
    routine: Option<DeferredRoutine>,
    context: *mut c_void,
}

const _: () = assert!(core::mem::size_of::<CDpc>() <= 64, "a KDPC is 64 bytes");

/// Calls the C routine of the `CDpc` whose header `this` is.
///
/// # Safety
///
/// `this` is the header of a live `CDpc` initialized by [`KeInitializeDpc`].
unsafe fn run_c_dpc(this: *const KDpc, a1: usize, a2: usize) {
    let dpc = this.cast::<CDpc>().cast_mut();
    // SAFETY: the caller's contract; `raw` is at offset 0 of the `repr(C)` `CDpc`.
    let d = unsafe { &*dpc };
    let (routine, context) = (d.routine, d.context);
    if let Some(r) = routine {
        // SAFETY: the C driver's routine, called as the WDK calls it.
        unsafe { r(dpc, context, a1 as *mut c_void, a2 as *mut c_void) }
    }
}

/// The `CDpc` in a `KDPC`; NULL is a bug check (the DPC object is the "lock" named).
fn dpc_of<'a>(dpc: *mut CDpc) -> &'a CDpc {
    if dpc.is_null() {
        ntspin::hal::bug_check(BugCheck::verifier(
            sub::UNINITIALIZED_LOCK,
            0,
            0,
            0,
            Rule::SL_INIT,
        ));
    }
    // SAFETY: non-null, and the C contract: an initialized `KDPC` that stays put.
    unsafe { &*dpc }
}

/// `KeInitializeDpc`.
///
/// # Safety
///
/// `dpc` is NULL (a bug check) or writable storage of a `KDPC` that stays put (and is not
/// freed) while queued or running.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeInitializeDpc(
    dpc: *mut CDpc,
    routine: Option<DeferredRoutine>,
    context: *mut c_void,
) {
    let _ = dpc_of(dpc); // NULL check
    let addr = routine.map_or(0, |r| r as usize);
    // SAFETY: `run_c_dpc` is called only with this header while the C storage is alive
    // (the caller's contract).
    let raw = unsafe { KDpc::new(run_c_dpc, addr) };
    // SAFETY: the caller's contract: writable `KDPC` storage, not queued now.
    unsafe {
        dpc.write(CDpc {
            raw,
            routine,
            context,
        })
    };
}

/// `KeInsertQueueDpc`: FALSE if it is already queued (arguments kept).
///
/// # Safety
///
/// `dpc` is NULL (a bug check) or initialized by [`KeInitializeDpc`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeInsertQueueDpc(
    dpc: *mut CDpc,
    a1: *mut c_void,
    a2: *mut c_void,
) -> u8 {
    let d = dpc_of(dpc);
    // SAFETY: the C contract: the storage stays put while queued.
    let pinned = unsafe { std::pin::Pin::new_unchecked(&d.raw) };
    u8::from(pinned.insert(a1 as usize, a2 as usize))
}

/// `KeRemoveQueueDpc`: TRUE if the DPC was queued (it will not run for that insertion).
///
/// # Safety
///
/// As [`KeInsertQueueDpc`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeRemoveQueueDpc(dpc: *mut CDpc) -> u8 {
    u8::from(dpc_of(dpc).raw.remove())
}

/// `KeSetTargetProcessorDpc`.
///
/// # Safety
///
/// As [`KeInsertQueueDpc`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn KeSetTargetProcessorDpc(dpc: *mut CDpc, number: i8) {
    dpc_of(dpc).raw.set_target_processor(number as u8 as u32);
}

/// `KeFlushQueuedDpcs`.
#[unsafe(no_mangle)]
pub extern "C-unwind" fn KeFlushQueuedDpcs() {
    ntspin::dpc::flush_queued_dpcs()
}

// ---- PAGED_CODE ----

/// What `PAGED_CODE()` calls: above APC_LEVEL it is PAGED-CODE, 0xD1 (site, cur, 8, site),
/// with `site` the address of the calling function's name (`__func__`).
///
/// # Safety
///
/// `function` is NULL or a NUL-terminated string (only its address is used).
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn NtspinPagedCode(function: *const core::ffi::c_char) {
    ntspin::paged_code_site(function as usize);
}

// ---- the host API ----

/// `NTSPIN_MACHINE`: a machine made by [`NtspinMachineCreate`].
#[derive(Debug)]
pub struct NtspinMachine {
    machine: Machine,
}

/// `NtspinMachineCreate`: NULL for a processor count outside 1..=4096 or unknown flags.
#[unsafe(no_mangle)]
pub extern "C" fn NtspinMachineCreate(processors: u32, flags: u32) -> *mut NtspinMachine {
    let verifier = match flags {
        NTSPIN_VERIFIER_STANDARD => Verifier::Standard,
        NTSPIN_VERIFIER_OFF => Verifier::Off,
        _ => return std::ptr::null_mut(),
    };
    if !(1..=4096).contains(&processors) {
        return std::ptr::null_mut();
    }
    let machine = Machine::builder()
        .processors(processors as usize)
        .verifier(verifier)
        .build();
    Box::into_raw(Box::new(NtspinMachine { machine }))
}

/// `NtspinMachineDestroy`.
///
/// # Safety
///
/// `m` came from [`NtspinMachineCreate`] and is not used again (NULL does nothing).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn NtspinMachineDestroy(m: *mut NtspinMachine) {
    if m.is_null() {
        return;
    }
    // Framework devices still started: stopped (on the machine) and freed first.
    wdf::destroy_devices(m);
    // SAFETY: the caller's contract: made by `Box::into_raw`, destroyed once.
    let m = unsafe { Box::from_raw(m) };
    // Interrupts still connected: disconnected (and freed) first, then the processors end.
    for obj in interrupt::live_on(&m.machine) {
        let r = ntspin_sim::catch_bug_check(|| interrupt::disconnect(obj as *mut CInterrupt));
        let _ = r; // a bug check here would be the machine's own doing; nothing to report to
    }
    drop(m);
}

/// `NtspinAssertInterrupt`: one request on line `vector`, from any thread, delivered
/// asynchronously; never lost. A vector outside the machine's lines is ignored.
///
/// # Safety
///
/// `m` came from [`NtspinMachineCreate`] and is not destroyed meanwhile (NULL is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn NtspinAssertInterrupt(m: *mut NtspinMachine, vector: u32) {
    // SAFETY: the caller's contract.
    if let Some(m) = unsafe { m.as_ref() }
        && vector < ntspin_sim::VECTORS
    {
        m.machine.assert_interrupt(vector);
    }
}

/// `NtspinDrain`: returns when every asserted interrupt, queued DPC and passive ISR has
/// been handled (or the machine bug-checked). Gives up after 60 s — a processor that
/// keeps its IRQL raised keeps what it was asked to do pending — and says so on stderr.
///
/// # Safety
///
/// As [`NtspinAssertInterrupt`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn NtspinDrain(m: *mut NtspinMachine) {
    // SAFETY: the caller's contract.
    if let Some(m) = unsafe { m.as_ref() }
        && !m.machine.drain(std::time::Duration::from_secs(60))
    {
        eprintln!(
            "ntspin: NtspinDrain gave up after 60 s; still pending:\n{}",
            m.machine.delivery_state()
        );
    }
}

/// A C context pointer carried to a processor thread.
#[derive(Clone, Copy)]
struct Context(*mut c_void);
// SAFETY: the C caller hands the context to its routine on another thread; keeping it
// valid and its use thread-safe is the routine's contract, as with a kernel routine's.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

/// Stores a bug check's parameters and returns its code (0 for none).
fn outcome<T>(r: Result<T, ntspin_sim::BugCheckReport>, params: *mut usize) -> u32 {
    match r {
        Ok(_) => 0,
        Err(report) => {
            if !params.is_null() {
                // SAFETY: the caller's contract: room for four ULONG_PTRs at `params`.
                let out = unsafe { std::slice::from_raw_parts_mut(params, 4) };
                out.copy_from_slice(&report.bug.params);
            }
            report.bug.code
        }
    }
}

/// `NtspinRunOnProcessor`.
///
/// # Safety
///
/// `m` came from [`NtspinMachineCreate`]; `routine` is sound to call with `context` on
/// another thread; `params` is NULL or has room for four values. Called from a thread that
/// is not a processor of `m`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn NtspinRunOnProcessor(
    m: *mut NtspinMachine,
    processor: u32,
    routine: Option<unsafe extern "C-unwind" fn(*mut c_void)>,
    context: *mut c_void,
    params: *mut usize,
) -> u32 {
    // SAFETY: the caller's contract.
    let Some(m) = (unsafe { m.as_ref() }) else {
        return u32::MAX;
    };
    let Some(routine) = routine else {
        return u32::MAX;
    };
    if processor as usize >= m.machine.processors() {
        return u32::MAX;
    }
    let ctx = Context(context);
    let r = m.machine.run_on(processor as usize, move || {
        let ctx = ctx;
        // SAFETY: the caller's contract.
        unsafe { routine(ctx.0) }
    });
    outcome(r, params)
}

/// `NtspinRunOnAllProcessors`.
///
/// # Safety
///
/// As [`NtspinRunOnProcessor`], with `routine(processor, context)`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn NtspinRunOnAllProcessors(
    m: *mut NtspinMachine,
    routine: Option<unsafe extern "C-unwind" fn(u32, *mut c_void)>,
    context: *mut c_void,
    params: *mut usize,
) -> u32 {
    // SAFETY: the caller's contract.
    let Some(m) = (unsafe { m.as_ref() }) else {
        return u32::MAX;
    };
    let Some(routine) = routine else {
        return u32::MAX;
    };
    let ctx = Context(context);
    let results = m.machine.run_each(move |cpu| {
        let ctx = ctx;
        // SAFETY: the caller's contract.
        unsafe { routine(cpu as u32, ctx.0) }
    });
    let first = results.into_iter().find(Result::is_err).unwrap_or(Ok(()));
    outcome(first, params)
}

/// Keeps the handle type's layout pinned to the WDK's (24 bytes, `OldIrql` at 16).
const _: () = assert!(core::mem::size_of::<LockQueueHandle>() == 24);

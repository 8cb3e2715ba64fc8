//! A `#![no_std]` program using ntspin: one processor, IRQL in its `Prcb`, a HAL that
//! halts on a bug check. Proves the core builds and links without `std`.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};

use ntspin::hal::{LockEvent, Prcb, SpinWait};
use ntspin::interrupt::KInterrupt;
use ntspin::{BugCheck, Irql, NtStatus, SpinLock};

static PRCB: Prcb = Prcb::new(1);

struct BareHal;

impl ntspin::Hal for BareHal {
    fn current_prcb() -> &'static Prcb {
        &PRCB
    }
    fn current_irql() -> Irql {
        PRCB.irql()
    }
    fn raise_irql(new: Irql) -> Irql {
        let old = PRCB.irql();
        PRCB.set_irql(new);
        old
    }
    fn lower_irql(new: Irql) {
        PRCB.set_irql(new);
        if new < Irql::DISPATCH && PRCB.dpcs_pending() {
            PRCB.set_irql(Irql::DISPATCH);
            ntspin::dpc::drain(&PRCB, |_dpc, run| run());
            PRCB.set_irql(new);
        }
    }
    fn current_processor() -> u32 {
        0
    }
    fn spin_wait(_spins: u32, _wait: SpinWait) {}
    fn lock_event(_event: &LockEvent) {}
    fn bug_check(_bug: BugCheck) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
    fn prcb_of(processor: u32) -> Option<&'static Prcb> {
        (processor == 0).then_some(&PRCB)
    }
    fn request_dpc(_target: &'static Prcb) {
        // One processor: the queue drains at the next lower below DISPATCH.
    }
    fn disable_interrupts() -> bool {
        true // no interrupt controller on this proof target
    }
    fn restore_interrupts(_enabled: bool) {}
    unsafe fn connect_interrupt(_obj: core::ptr::NonNull<KInterrupt>) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }
    fn disconnect_interrupt(_obj: core::ptr::NonNull<KInterrupt>) {}
    fn wait_on(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> bool {
        // No scheduler: poll, counting a spin as a nanosecond.
        let mut left = timeout_ns.unwrap_or(u64::MAX);
        while word.load(Ordering::Acquire) == expected {
            if left == 0 {
                return false;
            }
            left -= 1;
            core::hint::spin_loop();
        }
        true
    }
    fn wake(_word: &AtomicU32, _count: u32) {}
    unsafe fn queue_work_item(item: core::ptr::NonNull<ntspin::workitem::KWorkItem>) {
        // No threads on this proof target: run it at once (it is documented as allowed
        // for a HAL without threads only at PASSIVE; this target never leaves PASSIVE
        // except inside lock routines, which queue nothing).
        // SAFETY: the caller's contract: queued by `KWorkItem::queue`, valid until run.
        unsafe { ntspin::workitem::KWorkItem::run(item) }
    }
}

ntspin::set_hal!(BareHal);

static COUNTER: SpinLock<u64> = SpinLock::new(0);

/// Increments a counter under an executive spin lock; returns the new value.
#[unsafe(no_mangle)]
pub extern "C" fn ntspin_no_std_bump() -> u64 {
    let mut n = COUNTER.lock();
    *n += 1;
    *n
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

//! A `#![no_std]` program using ntspin: one processor, IRQL in its `Prcb`, a HAL that
//! halts on a bug check. Proves the core builds and links without `std`.
#![no_std]

use ntspin::hal::{LockEvent, Prcb, SpinWait};
use ntspin::{BugCheck, Irql, SpinLock};

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

//! The concurrency facade: atomics and the spin hint, from `core` normally and from `loom`
//! under `cfg(loom)`, so every lock protocol in this crate can be model-checked unchanged.
//!
//! Every spin loop in the crate calls [`spin_hint`]; under loom that is a yield, which is
//! what lets the model checker schedule the thread that will release.

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// One iteration's pause in a spin loop (`YieldProcessor`); a scheduling point under loom.
///
/// ```
/// ntspin::sync::spin_hint();
/// ```
#[inline(always)]
pub fn spin_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

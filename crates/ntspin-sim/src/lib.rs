//! # ntspin-sim — the user-mode machine
//!
//! Virtual processors with a real IRQL, the hosted HAL for the `ntspin` core, and the
//! verifier that turns every rule violation of `RULES.md` into the bug check Windows
//! would raise, with its code, parameters, rule id, processor, IRQL and backtrace.
//!
//! Linking this crate registers its HAL for the whole program (`use ntspin_sim as _;` is
//! enough if nothing else names it). Threads that are not a [`Machine`]'s processors use
//! the default machine, so a plain `#[test]` can use the locks directly.
//!
//! ```
//! use ntspin::{SpinLock, Rule};
//! use ntspin_sim::{Machine, Verifier};
//!
//! let m = Machine::builder().processors(2).verifier(Verifier::Standard).build();
//! let lock = SpinLock::new(0);
//! // A correct run returns the routine's value...
//! assert_eq!(m.run_on(0, || { *lock.lock() += 1; 1 }).unwrap(), 1);
//! // ...a broken one the bug check, with the rule that was broken.
//! let err = m.run_on(1, || { let _g = lock.lock(); let _again = lock.lock(); }).unwrap_err();
//! assert_eq!(err.bug.rule, Rule::SL_RECURSE);
//! assert_eq!(err.bug.params, [lock.raw().addr(), 0, 0, 0]);
//! ```

#![warn(missing_docs)]
// Under `cfg(loom)` (the core's model checks, which build this crate as a dev-dependency)
// the core's atomics are loom's and cannot live in the machine's statics; the machine is
// not part of those models, so it compiles to nothing there.
#![cfg(not(loom))]

mod alloc;
mod clocks;
pub mod device;
mod hal;
mod interrupts;
mod machine;
mod order;
mod processor;
mod report;
pub mod rules_table;
mod stop;
mod verifier;
mod watchdog;

pub use alloc::CheckingAllocator;
pub use clocks::{lock_initialized, note_lock_initialized};
pub use hal::SimHal;
pub use interrupts::VECTORS;
pub use machine::{Delivery, Injection, InterruptLine, Machine, MachineBuilder, Verifier};
pub use order::{LockOrder, LockOrderStats};
pub use report::{BugCheckReport, HeldLock, LockSite, OrderEdge, ReportDetail, Waiter};
pub use stop::catch_bug_check;
pub use watchdog::{Watchdog, WatchdogStats};

/// The README's Rust examples, run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

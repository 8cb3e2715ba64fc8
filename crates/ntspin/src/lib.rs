//! # ntspin — the Windows NT spin-lock and interrupt-synchronization subsystem
//!
//! The `no_std` core: IRQL ([`Irql`]), the hardware-abstraction layer ([`Hal`],
//! [`set_hal!`]), bug checks ([`BugCheck`], [`Rule`]), executive spin locks
//! ([`RawSpinLock`], [`SpinLock`]) and in-stack queued spin locks ([`QueuedSpinLock`],
//! [`LockQueueHandle`]) with the real NT lock-word protocols.
//!
//! The locks run on whatever HAL the program registers. For user-mode testing, link the
//! machine in `ntspin-sim`, which registers itself:
//!
//! ```
//! use ntspin_sim as _; // the user-mode machine is this program's HAL
//! use ntspin::{SpinLock, Irql, current_irql};
//!
//! let total = SpinLock::new(0u32);
//! *total.lock() += 2;
//! assert_eq!(current_irql(), Irql::PASSIVE);
//! assert_eq!(*total.lock(), 2);
//! ```
//!
//! Specified by `KeAcquireSpinLock`, `Initializing Spin Locks` and the in-stack queued
//! spin lock DDI pages; the verifier rules are those of `RULES.md`.

#![no_std]
#![warn(missing_docs)]

pub mod bugcheck;
pub mod dpc;
pub mod event;
pub mod hal;
pub mod interlocked;
pub mod interrupt;
mod irql;
pub mod queued;
mod queued_lock;
mod raw;
mod spin_lock;
mod stack;
mod status;
pub mod sync;
#[cfg(not(loom))]
pub mod wdf;
pub mod workitem;

pub use bugcheck::{BugCheck, Rule};
pub use hal::Hal;
pub use irql::{
    DpcLevel, Irql, IrqlGuard, current_irql, lower_irql, raise_irql, raise_irql_to_dpc_level,
};
#[doc(hidden)]
pub use irql::{paged_code_at, paged_code_site};
pub use queued::{
    KSpinLockQueue, LockQueueHandle, release_in_stack_queued,
    release_in_stack_queued_from_dpc_level,
};
pub use queued_lock::{QueuedGuard, QueuedSpinLock};
pub use raw::RawSpinLock;
pub use spin_lock::{SpinLock, SpinLockGuard};
pub use status::NtStatus;

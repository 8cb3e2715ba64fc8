//! SL-INIT for C callers: which `KSPIN_LOCK` addresses `KeInitializeSpinLock` has seen, per
//! machine (`RULES.md`: verifier state belongs to a machine, and `KeInitializeSpinLock`
//! counts on the machine where it runs; a thread attached to no machine uses the default
//! machine).
//!
//! A lock-free open-addressing table (lookups happen at any IRQL, inside signal handlers
//! too), allocated on a machine's first use. Entries are never removed: memory freed and
//! reused as a lock without a new `KeInitializeSpinLock` still counts as initialized.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use crate::processor;

/// Addresses a machine can track (a power of two).
const SLOTS: usize = 1 << 16;
/// Probes per lookup.
const PROBES: usize = 64;

/// One machine's table.
#[derive(Default)]
pub(crate) struct InitializedLocks {
    slots: OnceLock<Box<[AtomicUsize]>>,
    /// Some address found no free slot: from then on unknown addresses are given the
    /// benefit of the doubt (and a message says so once).
    overflowed: AtomicBool,
}

impl InitializedLocks {
    fn slots(&self) -> &[AtomicUsize] {
        self.slots
            .get_or_init(|| (0..SLOTS).map(|_| AtomicUsize::new(0)).collect())
    }

    fn start(addr: usize) -> usize {
        ((addr as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
    }

    fn insert(&self, addr: usize) {
        let slots = self.slots();
        let start = Self::start(addr);
        for i in 0..PROBES {
            let slot = &slots[(start + i) % SLOTS];
            match slot.compare_exchange(0, addr, SeqCst, SeqCst) {
                Ok(_) => return,
                Err(found) if found == addr => return,
                Err(_) => {}
            }
        }
        if !self.overflowed.swap(true, SeqCst) {
            eprintln!(
                "ntspin: more C spin locks initialized than the verifier tracks ({SLOTS}); SL-INIT is no longer judged for new ones on this machine"
            );
        }
    }

    fn contains(&self, addr: usize) -> bool {
        let Some(slots) = self.slots.get() else {
            return self.overflowed.load(SeqCst);
        };
        let start = Self::start(addr);
        for i in 0..PROBES {
            match slots[(start + i) % SLOTS].load(SeqCst) {
                0 => break,
                a if a == addr => return true,
                _ => {}
            }
        }
        self.overflowed.load(SeqCst)
    }
}

/// `KeInitializeSpinLock` from C ran for the lock at `addr` on this thread's machine.
///
/// ```
/// let mut word = 0usize;
/// let addr = &mut word as *mut usize as usize;
/// assert!(!ntspin_sim::lock_initialized(addr));
/// ntspin_sim::note_lock_initialized(addr);
/// assert!(ntspin_sim::lock_initialized(addr));
/// ```
pub fn note_lock_initialized(addr: usize) {
    let p = processor::current();
    if p.verifies() {
        let _own = crate::alloc::Exempt::new();
        p.machine().c_locks.insert(addr);
    }
}

/// Whether the C lock at `addr` may be used on this thread's machine: it was initialized
/// there, or the verifier is off (nothing is judged).
pub fn lock_initialized(addr: usize) -> bool {
    let p = processor::current();
    !p.verifies() || p.machine().c_locks.contains(addr)
}

//! Mutual exclusion under real contention: N processors × many increments of a counter
//! that is deliberately not atomic (read, spin a little, write back), so a lost update
//! shows up in the total. Ordinary, AtDpcLevel and queued locks; also with more virtual
//! processors than host cores, where waiters must give their core back.

use std::cell::UnsafeCell;
use std::pin::pin;

use ntspin::{Irql, LockQueueHandle, QueuedSpinLock, RawSpinLock, SpinLock, current_irql};
use ntspin_sim::{Machine, Verifier};

const ITERS: u64 = 20_000;

/// A counter whose increment is a read-modify-write with a window in the middle.
struct Racy(UnsafeCell<u64>);
// SAFETY: only ever touched under the lock being tested.
unsafe impl Sync for Racy {}
impl Racy {
    /// # Safety
    /// The caller holds the lock that protects `self`.
    unsafe fn bump(&self) {
        // SAFETY: the caller holds the lock, so no other processor touches the counter.
        let v = unsafe { self.0.get().read_volatile() };
        std::hint::spin_loop();
        // SAFETY: as above.
        unsafe { self.0.get().write_volatile(v + 1) };
    }
}

fn machines() -> Vec<Machine> {
    vec![
        Machine::builder()
            .processors(2)
            .verifier(Verifier::Off)
            .build(),
        Machine::builder()
            .processors(4)
            .verifier(Verifier::Standard)
            .build(),
    ]
}

#[test]
fn spin_lock_excludes_across_processors() {
    for m in machines() {
        let lock = SpinLock::new(0u64);
        let r = m.run_each(|_| {
            for _ in 0..ITERS {
                let mut g = lock.lock();
                let v = *g;
                std::hint::spin_loop();
                *g = v + 1;
            }
            current_irql()
        });
        assert!(r.iter().all(|r| *r.as_ref().unwrap() == Irql::PASSIVE));
        assert_eq!(*lock.lock(), ITERS * m.processors() as u64);
    }
}

#[test]
fn at_dpc_level_lock_excludes_across_processors() {
    for m in machines() {
        let lock = RawSpinLock::new();
        let n = Racy(UnsafeCell::new(0));
        m.run_each(|_| {
            let old = ntspin::raise_irql_to_dpc_level();
            for _ in 0..ITERS {
                lock.acquire_at_dpc_level();
                // SAFETY: `lock` is held.
                unsafe { n.bump() };
                // SAFETY: acquired above on this processor.
                unsafe { lock.release_from_dpc_level() };
            }
            ntspin::lower_irql(old);
        })
        .into_iter()
        .for_each(|r| r.unwrap());
        assert_eq!(unsafe_read(&n), ITERS * m.processors() as u64);
    }
}

#[test]
fn try_lock_excludes_across_processors() {
    let m = Machine::new(3);
    let lock = SpinLock::new(0u64);
    let got = m.run_each(|_| {
        let mut got = 0u64;
        while got < ITERS / 4 {
            if let Some(mut g) = lock.try_lock() {
                let v = *g;
                std::hint::spin_loop();
                *g = v + 1;
                got += 1;
            }
        }
        got
    });
    let sum: u64 = got.into_iter().map(Result::unwrap).sum();
    assert_eq!(sum, ITERS / 4 * 3);
    assert_eq!(*lock.lock(), sum);
}

#[test]
fn queued_lock_excludes_across_processors() {
    for m in machines() {
        let lock = QueuedSpinLock::new(0u64);
        m.run_each(|_| {
            let mut h = pin!(LockQueueHandle::new());
            for _ in 0..ITERS {
                let mut g = lock.lock(h.as_mut());
                let v = *g;
                std::hint::spin_loop();
                *g = v + 1;
            }
        })
        .into_iter()
        .for_each(|r| r.unwrap());
        assert_eq!(
            *lock.lock(pin!(LockQueueHandle::new()).as_mut()),
            ITERS * m.processors() as u64
        );
        assert_eq!(lock.raw().word(), 0);
    }
}

#[test]
fn oversubscribed_queued_lock_makes_progress_and_nobody_starves() {
    // 8 virtual processors on this machine's cores: a waiter that got the lock handed to it
    // may not be running. Every processor must still finish its share.
    let m = Machine::builder()
        .processors(8)
        .verifier(Verifier::Off)
        .build();
    let lock = QueuedSpinLock::new(vec![0u64; 8]);
    let r = m.run_each(|cpu| {
        let mut h = pin!(LockQueueHandle::new());
        for _ in 0..2_000 {
            lock.lock(h.as_mut())[cpu] += 1;
        }
    });
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(
        *lock.lock(pin!(LockQueueHandle::new()).as_mut()),
        vec![2_000; 8]
    );
}

#[test]
fn oversubscribed_spin_lock_makes_progress() {
    let m = Machine::builder()
        .processors(8)
        .verifier(Verifier::Standard)
        .build();
    let lock = SpinLock::new(0u64);
    m.run_each(|_| {
        for _ in 0..2_000 {
            *lock.lock() += 1;
        }
    })
    .into_iter()
    .for_each(|r| r.unwrap());
    assert_eq!(*lock.lock(), 16_000);
}

fn unsafe_read(n: &Racy) -> u64 {
    // SAFETY: the machine run that wrote it has finished.
    unsafe { n.0.get().read() }
}

//! Uses a lock with no HAL registered: must not link.
fn main() {
    let lock = ntspin::SpinLock::new(0u32);
    *lock.lock() += 1;
}

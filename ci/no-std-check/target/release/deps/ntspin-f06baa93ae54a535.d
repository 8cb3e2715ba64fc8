/work/main/ci/no-std-check/target/release/deps/ntspin-f06baa93ae54a535.d: /work/main/crates/ntspin/src/lib.rs /work/main/crates/ntspin/src/bugcheck.rs /work/main/crates/ntspin/src/dpc.rs /work/main/crates/ntspin/src/event.rs /work/main/crates/ntspin/src/hal.rs /work/main/crates/ntspin/src/interlocked.rs /work/main/crates/ntspin/src/interrupt.rs /work/main/crates/ntspin/src/irql.rs /work/main/crates/ntspin/src/queued.rs /work/main/crates/ntspin/src/queued_lock.rs /work/main/crates/ntspin/src/raw.rs /work/main/crates/ntspin/src/spin_lock.rs /work/main/crates/ntspin/src/status.rs /work/main/crates/ntspin/src/sync.rs

/work/main/ci/no-std-check/target/release/deps/libntspin-f06baa93ae54a535.rlib: /work/main/crates/ntspin/src/lib.rs /work/main/crates/ntspin/src/bugcheck.rs /work/main/crates/ntspin/src/dpc.rs /work/main/crates/ntspin/src/event.rs /work/main/crates/ntspin/src/hal.rs /work/main/crates/ntspin/src/interlocked.rs /work/main/crates/ntspin/src/interrupt.rs /work/main/crates/ntspin/src/irql.rs /work/main/crates/ntspin/src/queued.rs /work/main/crates/ntspin/src/queued_lock.rs /work/main/crates/ntspin/src/raw.rs /work/main/crates/ntspin/src/spin_lock.rs /work/main/crates/ntspin/src/status.rs /work/main/crates/ntspin/src/sync.rs

/work/main/ci/no-std-check/target/release/deps/libntspin-f06baa93ae54a535.rmeta: /work/main/crates/ntspin/src/lib.rs /work/main/crates/ntspin/src/bugcheck.rs /work/main/crates/ntspin/src/dpc.rs /work/main/crates/ntspin/src/event.rs /work/main/crates/ntspin/src/hal.rs /work/main/crates/ntspin/src/interlocked.rs /work/main/crates/ntspin/src/interrupt.rs /work/main/crates/ntspin/src/irql.rs /work/main/crates/ntspin/src/queued.rs /work/main/crates/ntspin/src/queued_lock.rs /work/main/crates/ntspin/src/raw.rs /work/main/crates/ntspin/src/spin_lock.rs /work/main/crates/ntspin/src/status.rs /work/main/crates/ntspin/src/sync.rs

/work/main/crates/ntspin/src/lib.rs:
/work/main/crates/ntspin/src/bugcheck.rs:
/work/main/crates/ntspin/src/dpc.rs:
/work/main/crates/ntspin/src/event.rs:
/work/main/crates/ntspin/src/hal.rs:
/work/main/crates/ntspin/src/interlocked.rs:
/work/main/crates/ntspin/src/interrupt.rs:
/work/main/crates/ntspin/src/irql.rs:
/work/main/crates/ntspin/src/queued.rs:
/work/main/crates/ntspin/src/queued_lock.rs:
/work/main/crates/ntspin/src/raw.rs:
/work/main/crates/ntspin/src/spin_lock.rs:
/work/main/crates/ntspin/src/status.rs:
/work/main/crates/ntspin/src/sync.rs:

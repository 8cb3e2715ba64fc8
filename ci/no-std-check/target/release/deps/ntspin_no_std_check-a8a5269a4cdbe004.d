/work/main/ci/no-std-check/target/release/deps/ntspin_no_std_check-a8a5269a4cdbe004.d: src/lib.rs

/work/main/ci/no-std-check/target/release/deps/libntspin_no_std_check-a8a5269a4cdbe004.a: src/lib.rs

src/lib.rs:

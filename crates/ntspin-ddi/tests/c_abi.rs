//! The C tests of `tests/c/spinlock.c` (compiled by `build.rs` against the installed
//! headers), run under `cargo test`: exclusion across processors through the WDK routines,
//! bug checks that end the C routine and come back with code and parameters, NULL locks
//! caught, IRQL, and a healthy process afterwards.

use ntspin_ddi as _; // the library the C code calls

#[link(name = "ntspin_ddi_ctests", kind = "static")]
unsafe extern "C-unwind" {
    fn ctest_exclusion(
        processors: u32,
        iterations: u32,
        executive: *mut u64,
        queued: *mut u64,
        bad_irql: *mut u32,
    ) -> u32;
    fn ctest_recurse(params: *mut usize, lock: *mut usize, after: *mut i32) -> u32;
    fn ctest_null_lock(params: *mut usize) -> u32;
    fn ctest_irql(seen: *mut u8) -> u32;
    fn ctest_lower_raises(params: *mut usize) -> u32;
    fn ctest_lists(added: *mut u32, removed: *mut u32, empty_nulls: *mut u32) -> u32;
    fn ctest_dpc(
        runs: *mut u32,
        arg1: *mut usize,
        irql: *mut u8,
        context_ok: *mut i32,
        queued: *mut u8,
    ) -> u32;
}

#[link(name = "ntspin_ddi_cxxcheck", kind = "static")]
#[link(name = "stdc++")]
unsafe extern "C" {
    fn ntspin_ddi_cxx_headers_ok() -> i32;
}

#[test]
fn c_spin_locks_exclude_each_other_across_processors() {
    let (mut e, mut q, mut bad) = (0u64, 0u64, 0u32);
    // SAFETY: the C test writes only through the three pointers.
    let code = unsafe { ctest_exclusion(4, 2000, &mut e, &mut q, &mut bad) };
    assert_eq!(code, 0);
    assert_eq!(e, 4 * 2000 * 2, "executive lock: both acquire forms");
    assert_eq!(q, 4 * 2000, "in-stack queued lock");
    assert_eq!(
        bad, 0,
        "KeAcquireSpinLock runs the section at DISPATCH_LEVEL"
    );
}

#[test]
fn c_sl_recurse_ends_the_routine_with_code_and_parameters() {
    let (mut params, mut lock, mut after) = ([0usize; 4], 0usize, 0i32);
    // SAFETY: as above.
    let code = unsafe { ctest_recurse(params.as_mut_ptr(), &mut lock, &mut after) };
    assert_eq!(code, 0x0F);
    assert_eq!(params, [lock, 0, 0, 0]);
    assert_eq!(after, 0, "the C code after the failing call never ran");
    // The process is healthy: a new machine works.
    let (mut e, mut q, mut bad) = (0u64, 0u64, 0u32);
    // SAFETY: as above.
    let code = unsafe { ctest_exclusion(2, 100, &mut e, &mut q, &mut bad) };
    assert_eq!(code, 0);
    assert_eq!(q, 200);
}

#[test]
fn c_null_lock_is_sl_init_not_a_segfault() {
    let mut params = [0usize; 4];
    // SAFETY: as above.
    let code = unsafe { ctest_null_lock(params.as_mut_ptr()) };
    assert_eq!(code, 0xC4);
    assert_eq!(params, [0x1002, 0, 0, 0]);
}

#[test]
fn c_irql_routines() {
    let mut seen = [0xFFu8; 4];
    // SAFETY: as above.
    assert_eq!(unsafe { ctest_irql(seen.as_mut_ptr()) }, 0);
    assert_eq!(seen, [0, 13, 0, 0]);
    let mut params = [0usize; 4];
    // SAFETY: as above.
    assert_eq!(unsafe { ctest_lower_raises(params.as_mut_ptr()) }, 0xC4);
    assert_eq!(params, [0x31, 0, 2, 0]);
}

#[test]
fn headers_compile_as_cxx17_with_the_wdk_layouts() {
    // SAFETY: a constant-returning C++ function.
    assert_eq!(unsafe { ntspin_ddi_cxx_headers_ok() }, 15);
}

#[test]
fn c_exinterlocked_lists_across_processors_and_exi_empty() {
    let (mut added, mut removed, mut nulls) = (0u32, 0u32, 0u32);
    // SAFETY: the C test writes only through the three pointers.
    let code = unsafe { ctest_lists(&mut added, &mut removed, &mut nulls) };
    assert_eq!(code, 0);
    assert_eq!(added, 4 * 500, "ExInterlockedAddUlong under contention");
    assert_eq!(removed, 4 * 500, "every entry inserted was removed once");
    assert_eq!(nulls, 1, "remove from an empty list: NULL (EXI-EMPTY)");
}

#[test]
fn c_dpc_runs_once_at_dispatch_with_the_first_arguments() {
    let (mut runs, mut arg1, mut irql, mut ctx_ok) = (0u32, 0usize, 0u8, 0i32);
    let mut queued = [9u8; 2];
    // SAFETY: as above.
    let code = unsafe {
        ctest_dpc(
            &mut runs,
            &mut arg1,
            &mut irql,
            &mut ctx_ok,
            queued.as_mut_ptr(),
        )
    };
    assert_eq!(code, 0);
    assert_eq!(queued, [1, 0], "DPC-ONCE: the second insert returns FALSE");
    assert_eq!(runs, 1);
    assert_eq!(arg1, 0x11, "the first call's arguments");
    assert_eq!(irql, 2, "DPC-LEVEL");
    assert_eq!(ctx_ok, 1);
}

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
    fn ctest_isr_dpc_sync(posts: u32, out: *mut u32) -> u32;
    fn ctest_tries(out: *mut Tries, size: u32) -> u32;
    fn ctest_misc(ran_on: *mut i32, lifo: *mut u32, empty_null: *mut u32, first: *mut u32) -> u32;
    fn ctest_wdf_toggle(counts: *mut i32, status: *mut i32) -> u32;
    fn ctest_violation(which: i32, params: *mut usize, addrs: *mut usize, after: *mut i32) -> u32;
    fn ctest_wdf_violation(
        which: i32,
        params: *mut usize,
        interrupt: *mut usize,
        after: *mut i32,
        try_result: *mut u8,
    ) -> u32;
    fn ctest_remove_dpc(
        runs: *mut u32,
        last_arg: *mut usize,
        inserted: *mut u8,
        removed: *mut u8,
    ) -> u32;
    fn ctest_wdf_dirql(posts: u32, out: *mut u32) -> u32;
    fn ctest_wdf_forged(params: *mut usize, after: *mut i32) -> u32;
    fn ctest_wdf_state(params: *mut usize, interrupt: *mut usize) -> u32;
    fn ctest_wdf_passive(asserts: u32, out: *mut u32) -> u32;
    fn ctest_uninitialized(params: *mut usize, zeroed: *mut usize, after: *mut i32) -> u32;
    fn ctest_oldirql_shared(
        params: *mut usize,
        b: *mut usize,
        slot: *mut usize,
        after: *mut i32,
    ) -> u32;
    fn ctest_connects(out: *mut Connects, size: u32) -> u32;
    fn ctest_connects_size() -> u32;
    fn ctest_forged_interrupt(params: *mut usize, after: *mut i32) -> u32;
    fn ctest_paged_code(params: *mut usize, site: *mut usize, reached: *mut i32) -> u32;
    fn ctest_destroy_connected(status: *mut i32) -> u32;
}

/// `TRIES` of `tests/c/routines.c`.
#[repr(C)]
#[derive(Debug, Default)]
struct Tries {
    lock: usize,
    queued: usize,
    held: i32,
    tried: i32,
    raise_to_dpc_irql: u8,
    raise_to_dpc_old: u8,
    try_while_held: u8,
    test_while_held: u8,
    try_when_free: u8,
    test_when_free: u8,
    queued_test_held: u8,
    queued_test_free: u8,
    numbers: [u32; 2],
}

/// `CONNECTS` of `tests/c/interrupt.c`.
#[repr(C)]
#[derive(Debug, Default)]
struct Connects {
    line_based: i32,
    version_after: u32,
    sync_below_irql: i32,
    empty_mask: i32,
    passive_with_lock: i32,
    null_routine: i32,
    first: i32,
    second_unshared: i32,
    passive: i32,
    passive_sync_irql: u8,
    classic: i32,
    lock_irql: u8,
    old_irql: u8,
    sync_result: u8,
    untouched: i32,
}

const STATUS_SUCCESS: i32 = 0;
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;
const STATUS_NOT_SUPPORTED: i32 = 0xC000_00BBu32 as i32;
const STATUS_INVALID_DEVICE_STATE: i32 = 0xC000_0184u32 as i32;

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

#[test]
fn c_isr_dpc_and_synchronize_account_for_every_completion() {
    const POSTS: u32 = 3000;
    let mut out = [0u32; 8];
    // SAFETY: the C test writes eight counters.
    let code = unsafe { ctest_isr_dpc_sync(POSTS, out.as_mut_ptr()) };
    let [
        posts,
        handled,
        isr_runs,
        isr_idle,
        dpc_runs,
        sync_calls,
        bad_irql,
        status,
    ] = out;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(status, 0, "IoConnectInterruptEx succeeded");
    assert_eq!(posts, POSTS);
    // Every completion the device posted went ISR -> DPC -> driver, exactly once.
    assert_eq!(handled, POSTS, "{out:?}");
    // Each assertion is one request, never lost, but requests that arrive while one is
    // pending merge into one delivery (DESIGN.md): at most one ISR call per assertion, and
    // the last call comes after the last post (nothing is left in the register).
    assert!(isr_runs + isr_idle <= POSTS, "{out:?}");
    assert!(isr_runs >= 1, "{out:?}");
    // A DPC queued while queued runs once; each run took what its ISRs left.
    assert!(dpc_runs >= 1 && dpc_runs <= isr_runs, "{out:?}");
    // KeSynchronizeExecution: one per post, one per DPC run.
    assert_eq!(sync_calls, POSTS + dpc_runs, "{out:?}");
    assert_eq!(
        bad_irql, 0,
        "ISR at DIRQL, DPC at DISPATCH, sync routine at DIRQL"
    );
}

#[test]
fn c_io_connect_interrupt_validates_its_parameters() {
    // SAFETY: the C function has no preconditions.
    let c_size = unsafe { ctest_connects_size() } as usize;
    assert_eq!(c_size, size_of::<Connects>());
    let mut c = Connects::default();
    // SAFETY: `c` has the C struct's layout (size checked above).
    let code = unsafe { ctest_connects(&mut c, size_of::<Connects>() as u32) };
    assert_eq!(code, 0, "{c:?}");
    // A platform without line-based connections: not supported, retry fully specified.
    assert_eq!(c.line_based, STATUS_NOT_SUPPORTED);
    assert_eq!(c.version_after, 1, "Version set to CONNECT_FULLY_SPECIFIED");
    // CONN-PARAMS: each invalid request fails and connects nothing.
    assert_eq!(c.sync_below_irql, STATUS_INVALID_PARAMETER);
    assert_eq!(c.empty_mask, STATUS_INVALID_PARAMETER);
    assert_eq!(c.passive_with_lock, STATUS_INVALID_PARAMETER);
    assert_eq!(c.null_routine, STATUS_INVALID_PARAMETER);
    assert_eq!(c.untouched, 1, "*InterruptObject untouched by failures");
    assert_eq!(c.first, STATUS_SUCCESS);
    assert_eq!(
        c.second_unshared, STATUS_INVALID_PARAMETER,
        "vector taken unshareably"
    );
    // KeAcquireInterruptSpinLock from PASSIVE raises to SynchronizeIrql (7).
    assert_eq!((c.old_irql, c.lock_irql), (0, 7));
    // Passive-level: KeSynchronizeExecution runs the routine at PASSIVE and returns its
    // value unchanged.
    assert_eq!(c.passive, STATUS_SUCCESS);
    assert_eq!(c.passive_sync_irql, 0);
    assert_eq!(c.sync_result, 7);
    assert_eq!(
        c.classic, STATUS_SUCCESS,
        "IoConnectInterrupt with a caller's lock"
    );
}

#[test]
fn c_isl_obj_a_forged_pkinterrupt_is_a_bug_check_not_a_fault() {
    let (mut params, mut after) = ([0usize; 4], 0i32);
    // SAFETY: the C test writes through the two pointers.
    let code = unsafe { ctest_forged_interrupt(params.as_mut_ptr(), &mut after) };
    assert_eq!(code, 0xC4);
    assert_eq!(params, [0xE1, 0x1234560, 0, 0]);
    assert_eq!(after, 0, "the routine ended at the bad call");
}

#[test]
fn c_paged_code_at_dispatch_bugchecks_0xd1_naming_the_function() {
    let (mut params, mut site, mut reached) = ([0usize; 4], 0usize, 0i32);
    // SAFETY: the C test writes through the three pointers.
    let code = unsafe { ctest_paged_code(params.as_mut_ptr(), &mut site, &mut reached) };
    assert_eq!(code, 0xD1);
    assert_ne!(site, 0);
    assert_eq!(params, [site, 2, 8, site]);
    assert_eq!(reached, 0);
    // SAFETY: `site` is the address of the C function's `__func__`, a static string.
    let name = unsafe { std::ffi::CStr::from_ptr(site as *const std::ffi::c_char) };
    assert_eq!(name.to_str().unwrap(), "pageable_routine");
}

#[test]
fn c_machine_destroy_disconnects_what_is_still_connected() {
    let mut status = -1i32;
    // SAFETY: the C test writes the connect status.
    let code = unsafe { ctest_destroy_connected(&mut status) };
    assert_eq!((code, status), (0, 0));
    // The process is healthy: the same vector connects again on a new machine.
    let mut out = [0u32; 8];
    // SAFETY: as in the ISR test.
    assert_eq!(unsafe { ctest_isr_dpc_sync(10, out.as_mut_ptr()) }, 0);
    assert_eq!(out[1], 10);
}

#[test]
fn c_sl_init_a_zeroed_lock_never_initialized_is_caught() {
    let (mut params, mut zeroed, mut after) = ([0usize; 4], 0usize, 0i32);
    // SAFETY: the C test writes through the three pointers.
    let code = unsafe { ctest_uninitialized(params.as_mut_ptr(), &mut zeroed, &mut after) };
    assert_eq!(code, 0xC4);
    assert_eq!(params, [0x1002, zeroed, 0, 0]);
    assert_eq!(after, 0);
}

#[test]
fn c_sl_oldirql_shared_one_oldirql_variable_for_two_held_locks() {
    let (mut params, mut b, mut slot, mut after) = ([0usize; 4], 0usize, 0usize, 0i32);
    // SAFETY: the C test writes through the four pointers.
    let code = unsafe { ctest_oldirql_shared(params.as_mut_ptr(), &mut b, &mut slot, &mut after) };
    assert_eq!(code, 0xC4);
    assert_eq!(params[0], 0x0002_0015);
    assert_eq!(params[1], ntspin::Rule::SL_OLDIRQL_SHARED.name_ptr());
    assert_eq!(&params[2..], [b, slot]);
    assert_eq!(after, 0);
}

#[test]
fn c_wdf_dirql_interrupt_start_isr_dpc_lock_stop() {
    const POSTS: u32 = 2000;
    let mut out = [0u32; 11];
    // SAFETY: the C test writes eleven values.
    let code = unsafe { ctest_wdf_dirql(POSTS, out.as_mut_ptr()) };
    let [
        handled,
        isrs,
        dpcs,
        enables,
        disables,
        at_dirql,
        wrong_dev,
        create,
        start,
        stop,
        second,
    ] = out;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!((create, start, stop), (0, 0, 0), "{out:?}");
    assert_eq!(second as i32, STATUS_INVALID_DEVICE_STATE, "a second start");
    // Every posted completion was handled once, through ISR and DPC.
    assert_eq!(handled, POSTS, "{out:?}");
    assert!(
        (1..=POSTS).contains(&isrs) && (1..=isrs).contains(&dpcs),
        "{out:?}"
    );
    // D0 entry / exit: EvtInterruptEnable once, at DIRQL holding the lock, with the device;
    // EvtInterruptDisable once.
    assert_eq!((enables, disables, at_dirql), (1, 1, 1), "{out:?}");
    assert_eq!(
        wrong_dev, 0,
        "AssociatedObject and WdfInterruptGetDevice name the device"
    );
}

#[test]
fn c_wdf_handle_a_forged_wdfinterrupt_is_0x10d() {
    let (mut params, mut after) = ([0usize; 4], 0i32);
    // SAFETY: the C test writes through the two pointers.
    let code = unsafe { ctest_wdf_forged(params.as_mut_ptr(), &mut after) };
    assert_eq!(code, 0x10D);
    assert_eq!(params, [0x5, 0xBAD0, 0x1027, 0]);
    assert_eq!(after, 0);
}

#[test]
fn c_wdf_state_acquire_lock_after_disable() {
    let (mut params, mut interrupt) = ([0usize; 4], 0usize);
    // SAFETY: the C test writes through the two pointers.
    let code = unsafe { ctest_wdf_state(params.as_mut_ptr(), &mut interrupt) };
    assert_eq!(code, 0x10D);
    assert_eq!(params[0], 0x9, "WDF-STATE: {params:x?}");
    assert_eq!(params[1], interrupt);
}

#[test]
fn c_wdf_passive_handling_with_a_work_item() {
    let mut out = [0u32; 4];
    // SAFETY: the C test writes four values.
    let code = unsafe { ctest_wdf_passive(20, out.as_mut_ptr()) };
    let [runs, items, bad, tried] = out;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(runs, 20, "one passive ISR run per drained assertion");
    assert_eq!(items, 20, "one work item per run");
    assert_eq!(bad, 0, "both at PASSIVE_LEVEL");
    assert_eq!(tried, 1, "TryToAcquireLock on an idle interrupt succeeds");
}

#[test]
fn c_ke_remove_queue_dpc_takes_a_queued_dpc_off_its_queue() {
    let (mut runs, mut last, mut inserted, mut removed) = (0u32, 0usize, [0u8; 3], [0u8; 3]);
    // SAFETY: the C test writes through the four pointers (three bytes each array).
    let code = unsafe {
        ctest_remove_dpc(
            &mut runs,
            &mut last,
            inserted.as_mut_ptr(),
            removed.as_mut_ptr(),
        )
    };
    assert_eq!(code, 0);
    assert_eq!(inserted, [1, 1, 1]);
    assert_eq!(removed, [1, 0, 1], "TRUE when queued, FALSE after");
    // Removed twice; the third insertion (made while the removed one was still linked)
    // ran once, with its own argument.
    assert_eq!((runs, last), (1, 3));
}

#[test]
fn c_try_test_raise_to_dpc_and_queued_at_dpc_level() {
    let mut t = Tries::default();
    // SAFETY: `t` has the C struct's layout (the C side checks the size).
    let code = unsafe { ctest_tries(&mut t, size_of::<Tries>() as u32) };
    assert_eq!(code, 0, "{t:?}");
    assert_eq!(
        (t.raise_to_dpc_old, t.raise_to_dpc_irql),
        (0, 2),
        "RaiseToDpc"
    );
    assert_eq!(t.try_while_held, 0, "another processor holds it: FALSE");
    assert_eq!(t.test_while_held, 0, "KeTestSpinLock: held");
    assert_eq!((t.test_when_free, t.try_when_free), (1, 1));
    assert_eq!((t.queued_test_held, t.queued_test_free), (0, 1));
    assert_eq!(t.numbers, [0, 1], "KeGetCurrentProcessorNumber");
}

#[test]
fn c_targeted_dpc_and_interlocked_single_lists() {
    let (mut ran_on, mut lifo, mut empty_null, mut first) = (0i32, 0u32, 0u32, 0u32);
    // SAFETY: the C test writes through the four pointers.
    let code = unsafe { ctest_misc(&mut ran_on, &mut lifo, &mut empty_null, &mut first) };
    assert_eq!(code, 0);
    assert_eq!(
        ran_on, 1,
        "KeSetTargetProcessorDpc(1): the DPC ran on processor 1"
    );
    assert_eq!(
        (lifo, empty_null, first),
        (1, 1, 1),
        "push/pop LIFO, NULL when empty"
    );
}

#[test]
fn c_wdf_interrupt_enable_and_disable_from_driver_code() {
    let (mut counts, mut status) = ([0i32; 2], [-1i32; 2]);
    // SAFETY: the C test writes two counts and two statuses.
    let code = unsafe { ctest_wdf_toggle(counts.as_mut_ptr(), status.as_mut_ptr()) };
    assert_eq!(code, 0);
    assert_eq!(status, [0, 0], "create, re-enable");
    // Start + WdfInterruptEnable; WdfInterruptDisable + stop.
    assert_eq!(counts, [2, 2]);
}

#[test]
fn c_every_rule_a_c_caller_breaks_with_its_code_and_parameters() {
    use ntspin::Rule;
    // (which, code, expected params from the addresses [A, B, H1, interrupt])
    type Expect = fn([usize; 4]) -> [usize; 4];
    let cases: [(&str, u32, Expect); 21] = [
        ("SL-NOT-OWNED", 0x10, |a| [a[0], 0, 0, 0]),
        ("SL-ACQ-IRQL", 0xC4, |a| [0x42, 5, a[0], 0]),
        ("SL-ATDPC-IRQL", 0xC4, |a| [0x40, 0, a[0], 0]),
        ("SL-FROMDPC-IRQL", 0xC4, |a| [0x41, 0, a[0], 0]),
        ("SL-REL-IRQL", 0xC4, |a| [0x32, 6, a[0], 0]),
        ("SL-OLDIRQL", 0xC4, |a| {
            [0x0002_0015, Rule::SL_OLDIRQL.name_ptr(), a[0], 0]
        }),
        ("SL-MIX", 0xC4, |a| [0x1008, a[0], 0, 0]),
        ("QSL-HANDLE", 0xC4, |a| [0x1009, a[1], a[2], 0]),
        ("QSL-RECURSE", 0x0F, |a| [a[0], 0, 0, 0]),
        ("ISL-IRQL", 0xC4, |_| [0x30, 8, 5, 0]),
        ("ISL-PASSIVE", 0x13B, |a| [1, a[3], 0, 0]),
        ("IRQL-RAISE", 0xC4, |_| [0x30, 2, 1, 0]),
        ("CONN-PARAMS", 0xC4, |_| {
            [0x0002_000B, Rule::CONN_PARAMS.name_ptr(), 0, 0]
        }),
        ("QSL-ACQ-IRQL", 0xC4, |a| [0x42, 5, a[0], 0]),
        ("QSL-ATDPC-IRQL", 0xC4, |a| [0x40, 0, a[0], 0]),
        ("QSL-REL-IRQL", 0xC4, |a| [0x32, 6, a[0], 0]),
        ("IRQL-LOWER-HELD", 0xC4, |_| [0x31, 2, 0, 2]),
        // The object's own spin lock is its first word: the lock is the object's address.
        ("ISL-RECURSE", 0x0F, |a| [a[3], 0, 0, 0]),
        ("ISL-OLDIRQL", 0xC4, |a| {
            [0x0002_0015, Rule::ISL_OLDIRQL.name_ptr(), a[3], 0]
        }),
        ("SL-ORDER", 0xC4, |a| [0x1001, a[0], 0, 0]),
        ("LD-IRQ", 0xC4, |a| [0x1001, a[0], 0, 1]),
    ];
    for (which, (rule, code, expect)) in cases.iter().enumerate() {
        let (mut params, mut addrs, mut after) = ([0usize; 4], [0usize; 4], 0i32);
        // SAFETY: the C test writes four parameters, four addresses and a flag.
        let got = unsafe {
            ctest_violation(
                which as i32,
                params.as_mut_ptr(),
                addrs.as_mut_ptr(),
                &mut after,
            )
        };
        assert_eq!(got, *code, "{rule}: {params:x?}");
        assert_eq!(params, expect(addrs), "{rule}");
        assert_eq!(after, 0, "{rule}: the C code after the bad call never ran");
    }
}

#[test]
fn c_every_kmdf_rule_a_c_driver_breaks_with_its_code_and_parameters() {
    // (rule, code, expected parameters from the WDFINTERRUPT; None = not compared)
    type Expect = fn(usize) -> [Option<usize>; 4];
    let cases: [(&str, u32, Expect); 5] = [
        // The caller's address is not known to the C ABI: 0.
        ("WDF-NULL", 0x10D, |_| {
            [Some(0x4), Some(0), Some(0), Some(0)]
        }),
        // P3 is the interrupt's lock, internal to the framework object.
        ("WDF-RECURSE", 0x10D, |h| {
            [Some(0x2), Some(h), None, Some(0)]
        }),
        ("WDF-RELEASE", 0x10D, |h| {
            [Some(0xB), Some(h), Some(1), Some(0)]
        }),
        ("WDF-DIRQL-IRQL", 0xC4, |_| {
            [Some(0x30), Some(10), Some(6), Some(0)]
        }),
        ("WDF-PASSIVE-IRQL", 0xC4, |h| {
            [Some(0xE5), Some(2), Some(h), Some(0)]
        }),
    ];
    for (which, (rule, code, expect)) in cases.iter().enumerate() {
        let (mut params, mut h, mut after, mut tried) = ([0usize; 4], 0usize, 0i32, 0u8);
        // SAFETY: the C test writes through the four pointers.
        let got = unsafe {
            ctest_wdf_violation(
                which as i32,
                params.as_mut_ptr(),
                &mut h,
                &mut after,
                &mut tried,
            )
        };
        assert_eq!(got, *code, "{rule}: {params:x?}");
        for (i, want) in expect(h).iter().enumerate() {
            if let Some(w) = want {
                assert_eq!(params[i], *w, "{rule}: P{} of {params:x?}", i + 1);
            }
        }
        assert_eq!(after, 0, "{rule}: the C code after the bad call never ran");
    }
    // WDF-TRY: on a DIRQL interrupt TryToAcquireLock returns FALSE; the machine goes on.
    let (mut params, mut h, mut after, mut tried) = ([0usize; 4], 0usize, 0i32, 0u8);
    // SAFETY: as above.
    let got =
        unsafe { ctest_wdf_violation(5, params.as_mut_ptr(), &mut h, &mut after, &mut tried) };
    assert_eq!((got, tried), (0, 0), "WDF-TRY");
}

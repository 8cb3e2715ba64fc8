//! ALLOC-IRQL with the checking allocator installed: an allocation above DISPATCH
//! succeeds, and the processor's next ntspin call bug-checks.

use ntspin::{BugCheck, Irql, Rule};
use ntspin_sim::{CheckingAllocator, Machine, Verifier};

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new();

#[test]
fn alloc_irql_an_allocation_at_dirql_bugchecks_at_the_next_ntspin_call() {
    let m = Machine::new(1);
    let mut after_alloc = 0;
    let err = m
        .run_on(0, || {
            let old = ntspin::raise_irql(Irql::new(7).unwrap());
            let v: Vec<u64> = Vec::with_capacity(32); // 256 bytes
            after_alloc = v.capacity(); // the allocation itself succeeded
            ntspin::lower_irql(old); // the next ntspin call
            unreachable!("the bug check ends the routine");
        })
        .unwrap_err();
    assert_eq!(after_alloc, 32);
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x02, 7, 0, 256, Rule::ALLOC_IRQL)
    );
}

#[test]
fn allocations_at_or_below_dispatch_are_fine() {
    let m = Machine::new(1);
    let n = m
        .run_on(0, || {
            let a = Box::new([1u8; 10]);
            let old = ntspin::raise_irql_to_dpc_level();
            let b = Box::new([2u8; 20]); // nonpaged pool at DISPATCH is allowed
            ntspin::lower_irql(old);
            a.len() + b.len()
        })
        .unwrap();
    assert_eq!(n, 30);
}

#[test]
fn with_the_verifier_off_nothing_is_checked() {
    let m = Machine::builder()
        .processors(1)
        .verifier(Verifier::Off)
        .build();
    let n = m
        .run_on(0, || {
            let old = ntspin::raise_irql(Irql::new(7).unwrap());
            let v = Box::new([0u8; 64]);
            ntspin::lower_irql(old);
            v.len()
        })
        .unwrap();
    assert_eq!(n, 64);
}

#[test]
fn the_machines_own_reports_at_dirql_are_exempt() {
    // A bug check raised at DIRQL builds its report (allocating) at DIRQL: that is the
    // machine's allocation, not the driver's, and the report is the rule broken.
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            ntspin::raise_irql(Irql::new(7).unwrap());
            ntspin::raise_irql(Irql::DISPATCH); // IRQL-RAISE
        })
        .unwrap_err();
    assert_eq!(err.bug.rule, Rule::IRQL_RAISE);
}

//! The IRQL rules of `RULES.md` in this scope: IRQL-RAISE, IRQL-LOWER,
//! IRQL-LOWER-HELD. Each test shows the correct use passing and the violation producing
//! exactly its code and parameters.

use ntspin::{BugCheck, Irql, Rule, SpinLock, current_irql, lower_irql, raise_irql};
use ntspin_sim::Machine;

fn dirql(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

#[test]
fn irql_raise_correct_use_passes() {
    let m = Machine::new(1);
    let seen = m
        .run_on(0, || {
            let a = raise_irql(Irql::DISPATCH);
            let b = raise_irql(dirql(5));
            let c = raise_irql(dirql(5)); // raising to the same level is allowed
            let now = current_irql();
            lower_irql(c);
            lower_irql(b);
            lower_irql(a);
            (a, b, c, now, current_irql())
        })
        .unwrap();
    assert_eq!(
        seen,
        (
            Irql::PASSIVE,
            Irql::DISPATCH,
            dirql(5),
            dirql(5),
            Irql::PASSIVE
        )
    );
}

#[test]
fn irql_raise_to_lower_level_bugchecks() {
    let m = Machine::new(1);
    let err = m
        .run_on(0, || {
            raise_irql(dirql(7));
            raise_irql(Irql::DISPATCH);
        })
        .unwrap_err();
    assert_eq!(err.bug, BugCheck::verifier(0x30, 7, 2, 0, Rule::IRQL_RAISE));
    assert_eq!(err.irql, dirql(7));
    assert_eq!(err.processor, 0);
}

#[test]
fn irql_raise_above_high_bugchecks() {
    let m = Machine::new(1);
    let err = m.run_on(0, || raise_irql(Irql::from_raw(16))).unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x30, 0, 16, 0, Rule::IRQL_RAISE)
    );
}

#[test]
fn irql_lower_to_higher_level_bugchecks() {
    let m = Machine::new(1);
    // Correct: lowering to the same level, then down.
    m.run_on(0, || {
        let old = raise_irql(Irql::APC);
        lower_irql(Irql::APC);
        lower_irql(old);
    })
    .unwrap();
    let err = m
        .run_on(0, || {
            raise_irql(Irql::APC);
            lower_irql(Irql::DISPATCH);
        })
        .unwrap_err();
    assert_eq!(err.bug, BugCheck::verifier(0x31, 1, 2, 0, Rule::IRQL_LOWER));
}

#[test]
fn irql_lower_held_guards_released_out_of_order_bugchecks() {
    let m = Machine::new(1);
    let a = SpinLock::new(());
    let b = SpinLock::new(());
    // Correct: reverse order of acquisition.
    m.run_on(0, || {
        let ga = a.lock();
        let gb = b.lock();
        drop(gb);
        drop(ga);
        assert_eq!(current_irql(), Irql::PASSIVE);
    })
    .unwrap();
    // Wrong: `ga` restores PASSIVE while `b` is still held.
    let err = m
        .run_on(0, || {
            let ga = a.lock();
            let gb = b.lock();
            drop(ga);
            drop(gb);
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x31, 2, 0, 2, Rule::IRQL_LOWER_HELD)
    );
}

#[test]
fn irql_lower_held_by_hand_bugchecks() {
    let m = Machine::new(1);
    let lock = ntspin::RawSpinLock::new();
    let err = m
        .run_on(0, || {
            let old = raise_irql(Irql::DISPATCH);
            lock.acquire_at_dpc_level();
            lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x31, 2, 0, 2, Rule::IRQL_LOWER_HELD)
    );
}

#[test]
fn irql_display_uses_wdk_names() {
    let names: Vec<String> = [0u8, 1, 2, 3, 12, 13, 14, 15]
        .iter()
        .map(|&n| dirql(n).to_string())
        .collect();
    assert_eq!(
        names,
        [
            "PASSIVE_LEVEL",
            "APC_LEVEL",
            "DISPATCH_LEVEL",
            "DIRQL(3)",
            "DIRQL(12)",
            "CLOCK_LEVEL",
            "IPI_LEVEL",
            "HIGH_LEVEL"
        ]
    );
    assert_eq!(Irql::SYNCH, dirql(12));
    assert_eq!(Irql::POWER, Irql::IPI);
    assert_eq!(Irql::PROFILE, Irql::HIGH);
}

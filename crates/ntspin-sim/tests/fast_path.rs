//! The verifier's fast path (steady-state ordinary acquires of free locks and in-order
//! releases, judged inline) hands everything else to the full checks. These tests walk the
//! seams: out-of-order releases, lowering while a lock is still held, reports built from
//! entries the fast path wrote, and the fast path resuming (and still judging) after the
//! full path ran.

use ntspin::{BugCheck, Irql, RawSpinLock, Rule, SpinLock, current_irql, lower_irql, raise_irql};
use ntspin_sim::{Machine, Verifier};

/// At DISPATCH: acquire `a` then `b`, release `a` first (out of order: the full path),
/// then `b`.
fn out_of_order(a: &RawSpinLock, b: &RawSpinLock) {
    a.acquire_at_dpc_level();
    b.acquire_at_dpc_level();
    // SAFETY: both acquired just above on this processor.
    unsafe { a.release_from_dpc_level() };
    // SAFETY: as above.
    unsafe { b.release_from_dpc_level() };
}

/// An out-of-order release leaves no report and both words free, and afterwards the fast
/// path still catches a recursive acquire.
#[test]
fn out_of_order_release_then_fast_path_still_judges() {
    let m = Machine::new(1);
    let (a, b, c) = (RawSpinLock::new(), RawSpinLock::new(), RawSpinLock::new());
    let after = m
        .run_on(0, || {
            let old = raise_irql(Irql::DISPATCH);
            out_of_order(&a, &b);
            lower_irql(old);
            (a.word(), b.word(), current_irql())
        })
        .unwrap();
    assert_eq!(after, (0, 0, Irql::PASSIVE));

    let err = m
        .run_on(0, || {
            let old = raise_irql(Irql::DISPATCH);
            out_of_order(&a, &b);
            c.acquire_at_dpc_level();
            c.acquire_at_dpc_level(); // recursion
            lower_irql(old);
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::new(0x0F, [c.addr(), 0, 0, 0], Rule::SL_RECURSE)
    );
}

/// `KeReleaseSpinLock` of the outer lock while the inner one is still held lowers to
/// PASSIVE holding a lock: IRQL-LOWER-HELD, although the release itself was legal.
#[test]
fn releasing_the_outer_lock_first_lowers_while_holding() {
    let m = Machine::new(1);
    let (a, b) = (RawSpinLock::new(), RawSpinLock::new());
    let err = m
        .run_on(0, || {
            let old = a.acquire();
            b.acquire_at_dpc_level();
            // SAFETY: acquired just above on this processor, with `old`.
            unsafe { a.release(old) };
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x31, 2, 0, 2, Rule::IRQL_LOWER_HELD)
    );
}

/// A report lists the locks the fast path recorded, oldest first, with the IRQL each is
/// held at and where each was taken.
#[test]
fn reports_list_fast_path_entries_with_their_sites() {
    let m = Machine::new(1);
    let (a, b) = (SpinLock::new(1u32), SpinLock::new(2u32));
    let lines = (line!() + 3, line!() + 4);
    let err = m
        .run_on(0, || {
            let ga = a.lock();
            let gb = b.lock_at_dpc_level(ga.dpc_level());
            // Lowering under the guards: IRQL-LOWER-HELD, with both listed.
            lower_irql(Irql::PASSIVE);
            drop(gb);
            drop(ga);
        })
        .unwrap_err();
    assert_eq!(
        err.bug,
        BugCheck::verifier(0x31, 2, 0, 2, Rule::IRQL_LOWER_HELD)
    );
    let held: Vec<_> = err
        .held
        .iter()
        .map(|h| (h.lock, h.kind.as_str(), h.irql, h.acquiring))
        .collect();
    assert_eq!(
        held,
        [
            (a.raw().addr(), "Raise", 2, false),
            (b.raw().addr(), "AtDpc", 2, false),
        ]
    );
    let sites: Vec<_> = err.held.iter().map(|h| h.location.clone()).collect();
    let at = |line: u32| Some(format!("{}:{line}:", file!()));
    for (site, line) in sites.iter().zip([lines.0, lines.1]) {
        let site = site.as_deref().expect("the fast path records the site");
        assert!(
            site.starts_with(at(line).unwrap().as_str()),
            "{site} is not line {line}"
        );
    }
}

/// The fast path and the verifier being off agree on what the locks do: a nesting of
/// three locks a thousand times leaves every word free and the IRQL where it started, and
/// the counters the locks protect are exact.
#[test]
fn fast_path_nesting_matches_verifier_off() {
    for verifier in [Verifier::Off, Verifier::Standard] {
        let m = Machine::builder().processors(2).verifier(verifier).build();
        let locks = [
            SpinLock::new(0u64),
            SpinLock::new(0u64),
            SpinLock::new(0u64),
        ];
        let results = m.run_each(|_| {
            for _ in 0..1000 {
                let mut ga = locks[0].lock();
                *ga += 1;
                let mut gb = locks[1].lock_at_dpc_level(ga.dpc_level());
                let mut gc = locks[2].lock_at_dpc_level(ga.dpc_level());
                *gb += 2;
                *gc += 3;
            }
            current_irql()
        });
        for r in results {
            assert_eq!(r.unwrap(), Irql::PASSIVE, "{verifier:?}");
        }
        let totals: Vec<u64> = locks.iter().map(|l| *l.lock()).collect();
        assert_eq!(totals, [2000, 4000, 6000], "{verifier:?}");
        assert!(locks.iter().all(|l| l.test()), "{verifier:?}");
    }
}

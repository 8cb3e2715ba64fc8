//! The KMDF interrupt object: each WDF rule of `RULES.md` with its code and parameters,
//! create-time validation, the shared-lock SynchronizeIrql, the enable/disable steps, and
//! exclusion of the ISR, `synchronize`, enable/disable and `acquire_lock` holders on every
//! processor — for DIRQL and passive-level interrupts.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ntspin::event::{Event, EventType};
use ntspin::wdf::{
    InterruptResource, WdfDevice, WdfInterrupt, WdfInterruptConfig, WdfInterruptHandle,
    WdfSpinLock, WdfWaitLock, arbitrary_thread,
};
use ntspin::{Irql, NtStatus, Rule};
use ntspin_sim::{Machine, Verifier};

mod common;
use common::eventually;

fn level(n: u8) -> Irql {
    Irql::new(n).unwrap()
}

fn never(_: WdfInterruptHandle, _: u32) -> bool {
    false
}

/// A read-modify-write that loses updates unless its callers exclude each other.
fn racy_bump(c: &AtomicU64) {
    let v = c.load(Relaxed);
    for _ in 0..32 {
        std::hint::spin_loop();
    }
    c.store(v + 1, Relaxed);
}

/// Runs `body` with one started interrupt on a 1-processor machine; returns the bug
/// check's code, parameters and rule, and the handle.
fn violation_of(
    passive: bool,
    body: impl FnOnce(WdfInterruptHandle) + Send,
) -> (u32, [usize; 4], Rule, usize) {
    let m = Machine::new(1);
    let handle = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let cfg = WdfInterruptConfig {
                passive_handling: passive,
                ..WdfInterruptConfig::new(&never, None)
            };
            let intr = pin!(WdfInterrupt::new(cfg, InterruptResource::new(4, level(5))));
            let mut dev = pin!(WdfDevice::new());
            let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
            handle.store(h.as_raw(), Relaxed);
            dev.start().unwrap();
            body(h);
        })
        .unwrap_err();
    (
        err.bug.code,
        err.bug.params,
        err.bug.rule,
        handle.load(Relaxed),
    )
}

#[test]
fn wdf_handle_null_garbage_and_stale_handles_bugcheck_0x10d() {
    for raw in [0usize, 0xDEAD_BEE0] {
        let m = Machine::new(1);
        let err = m
            .run_on(0, || WdfInterruptHandle::from_raw(raw).acquire_lock())
            .unwrap_err();
        assert_eq!(err.bug.code, 0x10D);
        assert_eq!(err.bug.params, [0x5, raw, 0x1027, 0]);
        assert_eq!(err.bug.rule, Rule::WDF_HANDLE);
    }
    // Stale: the object is gone, its slot may even be reused by another object.
    let m = Machine::new(1);
    let stale = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            {
                let intr = pin!(WdfInterrupt::new(
                    WdfInterruptConfig::new(&never, None),
                    InterruptResource::new(4, level(5))
                ));
                let mut dev = pin!(WdfDevice::new());
                stale.store(
                    dev.as_mut()
                        .create_interrupt(intr.as_ref())
                        .unwrap()
                        .as_raw(),
                    Relaxed,
                );
            }
            let again = pin!(WdfInterrupt::new(
                WdfInterruptConfig::new(&never, None),
                InterruptResource::new(4, level(5))
            ));
            let mut dev = pin!(WdfDevice::new());
            let fresh = dev.as_mut().create_interrupt(again.as_ref()).unwrap();
            assert_ne!(fresh.as_raw(), stale.load(Relaxed), "a new generation");
            WdfInterruptHandle::from_raw(stale.load(Relaxed)).synchronize(|_| ());
        })
        .unwrap_err();
    assert_eq!(err.bug.params, [0x5, stale.load(Relaxed), 0x1027, 0]);
    assert_eq!(err.bug.rule, Rule::WDF_HANDLE);
    // Wrong type: a WDFDEVICE where a WDFINTERRUPT belongs.
    let m = Machine::new(1);
    let device = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let dev = pin!(WdfDevice::new());
            let h = dev.as_ref().handle().unwrap();
            device.store(h.as_raw(), Relaxed);
            WdfInterruptHandle::from_raw(h.as_raw()).try_to_acquire_lock();
        })
        .unwrap_err();
    assert_eq!(err.bug.params, [0x5, device.load(Relaxed), 0x1027, 0]);
    assert_eq!(err.bug.rule, Rule::WDF_HANDLE);
}

#[test]
fn wdf_null_synchronize_without_a_callback_bugchecks() {
    let (code, params, rule, _) = violation_of(false, |h| {
        h.synchronize_raw(None, 0, 0x1234);
    });
    assert_eq!(
        (code, params, rule),
        (0x10D, [0x4, 0, 0x1234, 0], Rule::WDF_NULL)
    );
}

#[test]
fn wdf_state_lock_calls_before_start_and_after_stop_bugcheck() {
    for after_stop in [false, true] {
        let m = Machine::new(1);
        let handle = AtomicUsize::new(0);
        let err = m
            .run_on(0, || {
                let intr = pin!(WdfInterrupt::new(
                    WdfInterruptConfig::new(&never, None),
                    InterruptResource::new(4, level(5))
                ));
                let mut dev = pin!(WdfDevice::new());
                let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
                handle.store(h.as_raw(), Relaxed);
                if after_stop {
                    dev.start().unwrap();
                    h.synchronize(|_| ()); // fine while enabled
                    dev.stop();
                }
                h.acquire_lock();
            })
            .unwrap_err();
        assert_eq!(err.bug.code, 0x10D);
        assert_eq!(err.bug.params, [0x9, handle.load(Relaxed), 0, 0]);
        assert_eq!(err.bug.rule, Rule::WDF_STATE);
    }
}

#[test]
fn wdf_recurse_second_acquire_and_acquire_inside_synchronize_bugcheck() {
    let (code, params, rule, h) = violation_of(false, |h| {
        h.acquire_lock();
        h.acquire_lock();
    });
    assert_eq!((code, rule), (0x10D, Rule::WDF_RECURSE));
    assert_eq!(params[0], 0x2);
    assert_eq!(params[1], h);
    assert_ne!(params[2], 0, "the lock's address");
    assert_eq!(params[3], 0);
    // The framework holds the lock inside a synchronize callback.
    let (_, inside, rule, h) = violation_of(false, |h| h.synchronize(|h| h.acquire_lock()));
    assert_eq!(rule, Rule::WDF_RECURSE);
    assert_eq!((inside[0], inside[1], inside[3]), (0x2, h, 0));
    assert_ne!(inside[2], 0);
}

#[test]
fn wdf_release_without_acquire_bugchecks() {
    // SAFETY: not held — exactly the violation the verifier turns into a bug check.
    let (code, params, rule, h) = violation_of(false, |h| unsafe { h.release_lock() });
    assert_eq!(
        (code, params, rule),
        (0x10D, [0xB, h, 1, 0], Rule::WDF_RELEASE)
    );
}

#[test]
fn wdf_passive_irql_passive_lock_above_passive_bugchecks() {
    let (code, params, rule, h) = violation_of(true, |h| {
        let _old = ntspin::raise_irql(Irql::DISPATCH);
        h.acquire_lock();
    });
    assert_eq!(
        (code, params, rule),
        (0xC4, [0xE5, 2, h, 0], Rule::WDF_PASSIVE_IRQL)
    );
}

#[test]
fn wdf_dirql_irql_acquire_above_synchronize_irql_bugchecks() {
    let (code, params, rule, _) = violation_of(false, |h| {
        let _old = ntspin::raise_irql(level(7));
        h.acquire_lock();
    });
    assert_eq!(
        (code, params, rule),
        (0xC4, [0x30, 7, 5, 0], Rule::WDF_DIRQL_IRQL)
    );
}

#[test]
fn wdf_balance_callback_returning_at_another_irql_bugchecks() {
    let (code, params, rule, _) = violation_of(false, |h| {
        h.synchronize(|_| {
            let _ = ntspin::raise_irql(level(6)); // and never lowers
        })
    });
    assert_eq!(
        (code, params, rule),
        (0x10D, [0xE, 5, 6, 0], Rule::WDF_BALANCE)
    );
}

#[test]
fn wdf_try_on_a_dirql_interrupt_or_above_passive_returns_false_with_a_warning() {
    let m = Machine::new(1);
    let r = m
        .run_on(0, || {
            let dirql = pin!(WdfInterrupt::new(
                WdfInterruptConfig::new(&never, None),
                InterruptResource::new(4, level(5))
            ));
            let passive = pin!(WdfInterrupt::new(
                WdfInterruptConfig {
                    passive_handling: true,
                    ..WdfInterruptConfig::new(&never, None)
                },
                InterruptResource::new(5, level(5))
            ));
            let mut dev = pin!(WdfDevice::new());
            let d = dev.as_mut().create_interrupt(dirql.as_ref()).unwrap();
            let p = dev.as_mut().create_interrupt(passive.as_ref()).unwrap();
            dev.start().unwrap();
            let on_dirql = d.try_to_acquire_lock();
            let old = ntspin::raise_irql(Irql::DISPATCH);
            let above = p.try_to_acquire_lock();
            ntspin::lower_irql(old);
            let fine = p.try_to_acquire_lock();
            // SAFETY: taken by the successful try just above.
            unsafe { p.release_lock() };
            dev.stop();
            (on_dirql, above, fine)
        })
        .unwrap();
    assert_eq!(r, (false, false, true));
    let warnings = m.warnings();
    assert_eq!(warnings.len(), 2);
    assert!(warnings.iter().all(|w| w.bug.rule == Rule::WDF_TRY));
    assert!(m.bug_check().is_none(), "warnings never stop the machine");
}

#[test]
fn create_time_validation_returns_kmdfs_status() {
    let isr = |_: WdfInterruptHandle, _: u32| true;
    let dpc = |_: WdfInterruptHandle| {};
    let (spin, wait) = (WdfSpinLock::new(), WdfWaitLock::new());
    let base = WdfInterruptConfig::new(&isr, None);
    let cases: [(WdfInterruptConfig<'_>, NtStatus); 4] = [
        (
            WdfInterruptConfig {
                evt_dpc: Some(&dpc),
                evt_work_item: Some(&dpc),
                ..base
            },
            NtStatus::INVALID_PARAMETER,
        ),
        (
            WdfInterruptConfig {
                wait_lock: Some(&wait),
                ..base
            },
            NtStatus::INVALID_PARAMETER,
        ),
        (
            WdfInterruptConfig {
                passive_handling: true,
                spin_lock: Some(&spin),
                ..base
            },
            NtStatus::INVALID_PARAMETER,
        ),
        (
            WdfInterruptConfig {
                evt_isr: None,
                ..base
            },
            NtStatus::INVALID_PARAMETER,
        ),
    ];
    let m = Machine::new(1);
    m.run_on(0, || {
        for (cfg, want) in cases {
            assert_eq!(cfg.validate(), Err(want));
            let intr = pin!(WdfInterrupt::new(cfg, InterruptResource::new(6, level(5))));
            let mut dev = pin!(WdfDevice::new());
            assert_eq!(dev.as_mut().create_interrupt(intr.as_ref()), Err(want));
            assert!(intr.handle().is_none(), "nothing created");
        }
    })
    .unwrap();
}

#[test]
fn interrupts_sharing_a_spin_lock_synchronize_at_the_highest_dirql() {
    let m = Machine::new(1);
    let spin = WdfSpinLock::new();
    let r = m
        .run_on(0, || {
            let cfg = WdfInterruptConfig {
                spin_lock: Some(&spin),
                ..WdfInterruptConfig::new(&never, None)
            };
            let a = pin!(WdfInterrupt::new(cfg, InterruptResource::new(7, level(5))));
            let b = pin!(WdfInterrupt::new(cfg, InterruptResource::new(8, level(7))));
            let mut dev = pin!(WdfDevice::new());
            let ha = dev.as_mut().create_interrupt(a.as_ref()).unwrap();
            dev.as_mut().create_interrupt(b.as_ref()).unwrap();
            dev.start().unwrap();
            let seen = ha.synchronize(|_| ntspin::current_irql());
            let levels = (a.raw().synchronize_irql(), b.raw().synchronize_irql());
            dev.stop();
            (seen, levels)
        })
        .unwrap();
    assert_eq!(r, (level(7), (level(7), level(7))));
}

/// The enable and disable steps run holding the lock, after connect and before
/// disconnect; `synchronize` works between them.
#[test]
fn enable_and_disable_run_holding_the_lock_around_the_enabled_state() {
    let m = Machine::new(1);
    let log = std::sync::Mutex::new(Vec::new());
    m.run_on(0, || {
        let enable = |h: WdfInterruptHandle| {
            log.lock()
                .unwrap()
                .push(("enable", ntspin::current_irql(), h.is_enabled()));
            NtStatus::SUCCESS
        };
        let disable = |h: WdfInterruptHandle| {
            log.lock()
                .unwrap()
                .push(("disable", ntspin::current_irql(), h.is_enabled()));
            NtStatus::SUCCESS
        };
        let cfg = WdfInterruptConfig {
            evt_enable: Some(&enable),
            evt_disable: Some(&disable),
            ..WdfInterruptConfig::new(&never, None)
        };
        let intr = pin!(WdfInterrupt::new(cfg, InterruptResource::new(9, level(6))));
        let mut dev = pin!(WdfDevice::new());
        let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
        dev.start().unwrap();
        assert!(intr.raw().is_connected());
        h.synchronize(|_| {
            log.lock()
                .unwrap()
                .push(("sync", ntspin::current_irql(), true))
        });
        dev.stop();
        assert!(!intr.raw().is_connected());
        // WdfInterruptEnable / Disable force the same transitions.
        h.enable().unwrap();
        h.disable();
    })
    .unwrap();
    let log = log.into_inner().unwrap();
    let six = level(6);
    assert_eq!(
        log,
        [
            ("enable", six, false),
            ("sync", six, true),
            ("disable", six, false),
            ("enable", six, false),
            ("disable", six, false),
        ]
    );
}

/// ISR (on processor 1) against `acquire_lock` and `synchronize` holders running at once
/// on processors 0 and 2, then against EvtInterruptEnable/Disable cycles: a plain
/// read-modify-write stays exact.
#[test]
fn isr_synchronize_enable_disable_and_acquire_lock_holders_exclude_each_other() {
    for passive in [false, true] {
        let m = Machine::builder()
            .processors(3)
            .verifier(Verifier::Standard)
            .build();
        let shared = AtomicU64::new(0);
        let (isr_runs, holder_adds) = (AtomicU64::new(0), AtomicU64::new(0));
        let handle = std::sync::OnceLock::new();
        let done = Event::new(EventType::Notification, false);
        let isr = |_: WdfInterruptHandle, _: u32| {
            racy_bump(&shared);
            isr_runs.fetch_add(1, Relaxed);
            true
        };
        let on_off = |_: WdfInterruptHandle| {
            racy_bump(&shared);
            holder_adds.fetch_add(1, Relaxed);
            NtStatus::SUCCESS
        };
        std::thread::scope(|s| {
            let owner = s.spawn(|| {
                m.run_on(1, || {
                    let cfg = WdfInterruptConfig {
                        passive_handling: passive,
                        evt_enable: Some(&on_off),
                        evt_disable: Some(&on_off),
                        ..WdfInterruptConfig::new(&isr, None)
                    };
                    let resource = InterruptResource {
                        affinity: 0b10,
                        ..InterruptResource::new(10, level(6))
                    };
                    let intr = pin!(WdfInterrupt::new(cfg, resource));
                    let mut dev = pin!(WdfDevice::new());
                    let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
                    dev.start().unwrap();
                    handle.set(h).unwrap();
                    // Idle at PASSIVE until the holders are done: the interrupt lands here.
                    done.wait(Some(Duration::from_secs(30)));
                    dev.stop();
                })
                .unwrap()
            });
            eventually("the interrupt to be enabled", || handle.get().is_some());
            let h = *handle.get().unwrap();
            let asserter = s.spawn(|| {
                for _ in 0..400 {
                    m.assert_interrupt(10);
                    std::thread::sleep(Duration::from_micros(50));
                }
            });
            let holders: Vec<_> = [0, 2]
                .map(|cpu| {
                    let (m, shared, holder_adds) = (&m, &shared, &holder_adds);
                    s.spawn(move || {
                        m.run_on(cpu, || {
                            for i in 0..300 {
                                if i % 2 == 0 {
                                    let _g = h.lock();
                                    racy_bump(shared);
                                } else {
                                    h.synchronize(|_| racy_bump(shared));
                                }
                                holder_adds.fetch_add(1, Relaxed);
                            }
                        })
                        .unwrap()
                    })
                })
                .into();
            for t in holders {
                t.join().unwrap();
            }
            // WdfInterruptDisable / Enable while interrupts keep coming.
            m.run_on(0, || {
                for _ in 0..20 {
                    h.disable();
                    h.enable().unwrap();
                }
            })
            .unwrap();
            asserter.join().unwrap();
            eventually("the last interrupt", || {
                isr_runs.load(Relaxed) >= 1 && m.interrupts_serviced(10) == isr_runs.load(Relaxed)
            });
            done.set();
            owner.join().unwrap();
        });
        let runs = isr_runs.load(Relaxed);
        assert!(runs > 0, "passive = {passive}");
        assert_eq!(
            shared.load(Relaxed),
            runs + holder_adds.load(Relaxed),
            "passive = {passive}"
        );
    }
}

/// A passive-level interrupt's ISR runs at PASSIVE and may block; `try_to_acquire_lock`
/// fails (nothing held) while it holds the lock and succeeds once it returns. From a queue
/// callback ("arbitrary thread") that is the fix for the deadlock the DDI page describes:
/// a blocking `acquire_lock` there is WDF-ARBITRARY.
#[test]
fn passive_isr_blocks_at_passive_and_try_lock_is_the_arbitrary_thread_fix() {
    let m = Machine::new(2);
    let go = Event::new(EventType::Notification, false);
    let (entered, irql_seen) = (AtomicU32::new(0), AtomicU32::new(99));
    let wait = WdfWaitLock::new();
    let isr = |_: WdfInterruptHandle, _: u32| {
        irql_seen.store(ntspin::current_irql().raw().into(), Relaxed);
        entered.fetch_add(1, Relaxed);
        go.wait(Some(Duration::from_secs(10))); // a slow bus transfer
        true
    };
    let handle = AtomicUsize::new(0);
    let err = m
        .run_on(0, || {
            let cfg = WdfInterruptConfig {
                passive_handling: true,
                wait_lock: Some(&wait),
                ..WdfInterruptConfig::new(&isr, None)
            };
            let resource = InterruptResource {
                affinity: 0b10,
                ..InterruptResource::new(11, level(6))
            };
            let intr = pin!(WdfInterrupt::new(cfg, resource));
            let mut dev = pin!(WdfDevice::new());
            let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
            handle.store(h.as_raw(), Relaxed);
            dev.start().unwrap();
            m.assert_interrupt(11);
            eventually("the ISR", || entered.load(Relaxed) == 1);
            // The queue callback: TryToAcquireLock fails while the ISR holds the lock...
            let tried = arbitrary_thread(|| h.try_to_acquire_lock());
            assert!(!tried, "the ISR holds the lock");
            go.set();
            // ...and succeeds once it is done.
            eventually("the lock to be free", || {
                arbitrary_thread(|| {
                    let got = h.try_to_acquire_lock();
                    if got {
                        // SAFETY: taken by the successful try just above.
                        unsafe { h.release_lock() };
                    }
                    got
                })
            });
            // The blocking acquire in a queue callback is what the verifier forbids.
            arbitrary_thread(|| h.acquire_lock());
        })
        .unwrap_err();
    assert_eq!(irql_seen.load(Relaxed), 0, "the ISR ran at PASSIVE");
    assert_eq!(err.bug.code, 0x10D);
    assert_eq!(err.bug.params, [0xB, handle.load(Relaxed), 2, 0]);
    assert_eq!(err.bug.rule, Rule::WDF_ARBITRARY);
}

/// `queue_dpc_for_isr` returns `false` while queued; the DPC runs at DISPATCH holding the
/// device's callback lock with automatic serialization.
#[test]
fn queue_dpc_for_isr_and_automatic_serialization() {
    let m = Machine::new(1);
    let seen = std::sync::Mutex::new(None);
    let (first, second) = m
        .run_on(0, || {
            let dev_lock_addr = AtomicUsize::new(0);
            let dpc = |_: WdfInterruptHandle| {
                // SAFETY: the device (and its lock) outlives the DPC run (stop flushes).
                let lock = unsafe {
                    ntspin::RawSpinLock::from_ptr(dev_lock_addr.load(Relaxed) as *mut usize)
                };
                // KeTestSpinLock: `false` while held.
                *seen.lock().unwrap() = Some((ntspin::current_irql(), !lock.test()));
            };
            let cfg = WdfInterruptConfig {
                automatic_serialization: true,
                ..WdfInterruptConfig::new(&never, Some(&dpc))
            };
            let intr = pin!(WdfInterrupt::new(cfg, InterruptResource::new(12, level(5))));
            let mut dev = pin!(WdfDevice::new());
            let h = dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
            dev_lock_addr.store(dev.callback_lock().addr(), Relaxed);
            dev.start().unwrap();
            let old = ntspin::raise_irql(Irql::DISPATCH);
            let r = (h.queue_dpc_for_isr(), h.queue_dpc_for_isr());
            ntspin::lower_irql(old); // the DPC runs here
            dev.stop();
            r
        })
        .unwrap();
    assert_eq!((first, second), (true, false));
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Irql::DISPATCH, true)),
        "at DISPATCH, holding the callback lock"
    );
}

/// EvtInterruptWorkItem: queued from the ISR, runs at PASSIVE on the worker (and may
/// block), under the device's passive callback lock with automatic serialization;
/// `queue_work_item_for_isr` returns `false` while it is queued; stop flushes it. One
/// processor, so the item cannot start between the ISR's two queue calls.
#[test]
fn queue_work_item_for_isr_runs_at_passive_and_stop_flushes_it() {
    let m = Machine::new(1);
    let (runs, queued_twice) = (AtomicU32::new(0), AtomicU32::new(0));
    let seen = std::sync::Mutex::new(Vec::new());
    let isr = |h: WdfInterruptHandle, _: u32| {
        if h.queue_work_item_for_isr() && !h.queue_work_item_for_isr() {
            queued_twice.fetch_add(1, Relaxed);
        }
        true
    };
    let work = |_: WdfInterruptHandle| {
        std::thread::sleep(Duration::from_millis(2)); // blocks: allowed at PASSIVE
        seen.lock().unwrap().push(ntspin::current_irql());
        runs.fetch_add(1, Relaxed);
    };
    m.run_on(0, || {
        let cfg = WdfInterruptConfig {
            evt_work_item: Some(&work),
            automatic_serialization: true,
            ..WdfInterruptConfig::new(&isr, None)
        };
        let intr = pin!(WdfInterrupt::new(cfg, InterruptResource::new(13, level(6))));
        let mut dev = pin!(WdfDevice::new());
        dev.as_mut().create_interrupt(intr.as_ref()).unwrap();
        dev.start().unwrap();
        for i in 1..=3 {
            m.assert_interrupt(13);
            eventually("the work item", || runs.load(Relaxed) == i);
        }
        m.assert_interrupt(13);
        dev.stop(); // waits for the last work item
    })
    .unwrap();
    assert_eq!(runs.load(Relaxed), 4, "stop flushed the last one");
    assert_eq!(
        queued_twice.load(Relaxed),
        4,
        "a second queue returns false"
    );
    assert!(seen.lock().unwrap().iter().all(|&i| i == Irql::PASSIVE));
}

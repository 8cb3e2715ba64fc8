//! The hosted HAL: [`ntspin::Hal`] for the user-mode machine. Registered for the whole
//! program by this crate (`ntspin::set_hal!(SimHal)`).
//!
//! The hot path — IRQL read, raise, lower, the owner tag — is a thread-local load plus
//! plain loads and stores on the processor's own cache line; with the verifier off that
//! is all, and with fat LTO it inlines into the lock routines. With the verifier on, the
//! steady state is judged inline too (`lock_event_fast`, and the fast tests in
//! `raise_irql` / `lower_irql`); the full checks live out of line (`*_full`).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use ntspin::bugcheck::verifier as sub;
use ntspin::hal::{AcquireKind, LockEvent, Prcb, SpinWait};
use ntspin::interrupt::KInterrupt;
use ntspin::{BugCheck, Irql, NtStatus, Rule};

use crate::interrupts;
use crate::processor::{self, HeldState, Processor, wants};
use crate::stop;
use crate::verifier;
use crate::watchdog;

/// Spins (each one `pause`) before a processor spinning on a lock word starts giving its
/// host core back.
const SPINS_BEFORE_YIELD: u32 = 128;

/// The same for a processor queued behind others (or waiting for its successor to link).
/// A queue hand-over between running processors takes well under a microsecond; a wait
/// longer than this means the chain is stalled on a processor whose thread the host
/// descheduled, and the fastest way to restart it is to give it this core.
const QUEUED_SPINS_BEFORE_YIELD: u32 = 8;

/// How often a blocked wait looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The user-mode machine's HAL.
#[derive(Debug)]
pub struct SimHal;

ntspin::set_hal!(SimHal);

impl ntspin::Hal for SimHal {
    #[inline(always)]
    fn current_prcb() -> &'static Prcb {
        processor::current_prcb()
    }

    #[inline(always)]
    fn current_irql() -> Irql {
        let p = processor::current();
        if p.stop_requested() {
            stop::stop_here(p);
        }
        p.irql()
    }

    #[inline(always)]
    fn raise_irql(new: Irql) -> Irql {
        // The steady state (a processor that only verifies, a real raise) inline; the rest
        // out of line.
        let prcb = processor::current_prcb();
        let cur = prcb.irql();
        if processor::fast_bits(prcb.hal_wants_bits()) && new >= cur && new <= Irql::HIGH {
            prcb.set_irql(new);
            return cur;
        }
        raise_irql_full(new)
    }

    #[inline(always)]
    fn lower_irql(new: Irql) {
        // Also nothing pending: a pending delivery runs on the full path.
        let prcb = processor::current_prcb();
        if prcb.hal_wants_bits() == wants::VERIFY {
            // SAFETY: `UNATTACHED`'s only reason is `ATTACH`, so `prcb` belongs to an
            // attached processor (see `processor::fast_current`).
            let p = unsafe { processor::attached(prcb) };
            if verifier::fast_lower(p, new) {
                return;
            }
        }
        lower_irql_full(new)
    }

    #[inline(always)]
    fn current_processor() -> u32 {
        processor::current().index
    }

    #[inline]
    fn spin_wait(spins: u32, wait: SpinWait) {
        if spins % 64 == 0 {
            let p = processor::current();
            injection_point(p);
            if spins % watchdog::HANG_CHECK_SPINS == 0 && p.verifies() {
                hang_check(p, spins, wait);
            }
            if p.stop_requested() {
                match wait {
                    // In a signal handler (an ISR or DPC spinning on a lock that a stopped
                    // processor holds) nothing can unwind: freeze like a queued waiter,
                    // so dropping the machine never waits for it.
                    SpinWait::Acquire if p.in_handler.load(Relaxed) > 0 => {
                        stop::freeze_if_stuck(p, spins)
                    }
                    SpinWait::Acquire => stop::stop_here(p),
                    // Linked into a queue: cannot leave. Wait for the grant a little; if it
                    // never comes (the owner was stopped holding it), freeze the processor.
                    SpinWait::Queued | SpinWait::Handoff => stop::freeze_if_stuck(p, spins),
                }
            }
        }
        let limit = match wait {
            SpinWait::Acquire => SPINS_BEFORE_YIELD,
            SpinWait::Queued | SpinWait::Handoff => QUEUED_SPINS_BEFORE_YIELD,
        };
        if spins > limit {
            // More virtual processors than host cores: the owner (or the waiter a queued
            // lock just handed to) may be waiting for this core.
            std::thread::yield_now();
        }
    }

    #[inline(always)]
    fn lock_event(event: &LockEvent) {
        // The lock routines try `lock_event_fast` first for the events it judges; other
        // events come straight here.
        lock_event_full(*event);
    }

    #[inline(always)]
    fn lock_event_fast(event: &LockEvent) -> bool {
        // The steady state (an attached processor that only verifies, a free lock, a
        // release in order), small enough to inline into the lock routines. A copy: the
        // caller's event then lives in registers.
        let event = *event;
        match processor::fast_current() {
            Some(p) => verifier::fast_event(p, &event),
            None => false,
        }
    }

    fn bug_check(bug: BugCheck) -> ! {
        let p = processor::current();
        stop::raise(p, bug);
        // `raise` returns only when the thread is already unwinding from a panic, and a
        // second unwind would abort anyway: say why first.
        eprintln!("ntspin: bug check {bug} raised while unwinding from a panic; aborting");
        std::process::abort()
    }

    fn prcb_of(n: u32) -> Option<&'static Prcb> {
        let m = processor::current().machine();
        let target = m.processors.get(n as usize)?;
        if m.is_default && !target.in_use.load(Relaxed) {
            return None;
        }
        Some(&target.prcb)
    }

    fn request_dpc(target: &'static Prcb) {
        let t = processor::of_prcb(target)
            .expect("DPCs are queued on processors (KDpc::insert attaches the thread first)");
        t.prcb.add_hal_wants(wants::PENDING);
        match processor::current_if_attached() {
            Some(me) if std::ptr::eq(me, t) => {
                if me.irql() < Irql::DISPATCH {
                    interrupts::dispatch_pending(me);
                }
            }
            _ => interrupts::kick(t),
        }
    }

    fn disable_interrupts() -> bool {
        let p = processor::current();
        let enabled = p.masked.load(Relaxed) == 0;
        p.mask();
        enabled
    }

    fn restore_interrupts(enabled: bool) {
        let p = processor::current();
        // The mask is a depth count, so the pairing alone decides; `enabled` must agree.
        debug_assert_eq!(
            enabled,
            p.masked.load(Relaxed) == 1,
            "unpaired restore_interrupts"
        );
        p.unmask();
    }

    unsafe fn connect_interrupt(obj: NonNull<KInterrupt>) -> Result<(), NtStatus> {
        let p = processor::current();
        let m = p.machine();
        if m.is_default {
            panic!(
                "ntspin-sim: interrupts are connected on a Machine's processors; build one \
                 (ntspin_sim::Machine::new) and connect from a routine run on it"
            );
        }
        // SAFETY: the caller keeps the object alive and in place until disconnected.
        m.controller.connect(m, unsafe { obj.as_ref() })
    }

    fn disconnect_interrupt(obj: NonNull<KInterrupt>) {
        // SAFETY: the core calls this for a connected object, which is alive.
        let o = unsafe { obj.as_ref() };
        let p = processor::current();
        let m = p.machine();
        if m.controller.find(o.addr()).is_some() {
            m.controller.disconnect(o);
            return;
        }
        // Dropped on a thread of another machine (or none: a host thread after its
        // machine stopped): disconnect it where it is connected, never leave a dangling
        // pointer in a controller.
        if let Some(owner) = crate::machine::machine_connecting(o.addr()) {
            owner.controller.disconnect(o);
        }
    }

    fn wait_on(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> bool {
        let deadline = timeout_ns.map(|ns| Instant::now() + Duration::from_nanos(ns));
        let p = processor::current();
        injection_point(p);
        loop {
            if word.load(Relaxed) != expected {
                return true;
            }
            if p.stop_requested() {
                if p.in_handler.load(Relaxed) > 0 {
                    // A passive-level routine waiting inside the handler cannot unwind and
                    // must not wait for good: it freezes, like any interrupt-context stop.
                    stop::freeze(p);
                }
                // The machine bug-checked elsewhere: a wait at PASSIVE is a safe point.
                stop::stop_here(p);
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r.min(STOP_POLL)),
                    _ => return false,
                },
                // Sliced, so a stop request is seen without a signal.
                None => Some(STOP_POLL),
            };
            let ts = remaining.map(|r| libc::timespec {
                tv_sec: r.as_secs() as libc::time_t,
                tv_nsec: r.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            if p.prcb.hal_wants_bits() & wants::INJECT != 0 {
                // Deterministic delivery signals a blocked processor: say so, then take
                // what arrived before (pairs with the fence in `kick`).
                p.blocked.store(true, SeqCst);
                std::sync::atomic::fence(SeqCst);
                if p.irr.load(SeqCst) != 0 && p.in_handler.load(Relaxed) == 0 {
                    p.blocked.store(false, SeqCst);
                    let before = p.irr.load(SeqCst);
                    interrupts::dispatch_pending(p);
                    if p.irr.load(SeqCst) != before {
                        continue; // something was taken: look at the word again
                    }
                    // Nothing deliverable at this IRQL: block; new requests signal.
                    p.blocked.store(true, SeqCst);
                }
            }

            // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (alive for the call)
            // and the optional relative timeout.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    expected,
                    ts_ptr,
                )
            };
            p.blocked.store(false, SeqCst);
            if r == 0 {
                return true;
            }
            match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
                libc::EAGAIN => return true,
                libc::ETIMEDOUT => {} // a slice ended: the deadline decides
                _ => {}               // EINTR: an interrupt was taken; look again
            }
        }
    }

    unsafe fn queue_work_item(item: NonNull<ntspin::workitem::KWorkItem>) {
        // Asking for the processor number attaches a thread that is no processor yet.
        let _ = processor::current().index;
        let p = processor::current();
        let m = p.machine();
        // SAFETY: the caller's contract: valid until it has run; `queue` handed it over
        // once (its QUEUED bit was clear), so it is on no queue.
        unsafe { m.work_items.push(item) };
        interrupts::announce_work_item(m);
        if p.irql() == Irql::PASSIVE {
            // Like Windows' higher-priority worker threads: run soon — handed to an idle
            // processor if there is one, else here, now (a PASSIVE HAL call is a point where
            // the worker may preempt).
            interrupts::dispatch_pending(p);
        }
    }

    fn wake(word: &AtomicU32, count: u32) {
        let n = count.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                n,
            )
        };
        // Waking a thread is a point where Windows would switch to the passive-level
        // worker, e.g. right after a wait lock is freed.
        if let Some(p) = processor::current_if_attached()
            && p.prcb.hal_wants_bits() & wants::PENDING != 0
            && p.irql() == Irql::PASSIVE
        {
            interrupts::dispatch_pending(p);
        }
    }
}

/// [`SimHal::raise_irql`] beyond the fast path.
#[cold]
#[inline(never)]
fn raise_irql_full(new: Irql) -> Irql {
    let p = processor::current();
    injection_point(p);
    let cur = p.irql();
    if p.verifies() {
        check_raise(p, cur, new);
    } else if p.stop_requested() {
        stop::stop_here(p); // before an acquire: a safe point
    }
    p.prcb.set_irql(new);
    cur
}

/// [`SimHal::lower_irql`] beyond the fast path.
#[cold]
#[inline(never)]
fn lower_irql_full(new: Irql) {
    let p = processor::current();
    if p.verifies() {
        let cur = p.irql();
        if new < Irql::DISPATCH && cur >= Irql::DISPATCH {
            verifier::count_lowered(p);
        }
        check_lower(p, cur, new);
    } else if p.stop_requested() {
        // After a release is a safe point to stop (the lock is already free).
        stop::stop_here(p);
    }
    p.prcb.set_irql(new);
    if p.prcb.hal_wants_bits() & wants::PENDING != 0 {
        // Lazy IRQL: what was requested while the level masked it runs now.
        interrupts::dispatch_pending(p);
    }
    injection_point(p);
}

/// [`SimHal::lock_event`]: every check (see `verifier::on_event`).
#[cold]
#[inline(never)]
fn lock_event_full(event: LockEvent) {
    let p = processor::current();
    injection_point(p);
    if p.verifies() {
        // The verifier's tables are this processor's: an interrupt must not find them
        // half-updated.
        p.mask();
        let guard = Unmask(p);
        verifier::on_event(p, &event);
        drop(guard);
    } else if event.is_stop_point() && p.stop_requested() {
        stop::stop_here(p);
    }
}

/// A HAL call is an injection point under deterministic delivery (one load and test
/// otherwise).
#[inline(always)]
fn injection_point(p: &Processor) {
    if p.prcb.hal_wants_bits() & wants::INJECT != 0 {
        interrupts::injection_point(p);
    }
}

/// Unmasks on drop, so a bug check unwinding out of the verifier leaves the processor
/// unmasked for whatever runs next on it.
struct Unmask<'a>(&'a Processor);

impl Drop for Unmask<'_> {
    fn drop(&mut self) {
        self.0.unmask();
    }
}

#[cold]
#[inline(never)]
fn check_raise(p: &Processor, cur: Irql, new: Irql) {
    if !verifier::entry(p, true) {
        return;
    }
    if new < cur || new > Irql::HIGH {
        let bug = BugCheck::verifier(
            sub::IRQL_RAISE_LOWER,
            cur.raw().into(),
            new.raw().into(),
            0,
            Rule::IRQL_RAISE,
        );
        verifier::violation(p, bug, true);
    }
}

/// DL-HANG from a spin-wait: a waiter that spun past the watchdog's limit on a lock
/// that never changed hands stops the machine (unwinding where it may, freezing where it
/// is linked into a queue or runs in interrupt context).
#[cold]
fn hang_check(p: &Processor, spins: u32, wait: SpinWait) {
    if !p.machine().watchdog.enabled || p.stopping.load(Relaxed) {
        return;
    }
    let Some(bug) = watchdog::spin_check(p, spins) else {
        return;
    };
    if p.in_handler.load(Relaxed) > 0 {
        stop::raise_in_interrupt(p, bug);
    }
    let _own = crate::alloc::Exempt::new();
    let report = watchdog::hang_report(p, bug);
    match wait {
        SpinWait::Acquire => stop::raise_report(p, report),
        SpinWait::Queued | SpinWait::Handoff => {
            p.machine().stop(report);
            stop::freeze(p);
        }
    }
}

#[cold]
#[inline(never)]
fn check_lower(p: &Processor, cur: Irql, new: Irql) {
    if !verifier::entry(p, true) {
        return;
    }
    let (c, n) = (cur.raw().into(), new.raw().into());
    if new > cur || new > Irql::HIGH {
        let bug = BugCheck::verifier(sub::IRQL_LOWER_HIGHER, c, n, 0, Rule::IRQL_LOWER);
        verifier::violation(p, bug, true);
    } else if new < Irql::DISPATCH && p.in_dpc.load(Relaxed) > 0 {
        let bug = BugCheck::verifier(sub::IRQL_LOWER_HIGHER, c, n, 1, Rule::IRQL_LOWER_DPC);
        verifier::violation(p, bug, true);
    } else if (new < Irql::DISPATCH && holds_any(p)) || holds_interrupt_lock_above(p, new) {
        let bug = BugCheck::verifier(sub::IRQL_LOWER_HIGHER, c, n, 2, Rule::IRQL_LOWER_HELD);
        verifier::violation(p, bug, true);
    }
}

/// Whether the code running on `p` (its current context) holds a lock. Entries of
/// interrupted contexts do not count: an interrupt (and the DPCs or passive routine run
/// after it) may arrive between an acquire's checks and its raise, and lowers on its own
/// account.
fn holds_any(p: &Processor) -> bool {
    p.context().any(|i| p.held(i).state == HeldState::Held)
}

/// Whether the current context of `p` holds an interrupt spin lock whose SynchronizeIrql
/// is above `level`.
fn holds_interrupt_lock_above(p: &Processor, level: Irql) -> bool {
    let m = p.machine();
    p.context().any(|i| {
        let h = p.held(i);
        h.state == HeldState::Held
            && h.kind == AcquireKind::Interrupt
            && m.controller
                .find(h.handle)
                .is_some_and(|obj| obj.synchronize_irql() > level)
    })
}

//! The spin-lock verifier: every rule of the `IRQL`, `Executive spin locks` and
//! `In-stack queued` sections of `RULES.md` that a run can break, judged from the lock
//! routines' [`LockEvent`]s, in the order of checks `RULES.md` fixes (validity, IRQL,
//! mode, ownership).
//!
//! State: each processor's held-lock list (what it holds or is acquiring, with the mode,
//! the queue handle and the saved IRQL) and the lock words themselves. A lock word is only
//! trusted when the machine can account for it: an ordinary word must name a processor that
//! exists, a queued word must be a queue entry some processor has listed. Everything else
//! is garbage (SL-INIT), caught before it is dereferenced or spun on forever.
//!
//! Locks are judged within one machine (plus the machines a lock word names); a lock that
//! is used by two machines at the same time is outside what the verifier models.
//!
//! Two paths judge the same rules. The fast path ([`fast_event`], [`fast_lower`], and the
//! raise in `hal.rs`) is inlined into the lock routines through `Hal::lock_event_fast` and
//! clears the steady state — an ordinary acquire of a free word at a legal IRQL whose
//! lock-order chain this processor validated before, the in-order release of the newest
//! lock, a lowering with nothing held — and records it in the held-lock list. Its tests
//! are conservative: whatever they cannot clear (any violation among them) is left to the
//! full path ([`on_event`], `check_raise`, `check_lower`), which reports it. The full path
//! also runs for every event while `wants::SLOW` is up (a stop, a pending ALLOC-IRQL
//! report, releases waiting to be purged, a C caller's `OldIrql` slot) and under
//! deterministic delivery, whose injection points are the HAL calls.

use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ntspin::bugcheck::{code, verifier as sub};
use ntspin::hal::{AcquireKind, LockEvent, ReleaseKind};
use ntspin::{BugCheck, Irql, Rule};

use crate::machine::{self, MachineShared, Verifier};
use crate::processor::{Held, HeldState, Processor, held_ordinary, pack, saved_bits};
use crate::report::ReportDetail;
use crate::stop;

/// How many consecutive long-spin reports may find a lock word's owner unaccounted for
/// before the word is declared garbage.
const STRIKES: u32 = 3;

/// Common entry: `false` when this processor is unwinding (no checks then); stops it if
/// the machine has bug-checked elsewhere and this is a point where it may stop.
#[inline]
pub(crate) fn entry(p: &Processor, may_stop: bool) -> bool {
    if p.stopping.load(Relaxed) {
        return false;
    }
    if may_stop && p.stop_requested() {
        stop::stop_here(p);
        return false;
    }
    if p.alloc_size.load(Relaxed) != 0 {
        crate::alloc::raise_noted(p);
    }
    true
}

/// Reports a violation: recorded and survived in continue mode when `continuable`,
/// otherwise a bug check.
pub(crate) fn violation(p: &Processor, bug: BugCheck, continuable: bool) {
    violation_with(p, bug, continuable, Vec::new());
}

/// [`violation`] with the findings a report shows beyond the parameters.
pub(crate) fn violation_with(
    p: &Processor,
    bug: BugCheck,
    continuable: bool,
    details: Vec<ReportDetail>,
) {
    let _own = crate::alloc::Exempt::new();
    if continuable && p.verifier == Verifier::StandardContinue {
        stop::record_live_dump(p, bug, details);
    } else {
        stop::raise_with(p, bug, details);
    }
}

/// The fast path: a steady-state ordinary-mode acquire (`KeAcquireSpinLock`,
/// `KeAcquireSpinLockAtDpcLevel`) of a free lock, and its release, judged by the same rules
/// as [`on_event`] in a few dozen instructions. Whether the event was judged; `false`
/// leaves it to [`on_event`] — for any other event, any rule the fast tests cannot clear
/// (they are conservative: a violation always goes the full way, which reports it), a busy
/// lock word, and an acquisition whose lock-order chain this processor has not validated
/// yet. (A pending stop and the rest of what [`wants::SLOW`](crate::processor::wants)
/// stands for keep the caller from calling at all.)
///
/// The caller has checked [`fast_bits`](crate::processor::fast_bits). Nothing here masks
/// interrupts: an interrupt (a signal handler on this thread) runs to completion and leaves
/// the held list as it found it, and each update leaves a state it may find (see
/// `Processor::push_ordinary` and `Processor::pop_released`).
#[inline(always)]
pub(crate) fn fast_event(p: &Processor, event: &LockEvent) -> bool {
    match *event {
        LockEvent::Acquire {
            lock,
            kind: kind @ (AcquireKind::Raise | AcquireKind::AtDpc),
            handle: 0,
            site,
            class,
        } => fast_acquire(p, lock, kind, site, class),
        LockEvent::Release {
            lock,
            kind: kind @ (ReleaseKind::Lower | ReleaseKind::FromDpc),
            new_irql,
            ..
        } => fast_release(p, lock, kind, new_irql),
        _ => false,
    }
}

#[inline(always)]
fn fast_acquire(
    p: &Processor,
    lock: usize,
    kind: AcquireKind,
    site: &'static Location<'static>,
    class: Option<&'static Location<'static>>,
) -> bool {
    let cur = p.irql();
    let raises = kind == AcquireKind::Raise;
    // 2. IRQL (SL-ACQ-IRQL, SL-ATDPC-IRQL).
    if (raises && cur > Irql::DISPATCH) || (!raises && cur < Irql::DISPATCH) {
        return false;
    }
    // 1. Validity and 3. mode: a free word is valid in either mode.
    if word_of(lock).load(Relaxed) != 0 {
        return false;
    }
    // 4. Ownership: the word is free, so no processor owns the lock (a word zeroed while
    // held — `KeInitializeSpinLock` on a held lock — is not seen, as on Windows).
    let level = if raises { Irql::DISPATCH } else { cur };
    // 6. Order: a chain this processor validated before needs no graph; a new one goes the
    // full way.
    let order = if p.tracks_order() {
        let key = p.order_key(lock, class_addr(class));
        let chain = p.chain_next(key, level);
        if !crate::order::known(p, chain) {
            return false;
        }
        Some((key, chain))
    } else {
        None
    };
    let meta = pack(kind, raises.then_some(cur), HeldState::Held, level);
    p.push_ordinary(lock, meta, site, order).is_some()
}

#[inline(always)]
fn fast_release(p: &Processor, lock: usize, kind: ReleaseKind, new_irql: Option<Irql>) -> bool {
    let cur = p.irql();
    let lowers = kind == ReleaseKind::Lower;
    // 2. IRQL (SL-REL-IRQL, SL-FROMDPC-IRQL).
    if (lowers && cur != Irql::DISPATCH) || (!lowers && cur < Irql::DISPATCH) {
        return false;
    }
    // 3. Mode and 4. ownership: the newest lock of this context (releases out of order go
    // the full way), held in ordinary mode.
    let Some((top, meta)) = p.top_of_context() else {
        return false;
    };
    if top != lock || !held_ordinary(meta) {
        return false;
    }
    let saved = saved_bits(meta);
    // SL-OLDIRQL: back to the level the acquire saved.
    if lowers
        && let Some(new) = new_irql
        && saved != 0
        && saved != u32::from(new.raw()) + 1
    {
        return false;
    }
    // Unmasked: two stores, each leaving a state an interrupt may find (it starts its own
    // context above whatever this one lists, and restores `released` when it returns).
    p.pop_released(lock);
    let r = &p.watch.releases;
    r.store(r.load(Relaxed).wrapping_add(1), Relaxed);
    true
}

/// The fast path of a lowering (`KeLowerIrql`, the end of `KeReleaseSpinLock`): whether
/// it was judged, and done. The caller saw only [`wants::VERIFY`](crate::processor::wants)
/// in the processor's `hal_wants` (nothing pending to deliver). `false` (a rule the fast
/// tests cannot clear) leaves everything to the full path.
#[inline(always)]
pub(crate) fn fast_lower(p: &Processor, new: Irql) -> bool {
    let cur = p.irql();
    // IRQL-LOWER: not up (and so never above HIGH).
    if new > cur {
        return false;
    }
    if new < Irql::DISPATCH {
        // IRQL-LOWER-DPC, IRQL-LOWER-HELD (anything listed in this context: the full path
        // looks closer).
        if p.in_dpc.load(Relaxed) > 0 || p.context_lists_any() {
            return false;
        }
        if cur >= Irql::DISPATCH {
            count_lowered(p);
        }
    } else if p.context_holds_interrupt_lock() {
        // An interrupt spin lock is held: the full path compares its SynchronizeIrql.
        return false;
    }
    p.prcb.set_irql(new);
    // An interrupt taken since the test may have left something pending at this level
    // (the handler runs on this thread: a compiler fence orders the look after the store).
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    if p.prcb.hal_wants_bits() & crate::processor::wants::PENDING != 0 {
        deliver_pending(p);
    }
    true
}

#[cold]
#[inline(never)]
fn deliver_pending(p: &Processor) {
    crate::interrupts::dispatch_pending(p);
}

/// A lowering below DISPATCH from DISPATCH or above ends a stay there (the watchdog's
/// SL-HOLDTIME). A load and a store: the only other writers are interrupt dispatches on
/// this thread, which count only when they interrupted code below DISPATCH, and the caller
/// runs at DISPATCH or above until it stores the new level.
#[inline(always)]
pub(crate) fn count_lowered(p: &Processor) {
    let l = &p.watch.lowered;
    l.store(l.load(Relaxed).wrapping_add(1), Relaxed);
}

#[cold]
#[inline(never)]
pub(crate) fn on_event(p: &Processor, event: &LockEvent) {
    if !entry(p, event.is_stop_point()) {
        return;
    }
    p.purge_released();
    match *event {
        LockEvent::Acquire {
            lock,
            kind,
            handle,
            site,
            class,
        } => acquire(p, lock, kind, handle, site, class_addr(class)),
        LockEvent::Acquired { lock, old_irql, .. } => acquired(p, lock, old_irql),
        LockEvent::OldIrqlSlot { lock, slot } => oldirql_slot(p, lock, slot),
        LockEvent::Retired { lock } => crate::order::retire(p.machine(), lock),
        LockEvent::TryFailed { lock } => {
            take_try_class(p, lock);
            if let Some(i) = p.find(lock) {
                p.remove(i);
            }
        }
        LockEvent::QueuedBehind { lock, handle, pred } => queued_behind(p, lock, handle, pred),
        LockEvent::Waiting { lock } => {
            if let Some(i) = p.find(lock) {
                p.set_state(i, HeldState::Acquiring);
            }
        }
        LockEvent::Contended { lock, word } => contended(p, lock, word),
        LockEvent::Release {
            lock,
            kind,
            handle,
            new_irql,
        } => release(p, lock, kind, handle, new_irql),
        LockEvent::Connect { .. } => {
            if p.irql() != Irql::PASSIVE {
                let name = Rule::CONN_PARAMS.name_ptr();
                let bug =
                    BugCheck::verifier(sub::CONNECT_NOT_PASSIVE, name, 0, 0, Rule::CONN_PARAMS);
                violation(p, bug, false);
            }
        }
        LockEvent::Wait {
            irql_addr,
            object,
            timeout_addr,
            timeout_ns,
        } => wait(p, irql_addr, object, timeout_addr, timeout_ns),
        LockEvent::Violation { bug, continuable } => violation(p, bug, continuable),
        LockEvent::Warning { bug } => stop::record_warning(p, bug),
        LockEvent::FreedWhileHeld { lock, word } if held_by_stopped_machine(word) => {
            // Held by a processor of a machine that bug-checked: it will never release
            // it, and tearing down after a bug check is no new violation.
            let _ = lock;
        }
        LockEvent::FreedWhileHeld { lock, word } if abandoned(p.machine(), lock, word) => {
            // Its owner no longer lists it: a bug check ended the routine that held it
            // (and reset that processor), so it was abandoned, not leaked.
        }
        LockEvent::FreedWhileHeld { lock, word } => {
            // A queue entry nobody lists any more is a handle this processor just released
            // on its way out (handles never leave their processor).
            let owner = owner_of(p.machine(), lock, word).unwrap_or(p.index as usize);
            let bug = BugCheck::verifier(
                sub::LOCK_FREED_WHILE_HELD,
                lock,
                owner,
                0,
                Rule::DL_FREE_HELD,
            );
            violation(p, bug, false);
        }
    }
}

/// Whether a lock being destroyed while its word says "held" was abandoned by a bug
/// check rather than leaked: no processor lists it any more. (A `LockQueueHandle` being
/// dropped reports its own entry, which it has just released: the word no longer names
/// it, and that is a leak.)
fn abandoned(m: &MachineShared, lock: usize, word: usize) -> bool {
    if word & 1 == 1 {
        return !ordinary_owner_lists(m, lock, word);
    }
    word_of(lock).load(Relaxed) == word && !queue_entry_live(m, lock, word)
}

/// Whether an ordinary lock word names a processor of a machine that has bug-checked.
fn held_by_stopped_machine(word: usize) -> bool {
    if word & 1 == 0 {
        return false; // queued mode: the word is an entry address, no machine in it
    }
    let (id, _) = decode_tag(word);
    machine::machine_by_id(id).is_some_and(|m| m.first_bug_check().is_some())
}

fn word_of(lock: usize) -> &'static AtomicUsize {
    // SAFETY: `Acquire`, `QueuedBehind` and `Contended` events come from methods of a live
    // `&RawSpinLock` at address `lock`, which is `repr(transparent)` over an `AtomicUsize`;
    // the reference is only used during this event.
    unsafe { &*(lock as *const AtomicUsize) }
}

fn acquire(
    p: &Processor,
    lock: usize,
    kind: AcquireKind,
    handle: usize,
    site: &'static Location<'static>,
    class: usize,
) {
    let m = p.machine();
    let key = p.order_key(lock, class);
    let cur = p.irql();
    let queued = kind.is_queued();

    // 1. Validity: a word the machine cannot account for is garbage.
    let word = match judge_word(m, lock) {
        Ok(w) => w,
        Err(_) => {
            let bug = BugCheck::verifier(sub::UNINITIALIZED_LOCK, lock, 0, 0, Rule::SL_INIT);
            return violation(p, bug, false);
        }
    };

    // 1b (interrupt locks: the object must be a connected one, ISL-OBJ), then 2. IRQL.
    let c = usize::from(cur.raw());
    let mut sync_irql = None;
    match kind {
        AcquireKind::Interrupt => {
            let Some(obj) = m.controller.find(handle) else {
                let bug =
                    BugCheck::verifier(sub::BAD_INTERRUPT_OBJECT, handle, 0, 0, Rule::ISL_OBJ);
                return violation(p, bug, false);
            };
            let sync = obj.synchronize_irql();
            sync_irql = Some(sync);
            if cur > sync {
                let s = sync.raw().into();
                let bug = BugCheck::verifier(sub::IRQL_RAISE_LOWER, c, s, 0, Rule::ISL_IRQL);
                violation(p, bug, true);
            }
        }
        // The dispatcher runs at the line's DIRQL (raised to SynchronizeIrql);
        // ExInterlocked runs at any IRQL.
        AcquireKind::Isr => sync_irql = m.controller.find(handle).map(|o| o.synchronize_irql()),
        AcquireKind::Interlocked => {}
        k if k.raises() => {
            if cur > Irql::DISPATCH {
                let rule = if queued {
                    Rule::QSL_ACQ_IRQL
                } else {
                    Rule::SL_ACQ_IRQL
                };
                let bug = BugCheck::verifier(sub::ACQUIRE_ABOVE_DISPATCH, c, lock, 0, rule);
                violation(p, bug, true);
            }
        }
        _ => {
            if cur < Irql::DISPATCH {
                let rule = if queued {
                    Rule::QSL_ATDPC_IRQL
                } else {
                    Rule::SL_ATDPC_IRQL
                };
                let bug = BugCheck::verifier(sub::ACQUIRE_AT_DPC_BELOW_DISPATCH, c, lock, 0, rule);
                violation(p, bug, true);
            }
        }
    }

    // 3. Mode.
    let held_ordinary = word & 1 == 1;
    let held_queued = word != 0 && !held_ordinary;
    if (queued && held_ordinary) || (!queued && held_queued) {
        let bug = BugCheck::verifier(sub::MIXED_LOCK_MODES, lock, 0, 0, Rule::SL_MIX);
        return violation(p, bug, false);
    }
    if queued && p.find_handle(handle).is_some() {
        let bug = BugCheck::verifier(sub::QUEUE_HANDLE_REUSED, lock, handle, 0, Rule::QSL_HANDLE);
        return violation(p, bug, false);
    }

    // 4. Ownership. Within the current context: an interrupted context's entry may be an
    // acquire between its checks and its raise, which counts as held but has not taken
    // the word (a lock really held beneath an ISR is LD-IRQ's business).
    if let Some(i) = p.find(lock)
        && i >= p.context().start
        && p.held(i).state == HeldState::Held
    {
        let held_kind = p.held(i).kind;
        let rule = if queued {
            Rule::QSL_RECURSE
        } else if matches!(kind, AcquireKind::Interrupt | AcquireKind::Isr)
            || matches!(held_kind, AcquireKind::Interrupt | AcquireKind::Isr)
        {
            Rule::ISL_RECURSE
        } else {
            Rule::SL_RECURSE
        };
        let bug = BugCheck::new(code::SPIN_LOCK_ALREADY_OWNED, [lock, 0, 0, 0], rule);
        return violation(p, bug, false);
    }

    let (level, masked) = crate::order::level_for(kind, cur, sync_irql);
    let saved = (kind.raises() || kind == AcquireKind::Interrupt).then_some(cur);
    let slot = if p.slot_hint[0].load(Relaxed) == lock {
        let slot = p.slot_hint[1].load(Relaxed);
        p.set_slot_hint(0, 0);
        slot
    } else {
        0
    };
    let intent = Held {
        lock,
        handle,
        kind,
        saved: None,
        state: HeldState::Acquiring,
        level,
        key,
        site: Some(site),
        slot,
    };
    if !p.push(intent) {
        panic!(
            "ntspin verifier: processor {} holds more than {} locks at once",
            p.index,
            crate::processor::MAX_HELD
        );
    }

    // 6. Order and inversion (before spinning: a deadlock this acquire would complete is
    // reported instead of happening). A try-acquire is judged when it succeeds.
    if !kind.is_try() {
        let i = p.held_count() - 1;
        crate::order::check(p, i, class, masked, false);
        // A blocking acquire that finds the lock free sends no further event: it counts
        // as held from here, with the IRQL it is about to raise from (`Waiting` or
        // `QueuedBehind` say otherwise).
        p.mark_held(i, saved);
    } else if class != 0 {
        p.class_hint[1].store(class, Relaxed);
        p.class_hint[0].store(lock, Relaxed);
    }
}

/// A lock's class as an address (0: none).
fn class_addr(class: Option<&'static Location<'static>>) -> usize {
    class.map_or(0, |c| c as *const Location as usize)
}

/// The class a try-acquire of `lock` left for its outcome (0: none), forgotten.
fn take_try_class(p: &Processor, lock: usize) -> usize {
    if p.class_hint[0].load(Relaxed) != lock {
        return 0;
    }
    p.class_hint[0].store(0, Relaxed);
    p.class_hint[1].load(Relaxed)
}

/// SL-OLDIRQL-SHARED, before a C caller's `KeAcquireSpinLock` of `lock` saving into
/// `slot`: no lock this context holds may still be saving its IRQL there. The slot is
/// remembered with the acquisition that follows.
fn oldirql_slot(p: &Processor, lock: usize, slot: usize) {
    let shared = p
        .context()
        .map(|i| p.held(i))
        .any(|h| h.state == HeldState::Held && h.slot == slot && h.lock != lock);
    if shared {
        let name = Rule::SL_OLDIRQL_SHARED.name_ptr();
        let rule = Rule::SL_OLDIRQL_SHARED;
        let bug = BugCheck::verifier(sub::DDI_COMPLIANCE, name, lock, slot, rule);
        violation(p, bug, true);
    }
    p.set_slot_hint(lock, slot);
}

fn acquired(p: &Processor, lock: usize, old_irql: Option<Irql>) {
    p.strikes.store(0, Relaxed);
    if let Some(i) = p.find(lock) {
        let kind = p.mark_held(i, old_irql);
        if kind.is_try() {
            let class = take_try_class(p, lock);
            crate::order::check(p, i, class, false, true);
        }
    }
}

fn queued_behind(p: &Processor, lock: usize, handle: usize, pred: usize) {
    if let Some(i) = p.find(lock) {
        p.set_state(i, HeldState::Acquiring);
    }
    if queue_entry_live(p.machine(), lock, pred) {
        return;
    }
    // The word held garbage, which this acquire has already swapped out: put it back, so
    // nothing later links behind an entry that is about to go away, then stop.
    let _ = word_of(lock).compare_exchange(handle, pred, Relaxed, Relaxed);
    let bug = BugCheck::verifier(sub::UNINITIALIZED_LOCK, lock, 0, 0, Rule::SL_INIT);
    violation(p, bug, false);
}

fn contended(p: &Processor, lock: usize, word: usize) {
    if word & 1 == 0 {
        return; // queued waiters spin on their own entry; the predecessor was judged
    }
    let m = p.machine();
    if ordinary_owner_lists(m, lock, word) {
        p.strikes.store(0, Relaxed);
        return;
    }
    if p.strikes.fetch_add(1, Relaxed) + 1 >= STRIKES && word_of(lock).load(Relaxed) == word {
        let bug = BugCheck::verifier(sub::UNINITIALIZED_LOCK, lock, 0, 0, Rule::SL_INIT);
        violation(p, bug, false);
    }
}

fn release(p: &Processor, lock: usize, kind: ReleaseKind, handle: usize, new_irql: Option<Irql>) {
    let cur = p.irql();
    let c = usize::from(cur.raw());
    let queued = kind.is_queued();

    // 2. IRQL.
    match kind {
        ReleaseKind::Lower | ReleaseKind::Queued if cur != Irql::DISPATCH => {
            let rule = if queued {
                Rule::QSL_REL_IRQL
            } else {
                Rule::SL_REL_IRQL
            };
            violation(
                p,
                BugCheck::verifier(sub::RELEASE_NOT_AT_DISPATCH, c, lock, 0, rule),
                true,
            );
        }
        ReleaseKind::FromDpc | ReleaseKind::QueuedFromDpc if cur < Irql::DISPATCH => {
            let rule = if queued {
                Rule::QSL_REL_IRQL
            } else {
                Rule::SL_FROMDPC_IRQL
            };
            let bug = BugCheck::verifier(sub::RELEASE_FROM_DPC_BELOW_DISPATCH, c, lock, 0, rule);
            violation(p, bug, true);
        }
        _ => {}
    }

    // 3. Mode, 4. ownership.
    let mine = p
        .find(lock)
        .map(|i| (i, p.held(i)))
        .filter(|(_, h)| h.state == HeldState::Held);
    let (i, entry) = match mine {
        Some((_, h)) if h.kind.is_queued() != queued => {
            let bug = BugCheck::verifier(sub::MIXED_LOCK_MODES, lock, 0, 0, Rule::SL_MIX);
            return violation(p, bug, false);
        }
        Some((i, h)) if !queued || h.handle == handle => (i, h),
        _ => {
            let bug = BugCheck::new(
                code::SPIN_LOCK_NOT_OWNED,
                [lock, 0, 0, 0],
                Rule::SL_NOT_OWNED,
            );
            return violation(p, bug, false);
        }
    };
    let rule = match kind {
        ReleaseKind::Lower => Some(Rule::SL_OLDIRQL),
        ReleaseKind::Interrupt => Some(Rule::ISL_OLDIRQL),
        _ => None,
    };
    if let (Some(rule), Some(saved), Some(new)) = (rule, entry.saved, new_irql)
        && saved != new
    {
        let name = rule.name_ptr();
        let bug = BugCheck::verifier(sub::DDI_COMPLIANCE, name, lock, 0, rule);
        violation(p, bug, true);
    }
    // No further event: the core frees the word next.
    p.set_state(i, HeldState::Releasing);
    let r = &p.watch.releases;
    r.store(r.load(Relaxed).wrapping_add(1), Relaxed);
}

/// IRQL-WAIT (DPC-WAIT inside a DPC): no blocking above DISPATCH; at DISPATCH only a zero
/// timeout.
fn wait(p: &Processor, irql_addr: usize, object: usize, timeout_addr: usize, ns: Option<u64>) {
    let cur = p.irql();
    let subcode = if cur > Irql::DISPATCH {
        sub::WAIT_ABOVE_DISPATCH
    } else if cur == Irql::DISPATCH && ns.is_none() {
        sub::WAIT_AT_DISPATCH_FOREVER
    } else if cur == Irql::DISPATCH && ns != Some(0) {
        sub::WAIT_AT_DISPATCH_TIMEOUT
    } else {
        return;
    };
    let rule = if p.in_dpc.load(Relaxed) > 0 {
        Rule::DPC_WAIT
    } else {
        Rule::IRQL_WAIT
    };
    let bug = BugCheck::verifier(subcode, irql_addr, object, timeout_addr, rule);
    violation(p, bug, false);
}

/// The word of `lock` if the machine can account for it, `Err(word)` if it is garbage. A
/// queued word not (yet) listed by anyone is re-read a few times: it may be an entry that
/// just left.
fn judge_word(m: &MachineShared, lock: usize) -> Result<usize, usize> {
    let atomic = word_of(lock);
    let mut unexplained = 0;
    let mut last = usize::MAX;
    for _ in 0..64 {
        let w = atomic.load(Relaxed);
        if w == 0 {
            return Ok(0);
        }
        if w & 1 == 1 {
            return if tag_plausible(m, w) { Ok(w) } else { Err(w) };
        }
        if queue_entry_live(m, lock, w) {
            return Ok(w);
        }
        unexplained = if w == last { unexplained + 1 } else { 1 };
        last = w;
        if unexplained >= 4 {
            return Err(w);
        }
        std::hint::spin_loop();
    }
    Ok(last) // the word keeps changing: it is alive
}

fn decode_tag(word: usize) -> (u32, usize) {
    #[cfg(target_pointer_width = "64")]
    let id = (word >> 32) as u32;
    #[cfg(not(target_pointer_width = "64"))]
    let id = 0;
    (id, (word >> 1) & 0x7FFF_FFFF)
}

fn tag_plausible(m: &MachineShared, word: usize) -> bool {
    let (id, index) = decode_tag(word);
    if id == m.id {
        return index < m.processors.len();
    }
    machine::machine_by_id(id).is_some_and(|other| index < other.processors.len())
}

/// Whether the processor an ordinary word names lists `lock` as held or being acquired.
fn ordinary_owner_lists(m: &MachineShared, lock: usize, word: usize) -> bool {
    let (id, index) = decode_tag(word);
    let check = |mm: &MachineShared| {
        mm.processors
            .get(index)
            .is_some_and(|o| o.tag() == word && o.lists(lock, None))
    };
    if id == m.id {
        check(m)
    } else {
        machine::machine_by_id(id).is_some_and(|o| check(&o))
    }
}

/// Whether some processor of `m` lists `entry` as its queue entry for `lock`.
fn queue_entry_live(m: &MachineShared, lock: usize, entry: usize) -> bool {
    m.processors
        .iter()
        .any(|p| p.in_use.load(Relaxed) && p.lists(lock, Some(entry)))
}

/// The processor a held lock word names, for DL-FREE-HELD.
fn owner_of(m: &MachineShared, lock: usize, word: usize) -> Option<usize> {
    if word & 1 == 1 {
        return Some(decode_tag(word).1);
    }
    m.processors
        .iter()
        .position(|p| p.in_use.load(Relaxed) && p.lists(lock, Some(word)))
}

/// The current value of the word of `lock` (for the hang watchdog).
pub(crate) fn word_now(lock: usize) -> usize {
    word_of(lock).load(Relaxed)
}

/// The processor of `m` that owns `lock` now: for an ordinary lock the one its word
/// names, for a queued lock the one that lists it as held.
pub(crate) fn owner_processor(m: &MachineShared, lock: usize) -> Option<u32> {
    let word = word_now(lock);
    if word == 0 {
        return None;
    }
    if word & 1 == 1 {
        let (id, index) = decode_tag(word);
        return (id == m.id).then_some(index as u32);
    }
    m.processors
        .iter()
        .find(|p| {
            (0..p.held_count().min(crate::processor::MAX_HELD))
                .map(|i| p.held(i))
                .any(|h| h.lock == lock && h.state == HeldState::Held)
        })
        .map(|p| p.index)
}

/// DL-EXIT-HELD: a processor's routine returned (normally) holding a spin lock. Called on
/// the processor's thread right after the routine, before its result is handed back.
pub(crate) fn routine_returned() {
    if let Some(p) = crate::processor::current_if_attached()
        && p.verifies()
    {
        exit_held(p, 0);
    }
}

/// DL-EXIT-HELD for a work item or passive-level service routine that returned holding
/// a lock taken during its run (`held_before`: the held count when it started). Whether
/// it raised the bug check.
pub(crate) fn worker_exit_held(p: &Processor, held_before: usize) -> bool {
    exit_held(p, held_before)
}

/// DL-EXIT-HELD if an entry from `from` up is still held: 0xC4/0x100A (processor, lock, 0).
fn exit_held(p: &Processor, from: usize) -> bool {
    p.purge_released();
    if !entry(p, false) {
        return false;
    }
    let Some(i) = (from..p.held_count()).find(|&i| p.held(i).state == HeldState::Held) else {
        return false;
    };
    let bug = BugCheck::verifier(
        sub::THREAD_EXIT_HOLDING_LOCK,
        p.index as usize,
        p.held(i).lock,
        0,
        Rule::DL_EXIT_HELD,
    );
    violation(p, bug, false);
    true
}

/// IRQL-ISR-EXIT: a service routine entered at `entered` returned at another IRQL.
pub(crate) fn isr_returned(p: &Processor, routine: usize, entered: Irql) {
    let after = p.irql();
    if after != entered && entry(p, false) {
        let (e, a) = (entered.raw().into(), after.raw().into());
        let bug = BugCheck::verifier(sub::ISR_IRQL_CHANGED, routine, e, a, Rule::IRQL_ISR_EXIT);
        violation(p, bug, false);
    }
}

/// IRQL-DPC-EXIT: a DPC routine returned at another IRQL than DISPATCH, or holding a lock
/// (`held_before` is the processor's held-list length when it started).
pub(crate) fn dpc_returned(p: &Processor, routine: usize, dpc: usize, held_before: usize) {
    let cur = p.irql();
    let holds = (held_before..p.held_count()).any(|i| p.held(i).state != HeldState::Releasing);
    if (cur != Irql::DISPATCH || holds) && entry(p, false) {
        let p1 = (usize::from(cur.raw()) << 16) | (2 << 8) | 4;
        let bug = BugCheck::new(
            code::IRQL_UNEXPECTED_VALUE,
            [p1, routine, dpc, 0],
            Rule::IRQL_DPC_EXIT,
        );
        violation(p, bug, false);
    }
}

/// IRQL-WORKER-EXIT: a passive-level service routine (or work item) returned at DISPATCH
/// or above.
pub(crate) fn worker_returned(p: &Processor, routine: usize, context: usize, item: usize) {
    let cur = p.irql();
    if cur >= Irql::DISPATCH && entry(p, false) {
        let bug = BugCheck::new(
            code::WORKER_THREAD_RETURNED_AT_BAD_IRQL,
            [routine, cur.raw().into(), context, item],
            Rule::IRQL_WORKER_EXIT,
        );
        violation(p, bug, false);
    }
}

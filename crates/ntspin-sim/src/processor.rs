//! Virtual processors: per-processor IRQL, the verifier's held-lock list, and the
//! thread-local door from an OS thread to the processor it is.
//!
//! Everything here is read by the HAL on every lock operation, so it is plain atomics
//! (relaxed: only the owning thread writes; other processors read for diagnostics) and a
//! `const`-initialized thread-local with no destructor (async-signal-safe to touch).

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::compiler_fence;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};

use ntspin::hal::{AcquireKind, Prcb};
use ntspin::{BugCheck, Irql, Rule};

use crate::machine::{MachineShared, Verifier};

/// Most locks one processor may hold (or be acquiring) at once.
pub(crate) const MAX_HELD: usize = 64;

/// Where one held (or being-acquired) lock came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HeldState {
    /// Waiting for the lock (a busy lock: between `Waiting`/`QueuedBehind` and `Acquired`),
    /// or a try-acquire between its checks and its outcome.
    Acquiring,
    /// Owned (from the moment the acquire's checks passed, for an acquire that found the
    /// lock free).
    Held,
    /// Its release passed the checks; the lock word may still name this processor for a
    /// few instructions. Dropped from the list at the processor's next verifier event.
    Releasing,
}

/// One entry of a processor's held-lock list (all fields atomics: other processors read
/// them when judging a lock word).
pub(crate) struct HeldEntry {
    pub(crate) lock: AtomicUsize,
    pub(crate) handle: AtomicUsize,
    /// kind (bits 0..8) | saved IRQL + 1, 0 for none (bits 8..16) | state (bits 16..18) |
    /// level (bits 24..32).
    meta: AtomicU32,
    /// The lock-order key (the lock's address, or its class in class mode).
    key: AtomicUsize,
    /// Where it was acquired (a `&'static Location`, 0 for unknown).
    site: AtomicUsize,
    /// The hash of the lock-order chain up to and including this entry (its context's
    /// entries only, see `Processor::floor`).
    chain: AtomicU64,
    /// A C caller's `OldIrql` variable for this acquisition, 0 if none (SL-OLDIRQL-SHARED).
    slot: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    pub(crate) lock: usize,
    pub(crate) handle: usize,
    pub(crate) kind: AcquireKind,
    pub(crate) saved: Option<Irql>,
    pub(crate) state: HeldState,
    /// The IRQL the lock is held at (what the lock-order verifier calls its level).
    pub(crate) level: Irql,
    /// The lock-order key.
    pub(crate) key: usize,
    /// Where it was acquired.
    pub(crate) site: Option<&'static Location<'static>>,
    /// A C caller's `OldIrql` variable, 0 if none.
    pub(crate) slot: usize,
}

const KINDS: [AcquireKind; 9] = [
    AcquireKind::Raise,
    AcquireKind::AtDpc,
    AcquireKind::TryAtDpc,
    AcquireKind::TryRaise,
    AcquireKind::Queued,
    AcquireKind::QueuedAtDpc,
    AcquireKind::Interrupt,
    AcquireKind::Isr,
    AcquireKind::Interlocked,
];

// `KINDS[k as usize] == k` for every kind: `encode` stores the discriminant.
const _: () = {
    let mut i = 0;
    while i < KINDS.len() {
        assert!(KINDS[i] as usize == i);
        i += 1;
    }
};

fn state_bits(state: HeldState) -> u32 {
    match state {
        HeldState::Acquiring => 0,
        HeldState::Held => 1,
        HeldState::Releasing => 2,
    }
}

pub(crate) fn state_of(meta: u32) -> HeldState {
    match (meta >> 16) & 3 {
        1 => HeldState::Held,
        2 => HeldState::Releasing,
        _ => HeldState::Acquiring,
    }
}

/// `meta` flag: the entry's `handle` field is meaningful (else the handle is 0 and the
/// field is not read: the fast path does not write it).
const HAS_HANDLE: u32 = 1 << 20;
/// `meta` flag: the entry's `slot` field is meaningful (likewise).
const HAS_SLOT: u32 = 1 << 21;

fn encode(h: &Held) -> u32 {
    let mut meta = pack(h.kind, h.saved, h.state, h.level);
    if h.handle != 0 {
        meta |= HAS_HANDLE;
    }
    if h.slot != 0 {
        meta |= HAS_SLOT;
    }
    meta
}

/// A held entry's packed state: kind, saved IRQL, state, level (see [`HeldEntry`]).
#[inline(always)]
pub(crate) fn pack(kind: AcquireKind, saved: Option<Irql>, state: HeldState, level: Irql) -> u32 {
    let s = saved.map_or(0, |i| i.raw() as u32 + 1);
    kind as u32 | (s << 8) | (state_bits(state) << 16) | ((level.raw() as u32) << 24)
}

/// Whether packed state `meta` is a `Held` entry of an ordinary-mode acquire (`Raise`,
/// `AtDpc` and their try forms, the first four kinds): one mask and compare.
#[inline(always)]
pub(crate) fn held_ordinary(meta: u32) -> bool {
    meta & (0xFC | 0x3_0000) == 1 << 16
}

// `held_ordinary` relies on the ordinary kinds being exactly those below 4.
const _: () = {
    assert!(AcquireKind::Raise as u32 == 0 && AcquireKind::AtDpc as u32 == 1);
    assert!(AcquireKind::TryAtDpc as u32 == 2 && AcquireKind::TryRaise as u32 == 3);
    let mut i = 4;
    while i < KINDS.len() {
        assert!(!matches!(
            KINDS[i],
            AcquireKind::Raise | AcquireKind::AtDpc | AcquireKind::TryAtDpc | AcquireKind::TryRaise
        ));
        i += 1;
    }
};

/// The saved IRQL of packed state `meta`, as `saved + 1` (0 for none).
#[inline(always)]
pub(crate) fn saved_bits(meta: u32) -> u32 {
    (meta >> 8) & 0xFF
}

fn decode(meta: u32) -> (AcquireKind, Option<Irql>, HeldState, Irql) {
    let kind = KINDS[(meta & 0xFF) as usize % KINDS.len()];
    let s = (meta >> 8) & 0xFF;
    let saved = (s != 0).then(|| Irql::from_raw((s - 1) as u8));
    (
        kind,
        saved,
        state_of(meta),
        Irql::from_raw((meta >> 24) as u8),
    )
}

/// The lock-order chain hash of `key` held at `level` after a context prefix whose hash is
/// `prev`.
#[inline(always)]
pub(crate) fn chain_hash(prev: u64, key: usize, level: Irql) -> u64 {
    let v = (key as u64) ^ ((level.raw() as u64) << 56);
    let x = (prev ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(27);
    // Never 0: 0 marks an empty slot of the chain cache.
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1
}

/// The chain hash of an empty context.
pub(crate) const CHAIN_SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// Bits of the processor's `Prcb::hal_wants`: why lock routines must go through the HAL.
pub(crate) mod wants {
    /// The verifier is on.
    pub(crate) const VERIFY: u8 = 1;
    /// Another processor bug-checked: stop at the next safe HAL call.
    pub(crate) const STOP: u8 = 2;
    /// The thread is no processor yet (the placeholder control block).
    pub(crate) const ATTACH: u8 = 4;
    /// An interrupt is pending (requested while masked or at too high an IRQL) or a DPC
    /// is queued: lowering IRQL or unmasking must deliver it.
    pub(crate) const PENDING: u8 = 8;
    /// Deterministic delivery: every HAL call is an injection point.
    pub(crate) const INJECT: u8 = 16;
    /// The verifier's fast path must leave this processor's calls to the full checks: it
    /// is unwinding after a bug check (`stopping`), an allocation above DISPATCH waits to
    /// be reported (`alloc_size`), entries released by the full path wait for its purge
    /// (`releasing`), or a C caller announced its `OldIrql` variable (`slot_hint`). Kept by
    /// [`Processor::update_slow`].
    pub(crate) const SLOW: u8 = 32;
}

/// A bug check raised in interrupt context, kept in preallocated storage (no allocation
/// and no lock in a signal handler) until the machine's caller turns it into a report.
#[derive(Default)]
pub(crate) struct IsrBugSlot {
    /// Written last: the other fields are complete when this is set.
    pub(crate) set: AtomicBool,
    pub(crate) code: AtomicU32,
    pub(crate) params: [AtomicUsize; 4],
    /// Index into `Rule::ALL`.
    pub(crate) rule: AtomicUsize,
    pub(crate) irql: AtomicU8,
}

impl IsrBugSlot {
    /// Records `bug` (first one wins). Async-signal-safe: stores only.
    pub(crate) fn record(&self, bug: BugCheck, irql: Irql) {
        if self.set.load(SeqCst) {
            return;
        }
        self.code.store(bug.code, Relaxed);
        for (d, v) in self.params.iter().zip(bug.params) {
            d.store(v, Relaxed);
        }
        let rule = Rule::ALL.iter().position(|r| *r == bug.rule);
        self.rule.store(rule.unwrap_or(usize::MAX), Relaxed);
        self.irql.store(irql.raw(), Relaxed);
        self.set.store(true, SeqCst);
    }

    /// The recorded bug check and the IRQL it was raised at, if any.
    pub(crate) fn read(&self) -> Option<(BugCheck, Irql)> {
        if !self.set.load(SeqCst) {
            return None;
        }
        let rule = *Rule::ALL
            .get(self.rule.load(Relaxed))
            .expect("every Rule is one of Rule::ALL (only the rules! macro makes them)");
        let params = std::array::from_fn(|i| self.params[i].load(Relaxed));
        let bug = BugCheck::new(self.code.load(Relaxed), params, rule);
        Some((bug, Irql::from_raw(self.irql.load(Relaxed))))
    }
}

/// A virtual processor.
#[repr(C)]
pub(crate) struct Processor {
    /// What the lock fast path reads without a HAL call: IRQL, owner tag, `hal_wants`.
    /// First, so the thread-local pointer to the processor is a pointer to its PRCB.
    pub(crate) prcb: Prcb,
    pub(crate) index: u32,
    pub(crate) machine: *const MachineShared,
    /// The machine's verifier level (fixed for the machine's life).
    pub(crate) verifier: Verifier,
    /// This processor is unwinding out of its routine after a bug check: HAL calls do the
    /// raw operation only, no checks, no further stops.
    pub(crate) stopping: AtomicBool,
    /// The processor froze after a bug check elsewhere: it was linked into a lock queue
    /// whose owner will never release, so it could neither go on nor unwind.
    pub(crate) frozen: AtomicBool,
    /// A thread is attached (default machine: slots are reused).
    pub(crate) in_use: AtomicBool,
    /// Consecutive `Contended` reports that found the lock word's owner inconsistent.
    pub(crate) strikes: AtomicU32,
    pub(crate) held_len: AtomicUsize,
    held: [HeldEntry; MAX_HELD],
    /// How many entries are `Releasing` (so the purge costs one load when none are).
    releasing: AtomicU32,
    /// The lock this context released last through the verifier's fast path, which drops
    /// its entry at once: the lock word may name this processor for a few more
    /// instructions, and [`lists`](Self::lists) must still account for it (0: none).
    released: AtomicUsize,
    /// Where the current context's held entries start: an ISR, DPC or passive worker run
    /// on top of interrupted code starts a new context, whose lock order does not follow
    /// from what the interrupted code holds (lockdep's per-context chains).
    pub(crate) floor: AtomicUsize,
    /// The class of a try-acquire in progress, for its `Acquired`: (lock, class).
    pub(crate) class_hint: [AtomicUsize; 2],
    /// The `OldIrql` variable a C caller announced for its next acquire: (lock, slot).
    pub(crate) slot_hint: [AtomicUsize; 2],
    /// Lock-order state of this processor (chain cache, interrupt-context records), when
    /// lock-order tracking is on: made with the processor on a built machine (an
    /// interrupt may be its first user, and a signal handler cannot allocate), on first
    /// use for the default machine's many thread slots.
    order: std::sync::OnceLock<Box<crate::order::ProcessorOrder>>,
    /// How this processor keys the lock-order graph (`Off`: no tracking).
    order_keys: OrderKeys,
    /// Watchdog state.
    pub(crate) watch: crate::watchdog::ProcessorWatch,
    /// ALLOC-IRQL: the size of an allocation made above DISPATCH (0: none) and the IRQL
    /// then, reported at the next ntspin call.
    pub(crate) alloc_size: AtomicUsize,
    pub(crate) alloc_irql: AtomicU8,
    /// The OS thread that is this processor (`pthread_t`), 0 while none: where interrupt
    /// and DPC signals go.
    pub(crate) thread: AtomicUsize,
    /// Interrupt request bits by vector: requested on this processor, not yet serviced.
    pub(crate) irr: AtomicU64,
    /// A signal is on its way to this processor's thread and its handler has not started:
    /// further requests need no signal of their own (real-time signals queue, and a flood
    /// of them would nest handler frames until the stack overflows).
    pub(crate) signaled: AtomicBool,
    /// Interrupts masked (`cli`) depth: the HAL's own bookkeeping and `ExInterlocked`
    /// routines run masked; a signal arriving then leaves its request pending.
    pub(crate) masked: AtomicU32,
    /// Signal handlers running on this processor's thread: a bug check here must not
    /// unwind (it would cross the signal frame).
    pub(crate) in_handler: AtomicU32,
    /// DPC routines running on this processor.
    pub(crate) in_dpc: AtomicU32,
    /// The passive-level worker is running on this processor (it never nests).
    pub(crate) in_worker: AtomicU32,
    /// No routine runs on this processor: its thread waits for the next one.
    pub(crate) idle: AtomicBool,
    /// The thread is blocked in a wait (`wait_on`), so deterministic delivery signals it.
    pub(crate) blocked: AtomicBool,
    /// Deterministic delivery: the injection generator's state, and the HAL calls
    /// (injection points) passed so far.
    pub(crate) rng: AtomicU64,
    pub(crate) hal_calls: AtomicU64,
    /// A bug check raised in interrupt context.
    pub(crate) isr_bug: IsrBugSlot,
    /// Service-routine runs and DPC runs on this processor.
    pub(crate) isrs: AtomicU64,
    pub(crate) dpcs: AtomicU64,
    /// Work items run on this processor.
    pub(crate) work_items_run: AtomicU64,
}

// SAFETY: every field is an atomic or immutable after construction; `machine` points to the
// `MachineShared` that owns this processor and outlives it.
unsafe impl Sync for Processor {}
// SAFETY: as above.
unsafe impl Send for Processor {}

impl Processor {
    pub(crate) fn new(
        machine: *const MachineShared,
        machine_id: u32,
        index: u32,
        verifier: Verifier,
        deterministic: bool,
        order: OrderKeys,
    ) -> Self {
        // The owner tag: `machine id << 32 | index << 1 | 1`.
        let tag = ((machine_id as usize) << 32) | ((index as usize) << 1) | 1;
        let prcb = Prcb::new(tag);
        let verifies = verifier != Verifier::Off;
        prcb.set_hal_wants(if verifies { wants::VERIFY } else { 0 });
        if deterministic {
            prcb.add_hal_wants(wants::INJECT);
        }
        Processor {
            prcb,
            index,
            machine,
            verifier,
            stopping: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            in_use: AtomicBool::new(false),
            strikes: AtomicU32::new(0),
            held_len: AtomicUsize::new(0),
            held: std::array::from_fn(|_| HeldEntry {
                lock: AtomicUsize::new(0),
                handle: AtomicUsize::new(0),
                meta: AtomicU32::new(0),
                key: AtomicUsize::new(0),
                site: AtomicUsize::new(0),
                chain: AtomicU64::new(0),
                slot: AtomicUsize::new(0),
            }),
            releasing: AtomicU32::new(0),
            released: AtomicUsize::new(0),
            floor: AtomicUsize::new(0),
            class_hint: [AtomicUsize::new(0), AtomicUsize::new(0)],
            slot_hint: [AtomicUsize::new(0), AtomicUsize::new(0)],
            order: std::sync::OnceLock::new(),
            order_keys: order,
            watch: crate::watchdog::ProcessorWatch::default(),
            alloc_size: AtomicUsize::new(0),
            alloc_irql: AtomicU8::new(0),
            thread: AtomicUsize::new(0),
            irr: AtomicU64::new(0),
            signaled: AtomicBool::new(false),
            masked: AtomicU32::new(0),
            in_handler: AtomicU32::new(0),
            in_dpc: AtomicU32::new(0),
            in_worker: AtomicU32::new(0),
            idle: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            rng: AtomicU64::new(0),
            hal_calls: AtomicU64::new(0),
            isr_bug: IsrBugSlot::default(),
            isrs: AtomicU64::new(0),
            dpcs: AtomicU64::new(0),
            work_items_run: AtomicU64::new(0),
        }
    }

    /// Makes the lock-order state now (a built machine's processors, before any interrupt).
    pub(crate) fn init_order(&self) {
        if self.tracks_order() {
            self.order
                .get_or_init(|| Box::new(crate::order::ProcessorOrder::new()));
        }
    }

    /// The lock-order state, made on first use in thread context; `None` when tracking is
    /// off, or not made yet in interrupt context.
    pub(crate) fn order(&self) -> Option<&crate::order::ProcessorOrder> {
        if !self.tracks_order() {
            return None;
        }
        if self.in_handler.load(Relaxed) > 0 {
            return self.order.get().map(|b| &**b);
        }
        Some(self.order.get_or_init(|| {
            // The machine's own allocation, at whatever IRQL the first acquire runs.
            let _own = crate::alloc::Exempt::new();
            Box::new(crate::order::ProcessorOrder::new())
        }))
    }

    /// The lock-order state if it has been made (for other processors to read).
    pub(crate) fn order_if_made(&self) -> Option<&crate::order::ProcessorOrder> {
        self.order.get().map(|b| &**b)
    }

    /// This processor's bit in an affinity mask (0 past the first 64, which interrupts
    /// are never routed to).
    pub(crate) fn affinity_bit(&self) -> u64 {
        1u64.checked_shl(self.index).unwrap_or(0)
    }

    #[inline(always)]
    pub(crate) fn irql(&self) -> Irql {
        self.prcb.irql()
    }

    pub(crate) fn tag(&self) -> usize {
        self.prcb.owner_tag()
    }

    /// Whether the verifier checks this processor's calls.
    #[inline(always)]
    pub(crate) fn verifies(&self) -> bool {
        self.verifier != Verifier::Off
    }

    /// Whether lock-order tracking is on for this processor.
    #[inline(always)]
    pub(crate) fn tracks_order(&self) -> bool {
        self.order_keys != OrderKeys::Off
    }

    /// The lock-order key of an acquisition of `lock` of class `class` (0: none): the
    /// class in class mode, else the lock's address.
    #[inline(always)]
    pub(crate) fn order_key(&self, lock: usize, class: usize) -> usize {
        if self.order_keys == OrderKeys::Classes && class != 0 {
            class
        } else {
            lock
        }
    }

    /// Marks this processor unwinding after a bug check (or done with it).
    pub(crate) fn set_stopping(&self, on: bool) {
        self.stopping.store(on, Relaxed);
        self.update_slow();
    }

    /// Recomputes [`wants::SLOW`] from what it stands for: `stopping`, `alloc_size`,
    /// `releasing` and the C slot hint.
    pub(crate) fn update_slow(&self) {
        if !self.verifies() {
            return; // no fast path to keep out
        }
        let slow = self.stopping.load(Relaxed)
            || self.alloc_size.load(Relaxed) != 0
            || self.releasing.load(Relaxed) != 0
            || self.slot_hint[0].load(Relaxed) != 0;
        if slow == (self.prcb.hal_wants_bits() & wants::SLOW != 0) {
            return;
        }
        if slow {
            self.prcb.add_hal_wants(wants::SLOW);
        } else {
            self.prcb.clear_hal_wants(wants::SLOW);
        }
    }

    /// Announces a C caller's `OldIrql` variable `slot` for the next acquire of `lock`
    /// (`(0, 0)`: none); the full path takes it with the acquisition.
    pub(crate) fn set_slot_hint(&self, lock: usize, slot: usize) {
        self.slot_hint[1].store(slot, Relaxed);
        self.slot_hint[0].store(lock, Relaxed);
        self.update_slow();
    }

    /// Asks this processor to stop at its next safe HAL call.
    pub(crate) fn request_stop(&self) {
        self.prcb.add_hal_wants(wants::STOP);
    }

    /// Whether another processor bug-checked and this one must stop at a safe HAL call
    /// (the `STOP` reason in its `Prcb`: one flag, read by the fast path and the HAL).
    #[inline(always)]
    pub(crate) fn stop_requested(&self) -> bool {
        self.prcb.hal_wants_bits() & wants::STOP != 0
    }

    pub(crate) fn machine(&self) -> &MachineShared {
        // SAFETY: the machine owns its processors and outlives every attachment to them.
        unsafe { &*self.machine }
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held_len.load(Relaxed)
    }

    pub(crate) fn held(&self, i: usize) -> Held {
        let e = &self.held[i];
        let meta = e.meta.load(Relaxed);
        let (kind, saved, state, level) = decode(meta);
        let site = e.site.load(Relaxed);
        Held {
            lock: e.lock.load(Relaxed),
            handle: self.handle_of(i, meta),
            kind,
            saved,
            state,
            level,
            key: e.key.load(Relaxed),
            // SAFETY: `site` is 0 or was stored from a `&'static Location<'static>` by
            // `push`.
            site: (site != 0).then(|| unsafe { &*(site as *const Location<'static>) }),
            slot: if meta & HAS_SLOT != 0 {
                e.slot.load(Relaxed)
            } else {
                0
            },
        }
    }

    /// Entry `i`'s queue handle (or interrupt object), 0 for none; `meta` is its packed
    /// state.
    fn handle_of(&self, i: usize, meta: u32) -> usize {
        if meta & HAS_HANDLE != 0 {
            self.held[i].handle.load(Relaxed)
        } else {
            0
        }
    }

    /// The chain hash before entry `i` in its context (`CHAIN_SEED` at the floor).
    #[inline(always)]
    fn chain_before(&self, i: usize) -> u64 {
        if i == 0 || i <= self.floor.load(Relaxed) {
            CHAIN_SEED
        } else {
            self.held[i - 1].chain.load(Relaxed)
        }
    }

    /// The current context's held entries (from the floor up).
    pub(crate) fn context(&self) -> std::ops::Range<usize> {
        let n = self.held_count();
        self.floor.load(Relaxed).min(n)..n
    }

    /// Starts a new context (an ISR, DPC or worker on top of whatever runs): its lock
    /// order does not follow from what the interrupted code holds, and its releases must
    /// not hide the interrupted code's. Returns what to restore with
    /// [`leave_context`](Self::leave_context).
    pub(crate) fn enter_context(&self) -> ContextMark {
        ContextMark {
            floor: self.floor.swap(self.held_count(), Relaxed),
            released: self.released.load(Relaxed),
        }
    }

    pub(crate) fn leave_context(&self, mark: ContextMark) {
        self.floor.store(mark.floor, Relaxed);
        self.released.store(mark.released, Relaxed);
    }

    /// Index of the newest entry for `lock`, if any.
    pub(crate) fn find(&self, lock: usize) -> Option<usize> {
        (0..self.held_count())
            .rev()
            .find(|&i| self.held[i].lock.load(Relaxed) == lock)
    }

    /// Whether this processor lists `handle` as a queue entry in use.
    pub(crate) fn find_handle(&self, handle: usize) -> Option<usize> {
        // An entry being pushed names no lock yet, and its other fields may be stale.
        (0..self.held_count().min(MAX_HELD)).rev().find(|&i| {
            let e = &self.held[i];
            e.lock.load(Relaxed) != 0 && self.handle_of(i, e.meta.load(Relaxed)) == handle
        })
    }

    /// Whether this processor lists `(lock, handle)` (any state; an ordinary lock it has
    /// just released through the fast path counts, see `released`).
    pub(crate) fn lists(&self, lock: usize, handle: Option<usize>) -> bool {
        if handle.is_none() && self.released.load(Relaxed) == lock {
            return true;
        }
        (0..self.held_count().min(MAX_HELD)).any(|i| {
            let e = &self.held[i];
            e.lock.load(Relaxed) == lock
                && handle.is_none_or(|h| self.handle_of(i, e.meta.load(Relaxed)) == h)
        })
    }

    /// Appends an entry; `false` if the list is full.
    pub(crate) fn push(&self, h: Held) -> bool {
        let n = self.held_count();
        if n == MAX_HELD {
            return false;
        }
        let e = &self.held[n];
        e.lock.store(h.lock, Relaxed);
        e.handle.store(h.handle, Relaxed);
        e.meta.store(encode(&h), Relaxed);
        e.key.store(h.key, Relaxed);
        e.slot.store(h.slot, Relaxed);
        e.site
            .store(h.site.map_or(0, |s| s as *const Location as usize), Relaxed);
        e.chain
            .store(chain_hash(self.chain_before(n), h.key, h.level), Relaxed);
        self.held_len.store(n + 1, Relaxed);
        self.released.store(0, Relaxed);
        true
    }

    /// Marks entry `i` held, with the IRQL its acquire saved.
    pub(crate) fn mark_held(&self, i: usize, saved: Option<Irql>) -> AcquireKind {
        let e = &self.held[i];
        let meta = e.meta.load(Relaxed);
        let s = saved.map_or(0, |i| i.raw() as u32 + 1);
        e.meta
            .store((meta & !0x3_FF00) | (s << 8) | (1 << 16), Relaxed);
        KINDS[(meta & 0xFF) as usize % KINDS.len()]
    }

    /// Sets entry `i`'s state.
    pub(crate) fn set_state(&self, i: usize, state: HeldState) {
        let e = &self.held[i];
        let meta = e.meta.load(Relaxed);
        e.meta
            .store((meta & !0x3_0000) | (state_bits(state) << 16), Relaxed);
        if state == HeldState::Releasing {
            self.releasing
                .store(self.releasing.load(Relaxed) + 1, Relaxed);
            self.update_slow();
        }
    }

    /// Drops the current context's entries whose release has completed (see
    /// [`HeldState::Releasing`]). Entries of interrupted contexts stay: their code may be
    /// between its `Release` event and freeing the word.
    #[inline]
    pub(crate) fn purge_released(&self) {
        if self.releasing.load(Relaxed) == 0 {
            return;
        }
        let ctx = self.context();
        let mut i = ctx.end;
        while i > ctx.start {
            i -= 1;
            if state_of(self.held[i].meta.load(Relaxed)) == HeldState::Releasing {
                self.remove(i);
                let n = self.releasing.load(Relaxed);
                self.releasing.store(n.saturating_sub(1), Relaxed);
            }
        }
        self.update_slow();
    }

    /// The current context's newest entry: its lock and packed state (see [`HeldEntry`]).
    #[inline(always)]
    pub(crate) fn top_of_context(&self) -> Option<(usize, u32)> {
        let n = self.held_count();
        if n <= self.floor.load(Relaxed) {
            return None;
        }
        let e = self.held.get(n - 1)?;
        Some((e.lock.load(Relaxed), e.meta.load(Relaxed)))
    }

    /// Drops the current context's newest entry, an ordinary-mode lock `lock` the fast path
    /// released: it stays accounted for as `released` until the core has freed the word.
    #[inline(always)]
    pub(crate) fn pop_released(&self, lock: usize) {
        self.released.store(lock, Relaxed);
        self.held_len.store(self.held_count() - 1, Relaxed);
    }

    /// Whether the current context lists any entry.
    #[inline(always)]
    pub(crate) fn context_lists_any(&self) -> bool {
        self.held_count() > self.floor.load(Relaxed)
    }

    /// Whether the current context holds an interrupt spin lock (for IRQL-LOWER-HELD's
    /// fast test).
    #[inline(always)]
    pub(crate) fn context_holds_interrupt_lock(&self) -> bool {
        let floor = self.floor.load(Relaxed);
        let n = self.held_count().min(MAX_HELD);
        if n <= floor {
            return false;
        }
        (floor..n).any(|i| {
            let meta = self.held[i].meta.load(Relaxed);
            state_of(meta) == HeldState::Held && meta & 0xFF == AcquireKind::Interrupt as u32
        })
    }

    /// Appends an ordinary-mode entry for the verifier's fast path: no queue handle, no
    /// C `OldIrql` slot; with lock-order tracking, `order` is its key and chain hash
    /// ([`chain_next`](Self::chain_next)). The entry's index, or `None` if the list is
    /// full.
    #[inline(always)]
    pub(crate) fn push_ordinary(
        &self,
        lock: usize,
        meta: u32,
        site: &'static Location<'static>,
        order: Option<(usize, u64)>,
    ) -> Option<usize> {
        let n = self.held_count();
        let e = self.held.get(n)?;
        // Few stores: the acquire's locked compare-exchange that follows waits for every
        // store before it. `meta` carries no HAS_HANDLE / HAS_SLOT flag, so those fields
        // are not written; `key` and `chain` only matter to lock-order tracking.
        //
        // Unmasked: an interrupt (a signal handler on this thread, which runs to completion
        // and leaves the list as it found it) that arrives before the count is bumped reuses
        // this slot, one that arrives after starts its context above it. Until the entry is
        // complete it names no lock, so nothing matches it meanwhile.
        e.lock.store(0, Relaxed);
        compiler_fence(SeqCst);
        self.held_len.store(n + 1, Relaxed);
        compiler_fence(SeqCst);
        e.meta.store(meta, Relaxed);
        e.site.store(site as *const Location as usize, Relaxed);
        if let Some((key, chain)) = order {
            e.key.store(key, Relaxed);
            e.chain.store(chain, Relaxed);
        }
        compiler_fence(SeqCst);
        e.lock.store(lock, Relaxed);
        // The last release of this context has freed its word by now.
        self.released.store(0, Relaxed);
        Some(n)
    }

    /// The chain hash the next entry of the current context would get for `key` at
    /// `level`.
    #[inline(always)]
    pub(crate) fn chain_next(&self, key: usize, level: Irql) -> u64 {
        chain_hash(self.chain_before(self.held_count()), key, level)
    }

    /// Entry `i`'s chain hash.
    pub(crate) fn chain_of(&self, i: usize) -> u64 {
        self.held[i].chain.load(Relaxed)
    }

    /// Removes entry `i`, keeping the others in acquisition order.
    pub(crate) fn remove(&self, i: usize) {
        let n = self.held_count();
        for j in i..n.saturating_sub(1) {
            let next = &self.held[j + 1];
            let e = &self.held[j];
            e.lock.store(next.lock.load(Relaxed), Relaxed);
            e.handle.store(next.handle.load(Relaxed), Relaxed);
            e.meta.store(next.meta.load(Relaxed), Relaxed);
            e.key.store(next.key.load(Relaxed), Relaxed);
            e.site.store(next.site.load(Relaxed), Relaxed);
            e.slot.store(next.slot.load(Relaxed), Relaxed);
        }
        let floor = self.floor.load(Relaxed);
        if i < floor {
            self.floor.store(floor - 1, Relaxed);
        }
        // The entries that moved down follow a different prefix now: their chain hashes
        // must say so (a stale hash could match a chain whose edges were never added).
        for j in i..n.saturating_sub(1) {
            let e = &self.held[j];
            let (.., level) = decode(e.meta.load(Relaxed));
            let h = chain_hash(self.chain_before(j), e.key.load(Relaxed), level);
            e.chain.store(h, Relaxed);
        }
        self.held_len.store(n - 1, Relaxed);
    }

    /// Back to a fresh processor at PASSIVE holding nothing (after a routine ends).
    pub(crate) fn reset(&self, irql: Irql, held: usize) {
        self.prcb.set_irql(irql);
        self.held_len.store(held.min(self.held_count()), Relaxed);
        let releasing = (0..self.held_count())
            .filter(|&i| state_of(self.held[i].meta.load(Relaxed)) == HeldState::Releasing)
            .count();
        self.releasing.store(releasing as u32, Relaxed);
        self.slot_hint[0].store(0, Relaxed);
        self.floor.store(0, Relaxed);
        self.released.store(0, Relaxed);
        self.set_stopping(false);
        self.strikes.store(0, Relaxed);
        self.masked.store(0, Relaxed);
        self.in_dpc.store(0, Relaxed);
    }

    /// Masks interrupts on this processor (same-thread only).
    ///
    /// A load and a store, not a locked read-modify-write: only this processor's thread
    /// writes `masked`, and a signal handler that runs between the two (on this same
    /// thread) leaves it as it found it, so no update is lost. A handler arriving before
    /// the store sees the processor unmasked, exactly as if it had arrived before the call.
    #[inline]
    pub(crate) fn mask(&self) {
        self.masked.store(self.masked.load(Relaxed) + 1, Relaxed);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Unmasks, delivering what became pending if this was the outermost mask (a handler
    /// arriving before the store sees the processor masked and leaves its request pending,
    /// which the check after the store delivers).
    #[inline]
    pub(crate) fn unmask(&self) {
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        let was = self.masked.load(Relaxed);
        self.masked.store(was - 1, Relaxed);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        if was == 1 && self.prcb.hal_wants_bits() & wants::PENDING != 0 {
            crate::interrupts::dispatch_pending(self);
        }
    }
}

/// How a processor keys the lock-order graph.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OrderKeys {
    /// No lock-order tracking.
    Off,
    /// By lock instance (address).
    Instances,
    /// By class (construction site) where the lock has one.
    Classes,
}

/// What [`Processor::enter_context`] saved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextMark {
    floor: usize,
    released: usize,
}

/// Whether `hal_wants` bits let the verifier's fast path judge the next call: the verifier
/// is on, and nothing else asks for the HAL's attention — no stop requested or under way,
/// no allocation above DISPATCH waiting to be reported (what
/// [`verifier::entry`](crate::verifier::entry) would act on), no deterministic injection, a
/// thread that is a processor. (A pending interrupt or DPC is no reason for lock events: a
/// lowering delivers it.)
#[inline(always)]
pub(crate) fn fast_bits(bits: u8) -> bool {
    bits & !wants::PENDING == wants::VERIFY
}

/// What an unattached thread's processor pointer points to: a control block whose
/// `hal_wants` sends every lock routine down the HAL path, where [`current`] attaches the
/// thread to the default machine first. So the fast path needs no null check.
static UNATTACHED: Prcb = Prcb::with_hal_wants(1, wants::ATTACH);

thread_local! {
    /// The control block of the processor this OS thread is ([`UNATTACHED`] until it is
    /// one). A processor's `prcb` is its first field (`repr(C)`), so for an attached thread
    /// this is also the address of its `Processor`.
    static CPU: Cell<*const Prcb> = const { Cell::new(&UNATTACHED) };
}

/// The current processor's control block, without attaching: [`UNATTACHED`] for a thread
/// that is no processor yet (whose `hal_wants` then leads to [`current`]).
#[inline(always)]
pub(crate) fn current_prcb() -> &'static Prcb {
    // SAFETY: the pointer is either `UNATTACHED` (a static) or the first field of an
    // attached processor, valid while the thread is attached (see `current`).
    unsafe { &*CPU.with(Cell::get) }
}

/// The processor whose control block `prcb` is; `None` for the unattached placeholder.
#[inline(always)]
pub(crate) fn of_prcb(prcb: &'static Prcb) -> Option<&'static Processor> {
    if std::ptr::eq(prcb, &UNATTACHED) {
        return None;
    }
    // SAFETY: every control block this HAL hands out other than `UNATTACHED` is the `prcb`
    // field at offset 0 of a `repr(C)` `Processor`, valid as long as the `'static` borrow
    // claims: machine processors live in their machine, which outlives every routine and
    // attachment on it; default processors live for the program.
    Some(unsafe { &*(prcb as *const Prcb).cast::<Processor>() })
}

/// The current thread's processor if the verifier's fast path may judge its next call
/// ([`fast_bits`]).
#[inline(always)]
pub(crate) fn fast_current() -> Option<&'static Processor> {
    let prcb = current_prcb();
    if !fast_bits(prcb.hal_wants_bits()) {
        return None;
    }
    // SAFETY: `fast_bits` rejects `UNATTACHED` (its only reason is `ATTACH`).
    Some(unsafe { attached(prcb) })
}

/// The processor whose control block `prcb` is, without the test [`of_prcb`] makes.
///
/// # Safety
///
/// `prcb` is not [`UNATTACHED`] (for instance: its `hal_wants` lack [`wants::ATTACH`]).
#[inline(always)]
pub(crate) unsafe fn attached(prcb: &'static Prcb) -> &'static Processor {
    // SAFETY: as in `of_prcb`, whose test the caller has made.
    unsafe { &*(prcb as *const Prcb).cast::<Processor>() }
}

/// The current thread's processor, attaching it to the default machine on first use.
#[inline(always)]
pub(crate) fn current() -> &'static Processor {
    match of_prcb(current_prcb()) {
        Some(p) => p,
        None => attach_default(),
    }
}

/// Makes this thread processor `p`, or no processor (`None`).
pub(crate) fn set_current(p: Option<&Processor>) {
    let prcb: *const Prcb = match p {
        Some(p) => {
            // SAFETY: `pthread_self` has no preconditions.
            let me = unsafe { libc::pthread_self() };
            p.thread.store(me as usize, Relaxed);
            &p.prcb
        }
        None => {
            if let Some(old) = current_if_attached() {
                old.thread.store(0, Relaxed);
            }
            &UNATTACHED
        }
    };
    CPU.with(|c| c.set(prcb));
}

/// The current thread's processor, or `None` if it is none (never attaches: for the
/// signal handler, which must not allocate or lock).
#[inline]
pub(crate) fn current_if_attached() -> Option<&'static Processor> {
    let p = CPU.try_with(Cell::get).ok()?;
    // SAFETY: as in `current_prcb`.
    of_prcb(unsafe { &*p })
}

#[cold]
#[inline(never)]
fn attach_default() -> &'static Processor {
    crate::stop::attach_to_default()
}

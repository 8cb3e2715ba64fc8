//! The lock-order verifier: SL-ORDER (a cycle in the graph of "B acquired while A held"
//! edges, found when the edge that closes it first appears, although nothing deadlocked)
//! and LD-IRQ (a lock used at IRQL X and held elsewhere below X with interrupts enabled, or
//! an edge A→B where A is used above the level B is held at).
//!
//! The design follows Linux's lockdep and Driver Verifier's deadlock detection:
//!
//! - **Nodes** are lock instances (by address), or in class mode the place a `SpinLock` /
//!   `QueuedSpinLock` was constructed (locks without a class, such as C `KSPIN_LOCK`s,
//!   stay instances). A dropped (retired) lock leaves the graph, so a new lock at the
//!   same address starts clean.
//! - **Edges** come from every lock held in the current *context* (interrupted code's locks
//!   do not count for an ISR or DPC that runs on top of it) to the lock being acquired.
//!   Try-acquires add no edge to the lock tried.
//! - **Cycles** are found incrementally (Pearce–Kelly dynamic topological order): adding an
//!   edge that agrees with the current order costs nothing; otherwise only the affected
//!   region is searched.
//! - **Chains**: each processor caches the hashes of the held-lock chains it has already
//!   validated, so a steady-state acquisition costs one hash probe and takes no lock.
//! - **Interrupt context** (a service routine or DPC inside the signal handler) may not
//!   allocate or lock: a chain it has not validated yet is recorded in a per-processor
//!   ring and judged at the next verifier call in thread context (on any processor).
//! - **Memory** is bounded by [`LockOrder`]'s caps: past them new locks or edges are not
//!   tracked, [`LockOrderStats::capped`] says so, and a one-line message is printed once.

use std::backtrace::Backtrace;
use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire};
use std::sync::atomic::{Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex};

use ntspin::bugcheck::verifier as sub;
use ntspin::hal::AcquireKind;
use ntspin::{BugCheck, Irql, Rule};

use crate::machine::MachineShared;
use crate::processor::{Held, Processor};
use crate::report::{LockSite, OrderEdge, ReportDetail};

/// Lock-order and IRQL-inversion tracking settings (SL-ORDER, LD-IRQ), for
/// [`MachineBuilder::lock_order`](crate::MachineBuilder::lock_order).
///
/// ```
/// use ntspin_sim::{LockOrder, Machine};
/// let m = Machine::builder()
///     .processors(1)
///     .lock_order(LockOrder { classes: true, ..LockOrder::default() })
///     .build();
/// assert!(m.lock_order_stats().is_some());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOrder {
    /// Track at all (default `true`; the standard verifier's other rules stay on when
    /// this is off).
    pub enabled: bool,
    /// Key `SpinLock`s and `QueuedSpinLock`s by construction site instead of by instance,
    /// so an inversion between two *instances* of the same pair of lock fields is found
    /// (default `false`, Driver Verifier's choice; lockdep's is `true`). Two locks of one
    /// class nested in each other are not judged in class mode.
    pub classes: bool,
    /// Most locks (graph nodes) tracked at once.
    pub max_locks: usize,
    /// Most order edges tracked at once.
    pub max_edges: usize,
    /// Most edges that keep the backtrace of the acquisition that created them (the first
    /// ones; later edges keep the acquisition's source location only).
    pub max_backtraces: usize,
}

impl Default for LockOrder {
    fn default() -> Self {
        LockOrder {
            enabled: true,
            classes: false,
            max_locks: 1 << 20,
            max_edges: 1 << 22,
            max_backtraces: 4096,
        }
    }
}

impl LockOrder {
    /// Tracking switched off (the rest of the standard verifier stays on).
    ///
    /// ```
    /// assert!(!ntspin_sim::LockOrder::off().enabled);
    /// ```
    pub fn off() -> LockOrder {
        LockOrder {
            enabled: false,
            ..LockOrder::default()
        }
    }
}

/// What the lock-order verifier holds, from [`Machine::lock_order_stats`](crate::Machine::lock_order_stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockOrderStats {
    /// Locks (or classes) in the graph.
    pub locks: usize,
    /// Order edges in the graph.
    pub edges: usize,
    /// Chains judged on the slow path (each distinct held-lock chain once per processor,
    /// plus repeats after a lock was retired).
    pub chains_validated: u64,
    /// Edges that kept a backtrace.
    pub backtraces: usize,
    /// An estimate of the graph's heap use in bytes (backtraces counted at 2 KiB each).
    pub approx_bytes: usize,
    /// A cap of [`LockOrder`] was reached: some locks or edges are not tracked.
    pub capped: bool,
    /// Interrupt-context acquisitions not judged because their processor's ring was full.
    pub interrupt_records_dropped: u64,
}

/// Chain-cache slots per processor (a power of two).
const CACHE_SLOTS: usize = 4096;
/// Probes per lookup.
const PROBES: usize = 8;
/// Interrupt-context records per processor.
const RING: usize = 64;
/// Held locks an interrupt-context record keeps (deeper nesting is cut to the newest).
const RING_HELD: usize = 8;

/// One processor's lock-order state.
pub(crate) struct ProcessorOrder {
    cache: Box<[AtomicU64]>,
    /// The machine epoch the cache was filled under (a retired lock empties caches).
    epoch: AtomicU64,
    ring: Ring,
}

impl ProcessorOrder {
    pub(crate) fn new() -> ProcessorOrder {
        ProcessorOrder {
            cache: (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            ring: Ring::new(),
        }
    }

    fn sync_epoch(&self, epoch: u64) {
        if self.epoch.load(Relaxed) != epoch {
            for slot in self.cache.iter() {
                slot.store(0, Relaxed);
            }
            self.epoch.store(epoch, Relaxed);
        }
    }

    #[inline(always)]
    fn hit(&self, h: u64) -> bool {
        let mask = CACHE_SLOTS - 1;
        let mut i = 0;
        while i < PROBES {
            let slot = (h as usize).wrapping_add(i) & mask;
            if self.cache.get(slot).is_some_and(|c| c.load(Relaxed) == h) {
                return true;
            }
            i += 1;
        }
        false
    }

    fn insert(&self, h: u64) {
        let mask = CACHE_SLOTS - 1;
        let start = h as usize;
        for i in 0..PROBES {
            let slot = &self.cache[start.wrapping_add(i) & mask];
            if slot.load(Relaxed) == 0 {
                slot.store(h, Relaxed);
                return;
            }
        }
        // Full neighbourhood: evict (a miss later only costs a slow-path check).
        self.cache[(start.wrapping_add((h >> 32) as usize % PROBES)) & mask].store(h, Relaxed);
    }
}

/// One acquisition to judge, as a record (interrupt context cannot allocate).
#[derive(Clone, Copy)]
struct Acq {
    site: SiteData,
    class: usize,
    key: usize,
    masked: bool,
    is_try: bool,
    held: [HeldRef; RING_HELD],
    n_held: usize,
    in_interrupt: bool,
}

#[derive(Clone, Copy, Default)]
struct HeldRef {
    key: usize,
    site: SiteData,
}

/// Where and how a lock was taken.
#[derive(Clone, Copy, Default)]
struct SiteData {
    lock: usize,
    location: usize,
    processor: u32,
    level: u8,
}

impl SiteData {
    fn location(&self) -> Option<&'static Location<'static>> {
        // SAFETY: 0 or stored from a `&'static Location<'static>`.
        (self.location != 0).then(|| unsafe { &*(self.location as *const Location<'static>) })
    }

    fn public(&self, class: usize) -> LockSite {
        LockSite {
            lock: self.lock,
            location: self.location().map(ToString::to_string),
            class: (class != 0).then(|| {
                // SAFETY: a class is stored from a `&'static Location<'static>`.
                unsafe { &*(class as *const Location<'static>) }.to_string()
            }),
            processor: self.processor,
            irql: self.level,
        }
    }
}

fn site_of(p: &Processor, h: &Held) -> SiteData {
    SiteData {
        lock: h.lock,
        location: h.site.map_or(0, |s| s as *const Location as usize),
        processor: p.index,
        level: h.level.raw(),
    }
}

/// A single-producer ring: the producer is the processor's own interrupt context (which
/// never nests inside the verifier: it runs masked), the consumer whoever holds the graph.
struct Ring {
    head: AtomicUsize,
    tail: AtomicUsize,
    dropped: AtomicU64,
    slots: [RingSlot; RING],
}

struct RingSlot {
    ready: AtomicBool,
    acq: UnsafeCell<Option<Acq>>,
}

// SAFETY: a slot's `acq` is written only by the ring's producer while `ready` is false and
// read only by the consumer (under the graph mutex) after `ready` is seen true (Acquire),
// which the producer set with Release after writing.
unsafe impl Sync for Ring {}

impl Ring {
    fn new() -> Ring {
        Ring {
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            slots: std::array::from_fn(|_| RingSlot {
                ready: AtomicBool::new(false),
                acq: UnsafeCell::new(None),
            }),
        }
    }

    /// Async-signal-safe: stores only.
    fn push(&self, acq: Acq) -> bool {
        let head = self.head.load(Relaxed);
        if head.wrapping_sub(self.tail.load(Acquire)) >= RING {
            self.dropped.fetch_add(1, Relaxed);
            return false;
        }
        let slot = &self.slots[head % RING];
        // SAFETY: the slot is free (`ready` false, behind the consumer's tail), and this
        // processor's interrupt context is the only producer (see the type's comment).
        unsafe { *slot.acq.get() = Some(acq) };
        slot.ready.store(true, Release);
        self.head.store(head.wrapping_add(1), Release);
        true
    }

    /// Takes the records that are complete, in order (consumer: holds the graph).
    fn drain(&self, out: &mut Vec<Acq>) {
        let head = self.head.load(Acquire);
        let mut tail = self.tail.load(Relaxed);
        while tail != head {
            let slot = &self.slots[tail % RING];
            if !slot.ready.load(Acquire) {
                break;
            }
            // SAFETY: `ready` is true: the producer finished writing and will not touch
            // the slot again until `tail` passes it.
            if let Some(a) = unsafe { (*slot.acq.get()).take() } {
                out.push(a);
            }
            slot.ready.store(false, Relaxed);
            tail = tail.wrapping_add(1);
        }
        self.tail.store(tail, Release);
    }
}

/// A machine's lock-order state.
pub(crate) struct Order {
    pub(crate) config: LockOrder,
    graph: Mutex<Graph>,
    /// Bumped when a lock leaves the graph: every chain cache starts over.
    epoch: AtomicU64,
    /// Interrupt-context records waiting in some ring.
    pending: AtomicUsize,
    /// A filter of keys that may be in the graph (so dropping a lock that never was costs
    /// no lock).
    maybe: Box<[AtomicU64]>,
}

const FILTER_WORDS: usize = 1024;

fn filter_bit(key: usize) -> (usize, u64) {
    let h = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48;
    ((h as usize / 64) % FILTER_WORDS, 1 << (h % 64))
}

impl Order {
    pub(crate) fn new(config: LockOrder) -> Order {
        Order {
            config,
            graph: Mutex::new(Graph::default()),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            maybe: (0..FILTER_WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self, m: &MachineShared) -> LockOrderStats {
        let g = self.graph();
        let dropped = m
            .processors
            .iter()
            .filter_map(|p| p.order_if_made())
            .map(|o| o.ring.dropped.load(Relaxed))
            .sum();
        LockOrderStats {
            locks: g.map.len(),
            edges: g.edge_map.len(),
            chains_validated: g.validated,
            backtraces: g.backtraces,
            approx_bytes: g.approx_bytes(),
            capped: g.capped,
            interrupt_records_dropped: dropped,
        }
    }
}

/// The IRQL a lock taken by `kind` at `cur` is held at, and whether interrupts are masked
/// meanwhile (`ExInterlocked`: a masked hold cannot be interrupted on its processor).
pub(crate) fn level_for(kind: AcquireKind, cur: Irql, sync: Option<Irql>) -> (Irql, bool) {
    match kind {
        AcquireKind::Raise | AcquireKind::TryRaise | AcquireKind::Queued => {
            (cur.max(Irql::DISPATCH), false)
        }
        AcquireKind::Interrupt | AcquireKind::Isr => (sync.map_or(cur, |s| s.max(cur)), false),
        AcquireKind::Interlocked => (cur, true),
        _ => (cur, false),
    }
}

/// Judges the acquisition at held entry `i` of `p` (pushed by the verifier's acquire, or
/// on success of a try-acquire). Raises SL-ORDER / LD-IRQ on a finding.
pub(crate) fn check(p: &Processor, i: usize, class: usize, masked: bool, is_try: bool) {
    let (Some(po), Some(o)) = (p.order(), p.machine().order.as_ref()) else {
        return;
    };
    let hash = p.chain_of(i) ^ (is_try as u64) << 1 ^ (masked as u64) << 2;
    let epoch = o.epoch.load(Acquire);
    po.sync_epoch(epoch);
    let hit = po.hit(hash);
    let in_interrupt = p.in_handler.load(Relaxed) > 0;
    if hit && (o.pending.load(Relaxed) == 0 || in_interrupt) {
        return;
    }
    let acq = snapshot(p, i, class, masked, is_try, in_interrupt);
    if in_interrupt {
        // No allocation here: the record goes to the ring as is.
        if po.ring.push(acq) {
            o.pending.fetch_add(1, Relaxed);
        }
        return;
    }
    let _own = crate::alloc::Exempt::new();
    let mut g = o.graph();
    let mut finding = drain_rings(&mut g, o, p.machine());
    if !hit {
        g.validated += 1;
        let f = g.process(o, &acq);
        finding = finding.or(f);
        po.insert(hash);
    }
    drop(g);
    if let Some(f) = finding {
        report(p, f);
    }
}

/// The verifier fast path's lock-order test for a blocking acquisition, not masked, whose
/// chain hash is `chain`: whether the chain is known valid (in this processor's cache,
/// under the current epoch) with nothing waiting in an interrupt ring. `false` sends the
/// acquisition to [`check`], which decides the same way and judges what is new.
#[inline(always)]
pub(crate) fn known(p: &Processor, chain: u64) -> bool {
    let (Some(po), Some(o)) = (p.order_if_made(), p.machine().order.as_ref()) else {
        return false;
    };
    o.epoch.load(Acquire) == po.epoch.load(Relaxed)
        && (o.pending.load(Relaxed) == 0 || p.in_handler.load(Relaxed) > 0)
        && po.hit(chain)
}

/// Judges what interrupt contexts recorded, from a processor's thread context when it
/// has nothing else to do (after a routine).
pub(crate) fn drain_idle(p: &Processor) {
    let Some(o) = p.machine().order.as_ref() else {
        return;
    };
    if o.pending.load(Relaxed) == 0 {
        return;
    }
    let _own = crate::alloc::Exempt::new();
    let finding = drain_rings(&mut o.graph(), o, p.machine());
    if let Some(f) = finding {
        let (bug, details) = f.into_bug();
        let mut report = crate::report::BugCheckReport::new(bug, p.index, p.irql());
        report.details = details.into();
        p.machine().stop(report);
    }
}

fn drain_rings(g: &mut Graph, o: &Order, m: &MachineShared) -> Option<Finding> {
    if o.pending.load(Relaxed) == 0 {
        return None;
    }
    let mut records = Vec::new();
    for q in m.processors.iter() {
        if let Some(po) = q.order_if_made() {
            po.ring.drain(&mut records);
        }
    }
    o.pending.fetch_sub(records.len(), Relaxed);
    let mut first = None;
    for a in &records {
        let f = g.process(o, a);
        first = first.or(f);
    }
    first
}

fn snapshot(p: &Processor, i: usize, class: usize, masked: bool, is_try: bool, irq: bool) -> Acq {
    let h = p.held(i);
    let mut held = [HeldRef::default(); RING_HELD];
    let ctx = p.context();
    let start = ctx.start.max(i.saturating_sub(RING_HELD)).min(i);
    let mut n = 0;
    for j in start..i {
        let e = p.held(j);
        held[n] = HeldRef {
            key: e.key,
            site: site_of(p, &e),
        };
        n += 1;
    }
    Acq {
        site: site_of(p, &h),
        class,
        key: h.key,
        masked,
        is_try,
        held,
        n_held: n,
        in_interrupt: irq,
    }
}

/// A lock left the graph's world (dropped or re-initialized).
pub(crate) fn retire(m: &MachineShared, lock: usize) {
    let Some(o) = m.order.as_ref() else { return };
    let (w, bit) = filter_bit(lock);
    if o.maybe[w].load(Relaxed) & bit == 0 {
        return;
    }
    let _own = crate::alloc::Exempt::new();
    if o.graph().remove(lock) {
        o.epoch.fetch_add(1, Release);
    }
}

/// What the graph found.
enum Finding {
    /// Adding `edge` (its index in `path`'s last place) closes the cycle `path`.
    Cycle { lock: usize, path: Vec<OrderEdge> },
    /// A lock used at `high.irql` and held at `low.irql` with interrupts enabled.
    Inversion {
        lock: usize,
        high: LockSite,
        low: LockSite,
        edge: Option<Box<OrderEdge>>,
    },
}

impl Finding {
    fn into_bug(self) -> (BugCheck, Vec<ReportDetail>) {
        match self {
            Finding::Cycle { lock, path } => (
                BugCheck::verifier(sub::DEADLOCK, lock, 0, 0, Rule::SL_ORDER),
                vec![ReportDetail::LockOrderCycle { edges: path }],
            ),
            Finding::Inversion {
                lock,
                high,
                low,
                edge,
            } => (
                BugCheck::verifier(sub::DEADLOCK, lock, 0, 1, Rule::LD_IRQ),
                vec![ReportDetail::IrqlInversion { high, low, edge }],
            ),
        }
    }
}

fn report(p: &Processor, f: Finding) {
    let (bug, details) = f.into_bug();
    crate::verifier::violation_with(p, bug, true, details);
}

struct Node {
    key: usize,
    class: usize,
    /// Position in the topological order.
    ord: u64,
    out: Vec<u32>,
    inn: Vec<u32>,
    /// Highest level any (non-try) acquisition used it at, and where.
    max_use: Option<SiteData>,
    /// Lowest level it was held at with interrupts enabled, and where.
    min_held: Option<SiteData>,
}

struct Edge {
    from: u32,
    to: u32,
    /// The acquisition of `from` that was held, and the acquisition of `to` that made the
    /// edge.
    held: SiteData,
    taken: SiteData,
    backtrace: Option<Arc<Backtrace>>,
    in_interrupt: bool,
}

/// Items addressed by a `u32` index that stays valid until the item is taken; taken
/// slots are reused.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, item: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = Some(item);
                i
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        }
    }

    /// The item at `i`, if it is there.
    fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items[i as usize].as_mut()
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.items[i as usize].as_ref()
    }

    /// Takes the item at `i` out (its index may be handed out again).
    fn take(&mut self, i: u32) -> Option<T> {
        let item = self.items[i as usize].take();
        if item.is_some() {
            self.free.push(i);
        }
        item
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flatten()
    }

    /// Slots allocated (for the memory estimate).
    fn capacity(&self) -> usize {
        self.items.capacity()
    }
}

#[derive(Default)]
struct Graph {
    map: HashMap<usize, u32>,
    nodes: Slab<Node>,
    edge_map: HashMap<(u32, u32), u32>,
    edges: Slab<Edge>,
    next_ord: u64,
    validated: u64,
    backtraces: usize,
    capped: bool,
    /// Edges already reported (continue mode: each inversion once).
    reported: HashSet<(usize, usize)>,
}

impl Graph {
    fn node(&self, n: u32) -> &Node {
        self.nodes.get(n).expect("live node")
    }

    fn node_mut(&mut self, n: u32) -> &mut Node {
        self.nodes.get_mut(n).expect("live node")
    }

    fn edge(&self, e: u32) -> &Edge {
        self.edges.get(e).expect("live edge")
    }

    fn cap(&mut self, what: &str, limit: usize) {
        if !self.capped {
            self.capped = true;
            eprintln!(
                "ntspin: lock-order verifier: the {what} cap ({limit}) is reached; further {what} are not tracked (raise LockOrder::max_{what})"
            );
        }
    }

    fn get_or_add(&mut self, o: &Order, key: usize, class: usize) -> Option<u32> {
        if let Some(&n) = self.map.get(&key) {
            return Some(n);
        }
        let cfg = &o.config;
        let (w, bit) = filter_bit(key);
        o.maybe[w].fetch_or(bit, Relaxed);
        if self.map.len() >= cfg.max_locks {
            self.cap("locks", cfg.max_locks);
            return None;
        }
        let node = Node {
            key,
            class,
            ord: self.next_ord,
            out: Vec::new(),
            inn: Vec::new(),
            max_use: None,
            min_held: None,
        };
        self.next_ord += 1;
        let n = self.nodes.insert(node);
        self.map.insert(key, n);
        Some(n)
    }

    /// Removes the node keyed `key` and its edges; whether there was one.
    fn remove(&mut self, key: usize) -> bool {
        let Some(n) = self.map.remove(&key) else {
            return false;
        };
        let node = self.nodes.take(n).expect("live node");
        for e in node.out.iter().chain(&node.inn) {
            if let Some(edge) = self.edges.take(*e) {
                self.edge_map.remove(&(edge.from, edge.to));
                if edge.backtrace.is_some() {
                    self.backtraces -= 1;
                }
                let other = if edge.from == n { edge.to } else { edge.from };
                if let Some(o) = self.nodes.get_mut(other) {
                    o.out.retain(|x| x != e);
                    o.inn.retain(|x| x != e);
                }
            }
        }
        true
    }

    fn approx_bytes(&self) -> usize {
        let node = std::mem::size_of::<Option<Node>>() + 32;
        let edge = std::mem::size_of::<Option<Edge>>() + 32 + 2 * 4;
        let adjacency: usize = self
            .nodes
            .iter()
            .map(|n| (n.out.capacity() + n.inn.capacity()) * 4)
            .sum();
        self.nodes.capacity() * node
            + self.edges.capacity() * edge
            + adjacency
            + self.backtraces * 2048
    }

    /// Judges one acquisition: usage levels (LD-IRQ), then edges (SL-ORDER, LD-IRQ).
    fn process(&mut self, o: &Order, a: &Acq) -> Option<Finding> {
        let cfg = &o.config;
        let y = self.get_or_add(o, a.key, a.class)?;
        if let Some(f) = self.note_usage(y, a) {
            return Some(f);
        }
        if a.is_try {
            return None;
        }
        for h in &a.held[..a.n_held] {
            if h.key == a.key {
                continue; // class mode: two locks of one class
            }
            let Some(x) = self.get_or_add(o, h.key, 0) else {
                continue;
            };
            if self.edge_map.contains_key(&(x, y)) {
                continue;
            }
            if self.edge_map.len() >= cfg.max_edges {
                self.cap("edges", cfg.max_edges);
                return None;
            }
            let backtrace = (!a.in_interrupt && self.backtraces < cfg.max_backtraces).then(|| {
                self.backtraces += 1;
                Arc::new(Backtrace::force_capture())
            });
            let edge = Edge {
                from: x,
                to: y,
                held: h.site,
                taken: a.site,
                backtrace,
                in_interrupt: a.in_interrupt,
            };
            if let Some(cycle) = self.add_edge(edge) {
                return Some(Finding::Cycle {
                    lock: a.site.lock,
                    path: cycle,
                });
            }
            if let Some(f) = self.edge_inversion(x, y, a.site.lock) {
                return Some(f);
            }
        }
        None
    }

    fn note_usage(&mut self, y: u32, a: &Acq) -> Option<Finding> {
        let level = a.site.level;
        let node = self.node_mut(y);
        let mut used_higher = false;
        let mut held_lower = false;
        if !a.is_try && node.max_use.is_none_or(|s| level > s.level) {
            node.max_use = Some(a.site);
            used_higher = true;
        }
        if !a.masked && node.min_held.is_none_or(|s| level < s.level) {
            node.min_held = Some(a.site);
            held_lower = true;
        }
        if !used_higher && !held_lower {
            return None;
        }
        let (class, max_use, min_held) = (node.class, node.max_use, node.min_held);
        if let (Some(hi), Some(lo)) = (max_use, min_held)
            && hi.level > lo.level
            && self.reported.insert((node_key(self, y), 0))
        {
            return Some(Finding::Inversion {
                lock: a.site.lock,
                high: hi.public(class),
                low: lo.public(class),
                edge: None,
            });
        }
        let node = self.node(y);
        if used_higher {
            for e in node.out.clone() {
                let to = self.edge(e).to;
                if let Some(f) = self.edge_inversion(y, to, a.site.lock) {
                    return Some(f);
                }
            }
        }
        if held_lower {
            for e in self.node(y).inn.clone() {
                let from = self.edge(e).from;
                if let Some(f) = self.edge_inversion(from, y, a.site.lock) {
                    return Some(f);
                }
            }
        }
        None
    }

    /// LD-IRQ on edge `x → y`: `x` is used above the level `y` is held at.
    fn edge_inversion(&mut self, x: u32, y: u32, lock: usize) -> Option<Finding> {
        let (hi, lo) = (self.node(x).max_use?, self.node(y).min_held?);
        if hi.level <= lo.level {
            return None;
        }
        let e = *self.edge_map.get(&(x, y))?;
        if !self.reported.insert((node_key(self, x), node_key(self, y))) {
            return None;
        }
        Some(Finding::Inversion {
            lock,
            high: hi.public(self.node(x).class),
            low: lo.public(self.node(y).class),
            edge: Some(Box::new(self.public_edge(e))),
        })
    }

    fn public_edge(&self, e: u32) -> OrderEdge {
        let edge = self.edge(e);
        OrderEdge {
            held: edge.held.public(self.node(edge.from).class),
            taken: edge.taken.public(self.node(edge.to).class),
            in_interrupt: edge.in_interrupt,
            backtrace: edge.backtrace.clone(),
        }
    }

    /// Pearce–Kelly insertion of `edge`: returns the cycle (as edges, the new one last)
    /// instead of inserting if it would close one.
    fn add_edge(&mut self, edge: Edge) -> Option<Vec<OrderEdge>> {
        let (x, y) = (edge.from, edge.to);
        let (ub, lb) = (self.node(x).ord, self.node(y).ord);
        if lb < ub {
            // Forward from y within [lb, ub]: reaching x is a cycle.
            let mut parent: HashMap<u32, u32> = HashMap::new(); // node -> edge that reached it
            let mut forward = vec![y];
            let mut stack = vec![y];
            let mut seen: HashSet<u32> = HashSet::from([y]);
            while let Some(n) = stack.pop() {
                for &e in &self.node(n).out {
                    let t = self.edge(e).to;
                    if t == x {
                        parent.insert(t, e);
                        return Some(self.cycle_path(&parent, x, y, edge));
                    }
                    if self.node(t).ord < ub && seen.insert(t) {
                        parent.insert(t, e);
                        forward.push(t);
                        stack.push(t);
                    }
                }
            }
            // Backward from x within [lb, ub].
            let mut backward = vec![x];
            let mut stack = vec![x];
            let mut seen_b: HashSet<u32> = HashSet::from([x]);
            while let Some(n) = stack.pop() {
                for &e in &self.node(n).inn {
                    let f = self.edge(e).from;
                    if self.node(f).ord > lb && seen_b.insert(f) {
                        backward.push(f);
                        stack.push(f);
                    }
                }
            }
            // Reorder: everything that reaches x before everything y reaches.
            backward.sort_by_key(|&n| self.node(n).ord);
            forward.sort_by_key(|&n| self.node(n).ord);
            let mut slots: Vec<u64> = backward
                .iter()
                .chain(&forward)
                .map(|&n| self.node(n).ord)
                .collect();
            slots.sort_unstable();
            for (n, ord) in backward.iter().chain(&forward).zip(slots) {
                self.node_mut(*n).ord = ord;
            }
        }
        let e = self.edges.insert(edge);
        self.edge_map.insert((x, y), e);
        self.node_mut(x).out.push(e);
        self.node_mut(y).inn.push(e);
        None
    }

    /// The cycle y → … → x (by `parent`) closed by the new edge x → y.
    fn cycle_path(
        &mut self,
        parent: &HashMap<u32, u32>,
        x: u32,
        y: u32,
        new: Edge,
    ) -> Vec<OrderEdge> {
        let mut path = Vec::new();
        let mut n = x;
        while n != y {
            let e = parent[&n];
            path.push(self.public_edge(e));
            n = self.edge(e).from;
        }
        path.reverse();
        let (from_class, to_class) = (self.node(new.from).class, self.node(new.to).class);
        path.push(OrderEdge {
            held: new.held.public(from_class),
            taken: new.taken.public(to_class),
            in_interrupt: new.in_interrupt,
            backtrace: new.backtrace.clone(),
        });
        if new.backtrace.is_some() {
            self.backtraces -= 1; // the edge is not kept
        }
        path
    }
}

fn node_key(g: &Graph, n: u32) -> usize {
    g.node(n).key
}

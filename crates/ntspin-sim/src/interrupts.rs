//! The interrupt controller: lines (vectors), the chains of interrupt objects connected to
//! them, asynchronous delivery by real-time signal, lazy-IRQL pending and replay, and the
//! DPC drain.
//!
//! What an assertion means (DESIGN.md): each assertion is one request and is never lost.
//! It sets the line's bit in one processor's request register (`irr`) and signals that
//! processor's thread. The handler services every requested line whose level is above the
//! processor's IRQL, highest first; the others stay requested, and the processor's `PENDING`
//! reason makes its next IRQL drop (or unmask) replay them. Requests arriving while a line
//! is requested or in service merge into one more service that starts after them. A
//! service routine returning FALSE causes nothing.
//!
//! **Passive-level lines.** A line whose objects are passive-level is acknowledged at its
//! level like any other, but nothing runs there: a level-sensitive line is masked (its
//! assertions latch on the line), and the line's work is queued for the machine's passive
//! worker. The worker is the high-priority system thread of Windows, modelled as
//! preemption: the first processor of the line's affinity that is at PASSIVE_LEVEL — and
//! holds no passive wait lock, and is not already running the worker — runs the chain
//! there, on the stack of whatever it interrupted (the handler itself if it interrupted
//! PASSIVE code; otherwise the next IRQL drop to PASSIVE, the next wake-up of an event, an
//! idle or blocked processor that is signalled). Each object's routine runs at PASSIVE
//! under its wait lock and may block; the line is unmasked when the chain is done. A
//! latched line is not masked: an assertion during the run leads to one more run.
//!
//! Because the worker borrows the interrupted thread's stack, that thread cannot run
//! until the routine returns: a passive-level routine that blocks waiting for something
//! only the interrupted code on *its own* processor would do waits for good (Windows
//! would schedule that thread elsewhere). The holder-of-a-wait-lock case, the common one,
//! is ruled out by never starting the worker over a holder.
//!
//! Everything on the handler's path is async-signal-safe: atomics only, no allocation, no
//! lock. The HAL's own bookkeeping (the verifier's tables) runs with the processor masked,
//! so the handler never sees it half-done. A bug check in the handler is recorded in the
//! processor's preallocated slot and the processor freezes (`stop.rs`).

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire,
    Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};

use ntspin::interrupt::{InterruptMode, KInterrupt};
use ntspin::{Irql, NtStatus};

use crate::machine::MachineShared;
use crate::processor::{Processor, wants};

/// Lines per machine (vectors 0..64).
pub const VECTORS: u32 = 64;
/// Interrupt objects one line can chain.
const CHAIN: usize = 8;

/// One interrupt line.
pub(crate) struct Line {
    chain: [AtomicPtr<KInterrupt>; CHAIN],
    /// The line's DIRQL while anything is connected, 0 when nothing is.
    level: AtomicU8,
    latched: AtomicBool,
    /// Union of the connected objects' affinities.
    affinity: AtomicU64,
    /// Dispatchers inside the chain right now (disconnect waits for 0).
    active: AtomicU32,
    /// An assertion arrived while nothing was connected: delivered at the next connect.
    unclaimed: AtomicBool,
    /// The connected objects are passive-level.
    passive: AtomicBool,
    /// A level-sensitive passive line between acknowledgment and the end of its run.
    masked: AtomicBool,
    /// An assertion arrived while `masked`: routed again at unmask.
    held: AtomicBool,
    /// The passive worker's state for this line (`work::*`).
    work: AtomicU8,
    pub(crate) asserted: AtomicU64,
    pub(crate) serviced: AtomicU64,
}

/// A machine's interrupt controller.
pub(crate) struct Controller {
    lines: Box<[Line]>,
    /// The processors interrupts can be routed to (the first 64).
    cpu_mask: u64,
    connect: Mutex<()>,
    next: AtomicU32,
    /// Passive lines whose work is queued and not yet claimed by a processor.
    passive_queued: AtomicU64,
}

/// States of a passive line's work.
mod work {
    pub(super) const IDLE: u8 = 0;
    pub(super) const QUEUED: u8 = 1;
    pub(super) const RUNNING: u8 = 2;
    /// Running, and asserted again since the run started (latched lines).
    pub(super) const AGAIN: u8 = 3;
}

impl Controller {
    pub(crate) fn new(processors: usize) -> Controller {
        Controller {
            cpu_mask: if processors >= 64 {
                u64::MAX
            } else {
                (1u64 << processors) - 1
            },
            lines: (0..VECTORS)
                .map(|_| Line {
                    chain: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
                    level: AtomicU8::new(0),
                    latched: AtomicBool::new(false),
                    affinity: AtomicU64::new(0),
                    active: AtomicU32::new(0),
                    unclaimed: AtomicBool::new(false),
                    passive: AtomicBool::new(false),
                    masked: AtomicBool::new(false),
                    held: AtomicBool::new(false),
                    work: AtomicU8::new(work::IDLE),
                    asserted: AtomicU64::new(0),
                    serviced: AtomicU64::new(0),
                })
                .collect(),
            connect: Mutex::new(()),
            next: AtomicU32::new(0),
            passive_queued: AtomicU64::new(0),
        }
    }

    pub(crate) fn line(&self, vector: u32) -> Option<&Line> {
        self.lines.get(vector as usize)
    }

    /// Whether nothing is in flight in the controller: no passive line queued, running
    /// or masked, no dispatcher inside a chain, no assertion held for unmask.
    pub(crate) fn quiet(&self) -> bool {
        self.passive_queued.load(SeqCst) == 0
            && self.lines.iter().all(|l| {
                l.work.load(SeqCst) == work::IDLE
                    && l.active.load(SeqCst) == 0
                    && !l.held.load(SeqCst)
                    && !l.masked.load(SeqCst)
            })
    }

    /// The connected object at `addr`, if there is one (never dereferences `addr` itself).
    pub(crate) fn find(&self, addr: usize) -> Option<&KInterrupt> {
        self.lines.iter().find_map(|l| {
            l.chain.iter().find_map(|s| {
                let p = s.load(Acquire);
                // SAFETY: a pointer in a chain is a connected object, alive until its
                // disconnect removes it and waits for dispatchers; the verifier's callers
                // hold it connected (ISL-OBJ is exactly this check).
                (p as usize == addr && !p.is_null()).then(|| unsafe { &*p })
            })
        })
    }

    pub(crate) fn connect(&self, m: &MachineShared, obj: &KInterrupt) -> Result<(), NtStatus> {
        let line = self.line(obj.vector()).ok_or(NtStatus::INVALID_PARAMETER)?;
        let _g = self.connect.lock().unwrap_or_else(|e| e.into_inner());
        let mut free = None;
        for (i, s) in line.chain.iter().enumerate() {
            let p = s.load(Acquire);
            if p.is_null() {
                free.get_or_insert(i);
                continue;
            }
            // SAFETY: chained objects are alive (see `find`).
            let other = unsafe { &*p };
            if !other.share_vector()
                || !obj.share_vector()
                || other.line_irql() != obj.line_irql()
                || other.is_passive() != obj.is_passive()
            {
                return Err(NtStatus::INVALID_PARAMETER);
            }
        }
        let slot = free.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let mask = self.cpu_mask;
        if obj.affinity() & mask == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        line.level.store(obj.line_irql().raw(), Release);
        line.passive.store(obj.is_passive(), Release);
        line.latched
            .store(obj.mode() == InterruptMode::Latched, Release);
        line.affinity.fetch_or(obj.affinity() & mask, AcqRel);
        line.chain[slot].store(obj as *const KInterrupt as *mut KInterrupt, SeqCst);
        if line.unclaimed.swap(false, AcqRel) {
            self.route(m, obj.vector());
        }
        Ok(())
    }

    pub(crate) fn disconnect(&self, obj: &KInterrupt) {
        let Some(line) = self.line(obj.vector()) else {
            return;
        };
        {
            let _g = self.connect.lock().unwrap_or_else(|e| e.into_inner());
            let me = obj as *const KInterrupt as *mut KInterrupt;
            for s in &line.chain {
                let _ = s.compare_exchange(me, std::ptr::null_mut(), SeqCst, Relaxed);
            }
            let mut affinity = 0;
            let mut any = false;
            for s in &line.chain {
                let p = s.load(Acquire);
                if !p.is_null() {
                    // SAFETY: chained objects are alive (see `find`).
                    affinity |= unsafe { &*p }.affinity();
                    any = true;
                }
            }
            line.affinity.store(affinity & self.cpu_mask, Release);
            if !any {
                line.level.store(0, Release);
            }
        }
        // Wait for dispatchers that may have loaded the pointer before it went.
        let mut spins = 0u32;
        while line.active.load(SeqCst) != 0 {
            // A service routine that froze at a bug check never finishes: this processor
            // cannot return (the caller would free the object) and freezes too.
            spins = spins.wrapping_add(1);
            <crate::SimHal as ntspin::Hal>::spin_wait(spins, ntspin::hal::SpinWait::Queued);
        }
        // The last object gone from a passive line: queued or masked-away requests stay
        // latched on the line for the next connection, as for an unconnected line.
        let _g = self.connect.lock().unwrap_or_else(|e| e.into_inner());
        if line.level.load(Acquire) == 0 && line.passive.swap(false, AcqRel) {
            let bit = 1u64 << obj.vector();
            let queued = self.passive_queued.fetch_and(!bit, AcqRel) & bit != 0;
            let pending = line.work.swap(work::IDLE, AcqRel) != work::IDLE;
            line.masked.store(false, SeqCst);
            if queued | pending | line.held.swap(false, AcqRel) {
                line.unclaimed.store(true, Release);
            }
        }
    }

    /// One assertion of `vector`, from any thread.
    pub(crate) fn assert_line(&self, m: &MachineShared, vector: u32) {
        let Some(line) = self.line(vector) else {
            return;
        };
        line.asserted.fetch_add(1, Relaxed);
        self.route(m, vector);
    }

    fn route(&self, m: &MachineShared, vector: u32) {
        let line = &self.lines[vector as usize];
        if line.masked.load(SeqCst) {
            line.held.store(true, SeqCst);
            // An unmask between the load and the store would have missed it.
            if line.masked.load(SeqCst) || !line.held.swap(false, SeqCst) {
                return;
            }
        }
        let affinity = line.affinity.load(Acquire);
        if affinity == 0 {
            line.unclaimed.store(true, Release);
            // A connect between the load and the store would have missed it.
            if line.affinity.load(Acquire) != 0 && line.unclaimed.swap(false, AcqRel) {
                self.route(m, vector);
            }
            return;
        }
        let n = affinity.count_ones();
        let pick = self.next.fetch_add(1, Relaxed) % n;
        let mut bits = affinity;
        for _ in 0..pick {
            bits &= bits - 1;
        }
        let cpu = bits.trailing_zeros() as usize;
        let p = &m.processors[cpu];
        p.irr.fetch_or(1 << vector, AcqRel);
        p.prcb.add_hal_wants(wants::PENDING);
        kick(p);
    }

    /// The DIRQL of `vector`, 0 while nothing is connected to it.
    pub(crate) fn level_of(&self, vector: u32) -> u8 {
        self.lines[vector as usize].level.load(Acquire)
    }
}

/// The real-time signal that plays the interrupt pin.
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// Installs the handler once per process, before the first signal is sent.
fn ensure_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed `sigaction` is a valid "no flags, empty mask" value to fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        // SA_NODEFER: a higher-level interrupt may nest inside a service routine, as on
        // hardware; SA_RESTART: interrupted system calls of the driver's thread go on.
        sa.sa_flags = libc::SA_NODEFER | libc::SA_RESTART;
        // SAFETY: `sa.sa_mask` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: installs a handler for a real-time signal nothing else in the program
        // uses; `sa` is fully initialized.
        let r = unsafe { libc::sigaction(signal(), &sa, std::ptr::null_mut()) };
        assert_eq!(
            r, 0,
            "ntspin-sim: cannot install the interrupt signal handler"
        );
    });
}

/// Signals processor `p`'s thread so it looks at its pending work. Under deterministic
/// delivery only an idle or blocked processor is signalled; a running one takes its
/// requests at its next HAL call.
pub(crate) fn kick(p: &Processor) {
    let thread = p.thread.load(Acquire);
    if thread == 0 {
        return; // not running: it delivers when its thread starts (`processor_main`)
    }
    if p.prcb.hal_wants_bits() & wants::INJECT != 0 {
        // Pairs with the fence in `wait_on`: either it sees the request before blocking,
        // or this sees it blocked.
        std::sync::atomic::fence(SeqCst);
        if !p.idle.load(SeqCst) && !p.blocked.load(SeqCst) {
            return;
        }
    }
    // One signal in flight per processor: the handler clears the flag before it reads the
    // request bits, so a request made after that read sends a new signal.
    if p.signaled.swap(true, SeqCst) {
        return;
    }
    ensure_handler();
    // SAFETY: `thread` is the `pthread_t` of a live thread: a processor's thread clears it
    // (`set_current(None)`) before it ends, and machines join their threads only after
    // their devices and controller stop sending.
    unsafe { libc::pthread_kill(thread as libc::pthread_t, signal()) };
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // Keep errno: the interrupted code may be between a system call and reading it.
    // SAFETY: `__errno_location` has no preconditions; it returns this thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is valid for this thread's whole life.
    let errno = unsafe { *errno_slot };
    if let Some(p) = crate::processor::current_if_attached()
        && !p.frozen.load(Relaxed)
    {
        p.in_handler.fetch_add(1, Relaxed);
        p.signaled.store(false, SeqCst);
        dispatch_pending(p);
        p.in_handler.fetch_sub(1, Relaxed);
    }
    // SAFETY: as above.
    unsafe { *errno_slot = errno };
}

/// Services what is requested and deliverable on `p` (the current processor), then drains
/// its DPCs if its IRQL is below DISPATCH. Called by the signal handler, by IRQL lowering
/// and unmasking when `PENDING` is set, and when a DPC is queued on the current processor.
pub(crate) fn dispatch_pending(p: &Processor) {
    if p.masked.load(Relaxed) > 0 || p.frozen.load(Relaxed) || p.stopping.load(Relaxed) {
        return;
    }
    let m = p.machine();
    if m.dead.load(Relaxed) {
        return; // bug-checked: no more interrupts, DPCs or work items
    }
    loop {
        let irr = p.irr.load(Acquire);
        if irr == 0 {
            break;
        }
        let cur = p.irql().raw();
        let mut best: Option<(u32, u8)> = None;
        let mut bits = irr;
        while bits != 0 {
            let v = bits.trailing_zeros();
            bits &= bits - 1;
            let level = m.controller.level_of(v);
            if level == 0 {
                // Disconnected since the request: nobody to serve it. Keep it latched on
                // the line for the next connection.
                if p.irr.fetch_and(!(1 << v), AcqRel) & (1 << v) != 0 {
                    m.controller.lines[v as usize]
                        .unclaimed
                        .store(true, Release);
                }
                continue;
            }
            if level > cur && best.is_none_or(|(_, l)| level > l) {
                best = Some((v, level));
            }
        }
        let Some((v, level)) = best else { break };
        if p.irr.fetch_and(!(1 << v), AcqRel) & (1 << v) == 0 {
            continue; // a nested handler took it
        }
        if m.controller.lines[v as usize].passive.load(Acquire) {
            acknowledge_passive(p, m, v);
        } else {
            service_line(p, m, v, level);
        }
    }
    if p.irql() < Irql::DISPATCH && p.prcb.dpcs_pending() {
        drain_dpcs(p);
    }
    if p.irql() == Irql::PASSIVE
        && (m.controller.passive_queued.load(Acquire) != 0 || !m.work_items.is_empty())
    {
        run_passive_work(p, m);
    }
    refresh_pending(p);
}

/// Whether `p` can run the passive worker now: at PASSIVE, not masked, not running it
/// already, holding no wait lock (the routine must never wait for its own stack).
fn can_run_worker(p: &Processor) -> bool {
    p.in_worker.load(Relaxed) == 0 && could_run_worker(p)
}

/// As `can_run_worker`, but a processor already running the worker counts: it takes
/// newly queued lines before it stops.
fn could_run_worker(p: &Processor) -> bool {
    p.irql() == Irql::PASSIVE
        && p.masked.load(Relaxed) == 0
        && p.prcb.wait_locks_held() == 0
        && !p.frozen.load(Relaxed)
        && !p.stopping.load(Relaxed)
}

/// A queued passive line `p` may run (in its affinity), if any.
fn passive_work_for(p: &Processor, m: &MachineShared, skip: u64) -> Option<u32> {
    let mut bits = m.controller.passive_queued.load(Acquire) & !skip;
    while bits != 0 {
        let v = bits.trailing_zeros();
        bits &= bits - 1;
        if m.controller.lines[v as usize].affinity.load(Acquire) & p.affinity_bit() != 0 {
            return Some(v);
        }
    }
    None
}

/// Acknowledges passive line `vector` on `p` (at or above the line's level, in the
/// handler or a replay): masks it if level-sensitive and queues its work for the worker.
fn acknowledge_passive(p: &Processor, m: &MachineShared, vector: u32) {
    let line = &m.controller.lines[vector as usize];
    if !line.latched.load(Acquire) {
        line.masked.store(true, SeqCst);
    }
    loop {
        let (from, to) = match line.work.load(Acquire) {
            work::IDLE => (work::IDLE, work::QUEUED),
            work::RUNNING => (work::RUNNING, work::AGAIN),
            _ => return, // queued, or already asked to run again: merged
        };
        if line
            .work
            .compare_exchange(from, to, AcqRel, Acquire)
            .is_ok()
        {
            if to == work::QUEUED {
                m.controller.passive_queued.fetch_or(1 << vector, AcqRel);
                announce_passive(p, m, line.affinity.load(Acquire));
            }
            return;
        }
    }
}

/// Makes the processors of `affinity` look for passive work at their next PASSIVE point,
/// and signals the one that should take it now: an idle processor if there is one (so no
/// routine is preempted), else one at PASSIVE — unless `p` itself takes it on its way out
/// of the dispatcher.
fn announce_passive(p: &Processor, m: &MachineShared, affinity: u64) {
    for other in m.processors.iter().take(64) {
        if affinity & other.affinity_bit() != 0 {
            other.prcb.add_hal_wants(wants::PENDING);
        }
    }
    if let Some(idle) = idle_worker(m, affinity) {
        if !std::ptr::eq(idle, p) {
            kick(idle);
        }
        return;
    }
    if affinity & p.affinity_bit() != 0 && can_run_worker(p) {
        return;
    }
    let other =
        m.processors.iter().take(64).find(|o| {
            affinity & o.affinity_bit() != 0 && !std::ptr::eq(*o, p) && can_run_worker(o)
        });
    if let Some(o) = other {
        kick(o);
    }
}

/// An idle processor of `affinity` (no routine running) that can run the worker now.
fn idle_worker(m: &MachineShared, affinity: u64) -> Option<&Processor> {
    m.processors
        .iter()
        .take(64)
        .find(|o| affinity & o.affinity_bit() != 0 && o.idle.load(SeqCst) && could_run_worker(o))
}

/// The worker on `p` (at PASSIVE): claims queued passive lines and runs their chains. A
/// busy processor leaves a line to an idle one of its affinity (which it signals).
fn run_passive_work(p: &Processor, m: &MachineShared) {
    let mut skip = 0u64;
    let mut items_elsewhere = false;
    while can_run_worker(p) {
        p.in_worker.fetch_add(1, Relaxed);
        let done = Decrement(&p.in_worker);
        while let Some(v) = passive_work_for(p, m, skip) {
            let line = &m.controller.lines[v as usize];
            if !p.idle.load(SeqCst)
                && let Some(idle) = idle_worker(m, line.affinity.load(Acquire))
            {
                kick(idle);
                skip |= 1 << v;
                continue;
            }
            // Clear the bit before claiming: a later queueing sets it again after its
            // state change, so a set bit is never lost, and a stale one only costs a
            // failed claim.
            m.controller.passive_queued.fetch_and(!(1 << v), AcqRel);
            if line
                .work
                .compare_exchange(work::QUEUED, work::RUNNING, AcqRel, Acquire)
                .is_ok()
            {
                run_passive_line(p, m, v);
            }
        }
        if !m.work_items.is_empty() {
            match idle_worker(m, u64::MAX) {
                Some(idle) if !p.idle.load(SeqCst) => {
                    kick(idle);
                    items_elsewhere = true;
                }
                _ => run_work_items(p, m),
            }
        }
        drop(done);
        // Queued after the last look, while this processor still counted as running the
        // worker (so nobody else was asked to): look again.
        let items = !items_elsewhere && !m.work_items.is_empty();
        if passive_work_for(p, m, skip).is_none() && !items {
            break;
        }
    }
}

/// Runs the machine's queued work items on `p` (the worker, at PASSIVE), checking each
/// one's exit (IRQL-WORKER-EXIT).
fn run_work_items(p: &Processor, m: &MachineShared) {
    let arbitrary = p.prcb.take_arbitrary();
    m.work_items.drain(|item| {
        let (routine, context, addr) = {
            // SAFETY: a pointer on the machine's work queue was handed over by
            // `queue_work_item`, stays valid until it has run, and runs once per queueing.
            let i = unsafe { item.as_ref() };
            (i.routine_addr(), i.context(), i.addr())
        };
        let held = p.held_count();
        let floor = p.enter_context();
        // SAFETY: as above; this processor is at PASSIVE running the worker.
        unsafe { ntspin::workitem::KWorkItem::run(item) };
        p.work_items_run.fetch_add(1, Relaxed);
        if p.verifies() && !crate::verifier::worker_exit_held(p, held) {
            crate::verifier::worker_returned(p, routine, context, addr);
        }
        p.purge_released();
        p.leave_context(floor);
        p.prcb.set_irql(Irql::PASSIVE);
    });
    p.prcb.restore_arbitrary(arbitrary);
}

/// A work item was queued (from any thread, any IRQL): make a processor at PASSIVE run
/// it — an idle one if there is one.
pub(crate) fn announce_work_item(m: &MachineShared) {
    let me = crate::processor::current_if_attached();
    let me = me.filter(|p| std::ptr::eq(p.machine(), m));
    match me {
        Some(p) => announce_passive(p, m, u64::MAX),
        None => {
            for o in m.processors.iter().take(64) {
                o.prcb.add_hal_wants(wants::PENDING);
            }
            let target = idle_worker(m, u64::MAX)
                .or_else(|| m.processors.iter().take(64).find(|o| can_run_worker(o)));
            if let Some(o) = target {
                kick(o);
            }
        }
    }
}

/// Runs passive line `vector`'s chain at PASSIVE until no request is left, then unmasks.
fn run_passive_line(p: &Processor, m: &MachineShared, vector: u32) {
    let line = &m.controller.lines[vector as usize];
    line.active.fetch_add(1, SeqCst);
    let _active = Decrement(&line.active);
    // The worker is its own thread: not the interrupted code's "arbitrary thread" mark.
    let arbitrary = p.prcb.take_arbitrary();
    let held = p.held_count();
    let floor = p.enter_context();
    loop {
        run_chain(p, line, Irql::PASSIVE, |obj| {
            if p.verifies() && !crate::verifier::worker_exit_held(p, held) {
                crate::verifier::worker_returned(p, obj.routine_addr(), obj.context(), obj.addr());
            }
        });
        if line
            .work
            .compare_exchange(work::RUNNING, work::IDLE, AcqRel, Acquire)
            .is_ok()
        {
            break;
        }
        // Asserted again during the run (latched): one more run.
        line.work.store(work::RUNNING, Release);
    }
    p.purge_released();
    p.leave_context(floor);
    p.prcb.restore_arbitrary(arbitrary);
    if line.masked.swap(false, SeqCst) && line.held.swap(false, SeqCst) {
        m.controller.route(m, vector);
    }
}

/// Decrements a counter when dropped (also when a bug check unwinds through).
struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Sets or clears `PENDING` to match what is left (clear, then look again, so a request
/// arriving meanwhile is never hidden).
pub(crate) fn refresh_pending(p: &Processor) {
    let busy = |p: &Processor| {
        p.irr.load(Acquire) != 0
            || p.prcb.dpcs_pending()
            || passive_work_for(p, p.machine(), 0).is_some()
            || !p.machine().work_items.is_empty()
    };
    if busy(p) {
        p.prcb.add_hal_wants(wants::PENDING);
    } else {
        p.prcb.clear_hal_wants(wants::PENDING);
        if busy(p) {
            p.prcb.add_hal_wants(wants::PENDING);
        }
    }
}

fn service_line(p: &Processor, m: &MachineShared, vector: u32, level: u8) {
    let line = &m.controller.lines[vector as usize];
    line.active.fetch_add(1, SeqCst);
    let old = p.irql();
    let level = Irql::from_raw(level);
    p.prcb.set_irql(level);
    let floor = p.enter_context();
    let timing = p.verifies().then(|| p.watch.isr.begin());
    run_chain(p, line, level, |obj| {
        if p.verifies() {
            crate::verifier::isr_returned(p, obj.routine_addr(), level);
        }
    });
    if let Some(t) = timing {
        p.watch.isr.end(t, crate::watchdog::ISR_NOTE_NS);
    }
    p.purge_released();
    p.leave_context(floor);
    p.prcb.set_irql(old);
    if old < Irql::DISPATCH {
        p.watch.lowered.fetch_add(1, Relaxed);
    }
    line.active.fetch_sub(1, SeqCst);
}

/// Calls the service routines chained on `line` at `level` (the line's DIRQL, or PASSIVE
/// on the worker), `after(obj)` following each (the verifier's exit check), each routine
/// starting at `level`. Level-sensitive: stops at the first that claims the interrupt;
/// latched: scans again until a full pass claims nothing.
///
/// The caller counts itself in `line.active`, so chained objects stay alive meanwhile
/// (disconnect waits for it), and is at `level`.
fn run_chain(p: &Processor, line: &Line, level: Irql, after: impl Fn(&KInterrupt)) {
    let latched = line.latched.load(Acquire);
    loop {
        let mut claimed_any = false;
        for slot in &line.chain {
            let obj = slot.load(SeqCst);
            if obj.is_null() {
                continue;
            }
            // SAFETY: a chained object is connected and stays alive while `active` counts
            // the caller (disconnect waits for it).
            let obj = unsafe { &*obj };
            // SAFETY: connected, and this processor is at the level its routine runs at.
            let claimed = unsafe { obj.service() };
            p.isrs.fetch_add(1, Relaxed);
            line.serviced.fetch_add(1, Relaxed);
            after(obj);
            p.prcb.set_irql(level);
            if claimed {
                claimed_any = true;
                if !latched {
                    break;
                }
            }
        }
        if !latched || !claimed_any {
            break;
        }
    }
}

/// Runs the DPCs queued on `p` at DISPATCH_LEVEL, checking each one's exit
/// (IRQL-DPC-EXIT).
pub(crate) fn drain_dpcs(p: &Processor) {
    // DPCs run in no thread's context: not the interrupted code's "arbitrary thread" mark.
    let arbitrary = p.prcb.take_arbitrary();
    let old = p.irql();
    p.prcb.set_irql(Irql::DISPATCH);
    ntspin::dpc::drain(&p.prcb, |dpc, run| {
        let held = p.held_count();
        let floor = p.enter_context();
        let timing = p.verifies().then(|| p.watch.dpc.begin());
        p.in_dpc.fetch_add(1, Relaxed);
        run();
        p.in_dpc.fetch_sub(1, Relaxed);
        p.purge_released();
        if let Some(t) = timing {
            p.watch.dpc.end(t, crate::watchdog::DPC_NOTE_NS);
        }
        p.purge_released();
        p.leave_context(floor);
        p.dpcs.fetch_add(1, Relaxed);
        if p.verifies() {
            crate::verifier::dpc_returned(p, dpc.routine(), dpc.addr(), held);
        }
        p.prcb.set_irql(Irql::DISPATCH);
    });
    p.prcb.set_irql(old);
    if old < Irql::DISPATCH {
        p.watch.lowered.fetch_add(1, Relaxed);
    }
    p.prcb.restore_arbitrary(arbitrary);
}

/// The injection generator's starting state for processor `index` (never 0).
pub(crate) fn seed_for(seed: u64, index: u32) -> u64 {
    splitmix(seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The next value of processor `p`'s generator (xorshift64*; only its own thread steps it).
fn next_random(p: &Processor) -> u64 {
    let mut x = p.rng.load(Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p.rng.store(x, Relaxed);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A HAL call under deterministic delivery: maybe injects an assertion of a line connected
/// in `p`'s affinity (chosen by `p`'s generator), then delivers what is requested and
/// deliverable at the current IRQL. Not inside a signal handler (an idle or blocked
/// processor's: no driver code to interleave with) nor while masked.
#[cold]
#[inline(never)]
pub(crate) fn injection_point(p: &Processor) {
    if p.in_handler.load(Relaxed) > 0
        || p.masked.load(Relaxed) > 0
        || p.frozen.load(Relaxed)
        || p.stopping.load(Relaxed)
    {
        return;
    }
    let m = p.machine();
    let crate::machine::Delivery::Deterministic { one_in, .. } = m.delivery else {
        return;
    };
    let call = p.hal_calls.fetch_add(1, Relaxed);
    let r = next_random(p);
    if one_in != 0 && (r >> 32) % u64::from(one_in) == 0 {
        let mut lines = 0u64;
        for (v, line) in m.controller.lines.iter().enumerate() {
            if line.level.load(Acquire) != 0 && line.affinity.load(Acquire) & p.affinity_bit() != 0
            {
                lines |= 1 << v;
            }
        }
        if lines != 0 {
            let mut k = (r & 0xFFFF_FFFF) % u64::from(lines.count_ones());
            let mut bits = lines;
            while k > 0 {
                bits &= bits - 1;
                k -= 1;
            }
            let v = bits.trailing_zeros();
            m.controller.lines[v as usize]
                .asserted
                .fetch_add(1, Relaxed);
            p.irr.fetch_or(1 << v, AcqRel);
            p.prcb.add_hal_wants(wants::PENDING);
            let _own = crate::alloc::Exempt::new();
            let mut kept = m.injections.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < crate::machine::INJECTIONS_KEPT {
                kept.push(crate::machine::Injection {
                    processor: p.index as usize,
                    hal_call: call,
                    vector: v,
                });
            }
            drop(kept);
        }
    }
    if p.prcb.hal_wants_bits() & wants::PENDING != 0 {
        dispatch_pending(p);
    }
}

//! The machine: N virtual processors (one OS thread each), a verifier level, and the
//! routines that run driver code on them and bring back `Result<T, BugCheckReport>`.
//!
//! A thread attached to no machine uses the **default machine**, so a plain `#[test]` can
//! take a `SpinLock` without building anything. The default machine serves unrelated
//! tests running in parallel, so a bug check there is delivered to the thread that raised
//! it (as a panic carrying the report, or through [`catch_bug_check`]) and does not stop
//! other threads; a built [`Machine`] stops all of its processors, as Windows does.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, JoinHandle};

use ntspin::Irql;

use crate::interrupts::Controller;
use crate::order::{LockOrder, LockOrderStats};
use crate::processor::{self, OrderKeys, Processor};
use crate::report::BugCheckReport;
use crate::watchdog::{Watchdog, WatchdogStats, WatchdogThread};

/// How much the verifier checks (`RULES.md`, "Verifier levels").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Verifier {
    /// Like a retail kernel: no checks at all.
    Off,
    /// Every rule; the first violation bug-checks and stops the machine.
    #[default]
    Standard,
    /// Every rule; each violation that can be survived (IRQL and OldIrql rules) is recorded
    /// as a live dump (0x1C4, same parameters) and execution goes on. Violations after which
    /// going on would hang or corrupt memory (recursion, releasing what is not owned, mixed
    /// modes, garbage lock words, reused handles) still stop the machine.
    StandardContinue,
}

/// How interrupts reach processors.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Delivery {
    /// As on hardware: an assertion signals the chosen processor's thread at once, and
    /// its handler runs wherever that thread happens to be.
    #[default]
    Asynchronous,
    /// Interrupts arrive only at HAL calls (IRQL changes, lock routines, waits), so a run
    /// is a function of the code and the seed. At each HAL call a processor makes, a
    /// generator seeded from `seed` and the processor number injects, one time in
    /// `one_in` (never if 0), an assertion of one of the lines connected in its affinity
    /// (its service routine sees a device that did not interrupt, or one that did); and
    /// requests already made (injected, or asserted by code) are delivered there if the
    /// IRQL allows. No signal interrupts a running routine; an idle processor, or one
    /// blocked in a wait, is still signalled (it runs no driver code to interleave with).
    ///
    /// With one processor and assertions made only by the routine itself, the same seed
    /// replays the same interleaving exactly ([`Machine::injections`] shows it); a
    /// device's own hardware thread asserting on its own time is not replayable.
    Deterministic {
        /// The generator's seed.
        seed: u64,
        /// The chance of an injection at each HAL call: one in this many (0: none).
        one_in: u32,
    },
}

/// One interrupt injected by deterministic delivery.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Injection {
    /// The processor it was injected on.
    pub processor: usize,
    /// Which of that processor's HAL calls (counting from 0) it was injected at.
    pub hal_call: u64,
    /// The line.
    pub vector: u32,
}

/// Most injections [`Machine::injections`] keeps (later ones still happen).
pub(crate) const INJECTIONS_KEPT: usize = 1 << 16;

/// State shared by a machine's handle, its processors and the HAL.
pub(crate) struct MachineShared {
    pub(crate) id: u32,
    pub(crate) verifier: Verifier,
    pub(crate) delivery: Delivery,
    pub(crate) injections: Mutex<Vec<Injection>>,
    pub(crate) is_default: bool,
    pub(crate) processors: Box<[Processor]>,
    pub(crate) bug_check: Mutex<Option<BugCheckReport>>,
    /// Set at the first bug check: a stopped machine services no more interrupts, DPCs or
    /// work items (as a bug-checked Windows machine takes none).
    pub(crate) dead: std::sync::atomic::AtomicBool,
    pub(crate) live_dumps: Mutex<Vec<BugCheckReport>>,
    pub(crate) warnings: Mutex<Vec<BugCheckReport>>,
    pub(crate) controller: Controller,
    /// Work items waiting for the worker.
    pub(crate) work_items: ntspin::workitem::WorkQueue,
    /// Lock-order tracking (SL-ORDER, LD-IRQ); `None` when off.
    pub(crate) order: Option<crate::order::Order>,
    /// Watchdog limits (SL-HOLDTIME, DL-HANG).
    pub(crate) watchdog: Watchdog,
    /// The C locks `KeInitializeSpinLock` initialized here (SL-INIT).
    pub(crate) c_locks: crate::clocks::InitializedLocks,
}

impl MachineShared {
    pub(crate) fn new(
        verifier: Verifier,
        delivery: Delivery,
        processors: usize,
        is_default: bool,
        order: LockOrder,
        watchdog: Watchdog,
    ) -> Arc<MachineShared> {
        let tracks_order = order.enabled && verifier != Verifier::Off;
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        let id = if is_default {
            0
        } else {
            NEXT_ID.fetch_add(1, Relaxed)
        };
        let shared = Arc::new_cyclic(|weak: &Weak<MachineShared>| {
            let me = weak.as_ptr();
            let deterministic = matches!(delivery, Delivery::Deterministic { .. });
            MachineShared {
                id,
                verifier,
                delivery,
                injections: Mutex::new(Vec::new()),
                is_default,
                processors: (0..processors as u32)
                    .map(|i| {
                        let keying = match (tracks_order, order.classes) {
                            (false, _) => OrderKeys::Off,
                            (true, false) => OrderKeys::Instances,
                            (true, true) => OrderKeys::Classes,
                        };
                        let p = Processor::new(me, id, i, verifier, deterministic, keying);
                        if let Delivery::Deterministic { seed, .. } = delivery {
                            p.rng.store(crate::interrupts::seed_for(seed, i), Relaxed);
                        }
                        p
                    })
                    .collect(),
                bug_check: Mutex::new(None),
                dead: std::sync::atomic::AtomicBool::new(false),
                live_dumps: Mutex::new(Vec::new()),
                warnings: Mutex::new(Vec::new()),
                controller: Controller::new(processors),
                work_items: ntspin::workitem::WorkQueue::new(),
                order: tracks_order.then(|| crate::order::Order::new(order)),
                watchdog,
                c_locks: crate::clocks::InitializedLocks::default(),
            }
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&shared));
        shared
    }

    /// Records `report` as the machine's bug check (the first one wins) and asks every
    /// processor to stop at its next HAL call.
    pub(crate) fn stop(&self, report: BugCheckReport) {
        self.dead.store(true, SeqCst);
        {
            let mut slot = self.bug_check.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(report);
            }
        }
        for p in self.processors.iter() {
            p.request_stop();
        }
    }

    pub(crate) fn first_bug_check(&self) -> Option<BugCheckReport> {
        let mut slot = self.bug_check.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            // A bug check raised in interrupt context waits in its processor's slot.
            *slot = self.processors.iter().find_map(|p| {
                let (bug, irql) = p.isr_bug.read()?;
                Some(BugCheckReport::from_interrupt(bug, p, irql))
            });
        }
        slot.clone()
    }
}

impl Drop for MachineShared {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Every live machine by id, so a lock word naming another machine's processor can be
/// judged. Consulted only on slow paths (a long spin), never per acquisition.
fn registry() -> &'static Mutex<HashMap<u32, Weak<MachineShared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u32, Weak<MachineShared>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The live machine whose controller has the interrupt object at `addr` connected.
pub(crate) fn machine_connecting(addr: usize) -> Option<Arc<MachineShared>> {
    let machines: Vec<Arc<MachineShared>> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    machines
        .into_iter()
        .find(|m| m.controller.find(addr).is_some())
}

pub(crate) fn machine_by_id(id: u32) -> Option<Arc<MachineShared>> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .and_then(Weak::upgrade)
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Builds a [`Machine`].
///
/// ```
/// use ntspin_sim::{Machine, Verifier};
/// let m = Machine::builder().processors(2).verifier(Verifier::Off).build();
/// assert_eq!(m.processors(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct MachineBuilder {
    processors: usize,
    verifier: Verifier,
    delivery: Delivery,
    order: LockOrder,
    watchdog: Watchdog,
}

impl MachineBuilder {
    /// The number of virtual processors (default: one per available host core). May
    /// exceed the host's cores: spinning processors give their core back.
    pub fn processors(mut self, n: usize) -> Self {
        self.processors = n;
        self
    }

    /// The verifier level (default: standard).
    pub fn verifier(mut self, v: Verifier) -> Self {
        self.verifier = v;
        self
    }

    /// Deterministic interrupt delivery from `seed`, injecting at one HAL call in 16
    /// (see [`Delivery::Deterministic`]; [`delivery`](Self::delivery) sets the rate).
    ///
    /// ```
    /// use ntspin_sim::{Delivery, Machine};
    /// let m = Machine::builder().processors(1).deterministic(7).build();
    /// assert_eq!(m.delivery(), Delivery::Deterministic { seed: 7, one_in: 16 });
    /// ```
    pub fn deterministic(self, seed: u64) -> Self {
        self.delivery(Delivery::Deterministic { seed, one_in: 16 })
    }

    /// How interrupts are delivered (default: asynchronously, by signal).
    pub fn delivery(mut self, d: Delivery) -> Self {
        self.delivery = d;
        self
    }

    /// Lock-order and IRQL-inversion tracking (SL-ORDER, LD-IRQ; default: on, by
    /// instance). Only with the verifier on; [`LockOrder::off`] switches it off alone.
    ///
    /// ```
    /// use ntspin_sim::{LockOrder, Machine};
    /// let m = Machine::builder().processors(1).lock_order(LockOrder::off()).build();
    /// assert!(m.lock_order_stats().is_none());
    /// ```
    pub fn lock_order(mut self, order: LockOrder) -> Self {
        self.order = order;
        self
    }

    /// Watchdog limits (SL-HOLDTIME, DL-HANG; default: `RULES.md`'s). Only with the
    /// verifier on.
    pub fn watchdog(mut self, w: Watchdog) -> Self {
        self.watchdog = w;
        self
    }

    /// Starts the processors.
    ///
    /// # Panics
    ///
    /// If asked for no processors or for more than 4096.
    pub fn build(self) -> Machine {
        assert!(
            (1..=4096).contains(&self.processors),
            "a machine has 1..=4096 processors, not {}",
            self.processors
        );
        let shared = MachineShared::new(
            self.verifier,
            self.delivery,
            self.processors,
            false,
            self.order,
            self.watchdog,
        );
        // Idle until their first routine (a thread not yet started takes its requests
        // when it starts).
        for p in shared.processors.iter() {
            p.idle.store(true, SeqCst);
            p.init_order();
        }
        let mut senders = Vec::with_capacity(self.processors);
        let mut threads = Vec::with_capacity(self.processors);
        for i in 0..self.processors {
            let (tx, rx) = mpsc::channel::<Job>();
            let m = Arc::clone(&shared);
            let t = thread::Builder::new()
                .name(format!("ntspin-cpu{i}"))
                .spawn(move || processor_main(m, i, rx))
                .expect("spawn a processor thread");
            senders.push(tx);
            threads.push(t);
        }
        let watchdog = (self.verifier != Verifier::Off && self.watchdog.enabled)
            .then(|| WatchdogThread::start(&shared));
        Machine {
            shared,
            senders,
            threads,
            watchdog,
        }
    }
}

fn processor_main(m: Arc<MachineShared>, index: usize, jobs: Receiver<Job>) {
    let p: &Processor = &m.processors[index];
    p.in_use.store(true, SeqCst);
    processor::set_current(Some(p));
    p.watch.attach_clock();
    loop {
        p.idle.store(true, SeqCst);
        // Requests routed here before the thread existed, or during the last routine.
        crate::interrupts::dispatch_pending(p);
        let job = jobs.recv();
        p.idle.store(false, SeqCst);
        let Ok(job) = job else { break };
        job();
        p.reset(Irql::PASSIVE, 0);
        // What interrupt contexts recorded for the lock-order verifier.
        crate::order::drain_idle(p);
    }
    p.watch.detach_clock();
    processor::set_current(None);
}

/// A simulated multiprocessor: virtual processors with a real IRQL, and a verifier.
///
/// ```
/// use ntspin::SpinLock;
/// use ntspin_sim::Machine;
///
/// let m = Machine::builder().processors(4).build();
/// let counter = SpinLock::new(0u64);
/// let results = m.run_each(|_cpu| {
///     for _ in 0..1000 {
///         *counter.lock() += 1;
///     }
/// });
/// assert!(results.iter().all(Result::is_ok));
/// assert_eq!(*counter.lock(), 4000);
/// ```
pub struct Machine {
    shared: Arc<MachineShared>,
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    watchdog: Option<WatchdogThread>,
}

impl Machine {
    /// A builder: default one processor per host core, standard verifier.
    pub fn builder() -> MachineBuilder {
        MachineBuilder {
            processors: thread::available_parallelism().map_or(1, |n| n.get()),
            verifier: Verifier::Standard,
            delivery: Delivery::Asynchronous,
            order: LockOrder::default(),
            watchdog: Watchdog::default(),
        }
    }

    /// A machine with `n` processors and the standard verifier.
    ///
    /// ```
    /// assert_eq!(ntspin_sim::Machine::new(3).processors(), 3);
    /// ```
    pub fn new(n: usize) -> Machine {
        Machine::builder().processors(n).build()
    }

    /// The number of processors.
    pub fn processors(&self) -> usize {
        self.shared.processors.len()
    }

    /// The verifier level.
    pub fn verifier(&self) -> Verifier {
        self.shared.verifier
    }

    /// How interrupts are delivered.
    pub fn delivery(&self) -> Delivery {
        self.shared.delivery
    }

    /// What the lock-order verifier tracks now; `None` when it is off (verifier off, or
    /// [`LockOrder::off`]).
    ///
    /// ```
    /// use ntspin::SpinLock;
    /// let m = ntspin_sim::Machine::new(1);
    /// let (a, b) = (SpinLock::new(()), SpinLock::new(()));
    /// m.run_on(0, || { let _a = a.lock(); let _b = b.lock_at_dpc_level(_a.dpc_level()); }).unwrap();
    /// let stats = m.lock_order_stats().unwrap();
    /// assert_eq!((stats.locks, stats.edges), (2, 1));
    /// ```
    pub fn lock_order_stats(&self) -> Option<LockOrderStats> {
        self.shared.order.as_ref().map(|o| o.stats(&self.shared))
    }

    /// The watchdog limits.
    pub fn watchdog(&self) -> Watchdog {
        self.shared.watchdog
    }

    /// ISR and DPC duration statistics of processor `cpu` (processor time).
    ///
    /// # Panics
    ///
    /// If `cpu` is not a processor of this machine.
    pub fn watchdog_stats(&self, cpu: usize) -> WatchdogStats {
        self.shared.processors[cpu].watch.stats()
    }

    /// The interrupts deterministic delivery injected so far, in order per processor (the
    /// first 65 536; empty for asynchronous delivery). Two runs of the same code with the
    /// same seed on one processor give the same list.
    pub fn injections(&self) -> Vec<Injection> {
        self.shared
            .injections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bug check that stopped the machine, if any.
    pub fn bug_check(&self) -> Option<BugCheckReport> {
        self.shared.first_bug_check()
    }

    /// Asserts interrupt line `vector` once, from any thread: one request, delivered
    /// asynchronously to a processor in the line's affinity, never lost (see the
    /// `interrupts` module). An assertion with nothing connected is latched until
    /// something connects.
    ///
    /// ```
    /// use core::pin::pin;
    /// use core::sync::atomic::{AtomicU32, Ordering};
    /// use ntspin::Irql;
    /// use ntspin::interrupt::{Interrupt, InterruptConfig};
    ///
    /// let m = ntspin_sim::Machine::new(2);
    /// let hits = AtomicU32::new(0);
    /// m.run_on(0, || {
    ///     let cfg = InterruptConfig { affinity: 0b10, ..InterruptConfig::new(7, Irql::new(6).unwrap()) };
    ///     let intr = pin!(Interrupt::new(cfg, || { hits.fetch_add(1, Ordering::Relaxed); true }));
    ///     intr.as_ref().connect().unwrap();
    ///     m.assert_interrupt(7); // taken by processor 1, which is idle
    ///     while hits.load(Ordering::Relaxed) == 0 { std::thread::yield_now(); }
    /// }).unwrap();
    /// assert_eq!(m.interrupts_serviced(7), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// If `vector` is not below [`VECTORS`](crate::VECTORS).
    pub fn assert_interrupt(&self, vector: u32) {
        assert!(vector < crate::VECTORS, "vector {vector} out of range");
        self.shared.controller.assert_line(&self.shared, vector);
    }

    /// How many times line `vector` was asserted.
    pub fn interrupts_asserted(&self, vector: u32) -> u64 {
        self.shared
            .controller
            .line(vector)
            .map_or(0, |l| l.asserted.load(Relaxed))
    }

    /// How many service-routine calls line `vector` has had (each object of a chain
    /// counts).
    pub fn interrupts_serviced(&self, vector: u32) -> u64 {
        self.shared
            .controller
            .line(vector)
            .map_or(0, |l| l.serviced.load(Relaxed))
    }

    /// Service-routine calls and DPC runs on processor `cpu`.
    ///
    /// # Panics
    ///
    /// If `cpu` is not a processor of this machine.
    pub fn processor_counts(&self, cpu: usize) -> (u64, u64) {
        let p = &self.shared.processors[cpu];
        (p.isrs.load(Relaxed), p.dpcs.load(Relaxed))
    }

    /// The IRQL processor `cpu` is at now (for checks after a run: an idle processor is at
    /// PASSIVE).
    ///
    /// # Panics
    ///
    /// If `cpu` is not a processor of this machine.
    pub fn irql_of(&self, cpu: usize) -> Irql {
        self.shared.processors[cpu].irql()
    }

    /// One line per processor with its interrupt-delivery state (IRQL, requested lines,
    /// HAL reasons, mask depth, handler depth, signal in flight, queued DPCs), for
    /// diagnosing a stalled run.
    pub fn delivery_state(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for p in self.shared.processors.iter() {
            let _ = writeln!(
                out,
                "cpu{}: irql {} irr {:#x} wants {:#x} masked {} in_handler {} signaled {} dpcs_pending {} frozen {}",
                p.index,
                p.irql(),
                p.irr.load(Relaxed),
                p.prcb.hal_wants_bits(),
                p.masked.load(Relaxed),
                p.in_handler.load(Relaxed),
                p.signaled.load(Relaxed),
                p.prcb.dpcs_pending(),
                p.frozen.load(Relaxed),
            );
        }
        out
    }

    /// Whether an interrupt object at `addr` is connected on this machine (never
    /// dereferences `addr`).
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(1);
    /// assert!(!m.has_interrupt(0x1000));
    /// ```
    pub fn has_interrupt(&self, addr: usize) -> bool {
        self.shared.controller.find(addr).is_some()
    }

    /// Waits until every interrupt asserted so far has been serviced, every queued DPC has
    /// run and no passive-level routine or work item is pending or running — or the
    /// machine has bug-checked. Returns `false` if that did not happen within `limit` (a
    /// processor kept its IRQL raised, say, so what it was asked to do stays pending).
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(2);
    /// m.assert_interrupt(5); // nothing connected: latched until something connects
    /// assert!(m.drain(std::time::Duration::from_secs(5)));
    /// ```
    pub fn drain(&self, limit: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        let mut quiet_looks = 0;
        loop {
            if self.shared.dead.load(SeqCst) {
                return true;
            }
            let quiet = self.shared.controller.quiet()
                && self.shared.work_items.is_empty()
                && self.shared.processors.iter().all(|p| {
                    p.irr.load(SeqCst) == 0
                        && !p.prcb.dpcs_pending()
                        && p.in_handler.load(SeqCst) == 0
                        && p.in_dpc.load(SeqCst) == 0
                        && p.in_worker.load(SeqCst) == 0
                        && !p.signaled.load(SeqCst)
                });
            // Twice in a row, a little apart: a request between two looks at different
            // processors is seen by the second.
            quiet_looks = if quiet { quiet_looks + 1 } else { 0 };
            if quiet_looks >= 2 {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// A handle devices use to assert lines from their own threads.
    pub fn interrupt_line(&self, vector: u32) -> InterruptLine {
        assert!(vector < crate::VECTORS, "vector {vector} out of range");
        InterruptLine {
            machine: Arc::clone(&self.shared),
            vector,
        }
    }

    /// Violations recorded in continue mode (code 0x1C4), in the order they happened.
    ///
    /// ```
    /// use ntspin_sim::{Machine, Verifier};
    /// let m = Machine::builder().processors(1).verifier(Verifier::StandardContinue).build();
    /// let r = m.run_on(0, || {
    ///     let old = ntspin::raise_irql(ntspin::Irql::DISPATCH);
    ///     ntspin::raise_irql(ntspin::Irql::PASSIVE); // IRQL-RAISE: recorded, goes on
    ///     ntspin::lower_irql(old);
    ///     7
    /// });
    /// assert_eq!(r.unwrap(), 7);
    /// assert_eq!(m.live_dumps()[0].bug.code, 0x1C4);
    /// ```
    pub fn live_dumps(&self) -> Vec<BugCheckReport> {
        self.shared
            .live_dumps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifier warnings (rules whose breach only makes a call fail, such as WDF-TRY), in
    /// the order they happened. They never stop the machine or change a run's result. A
    /// warning raised inside a signal handler is not recorded.
    pub fn warnings(&self) -> Vec<BugCheckReport> {
        self.shared
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` on processor `cpu` at PASSIVE_LEVEL and waits for it. A bug check during
    /// `f` (or on another processor while `f` runs) ends `f` and comes back as `Err`; a
    /// plain panic in `f` is resumed on the caller.
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(2);
    /// assert_eq!(m.run_on(1, || ntspin::hal::current_processor()).unwrap(), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// If `cpu` is not a processor of this machine.
    pub fn run_on<T, F>(&self, cpu: usize, f: F) -> Result<T, BugCheckReport>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        assert!(
            cpu < self.processors(),
            "processor {cpu} does not exist (machine has {})",
            self.processors()
        );
        if let Some(report) = self.shared.first_bug_check() {
            return Err(report);
        }
        let rx = self.submit(cpu, f);
        match self.wait(cpu, rx) {
            Some(Ok(v)) => Ok(v),
            Some(Err(payload)) => match self.classify(payload) {
                Ok(report) => Err(report),
                Err(p) => panic::resume_unwind(p),
            },
            None => Err(self.dead()),
        }
    }

    /// Waits for processor `cpu`'s outcome; `None` if it is gone or frozen (bug check).
    ///
    /// A frozen processor's routine never finishes, and its borrows stay in use by a thread
    /// that is parked for good. That is sound only because a frozen thread never runs again:
    /// it touches nothing after it parks.
    fn wait<T>(&self, cpu: usize, rx: Receiver<thread::Result<T>>) -> Option<thread::Result<T>> {
        let p = &self.shared.processors[cpu];
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(r) => return Some(r),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) if p.frozen.load(SeqCst) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Runs `f(cpu)` on every processor concurrently and waits for all; one result per
    /// processor, in processor order.
    ///
    /// ```
    /// let m = ntspin_sim::Machine::new(3);
    /// let ids: Vec<u32> = m.run_each(|_| ntspin::hal::current_processor())
    ///     .into_iter().map(Result::unwrap).collect();
    /// assert_eq!(ids, [0, 1, 2]);
    /// ```
    pub fn run_each<T, F>(&self, f: F) -> Vec<Result<T, BugCheckReport>>
    where
        F: Fn(usize) -> T + Sync,
        T: Send,
    {
        let f = &f;
        let rxs: Vec<_> = (0..self.processors())
            .map(|cpu| self.submit(cpu, move || f(cpu)))
            .collect();
        let mut results = Vec::with_capacity(rxs.len());
        let mut panic = None;
        for (cpu, rx) in rxs.into_iter().enumerate() {
            match self.wait(cpu, rx) {
                Some(Ok(v)) => results.push(Ok(v)),
                Some(Err(payload)) => match self.classify(payload) {
                    Ok(report) => results.push(Err(report)),
                    Err(p) => {
                        panic.get_or_insert(p);
                    }
                },
                None => results.push(Err(self.dead())),
            }
        }
        if let Some(p) = panic {
            panic::resume_unwind(p);
        }
        results
    }

    /// Sends `f` to processor `cpu`; the receiver yields its outcome.
    fn submit<T, F>(&self, cpu: usize, f: F) -> Receiver<thread::Result<T>>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let (tx, rx): (SyncSender<thread::Result<T>>, _) = mpsc::sync_channel(1);
        let job = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                let v = f();
                crate::verifier::routine_returned();
                v
            }));
            let _ = tx.send(r);
        });
        let job: Box<dyn FnOnce() + Send + '_> = job;
        // SAFETY: only the lifetime is erased. Every caller of `submit` blocks on the
        // returned receiver until the job has sent its result or been dropped unrun (the
        // sender lives inside the job), so nothing `f` borrows is used after the borrow
        // ends. The job's last act after sending drops only the sender, which borrows
        // nothing.
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        if self.senders[cpu].send(job).is_err() {
            // The processor thread is gone; the job (and its sender) was dropped unrun.
        }
        rx
    }

    /// A routine's panic payload: the machine's bug check, or a foreign panic to resume.
    fn classify(
        &self,
        payload: Box<dyn Any + Send>,
    ) -> Result<BugCheckReport, Box<dyn Any + Send>> {
        if payload.is::<crate::stop::Stop>() || payload.is::<BugCheckReport>() {
            return Ok(self.dead());
        }
        Err(payload)
    }

    fn dead(&self) -> BugCheckReport {
        self.shared
            .first_bug_check()
            .expect("a processor stopped without a bug check on its machine")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.watchdog = None;
        self.senders.clear();
        for (i, t) in self.threads.drain(..).enumerate() {
            // A frozen processor never ends: leave its thread parked (its stack may still be
            // referenced by a lock queue).
            if !self.shared.processors[i].frozen.load(SeqCst) {
                let _ = t.join();
            }
        }
    }
}

/// One interrupt line of a machine, assertable from any thread (a device's "pin").
///
/// ```
/// let m = ntspin_sim::Machine::new(1);
/// let line = m.interrupt_line(3);
/// line.assert();
/// assert_eq!(m.interrupts_asserted(3), 1);
/// ```
#[derive(Clone)]
pub struct InterruptLine {
    machine: Arc<MachineShared>,
    vector: u32,
}

impl InterruptLine {
    /// One assertion: see [`Machine::assert_interrupt`].
    pub fn assert(&self) {
        self.machine
            .controller
            .assert_line(&self.machine, self.vector);
    }

    /// The vector.
    pub fn vector(&self) -> u32 {
        self.vector
    }
}

impl std::fmt::Debug for InterruptLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InterruptLine({})", self.vector)
    }
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("processors", &self.processors())
            .field("verifier", &self.verifier())
            .field("bug_check", &self.shared.first_bug_check().map(|r| r.bug))
            .finish()
    }
}

//! Statistics the demo keeps about its own locks and processors.
//!
//! - Per lock: acquisitions, how many found the lock held (`KeTestSpinLock` just before the
//!   acquire: contention), and hold times in a log-linear histogram (preallocated atomics,
//!   so an ISR in the signal handler records too), from which p50, p99 and max come.
//! - Per processor: the share of time at PASSIVE/APC, DISPATCH and DIRQL, sampled by a
//!   host thread reading each processor's IRQL (the lock fast path is not instrumented).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Log-linear buckets: 4 per power of two, up to 2^63 ns.
const BUCKETS: usize = 64 * 4;

/// The DIRQL hold time Microsoft's guidelines name for ISRs.
pub const DIRQL_GUIDELINE_NS: u64 = 25_000;

/// One lock's statistics.
pub struct LockStats {
    pub name: String,
    /// Held at DIRQL (an interrupt spin lock): holds over 25 µs are flagged.
    pub dirql: bool,
    acquisitions: AtomicU64,
    contended: AtomicU64,
    over_guideline: AtomicU64,
    max_ns: AtomicU64,
    buckets: Vec<AtomicU64>,
}

/// A summary of one lock's statistics.
#[derive(Debug, Clone)]
pub struct LockSummary {
    pub name: String,
    pub acquisitions: u64,
    pub contended: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// DIRQL locks: holds over 25 µs; `None` for other locks.
    pub over_25us: Option<u64>,
}

fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize; // >= 2
    let sub = ((ns >> (log - 2)) & 3) as usize;
    (log * 4 + sub).min(BUCKETS - 1)
}

/// The largest value a bucket holds (what a percentile in it reports).
fn bucket_top(b: usize) -> u64 {
    if b < 4 {
        return b as u64;
    }
    let (log, sub) = (b / 4, (b % 4) as u64);
    ((4 + sub + 1) << (log - 2)) - 1
}

impl LockStats {
    pub fn new(name: impl Into<String>, dirql: bool) -> LockStats {
        LockStats {
            name: name.into(),
            dirql,
            acquisitions: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            over_guideline: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One acquisition that found the lock held (`contended`) or not, held from `since`
    /// until now. Atomics only: callable from an ISR.
    pub fn record(&self, contended: bool, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.acquisitions.fetch_add(1, Relaxed);
        if contended {
            self.contended.fetch_add(1, Relaxed);
        }
        if self.dirql && ns > DIRQL_GUIDELINE_NS {
            self.over_guideline.fetch_add(1, Relaxed);
        }
        self.max_ns.fetch_max(ns, Relaxed);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
    }

    pub fn summary(&self) -> LockSummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let pct = |q: f64| {
            let want = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want {
                    return bucket_top(b);
                }
            }
            0
        };
        LockSummary {
            name: self.name.clone(),
            acquisitions: self.acquisitions.load(Relaxed),
            contended: self.contended.load(Relaxed),
            p50_ns: if total == 0 { 0 } else { pct(0.5) },
            p99_ns: if total == 0 { 0 } else { pct(0.99) },
            max_ns: self.max_ns.load(Relaxed),
            over_25us: self.dirql.then(|| self.over_guideline.load(Relaxed)),
        }
    }
}

/// Samples of each processor's IRQL: PASSIVE/APC, DISPATCH, DIRQL.
#[derive(Default, Debug, Clone)]
pub struct IrqlShare {
    pub passive: u64,
    pub dispatch: u64,
    pub dirql: u64,
}

impl IrqlShare {
    pub fn note(&mut self, irql: ntspin::Irql) {
        if irql < ntspin::Irql::DISPATCH {
            self.passive += 1;
        } else if irql == ntspin::Irql::DISPATCH {
            self.dispatch += 1;
        } else {
            self.dirql += 1;
        }
    }

    /// Percentages (PASSIVE, DISPATCH, DIRQL).
    pub fn percent(&self) -> (f64, f64, f64) {
        let total = (self.passive + self.dispatch + self.dirql).max(1) as f64;
        (
            100.0 * self.passive as f64 / total,
            100.0 * self.dispatch as f64 / total,
            100.0 * self.dirql as f64 / total,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_a_quarter() {
        for ns in [0u64, 1, 3, 4, 5, 7, 8, 100, 1_000, 25_000, 1 << 40] {
            let b = bucket_of(ns);
            let top = bucket_top(b);
            assert!(top >= ns, "{ns} in bucket {b} with top {top}");
            assert!(top <= ns + ns / 4 + 1, "{ns}: top {top} too coarse");
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_holds() {
        let s = LockStats::new("x", true);
        for _ in 0..99 {
            s.buckets[bucket_of(100)].fetch_add(1, Relaxed);
        }
        s.buckets[bucket_of(50_000)].fetch_add(1, Relaxed);
        let sum = s.summary();
        assert!((100..=125).contains(&sum.p50_ns), "{sum:?}");
        assert!((100..=125).contains(&sum.p99_ns), "{sum:?}");
        let mut share = IrqlShare::default();
        share.note(ntspin::Irql::PASSIVE);
        share.note(ntspin::Irql::DISPATCH);
        share.note(ntspin::Irql::new(5).unwrap());
        share.note(ntspin::Irql::PASSIVE);
        assert_eq!(share.percent(), (50.0, 25.0, 25.0));
    }
}

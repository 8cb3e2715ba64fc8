//! Events (`KEVENT`): `KeInitializeEvent`, `KeSetEvent`, `KeResetEvent`, `KeClearEvent`,
//! `KeReadStateEvent`, and `KeWaitForSingleObject` on an event.
//!
//! A notification event stays signaled until reset and releases every waiter; a
//! synchronization event releases one waiter and resets itself. Waiting blocks the thread
//! (through the HAL's futex-style [`wait_on`](crate::Hal::wait_on)) and is allowed at
//! PASSIVE and APC level; at DISPATCH only with a zero timeout, which polls (IRQL-WAIT).
//! Setting is allowed at IRQL <= DISPATCH, so a DPC can wake a thread.

use core::time::Duration;

use crate::hal::{self, LockEvent};
use crate::sync::{AtomicU32, Ordering};

/// The kind of an [`Event`] (`EVENT_TYPE`).
#[doc(alias = "EVENT_TYPE")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventType {
    /// `NotificationEvent`: stays signaled, releases all waiters.
    Notification,
    /// `SynchronizationEvent`: releases one waiter and resets (an auto-reset event).
    Synchronization,
}

/// How a wait ended (`STATUS_SUCCESS` / `STATUS_TIMEOUT`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WaitStatus {
    /// The event was signaled.
    Success,
    /// The timeout elapsed first.
    Timeout,
}

/// A kernel event.
///
/// ```
/// use core::time::Duration;
/// use ntspin::event::{Event, EventType, WaitStatus};
///
/// let done = Event::new(EventType::Notification, false);
/// std::thread::scope(|s| {
///     s.spawn(|| done.set());
///     assert_eq!(done.wait(None), WaitStatus::Success);
/// });
/// done.clear();
/// assert_eq!(done.wait(Some(Duration::ZERO)), WaitStatus::Timeout);
/// ```
#[doc(alias = "KEVENT")]
pub struct Event {
    /// 1 signaled, 0 not.
    state: AtomicU32,
    kind: EventType,
}

impl Event {
    /// `KeInitializeEvent`.
    #[doc(alias = "KeInitializeEvent")]
    #[cfg(not(loom))]
    pub const fn new(kind: EventType, signaled: bool) -> Event {
        Event {
            state: AtomicU32::new(signaled as u32),
            kind,
        }
    }

    /// `KeInitializeEvent` (loom build).
    #[cfg(loom)]
    pub fn new(kind: EventType, signaled: bool) -> Event {
        Event {
            state: AtomicU32::new(signaled as u32),
            kind,
        }
    }

    /// The kind given at initialization.
    pub fn kind(&self) -> EventType {
        self.kind
    }

    /// `KeSetEvent`: signals, waking all waiters (notification) or one (synchronization).
    /// Returns the previous state.
    #[doc(alias = "KeSetEvent")]
    pub fn set(&self) -> bool {
        let was = self.state.swap(1, Ordering::Release) == 1;
        if !was {
            let n = match self.kind {
                EventType::Notification => u32::MAX,
                EventType::Synchronization => 1,
            };
            hal::wake(&self.state, n);
        }
        was
    }

    /// `KeResetEvent`: to not-signaled; returns the previous state.
    #[doc(alias = "KeResetEvent")]
    pub fn reset(&self) -> bool {
        self.state.swap(0, Ordering::Relaxed) == 1
    }

    /// `KeClearEvent`: to not-signaled.
    #[doc(alias = "KeClearEvent")]
    pub fn clear(&self) {
        self.state.store(0, Ordering::Relaxed);
    }

    /// `KeReadStateEvent`: whether it is signaled now.
    #[doc(alias = "KeReadStateEvent")]
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == 1
    }

    /// Takes the signal if there is one (a synchronization event resets).
    fn try_take(&self) -> bool {
        match self.kind {
            EventType::Notification => self.is_set(),
            EventType::Synchronization => self
                .state
                .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
        }
    }

    /// `KeWaitForSingleObject` on this event: blocks until it is signaled or `timeout`
    /// elapses (`None`: no timeout). At DISPATCH_LEVEL only `Some(Duration::ZERO)` is
    /// allowed, above DISPATCH nothing (IRQL-WAIT). A timeout restarts if a wake-up found
    /// the signal already taken by another waiter of a synchronization event.
    #[doc(alias = "KeWaitForSingleObject")]
    pub fn wait(&self, timeout: Option<Duration>) -> WaitStatus {
        let irql = crate::current_irql();
        let ns = timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        if hal::current_prcb().hal_wants() {
            hal::lock_event(&LockEvent::Wait {
                irql_addr: &irql as *const _ as usize,
                object: self as *const Event as usize,
                timeout_addr: timeout
                    .as_ref()
                    .map_or(0, |t| t as *const Duration as usize),
                timeout_ns: ns,
            });
        }
        loop {
            if self.try_take() {
                return WaitStatus::Success;
            }
            if ns == Some(0) {
                return WaitStatus::Timeout;
            }
            if !hal::wait_on(&self.state, 0, ns) {
                return if self.try_take() {
                    WaitStatus::Success
                } else {
                    WaitStatus::Timeout
                };
            }
        }
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("signaled", &self.is_set())
            .finish()
    }
}

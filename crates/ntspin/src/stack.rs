//! The intrusive lock-free stack behind the DPC queues and the work queue: a push is one
//! compare-exchange (so an ISR may push while the owner drains), and the drainer takes the
//! whole stack and reverses it into arrival order.

use core::ptr;

use crate::sync::{AtomicPtr, Ordering};

/// A node that carries its own link.
pub(crate) trait Linked: Sized {
    fn link(&self) -> &AtomicPtr<Self>;
}

/// Pushes `node` onto `head`.
///
/// The node stays at its address and on no other stack until a [`take`] returns it.
pub(crate) fn push<T: Linked>(head: &AtomicPtr<T>, node: &T) {
    let me = node as *const T as *mut T;
    let mut cur = head.load(Ordering::Relaxed);
    loop {
        node.link().store(cur, Ordering::Relaxed);
        // Release: the node's fields and link are visible to the drainer that takes it.
        match head.compare_exchange_weak(cur, me, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// Takes the whole stack; returns its first node in arrival order (follow `link`).
pub(crate) fn take<T: Linked>(head: &AtomicPtr<T>) -> *mut T {
    let mut list = head.swap(ptr::null_mut(), Ordering::Acquire);
    let mut reversed: *mut T = ptr::null_mut();
    while !list.is_null() {
        // SAFETY: every node was pushed by `push`, whose contract keeps it at its address
        // until taken; only the drainer, which now owns the list, relinks it.
        let node = unsafe { &*list };
        let next = node.link().load(Ordering::Relaxed);
        node.link().store(reversed, Ordering::Relaxed);
        reversed = list;
        list = next;
    }
    reversed
}

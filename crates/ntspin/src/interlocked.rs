//! The `ExInterlocked` list routines: `ExInterlockedInsertHeadList`,
//! `ExInterlockedInsertTailList`, `ExInterlockedRemoveHeadList`,
//! `ExInterlockedPushEntryList`, `ExInterlockedPopEntryList`, `ExInterlockedAddUlong`, and
//! the inline helpers `InitializeListHead` and `IsListEmpty`.
//!
//! Each routine takes a caller-supplied spin lock and is callable at any IRQL, an ISR
//! included: like NT, it masks interrupts on the processor while it holds the lock instead
//! of raising IRQL. Remove and pop return null on an empty list (EXI-EMPTY).
//!
//! The lists are intrusive and circular (`LIST_ENTRY`) or singly linked
//! (`SINGLE_LIST_ENTRY`), with the WDK layouts, so the routines work on raw pointers the
//! caller keeps valid.

// Each routine's list surgery is one `unsafe` block of several dereferences of the same
// caller-guaranteed pointers under the same lock: one argument covers them all, and
// splitting it per dereference would repeat it without adding anything.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use core::ptr;

use crate::RawSpinLock;
use crate::hal::{self, AcquireKind, ReleaseKind};

/// A doubly linked, circular list link (`LIST_ENTRY`). A list head is an entry whose
/// links point to itself when the list is empty.
#[doc(alias = "LIST_ENTRY")]
#[repr(C)]
#[derive(Debug)]
pub struct ListEntry {
    /// Next entry (`Flink`).
    pub flink: *mut ListEntry,
    /// Previous entry (`Blink`).
    pub blink: *mut ListEntry,
}

impl ListEntry {
    /// An unlinked entry (both links null).
    pub const fn new() -> ListEntry {
        ListEntry {
            flink: ptr::null_mut(),
            blink: ptr::null_mut(),
        }
    }
}

impl Default for ListEntry {
    fn default() -> Self {
        ListEntry::new()
    }
}

/// A singly linked list link (`SINGLE_LIST_ENTRY`). A list head's `next` is the first
/// entry, null when empty.
#[doc(alias = "SINGLE_LIST_ENTRY")]
#[repr(C)]
#[derive(Debug)]
pub struct SingleListEntry {
    /// Next entry.
    pub next: *mut SingleListEntry,
}

impl SingleListEntry {
    /// An empty head / unlinked entry.
    pub const fn new() -> SingleListEntry {
        SingleListEntry {
            next: ptr::null_mut(),
        }
    }
}

impl Default for SingleListEntry {
    fn default() -> Self {
        SingleListEntry::new()
    }
}

/// `InitializeListHead`: an empty circular list.
///
/// # Safety
///
/// `head` is valid for writes.
#[doc(alias = "InitializeListHead")]
pub unsafe fn initialize_list_head(head: *mut ListEntry) {
    // SAFETY: the caller's contract.
    unsafe {
        head.write(ListEntry {
            flink: head,
            blink: head,
        })
    }
}

/// `IsListEmpty`.
///
/// # Safety
///
/// `head` is an initialized list head, valid for reads.
#[doc(alias = "IsListEmpty")]
pub unsafe fn is_list_empty(head: *const ListEntry) -> bool {
    // SAFETY: the caller's contract.
    ptr::eq(unsafe { (*head).flink }, head)
}

/// Runs `f` holding `lock` with interrupts masked on this processor (IRQL unchanged).
#[track_caller]
fn interlocked<R>(lock: &RawSpinLock, f: impl FnOnce() -> R) -> R {
    let enabled = hal::disable_interrupts();
    lock.acquire_kind(AcquireKind::Interlocked, 0, None);
    let r = f();
    // SAFETY: acquired just above on this processor.
    unsafe { lock.release_kind(ReleaseKind::Interlocked, 0, None) };
    hal::restore_interrupts(enabled);
    r
}

/// `ExInterlockedInsertHeadList`: inserts `entry` first; returns the previous first entry,
/// or null if the list was empty.
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::RawSpinLock;
/// use ntspin::interlocked::*;
/// let lock = RawSpinLock::new();
/// let mut head = ListEntry::new();
/// let mut a = ListEntry::new();
/// // SAFETY: `head` and `a` outlive every use below and are not moved.
/// unsafe {
///     initialize_list_head(&mut head);
///     assert!(ex_interlocked_insert_head_list(&mut head, &mut a, &lock).is_null());
///     assert_eq!(ex_interlocked_remove_head_list(&mut head, &lock), &mut a as *mut _);
///     assert!(ex_interlocked_remove_head_list(&mut head, &lock).is_null()); // EXI-EMPTY
/// }
/// ```
///
/// # Safety
///
/// `head` is an initialized list head and `entry` an entry not on any list, both valid
/// and not moved while linked; every access to the list goes through `lock`.
#[doc(alias = "ExInterlockedInsertHeadList")]
#[track_caller]
pub unsafe fn ex_interlocked_insert_head_list(
    head: *mut ListEntry,
    entry: *mut ListEntry,
    lock: &RawSpinLock,
) -> *mut ListEntry {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access to the list.
        unsafe {
            let first = (*head).flink;
            (*entry).flink = first;
            (*entry).blink = head;
            (*first).blink = entry;
            (*head).flink = entry;
            if ptr::eq(first, head) {
                ptr::null_mut()
            } else {
                first
            }
        }
    })
}

/// `ExInterlockedInsertTailList`: inserts `entry` last; returns the previous last entry,
/// or null if the list was empty.
///
/// # Safety
///
/// As [`ex_interlocked_insert_head_list`].
#[doc(alias = "ExInterlockedInsertTailList")]
#[track_caller]
pub unsafe fn ex_interlocked_insert_tail_list(
    head: *mut ListEntry,
    entry: *mut ListEntry,
    lock: &RawSpinLock,
) -> *mut ListEntry {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access to the list.
        unsafe {
            let last = (*head).blink;
            (*entry).flink = head;
            (*entry).blink = last;
            (*last).flink = entry;
            (*head).blink = entry;
            if ptr::eq(last, head) {
                ptr::null_mut()
            } else {
                last
            }
        }
    })
}

/// `ExInterlockedRemoveHeadList`: unlinks and returns the first entry, or null if the
/// list is empty (EXI-EMPTY).
///
/// # Safety
///
/// `head` is an initialized list head whose entries are valid; every access to the list
/// goes through `lock`.
#[doc(alias = "ExInterlockedRemoveHeadList")]
#[track_caller]
pub unsafe fn ex_interlocked_remove_head_list(
    head: *mut ListEntry,
    lock: &RawSpinLock,
) -> *mut ListEntry {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access to the list.
        unsafe {
            let first = (*head).flink;
            if ptr::eq(first, head) {
                return ptr::null_mut();
            }
            let next = (*first).flink;
            (*head).flink = next;
            (*next).blink = head;
            first
        }
    })
}

/// `ExInterlockedPushEntryList`: pushes `entry`; returns the previous first entry (null
/// if the list was empty).
///
/// ```
/// # use ntspin_sim as _;
/// use ntspin::RawSpinLock;
/// use ntspin::interlocked::*;
/// let lock = RawSpinLock::new();
/// let mut head = SingleListEntry::new();
/// let mut a = SingleListEntry::new();
/// // SAFETY: `head` and `a` outlive every use below and are not moved.
/// unsafe {
///     assert!(ex_interlocked_push_entry_list(&mut head, &mut a, &lock).is_null());
///     assert_eq!(ex_interlocked_pop_entry_list(&mut head, &lock), &mut a as *mut _);
///     assert!(ex_interlocked_pop_entry_list(&mut head, &lock).is_null()); // EXI-EMPTY
/// }
/// ```
///
/// # Safety
///
/// `head` is a list head and `entry` an entry not on any list, both valid and not moved
/// while linked; every access to the list goes through `lock`.
#[doc(alias = "ExInterlockedPushEntryList")]
#[track_caller]
pub unsafe fn ex_interlocked_push_entry_list(
    head: *mut SingleListEntry,
    entry: *mut SingleListEntry,
    lock: &RawSpinLock,
) -> *mut SingleListEntry {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access to the list.
        unsafe {
            let first = (*head).next;
            (*entry).next = first;
            (*head).next = entry;
            first
        }
    })
}

/// `ExInterlockedPopEntryList`: unlinks and returns the first entry, or null if the list
/// is empty (EXI-EMPTY).
///
/// # Safety
///
/// `head` is a list head whose entries are valid; every access to the list goes through
/// `lock`.
#[doc(alias = "ExInterlockedPopEntryList")]
#[track_caller]
pub unsafe fn ex_interlocked_pop_entry_list(
    head: *mut SingleListEntry,
    lock: &RawSpinLock,
) -> *mut SingleListEntry {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access to the list.
        unsafe {
            let first = (*head).next;
            if !first.is_null() {
                (*head).next = (*first).next;
            }
            first
        }
    })
}

/// `ExInterlockedAddUlong`: adds `increment` to `*addend` (wrapping) and returns the value
/// before.
///
/// ```
/// # use ntspin_sim as _;
/// let lock = ntspin::RawSpinLock::new();
/// let mut n = 40u32;
/// // SAFETY: `n` is only accessed through `lock` here.
/// let before = unsafe { ntspin::interlocked::ex_interlocked_add_ulong(&mut n, 2, &lock) };
/// assert_eq!((before, n), (40, 42));
/// ```
///
/// # Safety
///
/// `addend` is valid and every access to it goes through `lock`.
#[doc(alias = "ExInterlockedAddUlong")]
#[track_caller]
pub unsafe fn ex_interlocked_add_ulong(
    addend: *mut u32,
    increment: u32,
    lock: &RawSpinLock,
) -> u32 {
    interlocked(lock, || {
        // SAFETY: the caller's contract; the lock serializes every access.
        unsafe {
            let before = *addend;
            *addend = before.wrapping_add(increment);
            before
        }
    })
}

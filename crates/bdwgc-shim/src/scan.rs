//! How the collector finds what the shim's regions hold: only blocks that
//! are allocated are scanned. Freed blocks are never scanned, so they need
//! no clearing: a stale pointer in one keeps nothing alive.
//!
//! At each collection libgc runs its "push other roots" hook with the world
//! stopped; the shim's hook chains to the one it replaced (libgc's own
//! pushes the thread stacks; Crystal's runtime chains its own after ours),
//! then:
//!
//! - hands libgc the large region's live blocks as ranges to mark from. Only
//!   so many fit on libgc's mark stack, which aborts when pushed past its
//!   size, so after the first [`LAZY_PUSH_LIMIT`] ranges the rest are
//!   scanned on the spot (`GC_push_all_eager`, several times slower);
//! - marks the small region, which may hold hundreds of thousands of
//!   separate live ranges, piecemeal: the hook pushes one "anchor" object
//!   whose kind has a mark procedure of the shim's
//!   ([`mark_small_region`]). libgc calls it as it drains its mark stack;
//!   each call pushes a few dozen ranges and, below them, an entry that
//!   calls it again where it stopped. Where libgc lacks mark procedures, or
//!   runs incremental collections (which mark while threads run, so the
//!   procedure would read the live map as it changes), the hook pushes the
//!   small region's ranges like the large one's.
//!
//! libgc paces collections by what it must scan: it lets a program allocate
//! a third (1 / free-space divisor) of its heap and roots between two. The
//! regions are neither, so the hook also raises libgc's floor for that
//! amount (`GC_set_min_bytes_allocd`) to a third of what they hold; without
//! it, a program with much malloc memory and a small collected heap
//! collects, and scans all that memory, dozens of times as often.

use core::ffi::c_void;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::sys::{gc, length_descriptor, proc_descriptor, MarkStackEntry, PushHook};
use crate::{large, small, tls};

/// At most this many ranges go on libgc's mark stack from the hook; the
/// rest are scanned on the spot.
const LAZY_PUSH_LIMIT: usize = 128;
/// Ranges [`mark_small_region`] pushes per call: libgc marks from them (and
/// from what they lead to) before it calls again for the next ones.
const RANGES_PER_CALL: usize = 32;

/// The hook that was installed before ours, as an address; 0 for none.
static PREVIOUS_HOOK: AtomicUsize = AtomicUsize::new(0);
/// The anchor object (0: no mark procedure, the hook pushes the ranges).
static ANCHOR: AtomicUsize = AtomicUsize::new(0);
/// libgc's index of [`mark_small_region`].
static PROC_INDEX: AtomicU32 = AtomicU32::new(0);
/// The program's own floor for allocation between collections (libgc's
/// default, 1, unless the program set one), read at the first collection.
static PROGRAM_MIN_BYTES_ALLOCD: AtomicUsize = AtomicUsize::new(0);
/// The floor the hook set last (0 before the first collection).
static SET_MIN_BYTES_ALLOCD: AtomicUsize = AtomicUsize::new(0);

/// Installs the hook; called once at set-up, before libgc is initialized
/// (the hook is a plain variable that libgc initializes statically), so
/// that the regions are scanned from libgc's first collection on, whenever
/// the program initializes it. Returns false when libgc lacks the hook:
/// then nothing in the regions could be scanned, and they must not be used.
pub fn install_hook() -> bool {
    if !gc::has_push_other_roots() {
        return false;
    }
    if let Some(previous) = gc::push_other_roots() {
        PREVIOUS_HOOK.store(previous as usize, Ordering::Release);
    }
    gc::set_push_other_roots(push_live_blocks);
    true
}

/// Registers [`mark_small_region`] and allocates the anchor, an object of a
/// kind of its own whose descriptor names the procedure. Needs an
/// initialized libgc; until then the hook pushes the small region's ranges
/// itself.
pub fn set_up_mark_procedure() {
    if !gc::has_mark_procedures() {
        return;
    }
    let index = gc::new_proc(mark_small_region);
    let kind = gc::new_kind(proc_descriptor(index, 0));
    let anchor = tls::current().bypassing(|| gc::generic_malloc(16, kind));
    if anchor.is_null() {
        return;
    }
    PROC_INDEX.store(index, Ordering::Release);
    ANCHOR.store(anchor as usize, Ordering::Release);
}

/// libgc's hook: runs the previous hook, then has libgc mark from every
/// live block of both regions.
unsafe extern "C" fn push_live_blocks() {
    let previous = PREVIOUS_HOOK.load(Ordering::Acquire);
    if previous != 0 {
        // SAFETY: the address was read from GC_get_push_other_roots, a hook
        // of this type; libgc runs ours where it ran that one.
        unsafe { core::mem::transmute::<usize, PushHook>(previous)() };
    }
    let mut ranges = Ranges {
        current: (0, 0),
        pushed: 0,
    };
    if ANCHOR.load(Ordering::Acquire) != 0 && !gc::is_incremental_mode() {
        // The anchor's address is in ANCHOR: marking from there marks the
        // anchor, once per collection, and so calls mark_small_region.
        let slot = ANCHOR.as_ptr() as usize;
        ranges.add(slot, slot + size_of::<usize>());
    } else {
        small::for_each_live_range(0, |start, end| {
            ranges.add(start, end);
            true
        });
    }
    large::push_live_blocks(&mut ranges);
    ranges.flush();
    pace_collections();
}

/// Lets the program allocate a third (as libgc counts its roots) of what
/// the regions hold before the next collection, or what the program asked
/// for if more.
fn pace_collections() {
    let current = gc::min_bytes_allocd();
    if current == 0 {
        return; // libgc has no such setting
    }
    if current != SET_MIN_BYTES_ALLOCD.load(Ordering::Relaxed) {
        // The first collection, or the program set its own floor since
        // the last one.
        PROGRAM_MIN_BYTES_ALLOCD.store(current, Ordering::Relaxed);
    }
    let held = small::used_bytes() + large::live_bytes();
    let floor =
        (held / gc::free_space_divisor()).max(PROGRAM_MIN_BYTES_ALLOCD.load(Ordering::Relaxed));
    gc::set_min_bytes_allocd(floor);
    SET_MIN_BYTES_ALLOCD.store(floor, Ordering::Relaxed);
}

/// The anchor's mark procedure: pushes the next live ranges of the small
/// region from granule `env` on, and beneath them an entry that calls it
/// again where they end.
unsafe extern "C" fn mark_small_region(
    addr: *mut usize,
    top: *mut MarkStackEntry,
    limit: *mut MarkStackEntry,
    env: usize,
) -> *mut MarkStackEntry {
    // libgc calls with at least one free entry above `top`.
    let free = (limit as usize - top as usize) / size_of::<MarkStackEntry>() - 1;
    if free < 2 {
        // No room for a range and the call back: mark the rest now.
        // SAFETY: as this procedure's own contract.
        return unsafe { mark_eagerly(env, top, limit) };
    }
    let budget = (free - 1).min(RANGES_PER_CALL);
    let mut found = [(0, 0); RANGES_PER_CALL];
    let mut count = 0;
    let resume = small::for_each_live_range(env, |start, end| {
        if let Some(slot) = found.get_mut(count) {
            *slot = (start, end);
            count += 1;
        }
        count < budget
    });
    let mut top = top;
    let entries = resume
        .map(|granule| MarkStackEntry {
            start: addr.cast(),
            descriptor: proc_descriptor(PROC_INDEX.load(Ordering::Relaxed), granule),
        })
        .into_iter()
        .chain(found[..count].iter().map(|&(start, end)| MarkStackEntry {
            start: start as *mut c_void,
            descriptor: length_descriptor(end - start),
        }));
    for entry in entries {
        // SAFETY: at most `budget + 1 <= free` entries, each in the free
        // part of the mark stack above `top`.
        unsafe {
            top = top.add(1);
            top.write(entry);
        }
    }
    top
}

/// Marks from every live range of the small region from granule `from` on,
/// word by word through `GC_mark_and_push`, which handles a full mark stack
/// itself.
///
/// # Safety
/// Only from a mark procedure, with the `top` and `limit` it was given.
unsafe fn mark_eagerly(
    from: usize,
    mut top: *mut MarkStackEntry,
    limit: *mut MarkStackEntry,
) -> *mut MarkStackEntry {
    small::for_each_live_range(from, |start, end| {
        for word in (start..end).step_by(size_of::<usize>()) {
            // SAFETY: live region memory, not written while the world is
            // stopped.
            let value = unsafe { (word as *const usize).read() };
            if value != 0 {
                // SAFETY: the caller's contract.
                top = unsafe { gc::mark_and_push(value as *mut c_void, top, limit) };
            }
        }
        true
    });
    top
}

/// Live blocks on their way to libgc from the hook, merged while adjacent.
pub struct Ranges {
    current: (usize, usize),
    pushed: usize,
}

impl Ranges {
    /// Adds the live block `[start, end)`.
    #[inline]
    pub fn add(&mut self, start: usize, end: usize) {
        if self.current.1 == start && start != 0 {
            self.current.1 = end;
        } else {
            self.flush();
            self.current = (start, end);
        }
    }

    fn flush(&mut self) {
        let (start, end) = self.current;
        if start == end {
            return;
        }
        self.current = (0, 0);
        // SAFETY: `Ranges` exists only inside the push hook; live blocks
        // stay mapped (the regions are never unmapped) and nobody runs while
        // the world is stopped.
        unsafe {
            if self.pushed < LAZY_PUSH_LIMIT {
                self.pushed += 1;
                gc::push_all(start, end);
            } else {
                gc::push_all_eager(start, end);
            }
        }
    }
}

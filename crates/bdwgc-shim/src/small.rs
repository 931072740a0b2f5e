//! Small blocks (up to [`MAX_SMALL`] bytes) without libgc's lock.
//!
//! `GC_malloc_uncollectable` and `GC_free` take the collector's global lock
//! on every call, and telling a freed pointer's origin takes libgc header
//! lookups. Small blocks therefore come from a region of the shim's own:
//!
//! - one address range reserved at start-up, committed 64 KiB span by span,
//!   and registered with the collector as a root (`GC_add_roots`), so that
//!   everything in it is scanned and nothing in it is collected;
//! - each span holds blocks of one size class (16 to 1024 bytes, every 16), so
//!   a pointer's class is one table lookup, and "is this ours" is a range
//!   check;
//! - each thread keeps a cache of free blocks per class; caches trade blocks
//!   with a central list per class, in batches, under a spin lock taken once
//!   per batch;
//! - freed blocks are cleared, so a stale pointer in one keeps nothing alive
//!   and a fresh block is all zero (as calloc needs).
//!
//! When the range cannot be reserved or is used up, small blocks come from
//! libgc like the others.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::address_space;
use crate::central::{Central, CentralLists};
use crate::sys::gc;

/// The largest size served from the region.
pub const MAX_SMALL: usize = 1024;
const GRANULE: usize = 16;
const CLASSES: usize = MAX_SMALL / GRANULE;
const SPAN_SHIFT: u32 = 16;
const SPAN_SIZE: usize = 1 << SPAN_SHIFT;
/// Reserved address space (not memory): 4 GiB of small blocks at most.
const REGION_SIZE: usize = 4 << 30;
const MAX_SPANS: usize = REGION_SIZE / SPAN_SIZE;
/// Blocks a thread keeps per class before it hands half of them back: 64
/// small ones, fewer large ones (about 16 KiB a class, at least 16 blocks).
/// Fewer means more trips to the shared central lists, whose lock two
/// threads then pass back and forth.
#[inline(always)]
fn thread_limit(class: usize) -> u16 {
    (16384 / block_size(class)).clamp(16, 64) as u16
}

/// Blocks moved between a thread cache and a central list at once.
#[inline(always)]
fn batch(class: usize) -> u16 {
    thread_limit(class) / 2
}

static REGION_BASE: AtomicUsize = AtomicUsize::new(0);
/// Spans handed out so far (all committed and registered as roots).
static SPANS_USED: AtomicUsize = AtomicUsize::new(0);
/// Each span's class plus one (0: not in use).
static SPAN_CLASS: [AtomicU8; MAX_SPANS] = [const { AtomicU8::new(0) }; MAX_SPANS];

/// The class of a request of `size` bytes (0..=MAX_SMALL); its blocks are
/// [`block_size`] bytes.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    size.max(1).div_ceil(GRANULE) - 1
}

/// Reserves the region; called once during initialization, after GC_init.
pub fn reserve_region() {
    if let Some(base) = address_space::reserve(REGION_SIZE) {
        REGION_BASE.store(base, Ordering::Release);
    }
}

/// The class of the region block at `p`, or `None` when `p` is not in the
/// region.
#[inline(always)]
pub fn class_of_block(p: *mut c_void) -> Option<usize> {
    let offset = address_space::offset_in(&REGION_BASE, REGION_SIZE, p)?;
    match SPAN_CLASS[offset >> SPAN_SHIFT].load(Ordering::Relaxed) {
        0 => None,
        class_plus_one => Some(usize::from(class_plus_one) - 1),
    }
}

/// The usable size of blocks of `class`.
pub fn block_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

static LISTS: CentralLists<CLASSES> = CentralLists::new();

pub fn lock_all_for_fork() {
    LISTS.lock_all_for_fork();
}

pub fn unlock_all_after_fork() {
    LISTS.unlock_all_after_fork();
}

/// Commits a new span for `class` and registers it as a root; returns its
/// address range.
fn new_span(class: usize) -> Option<(usize, usize)> {
    let base = REGION_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    LISTS.span_lock.with(|_| {
        let index = SPANS_USED.load(Ordering::Relaxed);
        if index >= MAX_SPANS {
            return None;
        }
        let start = base + index * SPAN_SIZE;
        if !address_space::commit(start, SPAN_SIZE) {
            return None;
        }
        SPAN_CLASS[index].store(class as u8 + 1, Ordering::Release);
        SPANS_USED.store(index + 1, Ordering::Release);
        // One root set for the whole used part of the region: libgc extends
        // a root that starts at the same address.
        gc::add_roots(base as *mut c_void, (start + SPAN_SIZE) as *mut c_void);
        Some((start, start + SPAN_SIZE))
    })
}

/// One thread's free blocks per class, linked through each block's first
/// word; every other word of a cached block is zero.
#[repr(C)]
pub struct ThreadCache {
    heads: [Cell<*mut c_void>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

impl ThreadCache {
    /// A zeroed block of `class`, or null when the region cannot serve it.
    #[inline(always)]
    pub fn allocate(&self, class: usize) -> *mut c_void {
        let head = self.heads[class].get();
        if head.is_null() {
            return self.refill(class);
        }
        let link = head.cast::<*mut c_void>();
        // SAFETY: `head` is a free block of this cache; its first word links
        // to the next, and clearing it leaves the block all zero.
        unsafe {
            self.heads[class].set(link.read());
            link.write(ptr::null_mut());
        }
        self.counts[class].set(self.counts[class].get() - 1);
        head
    }

    /// Takes back the region block `p` of `class`.
    ///
    /// # Safety
    /// `p` must be a live region block of `class` that the caller frees.
    #[inline(always)]
    pub unsafe fn free(&self, p: *mut c_void, class: usize) {
        // SAFETY: the block is `block_size(class)` bytes, the caller's to
        // give back.
        unsafe {
            ptr::write_bytes(p.cast::<u8>(), 0, block_size(class));
            p.cast::<*mut c_void>().write(self.heads[class].get());
        }
        self.heads[class].set(p);
        let count = self.counts[class].get() + 1;
        self.counts[class].set(count);
        if count >= thread_limit(class) {
            self.give_back(class, batch(class));
        }
    }

    /// Moves up to `n` cached blocks of `class` to the central list.
    fn give_back(&self, class: usize, n: u16) {
        let first = self.heads[class].get();
        if first.is_null() || n == 0 {
            return;
        }
        let mut last = first;
        let mut moved = 1;
        // SAFETY: walking this cache's own list of free blocks.
        unsafe {
            while moved < n {
                let next = last.cast::<*mut c_void>().read();
                if next.is_null() {
                    break;
                }
                last = next;
                moved += 1;
            }
            self.heads[class].set(last.cast::<*mut c_void>().read());
            LISTS.classes[class].with(|central| {
                last.cast::<*mut c_void>().write(central.free);
                central.free = first;
            });
        }
        self.counts[class].set(self.counts[class].get() - moved);
    }

    /// Fills the cache from the central list, or carves new blocks; returns
    /// one block, or null when the region is exhausted.
    #[cold]
    fn refill(&self, class: usize) -> *mut c_void {
        let size = block_size(class);
        let n = batch(class);
        let mut taken = LISTS.classes[class].with(|central| take_batch(central, size, n));
        if taken.0.is_null() {
            let (start, end) = match new_span(class) {
                Some(span) => span,
                None => return ptr::null_mut(),
            };
            taken = LISTS.classes[class].with(|central| {
                // Another thread may have refilled meanwhile: keep its rest
                // of span in the free list rather than lose it.
                central.retire_carve(size);
                central.carve_next = start;
                central.carve_end = end;
                take_batch(central, size, n)
            });
        }
        let (first, count) = taken;
        if first.is_null() {
            return first;
        }
        // SAFETY: `first` heads a list of `count` free blocks now ours.
        let rest = unsafe { first.cast::<*mut c_void>().read() };
        // SAFETY: as above; the block becomes all zero.
        unsafe { first.cast::<*mut c_void>().write(ptr::null_mut()) };
        self.heads[class].set(rest);
        self.counts[class].set(count - 1);
        first
    }

    /// Gives every cached block to the central lists (at thread exit).
    pub fn flush(&self) {
        for class in 0..CLASSES {
            let count = self.counts[class].get();
            self.give_back(class, count);
        }
    }
}

/// Gives one block back to its central list (threads without a usable
/// cache: exiting, or inside libgc).
///
/// # Safety
/// `p` must be a live region block of `class` that the caller frees.
pub unsafe fn free_to_central(p: *mut c_void, class: usize) {
    // SAFETY: the caller's block, `block_size(class)` bytes.
    unsafe { ptr::write_bytes(p.cast::<u8>(), 0, block_size(class)) };
    LISTS.classes[class].with(|central| {
        // SAFETY: as above; its first word becomes the list link.
        unsafe { p.cast::<*mut c_void>().write(central.free) };
        central.free = p;
    });
}

/// Up to `batch` blocks from `central`: its free list, then its span's rest.
fn take_batch(central: &mut Central, size: usize, batch: u16) -> (*mut c_void, u16) {
    let first = central.free;
    let mut count = 0;
    let mut last: *mut c_void = ptr::null_mut();
    let mut cursor = first;
    while !cursor.is_null() && count < batch {
        last = cursor;
        // SAFETY: central free blocks link through their first word.
        cursor = unsafe { cursor.cast::<*mut c_void>().read() };
        count += 1;
    }
    if count > 0 {
        central.free = cursor;
        // SAFETY: `last` is the last block taken; cut the list there.
        unsafe { last.cast::<*mut c_void>().write(ptr::null_mut()) };
        return (first, count);
    }
    // Carve fresh (zero) blocks from the span, linked in address order.
    let mut head: *mut c_void = ptr::null_mut();
    while count < batch && central.carve_next + size <= central.carve_end {
        let block = (central.carve_end - size) as *mut c_void;
        central.carve_end -= size;
        // SAFETY: a never-used block of committed region memory.
        unsafe { block.cast::<*mut c_void>().write(head) };
        head = block;
        count += 1;
    }
    (head, count)
}

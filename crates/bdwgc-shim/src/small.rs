//! Small blocks (up to [`MAX_SMALL`] bytes) without libgc's lock.
//!
//! `GC_malloc_uncollectable` and `GC_free` take the collector's global lock
//! on every call, and telling a freed pointer's origin takes libgc header
//! lookups. Small blocks therefore come from a region of the shim's own:
//!
//! - one address range reserved at start-up, committed 64 KiB span by span;
//!   libgc never collects it;
//! - each span holds blocks of one size class (16 to 1024 bytes, every 16), so
//!   a pointer's class is one table lookup, and "is this ours" is a range
//!   check;
//! - a live byte per block (one per 16-byte granule, set at the block's
//!   first), written with a plain store by malloc and free. The collector
//!   scans live blocks only ([`crate::scan`]): a freed block is not scanned,
//!   so it needs no clearing and a stale pointer in it keeps nothing alive.
//!   A reused block holds what its last owner left, as with glibc; `calloc`
//!   clears it. (Clearing every block on free made a malloc/free churn 1.3x
//!   glibc's time; without it, about half of glibc's.)
//! - each thread keeps a cache of free blocks per class; caches trade blocks
//!   with a central list per class, in batches, under a spin lock taken once
//!   per batch.
//!
//! When the range cannot be reserved or is used up, small blocks come from
//! libgc like the others.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::address_space;
use crate::central::{Central, CentralLists};

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
    THREAD_LIMITS[class]
}

/// [`thread_limit`] of every class, computed once: a division per free
/// is measurable.
static THREAD_LIMITS: [u16; CLASSES] = {
    let mut limits = [0; CLASSES];
    let mut class = 0;
    while class < CLASSES {
        let blocks = 16384 / ((class + 1) * GRANULE);
        limits[class] = if blocks < 16 {
            16
        } else if blocks > 64 {
            64
        } else {
            blocks as u16
        };
        class += 1;
    }
    limits
};

/// Blocks moved between a thread cache and a central list at once.
#[inline(always)]
fn batch(class: usize) -> u16 {
    thread_limit(class) / 2
}

/// The region's start; before it, a byte per span: the span's class
/// plus one (0: not in use), read through [`span_class_entry`].
static REGION_BASE: AtomicUsize = AtomicUsize::new(0);
/// Spans handed out so far (all committed).
static SPANS_USED: AtomicUsize = AtomicUsize::new(0);
/// The live-byte map: one byte per granule of the region, 1 at the first
/// granule of each allocated block. Mapped (256 MiB of address space,
/// touched one page per span in use) rather than static, since libgc scans
/// a library's static data. Stored biased, as the address of the byte for
/// address 0, so that a block's byte is one add away: `LIVE_BIASED + p / 16`.
static LIVE_BIASED: AtomicUsize = AtomicUsize::new(0);
const LIVE_MAP_SIZE: usize = REGION_SIZE / GRANULE;

/// The class of a request of `size` bytes (0..=MAX_SMALL); its blocks are
/// [`block_size`] bytes.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    size.saturating_sub(1) / GRANULE
}

/// Reserves the region; called once during initialization, after the
/// collector's hook is installed ([`crate::scan`]).
pub fn reserve_region() {
    let Some(base) = address_space::reserve_with_table(REGION_SIZE, MAX_SPANS) else {
        return;
    };
    // Without its map the region stays unpublished: address space only.
    let Some(map) = address_space::map_zeroed(LIVE_MAP_SIZE) else {
        return;
    };
    LIVE_BIASED.store(
        (map as usize).wrapping_sub(base / GRANULE),
        Ordering::Release,
    );
    REGION_BASE.store(base, Ordering::Release);
}

/// The live byte of the region block at `p`.
#[inline(always)]
fn live_byte(p: *mut c_void) -> &'static AtomicU8 {
    let byte = LIVE_BIASED
        .load(Ordering::Relaxed)
        .wrapping_add(p as usize / GRANULE);
    // SAFETY: `p` lies in the region (callers hold a region block), so the
    // byte lies in the map, which stays mapped, zero-initialized at first,
    // for the life of the process; atomics may be shared.
    unsafe { &*(byte as *const AtomicU8) }
}

/// Marks the region block at `p` allocated (scanned) or free (not).
#[inline(always)]
fn set_live(p: *mut c_void, live: bool) {
    live_byte(p).store(u8::from(live), Ordering::Relaxed);
}

/// Bytes in the spans handed out so far (allocated blocks and free ones).
pub fn used_bytes() -> usize {
    SPANS_USED.load(Ordering::Relaxed) * SPAN_SIZE
}

/// Granules per span: the live-map bytes of one span.
const GRANULES_PER_SPAN: usize = SPAN_SIZE / GRANULE;

/// Finds the region's live blocks from granule `from` on (0: the whole
/// region), merged into ranges while adjacent, and hands each range to
/// `push`; stops when `push` returns false, and then returns the granule to
/// resume from. Returns `None` once the region is done.
///
/// Runs while the collector marks, with the world stopped, so the map is
/// read with plain loads, eight bytes at a time.
pub fn for_each_live_range(
    from: usize,
    mut push: impl FnMut(usize, usize) -> bool,
) -> Option<usize> {
    let base = REGION_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    let map = LIVE_BIASED
        .load(Ordering::Acquire)
        .wrapping_add(base / GRANULE) as *const u64;
    let used = SPANS_USED.load(Ordering::Acquire);
    let mut current = (0, 0);
    let first_span = from / GRANULES_PER_SPAN;
    for span in first_span..used {
        let entry = span_class_entry(base, span);
        // Granules of the first span before `from` are done.
        let skip = if span == first_span {
            from % GRANULES_PER_SPAN
        } else {
            0
        };
        let Some(class) = span_class(entry) else {
            continue;
        };
        let size = block_size(class);
        let span_start = base + span * SPAN_SIZE;
        // Blocks are carved from the span's start, so the bytes after the
        // last one are never handed out and stay zero: a range may include
        // them, which joins a full span to the one after it.
        let blocks_end = span_start + SPAN_SIZE / size * size;
        for w in skip / 8..GRANULES_PER_SPAN / 8 {
            // SAFETY: the word lies in the map part of a span in use, which
            // no thread writes while the world is stopped.
            let mut bytes = unsafe { map.add(span * GRANULES_PER_SPAN / 8 + w).read() };
            if w == skip / 8 {
                bytes &= u64::MAX << ((skip % 8) * 8);
            }
            while bytes != 0 {
                let byte = (bytes.trailing_zeros() / 8) as usize;
                bytes &= !(0xff << (byte * 8));
                let granule = span * GRANULES_PER_SPAN + w * 8 + byte;
                let start = base + granule * GRANULE;
                let end = if start + size == blocks_end {
                    span_start + SPAN_SIZE
                } else {
                    start + size
                };
                if current.1 == start {
                    current.1 = end;
                    continue;
                }
                if current.0 != current.1 && !push(current.0, current.1) {
                    return Some(granule);
                }
                current = (start, end);
            }
        }
    }
    if current.0 != current.1 {
        push(current.0, current.1);
    }
    None
}

/// The class of the region block at `p`, or `None` when `p` is not in the
/// region.
#[inline(always)]
pub fn class_of_block(p: *mut c_void) -> Option<usize> {
    let (base, offset) = address_space::offset_in(&REGION_BASE, REGION_SIZE, p)?;
    span_class(span_class_entry(base, offset >> SPAN_SHIFT))
}

/// The class entry of `span` in the region at `base`.
#[inline(always)]
fn span_class_entry(base: usize, span: usize) -> &'static AtomicU8 {
    debug_assert!(span < MAX_SPANS);
    // SAFETY: `base` is the published region, reserved with a table of
    // MAX_SPANS bytes; the span index comes from an offset in the region.
    unsafe { address_space::table_byte(base, MAX_SPANS, span % MAX_SPANS) }
}

/// The class of a span from its class entry; `None` when unused.
#[inline(always)]
fn span_class(entry: &AtomicU8) -> Option<usize> {
    match entry.load(Ordering::Acquire) {
        0 => None,
        // The table holds classes below CLASSES only; the mask shows the
        // compiler that indexing per-class arrays cannot go out of bounds.
        class_plus_one => Some((usize::from(class_plus_one) - 1) % CLASSES),
    }
}

/// The usable size of blocks of `class`.
pub fn block_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

/// Zeroes the block of `class` at `p` (for calloc) with a loop of 16-byte
/// stores, in assembly: the compiler would turn a Rust loop into a call to
/// memset, which costs more than the stores for blocks this small and makes
/// the caller save registers.
///
/// # Safety
/// `p` must be a 16-aligned block of `block_size(class)` bytes the caller
/// may write.
#[inline(always)]
pub unsafe fn clear_block(p: *mut c_void, class: usize) {
    let end = p as usize + block_size(class);
    // SAFETY: stores zero to each 16-byte granule of [p, end), which the
    // caller owns; a block has at least one granule.
    unsafe {
        core::arch::asm!(
            "xorps {zero}, {zero}",
            "2:",
            "movaps xmmword ptr [{p}], {zero}",
            "add {p}, 16",
            "cmp {p}, {end}",
            "jb 2b",
            p = inout(reg) p => _,
            end = in(reg) end,
            zero = out(xmm_reg) _,
            options(nostack),
        );
    }
}

static LISTS: CentralLists<CLASSES> = CentralLists::new(());

pub fn lock_all_for_fork() {
    LISTS.lock_all_for_fork();
}

pub fn unlock_all_after_fork() {
    LISTS.unlock_all_after_fork();
}

/// Commits a new span for `class`; returns its address range.
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
        span_class_entry(base, index).store(class as u8 + 1, Ordering::Release);
        SPANS_USED.store(index + 1, Ordering::Release);
        Some((start, start + SPAN_SIZE))
    })
}

/// One thread's free blocks per class, linked through each block's first
/// word.
#[repr(C)]
pub struct ThreadCache {
    heads: [Cell<*mut c_void>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

impl ThreadCache {
    /// A block of `class` from the cache, marked live, or null when the
    /// cache has none. It holds what its last owner left.
    #[inline(always)]
    pub fn allocate(&self, class: usize) -> *mut c_void {
        let head = self.heads[class].get();
        if head.is_null() {
            return head;
        }
        // SAFETY: `head` is a free block of this cache; its first word links
        // to the next.
        self.heads[class].set(unsafe { head.cast::<*mut c_void>().read() });
        self.counts[class].set(self.counts[class].get() - 1);
        set_live(head, true);
        head
    }

    /// A block of `class`, marked live, refilling the cache when it is
    /// empty; null when the region cannot serve it.
    pub fn allocate_or_refill(&self, class: usize) -> *mut c_void {
        let p = self.allocate(class);
        if p.is_null() {
            self.refill(class)
        } else {
            p
        }
    }

    /// Takes back the region block `p` of `class`.
    ///
    /// # Safety
    /// `p` must be a live region block of `class` that the caller frees.
    #[inline(always)]
    pub unsafe fn free(&self, p: *mut c_void, class: usize) {
        set_live(p, false);
        // SAFETY: the block is the caller's to give back; its first word
        // becomes the list link.
        unsafe { p.cast::<*mut c_void>().write(self.heads[class].get()) };
        self.heads[class].set(p);
        let count = self.counts[class].get() + 1;
        self.counts[class].set(count);
        if count >= thread_limit(class) {
            self.give_back(class, batch(class));
        }
    }

    /// Moves up to `n` cached blocks of `class` to the central list.
    #[cold]
    #[inline(never)]
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
    #[inline(never)]
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
        self.heads[class].set(rest);
        self.counts[class].set(count - 1);
        set_live(first, true);
        first
    }

    /// Gives every cached block to the central lists (at thread exit).
    pub fn flush(&self) {
        for class in 0..CLASSES {
            let count = self.counts[class].get();
            if count > 0 {
                self.give_back(class, count);
            }
        }
    }
}

/// Gives one block back to its central list (threads without a usable
/// cache: exiting, or inside libgc).
///
/// # Safety
/// `p` must be a live region block of `class` that the caller frees.
pub unsafe fn free_to_central(p: *mut c_void, class: usize) {
    set_live(p, false);
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
    // Carve fresh (zero, so already null-linked) blocks from the span's
    // start, linked in address order.
    let mut head: *mut c_void = ptr::null_mut();
    let mut tail: *mut *mut c_void = &mut head;
    while count < batch && central.carve_next + size <= central.carve_end {
        let block = central.carve_next as *mut c_void;
        central.carve_next += size;
        // SAFETY: `tail` is `head` or the link word of the block carved
        // before, never-used committed region memory now ours.
        unsafe { tail.write(block) };
        tail = block.cast();
        count += 1;
    }
    (head, count)
}

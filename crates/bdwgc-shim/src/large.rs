//! Large blocks (above [`MAX_SMALL`], up to [`MAX_LARGE`]) without libgc's
//! lock and without clearing them.
//!
//! glibc hands such blocks out in well under a microsecond and never touches
//! their pages. `GC_malloc_uncollectable` takes libgc's lock, clears the whole
//! block and counts it toward the next collection: 20-40 times slower. The
//! shim keeps them in a second region of its own instead:
//!
//! - 60 size classes, four per doubling (1280 bytes to 32 MiB); a span (one
//!   4 MiB unit, or several for blocks above 4 MiB) holds blocks of one
//!   class, so a pointer's class is one table lookup;
//! - a live bit per block. The collector scans live blocks only
//!   ([`crate::scan`]). A freed block is not scanned, so it needs no
//!   clearing (a stale pointer in it keeps nothing alive); a reused block
//!   holds what its last owner left, as with glibc, and `calloc` clears it
//!   unless it is known to be zero;
//! - a central free list per class under a spin lock;
//! - blocks above 1 MiB go back to the kernel when freed (`MADV_DONTNEED`),
//!   so they cost no memory while free and come back zero.
//!
//! When the region cannot be reserved or is used up, or libgc lacks the hook,
//! large blocks come from libgc as before.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::address_space;
use crate::central::{Central, CentralLists};
use crate::scan::Ranges;
use crate::small::MAX_SMALL;

/// The largest size served from the region; larger blocks come from libgc.
pub const MAX_LARGE: usize = 256 << 20;
const UNIT_SHIFT: u32 = 22;
const UNIT: usize = 1 << UNIT_SHIFT;
/// Reserved address space (not memory).
const REGION_SIZE: usize = 64 << 30;
const UNITS: usize = REGION_SIZE / UNIT;
const CLASSES: usize = 72;
const SMALLEST_BLOCK: usize = 1280;
const MAX_BLOCKS_PER_SPAN: usize = UNIT / SMALLEST_BLOCK;
const BITMAP_WORDS: usize = MAX_BLOCKS_PER_SPAN.div_ceil(64);
/// Freed blocks larger than this are given back to the kernel.
const RETURN_ABOVE: usize = 1 << 20;
/// `UNIT_CLASS` of a unit that continues a multi-unit span.
const CONTINUATION: u8 = u8::MAX;

static REGION_BASE: AtomicUsize = AtomicUsize::new(0);
/// Units handed out so far (all committed).
static UNITS_USED: AtomicUsize = AtomicUsize::new(0);
/// Per unit: its span's class plus one on a span's first unit,
/// `CONTINUATION` on the others, 0 when unused.
static UNIT_CLASS: [AtomicU8; UNITS] = [const { AtomicU8::new(0) }; UNITS];
/// Per span (indexed by its first unit): one bit per block, set while the
/// block is allocated. Read by the collector's hook with the world stopped.
/// Mapped at start-up (7 MiB, touched only where used) rather than static:
/// libgc scans a library's static data at every collection.
static LIVE: AtomicPtr<LiveBits> = AtomicPtr::new(ptr::null_mut());
type LiveBits = [AtomicU64; BITMAP_WORDS];

/// The live bits of the span whose first unit is `unit`.
fn live_bits(unit: usize) -> &'static LiveBits {
    debug_assert!(unit < UNITS);
    // SAFETY: LIVE is set before the region is published and maps UNITS
    // zero-initialized entries for the life of the process; atomics may be
    // shared.
    unsafe { &*LIVE.load(Ordering::Relaxed).add(unit) }
}

/// The class of a request of `size` bytes, `MAX_SMALL < size <= MAX_LARGE`.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size > MAX_SMALL && size <= MAX_LARGE);
    let s = size - 1;
    let log = (usize::BITS - 1 - s.leading_zeros()) as usize;
    (log - 10) * 4 + ((s >> (log - 2)) & 3)
}

/// The usable size of blocks of `class`.
#[inline(always)]
pub fn block_size(class: usize) -> usize {
    let log = 10 + class / 4;
    (1 << log) + (((class % 4) + 1) << (log - 2))
}

fn span_units(class: usize) -> usize {
    block_size(class).div_ceil(UNIT)
}

fn blocks_per_span(class: usize) -> usize {
    span_units(class) * UNIT / block_size(class)
}

/// Reserves the region; called once during initialization, after the
/// collector's hook is installed ([`crate::scan`]).
pub fn reserve_region() {
    let Some(base) = address_space::reserve(REGION_SIZE) else {
        return;
    };
    // Without its table the region stays unpublished: address space only.
    let Some(live) = address_space::map_zeroed(UNITS * core::mem::size_of::<LiveBits>()) else {
        return;
    };
    LIVE.store(live.cast(), Ordering::Release);
    REGION_BASE.store(base, Ordering::Release);
}

/// The class of the large block that starts at `p`, or `None` when `p` is
/// not the start of a block of the region.
#[inline(always)]
pub fn class_of_block(p: *mut c_void) -> Option<usize> {
    let offset = address_space::offset_in(&REGION_BASE, REGION_SIZE, p)?;
    let class = span_class(&UNIT_CLASS[offset >> UNIT_SHIFT])?;
    ((offset & (UNIT - 1)) % block_size(class) == 0).then_some(class)
}

/// The class of the span that starts at a unit, from its `UNIT_CLASS`
/// entry; `None` for unused and continuation units.
#[inline(always)]
fn span_class(entry: &AtomicU8) -> Option<usize> {
    match entry.load(Ordering::Acquire) {
        0 | CONTINUATION => None,
        class_plus_one => Some(usize::from(class_plus_one) - 1),
    }
}

/// Where the block at `p` sits: its span's first unit and its index there.
fn position(p: usize, class: usize) -> (usize, usize) {
    let offset = p - REGION_BASE.load(Ordering::Relaxed);
    let unit = offset >> UNIT_SHIFT;
    (unit, (offset & (UNIT - 1)) / block_size(class))
}

fn set_live(p: usize, class: usize, live: bool) {
    let (unit, index) = position(p, class);
    let word = &live_bits(unit)[index / 64];
    let bit = 1u64 << (index % 64);
    if live {
        word.fetch_or(bit, Ordering::Release);
    } else {
        word.fetch_and(!bit, Ordering::Release);
    }
}

static LISTS: CentralLists<CLASSES> = CentralLists::new();
/// Bytes in allocated blocks, for the collector's pacing ([`crate::scan`]).
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes in allocated large blocks.
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

pub fn lock_all_for_fork() {
    LISTS.lock_all_for_fork();
}

pub fn unlock_all_after_fork() {
    LISTS.unlock_all_after_fork();
}

fn mark_continuation(units: core::ops::Range<usize>) {
    for class in &UNIT_CLASS[units] {
        class.store(CONTINUATION, Ordering::Relaxed);
    }
}

/// Commits a new span for `class`; returns its address range.
fn new_span(class: usize) -> Option<(usize, usize)> {
    let base = REGION_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    let units = span_units(class);
    LISTS.span_lock.with(|_| {
        let first = UNITS_USED.load(Ordering::Relaxed);
        if first + units > UNITS {
            return None;
        }
        let start = base + first * UNIT;
        if !address_space::commit(start, units * UNIT) {
            return None;
        }
        mark_continuation(first + 1..first + units);
        UNIT_CLASS[first].store(class as u8 + 1, Ordering::Release);
        UNITS_USED.store(first + units, Ordering::Release);
        Some((start, start + blocks_per_span(class) * block_size(class)))
    })
}

/// Grows the block at `p` of `class` in place to hold `size` bytes, when
/// it fills the newest span alone (a buffer that keeps growing while
/// nothing else large is allocated): commits the units after it, as glibc
/// grows a block at the top of its heap. Returns whether it grew.
///
/// # Safety
/// `p` must be a live block of `class`, owned by the caller.
pub unsafe fn grow_in_place(p: *mut c_void, class: usize, size: usize) -> bool {
    if size > MAX_LARGE || blocks_per_span(class) != 1 {
        return false;
    }
    let new_class = class_of(size);
    if blocks_per_span(new_class) != 1 {
        return false;
    }
    let (head, _) = position(p as usize, class);
    let (units, new_units) = (span_units(class), span_units(new_class));
    LISTS.span_lock.with(|_| {
        if head + units != UNITS_USED.load(Ordering::Relaxed) || head + new_units > UNITS {
            return false;
        }
        if new_units > units {
            let base = REGION_BASE.load(Ordering::Relaxed);
            if !address_space::commit(base + (head + units) * UNIT, (new_units - units) * UNIT) {
                return false;
            }
            mark_continuation(head + units..head + new_units);
        }
        // The collector's hook sees the old size or the new one; both lie in
        // committed memory, and the new part holds nothing yet. The old
        // class's carving range still ends at the old block: it carves
        // nothing more from this span.
        UNIT_CLASS[head].store(new_class as u8 + 1, Ordering::Release);
        UNITS_USED.store(head + new_units, Ordering::Release);
        LIVE_BYTES.fetch_add(block_size(new_class) - block_size(class), Ordering::Relaxed);
        true
    })
}

/// A block of `class`, and whether it is known to be all zero; `None` when
/// the region cannot serve it.
pub fn allocate(class: usize) -> Option<(*mut c_void, bool)> {
    let size = block_size(class);
    let taken = LISTS.classes[class].with(|central| take(central, size));
    let (p, zeroed) = match taken {
        Some(block) => block,
        None => {
            let (start, end) = new_span(class)?;
            LISTS.classes[class].with(|central| {
                // Another thread may have added a span meanwhile: keep the
                // rest of it on the free list rather than lose it.
                central.retire_carve(size);
                central.carve_next = start;
                central.carve_end = end;
                take(central, size)
            })?
        }
    };
    set_live(p as usize, class, true);
    LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
    Some((p, zeroed))
}

fn take(central: &mut Central, size: usize) -> Option<(*mut c_void, bool)> {
    let block = central.free;
    if !block.is_null() {
        // SAFETY: free blocks link through their first word; the block is
        // ours now, and its link is cleared.
        unsafe {
            central.free = block.cast::<*mut c_void>().read();
            block.cast::<*mut c_void>().write(ptr::null_mut());
        }
        // Blocks above RETURN_ABOVE were given back to the kernel when freed.
        return Some((block, size > RETURN_ABOVE));
    }
    if central.carve_next + size <= central.carve_end {
        let block = central.carve_next as *mut c_void;
        central.carve_next += size;
        // Never used: fresh pages, all zero.
        return Some((block, true));
    }
    None
}

/// Takes back the large block `p` of `class`.
///
/// # Safety
/// `p` must be a live block of `class` from [`allocate`], freed once.
pub unsafe fn free(p: *mut c_void, class: usize) {
    let size = block_size(class);
    set_live(p as usize, class, false);
    LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
    if size > RETURN_ABOVE {
        // SAFETY: the block's pages are ours alone now; they read as zero
        // when next touched.
        unsafe { libc::madvise(p, size, libc::MADV_DONTNEED) };
    }
    LISTS.classes[class].with(|central| {
        // SAFETY: as above; its first word becomes the list link.
        unsafe { p.cast::<*mut c_void>().write(central.free) };
        central.free = p;
    });
}

/// Hands every live block to the collector (from its push hook, with the
/// world stopped). Adjacent live blocks make one range.
pub fn push_live_blocks(ranges: &mut Ranges) {
    let base = REGION_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let used = UNITS_USED.load(Ordering::Acquire);
    for (unit, entry) in UNIT_CLASS.iter().enumerate().take(used) {
        let Some(class) = span_class(entry) else {
            continue;
        };
        let size = block_size(class);
        let span = base + unit * UNIT;
        let words = blocks_per_span(class).div_ceil(64);
        for (w, word) in live_bits(unit).iter().enumerate().take(words) {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let index = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = span + index * size;
                ranges.add(start, start + size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_a_quarter_step() {
        assert_eq!(class_of(MAX_SMALL + 1), 0);
        assert_eq!(block_size(0), SMALLEST_BLOCK);
        assert_eq!(class_of(MAX_LARGE), CLASSES - 1);
        assert_eq!(block_size(CLASSES - 1), MAX_LARGE);
        let mut size = MAX_SMALL + 1;
        while size <= MAX_LARGE {
            let class = class_of(size);
            assert!(block_size(class) >= size, "{size}");
            assert!(class == 0 || block_size(class - 1) < size, "{size}");
            assert_eq!(block_size(class) % 256, 0);
            size += 1 + size / 97;
        }
        for class in 0..CLASSES {
            assert!(blocks_per_span(class) >= 1);
            assert!(blocks_per_span(class) <= MAX_BLOCKS_PER_SPAN);
        }
    }
}

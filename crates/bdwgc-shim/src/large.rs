//! Large blocks (above [`MAX_SMALL`], up to [`MAX_LARGE`]) without libgc's
//! lock and without clearing them.
//!
//! glibc hands such blocks out in well under a microsecond and never touches
//! their pages. `GC_malloc_uncollectable` takes libgc's lock, clears the whole
//! block and counts it toward the next collection: 20-40 times slower. The
//! shim keeps them in a second region of its own instead:
//!
//! - 72 size classes, four per doubling (1280 bytes to 256 MiB). Up to 2 MiB
//!   a span (one 4 MiB unit) holds blocks of one class, with a central free
//!   list per class under a spin lock; a pointer's class is one table lookup;
//! - a block above 2 MiB has a span of its own (one unit or more). When it
//!   is freed its units go back to a pool ([`FreeUnits`]) that any such span
//!   reuses, lowest address first, and a block that `realloc` grows takes
//!   the free units after it in place. Up to 64 MiB of freed units keep
//!   their pages, as glibc keeps up to 64 MiB free at the top of its heap,
//!   so a buffer that grows again does not fault them in again; the rest
//!   go back to the kernel (`MADV_DONTNEED`);
//! - a live bit per block. The collector scans live blocks only
//!   ([`crate::scan`]). A freed block is not scanned, so it needs no
//!   clearing (a stale pointer in it keeps nothing alive); a reused block
//!   holds what its last owner left, as with glibc, and `calloc` clears it
//!   unless it is known to be zero;
//! - blocks of 1-2 MiB go back to the kernel when freed, so they cost no
//!   memory while free and come back zero.
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
/// Freed blocks larger than this are given back to the kernel (those with
/// a span of their own only beyond [`KEPT_UNITS_MAX`]).
const RETURN_ABOVE: usize = 1 << 20;
/// Freed units of one-block spans that keep their pages: 64 MiB, the most
/// glibc keeps free at the top of its heap (twice its largest mmap
/// threshold, 32 MiB).
const KEPT_UNITS_MAX: usize = (64 << 20) / UNIT;
/// The [`unit_class`] entry of a unit that continues a multi-unit span.
const CONTINUATION: u8 = u8::MAX;

/// The region's start; before it, a byte per unit ([`unit_class`]).
static REGION_BASE: AtomicUsize = AtomicUsize::new(0);
/// Units handed out so far (all committed).
static UNITS_USED: AtomicUsize = AtomicUsize::new(0);
/// Per span (indexed by its first unit): one bit per block, set while the
/// block is allocated. Read by the collector's hook with the world stopped.
/// Mapped at start-up (7 MiB, touched only where used) rather than static:
/// libgc scans a library's static data at every collection.
static LIVE: AtomicPtr<LiveBits> = AtomicPtr::new(ptr::null_mut());
type LiveBits = [AtomicU64; BITMAP_WORDS];

/// Unit `unit`'s entry in the table before the region at `base`: its span's
/// class plus one on a span's first unit, `CONTINUATION` on the others, 0
/// when unused.
#[inline(always)]
fn unit_class(base: usize, unit: usize) -> &'static AtomicU8 {
    debug_assert!(unit < UNITS);
    // SAFETY: `base` is the published region, reserved with a table of
    // UNITS bytes.
    unsafe { address_space::table_byte(base, UNITS, unit % UNITS) }
}

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
    let Some(base) = address_space::reserve_with_table(REGION_SIZE, UNITS) else {
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
    let (base, offset) = address_space::offset_in(&REGION_BASE, REGION_SIZE, p)?;
    let class = span_class(unit_class(base, offset >> UNIT_SHIFT))?;
    ((offset & (UNIT - 1)) % block_size(class) == 0).then_some(class)
}

/// The class of the span that starts at a unit, from its [`unit_class`]
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

static LISTS: CentralLists<CLASSES, FreeUnits> = CentralLists::new(FreeUnits::new());

/// The free units below `UNITS_USED`: those of freed one-block spans, kept
/// for reuse by any one-block span. Guarded by the span lock.
struct FreeUnits {
    /// One bit per free unit.
    free: [u64; UNITS / 64],
    /// One bit per free unit whose pages were kept: it may hold old bytes.
    kept: [u64; UNITS / 64],
    kept_units: usize,
}

impl FreeUnits {
    const fn new() -> Self {
        FreeUnits {
            free: [0; UNITS / 64],
            kept: [0; UNITS / 64],
            kept_units: 0,
        }
    }

    fn is_free(&self, unit: usize) -> bool {
        self.free[unit / 64] & (1 << (unit % 64)) != 0
    }

    /// The first unit of the lowest run of `units` free units; a run that
    /// reaches `used` goes on into units never used (so the answer may be
    /// `used` itself).
    fn first_fit(&self, units: usize, used: usize) -> usize {
        let mut run_start = 0;
        let mut unit = 0;
        while unit < used {
            let bits = self.free[unit / 64] >> (unit % 64);
            if bits & 1 == 0 {
                // In use: a run can start at the next free unit at the
                // earliest (no bits are set at or beyond `used`).
                unit += if bits == 0 {
                    64 - unit % 64
                } else {
                    bits.trailing_zeros() as usize
                };
                run_start = unit;
            } else {
                unit += (!bits).trailing_zeros() as usize;
                if unit - run_start >= units {
                    return run_start;
                }
            }
        }
        run_start.min(used)
    }

    /// Whether units `from..to` are free or never used.
    fn all_free(&self, from: usize, to: usize, used: usize) -> bool {
        to <= UNITS && (from..to.min(used)).all(|unit| self.is_free(unit))
    }

    /// Takes units `from..to`, free or never used (committing those), and
    /// moves `UNITS_USED` past them. Returns whether their pages are all
    /// zero, or `None` when they cannot be committed.
    fn take(&mut self, from: usize, to: usize, used: usize) -> Option<bool> {
        debug_assert!(self.all_free(from, to, used));
        if to > used {
            let fresh = from.max(used);
            let base = REGION_BASE.load(Ordering::Relaxed);
            if !address_space::commit(base + fresh * UNIT, (to - fresh) * UNIT) {
                return None;
            }
            UNITS_USED.store(to, Ordering::Release);
        }
        let mut zeroed = true;
        for unit in from..to.min(used) {
            let (word, bit) = (unit / 64, 1u64 << (unit % 64));
            self.free[word] &= !bit;
            if self.kept[word] & bit != 0 {
                self.kept[word] &= !bit;
                self.kept_units -= 1;
                zeroed = false;
            }
        }
        Some(zeroed)
    }

    /// Adds the units of a freed span, `from..to`, whose class entries are
    /// already cleared; `kept` when their pages were not given back.
    fn give_back(&mut self, from: usize, to: usize, kept: bool) {
        for unit in from..to {
            let (word, bit) = (unit / 64, 1u64 << (unit % 64));
            self.free[word] |= bit;
            if kept {
                self.kept[word] |= bit;
            }
        }
        if kept {
            self.kept_units += to - from;
        }
    }
}
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

/// Sets the class entries of `units` (in the region at `base`) to `entry`.
fn set_unit_classes(base: usize, units: core::ops::Range<usize>, entry: u8) {
    for unit in units {
        unit_class(base, unit).store(entry, Ordering::Release);
    }
}

/// Commits a new span for `class` (at the end of the used units: its
/// blocks are carved as zero); returns its address range.
fn new_span(class: usize) -> Option<(usize, usize)> {
    let (start, _) = claim_span(class, |_, used| used)?;
    Some((start, start + blocks_per_span(class) * block_size(class)))
}

/// Claims the units of a new span for `class` at the first unit `place`
/// picks (given the free units and `UNITS_USED`); returns its address and
/// whether its pages are all zero.
fn claim_span(
    class: usize,
    place: impl FnOnce(&FreeUnits, usize) -> usize,
) -> Option<(usize, bool)> {
    let base = REGION_BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    let units = span_units(class);
    LISTS.span_lock.with(|free_units| {
        let used = UNITS_USED.load(Ordering::Relaxed);
        let first = place(free_units, used);
        if !free_units.all_free(first, first + units, used) {
            return None;
        }
        let zeroed = free_units.take(first, first + units, used)?;
        set_unit_classes(base, first + 1..first + units, CONTINUATION);
        unit_class(base, first).store(class as u8 + 1, Ordering::Release);
        Some((base + first * UNIT, zeroed))
    })
}

/// Gives the units of the one-block span at `p` (of `class`, freed) back to
/// the pool, keeping their pages while [`KEPT_UNITS_MAX`] allows.
fn release_span(p: *mut c_void, class: usize) {
    let (head, _) = position(p as usize, class);
    let units = span_units(class);
    let base = REGION_BASE.load(Ordering::Relaxed);
    let release = |free_units: &mut FreeUnits, kept: bool| {
        set_unit_classes(base, head..head + units, 0);
        free_units.give_back(head, head + units, kept);
    };
    let kept = LISTS.span_lock.with(|free_units| {
        let keep = free_units.kept_units + units <= KEPT_UNITS_MAX;
        if keep {
            release(free_units, true);
        }
        keep
    });
    if !kept {
        // Outside the lock: dropping many pages takes a while. The units are
        // not free yet, so nothing else can take them meanwhile.
        // SAFETY: the span's pages are ours alone now; they read as zero
        // when next touched.
        unsafe { libc::madvise(p, units * UNIT, libc::MADV_DONTNEED) };
        LISTS
            .span_lock
            .with(|free_units| release(free_units, false));
    }
}

/// Grows the block at `p` of `class` (one with a span of its own) in place
/// to hold `size` bytes when the units after its span are free or never
/// used, as glibc grows a block into free memory after it. Returns whether
/// it grew.
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
    let (from, to) = (head + span_units(class), head + span_units(new_class));
    LISTS.span_lock.with(|free_units| {
        let used = UNITS_USED.load(Ordering::Relaxed);
        if !free_units.all_free(from, to, used) {
            return false;
        }
        if free_units.take(from, to, used).is_none() {
            return false;
        }
        let base = REGION_BASE.load(Ordering::Relaxed);
        set_unit_classes(base, from..to, CONTINUATION);
        // The collector's hook sees the old size or the new one; both lie in
        // committed memory of this block. The new part may hold what a
        // freed block left there, as glibc's realloc does.
        unit_class(base, head).store(new_class as u8 + 1, Ordering::Release);
        LIVE_BYTES.fetch_add(block_size(new_class) - block_size(class), Ordering::Relaxed);
        true
    })
}

/// A block of `class`, and whether it is known to be all zero; `None` when
/// the region cannot serve it.
pub fn allocate(class: usize) -> Option<(*mut c_void, bool)> {
    let size = block_size(class);
    if blocks_per_span(class) == 1 {
        let (p, zeroed) = claim_span(class, |free_units, used| {
            free_units.first_fit(span_units(class), used)
        })?;
        set_live(p, class, true);
        LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
        return Some((p as *mut c_void, zeroed));
    }
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
    if blocks_per_span(class) == 1 {
        release_span(p, class);
        return;
    }
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
    for unit in 0..used {
        let Some(class) = span_class(unit_class(base, unit)) else {
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

    #[test]
    fn first_fit_takes_the_lowest_free_run_long_enough() {
        let mut units = FreeUnits::new();
        units.give_back(3, 5, false);
        units.give_back(10, 14, true);
        units.give_back(60, 70, false); // across a word boundary
        units.give_back(90, 100, false); // up to the used units' end
        let used = 100;
        assert_eq!(units.first_fit(1, used), 3);
        assert_eq!(units.first_fit(2, used), 3);
        assert_eq!(units.first_fit(3, used), 10);
        assert_eq!(units.first_fit(5, used), 60);
        assert_eq!(units.first_fit(10, used), 60);
        // The run at the end goes on into never-used units.
        assert_eq!(units.first_fit(11, used), 90);
        assert_eq!(units.first_fit(200, used), 90);
        assert_eq!(units.first_fit(11, used + 1), used + 1);
        assert_eq!(FreeUnits::new().first_fit(4, 0), 0);
        assert_eq!(FreeUnits::new().first_fit(4, 7), 7);

        assert!(units.all_free(60, 70, used));
        assert!(!units.all_free(59, 70, used));
        assert!(units.all_free(95, 130, used));
        assert!(!units.all_free(UNITS - 1, UNITS + 1, UNITS));

        // Taking kept units says they may hold old bytes.
        assert_eq!(units.kept_units, 4);
        assert_eq!(units.take(10, 12, used), Some(false));
        assert_eq!(units.take(3, 5, used), Some(true));
        assert_eq!(units.kept_units, 2);
        assert_eq!(units.first_fit(2, used), 12);
        assert_eq!(units.first_fit(3, used), 60);
    }
}

//! Large blocks (above [`MAX_SMALL`](crate::small::MAX_SMALL), up to
//! [`MAX_LARGE`]) without libgc's lock and without clearing them.
//!
//! glibc hands such blocks out in well under a microsecond and never touches
//! their pages. `GC_malloc_uncollectable` takes libgc's lock, clears the whole
//! block and counts it toward the next collection: 20-40 times slower. The
//! shim keeps them in a second region of its own instead:
//!
//! - 72 size classes, four per doubling (1280 bytes to 256 MiB; the 12 up to
//!   8 KiB serve aligned blocks only, smaller ones the small region). Up to 2 MiB
//!   a span (one 4 MiB unit) holds blocks of one class; each span keeps its
//!   own free list, and each class a list of its spans that have free
//!   blocks, under a spin lock; a pointer's class is one table lookup;
//! - a block above 2 MiB has a span of its own (one unit or more);
//! - the units of a freed span go back to a pool ([`FreeUnits`]) that any
//!   span reuses, lowest address first, and a block that `realloc` grows
//!   takes the free units after it in place. A freed block's units keep
//!   their pages for the purge delay ([`crate::purge`]), so a buffer that
//!   is replaced or grows again does not fault them in again; a span of
//!   smaller blocks stays with its class while it is wholly free, for the
//!   same delay (one check while the regions grow). Then their units are
//!   unmapped: memory and address space go back to the kernel, and come
//!   back zero. A span still in use gives back the pages of its free blocks
//!   once its free list has not changed for the delay (as long);
//! - a live bit per block. The collector scans live blocks only
//!   ([`crate::scan`]). A freed block is not scanned, so it needs no
//!   clearing (a stale pointer in it keeps nothing alive); a reused block
//!   holds what its last owner left, as with glibc, and `calloc` clears it
//!   unless it is known to be zero;
//! - blocks of 1-2 MiB go back to the kernel when freed, so they cost no
//!   memory while free and come back zero.
//!
//! The region's address space is placed at start-up and mapped unit by unit
//! as spans need it ([`crate::address_space`]). When it cannot be placed or
//! cannot grow (used up, or refused by `RLIMIT_AS`), or libgc lacks the
//! hook, large blocks come from libgc as before.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::address_space::{self, GrowingRange, Placement, RegionBase};
use crate::central::{self, ClassList, SpanState, SpanTable};
use crate::purge;
use crate::scan::Ranges;
use crate::spin::SpinLocked;

/// The largest size served from the region; larger blocks come from libgc.
pub const MAX_LARGE: usize = 256 << 20;
const UNIT_SHIFT: u32 = 22;
const UNIT: usize = 1 << UNIT_SHIFT;
/// The region's address space.
const REGION_SIZE: usize = 64 << 30;
const UNITS: usize = REGION_SIZE / UNIT;
const CLASSES: usize = 72;
const SMALLEST_BLOCK: usize = 1280;
const MAX_BLOCKS_PER_SPAN: usize = UNIT / SMALLEST_BLOCK;
const BITMAP_WORDS: usize = MAX_BLOCKS_PER_SPAN.div_ceil(64);
/// Freed blocks larger than this, in spans of several blocks, give their
/// pages back to the kernel at once: they cost no memory while free.
const RETURN_ABOVE: usize = 1 << 20;
/// The [`unit_class`] entry of a unit that continues a multi-unit span.
const CONTINUATION: u8 = u8::MAX;

/// The region's start (unplaced until its span table is ready); before it,
/// a byte per unit ([`unit_class`]).
static REGION_BASE: RegionBase = RegionBase::unplaced();
/// The region's address space, mapped a unit at a time.
static REGION: GrowingRange = GrowingRange::new(REGION_SIZE, UNIT);
/// Units handed out so far (mapped, except those purged since).
static UNITS_USED: AtomicUsize = AtomicUsize::new(0);
/// What the shim knows about each span, indexed by its first unit. Mapped as
/// the region grows (448 bytes a unit) rather than static: libgc scans a
/// library's static data at every collection.
static SPANS: AtomicPtr<SpanInfo> = AtomicPtr::new(ptr::null_mut());
const SPANS_SIZE: usize = UNITS * core::mem::size_of::<SpanInfo>();
static SPANS_RANGE: GrowingRange = GrowingRange::new(SPANS_SIZE, 64 << 10);

/// The address space the region and its tables take from a [`Placement`].
pub const ADDRESS_SPACE: usize = UNITS + REGION_SIZE + SPANS_SIZE + 2 * address_space::REGION_ALIGN;

/// A span, indexed by its first unit. The collector's hook reads `live`
/// with the world stopped; `state` of a span of several blocks belongs to
/// its class's lock, `freed_at` of a free unit to the pool's lock.
#[repr(C, align(64))]
struct SpanInfo {
    /// One bit per block, set while the block is allocated.
    live: [AtomicU64; BITMAP_WORDS],
    state: SpanState,
    /// When the unit was freed with its pages kept ([`purge::now_ms`]).
    freed_at: AtomicU32,
}

fn span_state(unit: usize) -> &'static SpanState {
    &span(unit).state
}

/// Unit `unit`'s entry in the table before the region at `base`: its span's
/// class plus one on a span's first unit, `CONTINUATION` on the others, 0
/// when unused.
#[inline(always)]
fn unit_class(base: usize, unit: usize) -> &'static AtomicU8 {
    debug_assert!(unit < UNITS);
    // SAFETY: `base` is the published region, placed with a table of
    // UNITS bytes.
    unsafe { address_space::table_byte(base, UNITS, unit % UNITS) }
}

/// The span that starts at `unit`.
fn span(unit: usize) -> &'static SpanInfo {
    debug_assert!(unit < UNITS);
    // SAFETY: SPANS is set before the region is published, and the entries
    // of every unit handed out are mapped (zero-initialized) before the unit
    // is, for the life of the process; its fields are atomics, which may be
    // shared.
    unsafe { &*SPANS.load(Ordering::Relaxed).add(unit % UNITS) }
}

/// The class of a request of `size` bytes, `1024 < size <= MAX_LARGE`: the
/// quarter classes from 1280 bytes. Requests up to
/// [`MAX_SMALL`](crate::small::MAX_SMALL) go to the small region, so its
/// first classes serve aligned blocks only.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_LARGE);
    central::quarter_class_of(size)
}

/// The usable size of blocks of `class`.
#[inline(always)]
pub fn block_size(class: usize) -> usize {
    central::quarter_class_size(class)
}

/// The smallest class for `size` bytes (`MAX_SMALL < size <= MAX_LARGE`)
/// whose blocks all start at multiples of `align`, a power of two up to
/// the region's alignment: spans start at unit boundaries, which that
/// alignment makes multiples of `align`, and blocks at multiples of their
/// size. A block size is 5, 6, 7 or 8 quarters of a power of two, so the
/// class found is at most twice the size (4,097 bytes at 4 KiB: 8 KiB).
pub fn aligned_class(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two() && align <= address_space::REGION_ALIGN);
    // `align` is a power of two: a mask, not a division.
    (class_of(size)..CLASSES).find(|&class| block_size(class) & (align - 1) == 0)
}

fn span_units(class: usize) -> usize {
    block_size(class).div_ceil(UNIT)
}

fn blocks_per_span(class: usize) -> usize {
    span_units(class) * UNIT / block_size(class)
}

/// Places the region and its span table; called once during
/// initialization, after the collector's hook is installed
/// ([`crate::scan`]).
pub fn place_region(placement: &mut Placement) {
    let Some(base) = placement.take_with_table(UNITS, REGION_SIZE, address_space::REGION_ALIGN)
    else {
        return;
    };
    // Without its span table the region stays unpublished.
    let Some(spans) = placement.take(SPANS_SIZE, address_space::REGION_ALIGN) else {
        return;
    };
    REGION.place(base);
    SPANS_RANGE.place(spans);
    SPANS.store(spans as *mut SpanInfo, Ordering::Release);
    REGION_BASE.publish(base);
}

/// The class of the large block that starts at `p`, or `None` when `p` is
/// not the start of a block of the region.
#[inline(always)]
pub fn class_of_block(p: *mut c_void) -> Option<usize> {
    let (base, offset) = REGION_BASE.offset_of(REGION_SIZE, p)?;
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
    let offset = p - REGION_BASE.placed();
    let unit = offset >> UNIT_SHIFT;
    (unit, (offset & (UNIT - 1)) / block_size(class))
}

fn set_live(p: usize, class: usize, live: bool) {
    let (unit, index) = position(p, class);
    let word = &span(unit).live[index / 64];
    let bit = 1u64 << (index % 64);
    if live {
        word.fetch_or(bit, Ordering::Release);
    } else {
        word.fetch_and(!bit, Ordering::Release);
    }
}

/// The region's span table, for the class lists.
struct LargeSpans;

impl SpanTable for LargeSpans {
    #[inline(always)]
    fn span(index: usize) -> &'static SpanState {
        span_state(index)
    }
}

static CLASS_LISTS: [SpinLocked<ClassList<LargeSpans>>; CLASSES] =
    [const { SpinLocked::new(ClassList::new()) }; CLASSES];
/// The free units, and the lock for handing units out.
static POOL: SpinLocked<FreeUnits> = SpinLocked::new(FreeUnits::new());

/// The free units below `UNITS_USED`, reused by any span. Each is either
/// kept (mapped, holding what its last block left) or unmapped (purged).
/// Guarded by [`POOL`].
struct FreeUnits {
    /// One bit per free unit.
    free: [u64; UNITS / 64],
    /// One bit per free unit whose address space was given back.
    unmapped: [u64; UNITS / 64],
    kept_units: usize,
    unmapped_units: usize,
}

impl FreeUnits {
    const fn new() -> Self {
        FreeUnits {
            free: [0; UNITS / 64],
            unmapped: [0; UNITS / 64],
            kept_units: 0,
            unmapped_units: 0,
        }
    }

    fn is_free(&self, unit: usize) -> bool {
        self.free[unit / 64] & (1 << (unit % 64)) != 0
    }

    fn is_unmapped(&self, unit: usize) -> bool {
        self.unmapped[unit / 64] & (1 << (unit % 64)) != 0
    }

    fn set_bits(bits: &mut [u64], from: usize, to: usize, value: bool) {
        for unit in from..to {
            let (word, bit) = (unit / 64, 1u64 << (unit % 64));
            if value {
                bits[word] |= bit;
            } else {
                bits[word] &= !bit;
            }
        }
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

    /// Takes units `from..to`, free or never used, mapping those that are
    /// not, and moves `UNITS_USED` past them. Returns whether their pages
    /// are all zero, or `None` when they cannot be mapped.
    fn take(&mut self, from: usize, to: usize, used: usize) -> Option<bool> {
        debug_assert!(self.all_free(from, to, used));
        let below = to.min(used);
        let mut zeroed = true;
        let mut unit = from;
        while unit < below {
            if !self.is_unmapped(unit) {
                zeroed = false;
                unit += 1;
                continue;
            }
            let mut end = unit + 1;
            while end < below && self.is_unmapped(end) {
                end += 1;
            }
            let base = REGION_BASE.placed();
            if !address_space::remap(base + unit * UNIT, (end - unit) * UNIT) {
                return None;
            }
            // Mapped again (zero), still free until taken below.
            Self::set_bits(&mut self.unmapped, unit, end, false);
            self.unmapped_units -= end - unit;
            self.kept_units += end - unit;
            unit = end;
        }
        if to > used {
            if !SPANS_RANGE.ensure_mapped(to * core::mem::size_of::<SpanInfo>())
                || !REGION.ensure_mapped(to * UNIT)
            {
                return None;
            }
            UNITS_USED.store(to, Ordering::Release);
        }
        if below > from {
            Self::set_bits(&mut self.free, from, below, false);
            self.kept_units -= below - from;
        }
        Some(zeroed)
    }

    /// Adds the units `from..to` of a freed span, whose class entries are
    /// already cleared: `unmapped` when their address space was given back,
    /// otherwise kept (with their `since` set).
    fn give_back(&mut self, from: usize, to: usize, unmapped: bool) {
        Self::set_bits(&mut self.free, from, to, true);
        if unmapped {
            Self::set_bits(&mut self.unmapped, from, to, true);
            self.unmapped_units += to - from;
        } else {
            self.kept_units += to - from;
        }
    }

    /// Takes the lowest run (up to 64 units) of kept units that are `due`
    /// for purging, to be unmapped and given back.
    fn take_due_run(&mut self, due: impl Fn(usize) -> bool, used: usize) -> Option<(usize, usize)> {
        let kept = |units: &Self, unit: usize| units.is_free(unit) && !units.is_unmapped(unit);
        let from = (0..used).find(|&unit| kept(self, unit) && due(unit))?;
        let mut to = from + 1;
        while to < used && to - from < 64 && kept(self, to) && due(to) {
            to += 1;
        }
        Self::set_bits(&mut self.free, from, to, false);
        self.kept_units -= to - from;
        Some((from, to))
    }
}

/// Bytes in allocated blocks, for the collector's pacing ([`crate::scan`]).
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes in allocated large blocks.
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Bytes of address space the region and its span table have mapped.
pub fn mapped_bytes() -> usize {
    let unmapped = POOL.with(|units| units.unmapped_units);
    (REGION.mapped() - unmapped * UNIT) + SPANS_RANGE.mapped()
}

/// The address ranges the region and its span table have mapped, purged
/// units included (for [`crate::memory::resident_bytes`]).
pub fn mapped_ranges() -> [(usize, usize); 2] {
    [&REGION, &SPANS_RANGE].map(|range| (range.start(), range.start() + range.mapped()))
}

/// Bytes the region holds free: kept units, and free blocks of spans that
/// are in use (with what their classes have left to carve).
pub fn free_bytes() -> usize {
    if REGION_BASE.get().is_none() {
        return 0;
    }
    let mut free = POOL.with(|units| units.kept_units) * UNIT;
    for (class, list) in CLASS_LISTS.iter().enumerate() {
        free += list.with(|list| list.free_bytes(block_size(class)));
    }
    free
}

pub fn lock_all_for_fork() {
    POOL.lock();
    for list in &CLASS_LISTS {
        list.lock();
    }
}

pub fn unlock_all_after_fork() {
    for list in &CLASS_LISTS {
        list.unlock();
    }
    POOL.unlock();
}

/// Sets the class entries of `units` (in the region at `base`) to `entry`.
fn set_unit_classes(base: usize, units: core::ops::Range<usize>, entry: u8) {
    for unit in units {
        unit_class(base, unit).store(entry, Ordering::Release);
    }
}

/// Claims the units of a new span for `class`, the lowest free run that
/// fits (or new units); returns its first unit and whether its pages are
/// all zero.
fn claim_span(class: usize) -> Option<(usize, bool)> {
    let base = REGION_BASE.get()?;
    let units = span_units(class);
    POOL.with(|free_units| {
        let used = UNITS_USED.load(Ordering::Relaxed);
        let first = free_units.first_fit(units, used);
        if !free_units.all_free(first, first + units, used) {
            return None;
        }
        let zeroed = free_units.take(first, first + units, used)?;
        if zeroed {
            // Purged or new units: their pages are faulted in afresh.
            purge::note_growth();
        }
        set_unit_classes(base, first + 1..first + units, CONTINUATION);
        unit_class(base, first).store(class as u8 + 1, Ordering::Release);
        Some((first, zeroed))
    })
}

/// Gives the `units` units of the span at `head`, which holds no allocated
/// block and belongs to no class list any more, back to the pool: unmapped
/// when `unmap`, otherwise with their pages kept.
fn release_units(head: usize, units: usize, unmap: bool) {
    let base = REGION_BASE.placed();
    if unmap {
        // Outside the lock: dropping many pages takes a while. The units are
        // not free yet, so nothing else can take them meanwhile.
        // SAFETY: the span is ours alone now; nothing reads it any more.
        unsafe { address_space::unmap(base + head * UNIT, units * UNIT) };
    }
    if !unmap {
        let now = purge::now_ms();
        for unit in head..head + units {
            span(unit).freed_at.store(now, Ordering::Relaxed);
        }
    }
    POOL.with(|free_units| {
        set_unit_classes(base, head..head + units, 0);
        free_units.give_back(head, head + units, unmap);
    });
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
    POOL.with(|free_units| {
        let used = UNITS_USED.load(Ordering::Relaxed);
        if !free_units.all_free(from, to, used) {
            return false;
        }
        if free_units.take(from, to, used).is_none() {
            return false;
        }
        let base = REGION_BASE.placed();
        set_unit_classes(base, from..to, CONTINUATION);
        // The collector's hook sees the old size or the new one; both lie in
        // mapped memory of this block. The new part may hold what a freed
        // block left there, as glibc's realloc does.
        unit_class(base, head).store(new_class as u8 + 1, Ordering::Release);
        LIVE_BYTES.fetch_add(block_size(new_class) - block_size(class), Ordering::Relaxed);
        true
    })
}

/// A block of `class`, and whether it is known to be all zero; `None` when
/// the region cannot serve it.
pub fn allocate(class: usize) -> Option<(*mut c_void, bool)> {
    purge::tick();
    let size = block_size(class);
    if blocks_per_span(class) == 1 {
        let (head, zeroed) = claim_span(class)?;
        let p = REGION_BASE.placed() + head * UNIT;
        set_live(p, class, true);
        LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
        return Some((p as *mut c_void, zeroed));
    }
    // Blocks above RETURN_ABOVE gave their pages back when freed.
    let freed_zeroed = size > RETURN_ABOVE;
    // The live bit is set under the class's lock, as it is cleared.
    let take = |list: &mut ClassList<LargeSpans>| {
        let (p, zeroed) = list.take_block(size, freed_zeroed)?;
        set_live(p as usize, class, true);
        Some((p, zeroed))
    };
    let taken = match CLASS_LISTS[class].with(take) {
        Some(block) => block,
        None => {
            let (head, zeroed) = claim_span(class)?;
            let start = REGION_BASE.placed() + head * UNIT;
            let end = start + blocks_per_span(class) * size;
            CLASS_LISTS[class].with(|list| {
                list.start_carving(head, start, end, zeroed);
                take(list)
            })?
        }
    };
    LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
    Some(taken)
}

/// Takes back the large block `p` of `class`.
///
/// # Safety
/// `p` must be a live block of `class` from [`allocate`], freed once.
pub unsafe fn free(p: *mut c_void, class: usize) {
    let size = block_size(class);
    LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
    if blocks_per_span(class) == 1 {
        set_live(p as usize, class, false);
        let (head, _) = position(p as usize, class);
        release_units(head, span_units(class), purge::is_immediate());
        return;
    }
    if size > RETURN_ABOVE {
        // SAFETY: the block is the caller's to give back, page-aligned (its
        // size is a multiple of 256 KiB, in a span that starts a unit); it
        // reads as zero when next touched.
        unsafe { address_space::discard(p as usize, size) };
    }
    let (unit, _) = position(p as usize, class);
    let released = CLASS_LISTS[class].with(|list| {
        set_live(p as usize, class, false);
        // SAFETY: the caller's contract: a block of this class, of the
        // span at `unit`.
        let wholly_free = unsafe { list.put_block(p, unit, size) };
        if wholly_free && purge::is_immediate() {
            list.remove_span(unit);
            return true;
        }
        false
    });
    if released {
        release_units(unit, span_units(class), true);
    }
}

/// Purges what `sweep` finds due at `now`: wholly free spans of several
/// blocks and the whole free pages of the others, then kept units (after
/// the delay even while the region grows). Returns whether anything was
/// given back.
pub fn purge(now: u32, sweep: purge::Sweep) -> bool {
    let Some(base) = REGION_BASE.get() else {
        return false;
    };
    let check = purge::span_check(now, sweep);
    let mut released = false;
    for (class, list) in CLASS_LISTS.iter().enumerate() {
        if blocks_per_span(class) == 1 {
            continue;
        }
        loop {
            // A few spans at a time, so that the class's lock is not held
            // long; they are unmapped outside it.
            let mut due = [0usize; 16];
            let count = list.with(|list| list.take_idle(&check, &mut due));
            for &unit in &due[..count] {
                release_units(unit, span_units(class), true);
            }
            released |= count > 0;
            if count < due.len() {
                break;
            }
        }
        // The whole free pages of spans still in use whose lists have not
        // changed for the delay (one check while growing, all of them with
        // `everything`).
        let start_of = |unit| base + unit * UNIT;
        released |= list.with(|list| list.release_free_pages(&check, block_size(class), start_of));
    }
    // Kept units wait for the delay whatever the sweep but `malloc_trim`'s.
    let due = |unit: usize| {
        check.everything || purge::is_due(span(unit).freed_at.load(Ordering::Relaxed), now)
    };
    while let Some((from, to)) =
        POOL.with(|units| units.take_due_run(due, UNITS_USED.load(Ordering::Relaxed)))
    {
        release_units(from, to - from, true);
        released = true;
    }
    released
}

/// Hands every live block to the collector (from its push hook, with the
/// world stopped). Adjacent live blocks make one range.
pub fn push_live_blocks(ranges: &mut Ranges) {
    let Some(base) = REGION_BASE.get() else {
        return;
    };
    let used = UNITS_USED.load(Ordering::Acquire);
    for unit in 0..used {
        let Some(class) = span_class(unit_class(base, unit)) else {
            continue;
        };
        let size = block_size(class);
        let start_of_span = base + unit * UNIT;
        let words = blocks_per_span(class).div_ceil(64);
        for (w, word) in span(unit).live.iter().enumerate().take(words) {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let index = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = start_of_span + index * size;
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
        assert_eq!(class_of(1025), 0);
        assert_eq!(block_size(0), SMALLEST_BLOCK);
        assert_eq!(class_of(MAX_LARGE), CLASSES - 1);
        assert_eq!(block_size(CLASSES - 1), MAX_LARGE);
        let mut size = 1025;
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

    /// Aligned blocks: a class whose size is a multiple of the alignment
    /// for every alignment the regions serve, at most twice the size (or
    /// the alignment) asked for; every block of a span then starts aligned.
    #[test]
    fn aligned_classes_exist_for_every_alignment_up_to_the_regions() {
        let mut align = 32;
        while align <= address_space::REGION_ALIGN {
            let mut size = 1025;
            while size <= MAX_LARGE {
                let class = aligned_class(size, align).expect("a class");
                let block = block_size(class);
                assert!(block >= size && block % align == 0, "{size} at {align}");
                assert!(block <= 2 * size.max(align), "{size} at {align}: {block}");
                // Spans start at unit boundaries, aligned with the region.
                assert_eq!(UNIT % align.min(UNIT), 0);
                for index in 0..blocks_per_span(class) {
                    assert_eq!((index * block) % align, 0);
                }
                size += 1 + size / 13;
            }
            align *= 2;
        }
    }

    #[test]
    fn first_fit_takes_the_lowest_free_run_long_enough() {
        let mut units = FreeUnits::new();
        units.give_back(3, 5, true);
        units.give_back(10, 14, false);
        units.give_back(60, 70, true); // across a word boundary
        units.give_back(90, 100, true); // up to the used units' end
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
        assert_eq!((units.kept_units, units.unmapped_units), (4, 22));
        assert_eq!(units.take(10, 12, used), Some(false));
        assert_eq!(units.kept_units, 2);
        assert_eq!(units.first_fit(2, used), 3);
        assert_eq!(units.first_fit(3, used), 60);

        // Purging takes due kept units only, lowest first.
        assert_eq!(units.take_due_run(|unit| unit != 12, used), Some((13, 14)));
        assert_eq!(units.take_due_run(|unit| unit != 12, used), None);
        assert_eq!(units.take_due_run(|_| true, used), Some((12, 13)));
        assert_eq!(units.kept_units, 0);
    }
}

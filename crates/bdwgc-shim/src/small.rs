//! Small blocks (up to [`MAX_SMALL`] bytes) without libgc's lock.
//!
//! `GC_malloc_uncollectable` and `GC_free` take the collector's global lock
//! on every call, and telling a freed pointer's origin takes libgc header
//! lookups. Small blocks therefore come from a region of the shim's own:
//!
//! - one address range placed at start-up and mapped as it grows
//!   ([`crate::address_space`]), handed out 64 KiB span by span; libgc
//!   never collects it;
//! - each span holds blocks of one size class (16 to 1024 bytes, every 16;
//!   then 1280 to 8192, four per doubling), so
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
//!   with the class's spans ([`crate::central`]), in batches (or a span's
//!   whole list, spliced unread), under a spin lock taken once per batch;
//!   threads and spans belong to one of a few arenas, each with its own
//!   class lists ([`ARENAS`]);
//! - a span whose blocks are all back (none allocated, none in a thread's
//!   cache) leaves its class after the purge delay ([`crate::purge`]; after
//!   one check while the regions grow): its pages go back to the kernel and
//!   any class may take it next. A span still in use gives back the whole
//!   pages of its free blocks once its free list has not changed for the
//!   delay (as long).
//!
//! When the range cannot be placed, or cannot grow (used up, or refused by
//! `RLIMIT_AS`), small blocks come from libgc like the others.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::address_space::{self, GrowingRange, Placement, RegionBase};
use crate::central::{self, ClassList, SpanState, SpanTable};
use crate::purge;
use crate::spin::SpinLocked;
use crate::transfer::{self, Batch, Parked};

/// The largest size served from the region.
pub const MAX_SMALL: usize = 8192;
/// Up to this size there is a class every 16 bytes, and malloc's fast path.
pub const MAX_FINE: usize = 1024;
const GRANULE: usize = 16;
const FINE_CLASSES: usize = MAX_FINE / GRANULE;
/// Above [`MAX_FINE`], the quarter classes ([`central::quarter_class_of`],
/// as the large region's): 1280, 1536, 1792, 2048, 2560, ... 8192. A 64 KiB
/// span of them wastes at most 4 KiB (5120 and 6144).
const COARSE_CLASSES: usize = 12;
const CLASSES: usize = FINE_CLASSES + COARSE_CLASSES;
const SPAN_SHIFT: u32 = 16;
const SPAN_SIZE: usize = 1 << SPAN_SHIFT;
/// The region's address space: 4 GiB of small blocks at most.
const REGION_SIZE: usize = 4 << 30;
const MAX_SPANS: usize = REGION_SIZE / SPAN_SIZE;
/// Blocks a thread keeps per class, to start with, before it hands half of
/// them back: 64 small ones, fewer large ones (about 16 KiB a class, at
/// least 16 blocks; above 1 KiB about 32 KiB, at least 8). Fewer means more
/// trips to the shared central lists, whose lock two threads then pass back
/// and forth. A class whose cache runs dry again and again grows its limit
/// ([`Growth`]).
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
        let (bytes, least) = if class < FINE_CLASSES {
            (16384, 16)
        } else {
            (32768, 8)
        };
        let blocks = bytes / block_size(class);
        limits[class] = if blocks < least {
            least as u16
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

/// What a refill takes at most while the class's limit has not grown.
const FIRST_REFILL_BYTES: usize = 4096;

/// Blocks a refill takes while the class's limit has not grown (a class
/// the thread has hardly used yet): a batch, but no more than fit in
/// [`FIRST_REFILL_BYTES`]. A thread that needs a few blocks of many
/// classes would otherwise fault in a batch of each: glibc's
/// bench-malloc-thread (2 threads, 4 bytes to 32 KiB) held 8-32 KiB per
/// class and thread for 1-4 blocks in use, 1.4 of its 2 MiB above glibc's
/// peak. A refill grows the limit (while the thread and the process have
/// room, [`Growth`]), so a class in use takes whole batches from its second
/// refill on.
fn first_batch(class: usize) -> u16 {
    let fit = (FIRST_REFILL_BYTES / block_size(class)).max(1);
    batch(class).min(fit as u16)
}

/// How far a thread's limit for one class may grow: to this many bytes of
/// blocks, and at most [`MAX_GROWN_LIMIT`] blocks.
const MAX_CLASS_CACHE: usize = 1 << 20;
const MAX_GROWN_LIMIT: usize = 16384;
/// How many bytes a thread's limits together, and all threads' limits
/// together, may grow above their starting values. The blocks a thread
/// caches are free but neither the purge nor other threads can reach them,
/// so the process-wide bound keeps many threads from holding much.
const MAX_THREAD_GROWTH: u32 = 4 << 20;
const MAX_PROCESS_GROWTH: usize = 32 << 20;
/// Overflows of a grown class, one after another, that take a batch off
/// its limit again (at most 3: they count in two bits).
const OVERFLOWS_TO_SHRINK: u16 = 3;

/// Bytes by which all threads' limits have grown, together.
static PROCESS_GROWTH: AtomicUsize = AtomicUsize::new(0);

/// How far a thread cache's limit for one class has grown above
/// [`thread_limit`], in batches (the high fourteen bits), and the overflows
/// since it last grew or shrank (the low two).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct Growth(u16);

impl Growth {
    fn batches(self) -> u16 {
        self.0 >> 2
    }

    /// The limit of `class` with this growth.
    fn limit(self, class: usize) -> u16 {
        thread_limit(class) + self.batches() * batch(class)
    }

    /// The bytes of a batch of `class`: what a limit grows or shrinks by.
    fn batch_bytes(class: usize) -> u32 {
        u32::from(batch(class)) * block_size(class) as u32
    }

    /// After the cache of `class` ran dry, in a thread whose limits have
    /// grown by `grown_bytes`: a batch more, when the class and the thread
    /// may grow. Returns the growth and the thread's grown bytes. (The
    /// process-wide bound is the caller's.)
    fn grow(self, class: usize, grown_bytes: u32) -> (Growth, u32) {
        let limit = usize::from(self.limit(class)) + usize::from(batch(class));
        let more = Growth::batch_bytes(class);
        if limit > MAX_GROWN_LIMIT
            || limit * block_size(class) > MAX_CLASS_CACHE
            || grown_bytes + more > MAX_THREAD_GROWTH
        {
            return (self, grown_bytes);
        }
        (Growth((self.batches() + 1) << 2), grown_bytes + more)
    }

    /// After the cache of `class` overflowed: a batch less on the
    /// [`OVERFLOWS_TO_SHRINK`]th overflow of a grown limit. Returns the
    /// growth and the thread's grown bytes (`grown_bytes` before).
    fn overflow(self, class: usize, grown_bytes: u32) -> (Growth, u32) {
        if self.batches() == 0 {
            return (self, grown_bytes);
        }
        if (self.0 & 3) + 1 < OVERFLOWS_TO_SHRINK {
            return (Growth(self.0 + 1), grown_bytes);
        }
        (
            Growth((self.batches() - 1) << 2),
            grown_bytes - Growth::batch_bytes(class),
        )
    }
}

/// The region's start (unplaced until its map and tables are ready); before
/// it, a byte per span: the span's class plus one (0: not in use), read through
/// [`span_class_entry`].
static REGION_BASE: RegionBase = RegionBase::unplaced();
/// The region's address space, mapped 2 MiB at a time as spans are handed
/// out.
static REGION: GrowingRange = GrowingRange::new(REGION_SIZE, 2 << 20);
/// Spans handed out so far (all mapped).
static SPANS_USED: AtomicUsize = AtomicUsize::new(0);
/// The live-byte map: one byte per granule of the region, 1 at the first
/// granule of each allocated block; mapped as the region grows (4 KiB per
/// span) rather than static, since libgc scans a library's static data.
/// Stored biased, as the address of the byte for address 0, so that a
/// block's byte is one add away: `LIVE_BIASED + p / 16`.
static LIVE_BIASED: AtomicUsize = AtomicUsize::new(0);
const LIVE_MAP_SIZE: usize = REGION_SIZE / GRANULE;
static LIVE_MAP: GrowingRange = GrowingRange::new(LIVE_MAP_SIZE, (2 << 20) / GRANULE);

/// Each span's part of its class's lists, indexed by span; mapped as the
/// region grows.
static SPAN_STATES: AtomicPtr<SpanState> = AtomicPtr::new(ptr::null_mut());
const SPAN_STATES_SIZE: usize = MAX_SPANS * core::mem::size_of::<SpanState>();
static SPAN_STATES_RANGE: GrowingRange = GrowingRange::new(SPAN_STATES_SIZE, 64 << 10);

/// The address space the region and its tables take from a [`Placement`].
pub const ADDRESS_SPACE: usize =
    MAX_SPANS + REGION_SIZE + LIVE_MAP_SIZE + SPAN_STATES_SIZE + 3 * address_space::REGION_ALIGN;

/// The class of a request of `size` bytes (0..=MAX_SMALL); its blocks are
/// [`block_size`] bytes.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    if size <= MAX_FINE {
        return size.saturating_sub(1) / GRANULE;
    }
    FINE_CLASSES + central::quarter_class_of(size)
}

/// The smallest class whose blocks hold `size` bytes and all start at a
/// multiple of `align` (a power of two): spans start at multiples of
/// 64 KiB, so a class whose size is a multiple of `align` will do. `None`
/// when no class of the region does.
pub fn aligned_class(size: usize, align: usize) -> Option<usize> {
    let rounded = size.max(1).checked_next_multiple_of(align)?;
    if rounded <= MAX_FINE {
        // A fine class's size is its request rounded to 16: `rounded`.
        return Some(class_of(rounded));
    }
    if size > MAX_SMALL {
        return None;
    }
    // `align` is a power of two: a mask, not a division.
    (class_of(size.max(MAX_FINE + 1))..CLASSES).find(|&class| block_size(class) & (align - 1) == 0)
}

/// Places the region and its live map; called once during initialization,
/// after the collector's hook is installed ([`crate::scan`]).
pub fn place_region(placement: &mut Placement) {
    let Some(base) = placement.take_with_table(MAX_SPANS, REGION_SIZE, address_space::REGION_ALIGN)
    else {
        return;
    };
    // Without its tables the region stays unpublished.
    let Some(map) = placement.take(LIVE_MAP_SIZE, address_space::REGION_ALIGN) else {
        return;
    };
    let Some(states) = placement.take(SPAN_STATES_SIZE, address_space::REGION_ALIGN) else {
        return;
    };
    REGION.place(base);
    LIVE_MAP.place(map);
    SPAN_STATES_RANGE.place(states);
    SPAN_STATES.store(states as *mut SpanState, Ordering::Release);
    LIVE_BIASED.store(map.wrapping_sub(base / GRANULE), Ordering::Release);
    REGION_BASE.publish(base);
}

/// Bytes of address space the region and its tables have mapped.
pub fn mapped_bytes() -> usize {
    REGION.mapped() + LIVE_MAP.mapped() + SPAN_STATES_RANGE.mapped()
}

/// The address ranges the region and its tables have mapped (for
/// [`crate::memory::resident_bytes`]).
pub fn mapped_ranges() -> [(usize, usize); 3] {
    [&REGION, &LIVE_MAP, &SPAN_STATES_RANGE]
        .map(|range| (range.start(), range.start() + range.mapped()))
}

/// The state of span `index`, in the span table.
fn span_state(index: usize) -> &'static SpanState {
    debug_assert!(index < MAX_SPANS);
    // SAFETY: SPAN_STATES is set before the region is published, and the
    // entry of every span handed out is mapped (zero-initialized) before the
    // span is, for the life of the process; its fields are atomics.
    unsafe { &*SPAN_STATES.load(Ordering::Relaxed).add(index % MAX_SPANS) }
}

/// The index of the span that holds the region block `p`.
fn span_index(p: *mut c_void) -> usize {
    (p as usize - REGION_BASE.placed()) >> SPAN_SHIFT
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

/// Bytes in the spans that belong to a class (allocated blocks and free
/// ones).
pub fn used_bytes() -> usize {
    SPANS_USED
        .load(Ordering::Relaxed)
        .saturating_sub(SPANS_FREE.load(Ordering::Relaxed))
        * SPAN_SIZE
}

/// Bytes of the classes' spans that are free and not in a thread's cache.
pub fn free_bytes() -> usize {
    if REGION_BASE.get().is_none() {
        return 0;
    }
    let mut free = 0;
    for_each_list_in_use(|class, list, parked| {
        free += parked.with(|parked| parked.blocks()) * block_size(class);
        free += list.with(|list| list.free_bytes(block_size(class)));
    });
    free
}

/// Bytes of the spans that were purged and wait for a class.
pub fn purged_bytes() -> usize {
    SPANS_FREE.load(Ordering::Relaxed) * SPAN_SIZE
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
    let base = REGION_BASE.get()?;
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
    let (base, offset) = REGION_BASE.offset_of(REGION_SIZE, p)?;
    span_class(span_class_entry(base, offset >> SPAN_SHIFT))
}

/// The class entry of `span` in the region at `base`.
#[inline(always)]
fn span_class_entry(base: usize, span: usize) -> &'static AtomicU8 {
    debug_assert!(span < MAX_SPANS);
    // SAFETY: `base` is the published region, placed with a table of
    // MAX_SPANS bytes; the span index comes from an offset in the region.
    unsafe { address_space::table_byte(base, MAX_SPANS, span % MAX_SPANS) }
}

/// The class of a span from its class entry; `None` when unused.
#[inline(always)]
fn span_class(entry: &AtomicU8) -> Option<usize> {
    // 0 (unused) wraps around; the table holds classes below CLASSES only,
    // and the test shows the compiler that per-class arrays are indexed
    // within bounds.
    let class = usize::from(entry.load(Ordering::Acquire)).wrapping_sub(1);
    (class < CLASSES).then_some(class)
}

/// The usable size of blocks of `class`.
#[inline(always)]
pub const fn block_size(class: usize) -> usize {
    if class < FINE_CLASSES {
        return (class + 1) * GRANULE;
    }
    central::quarter_class_size(class - FINE_CLASSES)
}

/// Zeroes the block of `class` at `p` (for calloc): up to [`MAX_FINE`]
/// bytes with a loop of 16-byte stores, in assembly (the compiler would
/// turn a Rust loop into a call to memset, which costs more than the stores
/// for blocks this small and makes the caller save registers); larger ones
/// with glibc's memset, whose wide stores clear a few KiB several times
/// faster than the loop.
///
/// # Safety
/// `p` must be a 16-aligned block of `block_size(class)` bytes the caller
/// may write.
#[inline(always)]
pub unsafe fn clear_block(p: *mut c_void, class: usize) {
    if class >= FINE_CLASSES {
        // SAFETY: the caller's contract: the whole block is writable.
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, block_size(class)) };
        return;
    }
    let end = p as usize + block_size(class);
    // SAFETY: stores zero to each 16-byte granule of [p, end), which the
    // caller owns; a block has at least one granule.
    #[cfg(target_arch = "x86_64")]
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
    // SAFETY: as above, a pair of zero registers stored per granule.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!(
            "2:",
            "stp xzr, xzr, [{p}], #16",
            "cmp {p}, {end}",
            "b.lo 2b",
            p = inout(reg) p => _,
            end = in(reg) end,
            options(nostack),
        );
    }
}

/// The region's span table, for the class lists.
struct SmallSpans;

impl SpanTable for SmallSpans {
    #[inline(always)]
    fn span(index: usize) -> &'static SpanState {
        span_state(index)
    }
}

/// Sets of class lists: each thread takes its blocks from one
/// ([`ThreadCache::arena`]), and a span belongs to one, so that threads of
/// different arenas do not get neighbouring blocks of one span. Blocks
/// written by two threads on one cache line cost both of them (two threads
/// replacing blocks of their own ran at a third of their speed when their
/// caches traded through shared spans).
const ARENAS: usize = 4;

static CLASS_LISTS: [[SpinLocked<ClassList<SmallSpans>>; CLASSES]; ARENAS] =
    [const { [const { SpinLocked::new(ClassList::new()) }; CLASSES] }; ARENAS];
/// Full batches of free blocks between thread caches ([`crate::transfer`]),
/// by the arena of their first block.
static PARKED: [[SpinLocked<Parked>; CLASSES]; ARENAS] =
    [const { [const { SpinLocked::new(Parked::new()) }; CLASSES] }; ARENAS];
/// The arena of the next thread whose cache gets ready.
static NEXT_ARENA: AtomicUsize = AtomicUsize::new(0);

/// Which classes of which arena have been given a span, a bit each (two
/// words an arena). The purge and the reports visit only those lists: each
/// sweep took all 304 lists' and parked slots' locks (callgrind,
/// compiler-like workload: the purge's instructions 51 M -> 10 M), and so
/// kept the 61 KiB of them resident in every process, used or not. A list
/// gets its bit before its first span (under the pool's lock); a sweep that
/// reads the bit a moment too early visits the list at the next one.
static LISTS_IN_USE: [AtomicU64; ARENAS * 2] = [const { AtomicU64::new(0) }; ARENAS * 2];
const _: () = assert!(CLASSES <= 128);

/// Notes that `class` of `arena` has been given a span: from then on its
/// lists may hold free blocks.
fn note_list_in_use(class: usize, arena: usize) {
    let word = &LISTS_IN_USE[arena * 2 + class / 64];
    let bit = 1 << (class % 64);
    if word.load(Ordering::Relaxed) & bit == 0 {
        word.fetch_or(bit, Ordering::Relaxed);
    }
}

/// Calls `visit` with the class, class list and parked batches of every
/// class of every arena that has been given a span.
fn for_each_list_in_use(
    mut visit: impl FnMut(usize, &SpinLocked<ClassList<SmallSpans>>, &SpinLocked<Parked>),
) {
    for arena in 0..ARENAS {
        for half in 0..2 {
            let mut bits = LISTS_IN_USE[arena * 2 + half].load(Ordering::Relaxed);
            while bits != 0 {
                let class = half * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                visit(class, &CLASS_LISTS[arena][class], &PARKED[arena][class]);
            }
        }
    }
}

/// The arena of the region block at `p`.
fn arena_of(p: *mut c_void) -> usize {
    span_state(span_index(p)).arena.load(Ordering::Relaxed) as usize % ARENAS
}

/// The purged spans, and the lock for handing spans out.
static POOL: SpinLocked<FreeSpans> = SpinLocked::new(FreeSpans {
    free: [0; MAX_SPANS / 64],
});
/// Spans in [`POOL`].
static SPANS_FREE: AtomicUsize = AtomicUsize::new(0);

/// One bit per purged span below `SPANS_USED`, which any class may take.
struct FreeSpans {
    free: [u64; MAX_SPANS / 64],
}

impl FreeSpans {
    fn take_lowest(&mut self, used: usize) -> Option<usize> {
        let words = used.div_ceil(64);
        let (w, bits) = self.free[..words]
            .iter()
            .enumerate()
            .find(|(_, bits)| **bits != 0)?;
        let index = w * 64 + bits.trailing_zeros() as usize;
        self.free[w] &= !(1 << (index % 64));
        Some(index)
    }

    fn give_back(&mut self, index: usize) {
        self.free[index / 64] |= 1 << (index % 64);
    }

    fn is_free(&self, index: usize) -> bool {
        self.free[index / 64] & (1 << (index % 64)) != 0
    }
}

pub fn lock_all_for_fork() {
    POOL.lock();
    for list in CLASS_LISTS.iter().flatten() {
        list.lock();
    }
    for parked in PARKED.iter().flatten() {
        parked.lock();
    }
}

pub fn unlock_all_after_fork() {
    for parked in PARKED.iter().flatten() {
        parked.unlock();
    }
    for list in CLASS_LISTS.iter().flatten() {
        list.unlock();
    }
    POOL.unlock();
}

/// Hands out a span for `class` in `arena`: the lowest purged one, or a
/// new one, mapping the region's address space (and its tables') as far as
/// needed; returns its index.
fn new_span(class: usize, arena: usize) -> Option<usize> {
    let base = REGION_BASE.get()?;
    POOL.with(|pool| {
        let used = SPANS_USED.load(Ordering::Relaxed);
        let (index, fresh) = match pool.take_lowest(used) {
            Some(index) => {
                SPANS_FREE.fetch_sub(1, Ordering::Relaxed);
                (index, false)
            }
            None => {
                let spans = used + 1;
                if used >= MAX_SPANS
                    || !REGION.ensure_mapped(spans * SPAN_SIZE)
                    || !LIVE_MAP.ensure_mapped(spans * GRANULES_PER_SPAN)
                    || !SPAN_STATES_RANGE.ensure_mapped(spans * core::mem::size_of::<SpanState>())
                {
                    return None;
                }
                SPANS_USED.store(spans, Ordering::Release);
                (used, true)
            }
        };
        // Purged or new, its pages are faulted in afresh: growth, unless the
        // class takes back a span it gave up. That is the class's own
        // demand coming and going, and sweeping on it would purge the
        // class's next free spans, to be faulted in again in turn
        // (xmalloc-test, blocks freed by other threads: 250,000-330,000
        // page faults in 5 s, 40,000-60,000 without; glibc 16,000).
        let state = span_state(index);
        let entry = class as u32 + 1;
        if fresh || state.last_class.load(Ordering::Relaxed) != entry {
            purge::note_growth();
        }
        state.last_class.store(entry, Ordering::Relaxed);
        state.arena.store(arena as u32, Ordering::Relaxed);
        note_list_in_use(class, arena);
        span_class_entry(base, index).store(class as u8 + 1, Ordering::Release);
        Some(index)
    })
}

/// Gives the span `index`, taken out of its class wholly free, back to the
/// kernel and to the pool.
fn release_span(index: usize) {
    let base = REGION_BASE.placed();
    // SAFETY: the span holds no allocated block and belongs to no class any
    // more; nothing reads it until it is handed out again.
    unsafe { address_space::discard(base + index * SPAN_SIZE, SPAN_SIZE) };
    let spans_per_page = (address_space::page_size() / GRANULES_PER_SPAN).max(1);
    POOL.with(|pool| {
        span_class_entry(base, index).store(0, Ordering::Release);
        pool.give_back(index);
        // A span's live bytes (4 KiB) share a page with those of its
        // neighbours when pages are larger (16 or 64 KiB on some aarch64
        // kernels): the page goes back once none of them is in use. Under
        // the pool's lock, which every span hand-out takes.
        let used = SPANS_USED.load(Ordering::Relaxed);
        let is_free = |span: usize| span >= used || pool.is_free(span);
        if let Some(first) = idle_live_map_page(index, spans_per_page, is_free) {
            let live_map = LIVE_BIASED
                .load(Ordering::Relaxed)
                .wrapping_add((base + first * SPAN_SIZE) / GRANULE);
            // SAFETY: the live bytes of free spans only, all zero (their
            // blocks are all free), whole pages: the map is page-aligned
            // with the region, and a group starts at a multiple of the
            // spans a page covers. They read as zero when next touched.
            unsafe { address_space::discard(live_map, spans_per_page * GRANULES_PER_SPAN) };
        }
    });
    SPANS_FREE.fetch_add(1, Ordering::Relaxed);
}

/// The first span of the group whose live bytes share a page with span
/// `index`'s (`spans_per_page` spans), when every span of the group is
/// free.
fn idle_live_map_page(
    index: usize,
    spans_per_page: usize,
    is_free: impl Fn(usize) -> bool,
) -> Option<usize> {
    let first = index - index % spans_per_page;
    (first..first + spans_per_page)
        .all(is_free)
        .then_some(first)
}

/// Purges what `sweep` finds due at `now`: the classes' wholly free spans,
/// and the whole free pages of the others. Returns whether anything was
/// given back.
pub fn purge(now: u32, sweep: purge::Sweep) -> bool {
    let Some(base) = REGION_BASE.get() else {
        return false;
    };
    let check = purge::span_check(now, sweep);
    let mut released = false;
    for_each_list_in_use(|class, list, parked| {
        // Batches parked through a whole sweep (or all, with `everything`)
        // go back onto their spans first, which may free them wholly.
        let mut idle = transfer::no_batches();
        let count = parked.with(|parked| parked.take_idle(check.everything, &mut idle));
        for batch in &idle[..count] {
            // SAFETY: a parked batch: free blocks of `class`, linked and
            // null-terminated, given up by the parking thread.
            unsafe { put_blocks(batch.head, class) };
        }
        loop {
            // A few spans at a time, so that the class's lock is not held
            // long; their pages are given back outside it.
            let mut due = [0usize; 16];
            let count = list.with(|list| list.take_idle(&check, &mut due));
            for &index in &due[..count] {
                release_span(index);
            }
            released |= count > 0;
            if count < due.len() {
                break;
            }
        }
        // The whole free pages of spans still in use whose lists have not
        // changed for the delay (one check while growing, all of them with
        // `everything`).
        let start_of = |index| base + index * SPAN_SIZE;
        released |= list.with(|list| list.release_free_pages(&check, block_size(class), start_of));
    });
    released
}

/// One thread's free blocks per class, linked through each block's first
/// word.
///
/// `room` counts down to the moment a batch goes back (the class's limit
/// less the blocks cached), so that `free` tests one counter against zero
/// rather than a count against a per-class limit. The zeroed state of a new
/// thread has no room anywhere: its first free (or refill) takes the slow
/// path, which sets the limits (`ready`).
///
/// A class's limit starts at [`thread_limit`] and grows by a batch each
/// time the cache runs dry (tcmalloc's slow start), up to
/// [`MAX_CLASS_CACHE`] bytes, [`MAX_THREAD_GROWTH`] for the thread and
/// [`MAX_PROCESS_GROWTH`] for all threads ([`Growth`]), so that
/// a thread that allocates a few thousand blocks, frees them and allocates
/// them again keeps them all in its cache instead of passing each through
/// the spans' lists. It shrinks by a batch after [`OVERFLOWS_TO_SHRINK`]
/// overflows in a row.
#[repr(C)]
pub struct ThreadCache {
    heads: [Cell<*mut c_void>; CLASSES],
    room: [Cell<u16>; CLASSES],
    growth: [Cell<Growth>; CLASSES],
    /// Bytes the limits have grown by, together.
    grown_bytes: Cell<u32>,
    ready: Cell<bool>,
    /// The set of class lists this thread trades with, given in turn when
    /// it gets ready.
    arena: Cell<u8>,
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
        self.room[class].set(self.room[class].get() + 1);
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
        // Room 1 (the cache is now full) or 0 (not ready): the slow path.
        let room = self.room[class].get().wrapping_sub(1);
        self.room[class].set(room);
        if room as i16 <= 0 {
            self.full_or_new(class);
        }
    }

    /// After a free that filled `class`'s cache, or the first free of a
    /// new thread: a batch goes back (two when the limit shrinks), or the
    /// limits are set.
    #[cold]
    #[inline(never)]
    fn full_or_new(&self, class: usize) {
        if !self.ready.get() {
            self.make_ready();
            // The block just freed is the only one cached.
            self.room[class].set(thread_limit(class) - 1);
            return;
        }
        let n = batch(class);
        let growth = self.growth[class].get();
        let (after, grown_bytes) = growth.overflow(class, self.grown_bytes.get());
        self.growth[class].set(after);
        self.grown_bytes.set(grown_bytes);
        self.give_back(class, n);
        if after.batches() < growth.batches() {
            PROCESS_GROWTH.fetch_sub(Growth::batch_bytes(class) as usize, Ordering::Relaxed);
            // A batch more for the room the limit lost: the cache held the
            // old limit's blocks, may hold a batch fewer, and keeps room
            // for a batch.
            self.give_back(class, n);
            self.room[class].set(self.room[class].get() - n);
        }
    }

    /// Sets every class's limit and room to its start: the cache holds
    /// nothing yet.
    fn make_ready(&self) {
        self.restart_limits();
        let arena = NEXT_ARENA.fetch_add(1, Ordering::Relaxed) % ARENAS;
        self.arena.set(arena as u8);
        self.ready.set(true);
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
            last.cast::<*mut c_void>().write(ptr::null_mut());
        }
        self.room[class].set(self.room[class].get() + moved);
        // A full batch is parked for the next thread that runs out; the
        // rest (a flush, or no slot free) goes back onto the spans.
        let given = Batch {
            head: first,
            count: moved,
        };
        let unparked = if moved == batch(class) {
            PARKED[arena_of(first)][class]
                .with(|parked| parked.park(given))
                .err()
        } else {
            Some(given)
        };
        if let Some(unparked) = unparked {
            // SAFETY: `unparked` heads a list of blocks of `class` that this
            // cache gives up.
            unsafe { put_blocks(unparked.head, class) };
        }
    }

    /// Fills the cache from the class's spans (a new one when they have no
    /// free block); returns one block, or null when the region is
    /// exhausted.
    #[cold]
    #[inline(never)]
    fn refill(&self, class: usize) -> *mut c_void {
        if !self.ready.get() {
            self.make_ready();
        }
        let size = block_size(class);
        let growth = self.growth[class].get();
        let n = if growth.batches() == 0 {
            first_batch(class)
        } else {
            batch(class)
        };
        let arena = usize::from(self.arena.get()) % ARENAS;
        let lists = &CLASS_LISTS[arena][class];
        // The cache is empty: a span's whole list may fill it up to its
        // limit (which only grows below).
        let whole_max = growth.limit(class);
        let mut taken = match PARKED[arena][class].with(Parked::take) {
            Some(parked) => (parked.head, parked.count),
            None => lists.with(|list| list.take_blocks(size, n, whole_max)),
        };
        if taken.0.is_null() {
            let Some(index) = new_span(class, arena) else {
                return ptr::null_mut();
            };
            let start = REGION_BASE.placed() + index * SPAN_SIZE;
            taken = lists.with(|list| {
                list.start_carving(index, start, start + SPAN_SIZE / size * size, true);
                list.take_blocks(size, n, n)
            });
        }
        let (first, count) = taken;
        if first.is_null() {
            return first;
        }
        // SAFETY: `first` heads a list of `count` free blocks now ours.
        let rest = unsafe { first.cast::<*mut c_void>().read() };
        self.heads[class].set(rest);
        // The cache was empty: room for the rest of the limit.
        let limit = self.grow_limit(class);
        self.room[class].set(limit - (count - 1));
        set_live(first, true);
        first
    }

    /// Raises `class`'s limit by a batch, if the class, the thread and the
    /// process have room to grow; returns the limit.
    fn grow_limit(&self, class: usize) -> u16 {
        let growth = self.growth[class].get();
        let (grown, grown_bytes) = growth.grow(class, self.grown_bytes.get());
        if grown != growth {
            let more = Growth::batch_bytes(class) as usize;
            if PROCESS_GROWTH.fetch_add(more, Ordering::Relaxed) + more > MAX_PROCESS_GROWTH {
                PROCESS_GROWTH.fetch_sub(more, Ordering::Relaxed);
                return growth.limit(class);
            }
            self.growth[class].set(grown);
            self.grown_bytes.set(grown_bytes);
        }
        grown.limit(class)
    }

    /// Gives every cached block to the central lists (at thread exit, and
    /// for `malloc_trim`), and the limits their starting values.
    pub fn flush(&self) {
        for class in 0..CLASSES {
            // The whole list: give_back stops at its end.
            self.give_back(class, u16::MAX);
        }
        // (A cache that is not ready keeps its zero room: its next free or
        // refill still takes the slow path that readies it.)
        if self.ready.get() {
            self.restart_limits();
        }
    }

    /// Every class's limit back at [`thread_limit`], its growth given back
    /// to the process, and its room the whole limit: for an empty cache.
    fn restart_limits(&self) {
        for class in 0..CLASSES {
            self.growth[class].set(Growth::default());
            self.room[class].set(thread_limit(class));
        }
        PROCESS_GROWTH.fetch_sub(self.grown_bytes.replace(0) as usize, Ordering::Relaxed);
    }

    /// In a child after fork, where this thread is the only one: the
    /// process's growth is this thread's.
    pub fn alone_after_fork(&self) {
        PROCESS_GROWTH.store(self.grown_bytes.get() as usize, Ordering::Relaxed);
    }
}

/// Gives one block back to its span (threads without a usable cache:
/// exiting, or inside libgc).
///
/// # Safety
/// `p` must be a live region block of `class` that the caller frees.
pub unsafe fn free_to_central(p: *mut c_void, class: usize) {
    set_live(p, false);
    // SAFETY: the block is the caller's to give back; its link ends a list
    // of one.
    unsafe {
        p.cast::<*mut c_void>().write(ptr::null_mut());
        put_blocks(p, class);
    }
}

/// Puts a null-terminated list of free blocks of `class` back on their
/// spans, under the class's lock: each run of blocks of one span at once.
///
/// # Safety
/// The blocks must be free blocks of `class`, linked through their first
/// word, that the caller gives up.
unsafe fn put_blocks(first: *mut c_void, class: usize) {
    let size = block_size(class);
    let mut run = first;
    while !run.is_null() {
        // The runs of one arena (most often all of them) under one lock.
        let arena = arena_of(run);
        run = CLASS_LISTS[arena][class].with(|list| {
            while !run.is_null() && arena_of(run) == arena {
                let index = span_index(run);
                let mut last = run;
                let mut count = 1;
                // SAFETY: the caller's contract: walking its list; each
                // link is read before the run joins its span's list.
                let next = unsafe {
                    loop {
                        let next = last.cast::<*mut c_void>().read();
                        if next.is_null() || span_index(next) != index {
                            break next;
                        }
                        last = next;
                        count += 1;
                    }
                };
                // SAFETY: `run` to `last`, `count` blocks of span `index`.
                unsafe { list.put_blocks(run, last, count, index, size) };
                run = next;
            }
            run
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to MAX_SMALL has the smallest class that holds it; a
    /// span holds whole blocks of each, wasting at most a sixteenth.
    #[test]
    fn classes_cover_every_size() {
        assert_eq!(block_size(CLASSES - 1), MAX_SMALL);
        assert_eq!(block_size(FINE_CLASSES), 1280);
        for size in 1..=MAX_SMALL {
            let class = class_of(size);
            assert!(class < CLASSES && block_size(class) >= size, "{size}");
            assert!(class == 0 || block_size(class - 1) < size, "{size}");
            assert_eq!(block_size(class) % GRANULE, 0);
        }
        for class in 0..CLASSES {
            assert!(SPAN_SIZE % block_size(class) <= SPAN_SIZE / 16, "{class}");
            assert!(thread_limit(class) >= 8 && thread_limit(class) <= 64);
        }
    }

    /// A class's limit grows by a batch each time the cache runs dry, up to
    /// its bound, and shrinks by one on every third overflow in a row.
    #[test]
    fn thread_cache_limits_grow_when_dry_and_shrink_when_overflowing() {
        for class in [0, class_of(64), class_of(1024), class_of(MAX_SMALL)] {
            let (mut growth, mut bytes) = (Growth::default(), 0);
            assert_eq!(growth.limit(class), thread_limit(class));
            loop {
                let (next, next_bytes) = growth.grow(class, bytes);
                if next == growth {
                    break;
                }
                assert_eq!(next.limit(class), growth.limit(class) + batch(class));
                assert_eq!(
                    next_bytes - bytes,
                    u32::from(batch(class)) * block_size(class) as u32
                );
                (growth, bytes) = (next, next_bytes);
            }
            let limit = usize::from(growth.limit(class)) + usize::from(batch(class));
            assert!(growth.batches() > 0, "{class}");
            assert!(
                limit > MAX_GROWN_LIMIT || limit * block_size(class) > MAX_CLASS_CACHE,
                "{class}"
            );
            assert!(bytes <= MAX_THREAD_GROWTH);

            // Two overflows keep the limit; the third takes a batch off.
            let grown = growth;
            for _ in 1..OVERFLOWS_TO_SHRINK {
                (growth, bytes) = growth.overflow(class, bytes);
                assert_eq!(growth.batches(), grown.batches());
            }
            (growth, bytes) = growth.overflow(class, bytes);
            assert_eq!(growth.batches(), grown.batches() - 1);
            assert_eq!(
                growth.overflow(class, bytes).0.batches(),
                grown.batches() - 1
            );
            // Growing again counts overflows afresh.
            let (regrown, _) = growth.overflow(class, bytes).0.grow(class, 0);
            assert_eq!(regrown.0 & 3, 0);
        }
        // An ungrown limit never shrinks; a thread's total bounds them all.
        assert_eq!(Growth::default().overflow(0, 0), (Growth::default(), 0));
        let (full, _) = Growth::default().grow(class_of(64), MAX_THREAD_GROWTH);
        assert_eq!(full, Growth::default());
    }

    #[test]
    fn a_class_not_grown_yet_refills_at_most_a_page() {
        for class in 0..CLASSES {
            let (first, size) = (first_batch(class), block_size(class));
            assert!(first >= 1 && first <= batch(class), "class {class}");
            assert!(usize::from(first) * size <= FIRST_REFILL_BYTES || first == 1);
            if size <= 128 {
                // The smallest blocks lose nothing: a batch fits in a page.
                assert_eq!(first, batch(class));
            }
        }
        // One refill grows the limit, and the next takes a whole batch.
        let class = class_of(512);
        let (grown, _) = Growth::default().grow(class, 0);
        assert!(grown.batches() > 0 && first_batch(class) < batch(class));
    }

    #[test]
    fn aligned_classes_start_every_block_aligned() {
        let mut align = 32;
        while align <= SPAN_SIZE {
            for size in (1..=MAX_SMALL).step_by(7) {
                match aligned_class(size, align) {
                    Some(class) => {
                        let block = block_size(class);
                        assert!(block >= size && block % align == 0, "{size} at {align}");
                        assert!(block <= 2 * size.max(align), "{size} at {align}: {block}");
                    }
                    // Only for alignments no class size is a multiple of.
                    None => assert!(
                        size.next_multiple_of(align) > MAX_SMALL,
                        "{size} at {align}"
                    ),
                }
            }
            align *= 2;
        }
    }

    /// `alloc::aligned`'s fast path takes the class of the request rounded
    /// to the alignment: the class the search finds.
    #[test]
    fn a_request_rounded_to_its_alignment_has_the_aligned_class() {
        let mut align = 32;
        while align <= MAX_SMALL {
            for size in 1..=MAX_SMALL {
                let rounded = size.next_multiple_of(align);
                if rounded <= MAX_SMALL {
                    assert_eq!(
                        aligned_class(size, align),
                        Some(class_of(rounded)),
                        "{size} at {align}"
                    );
                }
            }
            align *= 2;
        }
    }

    /// With 4 KiB pages a span's live bytes fill a page of their own; with
    /// 16 and 64 KiB pages (aarch64) four and sixteen spans share one.
    #[test]
    fn a_live_map_page_goes_back_when_every_span_on_it_is_free() {
        for page in [4usize << 10, 16 << 10, 64 << 10] {
            let per_page = (page / GRANULES_PER_SPAN).max(1);
            for index in [0, 1, 5, 17, 100] {
                let first = index - index % per_page;
                assert_eq!(idle_live_map_page(index, per_page, |_| true), Some(first));
                // One neighbour (or the span itself, with 4 KiB pages) in use.
                let busy = if per_page == 1 {
                    index
                } else {
                    first + (index + 1 - first) % per_page
                };
                assert_eq!(
                    idle_live_map_page(index, per_page, |s| s != busy),
                    None,
                    "page {page} index {index}"
                );
                // Spans of other groups do not matter.
                assert_eq!(
                    idle_live_map_page(index, per_page, |s| s >= first && s < first + per_page),
                    Some(first)
                );
            }
        }
    }
}

//! Address space for the shim's regions: placed at start-up, mapped piece by
//! piece as the regions grow.
//!
//! A region is one fixed range, so that `free` tells its blocks with a
//! subtraction, a compare and one table load, without libgc. Reserving the
//! ranges up front (68 GiB) would keep that, but the kernel counts a
//! reservation toward `RLIMIT_AS` like memory: a program that limits its
//! address space later could then map nothing more. A segment map, as
//! mimalloc keeps, costs `free` two dependent loads more (a directory and a
//! leaf) and every class lookup the same. So the ranges are only *placed*:
//!
//! - at start-up, [`Placement::find`] reads `/proc/self/maps` and picks a
//!   free range in the middle of the widest gap between the process's
//!   mappings (on x86_64 and aarch64, the tens of TiB between the brk heap,
//!   which grows up, and the kernel's mmap area, which it fills from the top
//!   down; under qemu-user, below the guest's mappings), so that neither
//!   reaches it for a long time;
//! - a region maps its range from the start up as it grows
//!   ([`GrowingRange`]), a chunk at a time, with `MAP_FIXED_NOREPLACE`: the
//!   kernel checks each piece against `RLIMIT_AS` like any other mapping,
//!   whenever the limit was set, and the process's mapped size follows what
//!   the shim holds. A piece that cannot be mapped (the limit, or another
//!   mapping that got there first) ends the region's growth; the blocks then
//!   come from libgc, which fails with ENOMEM under the same limit.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::proc_self;

/// Alignment of the regions, as the kernel aligns large mappings, for
/// transparent huge pages.
pub const REGION_ALIGN: usize = 2 << 20;

/// Consecutive pieces of one free range of address space, found at
/// start-up, handed out to the regions.
pub struct Placement {
    next: usize,
    end: usize,
}

impl Placement {
    /// A free range of `len` bytes in the middle of the widest gap between
    /// the process's mappings, or `None` when no gap is wide enough.
    pub fn find(len: usize) -> Option<Placement> {
        let (gap_start, gap_end) = gap_for(len + REGION_ALIGN)?;
        let room = (gap_end - gap_start).checked_sub(len + REGION_ALIGN)?;
        let start = (gap_start + room / 2).next_multiple_of(REGION_ALIGN);
        Some(Placement {
            next: start,
            end: start + len,
        })
    }

    /// The start of a range of `len` bytes, `align`-aligned, preceded by
    /// `table_len` bytes of zeroed memory (mapped now) for the range's
    /// table ([`table_byte`]). The table is kept out of the library's static
    /// data, which libgc scans at every collection, and an entry is one load
    /// at a small displacement from the range's start.
    pub fn take_with_table(&mut self, table_len: usize, len: usize, align: usize) -> Option<usize> {
        let (table_start, start) = self.table_and_range(table_len, len, align, page_size())?;
        if !map_fixed(table_start, start - table_start) {
            return None;
        }
        self.next = start + len;
        Some(start)
    }

    /// Where the table's mapping (whole pages of `page` bytes, ending at
    /// the range) and the range would start; `None` when they do not fit.
    /// A table of 16 KiB fills part of a 64 KiB page: the mapping must
    /// start at a page boundary, or the kernel refuses it.
    fn table_and_range(
        &self,
        table_len: usize,
        len: usize,
        align: usize,
        page: usize,
    ) -> Option<(usize, usize)> {
        let table_pages = table_len.next_multiple_of(page);
        let start = (self.next + table_pages).next_multiple_of(align.max(page));
        (start + len <= self.end).then_some((start - table_pages, start))
    }

    /// The start of a range of `len` bytes, `align`-aligned, not mapped.
    pub fn take(&mut self, len: usize, align: usize) -> Option<usize> {
        self.take_with_table(0, len, align)
    }
}

/// A range of address space that is mapped from its start up, a chunk at a
/// time, as its owner grows into it.
pub struct GrowingRange {
    start: AtomicUsize,
    /// How far from `start` the range is mapped.
    mapped: AtomicUsize,
    size: usize,
    chunk: usize,
}

impl GrowingRange {
    /// A range of `size` bytes, mapped `chunk` bytes at a time (a multiple
    /// of the largest page size, 64 KiB), not placed yet.
    pub const fn new(size: usize, chunk: usize) -> Self {
        GrowingRange {
            start: AtomicUsize::new(0),
            mapped: AtomicUsize::new(0),
            size,
            chunk,
        }
    }

    /// Places the range at `start`, from a [`Placement`].
    pub fn place(&self, start: usize) {
        self.start.store(start, Ordering::Release);
    }

    /// Where the range starts; 0 until it is placed.
    pub fn start(&self) -> usize {
        self.start.load(Ordering::Acquire)
    }

    /// Bytes mapped so far.
    pub fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Makes the first `len` bytes of the range mapped, readable and
    /// writable (zero where never mapped before). Callers serialize calls
    /// on one range.
    pub fn ensure_mapped(&self, len: usize) -> bool {
        let mapped = self.mapped.load(Ordering::Relaxed);
        if len <= mapped {
            return true;
        }
        let start = self.start();
        let upto = len.next_multiple_of(self.chunk).min(self.size);
        if start == 0 || len > self.size || !map_fixed(start + mapped, upto - mapped) {
            return false;
        }
        self.mapped.store(upto, Ordering::Release);
        true
    }
}

/// Byte `index` of the table of `table_len` bytes before the range at
/// `base`.
///
/// # Safety
/// `base` must come from [`Placement::take_with_table`]`(table_len, ..)`,
/// and `index < table_len`.
#[inline(always)]
pub unsafe fn table_byte(base: usize, table_len: usize, index: usize) -> &'static AtomicU8 {
    // SAFETY: the byte lies in the table, mapped readable and writable for
    // the life of the process (caller's contract); atomics may be shared.
    unsafe { &*((base - table_len + index) as *const AtomicU8) }
}

/// Maps `[start, start + len)`, which nothing of the process may use, as
/// zeroed private memory; fails rather than replace a mapping there.
fn map_fixed(start: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: the
    // call either maps fresh memory at `start` or fails.
    let p = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p as usize != start {
        // A kernel before 4.17 takes the flag for a hint and maps
        // elsewhere: that memory is not where the region needs it.
        // SAFETY: `p` is the mapping this call just made.
        unsafe { libc::munmap(p, len) };
        return false;
    }
    true
}

/// Gives `[start, start + len)` back to the kernel, address space and all.
///
/// # Safety
/// The range must be a mapping of the shim's that nothing uses any more.
pub unsafe fn unmap(start: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(start as *mut c_void, len) };
}

/// Gives the pages of `[start, start + len)` back to the kernel; the range
/// stays mapped and reads as zero when next touched.
///
/// # Safety
/// The range must be page-aligned memory of the shim's that nothing uses.
pub unsafe fn discard(start: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED) };
}

/// Maps `[start, start + len)` again after [`unmap`]: zeroed memory.
pub fn remap(start: usize, len: usize) -> bool {
    map_fixed(start, len)
}

/// A region's start address, published once the region is placed.
///
/// Unplaced, it holds an address in the upper half of the address space,
/// where no user pointer lies (the kernel's half on x86_64 and aarch64), so
/// that `free`'s range check is one subtraction and one comparison, with no
/// separate test of whether the region exists.
pub struct RegionBase(AtomicUsize);

const UNPLACED: usize = 1 << 63;

impl RegionBase {
    pub const fn unplaced() -> Self {
        Self(AtomicUsize::new(UNPLACED))
    }

    /// Publishes the region's start, once its tables are ready.
    pub fn publish(&self, base: usize) {
        debug_assert!(base != 0 && base < UNPLACED);
        self.0.store(base, Ordering::Release);
    }

    /// The region's start, once it is placed.
    #[inline]
    pub fn get(&self) -> Option<usize> {
        let base = self.0.load(Ordering::Acquire);
        (base != UNPLACED).then_some(base)
    }

    /// The start of a region the caller knows is placed (it holds a block
    /// or a span of it).
    #[inline(always)]
    pub fn placed(&self) -> usize {
        let base = self.0.load(Ordering::Relaxed);
        debug_assert!(base != UNPLACED);
        base
    }

    /// The region's start and the offset of `p` in it, or `None` when `p`
    /// lies outside its `size` bytes (or the region was never placed).
    #[inline(always)]
    pub fn offset_of(&self, size: usize, p: *mut c_void) -> Option<(usize, usize)> {
        let base = self.0.load(Ordering::Relaxed);
        let offset = (p as usize).wrapping_sub(base);
        (offset < size).then_some((base, offset))
    }
}

/// Mappings at or above this address are the kernel's (x86_64's
/// `[vsyscall]` page), not the process's address space.
const USER_SPACE_END: usize = 1 << 56;

/// The lowest address a region may start at when it goes below every
/// mapping: the low 4 GiB stay for programs that want addresses that fit
/// 32 bits (`MAP_32BIT`, JIT compilers, compressed pointers).
const LOW_FLOOR: usize = 4 << 30;

/// The gap the regions go in, from `/proc/self/maps` (read without
/// allocating, [`proc_self`]): see [`GapFinder::gap_for`].
fn gap_for(len: usize) -> Option<(usize, usize)> {
    let mut gaps = GapFinder::default();
    proc_self::for_each_line(c"/proc/self/maps", |line| {
        if let Some((start, end)) = proc_self::mapping_range(line) {
            gaps.mapping(start, end);
        }
    });
    gaps.gap_for(len)
}

/// The widest gap between mappings seen in address order, and where the
/// lowest one starts.
#[derive(Default)]
struct GapFinder {
    lowest_start: Option<usize>,
    previous_end: Option<usize>,
    widest: Option<(usize, usize)>,
}

impl GapFinder {
    fn mapping(&mut self, start: usize, end: usize) {
        if start >= USER_SPACE_END {
            return;
        }
        self.lowest_start.get_or_insert(start);
        if let Some(previous_end) = self.previous_end {
            let widest = self.widest.map_or(0, |(from, to)| to - from);
            if start > previous_end && start - previous_end > widest {
                self.widest = Some((previous_end, start));
            }
        }
        self.previous_end = Some(end);
    }

    /// A gap of more than `len` bytes: the widest between two mappings
    /// when it is wide enough, as it always is under a kernel (on x86_64
    /// and aarch64 the brk heap and the mmap area are tens of TiB apart,
    /// about 170 GiB with aarch64's smallest, 39-bit, address space).
    /// Otherwise the space below the lowest mapping, above [`LOW_FLOOR`]:
    /// under qemu-user a guest sees only its own mappings, packed together,
    /// while the emulator's own, which the guest cannot see, sit above them
    /// (a region placed there failed to grow) and its program well below.
    fn gap_for(&self, len: usize) -> Option<(usize, usize)> {
        let fits = |&(from, to): &(usize, usize)| to - from > len;
        let below = self
            .lowest_start
            .filter(|&lowest| lowest > LOW_FLOOR)
            .map(|lowest| (LOW_FLOOR, lowest));
        self.widest.filter(fits).or(below.filter(fits))
    }
}

/// The system's page size, read at run time (4, 16 or 64 KiB on aarch64),
/// once: the purge asks for it at every span it visits, and `sysconf` took
/// 1.4% of the compiler-like workload's instructions.
pub fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
                n if n > 0 => n as usize,
                _ => 4096,
            };
            PAGE_SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finder(text: &str) -> GapFinder {
        let mut gaps = GapFinder::default();
        for (start, end) in text
            .lines()
            .filter_map(|l| proc_self::mapping_range(l.as_bytes()))
        {
            gaps.mapping(start, end);
        }
        gaps
    }

    #[test]
    fn the_widest_gap_lies_between_two_user_mappings() {
        let maps = "\
55d1c2a4e000-55d1c2a50000 r--p 00000000 fe:01 123 /usr/bin/cat
55d1c2a50000-55d1c2a55000 r-xp 00002000 fe:01 123 /usr/bin/cat
55d1c3000000-55d1c3021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 r--p 00000000 fe:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        let gaps = finder(maps);
        assert_eq!(
            gaps.gap_for(68 << 30),
            Some((0x55d1c3021000, 0x7f0000000000))
        );
        // Wider than any gap between mappings: below them all.
        assert_eq!(gaps.gap_for(50 << 40), Some((LOW_FLOOR, 0x55d1c2a4e000)));
        assert_eq!(gaps.gap_for(90 << 40), None);
        let single = finder("7f0000000000-7f0000100000 rw-p 0 0 0\n");
        assert_eq!(single.gap_for(1 << 30), Some((LOW_FLOOR, 0x7f0000000000)));
        // A program mapped low (not PIE) leaves no room below it.
        assert_eq!(finder("400000-401000 r-xp 0 0 0\n").gap_for(1 << 30), None);
    }

    /// An aarch64 guest under qemu-user 10: its own mappings only, packed
    /// together; the emulator's are above them.
    #[test]
    fn below_the_lowest_mapping_when_the_mappings_are_packed() {
        let maps = "\
7f9412340000-7f9412440000 rw-p 00000000 00:00 0
7f9412440000-7f94125cc000 r-xp 00000000 fe:00 778644 /usr/lib/aarch64-linux-gnu/libc.so.6
7f94125ff000-7f9412dff000 rw-p 00000000 00:00 0 [stack]
7f9414400000-7f9414427000 r-xp 00000000 fe:00 778641 /usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1
7f9414450000-7f9414451000 r-xp 00000000 fe:00 10012332 /tmp/maps
7f9414471000-7f9414474000 rw-p 00000000 00:00 0 [heap]
";
        assert_eq!(
            finder(maps).gap_for(68 << 30),
            Some((LOW_FLOOR, 0x7f9412340000))
        );
    }

    #[test]
    fn placement_is_centred_in_the_gap_and_aligned() {
        let len = 1 << 30;
        let gap = gap_for(len + REGION_ALIGN).expect("this process has room");
        let mut placement = Placement::find(len).expect("a test process has room");
        let start = placement.next;
        assert_eq!(start % REGION_ALIGN, 0);
        assert!(start >= gap.0 && start + len <= gap.1);
        let base = placement
            .take_with_table(4096, 64 << 20, REGION_ALIGN)
            .expect("the table maps");
        assert_eq!(base % REGION_ALIGN, 0);
        // SAFETY: index 4095 of the 4096-byte table before `base`.
        unsafe { table_byte(base, 4096, 4095) }.store(1, Ordering::Relaxed);
        let range = GrowingRange::new(64 << 20, 1 << 20);
        range.place(base);
        assert!(range.ensure_mapped(1));
        assert_eq!(range.mapped(), 1 << 20);
        assert!(range.ensure_mapped(3 << 20));
        assert!(!range.ensure_mapped(65 << 20));
        // SAFETY: the first 3 MiB of the range were just mapped.
        unsafe { ((base + (3 << 20) - 1) as *mut u8).write(7) };
        // Mapping again over what is mapped fails rather than replace it.
        assert!(!map_fixed(base, 4096));
        assert!(placement.take(len, REGION_ALIGN).is_none());
    }

    /// aarch64 kernels run with 4, 16 or 64 KiB pages: a table's mapping
    /// starts on a page boundary whatever its length, ends where its range
    /// starts, and stays clear of what was handed out before.
    #[test]
    fn tables_are_mapped_in_whole_pages_of_any_size() {
        for page in [4 << 10, 16 << 10, 64 << 10] {
            for table_len in [1, 4096, 16384, 65536, 100_000] {
                for next in [REGION_ALIGN, REGION_ALIGN + 4096, 3 * REGION_ALIGN - 1] {
                    let placement = Placement { next, end: 1 << 40 };
                    let (table_start, start) = placement
                        .table_and_range(table_len, 64 << 20, REGION_ALIGN, page)
                        .expect("room");
                    assert_eq!(table_start % page, 0, "page {page} table {table_len}");
                    assert_eq!(start % REGION_ALIGN, 0);
                    assert!(start - table_start >= table_len);
                    assert_eq!((start - table_start) % page, 0);
                    assert!(
                        table_start >= next,
                        "page {page} table {table_len} next {next:#x}"
                    );
                }
            }
        }
        let full = Placement {
            next: REGION_ALIGN,
            end: 4 * REGION_ALIGN,
        };
        assert!(full
            .table_and_range(65536, 3 * REGION_ALIGN, REGION_ALIGN, 65536)
            .is_none());
    }
}

//! What the shim's regions hold, for `mallinfo2`, `mallinfo`,
//! `malloc_stats`, `malloc_info`, the C API and the debug summary.
//!
//! glibc's versions of these describe glibc's arenas, which hold next to
//! nothing once the shim serves malloc; these describe the regions instead,
//! in glibc's formats. Memory served by libgc (blocks above 256 MiB,
//! over-aligned ones, fallbacks) is libgc's heap and not counted here.

use core::ffi::c_int;
use core::fmt::Write;

use crate::{alloc, init, large, proc_self, purge, real, small};

/// The regions' memory, in bytes.
#[derive(Clone, Copy, Default)]
pub struct Report {
    /// Address space mapped for blocks and the regions' tables.
    pub mapped: usize,
    /// Bytes of blocks handed out and not freed, and of free small blocks
    /// that threads keep in their caches.
    pub in_use: usize,
    /// Free blocks, and free units that keep their pages for reuse.
    pub free: usize,
    /// Spans whose pages went back to the kernel (still mapped, reused
    /// before the region grows).
    pub purged: usize,
}

/// The regions' memory now. Takes the regions' spin locks one at a time.
pub fn report() -> Report {
    let small_free = small::free_bytes();
    let large_free = large::free_bytes();
    let small_held = small::used_bytes();
    Report {
        mapped: small::mapped_bytes() + large::mapped_bytes(),
        in_use: small_held.saturating_sub(small_free) + large::live_bytes(),
        free: small_free + large_free,
        purged: small::purged_bytes(),
    }
}

/// Bytes of the regions' mappings in memory now: what `/proc/self/smaps`
/// counts as their `Rss`. Not `mincore`, which also counts pages that were
/// only ever read (the collector reads all of a `calloc`ed block it scans):
/// they map the kernel's shared zero page, which is no one's memory.
pub fn resident_bytes() -> usize {
    let [a, b, c] = small::mapped_ranges();
    let [d, e] = large::mapped_ranges();
    resident_in(&[a, b, c, d, e])
}

/// The `Rss` of the parts of mappings that lie in `ranges` (`[start, end)`
/// each), a mapping that lies partly outside them counted in proportion.
fn resident_in(ranges: &[(usize, usize)]) -> usize {
    // The part of the mapping being read that is in `ranges`, and its size.
    let mut current = None;
    let mut resident = 0;
    proc_self::for_each_line(c"/proc/self/smaps", |line| {
        if let Some((start, end)) = proc_self::mapping_range(line) {
            let inside: usize = ranges
                .iter()
                .map(|&(from, to)| to.min(end).saturating_sub(from.max(start)))
                .sum();
            current = (inside > 0).then_some((inside, end - start));
        } else if let Some((inside, size)) = current {
            if let Some(kib) = proc_self::number_field(line, b"Rss") {
                resident += ((kib as u128 * 1024 * inside as u128) / size as u128) as usize;
            }
        }
    });
    resident
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
pub struct MallInfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's `struct mallinfo`: the same in `int`s, which saturate.
#[repr(C)]
pub struct MallInfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// The report as glibc's fields mean them: `arena` the bytes the allocator
/// holds (in use and free), `uordblks` in use, `fordblks` free, `keepcost`
/// what `malloc_trim` could give back now; `hblkhd` the address space
/// mapped. glibc's counts of chunks have no counterpart and stay 0.
pub fn mallinfo2() -> MallInfo2 {
    let r = report();
    MallInfo2 {
        arena: r.in_use + r.free,
        hblkhd: r.mapped,
        uordblks: r.in_use,
        fordblks: r.free,
        keepcost: r.free,
        ..MallInfo2::default()
    }
}

pub fn mallinfo() -> MallInfo {
    let info = mallinfo2();
    let int = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
    MallInfo {
        arena: int(info.arena),
        ordblks: int(info.ordblks),
        smblks: int(info.smblks),
        hblks: int(info.hblks),
        hblkhd: int(info.hblkhd),
        usmblks: int(info.usmblks),
        fsmblks: int(info.fsmblks),
        uordblks: int(info.uordblks),
        fordblks: int(info.fordblks),
        keepcost: int(info.keepcost),
    }
}

/// A fixed buffer that `write!` fills without allocating; what does not fit
/// is cut off.
pub struct TextBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> TextBuffer<N> {
    pub const fn new() -> Self {
        TextBuffer {
            bytes: [0; N],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> Write for TextBuffer<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `malloc_stats`' text, in glibc's layout: one arena (the regions).
pub fn write_stats(out: &mut impl Write) -> core::fmt::Result {
    let r = report();
    let system = r.in_use + r.free;
    writeln!(out, "Arena 0:")?;
    writeln!(out, "system bytes     = {system:10}")?;
    writeln!(out, "in use bytes     = {:10}", r.in_use)?;
    writeln!(out, "Total (incl. mmap):")?;
    writeln!(out, "system bytes     = {system:10}")?;
    writeln!(out, "in use bytes     = {:10}", r.in_use)?;
    writeln!(out, "max mmap regions = {:10}", 0)?;
    writeln!(out, "max mmap bytes   = {:10}", 0)
}

/// `malloc_info`'s XML, in glibc's layout: one heap (the regions), its free
/// bytes as `rest`, what it holds as `system`, its mapped address space as
/// `aspace`, and the purged bytes in a `purged` element of the shim's own
/// (glibc has none).
pub fn write_info(out: &mut impl Write) -> core::fmt::Result {
    let r = report();
    writeln!(out, "<malloc version=\"1\">")?;
    writeln!(out, "<heap nr=\"0\">")?;
    writeln!(out, "<sizes>\n</sizes>")?;
    write_info_totals(out, &r, false)?;
    writeln!(out, "</heap>")?;
    write_info_totals(out, &r, true)?;
    writeln!(out, "<purged size=\"{}\"/>", r.purged)?;
    writeln!(out, "</malloc>")
}

/// The totals `malloc_info` writes for a heap and, with the `mmap` line,
/// for the whole process.
fn write_info_totals(out: &mut impl Write, r: &Report, with_mmap: bool) -> core::fmt::Result {
    let system = r.in_use + r.free;
    writeln!(out, "<total type=\"fast\" count=\"0\" size=\"0\"/>")?;
    writeln!(
        out,
        "<total type=\"rest\" count=\"0\" size=\"{}\"/>",
        r.free
    )?;
    if with_mmap {
        writeln!(out, "<total type=\"mmap\" count=\"0\" size=\"0\"/>")?;
    }
    writeln!(out, "<system type=\"current\" size=\"{system}\"/>")?;
    writeln!(out, "<system type=\"max\" size=\"{system}\"/>")?;
    writeln!(out, "<aspace type=\"total\" size=\"{}\"/>", r.mapped)?;
    writeln!(out, "<aspace type=\"mprotect\" size=\"{}\"/>", r.mapped)
}

/// `malloc_trim`: gives back everything free now, including what this
/// thread's cache holds, and lets glibc trim what it handed out before the
/// shim was set up. Returns 1 when memory was released, as glibc does.
pub fn trim(pad: usize) -> c_int {
    let mut released = false;
    if init::is_serving() {
        alloc::flush_own_cache();
        released = purge::purge_everything();
    }
    // SAFETY: glibc's malloc_trim, which takes any pad.
    let glibc = real::malloc_trim().map_or(0, |f| unsafe { f(pad) });
    c_int::from(released || glibc != 0)
}

/// `malloc_stats`: the regions in glibc's layout, on stderr.
pub fn print_stats() {
    if !init::is_serving() {
        if let Some(f) = real::malloc_stats() {
            // SAFETY: glibc's malloc_stats, which takes no arguments.
            unsafe { f() };
        }
        return;
    }
    let mut text = TextBuffer::<512>::new();
    let _ = write_stats(&mut text);
    write_to_stderr(text.as_bytes());
}

/// `malloc_info`: the regions as glibc's XML on `stream`; options other
/// than 0 return EINVAL (the value, not -1 and errno), as glibc's do.
///
/// # Safety
/// `stream` must be an open `FILE` when `options` is 0.
pub unsafe fn print_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 {
        return libc::EINVAL;
    }
    if !init::is_serving() {
        return match real::malloc_info() {
            // SAFETY: glibc's malloc_info, with the caller's stream.
            Some(f) => unsafe { f(options, stream) },
            None => -1,
        };
    }
    let mut text = TextBuffer::<2048>::new();
    let _ = write_info(&mut text);
    // SAFETY: the caller's contract.
    unsafe { write_to_stream(stream, text.as_bytes()) }
}

/// `mallinfo2`: the regions' memory, or glibc's when the shim does not
/// serve malloc.
pub fn mallinfo2_or_glibc() -> MallInfo2 {
    if !init::is_serving() {
        if let Some(f) = real::mallinfo2() {
            // SAFETY: glibc's mallinfo2, which takes no arguments.
            return unsafe { f() };
        }
    }
    mallinfo2()
}

/// `mallinfo`: as [`mallinfo2_or_glibc`], saturated to `int`s.
pub fn mallinfo_or_glibc() -> MallInfo {
    if !init::is_serving() {
        if let Some(f) = real::mallinfo() {
            // SAFETY: glibc's mallinfo, which takes no arguments.
            return unsafe { f() };
        }
    }
    mallinfo()
}

/// Writes `text` to the C stream `stream` (for `malloc_info`).
///
/// # Safety
/// `stream` must be an open `FILE`.
unsafe fn write_to_stream(stream: *mut libc::FILE, text: &[u8]) -> c_int {
    // SAFETY: the caller's contract; `text` is readable for its length.
    let n = unsafe { libc::fwrite(text.as_ptr().cast(), 1, text.len(), stream) };
    if n == text.len() {
        0
    } else {
        -1
    }
}

/// Writes `text` to stderr, without stdio.
fn write_to_stderr(text: &[u8]) {
    // SAFETY: writes `text`, readable for its length, to descriptor 2.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

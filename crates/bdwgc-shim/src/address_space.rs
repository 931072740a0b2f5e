//! Address space for the shim's regions: reserved once (no memory, no
//! access), committed piece by piece as the allocator grows.
//!
//! The kernel checks `RLIMIT_AS` (`ulimit -v`) when address space is mapped,
//! and a reservation is mapped once, at start-up; committing it later is
//! not checked. So the shim applies the limit itself:
//!
//! - when a limit is set at start-up, nothing is reserved: every block then
//!   comes from libgc, under the kernel's own check, as without the shim;
//! - when a program sets a limit later, each commit from then on counts as
//!   newly mapped memory, and one that would pass the limit fails as an
//!   `mmap` would. The allocation falls back to libgc, which fails with
//!   ENOMEM under the same limit.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Bytes committed so far.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
/// The address-space limit the last commit saw (`RLIM_INFINITY` at first).
static LIMIT_SEEN: AtomicU64 = AtomicU64::new(libc::RLIM_INFINITY);
/// `COMMITTED` when that limit was first seen: commits since then count.
static COMMITTED_BEFORE_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Reserves `size` bytes of address space; returns its start. Reserves
/// nothing under an address-space limit.
pub fn reserve(size: usize) -> Option<usize> {
    if address_limit().is_some() {
        return None;
    }
    map_anonymous(size, libc::PROT_NONE).map(|base| base as usize)
}

/// Reserves `size` bytes of address space, 2 MiB-aligned (as the kernel
/// aligns large mappings, for transparent huge pages), preceded by
/// `table_len` bytes of zeroed memory for the region's table of a byte per
/// span; returns the region's start. The table is kept out of the library's
/// static data, which libgc scans at every collection, and an entry is one
/// load at a small displacement from the region's start ([`table_byte`]).
/// Reserves nothing under an address-space limit.
pub fn reserve_with_table(size: usize, table_len: usize) -> Option<usize> {
    const ALIGN: usize = 2 << 20;
    let start = reserve(table_len + size + ALIGN)?;
    let base = (start + table_len).next_multiple_of(ALIGN);
    make_writable(base - table_len, table_len).then_some(base)
}

/// Makes `[start, start + len)`, in a reservation of ours that nothing uses
/// yet, readable and writable.
fn make_writable(start: usize, len: usize) -> bool {
    // SAFETY: the range lies in a reservation of ours that nothing uses yet
    // (caller's contract); it becomes zero-filled memory.
    let rc = unsafe {
        libc::mprotect(
            start as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    rc == 0
}

/// Byte `index` of the table of `table_len` bytes before the region at
/// `base`.
///
/// # Safety
/// `base` must come from [`reserve_with_table`]`(_, table_len)`, and
/// `index < table_len`.
#[inline(always)]
pub unsafe fn table_byte(base: usize, table_len: usize, index: usize) -> &'static AtomicU8 {
    // SAFETY: the byte lies in the table, mapped readable and writable for
    // the life of the process (caller's contract); atomics may be shared.
    unsafe { &*((base - table_len + index) as *const AtomicU8) }
}

/// Maps `size` bytes of zeroed memory for the shim's own tables (not
/// counted as committed: tables are small and mapped before any limit).
pub fn map_zeroed(size: usize) -> Option<*mut c_void> {
    map_anonymous(size, libc::PROT_READ | libc::PROT_WRITE)
}

/// A fresh private anonymous mapping without swap reservation.
fn map_anonymous(size: usize, protection: i32) -> Option<*mut c_void> {
    // SAFETY: a new mapping at an address of the kernel's choice; it touches
    // no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            protection,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p)
}

/// The start of the region of `size` bytes at `base` and the offset of `p`
/// in it, or `None` when `p` lies outside it (or the region was never
/// reserved).
#[inline(always)]
pub fn offset_in(base: &AtomicUsize, size: usize, p: *mut c_void) -> Option<(usize, usize)> {
    let base = base.load(Ordering::Relaxed);
    let offset = (p as usize).wrapping_sub(base);
    (base != 0 && offset < size).then_some((base, offset))
}

/// Makes `[start, start + len)`, inside a reservation and not committed
/// before, readable and writable (zero-filled on first touch).
pub fn commit(start: usize, len: usize) -> bool {
    if !within_address_limit(len) || !make_writable(start, len) {
        return false;
    }
    COMMITTED.fetch_add(len, Ordering::Relaxed);
    true
}

/// The soft RLIMIT_AS, or `None` when there is none.
fn address_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether committing `len` more bytes stays under RLIMIT_AS, counting
/// what was committed since the limit was set as newly mapped.
fn within_address_limit(len: usize) -> bool {
    let Some(limit) = address_limit() else {
        return true;
    };
    if LIMIT_SEEN.swap(limit, Ordering::Relaxed) != limit {
        COMMITTED_BEFORE_LIMIT.store(COMMITTED.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let Some(mapped) = mapped_bytes() else {
        return true;
    };
    let since_limit = COMMITTED
        .load(Ordering::Relaxed)
        .saturating_sub(COMMITTED_BEFORE_LIMIT.load(Ordering::Relaxed));
    mapped.saturating_add(since_limit).saturating_add(len) as u64 <= limit
}

/// The process's mapped address space (VmSize), read from /proc/self/statm
/// with plain system calls: no allocation.
fn mapped_bytes() -> Option<usize> {
    let mut buffer = [0u8; 64];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: reads at most the buffer's length into it.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    let mut pages = 0usize;
    for &byte in &buffer[..n as usize] {
        match byte {
            b'0'..=b'9' => {
                pages = pages
                    .checked_mul(10)?
                    .checked_add(usize::from(byte - b'0'))?
            }
            _ => break,
        }
    }
    pages.checked_mul(page_size())
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

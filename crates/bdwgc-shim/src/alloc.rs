//! The malloc family, served from memory the collector scans but never
//! collects, with glibc's allocator as the fallback wherever libgc must not
//! or cannot be called. A block comes from one of three places, and `free`
//! tells them apart without any record of its own:
//!
//! - blocks up to 8 KiB: the shim's small-block region
//!   ([`crate::small`]), known by a range check;
//! - blocks up to 256 MiB: the shim's large-block region ([`crate::large`]),
//!   known the same way; aligned blocks (up to 2 MiB alignment) come from
//!   either, from a class whose block size is a multiple of the alignment;
//! - larger blocks and what the regions cannot serve:
//!   `GC_malloc_uncollectable`, known by `GC_base` (no lock, any address),
//!   which also maps an aligned pointer inside a larger object back to that
//!   object, so aligned blocks need no header;
//! - everything else is glibc's: handed out before the collector was set up,
//!   or during a fallback, and given back to glibc.
//!
//! libgc's lock is not re-entrant. While this thread may be inside libgc
//! (the thread's `bypass` count is non-zero) nothing here calls into libgc:
//! allocations go to glibc, and frees of collector memory wait on a lock-free
//! list until a later call on any thread can release them.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::large::{self, MAX_LARGE};
use crate::small::{self, MAX_FINE, MAX_SMALL};
use crate::sys::{gc, glibc};
use crate::tls::{self, ThreadState, MODE_COLLECTOR};
use crate::{address_space, init, real, stats, threads};

/// glibc's malloc alignment on 64-bit targets; libgc's granule is the same.
const MALLOC_ALIGNMENT: usize = 16;
/// glibc refuses requests above PTRDIFF_MAX.
const MAX_REQUEST: usize = isize::MAX as usize;

/// Collector memory freed while libgc could not be called, linked through
/// each block's first word.
static DEFERRED_FREES: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

pub fn set_errno(value: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = value };
}

fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Whether allocations on this thread go to scanned memory now (the
/// regions, and libgc once the thread is registered).
#[inline(always)]
fn use_collector(me: &ThreadState) -> bool {
    me.bypass.get() == 0 && threads::allocates_through_shim(me)
}

/// Whether this thread may allocate from libgc itself: registered (an
/// allocation may collect, which an unknown thread must not start).
fn registered(me: &ThreadState) -> bool {
    me.mode.get() == MODE_COLLECTOR
}

/// Whether the collector can be called to free memory on this thread now.
#[inline(always)]
fn can_call_collector(me: &ThreadState) -> bool {
    me.bypass.get() == 0
}

/// The collector object containing `p`, or null for glibc memory.
#[inline(always)]
fn collector_base(p: *mut c_void) -> *mut c_void {
    if init::is_serving() {
        gc::base(p)
    } else {
        ptr::null_mut()
    }
}

#[cold]
fn libc_counted() {
    stats::count_libc(!init::is_serving());
}

/// What a new block must hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// Anything (malloc).
    Any,
    /// Zero bytes (calloc).
    Zeroed,
}

/// The fast path of malloc and calloc: a block from this thread's cache,
/// without a call, a lock or an atomic read-modify-write; null when the
/// slow path must decide.
#[inline(always)]
fn cached_small_block(me: &ThreadState, size: usize, contents: Contents) -> *mut c_void {
    // Sizes 1..=MAX_FINE (malloc(0) and larger small blocks take the slow
    // path; taking blocks up to MAX_SMALL here too cost the 8-264-byte
    // churn 2.6% more instructions). Deferred frees wait for a slow path or
    // the 256th allocation (stats::count_routed).
    if size.wrapping_sub(1) >= MAX_FINE {
        return ptr::null_mut();
    }
    cached_block(me, small::class_of(size), contents)
}

/// A block of `class` from this thread's cache, when the thread may take
/// one on the fast path; null otherwise.
#[inline(always)]
fn cached_block(me: &ThreadState, class: usize, contents: Contents) -> *mut c_void {
    if !me.may_allocate_fast() {
        return ptr::null_mut();
    }
    hand_out_small(me, me.cache.allocate(class), class, contents)
}

/// Readies the small block `p` of `class` (or null) for the caller: zeroed
/// for calloc, and counted.
#[inline(always)]
fn hand_out_small(
    me: &ThreadState,
    p: *mut c_void,
    class: usize,
    contents: Contents,
) -> *mut c_void {
    if !p.is_null() {
        if contents == Contents::Zeroed {
            // SAFETY: a region block of `class`, just allocated, ours.
            unsafe { small::clear_block(p, class) };
        }
        stats::count_routed(me);
    }
    p
}

/// Whether this thread's block cache may be used now: the thread allocates
/// from the regions (and so its exit destructor is armed to flush the
/// cache), registered or pending, and is not inside libgc.
#[inline(always)]
fn small_cache_usable(me: &ThreadState) -> bool {
    me.may_free_fast()
}

/// Gives the free blocks this thread's cache holds back to their spans
/// (for `malloc_trim`), when the cache is in use.
pub fn flush_own_cache() {
    let me = tls::current();
    if small_cache_usable(me) {
        me.cache.flush();
    }
}

/// A block of the small region's `class`, from this thread's cache or
/// refilled into it; null when the region is used up (or could not be
/// placed or grow).
fn region_small(me: &ThreadState, class: usize, contents: Contents) -> *mut c_void {
    let mut block = me.cache.allocate(class);
    if block.is_null() {
        // Now and then (a refill), make sure a thread the program
        // registered itself has not been unregistered since.
        threads::recheck_registration(me);
        block = me.cache.allocate_or_refill(class);
    }
    hand_out_small(me, block, class, contents)
}

fn collector_malloc(me: &ThreadState, size: usize, contents: Contents) -> *mut c_void {
    release_deferred_frees_now();
    if size <= MAX_SMALL {
        let p = region_small(me, small::class_of(size), contents);
        if !p.is_null() {
            return p;
        }
        // The region is used up (or could not be placed or grow): ask libgc.
    } else if size <= MAX_LARGE {
        if let Some((p, zeroed)) = large::allocate(large::class_of(size)) {
            if contents == Contents::Zeroed && !zeroed {
                // SAFETY: the block has at least `size` bytes, all ours.
                unsafe { ptr::write_bytes(p.cast::<u8>(), 0, size) };
            }
            stats::count_routed(me);
            return p;
        }
    }
    if !registered(me) {
        // Not registered yet: glibc's memory, unscanned (see README Limits).
        return libc_malloc(size, contents);
    }
    // libgc's blocks are always handed out zeroed.
    libgc_malloc(me, size.max(1))
}

/// A block from glibc, for a thread whose allocations cannot go to scanned
/// memory now.
fn libc_malloc(size: usize, contents: Contents) -> *mut c_void {
    libc_counted();
    // SAFETY: plain calls into glibc's allocator.
    unsafe {
        match contents {
            Contents::Any => glibc::malloc(size),
            Contents::Zeroed => glibc::calloc(1, size),
        }
    }
}

/// A block of `size` bytes (at least 1) from `GC_malloc_uncollectable`.
fn libgc_malloc(me: &ThreadState, size: usize) -> *mut c_void {
    let p = gc::malloc_uncollectable(size);
    if p.is_null() {
        set_errno(libc::ENOMEM);
    } else {
        stats::count_routed(me);
    }
    p
}

/// A region block that starts at a multiple of `align` (a power of two
/// above 16), or null when the regions cannot serve it. No header and no
/// search: every block of a class whose size is a multiple of `align` is
/// aligned, since the spans of both regions start at multiples of 64 KiB
/// (small) or 2 MiB (large, the regions' alignment). So the block is freed,
/// reallocated and measured like any other, by its start.
fn region_aligned(me: &ThreadState, align: usize, size: usize) -> *mut c_void {
    if align > address_space::REGION_ALIGN {
        return ptr::null_mut();
    }
    release_deferred_frees_now();
    if let Some(class) = small::aligned_class(size, align) {
        let p = region_small(me, class, Contents::Any);
        if !p.is_null() {
            return p;
        }
    }
    if size > MAX_LARGE {
        return ptr::null_mut();
    }
    let Some(class) = large::aligned_class(size.max(MAX_SMALL + 1), align) else {
        return ptr::null_mut();
    };
    match large::allocate(class) {
        Some((p, _)) => {
            stats::count_routed(me);
            p
        }
        None => ptr::null_mut(),
    }
}

/// Collector memory whose start is aligned to `align` (a power of two above
/// 16), for what the regions cannot serve: an object `align - 16` bytes
/// larger, and a pointer into it.
fn collector_aligned(me: &ThreadState, align: usize, size: usize) -> *mut c_void {
    let Some(total) = size.max(1).checked_add(align - MALLOC_ALIGNMENT) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if total > MAX_REQUEST {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    // Straight from libgc: region blocks must be freed at their start, and
    // an aligned pointer may sit inside the block.
    release_deferred_frees_now();
    let base = libgc_malloc(me, total);
    if base.is_null() {
        return base;
    }
    let offset = (base as usize).wrapping_neg() & (align - 1);
    // SAFETY: libgc objects are 16-aligned, so offset <= align - 16 and
    // offset + size <= total: the result stays inside the object.
    unsafe { base.cast::<u8>().add(offset).cast() }
}

fn free_collector_block(me: &ThreadState, base: *mut c_void) {
    if can_call_collector(me) {
        release_deferred_frees_now();
        // SAFETY: `base` came from GC_base for memory the caller frees once.
        unsafe { gc::free(base) };
    } else {
        defer_free(base);
    }
}

fn defer_free(base: *mut c_void) {
    stats::count_deferred_free();
    let link = base.cast::<*mut c_void>();
    let mut head = DEFERRED_FREES.load(Ordering::Relaxed);
    loop {
        // SAFETY: the block is freed memory of at least 16 bytes owned by
        // the shim from now on; its first word holds the list link.
        unsafe { link.write(head) };
        match DEFERRED_FREES.compare_exchange_weak(head, base, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(current) => head = current,
        }
    }
}

/// Frees a region block into this thread's cache, or straight to the
/// central list when the cache will not be flushed again (thread exiting)
/// or this thread is inside libgc.
///
/// # Safety
/// `p` must be a live region block of `class`, freed once.
#[inline(always)]
unsafe fn free_small(me: &ThreadState, p: *mut c_void, class: usize) {
    if small_cache_usable(me) {
        // SAFETY: caller's contract.
        unsafe { me.cache.free(p, class) };
    } else {
        // SAFETY: caller's contract.
        unsafe { small::free_to_central(p, class) };
    }
}

/// Frees what was deferred, when this thread may call libgc (the periodic
/// work of [`stats::count_routed`]).
pub fn release_deferred_frees(me: &ThreadState) {
    if can_call_collector(me) {
        release_deferred_frees_now();
    }
}

/// Frees what was deferred; the caller may call libgc.
#[inline(always)]
fn release_deferred_frees_now() {
    if DEFERRED_FREES.load(Ordering::Relaxed).is_null() {
        return;
    }
    release_deferred_frees_slow();
}

#[cold]
fn release_deferred_frees_slow() {
    let mut block = DEFERRED_FREES.swap(ptr::null_mut(), Ordering::Acquire);
    while !block.is_null() {
        // SAFETY: every block on the list was pushed by `defer_free`, which
        // wrote the next link in its first word; each is freed exactly once.
        unsafe {
            let next = block.cast::<*mut c_void>().read();
            gc::free(block);
            block = next;
        }
    }
}

/// Usable bytes from `p` to the end of its collector object at `base`.
fn collector_usable(base: *mut c_void, p: *mut c_void) -> usize {
    // SAFETY: `base` is GC_base(p), the start of a live object.
    let size = unsafe { gc::size(base) };
    size - (p as usize - base as usize)
}

fn libc_usable(p: *mut c_void) -> usize {
    match real::malloc_usable_size() {
        // SAFETY: `p` is a live pointer from glibc's allocator.
        Some(f) => unsafe { f(p) },
        None => 0,
    }
}

#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    let me = tls::current();
    let p = cached_small_block(me, size, Contents::Any);
    if !p.is_null() {
        return p;
    }
    malloc_slow(me, size)
}

#[inline(never)]
fn malloc_slow(me: &ThreadState, size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    if use_collector(me) {
        return collector_malloc(me, size, Contents::Any);
    }
    libc_counted();
    // SAFETY: plain call into glibc's allocator.
    unsafe { glibc::malloc(size) }
}

#[inline(always)]
pub fn calloc(count: usize, size: usize) -> *mut c_void {
    let me = tls::current();
    if let Some(total) = count.checked_mul(size) {
        let p = cached_small_block(me, total, Contents::Zeroed);
        if !p.is_null() {
            return p;
        }
    }
    calloc_slow(me, count, size)
}

#[inline(never)]
fn calloc_slow(me: &ThreadState, count: usize, size: usize) -> *mut c_void {
    let Some(total) = count.checked_mul(size).filter(|&t| t <= MAX_REQUEST) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if use_collector(me) {
        return collector_malloc(me, total, Contents::Zeroed);
    }
    libc_counted();
    // SAFETY: plain call into glibc's allocator.
    unsafe { glibc::calloc(count, size) }
}

/// # Safety
/// `p` must be null or a live pointer from this allocator family.
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    // The fast path: a small block into this thread's cache. Null is never
    // in the region (glibc itself frees null often, 17 times per thread
    // start, so it returns here too).
    if let Some(class) = small::class_of_block(p) {
        let me = tls::current();
        if small_cache_usable(me) {
            // SAFETY: a live region block (caller's contract).
            unsafe { me.cache.free(p, class) };
            return;
        }
    } else if p.is_null() {
        return;
    }
    // SAFETY: caller's contract.
    unsafe { free_slow(p) }
}

/// # Safety
/// `p` must be a live pointer from this allocator family (not null).
#[inline(never)]
unsafe fn free_slow(p: *mut c_void) {
    // glibc's free leaves errno alone; madvise and libgc may not.
    let saved_errno = errno();
    if let Some(class) = small::class_of_block(p) {
        // SAFETY: a live region block (caller's contract).
        unsafe { free_small(tls::current(), p, class) };
    } else if let Some(class) = large::class_of_block(p) {
        // SAFETY: a live large block (caller's contract).
        unsafe { large::free(p, class) };
    } else {
        let base = collector_base(p);
        if base.is_null() {
            // SAFETY: not collector memory, so it is glibc's (caller's contract).
            unsafe { glibc::free(p) };
        } else {
            free_collector_block(tls::current(), base);
        }
    }
    set_errno(saved_errno);
}

/// # Safety
/// `p` must be null or a live pointer from this allocator family.
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // glibc frees the block and returns NULL.
        // SAFETY: caller's contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    if size > MAX_REQUEST {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    let me = tls::current();
    if let Some(class) = small::class_of_block(p) {
        let usable = small::block_size(class);
        if size <= usable && small::class_of(size) == class {
            return p;
        }
        // SAFETY: a live region block of `usable` bytes (caller's contract).
        return unsafe { move_to_new_block(p, usable, size, |p| free_small(me, p, class)) };
    }
    if let Some(class) = large::class_of_block(p) {
        let usable = large::block_size(class);
        if size <= usable && size > usable / 2 {
            return p;
        }
        // SAFETY: a live large block (caller's contract).
        if size > usable && unsafe { large::grow_in_place(p, class, size) } {
            return p;
        }
        // SAFETY: a live large block of `usable` bytes (caller's contract).
        return unsafe { move_to_new_block(p, usable, size, |p| large::free(p, class)) };
    }
    let base = collector_base(p);
    if base.is_null() {
        if !use_collector(me) {
            libc_counted();
            // SAFETY: `p` is glibc memory (caller's contract).
            return unsafe { glibc::realloc(p, size) };
        }
        // glibc memory from before the collector was ready: move it into
        // scanned memory now.
        let new = collector_malloc(me, size, Contents::Any);
        if !new.is_null() {
            let old_size = libc_usable(p);
            // SAFETY: both blocks are live and distinct; copy what fits.
            unsafe {
                ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), old_size.min(size));
                glibc::free(p);
            }
        }
        return new;
    }
    let usable = collector_usable(base, p);
    if size <= usable && size >= usable / 2 {
        // Shrink in place; clear the tail so stale pointers there keep
        // nothing alive.
        // SAFETY: [p + size, p + usable) lies inside the object.
        unsafe { ptr::write_bytes(p.cast::<u8>().add(size), 0, usable - size) };
        return p;
    }
    let new = if use_collector(me) {
        collector_malloc(me, size, Contents::Any)
    } else {
        libc_counted();
        // SAFETY: plain call into glibc's allocator.
        unsafe { glibc::malloc(size) }
    };
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; copy what fits.
        unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), usable.min(size)) };
        free_collector_block(me, base);
    }
    new
}

/// realloc by moving: a new block of `size` bytes gets what fits of the
/// `usable` bytes at `p`, and `p` is then freed with `free_old`.
///
/// # Safety
/// `p` must be a live block of `usable` bytes that `free_old` frees once.
unsafe fn move_to_new_block(
    p: *mut c_void,
    usable: usize,
    size: usize,
    free_old: impl FnOnce(*mut c_void),
) -> *mut c_void {
    let new = malloc(size);
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; then `p` is freed once.
        unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), usable.min(size)) };
        free_old(p);
    }
    new
}

/// # Safety
/// As [`realloc`].
pub unsafe fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: caller's contract.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// Memory aligned to `align`, which must be a power of two.
#[inline]
fn aligned(align: usize, size: usize) -> *mut c_void {
    debug_assert!(align.is_power_of_two());
    if align <= MALLOC_ALIGNMENT {
        return malloc(size);
    }
    // malloc's fast path. The request rounded to the alignment (a mask, not
    // a division) has a class of aligned blocks: up to 1 KiB a fine class's
    // size is the request rounded to 16; above, a quarter class's size is a
    // multiple of a quarter of its doubling, and a multiple of a larger
    // alignment is itself a class's size (1.5 or 2 times a power of two).
    // So `small::aligned_class`'s search would find the same class.
    let me = tls::current();
    if size.wrapping_sub(1) < MAX_SMALL && align <= MAX_SMALL {
        let rounded = (size + align - 1) & !(align - 1);
        if rounded <= MAX_SMALL {
            let class = small::class_of(rounded);
            debug_assert_eq!(Some(class), small::aligned_class(size, align));
            let p = cached_block(me, class, Contents::Any);
            if !p.is_null() {
                return p;
            }
        }
    }
    aligned_slow(me, align, size)
}

#[inline(never)]
fn aligned_slow(me: &ThreadState, align: usize, size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    if use_collector(me) {
        let p = region_aligned(me, align, size);
        debug_assert!(p as usize % align == 0);
        if !p.is_null() {
            return p;
        }
        if registered(me) {
            return collector_aligned(me, align, size);
        }
    }
    libc_counted();
    // SAFETY: `align` is a power of two, as glibc requires.
    unsafe { glibc::memalign(align, size) }
}

/// # Safety
/// `out` must be valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let saved_errno = errno();
    let p = aligned(align, size);
    set_errno(saved_errno);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: caller's contract.
    unsafe { out.write(p) };
    0
}

/// C11 `aligned_alloc`: the alignment must be a power of two (EINVAL
/// otherwise, as glibc 2.38 and later do).
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

/// glibc's `memalign`: small alignments mean malloc, others are rounded up
/// to a power of two, and only impossible ones fail with EINVAL.
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    if align <= MALLOC_ALIGNMENT {
        return malloc(size);
    }
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align.next_power_of_two(), size)
}

pub fn valloc(size: usize) -> *mut c_void {
    aligned(address_space::page_size(), size)
}

pub fn pvalloc(size: usize) -> *mut c_void {
    let page = address_space::page_size();
    match whole_pages(size, page) {
        Some(n) => aligned(page, n),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `size` rounded up to whole pages of `page` bytes, at least one page (as
/// glibc's `pvalloc` does); `None` on overflow.
fn whole_pages(size: usize, page: usize) -> Option<usize> {
    Some(size.checked_add(page - 1)? & !(page - 1)).map(|n| n.max(page))
}

/// # Safety
/// `p` must be null or a live pointer from this allocator family.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if let Some(class) = small::class_of_block(p) {
        return small::block_size(class);
    }
    if let Some(class) = large::class_of_block(p) {
        return large::block_size(class);
    }
    let base = collector_base(p);
    if base.is_null() {
        libc_usable(p)
    } else {
        collector_usable(base, p)
    }
}

#[cfg(test)]
mod tests {
    use super::whole_pages;

    /// The page size is the system's (4, 16 or 64 KiB on aarch64).
    #[test]
    fn pvalloc_rounds_to_whole_pages_of_any_size() {
        for page in [4usize << 10, 16 << 10, 64 << 10] {
            assert_eq!(whole_pages(0, page), Some(page));
            assert_eq!(whole_pages(1, page), Some(page));
            assert_eq!(whole_pages(page, page), Some(page));
            assert_eq!(whole_pages(page + 1, page), Some(2 * page));
            assert_eq!(whole_pages(usize::MAX - page + 2, page), None);
            assert_eq!(
                whole_pages(usize::MAX - 2 * page, page),
                Some(usize::MAX - 2 * page + 1)
            );
        }
    }
}

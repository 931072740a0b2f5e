//! A per-thread cache of freed small blocks, so that most malloc and free
//! calls of small sizes take no lock.
//!
//! libgc's `GC_malloc_uncollectable` and `GC_free` take the collector's global
//! allocation lock on every call. Small blocks (up to [`MAX_CACHED_SIZE`]
//! bytes, in 16-byte classes) that a thread frees are instead kept on that
//! thread's list for its class and handed out again by its next allocation
//! of that class. Cached blocks stay uncollectable collector memory: they are
//! cleared when freed, so a stale pointer in them keeps nothing alive, and
//! they are scanned like any malloc memory.
//!
//! A list holds at most [`BYTES_PER_CLASS`] bytes; beyond that, frees go to
//! libgc. When
//! a thread ends, its exit destructor gives the cached blocks back to libgc.
//! (After `fork`, the blocks cached by the parent's other threads stay
//! allocated in the child: at most 256 KiB per thread.)

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;

use crate::sys::gc;

/// The largest size served from the cache.
pub const MAX_CACHED_SIZE: usize = 256;
const GRANULE: usize = 16;
const CLASSES: usize = MAX_CACHED_SIZE / GRANULE;
/// Bytes kept per class and thread: 16 KiB, so at most 256 KiB a thread.
const BYTES_PER_CLASS: usize = 16 * 1024;

/// One thread's cached blocks, linked through each block's first word.
#[repr(C)]
pub struct ThreadCache {
    heads: [Cell<*mut c_void>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

/// The class of a request of `size` bytes (1..=MAX_CACHED_SIZE), and the
/// size of the blocks of that class.
#[inline(always)]
pub fn class_of(size: usize) -> (usize, usize) {
    let class = (size.max(1) + GRANULE - 1) / GRANULE - 1;
    (class, (class + 1) * GRANULE)
}

impl ThreadCache {
    /// A cached block of `class`, zeroed, or null.
    #[inline(always)]
    pub fn pop(&self, class: usize) -> *mut c_void {
        let head = self.heads[class].get();
        if !head.is_null() {
            let link = head.cast::<*mut c_void>();
            // SAFETY: `head` is a cached block of at least 16 bytes whose
            // first word holds the next link; clearing it leaves the block
            // all zero.
            unsafe {
                self.heads[class].set(link.read());
                link.write(ptr::null_mut());
            }
            self.counts[class].set(self.counts[class].get() - 1);
        }
        head
    }

    /// Keeps the freed block at `base` (of `size` bytes, uncollectable) if
    /// its class has room; returns false when the caller must free it.
    ///
    /// # Safety
    /// `base` must be a live uncollectable libgc object of `size` bytes that
    /// the caller is freeing.
    #[inline(always)]
    pub unsafe fn push(&self, base: *mut c_void, size: usize) -> bool {
        if size == 0 || size > MAX_CACHED_SIZE || size % GRANULE != 0 {
            return false;
        }
        let class = size / GRANULE - 1;
        let count = self.counts[class].get();
        if usize::from(count) * size >= BYTES_PER_CLASS {
            return false;
        }
        // SAFETY: the block is `size` bytes owned by the caller from now on.
        unsafe {
            ptr::write_bytes(base.cast::<u8>(), 0, size);
            base.cast::<*mut c_void>().write(self.heads[class].get());
        }
        self.heads[class].set(base);
        self.counts[class].set(count + 1);
        true
    }

    /// Gives every cached block back to libgc.
    pub fn flush(&self) {
        for class in 0..CLASSES {
            loop {
                let block = self.pop(class);
                if block.is_null() {
                    break;
                }
                // SAFETY: a cached block is a live uncollectable object that
                // nothing else refers to.
                unsafe { gc::free(block) };
            }
        }
    }
}

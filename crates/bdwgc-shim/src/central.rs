//! What both regions keep for a size class: each span of the class has its
//! own list of free blocks, and the class a list of the spans that have free
//! blocks, plus the span it carves new blocks from. All of it is guarded by
//! the class's spin lock.
//!
//! Free lists per span rather than one per class: a span whose blocks are
//! all back on its list is seen at once ([`ClassList::put_block`] says so),
//! and can leave the class with its blocks, to be purged and reused by any
//! class ([`crate::purge`]). One list per class would mix every span's
//! blocks, so that a free span's blocks could only be found by walking all
//! of them.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// A span in a list: its index plus one; 0 for none.
type Link = u32;

fn link(index: usize) -> Link {
    index as Link + 1
}

/// One span's part of its class's lists, in the region's span table. The
/// fields are atomics only so that the table can be shared; they are read
/// and written under the class's lock.
#[repr(C)]
pub struct SpanState {
    /// The span's free blocks (those not in a thread's cache), linked
    /// through their first word.
    free: AtomicPtr<c_void>,
    free_count: AtomicU32,
    /// Blocks carved from the span so far: the span is wholly free when all
    /// of them are on its free list.
    carved: AtomicU32,
    /// Neighbours in the class's list of spans with free blocks.
    previous: AtomicU32,
    next: AtomicU32,
    /// When a purge check first saw all of the span's carved blocks free
    /// ([`crate::purge::now_ms`], never 0); 0 when not seen so or taken
    /// from since.
    since: AtomicU32,
}

impl SpanState {
    /// Forgets the span's blocks: it is new to a class, or leaves it.
    fn reset(&self) {
        self.free.store(ptr::null_mut(), Ordering::Relaxed);
        self.free_count.store(0, Ordering::Relaxed);
        self.carved.store(0, Ordering::Relaxed);
    }
}

/// A class's spans with free blocks, and the span it carves new blocks
/// from, `[carve_next, carve_end)`.
pub struct ClassList {
    /// The region's span table: the state of span `index`.
    span: fn(usize) -> &'static SpanState,
    partial: Link,
    carve_span: Link,
    carve_next: usize,
    carve_end: usize,
    /// Whether the carved span's pages were all zero.
    carve_zeroed: bool,
}

impl ClassList {
    pub const fn new(span: fn(usize) -> &'static SpanState) -> Self {
        ClassList {
            span,
            partial: 0,
            carve_span: 0,
            carve_next: 0,
            carve_end: 0,
            carve_zeroed: false,
        }
    }

    fn can_carve(&self, size: usize) -> bool {
        self.carve_next + size <= self.carve_end
    }

    /// Carves from now on from span `index`, `[start, end)`, new to the
    /// class. The rest of the span carved before, if another thread added
    /// one meanwhile, is carved again once that span is wholly free and
    /// reused.
    pub fn start_carving(&mut self, index: usize, start: usize, end: usize, zeroed: bool) {
        (self.span)(index).reset();
        self.carve_span = link(index);
        self.carve_next = start;
        self.carve_end = end;
        self.carve_zeroed = zeroed;
    }

    fn push_partial(&mut self, index: usize) {
        let state = (self.span)(index);
        state.previous.store(0, Ordering::Relaxed);
        state.next.store(self.partial, Ordering::Relaxed);
        if self.partial != 0 {
            (self.span)(self.partial as usize - 1)
                .previous
                .store(link(index), Ordering::Relaxed);
        }
        self.partial = link(index);
    }

    fn unlink(&mut self, index: usize) {
        let state = (self.span)(index);
        let previous = state.previous.load(Ordering::Relaxed);
        let next = state.next.load(Ordering::Relaxed);
        if previous == 0 {
            self.partial = next;
        } else {
            (self.span)(previous as usize - 1)
                .next
                .store(next, Ordering::Relaxed);
        }
        if next != 0 {
            (self.span)(next as usize - 1)
                .previous
                .store(previous, Ordering::Relaxed);
        }
    }

    /// Whether every block carved from span `index` is on its free list.
    fn is_idle(&self, index: usize) -> bool {
        let state = (self.span)(index);
        state.free_count.load(Ordering::Relaxed) == state.carved.load(Ordering::Relaxed)
    }

    /// Whether span `index` is idle and has nothing more to carve.
    fn is_wholly_free(&self, index: usize, size: usize) -> bool {
        self.is_idle(index) && !(self.carve_span == link(index) && self.can_carve(size))
    }

    /// Takes the wholly free span `index` out of the class.
    pub fn remove_span(&mut self, index: usize) {
        self.unlink(index);
        if self.carve_span == link(index) {
            self.carve_span = 0;
            self.carve_next = 0;
            self.carve_end = 0;
        }
        (self.span)(index).reset();
    }

    /// A free block of `size` bytes: from the first span with free blocks,
    /// else carved. Says whether it is known to be zero (`freed_zeroed`
    /// for a block from a free list).
    pub fn take_block(&mut self, size: usize, freed_zeroed: bool) -> Option<(*mut c_void, bool)> {
        if self.partial != 0 {
            let index = self.partial as usize - 1;
            let state = (self.span)(index);
            let block = state.free.load(Ordering::Relaxed);
            // SAFETY: a free block of the span, linked through its first
            // word; it is the caller's now, and its link is cleared.
            unsafe {
                state
                    .free
                    .store(block.cast::<*mut c_void>().read(), Ordering::Relaxed);
                block.cast::<*mut c_void>().write(ptr::null_mut());
            }
            if state.free_count.fetch_sub(1, Ordering::Relaxed) == 1 {
                self.unlink(index);
            }
            // In use again: a purge check starts its delay afresh.
            state.since.store(0, Ordering::Relaxed);
            return Some((block, freed_zeroed));
        }
        if !self.can_carve(size) {
            return None;
        }
        let block = self.carve_next as *mut c_void;
        self.carve_next += size;
        (self.span)(self.carve_span as usize - 1)
            .carved
            .fetch_add(1, Ordering::Relaxed);
        Some((block, self.carve_zeroed))
    }

    /// Puts the freed block `p` of `size` bytes back on its span, `index`;
    /// returns whether the span is now wholly free, with nothing more to
    /// carve.
    ///
    /// # Safety
    /// `p` must be a block of span `index` of this class, taken from it and
    /// now given back by its owner.
    pub unsafe fn put_block(&mut self, p: *mut c_void, index: usize, size: usize) -> bool {
        let state = (self.span)(index);
        // SAFETY: the block is the caller's to give back; its first word
        // becomes the list link.
        unsafe { p.cast::<*mut c_void>().write(state.free.load(Ordering::Relaxed)) };
        state.free.store(p, Ordering::Relaxed);
        if state.free_count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.push_partial(index);
        }
        self.is_wholly_free(index, size)
    }

    /// Takes out of the class up to `out.len()` idle spans (the one being
    /// carved too) that have been idle since a check before `now` that
    /// `due` accepts, or all idle spans with `everything`; writes their
    /// indexes to `out` and returns how many. An idle span seen for the
    /// first time is stamped `now`: the free path reads no clock, and the
    /// delay is counted from the first check that sees the span idle.
    pub fn take_idle(&mut self, now: u32, due: impl Fn(u32) -> bool, everything: bool, out: &mut [usize]) -> usize {
        let mut count = 0;
        let mut next = self.partial;
        while next != 0 && count < out.len() {
            let index = next as usize - 1;
            let state = (self.span)(index);
            next = state.next.load(Ordering::Relaxed);
            if !self.is_idle(index) {
                continue;
            }
            let since = state.since.load(Ordering::Relaxed);
            if everything || (since != 0 && due(since)) {
                self.remove_span(index);
                out[count] = index;
                count += 1;
            } else if since == 0 {
                state.since.store(now | 1, Ordering::Relaxed);
            }
        }
        count
    }

    /// Bytes the class holds free: blocks on its spans' lists, and what is
    /// left to carve.
    pub fn free_bytes(&self, size: usize) -> usize {
        let mut blocks = self.carve_end.saturating_sub(self.carve_next) / size;
        let mut next = self.partial;
        while next != 0 {
            let state = (self.span)(next as usize - 1);
            blocks += state.free_count.load(Ordering::Relaxed) as usize;
            next = state.next.load(Ordering::Relaxed);
        }
        blocks * size
    }
}

//! What both regions keep for a size class: each span of the class has its
//! own list of free blocks, and the class four lists of the spans that have
//! free blocks, by how full they are (blocks are taken from the fullest
//! first), plus the span it carves new blocks from. All of it is guarded by
//! the class's spin lock.
//!
//! Free lists per span rather than one per class: a span whose blocks are
//! all back on its list is seen at once ([`ClassList::put_block`] says so),
//! and can leave the class with its blocks, to be purged and reused by any
//! class ([`crate::purge`]). One list per class would mix every span's
//! blocks, so that a free span's blocks could only be found by walking all
//! of them.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::address_space;

/// The free block after `block` of `size` bytes in its span's list: the
/// block's link, where 0 stands for the next block in the span (what
/// [`ClassList::discard_free_pages`] writes, so that a page of free blocks
/// reads the same list once discarded, as zero). The list's count ends it,
/// not a null link.
///
/// # Safety
/// `block` must be a free block on a span's list, under its class's lock.
unsafe fn next_free(block: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract; the link is the block's first word.
    let link = unsafe { block.cast::<*mut c_void>().read() };
    if link.is_null() {
        block.wrapping_byte_add(size)
    } else {
        link
    }
}

/// Classes above 1 KiB, in both regions: four per doubling, 1280, 1536,
/// 1792, 2048, 2560, ... (each 5, 6, 7 or 8 quarters of a power of two).
/// The index of the smallest that holds `size` bytes, `size > 1024`.
#[inline(always)]
pub fn quarter_class_of(size: usize) -> usize {
    debug_assert!(size > 1024);
    let s = size - 1;
    let log = (usize::BITS - 1 - s.leading_zeros()) as usize;
    (log - 10) * 4 + ((s >> (log - 2)) & 3)
}

/// The size of quarter class `index` ([`quarter_class_of`]).
#[inline(always)]
pub const fn quarter_class_size(index: usize) -> usize {
    let log = 10 + index / 4;
    (1 << log) + (((index % 4) + 1) << (log - 2))
}

/// Blocks a span may have for [`ClassList::discard_free_pages`]: a 64 KiB
/// span of 16-byte blocks, or 4 MiB of 1,280-byte ones.
const MAX_SPAN_BLOCKS: usize = 4096;

/// How many lists of spans with free blocks a class keeps, by fullness.
const BUCKETS: usize = 4;

/// The list for a span with `free` of its `carved` blocks free: 0 when at
/// most a quarter are, 3 when more than three quarters are.
#[inline(always)]
fn fullness(free: u32, carved: u32) -> usize {
    let free = free as u64 * BUCKETS as u64;
    let carved = carved as u64;
    usize::from(free > carved) + usize::from(free > 2 * carved) + usize::from(free > 3 * carved)
}

/// The free counts of the spans of `carved` blocks in list `bucket`:
/// [`fullness`] gives `bucket` from `low` to `high`.
fn fullness_bounds(bucket: usize, carved: u32) -> (u32, u32) {
    let quarter = |n: usize| (n as u64 * carved as u64 / BUCKETS as u64) as u32;
    let low = if bucket == 0 { 0 } else { quarter(bucket) + 1 };
    let high = if bucket == BUCKETS - 1 {
        u32::MAX
    } else {
        quarter(bucket + 1)
    };
    (low, high)
}

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
    /// The last block of that list when the list is one that frees built
    /// since it was last empty (null-terminated, no zero links); null
    /// otherwise. A take splices such a list whole, without reading it.
    last: AtomicPtr<c_void>,
    free_count: AtomicU32,
    /// Blocks carved from the span so far: the span is wholly free when all
    /// of them are on its free list.
    carved: AtomicU32,
    /// Neighbours in the class's list of spans with free blocks.
    previous: AtomicU32,
    next: AtomicU32,
    /// Which of the class's lists of spans with free blocks holds the span
    /// ([`fullness`]), and the free counts outside which it belongs to
    /// another, so that a free or a take compares one count with one bound.
    bucket: AtomicU32,
    low: AtomicU32,
    high: AtomicU32,
    /// Which set of class lists the span belongs to, for a region that keeps
    /// several ([`crate::small`]'s arenas); set when the span is handed out.
    pub arena: AtomicU32,
    /// The class the span was last handed out to, plus one (0: never), for
    /// a region that tells a class taking back a span it gave up from one
    /// that grows ([`crate::small`]).
    pub last_class: AtomicU32,
    /// When a purge check first saw the span's free list as it is now
    /// ([`crate::purge::now_ms`], odd); 0 when its list changed since the
    /// last check; [`DISCARDED`] when its free pages went back to the
    /// kernel and its list has not changed since.
    since: AtomicU32,
}

/// [`SpanState::since`] of a span whose whole free pages were discarded:
/// even, so no clock stamp.
const DISCARDED: u32 = 2;

impl SpanState {
    /// Forgets the span's blocks: it is new to a class, or leaves it.
    fn reset(&self) {
        self.free.store(ptr::null_mut(), Ordering::Relaxed);
        self.last.store(ptr::null_mut(), Ordering::Relaxed);
        self.free_count.store(0, Ordering::Relaxed);
        self.carved.store(0, Ordering::Relaxed);
    }
}

/// Where a region keeps its spans' states: a type, not a function
/// pointer, so that the lookups inline into the list operations.
pub trait SpanTable {
    /// The state of span `index`.
    fn span(index: usize) -> &'static SpanState;
}

/// What a purge check asks of a span: whether its free list has stayed as
/// it is for the purge delay. `due(since)` says whether a list unchanged
/// since the clock read `since` has; `everything` (`malloc_trim`) takes
/// every span as settled. A span whose list changed since the last check
/// is stamped `now`: the free path reads no clock, and the delay is counted
/// from the first check that sees the list so.
pub struct PurgeCheck<D: Fn(u32) -> bool> {
    pub now: u32,
    pub due: D,
    pub everything: bool,
}

impl<D: Fn(u32) -> bool> PurgeCheck<D> {
    fn is_settled(&self, state: &SpanState) -> bool {
        let since = state.since.load(Ordering::Relaxed);
        if self.everything || (since != 0 && (self.due)(since)) {
            return true;
        }
        if since == 0 {
            state.since.store(self.now | 1, Ordering::Relaxed);
        }
        false
    }
}

/// A class's spans with free blocks, and the span it carves new blocks
/// from, `[carve_next, carve_end)`, in the region whose span table is `T`.
pub struct ClassList<T: SpanTable> {
    table: PhantomData<T>,
    /// Spans with free blocks, by [`fullness`]: blocks are taken from the
    /// fullest first, so that the emptiest become wholly free and can be
    /// purged rather than each keeping a few blocks in use.
    partial: [Link; BUCKETS],
    /// A bit per list of `partial` that is not empty.
    nonempty: u8,
    carve_span: Link,
    carve_next: usize,
    carve_end: usize,
    /// Whether the carved span's pages were all zero.
    carve_zeroed: bool,
}

impl<T: SpanTable> ClassList<T> {
    pub const fn new() -> Self {
        ClassList {
            table: PhantomData,
            partial: [0; BUCKETS],
            nonempty: 0,
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
        T::span(index).reset();
        self.carve_span = link(index);
        self.carve_next = start;
        self.carve_end = end;
        self.carve_zeroed = zeroed;
    }

    /// Puts span `index`, with `free` of its `carved` blocks free, at the
    /// head of the list its fullness calls for.
    fn push_partial(&mut self, index: usize, free: u32, carved: u32) {
        let bucket = fullness(free, carved);
        let state = T::span(index);
        let head = self.partial[bucket];
        state.previous.store(0, Ordering::Relaxed);
        state.next.store(head, Ordering::Relaxed);
        state.bucket.store(bucket as u32, Ordering::Relaxed);
        let (low, high) = fullness_bounds(bucket, carved);
        state.low.store(low, Ordering::Relaxed);
        state.high.store(high, Ordering::Relaxed);
        self.nonempty |= 1 << bucket;
        if head != 0 {
            T::span(head as usize - 1)
                .previous
                .store(link(index), Ordering::Relaxed);
        }
        self.partial[bucket] = link(index);
    }

    fn unlink(&mut self, index: usize) {
        let state = T::span(index);
        let previous = state.previous.load(Ordering::Relaxed);
        let next = state.next.load(Ordering::Relaxed);
        if previous == 0 {
            let bucket = state.bucket.load(Ordering::Relaxed) as usize % BUCKETS;
            self.partial[bucket] = next;
            if next == 0 {
                self.nonempty &= !(1 << bucket);
            }
        } else {
            T::span(previous as usize - 1)
                .next
                .store(next, Ordering::Relaxed);
        }
        if next != 0 {
            T::span(next as usize - 1)
                .previous
                .store(previous, Ordering::Relaxed);
        }
    }

    /// Moves span `index`, which has free blocks, to the list its fullness
    /// now calls for.
    fn rebucket(&mut self, index: usize, free: u32, carved: u32) {
        self.unlink(index);
        self.push_partial(index, free, carved);
    }

    /// The spans with free blocks, emptiest list first, each read before
    /// `visit` may take it out of its list.
    fn for_each_partial(&mut self, mut visit: impl FnMut(&mut Self, usize) -> bool) {
        for bucket in (0..BUCKETS).rev() {
            let mut next = self.partial[bucket];
            while next != 0 {
                let index = next as usize - 1;
                next = T::span(index).next.load(Ordering::Relaxed);
                if !visit(self, index) {
                    return;
                }
            }
        }
    }

    /// Whether every block carved from span `index` is on its free list.
    fn is_idle(&self, index: usize) -> bool {
        let state = T::span(index);
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
        T::span(index).reset();
    }

    /// A free block of `size` bytes: from the fullest span with free
    /// blocks, else carved. Says whether it is known to be zero
    /// (`freed_zeroed` for a block from a free list).
    pub fn take_block(&mut self, size: usize, freed_zeroed: bool) -> Option<(*mut c_void, bool)> {
        let mut block: *mut c_void = ptr::null_mut();
        let mut tail: *mut *mut c_void = &mut block;
        // SAFETY: `tail` points to `block`, which takes the one block.
        unsafe {
            if self.take_from_fullest(size, 1, 1, &mut tail) == 1 {
                // Its link is cleared: the block is the caller's now.
                tail.write(ptr::null_mut());
                return Some((block, freed_zeroed));
            }
            (self.carve(size, 1, &mut tail) == 1).then_some((block, self.carve_zeroed))
        }
    }

    /// Free blocks of `size` bytes, from the fullest spans with free
    /// blocks, then carved, linked through their first word and
    /// null-terminated; and how many: `max`, fewer when the class runs
    /// out, more (up to `whole_max`) when a span's list is taken whole. A
    /// span gives all it can at once; a list that need not be read (see
    /// [`SpanState::last`]) is spliced whole if its blocks fit in
    /// `whole_max`.
    pub fn take_blocks(&mut self, size: usize, max: u16, whole_max: u16) -> (*mut c_void, u16) {
        let mut head: *mut c_void = ptr::null_mut();
        let mut tail: *mut *mut c_void = &mut head;
        let mut count = 0;
        // SAFETY: `tail` is `head` or the link of the last block taken,
        // ours now.
        unsafe {
            while count < u32::from(max) {
                let whole_max = u32::from(whole_max.max(max)) - count;
                match self.take_from_fullest(size, u32::from(max) - count, whole_max, &mut tail) {
                    0 => break,
                    taken => count += taken,
                }
            }
            count += self.carve(size, u32::from(max).saturating_sub(count), &mut tail);
            // (A carved block holds what a span's last class left there,
            // or zero.)
            tail.write(ptr::null_mut());
        }
        (head, count as u16)
    }

    /// Takes up to `max` blocks from the fullest span with free blocks (all
    /// of them when its list can be spliced whole and they are at most
    /// `whole_max`), linking them from `*tail` and moving `tail` to the
    /// last one's link; returns how many (0 when no span has free blocks).
    ///
    /// # Safety
    /// `*tail` must point to a word the caller may write.
    unsafe fn take_from_fullest(
        &mut self,
        size: usize,
        max: u32,
        whole_max: u32,
        tail: &mut *mut *mut c_void,
    ) -> u32 {
        if self.nonempty == 0 {
            return 0;
        }
        let index = self.partial[self.nonempty.trailing_zeros() as usize % BUCKETS] as usize - 1;
        let state = T::span(index);
        // Plain loads and stores: the class's lock is held (a locked
        // read-modify-write costs more than the rest of the operation).
        let free_count = state.free_count.load(Ordering::Relaxed);
        let mut block = state.free.load(Ordering::Relaxed);
        // SAFETY: the caller's contract for `*tail`.
        unsafe { tail.write(block) };
        let whole = state.last.load(Ordering::Relaxed);
        let taken = if !whole.is_null() && free_count <= whole_max {
            // The whole list, its blocks unread: their lines were most
            // likely written last by the threads that freed them, and the
            // taker reads each link when it hands the block out.
            block = whole;
            free_count
        } else {
            let taken = free_count.min(max);
            for _ in 1..taken {
                // SAFETY: `block` is one of the span's free blocks, taken
                // here. Its link is read, and written only when it is a
                // zero word (the next block): a block's line was most likely
                // written last by the thread that freed it, and a write here
                // would take it from that thread's cache a second time.
                unsafe {
                    let link = block.cast::<*mut c_void>();
                    let next = link.read();
                    block = if next.is_null() {
                        let next = block.wrapping_byte_add(size);
                        link.write(next);
                        next
                    } else {
                        next
                    };
                }
            }
            taken
        };
        // The last block taken: its link is the caller's tail.
        *tail = block.cast();
        block = if taken < free_count {
            // SAFETY: a free block of the span, the last one taken; a list
            // taken whole has none after it.
            unsafe { next_free(block, size) }
        } else {
            // An empty list ends with null, so that the frees that build
            // the next one make it whole ([`SpanState::last`]).
            state.last.store(ptr::null_mut(), Ordering::Relaxed);
            ptr::null_mut()
        };
        state.free.store(block, Ordering::Relaxed);
        let left = free_count - taken;
        state.free_count.store(left, Ordering::Relaxed);
        if left == 0 {
            self.unlink(index);
        } else if left < state.low.load(Ordering::Relaxed) {
            self.rebucket(index, left, state.carved.load(Ordering::Relaxed));
        }
        // Its list changed: a purge check starts its delay afresh.
        state.since.store(0, Ordering::Relaxed);
        taken
    }

    /// Carves up to `max` blocks of `size` bytes, writing each to `*tail`
    /// and moving `tail` to its link; returns how many.
    ///
    /// # Safety
    /// `*tail` must point to a word the caller may write.
    unsafe fn carve(&mut self, size: usize, max: u32, tail: &mut *mut *mut c_void) -> u32 {
        if !self.can_carve(size) {
            return 0;
        }
        let room = (self.carve_end - self.carve_next) / size;
        let taken = room.min(max as usize);
        for _ in 0..taken {
            let block = self.carve_next as *mut c_void;
            self.carve_next += size;
            // SAFETY: the caller's contract for `*tail`, then the link of a
            // block carved here, the caller's now.
            unsafe {
                tail.write(block);
                *tail = block.cast();
            }
        }
        let carved = &T::span(self.carve_span as usize - 1).carved;
        carved.store(
            carved.load(Ordering::Relaxed) + taken as u32,
            Ordering::Relaxed,
        );
        taken as u32
    }

    /// Puts `count` freed blocks of `size` bytes back on their span,
    /// `index`: `first` to `last`, linked through their first word; returns
    /// whether the span is now wholly free, with nothing more to carve.
    ///
    /// # Safety
    /// The blocks must be blocks of span `index` of this class, taken from
    /// it and now given back by their owner, linked from `first` to `last`.
    pub unsafe fn put_blocks(
        &mut self,
        first: *mut c_void,
        last: *mut c_void,
        count: u32,
        index: usize,
        size: usize,
    ) -> bool {
        let state = T::span(index);
        // SAFETY: the caller's contract; the last block's link joins the
        // span's list.
        unsafe {
            last.cast::<*mut c_void>()
                .write(state.free.load(Ordering::Relaxed))
        };
        state.free.store(first, Ordering::Relaxed);
        let before = state.free_count.load(Ordering::Relaxed);
        let free_count = before + count;
        state.free_count.store(free_count, Ordering::Relaxed);
        if before == 0 {
            // A new list, null-terminated (an empty list's head is null).
            state.last.store(last, Ordering::Relaxed);
            self.push_partial(index, free_count, state.carved.load(Ordering::Relaxed));
        } else if free_count > state.high.load(Ordering::Relaxed) {
            self.rebucket(index, free_count, state.carved.load(Ordering::Relaxed));
        }
        // Its list changed: a purge check starts its delay afresh.
        state.since.store(0, Ordering::Relaxed);
        self.is_wholly_free(index, size)
    }

    /// Puts the freed block `p` of `size` bytes back on its span, `index`;
    /// returns whether the span is now wholly free, with nothing more to
    /// carve.
    ///
    /// # Safety
    /// `p` must be a block of span `index` of this class, taken from it and
    /// now given back by its owner.
    pub unsafe fn put_block(&mut self, p: *mut c_void, index: usize, size: usize) -> bool {
        // SAFETY: the caller's contract, for a run of one block.
        unsafe { self.put_blocks(p, p, 1, index, size) }
    }

    /// Takes out of the class up to `out.len()` idle spans (the one being
    /// carved too) that `check` finds settled; writes their indexes to
    /// `out` and returns how many.
    pub fn take_idle<D: Fn(u32) -> bool>(
        &mut self,
        check: &PurgeCheck<D>,
        out: &mut [usize],
    ) -> usize {
        let mut count = 0;
        self.for_each_partial(|list, index| {
            if list.is_idle(index) && check.is_settled(T::span(index)) {
                list.remove_span(index);
                out[count] = index;
                count += 1;
            }
            count < out.len()
        });
        count
    }

    /// Gives back to the kernel the whole pages of free blocks in the spans
    /// that still hold allocated ones and that `check` finds settled
    /// (wholly free spans go with [`ClassList::take_idle`]). A span's pages
    /// are discarded once; the next change to its list starts its delay
    /// again.
    ///
    /// Each span's list is rewritten in address order, a block followed by
    /// its free neighbour linking to it by a zero word, so that only the
    /// page holding the last link of each run of free blocks must stay;
    /// `discard(start, len)` is called for the rest, under the class's lock
    /// (a block taken after it would be zeroed by a late discard).
    /// `start_of(index)` is span `index`'s address, `page` the page size.
    pub fn discard_free_pages<D: Fn(u32) -> bool>(
        &mut self,
        check: &PurgeCheck<D>,
        size: usize,
        page: usize,
        start_of: impl Fn(usize) -> usize,
        mut discard: impl FnMut(usize, usize),
    ) {
        self.for_each_partial(|list, index| {
            let state = T::span(index);
            if list.is_idle(index) || state.since.load(Ordering::Relaxed) == DISCARDED {
                return true;
            }
            if check.is_settled(state) {
                // SAFETY: the span is on this class's list, under its lock.
                unsafe { relink_in_order(state, start_of(index), size, page, &mut discard) };
                state.since.store(DISCARDED, Ordering::Relaxed);
            }
            true
        });
    }

    /// [`ClassList::discard_free_pages`], the pages going back to the
    /// kernel; returns whether any went.
    pub fn release_free_pages<D: Fn(u32) -> bool>(
        &mut self,
        check: &PurgeCheck<D>,
        size: usize,
        start_of: impl Fn(usize) -> usize,
    ) -> bool {
        let mut released = false;
        let page = address_space::page_size();
        self.discard_free_pages(check, size, page, start_of, |from, len| {
            // SAFETY: whole pages of free blocks on the class's lists, which
            // no one reads while its lock is held; their links read as zero
            // afterwards, as written.
            unsafe { address_space::discard(from, len) };
            released = true;
        });
        released
    }

    /// Bytes the class holds free: blocks on its spans' lists, and what is
    /// left to carve.
    pub fn free_bytes(&self, size: usize) -> usize {
        let mut blocks = self.carve_end.saturating_sub(self.carve_next) / size;
        for &head in &self.partial {
            let mut next = head;
            while next != 0 {
                let state = T::span(next as usize - 1);
                blocks += state.free_count.load(Ordering::Relaxed) as usize;
                next = state.next.load(Ordering::Relaxed);
            }
        }
        blocks * size
    }
}

/// Rewrites `state`'s list of free blocks in address order (see
/// [`ClassList::discard_free_pages`]) and discards the whole pages its runs
/// of free blocks cover, but for the page of each run's last link.
///
/// # Safety
/// `state` must be a span of blocks of `size` bytes starting at `start`, on
/// its class's list, under the class's lock.
unsafe fn relink_in_order(
    state: &SpanState,
    start: usize,
    size: usize,
    page: usize,
    discard: &mut impl FnMut(usize, usize),
) {
    let count = state.free_count.load(Ordering::Relaxed) as usize;
    let mut free = [0u64; MAX_SPAN_BLOCKS / 64];
    let mut block = state.free.load(Ordering::Relaxed);
    for _ in 0..count {
        let n = (block as usize).wrapping_sub(start) / size;
        if n >= MAX_SPAN_BLOCKS {
            // Not a span this can describe: leave its list as it is.
            return;
        }
        free[n / 64] |= 1 << (n % 64);
        // SAFETY: one of the span's `count` free blocks (the caller's
        // contract).
        block = unsafe { next_free(block, size) };
    }
    // SAFETY: a free block of the span (the caller's contract); its first
    // word is written only when it changes, so that a discarded page that
    // already reads as wanted is not faulted in again.
    let set_link = |block: usize, link: usize| unsafe {
        let word = block as *mut usize;
        if word.read() != link {
            word.write(link);
        }
    };
    let discard_pages = |discard: &mut dyn FnMut(usize, usize), from: usize, to: usize| {
        let from = from.next_multiple_of(page);
        let to = to / page * page;
        if from < to {
            discard(from, to - from);
        }
    };
    // Zero links from here on: no longer a list to splice whole.
    state.last.store(ptr::null_mut(), Ordering::Relaxed);
    let mut head = 0;
    let mut run_start = 0;
    let mut previous = 0;
    for (word_index, &word) in free.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let n = word_index * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let block = start + n * size;
            if previous == 0 {
                head = block;
                run_start = block;
            } else if block == previous + size {
                set_link(previous, 0);
            } else {
                set_link(previous, block);
                // The run ended at `previous`, whose page keeps its link.
                discard_pages(discard, run_start, previous);
                run_start = block;
            }
            previous = block;
        }
    }
    if previous != 0 {
        // The last block's link is never read: the count ends the list.
        set_link(previous, 0);
        discard_pages(discard, run_start, previous + size);
    }
    state.free.store(head as *mut c_void, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;
    use std::{assert, assert_eq, vec};

    const SPAN: usize = 64 << 10;
    /// The page sizes of aarch64 kernels (x86_64 has the first).
    const PAGE_SIZES: [usize; 3] = [4 << 10, 16 << 10, 64 << 10];

    /// One per test that runs at the same time as the others.
    static STATES: [SpanState; 8] = [const {
        SpanState {
            free: AtomicPtr::new(ptr::null_mut()),
            last: AtomicPtr::new(ptr::null_mut()),
            free_count: AtomicU32::new(0),
            carved: AtomicU32::new(0),
            previous: AtomicU32::new(0),
            next: AtomicU32::new(0),
            bucket: AtomicU32::new(0),
            low: AtomicU32::new(0),
            high: AtomicU32::new(0),
            arena: AtomicU32::new(0),
            last_class: AtomicU32::new(0),
            since: AtomicU32::new(0),
        }
    }; 8];

    struct TestSpans;

    impl SpanTable for TestSpans {
        fn span(index: usize) -> &'static SpanState {
            &STATES[index]
        }
    }

    /// A span-sized, page-aligned buffer, leaked (the test's blocks point
    /// into it).
    fn span_memory(page: usize) -> usize {
        let words = vec![0u64; (SPAN + page) / 8].leak();
        (words.as_mut_ptr() as usize).next_multiple_of(page)
    }

    /// Carves every block of a span, frees all but `kept` in a scrambled
    /// order, discards the free pages (zeroing them, as the kernel would),
    /// and checks that the list then holds exactly the freed blocks.
    fn check_discard(size: usize, page: usize, kept: &[usize]) {
        let start = span_memory(page);
        let blocks = SPAN / size;
        let mut list = ClassList::<TestSpans>::new();
        list.start_carving(0, start, start + blocks * size, true);
        let taken: Vec<usize> = (0..blocks)
            .map(|_| list.take_block(size, false).unwrap().0 as usize)
            .collect();
        assert_eq!(
            taken,
            (0..blocks).map(|n| start + n * size).collect::<Vec<_>>()
        );
        let mut order: Vec<usize> = (0..blocks).filter(|n| !kept.contains(n)).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, x as usize % (i + 1));
        }
        for &n in &order {
            // SAFETY: a block of span 0 taken above, freed once.
            assert!(!unsafe { list.put_block((start + n * size) as *mut c_void, 0, size) });
        }
        let mut discarded = Vec::new();
        let trim = PurgeCheck {
            now: 0,
            due: |_| false,
            everything: true,
        };
        list.discard_free_pages(
            &trim,
            size,
            page,
            |_| start,
            |from, len| {
                discarded.push((from, len));
                // SAFETY: inside the test's span buffer.
                unsafe { ptr::write_bytes(from as *mut u8, 0, len) };
            },
        );
        for &(from, len) in &discarded {
            assert_eq!(from % page, 0);
            assert_eq!(len % page, 0);
            for &n in kept {
                let block = start + n * size;
                assert!(
                    block + size <= from || block >= from + len,
                    "kept block {n} discarded"
                );
            }
        }
        let discarded_bytes: usize = discarded.iter().map(|&(_, len)| len).sum();
        let free_bytes = order.len() * size;
        // Every run of free blocks loses at most its ends and one page.
        assert!(
            discarded_bytes + (kept.len() + 1) * 3 * page.max(size) >= free_bytes,
            "discarded {discarded_bytes} of {free_bytes}"
        );
        let mut seen = BTreeSet::new();
        for _ in 0..order.len() {
            let (block, _) = list.take_block(size, false).unwrap();
            assert!(seen.insert(block as usize), "block {block:?} twice");
            // SAFETY: a block just taken: its link word is cleared.
            assert_eq!(unsafe { (block as *const usize).read() }, 0);
        }
        let expected: BTreeSet<usize> = order.iter().map(|n| start + n * size).collect();
        assert_eq!(seen, expected);
        assert!(list.take_block(size, false).is_none());
    }

    #[test]
    fn discarding_free_pages_keeps_the_list_and_the_allocated_blocks() {
        for page in PAGE_SIZES {
            for size in [16, 48, 1024, 4096, 6144, 16384] {
                check_discard(size, page, &[0]);
                check_discard(size, page, &[1, 2, SPAN / size / 2, SPAN / size - 1]);
                check_discard(size, page, &[SPAN / size / 3]);
            }
        }
    }

    /// A class list whose span `index` of `size`-byte blocks has had every
    /// block carved and taken; the span's start, and its blocks in order.
    fn span_all_taken(
        index: usize,
        size: usize,
        page: usize,
    ) -> (ClassList<TestSpans>, usize, Vec<*mut c_void>) {
        let start = span_memory(page);
        let mut list = ClassList::<TestSpans>::new();
        list.start_carving(index, start, start + SPAN / size * size, true);
        let taken = (0..SPAN / size)
            .map(|_| list.take_block(size, false).unwrap().0)
            .collect();
        (list, start, taken)
    }

    /// A span in use gives its free pages back once its list has stayed
    /// as it is for the delay, and once only until the list changes.
    #[test]
    fn free_pages_of_a_span_in_use_go_back_once_its_list_settles() {
        let page = 4096;
        let size = 1024;
        let (mut list, start, taken) = span_all_taken(2, size, page);
        // Blocks 8..32 free: pages 2 to 7.
        for &p in &taken[8..32] {
            // SAFETY: a block of span 2 taken above, freed once.
            unsafe { list.put_block(p, 2, size) };
        }
        let check = |list: &mut ClassList<TestSpans>, now: u32| {
            let mut pages = 0;
            let check = PurgeCheck {
                now,
                due: |since: u32| now.wrapping_sub(since) >= 1000,
                everything: false,
            };
            list.discard_free_pages(
                &check,
                size,
                page,
                |_| start,
                |_, len| {
                    pages += len / page;
                },
            );
            pages
        };
        assert_eq!(check(&mut list, 100), 0, "first seen: stamped");
        assert_eq!(check(&mut list, 600), 0, "not due yet");
        // The run's last link is never read: its page goes too.
        assert_eq!(check(&mut list, 1200), 6, "due");
        assert_eq!(check(&mut list, 5000), 0, "discarded already");
        // SAFETY: as above.
        unsafe { list.put_block(taken[40], 2, size) };
        assert_eq!(check(&mut list, 5100), 0, "changed: stamped again");
        // Block 40 shares its page with blocks in use; block 31 now links
        // to it, so that page stays.
        assert_eq!(check(&mut list, 6200), 5, "due again");
        assert_eq!(list.take_block(size, false).unwrap().0, taken[8]);
        assert_eq!(check(&mut list, 6300), 0, "changed again");
        // Block 8 is in use again: page 2 stays.
        assert_eq!(check(&mut list, 7400), 4, "due again");
    }

    /// A span's list is the one its share of free blocks calls for, and the
    /// bounds kept with it say exactly when that changes.
    #[test]
    fn fullness_bounds_match_fullness() {
        assert_eq!(fullness(15, 16), 3);
        assert_eq!(fullness(2, 16), 0);
        for carved in 1..200 {
            for bucket in 0..BUCKETS {
                let (low, high) = fullness_bounds(bucket, carved);
                for free in 1..=carved {
                    let inside = low <= free && free <= high;
                    assert_eq!(
                        fullness(free, carved) == bucket,
                        inside,
                        "{free} of {carved}"
                    );
                }
            }
        }
    }

    /// Blocks come from the fullest span first, so that the emptiest can
    /// become wholly free.
    #[test]
    fn blocks_come_from_the_fullest_span_first() {
        let size = 4096;
        let blocks = SPAN / size;
        let (a, b) = (span_memory(4096), span_memory(4096));
        let mut list = ClassList::<TestSpans>::new();
        let carve = |list: &mut ClassList<TestSpans>, index, start| {
            list.start_carving(index, start, start + blocks * size, true);
            (0..blocks)
                .map(|_| list.take_block(size, false).unwrap().0)
                .collect::<Vec<_>>()
        };
        let in_a = carve(&mut list, 3, a);
        let in_b = carve(&mut list, 4, b);
        // Span 4 keeps all but two blocks in use, span 3 one, freed last
        // (the first a single list would offer).
        for &p in &in_b[..2] {
            // SAFETY: a block of span 4 taken above, freed once.
            unsafe { list.put_block(p, 4, size) };
        }
        for &p in &in_a[1..] {
            // SAFETY: a block of span 3 taken above, freed once.
            unsafe { list.put_block(p, 3, size) };
        }
        let mut taken: Vec<_> = (0..2)
            .map(|_| list.take_block(size, false).unwrap().0)
            .collect();
        taken.sort();
        assert_eq!(taken, in_b[..2], "span 4's blocks first");
        assert!(in_a.contains(&list.take_block(size, false).unwrap().0));
    }

    /// Batches come and go a span's run at a time: every block once, the
    /// list null-terminated, counts kept.
    #[test]
    fn batches_take_and_give_back_every_block_once() {
        let size = 2048;
        let blocks = SPAN / size;
        let (a, b) = (span_memory(4096), span_memory(4096));
        let mut list = ClassList::<TestSpans>::new();
        let mut all = Vec::new();
        for (index, start) in [(5, a), (6, b)] {
            list.start_carving(index, start, start + blocks * size, false);
            let (mut block, count) = list.take_blocks(size, 40, 40);
            assert_eq!(count as usize, blocks, "a span's carving, no more");
            while !block.is_null() {
                all.push((index, block));
                // SAFETY: a block of the list just taken.
                block = unsafe { block.cast::<*mut c_void>().read() };
            }
        }
        assert_eq!(all.len(), 2 * blocks);
        // Give back runs of up to 5 of each span (linked in order).
        let runs = all[..blocks].chunks(5).chain(all[blocks..].chunks(5));
        for run in runs {
            let (index, first) = run[0];
            assert!(run.iter().all(|&(i, _)| i == index));
            for pair in run.windows(2) {
                // SAFETY: blocks taken above, ours.
                unsafe { pair[0].1.cast::<*mut c_void>().write(pair[1].1) };
            }
            let last = run[run.len() - 1].1;
            // SAFETY: a run of blocks of span `index`, linked above.
            unsafe { list.put_blocks(first, last, run.len() as u32, index, size) };
        }
        let mut seen = BTreeSet::new();
        loop {
            let (mut block, count) = list.take_blocks(size, 7, 7);
            if count == 0 {
                assert!(block.is_null());
                break;
            }
            for _ in 0..count {
                assert!(seen.insert(block as usize), "{block:?} twice");
                // SAFETY: as above.
                block = unsafe { block.cast::<*mut c_void>().read() };
            }
            assert!(block.is_null(), "null-terminated");
        }
        assert_eq!(seen.len(), 2 * blocks);
    }

    /// A list that frees built since the span's list was last empty is
    /// spliced whole, beyond `max`, when it fits in `whole_max`; once the
    /// purge has rewritten it (zero links), it is read, `max` at a time.
    #[test]
    fn a_list_built_by_frees_is_taken_whole_until_the_purge_rewrites_it() {
        let page = 4096;
        let size = 1024;
        let (mut list, start, taken) = span_all_taken(7, size, page);
        let free = |list: &mut ClassList<TestSpans>| {
            for &p in &taken[8..40] {
                // SAFETY: a block of span 7 taken above, freed once.
                unsafe { list.put_block(p, 7, size) };
            }
        };
        let take = |list: &mut ClassList<TestSpans>, max, whole_max, seen: &mut BTreeSet<usize>| {
            let (mut block, count) = list.take_blocks(size, max, whole_max);
            for _ in 0..count {
                assert!(seen.insert(block as usize), "{block:?} twice");
                // SAFETY: a block of the list just taken.
                block = unsafe { block.cast::<*mut c_void>().read() };
            }
            assert!(block.is_null(), "null-terminated");
            count
        };
        let expected: BTreeSet<usize> = taken[8..40].iter().map(|&p| p as usize).collect();

        free(&mut list);
        let mut seen = BTreeSet::new();
        assert_eq!(take(&mut list, 4, 16, &mut seen), 4, "32 do not fit in 16");
        assert_eq!(take(&mut list, 4, 28, &mut seen), 28, "the rest, whole");
        assert_eq!(seen, expected);

        free(&mut list);
        let everything = PurgeCheck {
            now: 0,
            due: |_| true,
            everything: true,
        };
        list.discard_free_pages(
            &everything,
            size,
            page,
            |_| start,
            |from, len| {
                // SAFETY: inside the test's span buffer.
                unsafe { ptr::write_bytes(from as *mut u8, 0, len) };
            },
        );
        let mut seen = BTreeSet::new();
        assert_eq!(take(&mut list, 4, 64, &mut seen), 4, "rewritten: read");
        assert_eq!(take(&mut list, 28, 64, &mut seen), 28);
        assert_eq!(seen, expected);
        assert_eq!(list.take_blocks(size, 4, 64).1, 0);
    }

    #[test]
    fn an_idle_span_is_reported_wholly_free_once_it_cannot_carve() {
        let start = span_memory(4096);
        let size = 256;
        let mut list = ClassList::<TestSpans>::new();
        list.start_carving(1, start, start + 2 * size, false);
        let a = list.take_block(size, false).unwrap().0;
        // SAFETY: taken above, freed once.
        assert!(!unsafe { list.put_block(a, 1, size) }, "more to carve");
        let b = list.take_block(size, false).unwrap().0;
        assert_eq!(b, a);
        let c = list.take_block(size, false).unwrap().0;
        // SAFETY: as above.
        assert!(!unsafe { list.put_block(b, 1, size) });
        // SAFETY: as above.
        assert!(unsafe { list.put_block(c, 1, size) });
        let mut out = [0; 4];
        let check = |now, due: fn(u32) -> bool| PurgeCheck {
            now,
            due,
            everything: false,
        };
        assert_eq!(list.take_idle(&check(10, |_| false), &mut out), 0);
        assert_eq!(list.take_idle(&check(20, |since| since == 11), &mut out), 1);
        assert_eq!(out[0], 1);
        assert!(list.take_block(size, false).is_none());
    }
}

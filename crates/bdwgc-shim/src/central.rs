//! What the small- and large-block regions share: per size class, a central
//! free list and the unused rest of the newest span, each under a spin lock,
//! plus one lock for growing the region (and whatever span state the region
//! keeps under it).

use core::ffi::c_void;
use core::ptr;

use crate::spin::SpinLocked;

/// A class's free blocks (linked through their first word) and the unused
/// rest of its newest span, `[carve_next, carve_end)`.
pub struct Central {
    pub free: *mut c_void,
    pub carve_next: usize,
    pub carve_end: usize,
}

// SAFETY: only reached under its SpinLocked.
unsafe impl Send for Central {}

impl Central {
    /// Puts the unused rest of the span on the free list (before the class
    /// moves on to another span).
    pub fn retire_carve(&mut self, size: usize) {
        while self.carve_next + size <= self.carve_end {
            let block = self.carve_next as *mut c_void;
            self.carve_next += size;
            // SAFETY: a never-used block of committed region memory.
            unsafe { block.cast::<*mut c_void>().write(self.free) };
            self.free = block;
        }
    }
}

/// A region's central lists, one per size class, and its span lock.
pub struct CentralLists<const CLASSES: usize, Spans = ()> {
    pub classes: [SpinLocked<Central>; CLASSES],
    /// Serializes span creation; guards the region's span state.
    pub span_lock: SpinLocked<Spans>,
}

impl<const CLASSES: usize, Spans> CentralLists<CLASSES, Spans> {
    pub const fn new(spans: Spans) -> Self {
        CentralLists {
            classes: [const {
                SpinLocked::new(Central {
                    free: ptr::null_mut(),
                    carve_next: 0,
                    carve_end: 0,
                })
            }; CLASSES],
            span_lock: SpinLocked::new(spans),
        }
    }

    /// Takes every lock before `fork`, so the child finds none held by a
    /// thread that does not exist there; released again in both processes.
    pub fn lock_all_for_fork(&self) {
        self.span_lock.lock();
        for central in &self.classes {
            central.lock();
        }
    }

    pub fn unlock_all_after_fork(&self) {
        for central in &self.classes {
            central.unlock();
        }
        self.span_lock.unlock();
    }
}

//! Batches of free small blocks parked between thread caches, per class.
//!
//! A thread whose cache of a class is full parks half of it here in one
//! step, and a thread whose cache is empty takes a parked batch in one step
//! (tcmalloc's transfer cache). Without them every block of such a batch
//! goes back onto its span's list and comes off it again, under the class's
//! lock: a program that builds a structure, frees it and builds the next (a
//! compiler, per file), or frees on one thread what another allocates,
//! spent a third of its time there.
//!
//! Parked blocks are free: their live bytes are clear, so the collector
//! does not scan them. Their spans do not know it, so a span with a parked
//! block is not wholly free: the purge drains batches that sat untouched
//! through one of its checks back onto their spans, and `malloc_trim`
//! drains them all ([`crate::small::purge`]).

use core::ffi::c_void;
use core::ptr;

/// Batches per class: with the thread caches' batches of about 8 KiB
/// (`small::batch`), at most 64 KiB a class and 4 MiB in all.
const SLOTS: usize = 8;

/// A null-terminated list of free blocks, linked through their first word.
#[derive(Clone, Copy)]
pub struct Batch {
    pub head: *mut c_void,
    pub count: u16,
}

impl Batch {
    const EMPTY: Batch = Batch {
        head: ptr::null_mut(),
        count: 0,
    };
}

/// One class's parked batches, under their own lock (`small::PARKED`).
pub struct Parked {
    batches: [Batch; SLOTS],
    len: usize,
    /// A batch was parked or taken since the purge's last check.
    touched: bool,
}

// SAFETY: the blocks a batch links belong to whoever holds the lock around
// `Parked`; nothing else reaches them.
unsafe impl Send for Parked {}

impl Parked {
    pub const fn new() -> Self {
        Parked {
            batches: [Batch::EMPTY; SLOTS],
            len: 0,
            touched: false,
        }
    }

    /// Parks `batch`, or gives it back when every slot is taken.
    pub fn park(&mut self, batch: Batch) -> Result<(), Batch> {
        if self.len == SLOTS {
            return Err(batch);
        }
        self.batches[self.len] = batch;
        self.len += 1;
        self.touched = true;
        Ok(())
    }

    /// The batch parked last.
    pub fn take(&mut self) -> Option<Batch> {
        self.len = self.len.checked_sub(1)?;
        self.touched = true;
        Some(self.batches[self.len])
    }

    /// Every batch, when none was parked or taken since the last call (or
    /// always, with `everything`); the purge puts them back on their spans.
    /// Clears the mark either way.
    pub fn take_idle(&mut self, everything: bool, out: &mut [Batch; SLOTS]) -> usize {
        let idle = everything || !self.touched;
        self.touched = false;
        if !idle {
            return 0;
        }
        let len = self.len;
        out[..len].copy_from_slice(&self.batches[..len]);
        self.len = 0;
        len
    }

    /// Blocks parked.
    pub fn blocks(&self) -> usize {
        self.batches[..self.len]
            .iter()
            .map(|batch| usize::from(batch.count))
            .sum()
    }
}

/// Room for what [`Parked::take_idle`] hands out.
pub fn no_batches() -> [Batch; SLOTS] {
    [Batch::EMPTY; SLOTS]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        Batch {
            head: n as *mut c_void,
            count: n as u16,
        }
    }

    #[test]
    fn batches_come_back_last_in_first_out_and_idle_ones_drain() {
        let mut parked = Parked::new();
        for n in 1..=SLOTS {
            assert!(parked.park(batch(n)).is_ok());
        }
        assert_eq!(parked.park(batch(99)).err().map(|b| b.count), Some(99));
        assert_eq!(parked.blocks(), (1..=SLOTS).sum::<usize>());
        assert_eq!(parked.take().map(|b| b.count), Some(SLOTS as u16));

        // Touched since the last check: kept; then idle through one: drained.
        let mut out = no_batches();
        assert_eq!(parked.take_idle(false, &mut out), 0);
        assert_eq!(parked.take_idle(false, &mut out), SLOTS - 1);
        assert_eq!(out[0].count, 1);
        assert_eq!(parked.blocks(), 0);
        assert!(parked.take().is_none());

        // Everything: drained even when just touched.
        assert!(parked.park(batch(5)).is_ok());
        assert_eq!(parked.take_idle(true, &mut out), 1);
        assert_eq!(out[0].count, 5);
    }
}

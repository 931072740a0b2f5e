//! When free memory goes back to the system.
//!
//! A span (small blocks) or unit (large blocks) whose blocks are all free
//! keeps its pages for a while, so that a program that frees and allocates
//! again does not fault them in again; once it has been free for the purge
//! delay it is purged: its pages are given back to the kernel, and it
//! becomes reusable by any size class. A span that still holds allocated
//! blocks gives back the whole pages of its free ones once its free list
//! has stayed unchanged for the delay. The delay is
//! `BDWGC_SHIM_PURGE_DELAY_MS` milliseconds, [`DEFAULT_DELAY_MS`] unless
//! set; 0 purges as soon as a span is free.
//!
//! While the regions grow (a span or unit is faulted in, new or purged
//! before; not a small span taken back by the class that gave it up), the
//! delay does not apply to spans: what has stayed free through
//! one check (4 ms) is purged, so that memory freed in one size class serves
//! the next phase's other sizes instead of adding to the process's peak
//! ([`note_growth`]). The large region's freed units, which blocks of any
//! size reuse, keep the delay.
//!
//! The check runs from the allocator itself, not from a thread of its own
//! (a thread would be one more the program did not start, and would have to
//! be kept out of the collector's way): every 256 allocations of a thread
//! and on every large allocation it reads a coarse clock (vDSO, no system
//! call); every 4 ms at most it looks whether the regions grew, and visits
//! their spans when they did or a few times per delay. A process that stops
//! allocating keeps what it had; `malloc_trim` purges at once.
//!
//! Under an address-space limit (`RLIMIT_AS`) the delay is 0: the program
//! may need the address space for other mappings (libgc's heap, thread
//! stacks), as glibc unmaps its large blocks when they are freed.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::central::PurgeCheck;
use crate::{large, small};

/// jemalloc waits 10 s, mimalloc 10 ms. Measured with the benchmarks: at 0
/// the realloc growth took 4.5x its time and producer/consumer 4x (a span
/// purged as it became free was faulted in again at once), at 10 ms realloc
/// 3.3x; from 100 ms on every row ran as fast as at 10 s. A real program
/// decides the rest: the Crystal compiler building a program peaked at
/// 1.07x its plain RSS with 1 s, 1.03x with 250 ms (what a second of its
/// freed memory costs, kept through the next phase's growth); with debug
/// information 1.10x at 250 ms, 1.05x with no delay while the regions grow
/// ([`note_growth`]).
pub const DEFAULT_DELAY_MS: u32 = 250;

static DELAY_MS: AtomicU32 = AtomicU32::new(DEFAULT_DELAY_MS);
/// The clock reading before which no check is due.
static NEXT_CHECK_MS: AtomicU32 = AtomicU32::new(0);
/// The clock reading before which a check visits the regions' spans only
/// when they grew.
static NEXT_SWEEP_MS: AtomicU32 = AtomicU32::new(0);
/// Set while one thread purges; the others go on.
static PURGING: AtomicBool = AtomicBool::new(false);
/// Set when a region faulted in fresh pages for a new span or unit since
/// the last check ([`note_growth`]).
static GREW: AtomicBool = AtomicBool::new(false);
/// The coarse clock's step.
const MIN_INTERVAL_MS: u32 = 4;
/// Whether the last check saw an address-space limit.
static LIMITED: AtomicBool = AtomicBool::new(false);

/// Reads `BDWGC_SHIM_PURGE_DELAY_MS` (during set-up, when getenv is safe),
/// and whether an address-space limit is in force.
pub fn read_environment() {
    // SAFETY: the name is NUL-terminated; getenv returns null or a
    // NUL-terminated string that lives as long as the environment.
    let value = unsafe { libc::getenv(c"BDWGC_SHIM_PURGE_DELAY_MS".as_ptr()) };
    if !value.is_null() {
        // SAFETY: a NUL-terminated string (above).
        let bytes = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
        if let Some(ms) = parse_milliseconds(bytes) {
            DELAY_MS.store(ms, Ordering::Relaxed);
        }
    }
    refresh_limit();
    // The first check is due now (a clock past 2^31 ms would otherwise read
    // a start of 0 as in the future).
    NEXT_CHECK_MS.store(now_ms(), Ordering::Relaxed);
    NEXT_SWEEP_MS.store(now_ms(), Ordering::Relaxed);
}

/// Decimal milliseconds; `None` for anything else (the default stays).
fn parse_milliseconds(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u32, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

fn refresh_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    LIMITED.store(
        rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY,
        Ordering::Relaxed,
    );
}

/// Milliseconds on a coarse monotonic clock, wrapping.
pub fn now_ms() -> u32 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    (t.tv_sec as u32)
        .wrapping_mul(1000)
        .wrapping_add((t.tv_nsec / 1_000_000) as u32)
}

/// Whether what became free at `since` is due for purging at `now`.
pub fn is_due(since: u32, now: u32) -> bool {
    now.wrapping_sub(since) >= delay_ms()
}

/// What a check at `now` asks of the regions' spans.
pub fn span_check(now: u32, sweep: Sweep) -> PurgeCheck<impl Fn(u32) -> bool> {
    PurgeCheck {
        now,
        due: move |since| sweep == Sweep::Growing || is_due(since, now),
        everything: sweep == Sweep::Everything,
    }
}

/// What a purge gives back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sweep {
    /// What has been free for the delay.
    Due,
    /// While the regions grow, without the delay: the spans' free memory
    /// that has stayed free through one check. Not sooner: purging wholly
    /// free spans at the first check that sees them made xmalloc-test
    /// (blocks freed by another thread) 15% slower, its spans emptied and
    /// filled again. Not the large region's freed units, which blocks of
    /// any size reuse: purging them as well made a program that replaces
    /// 5-25 MiB buffers 30 times slower.
    Growing,
    /// Everything free (`malloc_trim`).
    Everything,
}

/// Tells the purge that a region is faulting in fresh pages (a span or
/// unit that is new or was purged; the small region does not count a span
/// that its class takes back, see `small::new_span`): the next check (within 4 ms) gives
/// back the spans' free memory without waiting for the delay
/// ([`Sweep::Growing`]); so does every check while the regions keep
/// growing.
///
/// Why: memory freed in one size class is reused by another only once it
/// has been purged (a span leaves its class, a page goes back), and a
/// program that moves on to blocks of other sizes would otherwise grow by
/// what it freed in the last delay (glibc coalesces freed blocks at once).
/// A program that frees and allocates blocks of the same sizes reuses its
/// spans, its regions do not grow, and the delay applies to it. Only the
/// regions' growth counts, not the process's: purging on every new peak
/// of the resident set (libgc's heap grows too) left the Crystal compiler
/// 3-6 MiB higher.
#[inline]
pub fn note_growth() {
    if !GREW.load(Ordering::Relaxed) {
        GREW.store(true, Ordering::Relaxed);
    }
}

/// Whether a span or unit that has just become free is purged now: when
/// the delay is 0, or an address-space limit is in force (read again here,
/// since the program may have set one a moment ago; a span becomes free far
/// less often than a block).
pub fn is_immediate() -> bool {
    if DELAY_MS.load(Ordering::Relaxed) == 0 {
        return true;
    }
    refresh_limit();
    LIMITED.load(Ordering::Relaxed)
}

fn delay_ms() -> u32 {
    if LIMITED.load(Ordering::Relaxed) {
        0
    } else {
        DELAY_MS.load(Ordering::Relaxed)
    }
}

/// Purges what is due, when a check is due: called from the allocator's
/// slow paths. Takes only the regions' spin locks, never libgc's.
#[inline]
pub fn tick() {
    let now = now_ms();
    // A signed difference: the next check is in the past (or long ago).
    if (now.wrapping_sub(NEXT_CHECK_MS.load(Ordering::Relaxed)) as i32) < 0 {
        return;
    }
    tick_slow(now);
}

#[cold]
#[inline(never)]
fn tick_slow(now: u32) {
    if PURGING.swap(true, Ordering::Acquire) {
        return;
    }
    NEXT_CHECK_MS.store(now.wrapping_add(MIN_INTERVAL_MS), Ordering::Relaxed);
    // A look at the flag every 4 ms; the regions' spans are visited only
    // while they grow, or a few times per delay.
    let growing = GREW.swap(false, Ordering::Relaxed);
    let sweep_due = now.wrapping_sub(NEXT_SWEEP_MS.load(Ordering::Relaxed)) as i32 >= 0;
    if growing || sweep_due {
        refresh_limit();
        let interval = (delay_ms() / 4).clamp(MIN_INTERVAL_MS, 1000);
        NEXT_SWEEP_MS.store(now.wrapping_add(interval), Ordering::Relaxed);
        purge(now, if growing { Sweep::Growing } else { Sweep::Due });
    }
    PURGING.store(false, Ordering::Release);
}

/// Purges every free span and unit now, whatever the delay (`malloc_trim`);
/// returns whether anything was given back.
pub fn purge_everything() -> bool {
    while PURGING.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let released = purge(now_ms(), Sweep::Everything);
    PURGING.store(false, Ordering::Release);
    released
}

/// Waits for a purge in progress and holds off others across `fork`, so
/// that the child finds none half done; released in both processes.
pub fn lock_for_fork() {
    while PURGING.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

pub fn unlock_after_fork() {
    PURGING.store(false, Ordering::Release);
}

fn purge(now: u32, sweep: Sweep) -> bool {
    let small = small::purge(now, sweep);
    let large = large::purge(now, sweep);
    small | large
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_parses_as_decimal_milliseconds() {
        assert_eq!(parse_milliseconds(b"0"), Some(0));
        assert_eq!(parse_milliseconds(b"250"), Some(250));
        assert_eq!(parse_milliseconds(b""), None);
        assert_eq!(parse_milliseconds(b"1s"), None);
        assert_eq!(parse_milliseconds(b"-1"), None);
        assert_eq!(parse_milliseconds(b"99999999999"), None);
    }

    #[test]
    fn due_after_the_delay_across_the_clock_wrapping() {
        DELAY_MS.store(1000, Ordering::Relaxed);
        assert!(!is_due(5000, 5999));
        assert!(is_due(5000, 6000));
        assert!(is_due(u32::MAX - 10, 990));
        assert!(!is_due(u32::MAX - 10, 980));
    }
}

//! Counters that show the shim at work, and the one-line summary printed at
//! exit when `BDWGC_SHIM_DEBUG=1` is set.
//!
//! The allocation counter is per thread and added to the shared total every
//! [`FLUSH_EVERY`] allocations, so that the malloc fast path does not write
//! a cache line that every thread shares; the same moment drives the
//! allocator's periodic work (purging, deferred frees).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::tls::ThreadState;
use crate::Stats;

/// The per-thread counter is a byte: it flushes when it wraps.
const FLUSH_EVERY: u64 = 256;

static ROUTED: AtomicU64 = AtomicU64::new(0);
static BEFORE_INIT: AtomicU64 = AtomicU64::new(0);
static FALLBACK: AtomicU64 = AtomicU64::new(0);
static THREADS_REGISTERED: AtomicU64 = AtomicU64::new(0);
static DEFERRED_FREES: AtomicU64 = AtomicU64::new(0);
static DEBUG: AtomicBool = AtomicBool::new(false);

#[inline(always)]
pub fn count_routed(me: &ThreadState) {
    let n = me.unflushed_routed.get().wrapping_add(1);
    me.unflushed_routed.set(n);
    if n == 0 {
        every_256_allocations(me);
    }
}

/// Out of the fast path, so that it needs no stack frame.
#[cold]
#[inline(never)]
fn every_256_allocations(me: &ThreadState) {
    ROUTED.fetch_add(FLUSH_EVERY, Ordering::Relaxed);
    // Now and then, give back what has been free long enough, and free what
    // was freed where libgc could not be called (the fast paths do not look).
    crate::purge::tick();
    crate::alloc::release_deferred_frees(me);
}

/// Adds this thread's unflushed allocations to the total (at thread exit).
pub fn flush(me: &ThreadState) {
    ROUTED.fetch_add(u64::from(me.unflushed_routed.replace(0)), Ordering::Relaxed);
}

#[cold]
pub fn count_libc(before_init: bool) {
    let counter = if before_init { &BEFORE_INIT } else { &FALLBACK };
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn count_thread_registered() {
    THREADS_REGISTERED.fetch_add(1, Ordering::Relaxed);
}

pub fn count_deferred_free() {
    DEFERRED_FREES.fetch_add(1, Ordering::Relaxed);
}

pub fn snapshot() -> Stats {
    let mine = u64::from(crate::tls::current().unflushed_routed.get());
    let memory = crate::memory::report();
    Stats {
        allocations_routed: ROUTED.load(Ordering::Relaxed) + mine,
        allocations_before_init: BEFORE_INIT.load(Ordering::Relaxed),
        allocations_fallback: FALLBACK.load(Ordering::Relaxed),
        threads_registered: THREADS_REGISTERED.load(Ordering::Relaxed),
        deferred_frees: DEFERRED_FREES.load(Ordering::Relaxed),
        bytes_mapped: memory.mapped as u64,
        bytes_resident: crate::memory::resident_bytes() as u64,
        bytes_in_use: memory.in_use as u64,
        bytes_free: memory.free as u64,
        bytes_purged: memory.purged as u64,
    }
}

/// Reads `BDWGC_SHIM_DEBUG` (during initialization, when getenv is safe).
pub fn read_environment() {
    // SAFETY: the name is NUL-terminated; getenv returns null or a
    // NUL-terminated string that lives as long as the environment.
    let value = unsafe { libc::getenv(c"BDWGC_SHIM_DEBUG".as_ptr()) };
    // SAFETY: `value` is non-null here, so it points to at least one byte.
    let on = !value.is_null() && !matches!(unsafe { *value } as u8, 0 | b'0');
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn print_summary_if_asked() {
    if !DEBUG.load(Ordering::Relaxed) {
        return;
    }
    let s = snapshot();
    let version = crate::sys::gc::version();
    let mut line = crate::memory::TextBuffer::<384>::new();
    let _ = write!(
        line,
        "bdwgc-shim {}: active={} ",
        crate::VERSION,
        if crate::is_active() { "yes" } else { "no" },
    );
    let _ = if version == 0 {
        // No libgc in this process (a program the preload reached by
        // inheritance, say).
        write!(line, "libgc=absent")
    } else {
        write!(
            line,
            "libgc={}.{}.{}",
            version >> 16,
            (version >> 8) & 0xff,
            version & 0xff
        )
    };
    let _ = writeln!(
        line,
        " routed={} before_init={} fallback={} threads_registered={} deferred_frees={} \
         mapped_kib={} resident_kib={}",
        s.allocations_routed,
        s.allocations_before_init,
        s.allocations_fallback,
        s.threads_registered,
        s.deferred_frees,
        s.bytes_mapped >> 10,
        s.bytes_resident >> 10,
    );
    let text = line.as_bytes();
    // SAFETY: writes the line, readable for its length, to stderr.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

//! Makes a whole process safe for the Boehm-Demers-Weiser garbage collector
//! (bdwgc, "libgc"), including the C libraries it uses.
//!
//! libgc only scans memory it allocated and only knows threads that were
//! registered with it. A C library that keeps pointers to collected objects
//! in `malloc` memory, or calls back into collected code from threads it
//! started, breaks both rules: objects are freed while in use, and the
//! collector aborts ("Collecting from unknown thread") or hangs.
//!
//! This crate defines the malloc family, `pthread_create`, the signal-mask
//! functions, `dlopen`, `timer_create` and `mq_notify` for the whole process:
//!
//! - malloc memory comes from the collector, scanned but never collected
//!   (until freed), so objects referenced from it stay alive;
//! - every thread is registered with the collector before its code runs, and
//!   unregistered when it ends; threads libgc starts for itself are not;
//! - no registered thread can block the collector's stop-the-world signals.
//!
//! # Use
//!
//! In a Rust program that uses libgc (directly or through `bdwgc-alloc`),
//! depend on this crate and add one line to `main.rs`:
//!
//! ```ignore
//! use bdwgc_shim as _;
//! ```
//!
//! The crate links libgc into the program (the shared `libgc.so`, found with
//! pkg-config's `bdw-gc`), so calling libgc through `extern "C"`
//! declarations needs no build script. The `static-libgc` feature (or
//! `BDWGC_SHIM_LIBGC_STATIC=1`) links the static `libgc.a` instead;
//! `default-features = false` links none, for programs that get libgc
//! elsewhere (bdwgc-alloc builds its own).
//!
//! With [`bdwgc-alloc`](https://crates.io/crates/bdwgc-alloc) as the
//! `#[global_allocator]`, threads no longer call
//! `Allocator::register_current_thread()`: the shim has registered them
//! before their first line runs, so that call now fails with an error.
//!
//! C and Crystal programs link `libbdwgc_shim.a` or `libbdwgc_shim.so`, or
//! preload the latter; see the repository's README.
//!
//! The shim never initializes libgc: the program does (`GC_INIT()`, or
//! libgc's implicit initialization at the first `GC_MALLOC`), with every
//! setting it makes before that. Until then malloc is served from the
//! shim's regions, which libgc scans from its first collection; the shim
//! takes libgc up at the first call it sees after the initialization, and
//! registers threads from then on (a thread started earlier, at its first
//! allocation after it).
//!
//! # Platforms
//!
//! Active on Linux with glibc on x86_64 and aarch64 (any page size: it is
//! read at run time). Everywhere else the crate builds,
//! defines nothing, and [`is_active`] returns false.
//!
//! # Cost and limits
//!
//! Blocks up to 8 KiB come from the shim's own region through
//! per-thread caches, without libgc's lock; blocks up to 256 MiB from a
//! second region. The collector scans the live blocks of both (a live byte
//! or bit per block, read from libgc's root-pushing hook and a mark
//! procedure), never freed ones, so freed blocks are not cleared: a reused
//! block holds its last owner's bytes, as with glibc. Aligned blocks (up
//! to 2 MiB alignment) come from the regions too; larger blocks and
//! alignments take libgc's allocation lock. The regions (4 GiB and
//! 64 GiB) reserve nothing: they map their address space as they grow, so
//! `RLIMIT_AS` applies to them like to any mapping. A span whose blocks
//! are all free goes back to the system after a delay
//! (`BDWGC_SHIM_PURGE_DELAY_MS`, 250 ms by default), and `malloc_trim(0)`
//! gives back everything free at once. malloc
//! memory is scanned at every collection. Memory glibc handed out before
//! the shim was set up stays unscanned until it is reallocated. Threads started
//! with raw `clone`, and pointers hidden from a conservative scan (XOR-ed,
//! compressed, written to files), are out of reach.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(shim_active)]
mod address_space;
#[cfg(shim_active)]
mod alloc;
#[cfg(shim_active)]
pub mod api;
#[cfg(shim_active)]
mod central;
#[cfg(shim_active)]
mod dlopen;
#[cfg(shim_active)]
mod init;
#[cfg(shim_active)]
mod large;
#[cfg(shim_active)]
mod memory;
#[cfg(shim_active)]
mod proc_self;
#[cfg(shim_active)]
mod purge;
#[cfg(shim_active)]
mod real;
#[cfg(shim_active)]
mod scan;
#[cfg(shim_active)]
mod signals;
#[cfg(shim_active)]
mod small;
#[cfg(shim_active)]
mod spin;
#[cfg(shim_active)]
mod stats;
#[cfg(shim_active)]
mod sys;
#[cfg(shim_active)]
mod threads;
#[cfg(shim_active)]
mod tls;
#[cfg(shim_active)]
mod transfer;

/// A snapshot of the shim's counters. Mirrors `bdwgc_shim_stats` in
/// `include/bdwgc_shim.h`; new fields are only ever added at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations served by the collector: scanned, never collected.
    /// Counted per thread and added up in batches, so a snapshot may miss up
    /// to 255 recent allocations of each other running thread.
    pub allocations_routed: u64,
    /// Allocations served by glibc because the collector was not set up yet.
    pub allocations_before_init: u64,
    /// Allocations served by glibc after set-up: made while libgc itself was
    /// running on that thread, or by a thread that had left the collector.
    pub allocations_fallback: u64,
    /// Threads the shim registered with the collector.
    pub threads_registered: u64,
    /// Frees that had to wait because libgc might hold its lock.
    pub deferred_frees: u64,
    /// Address space the shim's regions have mapped (blocks and tables).
    pub bytes_mapped: u64,
    /// How much of it is in memory.
    pub bytes_resident: u64,
    /// Bytes of blocks handed out and not freed (with the free small blocks
    /// threads keep in their caches).
    pub bytes_in_use: u64,
    /// Free bytes the regions keep for reuse, with their pages.
    pub bytes_free: u64,
    /// Free bytes whose pages went back to the kernel (still mapped).
    pub bytes_purged: u64,
}

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const VERSION_C: &core::ffi::CStr =
    match core::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())
    {
        Ok(s) => s,
        Err(_) => panic!("version contains NUL"),
    };

/// True when the shim routes this process's allocations and threads through
/// the collector: a supported platform, libgc linked, initialization done.
pub fn is_active() -> bool {
    #[cfg(shim_active)]
    {
        init::is_serving()
    }
    #[cfg(not(shim_active))]
    {
        false
    }
}

/// The shim's counters (allocations routed, threads registered, ...).
pub fn stats() -> Stats {
    #[cfg(shim_active)]
    {
        stats::snapshot()
    }
    #[cfg(not(shim_active))]
    {
        Stats::default()
    }
}

/// Registers the calling thread with the collector if it is not registered
/// yet. Never needed for threads made with `pthread_create` (or
/// `std::thread`); useful for a thread that calls libgc before it allocates
/// anything with malloc, when the shim could not see the thread start.
/// Returns whether the thread is registered.
pub fn register_current_thread() -> bool {
    #[cfg(shim_active)]
    {
        init::register_current_thread()
    }
    #[cfg(not(shim_active))]
    {
        false
    }
}

/// The C API where the shim is inactive: it reports itself inactive.
#[cfg(not(shim_active))]
pub mod api {
    use core::ffi::{c_char, c_int};

    #[no_mangle]
    pub extern "C" fn bdwgc_shim_version() -> *const c_char {
        crate::VERSION_C.as_ptr()
    }

    #[no_mangle]
    pub extern "C" fn bdwgc_shim_is_active() -> c_int {
        0
    }

    /// # Safety
    /// `out` must be null or valid for writing a `bdwgc_shim_stats`.
    #[no_mangle]
    pub unsafe extern "C" fn bdwgc_shim_get_stats(out: *mut crate::Stats) {
        if !out.is_null() {
            // SAFETY: caller's contract.
            unsafe { out.write(crate::Stats::default()) };
        }
    }
}

#[cfg(test)]
mod tests {
    // This test binary links no libgc: the shim must stay out of the way,
    // with every hook passing straight to glibc.
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn inactive_without_libgc() {
        assert!(!crate::is_active());
        assert!(!crate::register_current_thread());
    }

    #[test]
    fn hooks_pass_through_without_libgc() {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|n| std::vec![i; n])
                        .map(|v| v.len())
                        .sum::<usize>()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 4 * 999 * 1000 / 2);
        let stats = crate::stats();
        assert_eq!(stats.allocations_routed, 0);
        assert_eq!(stats.threads_registered, 0);
    }
}

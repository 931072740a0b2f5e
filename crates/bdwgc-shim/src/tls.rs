//! Per-thread state, in a thread-local block with the initial-exec TLS model.
//!
//! Rust's `thread_local!` uses the general-dynamic model in a shared library,
//! and that model reaches the variable through `__tls_get_addr`, which may
//! call malloc: fatal inside malloc itself. Initial-exec variables sit at a
//! fixed offset from the thread pointer and cost one load, with no call and
//! no allocation. Stable Rust cannot ask for that model, so the block is
//! declared in assembly and addressed with the initial-exec sequence of
//! each architecture (one `GOTTPOFF` load on x86_64, `adrp`/`ldr` of its
//! `gottprel` entry on aarch64).
//!
//! The block starts zeroed in every thread, so every field's zero value is
//! the state of a thread the shim has not seen yet.

use core::cell::Cell;

use crate::small::ThreadCache;

/// What the shim knows about the calling thread.
///
/// `mode`, three zero bytes and `bypass` make the first 8 bytes, which the
/// malloc and free fast paths test with one load ([`Self::may_allocate_fast`],
/// [`Self::may_free_fast`]).
#[repr(C)]
pub struct ThreadState {
    /// One of the `MODE_*` constants.
    pub mode: Cell<u8>,
    /// Always zero (see above).
    zero: [u8; 3],
    /// Non-zero while this thread is inside libgc on the shim's behalf (or
    /// libgc may hold its lock): allocations go to glibc, frees are deferred.
    pub bypass: Cell<u32>,
    /// The shim registered this thread and must unregister it at exit.
    pub owns_registration: Cell<bool>,
    /// How many times the thread-exit destructor has re-armed itself.
    pub exit_rounds: Cell<u8>,
    /// The next `dlopen` on this thread comes from inside `GC_dlopen`.
    pub in_gc_dlopen: Cell<bool>,
    /// Allocations routed to the collector and not yet added to the totals
    /// (modulo 256: every 256th is added with them).
    pub unflushed_routed: Cell<u8>,
    /// The thread-exit destructor is armed (it flushes the cache).
    pub exit_armed: Cell<bool>,
    /// Where the collector should scan this thread's stack from once it
    /// registers the thread (0: ask libgc). Recorded by the shim's thread
    /// start when the thread starts before the shim could register it.
    pub stack_base: Cell<usize>,
    /// The thread's last mask change asked to block the collector's
    /// suspend signal (the shim does not let it: see
    /// `signals::note_mask_request`).
    pub asked_to_block_collector: Cell<bool>,
    /// Free small blocks kept for this thread's next allocations.
    pub cache: ThreadCache,
}

/// Not seen yet: decide on the first allocation.
pub const MODE_UNKNOWN: u8 = 0;
/// Registered with the collector: allocations go to scanned memory.
pub const MODE_COLLECTOR: u8 = 1;
/// Not (or no longer) registered and not registrable: allocations go to glibc.
pub const MODE_LIBC: u8 = 2;
/// Allocates from the shim's regions, but is not registered yet: libgc is
/// not initialized, or the shim has not taken it up yet. Every allocation
/// takes the slow path, which registers the thread as soon as it can.
pub const MODE_PENDING: u8 = 3;

core::arch::global_asm!(
    ".pushsection .tbss.bdwgc_shim_thread_state,\"awT\",@nobits",
    ".p2align 4",
    ".globl bdwgc_shim_thread_state",
    ".hidden bdwgc_shim_thread_state",
    ".type bdwgc_shim_thread_state, @object",
    ".size bdwgc_shim_thread_state, 1024",
    "bdwgc_shim_thread_state:",
    ".zero 1024",
    ".popsection",
);

const _: () = assert!(core::mem::size_of::<ThreadState>() <= 1024);

/// The calling thread's state.
#[inline(always)]
pub fn current() -> &'static ThreadState {
    let state: *const ThreadState;
    // SAFETY: reads the thread pointer (%fs:0 holds its own address on
    // x86_64 glibc) and adds the block's offset from the GOT; both are valid
    // for the whole life of the thread and the code has no other effect.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + bdwgc_shim_thread_state@GOTTPOFF]",
            p = out(reg) state,
            options(pure, readonly, nostack),
        );
    }
    // SAFETY: reads the thread pointer (TPIDR_EL0) and adds the block's
    // offset, loaded from the GOT (the initial-exec sequence); both are
    // valid for the whole life of the thread and the code has no other
    // effect.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!(
            "mrs {p}, tpidr_el0",
            "adrp {offset}, :gottprel:bdwgc_shim_thread_state",
            "ldr {offset}, [{offset}, #:gottprel_lo12:bdwgc_shim_thread_state]",
            "add {p}, {p}, {offset}",
            p = out(reg) state,
            offset = out(reg) _,
            options(pure, readonly, nostack),
        );
    }
    // SAFETY: the block is 1024 zero-initialized, 16-aligned bytes owned by
    // this thread; ThreadState is made of Cells valid when all-zero, and the
    // reference never leaves the thread (ThreadState is not Sync).
    unsafe { &*state }
}

impl ThreadState {
    /// `mode` and `bypass` together, as the first 8 bytes hold them.
    #[inline(always)]
    fn mode_and_bypass(&self) -> u64 {
        const _: () = assert!(core::mem::offset_of!(ThreadState, bypass) == 4);
        // SAFETY: the first 8 bytes of the block are `mode`, `zero` and
        // `bypass` (repr(C), offsets checked above), all plain initialized
        // integers that only this thread writes.
        let word = unsafe { (self as *const Self).cast::<u64>().read() };
        u64::from_le(word)
    }

    /// Registered and not inside libgc: allocations may come from the
    /// thread's cache. (`mode` in the low byte, `bypass` in the high half.)
    #[inline(always)]
    pub fn may_allocate_fast(&self) -> bool {
        self.mode_and_bypass() == u64::from(MODE_COLLECTOR)
    }

    /// Registered or pending and not inside libgc: frees may go to the
    /// thread's cache. MODE_COLLECTOR (1) and MODE_PENDING (3) differ only
    /// in bit 1.
    #[inline(always)]
    pub fn may_free_fast(&self) -> bool {
        const _: () = assert!(MODE_PENDING == MODE_COLLECTOR | 2 && MODE_LIBC & 1 == 0);
        self.mode_and_bypass() & !2 == u64::from(MODE_COLLECTOR)
    }

    /// Runs `f` with allocations on this thread sent to glibc.
    #[inline]
    pub fn bypassing<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bypass.set(self.bypass.get() + 1);
        let result = f();
        self.bypass.set(self.bypass.get() - 1);
        result
    }
}

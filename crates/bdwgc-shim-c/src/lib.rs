//! Builds the `bdwgc-shim` crate as `libbdwgc_shim.a` and `libbdwgc_shim.so`
//! for C, Crystal and preloading. The hooks and the C API of
//! `include/bdwgc_shim.h` all come from the `bdwgc-shim` crate; this crate
//! only adds what a Rust library without `std` needs to stand alone.

#![cfg_attr(not(test), no_std)]

// Link the core crate in: its exported symbols are this library's.
pub use shim::api;

/// A panic inside a malloc hook cannot unwind into C: stop the process.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: abort has no preconditions and never returns.
    unsafe { libc::abort() }
}

// The unwinding personality that precompiled `core` refers to. Nothing in
// this library catches or cleans up during an unwind (it is built with
// `panic = "abort"`), so every frame lets an unwind pass
// (_URC_CONTINUE_UNWIND): that is what a `pthread_exit` or a cancellation
// crossing the shim's thread trampolines needs. Hidden, so that it never
// takes the place of a Rust program's own personality.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, @function",
    "rust_eh_personality:",
    "    mov eax, 8",
    "    ret",
    ".size rust_eh_personality, . - rust_eh_personality",
);
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, %function",
    "rust_eh_personality:",
    "    mov w0, #8",
    "    ret",
    ".size rust_eh_personality, . - rust_eh_personality",
);

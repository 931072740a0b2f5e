//! Every symbol the shim exports, in one place. Each hook is a thin shell
//! over the module that does the work; the libc function a hook replaces is
//! reached through `crate::real` or glibc's `__libc_*` names.
//!
//! Defined in the final program (static archive, Rust crate) or in a library
//! loaded before libc (preloaded or linked), these definitions take the place
//! of glibc's for the whole process, including glibc's own internal calls.

use core::ffi::{c_char, c_int, c_void};

use crate::sys::StartRoutine;
use crate::{alloc, dlopen as dl, memory, real, signals, stats, threads, tls};

// ---------------------------------------------------------------------------
// The malloc family

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc::malloc(size)
}

#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    alloc::calloc(count, size)
}

/// # Safety
/// As C's `realloc`.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: caller's contract.
    unsafe { alloc::realloc(ptr, size) }
}

/// # Safety
/// As glibc's `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: caller's contract.
    unsafe { alloc::reallocarray(ptr, count, size) }
}

/// # Safety
/// As C's `free`.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: caller's contract.
    unsafe { alloc::free(ptr) }
}

/// # Safety
/// As POSIX `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: caller's contract.
    unsafe { alloc::posix_memalign(out, align, size) }
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    alloc::aligned_alloc(align, size)
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    alloc::memalign(align, size)
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc::valloc(size)
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    alloc::pvalloc(size)
}

/// # Safety
/// As glibc's `malloc_usable_size`.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: caller's contract.
    unsafe { alloc::usable_size(ptr) }
}

/// Gives free memory back to the system now; 1 when some was released.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    memory::trim(pad)
}

#[no_mangle]
pub extern "C" fn mallinfo2() -> memory::MallInfo2 {
    memory::mallinfo2_or_glibc()
}

#[no_mangle]
pub extern "C" fn mallinfo() -> memory::MallInfo {
    memory::mallinfo_or_glibc()
}

#[no_mangle]
pub extern "C" fn malloc_stats() {
    memory::print_stats()
}

/// # Safety
/// As glibc's `malloc_info`.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    // SAFETY: caller's contract.
    unsafe { memory::print_info(options, stream) }
}

// ---------------------------------------------------------------------------
// Threads and signals

/// # Safety
/// As POSIX `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: caller's contract.
    unsafe { threads::create(thread, attr, start, arg) }
}

/// # Safety
/// As POSIX `pthread_sigmask`.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    match real::pthread_sigmask() {
        // SAFETY: caller's contract.
        Some(real_sigmask) => unsafe { set_mask_through(real_sigmask, how, set, old) },
        None => libc::ENOSYS,
    }
}

/// # Safety
/// As POSIX `sigprocmask`.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    match real::sigprocmask() {
        // SAFETY: caller's contract.
        Some(real_sigprocmask) => unsafe { set_mask_through(real_sigprocmask, how, set, old) },
        None => fail_with_errno(libc::ENOSYS),
    }
}

type SetMask = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;

/// Calls libc's `real` with `set`, or with a copy of it that leaves the
/// collector's signals unblocked.
///
/// # Safety
/// As `pthread_sigmask`.
unsafe fn set_mask_through(
    real: SetMask,
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: caller's contract for `set`.
    let filtered = unsafe { filtered_mask(how, set) };
    let set = filtered.as_ref().map_or(set, |s| s as *const _);
    // SAFETY: caller's contract; `set` is the caller's or our copy of it.
    unsafe { real(how, set, old) }
}

/// Sets errno and returns -1, as libc functions report failure.
fn fail_with_errno(value: c_int) -> c_int {
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = value };
    -1
}

/// # Safety
/// `set` must be null or valid.
unsafe fn filtered_mask(how: c_int, set: *const libc::sigset_t) -> Option<libc::sigset_t> {
    let me = tls::current();
    if !crate::init::is_serving() || me.bypass.get() != 0 {
        return None;
    }
    // SAFETY: caller's contract.
    unsafe {
        signals::note_mask_request(me, how, set);
        signals::without_collector_signals(how, set)
    }
}

/// # Safety
/// As POSIX `timer_create`.
#[no_mangle]
pub unsafe extern "C" fn timer_create(
    clock: libc::clockid_t,
    event: *mut libc::sigevent,
    timer: *mut libc::timer_t,
) -> c_int {
    let Some(real_timer_create) = real::timer_create() else {
        return fail_with_errno(libc::ENOSYS);
    };
    // SAFETY: caller's contract for `event`.
    match unsafe { threads::wrap_sigev_thread(event) } {
        // SAFETY: caller's contract; our copy outlives the call.
        Ok(Some(mut copy)) => unsafe { real_timer_create(clock, &mut copy, timer) },
        // SAFETY: caller's contract.
        Ok(None) => unsafe { real_timer_create(clock, event, timer) },
        Err(()) => fail_with_errno(libc::EAGAIN),
    }
}

/// # Safety
/// As POSIX `mq_notify`.
#[no_mangle]
pub unsafe extern "C" fn mq_notify(mq: libc::mqd_t, event: *const libc::sigevent) -> c_int {
    let Some(real_mq_notify) = real::mq_notify() else {
        return fail_with_errno(libc::ENOSYS);
    };
    // SAFETY: caller's contract for `event`.
    match unsafe { threads::wrap_sigev_thread(event) } {
        // SAFETY: caller's contract; our copy outlives the call.
        Ok(Some(copy)) => unsafe { real_mq_notify(mq, &copy) },
        // SAFETY: caller's contract.
        Ok(None) => unsafe { real_mq_notify(mq, event) },
        Err(()) => fail_with_errno(libc::ENOMEM),
    }
}

// ---------------------------------------------------------------------------
// Libraries

/// # Safety
/// As POSIX `dlopen`.
#[no_mangle]
pub unsafe extern "C" fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    // SAFETY: caller's contract.
    unsafe { dl::dlopen(file, mode) }
}

// ---------------------------------------------------------------------------
// The C API of include/bdwgc_shim.h (also available on unsupported targets).

/// The shim's version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn bdwgc_shim_version() -> *const c_char {
    crate::VERSION_C.as_ptr()
}

/// 1 when the shim routes this process's allocations and threads through
/// the collector, 0 otherwise.
#[no_mangle]
pub extern "C" fn bdwgc_shim_is_active() -> c_int {
    c_int::from(crate::is_active())
}

/// Fills `*out` with the current counters; does nothing when `out` is null.
///
/// # Safety
/// `out` must be null or valid for writing a `bdwgc_shim_stats`.
#[no_mangle]
pub unsafe extern "C" fn bdwgc_shim_get_stats(out: *mut crate::Stats) {
    if !out.is_null() {
        // SAFETY: caller's contract.
        unsafe { out.write(stats::snapshot()) };
    }
}

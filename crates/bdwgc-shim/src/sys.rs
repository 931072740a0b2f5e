//! Raw declarations: the libgc functions the shim calls, and the glibc
//! functions it falls back to. Nothing here has any logic; the rest of the
//! crate reaches these only through the small safe functions at the bottom.
//!
//! libgc is referenced **weakly**. The shim never defines a `GC_*` symbol and
//! never opens libgc by name: whatever libgc the final program links (the
//! shared `libgc.so.1`, or a static `libgc.a` inside the executable) satisfies
//! the references. When no libgc is linked at all (a preloaded shell started
//! by a program that uses the shim, say), every reference is null and the shim
//! stays out of the way.
//!
//! Rust has no stable weak-import attribute, so the weak references are a
//! table of pointers written in assembly: each entry is the address of one
//! libgc function, or 0 when the linker and loader found none.

use core::ffi::{c_char, c_int, c_uint, c_void};

/// libgc's `struct GC_stack_base` on the targets the shim supports.
#[repr(C)]
pub struct GcStackBase {
    pub mem_base: *mut c_void,
}

/// A thread start routine as libc calls it. `C-unwind` because
/// `pthread_exit` and cancellation unwind through the shim's trampolines.
pub type StartRoutine = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;

/// libgc's hook for pushing roots of its own at each collection
/// (`GC_push_other_roots_proc`).
pub type PushHook = unsafe extern "C" fn();

/// An entry of libgc's mark stack (`struct GC_ms_entry`, gc_mark.h): where
/// to mark from, and how (a descriptor).
#[repr(C)]
pub struct MarkStackEntry {
    pub start: *mut c_void,
    pub descriptor: usize,
}

/// A mark procedure (`GC_mark_proc`): libgc calls it for a mark-stack entry
/// whose descriptor names it, with the stack's top and limit and the
/// descriptor's environment; it returns the new top.
pub type MarkProc = unsafe extern "C" fn(
    addr: *mut usize,
    top: *mut MarkStackEntry,
    limit: *mut MarkStackEntry,
    env: usize,
) -> *mut MarkStackEntry;

/// A descriptor that has libgc mark `[start, start + length)` (gc_mark.h:
/// `GC_DS_LENGTH` is 0; lengths are multiples of 16 here).
pub fn length_descriptor(length: usize) -> usize {
    length
}

/// A descriptor that has libgc call mark procedure `index` with `env`
/// (gc_mark.h: `GC_MAKE_PROC`).
pub fn proc_descriptor(index: u32, env: usize) -> usize {
    const LOG_MAX_MARK_PROCS: u32 = 6;
    const TAG_BITS: u32 = 2;
    const DS_PROC: usize = 2;
    (((env << LOG_MAX_MARK_PROCS) | index as usize) << TAG_BITS) | DS_PROC
}

/// libgc's `GC_SUCCESS`.
pub const GC_SUCCESS: c_int = 0;

/// One table entry per libgc symbol, `bdwgc_shim_weak_<name>`: the
/// symbol's address, or 0 when the program links no libgc.
macro_rules! weak_references {
    ($($name:ident),*) => {
        core::arch::global_asm!(
            ".pushsection .data.rel.ro.bdwgc_shim_libgc,\"aw\",@progbits",
            ".p2align 3",
            $(
                concat!(".weak ", stringify!($name)),
                concat!(".globl bdwgc_shim_weak_", stringify!($name)),
                concat!(".hidden bdwgc_shim_weak_", stringify!($name)),
                concat!("bdwgc_shim_weak_", stringify!($name), ":"),
                concat!(".quad ", stringify!($name)),
            )*
            ".popsection",
        );
    };
}

macro_rules! libgc_weak_functions {
    ($( fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?; )*) => {
        weak_references!($($name),*);

        /// The weak references: `None` when the program links no libgc.
        #[allow(non_upper_case_globals)]
        pub mod libgc {
            #[allow(unused_imports)]
            use super::*;
            extern "C" {
                $(
                    #[link_name = concat!("bdwgc_shim_weak_", stringify!($name))]
                    pub static $name: Option<unsafe extern "C" fn($($ty),*) $(-> $ret)?>;
                )*
            }
        }
    };
}

libgc_weak_functions! {
    fn GC_init();
    fn GC_is_init_called() -> c_int;
    fn GC_get_version() -> c_uint;
    fn GC_get_parallel() -> c_int;
    fn GC_allow_register_threads();
    fn GC_register_my_thread(sb: *const GcStackBase) -> c_int;
    fn GC_unregister_my_thread() -> c_int;
    fn GC_thread_is_registered() -> c_int;
    fn GC_get_stack_base(sb: *mut GcStackBase) -> c_int;
    fn GC_malloc_uncollectable(size: usize) -> *mut c_void;
    fn GC_free(ptr: *mut c_void);
    fn GC_base(ptr: *mut c_void) -> *mut c_void;
    fn GC_size(ptr: *const c_void) -> usize;
    fn GC_pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: StartRoutine,
        arg: *mut c_void
    ) -> c_int;
    fn GC_pthread_join(thread: libc::pthread_t, retval: *mut *mut c_void) -> c_int;
    fn GC_dlopen(file: *const c_char, mode: c_int) -> *mut c_void;
    fn GC_disable();
    fn GC_enable();
    fn GC_get_suspend_signal() -> c_int;
    fn GC_get_thr_restart_signal() -> c_int;
    fn GC_get_push_other_roots() -> Option<PushHook>;
    fn GC_set_push_other_roots(hook: Option<PushHook>);
    fn GC_push_all(bottom: *mut c_void, top: *mut c_void);
    fn GC_push_all_eager(bottom: *mut c_void, top: *mut c_void);
    fn GC_is_incremental_mode() -> c_int;
    fn GC_get_min_bytes_allocd() -> usize;
    fn GC_set_min_bytes_allocd(value: usize);
    fn GC_get_free_space_divisor() -> usize;
    fn GC_new_proc(proc: MarkProc) -> c_uint;
    fn GC_new_free_list() -> *mut *mut c_void;
    fn GC_new_kind(
        free_list: *mut *mut c_void,
        descriptor: usize,
        add_size_to_descriptor: c_int,
        clear_new_objects: c_int
    ) -> c_uint;
    fn GC_generic_malloc(size: usize, kind: c_int) -> *mut c_void;
    fn GC_mark_and_push(
        object: *mut c_void,
        top: *mut MarkStackEntry,
        limit: *mut MarkStackEntry,
        source: *mut *mut c_void
    ) -> *mut MarkStackEntry;
}

/// glibc's own allocator, under the names glibc exports for interposers.
pub mod glibc {
    use core::ffi::c_void;
    extern "C" {
        #[link_name = "__libc_malloc"]
        pub fn malloc(size: usize) -> *mut c_void;
        #[link_name = "__libc_calloc"]
        pub fn calloc(count: usize, size: usize) -> *mut c_void;
        #[link_name = "__libc_realloc"]
        pub fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        #[link_name = "__libc_free"]
        pub fn free(ptr: *mut c_void);
        #[link_name = "__libc_memalign"]
        pub fn memalign(align: usize, size: usize) -> *mut c_void;
        /// POSIX; the `libc` crate does not declare it.
        pub fn pthread_attr_getdetachstate(
            attr: *const libc::pthread_attr_t,
            state: *mut core::ffi::c_int,
        ) -> core::ffi::c_int;
    }
}

/// Reads one weak reference. Reading an extern static is `unsafe` only
/// because Rust cannot see its definition; the table is written once by the
/// loader and never changes.
macro_rules! gc_fn {
    ($name:ident) => {
        // SAFETY: the table entry is an immutable pointer-sized value set by
        // the linker or loader before any code of this process ran.
        unsafe { $crate::sys::libgc::$name }
    };
}

/// Whether the program links a libgc with everything the shim needs.
pub fn libgc_is_linked() -> bool {
    gc_fn!(GC_init).is_some()
        && gc_fn!(GC_is_init_called).is_some()
        && gc_fn!(GC_get_parallel).is_some()
        && gc_fn!(GC_malloc_uncollectable).is_some()
        && gc_fn!(GC_free).is_some()
        && gc_fn!(GC_base).is_some()
        && gc_fn!(GC_size).is_some()
        && gc_fn!(GC_allow_register_threads).is_some()
        && gc_fn!(GC_register_my_thread).is_some()
        && gc_fn!(GC_unregister_my_thread).is_some()
        && gc_fn!(GC_thread_is_registered).is_some()
        && gc_fn!(GC_get_stack_base).is_some()
        && gc_fn!(GC_get_suspend_signal).is_some()
        && gc_fn!(GC_get_thr_restart_signal).is_some()
}

/// Safe shells over the libgc calls. Each returns a neutral value when the
/// function is missing, so callers never dereference a null reference; the
/// shim only calls them once `libgc_is_linked()` held at initialization.
pub mod gc {
    use super::{GcStackBase, MarkProc, MarkStackEntry, PushHook, StartRoutine};
    use core::ffi::{c_char, c_int, c_void};
    use core::ptr;

    macro_rules! call {
        ($name:ident($($arg:expr),*) or $default:expr) => {
            match gc_fn!($name) {
                // SAFETY: the entry is libgc's own function with this
                // signature (declared from gc.h); arguments are checked by
                // the wrapper that uses this macro.
                Some(f) => unsafe { f($($arg),*) },
                None => $default,
            }
        };
    }

    /// Whether libgc has been initialized (by the program, or implicitly by
    /// its first allocation). libgc sets this early in `GC_init`, before
    /// its thread support is set up. Lock-free.
    pub fn is_init_called() -> bool {
        call!(GC_is_init_called() or 0) != 0
    }
    pub fn version() -> u32 {
        call!(GC_get_version() or 0)
    }
    /// Whether libgc's parallel markers are running, or being started: libgc
    /// sets the count just before it creates them. Lock-free.
    pub fn parallel() -> bool {
        call!(GC_get_parallel() or 0) != 0
    }
    pub fn allow_register_threads() {
        call!(GC_allow_register_threads() or ())
    }
    /// Registers the calling thread; its stack is scanned up to `sb`.
    pub fn register_my_thread(sb: &GcStackBase) -> c_int {
        call!(GC_register_my_thread(sb) or -1)
    }
    pub fn unregister_my_thread() {
        call!(GC_unregister_my_thread() or 0);
    }
    pub fn thread_is_registered() -> bool {
        call!(GC_thread_is_registered() or 0) != 0
    }
    /// The calling thread's stack base, or `None` when libgc cannot tell.
    pub fn stack_base() -> Option<GcStackBase> {
        let mut sb = GcStackBase {
            mem_base: ptr::null_mut(),
        };
        let rc = call!(GC_get_stack_base(&mut sb) or -1);
        (rc == super::GC_SUCCESS).then_some(sb)
    }
    /// Scanned memory that is never collected; zeroed. Null when exhausted.
    pub fn malloc_uncollectable(size: usize) -> *mut c_void {
        call!(GC_malloc_uncollectable(size) or ptr::null_mut())
    }
    /// The start of the libgc object that contains `p`, or null when `p` is
    /// not in libgc's heap. Takes no lock; any address is accepted.
    pub fn base(p: *mut c_void) -> *mut c_void {
        call!(GC_base(p) or ptr::null_mut())
    }
    /// Size of the libgc object at `base`.
    ///
    /// # Safety
    /// `base` must be a value returned by [`base`] for a live object.
    pub unsafe fn size(base: *mut c_void) -> usize {
        call!(GC_size(base) or 0)
    }
    /// # Safety
    /// `base` must be the start of a live libgc object, freed only once.
    pub unsafe fn free(base: *mut c_void) {
        call!(GC_free(base) or ())
    }
    pub fn has_pthread_create() -> bool {
        gc_fn!(GC_pthread_create).is_some() && gc_fn!(GC_pthread_join).is_some()
    }
    /// # Safety
    /// As `pthread_create`.
    pub unsafe fn pthread_create(
        thread: *mut libc::pthread_t,
        start: StartRoutine,
        arg: *mut c_void,
    ) -> c_int {
        call!(GC_pthread_create(thread, ptr::null(), start, arg) or libc::EAGAIN)
    }
    pub fn pthread_join(thread: libc::pthread_t) -> c_int {
        call!(GC_pthread_join(thread, ptr::null_mut()) or libc::ESRCH)
    }
    pub fn has_dlopen() -> bool {
        gc_fn!(GC_dlopen).is_some()
    }
    /// # Safety
    /// As `dlopen`.
    pub unsafe fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
        call!(GC_dlopen(file, mode) or ptr::null_mut())
    }
    pub fn disable() {
        call!(GC_disable() or ())
    }
    pub fn enable() {
        call!(GC_enable() or ())
    }
    pub fn suspend_signal() -> c_int {
        call!(GC_get_suspend_signal() or -1)
    }
    pub fn restart_signal() -> c_int {
        call!(GC_get_thr_restart_signal() or -1)
    }
    /// Whether libgc lets the shim push roots of its own at collections.
    pub fn has_push_other_roots() -> bool {
        gc_fn!(GC_get_push_other_roots).is_some()
            && gc_fn!(GC_set_push_other_roots).is_some()
            && gc_fn!(GC_push_all).is_some()
            && gc_fn!(GC_push_all_eager).is_some()
    }
    /// The hook libgc runs at each collection to push roots it does not
    /// know (thread stacks, by default).
    pub fn push_other_roots() -> Option<PushHook> {
        call!(GC_get_push_other_roots() or None)
    }
    /// Replaces that hook; the new one must run the one it replaces.
    pub fn set_push_other_roots(hook: PushHook) {
        call!(GC_set_push_other_roots(Some(hook)) or ())
    }
    /// Has the collector mark from `[start, end)` later in this collection.
    ///
    /// # Safety
    /// Only from a push-other-roots hook; the range must stay readable
    /// until the collection ends (the world is stopped meanwhile).
    pub unsafe fn push_all(start: usize, end: usize) {
        call!(GC_push_all(start as *mut c_void, end as *mut c_void) or ())
    }
    /// Marks from `[start, end)` at once (no mark-stack entry for the range).
    ///
    /// # Safety
    /// As [`push_all`].
    pub unsafe fn push_all_eager(start: usize, end: usize) {
        call!(GC_push_all_eager(start as *mut c_void, end as *mut c_void) or ())
    }
    /// The least allocation between two collections; 0 when libgc has no
    /// such setting.
    pub fn min_bytes_allocd() -> usize {
        call!(GC_get_min_bytes_allocd() or 0)
    }
    /// Sets it (a plain store in libgc, safe during a collection).
    pub fn set_min_bytes_allocd(value: usize) {
        if value > 0 {
            call!(GC_set_min_bytes_allocd(value) or ())
        }
    }
    /// How many times its heap libgc lets a program allocate between
    /// collections, inverted (default 3: a third).
    pub fn free_space_divisor() -> usize {
        call!(GC_get_free_space_divisor() or 3).max(1)
    }
    pub fn is_incremental_mode() -> bool {
        call!(GC_is_incremental_mode() or 0) != 0
    }
    /// Whether libgc lets the shim define an object kind with a mark
    /// procedure of its own.
    pub fn has_mark_procedures() -> bool {
        gc_fn!(GC_new_proc).is_some()
            && gc_fn!(GC_new_free_list).is_some()
            && gc_fn!(GC_new_kind).is_some()
            && gc_fn!(GC_generic_malloc).is_some()
            && gc_fn!(GC_mark_and_push).is_some()
            && gc_fn!(GC_is_incremental_mode).is_some()
    }
    /// Registers a mark procedure; returns its index for descriptors.
    pub fn new_proc(proc: MarkProc) -> u32 {
        call!(GC_new_proc(proc) or 0)
    }
    /// A new object kind whose objects libgc marks with `descriptor`.
    pub fn new_kind(descriptor: usize) -> u32 {
        let free_list = call!(GC_new_free_list() or ptr::null_mut());
        call!(GC_new_kind(free_list, descriptor, 0, 1) or 0)
    }
    /// A collectable object of `kind`; null when out of memory.
    pub fn generic_malloc(size: usize, kind: u32) -> *mut c_void {
        call!(GC_generic_malloc(size, kind as c_int) or ptr::null_mut())
    }
    /// Marks the object `p` points into, if any, and pushes its contents;
    /// returns the new top (handles overflow itself).
    ///
    /// # Safety
    /// Only from a mark procedure, with the `top` and `limit` it was given.
    pub unsafe fn mark_and_push(
        p: *mut c_void,
        top: *mut MarkStackEntry,
        limit: *mut MarkStackEntry,
    ) -> *mut MarkStackEntry {
        call!(GC_mark_and_push(p, top, limit, ptr::null_mut()) or top)
    }
}

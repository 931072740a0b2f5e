//! The libc functions that the shim replaces, found with
//! `dlsym(RTLD_NEXT, name)`: the definition that would have been used had
//! the shim not defined the name.
//!
//! `dlsym` may itself allocate, so every pointer is looked up by
//! [`resolve_all`] during initialization, before libgc runs. A lookup that is
//! still missing later (a hook called from a library constructor that ran
//! before the shim's) is done on the spot: those calls are never made from
//! inside malloc or while libgc holds its lock.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// A C-ABI start routine as libc's `pthread_create` takes it.
pub type CStartRoutine = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

macro_rules! real_functions {
    ($( $rust:ident = $c:literal : fn($($arg:ident: $ty:ty),*) -> $ret:ty; )*) => {
        mod slots {
            use super::AtomicUsize;
            $( #[allow(non_upper_case_globals)] pub static $rust: AtomicUsize = AtomicUsize::new(0); )*
        }

        /// Looks every function up now, while allocating is safe.
        pub fn resolve_all() {
            $( lookup(&slots::$rust, concat!($c, "\0").as_bytes()); )*
        }

        $(
            /// The next definition of
            #[doc = $c]
            /// after the shim's; `None` if the process has none.
            pub fn $rust() -> Option<unsafe extern "C" fn($($ty),*) -> $ret> {
                let addr = lookup(&slots::$rust, concat!($c, "\0").as_bytes());
                if addr == 0 {
                    return None;
                }
                // SAFETY: `addr` is the address of libc's function of this
                // name, whose C prototype the signature above copies.
                Some(unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($ty),*) -> $ret>(addr) })
            }
        )*
    };
}

real_functions! {
    pthread_create = "pthread_create": fn(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: CStartRoutine,
        arg: *mut c_void
    ) -> c_int;
    pthread_sigmask = "pthread_sigmask": fn(
        how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t
    ) -> c_int;
    sigprocmask = "sigprocmask": fn(
        how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t
    ) -> c_int;
    dlopen = "dlopen": fn(file: *const c_char, mode: c_int) -> *mut c_void;
    timer_create = "timer_create": fn(
        clock: libc::clockid_t, event: *mut libc::sigevent, timer: *mut libc::timer_t
    ) -> c_int;
    mq_notify = "mq_notify": fn(mq: libc::mqd_t, event: *const libc::sigevent) -> c_int;
    malloc_usable_size = "malloc_usable_size": fn(ptr: *mut c_void) -> usize;
    malloc_trim = "malloc_trim": fn(pad: usize) -> c_int;
    mallinfo2 = "mallinfo2": fn() -> crate::memory::MallInfo2;
    mallinfo = "mallinfo": fn() -> crate::memory::MallInfo;
    malloc_stats = "malloc_stats": fn() -> ();
    malloc_info = "malloc_info": fn(options: c_int, stream: *mut libc::FILE) -> c_int;
}

fn lookup(slot: &AtomicUsize, name: &[u8]) -> usize {
    let cached = slot.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `name` is NUL-terminated (built with concat! above) and
    // RTLD_NEXT is a valid pseudo-handle for dlsym.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    // Racing lookups find the same address; the last store wins harmlessly.
    slot.store(found, Ordering::Release);
    found
}

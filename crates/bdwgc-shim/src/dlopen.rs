//! `dlopen` runs with collections held off (libgc's `GC_dlopen`): a
//! collection that stops a thread in the middle of loading a library could
//! find the loader's lock taken or the library half mapped.

use core::ffi::{c_char, c_int, c_void};
use core::ptr;

use crate::sys::gc;
use crate::{init, real, tls};

fn real_dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    match real::dlopen() {
        // SAFETY: forwards the caller's arguments unchanged.
        Some(f) => unsafe { f(file, mode) },
        None => ptr::null_mut(),
    }
}

/// The `dlopen` hook.
///
/// glibc resolves a bare library name against the RUNPATH of the object that
/// called `dlopen`. Through the hook, that object is the shim: a library that
/// relies on its own RUNPATH to find what it opens should pass a path.
///
/// # Safety
/// As `dlopen`.
pub unsafe fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    let me = tls::current();
    if me.in_gc_dlopen.replace(false) {
        // This call comes from inside GC_dlopen, below.
        return real_dlopen(file, mode);
    }
    // Before libgc is initialized there is no collection to hold off (and
    // GC_dlopen must not initialize it on the program's behalf).
    if !init::libgc_initialized() || me.bypass.get() != 0 {
        return real_dlopen(file, mode);
    }
    if gc::has_dlopen() {
        me.in_gc_dlopen.set(true);
        // SAFETY: caller's contract; GC_dlopen calls back into this hook.
        let handle = unsafe { gc::dlopen(file, mode) };
        me.in_gc_dlopen.set(false);
        handle
    } else {
        // A static libgc.a whose GC_dlopen was not linked in: the same
        // effect by hand.
        gc::disable();
        let handle = real_dlopen(file, mode);
        gc::enable();
        handle
    }
}

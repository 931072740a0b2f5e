//! The same program without bdwgc-shim: the collector aborts ("Collecting
//! from unknown thread") or loses the threads' objects.

fn shim_active() -> bool {
    false
}

include!("../threads.rs");

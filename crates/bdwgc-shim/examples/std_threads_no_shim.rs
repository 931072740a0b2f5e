//! The same program as `std_threads` without the shim: the collector aborts
//! ("Collecting from unknown thread") or loses the objects.

// Without the shim crate in the program, nothing else links libgc.
#[link(name = "gc")]
extern "C" {}

fn bdwgc_shim_active() -> bool {
    false
}

include!("common/std_threads_body.rs");

//! The same program as `std_threads` without the shim: the collector aborts
//! ("Collecting from unknown thread") or loses the objects.

fn bdwgc_shim_active() -> bool {
    false
}

include!("common/std_threads_body.rs");

//! std threads that use libgc directly, with the shim: the one line below is
//! all it takes. Run: `cargo run --release --example std_threads`.

use bdwgc_shim as _;

fn bdwgc_shim_active() -> bool {
    bdwgc_shim::is_active()
}

include!("common/std_threads_body.rs");

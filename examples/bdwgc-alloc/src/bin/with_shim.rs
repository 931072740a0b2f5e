//! bdwgc-alloc with std threads, and the one line bdwgc-shim asks for.

use bdwgc_shim as _;

fn shim_active() -> bool {
    bdwgc_shim::is_active()
}

include!("../threads.rs");

// BDWGC_SHIM_SONAME gives libbdwgc_shim.so a SONAME: scripts/install sets it
// (libbdwgc_shim.so.0) for the installed library, so that programs linked
// with -lbdwgc_shim record the versioned name. A plain cargo build leaves
// the library without one, as cargo builds any cdylib, so that a program
// linked against target/release finds the file by the name it has there.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BDWGC_SHIM_SONAME");
    let soname = std::env::var("BDWGC_SHIM_SONAME").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !soname.is_empty() && os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
}

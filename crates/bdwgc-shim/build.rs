// The examples call libgc directly; the library itself leaves libgc to the
// final link of whatever program uses it.
//
// `shim_active` marks the targets where the shim does its work: Linux with
// glibc on x86_64 and aarch64. Everywhere else the crate builds, defines
// none of the hooks, and reports itself inactive.
fn main() {
    println!("cargo:rustc-link-arg-examples=-lgc");
    println!("cargo:rustc-check-cfg=cfg(shim_active)");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let arch = var("CARGO_CFG_TARGET_ARCH");
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && (arch == "x86_64" || arch == "aarch64")
    {
        println!("cargo:rustc-cfg=shim_active");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

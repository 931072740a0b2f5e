// Two jobs:
//
// `shim_active` marks the targets where the shim does its work: Linux with
// glibc on x86_64 and aarch64. Everywhere else the crate builds, defines
// none of the hooks, and reports itself inactive.
//
// With the `link-libgc` feature (on by default) the program is linked with
// libgc, as a `-sys` crate links its library: shared, or static with
// `static-libgc` or BDWGC_SHIM_LIBGC_STATIC=1. The shim's own references to
// libgc are weak, so with the shared libgc the linker keeps it (as-needed)
// only when the program itself calls libgc: a program that does not has no
// collector, and the shim stays out of the way.
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(shim_active)");
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let os = var("CARGO_CFG_TARGET_OS");
    if os == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && (arch == "x86_64" || arch == "aarch64")
    {
        println!("cargo:rustc-cfg=shim_active");
    }
    if std::env::var_os("CARGO_FEATURE_LINK_LIBGC").is_some() && os == "linux" {
        link_libgc(var("TARGET") == var("HOST"));
    }
}

fn link_libgc(native: bool) {
    println!("cargo:rerun-if-env-changed=BDWGC_SHIM_LIBGC_STATIC");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    let static_gc = std::env::var_os("CARGO_FEATURE_STATIC_LIBGC").is_some()
        || std::env::var("BDWGC_SHIM_LIBGC_STATIC").is_ok_and(|v| v == "1");
    // pkg-config describes the build machine's libgc; a cross-build leaves
    // the search to the target's linker (Debian's cross gcc looks in the
    // target's multiarch directory).
    if native {
        match libgc_dirs() {
            Some(dirs) => {
                for dir in dirs {
                    println!("cargo:rustc-link-search=native={dir}");
                }
            }
            None => println!(
                "cargo:warning=pkg-config does not know bdw-gc (Debian: apt-get install \
                 libgc-dev); linking -lgc from the default directories"
            ),
        }
    }
    if static_gc {
        // Not bundled into this crate's rlib: the archive is named on the
        // final link, after the objects that call it.
        println!("cargo:rustc-link-lib=static:-bundle=gc");
    } else {
        println!("cargo:rustc-link-lib=dylib=gc");
    }
}

/// The directories pkg-config gives for libgc (none when it is in a system
/// directory), or None without pkg-config or without libgc's `.pc` file.
fn libgc_dirs() -> Option<Vec<String>> {
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(pkg_config)
        .args(["--libs-only-L", "bdw-gc"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(
        text.split_whitespace()
            .filter_map(|flag| flag.strip_prefix("-L"))
            .map(str::to_string)
            .collect(),
    )
}

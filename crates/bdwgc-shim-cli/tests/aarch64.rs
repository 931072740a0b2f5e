//! The scenarios on 64-bit Arm Linux, under qemu-user: each C scenario
//! built with Debian's cross compiler against the arm64 libgc (shared and
//! static), run without the shim, where it must fail, preloaded, and with
//! the archive linked in. Needs `cargo build --release --target
//! aarch64-unknown-linux-gnu -p bdwgc-shim-c` first, and the packages that
//! `scripts/install-deps --all` installs (scripts/test does both).
//!
//! Emulation runs these programs 3 to 10 times slower than the machine
//! itself; the scenarios keep their sizes, and the timeouts grow by
//! [`Target::slowdown`]. What qemu-user does not emulate is left out
//! ([`NOT_UNDER_EMULATION`]), and two measurements the programs make
//! themselves (`under_qemu_user` in tests/c/scenario.h).

use bdwgc_shim_cli::scenarios::{all_scenarios, check_in_modes, debug_summary_lines, Mode, Target};

/// The ways of use checked under emulation: without the shim (shared and
/// static libgc), preloaded, and the archive linked in (shared and static
/// libgc). The shared library linked in and `--whole-archive` differ from
/// these only in the linker's work, which the native tests cover.
const MODES: [Mode; 5] = [
    Mode::Without,
    Mode::WithoutStaticGc,
    Mode::Preload,
    Mode::Static,
    Mode::StaticStaticGc,
];

/// Scenarios that qemu-user cannot run as a kernel would, and why; they
/// are left out here (the code they test is the same on both machines).
const NOT_UNDER_EMULATION: [(&str, &str); 4] = [
    (
        "out-of-memory",
        "qemu-user ignores setrlimit(RLIMIT_AS): it would limit the emulator",
    ),
    (
        "address-limit-after",
        "qemu-user ignores setrlimit(RLIMIT_AS)",
    ),
    (
        "address-limit-before",
        "qemu-user ignores setrlimit(RLIMIT_AS)",
    ),
    (
        "thread-sigev-mq-notify",
        "qemu-user does not implement mq_notify (ENOSYS)",
    ),
];

/// Why the cross tools are missing, or `None` when they are here.
fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [
        "aarch64-linux-gnu-gcc",
        "aarch64-linux-gnu-g++",
        "qemu-aarch64",
    ]
    .into_iter()
    .filter(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
    })
    .collect();
    let libgc = std::path::Path::new("/usr/lib/aarch64-linux-gnu/libgc.a");
    match (missing.is_empty(), libgc.exists()) {
        (true, true) => None,
        _ => Some(format!(
            "missing {missing:?}{}: run scripts/install-deps --all as root",
            if libgc.exists() {
                ""
            } else {
                " and libgc-dev:arm64"
            }
        )),
    }
}

/// Whether to go on: false when skipped on purpose; panics when the
/// tools are missing.
fn tools_ready(name: &str) -> bool {
    if std::env::var_os("BDWGC_SHIM_SKIP_AARCH64").is_some() {
        eprintln!("{name}: skipped (BDWGC_SHIM_SKIP_AARCH64)");
        return false;
    }
    if let Some(why) = missing_tools() {
        panic!("{why}");
    }
    true
}

fn check_scenario(name: &str) {
    if !tools_ready(name) {
        return;
    }
    if let Some((_, why)) = NOT_UNDER_EMULATION.iter().find(|(n, _)| *n == name) {
        eprintln!("{name}: not run under emulation: {why}");
        return;
    }
    let scenario = all_scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let problems = check_in_modes(Target::Aarch64, &scenario, &MODES);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

include!("common/scenario_list.rs");

/// BDWGC_SHIM_DEBUG=1 prints one summary line at exit, on aarch64 too.
#[test]
fn debug_summary_line() {
    if !tools_ready("debug summary line") {
        return;
    }
    let lines = debug_summary_lines(Target::Aarch64).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(": active=yes libgc=8.") && lines[0].contains(" mapped_kib="),
        "{}",
        lines[0]
    );
}

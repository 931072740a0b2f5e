//! Every scenario in every way of using the shim. Without the shim each
//! scenario must fail (that is the proof the shim is what fixes it); with it,
//! in each way of linking or preloading, it must pass and report the shim
//! active. Needs `cargo build --release` first (scripts/test does it).

use std::path::Path;
use std::time::Duration;

use bdwgc_shim_cli::scenarios::{
    all_scenarios, check_in_modes, debug_summary_lines, run_program, shim_dir, Mode, Scenario,
    Target,
};

const TIMEOUT: Duration = Duration::from_secs(90);

fn check_scenario(name: &str) {
    let scenario: Scenario = all_scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let problems = check_in_modes(Target::Native, &scenario, &Mode::ALL);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

include!("common/scenario_list.rs");

/// Runs a Rust program built with the shim and its twin built without it:
/// the first must pass with the shim active, the second must fail.
fn check_rust_pair(label: &str, with_shim: &Path, without_shim: &Path) {
    let run = |path: &Path| {
        run_program(path, &[], false, TIMEOUT).unwrap_or_else(|e| {
            panic!("{e}: run `cargo build --release --workspace --examples` first")
        })
    };
    let (with, without) = (run(with_shim), run(without_shim));
    eprintln!(
        "{label}: without {}, with {}",
        without.summary(),
        with.summary()
    );
    assert!(
        with.passed() && with.shim_reported() == Some(true),
        "with the shim: {with:?}"
    );
    assert!(
        !without.passed() && without.shim_reported() != Some(true),
        "without the shim: {without:?}"
    );
}

/// A Rust program whose std threads use libgc: `use bdwgc_shim as _;` is all
/// it takes (examples/std_threads.rs); the same program without that line
/// fails (examples/std_threads_no_shim.rs).
#[test]
fn rust_std_threads() {
    let examples = shim_dir().join("examples");
    check_rust_pair(
        "rust std threads",
        &examples.join("std_threads"),
        &examples.join("std_threads_no_shim"),
    );
}

/// BDWGC_SHIM_DEBUG=1 prints one summary line at exit.
#[test]
fn debug_summary_line() {
    let lines = debug_summary_lines(Target::Native).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(": active=yes libgc=") && lines[0].contains(" threads_registered="),
        "{}",
        lines[0]
    );
}

/// bdwgc-alloc as the global allocator (a static bdwgc 8.3 of its own): std
/// threads allocate through Box/Vec and collect without registering
/// themselves (examples/bdwgc-alloc).
#[test]
fn rust_bdwgc_alloc_threads() {
    let dir = shim_dir();
    check_rust_pair(
        "bdwgc-alloc threads",
        &dir.join("bdwgc_alloc_threads"),
        &dir.join("bdwgc_alloc_threads_no_shim"),
    );
}

/// The randomized stress (tests/c/cache_stress.c) for longer, preloaded:
/// `BDWGC_SHIM_STRESS_SECONDS` (45 by default; an hour for release checks)
/// and `BDWGC_SHIM_STRESS_SEED` (random by default; printed, so that a
/// failure can be replayed).
#[test]
fn long_random_stress() {
    let seconds: u64 = std::env::var("BDWGC_SHIM_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("BDWGC_SHIM_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    eprintln!(
        "long_random_stress: BDWGC_SHIM_STRESS_SEED={seed} BDWGC_SHIM_STRESS_SECONDS={seconds}"
    );
    let program = bdwgc_shim_cli::scenarios::build("cache_stress", Mode::Preload).unwrap();
    let outcome = run_program(
        &program,
        &[seed.to_string(), seconds.to_string()],
        true,
        Duration::from_secs(seconds * 3 + 60),
    )
    .unwrap();
    assert!(
        outcome.passed() && outcome.shim_reported() == Some(true),
        "seed {seed}: {}\n{}{}",
        outcome.summary(),
        outcome.stdout,
        outcome.stderr
    );
}

/// After a burst and `malloc_trim(0)` (tests/c/burst.c), the shim's RSS is
/// within 1.3 times glibc's after its own trim: the same program, preloaded
/// and not.
#[test]
fn burst_trim_rss_near_glibc() {
    let program = bdwgc_shim_cli::scenarios::build("burst", Mode::Preload).unwrap();
    let rss_after = |preload: bool| {
        let outcome = run_program(&program, &["trim".to_string()], preload, TIMEOUT).unwrap();
        outcome
            .stdout
            .lines()
            .find_map(|line| line.split("rss_after=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no rss_after: {}{}", outcome.stdout, outcome.stderr))
    };
    let (glibc, shim) = (rss_after(false), rss_after(true));
    eprintln!("burst then malloc_trim(0): RSS {glibc} KiB with glibc, {shim} KiB with the shim");
    assert!(
        shim * 10 <= glibc * 13,
        "shim {shim} KiB, glibc {glibc} KiB"
    );
}

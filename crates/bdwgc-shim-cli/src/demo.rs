//! `bdwgc-shim demo`: every scenario once without and once with the shim
//! (preloaded), side by side.

use crate::scenarios::{self, Mode, Outcome};

fn cell(outcome: &Result<Outcome, String>) -> (String, String) {
    match outcome {
        Ok(o) => (o.summary(), format!("{:.2}s", o.elapsed.as_secs_f64())),
        Err(e) => (
            format!("not run: {}", e.lines().next().unwrap_or("")),
            String::new(),
        ),
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// Runs the demo and returns the process exit code: 0 when every scenario
/// passed with the shim.
pub fn run() -> i32 {
    let so = scenarios::shim_dir().join("libbdwgc_shim.so");
    if !so.exists() {
        eprintln!(
            "bdwgc-shim demo: {} is missing; run `cargo build --release` first",
            so.display()
        );
        return 2;
    }
    println!(
        "bdwgc-shim demo: each program uses libgc and a C library that knows nothing about it."
    );
    println!(
        "Each runs once as built, and once with {} preloaded.\n",
        so.display()
    );
    let list = scenarios::all_scenarios();
    let w_name = list.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let (w_without, w_with, w_time) = (40, 28, 7);
    println!(
        "{:<w_name$} {:<w_without$} {:>w_time$}   {:<w_with$} {:>w_time$}",
        "scenario", "without the shim", "time", "with the shim", "time"
    );
    println!(
        "{}",
        "-".repeat(w_name + w_without + w_with + 2 * w_time + 5)
    );
    let mut all_ok = true;
    for scenario in &list {
        let without = scenarios::run(scenario, Mode::Without);
        let with = scenarios::run(scenario, Mode::Preload);
        all_ok &= with.as_ref().map(|o| o.passed()).unwrap_or(false);
        let (a, at) = cell(&without);
        let (b, bt) = cell(&with);
        println!(
            "{:<w_name$} {:<w_without$} {:>w_time$}   {:<w_with$} {:>w_time$}",
            scenario.name,
            truncate(&a, w_without),
            at,
            truncate(&b, w_with),
            bt
        );
    }
    println!();
    for scenario in &list {
        println!("  {:<w_name$} {}", scenario.name, scenario.what);
    }
    println!();
    if all_ok {
        println!("Every scenario passed with the shim.");
        0
    } else {
        println!("Some scenarios FAILED with the shim.");
        1
    }
}

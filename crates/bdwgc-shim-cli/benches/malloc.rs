//! `cargo bench -p bdwgc-shim-cli`: malloc/free churn (benches/churn.c) with
//! glibc, with direct GC_malloc_uncollectable/GC_free calls, and through the
//! shim (preloaded and linked), at 1, 2, 4 and 8 threads. Runs alternate
//! between the variants; the table shows medians and ratios to glibc.
//! Needs `cargo build --release` first. Not a test: it asserts nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use bdwgc_shim_cli::scenarios::{cc, repo_root, shim_dir};

const RUNS: usize = 3;
const THREADS: [u32; 4] = [1, 2, 4, 8];

fn build(dir: &Path, name: &str, extra: &[OsString]) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<OsString> = vec![
        "-O2".into(),
        repo_root().join("benches/churn.c").into(),
        "-o".into(),
        out.clone().into(),
    ];
    args.extend(extra.iter().cloned());
    args.extend(["-lgc".into(), "-lpthread".into()]);
    if let Err(e) = cc(&args) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    out
}

fn seconds(program: &Path, threads: u32, preload: Option<&Path>) -> f64 {
    let mut command = Command::new(program);
    command
        .arg(threads.to_string())
        .env("GC_MARKERS", "2")
        .env_remove("LD_PRELOAD");
    if let Some(library) = preload {
        command.env("LD_PRELOAD", library);
    }
    match command.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN),
        Err(_) => f64::NAN,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let shim = shim_dir();
    let archive = shim.join("libbdwgc_shim.a");
    let library = shim.join("libbdwgc_shim.so");
    if !archive.exists() || !library.exists() {
        eprintln!("run `cargo build --release` first");
        std::process::exit(2);
    }
    let dir = repo_root().join("target/bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        std::process::exit(2);
    }
    let plain = build(&dir, "churn", &[]);
    let direct = build(&dir, "churn_direct", &["-DDIRECT".into()]);
    let linked = build(
        &dir,
        "churn_linked",
        &[
            "-Wl,--undefined=bdwgc_shim_is_active".into(),
            archive.into(),
        ],
    );

    println!(
        "malloc/free churn, 8-264 bytes, 4M pairs per thread; median of {RUNS} runs (seconds)"
    );
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>8}   {:>9} {:>9} {:>9}",
        "threads", "glibc", "direct", "preload", "linked", "direct/g", "preload/g", "linked/g"
    );
    for threads in THREADS {
        let mut times: [Vec<f64>; 4] = Default::default();
        for _ in 0..RUNS {
            times[0].push(seconds(&plain, threads, None));
            times[1].push(seconds(&direct, threads, None));
            times[2].push(seconds(&plain, threads, Some(&library)));
            times[3].push(seconds(&linked, threads, None));
        }
        let [g, d, p, l] = times.map(median);
        println!(
            "{threads:>7} {g:>8.3} {d:>8.3} {p:>8.3} {l:>8.3}   {:>8.2}x {:>8.2}x {:>8.2}x",
            d / g,
            p / g,
            l / g
        );
    }
}

//! `cargo bench -p bdwgc-shim-cli`: allocation workloads (benches/*.c) with
//! glibc, with direct GC_malloc_uncollectable/GC_free calls, through the
//! shim (preloaded and linked), and with Debian's jemalloc, mimalloc and
//! tcmalloc preloaded where installed (`libjemalloc2`, `libmimalloc2.0`,
//! `libtcmalloc-minimal4`; their blocks are not scanned by the collector).
//! Runs alternate between the variants; the tables show medians, ratios to
//! glibc, and the shim's ratio to the best of the other three. Needs
//! `cargo build --release` first. Not a test: it asserts nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use bdwgc_shim_cli::scenarios::{cc, repo_root, shim_dir, Mode};

const RUNS: usize = 3;
/// glibc, direct, preload, linked, jemalloc, mimalloc, tcmalloc.
const COLUMNS: usize = 7;
/// The other allocators' columns, and their Debian libraries.
const OTHERS: [(usize, &str, &str); 3] = [
    (4, "jemalloc", "libjemalloc.so.2"),
    (5, "mimalloc", "libmimalloc.so.2"),
    (6, "tcmalloc", "libtcmalloc_minimal.so.4"),
];
const THREADS: [u32; 4] = [1, 2, 4, 8];

fn build(dir: &Path, source: &str, name: &str, extra: &[OsString]) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<OsString> = vec![
        "-O2".into(),
        repo_root().join("benches").join(source).into(),
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

/// Runs `program args` and reads the numbers it prints (seconds, and for
/// the workloads peak RSS in KiB), under `RLIMIT_AS` of `limit` bytes from
/// its start if given (`ulimit -v`).
fn measure(program: &Path, args: &[&str], preload: Option<&Path>, limit: Option<u64>) -> Vec<f64> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("GC_MARKERS", "2")
        .env_remove("LD_PRELOAD");
    if let Some(library) = preload {
        command.env("LD_PRELOAD", library);
    }
    if let Some(bytes) = limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure calls only setrlimit,
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    match command.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(f64::NAN))
            .collect(),
        Err(_) => vec![f64::NAN, f64::NAN],
    }
}

/// Peak RSS in MiB of Debian's Crystal compiler building
/// tests/programs/crystal/compile_me.cr with `flags`, plain, with the shim
/// and with the other allocators preloaded: medians of RUNS alternating
/// runs, each with an empty cache. NaN where `crystal` is missing.
fn crystal_build_peak_mib(library: &Path, flags: &[&str]) -> [f64; COLUMNS] {
    let source = repo_root().join("tests/programs/crystal/compile_me.cr");
    let dir = repo_root().join("target/bench/crystal");
    let mut peaks: [Vec<f64>; COLUMNS] = Default::default();
    let others = OTHERS.map(|(column, _, file)| (column, system_library(file)));
    for _ in 0..RUNS {
        let mut preloads = vec![(0, None), (2, Some(library.to_path_buf()))];
        preloads.extend(
            others
                .iter()
                .filter_map(|(c, l)| Some((*c, Some(l.clone()?)))),
        );
        for (column, preload) in preloads {
            let _ = std::fs::remove_dir_all(&dir);
            let mut command = Command::new("crystal");
            command
                .arg("build")
                .arg(&source)
                .args(flags)
                .arg("-o")
                .arg(dir.join("compile_me"))
                .env("CRYSTAL_CACHE_DIR", dir.join("cache"))
                .env_remove("LD_PRELOAD")
                .stdout(std::process::Stdio::null());
            if let Some(library) = preload {
                command.env("LD_PRELOAD", library);
            }
            peaks[column].push(peak_rss_kib(command).map_or(f64::NAN, |kib| kib / 1024.0));
        }
    }
    peaks.map(|v| if v.is_empty() { f64::NAN } else { median(v) })
}

/// Runs `command` and returns its peak RSS in KiB (wait4's `ru_maxrss`), or
/// `None` when it cannot start or fails.
fn peak_rss_kib(mut command: Command) -> Option<f64> {
    let child = command.spawn().ok()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which `child` never waits for.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    (pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
        .then_some(usage.ru_maxrss as f64)
}

/// Wall-clock milliseconds to start and end each program once (with its
/// library preloaded, if any): medians of 200 rounds that alternate
/// between them, since a start takes only about a millisecond.
fn startup_ms(programs: [(&Path, Option<&Path>); 4]) -> [f64; 4] {
    let mut times: [Vec<f64>; 4] = Default::default();
    for _ in 0..200 {
        for (i, (program, preload)) in programs.iter().enumerate() {
            let start = std::time::Instant::now();
            measure(program, &["hello"], *preload, None);
            times[i].push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.map(median)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The variants of one program: glibc, direct libgc calls, the shim
/// preloaded, the shim linked, and the other allocators preloaded.
struct Variants {
    plain: PathBuf,
    direct: PathBuf,
    linked: PathBuf,
    library: PathBuf,
    /// jemalloc, mimalloc, tcmalloc, where installed.
    others: [Option<PathBuf>; 3],
}

/// A library in the machine's multiarch directory (or /usr/lib), if there.
fn system_library(name: &str) -> Option<PathBuf> {
    let multiarch = PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH));
    [multiarch, PathBuf::from("/usr/lib")]
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
}

impl Variants {
    fn build(dir: &Path, source: &str, stem: &str, shim: &Path) -> Variants {
        Variants {
            plain: build(dir, source, stem, &[]),
            direct: build(dir, source, &format!("{stem}_direct"), &["-DDIRECT".into()]),
            // Linked the way the README gives (and the scenario tests use).
            linked: build(
                dir,
                source,
                &format!("{stem}_linked"),
                &Mode::Static.shim_link_args(shim),
            ),
            library: shim.join("libbdwgc_shim.so"),
            others: OTHERS.map(|(_, _, file)| system_library(file)),
        }
    }

    /// Medians of field `field` over RUNS alternating runs of each variant.
    fn medians(&self, args: &[&str], field: usize) -> [f64; COLUMNS] {
        self.medians_limited(args, field, None)
    }

    /// [`Variants::medians`] under an address-space limit from the start.
    fn medians_limited(&self, args: &[&str], field: usize, limit: Option<u64>) -> [f64; COLUMNS] {
        let mut times: [Vec<f64>; COLUMNS] = Default::default();
        for _ in 0..RUNS {
            let pick = |v: Vec<f64>| v.get(field).copied().unwrap_or(f64::NAN);
            times[0].push(pick(measure(&self.plain, args, None, limit)));
            times[1].push(pick(measure(&self.direct, args, None, limit)));
            times[2].push(pick(measure(&self.plain, args, Some(&self.library), limit)));
            times[3].push(pick(measure(&self.linked, args, None, limit)));
            for ((column, _, _), library) in OTHERS.iter().zip(&self.others) {
                times[*column].push(match library {
                    Some(library) => pick(measure(&self.plain, args, Some(library), limit)),
                    None => f64::NAN,
                });
            }
        }
        times.map(median)
    }
}

fn header(unit: &str) {
    println!(
        "{:>24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {:>8} {:>8} {:>8}",
        unit,
        "glibc",
        "direct",
        "preload",
        "linked",
        "jemalloc",
        "mimalloc",
        "tcmalloc",
        "direct/g",
        "shim/g",
        "shim/best"
    );
}

/// The best (lowest) of jemalloc, mimalloc and tcmalloc: NaN when none ran.
fn best_other(v: &[f64; COLUMNS]) -> f64 {
    v[4..]
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::min)
}

fn values(v: &[f64; COLUMNS]) -> String {
    v.iter().map(|x| format!(" {x:>8.3}")).collect()
}

/// A row: the values, then direct and the preloaded shim against glibc, and
/// the shim against the best other allocator.
fn row(rows: &mut Vec<(String, [f64; COLUMNS])>, label: &str, v: [f64; COLUMNS]) {
    rows.push((label.to_string(), v));
    println!(
        "{label:>24}{}  {:>7.2}x {:>7.2}x {:>7.2}x",
        values(&v),
        v[1] / v[0],
        v[2] / v[0],
        v[2] / best_other(&v)
    );
}

/// A row whose ratios are to direct libgc calls rather than to glibc.
fn row_against_direct(label: &str, v: [f64; COLUMNS]) {
    println!(
        "{label:>24}{}  preload/direct {:.2}x, linked/direct {:.2}x",
        values(&v),
        v[2] / v[1],
        v[3] / v[1]
    );
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
    let churn = Variants::build(&dir, "churn.c", "churn", &shim);
    let work = Variants::build(&dir, "workloads.c", "workloads", &shim);

    println!("Medians of {RUNS} alternating runs; ratios to glibc.\n");
    header("seconds");
    let mut time_rows = Vec::new();
    for threads in THREADS {
        let t = threads.to_string();
        row(
            &mut time_rows,
            &format!("churn 8-264 B, {threads} thr"),
            churn.medians(&[&t], 0),
        );
    }
    for threads in [1, 2] {
        let t = threads.to_string();
        row(
            &mut time_rows,
            &format!("ulimit -v 4G, {threads} thr"),
            churn.medians_limited(&[&t], 0, Some(4 << 30)),
        );
    }
    row(
        &mut time_rows,
        "churn 4 KiB-1 MiB",
        work.medians(&["large", "1"], 0),
    );
    for threads in [1, 2] {
        let t = threads.to_string();
        row(
            &mut time_rows,
            &format!("aligned 32 B-4 KiB, {threads} thr"),
            work.medians(&["aligned", &t], 0),
        );
    }
    for threads in [2, 8] {
        let t = threads.to_string();
        row(
            &mut time_rows,
            &format!("larson-like, {threads} thr"),
            work.medians(&["larson", &t], 0),
        );
    }
    row(
        &mut time_rows,
        "buffers 5-25 MiB",
        work.medians(&["buffers"], 0),
    );
    row(
        &mut time_rows,
        "compiler-like",
        work.medians(&["program"], 0),
    );
    row(
        &mut time_rows,
        "burst 512 MiB + trim",
        work.medians(&["burst", "trim"], 0),
    );
    row(
        &mut time_rows,
        "realloc to 64 MiB",
        work.medians(&["realloc", "1"], 0),
    );
    row(
        &mut time_rows,
        "producer/consumer",
        work.medians(&["prodcons"], 0),
    );
    row(
        &mut time_rows,
        "10,000 threads",
        work.medians(&["threads"], 0),
    );
    for mib in ["1", "16", "256", "1024"] {
        row(
            &mut time_rows,
            &format!("live set {mib} MiB"),
            work.medians(&["live", mib], 0),
        );
    }
    // glibc's memory is not scanned, so these are compared with libgc's
    // own uncollectable memory instead.
    row_against_direct("GC pause, 200 MiB live", work.medians(&["pause"], 0));
    row_against_direct("GC_MALLOC, 200 MiB live", work.medians(&["collected"], 0));
    println!();
    header("peak RSS, MiB");
    let mib = |v: [f64; COLUMNS]| v.map(|kib| kib / 1024.0);
    let mut rss_rows = Vec::new();
    row(
        &mut rss_rows,
        "churn 4 KiB-1 MiB",
        mib(work.medians(&["large", "1"], 1)),
    );
    row(
        &mut rss_rows,
        "200 MiB live, 16-1024 B",
        mib(work.medians(&["pause"], 1)),
    );
    row(
        &mut rss_rows,
        "realloc to 64 MiB",
        mib(work.medians(&["realloc", "1"], 1)),
    );
    row(
        &mut rss_rows,
        "buffers 5-25 MiB",
        mib(work.medians(&["buffers"], 1)),
    );
    row(
        &mut rss_rows,
        "compiler-like",
        mib(work.medians(&["program"], 1)),
    );
    println!();
    header("RSS after, MiB");
    // Direct calls: GC_gcollect_and_unmap instead of malloc_trim.
    row(
        &mut rss_rows,
        "burst, malloc_trim(0)",
        mib(work.medians(&["burst", "trim"], 1)),
    );
    row(
        &mut rss_rows,
        "burst, 3 s light work",
        mib(work.medians(&["burst", "idle"], 1)),
    );
    println!();
    header("Crystal build, MiB");
    // A real program: Debian's Crystal compiler (libgc, LLVM) building a
    // program, peak RSS; there is no direct or linked variant of it.
    for (label, flags) in [
        ("--release --no-debug", &["--release", "--no-debug"][..]),
        ("--release", &["--release"][..]),
    ] {
        row(
            &mut rss_rows,
            label,
            crystal_build_peak_mib(&library, flags),
        );
    }
    println!();
    header("start-up, ms");
    let [g, d, p, l] = startup_ms([
        (&work.plain, None),
        (&work.direct, None),
        (&work.plain, Some(&library)),
        (&work.linked, None),
    ]);
    let nan = f64::NAN;
    row(
        &mut Vec::new(),
        "hello (spawn to exit)",
        [g, d, p, l, nan, nan, nan],
    );

    let chart = repo_root().join("docs/bench.png");
    match draw_chart(&chart, &time_rows) {
        Ok(()) => println!("\nchart: {}", chart.display()),
        Err(e) => eprintln!("no chart: {e}"),
    }
}

/// The time ratios to glibc as grouped bars on a log scale: PNG for the
/// README.
fn draw_chart(
    path: &Path,
    rows: &[(String, [f64; COLUMNS])],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = rows.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "time relative to glibc malloc (log scale; lower is better)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(150)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, (0.02f64..60.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ratio to glibc")
        .y_label_formatter(&|v| format!("{v}x"))
        .draw()?;
    let series = [
        ("direct GC_malloc_uncollectable/GC_free", 1, RED),
        ("shim, preloaded", 2, BLUE),
        ("jemalloc (not scanned)", 4, RGBColor(150, 150, 150)),
        ("mimalloc (not scanned)", 5, RGBColor(200, 160, 60)),
        ("tcmalloc (not scanned)", 6, RGBColor(90, 170, 90)),
    ];
    let width = 0.8 / series.len() as f64;
    for (k, (name, column, color)) in series.into_iter().enumerate() {
        let bars = rows
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| !v[column].is_nan())
            .map(|(i, (_, v))| {
                let x0 = i as f64 + 0.1 + width * k as f64;
                let ratio = (v[column] / v[0]).clamp(0.02, 60.0);
                Rectangle::new([(x0, 0.02), (x0 + width * 0.9, ratio)], color.filled())
            });
        chart
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK,
    )))?;
    // Workload names under the axis, written downwards.
    let style = TextStyle::from(("sans-serif", 15).into_font()).transform(FontTransform::Rotate90);
    for (i, (label, _)) in rows.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.45, 0.02));
        root.draw(&Text::new(label.clone(), (x + 8, y + 8), style.clone()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

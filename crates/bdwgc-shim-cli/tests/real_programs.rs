//! Real programs from Debian that use libgc (GNU Guile 3.0, ECL, w3m), each
//! run as installed and with the shim preloaded: the output, the error
//! output and the exit status must be the same, and the shim must report
//! itself active in the program. The scenarios (tests/scenarios.rs) prove
//! the shim fixes what breaks; this proves it breaks nothing in programs
//! that were fine without it. The scripts are in tests/programs.
//!
//! Needs `cargo build --release` first (scripts/test does it) and the
//! Debian packages guile-3.0, ecl and w3m (`scripts/install-deps --all`).
//! A missing program fails the test, naming the package to install.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bdwgc_shim_cli::scenarios::{repo_root, run_with_timeout, shim_dir, Ending, Outcome};

/// Runs of each program in each way: a crash or difference that shows up
/// only some of the time still has a fair chance to show.
const RUNS: usize = 3;

/// Runs of each program in each way after a run has failed, to tell a
/// program that fails now and then by itself from a shim that makes it
/// fail.
const EXTRA_RUNS: usize = 12;

/// How many more failed runs with the shim than without it pass (out of
/// `RUNS + EXTRA_RUNS` each way): one, for a rare crash of the program's own
/// that happens to fall on a run with the shim.
const TOLERATED_EXTRA_FAILURES: usize = 1;

/// How many failed runs each way are printed in full.
const SHOWN_FAILURES: usize = 3;

/// A run that takes this long counts as a hang (the slowest script takes
/// about 5 s).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The prefix of the summary line `BDWGC_SHIM_DEBUG=1` makes the shim print.
const SUMMARY_PREFIX: &str = "bdwgc-shim ";

/// One program run: what to start, with which arguments.
struct Invocation {
    /// Shown in reports: "guile-3.0 threads.scm".
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
}

/// The installed program `name`, or a failure that says which Debian
/// package provides it (CI installs them, so a missing one is an error
/// there too, never a silent skip).
fn installed(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run  apt-get install {package}  \
                 (or scripts/install-deps --all as root)"
            )
        })
}

/// The preloadable shim, which `cargo build --release` makes.
fn shim_library() -> PathBuf {
    let library = shim_dir().join("libbdwgc_shim.so");
    assert!(
        library.is_file(),
        "{} is missing: run  cargo build --release -p bdwgc-shim-c",
        library.display()
    );
    library
}

/// A private HOME (and XDG cache) for the programs, so that Guile's
/// compilation cache, ECL's and w3m's files neither come from nor go to the
/// user's, and both ways of running see the same state. It lives under
/// target/ and is kept from run to run (it holds nothing that changes a
/// program's output).
fn sandbox() -> &'static Path {
    static SANDBOX: OnceLock<PathBuf> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let dir = repo_root().join("target/real-programs");
        std::fs::create_dir_all(dir.join("cache")).expect("create the sandbox under target/");
        dir
    })
}

/// A file that is removed when the test ends, passed or not.
struct TemporaryFile(PathBuf);

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scripts_dir() -> PathBuf {
    repo_root().join("tests/programs")
}

/// Starts `invocation` once, preloading the shim (with its summary line)
/// when `with_shim` is set.
fn run_once(invocation: &Invocation, with_shim: bool) -> Outcome {
    let home = sandbox();
    let mut command = Command::new(&invocation.program);
    command
        .args(&invocation.args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        // Guile would otherwise compile each script into the cache first
        // and print notes about it on stderr.
        .env("GUILE_AUTO_COMPILE", "0")
        // w3m's box drawing and Guile's ports depend on the locale.
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("LD_PRELOAD")
        .env_remove("BDWGC_SHIM_DEBUG");
    if with_shim {
        command
            .env("LD_PRELOAD", shim_library())
            .env("BDWGC_SHIM_DEBUG", "1");
    }
    run_with_timeout(command, TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: cannot run: {e}", invocation.label))
}

/// The shim's summary lines in `stderr` (one per process that had the shim
/// and exited normally).
fn summary_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with(SUMMARY_PREFIX))
        .collect()
}

/// `stderr` without the shim's summary lines, to compare with a run
/// without the shim.
fn program_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with(SUMMARY_PREFIX))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The last lines of `text`, for reports.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn describe(outcome: &Outcome) -> String {
    format!(
        "{:?} after {:.2}s\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        outcome.ending,
        outcome.elapsed.as_secs_f64(),
        tail(&outcome.stdout, 10),
        tail(&outcome.stderr, 20)
    )
}

/// Whether a run did what every program here does when all is well.
fn succeeded(outcome: &Outcome) -> bool {
    outcome.ending == Ending::Exited(0)
}

/// Runs `invocation` `count` times each way, alternating, so that both ways
/// see the same machine load.
fn run_pairs(invocation: &Invocation, count: usize) -> (Vec<Outcome>, Vec<Outcome>) {
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..count {
        without.push(run_once(invocation, false));
        with.push(run_once(invocation, true));
    }
    (without, with)
}

/// Runs `invocation` `RUNS` times without the shim and `RUNS` times with
/// it, and fails unless each run with the shim that exits 0 prints what the
/// runs without it print (stdout and stderr, the shim's summary aside) and
/// has the shim report itself active, and unless the runs with the shim
/// fail no more often than the runs without it.
///
/// Why rates rather than "every run exits 0": Guile 3.0.8 crashes by itself
/// now and then when several threads run (see tests/programs/README.md);
/// the scripts avoid the patterns that make it frequent, but a rare crash
/// without the shim must not fail the test, and the same rare crash with
/// the shim cannot be told from it. So when any run fails, both ways run
/// `EXTRA_RUNS` more times and the failure counts are compared. A shim that
/// breaks a program outright (as the issue's segfaults did) fails every
/// run with it and cannot pass. Every failed run is printed either way.
fn compare(invocation: Invocation) {
    let (mut without, mut with) = run_pairs(&invocation, RUNS);
    if !without.iter().chain(&with).all(succeeded) {
        eprintln!(
            "{}: a run failed; {EXTRA_RUNS} more runs each way to compare failure rates",
            invocation.label
        );
        let (more_without, more_with) = run_pairs(&invocation, EXTRA_RUNS);
        without.extend(more_without);
        with.extend(more_with);
    }
    eprintln!("{}", timing_report(&invocation.label, &without, &with));
    let mut problems = Vec::new();
    for (way, outcomes) in [("WITHOUT", &without), ("with", &with)] {
        let failures: Vec<(usize, &Outcome)> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| !succeeded(o))
            .collect();
        // The first few in full; the rest are alike.
        for (index, outcome) in failures.iter().take(SHOWN_FAILURES) {
            eprintln!(
                "{}: run {index} {way} the shim failed: {}",
                invocation.label,
                describe(outcome)
            );
        }
        if failures.len() > SHOWN_FAILURES {
            eprintln!(
                "{}: {} more runs {way} the shim failed, ended {:?}",
                invocation.label,
                failures.len() - SHOWN_FAILURES,
                failures[SHOWN_FAILURES..]
                    .iter()
                    .map(|(_, o)| &o.ending)
                    .collect::<Vec<_>>()
            );
        }
    }
    let failed_without = without.iter().filter(|o| !succeeded(o)).count();
    let failed_with = with.iter().filter(|o| !succeeded(o)).count();
    if failed_with > failed_without + TOLERATED_EXTRA_FAILURES {
        problems.push(format!(
            "{failed_with} of {} runs with the shim failed, {failed_without} of {} without it; \
             the first failure with the shim: {}",
            with.len(),
            without.len(),
            with.iter()
                .find(|o| !succeeded(o))
                .map(describe)
                .unwrap_or_default()
        ));
    }
    let Some(reference) = without.iter().find(|o| succeeded(o)) else {
        problems.push(format!(
            "every run WITHOUT the shim failed (the program's own fault): {}",
            describe(&without[0])
        ));
        panic!("{}:\n{}", invocation.label, problems.join("\n\n"));
    };
    for (index, outcome) in without.iter().enumerate().filter(|(_, o)| succeeded(o)) {
        if outcome.stdout != reference.stdout || outcome.stderr != reference.stderr {
            problems.push(format!(
                "run {index} without the shim printed other output than the first that \
                 succeeded (the script is not deterministic): {}",
                describe(outcome)
            ));
        }
    }
    for (index, outcome) in with.iter().enumerate().filter(|(_, o)| succeeded(o)) {
        let summaries = summary_lines(&outcome.stderr);
        if outcome.stdout != reference.stdout {
            problems.push(format!(
                "run {index} with the shim printed other output: {}\n\
                 --- stdout without the shim (tail)\n{}",
                describe(outcome),
                tail(&reference.stdout, 10)
            ));
        } else if program_stderr(&outcome.stderr) != reference.stderr {
            problems.push(format!(
                "run {index} with the shim printed other error output: {}\n\
                 --- stderr without the shim (tail)\n{}",
                describe(outcome),
                tail(&reference.stderr, 20)
            ));
        } else if !summaries.iter().any(|s| s.contains(" active=yes "))
            || !summaries
                .iter()
                .all(|s| s.contains(" active=yes ") || s.contains(" libgc=absent "))
        {
            // Every process that has libgc must have the shim active; the
            // Crystal compiler's linker children, which inherit the preload
            // without libgc, report it absent.
            problems.push(format!(
                "run {index}: the shim did not report itself active in the program \
                 (summary lines: {summaries:?}): {}",
                describe(outcome)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n{}",
        invocation.label,
        problems.join("\n\n")
    );
}

/// One line per program: its run times each way and the shim's summary.
fn timing_report(label: &str, without: &[Outcome], with: &[Outcome]) -> String {
    let times = |outcomes: &[Outcome]| {
        outcomes
            .iter()
            .map(|o| format!("{:.2}s", o.elapsed.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut line = format!(
        "{label}: without the shim {}, with it {}",
        times(without),
        times(with)
    );
    if let Some(summary) = with
        .last()
        .and_then(|o| summary_lines(&o.stderr).last().copied())
    {
        let _ = write!(line, "\n    {summary}");
    }
    line
}

fn guile() -> PathBuf {
    installed("guile-3.0", "guile-3.0")
}

/// `guile-3.0 --no-auto-compile tests/programs/guile/<script>`.
fn guile_script(script: &str) -> Invocation {
    Invocation {
        label: format!("guile-3.0 {script}"),
        program: guile(),
        args: vec![
            "--no-auto-compile".into(),
            scripts_dir().join("guile").join(script).into(),
        ],
    }
}

/// `guile-3.0 --no-auto-compile -c <expression>`.
fn guile_expression(expression: &str) -> Invocation {
    Invocation {
        label: format!("guile-3.0 -c '{expression}'"),
        program: guile(),
        args: vec!["--no-auto-compile".into(), "-c".into(), expression.into()],
    }
}

/// The Guile scripts, each with a test below; `every_script_has_a_test`
/// holds this list against tests/programs/guile.
const GUILE_SCRIPTS: [&str; 6] = [
    "threads.scm",
    "par-map.scm",
    "futures.scm",
    "gc.scm",
    "hash-tables.scm",
    "string-ports.scm",
];

/// The ECL scripts, likewise.
const ECL_SCRIPTS: [&str; 1] = ["threads.lsp"];

#[test]
fn guile_threads() {
    compare(guile_script("threads.scm"));
}

#[test]
fn guile_par_map() {
    compare(guile_script("par-map.scm"));
}

#[test]
fn guile_futures() {
    compare(guile_script("futures.scm"));
}

#[test]
fn guile_gc() {
    compare(guile_script("gc.scm"));
}

#[test]
fn guile_hash_tables() {
    compare(guile_script("hash-tables.scm"));
}

#[test]
fn guile_string_ports() {
    compare(guile_script("string-ports.scm"));
}

/// The commands from the issue, as reported: with an older shim the first
/// segfaulted, the second failed and par-map segfaulted.
#[test]
fn guile_reported_one_liners() {
    for expression in [
        "(use-modules (ice-9 threads)) (display (join-thread (call-with-new-thread (lambda () 42))))",
        "(gc) (display 2)",
        "(use-modules (ice-9 threads)) (display (par-map 1+ (iota 100)))",
    ] {
        compare(guile_expression(expression));
    }
}

/// `ecl --norc --shell <script>`: loads the script without the user's
/// init file and exits at its end, printing nothing of its own.
#[test]
fn ecl_threads() {
    compare(Invocation {
        label: "ecl threads.lsp".into(),
        program: installed("ecl", "ecl"),
        args: vec![
            "--norc".into(),
            "--shell".into(),
            scripts_dir().join("ecl/threads.lsp").into(),
        ],
    });
}

/// A big page for w3m to lay out: thousands of table rows with links
/// (numbered and listed at the end), nested lists, and inline markup.
/// Deterministic, so the dumps can be compared byte for byte.
fn big_html_page() -> String {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html><head><title>bdwgc-shim w3m test</title></head><body>\n\
         <h1>A big generated page</h1>\n<p>Rows, links and <b>nested</b> <i>lists</i> \
         &amp; entities: &lt;&gt; &copy; &eacute;.</p>\n\
         <table border=1>\n<tr><th>n</th><th>square</th><th>link</th><th>text</th></tr>\n",
    );
    for row in 0..5000u64 {
        let _ = writeln!(
            page,
            "<tr><td>{row}</td><td align=right>{}</td>\
             <td><a href=\"http://example.org/page/{row}\">page {row}</a></td>\
             <td>word{} <em>{}</em></td></tr>",
            row * row,
            row % 97,
            "x".repeat((row % 40) as usize)
        );
    }
    page.push_str("</table>\n");
    for section in 0..20 {
        let _ = writeln!(page, "<h2>Section {section}</h2>");
        nested_list(&mut page, &section.to_string(), 5);
    }
    page.push_str("<pre>\npreformatted\n    text kept as is\n</pre>\n</body></html>\n");
    page
}

/// A list `depth` levels deep, four items per level, numbered by path.
fn nested_list(page: &mut String, prefix: &str, depth: u32) {
    if depth == 0 {
        return;
    }
    page.push_str("<ul>\n");
    for item in 0..4 {
        let path = format!("{prefix}.{item}");
        let _ = write!(page, "<li>item {path} <a href=\"#{path}\">here</a>");
        nested_list(page, &path, depth - 1);
        page.push_str("</li>\n");
    }
    page.push_str("</ul>\n");
}

/// Debian's Crystal compiler (it links libgc and forks for code generation)
/// builds a program and runs it: the program's output is compared, and the
/// program gets the inherited preload too.
#[test]
fn crystal_compiler_builds_and_runs_a_program() {
    let crystal = installed("crystal", "crystal");
    let source = scripts_dir().join("crystal/compile_me.cr");
    compare(Invocation {
        label: "crystal run compile_me.cr".into(),
        program: crystal,
        args: vec!["run".into(), "--no-color".into(), source.into()],
    });
}

/// `w3m -dump` of the big page, links numbered, 100 columns.
#[test]
fn w3m_dump_big_page() {
    let w3m = installed("w3m", "w3m");
    // Named by process, in case two test processes share the sandbox.
    let page = TemporaryFile(sandbox().join(format!("big-page-{}.html", std::process::id())));
    std::fs::write(&page.0, big_html_page()).expect("write the page into the sandbox");
    compare(Invocation {
        label: "w3m -dump big-page.html".into(),
        program: w3m,
        args: vec![
            "-dump".into(),
            "-T".into(),
            "text/html".into(),
            "-cols".into(),
            "100".into(),
            "-O".into(),
            "UTF-8".into(),
            "-o".into(),
            "display_link_number=1".into(),
            page.0.clone().into(),
        ],
    });
}

/// Every script in tests/programs has a test above (and every test's
/// script exists), so a new script cannot be forgotten.
#[test]
fn every_script_has_a_test() {
    for (folder, listed) in [
        ("guile", &GUILE_SCRIPTS[..]),
        ("ecl", &ECL_SCRIPTS[..]),
        ("crystal", &["compile_me.cr"][..]),
    ] {
        let dir = scripts_dir().join(folder);
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| {
                entry
                    .expect("read a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        found.sort();
        let mut expected: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(found, expected, "scripts in {} vs tests", dir.display());
    }
}

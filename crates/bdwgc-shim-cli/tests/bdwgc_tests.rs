//! bdwgc's own test programs (`tests/*.c`, `tests/*.cc` of the bdwgc 8.3
//! source that the `bdwgc-alloc-sys` crate ships), each run as built and
//! with the shim preloaded: every program that passes as built must pass
//! with the shim, with the shim active, and `disclaim_bench` must not grow
//! its peak RSS much with it.
//!
//! They are built twice, into `target/bdwgc-tests/`:
//!
//! - against the system libgc 8.2.2 (Debian's libgc-dev, shared), those that
//!   build with its headers: most use 8.3-only API or libgc's private
//!   headers, which libgc-dev does not ship (the list below says which);
//! - against the crate's own static libgc 8.3 (its build script's output
//!   under `target/release/build/bdwgc-alloc-sys-*/out`, with the
//!   `config.h` that library was configured with), all of them, linked with
//!   `-rdynamic` so that the preloaded shim finds libgc's symbols.
//!
//! Needs `cargo build --release` first (scripts/test does it): the shim, and
//! bdwgc-alloc-sys's libgc (built for examples/bdwgc-alloc).
//!
//! Each program runs under a small runner (built here too) that waits for it
//! with wait4 to learn its peak RSS, and sets `LD_PRELOAD` for the program
//! only. A program that fails with the shim is run once more with the shim
//! and `GC_DISABLE_INCREMENTAL=1`, and the table says how that went: libgc
//! 8.3 on Linux 5.7+ does incremental collection with userfaultfd and a
//! monitor thread of its own, which 8.2.2 has not.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bdwgc_shim_cli::scenarios::{compile, repo_root, run_with_timeout, shim_dir, Ending, Outcome};

/// How long a program may run as built.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// With the shim: twice its plain time and 10 s more, at least 20 s
/// (libgc gives up on a thread that does not answer its stop signal after
/// about 16 s: "Signals delivery fails constantly"), at most 60 s.
const SHIM_TIMEOUT_MIN: Duration = Duration::from_secs(20);
/// disclaim_bench's peak RSS with the shim may be at most this factor of
/// its plain peak RSS ...
const RSS_FACTOR: f64 = 1.5;
/// ... plus this much.
const RSS_SLACK_KB: u64 = 4 * 1024;
/// How many lines of output the reports show.
const TAIL_LINES: usize = 8;

/// The two tests build and run one after the other, so that neither's
/// times are skewed by the other's load on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Which libgc a program is built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Libgc {
    /// The system's shared libgc 8.2.2 (`/usr/include/gc.h`, `-lgc`).
    System,
    /// bdwgc-alloc-sys's static libgc 8.3, linked with `-rdynamic`.
    Vendored,
}

impl Libgc {
    fn name(self) -> &'static str {
        match self {
            Libgc::System => "8.2.2",
            Libgc::Vendored => "8.3",
        }
    }
}

/// The C++ support library a C++ program links (tests.am's libgccpp and
/// libgctba).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CxxLib {
    None,
    /// gc_cpp + gc_badalc: global operator new from the collector.
    Gccpp,
    /// gc_badalc only.
    Gctba,
}

/// One of bdwgc's test programs, named and built as tests.am does.
struct Program {
    name: &'static str,
    /// Relative to bdwgc's `tests/`.
    source: &'static str,
    /// For a C++ program (`.cc`), the support library it links.
    cxx: CxxLib,
    /// Uses threads: `-DGC_THREADS` for the 8.2.2 build (8.3's `config.h`
    /// defines it).
    threads: bool,
    /// Extra `-D`s for both builds (to keep the run short).
    defines: &'static [&'static str],
    /// For the 8.2.2 build: `Ok` with the compatibility `-D`s it needs, or
    /// `Err` with why it is not built.
    system: Result<&'static [&'static str], &'static str>,
    /// Built with the two shared libraries of staticrootstest.
    staticroots: bool,
    /// Has libgc in the process (atomicopstest only uses libgc's atomic
    /// operations header, so with a static libgc nothing of libgc is linked
    /// and the shim, finding no collector, stays inactive, as it should).
    uses_gc: bool,
    args: &'static [&'static str],
}

/// Why programs that include libgc's private headers, which libgc-dev
/// does not ship (and 8.3's would not match 8.2.2's internals), are not
/// built against 8.2.2.
const GC_PRIV: &str = "includes private/gc_priv.h (not shipped by libgc-dev)";
const GCCONFIG: &str = "includes private/gcconfig.h (not shipped by libgc-dev)";
const GC_ATOMIC_OPS: &str = "includes private/gc_atomic_ops.h (not shipped by libgc-dev)";
/// 8.3's `GC_uintptr_t` is 8.2.2's `GC_word`; `GC_HIDE_NZ_POINTER` hides a
/// pointer as `GC_HIDE_POINTER` does (the test only stores it).
const UINTPTR: &str = "-DGC_uintptr_t=GC_word";
const HIDE_NZ: &str = "-DGC_HIDE_NZ_POINTER(p)=GC_HIDE_POINTER(p)";

fn program(name: &'static str, source: &'static str) -> Program {
    Program {
        name,
        source,
        cxx: CxxLib::None,
        threads: false,
        defines: &[],
        system: Ok(&[]),
        staticroots: false,
        uses_gc: true,
        args: &[],
    }
}

/// Every program of bdwgc's tests.am (check_PROGRAMS), in its order.
fn programs() -> Vec<Program> {
    vec![
        Program {
            // Two client threads instead of five: a third of the time.
            defines: &["-DNTHREADS=2"],
            threads: true,
            system: Err(GC_PRIV),
            ..program("gctest", "gctest.c")
        },
        Program {
            system: Err("uses 8.3-only API (GC_FREEZERO)"),
            ..program("dbgfunctest", "dbgfunc.c")
        },
        program("hugetest", "huge.c"),
        Program {
            system: Err("uses 8.3-only leak_detector.h API (free_sized, freezero, \
                         reallocf, _aligned_malloc, ...)"),
            ..program("leaktest", "leak.c")
        },
        Program {
            system: Err(GC_PRIV),
            ..program("middletest", "middle.c")
        },
        program("realloctest", "realloc.c"),
        program("smashtest", "smash.c"),
        Program {
            system: Err("uses 8.3-only API (GC_NEW_ARRAY, GC_NEW_ATOMIC_ARRAY)"),
            ..program("typedtest", "typed.c")
        },
        Program {
            system: Ok(&[UINTPTR]),
            staticroots: true,
            ..program("staticrootstest", "staticroots.c")
        },
        // tracetest: not built; see NOT_BUILT.
        Program {
            threads: true,
            system: Err(GC_ATOMIC_OPS),
            uses_gc: false,
            ..program("atomicopstest", "atomicops.c")
        },
        Program {
            threads: true,
            system: Err(GCCONFIG),
            ..program("initfromthreadtest", "initfromthread.c")
        },
        Program {
            threads: true,
            system: Err(GC_ATOMIC_OPS),
            ..program("subthreadcreatetest", "subthreadcreate.c")
        },
        Program {
            threads: true,
            system: Ok(&[UINTPTR, HIDE_NZ]),
            ..program("threadkeytest", "threadkey.c")
        },
        Program {
            threads: true,
            ..program("threadleaktest", "threadleak.c")
        },
        Program {
            cxx: CxxLib::Gccpp,
            threads: true,
            system: Err(GCCONFIG),
            ..program("cpptest", "cpp.cc")
        },
        Program {
            cxx: CxxLib::Gctba,
            threads: true,
            ..program("treetest", "tree.cc")
        },
        Program {
            threads: true,
            system: Err(GC_PRIV),
            ..program("disclaimtest", "disclaim.c")
        },
        Program {
            system: Err(GC_PRIV),
            ..program("disclaim_bench", "disclaim_bench.c")
        },
        Program {
            threads: true,
            system: Err(GC_PRIV),
            ..program("weakmaptest", "weakmap.c")
        },
    ]
}

/// Programs of tests.am built against neither libgc, and why.
const NOT_BUILT: &[(&str, &str)] = &[(
    "tracetest",
    "tests.am builds it only for a libgc configured with KEEP_BACK_PTRS \
     (GC_generate_random_backtrace); neither libgc 8.2.2 nor the crate's 8.3 is",
)];

/// Where things are.
struct Places {
    /// bdwgc's source: `<bdwgc-alloc-sys>/vendor/bdwgc`.
    bdwgc: PathBuf,
    /// `target/bdwgc-tests`.
    build: PathBuf,
    /// bdwgc-alloc-sys's build output (`.../out`), if it was built.
    vendored: Result<PathBuf, String>,
}

fn places() -> &'static Result<Places, String> {
    static PLACES: OnceLock<Result<Places, String>> = OnceLock::new();
    PLACES.get_or_init(find_places)
}

fn find_places() -> Result<Places, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = repo_root().join("Cargo.toml");
    let metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest);
        if offline {
            command.arg("--offline");
        }
        command.output()
    };
    let output = match metadata(true) {
        Ok(out) if out.status.success() => out,
        _ => metadata(false).map_err(|e| format!("cannot run cargo metadata: {e}"))?,
    };
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let crate_manifest = json["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "bdwgc-alloc-sys")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata lists no package bdwgc-alloc-sys")?;
    let bdwgc = Path::new(crate_manifest)
        .parent()
        .ok_or("bdwgc-alloc-sys's manifest has no directory")?
        .join("vendor/bdwgc");
    if !bdwgc.join("tests/tests.am").exists() {
        return Err(format!("{} has no tests/tests.am", bdwgc.display()));
    }
    let target = json["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let vendored = find_vendored_libgc(&target, &bdwgc);
    Ok(Places {
        bdwgc,
        build: target.join("bdwgc-tests"),
        vendored,
    })
}

/// bdwgc-alloc-sys's build script configures bdwgc in `OUT_DIR/build` and
/// installs it in `OUT_DIR` (`lib/libgc.a`, `include/`). Of the build
/// outputs configured from this `bdwgc` source, the newest.
fn find_vendored_libgc(target: &Path, bdwgc: &Path) -> Result<PathBuf, String> {
    let configure = bdwgc.join("configure").display().to_string();
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for profile in ["release", "debug"] {
        let Ok(entries) = std::fs::read_dir(target.join(profile).join("build")) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with("bdwgc-alloc-sys-")
            {
                continue;
            }
            let out = entry.path().join("out");
            let library = out.join("lib/libgc.a");
            let ours = std::fs::read_to_string(out.join("build/config.log"))
                .is_ok_and(|log| log.contains(&configure));
            if !ours || !out.join("build/include/config.h").exists() {
                continue;
            }
            if let Ok(modified) = library.metadata().and_then(|m| m.modified()) {
                found.push((modified, out));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, out)| out).ok_or_else(|| {
        format!(
            "no build of bdwgc-alloc-sys's libgc (from {}) under {}/*/build: \
             run cargo build --release -p bdwgc-alloc-example",
            bdwgc.display(),
            target.display()
        )
    })
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The runner: runs a program, waits for it with wait4, writes how it ended
/// and its peak RSS to a file, and ends as the program did. It sets
/// `LD_PRELOAD` from `BDWGC_TESTS_CHILD_PRELOAD` for the program only.
const RUNNER_C: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct rlimit no_core = {0, 0};
  const char *preload = getenv("BDWGC_TESTS_CHILD_PRELOAD");
  struct rusage usage;
  int status;
  pid_t pid;
  FILE *report;

  if (argc < 3) {
    fprintf(stderr, "usage: %s REPORT PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  setrlimit(RLIMIT_CORE, &no_core);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    return 2;
  }
  if (pid == 0) {
    if (preload != NULL && *preload != '\0')
      setenv("LD_PRELOAD", preload, 1);
    unsetenv("BDWGC_TESTS_CHILD_PRELOAD");
    execv(argv[2], argv + 2);
    perror("execv");
    _exit(127);
  }
  while (wait4(pid, &status, 0, &usage) < 0) {
  }
  report = fopen(argv[1], "w");
  if (report != NULL) {
    fprintf(report, "%s %d %ld\n", WIFSIGNALED(status) ? "signal" : "exit",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
            usage.ru_maxrss);
    fclose(report);
  }
  if (WIFSIGNALED(status)) {
    signal(WTERMSIG(status), SIG_DFL);
    raise(WTERMSIG(status));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}
"#;

fn runner(build: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(build).map_err(|e| e.to_string())?;
    let source = build.join("runner.c");
    std::fs::write(&source, RUNNER_C).map_err(|e| e.to_string())?;
    let runner = build.join("runner");
    compile(
        "cc",
        &[
            "-O2".into(),
            source.into(),
            "-o".into(),
            runner.clone().into(),
        ],
    )?;
    Ok(runner)
}

/// Builds `program` against `libgc` in `dir`; returns the executable.
fn build(places: &Places, libgc: Libgc, program: &Program, dir: &Path) -> Result<PathBuf, String> {
    let tests = places.bdwgc.join("tests");
    let source = tests.join(program.source);
    let exe = dir.join(program.name);
    let compiler = if program.source.ends_with(".cc") {
        "c++"
    } else {
        "cc"
    };
    let mut flags: Vec<OsString> = os(&["-O2", "-g"]);
    let mut libs: Vec<OsString> = Vec::new();
    match libgc {
        Libgc::System => {
            let compat = program.system.map_err(|why| why.to_string())?;
            flags.push("-I/usr/include/gc".into());
            if program.threads {
                flags.push("-DGC_THREADS".into());
            }
            flags.extend(os(compat));
            match program.cxx {
                CxxLib::None => {}
                CxxLib::Gccpp => libs.push("-lgccpp".into()),
                CxxLib::Gctba => libs.push("-lgctba".into()),
            }
            libs.extend(os(&["-lgc", "-lpthread", "-ldl"]));
        }
        Libgc::Vendored => {
            let out = places.vendored.clone()?;
            flags.push("-DHAVE_CONFIG_H".into());
            flags.push(format!("-I{}", out.join("build/include").display()).into());
            flags.push(format!("-I{}", places.bdwgc.join("include").display()).into());
            let cxx_objects: &[&str] = match program.cxx {
                CxxLib::None => &[],
                CxxLib::Gccpp => &["gc_cpp", "gc_badalc"],
                CxxLib::Gctba => &["gc_badalc"],
            };
            for name in cxx_objects {
                let object = dir.join(format!("{name}.o"));
                let mut args = flags.clone();
                args.extend([
                    "-c".into(),
                    places.bdwgc.join(format!("{name}.cc")).into(),
                    "-o".into(),
                    object.clone().into(),
                ]);
                compile("c++", &args)?;
                libs.push(object.into());
            }
            libs.push("-rdynamic".into());
            let archive: OsString = out.join("lib/libgc.a").into();
            if program.staticroots {
                // Its libraries use libgc functions the program does not:
                // the program must hold all of libgc for them.
                libs.extend([
                    "-Wl,--whole-archive".into(),
                    archive,
                    "-Wl,--no-whole-archive".into(),
                ]);
            } else {
                libs.push(archive);
            }
            libs.extend(os(&["-lpthread", "-ldl"]));
        }
    }
    flags.extend(os(program.defines));
    let mut args = flags.clone();
    if program.staticroots {
        // tests.am: libstaticroots_lib_test.la and libstaticroots_lib2_test.la
        // from staticroots_lib.c (the second with -DSTATICROOTSLIB2), and
        // the program with -DSTATICROOTSLIB2. Against the static libgc the
        // libraries take libgc from the program.
        for (lib, extra) in [
            ("staticroots_lib_test", None),
            ("staticroots_lib2_test", Some("-DSTATICROOTSLIB2")),
        ] {
            let mut lib_args = flags.clone();
            lib_args.extend(extra.map(OsString::from));
            lib_args.extend([
                "-fPIC".into(),
                "-shared".into(),
                tests.join("staticroots_lib.c").into(),
                "-o".into(),
                dir.join(format!("lib{lib}.so")).into(),
            ]);
            if libgc == Libgc::System {
                lib_args.push("-lgc".into());
            }
            compile(compiler, &lib_args)?;
        }
        args.push("-DSTATICROOTSLIB2".into());
    }
    args.extend([source.into(), "-o".into(), exe.clone().into()]);
    if program.staticroots {
        args.extend([
            format!("-L{}", dir.display()).into(),
            format!("-Wl,-rpath,{}", dir.display()).into(),
            "-lstaticroots_lib_test".into(),
            "-lstaticroots_lib2_test".into(),
        ]);
    }
    args.extend(libs);
    compile(compiler, &args)?;
    Ok(exe)
}

/// One run of a program.
struct Run {
    outcome: Outcome,
    /// How the program ended (the runner's report; the runner's own ending
    /// when it wrote none, as when the run timed out).
    ending: Ending,
    /// Peak RSS in KiB, when the runner reported it.
    max_rss_kb: Option<u64>,
}

impl Run {
    fn passed(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    fn printed_succeeded(&self) -> bool {
        self.outcome.stdout.lines().any(|l| l.trim() == "SUCCEEDED")
    }

    /// The shim's summary lines (one per process that had it).
    fn shim_lines(&self) -> Vec<&str> {
        self.outcome
            .stderr
            .lines()
            .filter(|l| l.starts_with("bdwgc-shim "))
            .collect()
    }

    fn shim_active(&self) -> bool {
        let lines = self.shim_lines();
        !lines.is_empty() && lines.iter().all(|l| l.contains("active=yes"))
    }

    fn result(&self) -> String {
        match &self.ending {
            Ending::Exited(0) => "ok".into(),
            Ending::Exited(code) => format!("exit {code}"),
            Ending::Signalled(6) => "SIGABRT".into(),
            Ending::Signalled(11) => "SIGSEGV".into(),
            Ending::Signalled(signal) => format!("signal {signal}"),
            Ending::TimedOut => "timeout".into(),
        }
    }

    /// "ok 1.23s 12.3MiB".
    fn cell(&self) -> String {
        let rss = self
            .max_rss_kb
            .map(|kb| format!("{:.1}MiB", kb as f64 / 1024.0))
            .unwrap_or_else(|| "-".into());
        format!(
            "{} {:.2}s {}",
            self.result(),
            self.outcome.elapsed.as_secs_f64(),
            rss
        )
    }

    /// The last lines of the run's output, for a report.
    fn tails(&self) -> String {
        format!(
            "--- stdout (last lines)\n{}--- stderr (last lines)\n{}",
            tail(&self.outcome.stdout),
            tail(&self.outcome.stderr)
        )
    }

    /// The last line of stderr that is not the shim's, for the table.
    fn reason(&self) -> Option<String> {
        self.outcome
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("bdwgc-shim "))
            .map(|l| l.trim().chars().take(70).collect())
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

/// How a program is run: the environment of bdwgc's tests.am
/// (`GC_PROMPT_DISABLED=1`) and of the other tests (`GC_MARKERS=2`), and
/// with the shim `LD_PRELOAD` and `BDWGC_SHIM_DEBUG=1`.
fn environment(shim: bool, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("GC_MARKERS".to_string(), "2".to_string()),
        ("GC_PROMPT_DISABLED".to_string(), "1".to_string()),
    ];
    if shim {
        env.push((
            "LD_PRELOAD".into(),
            shim_dir().join("libbdwgc_shim.so").display().to_string(),
        ));
        env.push(("BDWGC_SHIM_DEBUG".into(), "1".into()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// The shell command that repeats a run.
fn reproducer(exe: &Path, args: &[&str], env: &[(String, String)]) -> String {
    let mut line = format!(
        "cd {} && env",
        exe.parent().unwrap_or(Path::new(".")).display()
    );
    for (k, v) in env {
        line.push_str(&format!(" {k}={v}"));
    }
    line.push_str(&format!(" {}", exe.display()));
    for a in args {
        line.push_str(&format!(" {a}"));
    }
    line
}

fn run(
    runner: &Path,
    exe: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Run, String> {
    let report = exe.with_extension("rusage");
    let _ = std::fs::remove_file(&report);
    let mut command = Command::new(runner);
    command
        .arg(&report)
        .arg(exe)
        .args(args)
        .current_dir(exe.parent().unwrap_or(Path::new(".")))
        .env_remove("LD_PRELOAD")
        .env_remove("BDWGC_SHIM_DEBUG");
    for (k, v) in env {
        if k == "LD_PRELOAD" {
            // For the program only, not the runner.
            command.env("BDWGC_TESTS_CHILD_PRELOAD", v);
        } else {
            command.env(k, v);
        }
    }
    let outcome = run_with_timeout(command, timeout)?;
    let reported = std::fs::read_to_string(&report).ok().and_then(|text| {
        let mut words = text.split_whitespace();
        let how = words.next()?;
        let code: i32 = words.next()?.parse().ok()?;
        let rss: u64 = words.next()?.parse().ok()?;
        let ending = match how {
            "signal" => Ending::Signalled(code),
            _ => Ending::Exited(code),
        };
        Some((ending, rss))
    });
    let (ending, max_rss_kb) = match reported {
        Some((ending, rss)) if outcome.ending != Ending::TimedOut => (ending, Some(rss)),
        _ => (outcome.ending.clone(), None),
    };
    Ok(Run {
        outcome,
        ending,
        max_rss_kb,
    })
}

/// One row of the table.
struct Row {
    program: &'static str,
    plain: Option<Run>,
    shim: Option<Run>,
    note: String,
}

/// Builds and runs every program against `libgc`, prints the table, and
/// returns the problems found.
fn check(libgc: Libgc) -> Vec<String> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let places = match places() {
        Ok(places) => places,
        Err(e) => return vec![e.clone()],
    };
    let shim = shim_dir().join("libbdwgc_shim.so");
    if !shim.exists() {
        return vec![format!(
            "{} does not exist: run cargo build --release -p bdwgc-shim-c",
            shim.display()
        )];
    }
    if libgc == Libgc::Vendored {
        if let Err(e) = &places.vendored {
            return vec![e.clone()];
        }
    }
    let dir = places.build.join(libgc.name());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return vec![format!("cannot create {}: {e}", dir.display())];
    }
    let runner = match runner(&places.build) {
        Ok(runner) => runner,
        Err(e) => return vec![format!("cannot build the runner: {e}")],
    };
    eprintln!(
        "bdwgc tests from {}\nbuilt against libgc {} in {}{}",
        places.bdwgc.display(),
        libgc.name(),
        dir.display(),
        match (&places.vendored, libgc) {
            (Ok(out), Libgc::Vendored) =>
                format!(" (static {})", out.join("lib/libgc.a").display()),
            _ => " (shared, system)".into(),
        }
    );
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for program in programs() {
        if libgc == Libgc::System {
            if let Err(why) = program.system {
                rows.push(Row {
                    program: program.name,
                    plain: None,
                    shim: None,
                    note: format!("skipped: {why}"),
                });
                continue;
            }
        }
        let exe = match build(places, libgc, &program, &dir) {
            Ok(exe) => exe,
            Err(e) => {
                problems.push(format!(
                    "{} [{}] does not build: {e}",
                    program.name,
                    libgc.name()
                ));
                rows.push(Row {
                    program: program.name,
                    plain: None,
                    shim: None,
                    note: "does not build".into(),
                });
                continue;
            }
        };
        let args = program.args;
        let plain = match run(&runner, &exe, args, &environment(false, &[]), PLAIN_TIMEOUT) {
            Ok(run) => run,
            Err(e) => {
                problems.push(format!("{}: {e}", program.name));
                continue;
            }
        };
        let timeout = (plain.outcome.elapsed * 2 + Duration::from_secs(10))
            .clamp(SHIM_TIMEOUT_MIN, Duration::from_secs(60));
        let shim_env = environment(true, &[]);
        let with_shim = match run(&runner, &exe, args, &shim_env, timeout) {
            Ok(run) => run,
            Err(e) => {
                problems.push(format!("{}: {e}", program.name));
                continue;
            }
        };
        let mut note;
        if !plain.passed() {
            // Not the shim's doing: reported, not held against it.
            note = format!(
                "fails without the shim ({}), so not compared",
                plain.reason().unwrap_or_default()
            );
            eprintln!(
                "{} [{}] fails without the shim:\n{}\n{}",
                program.name,
                libgc.name(),
                reproducer(&exe, args, &environment(false, &[])),
                plain.tails()
            );
        } else {
            let passed =
                with_shim.passed() && (!plain.printed_succeeded() || with_shim.printed_succeeded());
            if !passed {
                // Whether incremental mode is what the shim trips on.
                let no_incremental = environment(true, &[("GC_DISABLE_INCREMENTAL", "1")]);
                let again = run(&runner, &exe, args, &no_incremental, timeout)
                    .map(|r| r.cell())
                    .unwrap_or_else(|e| e);
                note = format!(
                    "FAILS with the shim: {}; with GC_DISABLE_INCREMENTAL=1: {again}",
                    with_shim.reason().unwrap_or_else(|| "no output".into())
                );
                problems.push(format!(
                    "{} [libgc {}] passes without the shim but fails with it: {} \
                     (without: {})\nreproduce: {}\n{}",
                    program.name,
                    libgc.name(),
                    with_shim.cell(),
                    plain.cell(),
                    reproducer(&exe, args, &shim_env),
                    with_shim.tails()
                ));
            } else if program.uses_gc && !with_shim.shim_active() {
                note = "shim NOT active".into();
                problems.push(format!(
                    "{} [libgc {}]: the shim did not report active=yes: {:?}\nreproduce: {}",
                    program.name,
                    libgc.name(),
                    with_shim.shim_lines(),
                    reproducer(&exe, args, &shim_env)
                ));
            } else if !program.uses_gc {
                note = format!(
                    "no libgc linked in: shim passes through ({})",
                    if with_shim.shim_active() {
                        "active=yes"
                    } else {
                        "active=no"
                    }
                );
            } else {
                note = "shim active".into();
            }
            if program.name == "disclaim_bench" {
                match (plain.max_rss_kb, with_shim.max_rss_kb) {
                    (Some(without), Some(with)) => {
                        let limit = (without as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KB;
                        note.push_str(&format!("; peak RSS limit {:.1}MiB", limit as f64 / 1024.0));
                        if with > limit {
                            problems.push(format!(
                                "disclaim_bench [libgc {}]: peak RSS {with} KiB with the shim, \
                                 {without} KiB without (limit {limit} KiB)\nreproduce: {}",
                                libgc.name(),
                                reproducer(&exe, args, &shim_env)
                            ));
                        }
                    }
                    _ => problems.push(format!(
                        "disclaim_bench [libgc {}]: no peak RSS reported",
                        libgc.name()
                    )),
                }
            }
        }
        eprintln!(
            "  {:<20} without: {:<26} with the shim: {:<26} {}",
            program.name,
            plain.cell(),
            with_shim.cell(),
            note
        );
        rows.push(Row {
            program: program.name,
            plain: Some(plain),
            shim: Some(with_shim),
            note,
        });
    }
    for (name, why) in NOT_BUILT {
        rows.push(Row {
            program: name,
            plain: None,
            shim: None,
            note: format!("skipped: {why}"),
        });
    }
    print_table(libgc, &rows);
    if rows
        .iter()
        .all(|r| r.plain.as_ref().map_or(true, |p| !p.passed()))
    {
        problems.push(format!(
            "no program passed without the shim against libgc {}",
            libgc.name()
        ));
    }
    problems
}

fn print_table(libgc: Libgc, rows: &[Row]) {
    let cell = |run: &Option<Run>| run.as_ref().map(Run::cell).unwrap_or_else(|| "-".into());
    let mut table = format!(
        "\nbdwgc's tests against libgc {} (GC_MARKERS=2):\n{:<20} {:<6} {:<26} {:<26} note\n",
        libgc.name(),
        "program",
        "libgc",
        "without the shim",
        "with the shim"
    );
    for row in rows {
        let built = if row.plain.is_some() {
            libgc.name()
        } else {
            "skip"
        };
        table.push_str(&format!(
            "{:<20} {:<6} {:<26} {:<26} {}\n",
            row.program,
            built,
            cell(&row.plain),
            cell(&row.shim),
            row.note
        ));
    }
    eprintln!("{table}");
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// One libgc's programs at a time: the two tests would otherwise run side by
/// side on this 2-core machine, and libgc 8.3's gctest (incremental
/// collection with userfaultfd, 2 markers) then fails now and then, with or
/// without the shim ("Signals delivery fails constantly", or a forked child
/// that hangs starting its markers): three at once beside a busy loop, 1
/// run in 30 plain and 1 in 60 with the shim preloaded (4 in 30 while the
/// shim registered libgc's userfaultfd monitor); 0 in 20 each alone.
static ONE_LIBGC_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Against the system's shared libgc 8.2.2, the programs that build with
/// its headers.
#[test]
fn bdwgc_tests_with_system_libgc() {
    let _alone = ONE_LIBGC_AT_A_TIME.lock();
    assert_no_problems(check(Libgc::System));
}

/// Against bdwgc-alloc-sys's static libgc 8.3 (`-rdynamic`), all of them.
#[test]
fn bdwgc_tests_with_vendored_static_libgc() {
    let _alone = ONE_LIBGC_AT_A_TIME.lock();
    assert_no_problems(check(Libgc::Vendored));
}

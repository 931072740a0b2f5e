//! The demonstration scenarios: small C programs that use libgc together with
//! GC-unaware C libraries (`tests/c`), built in each way of using the shim
//! and run with a timeout. The demo and the integration tests share this.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository this tool was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Where `cargo build --release` puts libbdwgc_shim.{a,so}.
pub fn shim_dir() -> PathBuf {
    std::env::var_os("BDWGC_SHIM_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release"))
}

/// The machine a scenario program is built for and runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This machine, with its own compilers.
    Native,
    /// 64-bit Arm Linux, built with Debian's cross compilers against the
    /// arm64 libraries of multiarch (`libgc-dev:arm64`) and run under
    /// qemu-user (`qemu-aarch64 -L /`).
    Aarch64,
}

impl Target {
    /// Rust's name of the target whose shim libraries the programs use.
    pub fn rust_triple(self) -> Option<&'static str> {
        match self {
            Target::Native => None,
            Target::Aarch64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// Where `cargo build --release [--target ...]` puts the shim for this
    /// target.
    pub fn shim_dir(self) -> PathBuf {
        match self.rust_triple() {
            None => shim_dir(),
            Some(triple) => repo_root().join("target").join(triple).join("release"),
        }
    }

    /// The C compiler (`c++` with `cplusplus`).
    fn compiler(self, cplusplus: bool) -> &'static str {
        match (self, cplusplus) {
            (Target::Native, false) => "cc",
            (Target::Native, true) => "c++",
            (Target::Aarch64, false) => "aarch64-linux-gnu-gcc",
            (Target::Aarch64, true) => "aarch64-linux-gnu-g++",
        }
    }

    /// Where this target's programs are built.
    fn build_dir(self) -> PathBuf {
        match self {
            Target::Native => build_root(),
            Target::Aarch64 => build_root().join("aarch64"),
        }
    }

    /// A command that runs `program` on this target with `preload` (a
    /// library to preload, or none): under emulation, the emulator sets
    /// the guest's own `LD_PRELOAD`, so that the host's loader never sees
    /// a library of another machine.
    pub fn command(self, program: &Path, preload: Option<&Path>) -> Command {
        match self {
            Target::Native => {
                let mut command = Command::new(program);
                command.env_remove("LD_PRELOAD");
                if let Some(library) = preload {
                    command.env("LD_PRELOAD", library);
                }
                command
            }
            Target::Aarch64 => {
                let mut command = Command::new("qemu-aarch64");
                command.env_remove("LD_PRELOAD").args(["-L", "/"]);
                if let Some(library) = preload {
                    let mut setting = OsString::from("LD_PRELOAD=");
                    setting.push(library);
                    command.arg("-E").arg(setting);
                }
                command.arg(program);
                command
            }
        }
    }

    /// How much longer a run takes here than natively, for timeouts.
    pub fn slowdown(self) -> u32 {
        match self {
            Target::Native => 1,
            Target::Aarch64 => 10,
        }
    }
}

/// How a scenario program meets the shim (or does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No shim; libgc linked shared.
    Without,
    /// No shim; libgc linked statically.
    WithoutStaticGc,
    /// `LD_PRELOAD=libbdwgc_shim.so`, program as in `Without`.
    Preload,
    /// Linked with `-lbdwgc_shim` (shared).
    Shared,
    /// `-Wl,-u,bdwgc_shim_is_active libbdwgc_shim.a`, shared libgc.
    Static,
    /// The same with a static libgc.
    StaticStaticGc,
    /// `--whole-archive libbdwgc_shim.a`, shared libgc.
    WholeArchive,
    /// The same with a static libgc.
    WholeArchiveStaticGc,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Without,
        Mode::WithoutStaticGc,
        Mode::Preload,
        Mode::Shared,
        Mode::Static,
        Mode::StaticStaticGc,
        Mode::WholeArchive,
        Mode::WholeArchiveStaticGc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Without => "without",
            Mode::WithoutStaticGc => "without-static-gc",
            Mode::Preload => "preload",
            Mode::Shared => "shared",
            Mode::Static => "static",
            Mode::StaticStaticGc => "static-static-gc",
            Mode::WholeArchive => "whole-archive",
            Mode::WholeArchiveStaticGc => "whole-archive-static-gc",
        }
    }

    pub fn has_shim(self) -> bool {
        !matches!(self, Mode::Without | Mode::WithoutStaticGc)
    }

    fn static_gc(self) -> bool {
        matches!(
            self,
            Mode::WithoutStaticGc | Mode::StaticStaticGc | Mode::WholeArchiveStaticGc
        )
    }

    /// The linker arguments that bring the shim in, as the README gives them.
    pub fn shim_link_args(self, shim: &Path) -> Vec<OsString> {
        let archive = shim.join("libbdwgc_shim.a").into_os_string();
        let mut args: Vec<OsString> = Vec::new();
        match self {
            Mode::Without | Mode::WithoutStaticGc | Mode::Preload => {}
            Mode::Shared => {
                args.push(format!("-L{}", shim.display()).into());
                args.push(format!("-Wl,-rpath,{}", shim.display()).into());
                args.push("-Wl,--push-state,--no-as-needed".into());
                args.push("-lbdwgc_shim".into());
                args.push("-Wl,--pop-state".into());
            }
            Mode::Static | Mode::StaticStaticGc => {
                args.push("-Wl,--undefined=bdwgc_shim_is_active".into());
                args.push(archive);
            }
            Mode::WholeArchive | Mode::WholeArchiveStaticGc => {
                args.push("-Wl,--whole-archive".into());
                args.push(archive);
                args.push("-Wl,--no-whole-archive".into());
            }
        }
        args
    }
}

/// One scenario: a program, its arguments, and whether it fails without
/// the shim (a conformance scenario passes either way).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub program: &'static str,
    pub args: Vec<String>,
    pub fails_without_shim: bool,
    pub what: &'static str,
    /// How long a run may take before it counts as a hang.
    pub timeout: Duration,
}

/// The default time a scenario may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub const THREAD_MODES: [&str; 8] = [
    "joinable",
    "detached",
    "signals-blocked",
    "attr-sigmask",
    "sigev-timer",
    "sigev-mq-notify",
    "pthread-exit",
    "cancelled",
];

/// When and how `tests/c/init_order.c` initializes libgc (argv[1]), with
/// what its scenario shows.
pub const INIT_ORDER_MODES: [(&str, &str); 3] = [
    (
        "implicit",
        "no GC_INIT: libgc initializes itself at main's first GC_MALLOC",
    ),
    (
        "implicit-thread",
        "no GC_INIT: libgc initializes itself on a library thread",
    ),
    (
        "late",
        "GC_INIT after library threads started; threads that register themselves",
    ),
];

/// The libgc setting `tests/c/settings.c` makes before `GC_INIT` (argv[1]),
/// with what its scenario shows.
pub const SETTING_MODES: [(&str, &str); 8] = [
    (
        "interior-pointers-off",
        "GC_set_all_interior_pointers(0) before GC_INIT",
    ),
    (
        "signals-moved",
        "stop-the-world signals moved; the program keeps SIGPWR/SIGXCPU",
    ),
    (
        "fork-by-program",
        "GC_set_handle_fork(0); the program calls GC_atfork_* itself",
    ),
    (
        "find-leak",
        "GC_set_find_leak(1): no false leaks from library memory",
    ),
    (
        "pages-executable",
        "GC_set_pages_executable, heap mapping checked",
    ),
    (
        "stack-bottom",
        "the program's GC_set_stackbottom for the main thread",
    ),
    ("markers", "GC_set_markers_count(3) before GC_INIT"),
    (
        "init-conf",
        "GC_INIT's GC_INIT_CONF_* settings (divisor, frequency, heap sizes...)",
    ),
];

/// Every scenario, in the order the demo shows them.
pub fn all_scenarios() -> Vec<Scenario> {
    let mut list = vec![
        Scenario {
            name: "keep-objects".into(),
            program: "keep_objects",
            args: vec![],
            fails_without_shim: true,
            what: "22,000 GC objects kept only in library malloc memory (11 allocators)",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "keep-objects-incremental".into(),
            program: "keep_objects",
            args: vec!["incremental".into()],
            fails_without_shim: true,
            what: "the same under libgc's incremental collection",
            timeout: DEFAULT_TIMEOUT,
        },
    ];
    for mode in THREAD_MODES {
        list.push(Scenario {
            name: format!("thread-{mode}"),
            program: "thread_callbacks",
            args: vec![mode.to_string()],
            fails_without_shim: true,
            what: "library thread calls back, holds objects on its stack, collects",
            timeout: DEFAULT_TIMEOUT,
        });
    }
    list.extend([
        Scenario {
            name: "gc-pthread-create".into(),
            program: "gc_threads",
            args: vec![],
            fails_without_shim: true,
            what: "GC_THREADS program (GC_pthread_create) plus library threads",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "fork".into(),
            program: "fork_threads",
            args: vec![],
            fails_without_shim: true,
            what: "fork() while library threads allocate; the child collects",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "2000-threads".into(),
            program: "many_threads",
            args: vec![],
            fails_without_shim: true,
            what: "2,000 library threads, one after another, allocating",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "before-main".into(),
            program: "preinit",
            args: vec![],
            fails_without_shim: true,
            what: "memory and a thread from a constructor that ran before main",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "before-init-busy".into(),
            program: "before_init_busy",
            args: vec![],
            fails_without_shim: false,
            what: "a thread started before GC_INIT allocates while main collects, 20 times (passes with glibc too)",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "dlopen".into(),
            program: "dlopen_stash",
            args: vec!["@libstash".into()],
            fails_without_shim: true,
            what: "a dlopen'ed library keeps GC objects",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "cache-stress".into(),
            program: "cache_stress",
            args: vec!["7".into(), "3".into()],
            fails_without_shim: true,
            what: "3 s of threads that come and go, cross-thread frees, a fork (seed 7)",
            // Without the shim it livelocks; with it, it takes 3 seconds.
            timeout: Duration::from_secs(20),
        },
        Scenario {
            name: "cache-stress-purge".into(),
            program: "cache_stress",
            args: vec!["8".into(), "3".into(), "purge".into()],
            fails_without_shim: true,
            what: "the same with free memory purged at once and malloc_trim(0) on the workers",
            timeout: Duration::from_secs(20),
        },
        Scenario {
            name: "thread-churn".into(),
            program: "thread_churn",
            args: vec![],
            fails_without_shim: true,
            what: "20,000 threads ending every way, some starting with signals blocked; RSS flat",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "exit-order".into(),
            program: "exit_order",
            args: vec![],
            fails_without_shim: true,
            what: "C++ thread_local and pthread-key destructors allocate and collect",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "dlopen-loop".into(),
            program: "dlopen_loop",
            args: vec!["@libctor_thread".into()],
            fails_without_shim: true,
            what: "dlopen/dlclose x100 of a library whose constructor starts a thread",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "out-of-memory".into(),
            program: "oom",
            args: vec![],
            fails_without_shim: true,
            what: "RLIMIT_AS: NULL and ENOMEM, then the program goes on and collects",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "address-limit-after".into(),
            program: "address_limit",
            args: vec!["after".into()],
            fails_without_shim: true,
            what: "RLIMIT_AS of 4 GiB set after start-up: threads, every size, fill to the limit twice",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "address-limit-before".into(),
            program: "address_limit",
            args: vec!["before".into()],
            fails_without_shim: true,
            what: "the same under a limit set before start-up; small blocks still from the shim's region",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "burst-trim".into(),
            program: "burst",
            args: vec!["trim".into()],
            fails_without_shim: true,
            what: "768 MiB burst on 4 threads, freed on 4 others, then malloc_trim(0): RSS back",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "burst-idle".into(),
            program: "burst",
            args: vec!["idle".into()],
            fails_without_shim: true,
            what: "the same burst without malloc_trim: RSS below a quarter of its peak, light work",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "freed-blocks".into(),
            program: "freed_blocks",
            args: vec![],
            fails_without_shim: true,
            what:
                "objects live while library blocks (48 B-6 MiB) hold them, collectable once freed",
            timeout: DEFAULT_TIMEOUT,
        },
    ]);
    for (mode, what) in INIT_ORDER_MODES {
        list.push(Scenario {
            name: format!("init-{mode}"),
            program: "init_order",
            args: vec![mode.to_string()],
            fails_without_shim: true,
            what,
            timeout: DEFAULT_TIMEOUT,
        });
    }
    for (mode, what) in SETTING_MODES {
        list.push(Scenario {
            name: format!("setting-{mode}"),
            program: "settings",
            args: vec![mode.to_string()],
            fails_without_shim: true,
            what,
            timeout: DEFAULT_TIMEOUT,
        });
    }
    list.extend([
        Scenario {
            name: "rss-flat".into(),
            program: "rss_flat",
            args: vec![],
            fails_without_shim: false,
            what: "10 million malloc/free cycles keep RSS flat (passes with glibc too)",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "rss-phases".into(),
            program: "rss_phases",
            args: vec![],
            fails_without_shim: false,
            what: "memory freed in one size class serves the next phase's sizes (passes with glibc too)",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "malloc-report".into(),
            program: "malloc_report",
            args: vec![],
            fails_without_shim: false,
            what: "mallinfo2, mallinfo, malloc_stats, malloc_info count what malloc serves (conformance)",
            timeout: DEFAULT_TIMEOUT,
        },
        Scenario {
            name: "edge-inputs".into(),
            program: "edge_inputs",
            args: vec![],
            fails_without_shim: false,
            what: "glibc's promises for edge input (conformance: passes with glibc too)",
            timeout: DEFAULT_TIMEOUT,
        },
    ]);
    list
}

/// Runs `scenario` in each of `modes` on `target` and returns what went
/// wrong: without the shim a scenario must fail (the proof that the shim is
/// what fixes it) and must not report the shim active; with it, it must
/// pass with the shim active. A conformance scenario passes either way.
pub fn check_in_modes(target: Target, scenario: &Scenario, modes: &[Mode]) -> Vec<String> {
    let name = &scenario.name;
    let mut problems = Vec::new();
    for &mode in modes {
        let outcome = match run_on(target, scenario, mode) {
            Ok(outcome) => outcome,
            Err(e) => {
                problems.push(format!("{name} [{}]: {e}", mode.name()));
                continue;
            }
        };
        let report = format!(
            "{name} [{}]: {} ({:?}, {:.2}s)\n--- stdout\n{}--- stderr\n{}",
            mode.name(),
            outcome.summary(),
            outcome.ending,
            outcome.elapsed.as_secs_f64(),
            outcome.stdout,
            outcome.stderr
        );
        eprintln!(
            "{name} [{}]: {} ({:.2}s)",
            mode.name(),
            outcome.summary(),
            outcome.elapsed.as_secs_f64()
        );
        if mode.has_shim() {
            if outcome.shim_reported() != Some(true) {
                problems.push(format!("shim not active: {report}"));
            } else if !outcome.passed() {
                problems.push(format!("fails with the shim: {report}"));
            }
        } else {
            if outcome.shim_reported() == Some(true) {
                problems.push(format!("shim active without the shim: {report}"));
            }
            if scenario.fails_without_shim && outcome.passed() {
                problems.push(format!(
                    "passes without the shim, so proves nothing: {report}"
                ));
            }
            if !scenario.fails_without_shim && !outcome.passed() {
                problems.push(format!("conformance fails with plain glibc: {report}"));
            }
        }
    }
    problems
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// Exit status 0 and the program's own "RESULT ok" line.
    pub fn passed(&self) -> bool {
        self.ending == Ending::Exited(0) && self.stdout.lines().any(|l| l == "RESULT ok")
    }

    /// The program reported whether the shim was active in it.
    pub fn shim_reported(&self) -> Option<bool> {
        self.stdout.lines().find_map(|l| match l {
            "shim=active" => Some(true),
            "shim=absent" => Some(false),
            _ => None,
        })
    }

    /// A short description for tables: "ok", "lost 17965", "abort: ...".
    pub fn summary(&self) -> String {
        if self.passed() {
            return "ok".into();
        }
        let reason = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("bdwgc-shim "))
            .map(|l| l.trim().to_string());
        let lost = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("lost=").and_then(|r| r.split(' ').next()))
            .filter(|n| *n != "0");
        match (&self.ending, lost, reason) {
            (Ending::TimedOut, _, _) => "hang (timed out)".into(),
            (_, Some(n), _) => format!("lost {n} objects"),
            (Ending::Signalled(6), _, Some(r)) => format!("abort: {r}"),
            (Ending::Signalled(11), _, _) => "segfault".into(),
            (Ending::Signalled(s), _, _) => format!("killed by signal {s}"),
            (Ending::Exited(c), _, Some(r)) => format!("exit {c}: {r}"),
            (Ending::Exited(c), _, None) => format!("exit {c}"),
        }
    }
}

fn build_root() -> PathBuf {
    std::env::var_os("BDWGC_SHIM_SCENARIO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/scenarios"))
}

/// Runs the C compiler; the error carries its output.
pub fn cc(args: &[OsString]) -> Result<(), String> {
    compile("cc", args)
}

/// Runs `compiler` (cc, c++) with `args`; the error carries its output.
pub fn compile(compiler: &str, args: &[OsString]) -> Result<(), String> {
    let out = Command::new(compiler).args(args).output().map_err(|e| {
        format!("cannot run {compiler} ({e}): install gcc and g++ (apt-get install gcc g++)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{compiler} {} failed:\n{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the GC-unaware libraries once per process and target.
fn libraries(target: Target) -> Result<PathBuf, String> {
    static BUILT: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[target as usize]
        .get_or_init(|| {
            let dir = target.build_dir().join("lib");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let src = repo_root().join("tests/c/lib");
            for name in ["stash", "early", "ctor_thread"] {
                let out = dir.join(format!("lib{name}.so"));
                let temporary = temporary_path(&out);
                compile(
                    target.compiler(false),
                    &[
                        "-O2".into(),
                        "-g".into(),
                        "-fPIC".into(),
                        "-shared".into(),
                        src.join(format!("{name}.c")).into(),
                        "-o".into(),
                        temporary.clone().into(),
                        "-lpthread".into(),
                    ],
                )?;
                std::fs::rename(&temporary, &out).map_err(|e| e.to_string())?;
            }
            Ok(dir)
        })
        .clone()
}

/// Where to write `out` first: another process (the demo run by a test, a
/// second test binary) may be running or writing the same program, so each
/// build writes a file of its own and renames it into place.
fn temporary_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(name)
}

/// Builds `program` for `mode` (once per process) and returns its path.
pub fn build(program: &str, mode: Mode) -> Result<PathBuf, String> {
    build_for(Target::Native, program, mode)
}

/// Builds `program` for `mode` on `target` (once per process) and returns
/// its path.
pub fn build_for(target: Target, program: &str, mode: Mode) -> Result<PathBuf, String> {
    static BUILT: Mutex<Vec<(Target, String, Mode, PathBuf)>> = Mutex::new(Vec::new());
    // Preloading uses the program built without the shim.
    let link_mode = if mode == Mode::Preload {
        Mode::Without
    } else {
        mode
    };
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, _, path)) = built
        .iter()
        .find(|(t, p, m, _)| *t == target && p == program && *m == link_mode)
    {
        return Ok(path.clone());
    }
    let libs = libraries(target)?;
    let shim = target.shim_dir();
    if link_mode.has_shim() && !shim.join("libbdwgc_shim.a").exists() {
        let target_flag = target
            .rust_triple()
            .map(|t| format!(" --target {t} -p bdwgc-shim-c"))
            .unwrap_or_default();
        return Err(format!(
            "{} has no libbdwgc_shim.a: run cargo build --release{target_flag}",
            shim.display()
        ));
    }
    let dir = target.build_dir().join(link_mode.name());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = dir.join(program);
    let temporary = temporary_path(&out);
    let src = repo_root().join("tests/c");
    // C++ programs (tests/c/*.cc) build with c++.
    let (compiler, source) = match src.join(format!("{program}.cc")) {
        cpp if cpp.exists() => (target.compiler(true), cpp),
        _ => (target.compiler(false), src.join(format!("{program}.c"))),
    };
    let mut args: Vec<OsString> = vec![
        "-O2".into(),
        "-g".into(),
        "-Wall".into(),
        format!("-I{}", src.display()).into(),
        format!("-I{}", src.join("lib").display()).into(),
        format!("-I{}", repo_root().join("include").display()).into(),
        source.into(),
        "-o".into(),
        temporary.clone().into(),
    ];
    args.extend(link_mode.shim_link_args(&shim));
    args.push(format!("-L{}", libs.display()).into());
    args.push(format!("-Wl,-rpath,{}", libs.display()).into());
    args.push("-lstash".into());
    args.push("-learly".into());
    if link_mode.static_gc() {
        args.extend(["-Wl,-Bstatic".into(), "-lgc".into(), "-Wl,-Bdynamic".into()]);
    } else {
        args.push("-lgc".into());
    }
    args.extend(["-lpthread".into(), "-ldl".into()]);
    compile(compiler, &args)?;
    std::fs::rename(&temporary, &out).map_err(|e| e.to_string())?;
    built.push((target, program.to_string(), link_mode, out.clone()));
    Ok(out)
}

/// Runs `scenario` in `mode`, killing it after its timeout.
pub fn run(scenario: &Scenario, mode: Mode) -> Result<Outcome, String> {
    run_on(Target::Native, scenario, mode)
}

/// Runs `scenario` in `mode` on `target`, killing it after its timeout
/// (longer by the target's slowdown).
pub fn run_on(target: Target, scenario: &Scenario, mode: Mode) -> Result<Outcome, String> {
    let timeout = scenario.timeout * target.slowdown();
    let program = build_for(target, scenario.program, mode)?;
    let libs = libraries(target)?;
    let args: Vec<String> = scenario
        .args
        .iter()
        .map(|a| match a.as_str() {
            "@libstash" => libs.join("libstash.so").display().to_string(),
            "@libctor_thread" => libs.join("libctor_thread.so").display().to_string(),
            other => other.to_string(),
        })
        .collect();
    run_program_on(target, &program, &args, mode == Mode::Preload, timeout)
}

/// Runs an already built program the way the scenarios run: with
/// `GC_MARKERS=2`, and with the shim preloaded when `preload` is set.
pub fn run_program(
    program: &Path,
    args: &[String],
    preload: bool,
    timeout: Duration,
) -> Result<Outcome, String> {
    run_program_on(Target::Native, program, args, preload, timeout)
}

/// [`run_program`] on `target`.
pub fn run_program_on(
    target: Target,
    program: &Path,
    args: &[String],
    preload: bool,
    timeout: Duration,
) -> Result<Outcome, String> {
    let library = target.shim_dir().join("libbdwgc_shim.so");
    let mut command = target.command(program, preload.then_some(library.as_path()));
    command.args(args).env("GC_MARKERS", "2");
    run_with_timeout(command, timeout)
}

/// The lines the shim prints at exit with `BDWGC_SHIM_DEBUG=1`, from the
/// keep-objects program preloaded on `target`.
pub fn debug_summary_lines(target: Target) -> Result<Vec<String>, String> {
    let program = build_for(target, "keep_objects", Mode::Preload)?;
    let library = target.shim_dir().join("libbdwgc_shim.so");
    let mut command = target.command(&program, Some(&library));
    command.env("BDWGC_SHIM_DEBUG", "1").env("GC_MARKERS", "2");
    let outcome = run_with_timeout(command, DEFAULT_TIMEOUT * target.slowdown())?;
    Ok(outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with("bdwgc-shim "))
        .map(String::from)
        .collect())
}

/// Reads `pipe` to its end on a thread of its own; the text arrives on the
/// returned channel.
fn read_in_background<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

/// Runs `command` with its output captured, killing it after `timeout`.
///
/// The program runs in a process group of its own, and the whole group is
/// killed when it ends or times out: a forked child that hangs (or outlives
/// its parent) must neither keep the run going nor hold the output pipes
/// open, or reading them would never finish.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Result<Outcome, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let start = Instant::now();
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let group = child.id() as libc::pid_t;
    let kill_group = || {
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads; it touches no memory of ours. ESRCH (nobody left) is
        // the usual, harmless result.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let ending = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                kill_group();
                break match (status.code(), status.signal()) {
                    (Some(code), _) => Ending::Exited(code),
                    (None, Some(sig)) => Ending::Signalled(sig),
                    (None, None) => Ending::Exited(-1),
                };
            }
            None if start.elapsed() > timeout => {
                kill_group();
                let _ = child.wait();
                break Ending::TimedOut;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // A process that left the group could still hold a pipe: give up on
    // its output after a while rather than wait for ever.
    let collect = |receiver: std::sync::mpsc::Receiver<String>| {
        receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| "(output not closed 10 s after the program ended)".into())
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    let elapsed = start.elapsed();
    Ok(Outcome {
        ending,
        stdout,
        stderr,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    /// A program whose forked child outlives it, holding its output open,
    /// must not keep the run waiting (a hung fork child once held a CI run
    /// until its 90 minutes ran out).
    #[test]
    fn a_child_left_behind_does_not_hold_the_run() {
        let start = Instant::now();
        let outcome =
            run_with_timeout(shell("sleep 300 & echo parent done"), DEFAULT_TIMEOUT).unwrap();
        assert!(matches!(outcome.ending, Ending::Exited(0)));
        assert_eq!(outcome.stdout, "parent done\n");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_hung_program_and_its_children_are_killed_at_the_timeout() {
        let start = Instant::now();
        let outcome = run_with_timeout(
            shell("sleep 300 & echo started; sleep 300"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(matches!(outcome.ending, Ending::TimedOut));
        assert_eq!(outcome.stdout, "started\n");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
    }
}

//! The `bdwgc-shim` command on real programs: scenario programs built with
//! and without the shim, with shared and static libgc, a static executable,
//! and a text file. Needs `cargo build --release` first.

use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use bdwgc_shim_cli::scenarios::{build, repo_root, run_with_timeout, shim_dir, Ending, Mode};

fn command() -> Command {
    let mut c = Command::new(shim_dir().join("bdwgc-shim"));
    c.env("GC_MARKERS", "2")
        .env_remove("LD_PRELOAD")
        .env_remove("BDWGC_SHIM_DEBUG");
    c
}

/// Runs the command to its end, or fails the test after `TIMEOUT` (the
/// demo runs every scenario twice; nothing may wait for ever).
fn run_cli(args: &[&str]) -> Output {
    let mut command = command();
    command.args(args);
    finish(command)
}

const TIMEOUT: Duration = Duration::from_secs(600);

fn finish(command: Command) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let shown = format!("{command:?}");
    let outcome = run_with_timeout(command, TIMEOUT).expect("run `cargo build --release` first");
    let status = match outcome.ending {
        Ending::Exited(code) => ExitStatus::from_raw((code & 0xff) << 8),
        Ending::Signalled(signal) => ExitStatus::from_raw(signal),
        Ending::TimedOut => panic!(
            "{shown} did not end within {TIMEOUT:?}\n{}\n{}",
            outcome.stdout, outcome.stderr
        ),
    };
    Output {
        status,
        stdout: outcome.stdout.into_bytes(),
        stderr: outcome.stderr.into_bytes(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn program(mode: Mode) -> String {
    build("keep_objects", mode).unwrap().display().to_string()
}

/// A fully static executable that uses libgc, built once.
fn static_executable() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_static_executable).clone()
}

fn build_static_executable() -> String {
    let dir = repo_root().join("target/scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("fully-static-edge-inputs");
    let c = repo_root().join("tests/c");
    let status = Command::new("cc")
        .args(["-static", "-O2"])
        .arg(format!("-I{}", c.display()))
        .arg(format!("-I{}", repo_root().join("include").display()))
        .arg(c.join("edge_inputs.c"))
        .arg("-o")
        .arg(&out)
        .args(["-lgc", "-lpthread"])
        .status()
        .unwrap();
    assert!(status.success());
    out.display().to_string()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

#[test]
fn check_reports_each_way_of_linking() {
    let cases = [
        (Mode::Without, 1, "shared", "none", true),
        (Mode::WithoutStaticGc, 1, "static", "none", false),
        (Mode::Shared, 0, "shared", "shared", true),
        (Mode::Static, 0, "shared", "static", true),
        (Mode::StaticStaticGc, 0, "static", "static", false),
    ];
    for (mode, code, libgc, shim, preloadable) in cases {
        let out = run_cli(&["check", "--json", &program(mode)]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{mode:?}: {}",
            text(&out.stderr)
        );
        let report = json(&out);
        assert_eq!(report["libgc"], libgc, "{mode:?}: {report}");
        assert_eq!(report["shim"], shim, "{mode:?}: {report}");
        assert_eq!(report["works_preloaded"], preloadable, "{mode:?}: {report}");
        assert_eq!(report["dynamic"], true);
        if libgc == "shared" {
            assert!(
                report["libgc_version"].as_str().unwrap().starts_with("8."),
                "{report}"
            );
        }
        let human = run_cli(&["check", &program(mode)]);
        assert_eq!(human.status.code(), Some(code));
        assert!(
            text(&human.stdout).contains("works preloaded:"),
            "{}",
            text(&human.stdout)
        );
    }
}

#[test]
fn check_a_static_executable_a_text_file_and_a_missing_file() {
    let out = run_cli(&["check", "--json", &static_executable()]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["dynamic"], false);
    assert_eq!(report["works_preloaded"], false);
    assert!(
        report["advice"]
            .as_str()
            .unwrap()
            .contains("statically linked"),
        "{report}"
    );

    let readme = repo_root().join("README.md").display().to_string();
    for path in [readme.as_str(), "/nonexistent/program"] {
        let out = run_cli(&["check", path]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("bdwgc-shim check: "), "{err}");

        // With --json the error is JSON on stdout, for scripts.
        let out = run_cli(&["check", "--json", path]);
        assert_eq!(out.status.code(), Some(2));
        let report = json(&out);
        assert_eq!(report["path"], path, "{report}");
        assert!(
            report["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{report}"
        );
    }
}

#[test]
fn run_preloads_the_shim_and_passes_the_exit_status() {
    let without = program(Mode::Without);
    let mut plain = Command::new(&without);
    plain.env("GC_MARKERS", "2").env_remove("LD_PRELOAD");
    let plain = finish(plain);
    assert!(
        !plain.status.success(),
        "the program must fail without the shim"
    );

    let out = run_cli(&["run", "--", &without]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("shim=active"));
    assert!(
        !text(&out.stderr).contains("bdwgc-shim "),
        "no summary without --debug"
    );

    let debug = run_cli(&["run", "--debug", "--", &without]);
    assert_eq!(debug.status.code(), Some(0));
    assert!(
        text(&debug.stderr).contains("bdwgc-shim 0.1.0: active=yes"),
        "{}",
        text(&debug.stderr)
    );
}

#[test]
fn run_passes_a_failing_status_through() {
    // dlopen_stash exits 3 when it cannot open the library it is given.
    let failing = build("dlopen_stash", Mode::Without)
        .unwrap()
        .display()
        .to_string();
    let out = run_cli(&["run", "--", &failing, "/nonexistent/libstash.so"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("shim=active"),
        "the program ran: {}",
        text(&out.stdout)
    );
}

#[test]
fn run_refuses_what_it_cannot_help() {
    let readme = repo_root().join("README.md").display().to_string();
    let cases: [(String, &str); 5] = [
        (static_executable(), "statically linked"),
        (program(Mode::WithoutStaticGc), "not exported"),
        ("/bin/true".into(), "does not use libgc"),
        (readme, "not an ELF program"),
        ("/nonexistent/program".into(), "cannot read"),
    ];
    for (path, why) in cases {
        let out = run_cli(&["run", "--", &path]);
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{path}: {err}");
        assert!(out.stdout.is_empty(), "{path} must not run");
        // Only a file that is not ELF is told about ELF.
        assert_eq!(err.contains("ELF"), why.contains("ELF"), "{path}: {err}");
    }
}

/// A process the preload reaches without libgc (a shell a program starts)
/// says so in its summary line, rather than naming a libgc version 0.0.0.
#[test]
fn summary_without_libgc_says_libgc_is_absent() {
    let mut command = Command::new("/bin/true");
    command
        .env("LD_PRELOAD", shim_dir().join("libbdwgc_shim.so"))
        .env("BDWGC_SHIM_DEBUG", "1");
    let out = finish(command);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("active=no libgc=absent routed=0"),
        "summary line: {err}"
    );
}

#[test]
fn bad_arguments_are_one_line() {
    for args in [
        &["frob"][..],
        &["run"][..],
        &["check"][..],
        &["check", "--bogus", "x"][..],
    ] {
        let out = run_cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    for sub in ["run", "check", "demo"] {
        let out = run_cli(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("Usage"), "{sub}");
    }
}

#[test]
fn check_sees_the_shim_in_rust_programs() {
    for (name, code) in [
        ("examples/std_threads", 0),
        ("examples/std_threads_no_shim", 1),
        ("bdwgc_alloc_threads", 0),
        ("bdwgc_alloc_threads_no_shim", 1),
    ] {
        let path = shim_dir().join(name).display().to_string();
        let out = run_cli(&["check", "--json", &path]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn demo_prints_the_table_and_succeeds() {
    let out = run_cli(&["demo"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("without the shim") && stdout.contains("with the shim"),
        "{stdout}"
    );
    let keep = stdout
        .lines()
        .find(|l| l.starts_with("keep-objects"))
        .expect("keep-objects row");
    assert!(keep.contains("lost") && keep.contains(" ok "), "{keep}");
    assert!(
        stdout.contains("Every scenario passed with the shim."),
        "{stdout}"
    );
}

/// A program that gets libgc only through a shared library of its own,
/// found through the program's RUNPATH (`runpath`) or `LD_LIBRARY_PATH`
/// (`!runpath`). Built once per kind; returns the program and the
/// library's directory.
fn program_with_libgc_through_a_library(runpath: bool) -> (String, String) {
    let dir = repo_root().join(format!(
        "target/scenarios/through-a-library-{}",
        if runpath {
            "runpath"
        } else {
            "ld-library-path"
        }
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let library_source = dir.join("viagc.c");
    std::fs::write(
        &library_source,
        "#include <gc.h>\n\
         int viagc_run(void) { GC_INIT(); void *p = GC_MALLOC(64); GC_gcollect(); return p == 0; }\n",
    )
    .unwrap();
    let library = dir.join("libviagc.so");
    let status = Command::new("cc")
        .args(["-O2", "-fPIC", "-shared"])
        .arg(&library_source)
        .arg("-o")
        .arg(&library)
        .arg("-lgc")
        .status()
        .unwrap();
    assert!(status.success());
    let program_source = dir.join("main.c");
    std::fs::write(
        &program_source,
        "int viagc_run(void);\nint main(void) { return viagc_run(); }\n",
    )
    .unwrap();
    let program = dir.join("main");
    let mut cc = Command::new("cc");
    cc.arg("-O2")
        .arg(&program_source)
        .arg("-o")
        .arg(&program)
        .arg(format!("-L{}", dir.display()))
        .arg("-lviagc");
    if runpath {
        cc.arg(format!("-Wl,--enable-new-dtags,-rpath,{}", dir.display()));
    }
    assert!(cc.status().unwrap().success());
    (program.display().to_string(), dir.display().to_string())
}

/// `check` and `run` resolve the dependency tree as the dynamic loader
/// does: libgc that comes through a library of the program's (RUNPATH, or
/// LD_LIBRARY_PATH) is seen, and named with the library it comes through.
#[test]
fn check_and_run_see_libgc_through_another_library() {
    for runpath in [true, false] {
        let (program, dir) = program_with_libgc_through_a_library(runpath);
        let with_path = |args: &[&str]| {
            let mut command = command();
            command.args(args);
            if !runpath {
                command.env("LD_LIBRARY_PATH", &dir);
            }
            finish(command)
        };
        let out = with_path(&["check", "--json", &program]);
        let report = json(&out);
        assert_eq!(report["libgc"], "shared", "runpath={runpath}: {report}");
        assert_eq!(
            report["libgc_via"], "libviagc.so",
            "runpath={runpath}: {report}"
        );
        assert_eq!(
            report["works_preloaded"], true,
            "runpath={runpath}: {report}"
        );
        let out = with_path(&["check", &program]);
        assert!(
            text(&out.stdout).contains("through libviagc.so"),
            "runpath={runpath}: {}",
            text(&out.stdout)
        );
        let out = with_path(&["run", "--debug", "--", &program]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("active=yes"),
            "runpath={runpath}: {}",
            text(&out.stderr)
        );
    }
}

/// Debian's Guile gets libgc through libguile; `check` finds it on PATH.
#[test]
fn check_sees_guiles_libgc_through_libguile() {
    let guile = "/usr/bin/guile-3.0";
    if !std::path::Path::new(guile).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "guile-3.0 is not installed: apt-get install guile-3.0"
        );
        return;
    }
    // A bare name is looked up on PATH.
    let report = json(&run_cli(&["check", "--json", "guile-3.0"]));
    assert_eq!(report["path"], guile, "{report}");
    assert_eq!(report["libgc"], "shared", "{report}");
    assert!(
        report["libgc_via"]
            .as_str()
            .is_some_and(|l| l.starts_with("libguile")),
        "{report}"
    );
    let out = run_cli(&["run", "--debug", "--", guile, "-c", "(display (+ 1 2))"]);
    assert_eq!(text(&out.stdout), "3");
    assert!(
        text(&out.stderr).contains("active=yes"),
        "{}",
        text(&out.stderr)
    );
}

//! The shim taken in the way its users take it: `scripts/install` into a
//! prefix and a C program built with pkg-config only; a fresh Rust program
//! that depends on the crate, with no build script of its own; and the
//! plain `cargo build --release`, which must build only what users need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bdwgc_shim_cli::scenarios::{repo_root, run_with_timeout, Ending, Outcome};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a command that must succeed (a build step), showing its output.
fn succeed(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = command.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a program to its end (or fails the test after TIMEOUT), with the
/// loader's path only as the command sets it.
fn run(mut command: Command) -> Outcome {
    if !command
        .get_envs()
        .any(|(name, _)| name == "LD_LIBRARY_PATH")
    {
        command.env_remove("LD_LIBRARY_PATH");
    }
    command
        .env("GC_MARKERS", "2")
        .env_remove("LD_PRELOAD")
        .env_remove("BDWGC_SHIM_DEBUG");
    let shown = format!("{command:?}");
    let outcome = run_with_timeout(command, TIMEOUT).unwrap();
    assert!(!matches!(outcome.ending, Ending::TimedOut), "{shown} hung");
    outcome
}

fn exited(outcome: &Outcome, code: i32) -> bool {
    matches!(outcome.ending, Ending::Exited(c) if c == code)
}

/// The cargo that runs these tests.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn readelf_dynamic(path: &Path) -> String {
    succeed(Command::new("readelf").arg("-d").arg(path))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("target/install-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `PREFIX=... scripts/install`, then what a C user does with it: a program
/// built with `pkg-config --cflags --libs bdwgc-shim` and nothing else, run
/// with only the prefix's lib directory for the loader; the archive linked
/// as the README says; the installed `bdwgc-shim run` and `check`.
#[test]
fn install_into_a_prefix_then_build_with_pkg_config() {
    let root = fresh_dir("prefix");
    let prefix = root.join("usr");
    succeed(
        Command::new(repo_root().join("scripts/install"))
            .env("PREFIX", &prefix)
            .env_remove("DESTDIR"),
    );
    let lib = prefix.join("lib");
    for file in [
        "bin/bdwgc-shim",
        "lib/libbdwgc_shim.a",
        "lib/libbdwgc_shim.so",
        "lib/libbdwgc_shim.so.0",
        "include/bdwgc_shim.h",
        "lib/pkgconfig/bdwgc-shim.pc",
        "share/doc/bdwgc-shim/LICENSE",
    ] {
        assert!(prefix.join(file).exists(), "{file} not installed");
    }
    assert!(
        readelf_dynamic(&lib.join("libbdwgc_shim.so"))
            .contains("Library soname: [libbdwgc_shim.so.0]"),
        "no versioned SONAME"
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/bdwgc-shim.pc")).unwrap();
    assert!(
        pc.contains(&format!("prefix={}\n", prefix.display())),
        "{pc}"
    );

    let pkg_config = |args: &[&str]| -> Vec<String> {
        let text = succeed(
            Command::new("pkg-config")
                .args(args)
                .env("PKG_CONFIG_PATH", lib.join("pkgconfig")),
        );
        text.split_whitespace().map(str::to_string).collect()
    };
    let source = repo_root().join("tests/c/installed_program.c");

    // Shared: the link line is pkg-config's alone.
    let shared = root.join("shared");
    succeed(
        Command::new("cc")
            .arg(&source)
            .arg("-o")
            .arg(&shared)
            .args(pkg_config(&["--cflags", "--libs", "bdwgc-shim"])),
    );
    assert!(readelf_dynamic(&shared).contains("Shared library: [libbdwgc_shim.so.0]"));
    let mut command = Command::new(&shared);
    command.env("LD_LIBRARY_PATH", &lib);
    let with = run(command);
    assert!(
        exited(&with, 0) && with.stdout.contains("shim=active lost=0"),
        "linked with pkg-config's flags: {with:?}"
    );

    // The archive, as the README links it.
    let archive = root.join("archive");
    let libdir = pkg_config(&["--variable=libdir", "bdwgc-shim"]).concat();
    succeed(
        Command::new("cc")
            .arg(&source)
            .arg("-o")
            .arg(&archive)
            .args(pkg_config(&["--cflags", "bdwgc-shim"]))
            .arg("-Wl,--undefined=bdwgc_shim_is_active")
            .arg(format!("{libdir}/libbdwgc_shim.a"))
            .args(pkg_config(&["--libs", "bdw-gc"])),
    );
    let with = run(Command::new(&archive));
    assert!(
        exited(&with, 0) && with.stdout.contains("shim=active lost=0"),
        "archive: {with:?}"
    );

    // The same program without the shim loses the objects; the installed
    // command preloads the installed library into it, and then it does not.
    let plain = root.join("plain");
    succeed(
        Command::new("cc")
            .arg(&source)
            .arg("-DWITHOUT_SHIM")
            .arg("-o")
            .arg(&plain)
            .args(pkg_config(&["--cflags", "--libs", "bdw-gc"])),
    );
    let without = run(Command::new(&plain));
    assert!(
        exited(&without, 1) && !without.stdout.contains("lost=0"),
        "without the shim: {without:?}"
    );
    let mut command = Command::new(prefix.join("bin/bdwgc-shim"));
    command
        .env_remove("BDWGC_SHIM_SO")
        .args(["run", "--debug", "--"])
        .arg(&plain);
    let preloaded = run(command);
    assert!(
        exited(&preloaded, 0)
            && preloaded.stdout.contains("lost=0")
            && preloaded.stderr.contains("active=yes"),
        "installed bdwgc-shim run: {preloaded:?}"
    );
    let mut command = Command::new(prefix.join("bin/bdwgc-shim"));
    command.arg("check").arg(&shared);
    let check = run(command);
    assert!(
        exited(&check, 0) && check.stdout.contains("yes (libbdwgc_shim.so)"),
        "installed bdwgc-shim check: {check:?}"
    );
}

/// DESTDIR stages the files for a package; they name the real prefix.
#[test]
fn install_with_destdir_stages_the_files() {
    let stage = fresh_dir("destdir");
    succeed(
        Command::new(repo_root().join("scripts/install"))
            .env("DESTDIR", &stage)
            .env("PREFIX", "/opt/bdwgc-shim"),
    );
    let staged = stage.join("opt/bdwgc-shim");
    assert!(staged.join("lib/libbdwgc_shim.so.0").exists());
    assert!(staged.join("bin/bdwgc-shim").exists());
    let pc = std::fs::read_to_string(staged.join("lib/pkgconfig/bdwgc-shim.pc")).unwrap();
    assert!(pc.starts_with("prefix=/opt/bdwgc-shim\n"), "{pc}");
}

/// A new Rust program, as the README's Rust section writes it: the crate as
/// a dependency (by path here), `use bdwgc_shim as _;`, libgc called
/// directly, no build script. The crate links libgc: shared by default,
/// static with the `static-libgc` feature.
#[test]
fn a_fresh_rust_program_links_libgc_through_the_crate() {
    // Outside the repository's workspace, as a user's program is.
    let app = std::env::temp_dir().join(format!("bdwgc-shim-fresh-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&app);
    std::fs::create_dir_all(&app).unwrap();
    let crate_dir = repo_root().join("crates/bdwgc-shim");
    std::fs::write(
        app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fresh-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nbdwgc-shim = {{ path = {:?} }}\n",
            crate_dir.display().to_string()
        ),
    )
    .unwrap();
    // The workspace's lock file pins the same libc, so nothing is fetched.
    std::fs::copy(repo_root().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    std::fs::create_dir_all(app.join("src")).unwrap();
    let body =
        std::fs::read_to_string(crate_dir.join("examples/common/std_threads_body.rs")).unwrap();
    std::fs::write(
        app.join("src/main.rs"),
        format!(
            "use bdwgc_shim as _;\n\nfn bdwgc_shim_active() -> bool {{\n    \
             bdwgc_shim::is_active()\n}}\n\n{body}"
        ),
    )
    .unwrap();
    let target_dir = repo_root().join("target/install-tests/fresh-rust-app-target");
    // Shared; static by the feature; static by the environment variable.
    let ways = [
        (None, None, false),
        (Some("bdwgc-shim/static-libgc"), None, true),
        (None, Some("1"), true),
    ];
    for (features, static_env, static_gc) in ways {
        let mut cargo = cargo();
        cargo
            .current_dir(&app)
            .args(["build", "--release", "--offline", "--target-dir"])
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("BDWGC_SHIM_LIBGC_STATIC");
        if let Some(features) = features {
            cargo.args(["--features", features]);
        }
        if let Some(value) = static_env {
            cargo.env("BDWGC_SHIM_LIBGC_STATIC", value);
        }
        succeed(&mut cargo);
        let exe = target_dir.join("release/fresh-app");
        let dynamic = readelf_dynamic(&exe);
        assert_eq!(
            dynamic.contains("[libgc.so.1]"),
            !static_gc,
            "static libgc: {static_gc}\n{dynamic}"
        );
        let outcome = run(Command::new(&exe));
        assert!(
            exited(&outcome, 0)
                && outcome.stdout.contains("shim=active")
                && outcome.stdout.contains("RESULT ok"),
            "static libgc: {static_gc}: {outcome:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&app);
}

/// `cargo build --release` at the root, as the README says, builds the
/// libraries and the command: not the bdwgc-alloc example, which needs
/// clang and autotools.
#[test]
fn cargo_build_release_builds_what_users_need() {
    let out = succeed(cargo().current_dir(repo_root()).args([
        "build",
        "--release",
        "--message-format=json",
    ]));
    let mut packages: Vec<String> = out
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| {
            let target = &message["target"]["name"];
            let manifest = message["manifest_path"].as_str()?;
            manifest
                .starts_with(repo_root().to_str()?)
                .then(|| target.as_str().map(str::to_string))?
        })
        .collect();
    packages.sort();
    packages.dedup();
    for wanted in ["bdwgc_shim", "bdwgc-shim"] {
        assert!(
            packages.iter().any(|p| p == wanted),
            "{wanted} not built: {packages:?}"
        );
    }
    let all = out.to_lowercase();
    for unwanted in ["bdwgc-alloc", "bdwgc_alloc", "bindgen", "clang-sys"] {
        assert!(
            !all.contains(unwanted),
            "{unwanted} built by cargo build --release"
        );
    }
}

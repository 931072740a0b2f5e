//! `bdwgc-shim run`: runs a program with the shim preloaded, after checking
//! that preloading can reach the program's libgc.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::inspect::{inspect, InspectError, Libgc, ShimLink};

/// Finds `program` the way a shell would: as a path, or on `PATH`.
pub fn resolve(program: &OsStr) -> Option<PathBuf> {
    let candidate = Path::new(program);
    if candidate.components().count() > 1 {
        return Some(candidate.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The shared shim: `BDWGC_SHIM_SO`, or next to this command (as cargo
/// builds them), or in `../lib` beside it (as `scripts/install` puts them).
pub fn find_shim_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BDWGC_SHIM_SO") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("libbdwgc_shim.so"),
        dir.join("../lib/libbdwgc_shim.so"),
        dir.join("../lib/libbdwgc_shim.so.0"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Runs the program (replacing this process) or returns the exit code of
/// a refusal: 2, with the reason printed as one line.
pub fn run(debug: bool, command: &[OsString]) -> i32 {
    let refuse = |why: String| {
        eprintln!("bdwgc-shim run: {why}");
        2
    };
    let Some((program, args)) = command.split_first() else {
        return refuse("no program given (bdwgc-shim run -- PROGRAM ARGS...)".into());
    };
    let Some(path) = resolve(program) else {
        return refuse(format!("{}: command not found", program.to_string_lossy()));
    };
    let report = match inspect(&path) {
        Ok(r) => r,
        Err(e @ InspectError::NotElf(_)) => {
            return refuse(format!("{e}; the shim preloads only into ELF programs"))
        }
        Err(e) => return refuse(e.to_string()),
    };
    let mut child = Command::new(&path);
    child.arg0(program).args(args);
    if debug {
        child.env("BDWGC_SHIM_DEBUG", "1");
    }
    if report.shim == ShimLink::None {
        if report.libgc == Libgc::None || !report.works_preloaded {
            return refuse(format!("{}: {}", path.display(), report.advice));
        }
        let Some(library) = find_shim_library() else {
            return refuse(
                "cannot find libbdwgc_shim.so next to this command or in ../lib; build \
                 it with `cargo build --release`, install it with scripts/install, or \
                 name it with BDWGC_SHIM_SO"
                    .into(),
            );
        };
        let mut preload = library.into_os_string();
        if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(":");
            preload.push(existing);
        }
        child.env("LD_PRELOAD", preload);
    }
    let error = child.exec();
    refuse(format!("cannot run {}: {error}", path.display()))
}

//! Finds a program's shared libraries the way the dynamic loader does, so
//! that `check` and `run` see a libgc that comes through another library
//! (Guile's libgc arrives through libguile): each `DT_NEEDED` name is looked
//! up in the needing object's `DT_RPATH` (when it has no `DT_RUNPATH`) and
//! the program's, then `LD_LIBRARY_PATH`, then its `DT_RUNPATH`, then the
//! directories of /etc/ld.so.conf (what ld.so.cache lists) and the default
//! ones, keeping only libraries of the program's machine and class.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// The directories ld.so searches last, for the usual Debian layouts.
const DEFAULT_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// A shared library of the program's dependency tree.
pub struct Dependency {
    /// The name in `DT_NEEDED`.
    pub name: String,
    /// Where the loader would find it, when it can be found.
    pub path: Option<PathBuf>,
    /// The name of the object that needs it (None: the program itself).
    pub needed_by: Option<String>,
}

/// What an object says about where its libraries are.
#[derive(Clone)]
struct SearchPaths {
    rpath: Vec<PathBuf>,
    runpath: Vec<PathBuf>,
}

impl SearchPaths {
    fn of(elf: &Elf, path: &Path) -> SearchPaths {
        let origin = path.parent().unwrap_or(Path::new("/"));
        let expand = |list: &[&str]| -> Vec<PathBuf> {
            list.iter()
                .flat_map(|entry| entry.split(':'))
                .filter(|dir| !dir.is_empty())
                .map(|dir| {
                    let origin = origin.to_string_lossy();
                    PathBuf::from(
                        dir.replace("${ORIGIN}", &origin)
                            .replace("$ORIGIN", &origin),
                    )
                })
                .collect()
        };
        SearchPaths {
            rpath: expand(&elf.rpaths),
            runpath: expand(&elf.runpaths),
        }
    }
}

/// The directories named in /etc/ld.so.conf and the files it includes.
fn ld_so_conf_dirs() -> Vec<PathBuf> {
    fn read(file: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        for line in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
        {
            if let Some(pattern) = line.strip_prefix("include ") {
                if depth < 4 {
                    for included in glob_conf(pattern.trim()) {
                        read(&included, dirs, depth + 1);
                    }
                }
            } else if line.starts_with('/') {
                dirs.push(PathBuf::from(line));
            }
        }
    }
    let mut dirs = Vec::new();
    read(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    dirs
}

/// The files a `include /dir/*.conf` line names (only `*` in the file name).
fn glob_conf(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .map(|f| f.to_string_lossy())
                        .is_some_and(|f| f.starts_with(prefix) && f.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The bytes of `path` when it is an ELF object for the machine and class
/// of the program (a 32-bit or foreign library of the same name is
/// skipped, as the loader skips it).
fn read_matching(path: &Path, machine: u16, is_64: bool) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    Elf::parse(&bytes)
        .is_ok_and(|elf| elf.header.e_machine == machine && elf.is_64 == is_64)
        .then_some(bytes)
}

/// The program's shared libraries, breadth first as the loader loads them,
/// each once. Libraries that cannot be found are listed without a path.
pub fn dependencies(program: &Path, elf: &Elf) -> Vec<Dependency> {
    let ld_library_path: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let system_dirs: Vec<PathBuf> = ld_so_conf_dirs()
        .into_iter()
        .chain(DEFAULT_DIRS.iter().map(PathBuf::from))
        .collect();
    let (machine, is_64) = (elf.header.e_machine, elf.is_64);
    let program_paths = SearchPaths::of(elf, program);

    // Where the loader finds `name`, with the library's bytes (read once:
    // some libraries are large).
    let find = |name: &str, needing: &SearchPaths| -> Option<(PathBuf, Vec<u8>)> {
        if name.contains('/') {
            let path = PathBuf::from(name);
            let bytes = std::fs::read(&path).unwrap_or_default();
            return Some((path, bytes));
        }
        let rpath: &[PathBuf] = if needing.runpath.is_empty() {
            &needing.rpath
        } else {
            &[]
        };
        let program_rpath: &[PathBuf] = if program_paths.runpath.is_empty() {
            &program_paths.rpath
        } else {
            &[]
        };
        rpath
            .iter()
            .chain(program_rpath)
            .chain(&ld_library_path)
            .chain(&needing.runpath)
            .chain(&system_dirs)
            .map(|dir| dir.join(name))
            .filter(|candidate| candidate.is_file())
            .find_map(|candidate| {
                let bytes = read_matching(&candidate, machine, is_64)?;
                Some((candidate, bytes))
            })
    };

    let mut seen: HashSet<String> = HashSet::new();
    let mut found = Vec::new();
    let mut queue: VecDeque<(String, Option<String>, SearchPaths)> = elf
        .libraries
        .iter()
        .map(|name| (name.to_string(), None, program_paths.clone()))
        .collect();
    while let Some((name, needed_by, needing)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let located = find(&name, &needing);
        if let Some((path, bytes)) = &located {
            if let Ok(library) = Elf::parse(bytes) {
                let paths = SearchPaths::of(&library, path);
                for next in &library.libraries {
                    queue.push_back((next.to_string(), Some(name.clone()), paths.clone()));
                }
            }
        }
        let path = located.map(|(path, _)| path);
        found.push(Dependency {
            name,
            path,
            needed_by,
        });
    }
    found
}

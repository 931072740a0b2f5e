//! What an ELF program says about itself: dynamic or static, how it links
//! libgc, whether the shim is linked in, and so whether preloading can work.

use std::path::Path;

use goblin::elf::Elf;
use serde::Serialize;

use crate::loader;

/// How a program links libgc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Libgc {
    /// `libgc.so` is among the program's shared libraries, needed by the
    /// program or by one of its libraries.
    Shared,
    /// libgc's code is inside the executable, and exported (`-rdynamic`).
    StaticExported,
    /// libgc's code is inside the executable, not exported.
    Static,
    /// No sign of libgc.
    None,
}

/// How the shim is in the program, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShimLink {
    /// `libbdwgc_shim.a` (or the Rust crate) is linked into the executable.
    Static,
    /// `libbdwgc_shim.so` is among the needed libraries.
    Shared,
    None,
}

#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    /// Has a program interpreter (ld.so): dynamically linked.
    pub dynamic: bool,
    pub libgc: Libgc,
    /// The libgc version, when it can be told (shared libgc only).
    pub libgc_version: Option<String>,
    /// The shared library through which libgc comes, when the program does
    /// not need it itself (Guile's comes through libguile).
    pub libgc_via: Option<String>,
    pub shim: ShimLink,
    /// Whether `LD_PRELOAD=libbdwgc_shim.so` would reach this program's libgc.
    pub works_preloaded: bool,
    /// What to do, in one sentence.
    pub advice: String,
}

/// Why a file could not be inspected.
#[derive(Debug)]
pub enum InspectError {
    Unreadable(String),
    NotElf(String),
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InspectError::Unreadable(m) | InspectError::NotElf(m) => f.write_str(m),
        }
    }
}

/// Whether the program defines one of `names`: (exported in .dynsym, anywhere).
fn defines(elf: &Elf, names: &[&str]) -> (bool, bool) {
    let defined_in = |symbols: &goblin::elf::Symtab, strings: &goblin::strtab::Strtab| {
        symbols.iter().any(|s| {
            s.st_shndx != 0
                && strings
                    .get_at(s.st_name)
                    .is_some_and(|n| names.contains(&n))
        })
    };
    let in_dynsym = defined_in(&elf.dynsyms, &elf.dynstrtab);
    (in_dynsym, in_dynsym || defined_in(&elf.syms, &elf.strtab))
}

/// The version of the shared libgc the program would load (its path, or
/// its soname when it was not found), asked of libgc itself
/// (`GC_get_version`).
fn shared_libgc_version(library: &str) -> Option<String> {
    let name = std::ffi::CString::new(library).ok()?;
    // SAFETY: dlopen/dlsym with valid NUL-terminated strings; GC_get_version
    // takes no arguments and only returns a number (it needs no GC_init).
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let f = libc::dlsym(handle, c"GC_get_version".as_ptr());
        let version = (!f.is_null()).then(|| {
            let get: extern "C" fn() -> u32 = std::mem::transmute(f);
            get()
        });
        libc::dlclose(handle);
        version.map(|v| format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff))
    }
}

pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let bytes = std::fs::read(path)
        .map_err(|e| InspectError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    let elf = Elf::parse(&bytes)
        .map_err(|_| InspectError::NotElf(format!("{} is not an ELF program", path.display())))?;
    let dynamic = elf.interpreter.is_some();
    let dependencies = if dynamic {
        loader::dependencies(path, &elf)
    } else {
        Vec::new()
    };
    let gc_dependency = dependencies.iter().find(|d| d.name.starts_with("libgc.so"));
    let gc_soname = gc_dependency.map(|d| d.name.clone());
    let libgc_via = gc_dependency.and_then(|d| d.needed_by.clone());
    let (gc_exported, gc_inside) = defines(&elf, &["GC_init", "GC_malloc"]);
    let libgc = match (&gc_soname, gc_inside, gc_exported) {
        (Some(_), _, _) => Libgc::Shared,
        (None, true, true) => Libgc::StaticExported,
        (None, true, false) => Libgc::Static,
        (None, false, _) => Libgc::None,
    };
    let libgc_version = gc_dependency
        .map(|d| {
            d.path
                .as_ref()
                .map_or(d.name.clone(), |p| p.display().to_string())
        })
        .as_deref()
        .and_then(shared_libgc_version);
    // The C API when it was kept, or else the hooks themselves exported (a
    // Rust program that never calls the API keeps only those).
    let (_, api_inside) = defines(&elf, &["bdwgc_shim_is_active"]);
    let hooks_exported = ["malloc", "free", "pthread_create", "pthread_sigmask"]
        .iter()
        .all(|hook| defines(&elf, &[hook]).0);
    let shim = if api_inside || hooks_exported {
        ShimLink::Static
    } else if dependencies
        .iter()
        .any(|d| d.name.starts_with("libbdwgc_shim.so"))
    {
        ShimLink::Shared
    } else {
        ShimLink::None
    };
    let works_preloaded = dynamic && matches!(libgc, Libgc::Shared | Libgc::StaticExported);
    let advice = match (shim, libgc, dynamic) {
        (ShimLink::Static | ShimLink::Shared, _, _) => {
            "the shim is linked in: nothing to do".into()
        }
        (_, Libgc::None, _) => "this program does not use libgc: the shim has nothing to do".into(),
        (_, _, false) => {
            "statically linked: preloading cannot work; link libbdwgc_shim.a into it".into()
        }
        (_, Libgc::Static, true) => "libgc is linked in but not exported, so a preloaded shim \
            cannot reach it: link libbdwgc_shim.a into it, or link with -rdynamic"
            .into(),
        _ => "run it with `bdwgc-shim run -- PROGRAM`, or link libbdwgc_shim into it".into(),
    };
    Ok(Inspection {
        path: path.display().to_string(),
        dynamic,
        libgc,
        libgc_version,
        libgc_via,
        shim,
        works_preloaded,
        advice,
    })
}

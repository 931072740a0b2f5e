//! The `bdwgc-shim` command's internals: the demonstration scenarios, the
//! ELF inspection behind `check` (with the loader's library search), and
//! `run`.

pub mod demo;
pub mod inspect;
pub mod loader;
pub mod run;
pub mod scenarios;

//! The `bdwgc-shim` command's internals: the demonstration scenarios, the
//! ELF inspection behind `check`, and `run`.

pub mod demo;
pub mod inspect;
pub mod run;
pub mod scenarios;

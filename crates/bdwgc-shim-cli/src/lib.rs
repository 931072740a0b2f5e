//! The `bdwgc-shim` command's internals: the demonstration scenarios and
//! the table the demo prints.

pub mod demo;
pub mod scenarios;

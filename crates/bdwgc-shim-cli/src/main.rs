//! The `bdwgc-shim` command: run a program with the shim, check a program,
//! or demonstrate the shim.

use std::ffi::OsString;
use std::path::PathBuf;

use bdwgc_shim_cli::inspect::{inspect, InspectError, Inspection, Libgc, ShimLink};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bdwgc-shim",
    version,
    about = "Make programs that use the Boehm GC (libgc) safe with C libraries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program with the shim preloaded, and exit with its status.
    ///
    /// Refuses (exit 2) a program the preloaded shim cannot help: not ELF,
    /// statically linked, without libgc, or with an unexported static libgc.
    Run {
        /// Print the shim's one-line summary to stderr when the program exits.
        #[arg(long)]
        debug: bool,
        /// The program and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PROGRAM ARGS"
        )]
        command: Vec<OsString>,
    },
    /// Report how a program links libgc and the shim.
    ///
    /// Exit status: 0 when the shim is linked in, 1 when it is not, 2 when
    /// the file is not an ELF program or cannot be read (with --json, that
    /// error is printed as `{"path": ..., "error": ...}`).
    Check {
        /// The program to inspect.
        program: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the demonstration scenarios without and with the shim.
    Demo,
}

fn describe_libgc(r: &Inspection) -> String {
    let how = match r.libgc {
        Libgc::Shared => "linked shared",
        Libgc::StaticExported => "linked statically, exported (-rdynamic)",
        Libgc::Static => "linked statically, not exported",
        Libgc::None => "not linked",
    };
    let how = match &r.libgc_version {
        Some(v) => format!("{how} ({v})"),
        None => how.to_string(),
    };
    match &r.libgc_via {
        Some(library) => format!("{how}, through {library}"),
        None => how,
    }
}

fn check(program: &std::path::Path, json: bool) -> i32 {
    // A bare name is looked up on PATH, as `run` does.
    let resolved = bdwgc_shim_cli::run::resolve(program.as_os_str());
    let report = match inspect(resolved.as_deref().unwrap_or(program)) {
        Ok(r) => r,
        Err(e @ (InspectError::Unreadable(_) | InspectError::NotElf(_))) => {
            if json {
                // A script reading the report reads the error the same way.
                let error = serde_json::json!({ "path": program, "error": e.to_string() });
                println!("{error:#}");
            } else {
                eprintln!("bdwgc-shim check: {e}");
            }
            return 2;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("bdwgc-shim check: {e}");
                return 2;
            }
        }
    } else {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!("program:          {}", report.path);
        println!(
            "linking:          {}",
            if report.dynamic { "dynamic" } else { "static" }
        );
        println!("libgc:            {}", describe_libgc(&report));
        println!(
            "shim linked in:   {}",
            match report.shim {
                ShimLink::Static => "yes (static archive or Rust crate)",
                ShimLink::Shared => "yes (libbdwgc_shim.so)",
                ShimLink::None => "no",
            }
        );
        println!("works preloaded:  {}", yes_no(report.works_preloaded));
        println!("advice:           {}", report.advice);
    }
    if report.shim == ShimLink::None {
        1
    } else {
        0
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // One line: clap's first, with the item it announces when it
            // ends in a colon ("required arguments were not provided:").
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut message = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            if message.ends_with(':') {
                message = format!("{message} {}", lines.next().unwrap_or(""));
            }
            eprintln!("bdwgc-shim: {message} (see --help)");
            std::process::exit(2);
        }
    };
    let code = match cli.command {
        Command::Run { debug, command } => bdwgc_shim_cli::run::run(debug, &command),
        Command::Check { program, json } => check(&program, json),
        Command::Demo => bdwgc_shim_cli::demo::run(),
    };
    std::process::exit(code);
}

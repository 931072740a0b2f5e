//! The `bdwgc-shim` command.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bdwgc-shim",
    version,
    about = "Make programs that use the Boehm GC safe with C libraries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demonstration scenarios without and with the shim, side by side.
    Demo,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Demo => bdwgc_shim_cli::demo::run(),
    };
    std::process::exit(code);
}

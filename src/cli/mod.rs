//! Argument parsing and dispatch only: every behaviour lives in the library. This is the
//! one place that prints to the user and the one place that uses `anyhow`.

mod debug;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build container images from Dockerfiles, run them, push them: one binary, no daemon, rootless."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tools for looking inside kiln's pipeline.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

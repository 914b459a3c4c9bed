//! Argument parsing and dispatch only: every behaviour lives in the library. This is the
//! one place that prints to the user and the one place that uses `anyhow`.

mod args;
mod build;
mod container;
mod debug;
mod images;
mod registry;
mod run;
mod system;
mod volume;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build container images from Dockerfiles, run them, push them: one binary, no daemon, rootless."
)]
struct Cli {
    /// Where kiln keeps images, layers and its cache (default: $KILN_ROOT, else
    /// $XDG_DATA_HOME/kiln, else ~/.local/share/kiln).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(args::BuildArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(system::BuilderCommand),
    /// Verify the store (alias of `system check`).
    Fsck(system::CheckArgs),
    /// Store maintenance: `check`, `df`.
    #[command(subcommand)]
    System(system::SystemCommand),
    #[command(flatten)]
    Containers(container::ContainerCommand),
    /// Manage containers (`kiln container ls|rm|stop|...`).
    #[command(subcommand)]
    Container(container::ContainerGroup),
    /// A detached container's supervisor (started by `kiln run -d`).
    #[command(name = "__supervise", hide = true)]
    Supervise { id: String },
    /// Tools for looking inside kiln's pipeline.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    #[command(flatten)]
    Registry(registry::RegistryCommand),
    /// Run a command in a new container from an image (in the foreground, or -d detached).
    Run(run::RunArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
}

fn open_store(root: Option<PathBuf>) -> anyhow::Result<kiln::store::Store> {
    let root = root.unwrap_or_else(kiln::store::default_root);
    Ok(kiln::store::Store::open(&root)?)
}

/// Whether the command line names `run` or `exec` (the first word that is neither a flag nor the value
/// of `--root`), for a parse error clap reports before any subcommand is known.
fn subcommand_is_run() -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--root" {
            args.next();
        } else if !a.starts_with('-') {
            return a == "run" || a == "exec";
        }
    }
    false
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // docker's convention: a bad `run` flag is the runtime's own error, 125.
        Err(e) if e.use_stderr() && subcommand_is_run() => {
            let _ = e.print();
            return ExitCode::from(run::RUNTIME_FAILURE);
        }
        Err(e) => e.exit(),
    };
    let root_for_hint = cli.root.clone().unwrap_or_else(kiln::store::default_root);
    let result = match cli.command {
        Command::Debug(cmd) => debug::run(cmd),
        Command::Build(args) => open_store(cli.root)
            .and_then(|s| build::run(&s, args))
            .map(|()| ExitCode::SUCCESS),
        Command::Builder(cmd) => open_store(cli.root).and_then(|s| system::run_builder(&s, cmd)),
        Command::Fsck(args) => open_store(cli.root).and_then(|s| system::check(&s, args)),
        Command::System(cmd) => open_store(cli.root).and_then(|s| system::run(&s, cmd)),
        Command::Image(cmd) => open_store(cli.root).and_then(|s| images::run(&s, cmd)),
        Command::Registry(cmd) => registry::run(cli.root, cmd).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => Ok(run::run(cli.root, args)),
        Command::Volume(cmd) => open_store(cli.root).and_then(|s| volume::run(&s, cmd)),
        Command::Containers(cmd) => open_store(cli.root).and_then(|s| container::run(&s, cmd)),
        Command::Container(cmd) => open_store(cli.root).and_then(|s| container::run_group(&s, cmd)),
        Command::Supervise { id } => open_store(cli.root).map(|s| container::supervise(&s, &id)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let text = render(&err);
            eprintln!("error: {text}");
            // ENOSPC from deep in a build or pull reaches here as text; say which store is full.
            if text.contains("(os error 28)") {
                eprintln!(
                    "hint: no space left on device for the store at {}: free space, or see `kiln system df` and `kiln prune`",
                    root_for_hint.display()
                );
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each cause shown once: library errors often name their cause
/// in their own message already.
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

//! `kiln volume create|ls|inspect|rm|prune`: the store's named volumes, shown as docker
//! shows them.

use clap::{Args, Subcommand};
use kiln::runtime::volumes::{VolumeInfo, Volumes};
use kiln::store::Store;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given); prints its name.
    Create { name: Option<String> },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove the anonymous volumes no container uses (all unused ones with --all).
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Accepted for docker compatibility: kiln does not ask.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove volumes even when a container uses them.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

fn inspect_json(v: &Volumes, info: &VolumeInfo) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": info.created_at,
        "Driver": "local",
        "Labels": {},
        "Mountpoint": v.data_path(&info.name),
        "Name": info.name,
        "Options": {},
        "Scope": "local",
    })
}

pub fn run(store: &Store, cmd: VolumeCommand) -> anyhow::Result<ExitCode> {
    let v = Volumes::new(store.root());
    match cmd {
        VolumeCommand::Create { name } => {
            let info = v.create(name.as_deref(), false)?;
            println!("{}", info.name);
        }
        VolumeCommand::Ls { quiet } => {
            let list = v.list()?;
            if quiet {
                for i in &list {
                    println!("{}", i.name);
                }
            } else {
                println!("DRIVER    VOLUME NAME");
                for i in &list {
                    println!("local     {}", i.name);
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &names {
                match v.inspect(n) {
                    Ok(info) => out.push(inspect_json(&v, &info)),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        VolumeCommand::Rm(args) => {
            let mut failed = false;
            for n in &args.names {
                match v.remove(n, args.force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        VolumeCommand::Prune { all, force: _ } => {
            let removed = v.prune(all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed volumes: {}", removed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `kiln system check` (alias `kiln fsck`), `kiln system df` and `kiln builder prune`: the
//! store's maintenance commands, with docker's spelling where docker has one.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use super::images::{human_size, table};
use kiln::store::{gc, CachePruneOptions, CheckOptions, CheckProgress, IssueKind, Store};

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Verify the whole store: blobs, tags, snapshots, cache records, crash leftovers.
    Check(CheckArgs),
    /// Show the space images, the build cache, volumes and containers take.
    Df(DfArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove what is broken (saying what), and what killed processes left behind.
    #[arg(long)]
    pub repair: bool,
    /// Print only the findings, no progress or summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DfArgs {}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache.
    Prune(BuilderPruneArgs),
}

#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// Remove all build cache, not only what no image shares.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Keep at most this much build cache (e.g. 10GB, 512MiB), least recently used removed
    /// first.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// `until=DURATION`: only cache not used for DURATION (e.g. 24h, 90m, 7d).
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(store: &Store, cmd: SystemCommand) -> Result<ExitCode> {
    match cmd {
        SystemCommand::Check(args) => check(store, args),
        SystemCommand::Df(_) => df(store).map(|()| ExitCode::SUCCESS),
    }
}

pub fn run_builder(store: &Store, cmd: BuilderCommand) -> Result<ExitCode> {
    match cmd {
        BuilderCommand::Prune(args) => builder_prune(store, args).map(|()| ExitCode::SUCCESS),
    }
}

pub fn check(store: &Store, args: CheckArgs) -> Result<ExitCode> {
    let tty = io::stderr().is_terminal();
    // Last tenth printed per stage: progress is a line per 10% (a rewritten line on a tty).
    let shown: Mutex<(&'static str, usize)> = Mutex::new(("", usize::MAX));
    let progress = |p: CheckProgress| {
        if args.quiet || p.total == 0 {
            return;
        }
        let tenth = p.done * 10 / p.total;
        let Ok(mut last) = shown.lock() else { return };
        if *last == (p.stage, tenth) {
            return;
        }
        *last = (p.stage, tenth);
        let size = if p.bytes > 0 {
            format!(" ({})", human_size(p.bytes, 3))
        } else {
            String::new()
        };
        let end = if tty && p.done != p.total { "\r" } else { "\n" };
        eprint!("checking {}: {}/{}{size}{end}", p.stage, p.done, p.total);
    };
    let report = store.check(
        CheckOptions {
            repair: args.repair,
        },
        &progress,
    )?;
    let mut out = io::stdout().lock();
    for issue in &report.issues {
        let kind = match issue.kind {
            IssueKind::Problem => "problem",
            IssueKind::Leftover => "leftover",
        };
        match &issue.repaired {
            Some(done) => writeln!(out, "{kind}: {}: {} — {done}", issue.what, issue.detail)?,
            None => writeln!(out, "{kind}: {}: {}", issue.what, issue.detail)?,
        }
    }
    let problems = report.problems().count();
    if !args.quiet {
        writeln!(
            out,
            "checked {} blobs ({}), {} index entries, {} cache entries, {} compressed-variant records, {} snapshots ({} without a content record)",
            report.blobs,
            human_size(report.blob_bytes, 3),
            report.index_entries,
            report.cache_entries,
            report.compressed_records,
            report.snapshots,
            report.snapshots_unrecorded
        )?;
        if report.in_progress > 0 {
            writeln!(
                out,
                "{} temp entries in use or too recent to judge",
                report.in_progress
            )?;
        }
        let unrepaired_leftovers = report.leftovers().filter(|i| i.repaired.is_none()).count();
        if unrepaired_leftovers > 0 {
            writeln!(
                out,
                "{unrepaired_leftovers} leftovers of killed processes (harmless; `kiln system check --repair` or the next prune removes them)"
            )?;
        }
        if report.is_sound() {
            if problems > 0 {
                writeln!(out, "repaired {problems} problems; the store is sound")?;
            } else {
                writeln!(out, "the store is sound")?;
            }
        } else {
            writeln!(
                out,
                "{problems} problems: run `kiln system check --repair` to remove what is broken"
            )?;
        }
    }
    Ok(if report.is_sound() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn df(store: &Store) -> Result<()> {
    let usage = store.disk_usage()?;
    let mut rows = vec![vec![
        "TYPE".to_string(),
        "TOTAL".into(),
        "ACTIVE".into(),
        "SIZE".into(),
        "RECLAIMABLE".into(),
    ]];
    for (name, row) in [
        ("Images", usage.images),
        ("Containers", usage.containers),
        ("Local Volumes", usage.volumes),
        ("Build Cache", usage.build_cache),
    ] {
        let pct = if row.size > 0 {
            format!(
                " ({}%)",
                (row.reclaimable as u128 * 100 / row.size as u128).min(100)
            )
        } else {
            String::new()
        };
        rows.push(vec![
            name.to_string(),
            row.total.to_string(),
            row.active.to_string(),
            human_size(row.size, 3),
            format!("{}{pct}", human_size(row.reclaimable, 3)),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Asks docker's question on stderr; true on yes.
pub(super) fn confirm(what: &str) -> Result<bool> {
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn builder_prune(store: &Store, args: BuilderPruneArgs) -> Result<()> {
    let keep_storage = match &args.keep_storage {
        None => None,
        Some(s) => match gc::parse_size(s) {
            Some(n) => Some(n),
            None => bail!("invalid --keep-storage {s:?}: expected a size such as 10GB or 512MiB"),
        },
    };
    let mut unused_for = None;
    for f in &args.filter {
        match f.split_once('=') {
            Some(("until", d)) => match gc::parse_duration(d) {
                Some(d) => unused_for = Some(d),
                None => bail!("invalid filter {f:?}: expected until=DURATION such as 24h or 90m"),
            },
            _ => bail!("invalid filter {f:?}: the supported filter is until=DURATION"),
        }
    }
    if !args.force {
        let what = if args.all {
            "all build cache"
        } else {
            "all build cache that no image shares"
        };
        if !confirm(what)? {
            return Ok(());
        }
    }
    let report = store.prune_cache(&CachePruneOptions {
        all: args.all,
        unused_for,
        keep_storage,
    })?;
    println!("Deleted build cache entries: {}", report.removed_entries);
    println!("Total:\t{}", human_size(report.collected.bytes, 3));
    Ok(())
}

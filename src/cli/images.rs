//! The image commands (`import`, `images`, `tag`, `rmi`, `inspect`, `history`, `save`, `load`,
//! `prune`): their arguments, spelled as docker spells them, and their output.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::fs::File;
use std::io::{self, BufReader, Read};

use kiln::archive::{self, ImportOptions};
use kiln::image::Reference;
use kiln::store::Store;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make a one-layer image from a rootfs tarball (plain, gzip, zstd, bzip2 or xz).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball; `-` reads standard input.
    pub file: String,
    /// Name and optionally a tag (`name:tag`) for the image.
    pub reference: Option<String>,
    /// Comment recorded in the image's history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

pub fn run(store: &Store, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Import(args) => import(store, args),
    }
}

fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse::<i64>().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// A file argument, or standard input for `-`.
fn open_input(file: &str) -> Result<Box<dyn Read>> {
    if file == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = File::open(file).with_context(|| format!("opening {file}"))?;
    Ok(Box::new(BufReader::with_capacity(256 * 1024, f)))
}

fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).with_context(|| format!("invalid reference {s:?}"))
}

fn import(store: &Store, args: ImportArgs) -> Result<()> {
    let opts = ImportOptions {
        reference: args.reference.as_deref().map(parse_reference).transpose()?,
        source_date_epoch: source_date_epoch()?,
        message: args.message,
    };
    let shown = if args.file == "-" {
        "standard input".to_string()
    } else {
        args.file.clone()
    };
    let input = open_input(&args.file)?;
    let imported = archive::import_rootfs(store, input, &opts)
        .with_context(|| format!("importing {shown}"))?;
    println!("{}", imported.config);
    Ok(())
}

//! Arguments of the image and build commands, spelled as docker spells them.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// One line per event.
    Plain,
    /// Bars (falls back to plain when standard error is not a terminal).
    Tty,
}

/// `kiln build --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildNetwork {
    /// The host's network (as BuildKit's default, rootless installs need no tun device).
    Default,
    Host,
    /// Only loopback.
    None,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); may be given several times.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile, or CONTEXT/dockerfile); `-` reads
    /// standard input.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable: `K=V`, or `K` to take the value from the environment.
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Build the stage of this name (and only what it needs).
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Check the registry for newer base images even when the store has them.
    #[arg(long)]
    pub pull: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Progress,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Set a label on the image (`K=V`).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// The target platform; only the host's (linux/amd64 here) can be built.
    #[arg(long)]
    pub platform: Option<String>,
    /// How many steps may run at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Push every -t tag to its registry after the build.
    #[arg(long)]
    pub push: bool,
    /// Export the build cache: `type=registry,ref=REF[,mode=min|max]`.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF")]
    pub cache_to: Option<String>,
    /// Import a build cache: `type=registry,ref=REF` (or just `REF`); may be repeated.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// Reach this registry (`host[:port]`) over plain http; may be repeated.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// How RUN steps are isolated: `default` (a user namespace) or `chroot` (no user
    /// namespace, for CI containers that forbid them; needs root; isolates less).
    #[arg(long, value_enum, default_value = "default")]
    pub isolation: super::run::IsolationArg,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE`, `id=ID,env=VAR`, or `id=ID`
    /// (the environment variable ID); may be repeated. Never stored in the image or cache.
    #[arg(long = "secret", value_name = "id=ID[,src=FILE|env=VAR]")]
    pub secrets: Vec<String>,
    /// The network of RUN steps that do not set their own: `default` (the host's), `host`,
    /// or `none` (only loopback: a hermetic build).
    #[arg(long, value_enum, default_value = "default")]
    pub network: BuildNetwork,
    /// The build context directory.
    pub context: PathBuf,
}

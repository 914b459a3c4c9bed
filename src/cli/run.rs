//! `kiln run`: docker's flags for a foreground container; exit code 125 for kiln's own
//! errors, the container's otherwise.

use clap::{Args, ValueEnum};
use kiln::runtime::container::{self, ContainerOptions};
use kiln::runtime::Network;
use std::path::PathBuf;
use std::process::ExitCode;

/// docker's code for a failure of the runtime itself (not of the command).
pub const RUNTIME_FAILURE: u8 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// A network namespace of its own: loopback, and outbound access through slirp4netns
    /// where it can run.
    #[value(alias = "bridge")]
    Private,
    /// A network namespace with only loopback.
    None,
    /// The host's network.
    Host,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Accepted for docker compatibility: a foreground container is always removed.
    #[arg(long)]
    pub rm: bool,
    /// Set an environment variable: `K=V`, or `K` to take the value from kiln's environment.
    #[arg(short = 'e', long = "env", value_name = "K[=V]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (one `K=V` a line, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: `name`, `uid`, `name:group` or `uid:gid`.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Replace the image's ENTRYPOINT (and drop its CMD).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Pass standard input to the container.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// The container's network (`bridge` is an alias of private).
    #[arg(long, value_enum, default_value = "private")]
    pub network: NetworkArg,
    /// Publish a container port: `[IP:][HOSTPORT:]CPORT[/tcp|udp]` (no HOSTPORT: a free one).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Mount a volume: `/host/path:/ctr/path[:ro]`, `NAME:/ctr/path[:ro]` or `/ctr/path`.
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub volume: Vec<String>,
    /// Mount in docker's `--mount` syntax: `type=bind|volume|tmpfs,source=..,target=..,readonly`.
    #[arg(long = "mount", value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Mount a tmpfs: `/ctr/path[:size=64m,mode=1777]`.
    #[arg(long = "tmpfs", value_name = "SPEC")]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// The container's hostname (default: a short random ID).
    #[arg(long, value_name = "H")]
    pub hostname: Option<String>,
    /// The image: a name or ID in the store, else pulled.
    pub image: String,
    /// The command and its arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: Option<PathBuf>, args: RunArgs) -> ExitCode {
    match run_inner(root, args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

fn run_inner(root: Option<PathBuf>, args: RunArgs) -> anyhow::Result<i32> {
    let lookup = |k: &str| std::env::var(k).ok();
    let mut env = Vec::new();
    for f in &args.env_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("open {}: {e}", f.display()))?;
        env.extend(container::parse_env_file(&text, lookup)?);
    }
    for e in &args.env {
        if e.starts_with('=') {
            anyhow::bail!("invalid environment variable: {e}");
        }
        env.extend(container::env_arg(e, lookup));
    }
    let publish = args
        .publish
        .iter()
        .map(|p| kiln::runtime::ports::parse_publish(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut volumes = Vec::new();
    for v in &args.volume {
        volumes.push(kiln::runtime::volumes::parse_volume_flag(v)?);
    }
    for m in &args.mount {
        volumes.push(kiln::runtime::volumes::parse_mount_flag(m)?);
    }
    for t in &args.tmpfs {
        volumes.push(kiln::runtime::volumes::parse_tmpfs_flag(t)?);
    }
    let store = super::open_store(root)?;
    let opts = ContainerOptions {
        image: args.image,
        args: args.command,
        entrypoint: args.entrypoint,
        env,
        workdir: args.workdir,
        user: args.user,
        stdin: args.interactive,
        network: match args.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
            NetworkArg::Private => Network::Private,
        },
        hostname: args.hostname,
        publish,
        volumes,
        read_only: args.read_only,
    };
    // Pull progress and warnings go to stderr: stdout is the container's.
    let reporter = kiln::progress::PlainReporter::new(std::io::stderr());
    Ok(container::run_foreground(&store, &opts, &reporter)?)
}

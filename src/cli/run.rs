//! `kiln run`: docker's flags for a container in the foreground or detached (`-d`); exit
//! code 125 for kiln's own errors, the container's otherwise.

use clap::{Args, ValueEnum};
use kiln::runtime::cgroup::{self, Limits};
use kiln::runtime::container::{self, ContainerError, ContainerOptions};
use kiln::runtime::{Confinement, Isolation, Network, Security};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// A user namespace of its own.
    Default,
    /// No new user namespace (for CI containers that forbid them): needs root, isolates less.
    Chroot,
}

impl IsolationArg {
    /// The runtime's value; warns on stderr, every time, when it isolates less, and fails
    /// early when this process could not use it.
    pub fn resolve(self) -> anyhow::Result<Isolation> {
        match self {
            IsolationArg::Default => Ok(Isolation::Namespaces),
            IsolationArg::Chroot => {
                eprintln!("WARNING: {}", kiln::runtime::isolation::CHROOT_WARNING);
                kiln::runtime::isolation::check_chroot_here()?;
                Ok(Isolation::Chroot)
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container's ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// A name for the container (default: a random one).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Give the container a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
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
    /// The container's hostname (default: its short ID).
    #[arg(long, value_name = "H")]
    pub hostname: Option<String>,
    /// Add a Linux capability to docker's default set (`ALL` for every one).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (`ALL` for every one).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// `no-new-privileges[=false]` (on by default in kiln) or `seccomp=unconfined`.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Run kiln's own reaper as PID 1 (forwards signals, reaps zombies).
    #[arg(long)]
    pub init: bool,
    /// Memory limit (e.g. 512m, 2g), through a cgroup.
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 1.5), through a cgroup.
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Maximum number of processes (0 or -1: unlimited), through a cgroup.
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// `default` (a user namespace) or `chroot` (no user namespace; root only; isolates less).
    #[arg(long, value_enum, default_value = "default")]
    pub isolation: IsolationArg,
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
            let code = match err.downcast_ref::<ContainerError>() {
                Some(ContainerError::StartFailed { code, .. }) => u8::try_from(*code).ok(),
                _ => None,
            };
            ExitCode::from(code.unwrap_or(RUNTIME_FAILURE))
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
    let security = Security::from_flags(&args.cap_add, &args.cap_drop, &args.security_opt)?;
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limits = Limits {
        memory: args
            .memory
            .as_deref()
            .map(cgroup::parse_memory)
            .transpose()?,
        cpu_quota_us: args
            .cpus
            .as_deref()
            .map(|c| cgroup::parse_cpus(c, host_cpus))
            .transpose()?,
        pids: match args.pids_limit.as_deref() {
            Some(p) => cgroup::parse_pids(p)?,
            None => None,
        },
    };
    let isolation = args.isolation.resolve()?;
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
        tty: args.tty,
        name: args.name,
        rm: args.rm,
        network: match args.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
            NetworkArg::Private => Network::Private,
        },
        hostname: args.hostname,
        confine: Confinement {
            security,
            init: args.init,
            limits,
            isolation,
        },
        publish,
        volumes,
        read_only: args.read_only,
    };
    // Pull progress and warnings go to stderr: stdout is the container's.
    let reporter = kiln::progress::PlainReporter::new(std::io::stderr());
    if args.detach {
        let (config, _) = container::create(&store, &opts, &reporter)?;
        kiln::runtime::supervisor::spawn(&store, &config.id)?;
        println!("{}", config.id);
        return Ok(0);
    }
    Ok(container::run_foreground(&store, &opts, &reporter)?)
}

//! `kiln run`: docker's flags for a container in the foreground or detached (`-d`); exit
//! code 125 for kiln's own errors, the container's otherwise.

use clap::{Args, ValueEnum};
use kiln::runtime::container::{self, ContainerError, ContainerOptions};
use kiln::runtime::Network;
use std::path::PathBuf;
use std::process::ExitCode;

/// docker's code for a failure of the runtime itself (not of the command).
pub const RUNTIME_FAILURE: u8 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// A network namespace with only loopback.
    None,
    /// The host's network.
    Host,
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
    /// The container's network (default: host).
    #[arg(long, value_enum, default_value = "host")]
    pub network: NetworkArg,
    /// The container's hostname (default: its short ID).
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
        },
        hostname: args.hostname,
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

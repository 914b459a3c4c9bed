//! The registry commands (`pull`, `push`, `login`, `logout`): their arguments, spelled as
//! docker spells them, and their output, worded as docker words it.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use kiln::image::Reference;
use kiln::layer::Compression;
use kiln::progress::{NullReporter, PlainReporter, Reporter, TtyReporter};
use kiln::registry::{self, Credentials, RegistryOptions};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry: `kiln push IMAGE [DEST]`.
    Push(PushArgs),
    /// Log in to a registry (credentials go to docker's config.json).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// Reach this registry (`host[:port]`) over plain http; may be repeated. Loopback
    /// registries always are. Also read from $KILN_INSECURE_REGISTRIES.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `NAME[:TAG|@DIGEST]`
    pub reference: String,
    /// The platform to pull from a multi-platform image (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print only the image's name.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image: a name, or (with DEST) an ID or digest.
    pub source: String,
    /// Where to push, `REGISTRY/NAME[:TAG]` (default: the image's name).
    pub dest: Option<String>,
    /// Print only the manifest digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Layer compression: gzip (every client reads it) or zstd (much faster to make).
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: PushCompression,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PushCompression {
    Gzip,
    Zstd,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// The password (prefer --password-stdin: this one shows in the process list).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
}

fn options(net: &NetArgs) -> Result<RegistryOptions> {
    // from_env falls back silently on a bad value; the commands say it instead.
    registry::timeout_from_env()?;
    let mut opts = RegistryOptions::from_env();
    opts.insecure.extend(net.insecure.iter().cloned());
    Ok(opts)
}

/// Bars per layer on a terminal, docker's plain lines on stdout otherwise (logs, pipes).
fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(NullReporter)
    } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        Box::new(TtyReporter::new())
    } else {
        Box::new(PlainReporter::new(std::io::stdout()))
    }
}

pub fn run(root: Option<PathBuf>, cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Pull(args) => {
            let store = super::open_store(root)?;
            let reference = Reference::parse(&args.reference)?;
            let platform = args
                .platform
                .as_deref()
                .map(registry::parse_platform)
                .transpose()?;
            let reporter = reporter(args.quiet);
            let pulled = registry::pull(
                &store,
                &reference,
                platform.as_ref(),
                &options(&args.net)?,
                reporter.as_ref(),
            )?;
            // As docker's pull, the image is left ready to run: its layers unpacked. A
            // failure here (user namespaces refused) is not the pull's: `run` says more.
            if let Err(e) = kiln::runtime::container::prepare_image(&store, &pulled.manifest.digest)
            {
                reporter.event(kiln::progress::Event::Warning(&format!(
                    "the image is pulled but its layers could not be unpacked yet: {e}"
                )));
            }
            println!("{}", pulled.reference);
        }
        RegistryCommand::Push(args) => {
            let store = super::open_store(root)?;
            let dest = args.dest.as_deref().map(Reference::parse).transpose()?;
            let compression = match args.compression {
                PushCompression::Gzip => Compression::Gzip { level: 6 },
                PushCompression::Zstd => Compression::Zstd { level: 3 },
            };
            let pushed = registry::push_with(
                &store,
                &args.source,
                dest.as_ref(),
                compression,
                &options(&args.net)?,
                reporter(args.quiet).as_ref(),
            )?;
            if args.quiet {
                println!("{}", pushed.digest);
            }
        }
        RegistryCommand::Login(args) => login(args)?,
        RegistryCommand::Logout(args) => {
            let opts = RegistryOptions::from_env();
            let (host, removed) = registry::logout(args.server.as_deref(), &opts)?;
            if removed {
                println!("Removing login credentials for {host}");
            } else {
                println!("Not logged in to {host}");
            }
        }
    }
    Ok(())
}

fn login(args: LoginArgs) -> Result<()> {
    let Some(username) = args.username.clone() else {
        bail!("a user name is required: kiln login -u USER [--password-stdin] SERVER");
    };
    let password = if args.password_stdin {
        read_password_stdin()?
    } else if let Some(p) = args.password.clone() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if !std::io::stdin().is_terminal() {
        read_password_stdin()?
    } else {
        bail!("give the password with --password-stdin (or -p)");
    };
    let opts = options(&args.net)?;
    let creds = Credentials { username, password };
    let host = registry::login(args.server.as_deref(), &creds, &opts)?;
    match registry::credential_helper(&opts.docker_config, &host)? {
        Some(helper) => eprintln!("Credentials for {host} saved with docker-credential-{helper}"),
        None => eprintln!(
            "Credentials for {host} saved in {}",
            opts.docker_config.display()
        ),
    }
    println!("Login Succeeded");
    Ok(())
}

fn read_password_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let p = s.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("the password read from standard input is empty");
    }
    Ok(p)
}

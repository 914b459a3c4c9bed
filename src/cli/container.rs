//! The container commands (`ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `exec`, and the
//! `container` group that spells them as docker's `container ls|rm|...`), with docker's
//! flags and output; the hidden supervisor entry point of detached containers.

use super::images::{ellipsis, human_duration, table};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kiln::runtime::container::parse_signal;
use kiln::runtime::exec::{exec_env, ExecSpec};
use kiln::runtime::state::{self, Container, Status};
use kiln::runtime::Stdio;
use kiln::store::Store;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers (running ones; -a for all).
    Ps(PsArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Stop running containers: STOPSIGNAL (default SIGTERM), then SIGKILL after a timeout.
    Stop(StopArgs),
    /// Send a signal to running containers (default SIGKILL).
    Kill(KillArgs),
    /// Remove containers (a running one needs -f).
    Rm(RmArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(WaitArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
}

/// `kiln container ...`: docker's management-command spelling.
#[derive(Debug, Subcommand)]
pub enum ContainerGroup {
    /// List containers.
    #[command(alias = "ps", alias = "list")]
    Ls(PsArgs),
    Logs(LogsArgs),
    Stop(StopArgs),
    Kill(KillArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
    Wait(WaitArgs),
    Exec(ExecArgs),
    /// Show containers' details as JSON.
    Inspect(super::images::InspectArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    pub time: u64,
    /// The signal to send first (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable: `K=V`, or `K` to take the value from kiln's environment.
    #[arg(short = 'e', long = "env", value_name = "K[=V]")]
    pub env: Vec<String>,
    /// User to run as: `name`, `uid`, `name:group` or `uid:gid`.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(store: &Store, cmd: ContainerCommand) -> Result<ExitCode> {
    match cmd {
        ContainerCommand::Ps(a) => ps(store, &a).map(|()| ExitCode::SUCCESS),
        ContainerCommand::Logs(a) => logs(store, &a).map(|()| ExitCode::SUCCESS),
        ContainerCommand::Stop(a) => Ok(stop(store, &a)),
        ContainerCommand::Kill(a) => Ok(kill(store, &a)),
        ContainerCommand::Rm(a) => Ok(rm(store, &a)),
        ContainerCommand::Wait(a) => Ok(wait(store, &a)),
        ContainerCommand::Exec(a) => Ok(exec(store, a)),
    }
}

pub fn run_group(store: &Store, cmd: ContainerGroup) -> Result<ExitCode> {
    match cmd {
        ContainerGroup::Ls(a) => run(store, ContainerCommand::Ps(a)),
        ContainerGroup::Logs(a) => run(store, ContainerCommand::Logs(a)),
        ContainerGroup::Stop(a) => run(store, ContainerCommand::Stop(a)),
        ContainerGroup::Kill(a) => run(store, ContainerCommand::Kill(a)),
        ContainerGroup::Rm(a) => run(store, ContainerCommand::Rm(a)),
        ContainerGroup::Wait(a) => run(store, ContainerCommand::Wait(a)),
        ContainerGroup::Exec(a) => run(store, ContainerCommand::Exec(a)),
        ContainerGroup::Inspect(a) => {
            super::images::run(store, super::images::ImageCommand::Inspect(a))
        }
        ContainerGroup::Prune(a) => {
            if !a.force {
                eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let removed = state::remove_stopped(store)?;
            if !removed.is_empty() {
                println!("Deleted Containers:");
                for id in &removed {
                    println!("{id}");
                }
                println!();
            }
            println!("Total reclaimed space: 0B");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn find(store: &Store, query: &str) -> Result<Container> {
    let id = state::resolve(store, query)?;
    Ok(state::load(store, &id)?)
}

fn now_nanos() -> u64 {
    state::now_nanos()
}

fn ago(nanos: Option<u64>) -> String {
    let secs = nanos.map_or(0, |n| now_nanos().saturating_sub(n) / 1_000_000_000);
    human_duration(secs)
}

/// docker's STATUS column.
pub fn status_text(c: &Container) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".to_string(),
        Status::Running => format!("Up {}", ago(s.started_at)),
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, ago(s.finished_at)),
    }
}

/// docker's COMMAND column: the command line, cut to 20 characters, in double quotes.
fn command_text(argv: &[String], no_trunc: bool) -> String {
    let line = argv.join(" ");
    let cut = if no_trunc { line } else { ellipsis(&line, 20) };
    format!("\"{}\"", cut.replace('\\', "\\\\").replace('"', "\\\""))
}

fn ps(store: &Store, args: &PsArgs) -> Result<()> {
    let all = state::list(store)?;
    let shown: Vec<&Container> = all
        .iter()
        .filter(|c| args.all || c.state.status == Status::Running)
        .collect();
    let id = |c: &Container| {
        if args.no_trunc {
            c.config.id.clone()
        } else {
            c.short_id().to_string()
        }
    };
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for c in shown {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(());
    }
    let mut rows = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    for c in shown {
        rows.push(vec![
            id(c),
            c.config.image.clone(),
            command_text(&c.config.argv, args.no_trunc),
            format!("{} ago", ago(Some(c.config.created))),
            status_text(c),
            if c.state.status == Status::Running {
                kiln::runtime::ports::ports_column(&c.state.ports)
            } else {
                String::new()
            },
            c.config.name.clone(),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(())
}

fn print_log_line(line: &[u8], timestamps: bool) {
    let Ok(l) = serde_json::from_slice::<kiln::runtime::supervisor::LogLine>(line) else {
        return;
    };
    let text = if timestamps {
        format!("{} {}", l.time, l.log)
    } else {
        l.log
    };
    if l.stream == "stderr" {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }
}

fn logs(store: &Store, args: &LogsArgs) -> Result<()> {
    let c = find(store, &args.container)?;
    let tail: Option<usize> = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .map_err(|_| anyhow!("invalid value for --tail: {n:?} (a number or \"all\")"))?,
        ),
    };
    let path = state::log_path(store, &c.config.id);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!("{}: {e}", path.display())),
    };
    let mut pending: Vec<u8> = Vec::new();
    let read_new = |file: &mut Option<std::fs::File>, pending: &mut Vec<u8>| -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        if let Some(f) = file {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            pending.extend_from_slice(&buf);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let rest = pending.split_off(i + 1);
                lines.push(std::mem::replace(pending, rest));
            }
        }
        lines
    };
    let first = read_new(&mut file, &mut pending);
    let skip = tail.map_or(0, |n| first.len().saturating_sub(n));
    for l in &first[skip..] {
        print_log_line(l, args.timestamps);
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        let running =
            state::load(store, &c.config.id).is_ok_and(|c| c.state.status == Status::Running);
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
            if let Some(f) = &mut file {
                let _ = f.seek(std::io::SeekFrom::Start(0));
            }
        }
        for l in read_new(&mut file, &mut pending) {
            print_log_line(&l, args.timestamps);
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll until `id` no longer runs (or its record is gone), at most `limit`.
fn wait_stopped(store: &Store, id: &str, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        match state::load(store, id) {
            Ok(c) if c.state.status == Status::Running => {}
            _ => return true,
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll until the process that writes `id`'s state is gone, so the record is final.
fn wait_supervisor(pid: i32, start: u64, limit: Duration) {
    let end = Instant::now() + limit;
    while state::alive(pid, start) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(c: &Container, sig: i32) -> Result<()> {
    // SAFETY: kill on a pid read from the record (checked alive with its start time).
    if unsafe { libc::kill(c.state.pid, sig) } != 0 {
        bail!(
            "cannot signal container {}: {}",
            c.short_id(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn running(c: &Container) -> bool {
    c.state.status == Status::Running && state::alive(c.state.pid, c.state.pid_start)
}

/// Each of `names`, or an error printed for it; exit code 1 if any failed.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> ExitCode {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                failed = true;
                eprintln!("Error response from daemon: {e:#}");
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn stop(store: &Store, args: &StopArgs) -> ExitCode {
    each(&args.containers, |q| {
        let c = find(store, q)?;
        if !running(&c) {
            return Ok(());
        }
        let name = args
            .signal
            .clone()
            .or_else(|| c.config.stop_signal.clone())
            .unwrap_or_else(|| "SIGTERM".to_string());
        let sig = parse_signal(&name).ok_or_else(|| anyhow!("invalid signal: {name}"))?;
        signal(&c, sig)?;
        if !wait_stopped(store, &c.config.id, Duration::from_secs(args.time)) {
            let _ = signal(&c, libc::SIGKILL);
            if !wait_stopped(store, &c.config.id, Duration::from_secs(30)) {
                bail!("container {} did not stop", c.short_id());
            }
        }
        Ok(())
    })
}

fn kill(store: &Store, args: &KillArgs) -> ExitCode {
    each(&args.containers, |q| {
        let c = find(store, q)?;
        let sig =
            parse_signal(&args.signal).ok_or_else(|| anyhow!("invalid signal: {}", args.signal))?;
        if !running(&c) {
            bail!(
                "cannot kill container: {q}: container {} is not running",
                c.config.id
            );
        }
        signal(&c, sig)
    })
}

fn rm(store: &Store, args: &RmArgs) -> ExitCode {
    each(&args.containers, |q| {
        let id = state::resolve(store, q)?;
        let c = match state::load(store, &id) {
            Ok(c) => c,
            // A record left unreadable (a crash while it was written) can only go.
            Err(_) => return Ok(state::remove(store, &id)?),
        };
        if c.state.status == Status::Running {
            if !args.force {
                bail!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.config.name
                );
            }
            if running(&c) {
                let _ = signal(&c, libc::SIGKILL);
            }
            wait_stopped(store, &c.config.id, Duration::from_secs(30));
        }
        let raw = state::read_state(store, &c.config.id).ok();
        if let Some(s) = raw {
            wait_supervisor(
                s.supervisor_pid,
                s.supervisor_start,
                Duration::from_secs(30),
            );
        }
        // An --rm container may have removed itself meanwhile.
        if state::resolve(store, &c.config.id).is_ok() {
            state::remove(store, &c.config.id)?;
        }
        Ok(())
    })
}

fn wait(store: &Store, args: &WaitArgs) -> ExitCode {
    let mut failed = false;
    for q in &args.containers {
        let result = find(store, q).map(|c| {
            wait_stopped(store, &c.config.id, Duration::MAX / 4);
            state::load(store, &c.config.id).map_or(c.state.exit_code, |c| c.state.exit_code)
        });
        match result {
            Ok(code) => println!("{code}"),
            Err(e) => {
                failed = true;
                eprintln!("Error response from daemon: {e:#}");
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn exec(store: &Store, args: ExecArgs) -> ExitCode {
    match exec_inner(store, args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            ExitCode::from(super::run::RUNTIME_FAILURE)
        }
    }
}

fn exec_inner(store: &Store, args: ExecArgs) -> Result<i32> {
    let c = find(store, &args.container)?;
    if !running(&c) {
        bail!("container {} is not running", c.config.id);
    }
    let pid = c.state.pid;
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    let user_spec = args.user.as_deref().unwrap_or(&c.config.user);
    let user = kiln::runtime::resolve_user(
        user_spec,
        read("etc/passwd").as_deref(),
        read("etc/group").as_deref(),
    )?;
    let cwd = match args.workdir {
        Some(w) if !w.starts_with('/') => {
            bail!("the working directory '{w}' is invalid: it needs to be an absolute path")
        }
        Some(w) => w,
        None => c.config.workdir.clone(),
    };
    let lookup = |k: &str| std::env::var(k).ok();
    let extra: Vec<String> = args
        .env
        .iter()
        .filter_map(|e| kiln::runtime::container::env_arg(e, lookup))
        .collect();
    let env = exec_env(
        &c.config.env,
        &extra,
        &c.config.hostname,
        user.home.as_deref(),
    );
    let ids = kiln::runtime::host_id_plan();
    let groups_allowed = ids.helpers || nix::unistd::geteuid().is_root();
    let mut spec = ExecSpec {
        argv: args.command,
        env,
        cwd,
        user,
        groups_allowed,
        stdio: Stdio::Inherit {
            stdin: args.interactive,
        },
    };
    if !args.tty {
        return Ok(kiln::runtime::exec::exec(pid, &spec, &mut || {})?);
    }
    let pty = kiln::runtime::pty::Pty::open()?;
    let raw = args
        .interactive
        .then(|| kiln::runtime::pty::RawMode::enter(0));
    let fd = pty.slave.as_raw_fd();
    spec.stdio = Stdio::Fds {
        stdin: fd,
        stdout: fd,
        stderr: fd,
        tty: true,
    };
    let master = pty.master;
    kiln::runtime::pty::follow_window_size(master.as_raw_fd(), 0);
    let mut slave = Some(pty.slave);
    let mut out = None;
    let code = kiln::runtime::exec::exec(pid, &spec, &mut || {
        slave = None;
        if args.interactive {
            kiln::runtime::pty::copy_in(&master);
        }
        out = kiln::runtime::pty::copy_out(&master, Box::new(std::io::stdout()));
    });
    if let Some(t) = out {
        let _ = t.join();
    }
    drop(raw);
    Ok(code?)
}

/// The hidden `__supervise ID` entry point of a detached container.
pub fn supervise(store: &Store, id: &str) -> ExitCode {
    let code = kiln::runtime::supervisor::supervise(store, id);
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_cut_and_quoted_as_docker_does() {
        let argv = ["sh", "-c", "while true; do sleep 1; done"].map(String::from);
        assert_eq!(command_text(&argv, false), "\"sh -c while true; d…\"");
        assert_eq!(
            command_text(&["echo".to_string(), "a\"b".to_string()], true),
            "\"echo a\\\"b\""
        );
    }
}

//! Containers from images of the store (`kiln run`): docker's rules for the command,
//! environment, working directory and user, turned into a [`RunSpec`] by one function
//! ([`plan`]) for foreground and detached runs alike; the container's record (see
//! [`super::state`]) is created first and kept up to date while it runs.

use super::ports::{self, Listener, PortError, PortMapping};
use super::state::{self, ContainerConfig as Record, State, StateError, Status};
use super::volumes::{self, VolumeError, VolumeMount, Volumes};
use super::{Network, RunSpec, RuntimeError, Stdio};
use crate::image::{ContainerConfig, Descriptor, Digest, Reference};
use crate::progress::Reporter;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// A failure before the command runs (kiln's own: docker reports these with exit code 125).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unable to find image '{0}' locally, and it is not a name to pull: {1}")]
    BadReference(String, String),
    #[error("unable to find image '{0}' locally, and pulling it failed: {1}")]
    Pull(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("layer {0}: {1}")]
    Layer(Digest, String),
    #[error("no command specified: the image has no ENTRYPOINT or CMD, and none was given")]
    NoCommand,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The container's command could not be started (docker's `run` exits with `code`).
    #[error("{msg}")]
    StartFailed { code: i32, msg: String },
}

/// What `kiln run` was asked for. Stored in the container's config.json (the supervisor
/// of a detached container plans its run from it), so new fields need serde and a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    /// A name or ID the store resolves, or a reference to pull.
    pub image: String,
    /// Arguments after the image: they replace the image's CMD.
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's ENTRYPOINT and clears its CMD ("" clears both).
    pub entrypoint: Option<String>,
    /// `KEY=value` entries over the image's Env, in order (later wins).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Pass kiln's standard input to the command (`-i`).
    pub stdin: bool,
    /// A pseudo-terminal for the command (`-t`).
    pub tty: bool,
    pub network: Network,
    /// Default: the container's short ID.
    pub hostname: Option<String>,
    /// `--cap-add`/`--cap-drop`/`--security-opt`, `--init`, limits, `--isolation`.
    pub confine: super::Confinement,
    /// `-p`: ports to publish (ignored, with a warning, with `--network host`). The bound
    /// ones, with real host ports, come from [`publish_ports`].
    pub publish: Vec<PortMapping>,
    /// `-v`, `--mount`, `--tmpfs`, in order. A record of these (serialized as they are)
    /// keeps named volumes from `kiln volume rm` without -f; name anonymous ones first
    /// ([`volumes::name_anonymous`]) so the record names them.
    pub volumes: Vec<VolumeMount>,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only: bool,
    /// `--name`; default: a random `adjective_surname`.
    pub name: Option<String>,
    /// `--rm`: remove the record when the container exits.
    pub rm: bool,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            image: String::new(),
            args: Vec::new(),
            entrypoint: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            stdin: false,
            tty: false,
            network: Network::Host,
            hostname: None,
            name: None,
            rm: false,
            confine: super::Confinement::default(),
            publish: Vec::new(),
            volumes: Vec::new(),
            read_only: false,
        }
    }
}

/// The container's volumes: the ones asked for, then an anonymous one for each `VOLUME` of
/// the image no mount covers, every anonymous one given its name. What a container record
/// should keep (so `kiln volume rm` knows the volumes are in use).
pub fn volume_plan(opts: &ContainerOptions, config: &ContainerConfig) -> Vec<VolumeMount> {
    let mut plan = opts.volumes.clone();
    volumes::add_image_volumes(&mut plan, config.volumes.keys());
    volumes::name_anonymous(&mut plan);
    plan
}

/// Bind the host sockets of `opts.publish` (before the container starts, so a port in use is
/// an error with nothing running). Empty with `--network host`, where -p is ignored ([`plan`]
/// warns, as docker does). `Listener::published()` gives what `ps` shows as PORTS.
pub fn publish_ports(opts: &ContainerOptions) -> Result<Vec<Listener>, ContainerError> {
    if opts.publish.is_empty() || opts.network == Network::Host {
        return Ok(Vec::new());
    }
    Ok(ports::bind(&opts.publish)?)
}

/// The argv docker would run: ENTRYPOINT + CMD, where arguments given replace CMD and an
/// `--entrypoint` replaces ENTRYPOINT and drops the image's CMD.
pub fn command_line(
    config: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>, ContainerError> {
    let (entry, cmd) = command_parts(config, entrypoint, args);
    let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
}

/// The ENTRYPOINT and CMD parts of [`command_line`], as `inspect` shows them.
pub fn command_parts(
    config: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> (Vec<String>, Vec<String>) {
    let (entry, image_cmd): (Vec<String>, Vec<String>) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (
            config.entrypoint.clone().unwrap_or_default(),
            config.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() {
        image_cmd
    } else {
        args.to_vec()
    };
    (entry, cmd)
}

/// The image's Env with `extra` over it: a key given again replaces the earlier value in
/// place, a new one is appended.
pub fn merge_env(image: &[String], extra: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = Vec::with_capacity(image.len() + extra.len());
    for e in image.iter().chain(extra) {
        let k = key(e);
        match out.iter_mut().find(|o| key(o) == k) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// One `-e` value, as docker reads it: `K=V` as given, a bare `K` takes the value from
/// kiln's environment (and is dropped when unset there).
pub fn env_arg(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if arg.contains('=') {
        return Some(arg.to_string());
    }
    lookup(arg).map(|v| format!("{arg}={v}"))
}

/// The entries of an `--env-file`: one per line, `#` comments and blank lines skipped,
/// each line read as an `-e` value.
pub fn parse_env_file(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('=') {
            return Err(ContainerError::Invalid(format!(
                "env file line {}: variable name is missing: {line}",
                i + 1
            )));
        }
        out.extend(env_arg(l, &lookup));
    }
    Ok(out)
}

/// The image record for `name`, pulled first when the store does not have it.
fn find_image(
    store: &Store,
    name: &str,
    reporter: &dyn Reporter,
) -> Result<crate::store::ImageRecord, ContainerError> {
    match store.resolve(name) {
        Ok(r) => Ok(r),
        Err(StoreError::ImageNotFound(_)) => {
            let reference = Reference::parse(name)
                .map_err(|e| ContainerError::BadReference(name.to_string(), e.to_string()))?;
            let opts = crate::registry::RegistryOptions::from_env();
            let pulled = crate::registry::pull(store, &reference, None, &opts, reporter)
                .map_err(|e| ContainerError::Pull(name.to_string(), e.to_string()))?;
            Ok(store.resolve(pulled.id.as_str())?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The uncompressed tar of a layer in the store (made from the compressed blob when only
/// that is there, as for a pulled image).
fn uncompressed_layer(
    store: &Store,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<PathBuf, ContainerError> {
    if store.has_blob(diff_id) {
        return Ok(store.blob_path(diff_id));
    }
    let layer_err = |e: String| ContainerError::Layer(blob.clone(), e);
    let f = store.open_blob(blob)?;
    let (_, mut reader) = crate::layer::decompressing_reader(std::io::BufReader::new(f))
        .map_err(|e| layer_err(e.to_string()))?;
    let mut w = store.blob_writer()?;
    std::io::copy(&mut reader, &mut w).map_err(|e| layer_err(e.to_string()))?;
    w.commit(Some(diff_id))?;
    Ok(store.blob_path(diff_id))
}

/// A file of the image's root, read from its snapshots topmost first (a whiteout, an
/// overlay character device, hides lower copies).
fn read_image_file(lowers: &[PathBuf], rel: &str) -> Option<String> {
    for l in lowers {
        let p = l.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() => {
                return std::fs::read(&p)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            }
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// The snapshots of an image's layers, topmost first, made where missing (layers unpacked
/// side by side). `kiln pull` calls this too, so a pulled image is ready to run.
pub fn image_lowers(
    store: &Store,
    manifest: &crate::image::Manifest,
    image: &crate::image::ImageConfig,
    ids: &super::IdPlan,
) -> Result<Vec<PathBuf>, ContainerError> {
    use rayon::prelude::*;
    let layers: Vec<(&Descriptor, &Digest)> = manifest
        .layers
        .iter()
        .zip(image.rootfs.diff_ids.iter())
        .rev()
        .collect();
    layers
        .par_iter()
        .map(|(desc, diff_id)| match store.snapshot_path(diff_id) {
            Some(p) => Ok(p),
            None => {
                let tar = uncompressed_layer(store, &desc.digest, diff_id)?;
                Ok(super::ensure_lower(store, ids, diff_id, &tar)?)
            }
        })
        .collect()
}

/// Make the snapshots of the image `manifest_digest` (after a pull: docker's pull leaves an
/// image ready to run). Returns how many layers there are.
pub fn prepare_image(store: &Store, manifest_digest: &Digest) -> Result<usize, ContainerError> {
    let manifest = store.read_manifest(manifest_digest)?;
    let image = store.read_config(&manifest.config.digest)?;
    let ids = super::host_id_plan();
    Ok(image_lowers(store, &manifest, &image, &ids)?.len())
}

/// A planned run: the spec (its scratch dir still to be set) and what it pins.
pub struct Planned {
    pub spec: RunSpec,
    /// The manifest, config and layers the container reads (pinned against gc while it runs).
    pub pins: Vec<Digest>,
    pub image_id: Digest,
    pub manifest: Digest,
    pub stop_signal: Option<String>,
    /// The user the command runs as: `--user`, else the image's USER.
    pub user_spec: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The container's volumes, anonymous ones named (recorded in its options, so the
    /// supervisor's plan mounts the same ones and `kiln volume rm` sees them in use).
    pub volumes: Vec<VolumeMount>,
}

/// The one place that turns [`ContainerOptions`] and an image into a [`RunSpec`]: the image
/// by its manifest digest (resolved, or pulled, by the caller), snapshots made if missing.
pub fn plan(
    store: &Store,
    manifest_digest: &Digest,
    opts: &ContainerOptions,
    hostname: &str,
    reporter: &dyn Reporter,
) -> Result<Planned, ContainerError> {
    let manifest = store.read_manifest(manifest_digest)?;
    let image = store.read_config(&manifest.config.digest)?;
    let config = &image.config;
    let argv = command_line(config, opts.entrypoint.as_deref(), &opts.args)?;
    let (entrypoint, cmd) = command_parts(config, opts.entrypoint.as_deref(), &opts.args);
    let ids = super::host_id_plan();
    if let Some(w) = &ids.warning {
        reporter.event(crate::progress::Event::Warning(w));
    }
    // gc marks everything a pinned manifest reaches (config, layers, snapshots): one pin,
    // one lease write.
    let pins = vec![manifest_digest.clone()];
    let lowers = image_lowers(store, &manifest, &image, &ids)?;
    let user_spec = opts.user.as_deref().unwrap_or(&config.user);
    let user = super::resolve_user(
        user_spec,
        read_image_file(&lowers, "etc/passwd").as_deref(),
        read_image_file(&lowers, "etc/group").as_deref(),
    )?;
    let cwd = match opts.workdir.as_deref() {
        Some(w) if !w.starts_with('/') => {
            return Err(ContainerError::Invalid(format!(
                "the working directory '{w}' is invalid: it needs to be an absolute path"
            )))
        }
        Some(w) => w.to_string(),
        None => config.working_dir.clone(),
    };
    let env = merge_env(&config.env, &opts.env);
    if !opts.publish.is_empty() && opts.network == Network::Host {
        reporter.event(crate::progress::Event::Warning(
            "published ports are discarded when using host network mode",
        ));
    }
    if opts.network == Network::Private {
        if let Some(why) = super::net::outbound_unavailable() {
            reporter.event(crate::progress::Event::Warning(&why));
        }
    }
    let volumes = volume_plan(opts, config);
    let (mounts, volume_fills) = volumes::resolve(&Volumes::new(store.root()), &volumes)?;
    let spec = RunSpec {
        lowers,
        scratch: PathBuf::new(),
        argv,
        env,
        cwd,
        user,
        network: opts.network,
        hostname: hostname.to_string(),
        ids,
        layer_tar: None,
        source_date_epoch: None,
        pipes: Vec::new(),
        mounts,
        // Bound by [`start`], in the process that runs the container.
        ports: Vec::new(),
        volume_fills,
        readonly_root: opts.read_only,
        confine: opts.confine,
    };
    Ok(Planned {
        spec,
        pins,
        image_id: manifest.config.digest.clone(),
        manifest: manifest_digest.clone(),
        stop_signal: Some(config.stop_signal.clone()).filter(|s| !s.is_empty()),
        user_spec: user_spec.to_string(),
        entrypoint,
        cmd,
        volumes,
    })
}

/// Resolve (or pull) the image, plan the run and write the container's record (name
/// claimed). Nothing runs yet.
pub fn create(
    store: &Store,
    opts: &ContainerOptions,
    reporter: &dyn Reporter,
) -> Result<(Record, Planned), ContainerError> {
    let record = find_image(store, &opts.image, reporter)?;
    let id = state::new_id();
    let short = id.get(..12).unwrap_or(&id).to_string();
    let hostname = opts.hostname.clone().unwrap_or(short);
    let planned = plan(store, &record.manifest.digest, opts, &hostname, reporter)?;
    let config = Record {
        id,
        name: opts.name.clone().unwrap_or_default(),
        created: state::now_nanos(),
        image: opts.image.clone(),
        image_id: planned.image_id.to_string(),
        manifest: planned.manifest.to_string(),
        argv: planned.spec.argv.clone(),
        entrypoint: planned.entrypoint.clone(),
        cmd: planned.cmd.clone(),
        env: planned.spec.env.clone(),
        workdir: planned.spec.cwd.clone(),
        user: planned.user_spec.clone(),
        hostname,
        stop_signal: planned.stop_signal.clone(),
        options: ContainerOptions {
            volumes: planned.volumes.clone(),
            ..opts.clone()
        },
    };
    let config = state::create(store, config, &State::created(opts.rm))?;
    Ok((config, planned))
}

/// Run a created container to its end, as the process that supervises it (kiln itself in
/// the foreground, the supervisor when detached): pins its image, keeps its state, removes
/// it at the end with `--rm`. `started` gets the container's host pid once it exists. A
/// failure before the container started removes its record.
pub fn start(
    store: &Store,
    config: &Record,
    mut planned: Planned,
    stdio: Stdio,
    started: &mut dyn FnMut(libc::pid_t),
    output: &mut dyn FnMut(&[u8]),
    finished: &mut dyn FnMut(),
) -> Result<i32, ContainerError> {
    let id = config.id.as_str();
    let auto_remove = config.options.rm;
    let fail = |e: ContainerError| -> Result<i32, ContainerError> {
        let _ = state::remove(store, id);
        Err(e)
    };
    let lease = match store.lease() {
        Ok(l) => l,
        Err(e) => return fail(e.into()),
    };
    for d in &planned.pins {
        if let Err(e) = lease.pin(d) {
            return fail(e.into());
        }
    }
    let scratch = state::container_dir(store, id).join("rootfs");
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return fail(RuntimeError::io(&scratch, e).into());
    }
    planned.spec.scratch = scratch.clone();
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let mut st = State::created(auto_remove);
    // A port in use is an error before anything runs.
    let listeners = match publish_ports(&config.options) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    st.ports = listeners.iter().map(Listener::published).collect();
    planned.spec.ports = listeners;
    st.supervisor_pid = me;
    st.supervisor_start = state::start_time(me);
    let mut began = false;
    let result = super::run_container(
        &planned.spec,
        stdio,
        &mut |pid| {
            began = true;
            st.status = Status::Running;
            st.pid = pid;
            st.pid_start = state::start_time(pid);
            st.started_at = Some(state::now_nanos());
            // The record is best effort from here: the container runs either way.
            let _ = state::write_state(store, id, &st);
            started(pid);
        },
        output,
    );
    finished();
    remove_scratch(&scratch);
    let code = match result {
        Ok(code) => code,
        Err(e) if !began => return fail(e.into()),
        Err(e) => {
            st.error = e.to_string();
            125
        }
    };
    st.status = Status::Exited;
    st.exit_code = code;
    st.pid = 0;
    st.finished_at = Some(state::now_nanos());
    if auto_remove {
        state::remove(store, id)?;
        // docker's --rm takes the container's anonymous volumes along.
        let vols = Volumes::new(store.root());
        for m in &planned.volumes {
            if let VolumeMount::Volume {
                source,
                anonymous: true,
                ..
            } = m
            {
                let _ = vols.remove(source, true);
            }
        }
    } else {
        state::write_state(store, id, &st)?;
    }
    drop(lease);
    Ok(code)
}

/// A signal by name (`SIGTERM`, `term`) or number, as docker's `--signal` and STOPSIGNAL.
pub fn parse_signal(s: &str) -> Option<libc::c_int> {
    if let Ok(n) = s.parse::<libc::c_int>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(sig)
}

fn rfc3339_nanos(n: Option<u64>) -> String {
    match n {
        Some(n) => crate::image::timestamp::rfc3339_from_unix(
            n / 1_000_000_000,
            u32::try_from(n % 1_000_000_000).unwrap_or(0),
        ),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// `kiln inspect` of a container: docker's field names, in docker's order (the subset
/// kiln has).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: InspectState,
    pub image: String,
    pub log_path: String,
    pub name: String,
    pub driver: &'static str,
    pub host_config: InspectHostConfig,
    pub config: InspectConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectState {
    pub status: &'static str,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectHostConfig {
    pub network_mode: serde_json::Value,
    pub auto_remove: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    pub hostname: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub image: String,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub stop_signal: String,
}

/// The [`ContainerInspect`] of a container record.
pub fn inspect(c: &state::Container) -> ContainerInspect {
    let cfg = &c.config;
    let st = &c.state;
    let o = &cfg.options;
    let (path, args) = match cfg.argv.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let running = st.status == Status::Running;
    let non_empty = |v: &Vec<String>| Some(v.clone()).filter(|v| !v.is_empty());
    ContainerInspect {
        id: cfg.id.clone(),
        created: rfc3339_nanos(Some(cfg.created)),
        path,
        args,
        state: InspectState {
            status: st.status.as_str(),
            running,
            paused: false,
            restarting: false,
            oom_killed: false,
            dead: false,
            pid: if running { st.pid } else { 0 },
            exit_code: st.exit_code,
            error: st.error.clone(),
            started_at: rfc3339_nanos(st.started_at),
            finished_at: rfc3339_nanos(st.finished_at),
        },
        image: cfg.image_id.clone(),
        log_path: String::new(),
        name: format!("/{}", cfg.name),
        driver: "overlay",
        host_config: InspectHostConfig {
            network_mode: serde_json::to_value(o.network).unwrap_or_default(),
            auto_remove: o.rm,
        },
        config: InspectConfig {
            hostname: cfg.hostname.clone(),
            user: cfg.user.clone(),
            tty: o.tty,
            open_stdin: o.stdin,
            env: cfg.env.clone(),
            cmd: non_empty(&cfg.cmd),
            image: cfg.image.clone(),
            working_dir: cfg.workdir.clone(),
            entrypoint: non_empty(&cfg.entrypoint),
            stop_signal: cfg
                .stop_signal
                .clone()
                .unwrap_or_else(|| "SIGTERM".to_string()),
        },
    }
}

/// The pid signals go to in the foreground (0 until the container exists).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// Signals that came before the container existed (a bit per signal number), delivered
/// once it does: a `kill` right after the container shows in `ps` must not be lost.
static PENDING: AtomicU64 = AtomicU64::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else if (0..64).contains(&sig) {
        PENDING.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// Start forwarding to `pid`, first the signals that were held back.
fn forward_to(pid: libc::pid_t) {
    FORWARD_TO.store(pid, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    for sig in 1..64 {
        if pending & (1 << sig) != 0 {
            // SAFETY: signalling the container's process, which exists now.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

fn forward_signals() {
    for sig in super::FORWARDED_SIGNALS {
        // SAFETY: the handler only reads an atomic and calls kill (async-signal-safe).
        unsafe { libc::signal(sig, forward_signal as *const () as libc::sighandler_t) };
    }
}

/// Run the container in the foreground: its streams are kiln's (through a pty with `tty`),
/// signals kiln gets are forwarded to it, its exit code is returned. Its record exists
/// while it runs (and after, unless `rm`).
pub fn run_foreground(
    store: &Store,
    opts: &ContainerOptions,
    reporter: &dyn Reporter,
) -> Result<i32, ContainerError> {
    let (config, planned) = create(store, opts, reporter)?;
    forward_signals();
    let mut ignored = |_: &[u8]| {};
    if !opts.tty {
        return start(
            store,
            &config,
            planned,
            Stdio::Inherit { stdin: opts.stdin },
            &mut forward_to,
            &mut ignored,
            &mut || {},
        );
    }
    let pty = match super::pty::Pty::open() {
        Ok(p) => p,
        Err(e) => {
            let _ = state::remove(store, &config.id);
            return Err(e.into());
        }
    };
    // Raw mode only when kiln's keys go to the container (as docker): without -i, ^C stays
    // a signal to kiln, which forwards it.
    let raw = opts.stdin.then(|| super::pty::RawMode::enter(0));
    let master = pty.master;
    // The size is there before the command starts (it may ask at once).
    super::pty::follow_window_size(master.as_raw_fd(), 0);
    let mut slave = Some(pty.slave);
    let slave_fd = slave.as_ref().map_or(-1, |s| s.as_raw_fd());
    let output_thread = std::cell::RefCell::new(None);
    let stdio = Stdio::Fds {
        stdin: slave_fd,
        stdout: slave_fd,
        stderr: slave_fd,
        tty: true,
    };
    let code = start(
        store,
        &config,
        planned,
        stdio,
        &mut |pid| {
            forward_to(pid);
            // The master sees EOF once the container's copies of the slave are gone.
            slave = None;
            if opts.stdin {
                super::pty::copy_in(&master);
            }
            *output_thread.borrow_mut() =
                super::pty::copy_out(&master, Box::new(std::io::stdout()));
        },
        &mut ignored,
        &mut || {
            if let Some(t) = output_thread.borrow_mut().take() {
                let _ = t.join();
            }
        },
    );
    drop(raw);
    code
}

/// The keeper removed the upper dir from inside the user namespace; what is left (mount
/// points, small files) is the caller's.
fn remove_scratch(path: &Path) {
    if std::fs::remove_dir_all(path).is_err() {
        let _ = crate::runtime::remove_foreign_tree(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ContainerConfig {
            entrypoint: entry.map(v),
            cmd: cmd.map(v),
            ..ContainerConfig::default()
        }
    }

    fn s(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_replace_cmd_and_keep_the_entrypoint() {
        let c = cfg(Some(&["/ep", "-x"]), Some(&["default"]));
        assert_eq!(
            command_line(&c, None, &[]).unwrap(),
            s(&["/ep", "-x", "default"])
        );
        assert_eq!(
            command_line(&c, None, &s(&["a", "b"])).unwrap(),
            s(&["/ep", "-x", "a", "b"])
        );
    }

    #[test]
    fn an_entrypoint_flag_replaces_the_entrypoint_and_clears_cmd() {
        let c = cfg(Some(&["/ep"]), Some(&["default"]));
        assert_eq!(
            command_line(&c, Some("/bin/echo"), &[]).unwrap(),
            s(&["/bin/echo"])
        );
        assert_eq!(
            command_line(&c, Some("/bin/echo"), &s(&["hi"])).unwrap(),
            s(&["/bin/echo", "hi"])
        );
        assert_eq!(command_line(&c, Some(""), &s(&["ls"])).unwrap(), s(&["ls"]));
        assert!(matches!(
            command_line(&c, Some(""), &[]),
            Err(ContainerError::NoCommand)
        ));
        assert!(matches!(
            command_line(&cfg(None, None), None, &[]),
            Err(ContainerError::NoCommand)
        ));
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("KILL"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal(""), None);
    }

    #[test]
    fn inspect_shows_entrypoint_and_cmd_apart() {
        let c = cfg(Some(&["/ep"]), Some(&["default"]));
        assert_eq!(
            command_parts(&c, None, &s(&["x"])),
            (s(&["/ep"]), s(&["x"]))
        );
        assert_eq!(
            command_parts(&c, Some("/bin/sh"), &[]),
            (s(&["/bin/sh"]), Vec::new())
        );
    }

    #[test]
    fn env_given_replaces_the_images_in_place() {
        let img = s(&["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(
            merge_env(&img, &s(&["B=3", "C=4", "A=5"])),
            s(&["PATH=/bin", "A=5", "B=3", "C=4"])
        );
    }

    #[test]
    fn bare_names_come_from_kilns_environment() {
        let look = |k: &str| (k == "HOME").then(|| "/h".to_string());
        assert_eq!(env_arg("X=1=2", look), Some("X=1=2".into()));
        assert_eq!(env_arg("HOME", look), Some("HOME=/h".into()));
        assert_eq!(env_arg("NOPE", look), None);
        let text = "# comment\n\nA=1\n  HOME\nNOPE\nB= spaced \n";
        assert_eq!(
            parse_env_file(text, look).unwrap(),
            s(&["A=1", "HOME=/h", "B= spaced "])
        );
        assert!(parse_env_file("=x\n", look).is_err());
    }

    #[test]
    fn image_files_are_read_topmost_first() {
        let t = tempfile::tempdir().unwrap();
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(bottom.join("etc")).unwrap();
        std::fs::write(bottom.join("etc/passwd"), "old").unwrap();
        std::fs::write(bottom.join("etc/group"), "g").unwrap();
        std::fs::write(top.join("etc/passwd"), "new").unwrap();
        let l = [top, bottom];
        assert_eq!(read_image_file(&l, "etc/passwd").as_deref(), Some("new"));
        assert_eq!(read_image_file(&l, "etc/group").as_deref(), Some("g"));
        assert_eq!(read_image_file(&l, "etc/shadow"), None);
    }
}

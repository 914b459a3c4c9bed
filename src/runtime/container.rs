//! A foreground container from an image of the store (`kiln run`): docker's rules for the
//! command, environment, working directory and user, on the runtime's [`run_with_stdio`]
//! with the container's streams inherited and no layer written.

use super::ports::{self, Listener, PortError, PortMapping};
use super::volumes::{self, VolumeError, VolumeMount, Volumes};
use super::{Network, RunSpec, RuntimeError, Stdio};
use crate::image::{ContainerConfig, Digest, Reference};
use crate::progress::Reporter;
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};

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
}

/// What `kiln run` was asked for.
#[derive(Debug, Clone)]
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
    pub network: Network,
    /// Default: a short random ID.
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
/// an error with nothing running). Empty with `--network host`, where -p is ignored with a
/// warning, as docker does. `Listener::published()` gives what `ps` shows as PORTS.
pub fn publish_ports(
    opts: &ContainerOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<Listener>, ContainerError> {
    if opts.publish.is_empty() {
        return Ok(Vec::new());
    }
    if opts.network == Network::Host {
        reporter.event(crate::progress::Event::Warning(
            "published ports are discarded when using host network mode",
        ));
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
    let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
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

/// A short random container ID (12 hex digits, as docker shows them).
pub fn short_id() -> String {
    let mut bytes = [0u8; 6];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        // Unique enough for a hostname when urandom is unreadable.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mix = t ^ (u128::from(std::process::id()) << 64);
        bytes.copy_from_slice(&mix.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Run the container in the foreground: its stdout and stderr are kiln's, its exit code is
/// returned. The root's upper dir lives in the store's tmp and is removed afterwards.
pub fn run_foreground(
    store: &Store,
    opts: &ContainerOptions,
    reporter: &dyn Reporter,
) -> Result<i32, ContainerError> {
    let record = find_image(store, &opts.image, reporter)?;
    let manifest = store.read_manifest(&record.manifest.digest)?;
    let image = store.read_config(&manifest.config.digest)?;
    let config = &image.config;
    let argv = command_line(config, opts.entrypoint.as_deref(), &opts.args)?;
    let ids = super::host_id_plan();
    if let Some(w) = &ids.warning {
        reporter.event(crate::progress::Event::Warning(w));
    }
    let mut lowers = Vec::with_capacity(manifest.layers.len());
    for (desc, diff_id) in manifest
        .layers
        .iter()
        .zip(image.rootfs.diff_ids.iter())
        .rev()
    {
        let lower = match store.snapshot_path(diff_id) {
            Some(p) => p,
            None => {
                let tar = uncompressed_layer(store, &desc.digest, diff_id)?;
                super::ensure_lower(store, &ids, diff_id, &tar)?
            }
        };
        lowers.push(lower);
    }
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
    let hostname = opts.hostname.clone().unwrap_or_else(short_id);
    let env = merge_env(&config.env, &opts.env);
    let listeners = publish_ports(opts, reporter)?;
    if opts.network == Network::Private {
        if let Some(why) = super::net::outbound_unavailable() {
            reporter.event(crate::progress::Event::Warning(&why));
        }
    }
    let requested = volume_plan(opts, config);
    let vols = Volumes::new(store.root());
    let (mounts, volume_fills) = volumes::resolve(&vols, &requested)?;
    let tmp = store.root().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| RuntimeError::io(&tmp, e))?;
    let scratch = tempfile::Builder::new()
        .prefix("ctr-")
        .tempdir_in(&tmp)
        .map_err(|e| RuntimeError::io(&tmp, e))?;
    let spec = RunSpec {
        lowers,
        scratch: scratch.path().to_path_buf(),
        argv,
        env,
        cwd,
        user,
        network: opts.network,
        hostname,
        ids,
        layer_tar: None,
        source_date_epoch: None,
        pipes: Vec::new(),
        mounts,
        ports: listeners,
        volume_fills,
        readonly_root: opts.read_only,
        confine: opts.confine,
    };
    let mut ignored = |_: &[u8]| {};
    let code = super::run_with_stdio(&spec, Stdio::Inherit { stdin: opts.stdin }, &mut ignored);
    remove_scratch(scratch.path());
    // A foreground container is removed when it ends: as docker's --rm, with its
    // anonymous volumes.
    for m in &requested {
        if let VolumeMount::Volume {
            source,
            anonymous: true,
            ..
        } = m
        {
            let _ = vols.remove(source, true);
        }
    }
    Ok(code?)
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
    fn short_ids_are_twelve_hex_digits() {
        let a = short_id();
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, short_id());
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

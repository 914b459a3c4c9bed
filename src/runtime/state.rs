//! Container records in the store: `containers/<id>/config.json` (what was asked for and
//! resolved at create time), `state.json` (status, pids, exit code, times), `container.log`
//! (json lines as docker's json-file driver), and `containers/names/<name>` (a name claimed
//! with O_EXCL, holding the ID). Every write is a temp file and a rename.
//!
//! A running container's processes are recorded by pid and start time (from /proc), so a
//! supervisor that died without writing its final state (SIGKILL) reads as exited.

use super::container::ContainerOptions;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `config.json`: fixed when the container is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// Nanoseconds since the epoch.
    pub created: u64,
    /// The image as given (`busybox`), as `ps` shows it.
    pub image: String,
    /// The image's ID (its config digest) and manifest digest at create time.
    pub image_id: String,
    pub manifest: String,
    /// What runs: ENTRYPOINT + CMD resolved by docker's rules.
    pub argv: Vec<String>,
    /// Its ENTRYPOINT and CMD parts.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The environment after merging the image's with `-e`/`--env-file`.
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    /// The image's STOPSIGNAL (default SIGTERM).
    pub stop_signal: Option<String>,
    /// Everything `kiln run` was asked for (ports and volumes as given, too).
    pub options: ContainerOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// `state.json`: changes over the container's life.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The process that runs the container and writes this state (the supervisor of a
    /// detached container, kiln itself for a foreground one), and its start time.
    #[serde(default)]
    pub supervisor_pid: i32,
    #[serde(default)]
    pub supervisor_start: u64,
    /// The container's first process (PID 1 inside) as a host pid, and its start time.
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub pid_start: u64,
    #[serde(default)]
    pub exit_code: i32,
    /// Nanoseconds since the epoch.
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub error: String,
    /// Remove the record when the container exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The published ports as bound (a `-p 80` has its host port chosen then).
    #[serde(default)]
    pub ports: Vec<super::ports::PortMapping>,
}

impl State {
    pub fn created(auto_remove: bool) -> State {
        State {
            status: Status::Created,
            supervisor_pid: 0,
            supervisor_start: 0,
            pid: 0,
            pid_start: 0,
            exit_code: 0,
            started_at: None,
            finished_at: None,
            error: String::new(),
            auto_remove,
            ports: Vec::new(),
        }
    }

    /// The state as it is now: a `running` record whose supervisor is gone (killed before
    /// it could write the exit) reads as exited, code 137 as for a container killed by
    /// SIGKILL.
    pub fn effective(&self) -> State {
        let mut s = self.clone();
        if s.status == Status::Running && !alive(s.supervisor_pid, s.supervisor_start) {
            s.status = Status::Exited;
            s.exit_code = 137;
            s.pid = 0;
            if s.finished_at.is_none() {
                s.finished_at = s.started_at;
            }
        }
        s
    }

    pub fn running(&self) -> bool {
        self.effective().status == Status::Running
    }
}

/// A container's record.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: ContainerConfig,
    /// As [`State::effective`] makes it.
    pub state: State,
}

impl Container {
    pub fn short_id(&self) -> &str {
        self.config.id.get(..12).unwrap_or(&self.config.id)
    }
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), 0 when
/// there is no such process.
pub fn start_time(pid: i32) -> u64 {
    if pid <= 0 {
        return 0;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0;
    };
    let mut fields = rest.split_whitespace();
    // rest starts with field 3 (state); the start time is field 22.
    let state = fields.next().unwrap_or("");
    if state == "Z" || state == "X" {
        return 0;
    }
    fields.nth(18).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Whether `pid` is still the process that started at `start` (not a reused pid).
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start != 0 && start_time(pid) == start
}

pub fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

pub fn container_dir(store: &Store, id: &str) -> PathBuf {
    containers_dir(store).join(id)
}

pub fn log_path(store: &Store, id: &str) -> PathBuf {
    container_dir(store, id).join("container.log")
}

fn names_dir(store: &Store) -> PathBuf {
    containers_dir(store).join("names")
}

/// A new random 64-hex container ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let seed = format!(
            "{}-{}-{:?}",
            now_nanos(),
            std::process::id(),
            std::thread::current().id()
        );
        let d = crate::image::Digest::sha256_of(seed.as_bytes());
        return d.hex().to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    // No fsync: a record describes processes that do not outlive a crash of the machine,
    // the rename alone keeps readers from a torn file, and syncs would double `kiln run`'s
    // start-up time. A record left unreadable by a crash is skipped by `ps` and removable.
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    atomic_write(path, &bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Claim `name` for `id`: fails if another container holds it.
fn claim_name(store: &Store, name: &str, id: &str) -> Result<(), StateError> {
    let dir = names_dir(store);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => f.write_all(id.as_bytes()).map_err(io_err(&path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            // A name whose container record is gone (removed by a crash half-way) is free.
            if !holder.is_empty()
                && !container_dir(store, holder.trim())
                    .join("config.json")
                    .exists()
            {
                let _ = std::fs::remove_file(&path);
                return claim_name(store, name, id);
            }
            Err(StateError::NameInUse {
                name: name.to_string(),
                id: holder.trim().to_string(),
            })
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Write a new record: the name (`config.name`, or a random one when empty) is claimed
/// first, so two containers can never share one. Returns the config as written.
pub fn create(
    store: &Store,
    mut config: ContainerConfig,
    state: &State,
) -> Result<ContainerConfig, StateError> {
    if config.name.is_empty() {
        let mut attempt = 0;
        loop {
            let name = super::names::random_name(attempt);
            match claim_name(store, &name, &config.id) {
                Ok(()) => {
                    config.name = name;
                    break;
                }
                Err(StateError::NameInUse { .. }) if attempt < 20 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    } else {
        let name = config.name.trim_start_matches('/').to_string();
        if !super::names::valid_name(&name) {
            return Err(StateError::BadName(config.name));
        }
        claim_name(store, &name, &config.id)?;
        config.name = name;
    }
    let dir = container_dir(store, &config.id);
    let written = std::fs::create_dir_all(&dir)
        .map_err(io_err(&dir))
        .and_then(|()| write_json(&dir.join("state.json"), state))
        .and_then(|()| write_json(&dir.join("config.json"), &config));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(names_dir(store).join(&config.name));
        return Err(e);
    }
    Ok(config)
}

pub fn write_state(store: &Store, id: &str, state: &State) -> Result<(), StateError> {
    write_json(&container_dir(store, id).join("state.json"), state)
}

/// The stored state, as written (not [`State::effective`]).
pub fn read_state(store: &Store, id: &str) -> Result<State, StateError> {
    read_json(&container_dir(store, id).join("state.json"))
}

pub fn load(store: &Store, id: &str) -> Result<Container, StateError> {
    let dir = container_dir(store, id);
    if !dir.join("config.json").exists() {
        return Err(StateError::NotFound(id.to_string()));
    }
    let config: ContainerConfig = read_json(&dir.join("config.json"))?;
    let state: State = read_json(&dir.join("state.json"))?;
    Ok(Container {
        config,
        state: state.effective(),
    })
}

fn ids(store: &Store) -> Result<Vec<String>, StateError> {
    let dir = containers_dir(store);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(name);
        }
    }
    Ok(out)
}

/// A container by full ID, name, or unique ID prefix (docker's order).
pub fn resolve(store: &Store, query: &str) -> Result<String, StateError> {
    let q = query.trim_start_matches('/');
    let all = ids(store)?;
    if all.iter().any(|id| id == q) {
        return Ok(q.to_string());
    }
    if super::names::valid_name(q) {
        if let Ok(id) = std::fs::read_to_string(names_dir(store).join(q)) {
            let id = id.trim().to_string();
            if all.contains(&id) {
                return Ok(id);
            }
        }
    }
    if q.is_empty() || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StateError::NotFound(query.to_string()));
    }
    let mut matches = all.into_iter().filter(|id| id.starts_with(q));
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(id),
        (Some(_), Some(_)) => Err(StateError::Ambiguous(query.to_string())),
        _ => Err(StateError::NotFound(query.to_string())),
    }
}

/// Every container, newest first; records that cannot be read (half-written by a crash)
/// are skipped.
pub fn list(store: &Store) -> Result<Vec<Container>, StateError> {
    let mut out: Vec<Container> = ids(store)?
        .iter()
        .filter_map(|id| load(store, id).ok())
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.config.created));
    Ok(out)
}

/// Remove a record (the caller made sure nothing runs): its directory, then its name.
pub fn remove(store: &Store, id: &str) -> Result<(), StateError> {
    let dir = container_dir(store, id);
    let name = read_json::<ContainerConfig>(&dir.join("config.json"))
        .ok()
        .map(|c| c.name);
    // The config goes first, so a half-removed record no longer resolves.
    let _ = std::fs::remove_file(dir.join("config.json"));
    if std::fs::remove_dir_all(&dir).is_err() && dir.exists() {
        // A rootless container's upper dir holds files of subordinate ids.
        super::remove_foreign_tree(&dir).map_err(io_err(&dir))?;
    }
    if let Some(name) = name {
        let path = names_dir(store).join(&name);
        if std::fs::read_to_string(&path).is_ok_and(|holder| holder.trim() == id) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// An image a container uses (running or not): docker refuses to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub container: String,
    pub image_id: String,
    pub manifest: String,
}

/// The images that containers in the store use, for `rmi`, `prune` and gc.
pub fn images_in_use(store: &Store) -> Result<Vec<ImageUse>, StateError> {
    Ok(list(store)?
        .into_iter()
        .map(|c| ImageUse {
            container: c.config.id,
            image_id: c.config.image_id,
            manifest: c.config.manifest,
        })
        .collect())
}

/// Remove every container that is not running (`kiln prune`, `container prune`); returns
/// the IDs removed.
pub fn remove_stopped(store: &Store) -> Result<Vec<String>, StateError> {
    let mut removed = Vec::new();
    for c in list(store)? {
        if c.state.status != Status::Running {
            remove(store, &c.config.id)?;
            removed.push(c.config.id);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let start = start_time(pid);
        assert!(start > 0);
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(!alive(0, start));
    }

    fn record(id: &str, name: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            name: name.to_string(),
            created: now_nanos(),
            image: "busybox".into(),
            image_id: "sha256:aa".into(),
            manifest: "sha256:bb".into(),
            argv: vec!["true".into()],
            entrypoint: Vec::new(),
            cmd: vec!["true".into()],
            env: Vec::new(),
            workdir: String::new(),
            user: String::new(),
            hostname: String::new(),
            stop_signal: None,
            options: ContainerOptions::default(),
        }
    }

    #[test]
    fn names_ids_and_prefixes_resolve_and_names_are_claimed_once() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let a = format!("abc1{}", "0".repeat(60));
        let b = format!("abc2{}", "0".repeat(60));
        create(&store, record(&a, "web"), &State::created(false)).unwrap();
        let made = create(&store, record(&b, ""), &State::created(false)).unwrap();
        assert!(super::super::names::valid_name(&made.name));
        assert!(matches!(
            create(&store, record(&new_id(), "web"), &State::created(false)),
            Err(StateError::NameInUse { .. })
        ));
        assert!(matches!(
            create(&store, record(&new_id(), "a b"), &State::created(false)),
            Err(StateError::BadName(_))
        ));
        assert_eq!(resolve(&store, "web").unwrap(), a);
        assert_eq!(resolve(&store, "/web").unwrap(), a);
        assert_eq!(resolve(&store, &made.name).unwrap(), b);
        assert_eq!(resolve(&store, "abc2").unwrap(), b);
        assert_eq!(resolve(&store, &a).unwrap(), a);
        assert!(matches!(
            resolve(&store, "abc"),
            Err(StateError::Ambiguous(_))
        ));
        assert!(matches!(
            resolve(&store, "nope"),
            Err(StateError::NotFound(_))
        ));
        assert_eq!(list(&store).unwrap().len(), 2);
        assert_eq!(images_in_use(&store).unwrap().len(), 2);
        // Created (never run) containers are not running: prune removes them and frees names.
        assert_eq!(remove_stopped(&store).unwrap().len(), 2);
        assert!(list(&store).unwrap().is_empty());
        create(&store, record(&new_id(), "web"), &State::created(false)).unwrap();
    }

    #[test]
    fn a_running_record_whose_supervisor_is_gone_reads_as_exited() {
        let mut s = State::created(false);
        s.status = Status::Running;
        let me = i32::try_from(std::process::id()).unwrap();
        s.supervisor_pid = me;
        s.supervisor_start = start_time(me);
        s.started_at = Some(5);
        assert!(s.running());
        s.supervisor_start += 1;
        let e = s.effective();
        assert_eq!(e.status, Status::Exited);
        assert_eq!(e.exit_code, 137);
        assert_eq!(e.finished_at, Some(5));
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }
}

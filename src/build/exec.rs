//! Running a plan: stages on worker threads (each waits only for the stages it needs),
//! steps in order within a stage, every step keyed and looked up in the cache, layers
//! written straight into the store.

use super::add;
use super::copy::{
    self, Chmod, ContextFs, Data, Item, Placement, Selection, SrcEntry, SrcKind, ViewFs,
};
use super::key::{self, hex, Input, Key, KeyBuilder};
use super::mounts::{self as rmounts, Scratch};
use run_mounts::{add_mount_deps, MountPlan};

mod run_mounts;
use super::remote::{RemoteCache, StepRecord};
use crate::context::hash::{hash_files, StatCache};
use crate::context::ignore::PatternMatcher;
use crate::context::walk::Listing;
use crate::dockerfile::expand::{Env, Lexer};
use crate::dockerfile::instruction::{self as ins, Instruction, Located};
use crate::image::{Descriptor, Digest, ImageConfig, Reference};
use crate::layer::index::{LayerIndex, View};
use crate::plan::{self, Base, Plan, Platform};
use crate::progress::{Event, Reporter, StepLabel};
use crate::store::{CacheEntry, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

/// Everything a build needs to know.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile's text and the name errors use for it.
    pub dockerfile: String,
    pub dockerfile_name: String,
    /// Where the Dockerfile lives (for `<name>.dockerignore`), if on disk.
    pub dockerfile_path: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub labels: BTreeMap<String, String>,
    pub platform: Platform,
    pub jobs: usize,
    pub tags: Vec<Reference>,
    /// SOURCE_DATE_EPOCH: clamps file times and sets `created`.
    pub source_date_epoch: Option<i64>,
    /// Asked on a local cache miss (`--cache-from`).
    pub remote_cache: Option<Arc<dyn RemoteCache>>,
    /// `--pull`: check registry bases for a newer image even when the store has one.
    pub pull: bool,
    /// Fetch every layer a remote cache hit names, even of stages the image does not
    /// contain (exporting the build's cache needs them all); else only what is read.
    pub fetch_remote_layers: bool,
    /// `--isolation` of RUN steps.
    pub isolation: crate::runtime::Isolation,
    /// `--secret`: secrets RUN --mount=type=secret can use, by id.
    pub secrets: BTreeMap<String, super::mounts::SecretSource>,
    /// `--network`: the network of every RUN that does not choose its own.
    pub network: ins::Network,
}

/// The image a build made.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Every step that ran or was cached, in no particular order (for `--cache-to`).
    pub steps: Vec<StepRecord>,
}

/// A build failure, naming the place.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] crate::dockerfile::Error),
    /// `Dockerfile:12: COPY failed: "app/" not found in build context`
    #[error("{file}:{line}: {instruction} failed: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    At {
        file: String,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// A layer of a stage: its blob in the store and, when something reads it, its index.
#[derive(Debug)]
struct LayerRef {
    /// Its size is 0 while the layer is [`LayerRef::pending`].
    desc: Descriptor,
    path: PathBuf,
    index: OnceLock<Arc<LayerIndex>>,
    /// A remote cache's layer not fetched yet: fetched when first read or exported, so a
    /// hit on a stage the final image does not contain downloads nothing.
    pending: Option<PendingLayer>,
}

#[derive(Debug)]
struct PendingLayer {
    remote: Arc<dyn RemoteCache>,
    store: Store,
    key_hex: String,
    created: String,
    fetched: OnceLock<Result<u64, String>>,
}

impl LayerRef {
    fn local(store: &Store, desc: Descriptor) -> LayerRef {
        LayerRef {
            path: store.blob_path(&desc.digest),
            desc,
            index: OnceLock::new(),
            pending: None,
        }
    }

    /// Fetch the layer if it is still remote; returns its size.
    fn ready(&self) -> Result<u64, String> {
        let Some(p) = &self.pending else {
            return Ok(self.desc.size);
        };
        p.fetched
            .get_or_init(|| {
                let size = p.remote.fetch_layer(&p.store, &p.key_hex)?;
                // Now that its blob is here, the step is a local hit for the next build.
                let desc = Descriptor::new(
                    crate::image::media::OCI_LAYER_TAR,
                    self.desc.digest.clone(),
                    size,
                );
                let mut entry = CacheEntry::new(Some(desc), None, serde_json::Value::Null);
                entry.created = p.created.clone();
                p.store
                    .cache_put(&p.key_hex, &entry)
                    .map_err(|e| e.to_string())?;
                Ok(size)
            })
            .clone()
    }

    /// The layer's descriptor (uncompressed, under its diffID), fetched first if remote.
    fn descriptor(&self) -> Result<Descriptor, String> {
        let size = self.ready()?;
        Ok(Descriptor {
            size,
            ..self.desc.clone()
        })
    }

    /// The layer's tar in the store, fetched first if remote.
    fn tar(&self) -> Result<&Path, String> {
        self.ready()?;
        Ok(&self.path)
    }

    fn index(&self) -> Result<Arc<LayerIndex>, String> {
        if let Some(i) = self.index.get() {
            return Ok(i.clone());
        }
        let i = Arc::new(LayerIndex::read_file(self.tar()?).map_err(|e| e.to_string())?);
        Ok(self.index.get_or_init(|| i).clone())
    }
}

/// Where a step's cache hit came from.
enum Hit {
    Local(Box<CacheEntry>),
    /// Known to the remote cache; its layer (if any) is fetched only when read.
    Remote(super::remote::RemoteStep),
}

/// A stage's state between steps, and its result.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Arc<LayerRef>>,
    key: Key,
    /// ARGs declared in this stage, with their values (None: declared, unset).
    args: Vec<(String, Option<String>)>,
    /// Whether CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// The newest step's creation time (RFC 3339).
    created: String,
}

impl State {
    fn view(&self) -> Result<View, String> {
        Self::view_of(&self.layers)
    }

    fn view_of(of: &[Arc<LayerRef>]) -> Result<View, String> {
        let mut layers = Vec::with_capacity(of.len());
        for l in of {
            layers.push(crate::layer::index::Layer {
                index: l.index()?,
                tar: l.tar()?.to_path_buf(),
            });
        }
        Ok(View::new(layers))
    }
}

/// Variables visible to expansion in a stage: ENV wins over ARG of the same name.
struct StageEnv<'a> {
    env: &'a [String],
    args: &'a [(String, Option<String>)],
}

impl Env for StageEnv<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        for kv in self.env.iter().rev() {
            if let Some(v) = kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        for (k, v) in self.args.iter().rev() {
            if k == name {
                return v.as_deref();
            }
        }
        None
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Build<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    reporter: &'a dyn Reporter,
    plan: Plan,
    lexer: Lexer,
    listing: OnceLock<Result<Arc<Listing>, String>>,
    /// Set with the listing: whether no `.dockerignore` pattern applies, so the context on
    /// disk is the context as sent (a read-only bind may then use it directly).
    context_unfiltered: OnceLock<bool>,
    stat_cache: Mutex<StatCache>,
    stat_cache_path: PathBuf,
    results: Mutex<Vec<Option<Result<State, String>>>>,
    /// Stage failures in the order they happened: the first is the cause (a stage waiting
    /// on a failed one can only fail after it).
    failures: Mutex<Vec<String>>,
    done: Condvar,
    slots: Semaphore,
    steps: Mutex<Vec<StepRecord>>,
    /// Stage roots unpacked for read-only `RUN --mount=from=`, by the stage's key, kept for
    /// the build.
    stage_roots: Mutex<HashMap<Key, Arc<Scratch>>>,
    /// Values of secret-looking build args (given, or ARG defaults as written): kept out of
    /// the progress lines and the history.
    secret_values: Vec<String>,
}

/// Counting semaphore for `--jobs`.
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Semaphore {
    fn new(n: usize) -> Self {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> SemaphoreGuard<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = match self.cv.wait(free) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        *free -= 1;
        SemaphoreGuard(self)
    }
}

struct SemaphoreGuard<'a>(&'a Semaphore);

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn now_rfc3339(sde: Option<i64>) -> String {
    let secs = match sde {
        Some(s) => s,
        None => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    crate::image::timestamp::rfc3339_from_unix(secs.max(0) as u64, 0)
}

/// The platform kiln runs on (and so builds for).
pub fn host_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: crate::image::host_architecture().to_string(),
        variant: None,
    }
}

/// Build the image `opts` describes.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Built, BuildError> {
    let file = opts.dockerfile_name.clone();
    let named = |e: crate::dockerfile::Error| BuildError::Dockerfile(e.in_file(file.clone()));
    let ast = crate::dockerfile::parse(&opts.dockerfile).map_err(named)?;
    for w in &ast.warnings {
        reporter.event(Event::Warning(&format!("{file}:{}: {}", w.line, w.message)));
    }
    let instructions = ins::lower(&ast).map_err(named)?;
    warn_secret_names(&instructions, &file, reporter);
    let mut plan = plan::plan(
        &instructions,
        &plan::PlanOptions {
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            platform: opts.platform.clone(),
            build_platform: host_platform(),
            escape: ast.escape,
        },
    )
    .map_err(named)?;
    add_mount_deps(&mut plan).map_err(named)?;
    let context_id = blake3::hash(
        std::fs::canonicalize(&opts.context)
            .unwrap_or_else(|_| opts.context.clone())
            .as_os_str()
            .as_encoded_bytes(),
    );
    let stat_cache_path = store.meta_path("statcache", &context_id.to_hex());
    let stages = plan.stages.len();
    let b = Build {
        store,
        opts,
        reporter,
        lexer: Lexer::new(ast.escape),
        listing: OnceLock::new(),
        context_unfiltered: OnceLock::new(),
        stat_cache: Mutex::new(StatCache::load(&stat_cache_path)),
        stat_cache_path,
        results: Mutex::new(vec![None; stages]),
        failures: Mutex::new(Vec::new()),
        done: Condvar::new(),
        slots: Semaphore::new(opts.jobs),
        steps: Mutex::new(Vec::new()),
        stage_roots: Mutex::new(HashMap::new()),
        secret_values: secret_values(&instructions, &opts.build_args),
        plan,
    };
    let needed: Vec<usize> = (0..stages).filter(|i| b.plan.needed[*i]).collect();
    std::thread::scope(|s| {
        for &i in &needed {
            let b = &b;
            s.spawn(move || {
                let r = b.run_stage(i).map_err(|e| e.to_string());
                if let Err(e) = &r {
                    lock(&b.failures).push(e.clone());
                }
                lock(&b.results)[i] = Some(r);
                b.done.notify_all();
            });
        }
    });
    // A stat cache that fails to save only costs rehashing next time.
    let _ = lock(&b.stat_cache).save(&b.stat_cache_path);
    let target = b.plan.target;
    let state = match lock(&b.results)[target].take() {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            let cause = lock(&b.failures).first().cloned().unwrap_or(e);
            return Err(BuildError::Other(cause));
        }
        None => return Err(BuildError::Other("the target stage did not run".into())),
    };
    b.finish_image(state)
}

impl Build<'_> {
    fn file(&self) -> String {
        self.opts.dockerfile_name.clone()
    }

    fn step_err(&self, l: &Located, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            file: self.file(),
            line: l.start_line,
            instruction: l.instruction.keyword().to_uppercase(),
            message: message.to_string(),
        }
    }

    /// Wait for stage `i` to finish and return its state.
    fn wait_stage(&self, i: usize) -> Result<State, String> {
        let mut results = lock(&self.results);
        loop {
            match &results[i] {
                Some(Ok(s)) => return Ok(s.clone()),
                Some(Err(_)) => {
                    return Err(format!("stage {} failed", self.plan.stages[i].display()))
                }
                None => {
                    results = match self.done.wait(results) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    }
                }
            }
        }
    }

    fn listing(&self) -> Result<Arc<Listing>, String> {
        self.listing
            .get_or_init(|| {
                let patterns = crate::context::ignore::load_for_build(
                    &self.opts.context,
                    self.opts
                        .dockerfile_path
                        .as_deref()
                        .unwrap_or(std::path::Path::new("Dockerfile")),
                )
                .map_err(|e| e.to_string())?;
                let _ = self.context_unfiltered.set(patterns.is_empty());
                let m =
                    PatternMatcher::new(&patterns).map_err(|e| format!(".dockerignore: {e}"))?;
                Listing::scan(&self.opts.context, &m)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// An image from the store, as a stage state.
    fn image_state(&self, reference: &str, line: usize) -> Result<(State, Digest), BuildError> {
        let at = |message: String| BuildError::At {
            file: self.file(),
            line,
            message: format!("{reference}: {message}"),
        };
        let found = match self.store.resolve(reference) {
            // With --pull, a registry base is checked even when the store has it (pull
            // fetches nothing when it is up to date); an image of the store alone stays.
            Ok(r) if self.opts.pull && crate::image::Reference::parse(reference).is_ok() => Err(
                crate::store::StoreError::ImageNotFound(r.config.to_string()),
            ),
            other => other,
        };
        let record = match found {
            Ok(r) => r,
            // Not in the store (or --pull): pull it, as docker does for FROM.
            Err(crate::store::StoreError::ImageNotFound(_)) => {
                let name = crate::image::Reference::parse(reference).map_err(|e| {
                    at(format!(
                        "not in the local store, and not a name to pull: {e}"
                    ))
                })?;
                let opts = crate::registry::RegistryOptions::from_env();
                let pulled = crate::registry::pull(self.store, &name, None, &opts, self.reporter)
                    .map_err(|e| {
                    at(format!(
                        "not in the local store, and pulling it failed: {e}"
                    ))
                })?;
                self.store.resolve(pulled.id.as_str())?
            }
            Err(e) => return Err(e.into()),
        };
        let manifest = self.store.read_manifest(&record.manifest.digest)?;
        let config = self.store.read_config(&manifest.config.digest)?;
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(config.rootfs.diff_ids.iter()) {
            // Builds read layers uncompressed, under their diffID.
            let size = self
                .ensure_uncompressed(desc, diff_id)
                .map_err(|e| BuildError::Other(format!("{reference}: {e}")))?;
            let d = Descriptor::new(crate::image::media::OCI_LAYER_TAR, diff_id.clone(), size);
            layers.push(Arc::new(LayerRef::local(self.store, d)));
        }
        let created = config.created.clone().unwrap_or_default();
        Ok((
            State {
                config,
                layers,
                key: [0; 32],
                args: Vec::new(),
                cmd_set: false,
                created,
            },
            manifest.config.digest.clone(),
        ))
    }

    /// Make sure the uncompressed form of a layer is in the store (images made by other
    /// tools, or loaded, may hold only a compressed blob); returns its size.
    fn ensure_uncompressed(&self, desc: &Descriptor, diff_id: &Digest) -> Result<u64, String> {
        if let Ok(size) = self.store.blob_size(diff_id) {
            return Ok(size);
        }
        let blob = self
            .store
            .open_blob(&desc.digest)
            .map_err(|e| e.to_string())?;
        let (_, mut reader) = crate::layer::decompressing_reader(std::io::BufReader::new(blob))
            .map_err(|e| format!("layer {}: {e}", desc.digest))?;
        let mut w = self.store.blob_writer().map_err(|e| e.to_string())?;
        std::io::copy(&mut reader, &mut w).map_err(|e| format!("layer {}: {e}", desc.digest))?;
        // The commit checks the bytes against the diffID the config promises.
        let info = w.commit(Some(diff_id)).map_err(|e| e.to_string())?;
        Ok(info.size)
    }

    fn run_stage(&self, idx: usize) -> Result<State, BuildError> {
        let stage = &self.plan.stages[idx];
        let total = 1 + stage.instructions.len();
        let label = |i: usize, text: &str| StepLabel {
            stage: stage.display(),
            index: i,
            total,
            text: text.to_string(),
        };
        // The FROM line names what the stage really starts from, args expanded.
        let from_text = match &stage.base {
            Base::Scratch => "FROM scratch".to_string(),
            Base::Stage(i) => format!("FROM {}", self.plan.stages[*i].display()),
            Base::Image(r) => format!("FROM {r}"),
        };
        let from_label = label(1, &from_text);
        let from_started = Instant::now();
        self.reporter.event(Event::StepStarted(&from_label));
        let mut kb = KeyBuilder::new(&[0; 32], "FROM");
        let mut st = match &stage.base {
            Base::Scratch => {
                kb.input("base image", b"scratch");
                let mut config = ImageConfig {
                    architecture: self.opts.platform.architecture.clone(),
                    os: self.opts.platform.os.clone(),
                    variant: self.opts.platform.variant.clone(),
                    ..Default::default()
                };
                config.rootfs.kind = "layers".into();
                State {
                    config,
                    layers: Vec::new(),
                    key: [0; 32],
                    args: Vec::new(),
                    cmd_set: false,
                    created: String::new(),
                }
            }
            Base::Stage(i) => {
                let s = self
                    .wait_stage(*i)
                    .map_err(|e| self.step_err(&stage.from, e))?;
                kb.input("base image", &s.key);
                State {
                    args: Vec::new(),
                    cmd_set: false,
                    ..s
                }
            }
            Base::Image(r) => {
                let (s, digest) = self.image_state(r, stage.from.start_line)?;
                kb.input("base image", digest.as_str().as_bytes());
                s
            }
        };
        let (k, from_inputs) = kb.finish();
        st.key = k;
        // A changed base explains every miss below it: say so once, at the FROM.
        let mut reported_miss = false;
        let from_identity = self.step_identity(idx, usize::MAX);
        if let Some(before) = self.read_inputs(&from_identity) {
            if let Some(reason) = key::miss_reason(&from_inputs, &before) {
                self.reporter.event(Event::CacheMiss {
                    step: &from_label,
                    reason: &reason,
                });
                reported_miss = true;
            }
        }
        self.write_inputs(&from_identity, &from_inputs);
        self.reporter.event(Event::StepDone {
            step: &from_label,
            elapsed: from_started.elapsed(),
        });
        if !st.config.config.env.iter().any(|e| e.starts_with("PATH=")) {
            st.config.config.env.insert(0, DEFAULT_PATH.to_string());
        }
        // ONBUILD triggers of the base run first, then are cleared.
        let mut steps: Vec<(Located, Option<plan::From>)> = Vec::new();
        if !st.config.config.on_build.is_empty() {
            let triggers = std::mem::take(&mut st.config.config.on_build);
            let text = triggers.join("\n") + "\n";
            let ast = crate::dockerfile::parse(&text)
                .map_err(|e| self.step_err(&stage.from, format!("ONBUILD trigger: {e}")))?;
            for mut l in ins::lower(&ast)
                .map_err(|e| self.step_err(&stage.from, format!("ONBUILD trigger: {e}")))?
            {
                l.start_line = stage.from.start_line;
                l.end_line = stage.from.end_line;
                let from = self
                    .trigger_from(idx, &l)
                    .map_err(|e| self.step_err(&stage.from, format!("ONBUILD trigger: {e}")))?;
                steps.push((l, from));
            }
        }
        steps.extend(
            stage
                .instructions
                .iter()
                .cloned()
                .zip(stage.copy_from.iter().cloned()),
        );
        let total = 1 + steps.len();
        for (n, (l, from)) in steps.iter().enumerate() {
            let lab = StepLabel {
                total,
                ..label(
                    n + 2,
                    &rmounts::redact(&l.original, &self.secret_values_ref()),
                )
            };
            let identity = self.step_identity(idx, n);
            let start = Instant::now();
            st = self.step(
                st,
                l,
                from.as_ref(),
                &lab,
                &identity,
                &mut reported_miss,
                start,
            )?;
        }
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        mut st: State,
        l: &Located,
        from: Option<&plan::From>,
        lab: &StepLabel,
        identity: &[u8; 32],
        reported_miss: &mut bool,
        start: Instant,
    ) -> Result<State, BuildError> {
        let mut instr = l.instruction.clone();
        // Expand exactly the fields BuildKit expands, with this stage's ENV and ARGs.
        {
            let env = StageEnv {
                env: &st.config.config.env,
                args: &st.args,
            };
            let line = l.start_line;
            let err = |e: crate::dockerfile::expand::ExpandError| {
                crate::dockerfile::Error::new(line, e.to_string())
            };
            instr
                .expand(&mut |w| self.lexer.process_word(w, &env).map_err(err))
                .and_then(|()| {
                    instr.expand_words(&mut |w| self.lexer.process_words(w, &env).map_err(err))
                })
                .and_then(|()| {
                    // Quotes in a heredoc body stay literal; `$` and escapes are processed.
                    let raw = self.lexer.with_skip_process_quotes(true);
                    instr.expand_heredocs(&mut |w| raw.process_word(w, &env).map_err(err))
                })
                .map_err(|e| self.step_err(l, e.message))?;
        }
        let mut kb = KeyBuilder::new(&st.key, instr.keyword());
        // ARG values in use count, named so a miss can say which one changed; they come
        // before the expanded instruction, which changes with them.
        for (k, v) in &st.args {
            if l.original.contains(k.as_str()) {
                kb.input(format!("build-arg {k}"), arg_bytes(v));
            }
        }
        kb.input("instruction", format!("{instr:?}").as_bytes());
        let mut layer_work: Option<LayerWork> = None;
        match &instr {
            Instruction::Copy(_) | Instruction::Add(_) => {
                let work = self
                    .prepare_copy(&st, l, &instr, from, &mut kb)
                    .map_err(|e| self.step_err(l, e))?;
                layer_work = Some(work);
            }
            Instruction::Workdir(w) => {
                let dir = resolve_workdir(&st.config.config.working_dir, &w.path);
                st.config.config.working_dir = dir.clone();
                kb.input("user", st.config.config.user.as_bytes());
                layer_work = Some(LayerWork::Workdir(dir));
            }
            Instruction::Run(r) => {
                let work = self
                    .prepare_run(&st, l, r, lab, &mut kb)
                    .map_err(|e| self.step_err(l, e))?;
                layer_work = Some(work);
            }
            _ => {
                self.apply_metadata(&mut st, l, &instr)
                    .map_err(|e| self.step_err(l, e))?;
                // An ARG's result is the value it takes (a build arg, the default, or
                // the global value): later steps depend on it.
                if let Instruction::Arg(a) = &instr {
                    for d in &a.args {
                        if let Some((k, v)) = st.args.iter().rev().find(|(k, _)| *k == d.name) {
                            kb.input(format!("build-arg {k}"), arg_bytes(v));
                        }
                    }
                }
            }
        }
        let (key, inputs) = kb.finish();
        let key_hex = hex(&key);
        let cached = if self.opts.no_cache {
            None
        } else {
            match self.store.cache_get(&key_hex)? {
                Some(entry) => Some(Hit::Local(Box::new(entry))),
                None => self.remote_cache_get(&key_hex)?,
            }
        };
        let (layer, created) = match cached {
            Some(Hit::Local(entry)) => {
                self.reporter.event(Event::StepCached(lab));
                // cache_get only answers entries whose blobs are here.
                let layer = entry
                    .layer
                    .map(|desc| Arc::new(LayerRef::local(self.store, desc)));
                (layer, entry.created.clone())
            }
            Some(Hit::Remote(step)) => {
                self.reporter.event(Event::StepCached(lab));
                let layer = match (&step.diff_id, &self.opts.remote_cache) {
                    (Some(diff_id), Some(remote)) => {
                        let r = Arc::new(LayerRef {
                            path: self.store.blob_path(diff_id),
                            desc: Descriptor::new(
                                crate::image::media::OCI_LAYER_TAR,
                                diff_id.clone(),
                                0,
                            ),
                            index: OnceLock::new(),
                            pending: Some(PendingLayer {
                                remote: remote.clone(),
                                store: self.store.clone(),
                                key_hex: key_hex.clone(),
                                created: step.created.clone(),
                                fetched: OnceLock::new(),
                            }),
                        });
                        if self.opts.fetch_remote_layers {
                            r.ready().map_err(|e| self.step_err(l, e))?;
                        }
                        Some(r)
                    }
                    _ => {
                        let mut entry = CacheEntry::new(None, None, serde_json::Value::Null);
                        entry.created = step.created.clone();
                        self.store.cache_put(&key_hex, &entry)?;
                        None
                    }
                };
                (layer, step.created.clone())
            }
            None => {
                if !*reported_miss {
                    if let Some(before) = self.read_inputs(identity) {
                        if let Some(reason) = key::miss_reason(&inputs, &before) {
                            self.reporter.event(Event::CacheMiss {
                                step: lab,
                                reason: &reason,
                            });
                            *reported_miss = true;
                        }
                    }
                }
                self.reporter.event(Event::StepStarted(lab));
                let _slot = self.slots.acquire();
                let layer = match layer_work {
                    Some(work) => self
                        .run_layer_work(&st, work)
                        .map_err(|e| self.step_err(l, e))?,
                    None => None,
                };
                let created = now_rfc3339(self.opts.source_date_epoch);
                let mut entry = CacheEntry::new(layer.clone(), None, serde_json::Value::Null);
                entry.created = created.clone();
                self.store.cache_put(&key_hex, &entry)?;
                self.reporter.event(Event::StepDone {
                    step: lab,
                    elapsed: start.elapsed(),
                });
                (
                    layer.map(|desc| Arc::new(LayerRef::local(self.store, desc))),
                    created,
                )
            }
        };
        self.write_inputs(identity, &inputs);
        // A remote layer not fetched is recorded with size 0: exporting a cache fetches
        // every layer first (`fetch_remote_layers`).
        let mut record = CacheEntry::new(
            layer.as_ref().map(|r| r.desc.clone()),
            None,
            serde_json::Value::Null,
        );
        record.created = created.clone();
        lock(&self.steps).push(StepRecord {
            key_hex,
            entry: record,
        });
        let created_by = self.history_text(&st, l);
        if let Some(layer) = layer {
            st.config.rootfs.diff_ids.push(layer.desc.digest.clone());
            st.layers.push(layer);
            st.config.history.push(crate::image::History {
                created: Some(created.clone()),
                created_by: Some(created_by.clone()),
                ..Default::default()
            });
        } else {
            st.config.history.push(crate::image::History {
                created: Some(created.clone()),
                created_by: Some(created_by.clone()),
                empty_layer: true,
                ..Default::default()
            });
        }
        if created > st.created {
            st.created = created;
        }
        st.key = key;
        Ok(st)
    }

    /// A step's history line: its text, with the values of secret-looking build args
    /// redacted (they would otherwise be kept in the image, e.g. an `ARG TOKEN=default`).
    fn history_text(&self, st: &State, l: &Located) -> String {
        let mut values = self.secret_values_ref();
        for (k, v) in st.args.iter().chain(self.plan.global_args.iter()) {
            if let (true, Some(v)) = (rmounts::looks_secret(k), v) {
                values.push(v);
            }
        }
        rmounts::redact(&l.original, &values)
    }

    fn secret_values_ref(&self) -> Vec<&str> {
        self.secret_values.iter().map(String::as_str).collect()
    }

    /// Where an ONBUILD trigger's `COPY --from` reads: a stage of the child's Dockerfile
    /// (defined before the child, and scheduled: the plan could not know the trigger), or
    /// an image.
    fn trigger_from(&self, idx: usize, l: &Located) -> Result<Option<plan::From>, String> {
        let Instruction::Copy(c) = &l.instruction else {
            return Ok(None);
        };
        let Some(from) = c.from.as_deref() else {
            return Ok(None);
        };
        let lower = from.to_ascii_lowercase();
        let stage = self.plan.stages.iter().position(|s| {
            s.name.as_deref() == Some(lower.as_str()) || lower == s.index.to_string()
        });
        match stage {
            Some(i) if i < idx && self.plan.needed[i] => Ok(Some(plan::From::Stage(i))),
            Some(_) => Err(format!(
                "COPY --from={from} names a stage this build does not run before {}",
                self.plan.stages[idx].display()
            )),
            None => Ok(Some(plan::From::Image(from.to_string()))),
        }
    }

    /// Which step of which build this is, across builds: the context, the Dockerfile, the
    /// stage and the position (`usize::MAX` for the FROM). The miss report compares a step's
    /// inputs with those recorded under the same identity last time.
    fn step_identity(&self, stage: usize, step: usize) -> [u8; 32] {
        *blake3::hash(
            format!(
                "{}\0{}\0{}\0{}",
                self.opts.context.display(),
                self.opts.dockerfile_name,
                stage,
                step
            )
            .as_bytes(),
        )
        .as_bytes()
    }

    /// A local miss asks the remote cache; what it answers is then cached locally. A remote
    /// that fails is only a miss (with a warning): the step can still run.
    fn remote_cache_get(&self, key_hex: &str) -> Result<Option<Hit>, BuildError> {
        let Some(remote) = &self.opts.remote_cache else {
            return Ok(None);
        };
        Ok(remote.lookup(key_hex).map(Hit::Remote))
    }

    fn read_inputs(&self, identity: &[u8; 32]) -> Option<Vec<Input>> {
        let bytes = self.store.get_meta("steps", &hex(identity))?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_inputs(&self, identity: &[u8; 32], inputs: &[Input]) {
        if self.read_inputs(identity).as_deref() == Some(inputs) {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(inputs) {
            // Only the miss report reads this: failing to save it must not fail a build.
            let _ = self.store.put_meta("steps", &hex(identity), &bytes);
        }
    }

    fn apply_metadata(
        &self,
        st: &mut State,
        l: &Located,
        instr: &Instruction,
    ) -> Result<(), String> {
        let c = &mut st.config.config;
        match instr {
            Instruction::Env(e) => {
                for kv in &e.vars {
                    ins::add_env(&mut c.env, &kv.key, &kv.value);
                }
            }
            Instruction::Label(lb) => {
                for kv in &lb.labels {
                    c.labels.insert(kv.key.clone(), kv.value.clone());
                }
            }
            Instruction::Maintainer(m) => st.config.author = Some(m.maintainer.clone()),
            Instruction::User(u) => c.user = u.user.clone(),
            Instruction::Expose(e) => {
                for p in e.exposed_ports().map_err(|e| e.message)? {
                    c.exposed_ports.insert(p.to_string(), Default::default());
                }
            }
            Instruction::Volume(v) => {
                for p in &v.volumes {
                    c.volumes.insert(p.clone(), Default::default());
                }
            }
            Instruction::Stopsignal(s) => c.stop_signal = s.signal.clone(),
            Instruction::Shell(s) => c.shell = s.shell.clone(),
            Instruction::Cmd(cmd) => {
                c.cmd = Some(self.command_of(&cmd.command, &c.shell));
                st.cmd_set = true;
            }
            Instruction::Entrypoint(e) => {
                c.entrypoint = Some(self.command_of(&e.command, &c.shell));
                // An ENTRYPOINT resets a CMD inherited from the base, not one set here.
                if !st.cmd_set {
                    c.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => {
                let ns = |d: Option<std::time::Duration>| {
                    d.map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
                        .unwrap_or(0)
                };
                let mut hc = crate::image::Healthcheck {
                    test: h.test(),
                    ..Default::default()
                };
                if let ins::HealthcheckCommand::Check(chk) = h {
                    hc.interval = ns(chk.interval);
                    hc.timeout = ns(chk.timeout);
                    hc.start_period = ns(chk.start_period);
                    hc.start_interval = ns(chk.start_interval);
                    hc.retries = chk.retries.map(i64::from).unwrap_or(0);
                }
                c.healthcheck = Some(hc);
            }
            Instruction::Onbuild(o) => c.on_build.push(o.expression.clone()),
            Instruction::Arg(a) => {
                for decl in &a.args {
                    let name = decl.name.clone();
                    let value = match self.opts.build_args.get(&name) {
                        Some(v) => Some(v.clone()),
                        // Defaults were expanded with the rest of the instruction.
                        None => match &decl.default {
                            Some(d) => Some(d.clone()),
                            None => self
                                .plan
                                .global_args
                                .iter()
                                .rev()
                                .find(|(k, _)| *k == name)
                                .and_then(|(_, v)| v.clone())
                                .or_else(|| self.plan.builtin_args.get(&name).cloned()),
                        },
                    };
                    st.args.push((name, value));
                }
            }
            other => {
                return Err(format!(
                    "{} is not supported here (line {})",
                    other.keyword(),
                    l.start_line
                ))
            }
        }
        Ok(())
    }

    fn command_of(&self, form: &ins::CommandForm, shell: &[String]) -> Vec<String> {
        match form {
            ins::CommandForm::Exec(v) => v.clone(),
            ins::CommandForm::Shell(s) => {
                let mut v: Vec<String> = if shell.is_empty() {
                    vec!["/bin/sh".into(), "-c".into()]
                } else {
                    shell.to_vec()
                };
                v.push(s.clone());
                v
            }
        }
    }

    fn finish_image(&self, st: State) -> Result<Built, BuildError> {
        let mut config = st.config;
        for (k, v) in &self.opts.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        config.created = Some(if let Some(sde) = self.opts.source_date_epoch {
            crate::image::timestamp::rfc3339_from_unix(sde.max(0) as u64, 0)
        } else if st.created.is_empty() {
            now_rfc3339(None)
        } else {
            st.created.clone()
        });
        let layers: Vec<Descriptor> = st
            .layers
            .iter()
            .map(|l| l.descriptor())
            .collect::<Result<_, _>>()
            .map_err(BuildError::Other)?;
        let (manifest, config_digest) = self.store.put_image(&config, &layers)?;
        for t in &self.opts.tags {
            self.store.tag(t, &manifest)?;
        }
        if self.opts.tags.is_empty() {
            // An untagged build is still an image (`kiln images` shows it as <none>).
            self.store.keep_untagged(&manifest)?;
        }
        Ok(Built {
            manifest,
            config_digest,
            config,
            steps: std::mem::take(&mut *lock(&self.steps)),
        })
    }
}

/// Warn about ARG and ENV names that look like they hold secrets (BuildKit's
/// SecretsUsedInArgOrEnv): their values end up in the image's history or config.
fn warn_secret_names(instructions: &[Located], file: &str, reporter: &dyn Reporter) {
    for l in instructions {
        let line = l.start_line;
        match &l.instruction {
            Instruction::Arg(a) => {
                for d in a.args.iter().filter(|d| rmounts::looks_secret(&d.name)) {
                    reporter.event(Event::Warning(&format!(
                        "{file}:{line}: ARG {} looks like a secret: build args are visible in the image history; use --secret",
                        d.name
                    )));
                }
            }
            Instruction::Env(e) => {
                for kv in e.vars.iter().filter(|kv| rmounts::looks_secret(&kv.key)) {
                    reporter.event(Event::Warning(&format!(
                        "{file}:{line}: ENV {} looks like a secret: ENV values are stored in the image config; use --secret",
                        kv.key
                    )));
                }
            }
            _ => {}
        }
    }
}

/// Values to redact: those of secret-looking build args given to the build, and the
/// defaults such ARGs are declared with.
fn secret_values(instructions: &[Located], build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut values: Vec<String> = build_args
        .iter()
        .filter(|(k, _)| rmounts::looks_secret(k))
        .map(|(_, v)| v.clone())
        .collect();
    for l in instructions {
        if let Instruction::Arg(a) = &l.instruction {
            for d in a.args.iter().filter(|d| rmounts::looks_secret(&d.name)) {
                values.extend(d.default.clone());
            }
        }
    }
    values
}

/// An ARG's value as a key input; unset differs from empty.
fn arg_bytes(v: &Option<String>) -> &[u8] {
    v.as_deref().map(str::as_bytes).unwrap_or(b"\0unset")
}

/// A downloaded file as a top-level source (mode 0600, as docker gives remote files).
fn download_item(dl: &add::Downloaded, url: &str) -> copy::Selected {
    copy::Selected {
        entry: SrcEntry {
            path: dl.name.clone(),
            kind: SrcKind::File(Data::Disk(dl.path.to_path_buf())),
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: dl.size,
            mtime: 0,
        },
        rel: String::new(),
        source: url.to_string(),
        name: dl.name.clone(),
    }
}

/// What COPY and ADD have in common.
struct CopySpec<'a> {
    sources: &'a ins::Sources,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    parents: bool,
    excludes: &'a [String],
    add: Option<&'a ins::AddCommand>,
}

impl<'a> CopySpec<'a> {
    fn of(i: &'a Instruction) -> Option<Self> {
        Some(match i {
            Instruction::Copy(c) => CopySpec {
                sources: &c.sources,
                chown: c.chown.as_deref(),
                chmod: c.chmod.as_deref(),
                link: c.link,
                parents: c.parents,
                excludes: &c.excludes,
                add: None,
            },
            Instruction::Add(c) => CopySpec {
                sources: &c.sources,
                chown: c.chown.as_deref(),
                chmod: c.chmod.as_deref(),
                link: c.link,
                parents: false,
                excludes: &c.excludes,
                add: Some(c),
            },
            _ => return None,
        })
    }
}

/// What a COPY --from selects in a stage; done when the step runs.
struct StageSelect {
    layers: Vec<Arc<LayerRef>>,
    name: String,
    paths: Vec<String>,
    parents: bool,
    exclude: Option<PatternMatcher>,
}

impl StageSelect {
    fn select(&self) -> Result<Selection, String> {
        let view = State::view_of(&self.layers)?;
        let fs = ViewFs {
            view: &view,
            name: self.name.clone(),
        };
        copy::select(&fs, &self.paths, self.parents, self.exclude.as_ref()).map_err(|e| match e {
            copy::CopyError::NotFoundInStage(p, _) => format!("\"{p}\" not found in {}", self.name),
            e => e.to_string(),
        })
    }
}

/// A step's filesystem work, decided before its cache lookup and done only on a miss.
enum LayerWork {
    Copy {
        selection: Selection,
        /// COPY --from: what to select from the stage, before `selection`.
        from_stage: Option<StageSelect>,
        dest: String,
        chown: Option<String>,
        chmod: Option<Chmod>,
        /// ADD: indexes of selected top-level files that are archives to unpack.
        archives: Vec<usize>,
        /// ADD: URLs with a --checksum, fetched only when the step runs.
        fetch: Vec<(String, Digest)>,
        /// Downloads made while keying the step; removed when the work is dropped.
        temps: Vec<tempfile::TempPath>,
    },
    Workdir(String),
    /// RUN: the command in a container on the stage's layers; its changes are the layer.
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        network: crate::runtime::Network,
        /// Heredoc scripts run as files (`#!`), at /dev/pipes/NAME.
        pipes: Vec<super::run::PipeFile>,
        mounts: Vec<MountPlan>,
        label: StepLabel,
    },
}

fn resolve_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else if current.is_empty() {
        format!("/{path}")
    } else {
        format!("{current}/{path}")
    };
    format!("/{}", crate::layer::index::clean(&joined))
}

impl Build<'_> {
    /// Select what a COPY/ADD reads and add it to the key.
    fn prepare_copy(
        &self,
        st: &State,
        l: &Located,
        instr: &Instruction,
        from: Option<&plan::From>,
        kb: &mut KeyBuilder,
    ) -> Result<LayerWork, String> {
        let c = CopySpec::of(instr).ok_or("not a COPY or ADD")?;
        let chmod = c
            .chmod
            .map(Chmod::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        let exclude = if c.excludes.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(c.excludes).map_err(|e| e.to_string())?)
        };
        let (urls, paths): (Vec<String>, Vec<String>) = c
            .sources
            .paths
            .iter()
            .cloned()
            .partition(|p| add::is_url(p));
        if c.add.is_none() && !urls.is_empty() {
            return Err("source can't be a URL for COPY".into());
        }
        let checksum = match c.add.and_then(|a| a.checksum.as_deref()) {
            Some(sum) => {
                if !paths.is_empty() || urls.len() != 1 {
                    return Err("checksum requires HTTP(S) or Git sources".into());
                }
                Some(add::parse_checksum(sum)?)
            }
            None => None,
        };
        let mut deferred = None;
        let mut selection = match from {
            None => {
                let listing = self.listing()?;
                let fs = ContextFs { listing: &listing };
                let sel = copy::select(&fs, &paths, c.parents, exclude.as_ref())
                    .map_err(|e| e.to_string())?;
                // Hash exactly the context files this step reads.
                let entries: Vec<&crate::context::walk::Entry> = sel
                    .items
                    .iter()
                    .filter_map(|s| listing.get(&s.entry.path))
                    .collect();
                let (hashes, _) = {
                    let mut cache = lock(&self.stat_cache);
                    hash_files(&listing, &entries, &mut cache).map_err(|e| e.to_string())?
                };
                let mut set = blake3::Hasher::new();
                for s in &sel.items {
                    set.update(s.rel.as_bytes());
                    set.update(b"\0");
                    set.update(s.name.as_bytes());
                    set.update(b"\0");
                    set.update(&s.entry.mode.to_le_bytes());
                    match &s.entry.kind {
                        SrcKind::File(_) => {
                            let h = hashes
                                .get(&s.entry.path)
                                .map(|h| *h.as_bytes())
                                .unwrap_or([0; 32]);
                            set.update(&h);
                            kb.detail(format!("file {}", s.entry.path), &h);
                        }
                        SrcKind::Dir => {
                            set.update(b"d");
                        }
                        SrcKind::Symlink(t) => {
                            set.update(b"l");
                            set.update(t.as_bytes());
                        }
                    }
                }
                kb.hidden("context files", set.finalize().as_bytes());
                sel
            }
            Some(f) => {
                let (state, name) = match f {
                    plan::From::Stage(i) => (self.wait_stage(*i)?, self.plan.stages[*i].display()),
                    plan::From::Image(r) => {
                        let (s, d) = self
                            .image_state(r, l.start_line)
                            .map_err(|e| e.to_string())?;
                        let mut s = s;
                        s.key = *blake3::hash(d.as_str().as_bytes()).as_bytes();
                        (s, r.clone())
                    }
                };
                // The stage's key stands for all of its content: what is selected from it
                // is found when the step runs, so a hit reads none of the stage's layers
                // (nor fetches them from a remote cache).
                kb.input(format!("stage {name}"), &state.key);
                deferred = Some(StageSelect {
                    layers: state.layers.clone(),
                    name,
                    paths: paths.clone(),
                    parents: c.parents,
                    exclude: exclude.clone(),
                });
                Selection::default()
            }
        };
        // Heredoc sources are inline files named after their delimiter (bodies already
        // expanded with the instruction).
        for h in &c.sources.contents {
            kb.input(format!("heredoc {}", h.path), h.data.as_bytes());
            selection.items.push(copy::Selected {
                entry: SrcEntry {
                    path: h.path.clone(),
                    size: h.data.len() as u64,
                    kind: SrcKind::File(Data::Bytes(Arc::new(h.data.clone().into_bytes()))),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                },
                rel: String::new(),
                source: h.path.clone(),
                name: h.path.clone(),
            });
        }
        selection.sources += c.sources.contents.len() + urls.len();
        // ADD: URLs (fetched now, or when the step runs if a checksum names the content)
        // and local archives (unpacked when the step runs).
        let mut fetch = Vec::new();
        let mut temps = Vec::new();
        let mut archives = Vec::new();
        if let Some(a) = c.add {
            let tmp = self.store.root().join("tmp");
            for u in &urls {
                match &checksum {
                    Some(d) => {
                        kb.input(format!("url {u}"), d.as_str().as_bytes());
                        fetch.push((u.clone(), d.clone()));
                    }
                    None => {
                        let dl = add::download(u, None, &tmp)?;
                        kb.input(format!("url {u}"), dl.sha256.as_str().as_bytes());
                        selection.items.push(download_item(&dl, u));
                        temps.push(dl.path);
                    }
                }
            }
            if a.unpack != Some(false) {
                for (i, s) in selection.items.iter().enumerate() {
                    if let (true, SrcKind::File(Data::Disk(p))) = (s.rel.is_empty(), &s.entry.kind)
                    {
                        if from.is_none() && !temps.iter().any(|t| **t == **p) && add::is_archive(p)
                        {
                            archives.push(i);
                        }
                    }
                }
                kb.input("unpack", format!("{archives:?}").as_bytes());
            }
        }
        kb.input("destination", c.sources.dest.as_bytes());
        kb.input("workdir", st.config.config.working_dir.as_bytes());
        kb.input(
            "flags",
            format!(
                "chown={:?} chmod={:?} parents={} link={} exclude={:?}",
                c.chown, c.chmod, c.parents, c.link, c.excludes
            )
            .as_bytes(),
        );
        Ok(LayerWork::Copy {
            selection,
            from_stage: deferred,
            dest: c.sources.dest.clone(),
            chown: c.chown.map(str::to_string),
            chmod,
            archives,
            fetch,
            temps,
        })
    }

    /// Do a step's filesystem work: write its layer into the store.
    fn run_layer_work(&self, st: &State, work: LayerWork) -> Result<Option<Descriptor>, String> {
        let view = st.view()?;
        let passwd = || view.read_file("/etc/passwd").ok().flatten();
        let group = || view.read_file("/etc/group").ok().flatten();
        let items: Vec<Item> = match work {
            LayerWork::Copy {
                mut selection,
                from_stage,
                dest,
                chown,
                chmod,
                archives,
                fetch,
                temps: _temps,
            } => {
                if let Some(stage) = from_stage {
                    let mut sel = stage.select()?;
                    sel.items.append(&mut selection.items);
                    sel.sources += selection.sources;
                    sel.dest_is_dir |= selection.dest_is_dir;
                    selection = sel;
                }
                let tmp = self.store.root().join("tmp");
                let mut fetched = Vec::new();
                for (url, digest) in &fetch {
                    let dl = add::download(url, Some(digest), &tmp)?;
                    selection.items.push(download_item(&dl, url));
                    fetched.push(dl.path);
                }
                // Each archive is replaced by its entries, laid out under the destination.
                let mut unpacked = Vec::new();
                for &i in archives.iter().rev() {
                    let SrcKind::File(Data::Disk(p)) = &selection.items[i].entry.kind else {
                        continue;
                    };
                    let u = add::unpack(p, &tmp)?;
                    let fs = ViewFs {
                        view: &u.view,
                        name: p.display().to_string(),
                    };
                    let entries = copy::SourceFs::walk(&fs, "").map_err(|e| e.to_string())?;
                    let source = selection.items[i].source.clone();
                    let items: Vec<copy::Selected> = entries
                        .into_iter()
                        .map(|e| copy::Selected {
                            rel: e.path.clone(),
                            name: crate::layer::index::name_of(&e.path).to_string(),
                            entry: e,
                            source: source.clone(),
                        })
                        .collect();
                    selection.items.splice(i..=i, items);
                    selection.dest_is_dir = true;
                    unpacked.push(u);
                }
                let owner = match chown {
                    Some(spec) if !spec.is_empty() => Some(
                        copy::resolve_chown(&spec, passwd().as_deref(), group().as_deref())
                            .map_err(|e| e.to_string())?,
                    ),
                    _ => None,
                };
                let how = Placement {
                    dest: &dest,
                    workdir: if st.config.config.working_dir.is_empty() {
                        "/"
                    } else {
                        &st.config.config.working_dir
                    },
                    chown: owner,
                    chmod: chmod.as_ref(),
                    created_mtime: self.opts.source_date_epoch.unwrap_or(0).max(0) as u64,
                };
                let items = copy::place(&selection, &how, &view).map_err(|e| e.to_string())?;
                // The unpacked archives and downloads are read while the layer is written.
                let layer = self.write_layer(&items);
                drop((unpacked, fetched));
                return layer.map(Some);
            }
            LayerWork::Run {
                argv,
                env,
                network,
                pipes,
                mounts,
                label,
            } => {
                return self
                    .run_command(st, argv, env, network, pipes, mounts, &label)
                    .map(Some)
            }
            LayerWork::Workdir(dir) => {
                let path = crate::layer::index::clean(&dir);
                if path.is_empty()
                    || view
                        .resolve(&path, true)
                        .map_err(|e| e.to_string())?
                        .is_some()
                {
                    return Ok(None);
                }
                // Created owned by the current USER, as BuildKit does.
                let user = &st.config.config.user;
                let owner = if user.is_empty() {
                    copy::Owner { uid: 0, gid: 0 }
                } else {
                    copy::resolve_chown(user, passwd().as_deref(), group().as_deref())
                        .unwrap_or(copy::Owner { uid: 0, gid: 0 })
                };
                let sel = Selection {
                    items: Vec::new(),
                    dest_is_dir: true,
                    sources: 0,
                };
                let how = Placement {
                    dest: &format!("/{path}/"),
                    workdir: "/",
                    chown: Some(owner),
                    chmod: None,
                    created_mtime: self.opts.source_date_epoch.unwrap_or(0).max(0) as u64,
                };
                copy::place(&sel, &how, &view).map_err(|e| e.to_string())?
            }
        };
        self.write_layer(&items).map(Some)
    }

    /// The command, environment and network of a RUN, and their part of the key.
    fn prepare_run(
        &self,
        st: &State,
        l: &Located,
        r: &ins::RunCommand,
        lab: &StepLabel,
        kb: &mut KeyBuilder,
    ) -> Result<LayerWork, String> {
        if !r.devices.is_empty() {
            return Err("RUN --device is not supported".into());
        }
        // A RUN's own --network wins; `default` is the build's (`kiln build --network`).
        let requested = match r.network {
            ins::Network::Default => self.opts.network,
            own => own,
        };
        let network = match requested {
            ins::Network::None => crate::runtime::Network::None,
            // The default is the host's network, as BuildKit's: rootless installs need no tun.
            ins::Network::Default | ins::Network::Host => crate::runtime::Network::Host,
        };
        let mounts = self.prepare_mounts(st, r, kb)?;
        let c = &st.config.config;
        let (argv, pipes) = match (&r.command, r.files.is_empty()) {
            (_, true) => (self.command_of(&r.command, &c.shell), Vec::new()),
            (ins::CommandForm::Shell(text), false) => {
                let shell = if c.shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    c.shell.clone()
                };
                super::run::heredoc_argv(&shell, text, &r.files)
            }
            (ins::CommandForm::Exec(_), false) => {
                return Err("heredocs need the shell form of RUN".into());
            }
        };
        for p in &pipes {
            kb.input(format!("heredoc {}", p.name), &p.data);
        }
        // Every build arg of the stage is in the command's environment, so every one counts
        // (those named in the text were keyed already); ENV wins over an ARG of its name.
        let mut env = c.env.clone();
        for (k, v) in &st.args {
            if !l.original.contains(k.as_str()) {
                kb.input(format!("build-arg {k}"), arg_bytes(v));
            }
            if let Some(v) = v {
                if !env
                    .iter()
                    .any(|e| e.split_once('=').map(|p| p.0) == Some(k))
                {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        kb.input("env", env.join("\0").as_bytes());
        kb.input("user", c.user.as_bytes());
        kb.input("workdir", c.working_dir.as_bytes());
        kb.input("network", format!("{network:?}").as_bytes());
        Ok(LayerWork::Run {
            argv,
            env,
            network,
            pipes,
            mounts,
            label: lab.clone(),
        })
    }

    /// Run a RUN's command on the stage's layers and write the overlay upper dir as a layer.
    #[allow(clippy::too_many_arguments)]
    fn run_command(
        &self,
        st: &State,
        argv: Vec<String>,
        mut env: Vec<String>,
        network: crate::runtime::Network,
        pipes: Vec<super::run::PipeFile>,
        mounts: Vec<MountPlan>,
        label: &StepLabel,
    ) -> Result<Descriptor, String> {
        use crate::runtime;
        let ids = runtime::host_id_plan();
        if let Some(w) = &ids.warning {
            self.reporter.event(Event::Warning(w));
        }
        let mut lowers = Vec::with_capacity(st.layers.len());
        for layer in st.layers.iter().rev() {
            lowers.push(
                runtime::ensure_lower(self.store, &ids, &layer.desc.digest, layer.tar()?)
                    .map_err(|e| e.to_string())?,
            );
        }
        let view = st.view()?;
        let passwd = view.read_file("/etc/passwd").ok().flatten();
        let group = view.read_file("/etc/group").ok().flatten();
        let text =
            |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        let user = runtime::resolve_user(
            &st.config.config.user,
            text(&passwd).as_deref(),
            text(&group).as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let tmp = self.store.root().join("tmp");
        let scratch = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let layer_tar = scratch.path().join("layer.tar");
        // Dropped after the command: temporary trees, cache locks, secret files.
        let (mounts, _holds) = self.materialize_mounts(mounts, &mut env, &ids)?;
        let spec = runtime::RunSpec {
            lowers,
            scratch: scratch.path().to_path_buf(),
            argv: argv.clone(),
            env,
            cwd: st.config.config.working_dir.clone(),
            user,
            network,
            hostname: String::new(),
            ids,
            layer_tar: Some(layer_tar.clone()),
            pipes: pipes
                .into_iter()
                .map(|p| (p.name, p.data, p.mode))
                .collect(),
            mounts,
            source_date_epoch: self.opts.source_date_epoch,
            confine: runtime::Confinement {
                isolation: self.opts.isolation,
                ..runtime::Confinement::default()
            },
            ports: Vec::new(),
            volume_fills: Vec::new(),
            readonly_root: false,
        };
        let mut pending: Vec<u8> = Vec::new();
        let emit = |line: &[u8]| {
            let line = String::from_utf8_lossy(line);
            self.reporter.event(Event::StepOutput {
                step: label,
                line: line.trim_end_matches('\r'),
            });
        };
        let code = runtime::run(&spec, &mut |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                emit(&line[..line.len() - 1]);
            }
        })
        .map_err(|e| e.to_string())?;
        if !pending.is_empty() {
            emit(&pending);
        }
        if code != 0 {
            return Err(format!(
                "process \"{}\" did not complete successfully: exit code: {code}",
                argv.join(" ")
            ));
        }
        let mut tar =
            std::fs::File::open(&layer_tar).map_err(|e| format!("{}: {e}", layer_tar.display()))?;
        let mut w = self.store.blob_writer().map_err(|e| e.to_string())?;
        std::io::copy(&mut tar, &mut w).map_err(|e| format!("{}: {e}", layer_tar.display()))?;
        let info = w.commit(None).map_err(|e| e.to_string())?;
        Ok(info.descriptor(crate::image::media::OCI_LAYER_TAR))
    }

    fn write_layer(&self, items: &[Item]) -> Result<Descriptor, String> {
        use crate::layer::{EntryMeta, LayerBuilder};
        let writer = self.store.blob_writer().map_err(|e| e.to_string())?;
        let mut b = LayerBuilder::new(
            writer,
            crate::layer::BuildOptions {
                source_date_epoch: self.opts.source_date_epoch,
            },
        );
        for it in items {
            let meta = EntryMeta {
                mode: it.mode,
                uid: it.uid as u32,
                gid: it.gid as u32,
                mtime: it.mtime as i64,
                xattrs: Default::default(),
            };
            let p = Path::new(&it.path);
            let r = match &it.kind {
                SrcKind::Dir => b.append_dir(p, &meta),
                SrcKind::Symlink(t) => b.append_symlink(p, &meta, Path::new(t)),
                SrcKind::File(Data::Disk(src)) => b.append_file_from_path(p, &meta, src),
                SrcKind::File(Data::Bytes(bytes)) => {
                    b.append_file(p, &meta, bytes.len() as u64, &bytes[..])
                }
                SrcKind::File(Data::Tar { tar, offset, size }) => {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut f =
                        std::fs::File::open(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
                    f.seek(SeekFrom::Start(*offset))
                        .map_err(|e| format!("{}: {e}", tar.display()))?;
                    b.append_file(p, &meta, *size, f.take(*size))
                }
            };
            r.map_err(|e| e.to_string())?;
        }
        let (writer, _digested) = b.finish().map_err(|e| e.to_string())?;
        let info = writer.commit(None).map_err(|e| e.to_string())?;
        Ok(info.descriptor(crate::image::media::OCI_LAYER_TAR))
    }
}

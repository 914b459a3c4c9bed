//! `RUN --mount` in the executor: what each mount binds and its part of the step's key
//! (prepared before the cache lookup), and the host side of each mount made when the step
//! runs. The host-side helpers (trees, caches, secrets) are in [`crate::build::mounts`].

use super::*;

/// The stage a `--mount` `from=` names: by name (case-insensitive) or index, else an image.
fn mount_stage(plan: &Plan, from: &str) -> Option<usize> {
    let lower = from.to_ascii_lowercase();
    plan.stages
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| {
            lower
                .parse::<usize>()
                .ok()
                .filter(|i| *i < plan.stages.len())
        })
}

/// The `from=` of a RUN mount, read without expansion (BuildKit allows no variable there).
fn mount_from(m: &ins::RunMount) -> Option<String> {
    let parsed = match &m.mount {
        Some(p) => p.clone(),
        None => ins::parse_mount_with(&m.spec, &mut |v| Ok(v.to_string())).ok()?,
    };
    match parsed {
        ins::Mount::Bind(b) => b.from,
        ins::Mount::Cache(c) => c.from,
        _ => None,
    }
}

/// Stages that `RUN --mount=from=STAGE` reads become dependencies, as COPY --from's are,
/// and are built when the stage that reads them is.
pub(super) fn add_mount_deps(plan: &mut Plan) -> Result<(), crate::dockerfile::Error> {
    for si in 0..plan.stages.len() {
        let mut deps = Vec::new();
        for l in &plan.stages[si].instructions {
            let Instruction::Run(r) = &l.instruction else {
                continue;
            };
            for m in &r.mounts {
                let Some(from) = mount_from(m) else { continue };
                match mount_stage(plan, &from) {
                    Some(t) if t == si => {
                        return Err(crate::dockerfile::Error::new(
                            l.start_line,
                            format!(
                                "circular dependency detected on stage: {}",
                                plan.stages[si].display()
                            ),
                        ))
                    }
                    Some(t) if t > si => {
                        return Err(crate::dockerfile::Error::new(
                            l.start_line,
                            format!(
                                "cannot mount from stage {from:?}, it needs to be defined before current stage {:?}",
                                plan.stages[si].display()
                            ),
                        ))
                    }
                    Some(t) => deps.push(t),
                    None => {}
                }
            }
        }
        for t in deps {
            if !plan.stages[si].deps.contains(&t) {
                plan.stages[si].deps.push(t);
            }
        }
    }
    let mut needed = vec![false; plan.stages.len()];
    let mut todo = vec![plan.target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        todo.extend(plan.stages[i].deps.iter().copied());
    }
    plan.needed = needed;
    Ok(())
}

/// What keeps a RUN's mount sources alive (temporary trees, cache locks, secret files)
/// until the command is done.
pub(super) type Holds = Vec<Box<dyn std::any::Any>>;

/// The root a `RUN --mount=from=` reads: a stage or image, by its layers.
#[derive(Debug, Clone)]
pub(super) struct MountRoot {
    name: String,
    key: Key,
    /// diffID and uncompressed tar of each layer, bottom first.
    layers: Vec<(Digest, PathBuf)>,
}

/// One `RUN --mount`, decided before the cache lookup and made only when the step runs.
pub(super) enum MountPlan {
    /// Files of the context (`.dockerignore` applied) at or below `source`.
    Context {
        target: String,
        source: String,
        readonly: bool,
    },
    /// `source` inside a stage's or image's root.
    Root {
        target: String,
        root: MountRoot,
        source: String,
        readonly: bool,
    },
    Cache {
        target: String,
        id: String,
        sharing: ins::CacheSharing,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        seed: Option<(MountRoot, String)>,
    },
    Tmpfs {
        target: String,
        size: u64,
    },
    Secret {
        id: String,
        /// No file when only an env variable was asked for.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Hash the entry at `path` of a view (named `rel` below the hashed root) and what it holds.
fn hash_view_tree(
    view: &View,
    path: &str,
    rel: &str,
    h: &mut blake3::Hasher,
) -> Result<(), String> {
    use crate::layer::index::Kind as K;
    let Some(found) = view.resolve(path, false).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let m = found.meta;
    h.update(rel.as_bytes());
    h.update(b"\0");
    h.update(&m.mode.to_le_bytes());
    h.update(&m.uid.to_le_bytes());
    h.update(&m.gid.to_le_bytes());
    match &m.kind {
        K::File | K::Hardlink(_) => {
            h.update(b"f");
            let mut data = view.open(&found).map_err(|e| e.to_string())?;
            let mut fh = blake3::Hasher::new();
            std::io::copy(&mut data, &mut fh).map_err(|e| format!("{path}: {e}"))?;
            h.update(fh.finalize().as_bytes());
        }
        K::Dir => {
            h.update(b"d");
            for name in view.read_dir(path) {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                let child_rel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                hash_view_tree(view, &child, &child_rel, h)?;
            }
        }
        K::Symlink(t) => {
            h.update(b"l");
            h.update(t.as_bytes());
        }
        K::Char(a, b) | K::Block(a, b) => {
            h.update(format!("c{a}:{b}").as_bytes());
        }
        K::Fifo => {
            h.update(b"p");
        }
    }
    Ok(())
}

/// `source` resolved inside an unpacked root (symlinks cannot leave it).
fn in_root(s: &Scratch, source: &str, name: &str) -> Result<PathBuf, String> {
    let root = s.path().join("rootfs");
    crate::runtime::mounts::resolve_in_root(&root, source)
        .map_err(|_| format!("\"/{source}\" not found in {name}"))
}

impl Build<'_> {
    /// What each `--mount` of a RUN binds, and its part of the key: the content of what a
    /// bind reads; a cache's id and sharing; never a secret's value.
    pub(super) fn prepare_mounts(
        &self,
        st: &State,
        r: &ins::RunCommand,
        kb: &mut KeyBuilder,
    ) -> Result<Vec<MountPlan>, String> {
        let workdir = &st.config.config.working_dir;
        let target_of = |t: &str| resolve_workdir(workdir, t);
        let mut plans = Vec::new();
        for m in &r.mounts {
            let parsed = match &m.mount {
                Some(p) => p.clone(),
                None => ins::parse_mount(&m.spec).map_err(|e| e.message)?,
            };
            match parsed {
                ins::Mount::Bind(b) => {
                    let target = target_of(&b.target);
                    let source = crate::layer::index::clean(b.source.as_deref().unwrap_or(""));
                    let plan = match b.from.as_deref() {
                        None => {
                            let digest = self.context_subtree_digest(&source, kb)?;
                            kb.input(
                                format!("mount {target} context {source}"),
                                format!("{digest} ro={}", b.readonly).as_bytes(),
                            );
                            MountPlan::Context {
                                target,
                                source,
                                readonly: b.readonly,
                            }
                        }
                        Some(from) => {
                            let (root, state) = self.mount_root(from)?;
                            // The content of what is bound, not the stage's history: a
                            // rebuilt stage with the same files keeps the step cached.
                            let digest = self.stage_subtree_digest(&state, &root, &source)?;
                            kb.input(
                                format!("mount {target} from {}", root.name),
                                format!("{digest} {source} ro={}", b.readonly).as_bytes(),
                            );
                            MountPlan::Root {
                                target,
                                root,
                                source,
                                readonly: b.readonly,
                            }
                        }
                    };
                    plans.push(plan);
                }
                ins::Mount::Cache(c) => {
                    let target = target_of(&c.target);
                    let id = c.cache_id().to_string();
                    let seed = match c.from.as_deref() {
                        Some(from) => Some(self.mount_root(from)?.0),
                        None => None,
                    };
                    kb.input(
                        format!("mount {target} cache"),
                        format!("id={id} sharing={:?} ro={}", c.sharing, c.readonly).as_bytes(),
                    );
                    plans.push(MountPlan::Cache {
                        target,
                        id,
                        sharing: c.sharing,
                        readonly: c.readonly,
                        mode: c.mode.unwrap_or(0o755),
                        uid: c.uid.unwrap_or(0),
                        gid: c.gid.unwrap_or(0),
                        seed: seed.map(|s| {
                            (
                                s,
                                crate::layer::index::clean(c.source.as_deref().unwrap_or("")),
                            )
                        }),
                    });
                }
                ins::Mount::Tmpfs(t) => {
                    let target = target_of(&t.target);
                    kb.input(
                        format!("mount {target} tmpfs"),
                        format!("size={:?}", t.size).as_bytes(),
                    );
                    plans.push(MountPlan::Tmpfs {
                        target,
                        size: t.size.unwrap_or(0),
                    });
                }
                ins::Mount::Secret(sec) => {
                    let id = sec
                        .secret_id()
                        .ok_or("a secret mount needs an id= (or a target to name it)")?
                        .to_string();
                    // A secret only named as an env variable gets no file, unless a target
                    // is also given (BuildKit).
                    let target = match (&sec.target, &sec.env) {
                        (Some(t), _) => Some(target_of(t)),
                        (None, Some(_)) => None,
                        (None, None) => Some(format!("/run/secrets/{id}")),
                    };
                    // Only where it goes counts, never its content: a changed secret does
                    // not re-run the step.
                    kb.input(
                        format!("mount secret {id}"),
                        format!("target={target:?} env={:?}", sec.env).as_bytes(),
                    );
                    plans.push(MountPlan::Secret {
                        id,
                        target,
                        env: sec.env.clone(),
                        required: sec.required,
                        mode: sec.mode.unwrap_or(0o400),
                        uid: sec.uid.unwrap_or(0),
                        gid: sec.gid.unwrap_or(0),
                    });
                }
                ins::Mount::Ssh(_) => {
                    return Err(
                        "RUN --mount=type=ssh is not supported (kiln forwards no SSH agent); use a secret mount for a key"
                            .into(),
                    )
                }
            }
        }
        Ok(plans)
    }

    /// blake3 over the context entries at or below `source`, as COPY hashes its sources; each
    /// file is also a detail for the miss report.
    fn context_subtree_digest(&self, source: &str, kb: &mut KeyBuilder) -> Result<String, String> {
        let listing = self.listing()?;
        if !source.is_empty() && listing.get(source).is_none() {
            return Err(format!("\"{source}\" not found in build context"));
        }
        let entries: Vec<&crate::context::walk::Entry> = listing.subtree(source).collect();
        let files: Vec<&crate::context::walk::Entry> = entries
            .iter()
            .copied()
            .filter(|e| e.kind == crate::context::walk::Kind::File)
            .collect();
        let (hashes, _) = {
            let mut cache = lock(&self.stat_cache);
            hash_files(&listing, &files, &mut cache).map_err(|e| e.to_string())?
        };
        let mut set = blake3::Hasher::new();
        for e in entries {
            set.update(e.path.as_bytes());
            set.update(b"\0");
            set.update(&(e.mode & 0o7777).to_le_bytes());
            match &e.kind {
                crate::context::walk::Kind::File => {
                    let h = hashes
                        .get(&e.path)
                        .map(|h| *h.as_bytes())
                        .unwrap_or([0; 32]);
                    set.update(b"f");
                    set.update(&h);
                    kb.detail(format!("file {}", e.path), &h);
                }
                crate::context::walk::Kind::Dir => {
                    set.update(b"d");
                }
                crate::context::walk::Kind::Symlink(t) => {
                    set.update(b"l");
                    set.update(t.as_os_str().as_encoded_bytes());
                }
                crate::context::walk::Kind::Other => {
                    set.update(b"o");
                }
            }
        }
        Ok(set.finalize().to_hex().to_string())
    }

    /// blake3 over the tree at `source` in a stage (symlinks resolved inside it): paths,
    /// kinds, modes, owners and file contents. Remembered per stage key and source, so an
    /// unchanged stage is not read again.
    fn stage_subtree_digest(
        &self,
        state: &State,
        root: &MountRoot,
        source: &str,
    ) -> Result<String, String> {
        let memo = {
            let mut h = blake3::Hasher::new();
            h.update(b"mount-source-v1\0");
            h.update(&root.key);
            h.update(source.as_bytes());
            h.finalize().to_hex().to_string()
        };
        if let Some(d) = self.store.get_meta("mountsrc", &memo) {
            if let Ok(d) = String::from_utf8(d) {
                return Ok(d);
            }
        }
        let view = state.view()?;
        let not_found = || format!("\"/{source}\" not found in {}", root.name);
        let found = view
            .resolve(source, true)
            .map_err(|e| e.to_string())?
            .ok_or_else(not_found)?;
        let mut h = blake3::Hasher::new();
        hash_view_tree(&view, &found.path, "", &mut h)?;
        let digest = h.finalize().to_hex().to_string();
        // Only an optimisation: failing to save it costs a rehash next time.
        let _ = self.store.put_meta("mountsrc", &memo, digest.as_bytes());
        Ok(digest)
    }

    /// The root a `from=` mount reads: a stage of this build (finished first) or an image.
    fn mount_root(&self, from: &str) -> Result<(MountRoot, State), String> {
        let (state, name) = match mount_stage(&self.plan, from) {
            Some(i) if self.plan.needed[i] => (self.wait_stage(i)?, self.plan.stages[i].display()),
            Some(i) => {
                return Err(format!(
                    "--mount from={from}: stage {} is not built before this RUN",
                    self.plan.stages[i].display()
                ))
            }
            None => {
                let (mut s, d) = self.image_state(from, 0).map_err(|e| e.to_string())?;
                s.key = *blake3::hash(d.as_str().as_bytes()).as_bytes();
                (s, from.to_string())
            }
        };
        let root = MountRoot {
            name,
            key: state.key,
            layers: state
                .layers
                .iter()
                .map(|l| Ok((l.desc.digest.clone(), l.tar()?.to_path_buf())))
                .collect::<Result<_, String>>()?,
        };
        Ok((root, state))
    }

    /// A stage's root unpacked: shared by the build's read-only mounts of it, or a fresh
    /// copy for a writable one (its writes are thrown away with it).
    fn stage_root(
        &self,
        root: &MountRoot,
        shared: bool,
        ids: &crate::runtime::IdPlan,
    ) -> Result<Arc<Scratch>, String> {
        let unpack = || -> Result<Arc<Scratch>, String> {
            let s = Scratch::new(&self.store.root().join("tmp"), "stage-")?;
            let dir = s.path().join("rootfs");
            std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
            rmounts::unpack_stage(&root.layers, &dir, ids)
                .map_err(|e| format!("{}: {e}", root.name))?;
            Ok(Arc::new(s))
        };
        if !shared {
            return unpack();
        }
        // Held while unpacking: two RUNs mounting the same stage unpack it once.
        let mut roots = lock(&self.stage_roots);
        if let Some(s) = roots.get(&root.key) {
            return Ok(s.clone());
        }
        let s = unpack()?;
        roots.insert(root.key, s.clone());
        Ok(s)
    }

    /// Make on the host what each mount binds; the returned holds keep it until dropped.
    pub(super) fn materialize_mounts(
        &self,
        plans: Vec<MountPlan>,
        env: &mut Vec<String>,
        ids: &crate::runtime::IdPlan,
    ) -> Result<(Vec<crate::runtime::Mount>, Holds), String> {
        use crate::runtime::{Mount, MountKind};
        let tmp = self.store.root().join("tmp");
        let mut out = Vec::new();
        let mut holds: Holds = Vec::new();
        let mut secret_dir: Option<Scratch> = None;
        for (i, plan) in plans.into_iter().enumerate() {
            match plan {
                MountPlan::Context {
                    target,
                    source,
                    readonly,
                } => {
                    let listing = self.listing()?;
                    // Nothing ignored and nothing written: the context itself, read-only.
                    // (Never through a symlink: that would bind a host path.)
                    let plain = source.is_empty()
                        || listing.get(&source).is_some_and(|e| {
                            matches!(
                                e.kind,
                                crate::context::walk::Kind::Dir | crate::context::walk::Kind::File
                            )
                        });
                    if readonly && plain && self.context_unfiltered.get() == Some(&true) {
                        // Absolute: the runtime mounts from another working directory.
                        let root = std::fs::canonicalize(&listing.root)
                            .map_err(|e| format!("{}: {e}", listing.root.display()))?;
                        let path = if source.is_empty() {
                            root
                        } else {
                            root.join(&source)
                        };
                        out.push(Mount::bind(path, target, true));
                        continue;
                    }
                    let s = Scratch::new(&tmp, "bind-")?;
                    let path =
                        rmounts::context_tree(&listing, &source, &s.path().join("src"), readonly)?;
                    out.push(Mount::bind(path, target, readonly));
                    holds.push(Box::new(s));
                }
                MountPlan::Root {
                    target,
                    root,
                    source,
                    readonly,
                } => {
                    let s = self.stage_root(&root, readonly, ids)?;
                    let path = in_root(&s, &source, &root.name)?;
                    out.push(Mount::bind(path, target, readonly));
                    holds.push(Box::new(s));
                }
                MountPlan::Cache {
                    target,
                    id,
                    sharing,
                    readonly,
                    mode,
                    uid,
                    gid,
                    seed,
                } => {
                    // The seed is unpacked only when the cache is still to be made.
                    let exists = rmounts::cache_mounts_dir(self.store)
                        .join(blake3::hash(id.as_bytes()).to_hex().as_str())
                        .is_dir();
                    let seed_path = match &seed {
                        Some((root, source)) if !exists || self.opts.no_cache => {
                            let s = self.stage_root(root, true, ids)?;
                            let p = in_root(&s, source, &root.name)?;
                            holds.push(Box::new(s));
                            Some(p)
                        }
                        _ => None,
                    };
                    let hold = rmounts::hold_cache(
                        self.store,
                        &id,
                        sharing,
                        self.opts.no_cache,
                        &rmounts::CacheInit {
                            mode,
                            uid,
                            gid,
                            seed: seed_path.as_deref(),
                        },
                        ids,
                    )
                    .map_err(|e| format!("cache mount {id}: {e}"))?;
                    out.push(Mount::bind(hold.path.clone(), target, readonly));
                    holds.push(Box::new(hold));
                }
                MountPlan::Tmpfs { target, size } => out.push(Mount {
                    target,
                    kind: MountKind::Tmpfs { size, mode: 0o1777 },
                    readonly: false,
                }),
                MountPlan::Secret {
                    id,
                    target,
                    env: var,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let data = match self.opts.secrets.get(&id) {
                        Some(src) => src.read()?,
                        None => None,
                    };
                    let Some(data) = data else {
                        if required {
                            return Err(format!("secret {id}: not found"));
                        }
                        continue;
                    };
                    if let Some(var) = var {
                        // Overrides an ENV of the same name, for this command only.
                        env.retain(|e| e.split_once('=').map(|p| p.0) != Some(var.as_str()));
                        env.push(format!("{var}={}", String::from_utf8_lossy(&data)));
                    }
                    if let Some(target) = target {
                        if secret_dir.is_none() {
                            secret_dir = Some(rmounts::secret_dir(self.store)?);
                        }
                        let Some(dir) = &secret_dir else { continue };
                        let path = rmounts::write_secret(
                            dir.path(),
                            &format!("s{i}"),
                            &data,
                            mode,
                            uid,
                            gid,
                            ids,
                        )
                        .map_err(|e| format!("secret {id}: {e}"))?;
                        out.push(Mount::bind(path, target, true));
                    }
                }
            }
        }
        if let Some(d) = secret_dir {
            holds.push(Box::new(d));
        }
        // Parents before what they hold: `/a` is mounted before `/a/b`.
        out.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
        Ok((out, holds))
    }
}

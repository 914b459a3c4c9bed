//! `kiln build`.

use super::args::{BuildArgs, BuildNetwork, Progress};
use anyhow::{bail, Context};
use kiln::build::{self, BuildOptions, RemoteCache, RemoteStep};
use kiln::image::Reference;
use kiln::plan::Platform;
use kiln::progress::{Event, NullReporter, PlainReporter, Reporter, TtyReporter};
use kiln::registry::{self, CacheMode, RegistryCache, RegistryOptions};
use kiln::store::{CacheEntry, Store};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

pub fn run(store: &Store, args: BuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let context = args.context.clone();
    if !context.is_dir() {
        bail!("build context {}: not a directory", context.display());
    }
    let (dockerfile, dockerfile_name, dockerfile_path) = read_dockerfile(&args)?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg K` takes K from the environment, and is ignored when unset (docker).
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut secrets = BTreeMap::new();
    for spec in &args.secrets {
        let (id, source) = build::mounts::parse_secret(spec).map_err(anyhow::Error::msg)?;
        if let build::SecretSource::File(p) = &source {
            if !p.is_file() {
                bail!("--secret {id}: {}: no such file", p.display());
            }
        }
        secrets.insert(id, source);
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let host = build::host_platform();
    let platform = match &args.platform {
        None => host.clone(),
        Some(p) => {
            let p = Platform::parse(p)
                .with_context(|| format!("invalid --platform {p:?}: expected os/arch[/variant]"))?;
            if p.os != host.os || p.architecture != host.architecture {
                bail!("--platform {p}: kiln builds only for the host platform ({host}); cross-building needs emulation, which kiln does not do");
            }
            p
        }
    };
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        _ => None,
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if args.push && tags.is_empty() {
        bail!("--push needs at least one -t NAME[:TAG] to push to");
    }
    let cache_to = args.cache_to.as_deref().map(parse_cache_spec).transpose()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| parse_cache_spec(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut registry_opts = RegistryOptions::from_env();
    registry_opts.insecure.extend(args.insecure.iter().cloned());
    let tty = std::io::stderr().is_terminal();
    let reporter: Box<dyn Reporter> = if args.quiet {
        Box::new(NullReporter)
    } else {
        match args.progress {
            Progress::Plain => Box::new(PlainReporter::new(std::io::stderr())),
            Progress::Auto | Progress::Tty if tty => Box::new(TtyReporter::new()),
            _ => Box::new(PlainReporter::new(std::io::stderr())),
        }
    };
    let remote_cache = import_caches(&cache_from, &registry_opts, reporter.as_ref());
    let opts = BuildOptions {
        context,
        dockerfile,
        dockerfile_name,
        dockerfile_path,
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        labels,
        platform,
        jobs,
        tags: tags.clone(),
        source_date_epoch,
        remote_cache,
        pull: args.pull,
        fetch_remote_layers: cache_to.is_some(),
        isolation: args.isolation.resolve()?,
        secrets,
        network: match args.network {
            BuildNetwork::Default => kiln::dockerfile::instruction::Network::Default,
            BuildNetwork::Host => kiln::dockerfile::instruction::Network::Host,
            BuildNetwork::None => kiln::dockerfile::instruction::Network::None,
        },
    };
    let built = build::build(store, &opts, reporter.as_ref())?;
    kiln::store::gc::apply_policy(store).context("applying the gc policy (gc.keep-storage)")?;
    let id = built.config_digest.to_string();
    if let Some((reference, mode)) = &cache_to {
        let steps: Vec<(String, CacheEntry)> = built
            .steps
            .iter()
            .map(|s| (s.key_hex.clone(), s.entry.clone()))
            .collect();
        registry::export_cache(
            store,
            reference,
            &steps,
            &built.config.rootfs.diff_ids,
            *mode,
            &registry_opts,
            reporter.as_ref(),
        )
        .with_context(|| format!("exporting the build cache to {}", reference.familiar()))?;
    }
    if args.push {
        for t in &tags {
            let pushed = registry::push(
                store,
                &t.to_string(),
                Some(t),
                &registry_opts,
                reporter.as_ref(),
            )
            .with_context(|| format!("pushing {}", t.familiar()))?;
            eprintln!(
                "Pushed {}@{}",
                pushed.reference.familiar_name(),
                pushed.digest
            );
        }
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing {}", f.display()))?;
    }
    if args.quiet {
        println!("{id}");
        return Ok(());
    }
    for t in &tags {
        eprintln!("Tagged {}", t.familiar());
    }
    eprintln!("Built {} in {:.2}s", id, started.elapsed().as_secs_f64());
    println!("{id}");
    Ok(())
}

/// The Dockerfile's text, its name for errors, and its path (for `<name>.dockerignore`).
fn read_dockerfile(
    args: &BuildArgs,
) -> anyhow::Result<(String, String, Option<std::path::PathBuf>)> {
    let path = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the Dockerfile from standard input")?;
            return Ok((s, "Dockerfile".into(), None));
        }
        Some(p) => p.clone(),
        None => {
            let upper = args.context.join("Dockerfile");
            let lower = args.context.join("dockerfile");
            if !upper.exists() && lower.exists() {
                lower
            } else {
                upper
            }
        }
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("reading Dockerfile {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let name = match &args.file {
        Some(p) => p.display().to_string(),
        None => "Dockerfile".into(),
    };
    Ok((text, name, Some(path)))
}

/// `type=registry,ref=REF[,mode=min|max]`, or a bare `REF` (as docker accepts for
/// `--cache-from`).
fn parse_cache_spec(spec: &str) -> anyhow::Result<(Reference, CacheMode)> {
    let mut pairs = BTreeMap::new();
    if spec.contains('=') {
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("cache option {spec:?}: {part:?} is not KEY=VALUE"))?;
            pairs.insert(k.trim(), v.trim());
        }
    } else {
        pairs.insert("type", "registry");
        pairs.insert("ref", spec.trim());
    }
    // The type decides which keys mean something, so it is checked first.
    match pairs.remove("type") {
        Some("registry") => {}
        Some(other) => bail!("cache option {spec:?}: type {other:?} is not supported; kiln's shared cache is type=registry"),
        None => bail!("cache option {spec:?}: missing type=registry"),
    }
    let reference = pairs
        .remove("ref")
        .with_context(|| format!("cache option {spec:?}: missing ref=REGISTRY/NAME[:TAG]"))?;
    let mode = match pairs.remove("mode") {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => bail!("cache option {spec:?}: mode {other:?} is not min or max"),
    };
    if let Some(k) = pairs.keys().next() {
        bail!("cache option {spec:?}: unknown key {k:?} (kiln knows type, ref, mode)");
    }
    let parsed = Reference::parse_normalized(reference)
        .with_context(|| format!("cache option {spec:?}: invalid ref {reference:?}"))?;
    Ok((parsed, mode))
}

/// The `--cache-from` caches, each read once; a cache that cannot be read is a warning (the
/// first CI run has none yet), as with BuildKit.
fn import_caches(
    specs: &[(Reference, CacheMode)],
    opts: &RegistryOptions,
    reporter: &dyn Reporter,
) -> Option<Arc<dyn RemoteCache>> {
    let mut caches = Vec::new();
    for (reference, _) in specs {
        match RegistryCache::import(reference, opts) {
            Ok(c) => {
                reporter.event(Event::Message(&format!(
                    "importing the build cache from {} ({} steps)",
                    reference.familiar(),
                    c.len()
                )));
                caches.push(c);
            }
            Err(e) => reporter.event(Event::Warning(&format!(
                "not importing the build cache from {}: {e}",
                reference.familiar()
            ))),
        }
    }
    if caches.is_empty() {
        None
    } else {
        Some(Arc::new(RegistryCaches(caches)))
    }
}

/// The build engine's view of the imported caches: the first that knows a key answers.
#[derive(Debug)]
struct RegistryCaches(Vec<RegistryCache>);

impl RemoteCache for RegistryCaches {
    fn lookup(&self, key_hex: &str) -> Option<RemoteStep> {
        self.0.iter().find_map(|c| {
            c.lookup(key_hex)
                .map(|(diff_id, created)| RemoteStep { diff_id, created })
        })
    }

    fn fetch_layer(&self, store: &Store, key_hex: &str) -> Result<u64, String> {
        let c = self
            .0
            .iter()
            .find(|c| c.lookup(key_hex).is_some())
            .ok_or_else(|| format!("no imported cache knows step {key_hex}"))?;
        c.fetch_layer(store, key_hex).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs() {
        let (r, m) = parse_cache_spec("type=registry,ref=127.0.0.1:5000/c:1,mode=max").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/c:1");
        assert_eq!(m, CacheMode::Max);
        let (r, m) = parse_cache_spec("localhost:5000/c").unwrap();
        assert_eq!(r.repository(), "c");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(m, CacheMode::Min);
        for bad in [
            "type=local,dest=/x",
            "ref=r/c",
            "type=registry",
            "type=registry,ref=r/c,mode=all",
            "type=registry,ref=r/c,oops",
            "type=registry,ref=r/c,compression=zstd",
        ] {
            assert!(parse_cache_spec(bad).is_err(), "{bad}");
        }
    }
}

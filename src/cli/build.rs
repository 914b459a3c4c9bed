//! `kiln build`.

use super::args::{BuildArgs, Progress};
use anyhow::{bail, Context};
use kiln::build::{self, BuildOptions};
use kiln::image::Reference;
use kiln::plan::Platform;
use kiln::progress::{NullReporter, PlainReporter, Reporter, TtyReporter};
use kiln::store::Store;
use std::collections::BTreeMap;
use std::io::IsTerminal;
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
    };
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
    let built = build::build(store, &opts, reporter.as_ref())?;
    let id = built.config_digest.to_string();
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

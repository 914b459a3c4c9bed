//! The image commands (`import`, `images`, `tag`, `rmi`, `inspect`, `history`, `save`, `load`,
//! `prune`): their arguments, spelled as docker spells them, and their output, formatted as
//! docker formats it (tables, human sizes and ages, inspect JSON).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln::archive::{self, ArchiveFormat, ImportOptions, SaveOptions};
use kiln::image::{Digest, ImageConfig, Reference};
use kiln::layer::Compression;
use kiln::store::{GcOptions, ImageRecord, Store};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make a one-layer image from a rootfs tarball (plain, gzip, zstd, bzip2 or xz).
    Import(ImportArgs),
    /// List images.
    Images(ImagesArgs),
    /// Give an image another name: `kiln tag SOURCE TARGET`.
    Tag(TagArgs),
    /// Remove images (by name: that tag; by ID: the image and all its tags).
    Rmi(RmiArgs),
    /// Show containers' or images' details as JSON (a container by that name or ID first).
    Inspect(InspectArgs),
    /// Show how an image was made, newest step first.
    History(HistoryArgs),
    /// Write images to a tar archive (OCI layout or docker-archive).
    Save(SaveArgs),
    /// Read images from a tar archive made by `save`, `docker save`, `podman save` or skopeo.
    Load(LoadArgs),
    /// Remove stopped containers, untagged images and the build cache (`-a`: every unused
    /// image; `--volumes`: unused anonymous volumes too).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball; `-` reads standard input.
    pub file: String,
    /// Name and optionally a tag (`name:tag`) for the image.
    pub reference: Option<String>,
    /// Comment recorded in the image's history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag, when given).
    pub reference: Option<String>,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show the manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: a name, an ID or a digest.
    pub source: String,
    /// The new name, `name[:tag]`.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image by ID even when several tags name it.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format each image with a Go-style template, e.g. `{{.Id}}` or `{{json .Config}}`.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// OCI image layout, layers compressed.
    Oci,
    /// docker-archive (`docker load`, `podman load`), layers uncompressed.
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveCompression {
    Gzip,
    Zstd,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "oci")]
    pub format: SaveFormat,
    /// Layer compression of OCI archives.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: SaveCompression,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, tagged or not.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Also remove the anonymous volumes no container uses (volumes are kept otherwise).
    #[arg(long)]
    pub volumes: bool,
}

pub fn run(store: &Store, cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Import(args) => import(store, args),
        ImageCommand::Images(args) => images(store, args),
        ImageCommand::Tag(args) => tag(store, args),
        ImageCommand::Rmi(args) => return rmi(store, args),
        ImageCommand::Inspect(args) => inspect(store, args),
        ImageCommand::History(args) => history(store, args),
        ImageCommand::Save(args) => save(store, args),
        ImageCommand::Load(args) => load(store, args),
        ImageCommand::Prune(args) => prune(store, args),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse::<i64>().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// A file argument, or standard input for `-`.
fn open_input(file: &str) -> Result<Box<dyn Read>> {
    if file == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = File::open(file).with_context(|| format!("opening {file}"))?;
    Ok(Box::new(BufReader::with_capacity(256 * 1024, f)))
}

fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).with_context(|| format!("invalid reference {s:?}"))
}

/// `busybox:latest`, or docker's `<none>` for what is missing.
fn repo_and_tag(name: &str) -> (String, String) {
    match Reference::parse(name) {
        Ok(r) => (
            r.familiar_name(),
            r.tag().map_or_else(|| "<none>".to_string(), str::to_string),
        ),
        Err(_) => (name.to_string(), "<none>".to_string()),
    }
}

fn familiar(name: &str) -> String {
    Reference::parse(name).map_or_else(|_| name.to_string(), |r| r.familiar())
}

fn short_id(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

fn import(store: &Store, args: ImportArgs) -> Result<()> {
    let opts = ImportOptions {
        reference: args.reference.as_deref().map(parse_reference).transpose()?,
        source_date_epoch: source_date_epoch()?,
        message: args.message,
    };
    let shown = if args.file == "-" {
        "standard input".to_string()
    } else {
        args.file.clone()
    };
    let input = open_input(&args.file)?;
    let imported = archive::import_rootfs(store, input, &opts)
        .with_context(|| format!("importing {shown}"))?;
    println!("{}", imported.config);
    Ok(())
}

fn images(store: &Store, args: ImagesArgs) -> Result<()> {
    let filter = args
        .reference
        .as_deref()
        .map(|r| Reference::parse_normalized(r).with_context(|| format!("invalid reference {r:?}")))
        .transpose()?;
    let mut records = store.list()?;
    // Newest first, as docker lists them.
    records.sort_by_key(|r| std::cmp::Reverse(r.created.as_deref().and_then(parse_rfc3339)));
    let now = unix_now();
    let mut rows = Vec::new();
    for r in &records {
        let names: Vec<Option<&String>> = if r.references.is_empty() {
            vec![None]
        } else {
            r.references.iter().map(Some).collect()
        };
        for name in names {
            let (repo, tag) = match name {
                Some(n) => repo_and_tag(n),
                None => ("<none>".to_string(), "<none>".to_string()),
            };
            if let Some(f) = &filter {
                let Some(n) = name.and_then(|n| Reference::parse(n).ok()) else {
                    continue;
                };
                if n.name() != f.name() || f.tag().is_some_and(|t| n.tag() != Some(t)) {
                    continue;
                }
            }
            let id = if args.no_trunc {
                r.config.to_string()
            } else {
                short_id(&r.config)
            };
            if args.quiet {
                rows.push(vec![id]);
                continue;
            }
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(r.manifest.digest.to_string());
            }
            row.push(id);
            row.push(created_ago(r.created.as_deref(), now));
            row.push(human_size(r.size, 3));
            rows.push(row);
        }
    }
    if args.quiet {
        for row in rows {
            println!("{}", row.join(""));
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    rows.insert(0, header.into_iter().map(str::to_string).collect());
    print!("{}", table(&rows));
    Ok(())
}

fn tag(store: &Store, args: TagArgs) -> Result<()> {
    let record = store.resolve(&args.source)?;
    let target = Reference::parse(&args.target)
        .with_context(|| format!("invalid target name {:?}", args.target))?;
    if target.digest().is_some() {
        bail!(
            "invalid target name {:?}: a tag cannot name a digest",
            args.target
        );
    }
    store.tag(&target, &record.manifest)?;
    Ok(())
}

fn rmi(store: &Store, args: RmiArgs) -> Result<ExitCode> {
    let mut failed = false;
    let mut out = io::stdout().lock();
    let in_use = kiln::runtime::state::images_in_use(store)?;
    for q in &args.images {
        if !args.force {
            // docker refuses to take the last name of an image a container uses.
            let user = store.resolve(q).ok().and_then(|record| {
                let last = record.references.len() <= 1;
                let digest = record.manifest.digest.to_string();
                in_use
                    .iter()
                    .find(|u| last && u.manifest == digest)
                    .map(|u| (u.container.clone(), record))
            });
            if let Some((container, record)) = user {
                failed = true;
                eprintln!(
                    "Error response from daemon: conflict: unable to remove repository reference \"{q}\" (must force) - container {} is using its referenced image {}",
                    container.get(..12).unwrap_or(&container),
                    short_id(&record.config)
                );
                continue;
            }
        }
        let result = store.resolve(q).and_then(|record| {
            store
                .remove_image(q, args.force)
                .map(|report| (record, report))
        });
        match result {
            Ok((record, report)) => {
                for name in &report.untagged {
                    writeln!(out, "Untagged: {}", familiar(name))?;
                }
                if report.deleted {
                    writeln!(out, "Deleted: {}", record.config)?;
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A container or an image, as `kiln inspect` shows either.
#[derive(Serialize)]
#[serde(untagged)]
enum Inspected {
    Container(Box<kiln::runtime::container::ContainerInspect>),
    Image(Box<InspectImage>),
}

/// One element of `kiln inspect`'s output, with docker's field names and order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectImage {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    docker_version: String,
    author: String,
    config: InspectConfig,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_version: Option<String>,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: InspectRootFs,
    metadata: InspectMetadata,
}

/// docker's container config as `docker image inspect` shows it: every field present, unset
/// lists as `null`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    hostname: String,
    domainname: String,
    user: String,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<serde_json::Value>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    args_escaped: bool,
    image: String,
    volumes: Option<serde_json::Value>,
    working_dir: String,
    entrypoint: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    stop_signal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Vec<String>>,
}

#[derive(Serialize)]
struct InspectRootFs {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct InspectMetadata {
    #[serde(rename = "LastTagTime")]
    last_tag_time: String,
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn inspect_image(record: &ImageRecord, config: &ImageConfig) -> Result<InspectImage> {
    let c = &config.config;
    let str_extra = |key: &str| {
        config
            .extra
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(InspectImage {
        id: record.config.to_string(),
        repo_tags: record.references.iter().map(|r| familiar(r)).collect(),
        repo_digests: Vec::new(),
        parent: String::new(),
        comment: str_extra("comment"),
        created: config.created.clone().unwrap_or_default(),
        docker_version: str_extra("docker_version"),
        author: config.author.clone().unwrap_or_default(),
        config: InspectConfig {
            hostname: String::new(),
            domainname: String::new(),
            user: c.user.clone(),
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            exposed_ports: (!c.exposed_ports.is_empty())
                .then(|| serde_json::to_value(&c.exposed_ports))
                .transpose()?,
            tty: false,
            open_stdin: false,
            stdin_once: false,
            env: non_empty(c.env.clone()),
            cmd: c.cmd.clone().and_then(non_empty),
            healthcheck: c
                .healthcheck
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
            args_escaped: c.args_escaped,
            image: String::new(),
            volumes: (!c.volumes.is_empty())
                .then(|| serde_json::to_value(&c.volumes))
                .transpose()?,
            working_dir: c.working_dir.clone(),
            entrypoint: c.entrypoint.clone().and_then(non_empty),
            on_build: non_empty(c.on_build.clone()),
            labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
            stop_signal: c.stop_signal.clone(),
            shell: non_empty(c.shell.clone()),
        },
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os: config.os.clone(),
        os_version: config.os_version.clone(),
        size: record.size,
        root_fs: InspectRootFs {
            kind: config.rootfs.kind.clone(),
            layers: config
                .rootfs
                .diff_ids
                .iter()
                .map(|d| d.to_string())
                .collect(),
        },
        metadata: InspectMetadata {
            last_tag_time: "0001-01-01T00:00:00Z".to_string(),
        },
    })
}

/// JSON indented by four spaces, with `<`, `>` and `&` escaped, as Go's encoder writes it.
pub(super) fn docker_json(value: &impl Serialize) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    value.serialize(&mut ser)?;
    let text = String::from_utf8(buf)?;
    // These characters only occur inside strings, so replacing them everywhere is exact.
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

fn inspect(store: &Store, args: InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    for q in &args.images {
        // A container first, as docker's `inspect` looks.
        if let Ok(id) = kiln::runtime::state::resolve(store, q) {
            let c = kiln::runtime::state::load(store, &id)?;
            out.push(Inspected::Container(Box::new(
                kiln::runtime::container::inspect(&c),
            )));
            continue;
        }
        let record = store.resolve(q)?;
        let config = store.read_config(&record.config)?;
        out.push(Inspected::Image(Box::new(inspect_image(&record, &config)?)));
    }
    match &args.format {
        None => println!("{}", docker_json(&out)?),
        Some(template) => {
            for item in &out {
                let value = serde_json::to_value(item)?;
                println!("{}", render_template(template, &value)?);
            }
        }
    }
    Ok(())
}

/// The subset of Go templates that inspect scripts use most: `{{.A.B}}`, `{{json .A}}` and
/// `{{.}}`; anything else is an error rather than a guess.
pub(super) fn render_template(template: &str, value: &serde_json::Value) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find("}}") else {
            bail!("template {template:?}: unclosed action");
        };
        let action = after.get(..end).unwrap_or_default().trim();
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            bail!("template {template:?}: unsupported action {action:?} (kiln knows .Field and json .Field)");
        };
        let mut v = value;
        for field in path.split('.').filter(|f| !f.is_empty()) {
            v = match v.get(field) {
                Some(x) => x,
                None => bail!("template {template:?}: no field {field:?}"),
            };
        }
        let text = match v {
            serde_json::Value::String(s) if !as_json => s.clone(),
            serde_json::Value::Null if !as_json => "<no value>".to_string(),
            other => serde_json::to_string(other)?,
        };
        out.push_str(&text);
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

fn history(store: &Store, args: HistoryArgs) -> Result<()> {
    let record = store.resolve(&args.image)?;
    let config = store.read_config(&record.config)?;
    let manifest = store.read_manifest(&record.manifest.digest)?;
    let now = unix_now();
    let mut layers = manifest.layers.iter();
    let mut rows = Vec::new();
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        let created_by = h.created_by.clone().unwrap_or_default().replace('\t', " ");
        rows.push(vec![
            "<missing>".to_string(),
            created_ago(h.created.as_deref(), now),
            if args.no_trunc {
                created_by
            } else {
                ellipsis(&created_by, 45)
            },
            human_size(size, 3),
            h.comment.clone().unwrap_or_default(),
        ]);
    }
    rows.reverse();
    let id = if args.no_trunc {
        record.config.to_string()
    } else {
        short_id(&record.config)
    };
    match rows.first_mut().and_then(|r| r.first_mut()) {
        Some(first) => *first = id,
        // A config without history still has an ID to show.
        None => rows.push(vec![
            id,
            created_ago(config.created.as_deref(), now),
            String::new(),
            human_size(record.size, 3),
            String::new(),
        ]),
    }
    if args.quiet {
        for r in &rows {
            println!("{}", r.first().map_or("", String::as_str));
        }
        return Ok(());
    }
    let header = ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"];
    rows.insert(0, header.iter().map(|s| s.to_string()).collect());
    print!("{}", table(&rows));
    Ok(())
}

fn save(store: &Store, args: SaveArgs) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = SaveOptions {
        format: match args.format {
            SaveFormat::Oci => ArchiveFormat::Oci,
            SaveFormat::Docker => ArchiveFormat::Docker,
        },
        compression: match args.compression {
            SaveCompression::Gzip => Compression::Gzip { level: 6 },
            SaveCompression::Zstd => Compression::Zstd { level: 3 },
        },
        threads,
    };
    match &args.output {
        Some(path) => {
            archive::save_to_file(store, &args.images, &opts, path)
                .with_context(|| format!("saving to {}", path.display()))?;
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect standard output");
            }
            let out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            let (mut out, _) = archive::save(store, &args.images, &opts, out)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn load(store: &Store, args: LoadArgs) -> Result<()> {
    let (input, shown): (Box<dyn Read>, String) = match &args.input {
        Some(p) => {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            (
                Box::new(BufReader::with_capacity(256 * 1024, f)),
                p.display().to_string(),
            )
        }
        None => {
            if io::stdin().is_terminal() {
                bail!("no archive given: use -i FILE or redirect standard input");
            }
            (Box::new(io::stdin().lock()), "standard input".to_string())
        }
    };
    let loaded = archive::load(store, input).with_context(|| format!("loading {shown}"))?;
    if !args.quiet {
        for image in &loaded {
            if image.references.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for r in &image.references {
                println!("Loaded image: {}", r.familiar());
            }
        }
    }
    Ok(())
}

fn prune(store: &Store, args: PruneArgs) -> Result<()> {
    if !args.force {
        let images = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        let volumes = if args.volumes {
            ", all volumes not used by at least one container"
        } else {
            ""
        };
        if !super::system::confirm(&format!(
            "all stopped containers, {images}{volumes}, and the build cache"
        ))? {
            return Ok(());
        }
    }
    // Stopped containers first (docker's `system prune`), so the images they used become
    // unused.
    let containers = kiln::runtime::state::remove_stopped(store)?;
    if !containers.is_empty() {
        println!("Deleted Containers:");
        for id in &containers {
            println!("{id}");
        }
        println!();
    }
    let mut lines = Vec::new();
    let mut reclaimed = 0u64;
    let in_use = kiln::runtime::state::images_in_use(store)?;
    for record in store.list()? {
        if !args.all && !record.references.is_empty() {
            continue;
        }
        let digest = record.manifest.digest.to_string();
        if in_use.iter().any(|u| u.manifest == digest) {
            continue;
        }
        let report = store.remove_image(record.manifest.digest.as_str(), true)?;
        for name in &report.untagged {
            lines.push(format!("untagged: {}", familiar(name)));
        }
        if report.deleted {
            lines.push(format!("deleted: {}", record.config));
        }
        reclaimed = reclaimed.saturating_add(report.collected.bytes);
    }
    let gc = store.gc(GcOptions {
        keep_cache: false,
        ..GcOptions::default()
    })?;
    reclaimed = reclaimed.saturating_add(gc.bytes);
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in &lines {
            println!("{l}");
        }
        println!();
    }
    if args.volumes {
        let removed = kiln::runtime::volumes::Volumes::new(store.root()).prune(false)?;
        if !removed.is_empty() {
            println!("Deleted Volumes:");
            for n in &removed {
                println!("{n}");
            }
            println!();
        }
    }
    println!("Total reclaimed space: {}", human_size(reclaimed, 4));
    Ok(())
}

/// Aligns cells as docker's tabwriter does (minimum width 10, padding 3); the last column is
/// not padded.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count() + 3).max(10);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let w = widths.get(i).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
pub(super) fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Decimal sizes with `precision` significant digits, as go-units' `HumanSizeWithPrecision`
/// (`4.26MB`, `512B`, `1.2kB`).
pub(super) fn human_size(bytes: u64, precision: usize) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    format!(
        "{}{}",
        sig_digits(size, precision),
        UNITS.get(unit).unwrap_or(&"B")
    )
}

/// `%.{p}g` for 0 <= v < 1000: `p` significant digits, trailing zeros dropped.
fn sig_digits(v: f64, p: usize) -> String {
    let int_digits = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as usize) + 1
    };
    let decimals = p.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units' `HumanDuration`, as docker prints ages.
pub(super) fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as u64;
    match () {
        _ if secs < 1 => "Less than a second".to_string(),
        _ if secs == 1 => "1 second".to_string(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn created_ago(created: Option<&str>, now: i64) -> String {
    match created.and_then(parse_rfc3339) {
        Some(t) => format!(
            "{} ago",
            human_duration(u64::try_from(now.saturating_sub(t)).unwrap_or(0))
        ),
        None => "N/A".to_string(),
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.5Z`, `...+01:00`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !matches!(s.get(10..11), Some("T" | "t" | " ")) || !(1..=12).contains(&month) {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0, 3), "0B");
        assert_eq!(human_size(512, 3), "512B");
        assert_eq!(human_size(1000, 3), "1kB");
        assert_eq!(human_size(1234, 3), "1.23kB");
        assert_eq!(human_size(4_261_000, 3), "4.26MB");
        assert_eq!(human_size(2_100_000, 3), "2.1MB");
        assert_eq!(human_size(12_345_678, 3), "12.3MB");
        assert_eq!(human_size(123_456_789, 3), "123MB");
        assert_eq!(human_size(9_996, 3), "10kB");
        assert_eq!(human_size(1_234_567, 4), "1.235MB");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86_400 + 86_400), "3 years");
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20"), None);
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let rows = vec![
            vec!["REPOSITORY".into(), "TAG".into(), "SIZE".into()],
            vec!["busybox".into(), "latest".into(), "4.26MB".into()],
        ];
        assert_eq!(
            table(&rows),
            "REPOSITORY   TAG       SIZE\nbusybox      latest    4.26MB\n"
        );
    }

    #[test]
    fn ellipsis_cuts_at_45() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "x".repeat(50);
        let cut = ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn templates() {
        let v = serde_json::json!({"Id": "sha256:ab", "Config": {"Env": ["A=1"], "Cmd": null}});
        assert_eq!(render_template("{{.Id}}", &v).unwrap(), "sha256:ab");
        assert_eq!(
            render_template("id={{ .Id }} env={{json .Config.Env}}", &v).unwrap(),
            "id=sha256:ab env=[\"A=1\"]"
        );
        assert_eq!(
            render_template("{{.Config.Cmd}}", &v).unwrap(),
            "<no value>"
        );
        assert!(render_template("{{.Nope}}", &v).is_err());
        assert!(render_template("{{range .X}}", &v).is_err());
    }
}

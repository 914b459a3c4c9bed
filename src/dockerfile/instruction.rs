//! Typed instructions: the raw [`Node`]s of the syntax tree checked and turned into one
//! [`Instruction`] each, as BuildKit's `instructions` package does. This module owns
//! the per-instruction argument rules and their exact error texts, the flag schemas
//! ([`BuilderFlags`]), `RUN --mount`/`--device` values ([`Mount`], [`Device`]), the
//! command forms, heredoc sources, HEALTHCHECK durations, EXPOSE port specs, and which
//! fields ARG/ENV expansion applies to ([`Instruction::expand`]). It does not expand
//! anything itself: the planner passes the expansion in.

mod duration;
mod env;
mod flags;
mod heredoc;
mod mount;
mod ports;
mod text;
pub use text::suggest;

pub use duration::parse_go_duration;
pub use env::{add_env, parse_key_value};
pub use flags::{BuilderFlags, FlagKind};
pub use mount::{
    parse_device, parse_mount, parse_mount_with, BindMount, CacheMount, CacheSharing, Device,
    Mount, SecretMount, SshMount, TmpfsMount,
};
pub use ports::{parse_port_spec, parse_port_specs, ExposedPort, Protocol};

use super::ast::{Ast, Node};
use super::Error;
use heredoc::{chomp_heredoc_content, parse_heredoc_word};
use std::time::Duration;
use text::go_quote;

/// A single-word expansion supplied by the caller (ARG/ENV substitution, quote removal).
pub type ExpandWord<'a> = dyn FnMut(&str) -> Result<String, Error> + 'a;
/// An expansion that may split one word into several (EXPOSE).
pub type ExpandWords<'a> = dyn FnMut(&str) -> Result<Vec<String>, Error> + 'a;

/// The instruction keywords, as written in messages and suggestions.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// How a command is given: shell form (run through the SHELL) or exec form (a JSON
/// array, run as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// The arguments joined by single spaces.
    Shell(String),
    Exec(Vec<String>),
}

impl CommandForm {
    /// BuildKit's rule: JSON arguments are kept, anything else is one shell string.
    pub fn from_args(args: &[String], json: bool) -> Self {
        if json {
            CommandForm::Exec(args.to_vec())
        } else {
            CommandForm::Shell(args.join(" "))
        }
    }

    /// True for the shell form (BuildKit's `PrependShell`).
    pub fn prepends_shell(&self) -> bool {
        matches!(self, CommandForm::Shell(_))
    }

    /// The command line before any shell is prepended (BuildKit's `CmdLine`).
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            CommandForm::Shell(s) => vec![s.clone()],
            CommandForm::Exec(v) => v.clone(),
        }
    }
}

/// BuildKit's `handleJSONArgs`: no arguments stay none; JSON arguments are kept; shell
/// arguments are joined into one string with single spaces.
pub fn handle_json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    CommandForm::from_args(args, json).to_vec()
}

/// A `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written in the legacy `ENV key value` form (no `=`).
    pub no_delimiter: bool,
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCommand {
    pub image: String,
    /// The stage name, lowercased.
    pub stage_name: Option<String>,
    pub platform: Option<String>,
}

/// A heredoc attached to RUN: a file handed to the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    /// The body as written (for `<<-`, tabs are stripped when the file is made).
    pub data: String,
    pub chomp: bool,
}

/// One `--mount` of RUN: the spec as written, and its typed reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub spec: String,
    /// Known when the spec used no variable; always known after [`Instruction::expand`].
    pub mount: Option<Mount>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

/// `RUN [flags] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// Shell form keeps the `<<EOF` markers in the text; the bodies are in `files`.
    pub command: CommandForm,
    pub files: Vec<InlineFile>,
    pub mounts: Vec<RunMount>,
    pub network: Network,
    pub security: Security,
    pub devices: Vec<Device>,
    /// Names of the flags given, sorted (BuildKit's `FlagsUsed`).
    pub flags_used: Vec<String>,
}

/// `CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdCommand {
    pub command: CommandForm,
}

/// `ENTRYPOINT command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointCommand {
    pub command: CommandForm,
}

/// `SHELL ["exe", "args"...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    pub shell: Vec<String>,
}

/// `LABEL k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCommand {
    pub labels: Vec<KeyValue>,
}

/// `ENV k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCommand {
    pub vars: Vec<KeyValue>,
}

/// `MAINTAINER name` (deprecated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerCommand {
    pub maintainer: String,
}

/// `EXPOSE spec...`: the specs as written; read them with [`parse_port_specs`] after
/// [`Instruction::expand_words`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposeCommand {
    pub ports: Vec<String>,
}

impl ExposeCommand {
    pub fn exposed_ports(&self) -> Result<Vec<ExposedPort>, Error> {
        parse_port_specs(&self.ports)
    }
}

/// A heredoc used as a COPY/ADD source: an inline file named after its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    pub path: String,
    pub data: String,
    /// The delimiter was unquoted: `$VAR`s in `data` are expanded.
    pub expand: bool,
}

/// The sources and destination of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub paths: Vec<String>,
    pub contents: Vec<SourceContent>,
    pub dest: String,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    pub sources: Sources,
    /// A stage name or index, or an image. Never expanded: BuildKit rejects variables.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCommand {
    pub sources: Sources,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// For git sources; `None` when not given.
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    pub excludes: Vec<String>,
    /// Whether archives are extracted; `None`: the default (local archives are).
    pub unpack: Option<bool>,
}

/// `VOLUME path...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCommand {
    pub volumes: Vec<String>,
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    pub user: String,
}

/// `WORKDIR path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirCommand {
    pub path: String,
}

/// One name of `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCommand {
    pub args: Vec<ArgDecl>,
}

/// `ONBUILD instruction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildCommand {
    /// The trigger as the image stores it: the text after `ONBUILD`, heredoc bodies
    /// appended (`\n` body delimiter).
    pub expression: String,
    /// The trigger, checked now rather than when a child image runs it.
    pub trigger: Box<Instruction>,
}

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopsignalCommand {
    pub signal: String,
}

/// The checks of `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `["CMD", args...]` (exec form) or `["CMD-SHELL", "command"]` (shell form).
    pub test: Vec<String>,
    /// `None`: not given or zero (the image default applies).
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthcheckCommand {
    /// `NONE`: disable any inherited healthcheck.
    Disable,
    Check(HealthCheck),
}

impl HealthcheckCommand {
    /// The image config's `Test` (`["NONE"]` when disabled).
    pub fn test(&self) -> Vec<String> {
        match self {
            HealthcheckCommand::Disable => vec!["NONE".to_string()],
            HealthcheckCommand::Check(c) => c.test.clone(),
        }
    }
}

/// One Dockerfile instruction, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(FromCommand),
    Run(RunCommand),
    Cmd(CmdCommand),
    Label(LabelCommand),
    Maintainer(MaintainerCommand),
    Expose(ExposeCommand),
    Env(EnvCommand),
    Add(AddCommand),
    Copy(CopyCommand),
    Entrypoint(EntrypointCommand),
    Volume(VolumeCommand),
    User(UserCommand),
    Workdir(WorkdirCommand),
    Arg(ArgCommand),
    Onbuild(OnbuildCommand),
    Stopsignal(StopsignalCommand),
    Healthcheck(HealthcheckCommand),
    Shell(ShellCommand),
}

/// An instruction with the place it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub instruction: Instruction,
    pub start_line: usize,
    pub end_line: usize,
    /// The logical source line.
    pub original: String,
}

impl Located {
    /// [`Instruction::expand`], with errors placed at this instruction's line.
    pub fn expand(&mut self, f: &mut ExpandWord<'_>) -> Result<(), Error> {
        let line = self.start_line;
        self.instruction.expand(f).map_err(|e| at_line(e, line))
    }

    /// [`Instruction::expand_words`], with errors placed at this instruction's line.
    pub fn expand_words(&mut self, f: &mut ExpandWords<'_>) -> Result<(), Error> {
        let line = self.start_line;
        self.instruction
            .expand_words(f)
            .map_err(|e| at_line(e, line))
    }

    /// [`Instruction::expand_heredocs`], with errors placed at this instruction's line.
    pub fn expand_heredocs(&mut self, f: &mut ExpandWord<'_>) -> Result<(), Error> {
        let line = self.start_line;
        self.instruction
            .expand_heredocs(f)
            .map_err(|e| at_line(e, line))
    }
}

/// Types every instruction of the tree, stopping at the first error.
pub fn lower(ast: &Ast) -> Result<Vec<Located>, Error> {
    ast.nodes
        .iter()
        .map(|node| {
            Ok(Located {
                instruction: from_node(node, ast.escape).map_err(|e| at_instruction(e, node))?,
                start_line: node.start_line,
                end_line: node.end_line,
                original: node.original.clone(),
            })
        })
        .collect()
}

/// Errors found while typing an instruction point at its first column (where its keyword
/// starts) unless they already name a better one.
fn at_instruction(e: Error, node: &Node) -> Error {
    if e.column != 0 || e.line != node.start_line {
        return e;
    }
    let indent = node
        .original
        .chars()
        .take_while(|c| c.is_whitespace())
        .count();
    e.at_column(indent + 1)
}

/// Types one instruction. `escape` is the file's escape character (it decides how
/// heredoc delimiters among COPY/ADD sources are read). Errors carry the node's line.
pub fn from_node(node: &Node, escape: char) -> Result<Instruction, Error> {
    parse_node(node, escape).map_err(|e| {
        let e = at_line(e, node.start_line);
        if e.source_line.is_none() && !node.original.is_empty() {
            let text = node.original.trim_end().to_string();
            e.with_source_line(text)
        } else {
            e
        }
    })
}

fn at_line(mut e: Error, line: usize) -> Error {
    if e.line == 0 {
        e.line = line;
    }
    e
}

fn err(message: impl Into<String>) -> Error {
    Error::new(0, message)
}

fn at_least_one(keyword: &str) -> Error {
    err(format!("{keyword} requires at least one argument"))
}

fn exactly_one(keyword: &str) -> Error {
    err(format!("{keyword} requires exactly one argument"))
}

fn parse_node(node: &Node, escape: char) -> Result<Instruction, Error> {
    Ok(match node.keyword.as_str() {
        "from" => Instruction::From(parse_from(node)?),
        "run" => Instruction::Run(parse_run(node)?),
        "cmd" => {
            no_flags(node)?;
            Instruction::Cmd(CmdCommand {
                command: CommandForm::from_args(&node.args, node.json),
            })
        }
        "entrypoint" => {
            no_flags(node)?;
            Instruction::Entrypoint(EntrypointCommand {
                command: CommandForm::from_args(&node.args, node.json),
            })
        }
        "shell" => Instruction::Shell(parse_shell(node)?),
        "label" => Instruction::Label(LabelCommand {
            labels: parse_key_values(node, "LABEL")?,
        }),
        "env" => Instruction::Env(EnvCommand {
            vars: parse_key_values(node, "ENV")?,
        }),
        "maintainer" => Instruction::Maintainer(MaintainerCommand {
            maintainer: single_arg(node, "MAINTAINER")?,
        }),
        "workdir" => Instruction::Workdir(WorkdirCommand {
            path: single_arg(node, "WORKDIR")?,
        }),
        "user" => Instruction::User(UserCommand {
            user: single_arg(node, "USER")?,
        }),
        "stopsignal" => Instruction::Stopsignal(StopsignalCommand {
            signal: single_arg(node, "STOPSIGNAL")?,
        }),
        "expose" => {
            if node.args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            no_flags(node)?;
            Instruction::Expose(ExposeCommand {
                ports: node.args.clone(),
            })
        }
        "volume" => Instruction::Volume(parse_volume(node)?),
        "arg" => Instruction::Arg(parse_arg(node)?),
        "copy" => Instruction::Copy(parse_copy(node, escape)?),
        "add" => Instruction::Add(parse_add(node, escape)?),
        "onbuild" => Instruction::Onbuild(parse_onbuild(node, escape)?),
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(node)?),
        _ => return Err(unknown_instruction(node)),
    })
}

/// The keyword with the case the user wrote it in (the node keeps it lowercased).
fn keyword_as_written(node: &Node) -> &str {
    node.original
        .split_whitespace()
        .find(|w| w.to_lowercase() == node.keyword)
        .unwrap_or(&node.keyword)
}

fn unknown_instruction(node: &Node) -> Error {
    let word = keyword_as_written(node);
    let e = err(format!("unknown instruction: {word}"));
    match suggest(word, &KEYWORDS) {
        Some(s) => e.with_suggestion(s),
        None => e,
    }
}

/// Checks the flags of an instruction that takes none.
fn no_flags(node: &Node) -> Result<(), Error> {
    BuilderFlags::new().parse(&node.flags)
}

fn single_arg(node: &Node, keyword: &str) -> Result<String, Error> {
    let [arg] = node.args.as_slice() else {
        return Err(exactly_one(keyword));
    };
    no_flags(node)?;
    Ok(arg.clone())
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_from(node: &Node) -> Result<FromCommand, Error> {
    let (image, stage_name) = match node.args.as_slice() {
        [image] => (image.clone(), None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(err(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    go_quote(name)
                )));
            }
            (image.clone(), Some(lower))
        }
        _ => return Err(err("FROM requires either one or three arguments")),
    };
    let mut flags = BuilderFlags::new();
    flags.add_string("platform", "");
    flags.parse(&node.flags)?;
    let platform = flags
        .string_value("platform")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    Ok(FromCommand {
        image,
        stage_name,
        platform,
    })
}

fn parse_run(node: &Node) -> Result<RunCommand, Error> {
    let mut flags = BuilderFlags::new();
    flags.add_strings("mount");
    flags.add_string("network", "default");
    flags.add_string("security", "sandbox");
    flags.add_strings("device");
    flags.parse(&node.flags)?;

    let mut mounts = Vec::new();
    for spec in flags.string_values("mount") {
        // A spec with a variable can only be read once the planner expands it.
        let mount = if spec.contains('$') {
            mount::check_unexpanded_mount(spec)?;
            None
        } else {
            Some(parse_mount(spec)?)
        };
        mounts.push(RunMount {
            spec: spec.clone(),
            mount,
        });
    }
    let network = match flags.string_value("network").unwrap_or_default() {
        "default" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => {
            return Err(err(format!(
                "network mode {} not supported",
                go_quote(other)
            )))
        }
    };
    let security = match flags.string_value("security").unwrap_or_default() {
        "sandbox" => Security::Sandbox,
        "insecure" => Security::Insecure,
        other => return Err(err(format!("security {} is not valid", go_quote(other)))),
    };
    let devices = flags
        .string_values("device")
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let files = node
        .heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
        })
        .collect();
    Ok(RunCommand {
        command: CommandForm::from_args(&node.args, node.json),
        files,
        mounts,
        network,
        security,
        devices,
        flags_used: flags.used(),
    })
}

fn parse_shell(node: &Node) -> Result<ShellCommand, Error> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(at_least_one("SHELL"));
    }
    if !node.json {
        return Err(not_json("SHELL", &node.original));
    }
    Ok(ShellCommand {
        shell: node.args.clone(),
    })
}

/// The "requires the arguments to be in JSON form" error, with BuildKit's hint for a
/// Windows path whose backslashes were not doubled.
fn not_json(keyword: &str, original: &str) -> Error {
    let lower = original.to_lowercase();
    let looks_like_windows_path = lower
        .as_bytes()
        .windows(4)
        .any(|w| w[0] == b'"' && w[1].is_ascii_lowercase() && w[2] == b':' && w[3] == b'\\');
    let hint = if looks_like_windows_path
        && !lower.contains("\\\\")
        && lower.contains('[')
        && lower.contains(']')
    {
        format!(
            ". It looks like '{lower}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        )
    } else {
        String::new()
    };
    err(format!(
        "{keyword} requires the arguments to be in JSON form{hint}"
    ))
}

fn parse_key_values(node: &Node, keyword: &str) -> Result<Vec<KeyValue>, Error> {
    if node.args.is_empty() {
        return Err(at_least_one(keyword));
    }
    no_flags(node)?;
    if !node.args.len().is_multiple_of(3) {
        return Err(err(format!("Bad input to {keyword}, too many arguments")));
    }
    node.args
        .chunks_exact(3)
        .map(|triple| {
            let [key, value, delimiter] = triple else {
                return Err(err(format!("Bad input to {keyword}, too many arguments")));
            };
            if key.is_empty() {
                return Err(err(format!("{keyword} names can not be blank")));
            }
            Ok(KeyValue {
                key: key.clone(),
                value: value.clone(),
                no_delimiter: delimiter.is_empty(),
            })
        })
        .collect()
}

fn parse_volume(node: &Node) -> Result<VolumeCommand, Error> {
    if node.args.is_empty() {
        return Err(at_least_one("VOLUME"));
    }
    no_flags(node)?;
    let mut volumes = Vec::new();
    for v in &node.args {
        let v = v.trim();
        if v.is_empty() {
            return Err(err("VOLUME specified can not be an empty string"));
        }
        volumes.push(v.to_string());
    }
    Ok(VolumeCommand { volumes })
}

fn parse_arg(node: &Node) -> Result<ArgCommand, Error> {
    if node.args.is_empty() {
        return Err(at_least_one("ARG"));
    }
    no_flags(node)?;
    let args = node
        .args
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, default)) => ArgDecl {
                name: name.to_string(),
                default: Some(default.to_string()),
            },
            None => ArgDecl {
                name: word.clone(),
                default: None,
            },
        })
        .collect();
    Ok(ArgCommand { args })
}

fn parse_sources(node: &Node, keyword: &str, escape: char) -> Result<Sources, Error> {
    let Some((dest, sources)) = node.args.split_last() else {
        return Err(no_destination(keyword));
    };
    if let Ok(Some(_)) = parse_heredoc_word(dest, escape) {
        return Err(err(format!(
            "{keyword} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut contents = Vec::new();
    for src in sources {
        match parse_heredoc_word(src, escape) {
            Ok(Some(word)) => {
                // A marker without a body (possible in JSON form) is an empty file, as
                // in BuildKit; with a repeated name the last body wins.
                let body = node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == word.name)
                    .map(|h| h.content.as_str())
                    .unwrap_or_default();
                let data = if word.chomp {
                    chomp_heredoc_content(body)
                } else {
                    body.to_string()
                };
                contents.push(SourceContent {
                    path: word.name,
                    data,
                    expand: word.expand,
                });
            }
            _ => paths.push(src.clone()),
        }
    }
    Ok(Sources {
        paths,
        contents,
        dest: dest.clone(),
    })
}

fn no_destination(keyword: &str) -> Error {
    err(format!(
        "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
    ))
}

fn parse_copy(node: &Node, escape: char) -> Result<CopyCommand, Error> {
    if node.args.len() < 2 {
        return Err(no_destination("COPY"));
    }
    let mut flags = BuilderFlags::new();
    flags.add_string("chown", "");
    flags.add_string("from", "");
    flags.add_string("chmod", "");
    flags.add_bool("link", false);
    flags.add_bool("parents", false);
    flags.add_strings("exclude");
    flags.parse(&node.flags)?;
    let from = flags.given_string("from").map(str::to_string);
    if from.as_deref().is_some_and(|f| f.contains('$')) {
        return Err(err("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"));
    }
    Ok(CopyCommand {
        sources: parse_sources(node, "COPY", escape)?,
        from,
        chown: flags.given_string("chown").map(str::to_string),
        chmod: flags.given_string("chmod").map(str::to_string),
        link: flags.bool_value("link"),
        parents: flags.bool_value("parents"),
        excludes: flags.string_values("exclude").to_vec(),
    })
}

fn parse_add(node: &Node, escape: char) -> Result<AddCommand, Error> {
    if node.args.len() < 2 {
        return Err(no_destination("ADD"));
    }
    let mut flags = BuilderFlags::new();
    flags.add_string("chown", "");
    flags.add_string("chmod", "");
    flags.add_bool("link", false);
    flags.add_bool("keep-git-dir", false);
    flags.add_string("checksum", "");
    flags.add_strings("exclude");
    flags.add_bool("unpack", false);
    flags.parse(&node.flags)?;
    Ok(AddCommand {
        sources: parse_sources(node, "ADD", escape)?,
        chown: flags.given_string("chown").map(str::to_string),
        chmod: flags.given_string("chmod").map(str::to_string),
        link: flags.bool_value("link"),
        keep_git_dir: flags.given_bool("keep-git-dir"),
        checksum: flags.given_string("checksum").map(str::to_string),
        excludes: flags.string_values("exclude").to_vec(),
        unpack: flags.given_bool("unpack"),
    })
}

fn parse_onbuild(node: &Node, escape: char) -> Result<OnbuildCommand, Error> {
    let Some(inner) = node.inner.as_deref() else {
        return Err(at_least_one("ONBUILD"));
    };
    no_flags(node)?;
    let trigger_keyword = inner.keyword.to_uppercase();
    match trigger_keyword.as_str() {
        "ONBUILD" => return Err(err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        "FROM" | "MAINTAINER" => {
            return Err(err(format!(
                "{trigger_keyword} isn't allowed as an ONBUILD trigger"
            )))
        }
        _ => {}
    }
    // The parser may attach the heredoc bodies to either node.
    let heredocs = if node.heredocs.is_empty() {
        &inner.heredocs
    } else {
        &node.heredocs
    };
    let trigger = if inner.heredocs.is_empty() && !heredocs.is_empty() {
        let mut with_bodies = inner.clone();
        with_bodies.heredocs = heredocs.clone();
        from_node(&with_bodies, escape)?
    } else {
        from_node(inner, escape)?
    };
    let mut expression = strip_onbuild_keyword(&node.original).to_string();
    for h in heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(OnbuildCommand {
        expression,
        trigger: Box::new(trigger),
    })
}

/// The text after a leading `ONBUILD` (any case) and the blanks around it.
fn strip_onbuild_keyword(original: &str) -> &str {
    let text = original.trim_start();
    match text.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("onbuild") => text[7..].trim_start(),
        _ => text,
    }
}

/// A HEALTHCHECK duration flag: empty or zero is unset; otherwise at least 1ms.
fn parse_health_duration(name: &str, value: &str) -> Result<Option<Duration>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    let nanos = parse_go_duration(value).map_err(err)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(err(format!(
            "Interval {} cannot be less than 1ms",
            go_quote(name)
        )));
    }
    Ok(u64::try_from(nanos).ok().map(Duration::from_nanos))
}

/// Go's `strconv.ParseInt(s, 10, 32)`, with its error texts.
fn parse_go_i32(s: &str) -> Result<i32, Error> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_quote(s)
        )));
    }
    s.strip_prefix('+').unwrap_or(s).parse().map_err(|_| {
        err(format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(s)
        ))
    })
}

fn parse_healthcheck(node: &Node) -> Result<HealthcheckCommand, Error> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let mut flags = BuilderFlags::new();
    for name in [
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ] {
        flags.add_string(name, "");
    }
    flags.parse(&node.flags)?;
    let kind = kind.to_uppercase();
    match kind.as_str() {
        "NONE" => {
            if !rest.is_empty() {
                return Err(err("HEALTHCHECK NONE takes no arguments"));
            }
            Ok(HealthcheckCommand::Disable)
        }
        "CMD" => {
            let command = handle_json_args(rest, node.json);
            if command.is_empty() {
                return Err(err("Missing command after HEALTHCHECK CMD"));
            }
            let head = if node.json { "CMD" } else { "CMD-SHELL" };
            let mut test = vec![head.to_string()];
            test.extend(command);
            let duration = |name: &str| {
                parse_health_duration(name, flags.string_value(name).unwrap_or_default())
            };
            let retries = match flags.string_value("retries").unwrap_or_default() {
                "" => None,
                value => {
                    let n = parse_go_i32(value)?;
                    Some(
                        u32::try_from(n)
                            .map_err(|_| err(format!("--retries cannot be negative ({n})")))?,
                    )
                }
            };
            Ok(HealthcheckCommand::Check(HealthCheck {
                test,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            }))
        }
        _ => Err(err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            go_quote(&kind)
        ))),
    }
}

fn expand_in_place(value: &mut String, f: &mut ExpandWord<'_>) -> Result<(), Error> {
    *value = f(value)?;
    Ok(())
}

fn expand_all(values: &mut [String], f: &mut ExpandWord<'_>) -> Result<(), Error> {
    values.iter_mut().try_for_each(|v| expand_in_place(v, f))
}

fn expand_option(value: &mut Option<String>, f: &mut ExpandWord<'_>) -> Result<(), Error> {
    value.as_mut().map_or(Ok(()), |v| expand_in_place(v, f))
}

fn expand_key_values(kvs: &mut [KeyValue], f: &mut ExpandWord<'_>) -> Result<(), Error> {
    for kv in kvs {
        expand_in_place(&mut kv.key, f)?;
        expand_in_place(&mut kv.value, f)?;
    }
    Ok(())
}

fn expand_sources(s: &mut Sources, f: &mut ExpandWord<'_>) -> Result<(), Error> {
    expand_all(&mut s.paths, f)?;
    expand_in_place(&mut s.dest, f)
}

impl Instruction {
    /// The keyword, uppercase.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
        }
    }

    /// Applies a single-word expansion to exactly the fields BuildKit expands:
    ///
    /// - FROM: the image and `--platform` (the caller passes the global ARGs); never
    ///   the stage name.
    /// - ENV, LABEL: every key and value.
    /// - ARG: every name and default.
    /// - COPY: source paths, destination, `--chown`, `--chmod`, `--exclude`; not
    ///   `--from` (variables there are rejected when the instruction is typed), and
    ///   not heredoc bodies (see [`Self::expand_heredocs`]).
    /// - ADD: as COPY, plus `--checksum`.
    /// - WORKDIR, USER, STOPSIGNAL: the value. VOLUME: every path.
    /// - RUN: every `--mount` option value (the spec is read again, so `mount` is
    ///   always set afterwards); never the command, its heredocs, `--network`,
    ///   `--security` or `--device`.
    /// - EXPOSE: nothing here; BuildKit splits its words, see [`Self::expand_words`].
    /// - CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER: nothing.
    pub fn expand(&mut self, f: &mut ExpandWord<'_>) -> Result<(), Error> {
        match self {
            Instruction::From(c) => {
                expand_in_place(&mut c.image, f)?;
                expand_option(&mut c.platform, f)
            }
            Instruction::Env(c) => expand_key_values(&mut c.vars, f),
            Instruction::Label(c) => expand_key_values(&mut c.labels, f),
            Instruction::Arg(c) => {
                for arg in &mut c.args {
                    expand_in_place(&mut arg.name, f)?;
                    expand_option(&mut arg.default, f)?;
                }
                Ok(())
            }
            Instruction::Copy(c) => {
                expand_option(&mut c.chown, f)?;
                expand_option(&mut c.chmod, f)?;
                expand_all(&mut c.excludes, f)?;
                expand_sources(&mut c.sources, f)
            }
            Instruction::Add(c) => {
                expand_option(&mut c.chown, f)?;
                expand_option(&mut c.chmod, f)?;
                expand_option(&mut c.checksum, f)?;
                expand_all(&mut c.excludes, f)?;
                expand_sources(&mut c.sources, f)
            }
            Instruction::Workdir(c) => expand_in_place(&mut c.path, f),
            Instruction::User(c) => expand_in_place(&mut c.user, f),
            Instruction::Stopsignal(c) => expand_in_place(&mut c.signal, f),
            Instruction::Volume(c) => expand_all(&mut c.volumes, f),
            Instruction::Run(c) => {
                for m in &mut c.mounts {
                    m.mount = Some(parse_mount_with(&m.spec, f)?);
                }
                Ok(())
            }
            Instruction::Expose(_)
            | Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Healthcheck(_)
            | Instruction::Onbuild(_)
            | Instruction::Maintainer(_) => Ok(()),
        }
    }

    /// Applies a word-splitting expansion to EXPOSE's specs (`EXPOSE $PORTS` with
    /// `PORTS="80 443"` exposes two ports). Other instructions are left alone.
    pub fn expand_words(&mut self, f: &mut ExpandWords<'_>) -> Result<(), Error> {
        if let Instruction::Expose(c) = self {
            let mut ports = Vec::with_capacity(c.ports.len());
            for p in &c.ports {
                ports.extend(f(p)?);
            }
            c.ports = ports;
        }
        Ok(())
    }

    /// Applies an expansion that keeps quotes to the bodies of COPY/ADD heredoc sources
    /// whose delimiter was unquoted (BuildKit's `ExpandRaw`). Other instructions, and
    /// RUN heredocs (the shell expands those), are left alone.
    pub fn expand_heredocs(&mut self, f: &mut ExpandWord<'_>) -> Result<(), Error> {
        let sources = match self {
            Instruction::Copy(c) => &mut c.sources,
            Instruction::Add(c) => &mut c.sources,
            _ => return Ok(()),
        };
        for content in sources.contents.iter_mut().filter(|c| c.expand) {
            expand_in_place(&mut content.data, f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

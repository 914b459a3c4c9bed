//! Instructions → the build's stages and their dependency graph.
//!
//! Planning is static: it splits the Dockerfile into stages, evaluates the global ARGs
//! (those before the first FROM) with the build args and the platform's predefined
//! args, expands each FROM, resolves every `FROM <stage>` and `COPY --from` to a stage
//! or an image, rejects cycles and forward references, picks the target and prunes the
//! stages it does not need. What depends on a base image's contents (ENV values from
//! its config, ONBUILD triggers, owners from its /etc/passwd) is resolved when the
//! stage runs, in `build/`.

use crate::dockerfile::expand::{Env, Lexer};
use crate::dockerfile::instruction::{Instruction, Located};
use crate::dockerfile::Error;
use std::collections::BTreeMap;

/// The platform a build targets (and runs on: kiln builds only for its host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?.to_string();
        let architecture = parts.next().filter(|p| !p.is_empty())?.to_string();
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            os,
            architecture,
            variant,
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The predefined platform ARGs (TARGETPLATFORM, TARGETOS, ... BUILDPLATFORM, ...).
pub fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Build args that reach RUN without being declared and never count in cache keys.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference, as written after expansion.
    Image(String),
}

/// Where a `COPY --from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Stage(usize),
    Image(String),
}

/// One stage of the build.
#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=...`, expanded.
    pub platform: Option<String>,
    /// The FROM instruction.
    pub from: Located,
    /// The instructions after FROM, in order.
    pub instructions: Vec<Located>,
    /// For each instruction, where its `--from` reads (None without one).
    pub copy_from: Vec<Option<From>>,
    /// Stages this one needs finished first (its base and its `--from` stages).
    pub deps: Vec<usize>,
}

impl Stage {
    /// How progress names the stage: its name, else `stage-N`.
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("stage-{}", self.index),
        }
    }
}

/// The build's stages.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// The stage whose result is the image.
    pub target: usize,
    /// Which stages the target needs (itself included), by index.
    pub needed: Vec<bool>,
    /// Global ARGs (before the first FROM) with their values, in declaration order.
    pub global_args: Vec<(String, Option<String>)>,
    /// The ARGs every stage sees without declaring them (platform args).
    pub builtin_args: BTreeMap<String, String>,
}

/// What the plan needs from the user.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    /// The platform the build runs on (BUILDPLATFORM and friends).
    pub build_platform: Platform,
    pub escape: char,
}

/// A lookup over ordered (name, value) pairs where a later pair wins; a name with no
/// value counts as unset.
struct ArgEnv<'a> {
    scoped: &'a [(String, Option<String>)],
    builtin: &'a BTreeMap<String, String>,
}

impl Env for ArgEnv<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        for (k, v) in self.scoped.iter().rev() {
            if k == name {
                return v.as_deref();
            }
        }
        self.builtin.get(name).map(String::as_str)
    }
}

fn at(line: usize, msg: impl Into<String>) -> Error {
    Error::new(line, msg)
}

/// Plan the build of `instructions`.
pub fn plan(instructions: &[Located], opts: &PlanOptions) -> Result<Plan, Error> {
    let lexer = Lexer::new(opts.escape);
    let builtin = platform_args(&opts.platform, &opts.build_platform);
    let mut global_args: Vec<(String, Option<String>)> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();

    let mut iter = instructions.iter().peekable();
    // Global scope: ARGs only, until the first FROM.
    while let Some(l) = iter.peek() {
        match &l.instruction {
            Instruction::From(_) => break,
            Instruction::Arg(arg) => {
                for decl in &arg.args {
                    let name = decl.name.clone();
                    let value = match opts.build_args.get(&name) {
                        Some(v) => Some(v.clone()),
                        None => match &decl.default {
                            Some(d) => Some(
                                lexer
                                    .process_word(
                                        d,
                                        &ArgEnv {
                                            scoped: &global_args,
                                            builtin: &builtin,
                                        },
                                    )
                                    .map_err(|e| at(l.start_line, e.to_string()))?,
                            ),
                            None => None,
                        },
                    };
                    global_args.push((name, value));
                }
                iter.next();
            }
            other => {
                return Err(at(
                    l.start_line,
                    format!(
                        "{} cannot come before the first FROM (only ARG can)",
                        other.keyword()
                    ),
                ))
            }
        }
    }
    let env = ArgEnv {
        scoped: &global_args,
        builtin: &builtin,
    };
    for l in iter {
        if let Instruction::From(from) = &l.instruction {
            let index = stages.len();
            let image = lexer
                .process_word(&from.image, &env)
                .map_err(|e| at(l.start_line, e.to_string()))?;
            if image.is_empty() {
                return Err(at(l.start_line, "base name (FROM) should not be blank"));
            }
            let platform = match &from.platform {
                Some(p) => Some(
                    lexer
                        .process_word(p, &env)
                        .map_err(|e| at(l.start_line, e.to_string()))?,
                ),
                None => None,
            };
            let lower = image.to_ascii_lowercase();
            let base = if lower == "scratch" {
                Base::Scratch
            } else if let Some(s) = stages
                .iter()
                .find(|s| s.name.as_deref() == Some(lower.as_str()))
            {
                Base::Stage(s.index)
            } else {
                Base::Image(image)
            };
            let name = from.stage_name.as_ref().map(|n| n.to_ascii_lowercase());
            if let Some(n) = &name {
                if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                    return Err(at(l.start_line, format!("duplicate stage name {n:?}")));
                }
            }
            let deps = match base {
                Base::Stage(i) => vec![i],
                _ => vec![],
            };
            stages.push(Stage {
                index,
                name,
                base,
                platform,
                from: l.clone(),
                instructions: Vec::new(),
                copy_from: Vec::new(),
                deps,
            });
            continue;
        }
        let Some(stage) = stages.last_mut() else {
            continue;
        };
        stage.instructions.push(l.clone());
        stage.copy_from.push(None);
    }
    if stages.is_empty() {
        return Err(at(0, "dockerfile contains no stages to build"));
    }

    // `--from` references: a stage by name (case-insensitive) or index, else an image.
    let names: Vec<Option<String>> = stages.iter().map(|s| s.name.clone()).collect();
    let count = stages.len();
    for stage in stages.iter_mut() {
        for (i, l) in stage.instructions.iter().enumerate() {
            let Instruction::Copy(copy) = &l.instruction else {
                continue;
            };
            let Some(from) = copy.from.as_deref() else {
                continue;
            };
            if from.contains('$') {
                return Err(at(
                    l.start_line,
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                ));
            }
            let lower = from.to_ascii_lowercase();
            let target = names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
                .or_else(|| lower.parse::<usize>().ok().filter(|i| *i < count));
            let resolved = match target {
                Some(t) if t == stage.index => {
                    return Err(at(
                        l.start_line,
                        format!("circular dependency detected on stage: {}", stage.display()),
                    ))
                }
                Some(t) if t > stage.index => {
                    return Err(at(
                        l.start_line,
                        format!(
                            "cannot copy from stage {from:?}, it needs to be defined before current stage {:?}",
                            stage.display()
                        ),
                    ))
                }
                Some(t) => {
                    if !stage.deps.contains(&t) {
                        stage.deps.push(t);
                    }
                    From::Stage(t)
                }
                None => From::Image(from.to_string()),
            };
            stage.copy_from[i] = Some(resolved);
        }
    }

    let target = match &opts.target {
        None => count - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            match names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
            {
                Some(i) => i,
                None => {
                    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
                    let mut msg = format!("target stage {t:?} could not be found");
                    if let Some(s) = crate::dockerfile::instruction::suggest(&lower, &known) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(at(0, msg));
                }
            }
        }
    };
    let mut needed = vec![false; count];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        todo.extend(stages[i].deps.iter().copied());
    }
    Ok(Plan {
        stages,
        target,
        needed,
        global_args,
        builtin_args: builtin,
    })
}

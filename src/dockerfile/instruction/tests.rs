use super::*;
use crate::dockerfile::ast::Heredoc;

fn node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
    let words: Vec<&str> = std::iter::once(keyword)
        .chain(flags.iter().copied())
        .chain(args.iter().copied())
        .collect();
    Node {
        keyword: keyword.to_lowercase(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        original: words.join(" "),
        start_line: 7,
        end_line: 7,
        ..Node::default()
    }
}

fn json(mut n: Node) -> Node {
    n.json = true;
    n
}

fn parse(n: &Node) -> Instruction {
    from_node(n, '\\').unwrap()
}

fn fail(n: &Node) -> Error {
    from_node(n, '\\').unwrap_err()
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool) -> Heredoc {
    Heredoc {
        name: name.into(),
        file_descriptor: 0,
        expand,
        chomp,
        content: content.into(),
    }
}

#[test]
fn from_with_stage_and_platform() {
    let i = parse(&node(
        "FROM",
        &["--platform=linux/arm64"],
        &["alpine:3", "As", "Build-1"],
    ));
    assert_eq!(
        i,
        Instruction::From(FromCommand {
            image: "alpine:3".into(),
            stage_name: Some("build-1".into()),
            platform: Some("linux/arm64".into()),
        })
    );
    assert_eq!(
        fail(&node("FROM", &[], &["a", "b"])).message,
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        fail(&node("FROM", &[], &["a", "AS", "1x"])).message,
        "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert!(from_node(&node("FROM", &[], &["a", "AS", "x$y"]), '\\').is_err());
    assert_eq!(
        fail(&node("FROM", &["--plat=x"], &["a"])).message,
        "unknown flag: --plat"
    );
}

#[test]
fn errors_carry_line_and_source() {
    let e = fail(&node("WORKDIR", &[], &[]));
    assert_eq!(e.line, 7);
    assert_eq!(e.source_line.as_deref(), Some("WORKDIR"));
}

#[test]
fn unknown_instruction_suggests() {
    let e = fail(&node("RUNN", &[], &["echo"]));
    assert_eq!(e.message, "unknown instruction: RUNN");
    assert_eq!(e.suggestion.as_deref(), Some("RUN"));
    let e = fail(&node("foo", &[], &["bar"]));
    assert_eq!(e.message, "unknown instruction: foo");
    assert_eq!(e.suggestion, None);
    let e = fail(&node("fntrypoint", &[], &["x"]));
    assert_eq!(e.suggestion.as_deref(), Some("ENTRYPOINT"));
}

#[test]
fn run_forms_flags_and_heredocs() {
    let Instruction::Run(r) = parse(&node("RUN", &[], &["echo hi"])) else {
        panic!()
    };
    assert_eq!(r.command, CommandForm::Shell("echo hi".into()));
    assert_eq!(r.network, Network::Default);
    assert_eq!(r.security, Security::Sandbox);
    assert!(r.flags_used.is_empty());

    let Instruction::Run(r) = parse(&json(node("RUN", &[], &["ls", "/"]))) else {
        panic!()
    };
    assert_eq!(r.command, CommandForm::Exec(vec!["ls".into(), "/".into()]));

    let mut n = node("RUN", &[], &["<<-EOF"]);
    n.heredocs = vec![heredoc("EOF", "\techo\n", true, true)];
    let Instruction::Run(r) = parse(&n) else {
        panic!()
    };
    assert_eq!(r.command.to_vec(), ["<<-EOF"]);
    assert_eq!(
        r.files,
        [InlineFile {
            name: "EOF".into(),
            data: "\techo\n".into(),
            chomp: true
        }]
    );

    let Instruction::Run(r) = parse(&node(
        "RUN",
        &[
            "--mount=type=cache,target=/c",
            "--mount=type=secret,id=$ID",
            "--network=none",
            "--security=insecure",
            "--device=nvidia.com/gpu=all,required",
        ],
        &["make"],
    )) else {
        panic!()
    };
    assert_eq!(r.flags_used, ["device", "mount", "network", "security"]);
    assert!(matches!(r.mounts[0].mount, Some(Mount::Cache(_))));
    assert_eq!(r.mounts[1].mount, None);
    assert_eq!(r.network, Network::None);
    assert_eq!(r.security, Security::Insecure);
    assert!(r.devices[0].required);

    assert_eq!(
        fail(&node("RUN", &["--network=bridge"], &["x"])).message,
        "network mode \"bridge\" not supported"
    );
    assert_eq!(
        fail(&node("RUN", &["--security=x"], &["x"])).message,
        "security \"x\" is not valid"
    );
    assert!(fail(&node("RUN", &["--mount=from=$X"], &["x"]))
        .message
        .contains("'from' doesn't support variable expansion"));
    let e = fail(&node("RUN", &["--mont=type=cache"], &["x"]));
    assert_eq!(e.message, "unknown flag: --mont");
    assert_eq!(e.suggestion.as_deref(), Some("mount"));
}

#[test]
fn run_mount_expansion_fills_mount() {
    let mut i = parse(&node("RUN", &["--mount=type=secret,id=$ID"], &["x"]));
    i.expand(&mut |w| Ok(w.replace("$ID", "tok"))).unwrap();
    let Instruction::Run(r) = i else { panic!() };
    let Some(Mount::Secret(s)) = &r.mounts[0].mount else {
        panic!()
    };
    assert_eq!(s.id.as_deref(), Some("tok"));
    // The command text is never expanded.
    assert_eq!(r.command, CommandForm::Shell("x".into()));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        parse(&node("CMD", &[], &["a  b"])),
        Instruction::Cmd(CmdCommand {
            command: CommandForm::Shell("a  b".into())
        })
    );
    assert_eq!(
        parse(&json(node("ENTRYPOINT", &[], &[]))),
        Instruction::Entrypoint(EntrypointCommand {
            command: CommandForm::Exec(vec![])
        })
    );
    assert_eq!(
        parse(&json(node("SHELL", &[], &["/bin/bash", "-c"]))),
        Instruction::Shell(ShellCommand {
            shell: vec!["/bin/bash".into(), "-c".into()]
        })
    );
    assert_eq!(
        fail(&node("SHELL", &[], &["bash -c"])).message,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        fail(&json(node("SHELL", &[], &[]))).message,
        "SHELL requires at least one argument"
    );
    assert!(fail(&node("CMD", &["--x"], &["a"]))
        .message
        .contains("unknown flag: --x"));
}

#[test]
fn env_label_triples() {
    let Instruction::Env(e) = parse(&node("ENV", &[], &["A", "1 2", "", "B", "\"x\"", "="])) else {
        panic!()
    };
    assert_eq!(
        e.vars,
        [
            KeyValue {
                key: "A".into(),
                value: "1 2".into(),
                no_delimiter: true
            },
            KeyValue {
                key: "B".into(),
                value: "\"x\"".into(),
                no_delimiter: false
            }
        ]
    );
    assert_eq!(
        fail(&node("LABEL", &[], &["a", "b"])).message,
        "Bad input to LABEL, too many arguments"
    );
    assert_eq!(
        fail(&node("ENV", &[], &["", "b", "="])).message,
        "ENV names can not be blank"
    );
}

#[test]
fn single_argument_instructions() {
    assert_eq!(
        parse(&node("USER", &[], &["app:app"])),
        Instruction::User(UserCommand {
            user: "app:app".into()
        })
    );
    assert_eq!(
        fail(&node("STOPSIGNAL", &[], &["a", "b"])).message,
        "STOPSIGNAL requires exactly one argument"
    );
    assert_eq!(
        fail(&node("MAINTAINER", &["--boo"], &["joe"])).message,
        "unknown flag: --boo"
    );
}

#[test]
fn volume_arg_expose() {
    assert_eq!(
        parse(&node("VOLUME", &[], &["/a", "/b"])),
        Instruction::Volume(VolumeCommand {
            volumes: vec!["/a".into(), "/b".into()]
        })
    );
    assert_eq!(
        fail(&json(node("VOLUME", &[], &[" "]))).message,
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(
        parse(&node("ARG", &[], &["a=\"1 2\"", "b", "c="])),
        Instruction::Arg(ArgCommand {
            args: vec![
                ArgDecl {
                    name: "a".into(),
                    default: Some("\"1 2\"".into())
                },
                ArgDecl {
                    name: "b".into(),
                    default: None
                },
                ArgDecl {
                    name: "c".into(),
                    default: Some(String::new())
                },
            ]
        })
    );
    let mut i = parse(&node("EXPOSE", &[], &["$PORTS", "22"]));
    i.expand(&mut |_| panic!("EXPOSE is split, not expanded word by word"))
        .unwrap();
    i.expand_words(&mut |w| {
        Ok(if w == "$PORTS" {
            vec!["80".into(), "53/udp".into()]
        } else {
            vec![w.into()]
        })
    })
    .unwrap();
    let Instruction::Expose(e) = i else { panic!() };
    let keys: Vec<String> = e
        .exposed_ports()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["80/tcp", "53/udp", "22/tcp"]);
}

#[test]
fn copy_flags_and_sources() {
    let mut n = node(
        "COPY",
        &[
            "--from=build",
            "--chown=1:2",
            "--chmod=644",
            "--link",
            "--parents",
            "--exclude=*.md",
            "--exclude=.git",
        ],
        &["a", "<<EOF", "/dst/"],
    );
    n.heredocs = vec![heredoc("EOF", "hi\n", true, false)];
    let Instruction::Copy(c) = parse(&n) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("644"));
    assert!(c.link && c.parents);
    assert_eq!(c.excludes, ["*.md", ".git"]);
    assert_eq!(c.sources.paths, ["a"]);
    assert_eq!(
        c.sources.contents,
        [SourceContent {
            path: "EOF".into(),
            data: "hi\n".into(),
            expand: true
        }]
    );
    assert_eq!(c.sources.dest, "/dst/");

    assert!(fail(&node("COPY", &["--from=$X"], &["a", "b"]))
        .message
        .contains("variable expansion is not supported for --from"));
    assert_eq!(
        fail(&node("COPY", &["--link=maybe"], &["a", "b"])).message,
        "expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(
        fail(&node("COPY", &["--checksum=x"], &["a", "b"])).message,
        "unknown flag: --checksum"
    );
    assert_eq!(
        fail(&node("COPY", &[], &["a", "<<EOF"])).message,
        "COPY cannot accept a heredoc as a destination"
    );
}

#[test]
fn add_flags() {
    let Instruction::Add(a) = parse(&node(
        "ADD",
        &[
            "--checksum=sha256:abc",
            "--keep-git-dir=false",
            "--unpack",
            "--chown=u",
        ],
        &["https://x/y.tar", "/"],
    )) else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.keep_git_dir, Some(false));
    assert_eq!(a.unpack, Some(true));
    assert_eq!(a.chown.as_deref(), Some("u"));
    assert!(!a.link);
    assert!(fail(&node("ADD", &["--from=x"], &["a", "b"]))
        .message
        .contains("unknown flag: --from"));
}

#[test]
fn copy_expansion_fields() {
    let mut n = node(
        "COPY",
        &["--from=s", "--chown=$U", "--chmod=$M", "--exclude=$E"],
        &["$SRC", "<<EOF", "$DST"],
    );
    n.heredocs = vec![heredoc("EOF", "$BODY\n", true, false)];
    let mut i = parse(&n);
    i.expand(&mut |w| Ok(format!("[{w}]"))).unwrap();
    let Instruction::Copy(c) = &i else { panic!() };
    assert_eq!(c.from.as_deref(), Some("s"));
    assert_eq!(c.chown.as_deref(), Some("[$U]"));
    assert_eq!(c.chmod.as_deref(), Some("[$M]"));
    assert_eq!(c.excludes, ["[$E]"]);
    assert_eq!(c.sources.paths, ["[$SRC]"]);
    assert_eq!(c.sources.dest, "[$DST]");
    assert_eq!(c.sources.contents[0].data, "$BODY\n");
    i.expand_heredocs(&mut |w| Ok(w.replace("$BODY", "body")))
        .unwrap();
    let Instruction::Copy(c) = &i else { panic!() };
    assert_eq!(c.sources.contents[0].data, "body\n");
}

#[test]
fn expansion_skips_commands() {
    for n in [
        node("CMD", &[], &["$X"]),
        node("HEALTHCHECK", &[], &["CMD", "$X"]),
        node("MAINTAINER", &[], &["$X"]),
    ] {
        let mut i = parse(&n);
        let before = i.clone();
        i.expand(&mut |_| Ok("changed".into())).unwrap();
        assert_eq!(i, before);
    }
    let mut i = parse(&node("WORKDIR", &[], &["$X"]));
    i.expand(&mut |_| Ok("/w".into())).unwrap();
    assert_eq!(
        i,
        Instruction::Workdir(WorkdirCommand { path: "/w".into() })
    );
}

#[test]
fn located_expand_errors_get_the_line() {
    let n = node("USER", &[], &["$X"]);
    let mut located = lower(&Ast {
        directives: vec![],
        escape: '\\',
        nodes: vec![n],
        warnings: vec![],
    })
    .unwrap();
    let e = located[0]
        .expand(&mut |_| Err(Error::new(0, "boom")))
        .unwrap_err();
    assert_eq!(e.line, 7);
}

#[test]
fn healthcheck() {
    let i = parse(&node(
        "HEALTHCHECK",
        &[
            "--interval=1m30s",
            "--timeout=0s",
            "--start-period=5s",
            "--retries=3",
        ],
        &["CMD", "curl -f http://localhost/"],
    ));
    let Instruction::Healthcheck(HealthcheckCommand::Check(h)) = i else {
        panic!()
    };
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(h.interval, Some(Duration::from_secs(90)));
    assert_eq!(h.timeout, None);
    assert_eq!(h.start_period, Some(Duration::from_secs(5)));
    assert_eq!(h.retries, Some(3));

    let i = parse(&json(node("HEALTHCHECK", &[], &["CMD", "a", "b"])));
    assert_eq!(
        HealthcheckCommand::test(match &i {
            Instruction::Healthcheck(h) => h,
            _ => panic!(),
        }),
        ["CMD", "a", "b"]
    );
    assert_eq!(
        parse(&node("HEALTHCHECK", &[], &["none"])),
        Instruction::Healthcheck(HealthcheckCommand::Disable)
    );
    assert_eq!(
        fail(&node("HEALTHCHECK", &[], &["NONE", "x"])).message,
        "HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        fail(&node("HEALTHCHECK", &[], &["CONNECT", "TCP 7000"])).message,
        "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        fail(&node("HEALTHCHECK", &[], &["CMD"])).message,
        "Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        fail(&node("HEALTHCHECK", &["--retries=-1"], &["CMD", "x"])).message,
        "--retries cannot be negative (-1)"
    );
    assert!(from_node(&node("HEALTHCHECK", &["--retries=x"], &["CMD", "x"]), '\\').is_err());
    assert!(
        from_node(&node("HEALTHCHECK", &["--interval=5"], &["CMD", "x"]), '\\')
            .unwrap_err()
            .message
            .contains("missing unit")
    );
    assert!(
        fail(&node("HEALTHCHECK", &["--timeout=1us"], &["CMD", "x"]))
            .message
            .contains("cannot be less than 1ms")
    );
}

fn onbuild(inner: Node) -> Node {
    let mut n = node("ONBUILD", &[], &[]);
    n.original = format!("ONBUILD {}", inner.original);
    n.inner = Some(Box::new(inner));
    n
}

#[test]
fn onbuild_triggers() {
    let i = parse(&onbuild(node("RUN", &[], &["echo hi"])));
    let Instruction::Onbuild(o) = i else { panic!() };
    assert_eq!(o.expression, "RUN echo hi");
    assert!(matches!(*o.trigger, Instruction::Run(_)));

    let mut outer = onbuild(node("COPY", &[], &["<<EOF", "/x"]));
    outer.heredocs = vec![heredoc("EOF", "body\n", true, false)];
    let Instruction::Onbuild(o) = parse(&outer) else {
        panic!()
    };
    assert_eq!(o.expression, "COPY <<EOF /x\nbody\nEOF");
    let Instruction::Copy(c) = *o.trigger else {
        panic!()
    };
    assert_eq!(c.sources.contents[0].data, "body\n");

    assert_eq!(
        fail(&onbuild(node("FROM", &[], &["scratch"]))).message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        fail(&onbuild(node("maintainer", &[], &["me"]))).message,
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        fail(&onbuild(onbuild(node("RUN", &[], &["x"])))).message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        fail(&node("ONBUILD", &[], &[])).message,
        "ONBUILD requires at least one argument"
    );
    assert_eq!(
        fail(&onbuild(node("RUNN", &[], &["x"]))).message,
        "unknown instruction: RUNN"
    );
}

#[test]
fn json_args() {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(handle_json_args(&[], false).is_empty());
    assert_eq!(handle_json_args(&v(&["a", "b"]), false), ["a b"]);
    assert_eq!(handle_json_args(&v(&["a", "b"]), true), ["a", "b"]);
}

#[test]
fn not_json_hint_for_windows_paths() {
    let mut n = node("SHELL", &[], &["[\"c:\\windows\\cmd.exe\" \"/S\"]"]);
    n.original = "SHELL [\"c:\\windows\\cmd.exe\" \"/S\"]".into();
    assert!(fail(&n).message.contains("without an escaped back-slash"));
}

fn lower_text(text: &str) -> Result<Vec<Located>, Error> {
    lower(&crate::dockerfile::parse(text).unwrap())
}

#[test]
fn from_text_onbuild_keeps_trigger_and_text() {
    let l = lower_text("FROM a\nonbuild  Run echo hi\nONBUILD COPY <<EOF /x\nbody\nEOF\n").unwrap();
    let Instruction::Onbuild(o) = &l[1].instruction else {
        panic!("{:?}", l[1])
    };
    assert_eq!(o.expression, "Run echo hi");
    assert!(matches!(*o.trigger, Instruction::Run(_)));
    let Instruction::Onbuild(o) = &l[2].instruction else {
        panic!("{:?}", l[2])
    };
    assert_eq!(o.expression, "COPY <<EOF /x\nbody\nEOF");
    let Instruction::Copy(c) = &*o.trigger else {
        panic!()
    };
    assert_eq!(c.sources.contents[0].data, "body\n");
    assert_eq!((l[2].start_line, l[2].end_line), (3, 5));
}

#[test]
fn from_text_errors_name_line_and_keyword() {
    let e = lower_text("FROM a\n\nRunn echo\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert_eq!(e.message, "unknown instruction: Runn");
    assert_eq!(e.suggestion.as_deref(), Some("RUN"));
    let e = lower_text("FROM a\nONBUILD Copyy a b\n").unwrap_err();
    assert_eq!(e.message, "unknown instruction: Copyy");
    let e = lower_text("FROM a\nCOPY --chown=1 --chown=2 a b\n").unwrap_err();
    assert_eq!(e.message, "duplicate flag specified: chown");
}

#[test]
fn from_text_mounts_and_healthcheck() {
    let l = lower_text(
        "FROM a\nRUN --mount=type=cache,target=/root/.cache,id=pip \\\n    --mount=type=secret,id=tok,required pip install\nHEALTHCHECK --interval=30s CMD [\"curl\", \"-f\", \"x\"]\n",
    )
    .unwrap();
    let Instruction::Run(r) = &l[1].instruction else {
        panic!()
    };
    assert_eq!(r.command, CommandForm::Shell("pip install".into()));
    assert!(matches!(&r.mounts[0].mount, Some(Mount::Cache(c)) if c.cache_id() == "pip"));
    assert!(matches!(&r.mounts[1].mount, Some(Mount::Secret(s)) if s.required));
    let Instruction::Healthcheck(h) = &l[2].instruction else {
        panic!()
    };
    assert_eq!(h.test(), ["CMD", "curl", "-f", "x"]);
}

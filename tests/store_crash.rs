#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash safety: a seeded loop starts kiln commands (builds with COPY and RUN layers, import,
//! save, load, tag, rmi, prune, builder prune, pulls from and pushes to a docker-registry on
//! loopback, foreground `run --rm`) and SIGKILLs them at random moments. After every kill
//! `kiln system check` must find the store sound, every image that was complete before the
//! kill (and that the killed command was not asked to remove or move) must still resolve to
//! the same manifest, and the next command must work: the killed pull or push again (the
//! registry's copy, pulled into a fresh store, is the image pushed), a run, a build. A killed
//! run must leave no container process and no mount under the store. Leftovers of the killed
//! processes are allowed (unlocked temp entries such as a run's upper dir, stale lease files,
//! records of snapshots never published); at the end, once they are old enough to judge,
//! `--repair` removes them all.
//!
//! Bounded: 200 kills or 90 s of wall time, whichever first. `KILN_CRASH_SEED` picks the
//! seed (the default is fixed, so a failure reproduces).

mod common;

use common::{busybox_tar, context, Kiln, LoopbackRegistry};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// xorshift64*: small, seeded, good enough to pick commands and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// (reference, manifest digest) pairs of index.json.
fn tags(root: &Path) -> BTreeSet<(String, String)> {
    let text = fs::read_to_string(root.join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("index.json does not parse after a kill: {e}\n{text}"));
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((name.to_string(), m["digest"].as_str()?.to_string()))
        })
        .collect()
}

fn full(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else if name.contains(':') {
        format!("docker.io/library/{name}")
    } else {
        format!("docker.io/library/{name}:latest")
    }
}

fn kiln(k: &Kiln) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("kiln"));
    c.arg("--root").arg(k.root());
    c.env_remove("SOURCE_DATE_EPOCH");
    // One process at a time here, so nothing in flight needs the grace period: let every
    // prune sweep as hard as it can.
    c.env("KILN_GC_GRACE_SECONDS", "0");
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn must(k: &Kiln, args: &[&str]) -> String {
    let out = kiln(k).args(args).stdout(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Random content of `len` bytes that does not compress away (so writes take a while).
fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The image ID (config digest) `name` has in the store of `k`.
fn image_id(k: &Kiln, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&must(k, &["inspect", name])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

/// What the registry holds under `reference`, as a pull into a fresh store sees it: every
/// blob is fetched and checked against its digest, so a partial upload cannot pass.
fn registry_image_id(reference: &str) -> String {
    let fresh = Kiln::new();
    must(&fresh, &["pull", "-q", reference]);
    image_id(&fresh, reference)
}

/// Processes whose command line holds `marker`: a killed run's keeper (a fork of kiln, so it
/// keeps kiln's arguments) and the container's command both carry it.
fn processes_with(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            found.push(format!("{pid}: {text}"));
        }
    }
    found
}

/// Mount points at or under `root` in the test's mount namespace.
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(root)))
        .map(String::from)
        .collect()
}

/// What the round must verify after its command was killed, besides the store-wide checks.
enum After {
    Nothing,
    /// Pulling the reference again works and gives this image ID.
    Pull {
        reference: String,
        id: String,
    },
    /// Pushing again works, and the registry's copy is the image with this ID.
    Push {
        source: String,
        dest: String,
        id: String,
    },
    /// No process of the container is left, nothing is mounted under the store, and the
    /// next run works.
    Run {
        marker: String,
    },
}

struct Op {
    kind: &'static str,
    args: Vec<String>,
    /// Full names this command may legitimately remove or move.
    touches: Vec<String>,
    after: After,
}

/// Pushes three images with layers of 1-3 MiB to `reg` as `src/app:{a,b,c}` from a store
/// of their own; returns (reference, image ID) pairs.
fn seed_registry(rng: &mut Rng, reg: &LoopbackRegistry) -> Vec<(String, String)> {
    let seeder = Kiln::new();
    must(&seeder, &["import", busybox_tar().to_str().unwrap(), "bb"]);
    let mut out = Vec::new();
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        let ctx = context(&[(
            "Dockerfile",
            "FROM bb\nCOPY one.bin /one.bin\nCOPY two.bin /two.bin\n",
        )]);
        fs::write(ctx.path().join("one.bin"), noise(rng, (1 + i) << 20)).unwrap();
        fs::write(ctx.path().join("two.bin"), noise(rng, 512 * 1024)).unwrap();
        let reference = format!("{}/src/app:{tag}", reg.host());
        must(
            &seeder,
            &[
                "build",
                "-q",
                "-t",
                &reference,
                ctx.path().to_str().unwrap(),
            ],
        );
        must(&seeder, &["push", "-q", &reference]);
        out.push((reference.clone(), image_id(&seeder, &reference)));
    }
    out
}

#[test]
fn sigkill_at_random_moments_never_breaks_the_store() {
    let seed = std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6e_5eed_u64);
    let mut rng = Rng(seed | 1);
    let k = Kiln::new();
    let root = k.root();
    let bb = busybox_tar().to_str().unwrap().to_string();
    must(&k, &["import", &bb, "bb"]);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("saved.tar");
    must(&k, &["save", "-o", archive.to_str().unwrap(), "bb"]);
    // Pulls and pushes need the registry; without it (and without KILN_REQUIRE_TOOLS) the
    // harness kills the other commands only.
    let reg = LoopbackRegistry::start();
    let remote = reg
        .as_ref()
        .map(|r| seed_registry(&mut rng, r))
        .unwrap_or_default();

    let max_kills = 200;
    let budget = Duration::from_secs(90);
    let started = Instant::now();
    let (mut kills, mut sound_after_kill, mut finished, mut leftovers_seen) = (0, 0, 0, 0);
    // Per kind of command: (killed, finished before the kill).
    let mut by_kind: BTreeMap<&'static str, (u32, u32)> = BTreeMap::new();
    let mut round = 0u64;
    let mut contexts: Vec<tempfile::TempDir> = Vec::new();
    while kills < max_kills && started.elapsed() < budget {
        round += 1;
        let names = ["app1", "app2", "app3", "imp", "loaded", "copy"];
        let name = names[rng.below(names.len() as u64) as usize];
        let op = match rng.below(16) {
            0..=3 => {
                // COPY layers of a few MiB so kills land mid-write; a shared first layer so
                // the cache is exercised; RUN in one of four.
                let size = 256 * 1024 + rng.below(4 << 20) as usize;
                let data = noise(&mut rng, size);
                let run = if rng.below(4) == 0 {
                    format!("RUN echo {round} > /run.txt\n")
                } else {
                    String::new()
                };
                let ctx = context(&[(
                    "Dockerfile",
                    &format!(
                        "FROM bb\nCOPY shared.txt /shared.txt\nCOPY data.bin /data.bin\n{run}"
                    ),
                )]);
                fs::write(ctx.path().join("shared.txt"), b"same in every build\n").unwrap();
                fs::write(ctx.path().join("data.bin"), data).unwrap();
                let args = vec![
                    "build".into(),
                    "-q".into(),
                    "-t".into(),
                    name.into(),
                    ctx.path().to_str().unwrap().into(),
                ];
                contexts.push(ctx);
                Op {
                    kind: "build",
                    args,
                    touches: vec![full(name)],
                    after: After::Nothing,
                }
            }
            4 => Op {
                kind: "import",
                args: vec!["import".into(), bb.clone(), name.into()],
                touches: vec![full(name)],
                after: After::Nothing,
            },
            5 => {
                let out = work.path().join(format!("out-{round}.tar"));
                Op {
                    kind: "save",
                    args: vec![
                        "save".into(),
                        "-o".into(),
                        out.to_str().unwrap().into(),
                        "bb".into(),
                    ],
                    touches: vec![],
                    after: After::Nothing,
                }
            }
            6 => Op {
                kind: "load",
                args: vec![
                    "load".into(),
                    "-q".into(),
                    "-i".into(),
                    archive.to_str().unwrap().into(),
                ],
                touches: vec![full("bb")],
                after: After::Nothing,
            },
            7 => Op {
                kind: "tag",
                args: vec!["tag".into(), "bb".into(), name.into()],
                touches: vec![full(name)],
                after: After::Nothing,
            },
            8 => {
                // Any tag but the base, pulled ones included (so later pulls download again).
                let present: Vec<String> = tags(&root)
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| *n != full("bb"))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let victim = present[rng.below(present.len() as u64) as usize].clone();
                Op {
                    kind: "rmi",
                    args: vec!["rmi".into(), victim.clone()],
                    touches: vec![victim],
                    after: After::Nothing,
                }
            }
            9 => {
                if rng.below(2) == 0 {
                    Op {
                        kind: "prune",
                        args: vec!["prune".into(), "-f".into()],
                        touches: vec![],
                        after: After::Nothing,
                    }
                } else {
                    Op {
                        kind: "builder prune",
                        args: vec!["builder".into(), "prune".into(), "-f".into(), "-a".into()],
                        touches: vec![],
                        after: After::Nothing,
                    }
                }
            }
            10 | 11 => {
                if remote.is_empty() {
                    continue;
                }
                let (reference, id) = remote[rng.below(remote.len() as u64) as usize].clone();
                Op {
                    kind: "pull",
                    args: vec!["pull".into(), "-q".into(), reference.clone()],
                    touches: vec![reference.clone()],
                    after: After::Pull { reference, id },
                }
            }
            12 | 13 => {
                let Some(reg) = &reg else {
                    continue;
                };
                let present: Vec<String> = tags(&root).into_iter().map(|(n, _)| n).collect();
                let source = present[rng.below(present.len() as u64) as usize].clone();
                let dest = format!("{}/dst/p{}:{}", reg.host(), rng.below(3), rng.below(3));
                let id = image_id(&k, &source);
                Op {
                    kind: "push",
                    args: vec!["push".into(), "-q".into(), source.clone(), dest.clone()],
                    touches: vec![],
                    after: After::Push { source, dest, id },
                }
            }
            _ => {
                // Files written into the upper dir so kills land while it fills; a sleep in
                // one of three so some land while the command merely waits.
                let marker = format!("kiln-crash-{seed}-{round}");
                // An upper-dir file costs ~1 ms here: up to 400 spans the kill delays.
                let files = rng.below(400);
                let sleep = if rng.below(3) == 0 { "; sleep 5" } else { "" };
                let script = format!(
                    "i=0; while [ $i -lt {files} ]; do echo $i > /f$i; i=$((i+1)); done{sleep}"
                );
                Op {
                    kind: "run",
                    args: vec![
                        "run".into(),
                        "--rm".into(),
                        "bb".into(),
                        "sh".into(),
                        "-c".into(),
                        script,
                        marker.clone(),
                    ],
                    touches: vec![],
                    after: After::Run { marker },
                }
            }
        };
        if contexts.len() > 4 {
            contexts.remove(0);
        }

        let before = tags(&root);
        let mut child = kiln(&k).args(&op.args).spawn().unwrap();
        // Most commands here take 20-300 ms: kill anywhere in that span, sometimes at once.
        let delay = match rng.below(4) {
            0 => rng.below(10),
            1 => rng.below(300),
            _ => rng.below(120),
        };
        std::thread::sleep(Duration::from_millis(delay));
        let killed = match child.try_wait().unwrap() {
            Some(_) => false,
            None => {
                child.kill().unwrap();
                true
            }
        };
        let out = child.wait_with_output().unwrap();
        let counts = by_kind.entry(op.kind).or_default();
        if !killed {
            assert!(
                out.status.success(),
                "round {round}: kiln {:?} failed without a kill: {}",
                op.args,
                String::from_utf8_lossy(&out.stderr)
            );
            counts.1 += 1;
            finished += 1;
            continue;
        }
        counts.0 += 1;
        kills += 1;

        if let After::Run { marker } = &op.after {
            // The keeper dies of its parent-death signal and takes the container's pid
            // namespace with it; the kernel does that asynchronously, so give it a (generous)
            // moment before calling a survivor a leak.
            let waited = Instant::now();
            let mut left = processes_with(marker);
            while !left.is_empty() && waited.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(20));
                left = processes_with(marker);
            }
            assert!(
                left.is_empty(),
                "round {round} (seed {seed}): container processes outlived the killed run:\n{}",
                left.join("\n")
            );
            let mounts = mounts_under(&root);
            assert!(
                mounts.is_empty(),
                "round {round} (seed {seed}): mounts left under the store after a killed run:\n{}",
                mounts.join("\n")
            );
        }

        let check = kiln(&k)
            .args(["system", "check", "-q"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(
            check.status.success(),
            "round {round} (seed {seed}): store unsound after killing kiln {:?} at {delay} ms:\n{report}",
            op.args
        );
        sound_after_kill += 1;
        leftovers_seen += report.lines().filter(|l| l.starts_with("leftover")).count();

        let after = tags(&root);
        for (name, digest) in &before {
            if op.touches.contains(name) {
                continue;
            }
            assert!(
                after.contains(&(name.clone(), digest.clone())),
                "round {round} (seed {seed}): killing kiln {:?} lost {name} ({digest})",
                op.args
            );
            must(&k, &["inspect", name]);
        }
        // The next command works: the one that was killed, then a small build on the base.
        match &op.after {
            After::Nothing => {}
            After::Pull { reference, id } => {
                must(&k, &["pull", "-q", reference]);
                assert_eq!(
                    &image_id(&k, reference),
                    id,
                    "round {round} (seed {seed}): pull after a killed pull"
                );
            }
            After::Push { source, dest, id } => {
                must(&k, &["push", "-q", source, dest]);
                assert_eq!(
                    &registry_image_id(dest),
                    id,
                    "round {round} (seed {seed}): the registry's {dest} after a killed push"
                );
            }
            After::Run { .. } => {
                let out = must(
                    &k,
                    &["run", "--rm", "bb", "sh", "-c", "echo ok > /f; cat /f"],
                );
                assert_eq!(out, "ok\n");
            }
        }
        let ctx = context(&[
            ("Dockerfile", "FROM bb\nCOPY f /f\n"),
            ("f", &round.to_string()),
        ]);
        must(
            &k,
            &["build", "-q", "-t", "next", ctx.path().to_str().unwrap()],
        );
    }
    let elapsed = started.elapsed();

    // Time passes for the leftovers (rather than waiting a minute): then repair takes them all.
    let old = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(120));
    let tmp: PathBuf = root.join("tmp");
    let run_scratch = fs::read_dir(&tmp)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ctr-"))
        })
        .count();
    for e in fs::read_dir(&tmp).unwrap() {
        let _ = filetime::set_symlink_file_times(e.unwrap().path(), old, old);
    }
    let repair = must(&k, &["system", "check", "--repair", "-q"]);
    let clean = must(&k, &["system", "check"]);
    assert!(
        !clean.contains("leftover"),
        "after repair:\n{repair}\n{clean}"
    );
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "{clean}");
    must(
        &k,
        &[
            "save",
            "-o",
            work.path().join("final.tar").to_str().unwrap(),
            "bb",
        ],
    );

    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(kind, (k, f))| format!("{kind} {k} killed/{f} finished"))
        .collect();
    println!(
        "crash harness (seed {seed}): {kills} kills, store sound after {sound_after_kill} of them; \
         {finished} commands finished before their kill; by kind: {}; {leftovers_seen} \
         leftovers reported along the way, {} removed by the final repair (killed runs' \
         upper dirs among them: {run_scratch}); {:.1} s",
        kinds.join(", "),
        repair.lines().count(),
        elapsed.as_secs_f64()
    );
    assert_eq!(kills, sound_after_kill);
    assert!(kills > 0);
    let needed: &[&str] = if reg.is_some() {
        &["pull", "push", "run"]
    } else {
        &["run"]
    };
    {
        for kind in needed {
            assert!(
                by_kind.get(*kind).is_some_and(|c| c.0 > 0),
                "no {kind} was killed: {}",
                kinds.join(", ")
            );
        }
    }
}

/// Regression: gc and `rmi` deleted a pulled image's compressed blobs before the
/// compressed-variant records naming them (and removed snapshots in between), so a kill in
/// that span left a record naming a missing blob, which `system check` rightly calls damage.
/// Here every round pulls an image (its compressed blobs and their records) and kills the
/// `rmi` or prune that removes it early in its sweep.
#[test]
fn killed_removals_never_leave_a_compressed_record_without_its_blob() {
    let Some(reg) = LoopbackRegistry::start() else {
        return;
    };
    let mut rng = Rng(0x5eed_c0de_u64);
    let remote = seed_registry(&mut rng, &reg);
    let k = Kiln::new();
    must(&k, &["import", busybox_tar().to_str().unwrap(), "bb"]);
    let (mut kills, mut unsound) = (0, Vec::new());
    for round in 0..40 {
        let (reference, id) = &remote[round % remote.len()];
        must(&k, &["pull", "-q", reference]);
        assert_eq!(&image_id(&k, reference), id);
        let args: Vec<&str> = if round % 2 == 0 {
            vec!["rmi", reference]
        } else {
            must(&k, &["rmi", reference]);
            vec!["builder", "prune", "-f", "-a"]
        };
        let mut child = kiln(&k).args(&args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let check = kiln(&k)
            .args(["system", "check", "-q"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        if !check.status.success() {
            unsound.push(format!(
                "round {round}, kiln {args:?}:\n{}",
                String::from_utf8_lossy(&check.stdout)
            ));
            must(&k, &["system", "check", "--repair", "-q"]);
        }
    }
    assert!(unsound.is_empty(), "{}", unsound.join("\n"));
    assert!(kills > 0);
    must(&k, &["pull", "-q", &remote[0].0]);
    let clean = must(&k, &["system", "check"]);
    assert!(clean.contains("the store is sound"), "{clean}");
}

/// Killed rootless runs (the mode kiln is for): the upper dir a killed `kiln run` leaves
/// holds files of the caller's subordinate ids and a read-only directory, which the caller
/// alone cannot remove; no container process and no mount survive the kill, the store stays
/// sound, the next run works, and `system check --repair`, run as that same user, removes
/// every such upper dir.
#[test]
fn killed_rootless_runs_leave_only_upper_dirs_repair_removes() {
    use common::{ensure_test_user, is_root, run, TEST_USER};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("kiln");
    fs::copy(assert_cmd::cargo::cargo_bin("kiln"), &bin).unwrap();
    fs::copy(busybox_tar(), dir.path().join("busybox.tar")).unwrap();
    let root = dir.path().join("store");
    if is_root() {
        ensure_test_user();
        run(Command::new("chown")
            .arg("-R")
            .arg(TEST_USER)
            .arg(dir.path()));
    }
    let as_user = |args: &[&str]| {
        let mut c = if is_root() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups"])
                .arg(&bin)
                .env("HOME", format!("/home/{TEST_USER}"));
            c
        } else {
            Command::new(&bin)
        };
        c.current_dir(dir.path())
            .arg("--root")
            .arg(&root)
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let ok = |args: &[&str]| {
        let out = as_user(args).output().unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["import", "busybox.tar", "bb"]);

    let mut rng = Rng(0x7007_1e55);
    let (mut kills, mut finished) = (0, 0);
    for round in 0..24 {
        let marker = format!("kiln-crash-rootless-{round}");
        let files = rng.below(300);
        let script = format!(
            "mkdir /d; i=0; while [ $i -lt {files} ]; do echo $i > /d/f$i; i=$((i+1)); done; \
             chown -R 1234:1234 /d; chmod 500 /d; sleep {}",
            rng.below(2)
        );
        let args = ["run", "--rm", "bb", "sh", "-c", &script, &marker];
        let mut child = as_user(&args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished += 1;
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let waited = Instant::now();
        let mut left = processes_with(&marker);
        while !left.is_empty() && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
            left = processes_with(&marker);
        }
        assert!(left.is_empty(), "round {round}: {}", left.join("\n"));
        let mounts = mounts_under(&root);
        assert!(mounts.is_empty(), "round {round}: {}", mounts.join("\n"));
        let check = as_user(&["system", "check", "-q"]).output().unwrap();
        assert!(
            check.status.success(),
            "round {round}: store unsound after a killed rootless run:\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert_eq!(ok(&["run", "--rm", "bb", "echo", "next"]), "next\n");
    }
    assert!(kills > 0);

    let tmp = root.join("tmp");
    let old = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(120));
    let mut upper_dirs = 0;
    for e in fs::read_dir(&tmp).unwrap() {
        let path = e.unwrap().path();
        upper_dirs += 1;
        let _ = filetime::set_symlink_file_times(&path, old, old);
    }
    let repair = ok(&["system", "check", "--repair", "-q"]);
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "repair left {left:?}:\n{repair}");
    let clean = ok(&["system", "check"]);
    assert!(clean.contains("the store is sound"), "{clean}");
    println!(
        "rootless runs: {kills} killed, {finished} finished; {upper_dirs} upper dirs left, \
         all removed by repair"
    );
}

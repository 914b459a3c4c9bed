#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash safety: a seeded loop starts kiln commands (builds with COPY and RUN layers, import,
//! save, load, tag, rmi, prune, builder prune) and SIGKILLs them at random moments. After
//! every kill `kiln system check` must find the store sound, every image that was complete
//! before the kill (and that the killed command was not asked to remove or move) must still
//! resolve to the same manifest, and the next command must work. Leftovers of the killed
//! processes are allowed (unlocked temp entries, stale lease files, records of snapshots never
//! published); at the end, once they are old enough to judge, `--repair` removes them all.
//!
//! Bounded: 150 kills or 60 s of wall time, whichever first. `KILN_CRASH_SEED` picks the
//! seed (the default is fixed, so a failure reproduces).

mod common;

use common::{busybox_tar, context, Kiln};
use std::collections::BTreeSet;
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

struct Op {
    args: Vec<String>,
    /// Full names this command may legitimately remove or move.
    touches: Vec<String>,
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

    let max_kills = 150;
    let budget = Duration::from_secs(60);
    let started = Instant::now();
    let (mut kills, mut sound_after_kill, mut finished, mut leftovers_seen) = (0, 0, 0, 0);
    let mut round = 0u64;
    let mut contexts: Vec<tempfile::TempDir> = Vec::new();
    while kills < max_kills && started.elapsed() < budget {
        round += 1;
        let names = ["app1", "app2", "app3", "imp", "loaded", "copy"];
        let name = names[rng.below(names.len() as u64) as usize];
        let op = match rng.below(10) {
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
                    args,
                    touches: vec![full(name)],
                }
            }
            4 => Op {
                args: vec!["import".into(), bb.clone(), name.into()],
                touches: vec![full(name)],
            },
            5 => {
                let out = work.path().join(format!("out-{round}.tar"));
                Op {
                    args: vec![
                        "save".into(),
                        "-o".into(),
                        out.to_str().unwrap().into(),
                        "bb".into(),
                    ],
                    touches: vec![],
                }
            }
            6 => Op {
                args: vec![
                    "load".into(),
                    "-q".into(),
                    "-i".into(),
                    archive.to_str().unwrap().into(),
                ],
                touches: vec![full("bb")],
            },
            7 => Op {
                args: vec!["tag".into(), "bb".into(), name.into()],
                touches: vec![full(name)],
            },
            8 => {
                let present = tags(&root).into_iter().any(|(n, _)| n == full(name));
                if !present || name == "bb" {
                    continue;
                }
                Op {
                    args: vec!["rmi".into(), name.into()],
                    touches: vec![full(name)],
                }
            }
            _ => {
                if rng.below(2) == 0 {
                    Op {
                        args: vec!["prune".into(), "-f".into()],
                        touches: vec![],
                    }
                } else {
                    Op {
                        args: vec!["builder".into(), "prune".into(), "-f".into(), "-a".into()],
                        touches: vec![],
                    }
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
        if !killed {
            assert!(
                out.status.success(),
                "round {round}: kiln {:?} failed without a kill: {}",
                op.args,
                String::from_utf8_lossy(&out.stderr)
            );
            finished += 1;
            continue;
        }
        kills += 1;

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
        // The next command works: a small build on the base.
        let ctx = context(&[
            ("Dockerfile", "FROM bb\nCOPY f /f\n"),
            ("f", &round.to_string()),
        ]);
        must(
            &k,
            &["build", "-q", "-t", "next", ctx.path().to_str().unwrap()],
        );
    }

    // Time passes for the leftovers (rather than waiting a minute): then repair takes them all.
    let old = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(120));
    let tmp: PathBuf = root.join("tmp");
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

    println!(
        "crash harness (seed {seed}): {kills} kills, store sound after {sound_after_kill} of them; \
         {finished} commands finished before their kill; {leftovers_seen} leftovers reported \
         along the way, {} removed by the final repair; {:.1} s",
        repair.lines().count(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kills, sound_after_kill);
    assert!(kills > 0);
}

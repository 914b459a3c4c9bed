#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Volumes of `kiln run` (`-v`, `--mount`, `--tmpfs`, `--read-only`) and `kiln volume`,
//! through the real binary, as root and as an unprivileged user with subordinate ids.

mod common;

use common::env::{modes, As, Env};
use common::{is_root, run, TEST_USER as USER};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// A store with busybox and, when `dockerfile` is given, `app` built from it.
fn setup(who: As, dockerfile: Option<&str>) -> Env {
    let e = Env::new(who);
    if let Some(df) = dockerfile {
        e.context("ctx", &[("Dockerfile", df)]);
        e.ok(&["build", "-q", "-t", "app", "ctx"]);
    }
    e
}

/// What these tests add to the shared [`Env`].
trait VolumeEnv {
    fn host_dir(&self, name: &str) -> PathBuf;
    fn fails(&self, args: &[&str], code: i32, message: &str);
}

impl VolumeEnv for Env {
    /// A directory of the test, owned by whoever runs kiln.
    fn host_dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        if self.who == As::Rootless && is_root() {
            run(Command::new("chown").arg(USER).arg(&d));
        }
        d
    }

    fn fails(&self, args: &[&str], code: i32, message: &str) {
        let out = self.kiln(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "kiln {args:?}: {err}");
        assert!(err.contains(message), "kiln {args:?}: {err}");
    }
}

#[test]
fn bind_mounts_are_writable_read_only_with_ro_and_missing_host_paths_are_made() {
    for who in modes() {
        let e = setup(who, None);
        let rw = e.host_dir("rw");
        std::fs::write(rw.join("in"), "from-host\n").unwrap();
        let ro = e.host_dir("ro");
        let missing = e.path().join("not/yet");
        let file = e.path().join("motd");
        std::fs::write(&file, "a file\n").unwrap();
        let script = "cat /etc/motd; cat /data/in; echo out > /data/out; \
                      (echo x > /ro/f) 2>/dev/null || echo READONLY; \
                      test -d /new && echo MADE; grep -c ' /ro ' /proc/mounts";
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/data", rw.display()),
            "-v",
            &format!("{}:/ro:ro", ro.display()),
            "--mount",
            &format!("type=bind,source={},target=/new", e.host_dir("m").display()),
            "-v",
            &format!("{}:/made", missing.display()),
            "-v",
            &format!("{}:/etc/motd:ro", file.display()),
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(out, "a file\nfrom-host\nREADONLY\nMADE\n1\n", "{who:?}");
        assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "out\n");
        assert!(!ro.join("f").exists());
        assert!(missing.is_dir(), "{who:?}: -v made the missing host path");
    }
}

#[test]
fn relative_and_missing_sources_are_clear_errors() {
    let e = setup(As::Root, None);
    e.fails(
        &["run", "--rm", "-v", "./rel:/x", "busybox", "true"],
        125,
        "invalid mount config: relative host path ./rel: use an absolute path",
    );
    e.fails(
        &["run", "--rm", "-v", "data:relative", "busybox", "true"],
        125,
        "the container path 'relative' is not absolute",
    );
    let gone = e.path().join("gone");
    e.fails(
        &[
            "run",
            "--rm",
            "--mount",
            &format!("type=bind,source={},target=/x", gone.display()),
            "busybox",
            "true",
        ],
        125,
        &format!("bind source path does not exist: {}", gone.display()),
    );
    assert!(!gone.exists(), "--mount does not make a missing source");
}

#[test]
fn named_volumes_are_filled_from_the_image_once_and_outlive_containers() {
    let df = "FROM busybox:latest\n\
              RUN mkdir -p /srv/app && echo seed > /srv/app/seed && chown -R 5:6 /srv/app \
              && chmod 750 /srv/app && chmod 640 /srv/app/seed\n";
    for who in modes() {
        let e = setup(who, Some(df));
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            "appdata:/srv/app",
            "app",
            "sh",
            "-c",
            "cat /srv/app/seed; stat -c '%u:%g %a' /srv/app /srv/app/seed; \
             echo more > /srv/app/added; rm /srv/app/seed",
        ]);
        assert_eq!(out, "seed\n5:6 750\n5:6 640\n", "{who:?}");
        // The same volume again: its content stays, and it is not filled again (the seed
        // removed above stays gone).
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            "appdata:/srv/app",
            "app",
            "sh",
            "-c",
            "cat /srv/app/added; ls /srv/app",
        ]);
        assert_eq!(out, "more\nadded\n", "{who:?}");
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            "appdata:/v:ro",
            "busybox",
            "cat",
            "/v/added",
        ]);
        assert_eq!(out, "more\n");
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "appdata\n");
        let inspect: serde_json::Value =
            serde_json::from_str(&e.ok(&["volume", "inspect", "appdata"])).unwrap();
        let mountpoint = e.path().join("store/volumes/appdata/_data");
        assert_eq!(inspect[0]["Name"], "appdata");
        assert_eq!(inspect[0]["Mountpoint"], mountpoint.to_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(mountpoint.join("added")).unwrap(),
            "more\n"
        );
        // Image pruning never touches volumes; with --volumes, only unused anonymous ones.
        e.ok(&["prune", "-a", "-f"]);
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "appdata\n");
        let anon = e.ok(&["volume", "create"]);
        let meta = e
            .path()
            .join(format!("store/volumes/{}/volume.json", anon.trim()));
        let text = std::fs::read_to_string(&meta).unwrap();
        // As a crashed `run -v /path` would have left it.
        std::fs::write(
            &meta,
            text.replace("\"Anonymous\": false", "\"Anonymous\": true"),
        )
        .unwrap();
        let out = e.ok(&["prune", "-f", "--volumes"]);
        assert!(out.contains(&format!("Deleted Volumes:\n{anon}")), "{out}");
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "appdata\n");
        // Files of container ids (subordinate ids when rootless) are removed too.
        assert_eq!(e.ok(&["volume", "rm", "appdata"]), "appdata\n");
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "");
        assert!(!e.path().join("store/volumes/appdata").exists());
    }
}

#[test]
fn anonymous_volumes_go_with_a_removed_container() {
    for who in modes() {
        let e = setup(who, None);
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            "/anon",
            "--mount",
            "type=volume,target=/anon2",
            "busybox",
            "sh",
            "-c",
            "echo x > /anon/f && echo y > /anon2/f && grep -c ' /anon' /proc/mounts",
        ]);
        assert_eq!(out, "2\n", "{who:?}");
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "", "{who:?}");
    }
}

#[test]
fn volume_commands_keep_volumes_containers_use() {
    let e = setup(As::Root, None);
    assert_eq!(e.ok(&["volume", "create", "keep"]), "keep\n");
    assert_eq!(e.ok(&["volume", "create", "used"]), "used\n");
    let anon = e.ok(&["volume", "create"]);
    assert_eq!(anon.trim().len(), 64);
    e.fails(
        &["volume", "create", "keep"],
        1,
        "volume keep already exists",
    );
    e.fails(
        &["volume", "create", "bad/name"],
        1,
        "not a valid volume name",
    );
    e.fails(&["volume", "inspect", "nope"], 1, "no such volume: nope");
    let ls = e.ok(&["volume", "ls"]);
    assert!(ls.starts_with("DRIVER    VOLUME NAME\n"), "{ls}");
    assert!(ls.contains("local     keep\n") && ls.contains("local     used\n"));
    // A container's record names the volume (as `kiln run -d` keeps its options).
    let rec = e.path().join("store/containers/c0ffee");
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::write(
        rec.join("config.json"),
        r#"{"id":"c0ffee","options":{"volumes":[{"type":"volume","source":"used",
            "target":"/x","readonly":false,"anonymous":false,"nocopy":false}]}}"#,
    )
    .unwrap();
    e.fails(
        &["volume", "rm", "used"],
        1,
        "volume used is in use by container c0ffee",
    );
    // prune --all removes what no container uses, never a used one.
    let pruned = e.ok(&["volume", "prune", "--all", "-f"]);
    assert!(
        pruned.contains("keep\n") && !pruned.contains("used\n"),
        "{pruned}"
    );
    assert!(pruned.contains("Total reclaimed volumes: 2"), "{pruned}");
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "used\n");
    assert_eq!(e.ok(&["volume", "rm", "-f", "used"]), "used\n");
    e.fails(&["volume", "rm", "used"], 1, "no such volume: used");
}

#[test]
fn tmpfs_and_a_read_only_root() {
    for who in modes() {
        let e = setup(who, None);
        let out = e.ok(&[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/scratch:size=1m",
            "-v",
            "v:/vol",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo ROOT-RO; touch /scratch/a && echo TMPFS-RW; \
             touch /vol/a && echo VOL-RW; grep ' /scratch ' /proc/mounts",
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..3],
            ["ROOT-RO", "TMPFS-RW", "VOL-RW"],
            "{who:?}: {out}"
        );
        assert!(
            lines[3].contains("tmpfs") && lines[3].contains("size=1024k"),
            "{out}"
        );
        // Without --read-only the root is writable.
        e.ok(&["run", "--rm", "busybox", "touch", "/x"]);
    }
}

#[test]
fn a_symlink_in_the_image_cannot_redirect_a_volume_onto_the_host() {
    let victim = tempfile::tempdir().unwrap();
    std::fs::set_permissions(victim.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let v = victim.path().display().to_string();
    let df = format!("FROM busybox:latest\nRUN ln -s {v}/a /evil && ln -s {v}/b/deep /evil2\n");
    for who in modes() {
        let e = setup(who, Some(&df));
        let src = e.host_dir("src");
        std::fs::write(src.join("marker"), "inside\n").unwrap();
        let out = e.ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/evil", src.display()),
            "-v",
            "named:/evil2/x",
            "app",
            "sh",
            "-c",
            "cat /evil/marker; echo w > /evil2/x/f && echo WROTE",
        ]);
        assert_eq!(out, "inside\nWROTE\n", "{who:?}");
        assert_eq!(
            std::fs::read_dir(victim.path()).unwrap().count(),
            0,
            "{who:?}: a mount went through the image's symlink onto the host"
        );
        assert_eq!(
            std::fs::read_to_string(e.path().join("store/volumes/named/_data/f")).unwrap(),
            "w\n"
        );
    }
}

#[test]
fn an_images_volume_paths_get_anonymous_volumes_unless_mounted() {
    let df = "FROM busybox:latest\nRUN mkdir /data && echo img > /data/f\nVOLUME /data\n";
    for who in modes() {
        let e = setup(who, Some(df));
        let script = "cat /data/f; grep -c ' /data ' /proc/mounts; echo new > /data/g";
        assert_eq!(
            e.ok(&["run", "--rm", "app", "sh", "-c", script]),
            "img\n1\n",
            "{who:?}"
        );
        // The anonymous volume went with the container.
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "", "{who:?}");
        // A named volume on the same path replaces it, filled the same way.
        assert_eq!(
            e.ok(&["run", "--rm", "-v", "mine:/data", "app", "sh", "-c", script]),
            "img\n1\n"
        );
        assert_eq!(e.ok(&["volume", "ls", "-q"]), "mine\n");
        assert_eq!(
            std::fs::read_to_string(e.path().join("store/volumes/mine/_data/g")).unwrap(),
            "new\n"
        );
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A store on a full filesystem: a 40 MiB tmpfs the test mounts (root only). A build that
//! does not fit fails with "No space left on device" naming the store, the store stays
//! sound, and the same build succeeds once space is freed.

mod common;

use common::{busybox_tar, context, is_root, run};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn kiln(root: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("kiln").unwrap();
    c.arg("--root").arg(root);
    c
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn full_disk_fails_clearly_leaves_the_store_sound_and_recovers() {
    if !is_root() {
        eprintln!("skipping: mounting a tmpfs for the store needs root (CI runs tests as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("small"), "40m");
    let root = mnt.0.join("store");
    kiln(&root)
        .arg("import")
        .arg(busybox_tar())
        .arg("bb")
        .assert()
        .success();
    // Something else fills the filesystem: what is left is less than the build needs.
    let ballast = mnt.0.join("ballast");
    fs::write(&ballast, noise(20 << 20)).unwrap();
    let ctx = context(&[("Dockerfile", "FROM bb\nCOPY big.bin /big.bin\n")]);
    fs::write(ctx.path().join("big.bin"), noise(24 << 20)).unwrap();

    let out = kiln(&root)
        .args(["build", "-q", "-t", "big"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the build cannot fit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&root.display().to_string()), "{err}");
    assert!(err.contains("COPY"), "names the step: {err}");

    let check = kiln(&root).args(["system", "check"]).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("the store is sound"), "{report}");
    // The failed build left nothing in the store's staging area.
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    kiln(&root).args(["inspect", "bb"]).assert().success();

    fs::remove_file(&ballast).unwrap();
    kiln(&root)
        .args(["build", "-q", "-t", "big"])
        .arg(ctx.path())
        .assert()
        .success();
    kiln(&root).args(["inspect", "big"]).assert().success();
    let check = kiln(&root).args(["system", "check"]).output().unwrap();
    assert!(check.status.success());
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bind and tmpfs mounts in kiln's runtime, end to end: a busybox root (unpacked from Debian's
//! busybox-static) run with a read-write bind, a read-only file bind and a tmpfs. The mounts
//! work, read-only holds, and neither the mounts' content nor their mount points end up in
//! the layer of the container's changes.

mod common;

use kiln::runtime::{self, Mount, RunSpec};
use std::path::Path;

fn busybox_root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("lower");
    std::fs::create_dir_all(&root).unwrap();
    common::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(common::busybox_tar())
            .arg("-C")
            .arg(&root),
    );
    root
}

fn layer_names(tar: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn bind_and_tmpfs_mounts() {
    let t = tempfile::tempdir().unwrap();
    let lower = busybox_root(t.path());
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "from the host\n").unwrap();
    let secret = t.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let scratch = t.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let layer = t.path().join("layer.tar");
    let script = "cat /data/in /run/secrets/s; echo out > /data/out; \
                  (echo x > /run/secrets/s) 2>/dev/null || echo READONLY; \
                  touch /scratch/f && echo TMPFS; grep -c ' /scratch tmpfs' /proc/mounts; \
                  echo kept > /kept";
    let spec = RunSpec {
        lowers: vec![lower],
        scratch,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: Vec::new(),
        cwd: String::new(),
        user: runtime::Identity::default(),
        network: runtime::Network::Host,
        hostname: String::new(),
        ids: runtime::host_id_plan(),
        layer_tar: Some(layer.clone()),
        source_date_epoch: None,
        pipes: Vec::new(),
        confine: runtime::Confinement::default(),
        mounts: vec![
            Mount::bind(&data, "/data", false),
            Mount::bind(&secret, "/run/secrets/s", true),
            Mount::tmpfs("/scratch"),
        ],
        ports: Vec::new(),
        volume_fills: Vec::new(),
        readonly_root: false,
    };
    let mut out = Vec::new();
    let code = runtime::run(&spec, &mut |b| out.extend_from_slice(b)).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out, "from the host\ns3cret\nREADONLY\nTMPFS\n1\n",
        "container output"
    );
    assert_eq!(std::fs::read_to_string(data.join("out")).unwrap(), "out\n");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret\n");
    let names = layer_names(&layer);
    assert!(names.iter().any(|n| n == "kept"), "{names:?}");
    for n in &names {
        assert!(
            !n.starts_with("data") && !n.starts_with("run") && !n.starts_with("scratch"),
            "mount point {n} leaked into the layer: {names:?}"
        );
    }
}

#[test]
fn a_symlink_in_the_image_cannot_aim_a_mount_at_the_host() {
    let t = tempfile::tempdir().unwrap();
    let lower = busybox_root(t.path());
    let host_dir = t.path().join("host-target");
    std::fs::create_dir(&host_dir).unwrap();
    std::os::unix::fs::symlink(&host_dir, lower.join("vol")).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let scratch = t.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let spec = RunSpec {
        lowers: vec![lower],
        scratch,
        argv: vec!["/bin/cat".into(), "/vol/f".into()],
        env: Vec::new(),
        cwd: String::new(),
        user: runtime::Identity::default(),
        network: runtime::Network::Host,
        hostname: String::new(),
        ids: runtime::host_id_plan(),
        layer_tar: None,
        source_date_epoch: None,
        pipes: Vec::new(),
        confine: runtime::Confinement::default(),
        mounts: vec![Mount::bind(&src, "/vol", false)],
        ports: Vec::new(),
        volume_fills: Vec::new(),
        readonly_root: false,
    };
    let mut out = Vec::new();
    let code = runtime::run(&spec, &mut |b| out.extend_from_slice(b)).unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(out, b"x");
    // The mount went inside the container's root, not onto the host directory.
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0);
}

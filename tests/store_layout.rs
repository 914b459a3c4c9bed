#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store is a valid OCI image layout: independent readers (skopeo, umoci) find kiln's tags,
//! manifests, configs and layers. Each reader is skipped, with a note, only if it is not
//! installed.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use kiln::image::{media, Descriptor, Digest, History, ImageConfig, Reference};
use kiln::store::Store;

fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    b.append_data(&mut dir, "etc/", std::io::empty()).unwrap();
    let body = b"hello from kiln\n";
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(body.len() as u64);
    file.set_mtime(0);
    b.append_data(&mut file, "etc/hello.txt", &body[..])
        .unwrap();
    b.into_inner().unwrap()
}

struct Built {
    manifest: Descriptor,
    config: Digest,
    layer: Descriptor,
}

fn build_image(store: &Store) -> Built {
    let tar = layer_tar();
    let mut w = store.blob_writer().unwrap();
    w.write_all(&tar).unwrap();
    let layer = w
        .commit(Some(&Digest::sha256_of(&tar)))
        .unwrap()
        .descriptor(media::OCI_LAYER_TAR);
    let mut config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.config.env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
    config.config.cmd = Some(vec!["cat".into(), "/etc/hello.txt".into()]);
    config
        .config
        .labels
        .insert("org.example.kiln".into(), "yes".into());
    config.rootfs.diff_ids.push(layer.digest.clone());
    config.history.push(History {
        created: Some("2024-01-02T03:04:05Z".into()),
        created_by: Some("COPY hello.txt /etc/hello.txt".into()),
        ..Default::default()
    });
    let (manifest, config) = store
        .put_image(&config, std::slice::from_ref(&layer))
        .unwrap();
    Built {
        manifest,
        config,
        layer,
    }
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: {tool} is not installed; skipping its checks (apt-get install -y {tool})");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_json(root: &Path, reference: &str, extra: &[&str]) -> serde_json::Value {
    let image = format!("oci:{}:{reference}", root.display());
    let stdout = run(Command::new("skopeo")
        .arg("inspect")
        .args(extra)
        .arg(&image));
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn skopeo_reads_the_store() {
    if !have("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    let img = build_image(&store);
    store
        .tag(&Reference::parse("busybox").unwrap(), &img.manifest)
        .unwrap();
    store
        .tag(
            &Reference::parse("localhost:5000/team/hello:v1").unwrap(),
            &img.manifest,
        )
        .unwrap();

    for reference in [
        "docker.io/library/busybox:latest",
        "localhost:5000/team/hello:v1",
    ] {
        let v = skopeo_json(store.root(), reference, &[]);
        assert_eq!(v["Digest"], img.manifest.digest.as_str(), "{reference}");
        assert_eq!(v["Architecture"], "amd64");
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Layers"], serde_json::json!([img.layer.digest.as_str()]));
        assert_eq!(v["Labels"]["org.example.kiln"], "yes");
        assert_eq!(v["Created"], "2024-01-02T03:04:05Z");

        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:{reference}", store.root().display()),
        ]));
        assert_eq!(
            raw.as_bytes(),
            store.read_blob(&img.manifest.digest).unwrap()
        );

        let config = skopeo_json(store.root(), reference, &["--config"]);
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["cat", "/etc/hello.txt"])
        );
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([img.layer.digest.as_str()])
        );
        let raw_config = run(Command::new("skopeo").args([
            "inspect",
            "--config",
            "--raw",
            &format!("oci:{}:{reference}", store.root().display()),
        ]));
        assert_eq!(Digest::sha256_of(raw_config.as_bytes()), img.config);
    }

    // After untag, skopeo no longer finds the name.
    store.untag(&Reference::parse("busybox").unwrap()).unwrap();
    let out = Command::new("skopeo")
        .args([
            "inspect",
            &format!(
                "oci:{}:docker.io/library/busybox:latest",
                store.root().display()
            ),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "untagged name still readable");
}

#[test]
fn umoci_reads_the_store() {
    if !have("umoci") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    let img = build_image(&store);
    let names = [
        "docker.io/library/busybox:latest",
        "localhost:5000/team/hello:v1",
    ];
    for n in names {
        store
            .tag(&Reference::parse(n).unwrap(), &img.manifest)
            .unwrap();
    }
    let root = store.root().display().to_string();
    let stdout = run(Command::new("umoci").args(["ls", "--layout", &root]));
    let mut listed: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    listed.sort();
    assert_eq!(listed, names);

    // umoci unpacks the layer into a runtime bundle: an independent check of the layer blob.
    let bundle = dir.path().join("bundle");
    let image = format!("{root}:{}", names[0]);
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let hello = std::fs::read_to_string(bundle.join("rootfs/etc/hello.txt")).unwrap();
    assert_eq!(hello, "hello from kiln\n");
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!(["cat", "/etc/hello.txt"])
    );
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kiln import`, `images`, `tag`, `rmi`, `inspect`, `history` and `prune` through the real
//! binary, each test with a private store; skopeo checks the store as an OCI layout.

mod common;

use common::{busybox_tar, have, run, Kiln};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `kiln import` with SOURCE_DATE_EPOCH set; returns the printed ID.
fn import_fixed(k: &Kiln, tar: &Path, name: Option<&str>) -> String {
    let mut c = k.cmd();
    c.env("SOURCE_DATE_EPOCH", EPOCH).arg("import").arg(tar);
    if let Some(n) = name {
        c.arg(n);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import printed {id:?}"
    );
    id
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails(k: &Kiln, args: &[&str]) -> String {
    let out = k.cmd().args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "kiln {args:?} should fail with 1:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    stderr(&out)
}

fn inspect(k: &Kiln, image: &str) -> serde_json::Value {
    let text = k.ok(&["inspect", image]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{text}");
    v[0].clone()
}

/// The rows of a table output, split on runs of 2+ spaces (cells contain single spaces).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn import_then_images_inspect_and_history() {
    let k = Kiln::new();
    let id = import_fixed(&k, busybox_tar(), Some("busybox"));
    let short = &id[7..19];

    let images = k.ok(&["images"]);
    let lines: Vec<&str> = images.lines().collect();
    assert_eq!(
        lines[0], "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE",
        "{images}"
    );
    let r = rows(&images);
    assert_eq!(r.len(), 2, "{images}");
    assert_eq!(r[1][0], "busybox");
    assert_eq!(r[1][1], "latest");
    assert_eq!(r[1][2], short);
    assert!(r[1][3].ends_with("years ago"), "{images}");
    assert!(r[1][4].ends_with("MB"), "{images}");

    assert_eq!(k.ok(&["images", "-q"]), format!("{short}\n"));
    assert_eq!(k.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
    let digests = k.ok(&["images", "--digests"]);
    assert!(
        digests.starts_with("REPOSITORY   TAG       DIGEST"),
        "{digests}"
    );
    assert!(rows(&digests)[1][2].starts_with("sha256:"), "{digests}");

    let v = inspect(&k, "busybox");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(v["RepoDigests"], serde_json::json!([]));
    assert_eq!(v["Created"], EPOCH_RFC3339);
    assert_eq!(v["Author"], "");
    assert_eq!(v["Architecture"], host_arch());
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["RootFS"]["Type"], "layers");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(v["Size"].as_u64().unwrap() > 1_000_000);
    // Imported images have no Env, no Cmd.
    assert_eq!(v["Config"]["Env"], serde_json::Value::Null);
    assert_eq!(v["Config"]["Cmd"], serde_json::Value::Null);
    assert_eq!(v["Config"]["WorkingDir"], "");
    assert!(v["Metadata"]["LastTagTime"].is_string());
    // The same image by ID prefix and by full name.
    assert_eq!(inspect(&k, short)["Id"], id.as_str());
    assert_eq!(
        inspect(&k, "docker.io/library/busybox:latest")["Id"],
        id.as_str()
    );
    assert_eq!(
        k.ok(&["inspect", "-f", "{{.Id}} {{json .RepoTags}}", "busybox"]),
        format!("{id} [\"busybox:latest\"]\n")
    );

    let history = k.ok(&["history", "busybox"]);
    let h = rows(&history);
    assert_eq!(
        h[0],
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        "{history}"
    );
    assert_eq!(h.len(), 2, "{history}");
    assert_eq!(h[1][0], short);
    assert!(h[1][1].ends_with("years ago"), "{history}");
    assert_eq!(h[1][2], "kiln import");
    assert!(h[1][3].ends_with("MB"), "{history}");
    assert_eq!(k.ok(&["history", "-q", "busybox"]), format!("{short}\n"));
    assert!(k.ok(&["history", "--no-trunc", "busybox"]).contains(&id));
}

#[test]
fn import_is_deterministic_with_source_date_epoch() {
    let a = Kiln::new();
    let b = Kiln::new();
    let id = import_fixed(&a, busybox_tar(), Some("busybox:latest"));
    assert_eq!(import_fixed(&b, busybox_tar(), Some("other:1")), id);
    // Again into the same store, and from standard input, and from a gzip of the tarball.
    assert_eq!(import_fixed(&a, busybox_tar(), None), id);
    let out = a
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["import", "-", "piped"])
        .pipe_stdin(busybox_tar())
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
    let gz = a.dir.path().join("busybox.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(busybox_tar()).unwrap())
        .unwrap();
    enc.finish().unwrap();
    assert_eq!(import_fixed(&a, &gz, Some("gz")), id);

    // Without SOURCE_DATE_EPOCH, `created` is now: each import a new ID over the same layer.
    let tar = busybox_tar().to_str().unwrap();
    let now1 = a.ok(&["import", tar, "now1"]);
    let now2 = a.ok(&["import", tar, "now2"]);
    assert_ne!(now1, now2);
    assert_ne!(now1.trim(), id);
    assert_eq!(inspect(&a, "now1")["RootFS"], inspect(&a, "now2")["RootFS"]);
}

/// A tar whose single entry has the raw name `name` (the tar crate's setters refuse `..`).
fn tar_with_raw_name(name: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(4);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    let mut t = tar::Builder::new(Vec::new());
    t.append(&h, &b"evil"[..]).unwrap();
    t.into_inner().unwrap()
}

#[test]
fn import_rejects_paths_escaping_the_root() {
    let k = Kiln::new();
    let bad = k.dir.path().join("bad.tar");
    std::fs::write(&bad, tar_with_raw_name("./a/../../etc/passwd")).unwrap();
    let err = fails(&k, &["import", bad.to_str().unwrap(), "bad:1"]);
    assert!(err.contains("bad.tar"), "{err}");
    assert!(err.contains("../../etc/passwd"), "{err}");
    assert!(err.contains("climbs above the root"), "{err}");
    assert_eq!(rows(&k.ok(&["images"])).len(), 1);

    let missing = fails(&k, &["import", "/nonexistent/rootfs.tar", "x"]);
    assert!(missing.contains("/nonexistent/rootfs.tar"), "{missing}");
    let not_tar = k.dir.path().join("not.tar");
    std::fs::write(&not_tar, vec![b'x'; 2000]).unwrap();
    let err = fails(&k, &["import", not_tar.to_str().unwrap(), "x"]);
    assert!(err.contains("not.tar"), "{err}");
    assert_eq!(rows(&k.ok(&["images"])).len(), 1);
}

#[test]
fn tag_and_rmi_follow_docker() {
    let k = Kiln::new();
    let id = import_fixed(&k, busybox_tar(), Some("busybox"));
    let short = &id[7..19];
    k.ok(&["tag", "busybox", "127.0.0.1:5000/busybox:v1"]);
    k.ok(&["tag", short, "other"]);
    let names: Vec<(String, String)> = rows(&k.ok(&["images"]))[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("127.0.0.1:5000/busybox".to_string(), "v1".to_string()),
            ("busybox".to_string(), "latest".to_string()),
            ("other".to_string(), "latest".to_string()),
        ]
    );
    assert_eq!(
        inspect(&k, "other")["RepoTags"],
        serde_json::json!([
            "127.0.0.1:5000/busybox:v1",
            "busybox:latest",
            "other:latest"
        ])
    );
    let err = fails(&k, &["tag", "nothere", "x"]);
    assert!(err.contains("nothere"), "{err}");

    // By ID with several tags: refused without -f, nothing changes.
    let err = fails(&k, &["rmi", short]);
    assert!(err.contains("several tags"), "{err}");
    assert_eq!(rows(&k.ok(&["images"])).len(), 4);

    // By name: only that tag goes.
    assert_eq!(k.ok(&["rmi", "other"]), "Untagged: other:latest\n");
    assert_eq!(rows(&k.ok(&["images"])).len(), 3);

    // Forced by ID: every tag, then the image.
    assert_eq!(
        k.ok(&["rmi", "-f", short]),
        format!("Untagged: 127.0.0.1:5000/busybox:v1\nUntagged: busybox:latest\nDeleted: {id}\n")
    );
    assert_eq!(rows(&k.ok(&["images"])).len(), 1);
    let blobs = std::fs::read_dir(k.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "rmi leaves no blob behind");

    let err = fails(&k, &["rmi", "busybox"]);
    assert!(err.contains("no such image: busybox"), "{err}");
}

#[test]
fn rmi_reports_each_failure_and_removes_the_rest() {
    let k = Kiln::new();
    import_fixed(&k, busybox_tar(), Some("a"));
    let out = k.cmd().args(["rmi", "nope", "a"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("Untagged: a:latest")
    );
    assert!(stderr(&out).contains("nope"));
    assert_eq!(rows(&k.ok(&["images"])).len(), 1);
}

#[test]
fn inspect_unknown_image_names_it() {
    let k = Kiln::new();
    import_fixed(&k, busybox_tar(), Some("busybox"));
    let err = fails(&k, &["inspect", "busybox", "ghost:1"]);
    assert!(err.contains("ghost:1"), "{err}");
    let err = fails(&k, &["history", "ghost"]);
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn untagged_images_show_none_and_prune_removes_them() {
    let k = Kiln::new();
    let dangling = import_fixed(&k, busybox_tar(), None);
    let kept = k.ok(&["import", busybox_tar().to_str().unwrap(), "kept"]);
    let kept = kept.trim();
    let r = rows(&k.ok(&["images"]));
    assert_eq!(r.len(), 3);
    // Newest first: the one imported without SOURCE_DATE_EPOCH.
    assert_eq!(r[1][0], "kept");
    assert_eq!(r[1][3], "Less than a second ago");
    assert_eq!((r[2][0].as_str(), r[2][1].as_str()), ("<none>", "<none>"));
    assert_eq!(r[2][2], &dangling[7..19]);

    let out = k.ok(&["prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {dangling}\n\n")),
        "{out}"
    );
    let total = out.lines().last().unwrap();
    assert!(total.starts_with("Total reclaimed space: "), "{out}");
    assert!(
        total.ends_with("MB"),
        "the dangling image's layer was its own: {out}"
    );
    let r = rows(&k.ok(&["images"]));
    assert_eq!(r.len(), 2);
    assert_eq!(r[1][0], "kept");

    // Nothing dangling left: nothing to say but the total.
    assert_eq!(k.ok(&["prune", "-f"]), "Total reclaimed space: 0B\n");
    // Without -f, a "no" keeps everything.
    let out = k
        .cmd()
        .args(["prune", "-a"])
        .write_stdin("n\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("Are you sure"));
    assert_eq!(rows(&k.ok(&["images"])).len(), 2);
    // -a: every image (no containers use any).
    let out = k.ok(&["prune", "-a", "-f"]);
    assert!(
        out.starts_with(&format!(
            "Deleted Images:\nuntagged: kept:latest\ndeleted: {kept}\n"
        )),
        "{out}"
    );
    assert_eq!(rows(&k.ok(&["images"])).len(), 1);
    assert_eq!(
        std::fs::read_dir(k.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn skopeo_reads_the_imported_image_from_the_store() {
    if !have("skopeo") {
        return;
    }
    let k = Kiln::new();
    let id = import_fixed(&k, busybox_tar(), Some("busybox"));
    let text = run(Command::new("skopeo").arg("inspect").arg(format!(
        "oci:{}:docker.io/library/busybox:latest",
        k.root().display()
    )));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["Architecture"], host_arch());
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Created"], EPOCH_RFC3339);
    let layers = v["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        inspect(&k, "busybox")["RootFS"]["Layers"][0],
        layers[0],
        "an uncompressed layer's digest is its diffID"
    );
    let config = run(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!(
            "oci:{}:docker.io/library/busybox:latest",
            k.root().display()
        )));
    assert_eq!(format!("sha256:{}", hex_sha256(config.as_bytes())), id);
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

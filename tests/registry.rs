#![allow(clippy::unwrap_used, clippy::expect_used)]
//! kiln against a real registry: Debian's docker-registry (the CNCF distribution server) on a
//! free loopback port, checked with skopeo. Nothing here leaves the machine.

mod common;

use common::{context, have, run, Kiln};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

type Registry = common::LoopbackRegistry;

fn kiln_fails(k: &Kiln, args: &[&str]) -> String {
    let out = k.cmd().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "kiln {args:?} should fail:\n{err}"
    );
    err
}

fn image_id(k: &Kiln, reference: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", reference])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(Command::new("skopeo").args(args))).unwrap()
}

fn store_blobs(k: &Kiln) -> usize {
    std::fs::read_dir(k.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn push_is_read_by_skopeo_pull_gets_the_same_image_and_repush_only_heads() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let name = format!("{}/t/busybox:1", reg.host());
    let k1 = Kiln::new();
    k1.import_busybox(&name);
    let out = k1.ok(&["push", &name]);
    let line = out
        .lines()
        .find(|l| l.starts_with("1: digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest line in:\n{out}"));
    let digest = line.split(' ').nth(2).unwrap().to_string();
    let size: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();

    if have("skopeo") {
        let url = format!("docker://{name}");
        let info = skopeo_json(&["inspect", "--tls-verify=false", &url]);
        assert_eq!(info["Digest"], digest.as_str());
        let raw =
            run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &url]));
        assert_eq!(raw.len() as u64, size);
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let config = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--config",
            "--raw",
            &url,
        ]));
        let config_digest = format!("sha256:{}", sha256_hex(config.as_bytes()));
        assert_eq!(config_digest, image_id(&k1, &name));
        // skopeo copies it back out (every blob verified by skopeo).
        let dest = tempfile::tempdir().unwrap();
        run(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &url,
            &format!("oci:{}:x", dest.path().display()),
        ]));
    }

    // Re-push: the registry already has the manifest under the tag; only HEAD requests.
    let before = reg.methods().len();
    let again = k1.ok(&["push", &name]);
    assert!(again.contains(&digest), "{again}");
    let new: Vec<String> = reg.methods().split_off(before);
    assert!(!new.is_empty(), "no requests logged:\n{}", reg.log());
    assert!(new.iter().all(|m| m == "HEAD"), "re-push sent {new:?}");

    // Pull into an empty store: same image ID; the layers are stored uncompressed.
    let k2 = Kiln::new();
    let pulled = k2.ok(&["pull", &name]);
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert!(pulled.trim_end().ends_with(&name), "{pulled}");
    assert_eq!(image_id(&k2, &name), image_id(&k1, &name));
    // Ready to run, as docker's pull leaves it: every layer is unpacked as a snapshot.
    let snapshots = std::fs::read_dir(k2.root().join("snapshots"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().is_dir()).count())
        .unwrap_or(0);
    assert_eq!(
        snapshots, 1,
        "the busybox image's one layer unpacked by the pull"
    );
    let before = reg.methods().len();
    let up_to_date = k2.ok(&["pull", &name]);
    assert!(up_to_date.contains("Image is up to date"), "{up_to_date}");
    let new = reg.methods().split_off(before);
    assert_eq!(new.iter().filter(|m| *m == "GET").count(), 2, "{new:?}");

    // Push under another name from the pulled store: the gzip blobs kept from the pull are
    // sent as they are, so the manifest is the very one pushed from the first store.
    let other = format!("{}/t/copy:2", reg.host());
    let out = k2.ok(&["push", &name, &other]);
    assert!(out.contains(&format!("2: digest: {digest}")), "{out}");

    // Errors: unknown tag, unknown repository, unreachable registry.
    let k3 = Kiln::new();
    let err = kiln_fails(&k3, &["pull", &format!("{}/t/busybox:nope", reg.host())]);
    assert!(
        err.contains("not found on") && err.contains("busybox:nope"),
        "{err}"
    );
    let err = kiln_fails(&k3, &["pull", &format!("{}/no/such", reg.host())]);
    assert!(
        err.contains("no/such") && err.contains("not found on"),
        "{err}"
    );
    let err = kiln_fails(&k3, &["pull", "--platform", "linux/s390x", &name]);
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = kiln_fails(&k3, &["pull", &format!("127.0.0.1:{closed}/a/b")]);
    assert!(
        err.contains(&format!("127.0.0.1:{closed}")) && err.contains("unreachable"),
        "{err}"
    );
    let err = kiln_fails(&k3, &["push", "nosuch:1"]);
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(store_blobs(&k3), 0);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn build_from_a_registry_image_into_an_empty_store() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let base = format!("{}/t/base:1", reg.host());
    let k1 = Kiln::new();
    k1.import_busybox(&base);
    k1.ok(&["push", &base]);

    let k2 = Kiln::new();
    let ctx = context(&[
        ("Dockerfile", &format!("FROM {base}\nCOPY f /f\n")),
        ("f", "hello"),
    ]);
    let out = k2
        .cmd()
        .args(["build", "--progress=plain", "-t", "app:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The base was pulled into the store, with its registry image ID.
    assert_eq!(image_id(&k2, &base), image_id(&k1, &base));
    let v: serde_json::Value = serde_json::from_str(&k2.ok(&["inspect", "app:1"])).unwrap();
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2, "{v}");

    // The tag moves to another image in the registry. A build keeps the base it has;
    // `--pull` checks the tag and rebuilds on the new base, saying why.
    let out = k1
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .arg("import")
        .arg(common::busybox_tar())
        .arg(&base)
        .output()
        .unwrap();
    assert!(out.status.success());
    k1.ok(&["push", &base]);
    let old_id = image_id(&k2, &base);
    let build = |extra: &[&str]| {
        let out = k2
            .cmd()
            .args(["build", "--progress=plain", "-t", "app:1"])
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
    };
    let log = build(&[]);
    assert!(log.contains("CACHED COPY f /f"), "{log}");
    assert_eq!(image_id(&k2, &base), old_id);
    let log = build(&["--pull"]);
    assert!(log.contains("base image changed"), "{log}");
    assert_eq!(image_id(&k2, &base), image_id(&k1, &base));
    assert_ne!(image_id(&k2, &base), old_id);
}

#[test]
fn image_pushed_by_skopeo_is_pulled_by_kiln_with_platform_choice_and_digest_checks() {
    if !have("skopeo") {
        return;
    }
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let k1 = Kiln::new();
    k1.import_busybox("bb:1");
    let id = image_id(&k1, "bb:1");
    // The kiln store is an OCI layout; skopeo compresses the layers on the way.
    let url = format!("docker://{}/sk/bb:2", reg.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress",
        &format!("oci:{}:docker.io/library/bb:1", k1.root().display()),
        &url,
    ]));
    let k2 = Kiln::new();
    let name = format!("{}/sk/bb:2", reg.host());
    k2.ok(&["pull", &name]);
    assert_eq!(image_id(&k2, &name), id);

    // An index over it: the host's platform is chosen; a missing platform is an error.
    let raw = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &url]));
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let arch = kiln_host_arch();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": m["mediaType"], "digest": format!("sha256:{}", sha256_hex(raw.as_bytes())),
             "size": raw.len(), "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": m["mediaType"], "digest": format!("sha256:{}", sha256_hex(raw.as_bytes())),
             "size": raw.len(), "platform": {"os": "linux", "architecture": arch}},
        ]
    });
    put_manifest(
        &reg,
        "sk/bb",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index.to_string(),
    );
    let k3 = Kiln::new();
    let multi = format!("{}/sk/bb:multi", reg.host());
    k3.ok(&["pull", &multi]);
    assert_eq!(image_id(&k3, &multi), id);
    let err = kiln_fails(&k3, &["pull", "--platform", "linux/riscv64", &multi]);
    assert!(err.contains("no image for platform linux/riscv64"), "{err}");
    assert!(err.contains("linux/s390x"), "{err}");

    // A layer whose bytes do not match its digest: rejected, nothing stored.
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let data = reg.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let k4 = Kiln::new();
    let err = kiln_fails(&k4, &["pull", &name]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(store_blobs(&k4), 0, "a rejected pull left blobs");
    let images = k4.ok(&["images", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
}

fn kiln_host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// PUTs a manifest with a raw HTTP/1.1 request (no client library between the test and the
/// registry).
fn put_manifest(reg: &Registry, repo: &str, tag: &str, media_type: &str, body: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
    write!(
        s,
        "PUT /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: {media_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reg.host(),
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[test]
fn login_and_logout_against_an_htpasswd_registry() {
    let Some(reg) = Registry::start_with(Some(("kiln", "right-pass"))) else {
        return;
    };
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    let k = Kiln::new();
    let with_config = |args: &[&str], stdin: Option<&str>| {
        let mut c = k.cmd();
        c.env("DOCKER_CONFIG", config_dir.path()).args(args);
        if let Some(s) = stdin {
            c.write_stdin(s.to_string());
        }
        c.output().unwrap()
    };
    let name = format!("{}/private/bb:1", reg.host());
    k.import_busybox(&name);

    // Anonymous push: refused, and the error says what was tried and what to do.
    let out = with_config(&["push", &name], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Unauthorized") && err.contains("anonymously"),
        "{err}"
    );
    assert!(err.contains(&format!("kiln login {}", reg.host())), "{err}");

    // A wrong password: refused, nothing written.
    let out = with_config(
        &["login", "-u", "kiln", "--password-stdin", &reg.host()],
        Some("wrong-pass\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("incorrect username or password"), "{err}");
    assert!(!config.exists());

    // The right one: written 0600, then push and pull work.
    let out = with_config(
        &["login", "-u", "kiln", "--password-stdin", &reg.host()],
        Some("right-pass\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(v["auths"][reg.host()]["auth"].is_string(), "{v}");
    let out = with_config(&["push", &name], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k2 = Kiln::new();
    let out = k2
        .cmd()
        .env("DOCKER_CONFIG", config_dir.path())
        .args(["pull", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stored credentials that have gone wrong: the error names the user and the file.
    let out = with_config(&["logout", &reg.host()], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    let out = with_config(&["logout", &reg.host()], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Not logged in"));
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"a2lsbjpzdGFsZQ=="}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let out = with_config(&["push", &name], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"kiln\"") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn big_layers_go_up_in_chunks_and_come_back_intact() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    // 80 MiB of noise: gzip cannot shrink it under the 64 MiB monolithic limit.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = Vec::with_capacity(80 << 20);
    while noise.len() < 80 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(root.join("noise"), &noise).unwrap();
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("."));
    let name = format!("{}/big/noise:1", reg.host());
    let k1 = Kiln::new();
    k1.ok(&["import", tar.to_str().unwrap(), &name]);
    // The first push compresses the layer while it streams it up: one PATCH.
    k1.ok(&["push", &name]);
    let methods = reg.methods();
    assert_eq!(
        methods.iter().filter(|m| *m == "PATCH").count(),
        1,
        "{methods:?}"
    );
    let k2 = Kiln::new();
    k2.ok(&["pull", &name]);
    assert_eq!(image_id(&k2, &name), image_id(&k1, &name));
    // To another registry the compressed blob, now in the store, goes up in chunks.
    let Some(reg2) = Registry::start_with(None) else {
        return;
    };
    let name2 = format!("{}/big/noise:1", reg2.host());
    k1.ok(&["push", &name, &name2]);
    let methods = reg2.methods();
    assert!(
        methods.iter().filter(|m| *m == "PATCH").count() >= 2,
        "{methods:?}"
    );
    let k3 = Kiln::new();
    k3.ok(&["pull", &name2]);
    assert_eq!(image_id(&k3, &name2), image_id(&k1, &name));
}

/// `kiln build --progress=plain ARGS CONTEXT`: (image ID, stderr).
fn build(k: &Kiln, args: &[&str], ctx: &Path) -> (String, String) {
    let out = k
        .cmd()
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build {args:?} failed:\n{err}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        err,
    )
}

/// A build with `--cache-from type=registry,ref=CACHE`: (image ID, stderr, how many blobs of
/// the cache repository it downloaded, the requests it made).
fn build_from_cache(
    reg: &Registry,
    k: &Kiln,
    cache: &str,
    ctx: &Path,
) -> (String, String, usize, Vec<String>) {
    let before = reg.requests().len();
    let (id, err) = build(
        k,
        &["--cache-from", &format!("type=registry,ref={cache}")],
        ctx,
    );
    let new = reg.requests().split_off(before);
    let gets = new
        .iter()
        .filter(|r| r.starts_with("GET /v2/ci/cache/blobs/"))
        .count();
    (id, err, gets, new)
}

fn cached_steps(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains(" CACHED ")).count()
}

fn layer_count(k: &Kiln, id: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", id])).unwrap();
    v[0]["RootFS"]["Layers"].as_array().unwrap().len()
}

#[test]
fn cache_to_a_registry_lets_an_empty_store_reuse_every_layer() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let cache = format!("{}/ci/cache:main", reg.host());
    let dockerfile = "FROM scratch\nCOPY a /a\nENV X=1\nCOPY b /b\nWORKDIR /w\nCMD [\"/a\"]\n";
    let files = |b: &'static str| context(&[("Dockerfile", dockerfile), ("a", "aaa"), ("b", b)]);
    let ctx1 = files("bbb");
    let k1 = Kiln::new();
    let (id1, _) = build(
        &k1,
        &["--cache-to", &format!("type=registry,ref={cache}")],
        ctx1.path(),
    );
    let layers = layer_count(&k1, &id1);
    assert!(layers >= 2, "{layers}");

    // The cache is an OCI manifest an independent reader sees as such.
    if have("skopeo") {
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{cache}"),
        ]));
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["artifactType"], "application/vnd.kiln.build-cache.v1");
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.kiln.build-cache.config.v1+json"
        );
        assert_eq!(m["layers"].as_array().unwrap().len(), layers, "{m}");
    }

    // A second machine: empty store, same files in another directory. Every step is a hit,
    // the image is the very same, and only the final image's layers (and the key map) are
    // downloaded.
    let ctx2 = files("bbb");
    let k2 = Kiln::new();
    let (id2, err2, blob_gets, new) = build_from_cache(&reg, &k2, &cache, ctx2.path());
    assert_eq!(id2, id1, "{err2}");
    assert_eq!(cached_steps(&err2), 5, "{err2}");
    assert_eq!(blob_gets, layers + 1, "{new:?}");
    // The store now holds the hits locally: a rebuild asks nothing of the registry.
    let before = reg.requests().len();
    let (id2b, err2b) = build(&k2, &[], ctx2.path());
    assert_eq!(id2b, id1);
    assert_eq!(cached_steps(&err2b), 5, "{err2b}");
    assert_eq!(reg.requests().len(), before);

    // A third machine with `b` changed: the steps before it hit, the rest run; only the
    // layer of `COPY a` is downloaded.
    let ctx3 = files("changed");
    let k3 = Kiln::new();
    let (id3, err3, layer_gets, new) = build_from_cache(&reg, &k3, &cache, ctx3.path());
    assert_ne!(id3, id1);
    assert_eq!(cached_steps(&err3), 2, "{err3}");
    assert_eq!(layer_gets, 2, "{new:?}");

    // A cache that does not exist yet (the first CI run) is a warning, not a failure.
    let k4 = Kiln::new();
    let (id4, err4) = build(
        &k4,
        &[
            "--cache-from",
            &format!("type=registry,ref={}/ci/nothing:here", reg.host()),
        ],
        ctx1.path(),
    );
    assert!(!id4.is_empty());
    assert!(err4.contains("not importing the build cache"), "{err4}");
    // Bad specs are usage errors.
    let err = kiln_fails(
        &k4,
        &[
            "build",
            "--cache-to",
            "type=local,dest=/tmp/x",
            ctx1.path().to_str().unwrap(),
        ],
    );
    assert!(err.contains("type=registry"), "{err}");
}

#[test]
fn cache_mode_max_exports_the_steps_of_every_stage() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let dockerfile = "FROM scratch AS builder\nCOPY a /a\nCOPY b /b\n\
                      FROM scratch\nCOPY --from=builder /a /out\nCOPY c /c\n";
    let files = || {
        context(&[
            ("Dockerfile", dockerfile),
            ("a", "aaa"),
            ("b", "bbb"),
            ("c", "ccc"),
        ])
    };
    let ctx1 = files();
    let k1 = Kiln::new();
    let min = format!("{}/ci/cache:min", reg.host());
    let max = format!("{}/ci/cache:max", reg.host());
    let (id1, _) = build(
        &k1,
        &["--cache-to", &format!("type=registry,ref={min}")],
        ctx1.path(),
    );
    let (again, _) = build(
        &k1,
        &["--cache-to", &format!("type=registry,ref={max},mode=max")],
        ctx1.path(),
    );
    assert_eq!(again, id1);

    // mode=min: the final stage hits, the builder stage (not in the image) runs again.
    let k2 = Kiln::new();
    let ctx2 = files();
    let (id2, err2) = build(&k2, &["--cache-from", &min], ctx2.path());
    assert_eq!(id2, id1);
    assert_eq!(cached_steps(&err2), 2, "{err2}");
    // mode=max: every step hits.
    let k3 = Kiln::new();
    let (id3, err3) = build(
        &k3,
        &["--cache-from", &format!("type=registry,ref={max}")],
        ctx2.path(),
    );
    assert_eq!(id3, id1);
    assert_eq!(cached_steps(&err3), 4, "{err3}");

    // Every step hits, and what comes down is the key map and the final image's layers
    // only: the builder stage's layers are not in the image and nothing reads them.
    let k4 = Kiln::new();
    let (id4, err4, blob_gets, new) = build_from_cache(&reg, &k4, &max, ctx2.path());
    assert_eq!(id4, id1);
    assert_eq!(cached_steps(&err4), 4, "{err4}");
    assert_eq!(layer_count(&k4, &id4), 2);
    assert_eq!(blob_gets, layer_count(&k4, &id4) + 1, "{new:?}");
}

#[test]
fn build_push_sends_every_tag() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "aaa")]);
    let t1 = format!("{}/app/one:1", reg.host());
    let t2 = format!("{}/app/two:2", reg.host());
    let k1 = Kiln::new();
    let (id, err) = build(&k1, &["-t", &t1, "-t", &t2, "--push"], ctx.path());
    assert!(err.contains("Pushed"), "{err}");
    for t in [&t1, &t2] {
        let k = Kiln::new();
        k.ok(&["pull", t]);
        assert_eq!(image_id(&k, t), id);
    }
    let err = kiln_fails(&k1, &["build", "--push", ctx.path().to_str().unwrap()]);
    assert!(err.contains("--push needs"), "{err}");
}

/// A `docker-credential-NAME` that keeps one secret in a file beside it and logs its calls.
fn fake_helper(dir: &Path, name: &str) {
    let script = format!(
        r#"#!/bin/sh
d="$(dirname "$0")"
echo "$1" >> "$d/{name}.calls"
case "$1" in
  store) cat > "$d/{name}.json" ;;
  get)
    read -r server
    if [ -f "$d/{name}.json" ] && grep -q "\"ServerURL\":\"$server\"" "$d/{name}.json"; then
      cat "$d/{name}.json"
    else
      echo "credentials not found in native keychain"; exit 1
    fi ;;
  erase) read -r server; rm -f "$d/{name}.json" ;;
  *) exit 2 ;;
esac
"#
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn credential_helpers_keep_the_secret_out_of_config_json() {
    let Some(reg) = Registry::start_with(Some(("kiln", "right-pass"))) else {
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    fake_helper(bin.path(), "fake");
    fake_helper(bin.path(), "other");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    std::fs::write(&config, r#"{"credsStore":"fake","psFormat":"keep me"}"#).unwrap();
    let k = Kiln::new();
    let kiln = |args: &[&str], stdin: Option<&str>| {
        let mut c = k.cmd();
        c.env("DOCKER_CONFIG", config_dir.path())
            .env("PATH", &path)
            .args(args);
        if let Some(s) = stdin {
            c.write_stdin(s.to_string());
        }
        c.output().unwrap()
    };
    let name = format!("{}/private/helped:1", reg.host());
    k.import_busybox(&name);

    // login stores through the helper; config.json keeps an empty entry and its other fields.
    let out = kiln(
        &["login", "-u", "kiln", "--password-stdin", &reg.host()],
        Some("right-pass\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(v["auths"][reg.host()], serde_json::json!({}), "{v}");
    assert_eq!(v["psFormat"], "keep me");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("saved with docker-credential-fake"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read_to_string(bin.path().join("fake.json")).unwrap();
    assert!(stored.contains("right-pass"), "{stored}");
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains("right-pass"));

    // push and pull get the secret from the helper.
    let out = kiln(&["push", &name], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(bin.path().join("fake.calls")).unwrap();
    assert!(calls.lines().any(|l| l == "get"), "{calls}");

    // A per-registry helper wins over credsStore; one that holds nothing means anonymous,
    // and the error names the helper.
    std::fs::write(
        &config,
        format!(
            r#"{{"credsStore":"fake","credHelpers":{{"{}":"other"}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let out = kiln(&["push", &name], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("anonymously"), "{err}");
    assert!(std::fs::read_to_string(bin.path().join("other.calls"))
        .unwrap()
        .contains("get"));

    // logout erases through the helper.
    std::fs::write(&config, r#"{"credsStore":"fake"}"#).unwrap();
    let out = kiln(&["logout", &reg.host()], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    assert!(!bin.path().join("fake.json").exists());
    let out = kiln(&["push", &name], None);
    assert_eq!(out.status.code(), Some(1));

    // A helper that is not installed is a clear error.
    std::fs::write(&config, r#"{"credsStore":"kiln-missing"}"#).unwrap();
    let out = kiln(&["push", &name], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("docker-credential-kiln-missing"), "{err}");
}

#[test]
fn pushing_to_another_repository_mounts_the_blobs() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let a = format!("{}/team/a:1", reg.host());
    let b = format!("{}/team/b:1", reg.host());
    let k1 = Kiln::new();
    k1.import_busybox(&a);
    let first = k1.ok(&["push", &a]);
    let layer_lines = |out: &str, status: &str| {
        out.lines()
            .filter(|l| {
                l.split_once(": ").is_some_and(|(id, st)| {
                    id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && st == status
                })
            })
            .count()
    };
    assert_eq!(layer_lines(&first, "Pushed"), 1, "{first}");
    let again = k1.ok(&["push", &a]);
    assert_eq!(layer_lines(&again, "Layer already exists"), 1, "{again}");
    let before = reg.requests().len();
    let out = k1.ok(&["push", &a, &b]);
    assert_eq!(layer_lines(&out, "Mounted from team/a"), 1, "{out}");
    let new = reg.requests().split_off(before);
    let sent: Vec<&String> = new
        .iter()
        .filter(|r| r.starts_with("PATCH") || (r.starts_with("PUT") && r.contains("/blobs/")))
        .collect();
    assert!(sent.is_empty(), "blobs uploaded to b: {new:?}");
    assert!(
        new.iter()
            .any(|r| r.starts_with("POST /v2/team/b/blobs/uploads/?mount=")),
        "{new:?}"
    );
    assert!(out.contains("digest: sha256:"), "{out}");

    // A store that only pulled the image knows where its blobs came from too.
    let k2 = Kiln::new();
    k2.ok(&["pull", &a]);
    let c = format!("{}/team/c:1", reg.host());
    let before = reg.requests().len();
    k2.ok(&["push", &a, &c]);
    let new = reg.requests().split_off(before);
    assert!(
        !new.iter()
            .any(|r| r.starts_with("PATCH") || (r.starts_with("PUT") && r.contains("/blobs/"))),
        "blobs uploaded to c: {new:?}"
    );
    let k3 = Kiln::new();
    k3.ok(&["pull", &c]);
    assert_eq!(image_id(&k3, &c), image_id(&k1, &a));
}

#[test]
fn push_with_zstd_layers_is_pulled_back_as_the_same_image() {
    let Some(reg) = Registry::start_with(None) else {
        return;
    };
    let name = format!("{}/z/busybox:1", reg.host());
    let k1 = Kiln::new();
    k1.import_busybox(&name);
    let out = k1.ok(&["push", "--compression", "zstd", &name]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    if have("skopeo") {
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{name}"),
        ]));
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    let k2 = Kiln::new();
    k2.ok(&["pull", &name]);
    assert_eq!(image_id(&k2, &name), image_id(&k1, &name));
    // The zstd variant is kept: pushing it again is HEAD requests only.
    let before = reg.methods().len();
    k1.ok(&["push", "--compression", "zstd", &name]);
    let new = reg.methods().split_off(before);
    assert!(new.iter().all(|m| m == "HEAD"), "{new:?}");
}

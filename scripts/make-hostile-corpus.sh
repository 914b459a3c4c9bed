#!/usr/bin/env bash
# Writes kiln's hostile archive corpus: tarballs that try to escape their destination, lie
# about sizes, carry devices or setuid bits, or are truncated, corrupt or decompression bombs.
#
#   scripts/make-hostile-corpus.sh OUTDIR OUTSIDE [BASE_LAYER_TAR]
#
# OUTSIDE is the directory the archives aim at (absolute links, `..` chains, hard links): the
# tests fill it with canaries and check it stays untouched. With BASE_LAYER_TAR (an
# uncompressed rootfs layer such as busybox's), every archive is also wrapped as a
# docker-archive image OUTDIR/images/NAME.tar whose layers are the base and the hostile tar,
# so `kiln load` and FROM/COPY --from see it as a base-image layer.
#
# OUTDIR/cases.tsv lists NAME, FILE, EXPECT (`fail`: every entry point must refuse it;
# `any`: refusing or sanitising are both acceptable, escaping never is) and a description.
# Needs python3 and zstd.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR OUTSIDE [BASE_LAYER_TAR]" >&2; exit 2; }
out=$1 outside=$2 base=${3:-}
mkdir -p "$out/tars"
command -v zstd >/dev/null || { echo "$0: zstd is required (apt package zstd)" >&2; exit 1; }

python3 - "$out" "$outside" "$base" <<'PY'
import gzip, hashlib, io, json, os, subprocess, sys, tarfile, zlib

out, outside, base = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
ups = "../" * 16  # more `..` than any destination is deep; names stay within ustar's 100 bytes
cases = []

def header(name, typ=b"0", size=0, link=b"", mode=0o644, devmajor=0, devminor=0,
           size_field=None):
    """One raw ustar header: tarfile refuses to write the lies we need."""
    h = bytearray(512)
    name = name if isinstance(name, bytes) else name.encode()
    link = link if isinstance(link, bytes) else link.encode()
    h[0:len(name[:100])] = name[:100]
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"14000000000\0"
    h[156:157] = typ
    h[157:157 + len(link[:100])] = link[:100]
    h[257:265] = b"ustar\x0000"
    h[329:337] = b"%07o\0" % devmajor
    h[337:345] = b"%07o\0" % devminor
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)

def pad(data):
    return data + b"\0" * ((512 - len(data) % 512) % 512)

def entry(name, typ=b"0", data=b"", **kw):
    data = data if isinstance(data, bytes) else data.encode()
    return header(name, typ, len(data), **kw) + pad(data)

def pax(records, typ=b"x"):
    body = b""
    for k, v in records.items():
        k = k.encode(); v = v if isinstance(v, bytes) else v.encode()
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec) + 1
        while n != len(rec) + len(str(n)):
            n = len(rec) + len(str(n))
        body += str(n).encode() + rec
    return entry("././@PaxHeader", typ, body)

END = b"\0" * 1024

def add(name, data, expect, what, ext="tar"):
    path = os.path.join(out, "tars", f"{name}.{ext}")
    with open(path, "wb") as f:
        f.write(data)
    cases.append((name, path, expect, what))

def sane(*entries):
    return b"".join(entries) + END

O = outside
# --- escapes -------------------------------------------------------------------------------
add("dotdot", sane(entry(ups + O[1:] + "/pwn_dotdot", data="pwned")), "any",
    "file named with a `..` chain to the outside dir")
add("abs_path", sane(entry(O + "/pwn_abs", data="pwned")), "any",
    "file with an absolute name inside the outside dir")
add("symlink_abs", sane(entry("evil", b"2", link=O)), "any",
    "symlink to the outside dir, nothing written through it")
add("symlink_then_file", sane(entry("a", b"2", link=O), entry("a/pwn_link", data="pwned")),
    "any", "symlink a -> outside, then file a/pwn_link")
add("symlink_rel_then_file",
    sane(entry("a", b"2", link=ups + O[1:]), entry("a/pwn_rel", data="pwned")), "any",
    "symlink a -> ../../..outside, then file a/pwn_rel")
add("symlink_chain_then_file",
    sane(entry("a", b"2", link="b"), entry("b", b"2", link=O),
         entry("a/sub/pwn_chain", data="pwned")), "any",
    "a -> b -> outside, then a/sub/pwn_chain (parents created through the chain)")
add("symlink_then_dir_then_file",
    sane(entry("etc", b"2", link=O), entry("etc/", b"5", mode=0o755),
         entry("etc/pwn_dir", data="pwned")), "any",
    "symlink etc -> outside, a directory entry etc/, then etc/pwn_dir")
add("symlink_loop_then_file",
    sane(entry("l", b"2", link="l"), entry("l/x", data="x")), "any",
    "self-referencing symlink, then a file through it")
add("hardlink_abs", sane(entry("h", b"1", link=O + "/canary")), "any",
    "hard link to the outside canary by absolute name")
add("hardlink_dotdot", sane(entry("h", b"1", link=ups + O[1:] + "/canary")), "any",
    "hard link to the outside canary by `..` chain")
add("symlink_dir_then_hardlink",
    sane(entry("d", b"2", link=O), entry("h", b"1", link="d/canary"),
         entry("h", data="pwned")), "any",
    "d -> outside, hard link h -> d/canary, then file h (would truncate the canary)")
add("symlink_file_then_write",
    sane(entry("f", b"2", link=O + "/canary"), entry("f", data="pwned")), "any",
    "symlink f -> outside canary, then a regular file f (must replace the link)")
add("pax_path_escape",
    sane(pax({"path": ups + O[1:] + "/pwn_pax"}), entry("harmless", data="pwned")), "any",
    "PAX path record with a `..` chain overriding a harmless name")
add("pax_linkpath_then_file",
    sane(pax({"linkpath": O}), entry("p", b"2", link="harmless"),
         entry("p/pwn_paxlink", data="pwned")), "any",
    "PAX linkpath makes p -> outside, then p/pwn_paxlink")
add("gnu_longname_escape",
    sane(entry("././@LongLink", b"L", (ups + O[1:] + "/pwn_gnu").encode() + b"\0"),
         entry("short", data="pwned")), "any",
    "GNU long name with a `..` chain")
add("whiteout_escape",
    sane(entry("x/" + ups + O[1:] + "/.wh.canary", data="")), "any",
    "whiteout whose path climbs out to delete the canary")
add("whiteout_dotdot_name", sane(entry(".wh...", data="")), "any",
    "whiteout of `..`")
add("opaque_through_symlink",
    sane(entry("o", b"2", link=O), entry("o/.wh..wh..opq", data="")), "any",
    "opaque marker inside a symlink to the outside dir (would empty it)")
# --- odd entries ---------------------------------------------------------------------------
add("devices", sane(entry("dev/null", b"3", devmajor=1, devminor=3, mode=0o666),
                    entry("dev/sda", b"4", devmajor=8, devminor=0, mode=0o660),
                    entry("dev/fifo", b"6", mode=0o644)), "any",
    "character, block and fifo nodes")
add("setuid", sane(entry("bin/su", data="#!/bin/sh\n", mode=0o4755),
                   entry("bin/sg", data="#!/bin/sh\n", mode=0o2755),
                   entry("tmp/", b"5", mode=0o1777)), "any",
    "setuid, setgid and sticky bits")
add("duplicates", sane(entry("x", data="one"), entry("x/", b"5", mode=0o755),
                       entry("x/child", data="c"), entry("x", data="three"),
                       entry("y/", b"5", mode=0o755), entry("y", b"2", link=O),
                       entry("y/pwn_dup", data="pwned")), "any",
    "file x, dir x, x/child, file x again; dir y replaced by symlink y -> outside, then y/pwn_dup")
add("unknown_type", sane(entry("weird", b"Z", data="?")), "any",
    "an entry type no tar writer uses")
long_path = "/".join(["d" * 200] * 30) + "/file"
add("pax_long_path", sane(pax({"path": long_path}), entry("short", data="deep")), "any",
    "6 KB path from a PAX record (30 components of 200 bytes)")
add("pax_long_component", sane(pax({"path": "n" * 300}), entry("short", data="long")), "any",
    "one 300-byte name component (longer than NAME_MAX)")
add("non_utf8_name", sane(entry(b"caf\xe9/\xff\xfe", data="latin1")), "any",
    "names that are not UTF-8")
add("empty_stream", b"", "any", "zero bytes")
add("only_end_blocks", END, "any", "an empty tar: just the end blocks")
# --- lies about sizes and broken streams ---------------------------------------------------
add("huge_size", header("big", size=0o77777777777) + b"x" * 4096, "fail",
    "header promises 8 GiB, the stream holds 4 KiB")
add("base256_huge_size",
    header("big", size_field=b"\x80" + b"\0" * 3 + b"\x7f" + b"\xff" * 7) + b"x" * 4096 + END,
    "fail", "base-256 size field of about 2^63 bytes")
add("negative_size", header("neg", size_field=b"\xff" * 12) + END, "fail",
    "base-256 size field that is negative")
add("garbage_size", header("garb", size_field=b"zzzzzzzzzzz\0") + END, "fail",
    "size field that is not a number")
add("bad_header_checksum",
    bytes(b ^ 1 if i == 0 else b for i, b in enumerate(entry("a", data="a"))) + END, "fail",
    "header whose checksum does not match")
good = sane(entry("etc/", b"5", mode=0o755), entry("etc/data", data="z" * 20000))
add("truncated_tar", good[:512 + 512 + 3000], "fail", "tar cut inside a file's data")
add("truncated_header", good[:700], "fail", "tar cut inside a header")
gz = gzip.compress(good)
add("truncated_gzip", gz[: len(gz) // 2], "fail", "gzip stream cut in half", "tar.gz")
bad_crc = bytearray(gz); bad_crc[-8] ^= 0xFF
add("bad_gzip_crc", bytes(bad_crc), "fail", "gzip whose CRC32 trailer is wrong", "tar.gz")
bad_len = bytearray(gz); bad_len[-1] ^= 0x01
add("bad_gzip_length", bytes(bad_len), "fail", "gzip whose length trailer is wrong", "tar.gz")
zst = subprocess.run(["zstd", "-q", "-c", "--check"], input=good, capture_output=True,
                     check=True).stdout
bad_zst = bytearray(zst); bad_zst[-1] ^= 0xFF
add("bad_zstd_checksum", bytes(bad_zst), "fail", "zstd frame whose checksum is wrong",
    "tar.zst")
add("truncated_zstd", zst[: len(zst) // 2], "fail", "zstd frame cut in half", "tar.zst")
add("garbage", bytes((i * 7919 + 13) % 251 for i in range(5000)), "fail",
    "5000 bytes of noise")
add("gzip_garbage", gzip.compress(bytes((i * 31) % 256 for i in range(3000))), "fail",
    "valid gzip of noise", "tar.gz")

# --- decompression bomb: BOMB_MIB of zeros in one file, streamed through gzip -------------
bomb_mib = int(os.environ.get("BOMB_MIB", "256"))
bomb_path = os.path.join(out, "tars", "gzip_bomb.tar.gz")
with open(bomb_path, "wb") as f:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    f.write(z.compress(header("zeros", size=bomb_mib << 20)))
    chunk = b"\0" * (1 << 20)
    for _ in range(bomb_mib):
        f.write(z.compress(chunk))
    f.write(z.compress(END))
    f.write(z.flush())
cases.append(("gzip_bomb", bomb_path, "any",
              f"{bomb_mib} MiB of zeros gzip'd to {os.path.getsize(bomb_path) // 1024} KiB"))

# --- docker-archive wrappers ---------------------------------------------------------------
def diff_id(data):
    """The uncompressed digest when the bytes decompress, else the raw digest (load must
    then refuse the layer on its own)."""
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            data = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True,
                                  check=True).stdout
    except Exception:
        pass
    return "sha256:" + hashlib.sha256(data).hexdigest()

if base:
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    base_bytes = open(base, "rb").read()
    base_id = "sha256:" + hashlib.sha256(base_bytes).hexdigest()
    for name, path, _, _ in cases:
        if name == "gzip_bomb":
            data_id = None  # hashed while copying below
        layer = open(path, "rb").read()
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [base_id, diff_id(layer)]},
        }).encode()
        cfg_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{
            "Config": cfg_name,
            "RepoTags": [f"hostile/{name.replace('_', '-')}:latest"],
            "Layers": ["base/layer.tar", "hostile/layer.tar"],
        }]).encode()
        with tarfile.open(os.path.join(out, "images", f"{name}.tar"), "w") as t:
            for member, data in (("manifest.json", manifest), (cfg_name, config),
                                 ("base/layer.tar", base_bytes), ("hostile/layer.tar", layer)):
                info = tarfile.TarInfo(member); info.size = len(data); info.mode = 0o644
                t.addfile(info, io.BytesIO(data))

with open(os.path.join(out, "cases.tsv"), "w") as f:
    for name, path, expect, what in cases:
        f.write(f"{name}\t{path}\t{expect}\t{what}\n")
print(f"{len(cases)} hostile archives in {out}")
PY

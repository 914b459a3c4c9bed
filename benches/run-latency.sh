#!/usr/bin/env bash
# Time `kiln run --rm IMAGE true`, start to exit, with hyperfine (target: ≤ 25 ms; podman
# takes 0.16 s, docker 0.22–0.29 s; a bare unshare + chroot 6 ms, 14 ms with an overlay).
#
#   benches/run-latency.sh
#   env: KILN (the binary; default target/release/kiln, built if missing), RUNS (default 50),
#        WORK (default /tmp/kiln-run-bench: a store holding a busybox image)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOP="$(cd "$HERE/.." && pwd)"
KILN="${KILN:-$TOP/target/release/kiln}"
RUNS="${RUNS:-50}"
WORK="${WORK:-/tmp/kiln-run-bench}"
STORE="$WORK/store"

[[ -x "$KILN" ]] || (cd "$TOP" && cargo build --release --quiet)
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
mkdir -p "$WORK"
if ! "$KILN" --root "$STORE" run --rm busybox:latest true 2>/dev/null; then
    bash "$TOP/scripts/busybox-rootfs.sh" "$WORK/busybox.tar"
    "$KILN" --root "$STORE" import "$WORK/busybox.tar" busybox:latest >/dev/null
    # The first run unpacks the layer snapshot; the figure is for a warm store.
    "$KILN" --root "$STORE" run --rm busybox:latest true
fi
hyperfine -N --warmup 5 --runs "$RUNS" "$KILN --root $STORE run --rm busybox:latest true"

#!/usr/bin/env bash
# Time whole kiln builds on the shared benchmark contexts and print kiln's figures beside
# the peers' (BuildKit, buildah, podman) measured on this machine (../shared/bench).
#
#   benches/builds.sh [CONTEXTS] [SCENARIOS]
#     CONTEXTS   bigfile app multistage pyapp     (default: bigfile)
#     SCENARIOS  cold nochange late early        (default: all that apply)
#   env: RUNS (default 5; 3 for bigfile), CTX_DIR (default /tmp/bench-ctx), BIG_MB (bigfile size,
#        default 1024), KILN (the binary; default target/release/kiln, built if missing)
#
# The contexts start FROM 127.0.0.1:5000/busybox:latest (pyapp: debian-python): the script
# imports a busybox rootfs (Debian's busybox-static) under that name, so no registry needs to
# run. Cold runs start from a store holding only the base image, unpacked as a pull leaves it,
# as the peers' cold runs did.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOP="$(cd "$HERE/.." && pwd)"
SHARED="${SHARED:-$TOP/../shared/bench}"
CTX_DIR="${CTX_DIR:-/tmp/bench-ctx}"
export CTX_DIR
CONTEXTS="${1:-bigfile}"
SCENARIOS="${2:-cold nochange late early}"
KILN="${KILN:-$TOP/target/release/kiln}"
WORK="${WORK:-/tmp/kiln-bench}"
STORE="$WORK/store"
BASE_STORE="$WORK/base-store"

[[ -x "$KILN" ]] || (cd "$TOP" && cargo build --release --quiet)
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[[ -x /bin/busybox ]] || { echo "needs busybox-static (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$WORK"

# The base: a busybox rootfs tarball imported once into a template store.
if [[ ! -d "$BASE_STORE" ]]; then
  bash "$TOP/scripts/busybox-rootfs.sh" "$WORK/busybox.tar"
  "$KILN" --root "$BASE_STORE" import "$WORK/busybox.tar" 127.0.0.1:5000/busybox:latest >/dev/null
  # Unpacked, as a pull leaves a base image (the peers' cold runs had theirs pulled).
  "$KILN" --root "$BASE_STORE" run --rm --network none 127.0.0.1:5000/busybox:latest true
fi
# pyapp's base (Debian + python3-minimal) comes from ../shared/bench/make-base-images.sh (an
# OCI layout under /tmp/bench-base), loaded once as the name its Dockerfile uses.
if [[ " $CONTEXTS " == *" pyapp "* ]] && ! "$KILN" --root "$BASE_STORE" inspect 127.0.0.1:5000/debian-python:bookworm >/dev/null 2>&1; then
  [[ -d /tmp/bench-base/oci/debian-python ]] || bash "$SHARED/make-base-images.sh" >/dev/null
  skopeo copy -q oci:/tmp/bench-base/oci/debian-python \
    "docker-archive:$WORK/debian-python.tar:127.0.0.1:5000/debian-python:bookworm"
  "$KILN" --root "$BASE_STORE" load -q -i "$WORK/debian-python.tar"
  # As a pull leaves it: its layer unpacked, ready for RUN.
  "$KILN" --root "$BASE_STORE" run --rm --network none 127.0.0.1:5000/debian-python:bookworm true
fi
reset_store() { rm -rf "$STORE"; cp -a "$BASE_STORE" "$STORE"; }

peer() { # tool context scenario -> median seconds or "-"
  awk -F'\t' -v t="$1" -v c="$2" -v s="$3" '$1==t && $2==c && $3==s {print $5; f=1} END {if (!f) print "-"}' \
    "$SHARED/results/peers-summary.tsv"
}

printf '%-10s %-9s %8s %8s %8s %8s\n' context scenario kiln BuildKit buildah podman
for c in $CONTEXTS; do
  bash "$SHARED/contexts/gen-contexts.sh" "$c" >/dev/null 2>&1
  ctx="$CTX_DIR/$c"
  runs="${RUNS:-5}"; [[ "$c" == bigfile ]] && runs="${RUNS:-3}"
  build="$KILN --root $STORE build -q -t bench/$c:latest $ctx"
  for s in $SCENARIOS; do
    case "$s" in
      # A fresh copy of the base store for each run, and no deletion while timing: on ext4,
      # files created just after many were deleted cost several times more (the inode
      # allocator skips recently deleted inodes: `recently_deleted` in a profile).
      cold)     mkdir -p "$WORK/runs"
                prep="rm -rf $STORE; d=\$(mktemp -d -p $WORK/runs); cp -a $BASE_STORE \$d/s; ln -sfn \$d/s $STORE; sync" ;;
      nochange) reset_store; $build >/dev/null; prep="true" ;;
      late)     reset_store; $build >/dev/null; prep="date +%s%N > $ctx/late/config.txt" ;;
      early)
        case "$c" in
          app) f="$ctx/files/dir00/f0000.dat" ;;
          pyapp) f="$ctx/app/benchapp/stats.py" ;;
          *) continue ;;
        esac
        reset_store; $build >/dev/null; prep="echo \$(date +%s%N) >> $f" ;;
      *) continue ;;
    esac
    json="$WORK/$c-$s.json"
    hyperfine -N --style none --runs "$runs" --prepare "bash -c '$prep'" --export-json "$json" "$build" >/dev/null
    k=$(python3 -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['results'][0]['median'])" "$json")
    printf '%-10s %-9s %8s %8s %8s %8s\n' "$c" "$s" "$k" "$(peer docker "$c" "$s")" "$(peer buildah "$c" "$s")" "$(peer podman "$c" "$s")"
  done
  rm -rf "$WORK/runs"
  # Restore the pristine context for the next run.
  bash "$SHARED/contexts/gen-contexts.sh" "$c" >/dev/null 2>&1
done

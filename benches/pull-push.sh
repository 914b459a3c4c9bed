#!/usr/bin/env bash
# Registry transfer timings of kiln against the local benchmark registries.
#
#   benches/pull-push.sh [pull] [push] [repush] [cpu]     (no argument = all four)
#
# pull:   `kiln pull 127.0.0.1:5000/debian-python:bookworm` into an empty store, then the same
#         followed by a first `kiln run --rm IMAGE true` (pulled and ready to run).
# push:   `kiln push` of the bigfile context's image (1 GiB incompressible) to an emptied
#         scratch registry, with gzip and with zstd; kiln's cache of compressed layers is
#         dropped first, so every run compresses. Also `skopeo copy` of the same image as the
#         floor the registry itself sets.
# repush: pushing the unchanged image again (only HEAD requests).
# cpu:    where a cold push's time goes: kiln's CPU time, the registry process's CPU time
#         (from /proc), and the same for the registry accepting kiln's zstd blob from curl in
#         one sized PATCH (the floor the registry sets). Robust against a loaded machine,
#         unlike wall times.
#
# Needs: the registries of /work/shared/bench/registry.sh (start, start-scratch), the base
# images of make-base-images.sh pushed there, /tmp/bench-ctx/bigfile (contexts/gen-contexts.sh),
# hyperfine, a release build (cargo build --release). Nothing here is asserted: it prints.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${BENCH:-/work/shared/bench}"
KILN="${KILN:-$HERE/target/release/kiln}"
REG="${REG:-127.0.0.1:5000}"
SCRATCH="${SCRATCH:-127.0.0.1:5002}"
RUNS="${RUNS:-5}"
CTX="${CTX:-/tmp/bench-ctx/bigfile}"
WORK="$(mktemp -d /tmp/kiln-pull-push.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

[[ -x "$KILN" ]] || { echo "no $KILN: cargo build --release" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }

steps=("$@"); [[ ${#steps[@]} -gt 0 ]] || steps=(pull push repush cpu)

bench_pull() {
  local img="$REG/debian-python:bookworm"
  # A fresh empty store per run, and nothing deleted while timing: on ext4, files created
  # soon after many were deleted cost several times more (the inode allocator skips
  # recently deleted inodes), which would time the previous run's clean-up.
  mkdir -p "$WORK/runs"
  local fresh="rm -f $WORK/pull; ln -sfn \$(mktemp -d -p $WORK/runs) $WORK/pull"
  hyperfine -w 1 -r "$RUNS" -N \
    --prepare "bash -c '$fresh'" \
    -n "kiln pull debian-python (empty store; unpacked, ready to run)" \
    "$KILN --root $WORK/pull pull -q $img"
  hyperfine -w 1 -r "$RUNS" \
    --prepare "bash -c '$fresh'" \
    -n "kiln pull + first run" \
    "$KILN --root $WORK/pull pull -q $img && $KILN --root $WORK/pull run --rm $img true"
  hyperfine -w 1 -r "$RUNS" -N \
    --prepare "rm -rf $WORK/skopeo" \
    -n "skopeo copy debian-python to a directory (blobs only)" \
    "skopeo copy -q --src-tls-verify=false docker://$img dir:$WORK/skopeo"
}

bench_push() {
  local root="$WORK/push" img="$SCRATCH/bench/bigfile:kiln"
  "$KILN" --root "$root" build -q -t bigfile "$CTX" >/dev/null
  for c in gzip zstd; do
    hyperfine -w 0 -r 3 \
      --prepare "bash $BENCH/registry.sh reset-scratch >/dev/null; rm -rf $root/compressed" \
      -n "kiln push bigfile --compression $c (cold)" \
      "$KILN --root $root push -q --compression $c bigfile $img"
  done
  # The registry alone: an already-compressed layout copied in by skopeo (no compression).
  "$KILN" --root "$root" save -o "$WORK/bigfile.tar" bigfile
  mkdir -p "$WORK/oci" && tar -xf "$WORK/bigfile.tar" -C "$WORK/oci"
  hyperfine -w 0 -r 3 \
    --prepare "bash $BENCH/registry.sh reset-scratch >/dev/null" \
    -n "skopeo copy bigfile (compressed already) to the registry" \
    "skopeo copy -q --dest-tls-verify=false --dest-compress=false oci:$WORK/oci docker://$SCRATCH/bench/bigfile:skopeo || skopeo copy -q --dest-tls-verify=false docker-archive:$WORK/bigfile.tar docker://$SCRATCH/bench/bigfile:skopeo"
}

bench_repush() {
  local root="$WORK/push" img="$SCRATCH/bench/bigfile:kiln"
  [[ -d "$root" ]] || "$KILN" --root "$root" build -q -t bigfile "$CTX" >/dev/null
  "$KILN" --root "$root" push -q bigfile "$img" >/dev/null
  hyperfine -w 2 -r 10 -N -n "kiln re-push (unchanged)" "$KILN --root $root push -q bigfile $img"
}

reg_cpu() { # CPU seconds the scratch registry has used
  awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$(cat /tmp/bench-registry/scratch.pid)/stat"
}

bench_cpu() {
  local root="$WORK/push" img="$SCRATCH/bench/bigfile:kiln"
  [[ -d "$root" ]] || "$KILN" --root "$root" build -q -t bigfile "$CTX" >/dev/null
  for c in gzip zstd; do
    for _ in 1 2 3; do
      bash "$BENCH/registry.sh" reset-scratch >/dev/null
      rm -rf "$root/compressed"
      local a b
      a="$(reg_cpu)"
      /usr/bin/time -f "kiln push $c: %e s wall, kiln CPU %U user + %S sys" \
        "$KILN" --root "$root" push -q --compression "$c" bigfile "$img" >/dev/null
      b="$(reg_cpu)"
      echo "    registry CPU $(echo "$b - $a" | bc) s"
    done
  done
  # The biggest blob of the store is the zstd layer the last push made.
  local blob digest
  blob="$(ls -S "$root"/blobs/sha256/* | head -1)"
  digest="sha256:$(basename "$blob")"
  for _ in 1 2 3; do
    bash "$BENCH/registry.sh" reset-scratch >/dev/null
    local loc a b t0 t1
    loc="$(curl -s -D - -o /dev/null -X POST "http://$SCRATCH/v2/floor/blobs/uploads/" |
      awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')"
    a="$(reg_cpu)"; t0="$(date +%s.%N)"
    loc="$(curl -s -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
      -T "$blob" "$loc" | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')"
    curl -s -o /dev/null -X PUT "$loc&digest=$digest"
    t1="$(date +%s.%N)"; b="$(reg_cpu)"
    echo "curl PATCH+PUT of $(stat -c %s "$blob") bytes: $(echo "$t1 - $t0" | bc) s wall, registry CPU $(echo "$b - $a" | bc) s"
  done
}

for s in "${steps[@]}"; do
  case "$s" in
    pull) bench_pull ;;
    push) bench_push ;;
    repush) bench_repush ;;
    cpu) bench_cpu ;;
    *) echo "unknown step $s (pull|push|repush|cpu)" >&2; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# kiln's main job on an example that works offline: build kiln, make a busybox base image
# from Debian's busybox-static, build examples/hello with it, show it, and run it.
#
#   bash examples/demo.sh            (as root it installs busybox-static if missing)
#
# The store lives in $KILN_ROOT (default: a fresh directory under /tmp).
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
if [[ ! -x /bin/busybox ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  else
    echo "demo.sh: needs busybox-static (sudo apt-get install busybox-static)" >&2
    exit 1
  fi
fi
cargo build --release --quiet
kiln="$top/target/release/kiln"
export KILN_ROOT="${KILN_ROOT:-$(mktemp -d /tmp/kiln-demo.XXXXXX)}"
echo "store: $KILN_ROOT"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bash scripts/busybox-rootfs.sh "$work/busybox.tar"
echo "+ kiln import busybox.tar busybox:latest"
"$kiln" import "$work/busybox.tar" busybox:latest

echo "+ kiln build -t hello:1 examples/hello"
"$kiln" build --progress plain -t hello:1 examples/hello
echo "+ kiln build -t hello:1 examples/hello    # again: every step from the cache"
"$kiln" build --progress plain -t hello:1 examples/hello
echo "+ kiln images"
"$kiln" images
echo "+ kiln history hello:1"
"$kiln" history hello:1
echo "+ kiln run --rm hello:1"
"$kiln" run --rm hello:1
echo "+ kiln run --rm hello:1 kiln"
"$kiln" run --rm hello:1 kiln

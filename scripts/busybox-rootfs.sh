#!/usr/bin/env bash
# Make a busybox rootfs tarball without any network: /bin/busybox from Debian's
# busybox-static, a symlink per applet, /etc/passwd and /etc/group with a few users, /tmp.
#
#   scripts/busybox-rootfs.sh OUT.tar
#
# `kiln import OUT.tar busybox:latest` then gives the base image the examples, tests and
# benchmarks build on.
set -euo pipefail
out="${1:?usage: busybox-rootfs.sh OUT.tar}"
bb=/bin/busybox
[[ -x "$bb" ]] || { echo "busybox-rootfs.sh: needs Debian's busybox-static (apt-get install busybox-static)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
r="$work/rootfs"
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp}
cp "$bb" "$r/bin/busybox"
for applet in $("$bb" --list-full); do
  [[ -e "$r/$applet" || -L "$r/$applet" ]] || ln -s /bin/busybox "$r/$applet"
done
cat > "$r/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$r/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
app:x:1000:
staff:x:50:app
nogroup:x:65534:
GROUP
chmod 1777 "$r/tmp"
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$r" -cf "$out.tmp" .
mv "$out.tmp" "$out"

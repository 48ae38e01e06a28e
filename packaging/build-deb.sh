#!/usr/bin/env bash
# Builds a Debian package of ovlfs with Debian's own tools only (dpkg-deb), no debhelper.
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR]
#
# Without --binary it runs `cargo build --release --locked` and packages
# target/release/ovlfs; --binary packages an already built one (the tests use theirs).
# Writes DIR/ovlfs_VERSION_ARCH.deb (DIR defaults to target/debian) and prints its path.
#
# Contents: /usr/bin/ovlfs; /sbin/mount.fuse.ovlfs, a symlink to it, which mount(8) runs for
# `mount -t fuse.ovlfs` and fstab lines of that type (libmount looks for helpers in /sbin;
# Debian's fuse3 ships /sbin/mount.fuse3 the same way); the man page; copyright and
# changelog in /usr/share/doc/ovlfs.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out="target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done

for tool in dpkg-deb dpkg gzip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (a Debian system has it)" >&2; exit 1; }
done

if [ -z "$binary" ]; then
  cargo build --release --locked
  binary=target/release/ovlfs
fi
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable" >&2; exit 1; }

# The version Cargo.toml gives the package (its first `version =` line is the package's).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
# Debian versions sort "~" before anything: 0.2.0-rc.1 becomes 0.2.0~rc.1.
deb_version=${version/-/\~}
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/ovlfs"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/sbin" "$root/usr/share/man/man8" \
  "$root/usr/share/doc/ovlfs"
install -m 0755 "$binary" "$root/usr/bin/ovlfs"
# Debian ships binaries without symbols or debug info (dh_strip's options).
if command -v strip >/dev/null; then
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/ovlfs"
fi
# Absolute: /sbin may be a symlink to usr/sbin (merged /usr), where ../usr/bin is wrong;
# Debian policy wants absolute links between top-level directories anyway.
ln -s /usr/bin/ovlfs "$root/sbin/mount.fuse.ovlfs"
gzip -9n <ovlfs.8 >"$root/usr/share/man/man8/ovlfs.8.gz"
gzip -9n <CHANGELOG.md >"$root/usr/share/doc/ovlfs/changelog.gz"
chmod 0644 "$root/usr/share/man/man8/ovlfs.8.gz" "$root/usr/share/doc/ovlfs/changelog.gz"

# Machine-readable copyright (DEP-5). Debian keeps the Apache-2.0 text in common-licenses.
{
  cat <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ovlfs
Comment: The ovlfs binary statically links Rust crates from crates.io (fuser, rustix, libc,
 log, env_logger and theirs), each available under the MIT license, most also under
 Apache-2.0; Cargo.lock in the source lists them.

Files: *
Copyright: the ovlfs authors
License: MIT or Apache-2.0

License: MIT
COPYRIGHT
  # The license text, each line indented by one space, blank lines as " .".
  sed -e 's/^$/./' -e 's/^/ /' LICENSE-MIT
  cat <<COPYRIGHT

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
} >"$root/usr/share/doc/ovlfs/copyright"
chmod 0644 "$root/usr/share/doc/ovlfs/copyright"

# The newest glibc symbol version the binary uses is the libc6 it needs (none: a static
# build; no objdump: unversioned).
libc_dep=libc6
if command -v objdump >/dev/null; then
  glibc=$(objdump -T "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
    sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1 || true)
  [ -n "$glibc" ] && libc_dep="libc6 (>= $glibc)"
fi
# Debian's convention for who built the package.
maintainer="${DEBFULLNAME:-ovlfs maintainers} <${DEBEMAIL:-root@localhost}>"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: ovlfs
Version: $deb_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: fuse3, $libc_dep
Section: admin
Priority: optional
Description: userspace overlay filesystem on FUSE, a drop-in for fuse-overlayfs
 ovlfs merges read-only lower directory trees with a writable upper tree the
 way the kernel's overlayfs does, for rootless containers and kernels or
 setups where the kernel's overlayfs cannot be used. It takes fuse-overlayfs's
 command line (podman and buildah mount_program) and writes the kernel's
 on-disk format. mount -t fuse.ovlfs and fstab lines of type fuse.ovlfs work
 through /sbin/mount.fuse.ovlfs.
CONTROL

mkdir -p "$out"
deb="$out/ovlfs_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"

#!/usr/bin/env bash
# systemd-assets.sh CACHE_DIR [SUITE]: the root filesystem that TestSystemdVM (systemd_vm_test.go) boots
# with Debian's cloud kernel, made ready on a fresh Debian machine, as root:
#   - mmdebstrap installed with apt;
#   - a minimal Debian SUITE (trixie, the default: systemd 257; bookworm: systemd 252, the oldest the
#     unit supports) built by mmdebstrap from Debian's packages, as a raw ext4 image
#     CACHE_DIR/rootfs-<key>.ext4. The key is the hash of this script and SUITE: the image is rebuilt
#     only when the recipe below changes, and the next run works offline from the cache. The image is
#     never written to: qemu boots it with snapshot=on.
# The kernel, busybox and qemu come from .ci/vm-assets.sh, as for TestVM. It prints
# rootfs=<image> on stdout; everything else goes to stderr.
set -euo pipefail
cache=${1:?usage: systemd-assets.sh CACHE_DIR [SUITE]}
suite=${2:-trixie}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
key=$( (cat "${BASH_SOURCE[0]}"; echo "$suite") | sha256sum | cut -c1-12)
img="$cache/rootfs-$key.ext4"

if [ ! -f "$img" ]; then
	if ! command -v mmdebstrap >/dev/null; then
		apt-get update -q >&2
		apt-get install -y -q --no-install-recommends mmdebstrap >&2
	fi
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# essential: Debian's Essential:yes packages (coreutils, dash, util-linux...) and no apt; systemd and
	# systemd-sysv (/sbin/init) with their dependencies. No udev: the initramfs of the test mounts the
	# root, and nothing else waits for a device. Documentation and locales are left out.
	# The hooks: a fixed machine-id, so that systemd does not take the boot for a first boot (whose
	# systemd-firstboot would prompt on the console); the journal kept in memory only; the /etc/hosts
	# that Debian's installer would write (Go's resolver, which `rund client` uses, reads it for localhost).
	mmdebstrap --variant=essential --include=systemd,systemd-sysv \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
		--customize-hook='echo 5f1d2b7c9e0a4c3d8b6f1e2a3c4d5e6f > "$1/etc/machine-id"' \
		--customize-hook='echo rund-systemd > "$1/etc/hostname"' \
		--customize-hook='mkdir -p "$1/etc/systemd/journald.conf.d" && printf "[Journal]\nStorage=volatile\n" > "$1/etc/systemd/journald.conf.d/volatile.conf"' \
		--customize-hook='printf "127.0.0.1 localhost\n::1 localhost\n" > "$1/etc/hosts"' \
		"$suite" "$tmp/root" >&2
	# The image has room for the files the test's initramfs copies in (rund, its test binary).
	mkfs.ext4 -q -F -L rund-root -d "$tmp/root" "$tmp/rootfs.ext4" 640M >&2
	rm -f "$cache"/rootfs-*.ext4
	mv "$tmp/rootfs.ext4" "$img"
fi
echo "rootfs=$img"

#!/usr/bin/env bash
# vm-assets.sh CACHE_DIR: what TestVM (vm_test.go) needs to boot its throwaway VM, made ready on a
# fresh Debian machine, as root:
#   - qemu-system-x86 installed with apt (no recommends: no GUI);
#   - busybox-static and Debian's cloud kernel (linux-image-cloud-amd64's current image package)
#     fetched with apt-get download and unpacked with dpkg -x into CACHE_DIR, which keeps them: the
#     next run only asks apt which version is current, and works offline from the cache.
# It prints where things are, one key=value per line on stdout; everything else goes to stderr.
set -euo pipefail
cache=${1:?usage: vm-assets.sh CACHE_DIR}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)

updated=
apt_update() {
	# Offline, this fails; what is cached is then used.
	[ -n "$updated" ] || apt-get update -q >&2 || echo "vm-assets: apt-get update failed" >&2
	updated=1
}

if ! command -v qemu-system-x86_64 >/dev/null; then
	apt_update
	apt-get install -y -q --no-install-recommends qemu-system-x86 >&2
fi

# The kernel: the image package that linux-image-cloud-amd64 depends on now.
kernel_pkg() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }' || true
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
	apt_update
	kpkg=$(kernel_pkg)
fi
# Candidate versions, "pkg version" lines, in one (slow) apt-cache call.
versions=$(apt-cache policy $kpkg busybox-static 2>/dev/null |
	awk '/^[^ ].*:$/ { p = substr($1, 1, length($1) - 1) } $1 == "Candidate:" && $2 != "(none)" { print p, $2 }' || true)

# unpack PKG PATTERN: download and unpack PKG's candidate version (once) and print its directory. When
# apt cannot say (offline, no lists), the newest unpacked directory matching PATTERN is used.
unpack() {
	local ver dir deb
	ver=$(awk -v p="$1" '$1 == p { print $2 }' <<<"$versions")
	if [ -z "$1" ] || [ -z "$ver" ]; then
		dir=$(ls -d "$cache"/$2 2>/dev/null | sort -V | tail -1)
		[ -n "$dir" ] || { echo "vm-assets: apt has no candidate for ${1:-$2} and nothing is cached" >&2; return 1; }
		echo "vm-assets: apt has no candidate for ${1:-$2}; using the cached $dir" >&2
		echo "$dir"
		return
	fi
	dir="$cache/${1}_${ver//:/%3a}"
	if [ ! -d "$dir" ]; then
		rm -f "$cache/debs/${1}_"*.deb
		(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$1=$ver" >&2)
		deb=$(ls "$cache/debs/${1}_"*.deb | head -1)
		rm -rf "$dir.tmp"
		dpkg -x "$deb" "$dir.tmp"
		mv "$dir.tmp" "$dir"
		rm -f "$deb"
	fi
	echo "$dir"
}

kdir=$(unpack "$kpkg" 'linux-image-*-cloud-amd64_*')
bdir=$(unpack busybox-static 'busybox-static_*')

kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
modules=$(ls -d "$kdir"/lib/modules/* | head -1)
[ -f "$kernel" ] && [ -d "$modules" ] || { echo "vm-assets: no kernel or modules in $kdir" >&2; exit 1; }
[ -x "$bdir/bin/busybox" ] || { echo "vm-assets: no busybox in $bdir" >&2; exit 1; }

echo "qemu=$(command -v qemu-system-x86_64)"
echo "kernel=$kernel"
echo "modules=$modules"
echo "busybox=$bdir/bin/busybox"

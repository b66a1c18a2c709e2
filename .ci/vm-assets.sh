#!/usr/bin/env bash
# vm-assets.sh CACHE_DIR [ARCH [SUITE]]: what TestVM (vm_test.go) needs to boot its throwaway VM for
# ARCH (Debian's name: amd64, the default, arm64, armhf or riscv64), made ready on a fresh Debian
# machine, as root:
#   - the system emulator installed with apt (no recommends: no GUI): qemu-system-x86 for amd64,
#     qemu-system-arm (qemu-system-aarch64 and qemu-system-arm) for arm64 and armhf, qemu-system-misc
#     (qemu-system-riscv64, and the OpenSBI firmware that -bios default loads) for riscv64;
#   - busybox-static and a Debian kernel for ARCH: the cloud kernel (linux-image-cloud-ARCH's current
#     image package) where Debian has one; armhf has none, and gets the LPAE multiplatform kernel
#     (linux-image-armmp-lpae), which boots qemu's virt machine with more than 4 GiB of address space;
#     riscv64 gets its one flavour (linux-image-riscv64). They are fetched with apt-get download and
#     unpacked with dpkg -x into CACHE_DIR, which keeps them: the next run only asks apt which version
#     is current, and works offline from the cache.
# A foreign ARCH's packages come through a private apt state in CACHE_DIR/apt (its own package lists,
# an empty dpkg status), so the host's dpkg gets no foreign architecture (no dpkg --add-architecture)
# and its own apt-get update stays as it was. Those lists are fetched again when a week old.
# SUITE (e.g. trixie) takes the kernel and busybox from that Debian suite instead of the host's, to
# prove the suite on a second kernel series: through the same private apt state, with its own sources
# (deb.debian.org's SUITE main, signed by Debian's archive keys) in place of the host's, which stay
# untouched.
# It prints where things are, one key=value per line on stdout; everything else goes to stderr.
set -euo pipefail
cache=${1:?usage: vm-assets.sh CACHE_DIR [ARCH [SUITE]]}
arch=${2:-amd64}
suite=${3:-}
case $arch in
amd64) qemu=qemu-system-x86_64 qemu_pkg=qemu-system-x86 flavour=cloud-amd64 ;;
arm64) qemu=qemu-system-aarch64 qemu_pkg=qemu-system-arm flavour=cloud-arm64 ;;
armhf) qemu=qemu-system-arm qemu_pkg=qemu-system-arm flavour=armmp-lpae ;;
riscv64) qemu=qemu-system-riscv64 qemu_pkg=qemu-system-misc flavour=riscv64 ;;
*) echo "vm-assets: no VM for architecture $arch (amd64, arm64, armhf or riscv64)" >&2; exit 1 ;;
esac
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)

# apt_update [OPTIONS]: apt-get update, once per set of options. Offline, this fails; what is cached
# is then used.
declare -A updated
apt_update() {
	[ -n "${updated[x$*]:-}" ] || apt-get "$@" update -q >&2 || echo "vm-assets: apt-get update $* failed" >&2
	updated[x$*]=1
}

if ! command -v $qemu >/dev/null; then
	apt_update
	apt-get install -y -q --no-install-recommends $qemu_pkg >&2
fi

# guest: the options that make apt-get and apt-cache see ARCH's (and SUITE's) packages.
guest=()
if [ "$arch" != "$(dpkg --print-architecture)" ] || [ -n "$suite" ]; then
	mkdir -p "$cache/apt/state/lists/partial" "$cache/apt/cache/archives/partial"
	touch "$cache/apt/status"
	guest=(-o Dir::State="$cache/apt/state" -o Dir::State::status="$cache/apt/status" -o Dir::Cache="$cache/apt/cache"
		-o APT::Architecture="$arch" -o APT::Architectures="$arch" -o APT::Sandbox::User=root)
	if [ -n "$suite" ]; then
		# Only SUITE's main: not its -security or -updates, whose kernel changes between point
		# releases, so the cache would be fetched anew more often for the same series. An empty
		# sources.list.d keeps the host's own sources out.
		mkdir -p "$cache/apt/sources.list.d"
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
			>"$cache/apt/sources.list"
		guest+=(-o Dir::Etc::SourceList="$cache/apt/sources.list" -o Dir::Etc::SourceParts="$cache/apt/sources.list.d")
	fi
	if [ -z "$(find "$cache/apt/state/lists" -maxdepth 1 -name '*InRelease' -mtime -7)" ]; then
		apt_update "${guest[@]}"
	fi
fi

# The kernel: the image package that linux-image-FLAVOUR depends on now.
kernel_pkg() {
	apt-cache "${guest[@]}" depends linux-image-$flavour 2>/dev/null |
		awk -v re="^linux-image-.*-$flavour\$" '$1 == "Depends:" && $2 ~ re { print $2; exit }' || true
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
	apt_update "${guest[@]}"
	kpkg=$(kernel_pkg)
fi
# Candidate versions, "pkg version" lines, in one (slow) apt-cache call.
versions=$(apt-cache "${guest[@]}" policy $kpkg busybox-static 2>/dev/null |
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
		(cd "$cache/debs" && apt-get "${guest[@]}" download -q -o APT::Sandbox::User=root "$1=$ver" >&2)
		deb=$(ls "$cache/debs/${1}_"*.deb | head -1)
		rm -rf "$dir.tmp"
		dpkg -x "$deb" "$dir.tmp"
		mv "$dir.tmp" "$dir"
		rm -f "$deb"
	fi
	echo "$dir"
}

kdir=$(unpack "$kpkg" "linux-image-*-${flavour}_*")
bdir=$(unpack busybox-static 'busybox-static_*')

# first PATH...: the first of the paths that exists, or nothing (and success, for the checks below to
# say what is missing). Trixie's packages put their files under /usr (merged /usr: the modules in
# /usr/lib/modules, busybox in /usr/bin), bookworm's under / . riscv64's kernel is boot/vmlinux-*, an
# uncompressed Image (with an EFI stub, not an ELF file), which qemu's -kernel takes as it is.
first() {
	local p
	for p; do
		if [ -e "$p" ]; then
			echo "$p"
			break
		fi
	done
}
kernel=$(first "$kdir"/boot/vmlinuz-* "$kdir"/boot/vmlinux-*)
modules=$(first "$kdir"/lib/modules/* "$kdir"/usr/lib/modules/*)
busybox=$(first "$bdir"/bin/busybox "$bdir"/usr/bin/busybox)
[ -f "$kernel" ] && [ -d "$modules" ] || { echo "vm-assets: no kernel or modules in $kdir" >&2; exit 1; }
[ -x "$busybox" ] || { echo "vm-assets: no busybox in $bdir" >&2; exit 1; }

echo "qemu=$(command -v $qemu)"
echo "kernel=$kernel"
echo "modules=$modules"
echo "busybox=$busybox"

#!/usr/bin/env bash
# The release binaries that `make release` writes into dist/, proved and measured.
#
#   release-check.sh check              each binary: file(1) says ELF, statically linked, stripped, and its
#                                       architecture; SHA256SUMS verifies and names exactly these binaries;
#                                       it runs (natively, or under qemu-user invoked directly, so that no
#                                       binfmt_misc registration is needed): `rund version` prints VERSION and
#                                       `rund certs -dir` writes a PKI that openssl verifies. Every failure
#                                       is reported with its binary and its check; exit 1 if any.
#   release-check.sh sizes              prints BENCHMARKS.md's "Release binaries" section for dist/.
#   release-check.sh get-section FILE   prints FILE's "Release binaries" section (nothing if none).
#   release-check.sh put-section FILE   replaces that section in FILE with stdin (removes it if stdin is
#                                       empty); it stays the file's last section, after what make bench writes.
#
# VERSION defaults to what the Makefile uses: git describe --tags --always --dirty.
set -euo pipefail
cd "$(dirname "$0")/.."

dist=dist
archs=(amd64 arm64 armv7 riscv64)
heading='## Release binaries'
target=14000000 # issue 24's target with the lean init inside, 14 MB (10^6 bytes, as everywhere in BENCHMARKS.md)

version() {
	if [ -z "${VERSION:-}" ]; then
		VERSION=$(git describe --tags --always --dirty)
	fi
	echo "$VERSION"
}

# goarch prints the go env that builds ARCH, as the Makefile's release target sets it.
goarch() {
	case $1 in
	armv7) echo "GOARCH=arm GOARM=7" ;;
	*) echo "GOARCH=$1" ;;
	esac
}

# filearch prints what file(1) (5.44, Debian 12) says of the machine of an ARCH binary: an ERE.
filearch() {
	case $1 in
	amd64) echo 'ELF 64-bit LSB .*, x86-64,' ;;
	arm64) echo 'ELF 64-bit LSB .*, ARM aarch64,' ;;
	armv7) echo 'ELF 32-bit LSB .*, ARM, EABI5 ' ;;
	riscv64) echo 'ELF 64-bit LSB .*, UCB RISC-V,' ;;
	esac
}

# runner prints the command that runs an ARCH binary here: nothing when it is this machine's own, else
# the qemu-user emulator from qemu-user-static.
runner() {
	local native
	case $(uname -m) in
	x86_64) native=amd64 ;;
	aarch64) native=arm64 ;;
	armv7l) native=armv7 ;;
	riscv64) native=riscv64 ;;
	*) native=none ;;
	esac
	if [ "$1" = "$native" ]; then
		return
	fi
	case $1 in
	amd64) echo qemu-x86_64-static ;;
	arm64) echo qemu-aarch64-static ;;
	armv7) echo qemu-arm-static ;;
	riscv64) echo qemu-riscv64-static ;;
	esac
}

failures=()
fail() { # binary, check, detail
	echo "FAIL $1: $2: $3" >&2
	failures+=("$1: $2")
}

check_one() {
	local a=$1 v=$2 tmp=$3 name bin out run pki f
	name=rund-$v-linux-$a
	bin=$dist/$name
	if [ ! -f "$bin" ]; then
		fail "$name" exists "no $bin (make release writes it)"
		return
	fi
	out=$(file -b "$bin")
	echo "$name: $out"
	grep -Eq "$(filearch "$a")" <<<"$out" || fail "$name" architecture "file(1) does not say /$(filearch "$a")/"
	grep -Eq 'statically linked|static-pie linked' <<<"$out" || fail "$name" static "file(1) does not say statically linked"
	grep -Eq 'dynamically linked|interpreter' <<<"$out" && fail "$name" static "file(1) says it needs a dynamic loader"
	grep -Eq ', stripped$|, stripped,' <<<"$out" || fail "$name" stripped "file(1) does not say stripped"

	run=$(runner "$a")
	if [ -n "$run" ] && ! command -v "$run" >/dev/null; then
		fail "$name" run "no $run (Debian package qemu-user-static)"
		return
	fi
	# A timeout: a binary that hangs under emulation must fail the check, not the CI job's clock.
	if ! out=$(timeout 300 $run "$bin" version 2>&1); then
		fail "$name" "${run:-native} version" "exit status not 0: $out"
	elif ! grep -Fq "rund $v (" <<<"$out"; then
		fail "$name" "${run:-native} version" "printed \"$out\", not rund $v"
	else
		echo "$name: ${run:-native}: $out"
	fi
	pki=$tmp/$a
	if ! out=$(timeout 300 $run "$bin" certs -dir "$pki" 2>&1); then
		fail "$name" "${run:-native} certs" "exit status not 0: $out"
		return
	fi
	for f in ca.crt server.crt server.key client.crt client.key client2.crt client2.key; do
		[ -s "$pki/$f" ] || fail "$name" "${run:-native} certs" "it wrote no $f into $pki"
	done
	if command -v openssl >/dev/null; then
		if out=$(openssl verify -CAfile "$pki/ca.crt" "$pki/server.crt" "$pki/client.crt" "$pki/client2.crt" 2>&1); then
			echo "$name: ${run:-native}: certs: openssl verify: OK"
		else
			fail "$name" "${run:-native} certs" "openssl verify of what it wrote: $out"
		fi
	fi
}

check() {
	local v a out want got
	v=$(version)
	tmp=$(mktemp -d) # global: the EXIT trap runs after check has returned
	trap 'rm -rf "$tmp"' EXIT
	for a in "${archs[@]}"; do
		check_one "$a" "$v" "$tmp"
	done
	# SHA256SUMS: every line verifies (--strict: a malformed line fails too) and it names exactly the
	# binaries above, no other file.
	if [ ! -f $dist/SHA256SUMS ]; then
		fail SHA256SUMS exists "no $dist/SHA256SUMS"
	else
		if out=$(cd $dist && sha256sum --strict -c SHA256SUMS 2>&1); then
			echo "SHA256SUMS: sha256sum -c: OK"
		else
			fail SHA256SUMS "sha256sum -c" "$out"
		fi
		want=$(for a in "${archs[@]}"; do echo "rund-$v-linux-$a"; done | sort)
		got=$(awk '{print $2}' $dist/SHA256SUMS | sed 's/^\*//' | sort)
		[ "$want" = "$got" ] || fail SHA256SUMS names "it names [$(echo $got)], not [$(echo $want)]"
	fi
	if [ ${#failures[@]} -gt 0 ]; then
		echo "release-check: ${#failures[@]} check(s) failed:" >&2
		printf '  %s\n' "${failures[@]}" >&2
		exit 1
	fi
	echo "release-check: every check passed for rund $v (${archs[*]})"
}

sizes() {
	local v a bin n met
	v=$(version)
	cat <<EOF
$heading

Written by \`make release-sizes\` (\`make release\`, then \`.ci/release-check.sh sizes\`); \`make bench\`
keeps this section as it is. rund $v, $(go env GOVERSION). Each binary is \`make build\`'s static build
(\`-trimpath -tags grpcnotrace,embedinit\`, stripped with \`-s -w\`, the lean init inside) for its
GOARCH; \`make release-check\` proves them (README, "Release binaries"). MB means 10^6 bytes.

| binary | go env | bytes | MB | target | met |
|---|---|---|---|---|---|
EOF
	for a in "${archs[@]}"; do
		bin=$dist/rund-$v-linux-$a
		[ -f "$bin" ] || { echo "release-check.sh sizes: no $bin (run make release)" >&2; exit 1; }
		n=$(stat -c %s "$bin")
		met=NO
		[ "$n" -le $target ] && met=yes
		printf '| `%s` | `%s` | %d | %s | ≤ 14 MB | %s |\n' "rund-$v-linux-$a" "$(goarch "$a")" "$n" \
			"$(awk -v n="$n" 'BEGIN{printf "%.2f", n/1e6}')" "$met"
	done
}

# section_awk prints FILE without (keep=0) or only (keep=1) the section under $heading, which runs to the
# next "## " heading or the end.
section_awk() {
	awk -v h="$heading" -v keep="$1" '/^## /{in_s = ($0 == h)} (in_s && keep) || (!in_s && !keep)' "$2"
}

case ${1:-} in
check) check ;;
sizes) sizes ;;
get-section) section_awk 1 "$2" ;;
put-section)
	file=$2
	new=$(cat)
	rest=$(section_awk 0 "$file") # $(...) drops the trailing blank lines the section leaves behind
	if [ -n "$new" ]; then
		printf '%s\n\n%s\n' "$rest" "$new" >"$file"
	else
		printf '%s\n' "$rest" >"$file"
	fi
	;;
*)
	echo "usage: $0 check | sizes | get-section FILE | put-section FILE <SECTION" >&2
	exit 2
	;;
esac

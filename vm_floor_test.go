package main

// vm_floor_test.go: TestVMFloor proves the kernel floor (kernel.go) on a kernel below it, where
// TestKernelFloor can only feed checkKernel release strings. It boots Debian bullseye's cloud kernel
// (5.10) the way TestVM boots bookworm's, from an initramfs of bullseye's busybox and a static rund;
// the guest's /init writes certificates, runs `rund serve` as a service manager would and prints what
// came of it on the console, "E2E-FLOOR <what> <value>" lines: the exit code, rund's stderr, and
// before and after, the cgroup directories, the files under /run and /tmp, rund's processes and the
// listening sockets. The host judges them. It runs only with RUND_E2E_FLOOR=1 (make e2e-floor).

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var vmBullseye = vmArch{goarch: "amd64", qemu: "qemu-system-x86_64", machine: []string{"-M", "pc", "-cpu", "max"},
	console: "ttyS0", cache: ".cache/vm-bullseye", suite: "bullseye", slow: 1}

// vmFloorInit is the guest's /init, after vmBoot. state prints what rund could leave behind, on one
// line each.
const vmFloorInit = vmBoot + `echo "E2E-INIT kernel $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
cd /
tls=/run/rund/tls
/bin/rund certs -dir $tls >/dev/null 2>&1 || echo "E2E-FLOOR certs-failed"
state() {
	echo "E2E-FLOOR $1-cgroups $(find /sys/fs/cgroup -mindepth 1 -type d | sort | tr '\n' ' ')"
	echo "E2E-FLOOR $1-files $(find /run /tmp -mindepth 1 | sort | tr '\n' ' ')"
	echo "E2E-FLOOR $1-procs $(ps | grep '[/]bin/rund' | tr '\n' ' ')"
	echo "E2E-FLOOR $1-listening $(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A"' | wc -l)"
}
mkdir /sys/fs/cgroup/svc
state before
err=$(sh -c "echo \$\$ > /sys/fs/cgroup/svc/cgroup.procs && exec /bin/rund serve -addr 127.0.0.1:8000 \
	-cgroup /sys/fs/cgroup/svc/rund -ca $tls/ca.crt -cert $tls/server.crt -key $tls/server.key" 2>&1 >/dev/null)
echo "E2E-FLOOR exit $?"
echo "$err" | while read -r l; do echo "E2E-FLOOR stderr $l"; done
state after
echo "E2E-DONE exit=0"
poweroff -f
`

func TestVMFloor(t *testing.T) {
	if os.Getenv("RUND_E2E_FLOOR") != "1" {
		t.Skip("the kernel floor's VM test runs with RUND_E2E_FLOOR=1 (make e2e-floor, which .ci/run calls)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it installs qemu with apt (.ci/vm-assets.sh) and boots a VM")
	}
	arch := vmBullseye
	cache, err := filepath.Abs(arch.cache)
	if err != nil {
		t.Fatal(err)
	}
	assets, err := vmAssets(cache, arch.goarch, arch.suite)
	if err != nil {
		t.Fatalf("prepare the VM's kernel and busybox: %v", err)
	}
	dir := t.TempDir()
	rund := filepath.Join(dir, "rund")
	if err := makeRund(arch.goarch, rund); err != nil {
		t.Fatal(err)
	}
	initrd, disk := filepath.Join(dir, "initramfs.cpio"), filepath.Join(dir, "disk.img")
	if err := writeFloorInitramfs(initrd, assets["busybox"], rund); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	if err := os.WriteFile(disk, nil, 0o600); err != nil { // runVM attaches a disk; this guest ignores it
		t.Fatal(err)
	}
	logPath := filepath.Join(cache, "last-console.log")
	_, done, _, err := runVM(arch, assets, initrd, disk, logPath)
	if err != nil || done != "exit=0" {
		t.Fatalf("qemu: %v, guest ended %q\nlast console lines:\n%s", err, done, consoleTail(logPath, 40))
	}
	release, floor := "", map[string]string{}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for sc := bufio.NewScanner(strings.NewReader(string(log))); sc.Scan(); {
		line := sc.Text()
		if i := strings.Index(line, "E2E-INIT kernel "); i >= 0 {
			release, _, _ = strings.Cut(line[i+len("E2E-INIT kernel "):], ";")
		}
		if i := strings.Index(line, "E2E-FLOOR "); i >= 0 {
			k, v, _ := strings.Cut(line[i+len("E2E-FLOOR "):], " ")
			floor[k] = strings.TrimSpace(floor[k] + "\n" + strings.TrimSpace(v))
		}
	}
	t.Logf("guest kernel %s; rund serve exit %s, stderr %q", release, floor["exit"], floor["stderr"])
	if checkKernel(release) == nil {
		t.Fatalf("the guest runs Linux %q, not one below the floor", release)
	}
	if _, ok := floor["certs-failed"]; ok {
		t.Error("rund certs failed in the guest")
	}
	if floor["exit"] == "0" || floor["exit"] == "" {
		t.Errorf("rund serve exit code %q, want non-zero", floor["exit"])
	}
	want := fmt.Sprintf("rund serve: Linux %s is older than 5.19; rund needs %s", release, kernelNeeds)
	if !strings.HasSuffix(floor["stderr"], want) || strings.Count(floor["stderr"], "\n") > 0 {
		t.Errorf("rund serve said %q, want one line ending in %q", floor["stderr"], want)
	}
	for _, k := range []string{"cgroups", "files", "procs", "listening"} {
		if floor["before-"+k] != floor["after-"+k] {
			t.Errorf("rund serve left %s behind: before %q, after %q", k, floor["before-"+k], floor["after-"+k])
		}
	}
}

// writeFloorInitramfs writes the floor guest's root filesystem: busybox, rund and vmFloorInit.
func writeFloorInitramfs(path, busybox, rund string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "etc", "root"} {
		w.add(d, 0o040755, nil, 0, 0)
	}
	w.add("dev/console", 0o020600, nil, 5, 1)
	w.add("init", 0o100755, []byte(vmFloorInit), 0, 0)
	w.add("bin/sh", 0o120777, []byte("busybox"), 0, 0)
	for _, file := range []struct{ src, dst string }{{busybox, "bin/busybox"}, {rund, "bin/rund"}} {
		data, err := os.ReadFile(file.src)
		if err != nil {
			return err
		}
		w.add(file.dst, 0o100755, data, 0, 0)
	}
	w.add("TRAILER!!!", 0, nil, 0, 0)
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

package main

// systemd_vm_test.go: TestSystemdVM proves contrib/rund.service under a real systemd: it boots Debian's
// cloud kernel under qemu (TCG) on a minimal Debian root filesystem (.ci/systemd-assets.sh builds and
// caches it with mmdebstrap), whose systemd runs TestSystemdGuest (systemd_guest_test.go) as a
// service. It does so twice, the same suite on each: on bookworm (systemd 252, the oldest the unit
// supports) and on trixie (257). That suite starts, uses, crashes, reloads and stops rund.service with
// systemctl and prints one "E2E <check> PASS|FAIL <figures>" line per check on the serial console; here
// each becomes a subtest, and a missing line fails too.
//
// It takes minutes, so it runs only with RUND_E2E_SYSTEMD=1 (make e2e-systemd), as root;
// RUND_E2E_SYSTEMD_SUITES="trixie" (say) runs fewer.
//
// The guest's boot: a busybox initramfs loads the virtio modules, mounts the image (booted with
// snapshot=on, so the cached image is never written), copies in this checkout's static rund, the
// static test binary, contrib/rund.service, contrib/rund.default (as /etc/default/rund) and the suite's
// own unit, writes a development PKI with
// `rund certs -dir /etc/rund`, and switch_roots to systemd, with systemd.unit= naming the suite's unit.

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemdVMTimeout bounds the VM's whole run: boot, the suite, power off.
const systemdVMTimeout = 20 * time.Minute

// systemdInit is the initramfs's /init: it prepares the root filesystem and hands over to systemd.
const systemdInit = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "E2E-INIT insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
	echo "E2E-INIT cannot mount /dev/vda"
	poweroff -f
fi
cp /payload/rund /payload/rund.test /newroot/usr/local/bin/
cp /payload/rund.service /payload/rund-e2e.service /newroot/etc/systemd/system/
cp /payload/rund.default /newroot/etc/default/rund
/payload/rund certs -dir /newroot/etc/rund >/dev/null
echo "E2E-INIT kernel $(uname -r); root $(cat /sys/block/vda/dev); starting systemd"
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
`

// systemdSuiteUnit runs the guest suite as the boot's one goal (systemd.unit=), prints on the serial
// console and powers the VM off when it ends, however it ends: at once (poweroff -ff), as nothing in the
// VM is worth keeping. (SuccessAction=poweroff-force was seen to leave the VM running after a pass.)
const systemdSuiteUnit = `[Unit]
Description=rund's systemd suite (systemd_guest_test.go)
AllowIsolate=yes

[Service]
Type=exec
Environment=RUND_SYSTEMD_GUEST=1
ExecStart=/usr/local/bin/rund.test -test.run ^TestSystemdGuest$ -test.v -test.timeout 15m
ExecStopPost=/bin/sh -c 'echo "E2E-DONE exit=$EXIT_STATUS" >/dev/ttyS0'
ExecStopPost=/usr/bin/systemctl poweroff --force --force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
`

func TestSystemdVM(t *testing.T) {
	if os.Getenv("RUND_SYSTEMD_GUEST") == "1" {
		t.Skip("this is the guest")
	}
	if os.Getenv("RUND_E2E_SYSTEMD") != "1" {
		t.Skip("boots systemd in a VM for minutes: make e2e-systemd runs it (RUND_E2E_SYSTEMD=1)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("RUND_E2E_SYSTEMD=1 needs root: it installs qemu and mmdebstrap with apt and boots a VM")
	}
	begin := time.Now()
	vmCache, err := filepath.Abs(".cache/vm")
	if err != nil {
		t.Fatal(err)
	}
	assets, err := vmAssets(vmCache, "amd64")
	if err != nil {
		t.Fatalf("prepare the VM's kernel and busybox: %v", err)
	}
	dir := t.TempDir()
	rund, rundTest := filepath.Join(dir, "rund"), filepath.Join(dir, "rund.test")
	if err := makeRund("amd64", rund); err != nil {
		t.Fatal(err)
	}
	if err := goBuildStatic("amd64", "test", "-c", "-o", rundTest, "."); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeSystemdInitramfs(initrd, assets, map[string]string{
		"rund": rund, "rund.test": rundTest, "rund.service": "contrib/rund.service", "rund.default": "contrib/rund.default",
	}); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	t.Logf("kernel, busybox, rund, its test binary and the initramfs: %.1fs", time.Since(begin).Seconds())
	suites := strings.Fields(cmp.Or(os.Getenv("RUND_E2E_SYSTEMD_SUITES"), "bookworm trixie"))
	for _, suite := range suites {
		t.Run(suite, func(t *testing.T) { systemdSuite(t, suite, assets, initrd) })
	}
}

// systemdCaches are the root filesystems' cache directories by Debian suite.
var systemdCaches = map[string]string{"bookworm": ".cache/systemd-bookworm", "trixie": ".cache/systemd"}

// systemdSuite boots suite's root filesystem and turns the guest's lines into subtests.
func systemdSuite(t *testing.T, suite string, assets map[string]string, initrd string) {
	begin := time.Now()
	cache, err := filepath.Abs(systemdCaches[suite])
	if err != nil || systemdCaches[suite] == "" {
		t.Fatalf("suite %q: no cache directory (%v)", suite, err)
	}
	rootfs, err := systemdRootfs(cache, suite)
	if err != nil {
		t.Fatal(err)
	}
	assetsTook := time.Since(begin)
	logPath := filepath.Join(cache, "last-console.log")
	run, err := runSystemdVM(assets, initrd, rootfs, logPath)
	fi, _ := os.Stat(rootfs)
	var used int64
	if fi != nil {
		used = diskUsage(fi)
	}
	t.Logf("systemd VM on %s: %.1fs in all (%.1fs for the root filesystem); kernel to initramfs %.1fs, "+
		"to the suite's first line %.1fs, suite done %.1fs after qemu's start; root image %s: %d MiB on disk; console log: %s",
		suite, time.Since(begin).Seconds(), assetsTook.Seconds(), run.initramfs.Seconds(), run.firstCheck.Seconds(),
		run.done.Seconds(), filepath.Base(rootfs), used>>20, logPath)
	if err != nil {
		t.Errorf("qemu: %v\nlast console lines:\n%s", err, consoleTail(logPath, 60))
	}
	if run.status != "exit=0" {
		t.Errorf("guest suite ended %q (want exit=0)\nlast console lines:\n%s", run.status, consoleTail(logPath, 60))
	}
	for _, name := range systemdChecks {
		t.Run(name, func(t *testing.T) {
			switch r, ok := run.results[name]; {
			case !ok:
				t.Errorf("the guest printed no result for %s (console log: %s)", name, logPath)
			case r.pass:
				t.Logf("PASS %s", r.detail)
			default:
				t.Errorf("FAIL %s", r.detail)
			}
		})
	}
	for name := range run.results {
		if !slices.Contains(systemdChecks, name) {
			t.Errorf("the guest reported %q, which is not in systemdChecks", name)
		}
	}
}

// systemdRootfs runs .ci/systemd-assets.sh for suite and returns the root image it names.
func systemdRootfs(cache, suite string) (string, error) {
	cmd := exec.Command("bash", ".ci/systemd-assets.sh", cache, suite)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf(".ci/systemd-assets.sh: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "rootfs="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf(".ci/systemd-assets.sh did not say where the root image is:\n%s", out)
}

// writeSystemdInitramfs writes the initramfs: busybox, the virtio modules, /init and, in /payload,
// the files /init copies into the root filesystem (payload: name there -> file here).
func writeSystemdInitramfs(path string, assets, payload map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "payload"} {
		w.add(d, 0o040755, nil, 0, 0)
	}
	w.add("dev/console", 0o020600, nil, 5, 1)
	w.add("init", 0o100755, []byte(systemdInit), 0, 0)
	w.add("payload/rund-e2e.service", 0o100644, []byte(systemdSuiteUnit), 0, 0)
	files := map[string]string{"bin/busybox": assets["busybox"]}
	for name, src := range payload {
		files["payload/"+name] = src
	}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		data, err := os.ReadFile(files[dst])
		if err != nil {
			return err
		}
		mode := uint32(0o100755)
		if strings.HasSuffix(dst, ".service") || strings.HasSuffix(dst, ".default") {
			mode = 0o100644
		}
		w.add(dst, mode, data, 0, 0)
	}
	applets, err := exec.Command(assets["busybox"], "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			w.add("bin/"+a, 0o120777, []byte("busybox"), 0, 0)
		}
	}
	return w.finish(assets["modules"])
}

// systemdRun is what the console said: the results by check, the suite's end, and when (after qemu's
// start) the initramfs reported in, the suite printed its first check and the suite ended.
type systemdRun struct {
	results                     map[string]vmResult
	status                      string
	initramfs, firstCheck, done time.Duration
}

// runSystemdVM boots the guest and collects its E2E lines.
func runSystemdVM(assets map[string]string, initrd, rootfs, logPath string) (systemdRun, error) {
	run := systemdRun{results: map[string]vmResult{}}
	ctx, cancel := context.WithTimeout(context.Background(), systemdVMTimeout)
	defer cancel()
	// snapshot=on: the guest's writes go to a temporary overlay, and the cached image stays as built.
	cmd := exec.CommandContext(ctx, assets["qemu"],
		"-M", "pc", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", assets["kernel"], "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=3 systemd.unit=rund-e2e.service",
		"-drive", "file="+rootfs+",if=virtio,format=raw,snapshot=on,cache=unsafe")
	logFile, err := os.Create(logPath)
	if err != nil {
		return run, err
	}
	defer logFile.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return run, err
	}
	waited := make(chan error, 1)
	go func() { // ends when qemu does; its pipe's close ends the scan below
		err := cmd.Wait()
		pw.Close()
		waited <- err
	}()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(logFile, line)
		i := strings.Index(line, "E2E")
		if i < 0 {
			continue
		}
		line = line[i:]
		switch f := strings.SplitN(line, " ", 4); {
		case f[0] == "E2E-INIT" && run.initramfs == 0:
			run.initramfs = time.Since(start)
		case f[0] == "E2E-DONE" && len(f) > 1:
			run.status, run.done = f[1], time.Since(start)
		case len(f) >= 3 && f[0] == "E2E" && (f[2] == "PASS" || f[2] == "FAIL"):
			if run.firstCheck == 0 {
				run.firstCheck = time.Since(start)
			}
			r := vmResult{pass: f[2] == "PASS"}
			if len(f) == 4 {
				r.detail = f[3]
			}
			run.results[f[1]] = r
		}
	}
	io.Copy(io.Discard, pr)
	err = <-waited
	if ctx.Err() != nil {
		err = fmt.Errorf("the VM did not power off within %v: %w", systemdVMTimeout, ctx.Err())
	}
	return run, err
}

// diskUsage is the bytes a (sparse) file takes on disk.
func diskUsage(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

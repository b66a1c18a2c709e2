package main

// vm_test.go: TestVM proves in a throwaway VM what no test on a host without cgroup v2 controllers
// can: that each limit is enforced. It boots Debian's cloud kernel under qemu (TCG, no KVM needed)
// with cgroup_no_v1=all, from an initramfs of busybox-static, a static rund and this package's test
// binary built static, plus a small virtio disk for the io checks. The guest's /init runs
// TestE2EGuest (e2e_guest_test.go), which prints one "E2E <check> PASS|FAIL <figures>" line per check
// on the serial console; here each becomes a subtest, and a missing line fails too.
//
// TestVMArm64 does the same on arm64 (qemu-system-aarch64's virt machine, Debian's arm64 cloud
// kernel and busybox, the binaries cross-compiled): one code path, vmSuite, with the two
// architectures' differences in a vmArch each. It runs only when asked (RUND_E2E_ARM64=1, which
// make e2e-arm64 sets), as emulating arm64 costs minutes that make test should not.
//
// TestVMTrixie runs the x86-64 suite on a second kernel series: Debian trixie's cloud kernel (6.12)
// and busybox, where TestVM boots bookworm's (6.1). It runs only with RUND_E2E_TRIXIE=1 (make
// e2e-trixie), for the same reason.
//
// What it needs (qemu, the kernel and busybox packages) .ci/vm-assets.sh installs or fetches into
// .cache/vm/ (.cache/vm-arm64/ for arm64, .cache/vm-trixie/ for trixie). With CI=true anything
// missing fails the test; elsewhere, it skips without root or when qemu cannot be had.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vmModules are the modules the guest loads (with their dependencies) to see its virtio disk. Both
// arches' cloud kernels build virtio, virtio_pci and virtio_blk as modules, and qemu makes an
// if=virtio drive a virtio-blk-pci device on the pc and the virt machines alike.
// dummy makes dummy0, the non-loopback interface of the grants check (e2e_grants_test.go).
var vmModules = []string{"virtio_pci", "virtio_blk", "dummy"}

// vmArch is what differs between the architectures the VM suite boots.
type vmArch struct {
	goarch  string   // the guest binaries' GOARCH (arm is built for GOARM=7, as make release builds armv7)
	debian  string   // the architecture .ci/vm-assets.sh fetches for, where Debian's name is not goarch
	qemu    string   // the system emulator
	machine []string // qemu's machine and CPU
	console string   // the serial port the kernel's console is on
	cache   string   // where .ci/vm-assets.sh keeps the kernel and busybox
	suite   string   // the Debian suite they come from; "" is the host's
	// slow scales the suite's deadlines (the boot, the whole run, the guest test's -test.timeout),
	// which only a hang should reach. With pauth-impdef (below) the arm64 guest runs about as fast as
	// the x86-64 one here, but TCG's arm64 emulation is the less tuned of the two and slower without
	// it, so arm64 gets a margin of its own. The guest checks' own deadlines are not scaled: they
	// hold on both, and what they measure (cgroup files, the jobs' own clocks) is in the guest's time.
	slow int
}

// assetArch is the Debian architecture of arch's kernel and busybox.
func (arch vmArch) assetArch() string {
	if arch.debian != "" {
		return arch.debian
	}
	return arch.goarch
}

// scale is d stretched for arch's speed under TCG.
func (arch vmArch) scale(d time.Duration) time.Duration { return d * time.Duration(arch.slow) }

var (
	vmAMD64 = vmArch{goarch: "amd64", qemu: "qemu-system-x86_64", machine: []string{"-M", "pc", "-cpu", "max"},
		console: "ttyS0", cache: ".cache/vm", slow: 1}
	// -cpu max emulates pointer authentication, which the kernel applies on its function returns
	// (CONFIG_ARM64_PTR_AUTH_KERNEL), with the architected QARMA cipher, costly under TCG;
	// pauth-impdef=on has qemu use its cheaper implementation-defined algorithm instead (qemu's
	// docs/system/arm/cpu-features.rst): pointer authentication works the same for the guest, only
	// its signatures differ.
	vmARM64 = vmArch{goarch: "arm64", qemu: "qemu-system-aarch64", machine: []string{"-M", "virt", "-cpu", "max,pauth-impdef=on"},
		console: "ttyAMA0", cache: ".cache/vm-arm64", slow: 2}
	// armv7: Debian's LPAE multiplatform kernel on qemu's virt machine, whose RAM starts above 4 GiB
	// of physical address space only with highmem; cortex-a15 is the armv7 core with LPAE and the
	// virtualisation extensions that -M virt models.
	vmARMv7 = vmArch{goarch: "arm", debian: "armhf", qemu: "qemu-system-arm", machine: []string{"-M", "virt", "-cpu", "cortex-a15"},
		console: "ttyAMA0", cache: ".cache/vm-armhf", slow: 3}
	// riscv64: trixie's kernel (bookworm has no riscv64 port), started by the OpenSBI firmware that
	// qemu-system-misc ships (-bios default).
	vmRISCV64 = vmArch{goarch: "riscv64", qemu: "qemu-system-riscv64", machine: []string{"-M", "virt", "-bios", "default"},
		console: "ttyS0", cache: ".cache/vm-riscv64", suite: "trixie", slow: 3}
	vmTrixie = vmArch{goarch: "amd64", qemu: "qemu-system-x86_64", machine: []string{"-M", "pc", "-cpu", "max"},
		console: "ttyS0", cache: ".cache/vm-trixie", suite: "trixie", slow: 1}
)

// vmTimeout bounds the VM's whole run on x86-64; the guest suite itself takes about a minute and a half.
const vmTimeout = 4 * time.Minute

func TestVM(t *testing.T) { vmSuite(t, vmAMD64) }

func TestVMArm64(t *testing.T) {
	if os.Getenv("RUND_E2E_ARM64") != "1" {
		t.Skip("the arm64 VM suite runs with RUND_E2E_ARM64=1 (make e2e-arm64, which .ci/run calls): it takes minutes longer than make test should")
	}
	vmSuite(t, vmARM64)
}

func TestVMArmv7(t *testing.T) {
	if os.Getenv("RUND_E2E_ARMV7") != "1" {
		t.Skip("the 32-bit ARM VM suite runs with RUND_E2E_ARMV7=1 (make e2e-armv7, which .ci/run calls): it takes minutes longer than make test should")
	}
	vmSuite(t, vmARMv7)
}

func TestVMRiscv64(t *testing.T) {
	if os.Getenv("RUND_E2E_RISCV64") != "1" {
		t.Skip("the riscv64 VM suite runs with RUND_E2E_RISCV64=1 (make e2e-riscv64, which .ci/run calls): it takes minutes longer than make test should")
	}
	vmSuite(t, vmRISCV64)
}

func TestVMTrixie(t *testing.T) {
	if os.Getenv("RUND_E2E_TRIXIE") != "1" {
		t.Skip("the VM suite on trixie's kernel runs with RUND_E2E_TRIXIE=1 (make e2e-trixie, which .ci/run calls): make test boots one kernel series, not two")
	}
	vmSuite(t, vmTrixie)
}

// vmSuite boots arch's VM, runs the guest suite in it and turns its lines into subtests.
func vmSuite(t *testing.T, arch vmArch) {
	ci := os.Getenv("CI") == "true"
	// missing skips, or fails loudly in CI, where the suite must run.
	missing := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf("CI=true, and the VM suite cannot run: "+format, args...)
		}
		t.Skipf(format, args...)
	}
	if os.Getenv("RUND_E2E_GUEST") == "1" {
		t.Skip("this is the guest")
	}
	if testing.Short() && !ci {
		t.Skip("-short: the VM suite boots a VM and takes minutes")
	}
	if os.Geteuid() != 0 {
		missing("needs root: it installs qemu with apt (.ci/vm-assets.sh) and boots a VM")
	}
	begin := time.Now()
	cache, err := filepath.Abs(arch.cache)
	if err != nil {
		t.Fatal(err)
	}
	assets, err := vmAssets(cache, arch.assetArch(), arch.suite)
	if err != nil {
		if _, lerr := exec.LookPath(arch.qemu); lerr != nil {
			missing("%s is not installed and .ci/vm-assets.sh could not install it: %v", arch.qemu, err)
		}
		t.Fatalf("prepare the VM's kernel and busybox: %v", err)
	}
	dir := t.TempDir()
	rund, rundTest := filepath.Join(dir, "rund"), filepath.Join(dir, "rund.test")
	if err := makeRund(arch.goarch, rund); err != nil {
		t.Fatal(err)
	}
	if err := goBuildStatic(arch.goarch, "test", "-c", "-o", rundTest, "."); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeInitramfs(initrd, assets, rund, rundTest, arch); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err == nil {
		err = os.Truncate(disk, 64<<20)
	}
	if err != nil {
		t.Fatal(err)
	}
	prepared := time.Since(begin)

	logPath := filepath.Join(cache, "last-console.log")
	results, done, booted, err := runVM(arch, assets, initrd, disk, logPath)
	if errors.Is(err, errVMNoBoot) || errors.Is(err, errVMPanic) {
		// Seen under TCG: the kernel stalled before /init, with nothing of ours running yet; and trixie's
		// 6.12 oopsed at an int3 in its own scheduler (enqueue_entity, from the idle task: x86 code
		// patching), which the same commit's next boot passed (2026-12-05). A panic twice fails the suite.
		t.Logf("%v; booting it once more; the first boot's last console lines:\n%s", err, consoleTail(logPath, 60))
		results, done, booted, err = runVM(arch, assets, initrd, disk, logPath)
	}
	elapsed := time.Since(begin)
	t.Logf("%s VM suite on %s: %.1fs in all (%.1fs to build and prepare, guest suite started %.1fs after qemu); console log: %s",
		arch.goarch, filepath.Base(assets["kernel"]), elapsed.Seconds(), prepared.Seconds(), booted.Seconds(), logPath)
	if err != nil {
		t.Errorf("qemu: %v\nlast console lines:\n%s", err, consoleTail(logPath, 40))
	}
	if done != "exit=0" {
		t.Errorf("guest suite ended %q (want exit=0)\nlast console lines:\n%s", done, consoleTail(logPath, 40))
	}
	for _, name := range e2eChecks {
		t.Run(name, func(t *testing.T) {
			r, ok := results[name]
			switch {
			case !ok:
				t.Errorf("the guest printed no result for %s (console log: %s)", name, logPath)
			case r.pass:
				t.Logf("PASS %s", r.detail)
			default:
				t.Errorf("FAIL %s", r.detail)
			}
		})
	}
	for name := range results {
		if !slices.Contains(e2eChecks, name) {
			t.Errorf("the guest reported %q, which is not in e2eChecks", name)
		}
	}
}

// vmAssets runs .ci/vm-assets.sh with its arguments after CACHE_DIR (ARCH, and SUITE, "" for the
// host's) and returns its key=value lines: qemu, kernel, modules, busybox.
func vmAssets(cache string, args ...string) (map[string]string, error) {
	cmd := exec.Command("bash", append([]string{".ci/vm-assets.sh", cache}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf(".ci/vm-assets.sh: %v\n%s", err, stderr.Bytes())
	}
	assets := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			assets[k] = v
		}
	}
	for _, k := range []string{"qemu", "kernel", "modules", "busybox"} {
		if assets[k] == "" {
			return nil, fmt.Errorf(".ci/vm-assets.sh did not say where %s is:\n%s", k, out)
		}
	}
	return assets, nil
}

// goarchEnv is the environment that builds for goarch: 32-bit arm as armv7, the oldest ARM rund is
// released for (make release).
func goarchEnv(goarch string) []string {
	env := append(os.Environ(), "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" {
		env = append(env, "GOARM=7")
	}
	return env
}

// makeRund builds rund for goarch as `make build` does, with its lean init inside, to out.
func makeRund(goarch, out string) error {
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+out)
	cmd.Env = goarchEnv(goarch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make build BIN=%s GOARCH=%s: %v\n%s", out, goarch, err, msg)
	}
	return nil
}

// goBuildStatic runs the go command for goarch with cgo off: the binaries must run in an initramfs
// without libc. No -race: the guest runs plain builds even when the host suite runs under the race
// detector.
func goBuildStatic(goarch string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Env = append(goarchEnv(goarch), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// vmBoot is how every guest's /init begins: busybox's applets, the mounts, /dev/shm and /var/tmp as a
// real system has them (a contained job's scratch directories), loopback up. The applets'
// links are made in the guest, by the guest's own busybox, which the host may not be able to run.
const vmBoot = `#!/bin/sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/shm /var/tmp
ip link set lo up
`

// vmInit is the guest's /init: vmBoot, the virtio disk, then the suite (its -test.timeout is the one
// verb), then power off.
const vmInit = vmBoot + `hostname rund-e2e
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "E2E-INIT insmod $m failed"
done
i=0
while [ ! -e /sys/block/vda/dev ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/block/vda/dev ] && [ ! -b /dev/vda ]; then
	mknod /dev/vda b $(tr : ' ' </sys/block/vda/dev)
fi
# The io checks read and write the disk from contained jobs, which have no host uid but their own.
chmod 666 /dev/vda
echo "E2E-INIT kernel $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers); vda $(cat /sys/block/vda/dev 2>&1)"
cd /
RUND_E2E_GUEST=1 /bin/rund.test -test.run '^TestE2EGuest$' -test.v -test.timeout %v
echo "E2E-DONE exit=$?"
poweroff -f
`

// vmResult is one check's line from the guest.
type vmResult struct {
	pass   bool
	detail string
}

// vmBootTimeout bounds the boot on x86-64, from qemu's start to the guest's /init reporting in (a few
// seconds when all is well); errVMNoBoot says it passed. vmGuestTimeout is the guest suite's
// -test.timeout on x86-64.
const vmBootTimeout, vmGuestTimeout = 90 * time.Second, 200 * time.Second

var errVMNoBoot = errors.New("the VM's /init did not report in")

// errVMPanic says the guest's kernel panicked: runVM returns no results then.
var errVMPanic = errors.New("the guest's kernel panicked")

// runVM boots the guest and collects its E2E lines. It returns the results by check name, the
// "E2E-DONE" status, and how long after qemu's start the guest's /init reported in.
func runVM(arch vmArch, assets map[string]string, initrd, disk, logPath string) (map[string]vmResult, string, time.Duration, error) {
	// cache=none opens the image with O_DIRECT, so that the host's page cache does not blur the
	// guest's io figures; a filesystem without O_DIRECT gets writeback.
	cacheMode := "none"
	if fd, err := unix.Open(disk, unix.O_RDWR|unix.O_DIRECT, 0); err != nil {
		cacheMode = "writeback"
	} else {
		unix.Close(fd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), arch.scale(vmTimeout))
	defer cancel()
	args := append(slices.Clone(arch.machine), "-accel", "tcg,thread=multi", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", assets["kernel"], "-initrd", initrd,
		"-append", "console="+arch.console+" cgroup_no_v1=all panic=-1 loglevel=3",
		"-drive", "file="+disk+",if=virtio,format=raw,cache="+cacheMode)
	cmd := exec.CommandContext(ctx, assets["qemu"], args...)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, "", 0, err
	}
	defer logFile.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, "", 0, err
	}
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		waited <- err
	}()
	var reported, noBoot atomic.Bool
	watchdog := time.AfterFunc(arch.scale(vmBootTimeout), func() {
		if !reported.Load() {
			noBoot.Store(true)
			cancel()
		}
	})
	defer watchdog.Stop()
	results := map[string]vmResult{}
	done := ""
	var booted time.Duration
	panicked := "" // the kernel's panic line, if it printed one
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(logFile, line)
		if strings.Contains(line, "Kernel panic - not syncing") && panicked == "" {
			panicked = line
		}
		i := strings.Index(line, "E2E")
		if i < 0 {
			continue
		}
		line = line[i:]
		if strings.HasPrefix(line, "E2E-INIT") && booted == 0 {
			booted = time.Since(start)
			reported.Store(true)
		}
		if v, ok := strings.CutPrefix(line, "E2E-DONE "); ok {
			done = strings.TrimSpace(v)
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) >= 3 && f[0] == "E2E" && (f[2] == "PASS" || f[2] == "FAIL") {
			r := vmResult{pass: f[2] == "PASS"}
			if len(f) == 4 {
				r.detail = f[3]
			}
			results[f[1]] = r
		}
	}
	io.Copy(io.Discard, pr)
	err = <-waited
	if noBoot.Load() {
		return nil, "", 0, fmt.Errorf("%w within %v", errVMNoBoot, arch.scale(vmBootTimeout))
	}
	if panicked != "" {
		return nil, "", 0, fmt.Errorf("%w: %s", errVMPanic, panicked)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("the VM did not power off within %v: %w", arch.scale(vmTimeout), ctx.Err())
	}
	return results, done, booted, err
}

// consoleTail returns the last n lines of the console log.
func consoleTail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

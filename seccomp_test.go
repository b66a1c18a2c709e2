package main

// seccomp_test.go: the job's filter as a BPF program (run here by a small interpreter), and in force:
// "seccomp-child" (TestMain) is a job's init in miniature, which installs the filter on its forking
// thread, starts a command with clone3 as the init does, and exits with its status.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctl numbers encode the sizes of the structs (_IOC_SIZE, bits 16-29): a size of ours that
// differs makes one of these array lengths negative, and the build (go vet for each arch) fails.
var (
	_ [unsafe.Sizeof(seccompNotif{}) - unix.SECCOMP_IOCTL_NOTIF_RECV>>16&0x3fff]byte
	_ [unix.SECCOMP_IOCTL_NOTIF_RECV>>16&0x3fff - unsafe.Sizeof(seccompNotif{})]byte
	_ [unsafe.Sizeof(seccompNotifResp{}) - unix.SECCOMP_IOCTL_NOTIF_SEND>>16&0x3fff]byte
	_ [unix.SECCOMP_IOCTL_NOTIF_SEND>>16&0x3fff - unsafe.Sizeof(seccompNotifResp{})]byte
)

// runBPF runs a seccomp program on one seccomp_data the way the kernel does, for the ops jobFilter
// uses, and returns the action.
func runBPF(t *testing.T, prog []unix.SockFilter, nr int32, arch uint32, arg0 uint64) uint32 {
	t.Helper()
	var data [64]byte
	binary.LittleEndian.PutUint32(data[dataNr:], uint32(nr))
	binary.LittleEndian.PutUint32(data[dataArch:], arch)
	binary.LittleEndian.PutUint64(data[dataArg0:], arg0)
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		cond := false
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(data[in.K:])
			continue
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			cond = a == in.K
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			cond = a&in.K != 0
		default:
			t.Fatalf("instruction %d: unexpected op %#x", pc, in.Code)
		}
		if cond {
			pc += int(in.Jt)
		} else {
			pc += int(in.Jf)
		}
	}
	t.Fatalf("nr %d: the program falls off its end", nr)
	return 0
}

func TestSeccompFilterProgram(t *testing.T) {
	prog, err := jobFilter()
	if err != nil {
		t.Fatal(err)
	}
	arch := auditArch[runtime.GOARCH]
	eperm, kill := unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM), uint32(unix.SECCOMP_RET_KILL_PROCESS)
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	if len(prog) > 4096 || prog[0] != load(dataArch) { // BPF_MAXINSNS; the arch is checked first
		t.Errorf("program of %d instructions starting %+v: want <= 4096, starting with the arch", len(prog), prog[0])
	}
	want, names := map[uintptr]uint32{}, map[string]bool{}
	for _, r := range jobRules {
		names[r.name] = true
		if _, dup := want[r.nr]; dup {
			t.Errorf("%s (%d) is in jobRules twice", r.name, r.nr)
		}
		want[r.nr] = map[action]uint32{deny: eperm, denyNewNS: allow, supervise: unix.SECCOMP_RET_USER_NOTIF,
			denyFamily: allow}[r.act]
	}
	for name := range syscallProbes { // the probes' list is the filter's, written out a second time
		if !names[name] && !strings.HasSuffix(name, "-plain") && (!strings.HasSuffix(name, "time64") || runtime.GOARCH == "arm") {
			t.Errorf("%s is probed but not in jobRules", name)
		}
	}
	for _, nr := range []uintptr{unix.SYS_READ, unix.SYS_WRITE, unix.SYS_EXECVE, unix.SYS_EXIT_GROUP, unix.SYS_PTRACE, unix.SYS_SECCOMP} {
		want[nr] = allow
	}
	for nr, w := range want {
		if got := runBPF(t, prog, int32(nr), arch, 0); got != w {
			t.Errorf("syscall %d: action %#x, want %#x", nr, got, w)
		}
	}
	families := map[uint64]uint32{unix.AF_VSOCK: eperm, unix.AF_QIPCRTR: eperm, unix.AF_UNIX: allow, unix.AF_INET: allow,
		unix.AF_INET6: allow, unix.AF_NETLINK: allow, unix.AF_PACKET: allow, unix.AF_VSOCK | 1<<32: eperm}
	for family, w := range families { // arg0 is an int: its upper half is not the family's
		if got := runBPF(t, prog, int32(unix.SYS_SOCKET), arch, family); got != w {
			t.Errorf("socket(%#x): action %#x, want %#x", family, got, w)
		}
	}
	for _, nr := range []uintptr{unix.SYS_CLONE, unix.SYS_UNSHARE} {
		for flags, w := range map[uint64]uint32{unix.CLONE_NEWUSER: eperm, unix.CLONE_NEWUSER | unix.CLONE_NEWNS: eperm,
			unix.CLONE_NEWNET: eperm, unix.CLONE_NEWNS: eperm, unix.CLONE_NEWPID | unix.CLONE_VM: eperm,
			unix.CLONE_NEWUTS: eperm, unix.CLONE_NEWIPC: eperm, unix.CLONE_NEWCGROUP: eperm, unix.CLONE_NEWTIME: eperm,
			0xffffffff &^ nsFlags: allow, unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD: allow,
			uint64(unix.SIGCHLD): allow} {
			if got := runBPF(t, prog, int32(nr), arch, flags); got != w {
				t.Errorf("syscall %d flags %#x: action %#x, want %#x", nr, flags, got, w)
			}
		}
	}
	if got := runBPF(t, prog, unix.SYS_READ, unix.AUDIT_ARCH_I386, 0); got != kill {
		t.Errorf("a syscall of a foreign arch: action %#x, want KILL_PROCESS", got)
	}
	if got := runBPF(t, prog, unix.SYS_READ|x32SyscallBit, arch, 0); runtime.GOARCH == "amd64" && got != kill {
		t.Errorf("an x32 syscall: action %#x, want KILL_PROCESS", got)
	}
}

// syscallProbes are the arguments `probe syscalls` passes: for each syscall of jobRules, arguments
// that change nothing even where no filter stops the call (TestSeccompJobFilter runs it as root
// without one): NULL pointers, fd -1, flags with every bit set (bad), numbers out of range. Not NULL
// for acct, which would switch process accounting off: 1, an address below vm.mmap_min_addr.
const bad = ^uintptr(0)

var syscallProbes = map[string][6]uintptr{
	"keyctl":  {unix.KEYCTL_GET_KEYRING_ID, uintptr(unix.KEY_SPEC_SESSION_KEYRING & 0xffffffff), 0},
	"add_key": {}, "request_key": {},
	"unshare":       {unix.CLONE_NEWUSER},                 // EINVAL where not filtered: Go has threads
	"clone":         {unix.CLONE_NEWUSER | unix.CLONE_FS}, // EINVAL: the two flags exclude each other
	"clone3":        {0, 0},                               // EINVAL: no clone_args
	"unshare-plain": {0},                                  // a no-op the filter lets through
	"clone-plain":   {unix.CLONE_SIGHAND},                 // EINVAL: CLONE_SIGHAND wants CLONE_VM
	"setns":         {bad, 0},
	"mount":         {}, "umount2": {0, bad}, "pivot_root": {}, "move_mount": {bad, 0, bad, 0, bad},
	"open_tree": {bad, 0, bad}, "open_tree_attr": {bad, 0, bad}, "fsopen": {0, bad},
	"fsmount": {bad, bad}, "fsconfig": {bad, bad}, "fspick": {bad, 0, bad}, "mount_setattr": {bad, 0, bad},
	"bpf": {bad}, "perf_event_open": {0, 0, bad, bad, bad}, "userfaultfd": {bad},
	"io_uring_setup": {}, "io_uring_enter": {bad, 0, 0, bad}, "io_uring_register": {bad},
	"kexec_load": {0, 1 << 20, 0, 0x8000}, "kexec_file_load": {bad, bad, 0, 0, 1 << 30},
	"init_module": {}, "finit_module": {bad, 0, bad}, "delete_module": {},
	"open_by_handle_at": {bad}, "name_to_handle_at": {bad, 0, 0, 0, bad},
	"swapon": {0, bad}, "swapoff": {}, "reboot": {}, "syslog": {10}, "acct": {1}, // 10: SYSLOG_ACTION_SIZE_BUFFER
	"quotactl": {0xff}, "quotactl_fd": {bad, 0xff},
	"settimeofday": {}, "clock_settime": {1000}, "clock_adjtime": {1000}, "adjtimex": {},
	"clock_settime64": {1000}, "clock_adjtime64": {1000},
	"socket": {unix.AF_VSOCK, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, 0}, // "ok" or EAFNOSUPPORT where not filtered
}

// probeSyscalls is `probe syscalls`: one line "syscall=<name> <errno name or ok>" for each syscall of
// the job's filter, for two the filter must let through (-plain), and for a Go os/exec (os-exec).
func probeSyscalls() {
	rules := append(slices.Clip(jobRules), syscallRule{"unshare-plain", unix.SYS_UNSHARE, 0},
		syscallRule{"clone-plain", unix.SYS_CLONE, 0})
	for _, r := range rules {
		a, ok := syscallProbes[r.name]
		if !ok {
			fmt.Printf("syscall=%s no-probe\n", r.name)
			continue
		}
		_, _, e := unix.Syscall6(r.nr, a[0], a[1], a[2], a[3], a[4], a[5])
		res := "ok"
		if e != 0 {
			res = unix.ErrnoName(e)
		}
		fmt.Printf("syscall=%s %s\n", r.name, res)
	}
	res := "ok"
	if err := exec.Command("/bin/true").Run(); err != nil { // Go's own fork: clone with CLONE_PIDFD
		res = err.Error()
	}
	fmt.Printf("syscall=os-exec %s\n", res)
}

// seccompChild is `seccomp-child argv...`: the init's side of the filter (init.go), then argv started
// with clone3 into this process's own cgroup, and its exit status. 124: no seccomp user notification.
func seccompChild(argv []string) int {
	runtime.LockOSThread() // never unlocked: the thread keeps the filter
	runtime.GOMAXPROCS(2)
	cg, err := ownCgroupFD()
	if err == nil {
		err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccomp-child:", err)
		return 125
	}
	listener, inherited, err := installJobFilter()
	if err != nil { // EINVAL: no listeners (Linux < 5.0); EBUSY: a filter above ours has one
		fmt.Fprintln(os.Stderr, "seccomp-child:", err)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EBUSY) {
			return 124
		}
		return 125
	}
	go superviseClone3(listener)
	ws, err := startWait(cg, argv, inherited)
	if err != nil {
		fmt.Fprintf(os.Stderr, "seccomp-child: start %s: %v\n", argv[0], err)
		return 125
	}
	return ws.ExitStatus()
}

// startWait starts argv into cgroup cg with clone3 (CLONE_INTO_CGROUP), as the init does, and waits for it.
func startWait(cg int, argv []string, inherited int) (syscall.WaitStatus, error) {
	pid, err := forkExecFiltered(argv[0], argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg}}, inherited)
	var ws syscall.WaitStatus
	if err == nil {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
	}
	return ws, err
}

// ownCgroupFD opens this process's cgroup (v2), for CLONE_INTO_CGROUP of a child into it.
func ownCgroupFD() (int, error) {
	mount, err := findCgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		return -1, err
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return unix.Open(filepath.Join(mount, p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}
	}
	return -1, fmt.Errorf("no cgroup v2 line in /proc/self/cgroup")
}

// runFiltered runs argv under the job's filter (seccomp-child), bounded so that a deadlock fails the
// test, and returns its stdout and exit code; it skips the test where the filter cannot be installed.
func runFiltered(t *testing.T, argv ...string) (string, int) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, selfExe(t), append([]string{"seccomp-child"}, argv...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "GOGC=off") // no sleep at exit; GOGC as the init has it
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if c.Err() != nil {
		t.Fatalf("%q under the filter: still running after a minute (deadlock?); stderr %q", argv, stderr.String())
	}
	code := cmd.ProcessState.ExitCode()
	if code == 124 {
		t.Skipf("no seccomp user notification here: %s", stderr.String())
	}
	if code == 125 || err != nil && code < 0 {
		t.Fatalf("%q under the filter: %v %s", argv, err, stderr.String())
	}
	return string(out), code
}

func selfExe(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestSeccompJobFilter: every syscall of jobRules fails with EPERM under the filter (clone3 with
// ENOSYS), where without it (as root, same arguments) the kernel gives another answer; the init's own
// clone3 goes through (seccomp-child's start of the probe is one); and unshare and clone without a
// namespace flag are let through.
func TestSeccompJobFilter(t *testing.T) {
	requireRoot(t)
	out, err := exec.Command(selfExe(t), "probe", "syscalls").Output()
	if err != nil {
		t.Fatalf("probe without the filter: %v", err)
	}
	native := syscallResults(string(out))
	out2, code := runFiltered(t, selfExe(t), "probe", "syscalls")
	if code != 0 {
		t.Fatalf("probe under the filter: exit %d, output %q", code, out2)
	}
	filtered := syscallResults(out2)
	for _, msg := range probesApart(native, filtered) {
		t.Error(msg)
	}
	for name, want := range map[string]string{"unshare-plain": "ok", "clone-plain": "EINVAL", "os-exec": "ok"} {
		if got := filtered[name]; got != want {
			t.Errorf("%s under the filter: %q, want %s (let through)", name, got, want)
		}
	}
}

// probesApart compares the results of `probe syscalls` without the job's filter (native) and under it
// (filtered), and says what is wrong: each syscall of jobRules must be refused under the filter (EPERM,
// ENOSYS where the init supervises it) and get another answer from the kernel without it, with the
// same arguments. The second is what proves a rule's number: one that named another syscall, or none,
// would leave the probe's call to the kernel under the filter too, and its answer the same both ways.
func probesApart(native, filtered map[string]string) []string {
	var wrong []string
	for _, r := range jobRules {
		want := refusedAs(r)
		if got := filtered[r.name]; got != want {
			wrong = append(wrong, fmt.Sprintf("%s under the filter: %q, want %s", r.name, got, want))
		}
		switch nat := native[r.name]; nat {
		case want, "", "no-probe":
			wrong = append(wrong, fmt.Sprintf("%s without the filter: %q, want the kernel's own answer, not %s", r.name, nat, want))
		}
	}
	return wrong
}

// refusedAs is what the job's probe of r gets under the filter: EPERM, or ENOSYS where the init
// supervises the call (clone3).
func refusedAs(r syscallRule) string {
	if r.act == supervise {
		return "ENOSYS"
	}
	return "EPERM"
}

// syscallResults parses the output of `probe syscalls` into name -> result.
func syscallResults(out string) map[string]string {
	res := map[string]string{}
	for _, v := range facts(out)["syscall"] {
		if name, r, ok := strings.Cut(v, " "); ok {
			res[name] = r
		}
	}
	return res
}

// TestSeccompCommandsRun: ordinary programs run under the filter, with it in force from their start
// (/proc/self/status), and so do the ones that make threads and children (glibc tries clone3 first,
// gets ENOSYS, and falls back to clone).
func TestSeccompCommandsRun(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		argv []string
		want string // "": any output
	}{
		{[]string{"/bin/sh", "-c", "echo ok"}, "ok\n"},
		{[]string{"/bin/sh", "-c", "ls / >/dev/null && grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | cat"},
			"NoNewPrivs:\t1\nSeccomp:\t2\n"},
	}
	if py, err := exec.LookPath("python3"); err == nil {
		cases = append(cases, struct {
			argv []string
			want string
		}{[]string{py, "-c", "import subprocess, threading; t = threading.Thread(target=print, args=(1,)); " +
			"t.start(); t.join(); print(subprocess.run(['true']).returncode)"}, "1\n0\n"})
	}
	if mk, err := exec.LookPath("make"); err == nil {
		cases = append(cases, struct {
			argv []string
			want string
		}{[]string{mk, "--version"}, ""})
	}
	for _, c := range cases {
		out, code := runFiltered(t, c.argv...)
		if code != 0 || c.want != "" && out != c.want {
			t.Errorf("%q under the filter: exit %d, output %q, want 0 and %q", c.argv, code, out, c.want)
		}
	}
}

// TestSeccompForkRefusedWithGC: forkExecFiltered refuses to fork with the collector on, which can
// deadlock with the supervisor (seccomp.go: with no guard, 5 starts under allocation hung 5 times in 5;
// with the collector turned off just before, 20 hung 2 times in 5).
func TestSeccompForkRefusedWithGC(t *testing.T) {
	requireRoot(t)
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, selfExe(t), "seccomp-child", "/bin/true")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "GOGC=100")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code == 124 {
		t.Skipf("no seccomp user notification here: %s", out)
	} else if code != 125 || !strings.Contains(string(out), "want 2 or more and off") {
		t.Errorf("fork under the filter with the collector on: exit %d %q, want it refused", code, out)
	}
}

package main

// setup_test.go: the invariants of a job's setup (init.go setUpJob) checked in code: every step's
// failure is fatal, credentials fail closed, and the mounts are locked only from an unfiltered thread.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// setupSteps are the names of setUpJob's steps, read from init.go: a step added there is tested here
// without a second list to keep.
func setupSteps(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("init.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\bstep\("([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("found %d steps in init.go (%q); want the whole of setUpJob", len(names), names)
	}
	return names
}

// TestSetupStepsFatal fails each step of a contained job's setup in turn (failStep, set in the init by
// a wrapper around this test binary) and proves the command does not run: the Start reports the step,
// and the job's stdout, to which the command would print, stays empty. The same sandbox with no step
// failed runs the command.
func TestSetupStepsFatal(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.spareInits = 0 })
	dir := jobTempDir(t)
	if err := os.Mkdir(filepath.Join(dir, "jobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	contain := *ts.m.cfg.contain
	contain.dirs = []string{filepath.Join(dir, "jobs")} // so that the job dirs' mount is made too
	p := newPool(ts.cg, 0, &contain)
	defer p.close()
	script := filepath.Join(dir, "init")
	saved := initExe
	t.Cleanup(func() { initExe = saved })
	initExe = script
	for _, name := range append([]string{""}, setupSteps(t)...) {
		// GORACE: the race runtime would sleep a second at each exit.
		wrapper := fmt.Sprintf("#!/bin/sh\nexport GORACE=atexit_sleep_ms=0 RUND_TEST_FAIL_STEP=%s\nexec %s init\n",
			shellQuote(name), testExe)
		if err := os.WriteFile(script, []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
		sb, err := p.take(given{})
		if err != nil {
			t.Fatalf("step %q: make a sandbox: %v", name, err)
		}
		cfg := initConfig{Argv: []string{"/bin/sh", "-c", "echo ran"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"}
		err = sb.proc.begin(cfg)
		sb.outputs[0].SetReadDeadline(time.Now().Add(time.Minute))
		out, rerr := io.ReadAll(sb.outputs[0]) // EOF once the init and anything it started are gone
		sb.discard()
		switch {
		case rerr != nil:
			t.Errorf("step %q: read the job's stdout: %v", name, rerr)
		case name == "" && (err != nil || string(out) != "ran\n"):
			t.Errorf("no step failed: start %v, stdout %q; want the command run", err, out)
		case name != "" && (err == nil || !strings.Contains(err.Error(), name+": failed on purpose")):
			t.Errorf("step %q failed: start %v; want the start refused, naming the step", name, err)
		case name != "" && len(out) > 0:
			t.Errorf("step %q failed: the command ran all the same (stdout %q)", name, out)
		}
	}
}

// onOwnThread runs f on a goroutine locked to a thread of its own that is never unlocked, so the thread
// ends with it, taking whatever f changed of it (ids, capabilities, a filter) along.
func onOwnThread(f func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		f()
	}()
	<-done
}

// dropEffective takes capability c out of the calling thread's effective set (capset(2) is per thread).
func dropEffective(c uint) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// TestAsJobUserFailsClosed: each credential change of asJobUser is checked, and the way back too. A
// thread without CAP_SETGID cannot drop its groups, one without CAP_SETUID cannot take the job's fsuid
// (setfsuid(2) says nothing: only the read-back tells), and one whose uids all left 0 during the check
// cannot take root's fsuid back: each is an error, and the check runs only when every change took.
func TestAsJobUserFailsClosed(t *testing.T) {
	requireRoot(t)
	u := &jobUser{UID: 1879048192 + 4242, GID: 1879048192 + 4243}
	cases := []struct {
		name         string
		drop         int  // capability dropped before asJobUser; -1: none
		leaveRoot    bool // the thread's uids (and so its capabilities) leave 0 inside the check
		wantErr      string
		wantChecked  bool
		wantFSUID    int // after asJobUser
		wantFSGIDNow int
	}{
		{"all changes take", -1, false, "", true, 0, 0},
		{"no CAP_SETGID", unix.CAP_SETGID, false, "setgroups", false, 0, 0},
		{"no CAP_SETUID", unix.CAP_SETUID, false, "setfsuid 1879052434", false, 0, 0},
		{"uid 0 left in the check", -1, true, "setfsuid 0", true, 1000, int(u.GID)},
	}
	for _, c := range cases {
		var err error
		var checked bool
		var inUID, inGID, fsuid, fsgid int
		onOwnThread(func() {
			if c.drop >= 0 {
				if derr := dropEffective(uint(c.drop)); derr != nil {
					err = derr
					return
				}
			}
			err = asJobUser(u, func() {
				checked = true
				inUID, _ = unix.SetfsuidRetUid(-1)
				inGID, _ = unix.SetfsgidRetGid(-1)
				if c.leaveRoot { // this thread alone: x/sys Setresuid would change every thread
					unix.RawSyscall(unix.SYS_SETRESUID, 1000, 1000, 1000)
				}
			})
			fsuid, _ = unix.SetfsuidRetUid(-1)
			fsgid, _ = unix.SetfsgidRetGid(-1)
		})
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
		}
		if checked != c.wantChecked || checked && (inUID != int(u.UID) || inGID != int(u.GID)) {
			t.Errorf("%s: check ran %v as %d:%d, want ran %v as %d:%d", c.name, checked, inUID, inGID, c.wantChecked, u.UID, u.GID)
		}
		if fsuid != c.wantFSUID || fsgid != c.wantFSGIDNow {
			t.Errorf("%s: fsuid:fsgid %d:%d after, want %d:%d", c.name, fsuid, fsgid, c.wantFSUID, c.wantFSGIDNow)
		}
	}
}

// TestCheckNotJobFiltered: the thread that locks the mounts is checked to be without the job's filter
// (lockMounts), by its count of filters, and one with a filter more than it inherited is refused,
// whatever that filter allows. (A count, not the seccomp mode: under systemd every thread of rund has
// filters, the service's.)
func TestCheckNotJobFiltered(t *testing.T) {
	var before, after, count error
	onOwnThread(func() {
		inherited, err := filterCount()
		if err != nil {
			count = err
			return
		}
		before = checkNotJobFiltered(inherited)
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			after = err
			return
		}
		allow := []unix.SockFilter{ret(unix.SECCOMP_RET_ALLOW)}
		prog := unix.SockFprog{Len: 1, Filter: &allow[0]}
		_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(allow)
		if e != 0 {
			after = fmt.Errorf("install a filter: %w", e)
			return
		}
		after = checkNotJobFiltered(inherited)
	})
	if count != nil {
		t.Fatal(count)
	}
	if before != nil {
		t.Errorf("a thread with its inherited filters: %v, want it accepted", before)
	}
	if after == nil || !strings.Contains(after.Error(), "the job's among them") {
		t.Errorf("a thread with one more filter: %v, want it refused", after)
	}
}

// TestForkRefusedUnfiltered: the command is never forked from a thread without the job's filter
// (forkExecFiltered), even with the collector off and two Ps.
func TestForkRefusedUnfiltered(t *testing.T) {
	var err error
	old := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(old)
	gc := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(gc)
	onOwnThread(func() {
		inherited, cerr := filterCount()
		if cerr != nil {
			err = cerr
			return
		}
		_, err = forkExecFiltered("/bin/true", []string{"true"}, &syscall.ProcAttr{}, inherited)
	})
	if err == nil || !strings.Contains(err.Error(), "filters, want") {
		t.Errorf("fork from a thread without the job's filter: %v, want it refused", err)
	}
}

// BenchmarkJobOwner is what issue 22's user namespace owner adds to each contained Start: the forking
// thread's change to the job's effective ids and back (creds.go), on a thread of its own.
func BenchmarkJobOwner(b *testing.B) {
	requireRoot(b)
	u := &jobUser{UID: 1879048192 + 4242, GID: 1879048192 + 4243}
	onOwnThread(func() {
		for b.Loop() {
			if err := becomeJobOwner(u); err != nil {
				b.Fatal(err)
			}
			if err := leaveJobOwner(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// execFiltered is the test binary's "filtered ARGS...": it puts a seccomp filter on every thread of
// this process, as systemd's unit puts its own on rund's, and execs itself with ARGS, which keeps it
// (seccomp(2)). Like systemd's RestrictSUIDSGID=, the filter fails openat2 with ENOSYS and allows the
// rest.
func execFiltered(args []string) int {
	allow := []unix.SockFilter{load(dataNr), jump(unix.BPF_JEQ, unix.SYS_OPENAT2, 0, 1),
		ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)), ret(unix.SECCOMP_RET_ALLOW)}
	prog := unix.SockFprog{Len: uint16(len(allow)), Filter: &allow[0]}
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(allow)
	if e != 0 {
		fmt.Fprintln(os.Stderr, "filtered: install a filter:", e)
		return 1
	}
	err := syscall.Exec("/proc/self/exe", append([]string{os.Args[0]}, args...), os.Environ())
	fmt.Fprintln(os.Stderr, "filtered: exec:", err)
	return 1
}

// TestContainUnderInheritedFilter: a server that a service manager already filters (every thread of
// it under a filter of its own, as under the shipped systemd unit, openat2 refused) runs contained
// jobs, with the job's filter on top of the inherited one. The init tells its threads apart by their
// count of filters; by the seccomp mode, every one of them looked filtered, and every Start failed (the
// systemd suite), as every Start did when openat2 failing refused every path.
func TestContainUnderInheritedFilter(t *testing.T) {
	parent := subprocessParent(t, "filtered")
	pki := newTestPKI(t)
	srv, addr, _ := serverProcess(t, pki, parent, "filtered")
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	out, errs := readAll(t, a, startJob(t, a, cmd("grep", "^Seccomp_filters:", "/proc/self/status")))
	if out != "Seccomp_filters:\t2\n" {
		t.Errorf("a contained job under a filtered server: %q (stderr %q), want 2 filters: the inherited and the job's",
			out, errs)
	}
	// Without openat2, a magic link is still not followed: its text leads nowhere the job cannot go.
	req := cmd("ls")
	req.Dir = "/proc/self/fd/5"
	if _, err := a.Start(ctx(t), req); status.Code(err) != codes.InvalidArgument {
		t.Errorf("-dir /proc/self/fd/5 under a server without openat2: %v, want InvalidArgument", err)
	}
}

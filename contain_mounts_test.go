package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestContainLateHostMounts: a host mount made after a job's sandbox was set up is read-only in the
// job, like every other (it propagated into the spare while it waited), and one made while the job runs
// does not reach it at all. Both are tmpfs of mode 1777, which the job could otherwise write.
func TestContainLateHostMounts(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(jobTempDir(t), "shared")
	mkdir := func(p string) {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(p string) {
		if err := unix.Mount("late-tmpfs", p, "tmpfs", 0, "mode=1777"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	}
	mkdir(dir)
	// A shared mount, as systemd makes every mount: what the host mounts below it propagates to the
	// mount namespaces that are its slaves, as the spares' are.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	for _, sb := range readySpares(t, ts.m) {
		waitMountsSetUp(t, sb.proc.cmd.Process.Pid) // the next mount comes after
	}
	early, late, gate := filepath.Join(dir, "early"), filepath.Join(dir, "late"), filepath.Join(dir, "gate")
	mkdir(early)
	mount(early)
	mkdir(late)
	script := "touch " + early + "/x; echo ready; while [ ! -e " + gate + " ]; do sleep 0.01; done; " +
		"grep -c ' " + late + " ' /proc/self/mountinfo; true"
	id := startJob(t, a, cmd("sh", "-c", script))
	outputUntil(t, a, id, "ready\n")
	mount(late)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs := readAll(t, a, id)
	if !strings.Contains(errs, "Read-only file system") {
		t.Errorf("touch on a tmpfs the host mounted after the sandbox was made: stderr %q; want a read-only file system", errs)
	}
	if !strings.HasSuffix(out, "ready\n0\n") {
		t.Errorf("a running job's mountinfo: %q, want no line for the tmpfs the host mounted on %s after its Start", out, late)
	}
	assertAbsent(t, filepath.Join(early, "x"))
}

// waitMountsSetUp waits (bounded) until the init pid has mounted the /proc of its PID namespace, the
// last of its mounts (setupNamespaces): a spare is in the pool while its init still sets up.
func waitMountsSetUp(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		procs := 0
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[4] == "/proc" {
				procs++
			}
		}
		if procs >= 2 { // the host's, and its own over it
			return
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("init %d: no /proc of its own after 10 s (%v)", pid, err)
		}
	}
}

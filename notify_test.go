package main

// notify_test.go: rund serve, run as a subprocess, tells a fake service manager when it is ready and
// when it stops (notify.go), and leaves the cgroup it was started in when its jobs' cgroups are below
// it (cgroupfs.go, leaveEnablePath), as under systemd 252's delegation.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"rund/rpcpb"
)

// readNotify returns the next datagram on l, or fails the test after 30 s.
func readNotify(t *testing.T, l *net.UnixConn) string {
	t.Helper()
	l.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, err := l.Read(buf)
	if err != nil {
		t.Fatalf("read NOTIFY_SOCKET: %v", err)
	}
	return string(buf[:n])
}

// TestServeNotifies: READY=1 arrives once rund serves (a call made at once succeeds), STOPPING=1 once
// SIGTERM has come; on a socket path and on an abstract socket ('@'). A job does not see NOTIFY_SOCKET.
func TestServeNotifies(t *testing.T) {
	for _, kind := range []string{"path", "abstract"} {
		t.Run(kind, func(t *testing.T) {
			name := filepath.Join(t.TempDir(), "notify")
			if kind == "abstract" {
				name = fmt.Sprintf("@rund-test-%d-notify", os.Getpid())
			}
			l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			parent := subprocessParent(t, "notify-"+kind)
			pki := newTestPKI(t)
			c := serveCommand(os.Args[0], pki, parent, nil, nil)
			c.Env = append(os.Environ(), "NOTIFY_SOCKET="+name)
			srv, addr, _ := startServerProcess(t, c)
			stopped := false
			defer func() { // a failed test's server too
				if !stopped {
					srv.Process.Signal(syscall.SIGTERM)
					srv.Wait()
				}
			}()
			if got := readNotify(t, l); got != "READY=1" {
				t.Errorf("first message %q, want READY=1", got)
			}
			a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
			id := startJob(t, a, cmd("sh", "-c", `echo "NOTIFY_SOCKET=${NOTIFY_SOCKET-unset}"`))
			if out, _ := readAll(t, a, id); out != "NOTIFY_SOCKET=unset\n" {
				t.Errorf("a job's environment: %q", out)
			}
			srv.Process.Signal(syscall.SIGTERM)
			got := readNotify(t, l)
			stopped = true
			if err := srv.Wait(); err != nil {
				t.Errorf("rund serve after SIGTERM: %v", err)
			}
			if got != "STOPPING=1" {
				t.Errorf("message after SIGTERM %q, want STOPPING=1", got)
			}
		})
	}
}

// TestServeLeavesItsCgroup starts rund serve in a cgroup X of the test's with -cgroup X/jobs: it moves
// into X/rund-server, twice (the second finds rund-server from the first, as a restart does), and
// a job runs below X/jobs. Started in the leaf X/given, beside X/jobs, it stays there.
func TestServeLeavesItsCgroup(t *testing.T) {
	requireRoot(t)
	mount, _ := findCgroup2Mount("/proc/self/mountinfo")
	x := filepath.Join(mount, fmt.Sprintf("rund-test-%d-selfmove", os.Getpid()))
	for _, d := range []string{x, x + "/given"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{x + "/jobs", x + "/rund-server", x + "/given", x} {
			if err := rmdirRetry(d); err != nil {
				t.Error(err)
			}
		}
	})
	pki := newTestPKI(t)
	starts := []struct{ in, want string }{{x, x + "/rund-server"}, {x, x + "/rund-server"}, {x + "/given", x + "/given"}}
	for _, start := range starts {
		// A restart: a service manager could not start rund in X while X's controllers are enabled.
		disableControllers(t, x+"/jobs", x)
		serveIn(t, pki, start.in, x+"/jobs", start.want)
	}
	offered := strings.Fields(readString(filepath.Join(mount, "cgroup.controllers")))
	if !slices.Contains(offered, "pids") {
		t.Skipf("%s offers %v, not pids: that the move lets rund enable the controllers in %s is proven "+
			"in the VM suites", mount, offered, x)
	}
	disableControllers(t, x+"/jobs") // rund left them on, and X holds none of its processes
	if got := readString(x + "/cgroup.subtree_control"); !strings.Contains(got, "pids") {
		t.Errorf("%s/cgroup.subtree_control %q, want pids enabled", x, got)
	}
}

// cgroupOf is the cgroup2 line of /proc/PID/cgroup.
func cgroupOf(pid int) string {
	for _, line := range strings.Split(readString(fmt.Sprintf("/proc/%d/cgroup", pid)), "\n") {
		if strings.HasPrefix(line, "0::") {
			return line
		}
	}
	return ""
}

// serveIn runs rund serve started in cgroup dir (clone3's CLONE_INTO_CGROUP) with -cgroup parent,
// checks that it sits in want and runs a job, then stops it.
func serveIn(t *testing.T, pki *testPKI, dir, parent, want string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := serveCommand(os.Args[0], pki, parent, nil, nil)
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	srv, addr, _ := startServerProcess(t, c)
	unix.Close(fd)
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	mount, _ := findCgroup2Mount("/proc/self/mountinfo")
	own := cgroupOf(srv.Process.Pid)
	if rel, _ := filepath.Rel(mount, want); own != "0::/"+rel {
		t.Errorf("rund serve started in %s with -cgroup %s is in %q, want %s", dir, parent, own, want)
	}
	if procs := strings.Fields(readString(dir + "/cgroup.procs")); dir != want && len(procs) != 0 {
		t.Errorf("%s, which rund left, holds %v", dir, procs)
	}
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; exec sleep 1000"))
	waitOutput(t, a, id, "ready")
	if pids := jobPIDs(t, parent, id); len(pids) != 1 {
		t.Errorf("job %s/%s/job holds %v, want its command", parent, id, pids)
	}
	if _, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil {
		t.Error(err)
	}
}

// disableControllers empties the subtree_control of each dir that exists, children first.
func disableControllers(t *testing.T, dirs ...string) {
	for _, d := range dirs {
		for _, c := range strings.Fields(readString(d + "/cgroup.subtree_control")) {
			if err := writeFile(d+"/cgroup.subtree_control", "-"+c); err != nil {
				t.Fatal(err)
			}
		}
	}
}

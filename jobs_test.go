package main

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

func TestOutputAndExitCodes(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	for _, tc := range []struct {
		script   string
		state    rpcpb.JobStatus_State
		exitCode int // -1: none
		signal   int // 0: none
	}{
		{"echo out; echo err >&2; exit 0", rpcpb.JobStatus_STATE_EXITED, 0, 0},
		{"echo out; echo err >&2; exit 7", rpcpb.JobStatus_STATE_EXITED, 7, 0},
		{"echo out; echo err >&2; kill -USR1 $$", rpcpb.JobStatus_STATE_SIGNALED, -1, int(syscall.SIGUSR1)},
		{"echo out; echo err >&2; kill -KILL $$", rpcpb.JobStatus_STATE_SIGNALED, -1, int(syscall.SIGKILL)},
	} {
		t.Run(tc.script, func(t *testing.T) {
			id := startJob(t, a, cmd("sh", "-c", tc.script))
			out, errs := readAll(t, a, id)
			if out != "out\n" || errs != "err\n" {
				t.Errorf("stdout %q stderr %q, want out and err", out, errs)
			}
			st := waitDone(t, a, id)
			if st.State != tc.state || st.Ulid != id || st.Stopped {
				t.Errorf("state %v ulid %v stopped %v, want %v %v false", st.State, st.Ulid, st.Stopped, tc.state, id)
			}
			if (st.ExitCode != nil) != (tc.exitCode >= 0) || int(st.GetExitCode().GetValue()) != max(tc.exitCode, 0) {
				t.Errorf("exit code %v, want %d", st.ExitCode, tc.exitCode)
			}
			if int(st.GetSignal().GetValue()) != tc.signal || st.Killed != (tc.signal != 0) {
				t.Errorf("signal %v killed %v, want %d", st.Signal, st.Killed, tc.signal)
			}
			if !st.EndTime.AsTime().After(st.StartTime.AsTime()) {
				t.Errorf("end %v not after start %v", st.EndTime.AsTime(), st.StartTime.AsTime())
			}
			if !slices.Equal(st.Command, []string{"sh", "-c", tc.script}) {
				t.Errorf("command %q", st.Command)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	os.Setenv("RUND_TEST_SECRET", "leak") // the server's environment must not reach jobs
	defer os.Unsetenv("RUND_TEST_SECRET")
	req := selfCmd(t, "pid", "procs", "hostname", "env", "cwd", "net")
	req.Env = []string{"EXTRA=1", "HOME=/tmp"}
	id := startJob(t, a, req)
	out, _ := readAll(t, a, id)
	f := facts(out)
	t.Logf("probe:\n%s", out)
	if got := f["ppid"]; !slices.Equal(got, []string{"1"}) {
		t.Errorf("ppid %v, want the job's own PID 1", got)
	}
	if got, want := f["procs"], []string{"1," + f["pid"][0]}; !slices.Equal(got, want) {
		t.Errorf("/proc lists %v, want only %v (the init and the probe)", got, want)
	}
	if got := f["hostname"]; !slices.Equal(got, []string{id}) {
		t.Errorf("hostname %v, want the job id %s", got, id)
	}
	if got := f["if"]; !slices.Equal(got, []string{"lo up=true"}) {
		t.Errorf("interfaces %v, want only lo, up", got)
	}
	if got := f["loopback-dial"]; !slices.Equal(got, []string{"true"}) {
		t.Errorf("dial on loopback inside the job: %v", got)
	}
	wantEnv := []string{"PATH=" + defaultPath, "HOME=/tmp", "TERM=dumb", "EXTRA=1"}
	if got := f["env"]; !slices.Equal(got, wantEnv) {
		t.Errorf("environment %q, want %q", got, wantEnv)
	}
	if got := f["cwd"]; !slices.Equal(got, []string{"/"}) {
		t.Errorf("working directory %v, want /", got)
	}
}

// TestJobDoesNotInheritServerFDs: the command holds stdin, stdout and stderr, none of the init's
// control pipes and none of the fds the server itself inherited without O_CLOEXEC (os/exec passes
// those on: this caught a shell's stray fds 10 and 251 showing up in every job). Read from the host,
// so that nothing a probe opens gets counted.
func TestJobDoesNotInheritServerFDs(t *testing.T) {
	// Opened before the server, so that its spare inits inherit it too.
	leaky, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0) // no O_CLOEXEC, like an inherited fd
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leaky)
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sleep", "1000"))
	defer a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	pids := jobPIDs(t, ts.cg.parent, id)
	if len(pids) != 1 {
		t.Fatalf("job cgroup holds %v, want just the command", pids)
	}
	// Until sleep sleeps, the dynamic loader may hold a library open: wait for the sleeping syscall
	// (clock_nanosleep, 230 on amd64; proc(5) /proc/pid/syscall).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pids[0]))
		if f := strings.Fields(string(sc)); len(f) > 0 && (f[0] == "230" || f[0] == "35") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep never went to sleep: /proc/%d/syscall says %q", pids[0], sc)
		}
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range entries {
		fds = append(fds, e.Name())
	}
	if !slices.Equal(fds, []string{"0", "1", "2"}) {
		t.Errorf("command fds %v, want 0 1 2", fds)
	}
	if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pids[0])); target != os.DevNull {
		t.Errorf("stdin is %s, want %s", target, os.DevNull)
	}
}

// TestMountInsideJobIsInvisibleOnHost: with -unsafe_uncontained_jobs a job may mount (as host root), and
// its mounts stay in its mount namespace. (A contained job may not mount at all: contain_test.go.)
func TestMountInsideJobIsInvisibleOnHost(t *testing.T) {
	ts := startServer(t, uncontained)
	a := ts.dialAs(t, "a")
	dir := t.TempDir()
	id := startJob(t, a, cmd("sh", "-c", fmt.Sprintf("mount -t tmpfs tmpfs %s && touch %s/inside && ls %s", dir, dir, dir)))
	out, errs := readAll(t, a, id)
	if st := waitDone(t, a, id); st.GetExitCode().GetValue() != 0 || out != "inside\n" {
		t.Fatalf("mount inside the job failed: %q %q %v", out, errs, st)
	}
	if _, err := os.Stat(filepath.Join(dir, "inside")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file in the job's tmpfs is visible on the host: %v", err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(dir)) {
		t.Errorf("the job's mount shows in the host's mountinfo")
	}
}

func TestExecFailures(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	notExec := filepath.Join(jobTempDir(t), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644)
	for _, tc := range []struct {
		name string
		req  *rpcpb.JobStartRequest
		code codes.Code
		msg  string
	}{
		{"missing", cmd("rund-no-such-command"), codes.NotFound, "not found in the job's PATH"},
		{"missing path", cmd("/no/such/binary"), codes.NotFound, "no such file"},
		{"not executable", cmd(notExec), codes.PermissionDenied, "permission denied"},
		{"directory", cmd("/tmp"), codes.PermissionDenied, "permission denied"},
		{"missing dir", &rpcpb.JobStartRequest{Name: "true", Dir: "/no/such/dir"}, codes.InvalidArgument, "working directory"},
		{"file as dir", &rpcpb.JobStartRequest{Name: "true", Dir: "/etc/passwd"}, codes.InvalidArgument, "not a directory"},
		{"relative dir", &rpcpb.JobStartRequest{Name: "true", Dir: "tmp"}, codes.InvalidArgument, "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Start(ctx(t), tc.req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			assertNoJobCgroups(t, ts.cg.parent, ts.m)
			if l, _ := a.List(ctx(t), &rpcpb.ListRequest{}); len(l.GetJobs()) != 0 {
				t.Errorf("a failed start left a job: %v", l.Jobs)
			}
		})
	}
}

func TestUnavailableControllerIsFailedPrecondition(t *testing.T) {
	// No spares: the test changes the controllers under the server, and a spare is made with them.
	ts := startServer(t, func(c *serveConfig) { c.spareInits = 0 })
	a := ts.dialAs(t, "a")
	ts.cg.available = map[string]bool{} // as on a host whose cgroup v1 holds every controller
	for _, tc := range []struct {
		ctrl string
		req  *rpcpb.JobStartRequest
	}{
		{"cpu", &rpcpb.JobStartRequest{Name: "true", MaxCpuBandwidth: wrapperspb.UInt32(50000)}},
		{"memory", &rpcpb.JobStartRequest{Name: "true", MaxMemoryUsage: wrapperspb.UInt64(10 << 20)}},
		{"pids", &rpcpb.JobStartRequest{Name: "true", MaxPids: wrapperspb.UInt64(10)}},
		{"io", &rpcpb.JobStartRequest{Name: "true", MaxRbps: wrapperspb.UInt64(1 << 20)}},
	} {
		_, err := a.Start(ctx(t), tc.req)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "controller "+tc.ctrl) {
			t.Errorf("%s limit: got %v, want FailedPrecondition naming %s", tc.ctrl, err, tc.ctrl)
		}
	}
	// Every missing controller is named at once.
	_, err := a.Start(ctx(t), &rpcpb.JobStartRequest{Name: "true", MaxCpuBandwidth: wrapperspb.UInt32(50000),
		MaxMemoryUsage: wrapperspb.UInt64(10 << 20), MaxPids: wrapperspb.UInt64(10), MaxWiops: wrapperspb.UInt64(10)})
	for _, c := range []string{"cpu", "io", "memory", "pids"} {
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "controller "+c) {
			t.Errorf("all four limits: %v, want FailedPrecondition naming controller %s", err, c)
		}
	}
	assertNoJobCgroups(t, ts.cg.parent, ts.m)
	// Without limits a job runs anyway.
	if st := waitDone(t, a, startJob(t, a, cmd("true"))); st.GetExitCode().GetValue() != 0 {
		t.Errorf("job without limits: %v", st)
	}
}

// waitOutput reads a job's log until want has appeared: the job has reached that point.
func waitOutput(t testing.TB, c rpcpb.JobControllerClient, id, want string) {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx(t))
	defer cancel()                                              // the stream ends here: open, it would count against the client's requests in flight
	stream, err := c.ReadLog(sctx, &rpcpb.LogRequest{Ulid: id}) // lossy: it never holds the job back
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for !bytes.Contains(got, []byte(want)) {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("job %s ended its log before printing %q (got %q): %v", id, want, got, err)
		}
		got = append(got, msg.Stdout...)
	}
}

func TestStopTreeIgnoringSIGTERM(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	grace := 300 * time.Millisecond
	req := cmd("sh", "-c", `trap "" TERM; sleep 1000 & sleep 1000 & echo ready; wait`)
	req.StopGracePeriod = durationpb.New(grace)
	id := startJob(t, a, req)
	waitOutput(t, a, id, "ready")
	begin := time.Now()
	st, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Stop returned after %v, before the %v grace period", took, grace)
	}
	if st.State != rpcpb.JobStatus_STATE_STOPPED || !st.Stopped || !st.Killed || st.GetSignal().GetValue() != uint32(syscall.SIGKILL) {
		t.Errorf("final status %v, want stopped by SIGKILL", st)
	}
	if _, err := os.Stat(filepath.Join(ts.cg.parent, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("job cgroup still there after Stop returned: %v", err)
	}
}

// TestStopReachesEveryProcess: Stop sends SIGTERM to every process of the job, not the top command
// alone, and gives them all the grace period (issue 25): the inner shell's trap runs its cleanup after
// the outer shell, which has none, has died; a process that ignores SIGTERM is killed at its end.
func TestStopReachesEveryProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []serverOpt
	}{{"contained", nil}, {"uncontained", []serverOpt{uncontained}}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.opts...)
			a := ts.dialAs(t, "a")
			inner := `trap "sleep 0.3; echo cleanup; exit 3" TERM; echo ready; while :; do sleep 0.05; done`
			req := cmd("sh", "-c", `sh -c '`+inner+`'; echo outer-after-inner`)
			req.StopGracePeriod = durationpb.New(10 * time.Second)
			id := startJob(t, a, req)
			waitOutput(t, a, id, "ready")
			st, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
			if err != nil {
				t.Fatal(err)
			}
			out, _ := readAll(t, a, id)
			if !strings.Contains(out, "cleanup") || strings.Contains(out, "outer-after-inner") {
				t.Errorf("output %q: want the inner trap's cleanup, and the outer shell killed by SIGTERM", out)
			}
			if st.GetSignal().GetValue() != uint32(syscall.SIGTERM) {
				t.Errorf("final status %v, want the outer shell ended by SIGTERM", st)
			}
			if d := st.EndTime.AsTime().Sub(st.StartTime.AsTime()); d >= 10*time.Second {
				t.Errorf("the job took the whole grace period (%v): something was left to kill", d)
			}

			// A child that ignores SIGTERM outlives its parent's SIGTERM; the job ends at the grace period.
			grace := 300 * time.Millisecond
			req = cmd("sh", "-c", `(trap "" TERM; echo ready; sleep 1000) & wait`)
			req.StopGracePeriod = durationpb.New(grace)
			id = startJob(t, a, req)
			waitOutput(t, a, id, "ready")
			begin := time.Now()
			st, err = a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(begin); took < grace {
				t.Errorf("Stop returned after %v, before the %v grace period: the child was not waited for", took, grace)
			}

			if st.GetSignal().GetValue() != uint32(syscall.SIGTERM) {
				t.Errorf("final status %v, want the top shell's own SIGTERM, not the child's SIGKILL", st)
			}
			if _, err := os.Stat(filepath.Join(ts.cg.parent, id)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("job cgroup still there after Stop returned: %v", err)
			}
		})
	}
}

func TestStopWithSIGTERM(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sleep", "1000")) // installs no handler: PID 1 would ignore SIGTERM
	st, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != rpcpb.JobStatus_STATE_STOPPED || st.GetSignal().GetValue() != uint32(syscall.SIGTERM) {
		t.Errorf("final status %v, want stopped by SIGTERM", st)
	}
	if d := st.EndTime.AsTime().Sub(st.StartTime.AsTime()); d >= defaultGrace {
		t.Errorf("SIGTERM did not end the job; it took %v", d)
	}
	// Stop of a finished job returns the same final status.
	again, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil || again.State != st.State || !again.EndTime.AsTime().Equal(st.EndTime.AsTime()) {
		t.Errorf("second Stop: %v %v", again, err)
	}
}

func TestStopOfFinishedJobKeepsItsState(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("true"))
	waitDone(t, a, id)
	st, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil || st.State != rpcpb.JobStatus_STATE_EXITED || st.Stopped {
		t.Errorf("Stop of an exited job: %v %v, want state EXITED, not stopped", st, err)
	}
}

// TestOrphansDoNotHoldTheJob: the command exits while its children (which hold the output pipes)
// live on; the job ends with the command, its orphans are killed and its log still ends.
func TestOrphansDoNotHoldTheJob(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "sleep 1000 & sleep 1000 & echo parent done"))
	st := waitDone(t, a, id)
	if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
		t.Errorf("status %v", st)
	}
	if d := st.EndTime.AsTime().Sub(st.StartTime.AsTime()); d > 10*time.Second {
		t.Errorf("job took %v: its orphans kept it alive", d)
	}
}

// TestOrphanReaping: a grandchild orphaned inside the job is reaped by the job's PID 1, not left a zombie.
func TestOrphanReaping(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	// The subshell exits at once, orphaning its "true" child, which exits and must be reaped by PID 1.
	script := `(true & exit 0); sleep 0.5; if grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null; then echo zombie; else echo clean; fi`
	id := startJob(t, a, cmd("sh", "-c", script))
	out, _ := readAll(t, a, id)
	if out != "clean\n" {
		t.Errorf("job saw zombies: %q", out)
	}
}

func TestConcurrentStarts(t *testing.T) {
	ts := startServer(t)
	clients := []rpcpb.JobControllerClient{ts.dialAs(t, "a"), ts.dialAs(t, "b")}
	const n = 20
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := clients[i%2].Start(ctx(t), cmd("sh", "-c", "echo "+strconv.Itoa(i)))
			ids[i], errs[i] = id.GetUlid(), err
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if seen[ids[i]] {
			t.Fatalf("duplicate id %s", ids[i])
		}
		seen[ids[i]] = true
		if out, _ := readAll(t, clients[i%2], ids[i]); out != strconv.Itoa(i)+"\n" {
			t.Errorf("job %d printed %q", i, out)
		}
	}
}

func TestLogGapAndResume(t *testing.T) {
	ring := 2 * maxChunk
	ts := startServer(t, func(c *serveConfig) { c.ringSize = ring })
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("seq", "1", "100000"))
	waitDone(t, a, id)
	want, _ := exec.Command("seq", "1", "100000").Output()

	read := func(off uint64) (data []byte, first *rpcpb.JobLog) {
		stream, err := a.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id, Offset: off, NoFollow: true})
		if err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return data, first
			}
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = msg
			} else if msg.Lost != 0 || msg.Offset != first.Offset+uint64(len(data)) {
				t.Fatalf("chunk at %d lost %d after %d contiguous bytes from %d", msg.Offset, msg.Lost, len(data), first.Offset)
			}
			if len(msg.Stdout) > maxChunk {
				t.Fatalf("chunk of %d bytes, over %d", len(msg.Stdout), maxChunk)
			}
			data = append(data, msg.Stdout...)
		}
	}
	data, first := read(0)
	head := uint64(len(want) - ring)
	if first.Offset != head || first.Lost != head || !bytes.Equal(data, want[head:]) {
		t.Fatalf("from 0: first chunk at %d lost %d, got %d bytes; want at %d lost %d and the last %d bytes",
			first.Offset, first.Lost, len(data), head, head, ring)
	}
	// Resume from inside the held window: exactly the continuation, nothing lost or repeated.
	resume := head + 12345
	data, first = read(resume)
	if first.Offset != resume || first.Lost != 0 || !bytes.Equal(data, want[resume:]) {
		t.Errorf("resume at %d: first chunk at %d lost %d, %d bytes", resume, first.Offset, first.Lost, len(data))
	}
	// At the end: nothing; beyond it: OutOfRange.
	if data, _ := read(uint64(len(want))); len(data) != 0 {
		t.Errorf("read at the end returned %d bytes", len(data))
	}
	stream, _ := a.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id, Offset: uint64(len(want)) + 1})
	if _, err := stream.Recv(); status.Code(err) != codes.OutOfRange {
		t.Errorf("offset beyond the end: %v, want OutOfRange", err)
	}
}

// TestLiveFollowers: many readers follow one job live and all see all of its output in order.
func TestLiveFollowers(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "read x; seq 1 2000; echo done >&2"))
	// The job waits for stdin, which is /dev/null: read returns at once. The followers may attach
	// before or after the output; either way they must see all of it.
	want, _ := exec.Command("seq", "1", "2000").Output()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errs := readAll(t, a, id)
			if out != string(want) || errs != "done\n" {
				t.Errorf("follower got %d stdout bytes, stderr %q", len(out), errs)
			}
		}()
	}
	wg.Wait()
}

func TestListAndRetention(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.retainJobs = 2 })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	var aIDs []string
	for i := range 4 {
		aIDs = append(aIDs, startJob(t, a, cmd("sh", "-c", "exit "+strconv.Itoa(i))))
		waitDone(t, a, aIDs[i])
	}
	bID := startJob(t, b, cmd("true"))
	waitDone(t, b, bID)
	ids := func(c rpcpb.JobControllerClient) []string {
		l, err := c.List(ctx(t), &rpcpb.ListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, j := range l.Jobs {
			got = append(got, j.Ulid)
		}
		return got
	}
	// Retention is per client: a keeps its 2 newest, and a's 4 jobs do not push out b's one.
	if got := ids(a); !slices.Equal(got, aIDs[2:]) {
		t.Errorf("a lists %v, want %v", got, aIDs[2:])
	}
	if got := ids(b); !slices.Equal(got, []string{bID}) {
		t.Errorf("b lists %v, want its own job %s", got, bID)
	}
	if _, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: aIDs[0]}); status.Code(err) != codes.NotFound {
		t.Errorf("evicted job: %v, want NotFound", err)
	}
}

// TestStopEscalatesAfterCallerGivesUp: a Stop whose caller leaves before the grace period ends still
// kills a job that ignores SIGTERM (the review found the SIGKILL was tied to the caller).
func TestStopEscalatesAfterCallerGivesUp(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	req := cmd("sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`)
	req.StopGracePeriod = durationpb.New(500 * time.Millisecond)
	id := startJob(t, a, req)
	waitOutput(t, a, id, "ready")
	short, cancel := context.WithTimeout(ctx(t), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Stop(short, &rpcpb.JobIdentifier{Ulid: id}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Stop with a 50 ms deadline: %v", err)
	}
	st := waitDone(t, a, id)
	if st.State != rpcpb.JobStatus_STATE_STOPPED || st.GetSignal().GetValue() != uint32(syscall.SIGKILL) {
		t.Errorf("final status %v, want stopped by SIGKILL", st)
	}
}

// TestStatusCommandIsBounded: a long command line is cut in Status and List, so listing many such jobs
// stays small.
func TestStatusCommandIsBounded(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	args := []string{"-c", "exit 0"}
	for range 100 {
		args = append(args, strings.Repeat("y", 100))
	}
	st := waitDone(t, a, startJob(t, a, cmd("sh", args...)))
	n := 0
	for _, s := range st.Command {
		n += len(s)
	}
	if n > 1100 || st.Command[0] != "sh" || !strings.HasPrefix(st.Command[len(st.Command)-1], "... (") {
		t.Errorf("status command of %d bytes in %d strings, ending %q", n, len(st.Command), st.Command[len(st.Command)-1])
	}
}

// subprocessParent is the cgroup parent for a server run by serverProcess, removed at cleanup. It
// skips the test without root.
func subprocessParent(t *testing.T, tag string) string {
	t.Helper()
	requireRoot(t)
	mount, _ := findCgroup2Mount("/proc/self/mountinfo")
	parent := filepath.Join(mount, fmt.Sprintf("rund-test-%d-%s", os.Getpid(), tag))
	t.Cleanup(func() { rmdirRetry(parent) })
	return parent
}

// serverProcess runs this test binary as "rund serve" (after the words of pre: "filtered", say) and
// returns once it is serving, with its address and a channel of the lines it logs from then on.
func serverProcess(t *testing.T, pki *testPKI, parent string, pre ...string) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	return serverProcessOf(t, os.Args[0], pki, parent, pre...)
}

// serverProcessOf is serverProcess with the binary exe as rund.
func serverProcessOf(t *testing.T, exe string, pki *testPKI, parent string, pre ...string) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	return startServerProcess(t, serveCommand(exe, pki, parent, pre, nil))
}

// serverProcessFlags is serverProcessOf with flags for rund serve after its own (where a flag is given
// twice, the last one counts).
func serverProcessFlags(t *testing.T, exe string, pki *testPKI, parent string, pre, flags []string) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	return startServerProcess(t, serveCommand(exe, pki, parent, pre, flags))
}

// serveCommand is the command serverProcessFlags runs.
func serveCommand(exe string, pki *testPKI, parent string, pre, flags []string) *exec.Cmd {
	// 64 MiB of /tmp a job, as the in-process servers give: with the default 256 MiB, a host without the
	// memory controller would run only -job_tmp_total / 256 MiB of them at once.
	return exec.Command(exe, slices.Concat(pre, []string{"serve", "-addr", "127.0.0.1:0", "-cgroup", parent,
		"-ca", pki.file("ca.crt"), "-cert", pki.file("server.crt"), "-key", pki.file("server.key"),
		"-job_tmp_size", "67108864"}, flags)...)
}

// startServerProcess starts c, a serveCommand, and returns as serverProcess does.
func startServerProcess(t *testing.T, c *exec.Cmd) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "rund serving on "); ok {
			lines := make(chan string, 100)
			go func() {
				defer close(lines)
				for sc.Scan() {
					select {
					case lines <- sc.Text():
					default: // nobody listens: drop, never block the server's stderr
					}
				}
			}()
			return c, strings.TrimSuffix(strings.Fields(rest)[0], ";"), lines
		}
	}
	c.Wait()
	t.Fatalf("server exited before serving")
	return nil, "", nil
}

func jobPIDs(t testing.TB, parent, id string) []int {
	data, err := os.ReadFile(filepath.Join(parent, id, "job", "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	return pids
}

func TestCrashedServerLeavesNothingAfterRestart(t *testing.T) {
	parent := subprocessParent(t, "crash")
	pki := newTestPKI(t)
	srv, addr, _ := serverProcess(t, pki, parent)
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; exec sleep 1000"))
	waitOutput(t, a, id, "ready")
	pids := jobPIDs(t, parent, id)
	srv.Process.Kill()
	srv.Wait()
	// The lifeline: the job's init, and the spare's waiting for its command, see the server's end of
	// their config pipe close; the job ends and the spare too.
	if err := waitEmpty(ctx(t), parent); err != nil {
		t.Fatalf("job or spare processes outlived the crashed server: %v", err)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("job process %d still exists", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, id)); err != nil {
		t.Fatalf("expected the crashed server's job cgroup to remain until restart: %v", err)
	}
	// The crashed server's job and its spare sandbox: both cgroups stay until a restart removes them.
	var left []os.DirEntry
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if e.IsDir() {
			left = append(left, e)
		}
	}
	if len(left) < 2 {
		t.Errorf("after the crash %d cgroups are left, want the job's and the spare's", len(left))
	}
	srv2, _, _ := serverProcess(t, pki, parent)
	for _, e := range left { // removed before it started serving
		if _, err := os.Stat(filepath.Join(parent, e.Name())); err == nil {
			t.Errorf("cgroup %s of the crashed server outlived the restart", e.Name())
		}
	}
	srv2.Process.Signal(syscall.SIGTERM)
	srv2.Wait()
}

// TestSpareSandboxes: the server keeps -spare_inits sandboxes, each an init that waits for its
// command; a Start takes the oldest (the job gets its id) and its command runs at the server's own
// scheduling policy.
func TestSpareSandboxes(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	spares := readySpares(t, ts.m)
	for _, sb := range spares {
		if got := jobPIDs(t, ts.cg.parent, sb.id); len(got) != 0 {
			t.Errorf("spare %s already has processes %v in job/", sb.id, got)
		}
	}
	id := startJob(t, a, cmd("sleep", "1000"))
	defer a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if id != spares[0].id {
		t.Errorf("job %s, want it in the oldest spare, %s", id, spares[0].id)
	}
	want := schedPolicy(t, 0)
	for _, tid := range append(threadIDs(t, spares[0].proc.cmd.Process.Pid), jobPIDs(t, ts.cg.parent, id)...) {
		if p := schedPolicy(t, tid); p != want {
			t.Errorf("thread %d of the job or its init has policy %d, want the server's %d", tid, p, want)
		}
	}
}

func threadIDs(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range entries {
		tid, _ := strconv.Atoi(e.Name())
		tids = append(tids, tid)
	}
	return tids
}

func schedPolicy(t *testing.T, tid int) uint32 {
	t.Helper()
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatalf("sched_getattr %d: %v", tid, err)
	}
	return attr.Policy
}

// readySpares waits (bounded) until m holds all its spares and returns them.
func readySpares(t *testing.T, m *manager) []*sandbox {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		m.pool.mu.Lock()
		spares := slices.Clone(m.pool.spares)
		m.pool.mu.Unlock()
		if len(spares) == m.cfg.spareInits {
			return spares
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spares ready after 10 s, want %d", len(spares), m.cfg.spareInits)
		}
	}
}

// TestDeadSpareTakesNext: spares whose init died while they waited (the OOM killer, an operator) fail
// no Start: the Start discards each and runs in the next sandbox, a fresh one once the spares are
// used up, and the dead ones' cgroups are gone.
func TestDeadSpareTakesNext(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	dead := readySpares(t, ts.m)
	for _, sb := range dead {
		killAndWaitExit(t, sb.proc.cmd.Process.Pid)
	}
	id := startJob(t, a, cmd("echo", "ran"))
	if out, _ := readAll(t, a, id); out != "ran\n" {
		t.Errorf("job %s printed %q, want \"ran\\n\"", id, out)
	}
	for _, sb := range dead {
		if id == sb.id {
			t.Errorf("job %s ran in a dead spare", id)
		}
		if _, err := os.Stat(filepath.Join(ts.cg.parent, sb.id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the dead spare %s's cgroup is still there: %v", sb.id, err)
		}
	}
}

// killAndWaitExit SIGKILLs pid, a child of this process, and returns once it has exited (a zombie:
// it holds no file any more), which its pidfd tells (pidfd_open(2): readable once the process exits).
func killAndWaitExit(t testing.TB, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			t.Fatalf("wait for %d to exit: %d ready, %v", pid, n, err)
		}
		return
	}
}

// TestSlotFreeWhenJobEnds: a client at its job bound may start its next job as soon as it has seen the
// last one end (log EOF), though rund's own cleanup of that job goes on a moment longer.
func TestSlotFreeWhenJobEnds(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.maxJobsPerClient = 1 })
	a := ts.dialAs(t, "a")
	for range 20 {
		id := startJob(t, a, cmd("true"))
		readAll(t, a, id)
	}
}

// TestSecondServerOnParentIsRefused: a second server on the same cgroup parent exits non-zero at once,
// naming the first one's pid, and touches nothing of the first server's: its job runs on, and its
// spares still serve Starts.
func TestSecondServerOnParentIsRefused(t *testing.T) {
	parent := subprocessParent(t, "second")
	pki := newTestPKI(t)
	srv, addr, _ := serverProcess(t, pki, parent)
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; exec sleep 1000"))
	waitOutput(t, a, id, "ready")
	before, _ := os.ReadDir(parent)

	second := exec.Command(os.Args[0], "serve", "-addr", "127.0.0.1:0", "-cgroup", parent,
		"-ca", pki.file("ca.crt"), "-cert", pki.file("server.crt"), "-key", pki.file("server.key"))
	out, err := second.CombinedOutput()
	want := fmt.Sprintf("another rund serves jobs in %s", parent)
	if code := second.ProcessState.ExitCode(); err == nil || code == 0 || !strings.Contains(string(out), want) {
		t.Errorf("second server: exit %d, output %q; want non-zero and %q", code, out, want)
	}
	for _, e := range before { // the first server's job and spares (it may have made more since)
		if _, err := os.Stat(filepath.Join(parent, e.Name())); e.IsDir() && err != nil {
			t.Errorf("cgroup %s of the first server is gone after the second one started: %v", e.Name(), err)
		}
	}
	if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
		t.Errorf("the first server's job after the second server: %v, %v; want it running", st, err)
	}
	if st := waitDone(t, a, startJob(t, a, cmd("true"))); st.GetExitCode().GetValue() != 0 {
		t.Errorf("a new job on the first server: %v", st)
	}
	a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
}

// TestStatusDuringPassingReadError: a Status whose usage read fails for a passing reason (EMFILE here,
// every fd taken) answers at once with the job running, instead of waiting for the job to end.
func TestStatusDuringPassingReadError(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sleep", "1000"))
	defer a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if _, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil { // connection up, usage known
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	short := lim
	short.Cur = 0 // no new fd for anyone in this process, the server included
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &short); err != nil {
		t.Fatal(err)
	}
	// Before the fix this Status waited for the job's end, here 1000 s: the bound only tells the two apart.
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	st, err := a.Status(c, &rpcpb.JobIdentifier{Ulid: id})
	cancel()
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
		t.Errorf("Status with no fd to spare: %v, %v; want RUNNING at once", st, err)
	}
}

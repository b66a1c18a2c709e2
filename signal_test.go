package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

// TestSignal: the Signal RPC reaches the job's command (its trap runs), by name or number, for the
// owner only; an unknown signal and a finished job are refused and change nothing.
func TestSignal(t *testing.T) {
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	id := startJob(t, a, cmd("sh", "-c", `trap 'echo got-usr1' USR1; trap 'echo got-hup; exit 5' HUP; echo ready; while :; do sleep 0.05; done`))
	waitOutput(t, a, id, "ready")
	signal := func(c rpcpb.JobControllerClient, id, sig string) error {
		_, err := c.Signal(ctx(t), &rpcpb.SignalRequest{Ulid: id, Signal: sig})
		return err
	}
	for _, tc := range []struct {
		name string
		c    rpcpb.JobControllerClient
		sig  string
		code codes.Code
	}{
		{"another client's job", b, "USR1", codes.NotFound},
		{"unknown name", a, "SIGFOO", codes.InvalidArgument},
		{"not a job signal", a, "SEGV", codes.InvalidArgument},
		{"number out of range", a, "99999", codes.InvalidArgument},
		{"empty", a, "", codes.InvalidArgument},
	} {
		if err := signal(tc.c, id, tc.sig); status.Code(err) != tc.code {
			t.Errorf("%s (%q): %v, want %v", tc.name, tc.sig, err, tc.code)
		}
	}
	if err := signal(a, id, "usr1"); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, a, id, "got-usr1")
	if err := signal(a, id, "1"); err != nil { // SIGHUP by number
		t.Fatal(err)
	}
	st := waitDone(t, a, id)
	if out, _ := readAll(t, a, id); st.GetExitCode().GetValue() != 5 || strings.Count(out, "got-usr1") != 1 || !strings.Contains(out, "got-hup") {
		t.Errorf("after USR1 and HUP: %v, output %q; want exit 5, one got-usr1 and got-hup", st, out)
	}
	if err := signal(a, id, "TERM"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("signal to a finished job: %v, want FailedPrecondition", err)
	}
	kid := startJob(t, a, cmd("sh", "-c", `trap '' TERM; echo ready; sleep 1000`))
	waitOutput(t, a, kid, "ready")
	if err := signal(a, kid, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, a, kid); st.GetSignal().GetValue() != uint32(syscall.SIGKILL) || st.State != rpcpb.JobStatus_STATE_SIGNALED {
		t.Errorf("after SIGKILL: %v, want SIGNALED by 9", st)
	}
}

// TestRunForwardsCtrlC: SIGINT to `rund client run` reaches the job, whose trap runs; run keeps
// streaming until the job ends and exits with its code, having said on stderr which job it was.
func TestRunForwardsCtrlC(t *testing.T) {
	ts := startServer(t)
	run := clientRunCmd(ts, `trap 'echo trapped; exit 7' INT; echo ready; while :; do sleep 0.05; done`)
	stdout, _ := run.StdoutPipe()
	var stderr strings.Builder
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "ready" {
			run.Process.Signal(syscall.SIGINT)
		}
	}
	run.Wait()
	if code := run.ProcessState.ExitCode(); code != 7 || strings.Join(lines, ",") != "ready,trapped" ||
		!strings.Contains(stderr.String(), "sending it SIGINT") {
		t.Errorf("run interrupted: exit %d, stdout %q, stderr %q; want 7, ready and trapped, and the job named", code, lines, stderr.String())
	}
}

// TestRunStopsOnSecondCtrlC: a second SIGINT within 2 s makes `rund client run` stop the job, whose
// command ignores SIGINT; run exits as the job did (SIGTERM: 143).
func TestRunStopsOnSecondCtrlC(t *testing.T) {
	ts := startServer(t)
	run := clientRunCmd(ts, `trap '' INT; echo ready; while :; do sleep 0.05; done`)
	stdout, _ := run.StdoutPipe()
	stderr, _ := run.StderrPipe()
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	var said []string
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if sc.Text() != "ready" {
			continue
		}
		// Two SIGINTs sent at once would merge into one pending signal: the second goes once run has
		// handled the first.
		run.Process.Signal(syscall.SIGINT)
		for l := range lines {
			if said = append(said, l); strings.Contains(l, "sending it SIGINT") {
				break
			}
		}
		run.Process.Signal(syscall.SIGINT)
	}
	for l := range lines {
		said = append(said, l)
	}
	run.Wait()
	if code := run.ProcessState.ExitCode(); code != 128+15 || !strings.Contains(strings.Join(said, "\n"), "stopping it") {
		t.Errorf("run after two Ctrl-C: exit %d, stderr %q; want 143 and the job stopped", code, said)
	}
}

// clientRunCmd is `rund client run -- sh -c script` as client a of ts, in a process of its own (this
// test binary), so that signals can be sent to it.
func clientRunCmd(ts *testServer, script string) *exec.Cmd {
	return exec.Command(os.Args[0], "client", "run", "-addr", ts.addr, "-ca", ts.pki.file("ca.crt"),
		"-cert", ts.pki.file("a.crt"), "-key", ts.pki.file("a.key"), "--", "sh", "-c", script)
}

// TestCtrlCReachesOnlyTheServer: a Ctrl-C of rund serve in the foreground, SIGINT to its process group,
// reaches the server alone, which stops its jobs as it does on SIGTERM: a job's TERM trap runs, and the
// job ends with the trap's exit code. Each job's init is in a session of its own (spawn.go); in the
// server's group, the SIGINT would end the init, which has no handler for it, and the job with it.
func TestCtrlCReachesOnlyTheServer(t *testing.T) {
	parent := subprocessParent(t, "ctrlc")
	pki := newTestPKI(t)
	c := serveCommand(os.Args[0], pki, parent, nil, nil)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a group of its own, as a shell makes for a job
	srv, addr, lines := startServerProcess(t, c)
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"))
	waitOutput(t, a, id, "ready")
	if err := syscall.Kill(-srv.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("server exit after SIGINT: %v, want 0", err)
	}
	var end string
	for line := range lines { // closed once the server's stderr is
		if strings.Contains(line, "job ended") && strings.Contains(line, id) {
			end = line
		}
	}
	if !strings.Contains(end, "exit_code=7") {
		t.Errorf("the job's end after a SIGINT to the server's group: %q, want exit_code=7 (its TERM trap)", end)
	}
}

// TestOrdersAllocateNothing: the init never collects (GOGC=off), and a client may send a job as many
// Signals as it likes; each order is one byte read without allocating, so 100,000 of them leave the
// init's memory as it was. (Orders that allocated 16 bytes each would add over 1.5 MB.)
func TestOrdersAllocateNothing(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done"))
	waitOutput(t, a, id, "ready")
	j, err := ts.m.get(id, []string{"dns:a"})
	if err != nil {
		t.Fatal(err)
	}
	rss := func() int {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", j.proc.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		var kb int
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				fmt.Sscan(v, &kb)
			}
		}
		return kb
	}
	before := rss()
	for range 100000 {
		if err := j.proc.signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	// The init takes its orders in turn: once the last one's trap has run, it has read them all.
	if err := j.proc.signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, a, id, "got-usr1")
	if after := rss(); after-before > 256 {
		t.Errorf("the init's RSS grew from %d to %d KiB over 100,000 orders; want it as it was", before, after)
	}
}

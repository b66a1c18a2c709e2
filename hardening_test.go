package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

func TestPerClientJobBounds(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.maxJobsPerClient, c.maxJobs = 2, 3 })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	stop := func(c rpcpb.JobControllerClient, id string) {
		if _, err := c.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil {
			t.Fatal(err)
		}
	}
	a1, a2 := startJob(t, a, cmd("sleep", "1000")), startJob(t, a, cmd("sleep", "1000"))
	_, err := a.Start(ctx(t), cmd("sleep", "1000"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "one client") {
		t.Errorf("a's third job: %v, want ResourceExhausted for one client", err)
	}
	b1 := startJob(t, b, cmd("sleep", "1000")) // another client is not held back by a
	_, err = b.Start(ctx(t), cmd("sleep", "1000"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "server") {
		t.Errorf("fourth job on the server: %v, want ResourceExhausted for the server", err)
	}
	stop(a, a1) // a finished job frees its slot
	a3 := startJob(t, a, cmd("sleep", "1000"))
	for _, id := range []string{a2, a3} {
		stop(a, id)
	}
	stop(b, b1)
	assertNoJobCgroups(t, ts.cg.parent, ts.m)
}

// TestPerClientStreamBound: log streams count against a client's requests in flight until they end.
func TestPerClientStreamBound(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.maxInflightPerClient = 2 })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; exec sleep 1000"))
	bid := startJob(t, b, cmd("sleep", "1000"))
	for range 2 {
		waitOutputStream(t, a, id) // each stays open: the job is still running
	}
	stream, err := a.Log(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third stream: %v, want ResourceExhausted", err)
	}
	// b's streams are counted apart from a's.
	bs, err := b.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: bid, NoFollow: true})
	if err == nil {
		_, err = bs.Recv()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("b's stream: %v", err)
	}
	a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	b.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: bid})
}

// waitOutputStream opens a Log stream and returns once it has delivered its first chunk, leaving it open.
func waitOutputStream(t *testing.T, c rpcpb.JobControllerClient, id string) {
	t.Helper()
	stream, err := c.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id}) // lossy: it stays open, unread
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateRotationOnSIGHUP: SIGHUP makes the server read its CA, certificate and key again.
// New connections use the new ones; a running job and an open log stream carry on.
func TestCertificateRotationOnSIGHUP(t *testing.T) {
	parent := subprocessParent(t, "sighup")
	old, rotated := newTestPKI(t), newTestPKI(t) // two CAs
	srv, addr, lines := serverProcess(t, old, parent)
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()

	oldServer := &testServer{addr: addr, pki: old}
	a := oldServer.dialAs(t, "a")
	flag := filepath.Join(jobTempDir(t), "go-on")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; while [ ! -e "+flag+" ]; do sleep 0.05; done; echo after"))
	stream, err := a.Log(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || string(msg.Stdout) != "ready\n" {
		t.Fatalf("before rotation: %q %v", msg.GetStdout(), err)
	}

	for _, f := range []string{"ca.crt", "server.crt", "server.key"} {
		data, _ := os.ReadFile(rotated.file(f))
		if err := os.WriteFile(old.file(f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv.Process.Signal(syscall.SIGHUP)
	for line := range lines {
		if strings.Contains(line, "SIGHUP: reloaded") {
			break
		}
	}

	if _, err := oldServer.dialAs(t, "b").List(ctx(t), &rpcpb.ListRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("a client of the old CA connected after rotation: %v", err)
	}
	l, err := (&testServer{addr: addr, pki: rotated}).dialAs(t, "a").List(ctx(t), &rpcpb.ListRequest{})
	if err != nil || len(l.Jobs) != 1 || l.Jobs[0].Ulid != id {
		t.Errorf("a client of the new CA, same names: %v %v, want the running job", l, err)
	}
	os.WriteFile(flag, nil, 0o644)
	var rest []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the stream opened before rotation broke: %v", err)
		}
		rest = append(rest, msg.Stdout...)
	}
	if string(rest) != "after\n" {
		t.Errorf("stream after rotation got %q", rest)
	}
}

// TestJobsDropServerKeysAndPrivileges: a job runs with no_new_privs and in a session keyring of its
// own: a key the server holds in its session keyring is not found from the job, and no two jobs
// share a keyring.
func TestJobsDropServerKeysAndPrivileges(t *testing.T) {
	key, err := unix.AddKey("user", "rund-test-secret", []byte("server's"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		t.Skipf("this kernel or sandbox gives no session keyring to add a key to: %v", err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_REVOKE, key, 0, 0, 0)
	if _, err := unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", "rund-test-secret", 0); err != nil {
		t.Fatalf("the test's own key is not found from its session keyring: %v", err)
	}
	own, _ := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	// Uncontained, a job has a session keyring of its own; contained, the syscall filter refuses it
	// every key syscall, and it finds the server's key neither way.
	for _, contained := range []bool{false, true} {
		t.Run(fmt.Sprint("contained=", contained), func(t *testing.T) { keysInJobs(t, contained, own) })
	}
}

func keysInJobs(t *testing.T, contained bool, own int) {
	opts := []serverOpt{uncontained}
	if contained {
		opts = nil
	}
	ts := startServer(t, opts...)
	a := ts.dialAs(t, "a")
	rings := map[string]bool{}
	for range 2 {
		out, errs := readAll(t, a, startJob(t, a, selfCmd(t, "keys")))
		f := facts(out)
		ring := strings.Fields(strings.Join(f["session-keyring"], ""))
		okRing := len(ring) > 0 && ring[0] != fmt.Sprint(own) && !rings[ring[0]]
		if contained {
			okRing = strings.Join(f["session-keyring"], "") == "-1 operation not permitted"
		}
		if !okRing || strings.Join(f["server-key-found"], "") != "false" || strings.Join(f["no-new-privs"], "") != "1" {
			t.Errorf("job (contained %v): %q %q; want its own session keyring (not the server's %d) or none, no server key, no_new_privs 1",
				contained, out, errs, own)
		}
		if len(ring) > 0 {
			rings[ring[0]] = true
		}
	}
}

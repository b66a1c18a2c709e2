package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

// TestBadInput: every bad request gets its gRPC code and a readable message, and changes nothing:
// no job, no cgroup (so no process: every job process lives in a job cgroup).
func TestBadInput(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	done := startJob(t, a, cmd("echo", "hi")) // a finished job, for the calls that need one
	waitDone(t, a, done)

	start := func(req *rpcpb.JobStartRequest) func() error {
		return func() error { _, err := a.Start(ctx(t), req); return err }
	}
	lim := func(f func(*rpcpb.JobStartRequest)) func() error {
		req := cmd("true")
		f(req)
		return start(req)
	}
	status := func(id string) func() error {
		return func() error { _, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); return err }
	}
	readLog := func(req *rpcpb.LogRequest) func() error {
		return func() error {
			stream, err := a.ReadLog(ctx(t), req)
			if err == nil {
				_, err = stream.Recv()
			}
			return err
		}
	}
	never := "01ARZ3NDEKTSV4RRFFQ69G5FAV" // valid, never issued
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"empty name", start(&rpcpb.JobStartRequest{}), codes.InvalidArgument, "empty"},
		{"NUL in name", start(cmd("tr\x00ue")), codes.InvalidArgument, "NUL"},
		{"NUL in arg", start(cmd("echo", "a\x00b")), codes.InvalidArgument, "NUL"},
		{"10,000 args", start(cmd("true", make([]string, 10000)...)), codes.InvalidArgument, "at most 1024 args"},
		{"200 KiB arg", start(cmd("echo", strings.Repeat("x", 200<<10))), codes.InvalidArgument, "bytes"},
		{"1 MiB arg, over the gRPC size limit", start(cmd("echo", strings.Repeat("x", 1<<20))), codes.ResourceExhausted, "larger than max"},
		{"env without =", lim(func(r *rpcpb.JobStartRequest) { r.Env = []string{"NOEQUALS"} }), codes.InvalidArgument, "KEY=VALUE"},
		{"env empty key", lim(func(r *rpcpb.JobStartRequest) { r.Env = []string{"=v"} }), codes.InvalidArgument, "KEY=VALUE"},
		{"env with NUL", lim(func(r *rpcpb.JobStartRequest) { r.Env = []string{"A=\x00"} }), codes.InvalidArgument, "NUL"},
		{"relative dir", lim(func(r *rpcpb.JobStartRequest) { r.Dir = "tmp" }), codes.InvalidArgument, "absolute"},
		{"missing dir", lim(func(r *rpcpb.JobStartRequest) { r.Dir = "/no/such/dir" }), codes.InvalidArgument, "no such file"},
		{"cpu 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxCpuBandwidth = wrapperspb.UInt32(0) }), codes.InvalidArgument, "max_cpu_bandwidth is 0"},
		{"cpu below the kernel minimum", lim(func(r *rpcpb.JobStartRequest) { r.MaxCpuBandwidth = wrapperspb.UInt32(999) }), codes.InvalidArgument, "outside 1000.."},
		{"cpu above the host", lim(func(r *rpcpb.JobStartRequest) { r.MaxCpuBandwidth = wrapperspb.UInt32(1 << 31) }), codes.InvalidArgument, "CPUs"},
		{"memory 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxMemoryUsage = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_memory_usage is 0"},
		{"memory below a page", lim(func(r *rpcpb.JobStartRequest) { r.MaxMemoryUsage = wrapperspb.UInt64(100) }), codes.InvalidArgument, "one page"},
		{"memory absurdly high", lim(func(r *rpcpb.JobStartRequest) { r.MaxMemoryUsage = wrapperspb.UInt64(1 << 62) }), codes.InvalidArgument, "this host's memory"},
		{"rbps 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxRbps = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_rbps is 0"},
		{"wbps 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxWbps = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_wbps is 0"},
		{"riops 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxRiops = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_riops is 0"},
		{"wiops 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxWiops = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_wiops is 0"},
		{"pids over the kernel's limit", lim(func(r *rpcpb.JobStartRequest) { r.MaxPids = wrapperspb.UInt64(1<<22 + 1) }), codes.InvalidArgument, "kernel's limit"},
		{"pids 0", lim(func(r *rpcpb.JobStartRequest) { r.MaxPids = wrapperspb.UInt64(0) }), codes.InvalidArgument, "max_pids is 0"},
		{"negative grace", lim(func(r *rpcpb.JobStartRequest) { r.StopGracePeriod = durationpb.New(-time.Second) }), codes.InvalidArgument, "grace"},
		{"zero grace", lim(func(r *rpcpb.JobStartRequest) { r.StopGracePeriod = durationpb.New(0) }), codes.InvalidArgument, "stop grace period 0s: want more than 0, at most 10m0s (or none, for 10s)"},
		{"huge grace", lim(func(r *rpcpb.JobStartRequest) { r.StopGracePeriod = durationpb.New(1000 * time.Hour) }), codes.InvalidArgument, "grace"},
		{"malformed grace", lim(func(r *rpcpb.JobStartRequest) { r.StopGracePeriod = &durationpb.Duration{Seconds: 1, Nanos: -1} }), codes.InvalidArgument, "stop_grace_period"},
		{"command not found", start(cmd("rund-no-such-command")), codes.NotFound, "not found"},
		{"empty id", status(""), codes.InvalidArgument, "want 26 characters"},
		{"lower-case id names the job (ULID spec: case-insensitive)", status(strings.ToLower(done)), codes.OK, ""},
		{"too-long id", status(done + "0"), codes.InvalidArgument, "want 26 characters"},
		{"overflowing id", status("8" + done[1:]), codes.InvalidArgument, "overflows"},
		{"id with U", status("U" + done[1:]), codes.InvalidArgument, "invalid character"},
		{"unknown id", status(never), codes.NotFound, "not found"},
		{"stop of unknown id", func() error { _, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: never}); return err }, codes.NotFound, "not found"},
		{"log of unknown id", readLog(&rpcpb.LogRequest{Ulid: never}), codes.NotFound, "not found"},
		{"log of malformed id", readLog(&rpcpb.LogRequest{Ulid: "x"}), codes.InvalidArgument, "want 26 characters"},
		{"log from an offset in the future", readLog(&rpcpb.LogRequest{Ulid: done, Offset: 1000}), codes.OutOfRange, "beyond"},
		{"log from an offset past int64", readLog(&rpcpb.LogRequest{Ulid: done, Offset: 1 << 63}), codes.OutOfRange, "beyond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if code := grpcCode(err); code != tc.code || !strings.Contains(grpcMessage(err), tc.msg) {
				t.Errorf("got %v: %q, want %v containing %q", code, grpcMessage(err), tc.code, tc.msg)
			}
		})
	}
	assertNoJobCgroups(t, ts.cg.parent, ts.m)
	if l, err := a.List(ctx(t), &rpcpb.ListRequest{}); err != nil || len(l.Jobs) != 1 || l.Jobs[0].Ulid != done {
		t.Errorf("after the bad requests the jobs are %v (%v), want only %s", l.GetJobs(), err, done)
	}
}

func grpcCode(err error) codes.Code { return status.Code(err) }
func grpcMessage(err error) string  { return status.Convert(err).Message() }

// TestGarbageInsteadOfTLS: a peer that sends junk is dropped and the server goes on serving.
func TestGarbageInsteadOfTLS(t *testing.T) {
	ts := startServer(t)
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\x16\x03\x01\xff\xff", 100)))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("the server did not close the connection: %v", err)
	}
	if _, err := ts.dialAs(t, "a").List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Errorf("server after garbage: %v", err)
	}
}

// TestOpenSSLAudit: an outside TLS implementation finds TLS 1.3 only.
func TestOpenSSLAudit(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is missing; .ci/run installs it")
		}
		t.Skip("openssl not installed")
	}
	ts := startServer(t)
	sClient := func(args ...string) (string, error) {
		args = append([]string{"s_client", "-connect", ts.addr, "-CAfile", ts.pki.file("ca.crt"),
			"-cert", ts.pki.file("a.crt"), "-key", ts.pki.file("a.key")}, args...)
		out, err := exec.Command("openssl", args...).CombinedOutput() // stdin is empty: it quits after the handshake
		return string(out), err
	}
	for _, old := range []string{"-tls1", "-tls1_1", "-tls1_2"} {
		if out, err := sClient(old); err == nil || !strings.Contains(out, "Cipher is (NONE)") {
			t.Errorf("openssl s_client %s got a session:\n%s", old, out)
		}
	}
	out, err := sClient("-tls1_3")
	if err != nil || !strings.Contains(out, "New, TLSv1.3, Cipher is TLS_") || !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Errorf("openssl s_client -tls1_3 failed: %v\n%s", err, out)
	}
	if !bytes.Contains([]byte(out), []byte("Server certificate")) {
		t.Errorf("no server certificate in:\n%s", out)
	}
}

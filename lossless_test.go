package main

// Lossless following (issue 11): a reader that asks for every byte gets every byte, the job waiting
// for it; readers that did not ask are never waited for; a lossless reader that stalls is demoted and
// one that goes releases the job at once.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"rund/rpcpb"
)

// smallRing is the smallest ring a server takes: any job here writes many times more than it holds.
const smallRing = maxChunk

// seqOutput is what seq 1 n prints.
func seqOutput(n int) []byte {
	var b []byte
	for i := 1; i <= n; i++ {
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, '\n')
	}
	return b
}

// followAll reads a stream to its end: stdout, and the bytes it was told were lost.
func followAll(stream grpc.ServerStreamingClient[rpcpb.JobLog]) (out []byte, lost uint64, err error) {
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out, lost, nil
		}
		if err != nil {
			return out, lost, err
		}
		out = append(out, msg.Stdout...)
		lost += msg.Lost
	}
}

// TestRunIsByteExact: rund client run of a job that writes 1 GB, 30,000 rings' worth, as fast as it
// can gets every byte, while 10 lossy followers of the same job stall beside it (they are never waited
// for). The client is the plain build of rund that the jobs' inits are (runTests), so that the race
// detector slows only the server.
func TestRunIsByteExact(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.ringSize = smallRing })
	const size = 1_000_000_000
	gate := filepath.Join(jobTempDir(t), "gate")
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	exe := rundExe
	if exe == "" {
		exe = os.Args[0]
	}
	run := exec.CommandContext(c, exe, "client", "run", "-v", "-addr", ts.addr, "-ca", ts.pki.file("ca.crt"),
		"-cert", ts.pki.file("a.crt"), "-key", ts.pki.file("a.key"), "--",
		"sh", "-c", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.01; done; exec head -c %d /dev/zero", gate, size))
	stdout, _ := run.StdoutPipe()
	stderr, _ := run.StderrPipe()
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	errs := bufio.NewReader(stderr)
	first, err := errs.ReadString('\n') // "rund: job ID"
	id := strings.TrimSpace(strings.TrimPrefix(first, "rund: job "))
	if err != nil || len(id) != 26 {
		t.Fatalf("run -v said %q (%v), want the job id first", first, err)
	}
	stalledCtx, cancelStalled := context.WithCancel(context.Background())
	defer cancelStalled()
	for range 10 {
		s, _ := faultDial(t, ts, "a", grpc.WithStaticStreamWindowSize(64<<10))
		if _, err := s.ReadLog(stalledCtx, &rpcpb.LogRequest{Ulid: id}); err != nil {
			t.Fatal(err)
		}
	}
	faultWaitLogHandlers(t, 11) // the 10 stalled followers, and run's own reader (attached once it named the job)
	os.WriteFile(gate, nil, 0o644)
	h := sha256.New()
	n, _ := io.Copy(h, stdout)
	rest, _ := io.ReadAll(errs)
	err = run.Wait()
	zeros := sha256.New()
	io.CopyN(zeros, zeroReader{}, size)
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), zeros.Sum(nil)) || len(rest) != 0 {
		t.Errorf("run of a 1 GB job beside 10 stalled followers: %v, %d bytes, stderr %.300q; want exit 0 and all %d bytes",
			err, n, rest, size)
	}
}

// zeroReader reads zeros, like /dev/zero.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestOriginalLogIsLossless: the original Log RPC, whose clients cannot be told of a loss, gets every
// byte of a 50 MB job it followed from the start.
func TestOriginalLogIsLossless(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.ringSize = smallRing })
	a := ts.dialAs(t, "a")
	const n = 6_500_000 // 50.9 MB
	gate := filepath.Join(jobTempDir(t), "gate")
	id := startJob(t, a, cmd("sh", "-c", fmt.Sprintf("echo ready; while [ ! -e %s ]; do sleep 0.01; done; seq %d", gate, n)))
	stream, err := a.Log(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || string(msg.Stdout) != "ready\n" { // attached
		t.Fatalf("first message %q, %v", msg.GetStdout(), err)
	}
	os.WriteFile(gate, nil, 0o644)
	out, lost, err := followAll(stream)
	if want := seqOutput(n); err != nil || lost != 0 || !bytes.Equal(out, want) {
		t.Errorf("Log: %d bytes, %d lost, %v; want all %d bytes", len(out), lost, err, len(want))
	}
}

// TestStalledLosslessReaderIsDemoted: a lossless reader that reads nothing holds the job back for the
// lossless timeout, then no more: the job finishes, and the reader learns on its next message what
// it lost. The reader attaches, and reads the job's first line, before the job writes the rest: a
// Start's hold_output would give up on its own after the same timeout, before a reader slowed by a
// busy machine had attached.
func TestStalledLosslessReaderIsDemoted(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.ringSize, c.losslessTimeout = smallRing, 300*time.Millisecond })
	a := ts.dialAs(t, "a")
	stalled, _ := faultDial(t, ts, "a", grpc.WithStaticStreamWindowSize(64<<10))
	gate := filepath.Join(jobTempDir(t), "gate")
	id := startJob(t, a, cmd("sh", "-c", fmt.Sprintf("echo ready; while [ ! -e %s ]; do sleep 0.01; done; head -c 10000000 /dev/zero", gate)))
	stream, err := stalled.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id, Lossless: true})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || string(msg.Stdout) != "ready\n" { // attached
		t.Fatalf("first message %q, %v", msg.GetStdout(), err)
	}
	os.WriteFile(gate, nil, 0o644)
	if st := waitDone(t, a, id); st.GetExitCode() == nil || st.GetExitCode().GetValue() != 0 {
		t.Errorf("job behind a stalled lossless reader: %v, want it to finish with exit 0", st)
	}
	msg, err := stream.Recv()
	if err != nil || msg.Offset != 6 {
		t.Fatalf("stalled reader's next message: offset %d, lost %d, %v; want offset 6, right after ready", msg.GetOffset(), msg.GetLost(), err)
	}
	out, lost, err := followAll(stream)
	if got := uint64(len(msg.Stdout)+len(out)) + lost; err != nil || lost == 0 || got != 10000000 {
		t.Errorf("demoted reader: %d bytes and %d lost (%v); want some lost, 10000000 in all", len(msg.Stdout)+len(out), lost, err)
	}
}

// TestCancelledLosslessReaderReleasesJob: with a lossless timeout of an hour, a lossless reader that
// cancels its stream lets the job go on at once.
func TestCancelledLosslessReaderReleasesJob(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.ringSize, c.losslessTimeout = smallRing, time.Hour })
	a := ts.dialAs(t, "a")
	req := cmd("head", "-c", "10000000", "/dev/zero")
	req.HoldOutput = true
	id := startJob(t, a, req)
	c, cancel := context.WithCancel(ctx(t))
	stream, err := a.ReadLog(c, &rpcpb.LogRequest{Ulid: id, Lossless: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if st := waitDone(t, a, id); st.GetExitCode() == nil || st.GetExitCode().GetValue() != 0 {
		t.Errorf("job after its lossless reader cancelled: %v, want it finished with exit 0", st)
	}
}

// TestClientReportsLoss: rund client log says on stderr how many bytes were lost and exits 3, whether
// it asked for -lossy or the bytes were gone before it came.
func TestClientReportsLoss(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.ringSize = smallRing })
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("head", "-c", "1000000", "/dev/zero"))
	waitDone(t, a, id)
	for _, args := range [][]string{{"log", "-lossy", id}, {"log", id}} {
		code, out, errs := ts.runCLI(t, args...)
		lost := fmt.Sprintf("%d bytes of output were lost", 1000000-len(out))
		if code != exitLost || len(out) == 0 || len(out) >= 1000000 || !strings.Contains(errs, lost) {
			t.Errorf("%v: exit %d, %d bytes, stderr %q; want exit %d and %q", args, code, len(out), errs, exitLost, lost)
		}
	}
}

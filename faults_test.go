package main

// faults_test.go: fault injection against a real server on loopback. Output floods with many slow and
// stalled followers, followers whose connection is reset or whose context is cancelled mid-stream, jobs
// that close their output early or leave a grandchild holding it, server SIGTERM with 50 live jobs,
// 1,000 concurrent starts and a paced Status load. Besides its own assertion, every test checks at the
// end that no job cgroup, goroutine (startServer's cleanup), process or file descriptor (faultFDs) is
// left behind.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"rund/rpcpb"
)

// floodBytes is what the flood job writes: 2,048 times the flood test's ring. 512 MiB, not 1-2 GB: on
// the 2-core machine it takes 2-6 s as a job of the race-enabled server with no follower, and 4-40 s
// with 100 followers depending on what else runs there.
const floodBytes = 512 << 20

// TestFloodWithManyFollowers: a job writes floodBytes as fast as it can while 100 clients follow its
// log, 10 of them stalled (they open the stream and never Recv, so flow control blocks the server's
// Send). The job must not be slowed down much, the server's memory must stay bounded, the live
// followers must be told about gaps instead of freezing, and all of them must reach EOF.
func TestFloodWithManyFollowers(t *testing.T) {
	requireRoot(t)
	// grpc-go's buffer pool has a 32 KiB tier and then a 1 MiB one. If a full chunk's marshalled JobLog
	// exceeded 32 KiB, every message would cost a 1 MiB buffer on each side: the heap then peaked at
	// ~840 MiB in this test and the job ran 16x slower than with no follower (maxChunk 32764, before
	// c51e8b0). Fail at once rather than after minutes of that.
	full := &rpcpb.JobLog{Stdout: make([]byte, maxChunk), Offset: math.MaxUint64, Lost: math.MaxUint64}
	if size := proto.Size(full); size > 32<<10 {
		t.Fatalf("a full log chunk (maxChunk %d) marshals to %d bytes, over grpc-go's 32 KiB buffer tier, "+
			"so every Send and Recv of one takes a 1 MiB buffer; maxChunk must be at most %d",
			maxChunk, size, maxChunk-(size-32<<10))
	}
	faultFDs(t)
	const (
		ringSize  = 256 << 10
		followers = 100
		stalled   = 10
		conns     = 10
		window    = 64 << 10 // static HTTP/2 stream window of every follower connection
	)
	ts := startServer(t, func(c *serveConfig) { c.ringSize = ringSize })
	a := ts.dialAs(t, "a")
	flood := fmt.Sprintf("head -c %d /dev/zero", floodBytes)

	// Baselines: the same command writing to /dev/null, and into the daemon's log with no follower, as
	// jobs of this daemon; and on the host, into a pipe to cat.
	devNull := faultJobTime(waitDone(t, a, startJob(t, a, cmd("sh", "-c", flood+" >/dev/null"))))
	alone := faultJobTime(waitDone(t, a, startJob(t, a, cmd("sh", "-c", flood)))) // and again at the end
	begin := time.Now()
	if out, err := exec.Command("sh", "-c", flood+" | cat >/dev/null").CombinedOutput(); err != nil {
		t.Fatalf("host pipe baseline: %v %s", err, out)
	}
	hostPipe := time.Since(begin)

	// The flood job prints "ready", then waits for the gate so that every follower is attached before
	// the flood begins.
	gate := filepath.Join(jobTempDir(t), "gate")
	id := startJob(t, a, cmd("sh", "-c", fmt.Sprintf("echo ready; while [ ! -e %s ]; do sleep 0.05; done; %s", gate, flood)))
	total := int64(len("ready\n") + floodBytes)

	// Followers spread over 10 connections, each with 9 live streams and 1 stalled one, so a stalled
	// stream also shares its connection with live ones. Static 64 KiB windows bound what the client
	// side of this process may buffer per stream (BDP estimation would grow it to 16 MiB).
	var clients []rpcpb.JobControllerClient
	for range conns {
		c, _ := faultDial(t, ts, "a", grpc.WithStaticStreamWindowSize(window), grpc.WithStaticConnWindowSize(1<<20))
		if _, err := c.List(ctx(t), &rpcpb.ListRequest{}); err != nil { // connect now
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	goroutinesBefore := runtime.NumGoroutine()

	long, cancelLong := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelLong()
	stalledCtx, cancelStalled := context.WithCancel(long)
	defer cancelStalled()
	results := make([]faultFollowResult, followers-stalled)
	var live sync.WaitGroup
	attached := make(chan struct{}, followers)
	for i := range followers {
		c := clients[i%conns]
		if i < stalled {
			// Open the stream and never Recv. Lossy (ReadLog), like every follower here: this test is
			// about readers the job never waits for (a lossless one, and the original Log, would hold
			// the flood back: lossless_test.go).
			if _, err := c.ReadLog(stalledCtx, &rpcpb.LogRequest{Ulid: id}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		live.Add(1)
		go func() {
			defer live.Done()
			results[i-stalled] = faultFollow(long, c, id, false, false, attached)
		}()
	}
	for range followers - stalled {
		select {
		case <-attached:
		case <-long.Done():
			t.Fatal("live followers did not attach")
		}
	}
	// The stalled ones are attached once the server runs their handler.
	faultWaitLogHandlers(t, followers)

	// Sample the heap during the flood, from a collected heap.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse
	stopSampling, peak := make(chan struct{}), make(chan uint64)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		var top uint64
		for {
			select {
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				top = max(top, ms.HeapInuse)
			case <-stopSampling:
				peak <- top
				return
			}
		}
	}()

	opened := time.Now()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	live.Wait()
	followersDone := time.Since(opened)
	close(stopSampling)
	heapPeak := <-peak

	st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	floodTime := st.EndTime.AsTime().Sub(opened)
	if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
		t.Errorf("flood job: %v, want exit 0", st)
	}

	// Every live follower reached EOF at the end of the output, was told about what it missed
	// (received + lost = everything), and made progress instead of freezing.
	var gaps, withGaps int
	var received, lost int64
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("follower %d: %v", i, r.err)
		case r.end != total || r.bytes+r.lost != total:
			t.Errorf("follower %d ended at %d with %d bytes received and %d lost; want both to account for %d",
				i, r.end, r.bytes, r.lost, total)
		}
		gaps += r.gaps
		received += r.bytes
		lost += r.lost
		if r.gaps > 0 {
			withGaps++
		}
	}
	if withGaps == 0 {
		t.Errorf("no live follower was told of a gap behind a %d-byte ring and %d bytes of output", ringSize, total)
	}

	// The bound. Server: the ring (1.25 x ringSize with its segments) and two 64 KiB pump buffers, then
	// per follower a maxChunk read buffer, the marshalled message and up to the 64 KiB write quota of its
	// HTTP/2 stream: under 160 KiB, so less than ringSize. Client side (same process): per stream at most
	// its 64 KiB window, so also under ringSize. Hence ringSize x (followers + 2), plus 64 MiB for what
	// does not scale with followers: the test binary's own heap, gRPC and TLS connection buffers, and the
	// garbage GOGC=100 lets accumulate between collections.
	bound := uint64(ringSize*(followers+2)) + 64<<20
	if heapPeak > bound {
		t.Errorf("heap in use peaked at %s during the flood, over the bound of %s", faultMiB(heapPeak), faultMiB(bound))
	}

	// The stalled streams: still blocked in Send while the server runs. Cancelling them must end their
	// handlers and every goroutine they had, without the server shutting down.
	if n := faultLogHandlers(); n != stalled {
		t.Errorf("%d Log handlers running after the live followers ended, want the %d stalled ones", n, stalled)
	}
	cancelStalled()
	faultWaitLogHandlers(t, 0)
	assertGoroutines(t, goroutinesBefore)

	// How much the followers slow the job is reported, not asserted: on a shared 2-core machine the
	// followers' CPU comes from the job's cores, and a timed unit test would fail on load alone
	// (it did, at 7.3x, while a benchmark ran beside CI). `make bench` measures output rates with
	// stalled readers. The reference is the same job with no follower, the longer of a run before
	// the flood and one after.
	alone = max(alone, faultJobTime(waitDone(t, a, startJob(t, a, cmd("sh", "-c", flood)))))
	t.Logf("flood of %s, ring %s, %d followers (%d stalled): the job took %v after the gate, its followers were done after %v",
		faultMiB(uint64(floodBytes)), faultMiB(ringSize), followers, stalled, floodTime.Round(time.Millisecond),
		followersDone.Round(time.Millisecond))
	t.Logf("the same command: %v with no follower (%.1fx), %v to /dev/null (%.1fx), %v piped to cat on the host (%.1fx)",
		alone.Round(time.Millisecond), float64(floodTime)/float64(alone), devNull.Round(time.Millisecond),
		float64(floodTime)/float64(devNull), hostPipe.Round(time.Millisecond), float64(floodTime)/float64(hostPipe))
	t.Logf("heap in use %s before, peak %s during, bound %s; live followers received %s and were told of %s lost in %d gaps (%d of %d followers saw gaps)",
		faultMiB(heapBefore), faultMiB(heapPeak), faultMiB(bound), faultMiB(uint64(received)), faultMiB(uint64(lost)),
		gaps, withGaps, len(results))
}

// TestFollowerDisappears: of the followers of a running job, one has its TCP connection reset, one
// cancels its context and one never reads. The job and the other followers do not notice, and the
// server's Log handlers of the gone followers end while the server keeps running.
func TestFollowerDisappears(t *testing.T) {
	requireRoot(t)
	faultFDs(t)
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	gate := filepath.Join(jobTempDir(t), "gate")
	// ~590 KB of output, far more than an HTTP/2 window and write quota: a follower that never reads
	// leaves its handler blocked in Send.
	script := fmt.Sprintf("seq 1 50000; while [ ! -e %s ]; do sleep 0.05; done; seq 50001 100000", gate)
	id := startJob(t, a, cmd("sh", "-c", script))
	want, _ := exec.Command("seq", "1", "100000").Output()

	good := make([]string, 3)
	var wg sync.WaitGroup
	for i := range good {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := faultFollow(ctx(t), a, id, i%2 == 0, true, nil)
			if r.err != nil || r.gaps != 0 {
				good[i] = fmt.Sprintf("error %v, %d gaps", r.err, r.gaps)
				return
			}
			good[i] = string(r.stdout)
		}()
	}

	// The reset follower: its own connection, whose raw TCP socket the test holds.
	var mu sync.Mutex
	var raw *net.TCPConn
	resetClient, _ := faultDial(t, ts, "a", grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			mu.Lock()
			raw = c.(*net.TCPConn)
			mu.Unlock()
		}
		return c, err
	}))
	resetStream, err := resetClient.Log(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resetStream.Recv(); err != nil {
		t.Fatal(err)
	}

	// The cancelling follower.
	cctx, cancel := context.WithCancel(ctx(t))
	cancelStream, err := a.ReadLog(cctx, &rpcpb.LogRequest{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cancelStream.Recv(); err != nil {
		t.Fatal(err)
	}

	// The follower that never reads, with a static 64 KiB window so that the server really blocks.
	silentClient, _ := faultDial(t, ts, "a", grpc.WithStaticStreamWindowSize(64<<10))
	sctx, silentCancel := context.WithCancel(ctx(t))
	defer silentCancel()
	if _, err := silentClient.ReadLog(sctx, &rpcpb.LogRequest{Ulid: id}); err != nil { // lossy: never waited for
		t.Fatal(err)
	}
	faultWaitLogHandlers(t, len(good)+3)

	// Mid-stream, while the job waits at the gate: reset the connection (SO_LINGER 0, then close
	// sends an RST) and cancel the other stream.
	mu.Lock()
	if err := raw.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	mu.Unlock()
	cancel()
	for {
		if _, err = resetStream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("reset follower's Recv: %v, want Unavailable", err)
	}
	for {
		if _, err = cancelStream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Canceled {
		t.Errorf("cancelled follower's Recv: %v, want Canceled", err)
	}
	// Their handlers end with the job still running: the good followers and the silent one remain.
	faultWaitLogHandlers(t, len(good)+1)
	if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
		t.Fatalf("job after its followers went away: %v %v, want still running", st, err)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, got := range good {
		if got != string(want) {
			t.Errorf("good follower %d: got %.80q..., want seq 1 100000 whole", i, got)
		}
	}
	st := waitDone(t, a, id)
	if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
		t.Errorf("job: %v, want exit 0", st)
	}
	// The silent follower's handler is still blocked in Send, after the job ended; cancelling ends it.
	if n := faultLogHandlers(); n != 1 {
		t.Errorf("%d Log handlers after the job ended, want just the silent follower's", n)
	}
	silentCancel()
	faultWaitLogHandlers(t, 0)
}

// TestJobClosesOutputEarly: a job that closes its stdout and stderr long before it exits, and a job
// whose grandchild still holds the output pipes when the command exits. Both logs end, promptly, and
// nothing of the jobs is left.
func TestJobClosesOutputEarly(t *testing.T) {
	requireRoot(t)
	faultFDs(t)
	ts := startServer(t)
	a := ts.dialAs(t, "a")

	t.Run("closed", func(t *testing.T) {
		begin := time.Now()
		id := startJob(t, a, cmd("sh", "-c", "exec >&- 2>&-; sleep 1; exit 4"))
		out, errs := readAll(t, a, id)
		took := time.Since(begin)
		st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		if err != nil {
			t.Fatal(err)
		}
		if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 4 || out != "" || errs != "" {
			t.Errorf("status %v, output %q %q: want exit 4 and no output", st, out, errs)
		}
		ran := st.EndTime.AsTime().Sub(st.StartTime.AsTime())
		t.Logf("job ran %v; its log ended %v after Start", ran.Round(time.Millisecond), took.Round(time.Millisecond))
		if ran < time.Second {
			t.Errorf("job ended after %v, before its 1 s sleep: closing its output ended it", ran)
		}
		if took > 10*time.Second {
			t.Errorf("log ended %v after Start of a 1 s job", took)
		}
	})

	t.Run("grandchild holds the pipe", func(t *testing.T) {
		id := startJob(t, a, cmd("sh", "-c", "(sleep 1000 &) ; echo bye"))
		begin := time.Now()
		out, _ := readAll(t, a, id)
		st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		if err != nil {
			t.Fatal(err)
		}
		if out != "bye\n" || st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
			t.Errorf("output %q status %v, want bye and exit 0", out, st)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("log ended %v after Start: the grandchild kept it open", took)
		}
		// Stop of an ended job returns once its cleanup is done, the cgroup removed.
		if _, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(ts.cg.parent, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("job cgroup still there after Stop of the ended job: %v", err)
		}
	})

	t.Run("grandchild pids", func(t *testing.T) {
		// The same, with the command held at a gate until the grandchild's host pid is known. It says
		// bye once the grandchild runs sleep (the job's /proc lists only its own processes).
		gate := filepath.Join(jobTempDir(t), "gate")
		script := `(sleep 1000 &) ; until grep -qsx sleep /proc/[0-9]*/comm; do :; done; echo bye; ` +
			fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", gate)
		id := startJob(t, a, cmd("sh", "-c", script))
		waitOutput(t, a, id, "bye")
		var sleeper int
		for _, pid := range jobPIDs(t, ts.cg.parent, id) {
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(c) == "sleep\x001000\x00" {
				sleeper = pid
			}
		}
		if sleeper == 0 {
			t.Fatal("no sleep 1000 in the job's cgroup")
		}
		if fd1, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", sleeper)); !strings.HasPrefix(fd1, "pipe:") {
			t.Errorf("the grandchild's stdout is %q, want the job's output pipe", fd1)
		}
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		st := waitDone(t, a, id)
		if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
			t.Errorf("status %v, want exit 0", st)
		}
		// Stop of an ended job returns once its cleanup is done, the cgroup removed.
		if _, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(ts.cg.parent, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("job cgroup still there after Stop of the ended job: %v", err)
		}
		if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sleeper)); err == nil && string(c) == "sleep\x001000\x00" {
			t.Errorf("grandchild sleep 1000 (pid %d) outlived its job", sleeper)
		}
	})
}

// TestSIGTERMWith50Jobs: a server process with 50 running jobs of three kinds (exits on SIGTERM,
// dies of SIGTERM, ignores SIGTERM with a 500 ms grace period) exits 0 on SIGTERM, and takes every
// job process and cgroup with it.
func TestSIGTERMWith50Jobs(t *testing.T) {
	parent := subprocessParent(t, "sigterm50")
	faultFDs(t)
	pki := newTestPKI(t)
	srv, addr, _ := serverProcess(t, pki, parent)
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	const jobs = 50
	reqs := make([]*rpcpb.JobStartRequest, jobs)
	for i := range reqs {
		switch i % 3 {
		case 0:
			reqs[i] = cmd("sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done")
		case 1:
			reqs[i] = cmd("sh", "-c", "echo ready; exec sleep 1000")
		case 2:
			reqs[i] = cmd("sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`)
			reqs[i].StopGracePeriod = durationpb.New(500 * time.Millisecond)
		}
	}
	// Start them 10 at a time; each is running its command once it printed ready.
	startBegin := time.Now()
	var mu sync.Mutex
	var pids []int
	var failed []error
	work := make(chan *rpcpb.JobStartRequest)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range work {
				ps, err := faultStartReady(a, req, parent)
				mu.Lock()
				pids = append(pids, ps...)
				if err != nil {
					failed = append(failed, err)
				}
				mu.Unlock()
			}
		}()
	}
	for _, req := range reqs {
		work <- req
	}
	close(work)
	wg.Wait()
	if len(failed) > 0 {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
		t.Fatalf("%d of %d jobs did not start: %v", len(failed), jobs, failed[0])
	}
	started := time.Since(startBegin)
	if len(pids) < 2*jobs {
		t.Fatalf("found %d job and init processes, want at least %d", len(pids), 2*jobs)
	}
	begin := time.Now()
	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Errorf("server exit after SIGTERM: %v, want 0", err)
	}
	took := time.Since(begin)
	t.Logf("%d jobs (%d processes) ready after %v; the server exited %v after SIGTERM",
		jobs, len(pids), started.Round(time.Millisecond), took.Round(time.Millisecond))
	if took > defaultGrace {
		t.Errorf("shutdown took %v: the jobs' 500 ms grace periods did not run at once", took)
	}
	assertNoJobCgroups(t, parent, nil)
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("job process %d outlived the server", pid)
		}
	}
}

// TestStatusLoad: 1,000 Status calls a second for 10 s, from 2 clients against running jobs. None
// fails; the achieved rate and the latencies are reported.
func TestStatusLoad(t *testing.T) {
	requireRoot(t)
	faultFDs(t)
	ts := startServer(t)
	const (
		perSecond = 1000
		calls     = 10 * perSecond
		workers   = 64
		patience  = 10 * time.Second // a call still waiting for a worker this long after its time is dropped
	)
	type target struct {
		c  rpcpb.JobControllerClient
		id string
	}
	var targets []target
	for _, name := range []string{"a", "b"} {
		c := ts.dialAs(t, name)
		for range 2 {
			id := startJob(t, c, cmd("sleep", "1000"))
			targets = append(targets, target{c, id})
			defer c.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		}
	}
	type result struct {
		latency, late time.Duration // late: from the call's scheduled time, so it includes queueing
		end           time.Time
		err           error
		dropped       bool
	}
	results := make([]result, calls)
	queue := make(chan int, calls)
	begin := time.Now()
	scheduled := func(i int) time.Time { return begin.Add(time.Duration(i) * time.Second / perSecond) }
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range queue {
				r, tg := &results[i], targets[i%len(targets)]
				if time.Since(scheduled(i)) > patience {
					r.dropped = true
					continue
				}
				c, cancel := context.WithTimeout(context.Background(), patience)
				start := time.Now()
				st, err := tg.c.Status(c, &rpcpb.JobIdentifier{Ulid: tg.id})
				r.end = time.Now()
				cancel()
				r.latency, r.late = r.end.Sub(start), r.end.Sub(scheduled(i))
				if err == nil && (st.Ulid != tg.id || st.State != rpcpb.JobStatus_STATE_RUNNING) {
					err = fmt.Errorf("status of %s: %v", tg.id, st)
				}
				r.err = err
			}
		}()
	}
	// The pacer queues call i at begin + i ms, catching up on ticks the runtime dropped.
	ticker := time.NewTicker(time.Millisecond)
	for queued := 0; queued < calls; {
		<-ticker.C
		for due := min(calls, int(time.Since(begin)*perSecond/time.Second)+1); queued < due; queued++ {
			queue <- queued
		}
	}
	ticker.Stop()
	close(queue)
	wg.Wait()
	var latency, late []time.Duration
	var last time.Time
	failed, dropped := 0, 0
	for _, r := range results {
		switch {
		case r.dropped:
			dropped++
		case r.err != nil:
			if failed++; failed <= 10 {
				t.Errorf("Status: %v", r.err)
			}
		default:
			latency, late = append(latency, r.latency), append(late, r.late)
			if r.end.After(last) {
				last = r.end
			}
		}
	}
	if len(latency) == 0 {
		t.Fatalf("no Status call succeeded: %d failed, %d dropped", failed, dropped)
	}
	slices.Sort(latency)
	slices.Sort(late)
	took := last.Sub(begin)
	t.Logf("%d Status calls done in %v: %.0f/s (paced at %d/s); latency p50 %v p99 %v max %v; "+
		"from the scheduled time p50 %v p99 %v; %d failed, %d dropped after waiting %v for a worker",
		len(latency), took.Round(time.Millisecond), float64(len(latency))/took.Seconds(), perSecond,
		faultPct(latency, 50), faultPct(latency, 99), latency[len(latency)-1].Round(time.Microsecond),
		faultPct(late, 50), faultPct(late, 99), failed, dropped, patience)
}

// TestManyConcurrentStarts: 10 clients start 1,000 jobs, at most 50 in flight. Every start succeeds
// with a unique id and every job exits 0.
func TestManyConcurrentStarts(t *testing.T) {
	requireRoot(t)
	faultFDs(t)
	ts := startServer(t)
	const (
		jobs     = 1000
		nclients = 10
		inFlight = 50
	)
	var clients []rpcpb.JobControllerClient
	for i := range nclients {
		name := fmt.Sprintf("load%d", i)
		ts.pki.leaf(t, name, certSpec{name: name, dns: []string{name}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		clients = append(clients, ts.dialAs(t, name))
	}
	ids := make([]string, jobs)
	errs := make([]error, jobs)
	work := make(chan int)
	var wg sync.WaitGroup
	begin := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ids[i], errs[i] = faultRunTrue(clients[i%nclients])
			}
		}()
	}
	for i := range jobs {
		work <- i
	}
	close(work)
	wg.Wait()
	took := time.Since(begin)
	seen := map[string]bool{}
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 10 {
				t.Errorf("job %d: %v", i, err)
			}
			continue
		}
		if seen[ids[i]] {
			t.Errorf("duplicate id %s", ids[i])
		}
		seen[ids[i]] = true
	}
	t.Logf("%d jobs from %d clients, %d in flight: %v wall, %.0f jobs/s; %d failed",
		jobs, nclients, inFlight, took.Round(time.Millisecond), jobs/took.Seconds(), failed)
	// The server now holds 1,000 finished jobs that wrote nothing.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	retained := ms.HeapInuse
	// Each client lists exactly the jobs it started.
	for i, c := range clients {
		var want []string
		for j := i; j < jobs; j += nclients {
			if ids[j] != "" {
				want = append(want, ids[j])
			}
		}
		slices.Sort(want)
		l, err := c.List(ctx(t), &rpcpb.ListRequest{})
		var got []string
		for k, st := range l.GetJobs() {
			got = append(got, st.Ulid)
			if k > 0 && st.StartTime.AsTime().Before(l.Jobs[k-1].StartTime.AsTime()) {
				t.Errorf("client %d: List has job %s after %s, which started later", i, st.Ulid, l.Jobs[k-1].Ulid)
			}
		}
		slices.Sort(got) // List is in start order; ids are in the order their sandboxes were made
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("client %d lists %d jobs (%v), want its %d", i, len(got), err, len(want))
		}
	}
	// A finished job's record should cost far less than the log capacity it never used: 64 KiB each is
	// 5x what they cost now that rings grow with their output (12.6 MiB of heap in all, measured;
	// 1,270 MiB before c51e8b0, when each kept its whole 1.25 MiB ring).
	t.Logf("heap in use with the %d finished jobs retained: %s", jobs, faultMiB(retained))
	if bound := uint64(jobs * 64 << 10); retained > bound {
		t.Errorf("%d finished jobs that wrote nothing hold %s of heap, over %s", jobs, faultMiB(retained), faultMiB(bound))
	}
}

// --- helpers ---

// faultFDs counts this process's open file descriptors now and, at cleanup, waits (bounded, like
// assertGoroutines) for the count to come back. Call it before startServer: cleanups run last-in
// first-out, so it checks after the server, the jobs and the client connections are gone.
func faultFDs(t *testing.T) {
	t.Helper()
	// The runtime's netpoller opens its epoll and event fds once, at first use: open them now.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	before := faultOpenFDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		var now map[string]string
		for {
			if now = faultOpenFDs(); len(now) <= len(before) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(now) > len(before) {
			var extra []string
			for fd, target := range now {
				if before[fd] != target {
					extra = append(extra, fd+" -> "+target)
				}
			}
			sort.Strings(extra)
			t.Errorf("%d file descriptors outlived the test (had %d): %s", len(now)-len(before), len(before),
				strings.Join(extra, ", "))
		}
	})
}

// faultOpenFDs maps each open fd of this process to what it refers to.
func faultOpenFDs() map[string]string {
	entries, _ := os.ReadDir("/proc/self/fd")
	fds := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil { // the fd ReadDir itself used is gone by now
			fds[e.Name()] = target
		}
	}
	return fds
}

// faultDial connects as client name with extra dial options; the connection is closed at cleanup.
func faultDial(t testing.TB, ts *testServer, name string, opts ...grpc.DialOption) (rpcpb.JobControllerClient, *grpc.ClientConn) {
	t.Helper()
	cfg, err := clientTLS(ts.pki.file("ca.crt"), ts.pki.file(name+".crt"), ts.pki.file(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ts.addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rpcpb.NewJobControllerClient(conn), conn
}

// faultFollowResult is what one follower saw of a log.
type faultFollowResult struct {
	bytes, lost int64  // bytes received, bytes reported lost
	gaps        int    // messages with Lost > 0
	end         int64  // offset after the last byte received
	stdout      []byte // with keep, while nothing was lost
	err         error  // a stream error, or a broken offset sequence
}

// faultFollow follows a log from its start to its end with Log (or ReadLog), checking that every
// message continues where the last one ended plus what it says was lost. With keep, it keeps stdout
// while nothing was lost. attached, if not nil, gets a value once the first message arrived.
func faultFollow(ctx context.Context, c rpcpb.JobControllerClient, id string, useLog, keep bool, attached chan<- struct{}) (r faultFollowResult) {
	var stream rpcpb.JobController_LogClient
	var err error
	if useLog {
		stream, err = c.Log(ctx, &rpcpb.JobIdentifier{Ulid: id})
	} else {
		stream, err = c.ReadLog(ctx, &rpcpb.LogRequest{Ulid: id})
	}
	if err != nil {
		r.err = err
		return r
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		if attached != nil {
			attached <- struct{}{}
			attached = nil
		}
		n := int64(len(msg.Stdout) + len(msg.Stderr))
		if int64(msg.Offset) != r.end+int64(msg.Lost) || n == 0 {
			r.err = fmt.Errorf("message at %d with %d bytes and %d lost after the one that ended at %d",
				msg.Offset, n, msg.Lost, r.end)
			return r
		}
		r.bytes += n
		r.lost += int64(msg.Lost)
		r.end = int64(msg.Offset) + n
		if msg.Lost > 0 {
			r.gaps++
			r.stdout = nil
		}
		if keep && r.gaps == 0 {
			r.stdout = append(r.stdout, msg.Stdout...)
		}
	}
}

// faultLogHandlers counts the server's Log and ReadLog handlers now running in this process. It reuses
// one buffer for the goroutine dump, so that polling it does not itself fill the heap.
func faultLogHandlers() int {
	faultStack.Lock()
	defer faultStack.Unlock()
	for {
		n := runtime.Stack(faultStack.buf, true)
		if n < len(faultStack.buf) {
			return bytes.Count(faultStack.buf[:n], []byte(".(*server).ReadLog("))
		}
		faultStack.buf = make([]byte, 2*len(faultStack.buf))
	}
}

var faultStack = struct {
	sync.Mutex
	buf []byte
}{buf: make([]byte, 1<<20)}

// faultWaitLogHandlers waits, bounded, for exactly want Log handlers to run.
func faultWaitLogHandlers(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := faultLogHandlers()
	for ; n != want && time.Now().Before(deadline); n = faultLogHandlers() {
		time.Sleep(10 * time.Millisecond)
	}
	if n != want {
		t.Fatalf("%d Log handlers running, want %d", n, want)
	}
}

// faultJobTime is how long a finished job ran, by the server's clock.
func faultJobTime(st *rpcpb.JobStatus) time.Duration {
	return st.EndTime.AsTime().Sub(st.StartTime.AsTime())
}

// faultCgroupPIDs lists the processes of a job's two leaves, init/ and job/.
func faultCgroupPIDs(dir string) ([]int, error) {
	var pids []int
	for _, leaf := range []string{"init", "job"} {
		data, err := os.ReadFile(filepath.Join(dir, leaf, "cgroup.procs"))
		if err != nil {
			return pids, err
		}
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// faultStartReady starts req, waits for it to print "ready" and returns the processes of its cgroup.
func faultStartReady(c rpcpb.JobControllerClient, req *rpcpb.JobStartRequest, parent string) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	stream, err := c.Log(ctx, id)
	var out []byte
	for err == nil && !bytes.Contains(out, []byte("ready\n")) {
		var msg *rpcpb.JobLog
		if msg, err = stream.Recv(); err == nil {
			out = append(out, msg.Stdout...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("job %s printed %q, then: %w", id.Ulid, out, err)
	}
	return faultCgroupPIDs(filepath.Join(parent, id.Ulid))
}

// faultRunTrue starts "true", follows its log to the end and checks that it exited 0.
func faultRunTrue(c rpcpb.JobControllerClient) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.Start(ctx, cmd("true"))
	if err != nil {
		return "", fmt.Errorf("start: %w", err)
	}
	stream, err := c.Log(ctx, id)
	for err == nil {
		_, err = stream.Recv()
	}
	if err != io.EOF {
		return id.Ulid, fmt.Errorf("log of %s: %w", id.Ulid, err)
	}
	st, err := c.Status(ctx, id)
	if err != nil {
		return id.Ulid, fmt.Errorf("status of %s: %w", id.Ulid, err)
	}
	if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 {
		return id.Ulid, fmt.Errorf("job %s: %v, want exit 0", id.Ulid, st)
	}
	return id.Ulid, nil
}

func faultPct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100].Round(time.Microsecond)
}

func faultMiB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

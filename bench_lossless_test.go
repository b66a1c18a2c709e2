package main

// The lossless-following figures of `make bench` (issue 11): rund client run, as a user runs it, of a
// job that writes as fast as it can, byte-exact, against the raw relay of the same command's pipe to
// one stream; the job's own rate beside its reader's; and what stalled readers cost a job.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"rund/rpcpb"
)

// benchLocalSum runs argv on the host and returns the sha256 and size of its stdout.
func benchLocalSum(b *bench, argv []string) ([32]byte, int64) {
	c := exec.Command(argv[0], argv[1:]...)
	out, err := c.StdoutPipe()
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		b.t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, out)
	if err := c.Wait(); err != nil {
		b.t.Fatal(err)
	}
	return [32]byte(h.Sum(nil)), n
}

// benchRun runs `rund client run -v -- argv` against srv, hashing its stdout, and returns its rate in
// MB/s, whether the output was byte-exact, and the job's own rate over its reader's.
func (b *bench) benchRun(srv *benchProc, c rpcpb.JobControllerClient, argv []string, want [32]byte, size int64) (float64, bool, float64) {
	run := exec.Command(b.rund, append([]string{"client", "run", "-v", "-addr", srv.addr, "-ca", b.pki.file("ca.crt"),
		"-cert", b.pki.file("a.crt"), "-key", b.pki.file("a.key"), "--"}, argv...)...)
	var stderr bytes.Buffer
	run.Stderr = &stderr
	out, err := run.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	t0 := time.Now()
	if err := run.Start(); err != nil {
		b.t.Fatal(err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, out)
	err = run.Wait()
	wall := time.Since(t0)
	exact := err == nil && n == size && [32]byte(h.Sum(nil)) == want
	if !exact {
		b.t.Errorf("rund client run %v: %d of %d bytes, exact %v, %v: %s", argv, n, size, exact, err, stderr.String())
	}
	id := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(stderr.String(), "\n", 2)[0], "rund: job "))
	st, err := c.Status(context.Background(), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		b.t.Fatal(err)
	}
	job := st.EndTime.AsTime().Sub(st.StartTime.AsTime())
	return float64(n) / wall.Seconds() / 1e6, exact, wall.Seconds() / job.Seconds()
}

// benchRelayRun reads the raw relay of one command to its end, checks it, and returns MB/s.
func benchRelayRun(b *bench, c rpcpb.JobControllerClient, relay string, want [32]byte, size int64) float64 {
	t0 := time.Now()
	stream, err := c.ReadLog(context.Background(), &rpcpb.LogRequest{Ulid: relay})
	if err != nil {
		b.t.Fatal(err)
	}
	h := sha256.New()
	var n int64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.t.Fatal(err)
		}
		h.Write(msg.Stdout)
		n += int64(len(msg.Stdout))
	}
	if n != size || [32]byte(h.Sum(nil)) != want {
		b.t.Errorf("raw relay %s: %d of %d bytes, not the command's output", relay, n, size)
	}
	return float64(n) / time.Since(t0).Seconds() / 1e6
}

func (b *bench) lossless() {
	b.t.Log("lossless following ...")
	srv, raw := b.rundServer("lossless"), b.rawServer("lossless")
	defer srv.stop(b.t)
	defer raw.stop(b.t)
	_, rc := b.dial(srv, "a")
	_, xc := b.dial(raw, "a")
	for _, relay := range []string{"relay-zero", "relay-seq"} {
		argv := benchRelays[relay]
		want, size := benchLocalSum(b, argv)
		var rund, rawRates, jobRatios []float64
		exact := 0
		for range 3 { // interleaved rounds
			r, ok, jr := b.benchRun(srv, rc, argv, want, size)
			rund, jobRatios = append(rund, r), append(jobRatios, jr)
			if ok {
				exact++
			}
			rawRates = append(rawRates, benchRelayRun(b, xc, relay, want, size))
		}
		label := strings.Join(argv, " ")
		b.detail("rund client run of %s (%d bytes, sha256 checked): %s; byte-exact %d of %d", label, size,
			benchSummary(rund, "MB/s"), exact, len(rund))
		b.detail("raw relay of %s's pipe to one stream, read to its end: %s", label, benchSummary(rawRates, "MB/s"))
		b.detail("the job's own output rate over its lossless reader's (run of %s): %s", label, benchSummary(jobRatios, "x"))
		r, x := benchPct(rund, .5), benchPct(rawRates, .5)
		ratio, target, met := benchJudge(r/x, 0.75, false)
		jr := benchPct(jobRatios, .5)
		jratio, jtarget, jmet := benchJudge(jr, 0.8, false)
		b.rows = append(b.rows,
			benchRow{fmt.Sprintf("`rund client run` of `%s`, byte-exact %d/%d: median", label, exact, len(rund)),
				fmt.Sprintf("%.0f MB/s", r), fmt.Sprintf("%.0f MB/s (relay)", x), ratio, target, met},
			benchRow{"↳ the job's own output rate over its lossless reader's", "", "", jratio, jtarget, jmet})
	}
	b.stalledReaders()
}

// stalledReaders: how long a 200 MB job takes with nobody reading, with 10 stalled lossy readers, and
// with those and one stalled lossless reader (demoted after -lossless_timeout 2s).
func (b *bench) stalledReaders() {
	const timeout = 2 * time.Second
	parent := b.cgroup("stalled")
	serve := exec.Command(b.rund, "serve", "-addr", "127.0.0.1:0", "-cgroup", parent,
		"-ca", b.pki.file("ca.crt"), "-cert", b.pki.file("server.crt"), "-key", b.pki.file("server.key"),
		"-lossless_timeout", timeout.String())
	serve.Env = []string{}
	srv := benchStartProc(b.t, "rund", parent, serve)
	defer srv.stop(b.t)
	_, rc := b.dial(srv, "a")
	var stalled []rpcpb.JobControllerClient
	for range 11 {
		_, c := b.dial(srv, "a")
		stalled = append(stalled, c)
	}
	gate := filepath.Join(b.dir, "stalled-gate")
	job := func(lossy, lossless int) float64 {
		os.Remove(gate)
		req := cmd("sh", "-c", fmt.Sprintf("echo r; while [ ! -e %s ]; do sleep 0.01; done; exec head -c 200000000 /dev/zero", gate))
		req.HoldOutput = lossless > 0
		id, err := rc.Start(context.Background(), req)
		if err != nil {
			b.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for i := range lossy + lossless {
			s, err := stalled[i].ReadLog(ctx, &rpcpb.LogRequest{Ulid: id.Ulid, Lossless: i >= lossy})
			if err == nil {
				_, err = s.Recv() // "r": attached; then never read again
			}
			if err != nil {
				b.t.Fatal(err)
			}
		}
		os.WriteFile(gate, nil, 0o644)
		opened := time.Now()
		for {
			st, err := rc.Status(context.Background(), id)
			if err != nil {
				b.t.Fatal(err)
			}
			if st.State != rpcpb.JobStatus_STATE_RUNNING {
				return st.EndTime.AsTime().Sub(opened).Seconds()
			}
			time.Sleep(20 * time.Millisecond) // the end time comes from Status; this only bounds the polling
		}
	}
	var alone, lossy, both []float64
	for range 3 {
		alone = append(alone, job(0, 0))
		lossy = append(lossy, job(10, 0))
		both = append(both, job(10, 1))
	}
	b.detail("200 MB job (head -c), from its gate to its end: nobody reading %s; 10 stalled lossy readers %s; "+
		"those and 1 stalled lossless reader (-lossless_timeout %v) %s", benchSummary(alone, "s"),
		benchSummary(lossy, "s"), timeout, benchSummary(both, "s"))
	a, l, bo := benchPct(alone, .5), benchPct(lossy, .5), benchPct(both, .5)
	ratio, target, met := benchJudge(l/a, 1.2, true)
	delay := bo - a
	b.rows = append(b.rows,
		benchRow{"200 MB job with 10 stalled lossy readers: median time", fmt.Sprintf("%.2f s", l), fmt.Sprintf("%.2f s (no reader)", a), ratio, target, met},
		benchRow{fmt.Sprintf("↳ and 1 stalled lossless reader: delay over no reader (timeout %v)", timeout),
			fmt.Sprintf("%.2f s", delay), "", "", fmt.Sprintf("≤ %v + 10%%", timeout),
			map[bool]string{true: "yes", false: "NO"}[delay <= timeout.Seconds()*1.1]})
}

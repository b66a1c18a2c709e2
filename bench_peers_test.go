package main

// The peers figures of `make bench` (issue 24): a contained /bin/true under rund against C sandboxes
// that give it the same, on one machine, rounds interleaved. bwrap (Debian's bubblewrap) and
// `unshare -Urfpnm --mount-proc`, installed from apt if missing and skipped with a note if they cannot
// be had. crun is not measured yet: 1.8 refuses this host's hybrid cgroup layout and a / root, and needs
// a bundle of its own.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"rund/rpcpb"
)

// peerTools are the command lines of the peers: each gives /bin/true a user namespace (root mapped),
// a PID namespace with its own /proc and a network namespace; bwrap also a read-only root and a private
// /tmp and /var/tmp, as rund does (without rund's seccomp filter, which bwrap would take compiled).
var peerTools = []struct {
	name, pkg string
	argv      []string
}{
	{"bwrap", "bubblewrap", []string{"bwrap", "--unshare-all", "--uid", "0", "--ro-bind", "/", "/", "--proc", "/proc",
		"--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "/bin/true"}},
	{"unshare", "util-linux", []string{"unshare", "-Urfpnm", "--mount-proc", "/bin/true"}},
}

// peers runs each tool's lifecycle one at a time (latency) and four at a time (jobs/s, and the
// machine's busy CPU per job), alternating with rund's.
func (b *bench) peers() {
	b.t.Log("peers: rund, bwrap, unshare ...")
	srv := b.rundServer("peers")
	defer srv.stop(b.t)
	_, c := b.dial(srv, "a")
	runs := map[string]func() error{"rund": func() error { return benchRundLifecycle(c) }}
	names := []string{"rund"}
	for _, p := range peerTools {
		if _, err := exec.LookPath(p.argv[0]); err != nil {
			exec.Command("apt-get", "install", "-y", "-q", p.pkg).Run()
		}
		if out, err := exec.Command(p.argv[0], p.argv[1:]...).CombinedOutput(); err != nil {
			b.detail("peers: %s skipped: %v %s", p.name, err, strings.TrimSpace(string(out)))
			continue
		}
		runs[p.name] = func() error { return exec.Command(p.argv[0], p.argv[1:]...).Run() }
		names = append(names, p.name)
	}
	lat := map[string][]float64{}
	rate, cpu := map[string][]float64{}, map[string][]float64{}
	for range 4 {
		for _, n := range names {
			for range 50 {
				time.Sleep(20 * time.Millisecond) // the previous job's cleanup out of the way
				t0 := time.Now()
				if err := runs[n](); err != nil {
					b.t.Fatalf("peers: %s: %v", n, err)
				}
				lat[n] = append(lat[n], benchMs(time.Since(t0)))
			}
			jobs, busy := benchFourInFlight(runs[n], 3*time.Second)
			rate[n] = append(rate[n], float64(jobs)/3)
			cpu[n] = append(cpu[n], busy/float64(jobs)*1000)
		}
	}
	for _, n := range names {
		b.detail("peers: %s lifecycle of /bin/true %s, p90 %.4g ms; 4 in flight: %.1f jobs/s, machine busy CPU per job %.1f ms "+
			"(medians of 4 rounds)", n, benchSummary(lat[n], "ms"), benchPct(lat[n], .9), benchPct(rate[n], .5), benchPct(cpu[n], .5))
	}
	if _, ok := runs["bwrap"]; !ok {
		return
	}
	ratio := func(x map[string][]float64, p float64) float64 {
		return benchPct(x["rund"], p) / benchPct(x["bwrap"], p)
	}
	for _, r := range []struct {
		figure, unit string
		x            map[string][]float64
		p            float64
		target       float64
		atMost       bool
	}{
		{"contained /bin/true, rund against bwrap: lifecycle p50", "ms", lat, .5, 0.8, true},
		{"↳ machine busy CPU per job, 4 in flight", "ms", cpu, .5, 1.5, true},
		{"↳ jobs/s, 4 in flight", "/s", rate, .5, 0.8, false},
	} {
		q := ratio(r.x, r.p)
		met := q <= r.target
		cmp := "≤"
		if !r.atMost {
			met, cmp = q >= r.target, "≥"
		}
		b.rows = append(b.rows, benchRow{r.figure, fmt.Sprintf("%.1f %s", benchPct(r.x["rund"], r.p), r.unit),
			fmt.Sprintf("%.1f %s (bwrap)", benchPct(r.x["bwrap"], r.p), r.unit), fmt.Sprintf("%.2fx", q),
			fmt.Sprintf("%s %.1fx", cmp, r.target), map[bool]string{true: "yes", false: "NO"}[met]})
	}
}

// benchRundLifecycle is one contained /bin/true through rund: Start, its log to the end, Status.
func benchRundLifecycle(c rpcpb.JobControllerClient) error {
	ctx := context.Background()
	id, err := c.Start(ctx, cmd("/bin/true"))
	if err != nil {
		return err
	}
	s, err := c.ReadLog(ctx, &rpcpb.LogRequest{Ulid: id.Ulid})
	if err != nil {
		return err
	}
	for err == nil {
		_, err = s.Recv()
	}
	if err != io.EOF {
		return err
	}
	st, err := c.Status(ctx, id)
	if err == nil && st.State != rpcpb.JobStatus_STATE_EXITED {
		err = fmt.Errorf("job %s ended %v", id.Ulid, st.State)
	}
	return err
}

// benchFourInFlight runs run from four goroutines for d, and returns the runs done and the machine's
// busy CPU seconds meanwhile (all CPUs, from /proc/stat: what the tool, its jobs, the kernel's workers
// and this benchmark's own client side spent).
func benchFourInFlight(run func() error, d time.Duration) (int64, float64) {
	var done atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	busy0 := benchMachineBusy()
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(end) {
				if run() == nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return done.Load(), benchMachineBusy() - busy0
}

// benchMachineBusy is the CPU seconds all CPUs have spent other than idle and in iowait since boot
// (proc(5), /proc/stat's cpu line, in USER_HZ: 100 a second on Linux).
func benchMachineBusy() float64 {
	data, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(data), "\n")
	var ticks float64
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseFloat(f, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is in user already
			ticks += n
		}
	}
	return ticks / 100
}

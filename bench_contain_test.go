package main

// bench_contain_test.go: what containment costs (issue 15), rund as it runs by default against rund
// with -unsafe_uncontained_jobs, in one run, interleaved, so that both see the same machine.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"rund/rpcpb"
)

func (b *bench) containment() {
	b.t.Log("containment cost ...")
	on, off := b.rundServer("contain-on"), b.rundServer("contain-off", "-unsafe_uncontained_jobs")
	defer on.stop(b.t)
	defer off.stop(b.t)
	servers := []*benchProc{on, off}
	var clients [2][2]rpcpb.JobControllerClient // per server: clients a and b
	for i, srv := range servers {
		_, clients[i][0] = b.dial(srv, "a")
		_, clients[i][1] = b.dial(srv, "b")
	}
	const rounds, perRound, gap = 10, 30, 50 * time.Millisecond
	var start, life, rate [2][]float64
	for r := range rounds {
		for k := range 2 {
			i := (k + r) % 2
			for range perRound {
				time.Sleep(gap)
				s, l := b.lifecycle(clients[i][0])
				start[i], life[i] = append(start[i], s), append(life[i], l)
			}
		}
	}
	for r := range 4 {
		for k := range 2 {
			i := (k + r) % 2
			_, r := b.sustained(servers[i], clients[i][:])
			rate[i] = append(rate[i], r)
		}
	}
	b.detail("contained Start %s; lifecycle %s; sustained starts %s", benchSummary(start[0], "ms"),
		benchSummary(life[0], "ms"), benchSummary(rate[0], "/s"))
	b.detail("uncontained (-unsafe_uncontained_jobs) Start %s; lifecycle %s; sustained starts %s",
		benchSummary(start[1], "ms"), benchSummary(life[1], "ms"), benchSummary(rate[1], "/s"))
	b.detail("of which the user namespace owned by the job's uid (issue 22: the forking thread's change to the "+
		"job's effective ids and back, creds.go): %s per contained Start", benchSummary(jobOwnerCost(), "us"))
	for _, f := range []struct {
		name      string
		xs        [2][]float64
		unit      string
		bound     float64
		atMost    bool
		precision string
	}{
		{"contained over uncontained: Start p50", start, "ms", 1.25, true, "%.2f"},
		{"contained over uncontained: lifecycle p50, 50 ms between jobs", life, "ms", 1.25, true, "%.2f"},
		{"contained over uncontained: sustained starts/s, 2 clients, median", rate, "/s", 0.8, false, "%.0f"},
	} {
		on, off := benchPct(f.xs[0], .5), benchPct(f.xs[1], .5)
		ratio, target, met := benchJudge(on/off, f.bound, f.atMost)
		b.rows = append(b.rows, benchRow{f.name, fmt.Sprintf(f.precision+" %s", on, f.unit),
			fmt.Sprintf(f.precision+" %s", off, f.unit) + " (uncontained)", ratio, target, met})
	}
}

// lifecycle times one job of `true`: its Start, and its Start to a Status of EXITED after the log's end.
func (b *bench) lifecycle(c rpcpb.JobControllerClient) (start, life float64) {
	t0 := time.Now()
	id, err := c.Start(context.Background(), cmd("true"))
	t1 := time.Now()
	if err != nil {
		b.t.Fatalf("rund start: %v", err)
	}
	readAll(b.t, c, id.Ulid)
	st, err := c.Status(context.Background(), id)
	if err != nil || st.State != rpcpb.JobStatus_STATE_EXITED {
		b.t.Fatalf("rund job: %v %v", st, err)
	}
	return benchMs(t1.Sub(t0)), benchMs(time.Since(t0))
}

// sustained is the number of Starts that clients, one goroutine each, make back to back for 3 s, and
// their rate over the time until every job's cgroup is gone (the server's spares aside).
func (b *bench) sustained(srv *benchProc, clients []rpcpb.JobControllerClient) (int64, float64) {
	var n atomic.Int64
	before := benchJobCgroups(srv.parent)
	t0 := time.Now()
	deadline := t0.Add(3 * time.Second)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := c.Start(context.Background(), cmd("true")); err != nil {
					b.t.Errorf("rund start: %v", err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	for benchJobCgroups(srv.parent) > before {
		if time.Since(deadline) > 2*time.Minute {
			b.t.Fatalf("rund: job cgroups still there 2 minutes after the last start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return n.Load(), float64(n.Load()) / time.Since(t0).Seconds()
}

// jobOwnerCost times becomeJobOwner and leaveJobOwner, 100 rounds of 200 each, in microseconds a pair.
func jobOwnerCost() []float64 {
	u := &jobUser{UID: 1879048192 + 4242, GID: 1879048192 + 4243}
	var us []float64
	onOwnThread(func() {
		for range 100 {
			t0 := time.Now()
			for range 200 {
				err := becomeJobOwner(u)
				if err == nil {
					err = leaveJobOwner()
				}
				if err != nil {
					panic(err) // the thread's ids are unknown: stop here
				}
			}
			us = append(us, float64(time.Since(t0).Microseconds())/200)
		}
	})
	return us
}

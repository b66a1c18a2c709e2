package main

// The server-wide bounds figures of `make bench` (issue 12): what finished jobs' output and a burst of
// maximum-size Starts cost the static server's RSS, and how established and new clients fare beside
// a flood of connections that never send a ClientHello.

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"rund/rpcpb"
)

// boundsServer is the static rund with its default bounds (but for jobs per client, which a bench
// client meets first) and a small output budget, so that the figures show the bound at work.
func (b *bench) boundsServer(name string, extra ...string) *benchProc {
	parent := b.cgroup(name)
	serve := exec.Command(b.rund, append([]string{"serve", "-addr", "127.0.0.1:0", "-cgroup", parent,
		"-ca", b.pki.file("ca.crt"), "-cert", b.pki.file("server.crt"), "-key", b.pki.file("server.key"),
		"-job_tmp_total", "0"}, extra...)...) // the edge's bounds alone, not /tmp's (rundServer)
	serve.Env = []string{}
	return benchStartProc(b.t, "rund", parent, serve)
}

// bounds runs the three figures.
func (b *bench) bounds() {
	b.outputBudgetRSS()
	b.bigStarts()
	b.connFlood()
}

// outputBudgetRSS: 2 identities x 400 finished jobs x 1 MiB of random output, within a 64 MiB budget.
func (b *bench) outputBudgetRSS() {
	const budget, jobs = 64 << 20, 400
	b.t.Log("output budget: 2 x 400 finished jobs of 1 MiB ...")
	srv := b.boundsServer("budget", "-output_budget", fmt.Sprint(budget))
	defer srv.stop(b.t)
	rss0 := benchProcKB(srv.pid(), "VmRSS")
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		_, c := b.dial(srv, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				id, err := c.Start(context.Background(), cmd("head", "-c", "1048576", "/dev/urandom"))
				for st := (*rpcpb.JobStatus)(nil); err == nil && (st == nil || st.State == rpcpb.JobStatus_STATE_RUNNING); {
					time.Sleep(2 * time.Millisecond) // until it has ended on its own
					st, err = c.Status(context.Background(), id)
				}
				if err != nil {
					b.t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rss := benchProcKB(srv.pid(), "VmRSS")
	b.detail("output budget %d MiB: server RSS %d MiB before, %d MiB after 2 x %d finished jobs of 1 MiB random output",
		budget>>20, rss0>>10, rss>>10, jobs)
	b.rows = append(b.rows, benchRow{fmt.Sprintf("server RSS after 2 × %d finished 1 MiB jobs, -output_budget %d MiB", jobs, budget>>20),
		fmt.Sprintf("%d MiB", rss>>10), "", "", fmt.Sprintf("≤ budget + 64 MiB = %d MiB", (budget>>20)+64),
		map[bool]string{true: "yes", false: "NO"}[rss>>10 <= budget>>20+64]})
}

// bigStarts: 256 concurrent Starts of just under gRPC's 1 MiB message bound from one identity, which
// validation refuses (over 512 KiB of command): the RSS they cost beyond the in-flight bound's share.
func (b *bench) bigStarts() {
	const n, perClient = 256, 64
	b.t.Log("256 concurrent maximum-size Starts ...")
	srv := b.boundsServer("bigstarts")
	defer srv.stop(b.t)
	_, c := b.dial(srv, "a")
	rss0 := benchProcKB(srv.pid(), "VmRSS")
	arg := strings.Repeat("x", maxRequestBytes-1024) // just under what the server reads
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	peak := rss0
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				mu.Lock()
				peak = max(peak, benchProcKB(srv.pid(), "VmRSS"))
				mu.Unlock()
			}
		}
	}()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Start(context.Background(), cmd("echo", arg))
			mu.Lock()
			codes[fmt.Sprint(grpcCode(err))]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(stop)
	mu.Lock()
	growth := float64(peak-rss0) / 1024
	mu.Unlock()
	share := float64(perClient*maxRequestBytes) / (1 << 20) // MiB: the requests one client may have in flight
	b.detail("256 concurrent Starts of %d KiB from one client: answers %v; server RSS %d MiB before, peak %d MiB (+%.0f MiB)",
		len(arg)>>10, codes, rss0>>10, peak>>10, growth)
	b.rows = append(b.rows, benchRow{fmt.Sprintf("256 concurrent maximum-size Starts, one client: RSS growth beyond its in-flight share (%d × %d KiB)", perClient, maxRequestBytes>>10),
		fmt.Sprintf("%.0f MiB", growth-share), "", "", "≤ 64 MiB", map[bool]string{true: "yes", false: "NO"}[growth-share <= 64]})
}

// connFlood: 3,000 idle TCP connections (no ClientHello) from 127.0.0.2, then 1,000 new ones a second
// for 10 s from 127.0.0.3-12, beside an established client calling Status and a new client dialling.
func (b *bench) connFlood() {
	b.t.Log("connection flood ...")
	srv := b.boundsServer("flood")
	defer srv.stop(b.t)
	_, est := b.dial(srv, "a")
	id, err := est.Start(context.Background(), cmd("sleep", "3600"))
	if err != nil {
		b.t.Fatal(err)
	}
	rss0 := benchProcKB(srv.pid(), "VmRSS")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(ip string) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: time.Second}
		if c, err := d.Dial("tcp", srv.addr); err == nil {
			conns = append(conns, c)
		}
	}
	for range 3000 {
		dial("127.0.0.2")
	}
	var lat, first []float64
	end := time.Now().Add(10 * time.Second)
	for tick := 0; time.Now().Before(end); tick++ {
		for i := range 100 { // 100 per 100 ms
			dial(fmt.Sprintf("127.0.0.%d", 3+i%10))
		}
		t0 := time.Now()
		if _, err := est.Status(context.Background(), id); err != nil {
			b.t.Errorf("established client's Status during the flood: %v", err)
		}
		lat = append(lat, benchMs(time.Since(t0)))
		if tick%10 == 5 { // once a second, a new client
			t0 = time.Now()
			conn, c := b.dial(srv, "b")
			if _, err := c.List(context.Background(), &rpcpb.ListRequest{}); err != nil {
				b.t.Errorf("new client during the flood: %v", err)
			}
			first = append(first, time.Since(t0).Seconds())
			conn.Close()
		}
		time.Sleep(time.Until(t0.Add(100 * time.Millisecond)))
	}
	rss := benchProcKB(srv.pid(), "VmRSS")
	est.Stop(context.Background(), id)
	b.detail("connection flood (%d TCP connections opened, none sends a ClientHello): established Status %s; a new client's "+
		"dial + first RPC %s; server RSS %d -> %d MiB", len(conns), benchSummary(lat, "ms"), benchSummary(first, "s"), rss0>>10, rss>>10)
	p99, worst, growth := benchPct(lat, .99), slices.Max(first), float64(rss-rss0)/1024
	b.rows = append(b.rows,
		benchRow{"established client's Status during a connection flood: p99", fmt.Sprintf("%.1f ms", p99), "", "", "≤ 50 ms",
			map[bool]string{true: "yes", false: "NO"}[p99 <= 50]},
		benchRow{"↳ a new client's dial and first RPC during it: max", fmt.Sprintf("%.2f s", worst), "", "", "≤ 1 s",
			map[bool]string{true: "yes", false: "NO"}[worst <= 1]},
		benchRow{"↳ server RSS growth", fmt.Sprintf("%.0f MiB", growth), "", "", "≤ 128 MiB",
			map[bool]string{true: "yes", false: "NO"}[growth <= 128]})
}

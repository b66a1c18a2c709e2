package main

// The server-wide bounds figures of `make bench` (issue 12): what finished jobs' output and a burst of
// maximum-size Starts cost the static server's RSS, and how established and new clients fare beside
// a flood of connections that never send a ClientHello.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

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
	b.idleFloods()
	b.frameFloods()
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
	const n, perClient = 256, 128 // -max_requests_per_client's default, passed as the flag to keep them one
	b.t.Log("256 concurrent maximum-size Starts ...")
	srv := b.boundsServer("bigstarts", "-max_requests_per_client", fmt.Sprint(perClient))
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
// for 10 s from 127.0.0.3-12, beside an established client calling Status and a new client dialling
// from 127.0.1.1 (the flood's /24 has its own -max_pending_conns_per_prefix, and keeps it busy).
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
		if tick%10 == 5 { // once a second, a new client, from another /24 than the flood's
			t0 = time.Now()
			conn, c := b.dial(srv, "b", grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, 1)}}
				return d.DialContext(ctx, "tcp", addr)
			}))
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

// idleFloods (issue 23): one identity holds 990 of the 1,000 connection slots with idle TLS+h2
// connections; then 50 /24s hold 8 silent sockets each (400, past the 256 handshake slots). Meanwhile
// a client of another identity dials and calls List, 10 times in each.
func (b *bench) idleFloods() {
	b.t.Log("idle connection floods ...")
	srv := b.boundsServer("idleflood")
	defer srv.stop(b.t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 990 {
		c, err := dialH2(b.pki, srv.addr, "a")
		if err != nil {
			b.t.Fatalf("idle connection %d: %v", len(conns), err)
		}
		var out bytes.Buffer
		writePreface(&out)
		c.Write(out.Bytes())
		conns = append(conns, c)
	}
	newClient := func() []float64 {
		var ts []float64
		for range 10 {
			t0 := time.Now()
			conn, c := b.dial(srv, "b") // from 127.0.0.1
			if _, err := c.List(context.Background(), &rpcpb.ListRequest{}); err != nil {
				b.t.Errorf("new client during an idle flood: %v", err)
			}
			ts = append(ts, time.Since(t0).Seconds())
			conn.Close()
		}
		return ts
	}
	byIdentity := newClient()
	for p := range 50 {
		for h := range 8 {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+p), byte(1+h))}, Timeout: time.Second}
			if c, err := d.Dial("tcp", srv.addr); err == nil {
				conns = append(conns, c)
			}
		}
	}
	time.Sleep(stalledAfter) // the attack is on: every socket has been silent long enough to give way
	byPrefixes := newClient()
	b.detail("idle floods: with 990 idle connections of one identity, a new client's dial + List %s; with 8 silent "+
		"sockets from each of 50 /24s, %s", benchSummary(byIdentity, "s"), benchSummary(byPrefixes, "s"))
	for _, f := range []struct {
		name string
		ts   []float64
	}{
		{"a new client's dial and List beside 990 idle connections of one identity: max", byIdentity},
		{"↳ beside 400 silent sockets from 50 /24s: max", byPrefixes},
	} {
		worst := slices.Max(f.ts)
		b.rows = append(b.rows, benchRow{f.name, fmt.Sprintf("%.2f s", worst), "", "", "≤ 1 s",
			map[bool]string{true: "yes", false: "NO"}[worst <= 1]})
	}
}

// frameFloods (issue 23): 256 Starts of 576 KiB declared from two identities (128 each, one
// connection each), their bodies sent as one-byte DATA frames for up to 3 s, the server's RSS sampled;
// then WINDOW_UPDATE frames as fast as 8 connections can send them for up to 3 s, beside an
// established client calling List every 100 ms. A connection the server closes is not opened again:
// what a reconnecting attacker costs is a handshake each time, as the connection flood above.
func (b *bench) frameFloods() {
	b.t.Log("small-frame floods ...")
	srv := b.boundsServer("frameflood")
	defer srv.stop(b.t)
	_, est := b.dial(srv, "a")
	rss0 := benchProcKB(srv.pid(), "VmRSS")
	var peak int64
	// flood sends, on each of n connections, first's frames and then repeat's until the server closes it
	// or 3 s have passed; it returns the established client's latencies and the connections closed.
	flood := func(n int, first, repeat func(*bytes.Buffer)) (lat []float64, closed int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var conns []*tls.Conn
		for i := range n { // one after the other: a burst from one /24 would meet -max_pending_conns_per_prefix
			c, err := dialH2(b.pki, srv.addr, []string{"a", "b"}[i%2])
			if err != nil {
				b.t.Fatal(err)
			}
			conns = append(conns, c)
		}
		end := time.Now().Add(3 * time.Second)
		for _, c := range conns {
			wg.Go(func() {
				defer c.Close()
				var err error
				var out bytes.Buffer
				writePreface(&out)
				first(&out)
				c.SetWriteDeadline(end)
				for err == nil && time.Now().Before(end) {
					repeat(&out)
					_, err = c.Write(out.Bytes())
					out.Reset()
				}
				if err != nil && time.Now().Before(end) {
					mu.Lock()
					closed++
					mu.Unlock()
				}
			})
		}
		for time.Now().Before(end) {
			t0 := time.Now()
			if _, err := est.List(context.Background(), &rpcpb.ListRequest{}); err != nil {
				b.t.Errorf("established client during a frame flood: %v", err)
			}
			lat = append(lat, benchMs(time.Since(t0)))
			peak = max(peak, benchProcKB(srv.pid(), "VmRSS"))
			time.Sleep(time.Until(t0.Add(100 * time.Millisecond)))
		}
		wg.Wait()
		return lat, closed
	}
	small, smallClosed := flood(256, func(out *bytes.Buffer) {
		startHeaders(out, 1)
		writeFrame(out, 0, 0, 1, []byte{0, 0, 9, 0, 0}) // a message of 576 KiB declared
	}, func(out *bytes.Buffer) {
		for range 1000 {
			writeFrame(out, 0, 0, 1, []byte{'x'})
		}
	})
	smallPeak := peak
	control, controlClosed := flood(8, func(*bytes.Buffer) {}, func(out *bytes.Buffer) {
		for range 1000 {
			writeFrame(out, 8, 0, 0, []byte{0, 0, 0, 1})
		}
	})
	share := float64(128*maxRequestBytes) / (1 << 20)
	growth := float64(smallPeak-rss0) / 1024
	b.detail("small-frame floods: 256 one-byte-frame Starts (%d connections closed by the server), server RSS %d -> "+
		"peak %d MiB, established List %s; WINDOW_UPDATE flood from 8 connections (%d closed), established List %s",
		smallClosed, rss0>>10, smallPeak>>10, benchSummary(small, "ms"), controlClosed, benchSummary(control, "ms"))
	p99 := benchPct(control, .99)
	b.rows = append(b.rows,
		benchRow{fmt.Sprintf("256 Starts sent as one-byte DATA frames: RSS growth beyond the in-flight share (128 × %d KiB)",
			maxRequestBytes>>10), fmt.Sprintf("%.0f MiB", growth-share), "", "", "≤ 64 MiB",
			map[bool]string{true: "yes", false: "NO"}[growth-share <= 64]},
		benchRow{"established client's List during a WINDOW_UPDATE flood from 8 connections: p99",
			fmt.Sprintf("%.1f ms", p99), "", "", "≤ 50 ms", map[bool]string{true: "yes", false: "NO"}[p99 <= 50]})
}

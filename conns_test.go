package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"rund/rpcpb"
)

// TestHandshakeBounds: peers that open TCP connections and never send a ClientHello get at most
// max_pending_conns_per_ip of them held (the rest are closed at once), and lose those after the
// handshake deadline; a client from another address is served meanwhile.
func TestHandshakeBounds(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.maxPendingPerPrefix, c.conns.maxPending = 4, 6 })
	a := ts.dialAs(t, "a") // 127.0.0.1
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	var idle []net.Conn
	for range 10 {
		c, err := d.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	closedAtOnce, held := 0, 0
	results := make(chan error, len(idle))
	for _, c := range idle { // all at once: the held ones wait out the deadline together
		go func() {
			c.SetReadDeadline(time.Now().Add(2 * time.Second)) // well inside the 5 s handshake deadline
			_, err := c.Read(make([]byte, 1))
			results <- err
		}()
	}
	for range idle {
		switch err := <-results; {
		case errors.Is(err, io.EOF) || isReset(err):
			closedAtOnce++
		case isTimeout(err):
			held++
		}
	}
	if held != 4 || closedAtOnce != 6 {
		t.Errorf("of 10 silent connections from one address, %d were held and %d closed at once; want 4 and 6", held, closedAtOnce)
	}
	if _, err := a.List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Errorf("a client from another address: %v", err)
	}
	// The held ones are closed by the server once the 5 s handshake deadline passes.
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
			t.Errorf("a silent connection outlived the handshake deadline")
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// TestRequestsInFlightBound: past max_requests_per_client a client's new request is refused with
// ResourceExhausted before it runs, another client is not held back, and the place comes back when
// a request ends. Two Stops of jobs that ignore SIGTERM stay in flight for their grace period (10 s).
func TestRequestsInFlightBound(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.maxInflightPerClient = 2 })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	c1, cancel1 := context.WithCancel(ctx(t))
	defer cancel1()
	var jobs []*job
	for range 2 {
		req := cmd("sh", "-c", "trap '' TERM; echo ready; exec sleep 1000")
		req.StopGracePeriod = durationpb.New(10 * time.Second) // outlasts the setup of both, however slow the host
		id := startJob(t, a, req)
		j, _ := ts.m.get(id, []string{"dns:a"})
		// The trap is set once "ready" is out. Read on the server's side: a log stream of a's would count
		// against its bound too, and ends there only some time after its client goes.
		buf := make([]byte, 64)
		if n, _, _, _, err := j.log.Read(ctx(t), 0, buf, true); err != nil || string(buf[:n]) != "ready\n" {
			t.Fatalf("job's first output %q, %v", buf[:n], err)
		}
		jobs = append(jobs, j)
		go a.Stop(c1, &rpcpb.JobIdentifier{Ulid: id})
	}
	for _, j := range jobs { // both Stop handlers run: two requests in flight (bounded wait)
		for deadline := time.Now().Add(3 * time.Second); !j.snapshot().stopRequested && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	_, err := a.List(ctx(t), &rpcpb.ListRequest{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a's third request while two Stops wait: %v, want ResourceExhausted", err)
	}
	if _, err := b.List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Errorf("b while a is at its bound: %v", err)
	}
	cancel1() // the Stops' callers go; their requests end
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err = a.List(ctx(t), &rpcpb.ListRequest{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("a after its requests ended: %v", err)
	}
}

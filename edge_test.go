package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"rund/rpcpb"
)

// Tests of issue 23, the edge's second round: connections that give way, idle and body deadlines.
// Loopback is 127/8, so sources in other /24s stand for other prefixes.

// dialFrom opens a TCP connection to the server from the loopback address ip.
func dialFrom(t *testing.T, ts *testServer, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c (a read ends in EOF or a reset, after any frames it
// sends first) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !isTimeout(err)
}

// rawH2 is a connection of client name that has done its TLS handshake and sent the HTTP/2 preface and
// an empty SETTINGS frame, and then nothing: a client that holds a connection idle.
func rawH2(t *testing.T, ts *testServer, name string) *tls.Conn {
	t.Helper()
	c, err := dialH2(ts.pki, ts.addr, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var out bytes.Buffer
	writePreface(&out)
	if _, err := c.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	return c
}

// dialH2 opens a TLS connection to addr as client name, offering h2 as grpc-go's client does, and
// sends nothing over it.
func dialH2(pki *testPKI, addr, name string) (*tls.Conn, error) {
	cfg, err := clientTLS(pki.file("ca.crt"), pki.file(name+".crt"), pki.file(name+".key"))
	if err != nil {
		return nil, err
	}
	cfg.NextProtos, cfg.ServerName = []string{"h2"}, "localhost"
	return tls.Dial("tcp", addr, cfg)
}

// writePreface writes the HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 3.4).
func writePreface(out *bytes.Buffer) {
	out.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	writeFrame(out, 4, 0, 0, nil)
}

// listWithin calls List as a new client of name, which must succeed within d.
func listWithin(t *testing.T, ts *testServer, name string, d time.Duration) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	began := time.Now()
	if _, err := ts.dialAs(t, name).List(c, &rpcpb.ListRequest{}); err != nil {
		t.Errorf("a new client %s during the attack: List after %v: %v", name, time.Since(began), err)
	}
}

// TestStalledHandshakeGivesWay: with every handshake slot taken by sockets from other prefixes, a new
// client is served: the handshake that has read nothing the longest is dropped for it, and one that is
// sending bytes outlasts older silent ones (item 2).
func TestStalledHandshakeGivesWay(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.maxPending, c.conns.maxPendingPerPrefix = 4, 2 })
	sending := dialFrom(t, ts, "127.0.1.1") // the oldest, but it sends
	var silent []net.Conn
	for _, ip := range []string{"127.0.2.1", "127.0.2.2", "127.0.3.1"} {
		silent = append(silent, dialFrom(t, ts, ip))
	}
	time.Sleep(stalledAfter)              // the silent ones' last read is older than the sender's, and stalled
	sending.Write([]byte{0x16})           // the first byte of a TLS record: the server reads it
	time.Sleep(200 * time.Millisecond)    // for the server to read it: nothing tells the client it has
	listWithin(t, ts, "a", 5*time.Second) // from 127.0.0.1, a fifth prefix
	if !closedWithin(silent[0], 2*time.Second) {
		t.Error("the oldest silent handshake was kept, and the new client served past the bound")
	}
	if closedWithin(sending, 500*time.Millisecond) {
		t.Error("a handshake that was sending was dropped before the silent ones")
	}
	// Past the per-prefix bound, the prefix's own oldest handshake goes: 127.0.2.x has one left.
	dialFrom(t, ts, "127.0.2.3")
	dialFrom(t, ts, "127.0.2.4")
	if !closedWithin(silent[1], 2*time.Second) {
		t.Error("a third handshake from one /24 did not take the place of that prefix's oldest")
	}
}

// TestIdleConnectionsGiveWay: one identity that holds every connection slot idle does not lock out
// another client, which is served at once in place of the connection idle the longest; connections
// with a request in flight are never taken, and a new one is refused when all are busy (item 1).
func TestIdleConnectionsGiveWay(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.maxConns = 4 })
	var idle []*tls.Conn
	for range 4 {
		idle = append(idle, rawH2(t, ts, "a"))
	}
	time.Sleep(stalledAfter) // idle long enough to give way
	listWithin(t, ts, "b", 5*time.Second)
	if !closedWithin(idle[0], 2*time.Second) {
		t.Error("the connection idle the longest was not the one closed")
	}
	// Four connections busy with a log stream each: a fifth is refused, and no busy one is taken.
	id := startJob(t, ts.dialAs(t, "a"), cmd("sh", "-c", "echo ready; exec sleep 1000"))
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	time.Sleep(stalledAfter) // b's and the Start's connections are idle long enough to give way too
	var streams []grpc.ServerStreamingClient[rpcpb.JobLog]
	for range 4 {
		s, err := ts.dialAs(t, "a").ReadLog(c, &rpcpb.LogRequest{Ulid: id})
		if err == nil {
			_, err = s.Recv() // the stream is open on the server
		}
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	if _, err := ts.dialAs(t, "b").List(ctx(t), &rpcpb.ListRequest{}); err == nil {
		t.Error("a fifth connection was served while four were busy (-max_conns 4)")
	}
	cancel()
	for _, s := range streams {
		if _, err := s.Recv(); err == nil {
			t.Error("a busy log stream got a message; want its end at the cancel")
		}
	}
}

// TestIdleConnectionClosed: a connection that sends nothing after its handshake, and one whose last
// request has ended, are closed after -conn_idle_timeout (item 1).
func TestIdleConnectionClosed(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.idle = time.Second })
	if !closedWithin(rawH2(t, ts, "a"), 10*time.Second) {
		t.Error("a connection that never sent a request outlived -conn_idle_timeout 1s by 9 s")
	}
	cfg, err := clientTLS(ts.pki.file("ca.crt"), ts.pki.file("a.crt"), ts.pki.file("a.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := rpcpb.NewJobControllerClient(conn).List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(c, s) {
			t.Fatal("a connection idle since its last request outlived -conn_idle_timeout 1s by 9 s")
		}
	}
}

// TestRequestBodyDeadline: a request whose headers came but whose message never does is ended by the
// server after -request_body_timeout, with its place in flight given back (item 3).
func TestRequestBodyDeadline(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.conns.requestBody, c.conns.maxInflightPerClient = time.Second, 1 })
	conn := rawH2(t, ts, "a")
	var out bytes.Buffer
	startHeaders(&out, 1)
	msg := []byte{0, 0, 0, 1, 0, 'x'} // a message of 256 bytes declared, one sent
	writeFrame(&out, 0, 0, 1, msg)
	if _, err := conn.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for ended := false; !ended; {
		var h [9]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			t.Fatalf("read a frame: %v; want the stream of the unfinished body ended by the server", err)
		}
		if _, err := io.CopyN(io.Discard, conn, int64(int(h[0])<<16|int(h[1])<<8|int(h[2]))); err != nil {
			t.Fatal(err)
		}
		stream := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
		ended = stream == 1 && (h[3] == 3 || h[3] == 1 && h[4]&1 != 0) // RST_STREAM, or trailers
	}
	// Its place in flight is back: the identity's one request may run again.
	listWithin(t, ts, "a", 5*time.Second)
}

// TestHoldOutputReleasedAtEnd: finished jobs started with hold_output whose output no lossless reader
// came for do not pin the output budget: another client's job still keeps all of its output (item 4).
func TestHoldOutputReleasedAtEnd(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.outputBudget, c.ringSize = 2<<20+64<<10, 1<<20 })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	for range 3 { // each ring grows to 512 KiB: 1.5 MiB of the budget, held
		req := cmd("head", "-c", "300000", "/dev/zero")
		req.HoldOutput = true
		waitDone(t, a, startJob(t, a, req)) // a lossy reader: the hold stays for a lossless one
	}
	id := startJob(t, b, cmd("head", "-c", "1048576", "/dev/zero"))
	waitDone(t, b, id)
	if out, _ := readAll(t, b, id); len(out) != 1<<20 {
		t.Errorf("b's job kept %d bytes of its 1 MiB output; a's finished held rings were not given up", len(out))
	}
}

// startHeaders is the HEADERS frame (END_HEADERS, not END_STREAM) of a Start on stream id.
func startHeaders(out *bytes.Buffer, id uint32) {
	writeFrame(out, 1, 0x4, id, hpackLiterals([][2]string{{":method", "POST"}, {":scheme", "https"},
		{":path", "/rund.JobController/Start"}, {":authority", "localhost"}, {"content-type", "application/grpc"},
		{"te", "trailers"}}))
}

// TestSmallFramesClosed: a request body sent in one-byte DATA frames (each of which grpc-go holds apart,
// at some 50 times its size) and a flood of control frames each get their connection closed, while
// the server serves on; a request in ordinary frames on the same kind of connection is served (items 3
// and 6).
func TestSmallFramesClosed(t *testing.T) {
	ts := startServer(t)
	for _, tc := range []struct {
		name   string
		frames func(*bytes.Buffer)
	}{
		{"one-byte DATA frames", func(out *bytes.Buffer) {
			startHeaders(out, 1)
			writeFrame(out, 0, 0, 1, []byte{0, 0, 8, 0, 0}) // a message of 512 KiB declared
			for range 2 * maxSmallData {
				writeFrame(out, 0, 0, 1, []byte{'x'})
			}
		}},
		{"WINDOW_UPDATE frames", func(out *bytes.Buffer) { // grpc-go itself closes on too many PINGs
			for range 2 * maxControlFrames {
				writeFrame(out, 8, 0, 0, []byte{0, 0, 0, 1})
			}
		}},
		{"empty DATA frames", func(out *bytes.Buffer) {
			startHeaders(out, 1)
			for range 2 * maxControlFrames {
				writeFrame(out, 0, 0, 1, nil)
			}
		}},
	} {
		conn := rawH2(t, ts, "a")
		var out bytes.Buffer
		tc.frames(&out)
		go conn.Write(out.Bytes()) // the server may close before it has read it all
		if !closedWithin(conn, 10*time.Second) {
			t.Errorf("%s: the connection was kept", tc.name)
		}
	}
	listWithin(t, ts, "a", 5*time.Second)
}

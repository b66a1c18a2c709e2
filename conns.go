//go:build !rundinit

package main

// conns.go bounds what peers can hold of the server before and after they authenticate: open
// connections in all, those still in their TLS handshake (a peer needs no certificate to open one) per
// source prefix (/24 of IPv4, /64 of IPv6: one host commonly holds a whole /64) and in all, and
// requests in flight per client identity and in all. At a connection bound the connection that has
// waited longest, a second at least, gives way to the new one: a handshake that has read nothing the
// longest, or an established connection idle the longest. So a silent socket ages out before one that
// is sending, and no one holds idle connections against a new client; one identity can keep busy at
// most -max_requests_per_client of them. Only when none may give way is the new one closed at once.
// Past a request bound a new request is refused with ResourceExhausted.
//
// Every count is taken from the table of open connections when it is needed: there are at most
// -max_conns of them, and no count can drift from what it counts.
//
// Goroutines: none of its own. connTable.Accept runs in grpc-go's accept loop, boundedCreds in its
// per-connection handshake goroutine, admitRequest in each connection's reader; a request's release
// runs in the goroutine context.AfterFunc starts when its stream ends, a body deadline in the one its
// timer starts.

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// connBounds are the serve flags of this file.
type connBounds struct {
	maxConns, maxPending, maxPendingPerPrefix int
	maxInflight, maxInflightPerClient         int
	idle                                      time.Duration // an idle connection is sent a GOAWAY (server.go)
	requestBody                               time.Duration // from a request's headers to its whole message
}

// connTable is a listener that admits a connection only within the bounds, and the table of the
// connections it admitted that are still open.
type connTable struct {
	net.Listener
	b connBounds

	mu    sync.Mutex // guards conns, and the fields of each boundedConn marked t.mu
	conns map[*boundedConn]bool
}

func newConnTable(l net.Listener, b connBounds) *connTable {
	return &connTable{Listener: l, b: b, conns: map[*boundedConn]bool{}}
}

// boundedConn is an admitted connection.
type boundedConn struct {
	net.Conn
	t      *connTable
	prefix string       // its source's /24 or /64
	read   atomic.Int64 // when it was accepted or last read bytes, in Unix ns: a silent handshake ages

	handshaking bool      // t.mu
	client      string    // t.mu: identityKey of its certificate, once its handshake succeeded
	requests    int       // t.mu: in flight
	idleSince   time.Time // t.mu: when its last request ended, or its handshake did
}

// Accept returns the next connection within the bounds, closing the others at once.
func (t *connTable) Accept() (net.Conn, error) {
	for {
		c, err := t.Listener.Accept()
		if err != nil {
			return nil, err
		}
		bc := &boundedConn{Conn: c, t: t, prefix: sourcePrefix(c.RemoteAddr()), handshaking: true}
		bc.read.Store(time.Now().UnixNano())
		if t.admit(bc) {
			return bc, nil
		}
		c.Close()
	}
}

// admit adds c to the table if each bound has room for it, or can make room; the most specific bound
// is tried first, so that a prefix full of handshakes costs no one else a connection.
func (t *connTable) admit(c *boundedConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pendingInPrefix := func(o *boundedConn) bool { return o.handshaking && o.prefix == c.prefix }
	pending := func(o *boundedConn) bool { return o.handshaking }
	all := func(o *boundedConn) bool { return true }
	if !t.makeRoom(t.b.maxPendingPerPrefix, pendingInPrefix) || !t.makeRoom(t.b.maxPending, pending) ||
		!t.makeRoom(t.b.maxConns, all) {
		return false
	}
	t.conns[c] = true
	return true
}

// stalledAfter is how long a handshake must have received nothing, or an established connection have
// had no request in flight, before it may give way: a burst of new clients does not push out each
// other's handshakes, nor a busy server its clients between two calls.
const stalledAfter = time.Second

// makeRoom returns true if fewer than max connections of the table are in the group, or once it has
// closed the one of them that has waited longest, stalledAfter at least: a handshake, or an
// established connection with no request in flight (quietSince). False: none may give way. Caller
// holds t.mu.
func (t *connTable) makeRoom(max int, in func(*boundedConn) bool) bool {
	n := 0
	var oldest *boundedConn
	stalled := time.Now().Add(-stalledAfter)
	for o := range t.conns {
		if !in(o) {
			continue
		}
		n++
		quiet := (o.handshaking || o.requests == 0) && o.quietSince().Before(stalled)
		if quiet && (oldest == nil || o.quietSince().Before(oldest.quietSince())) {
			oldest = o
		}
	}
	if n < max {
		return true
	}
	if oldest == nil {
		return false
	}
	delete(t.conns, oldest)
	oldest.Conn.Close() // its own Close takes t.mu; grpc-go calls it as it sees the connection end
	return true
}

// quietSince is when a handshake last read bytes (or was accepted), or when an established connection
// became idle. Caller holds t.mu.
func (c *boundedConn) quietSince() time.Time {
	if c.handshaking {
		return time.Unix(0, c.read.Load())
	}
	return c.idleSince
}

func (c *boundedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *boundedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// sourcePrefix is the /24 of an IPv4 peer or the /64 of an IPv6 one.
func sourcePrefix(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	bits := 64
	if ap.Addr().Unmap().Is4() {
		bits = 24
	}
	p, _ := ap.Addr().Unmap().Prefix(bits)
	return p.String()
}

// connInfo is what a call's peer carries as its AuthInfo: the TLS state, the connection it came on, and
// the server's CRL as SIGHUP last read it (tls.go), which callerIdentity checks on each call.
type connInfo struct {
	credentials.TLSInfo
	conn *boundedConn
	crl  *atomic.Pointer[crlSet]
}

// boundedCreds ends a boundedConn's handshake as its client's, and counts its frames from then on
// (frames.go).
type boundedCreds struct {
	credentials.TransportCredentials
	crl *atomic.Pointer[crlSet]
}

func (b boundedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, ok := raw.(*boundedConn)
	if !ok {
		return nil, nil, errNoIdentity
	}
	conn, auth, err := b.TransportCredentials.ServerHandshake(c)
	if err != nil {
		auditHandshake(c.RemoteAddr().String(), err)
		return nil, nil, err
	}
	info := connInfo{TLSInfo: auth.(credentials.TLSInfo), conn: c, crl: b.crl}
	leaf := verifiedLeaf(info.State)
	if leaf == nil {
		conn.Close()
		return nil, nil, errNoIdentity
	}
	c.t.mu.Lock()
	c.handshaking, c.client, c.idleSince = false, identityKey(certIdentity(leaf)), time.Now()
	c.t.mu.Unlock()
	return newFrameCounter(conn), info, nil
}

// admitRequest counts a request within the bounds, from when its headers arrive, before its body is read,
// to the end of its stream's context; or refuses it (errExhausted). It runs in a tap.ServerInHandle
// (server.go), whose context carries the authenticated peer.
func admitRequest(ctx context.Context) error {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(connInfo)
	if !ok {
		return clientErr(errNoIdentity, "no verified client certificate")
	}
	c, t := info.conn, info.conn.t
	t.mu.Lock()
	defer t.mu.Unlock()
	all, mine := 0, 0
	for o := range t.conns {
		all += o.requests
		if o.client == c.client {
			mine += o.requests
		}
	}
	if all >= t.b.maxInflight || mine >= t.b.maxInflightPerClient {
		return clientErr(errExhausted,
			"too many requests in flight (%d of yours at most, %d in all); retry when some are done",
			t.b.maxInflightPerClient, t.b.maxInflight)
	}
	c.requests++
	context.AfterFunc(ctx, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		c.requests--
		c.idleSince = time.Now()
	})
	return nil
}

// bodyTimer is the context key of a request's body deadline.
type bodyTimer struct{}

// bodyDeadline gives a request's message d to arrive: grpc-go holds what a stream has received until it
// is read whole, so a body sent slowly, or in many small frames, would hold its memory for as long as
// its sender liked. At d the stream's context is cancelled (the client sees Canceled) unless
// bodyArrived (server.go's interceptors, once the message is read) stopped the clock.
func bodyDeadline(ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	return context.WithValue(ctx, bodyTimer{}, time.AfterFunc(d, cancel))
}

func bodyArrived(ctx context.Context) {
	if t, ok := ctx.Value(bodyTimer{}).(*time.Timer); ok {
		t.Stop()
	}
}

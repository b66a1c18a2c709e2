package main

// conns.go bounds what peers can hold of the server before and after they authenticate: open
// connections in all, connections still in their TLS handshake per source address and in all (a peer
// needs no certificate to open one), and requests in flight per client identity and in all. Past a
// bound a new connection is closed at once and a new request is refused with ResourceExhausted, while
// established clients keep being served.
//
// Goroutines: none of its own. connLimiter runs in grpc-go's accept loop, boundedCreds in its
// per-connection handshake goroutine, inflight.admit in each connection's reader; the release of a
// request's place runs in the goroutine context.AfterFunc starts when that request's stream ends.

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// connBounds are the serve flags of this file.
type connBounds struct {
	maxConns, maxPending, maxPendingPerIP int
	maxInflight, maxInflightPerClient     int
}

// connLimiter is a listener that admits a connection only within the bounds.
type connLimiter struct {
	net.Listener
	b connBounds

	mu      sync.Mutex     // guards the fields below
	open    int            // connections accepted and not yet closed
	pending map[string]int // connections in their handshake, by source IP
	waiting int            // connections in their handshake in all
}

func newConnLimiter(l net.Listener, b connBounds) *connLimiter {
	return &connLimiter{Listener: l, b: b, pending: map[string]int{}}
}

// Accept returns the next connection within the bounds, closing the others at once.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		l.mu.Lock()
		ok := l.open < l.b.maxConns && l.waiting < l.b.maxPending && l.pending[ip] < l.b.maxPendingPerIP
		if ok {
			l.open, l.waiting = l.open+1, l.waiting+1
			l.pending[ip]++
		}
		l.mu.Unlock()
		if ok {
			return &boundedConn{Conn: c, l: l, ip: ip, handshaking: true}, nil
		}
		c.Close()
	}
}

// boundedConn is an admitted connection; it gives its place back when its handshake ends and when it
// closes.
type boundedConn struct {
	net.Conn
	l  *connLimiter
	ip string

	once        sync.Once
	handshaking bool // l.mu
}

// handshakeDone ends the connection's count as one in its handshake.
func (c *boundedConn) handshakeDone() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.handshaking {
		c.handshaking = false
		c.l.waiting--
		decCount(c.l.pending, c.ip)
	}
}

func (c *boundedConn) Close() error {
	c.once.Do(func() {
		c.handshakeDone()
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// boundedCreds tells a boundedConn when its TLS handshake has ended, however it ended.
type boundedCreds struct {
	credentials.TransportCredentials
}

func (b boundedCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if bc, ok := c.(*boundedConn); ok {
		defer bc.handshakeDone()
	}
	return b.TransportCredentials.ServerHandshake(c)
}

// inflight counts requests from when their headers arrive, before their bodies are read, to the end of
// their stream's context.
type inflight struct {
	b connBounds

	mu       sync.Mutex     // guards the fields below
	all      int            // requests in flight
	byClient map[string]int // by identityKey
}

// admit counts a request within the bounds, or refuses it (errExhausted). It runs in a
// tap.ServerInHandle (server.go), whose context carries the authenticated peer.
func (f *inflight) admit(ctx context.Context) error {
	caller, err := callerIdentity(ctx)
	if err != nil {
		return err
	}
	key := identityKey(caller)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.all >= f.b.maxInflight || f.byClient[key] >= f.b.maxInflightPerClient {
		return clientErr(errExhausted,
			"too many requests in flight (%d of yours at most, %d in all); retry when some are done",
			f.b.maxInflightPerClient, f.b.maxInflight)
	}
	f.all++
	f.byClient[key]++
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.all--
		decCount(f.byClient, key)
	})
	return nil
}

// decCount counts one less for key in a map of counts, which keeps no zero entry.
func decCount(counts map[string]int, key string) {
	counts[key]--
	if counts[key] == 0 {
		delete(counts, key)
	}
}

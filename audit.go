//go:build !rundinit

package main

// audit.go is the trail of who did what (issue 25): one line, through log/slog, for every Start, Stop and
// Signal and every refused call (auditCall, from server.go's interceptors), for every TLS handshake
// refused for its certificate (auditHandshake, conns.go), and for every job's end (auditEnd, job.go).
// rund serve's other log lines go through the same handler (-log_format text or json).
//
// Bounded: a command line is cut at auditArgvBytes, and so are the names a refused certificate claims;
// environment values are never written, only keys. Refused calls and handshakes, which anyone with a
// socket or a certificate can make at will, are rate-limited (refusedLines); the next line let through
// counts what was suppressed. The lines of calls that succeed are not: each is a client's own action,
// bounded by the server's request bounds.

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

// auditArgvBytes bounds the quoted command line, environment keys or claimed names of one line.
const auditArgvBytes = 1024

// refusedLines lets through the trail's lines of refused calls and handshakes: 20 a second.
var refusedLines = &lineLimit{perSecond: 20}

// auditCall writes the line of one call: every Start, Stop and Signal, and any call refused
// (PermissionDenied, NotFound, Unauthenticated). req and resp are nil where unknown; err is the
// client's, after publicError.
func auditCall(ctx context.Context, method string, req, resp any, err error) {
	code := status.Code(err)
	op := path.Base(method)
	refused := code == codes.PermissionDenied || code == codes.NotFound || code == codes.Unauthenticated
	if !refused && op != "Start" && op != "Stop" && op != "Signal" {
		return
	}
	attrs := []any{"method", op, "code", code.String()}
	if refused {
		suppressed, ok := refusedLines.allow()
		if !ok {
			return
		}
		attrs = append(attrs, "suppressed", suppressed)
	}
	ids, _ := callerIdentity(ctx)
	attrs = append(attrs, "identity", strings.Join(ids, ","), "peer", peerAddr(ctx))
	if r, ok := resp.(*rpcpb.JobIdentifier); ok {
		attrs = append(attrs, "job", r.GetUlid())
	}
	switch r := req.(type) {
	case *rpcpb.SignalRequest:
		attrs = append(attrs, "job", r.GetUlid(), "signal", r.GetSignal())
	case interface{ GetUlid() string }: // Stop, Status, Log, ReadLog
		attrs = append(attrs, "job", r.GetUlid())
	case *rpcpb.JobStartRequest:
		attrs = append(attrs, startAttrs(r)...)
	}
	slog.Info("audit", attrs...)
}

// startAttrs are a Start's command, environment keys and the limits it set.
func startAttrs(r *rpcpb.JobStartRequest) []any {
	keys := make([]string, 0, len(r.GetEnv()))
	for _, kv := range r.GetEnv() {
		k, _, _ := strings.Cut(kv, "=") // the value is never logged: it may be a secret
		keys = append(keys, k)
	}
	attrs := []any{"command", quoted(append([]string{r.GetName()}, r.GetArgs()...)), "env_keys", quoted(keys)}
	for _, f := range limitFields(r, &limits{}) {
		if f.w != nil {
			attrs = append(attrs, f.name, f.w.GetValue())
		}
	}
	if c := r.GetMaxCpuBandwidth(); c != nil {
		attrs = append(attrs, "max_cpu_bandwidth", c.GetValue())
	}
	if r.GetNetwork() != "" {
		attrs = append(attrs, "network", cut(r.GetNetwork())) // a grant asked for (grants.go)
	}
	if r.GetRoot() {
		attrs = append(attrs, "root", true)
	}
	return attrs
}

// auditHandshake writes the line of a TLS handshake refused for its certificate: what the certificate
// claimed, and why crypto/tls refused it. Handshakes that fail otherwise (a scanner, a timeout) are
// not the trail's.
func auditHandshake(addr string, err error) {
	var bad *tls.CertificateVerificationError
	if !errors.As(err, &bad) {
		return
	}
	suppressed, ok := refusedLines.allow()
	if !ok {
		return
	}
	var claimed []string
	if len(bad.UnverifiedCertificates) > 0 {
		claimed = certIdentity(bad.UnverifiedCertificates[0])
	}
	slog.Info("audit", "method", "handshake", "code", codes.Unauthenticated.String(), "suppressed", suppressed,
		"claimed", quoted(claimed), "peer", addr, "error", cut(bad.Err.Error()))
}

// auditEnd writes the line of a job's end. finish calls it, once it has set the fields read here.
func auditEnd(j *job) {
	attrs := []any{"job", j.id, "identity", strings.Join(j.owner, ","), "run_time", j.ended.Sub(j.started)}
	if j.exit.Exited {
		attrs = append(attrs, "exit_code", j.exit.Code)
	} else {
		attrs = append(attrs, "signal", j.exit.Signal)
	}
	written, lost := j.log.counts()
	attrs = append(attrs, "oom_kills", j.final.oomKills,
		"cpu", time.Duration(j.final.userUsec+j.final.systemUsec)*time.Microsecond,
		"memory_peak", j.final.memPeak, "output_bytes", written, "lost_bytes", lost)
	slog.Info("job ended", attrs...)
}

// quoted is a list as the trail writes it: each item quoted in ASCII (no control character reaches
// the log), cut at auditArgvBytes.
func quoted(items []string) string {
	var b strings.Builder
	for _, s := range items {
		if b.Len() > auditArgvBytes {
			break
		}
		b.WriteString(strconv.QuoteToASCII(s))
		b.WriteByte(' ')
	}
	return cut(strings.TrimSuffix(b.String(), " "))
}

// cut bounds s at auditArgvBytes.
func cut(s string) string {
	if len(s) <= auditArgvBytes {
		return s
	}
	return s[:auditArgvBytes] + "..."
}

// peerAddr is the caller's address, or "" where grpc-go has none.
func peerAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	return p.Addr.String()
}

// lineLimit lets through at most perSecond log lines in each second; it counts the lines it refuses,
// for the next one it lets through to report.
type lineLimit struct {
	perSecond int

	mu         sync.Mutex // guards the fields below
	second     time.Time  // when the current second began
	lines      int        // let through in the current second
	suppressed int        // refused since the last line let through
}

// allow says whether a line may be written, and how many were suppressed since the last one allowed.
func (l *lineLimit) allow() (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.second) >= time.Second {
		l.second, l.lines = now, 0
	}
	if l.lines == l.perSecond {
		l.suppressed++
		return 0, false
	}
	l.lines++
	suppressed, l.suppressed = l.suppressed, 0
	return suppressed, true
}

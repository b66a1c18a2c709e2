package main

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

// trail captures the server's slog lines as JSON for one test, and restores the log after it.
type trail struct {
	mu  sync.Mutex // guards buf: the server's goroutines write while the test reads
	buf bytes.Buffer
}

func (tr *trail) Write(p []byte) (int, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.Write(p)
}

// captureTrail sends slog's default logger to a JSON trail until the test ends. slog.SetDefault also
// redirects the log package, which restoring the old logger does not undo, so its writer and flags
// are restored too.
func captureTrail(t *testing.T) *trail {
	tr := &trail{}
	oldLogger, oldWriter, oldFlags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(slog.New(slog.NewJSONHandler(tr, nil)))
	t.Cleanup(func() {
		slog.SetDefault(oldLogger)
		log.SetOutput(oldWriter)
		log.SetFlags(oldFlags)
	})
	return tr
}

// lines are the trail's lines whose msg is msg, parsed.
func (tr *trail) lines(t *testing.T, msg string) []map[string]any {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(tr.buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("trail line %q is not JSON: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// find is the first line with every field of want, or nil.
func find(lines []map[string]any, want map[string]any) map[string]any {
	for _, l := range lines {
		match := true
		for k, v := range want {
			if l[k] != v {
				match = false
			}
		}
		if match {
			return l
		}
	}
	return nil
}

// TestAuditTrail: every Start, Stop and Signal, every refused call and certificate, and every job's end
// is one line of the trail, which says who, from where, what, on which job and with what result;
// environment values are never in it.
func TestAuditTrail(t *testing.T) {
	tr := captureTrail(t)
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")

	req := cmd("sh", "-c", "echo hello; sleep 1000", "with\nnewline")
	req.Env = []string{"TOKEN=s3cret-value"}
	id := startJob(t, a, req)
	// A limit is on the trail whether or not this host has its controller (this Start may fail).
	limited := cmd("true")
	limited.MaxMemoryUsage = wrapperspb.UInt64(64 << 20)
	a.Start(ctx(t), limited)
	waitOutput(t, a, id, "hello")
	if _, err := a.Signal(ctx(t), &rpcpb.SignalRequest{Ulid: id, Signal: "SIGCONT"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); code(err) != "NotFound" {
		t.Fatalf("b's Stop of a's job: %v, want NotFound", err)
	}
	if _, err := a.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil {
		t.Fatal(err)
	}
	otherCA := mustIssue(t, certSpec{name: "other CA", isCA: true}, nil)
	stranger := presentingTLS(t, ts.pki, tlsCert(mustIssue(t, certSpec{name: "mallory", dns: []string{"mallory"},
		eku: ekuClient}, otherCA)))
	if _, err := ts.dialTLS(t, stranger).List(ctx(t), &rpcpb.ListRequest{}); err == nil {
		t.Fatal("a certificate of another CA was let in")
	}

	calls := tr.lines(t, "audit")
	if strings.Contains(tr.buf.String(), "s3cret") {
		t.Errorf("an environment value reached the trail:\n%s", tr.buf.String())
	}
	start := find(calls, map[string]any{"method": "Start", "code": "OK", "identity": "dns:a", "job": id})
	if start == nil {
		t.Fatalf("no Start line for %s in %v", id, calls)
	}
	if start["command"] != `"sh" "-c" "echo hello; sleep 1000" "with\nnewline"` || start["env_keys"] != `"TOKEN"` ||
		!strings.HasPrefix(start["peer"].(string), "127.0.0.1:") {
		t.Errorf("Start line %v: want the quoted command, the env keys alone and the peer", start)
	}
	if find(calls, map[string]any{"method": "Start", "command": `"true"`, "max_memory_usage": float64(64 << 20)}) == nil {
		t.Errorf("no Start line with its limit in %v", calls)
	}
	for _, want := range []map[string]any{
		{"method": "Signal", "code": "OK", "identity": "dns:a", "job": id, "signal": "SIGCONT"},
		{"method": "Stop", "code": "NotFound", "identity": "dns:b", "job": id},
		{"method": "Stop", "code": "OK", "identity": "dns:a", "job": id},
		{"method": "handshake", "code": "Unauthenticated", "claimed": `"dns:mallory"`},
	} {
		if find(calls, want) == nil {
			t.Errorf("no trail line with %v in %v", want, calls)
		}
	}
	end := find(tr.lines(t, "job ended"), map[string]any{"job": id, "identity": "dns:a"})
	if end == nil || end["signal"] != float64(15) || end["output_bytes"] != float64(len("hello\n")) {
		t.Errorf("job end line %v: want SIGTERM and 6 bytes of output", end)
	}
}

// TestAuditRefusedFlood: refused calls are rate-limited on the trail, and the next line let through
// counts the ones suppressed.
func TestAuditRefusedFlood(t *testing.T) {
	tr := captureTrail(t)
	ts := startServer(t)
	b := ts.dialAs(t, "b")
	refusedLines.mu.Lock()
	refusedLines.second, refusedLines.suppressed = time.Time{}, 0 // a new second, as at start-up
	refusedLines.mu.Unlock()
	const calls = 200
	for range calls {
		if _, err := b.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: "01ARZ3NDEKTSV4RRFFQ69G5FAV"}); code(err) != "NotFound" {
			t.Fatalf("Status of an unknown job: %v", err)
		}
	}
	got := len(tr.lines(t, "audit"))
	// 20 in each second the calls took.
	if got < 20 || got >= calls/2 {
		t.Fatalf("%d lines for %d refused calls: want 20 a second", got, calls)
	}
	refusedLines.mu.Lock()
	refusedLines.second = time.Time{} // as if the second had passed
	refusedLines.mu.Unlock()
	if _, err := b.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: "01ARZ3NDEKTSV4RRFFQ69G5FAV"}); code(err) != "NotFound" {
		t.Fatalf("Status of an unknown job: %v", err)
	}
	// Every refused call is a line or counted in the next line let through.
	lines := tr.lines(t, "audit")
	suppressed := 0.0
	for _, l := range lines {
		suppressed += l["suppressed"].(float64)
	}
	if int(suppressed)+len(lines) != calls+1 {
		t.Errorf("%d lines counting %v suppressed, for %d refused calls", len(lines), suppressed, calls+1)
	}
}

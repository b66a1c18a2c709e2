package main

import (
	"bytes"
	"context"
	"io"
	"testing"

	"rund/rpcpb"
)

// budgetRing is a ring of capacity within b, written full of want and, if closed, closed.
func budgetRing(b *budget, capacity int, want []byte, closed bool) *ring {
	r := newRing(capacity)
	r.budget = b
	r.Write(stdoutStream, want)
	if closed {
		r.Close()
	}
	return r
}

// readRing reads a closed ring from offset 0: what it holds, and what it says was lost.
func readRing(t *testing.T, r *ring) ([]byte, int64) {
	t.Helper()
	var got []byte
	var lost int64
	buf := make([]byte, maxChunk)
	for off := int64(0); ; {
		n, _, at, l, err := r.Read(context.Background(), off, buf, false)
		lost += l
		if err == io.EOF {
			return got, lost
		}
		if err != nil {
			t.Fatal(err)
		}
		got, off = append(got, buf[:n]...), at+int64(n)
	}
}

// TestBudgetGivesUpFinishedRingsOldestFirst: five finished rings of 256 KiB within a budget for three:
// the two oldest are given up (their readers are told every byte is lost), the rest are whole, and
// the budget holds.
func TestBudgetGivesUpFinishedRingsOldestFirst(t *testing.T) {
	const capacity = 256 << 10
	b := &budget{max: 3*capacity + 3*capacity/4} // data and segments of three
	want := bytes.Repeat([]byte("x"), capacity)
	var rings []*ring
	for range 5 {
		rings = append(rings, budgetRing(b, capacity, want, true))
	}
	for i, r := range rings {
		got, lost := readRing(t, r)
		if i < 2 && (len(got) != 0 || lost != capacity) {
			t.Errorf("ring %d (old): %d bytes, %d lost; want all %d lost", i, len(got), lost, capacity)
		}
		if i >= 2 && (!bytes.Equal(got, want) || lost != 0) {
			t.Errorf("ring %d (new): %d bytes, %d lost; want all %d", i, len(got), lost, capacity)
		}
	}
	if b.used > b.max {
		t.Errorf("budget: %d bytes used of %d", b.used, b.max)
	}
	for _, r := range rings {
		r.Forget()
	}
	if b.used != 0 || len(b.finished) != 0 {
		t.Errorf("after every ring was forgotten: %d bytes used, %d rings listed; want none", b.used, len(b.finished))
	}
}

// TestBudgetStopsLiveRing: with no finished ring to give up, a live ring stops growing at what the
// budget allows (at least one pump read) and wraps there.
func TestBudgetStopsLiveRing(t *testing.T) {
	b := &budget{max: 100 << 10}
	r := budgetRing(b, 1<<20, bytes.Repeat([]byte("y"), 1<<20), false)
	r.mu.Lock()
	size := len(r.data)
	r.mu.Unlock()
	if size > 128<<10 || size < maxPumpRead {
		t.Errorf("live ring grew to %d bytes within a 100 KiB budget; want at most 128 KiB, at least one pump read", size)
	}
	r.Close()
	if got, lost := readRing(t, r); int64(len(got)) != int64(size) || lost != 1<<20-int64(size) {
		t.Errorf("read %d bytes, %d lost; want the last %d and the rest lost", len(got), lost, size)
	}
}

// TestBudgetKeepsRingALosslessReaderHolds: a finished ring whose lossless reader has not finished is
// not given up; the next one is.
func TestBudgetKeepsRingALosslessReaderHolds(t *testing.T) {
	const capacity = 256 << 10
	b := &budget{max: 2*capacity + capacity/2}
	want := bytes.Repeat([]byte("z"), capacity)
	held := budgetRing(b, capacity, want, true)
	h := held.Hold(0)
	defer h.Release()
	other := budgetRing(b, capacity, want, true)
	budgetRing(b, capacity, want, true) // needs one of the two given up
	if got, lost := readRing(t, held); !bytes.Equal(got, want) || lost != 0 {
		t.Errorf("held ring: %d bytes, %d lost; want it whole", len(got), lost)
	}
	if got, _ := readRing(t, other); len(got) != 0 {
		t.Errorf("unheld older ring kept %d bytes; want it given up", len(got))
	}
}

// TestBudgetGivesUpHeldRingLast: a finished ring that a lossless reader still reads is given up, as the
// last resort, before a live ring stops growing: a client reading its old output slowly cannot keep
// another's live job from its ring (issue 23, item 4).
func TestBudgetGivesUpHeldRingLast(t *testing.T) {
	const capacity = 256 << 10
	b := &budget{max: capacity + capacity/2}
	want := bytes.Repeat([]byte("z"), capacity)
	held := budgetRing(b, capacity, want, true)
	h := held.Hold(0)
	defer h.Release()
	live := budgetRing(b, capacity, want, false)
	live.Close()
	if got, lost := readRing(t, live); !bytes.Equal(got, want) || lost != 0 {
		t.Errorf("live ring: %d bytes, %d lost; want it whole", len(got), lost)
	}
	if got, lost := readRing(t, held); len(got) != 0 || lost != capacity {
		t.Errorf("held finished ring: %d bytes, %d lost; want it given up", len(got), lost)
	}
}

// TestOutputBudgetAcrossJobs: 2 clients x 20 finished jobs of 1 MiB each within a 4 MiB budget: the
// rings hold at most the budget, every job's status stays, the newest job's output is whole and the
// oldest's is reported lost.
func TestOutputBudgetAcrossJobs(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.outputBudget = 4 << 20 })
	var ids []string
	clients := map[string]rpcpb.JobControllerClient{"a": ts.dialAs(t, "a"), "b": ts.dialAs(t, "b")}
	owner := map[string]rpcpb.JobControllerClient{}
	for i := range 40 {
		c := clients[[]string{"a", "b"}[i%2]]
		id := startJob(t, c, cmd("head", "-c", "1048576", "/dev/urandom"))
		waitDone(t, c, id)
		ids, owner[id] = append(ids, id), c
	}
	if held := benchRingBytes(ts.m); held > 4<<20+2*maxPumpRead {
		t.Errorf("rings hold %d bytes after 40 MiB of output, over the 4 MiB budget", held)
	}
	for _, id := range ids {
		if st, err := owner[id].Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || st.GetExitCode().GetValue() != 0 {
			t.Errorf("status of %s: %v, %v", id, st, err)
		}
	}
	first, last := ids[0], ids[len(ids)-1]
	if out, _ := readAll(t, owner[last], last); len(out) != 1<<20 {
		t.Errorf("newest job's log: %d bytes, want all 1 MiB", len(out))
	}
	if out, _ := readAll(t, owner[first], first); len(out) != 0 {
		t.Errorf("oldest job's log: %d bytes, want it given up", len(out))
	}
}

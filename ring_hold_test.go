package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// waitRoomAsync runs WaitRoom in a goroutine and returns a channel closed when it returns.
func waitRoomAsync(r *ring, need int, patience time.Duration) chan struct{} {
	done := make(chan struct{})
	go func() { r.WaitRoom(need, patience); close(done) }()
	return done
}

// blocked reports whether done is still open after a short look. A negative check needs a bound:
// 50 ms is plenty for a WaitRoom that has nothing to wait for.
func blocked(done chan struct{}) bool {
	select {
	case <-done:
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}

func mustReturn(t *testing.T, done chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("WaitRoom did not return after %s", what)
	}
}

// TestHoldKeepsEveryByte: a writer that calls WaitRoom before each write never overwrites a byte a
// hold's reader has not read, however slowly it reads; the reader gets the whole output, lost 0.
func TestHoldKeepsEveryByte(t *testing.T) {
	const capacity, total = maxChunk, 20 * maxChunk
	r := newRing(capacity)
	h := r.Hold(0)
	defer h.Release()
	want := make([]byte, total)
	for i := range want {
		want[i] = patternAt(int64(i))
	}
	go func() {
		for off := 0; off < total; off += 1000 {
			p := want[off:min(off+1000, total)]
			r.WaitRoom(len(p), time.Hour)
			r.Write(stdoutStream, p)
		}
		r.Close()
	}()
	var got []byte
	buf := make([]byte, 777) // reads smaller than the writes: the reader is the slow side
	for off := int64(0); ; {
		n, _, at, lost, err := h.Read(context.Background(), off, buf, true)
		if err == io.EOF {
			break
		}
		if err != nil || lost != 0 || at != off {
			t.Fatalf("read at %d: at %d, lost %d, %v", off, at, lost, err)
		}
		got = append(got, buf[:n]...)
		off = at + int64(n)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want the %d written", len(got), len(want))
	}
}

// TestWaitRoomUnblocks: WaitRoom waits for a hold that stands in the way, and returns when it moves,
// when it is released, and at Close; with no hold it returns at once.
func TestWaitRoomUnblocks(t *testing.T) {
	full := func() *ring {
		r := newRing(maxChunk)
		r.Write(stdoutStream, make([]byte, maxChunk))
		return r
	}
	if r := full(); blocked(waitRoomAsync(r, 100, time.Hour)) {
		t.Fatal("WaitRoom waited with no hold")
	}

	r := full()
	h := r.Hold(0)
	done := waitRoomAsync(r, 100, time.Hour)
	if !blocked(done) {
		t.Fatal("WaitRoom returned while a hold needed the bytes it would overwrite")
	}
	h.Read(context.Background(), 50, make([]byte, 10), false) // 50 bytes taken: not enough room yet
	if !blocked(done) {
		t.Fatal("WaitRoom returned with 50 bytes of room for a 100-byte write")
	}
	h.Read(context.Background(), 100, make([]byte, 10), false)
	mustReturn(t, done, "the hold moved past what the write overwrites")

	r = full()
	h = r.Hold(0)
	done = waitRoomAsync(r, 1, time.Hour)
	h.Release()
	mustReturn(t, done, "Release")

	r = full()
	r.Hold(0)
	done = waitRoomAsync(r, 1, time.Hour)
	r.Close()
	mustReturn(t, done, "Close")
}

// TestHoldIsDemoted: a hold that does not move for the patience is let go; its reader reads on and is
// told what it lost.
func TestHoldIsDemoted(t *testing.T) {
	r := newRing(maxChunk)
	r.Write(stdoutStream, make([]byte, maxChunk))
	h := r.Hold(0)
	start := time.Now()
	r.WaitRoom(1000, 100*time.Millisecond)
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("WaitRoom returned after %v, before the hold's patience", waited)
	}
	r.Write(stdoutStream, make([]byte, 1000))
	if _, _, at, lost, err := h.Read(context.Background(), 0, make([]byte, 10), false); err != nil || lost != 1000 || at != 1000 {
		t.Fatalf("demoted reader: at %d, lost %d, %v; want 1000 lost", at, lost, err)
	}
	if r.mu.Lock(); len(r.holds) != 0 {
		t.Errorf("%d holds left after the demotion", len(r.holds))
	}
	r.mu.Unlock()
}

// TestQuietReaderIsNotDemoted: a lossless reader that had nothing to read for long (the job was quiet)
// gets the full patience once the job writes faster than it reads.
func TestQuietReaderIsNotDemoted(t *testing.T) {
	r := newRing(maxChunk)
	h := r.Hold(0)
	defer h.Release()
	r.mu.Lock()
	h.progress = time.Now().Add(-time.Hour) // caught up, and idle for an hour
	r.mu.Unlock()
	r.Write(stdoutStream, make([]byte, maxChunk))
	done := waitRoomAsync(r, 1000, time.Hour)
	if !blocked(done) {
		t.Fatal("WaitRoom demoted a reader that had been idle only while there was nothing to read")
	}
	h.Read(context.Background(), 1000, make([]byte, 10), false)
	mustReturn(t, done, "the quiet reader read")
}

// TestHoldWithFullSegmentDeque: with alternating one-byte writes the segment deque fills before the
// bytes do, and a full deque gives up its oldest segment whole; WaitRoom counts that too.
func TestHoldWithFullSegmentDeque(t *testing.T) {
	r := newRing(maxChunk)
	h := r.Hold(0)
	defer h.Release()
	written := 0
	for i := 0; ; i++ {
		done := waitRoomAsync(r, 1, time.Hour)
		if blocked(done) {
			break
		}
		r.Write(stream(1+i%2), []byte{'x'})
		written++
		if written > maxChunk {
			t.Fatal("WaitRoom never waited: the deque overflowed under a hold")
		}
	}
	if _, _, at, lost, err := h.Read(context.Background(), 0, make([]byte, 1), false); err != nil || lost != 0 || at != 0 {
		t.Fatalf("after %d writes: at %d, lost %d, %v; want byte 0 still held", written, at, lost, err)
	}
}

// TestStalledReadersTakingTurns: ten stalled lossless readers at staggered offsets hold the writer back
// for one patience in all, not one each: once one has stood in the way for the patience, every reader
// that had bytes to read and read none for as long is demoted with it (issue 23, item 5).
func TestStalledReadersTakingTurns(t *testing.T) {
	const patience = 300 * time.Millisecond
	r := newRing(maxChunk)
	for range 10 { // each reader read up to the tail at its time, then stalled
		r.Hold(r.tail)
		r.Write(stdoutStream, make([]byte, 1000))
	}
	long := 0 // WaitRoom calls that had to wait out a patience
	for range 2 * maxChunk / 1000 {
		began := time.Now()
		r.WaitRoom(1000, patience)
		if time.Since(began) >= patience/2 {
			long++
		}
		r.Write(stdoutStream, make([]byte, 1000))
	}
	if long != 1 {
		t.Errorf("the writer waited out the patience %d times for ten stalled readers; want once", long)
	}
	r.mu.Lock()
	left := len(r.holds)
	r.mu.Unlock()
	if left != 0 {
		t.Errorf("%d stalled holds left", left)
	}
}

// TestCreepingReaderIsDemoted: a reader that moves a byte at a time but stays in the writer's way is
// demoted once it has stood there for the patience: moving is not enough to hold a job back for longer.
func TestCreepingReaderIsDemoted(t *testing.T) {
	r := newRing(maxChunk)
	r.Write(stdoutStream, make([]byte, maxChunk))
	h := r.Hold(0)
	stop := make(chan struct{})
	crept := make(chan struct{})
	go func() { // 1 byte every 10 ms: out of the way only after 10 s
		defer close(crept)
		for off := int64(1); off < 1000; off++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			h.Read(context.Background(), off, make([]byte, 1), false)
		}
	}()
	defer func() { close(stop); <-crept }()
	done := waitRoomAsync(r, 1000, 300*time.Millisecond)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a reader creeping a byte at a time held the writer back past 5 s (patience 300 ms)")
	}
}

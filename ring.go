//go:build !rundinit

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"time"
)

// maxChunk bounds the bytes returned by one Read.
// grpc-go gives a message over 32,768 bytes a 1 MiB buffer. A JobLog adds 26 bytes to its payload at
// most: tag and length of the bytes (4), offset and lost (1 + 10 each).
const maxChunk = 32<<10 - 26

// stream tags which pipe a byte came from.
type stream uint8

const (
	stdoutStream stream = 1
	stderrStream stream = 2
)

// errOffsetBeyondEnd is returned by Read when off > bytes written so far.
var errOffsetBeyondEnd error = &clientError{kind: errOutOfRange, msg: "offset is beyond the end of the job's output"}

// segment marks where a run of bytes of one stream starts. A segment covers
// [start, next segment's start), or [start, tail) for the last one.
type segment struct {
	start int64
	s     stream
}

// ring is a bounded, in-memory broadcast buffer holding the most recent
// output of one job: stdout and stderr interleaved in arrival order, each
// byte tagged with its stream through the segment deque. Offsets are
// absolute: offset o is stored at data[o%len(data)] while head <= o < tail.
//
// Write never waits for readers: readers hold mu only for a binary search
// and a copy of at most maxChunk bytes, and slow readers simply find their
// offset evicted (Read reports how much they lost). A lossless reader puts a
// hold on the ring instead; the job's pump calls WaitRoom before it reads
// the job's pipe, so that the job, not the ring, waits for that reader.
//
// Memory grows with the output, doubling, up to a bound fixed at
// construction: capacity bytes plus capacity/64 segments of 16 bytes =
// capacity/4 bytes, so the worst case is 1.25*capacity plus a small constant,
// whatever the writes look like, and a job that writes little costs little.
// Until data has grown to capacity nothing wraps: offset o is at data[o]. If
// the segment deque is full (e.g. 1-byte writes alternating stdout/stderr),
// the oldest segment is evicted whole, so fewer than capacity bytes are then
// held (at least capacity/64 of them, the newest).
type ring struct {
	mu       sync.Mutex     // guards every field below; data's contents too
	data     []byte         // mu: grows up to limit bytes
	capacity int            // as made; read-only
	limit    int            // mu: capacity, lowered to len(data) when the budget gives no more
	budget   *budget        // the server's output budget; newRing's has no bound. Set before first use
	segMax   int            // mu: most segments: limit/64, or what the deque had when the budget refused
	gone     bool           // mu: the budget took the bytes of this finished ring (giveUp)
	head     int64          // mu: oldest offset held
	tail     int64          // mu: next offset to be written (= total bytes written)
	segs     []segment      // mu: circular deque storage, grows up to segMax
	segHead  int            // mu: index in segs of the oldest segment
	segLen   int            // mu: number of segments in use; its first starts <= head
	closed   bool           // mu: Close was called
	wake     chan struct{}  // mu: nil unless a reader waits; closed (and reset to nil) by Write and Close
	holds    map[*hold]bool // mu: the lossless readers attached
	room     chan struct{}  // mu: nil unless WaitRoom waits; closed (and reset to nil) when a hold moves or goes
	lost     int64          // mu: bytes Read has reported lost, summed over its readers
}

// hold is a lossless reader's claim on the ring: while it is attached, WaitRoom does not let the writer
// overwrite the bytes from off on. A hold that stands in the writer's way for WaitRoom's patience is let
// go (demoted): its reader reads on as a lossy one and learns what it lost from Read's lost.
type hold struct {
	r        *ring
	off      int64     // r.mu: the next byte its reader needs
	progress time.Time // r.mu: when off last moved, or the hold was made
	inWay    time.Time // r.mu: since when it has stood in the writer's way; zero while it does not
}

// Hold attaches a lossless reader whose next byte is off (the oldest byte held if off was evicted).
func (r *ring) Hold(off int64) *hold {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &hold{r: r, off: max(off, r.head), progress: time.Now()}
	r.holds[h] = true
	return h
}

// Release detaches h, at once: the writer no longer waits for it.
func (h *hold) Release() {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	delete(h.r.holds, h)
	wakeAll(&h.r.room)
}

// Read is the ring's Read for h's reader: asking for off means every byte before it has been taken,
// so the hold moves there first.
func (h *hold) Read(ctx context.Context, off int64, buf []byte, follow bool) (
	n int, s stream, at int64, lost int64, err error,
) {
	h.r.mu.Lock()
	if off > h.off {
		h.off, h.progress = off, time.Now()
		wakeAll(&h.r.room)
	}
	h.r.mu.Unlock()
	return h.r.Read(ctx, off, buf, follow)
}

// wakeAll closes *ch, waking everyone who waits on it (a Read on wake, WaitRoom on room), and resets
// it to nil for the next waiter to make anew. Caller holds mu.
func wakeAll(ch *chan struct{}) {
	if *ch != nil {
		close(*ch)
		*ch = nil
	}
}

// waitOn returns the channel the next wakeAll of *ch closes. Caller holds mu.
func waitOn(ch *chan struct{}) chan struct{} {
	if *ch == nil {
		*ch = make(chan struct{})
	}
	return *ch
}

// WaitRoom returns once a Write of need bytes (need <= capacity) would overwrite no byte that a hold
// still needs, counting the oldest segment too, which a full segment deque gives up whole. A hold that
// has stood in the way for patience is demoted, and with it every hold that has had bytes to read and
// read none for as long: so however many stalled readers take turns, the writer waits patience at most
// for them all. A reader that had nothing to read while the job was quiet has not stalled. It returns at
// Close too.
func (r *ring) WaitRoom(need int, patience time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
scan:
	for !r.closed && len(r.holds) > 0 { // with no hold, the pump's usual case, no clock is read
		keep := r.tail + int64(need) - int64(r.limit) // the first byte still held after the write
		if r.segLen > 1 && r.segLen == r.segMax {
			keep = max(keep, r.seg(1).start)
		}
		now := time.Now()
		wait := time.Duration(math.MaxInt64) // until the hold longest in the way has stood there for patience
		for h := range r.holds {
			switch {
			case h.off >= keep:
				h.inWay = time.Time{}
			case h.inWay.IsZero():
				h.inWay = now
				wait = min(wait, patience)
			case now.Sub(h.inWay) >= patience:
				delete(r.holds, h)
				r.demoteStalled(now.Add(-patience))
				wakeAll(&r.room) // the other pump may wait for the same holds
				continue scan    // the holds left, afresh
			default:
				wait = min(wait, patience-now.Sub(h.inWay))
			}
		}
		if wait == math.MaxInt64 { // no hold stands in the way
			return
		}
		room := waitOn(&r.room)
		r.mu.Unlock()
		select {
		case <-room:
		case <-time.After(wait): // an unstopped timer is collected (Go 1.23)
		}
		r.mu.Lock()
	}
}

// demoteStalled lets go of every hold that has had bytes to read since before since and has not moved.
// Caller holds mu.
func (r *ring) demoteStalled(since time.Time) {
	for h := range r.holds {
		if h.off < r.tail && !h.progress.After(since) {
			delete(r.holds, h)
		}
	}
}

// newRing returns a ring holding up to capacity bytes of output, within a budget of no bound.
func newRing(capacity int) *ring {
	if capacity < maxChunk {
		panic(fmt.Sprintf("ring: capacity %d < maxChunk %d", capacity, maxChunk))
	}
	return &ring{capacity: capacity, limit: capacity, segMax: capacity / 64, budget: &budget{max: math.MaxInt64},
		holds: map[*hold]bool{}}
}

// grow enlarges data to hold need bytes, doubling, at most limit, as far as the budget allows; if it
// allows nothing, the ring keeps at least its floor and wraps at what it has. Caller holds mu and
// len(data) < limit, so nothing has wrapped yet.
func (r *ring) grow(need int64) {
	size := min(max(int64(2*len(r.data)), need, 4<<10), int64(r.limit))
	granted := r.budget.take(size-int64(len(r.data)), false)
	if !granted {
		floor := int64(min(maxPumpRead, r.capacity))
		if int64(len(r.data)) >= floor {
			r.limit = len(r.data)
			return
		}
		size = floor
		r.budget.take(size-int64(len(r.data)), true)
		r.limit = int(size)
	}
	data := make([]byte, size)
	copy(data, r.data)
	r.data = data
}

// growSegs doubles the segment deque, at most segMax entries, as far as the budget allows (the first 16
// always). Caller holds mu.
func (r *ring) growSegs() {
	n := min(max(2*len(r.segs), 16), r.segMax)
	granted := r.budget.take(int64(n-len(r.segs))*segmentSize, len(r.segs) == 0)
	if !granted {
		r.segMax = len(r.segs)
		return
	}
	segs := make([]segment, n) // the segments in use move to its start, the oldest first
	for i := range r.segLen {
		segs[i] = *r.seg(i)
	}
	r.segs, r.segHead = segs, 0
}

// seg returns the i-th oldest segment. Caller holds mu and i < segLen.
func (r *ring) seg(i int) *segment { return &r.segs[(r.segHead+i)%len(r.segs)] }

// popSeg drops the oldest segment. Caller holds mu.
func (r *ring) popSeg() {
	r.segHead = (r.segHead + 1) % len(r.segs)
	r.segLen--
}

// Write appends p as output of stream s, evicting the oldest bytes as
// needed. If p is longer than the capacity, only its last capacity bytes are
// kept; the rest count as written and evicted. Writes after Close are
// dropped. Write does not retain p, and once the ring has grown to its
// capacity it does not allocate.
func (r *ring) Write(s stream, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || len(p) == 0 {
		return
	}
	if r.segLen == 0 || r.seg(r.segLen-1).s != s {
		if r.segLen == len(r.segs) && len(r.segs) < r.segMax {
			r.growSegs()
		}
		if r.segLen == len(r.segs) { // deque full: evict the oldest segment whole
			r.popSeg()
			r.head = max(r.head, r.seg(0).start)
		}
		r.segLen++
		*r.seg(r.segLen - 1) = segment{start: r.tail, s: s}
	}
	if need := r.tail + int64(len(p)); need > int64(len(r.data)) && len(r.data) < r.limit {
		r.grow(need)
	}
	size := int64(len(r.data))
	r.tail += int64(len(p))
	p = p[max(len(p)-len(r.data), 0):]     // of a p longer than data, only its last len(data) bytes are kept
	pos := (r.tail - int64(len(p))) % size // where the kept part of p starts
	n := copy(r.data[pos:], p)
	copy(r.data, p[n:])
	r.head = max(r.head, r.tail-size)
	for r.segLen > 1 && r.seg(1).start <= r.head { // the oldest segment is fully evicted
		r.popSeg()
	}
	wakeAll(&r.wake)
}

// Close marks the end of output: readers drain what is held, then get io.EOF.
// It is idempotent. It offers the ring to the budget to give up: a finished
// job keeps its log until it is retired, and the budget counts what it holds.
func (r *ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && !r.gone { // a ring forgotten before its Close (retire) is not offered
		r.budget.closed(r)
	}
	r.closed = true
	wakeAll(&r.wake)
	wakeAll(&r.room)
}

// segmentSize is the bytes one segment takes in the deque.
const segmentSize = 16

// allocated is the bytes the ring holds for the budget. Caller holds mu.
func (r *ring) allocated() int64 { return int64(len(r.data)) + int64(len(r.segs))*segmentSize }

// giveUp lets the budget have a finished ring's bytes: readers are told they are lost, and the status
// of its job stays. Unless force, a ring that a lossless reader still holds is kept (false).
func (r *ring) giveUp(force bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !force && len(r.holds) > 0 {
		return false
	}
	if !r.gone {
		r.gone = true
		r.budget.release(r.allocated()) // the 1-byte data left below is not counted
		r.head = r.tail
		r.data, r.segs, r.segHead, r.segLen = make([]byte, 1), nil, 0, 0
	}
	return true
}

// Forget gives up a finished ring whose job is no longer kept.
func (r *ring) Forget() {
	r.budget.forget(r)
	r.giveUp(true)
}

// Read copies into buf the next run of bytes of one stream, starting at off,
// or at the oldest held byte if off was evicted. It returns the n bytes
// copied (n <= min(len(buf), maxChunk)), their stream, the offset at of the
// first byte, and lost = at - off, the bytes evicted before this reader saw
// them. Resume with off = at + n.
//
// At the tail, Read returns io.EOF if follow is false or the ring is closed;
// otherwise it blocks until data arrives, Close, or ctx is done (ctx.Err()).
// If off > tail, it returns an error wrapping errOffsetBeyondEnd; an empty buf
// or a negative off is an error too.
func (r *ring) Read(ctx context.Context, off int64, buf []byte, follow bool) (
	n int, s stream, at int64, lost int64, err error,
) {
	if len(buf) == 0 || off < 0 {
		return 0, 0, off, 0, fmt.Errorf("ring: Read with offset %d into %d-byte buffer", off, len(buf))
	}
	buf = buf[:min(len(buf), maxChunk)]
	r.mu.Lock()
	defer r.mu.Unlock()
	// Checked once: tail never decreases, and the loop moves no further than head <= tail.
	if off > r.tail {
		return 0, 0, off, 0, fmt.Errorf("%w: offset %d, tail %d", errOffsetBeyondEnd, off, r.tail)
	}
	for {
		at = max(off, r.head) // the bytes before head were evicted before this reader saw them
		if at < r.tail {
			n, s = r.copyOut(at, buf)
			r.lost += at - off
			return n, s, at, at - off, nil
		}
		if !follow || r.closed {
			return 0, 0, at, at - off, io.EOF
		}
		wake := waitOn(&r.wake)
		r.mu.Unlock()
		select {
		case <-wake:
			r.mu.Lock()
		case <-ctx.Done():
			r.mu.Lock() // for the deferred Unlock
			return 0, 0, at, at - off, ctx.Err()
		}
	}
}

// counts are the bytes written so far and those that Read reported lost to its readers.
func (r *ring) counts() (written, lost int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tail, r.lost
}

// copyOut copies bytes from offset at, up to the end of at's segment, into
// buf. Caller holds mu and head <= at < tail.
func (r *ring) copyOut(at int64, buf []byte) (int, stream) {
	// i = index of the first segment starting after at; at lies in segment i-1.
	i := sort.Search(r.segLen, func(i int) bool { return r.seg(i).start > at })
	end := r.tail
	if i < r.segLen {
		end = r.seg(i).start
	}
	n := int(min(end-at, int64(len(buf))))
	pos := at % int64(len(r.data))
	c := copy(buf[:n], r.data[pos:])
	copy(buf[c:n], r.data)
	return n, r.seg(i - 1).s
}

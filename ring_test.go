package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chunk is one successful Read result, with its bytes copied out.
type chunk struct {
	s        stream
	at, lost int64
	data     []byte
}

// drain reads r from off with follow=false until io.EOF, checking the
// invariants every Read must keep, and returns the chunks and the end offset.
func drain(t testing.TB, r *ring, off int64, bufSize int) ([]chunk, int64) {
	t.Helper()
	buf := make([]byte, bufSize)
	var chunks []chunk
	for {
		n, s, at, lost, err := r.Read(context.Background(), off, buf, false)
		if err == io.EOF {
			if n != 0 || at != off+lost {
				t.Fatalf("EOF with n=%d at=%d off=%d lost=%d", n, at, off, lost)
			}
			return chunks, at
		}
		if err != nil {
			t.Fatalf("Read(%d): %v", off, err)
		}
		if n <= 0 || n > bufSize || n > maxChunk {
			t.Fatalf("Read(%d) with %d-byte buffer returned n=%d", off, bufSize, n)
		}
		if lost < 0 || at != off+lost {
			t.Fatalf("Read(%d): at=%d lost=%d", off, at, lost)
		}
		if s != stdoutStream && s != stderrStream {
			t.Fatalf("Read(%d): stream %d", off, s)
		}
		chunks = append(chunks, chunk{s, at, lost, bytes.Clone(buf[:n])})
		off = at + int64(n)
	}
}

// recorder writes to a ring and remembers every byte written and its stream.
type recorder struct {
	r    *ring
	all  []byte
	tags []stream
}

func (w *recorder) write(s stream, p []byte) {
	w.r.Write(s, p)
	w.all = append(w.all, p...)
	for range p {
		w.tags = append(w.tags, s)
	}
}

// check fails unless every chunk's bytes and stream match what was written.
func (w *recorder) check(t testing.TB, chunks []chunk) {
	t.Helper()
	for _, c := range chunks {
		for i, b := range c.data {
			o := c.at + int64(i)
			if b != w.all[o] || c.s != w.tags[o] {
				t.Fatalf("offset %d: got %d/stream %d, wrote %d/stream %d", o, b, c.s, w.all[o], w.tags[o])
			}
		}
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func TestRoundTripInterleaved(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const capacity = 1 << 20
	w := &recorder{r: newRing(capacity)}
	want := map[stream][]byte{}
	for i := range 300 {
		s := stream(1 + rng.IntN(2))
		size := 1 + rng.IntN(3000)
		if i%50 == 0 {
			size = maxChunk + 1 + rng.IntN(10000) // forces Read to split at maxChunk
		}
		p := randomBytes(rng, size)
		w.write(s, p)
		want[s] = append(want[s], p...)
	}
	if len(w.all) >= capacity {
		t.Fatalf("test wrote %d bytes, more than capacity", len(w.all))
	}
	for _, bufSize := range []int{1, 7, 4096, maxChunk, 100000} {
		chunks, end := drain(t, w.r, 0, bufSize)
		if end != int64(len(w.all)) {
			t.Fatalf("buf %d: ended at %d, wrote %d", bufSize, end, len(w.all))
		}
		w.check(t, chunks)
		got := map[stream][]byte{}
		for i, c := range chunks {
			if c.lost != 0 {
				t.Fatalf("buf %d: lost %d bytes without eviction", bufSize, c.lost)
			}
			got[c.s] = append(got[c.s], c.data...)
			// A short chunk must end at a stream switch: same-stream writes are merged.
			if len(c.data) < min(bufSize, maxChunk) && i+1 < len(chunks) && chunks[i+1].s == c.s {
				t.Fatalf("buf %d: short chunk at %d not followed by a stream switch", bufSize, c.at)
			}
		}
		for _, s := range []stream{stdoutStream, stderrStream} {
			if !bytes.Equal(got[s], want[s]) {
				t.Fatalf("buf %d: stream %d differs (got %d bytes, want %d)", bufSize, s, len(got[s]), len(want[s]))
			}
		}
	}
}

func TestEviction(t *testing.T) {
	const capacity = 40000
	w := &recorder{r: newRing(capacity)}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; len(w.all) < 3*capacity+123; i++ {
		w.write(stream(1+i%2), randomBytes(rng, 1+rng.IntN(12000)))
	}
	head, tail := w.r.Bounds()
	if tail != int64(len(w.all)) || head != tail-capacity {
		t.Fatalf("Bounds() = %d, %d; wrote %d into %d", head, tail, len(w.all), capacity)
	}
	chunks, end := drain(t, w.r, 0, 5000)
	if chunks[0].lost != head || chunks[0].at != head {
		t.Fatalf("first chunk at %d lost %d, head %d", chunks[0].at, chunks[0].lost, head)
	}
	var got []byte
	for _, c := range chunks[1:] {
		if c.lost != 0 {
			t.Fatalf("lost %d at %d after the first chunk", c.lost, c.at)
		}
	}
	for _, c := range chunks {
		got = append(got, c.data...)
	}
	if end != tail || !bytes.Equal(got, w.all[len(w.all)-capacity:]) {
		t.Fatalf("read %d bytes ending at %d; want the last %d bytes ending at %d", len(got), end, capacity, tail)
	}
	w.check(t, chunks)
}

func TestWriteLargerThanCapacity(t *testing.T) {
	const capacity = maxChunk
	for _, size := range []int{capacity, capacity + 1, 3*capacity + 17} {
		w := &recorder{r: newRing(capacity)}
		w.write(stderrStream, bytes.Repeat([]byte("e"), 100))
		w.write(stdoutStream, randomBytes(rand.New(rand.NewPCG(5, uint64(size))), size))
		head, tail := w.r.Bounds()
		if tail != int64(100+size) || head != tail-capacity {
			t.Fatalf("size %d: Bounds() = %d, %d", size, head, tail)
		}
		chunks, _ := drain(t, w.r, 0, 100000)
		if chunks[0].lost != head {
			t.Fatalf("size %d: lost %d, head %d", size, chunks[0].lost, head)
		}
		var got []byte
		for _, c := range chunks {
			got = append(got, c.data...)
		}
		if !bytes.Equal(got, w.all[len(w.all)-capacity:]) {
			t.Fatalf("size %d: did not keep the last %d bytes", size, capacity)
		}
		w.check(t, chunks)
		w.write(stderrStream, []byte("x")) // the ring keeps working afterwards
		chunks, _ = drain(t, w.r, tail, 10)
		if len(chunks) != 1 || string(chunks[0].data) != "x" || chunks[0].s != stderrStream {
			t.Fatalf("size %d: after a big write, got %+v", size, chunks)
		}
	}
}

func TestResume(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	w := &recorder{r: newRing(1 << 20)}
	for i := range 20 {
		w.write(stream(1+i%2), randomBytes(rng, 3000))
	}
	// Stop mid-segment: 1000-byte reads, 7 of them, end inside the third write.
	buf := make([]byte, 1000)
	var got []byte
	var off int64
	for range 7 {
		n, _, at, lost, err := w.r.Read(context.Background(), off, buf, true)
		if err != nil || lost != 0 || at != off {
			t.Fatalf("Read(%d): at=%d lost=%d err=%v", off, at, lost, err)
		}
		got = append(got, buf[:n]...)
		off = at + int64(n)
	}
	for i := range 20 {
		w.write(stream(1+i%3%2), randomBytes(rng, 2500))
	}
	chunks, end := drain(t, w.r, off, 4096)
	for _, c := range chunks {
		if c.lost != 0 {
			t.Fatalf("lost %d at %d", c.lost, c.at)
		}
		got = append(got, c.data...)
	}
	// Resume exactly at the tail too.
	w.write(stdoutStream, []byte("tail"))
	w.r.Close()
	more, _ := drain(t, w.r, end, 4096)
	for _, c := range more {
		got = append(got, c.data...)
	}
	if !bytes.Equal(got, w.all) {
		t.Fatalf("resumed reads give %d bytes, wrote %d (or contents differ)", len(got), len(w.all))
	}
	w.check(t, append(chunks, more...))
}

func TestReadErrorsAndClose(t *testing.T) {
	ctx := context.Background()
	r := newRing(maxChunk)
	buf := make([]byte, 100)
	r.Write(stdoutStream, []byte("hello"))
	for _, follow := range []bool{false, true} {
		if _, _, _, _, err := r.Read(ctx, 6, buf, follow); !errors.Is(err, errOffsetBeyondEnd) {
			t.Fatalf("Read beyond end (follow=%v): %v", follow, err)
		}
	}
	if n, _, at, _, err := r.Read(ctx, 5, buf, false); err != io.EOF || n != 0 || at != 5 {
		t.Fatalf("Read at tail without follow: n=%d at=%d err=%v", n, at, err)
	}
	for _, bad := range []struct {
		off int64
		buf []byte
	}{{0, nil}, {-1, buf}} {
		if _, _, _, _, err := r.Read(ctx, bad.off, bad.buf, false); err == nil || err == io.EOF {
			t.Fatalf("Read(%d, %d-byte buf): %v", bad.off, len(bad.buf), err)
		}
	}
	r.Write(stderrStream, []byte("world"))
	r.Close()
	r.Close()
	r.Write(stdoutStream, []byte("ignored"))
	if head, tail := r.Bounds(); head != 0 || tail != 10 {
		t.Fatalf("Bounds() = %d, %d after Close", head, tail)
	}
	want := []struct {
		s    stream
		at   int64
		data string
	}{{stdoutStream, 0, "hello"}, {stderrStream, 5, "world"}}
	var off int64
	for _, w := range want {
		n, s, at, lost, err := r.Read(ctx, off, buf, true)
		if err != nil || s != w.s || at != w.at || lost != 0 || string(buf[:n]) != w.data {
			t.Fatalf("Read(%d) = %q, %d, %d, %d, %v", off, buf[:n], s, at, lost, err)
		}
		off = at + int64(n)
	}
	if _, _, _, _, err := r.Read(ctx, off, buf, true); err != io.EOF {
		t.Fatalf("following a drained closed ring: %v, want io.EOF", err)
	}
}

// watchedCtx closes waiting when Read first calls Done, which it does only
// after registering for a wakeup, right before blocking. This tells a test a
// follower is parked without sleeping.
type watchedCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func watch(ctx context.Context) *watchedCtx {
	return &watchedCtx{Context: ctx, waiting: make(chan struct{})}
}

func (c *watchedCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

type result struct {
	n        int
	s        stream
	at, lost int64
	err      error
	data     string
}

// follow starts a following Read and returns its context and result channel
// once the Read is parked.
func follow(t *testing.T, ctx context.Context, r *ring, off int64) chan result {
	t.Helper()
	wctx := watch(ctx)
	res := make(chan result, 1)
	go func() {
		buf := make([]byte, 64)
		n, s, at, lost, err := r.Read(wctx, off, buf, true)
		res <- result{n, s, at, lost, err, string(buf[:n])}
	}()
	<-wctx.waiting
	select {
	case got := <-res:
		t.Fatalf("follower returned %+v without new data", got)
	default:
	}
	return res
}

func await(t *testing.T, res chan result) result {
	t.Helper()
	select {
	case got := <-res:
		return got
	case <-time.After(10 * time.Second): // failure guard only, never reached when passing
		t.Fatal("blocked Read did not return")
		return result{}
	}
}

func TestFollowWakesOnWriteAndClose(t *testing.T) {
	r := newRing(maxChunk)
	res := []chan result{follow(t, context.Background(), r, 0), follow(t, context.Background(), r, 0)}
	r.Write(stderrStream, []byte("abc"))
	for _, ch := range res {
		if got := await(t, ch); got.err != nil || got.data != "abc" || got.s != stderrStream || got.at != 0 {
			t.Fatalf("woken follower got %+v", got)
		}
	}
	ch := follow(t, context.Background(), r, 3)
	r.Close()
	if got := await(t, ch); got.err != io.EOF || got.at != 3 {
		t.Fatalf("follower at Close got %+v, want io.EOF", got)
	}
}

func TestCancelUnblocksFollower(t *testing.T) {
	r := newRing(maxChunk)
	r.Write(stdoutStream, []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	ch := follow(t, ctx, r, 1)
	cancel()
	if got := await(t, ch); !errors.Is(got.err, context.Canceled) || got.n != 0 {
		t.Fatalf("cancelled follower got %+v", got)
	}
	// An already-cancelled context must not block either.
	if _, _, _, _, err := r.Read(ctx, 1, make([]byte, 1), true); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read with cancelled ctx: %v", err)
	}
}

// patternAt is the byte written at offset o in the concurrency tests.
func patternAt(o int64) byte { return byte(o % 251) }

func TestConcurrentReaders(t *testing.T) {
	const (
		capacity = 256 << 10
		total    = 2 << 20
		readers  = 50
	)
	r := newRing(capacity)
	// Write sizes and streams are deterministic; tags records each offset's stream.
	var sizes []int
	tags := make([]stream, 0, total)
	for i := 0; len(tags) < total; i++ {
		size := min(1+(i*7919)%9000, total-len(tags))
		sizes = append(sizes, size)
		for range size {
			tags = append(tags, stream(1+min(i%3, 1))) // stderr, stdout, stdout, ...
		}
	}
	writerDone := make(chan struct{})
	lostBy := make([]int64, readers)
	var wg sync.WaitGroup
	for id := range readers {
		wg.Go(func() {
			buf := make([]byte, []int{64, 512, 4096, 100000}[id%4])
			var off, received, lost int64
			for {
				n, s, at, l, err := r.Read(context.Background(), off, buf, true)
				if err == io.EOF {
					break
				}
				if err != nil || n <= 0 || n > len(buf) || n > maxChunk || l < 0 || at != off+l {
					t.Errorf("reader %d: Read(%d) = n %d, at %d, lost %d, %v", id, off, n, at, l, err)
					return
				}
				for i, b := range buf[:n] {
					o := at + int64(i)
					if b != patternAt(o) || s != tags[o] {
						t.Errorf("reader %d: offset %d got %d/stream %d", id, o, b, s)
						return
					}
				}
				received += int64(n)
				lost += l
				off = at + int64(n)
				if id == 0 && received == int64(n) {
					<-writerDone // stall: reader 0 must lose data
				} else if id%5 == 1 {
					runtime.Gosched()
				}
			}
			if off != total || received+lost != total {
				t.Errorf("reader %d: ended at %d, received %d + lost %d != %d", id, off, received, lost, total)
			}
			lostBy[id] = lost
		})
	}
	p := make([]byte, 9000)
	var off int64
	for _, size := range sizes {
		for j := range p[:size] {
			p[j] = patternAt(off + int64(j))
		}
		r.Write(tags[off], p[:size])
		off += int64(size)
		runtime.Gosched() // give readers a chance, so not all of them lose data
	}
	close(writerDone)
	r.Close()
	wg.Wait()
	if lostBy[0] == 0 {
		t.Fatal("stalled reader 0 lost nothing")
	}
	var lossy int
	var lostSum int64
	for _, l := range lostBy {
		if l > 0 {
			lossy++
		}
		lostSum += l
	}
	t.Logf("%d of %d readers lost data; %.1f%% of all bytes lost", lossy, readers, 100*float64(lostSum)/float64(readers*total))
}

func TestAlternatingOneByteWrites(t *testing.T) {
	const capacity = 1 << 16
	const segCap = capacity / 64
	const total = 50000
	r := newRing(capacity)
	streamAt := func(o int64) stream { return stream(1 + o%2) }
	// A concurrent follower must see a consistent view throughout.
	var followerErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 100)
		var off, received, lost int64
		for {
			n, s, at, l, err := r.Read(context.Background(), off, buf, true)
			if err == io.EOF {
				break
			}
			if err != nil || n != 1 || at != off+l || buf[0] != patternAt(at) || s != streamAt(at) {
				followerErr = fmt.Errorf("Read(%d) = n %d, stream %d, at %d, lost %d, %v", off, n, s, at, l, err)
				return
			}
			received += int64(n)
			lost += l
			off = at + int64(n)
		}
		if received+lost != total {
			followerErr = fmt.Errorf("received %d + lost %d != %d", received, lost, total)
		}
	}()
	var b [1]byte
	for o := range int64(total) {
		b[0] = patternAt(o)
		r.Write(streamAt(o), b[:])
		r.mu.Lock()
		segLen, segsLen, segsCap, held := r.segLen, len(r.segs), cap(r.segs), r.tail-r.head
		r.mu.Unlock()
		if segLen > segCap || segsLen > segCap || segsCap > segCap || held > segCap {
			t.Fatalf("after %d writes: %d segments in a %d/%d deque, %d bytes held", o+1, segLen, segsLen, segsCap, held)
		}
	}
	r.Close()
	<-done
	if followerErr != nil {
		t.Fatal(followerErr)
	}
	head, tail := r.Bounds()
	if tail != total || head != total-segCap {
		t.Fatalf("Bounds() = %d, %d; want %d, %d", head, tail, total-segCap, total)
	}
	chunks, _ := drain(t, r, 0, 100)
	if len(chunks) != segCap || chunks[0].lost != head {
		t.Fatalf("%d chunks, first lost %d", len(chunks), chunks[0].lost)
	}
	for _, c := range chunks {
		if len(c.data) != 1 || c.data[0] != patternAt(c.at) || c.s != streamAt(c.at) {
			t.Fatalf("chunk at %d: %v stream %d", c.at, c.data, c.s)
		}
	}
}

func TestWriteDoesNotAllocate(t *testing.T) {
	r := newRing(1 << 20)
	for i := range (1 << 20) / 64 { // grow the ring and its segment deque to their bounds first
		r.Write(stream(1+i%2), make([]byte, 64))
	}
	p := make([]byte, 1000)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		r.Write(stream(1+i%2), p[:i%len(p)+1])
	})
	if allocs != 0 {
		t.Fatalf("Write allocates %.1f times per call", allocs)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	closed, cancelled := newRing(maxChunk), newRing(maxChunk)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 20 {
		r, c := closed, context.Background()
		if i%2 == 1 {
			r, c = cancelled, ctx
		}
		wctx := watch(c)
		wg.Go(func() {
			buf := make([]byte, 10)
			var off int64
			for {
				n, _, at, _, err := r.Read(wctx, off, buf, true)
				if err != nil {
					return
				}
				off = at + int64(n)
			}
		})
		<-wctx.waiting
	}
	closed.Write(stdoutStream, []byte("some output"))
	closed.Close()
	cancel()
	wg.Wait()
	// Bounded poll, only to let exited goroutines be reaped: at most ~1s.
	for i := 0; i < 1000 && runtime.NumGoroutine() > before; i++ {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if now := runtime.NumGoroutine(); now > before {
		t.Fatalf("%d goroutines before, %d after readers ended", before, now)
	}
}

func TestNewRingPanicsBelowMaxChunk(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("newRing(maxChunk-1) did not panic")
		}
	}()
	newRing(maxChunk - 1)
}

func BenchmarkRingWrite(b *testing.B) {
	r := newRing(1 << 20)
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		r.Write(stdoutStream, p)
	}
}

func benchmarkFanOut(b *testing.B, readers int) {
	r := newRing(1 << 20)
	p := make([]byte, 32<<10)
	var lost atomic.Int64
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			buf := make([]byte, maxChunk)
			var off int64
			for {
				n, _, at, l, err := r.Read(context.Background(), off, buf, true)
				if err != nil {
					return
				}
				lost.Add(l)
				off = at + int64(n)
			}
		})
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.Write(stdoutStream, p)
	}
	r.Close()
	wg.Wait()
	b.ReportMetric(float64(lost.Load())/float64(int64(b.N)*int64(len(p))*int64(readers)), "lost/byte")
}

func BenchmarkRingWriteRead1(b *testing.B)          { benchmarkFanOut(b, 1) }
func BenchmarkRingWriteRead100Readers(b *testing.B) { benchmarkFanOut(b, 100) }

// Bounds returns the oldest held offset and the next offset to be written (tests only).
func (r *ring) Bounds() (head, tail int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head, r.tail
}

//go:build !rundinit

package main

// budget.go owns the server-wide memory budget for job output: what every ring holds, live and
// finished (its data and its segment deque), adds up to at most max. When a ring would grow past it,
// finished jobs' rings are given up first, oldest first (those a lossless reader still reads last):
// their status stays, and a reader is told the bytes are lost. Once none is left, a live ring stops
// growing and wraps at what it has. Each live ring may always take a floor (one pump read, or its
// whole capacity if smaller), so the budget can be overdrawn by at most that floor per live job.
//
// Lock order: a ring's mu before budget.mu. budget.mu is held with no ring's mu taken after it; a live
// ring (growing, under its own mu) takes a finished ring's mu to give it up, never the reverse.

import (
	"log"
	"slices"
	"sync"
)

type budget struct {
	max     int64     // bytes; read-only
	logFull sync.Once // logs the first time the budget is full

	mu       sync.Mutex // guards the fields below
	used     int64      // bytes the rings hold
	finished []*ring    // closed rings that may be given up, oldest first
}

// take accounts n more bytes for a live ring, giving up finished rings as needed. With force it always
// succeeds (a ring's floor). n > 0: a ring asks only to grow (grow, growSegs).
func (b *budget) take(n int64, force bool) bool {
	for kept := 0; ; {
		b.mu.Lock()
		if force || b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		b.logFull.Do(func() {
			log.Printf("output budget of %d MiB is full: finished jobs' output is given up, oldest first, "+
				"then live jobs' rings stop growing (-output_budget)", b.max>>20)
		})
		if len(b.finished) == 0 {
			b.mu.Unlock()
			return false
		}
		// A ring that a lossless reader still reads is given up last, once every other finished ring is
		// gone: one client reading its old output slowly must not keep another's live job from its ring.
		lastResort := kept >= len(b.finished)
		victim := b.finished[0]
		b.finished = b.finished[1:]
		b.mu.Unlock()
		given := victim.giveUp(lastResort)
		if !given { // a lossless reader still reads it: keep it for now, try the next
			b.closed(victim) // back at the end of the finished rings
			kept++
		}
	}
}

// release returns n bytes to the budget.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// closed records that r's job ended: r may be given up from now on.
func (b *budget) closed(r *ring) {
	b.mu.Lock()
	b.finished = append(b.finished, r)
	b.mu.Unlock()
}

// forget drops r from the finished rings (its job's record is gone).
func (b *budget) forget(r *ring) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = slices.DeleteFunc(b.finished, func(f *ring) bool { return f == r })
}

//go:build !rundinit

package main

// pool.go owns the spare sandboxes: what a job runs in, made before its Start.
//
// A sandbox is the job id, the cgroups named by it (cgroup v2 cannot rename), the output pipes, and the
// init, which starts up and sets up the namespaces meanwhile. That start-up is most of a Start's cost
// (BENCHMARKS.md, "Where a Start's time goes"), so the pool keeps size sandboxes ready; an unused one
// costs one waiting init process and three empty cgroups. With size 0 every take makes a fresh one.
//
// Goroutines (who starts, what ends, who waits):
//   - fill: started by refill (newPool's first) when the pool is short of spares and no fill runs
//     (p.filling); ends once it is full or closed, or a spare cannot be made; close waits (p.wg).
//   - one refill timer per started job (time.AfterFunc, jobs.go start): after refillDelay it runs
//     refill, which never blocks, and ends; nothing waits for it. A refill after close starts nothing.
//
// p.mu is never held with another lock, nor across a sandbox's making or removal.

import (
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sandbox is a job's cgroups, pipes and init, before and while the job runs.
type sandbox struct {
	id      string
	cg      *jobCgroup
	proc    *proc
	outputs [2]*os.File  // read ends of the stdout and stderr pipes
	own     *jobUser     // a contained job's own uid and gid; nil if not contained
	contain *containment // where own came from; nil if not contained
	given   given        // beyond the default containment; its dirs are the -job_dirs it writes in
}

// containment is how the pool makes contained sandboxes; nil: -unsafe_uncontained_jobs.
type containment struct {
	uids    *uidRange
	tmpSize uint64   // bytes of each private tmpfs
	dirs    []string // -job_dirs: each job writes its own DIR/<id> there (checkJobDirs)
	nproc   uint64   // RLIMIT_NPROC of each job, where no pids controller bounds its processes; 0: none
	// tmpTotal bounds the tmpfs of all sandboxes together where no memory controller charges each to
	// its job (jobs.go newManager); nil: none.
	tmpTotal *tmpBudget
}

// tmpBudget is -job_tmp_total: the bytes that live sandboxes' tmpfs may hold together. A sandbox takes
// its -job_tmp_size when it is made and gives it back when it is released, all its processes gone.
type tmpBudget struct {
	max uint64

	mu   sync.Mutex // guards used
	used uint64
}

func (b *tmpBudget) take(n uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return clientErr(errExhausted, "the jobs' /tmp space is all taken: %d of -job_tmp_total %d bytes, and a job "+
			"needs %d (-job_tmp_size)", b.used, b.max, n)
	}
	b.used += n
	return nil
}

func (b *tmpBudget) give(n uint64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// pool keeps spare sandboxes ready for Starts.
type pool struct {
	cg      *cgroupFS    // read-only
	size    int          // spares kept ready
	contain *containment // read-only

	mu      sync.Mutex // guards spares, filling and closed
	spares  []*sandbox // ready for a Start, oldest first; at most size
	filling bool       // fill runs
	closed  bool       // close has begun: no fill starts

	wg sync.WaitGroup // fill
}

// refillDelay is how long a taken spare's replacement waits for the job that took it to be gone (its
// watcher refills then too, if that comes first). Making a sandbox (a clone with five new namespaces,
// an exec, a Go runtime's start) competes with the job's own start, and with the teardown of its
// sandbox and the client reading its end (BENCHMARKS.md, "Where a Start's time goes"). With two
// spares the next Start still finds one.
const refillDelay = 100 * time.Millisecond

func newPool(cg *cgroupFS, size int, contain *containment) *pool {
	p := &pool{cg: cg, size: size, contain: contain}
	p.refill()
	return p
}

// take returns a sandbox for a Start: the oldest spare, or a new one when there is none or the Start
// was given more than a spare has (grants.go). The caller owns it: it runs a job in it, or discards it.
func (p *pool) take(g given) (sb *sandbox, err error) {
	if !p.fits(g) {
		return p.newSandbox(g)
	}
	p.mu.Lock()
	if len(p.spares) > 0 {
		sb, p.spares = p.spares[0], p.spares[1:]
	}
	p.mu.Unlock()
	if sb == nil {
		sb, err = p.newSandbox(g)
	}
	return sb, err
}

// fits reports whether a spare fits a job given g: one that asks for nothing a spare lacks (the host's
// network, fewer -job_dirs, root unless the pool's spares are root's: -unsafe_uncontained_jobs).
func (p *pool) fits(g given) bool {
	return !g.hostNet && g.dirs == nil && (!g.root || p.contain == nil)
}

// refill starts fill to make up the spares, unless it runs already or none is missing.
func (p *pool) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.filling && p.short() {
		p.filling = true
		p.wg.Go(p.fill) // under mu: once close has set closed, no fill starts that it does not wait for
	}
}

// short reports whether the pool is open and has fewer than size spares. Caller holds mu.
func (p *pool) short() bool { return !p.closed && len(p.spares) < p.size }

// fill makes spares until there are size of them, the pool closes, or one cannot be made.
func (p *pool) fill() {
	p.mu.Lock()
	for p.short() {
		p.mu.Unlock() // not held while a sandbox is made
		sb, err := p.newSandbox(given{})
		if err != nil {
			log.Printf("prepare a spare job sandbox: %v", err) // the next Start makes its own
			p.mu.Lock()
			break // mu held, as when the loop ends
		}
		p.mu.Lock()
		p.spares = append(p.spares, sb) // if close has begun, it discards this one after its wait
	}
	p.filling = false // in the same hold of mu as the last check: a refill from now on starts a fill
	p.mu.Unlock()
}

// close stops making spares, waits for fill and discards the spares.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait() // fill adds no spare once it has returned
	p.mu.Lock()
	spares := p.spares
	p.spares = nil
	p.mu.Unlock()
	for _, sb := range spares {
		sb.discard()
	}
}

// newSandbox makes a sandbox: id, own uid if contained, cgroups, pipes, init; contained unless the
// pool is not or g.root, in the host's network namespace if g.hostNet, and writing in g.dirs of
// -job_dirs (nil: all). On error nothing is left.
func (p *pool) newSandbox(g given) (*sandbox, error) {
	id, err := newULID(time.Now())
	if err != nil {
		return nil, err
	}
	sb := &sandbox{id: id.String(), given: g}
	setup := initSetup{Hostname: sb.id, HostNet: g.hostNet}
	if c := p.contain; c != nil && !g.root {
		if err := sb.takeOwn(c); err != nil {
			return nil, err
		}
		if g.dirs == nil {
			sb.given.dirs = c.dirs
		}
		setup.Own, setup.TmpSize, setup.Dirs, setup.NProc = sb.own, c.tmpSize, sb.given.dirs, c.nproc
	}
	if err := sb.start(p.cg, setup); err != nil {
		sb.discard()
		return nil, err
	}
	return sb, nil
}

// start makes the sandbox's cgroups and output pipes, and starts its init. On error, what it made
// is in sb, for discard.
func (sb *sandbox) start(cg *cgroupFS, setup initSetup) error {
	var err error
	if sb.cg, err = cg.create(sb.id); err != nil {
		return fmt.Errorf("create job cgroup: %w", err)
	}
	var writeEnds [2]*os.File // of the stdout and stderr pipes
	for i := range sb.outputs {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		sb.outputs[i], writeEnds[i] = r, w
		defer w.Close() // the init holds its own copies of the write ends
	}
	setup.Cgroup2, setup.JobCgroup = cg.mount, sb.cg.jobDir()
	sb.proc, err = startInit(sb.cg, setup, writeEnds[0], writeEnds[1])
	return err
}

// discard ends a sandbox that no job will use and removes what it holds.
func (sb *sandbox) discard() {
	if sb.proc != nil {
		sb.proc.kill()
		sb.proc.reap()
	}
	closeAll(sb.outputs[:])
	if sb.cg != nil {
		if err := sb.cg.remove(); err != nil {
			log.Printf("sandbox %s: remove cgroup: %v", sb.id, err)
			return // its uid stays taken: a process of it may live on
		}
	}
	sb.release()
}

// takeOwn takes a uid for the contained sandbox, and its tmpfs from c.tmpTotal where that bounds it.
// On error it holds neither.
func (sb *sandbox) takeOwn(c *containment) error {
	own, err := c.uids.take()
	if err != nil {
		return err
	}
	if c.tmpTotal != nil {
		if err := c.tmpTotal.take(c.tmpSize); err != nil {
			c.uids.give(own.UID)
			return err
		}
	}
	sb.own, sb.contain = own, c
	return nil
}

// release gives the sandbox's uid and tmpfs bytes back, once no process of it is left, and removes its directories
// in -job_dirs that it left empty (a spare's, always); what a job wrote stays, under its uid.
func (sb *sandbox) release() {
	if sb.own != nil {
		for _, d := range sb.given.dirs {
			os.Remove(filepath.Join(d, sb.id))
		}
		sb.contain.uids.give(sb.own.UID)
		sb.own = nil
		if sb.contain.tmpTotal != nil {
			sb.contain.tmpTotal.give(sb.contain.tmpSize)
		}
	}
}

// uidRange hands out the host uids that contained jobs run as, one per sandbox, the gid the same
// number. A uid goes back once every process of its sandbox is gone (its cgroup removed), and is
// taken again as late as possible (round robin), so that a job's files in a directory an operator
// shares outlive it under a uid no job has for a long while.
type uidRange struct {
	first, count uint32

	mu   sync.Mutex // guards used and next
	used map[uint32]bool
	next uint32 // the offset tried first
}

// newUIDRange checks that no user or group of the host's /etc/passwd and /etc/group has an id in the
// range: a job would own that user's files.
func newUIDRange(first, count uint32) (*uidRange, error) {
	if first == 0 || count == 0 || uint64(first)+uint64(count) > 1<<32-1 {
		return nil, fmt.Errorf("job uid range %d+%d: want a first uid above 0 and a count that ends below 2^32-1",
			first, count)
	}
	for _, file := range []string{"/etc/passwd", "/etc/group"} {
		data, err := os.ReadFile(file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) < 3 {
				continue
			}
			id, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil || id < uint64(first) || id-uint64(first) >= uint64(count) {
				continue
			}
			return nil, fmt.Errorf("job uid range %d+%d holds %s's id %d, from %s", first, count, f[0], id, file)
		}
	}
	// The rotation starts at a random offset, so that a restarted server does not give out first the
	// uids the last one's jobs had (whose files may be left in -job_dirs).
	return &uidRange{first: first, count: count, used: map[uint32]bool{}, next: rand.Uint32N(count)}, nil
}

func (r *uidRange) take() (*jobUser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := uint32(0); i < r.count; i++ {
		uid := r.first + (r.next+i)%r.count
		if !r.used[uid] {
			r.used[uid] = true
			r.next = (r.next + i + 1) % r.count
			return &jobUser{UID: uid, GID: uid}, nil
		}
	}
	return nil, clientErr(errExhausted, "all %d job uids are in use", r.count)
}

func (r *uidRange) give(uid uint32) {
	r.mu.Lock()
	delete(r.used, uid)
	r.mu.Unlock()
}

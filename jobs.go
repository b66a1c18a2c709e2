//go:build !rundinit

package main

// jobs.go owns the job table: the bounds on live jobs (in all and per client), lookup by id for the
// owner only, retention of finished jobs, and shutdown. One job's life is in job.go, the sandboxes it
// runs in come from the pool (pool.go).
//
// Goroutines: one watcher per registered job (start), which runs the job's finish (retiring its record
// at the end) and nudges the pool to refill; it ends once the job is gone, and shutdown waits for every
// one (m.watchers). One refill timer per started job (time.AfterFunc, pool.go).
//
// Lock order: manager.mu before job.mu, a ring's mu and budget.mu. manager.mu is never held while a job
// is started or stopped.

import (
	"cmp"
	"context"
	"errors"
	"log"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// jobsConfig is what the job table is told by the server (part of main.go serveConfig); read-only.
type jobsConfig struct {
	ringSize         int           // bytes of output kept per job
	retainJobs       int           // finished jobs kept per client
	maxJobs          int           // live jobs in all
	maxJobsPerClient int           // live jobs per client identity
	spareInits       int           // sandboxes kept ready ahead of Starts
	contain          *containment  // how jobs are contained; nil: -unsafe_uncontained_jobs
	losslessTimeout  time.Duration // a lossless reader that reads nothing this long is demoted
	outputBudget     int64         // bytes all rings may hold together (budget.go)
	defaultPids      uint64        // processes of a job whose Start sets no max_pids (-job_max_pids); 0: none
	tmpTotal         uint64        // bytes all contained jobs' tmpfs may hold, where memory is not there; 0: none
	grantsFile       string        // -grants: what identities may have beyond the default (grants.go); "": none
}

// manager is the job table.
type manager struct {
	cg     *cgroupFS
	cfg    jobsConfig
	pool   *pool
	budget *budget
	grants *grants

	mu       sync.Mutex // guards jobs, finished, running, live and closing
	jobs     map[string]*job
	finished map[string][]*job // by identityKey: the ended jobs kept, oldest first
	running  map[string]int    // live jobs per identity
	live     int               // live jobs in all
	closing  bool
	watchers sync.WaitGroup // one per registered job, done when it is gone
}

func newManager(cg *cgroupFS, cfg jobsConfig) *manager {
	if cfg.contain != nil {
		contain := *cfg.contain
		if !cg.available["pids"] {
			// No pids.max to hold the default: each contained job's own uid bounds its processes instead.
			contain.nproc = cfg.defaultPids
		}
		if !cg.available["memory"] && cfg.tmpTotal > 0 {
			// No memory cgroup to charge a job's tmpfs to: their sizes together are bounded instead.
			contain.tmpTotal = &tmpBudget{max: cfg.tmpTotal}
		}
		cfg.contain = &contain
	}
	gs := &grants{path: cfg.grantsFile, uncontained: cfg.contain == nil, cg: cg} // loaded by serve (load)
	if cfg.contain != nil {
		gs.dirs = cfg.contain.dirs
	}
	return &manager{cg: cg, cfg: cfg, pool: newPool(cg, cfg.spareInits, cfg.contain), grants: gs,
		budget: &budget{max: cfg.outputBudget},
		jobs:   map[string]*job{}, finished: map[string][]*job{}, running: map[string]int{}}
}

// start runs a validated job for owner, if its grant allows what it asks for.
func (m *manager) start(owner []string, spec *jobSpec) (*job, error) {
	if err := m.grants.allow(owner, spec); err != nil {
		return nil, err
	}
	if cs := m.cg.missing(spec.lim); len(cs) > 0 {
		return nil, clientErr(errUnsupported,
			"this host cannot enforce the requested limits: cgroup controller %s not available",
			strings.Join(cs, " and controller "))
	}
	if spec.lim.pids == 0 && m.cg.available["pids"] {
		spec.lim.pids = m.cfg.defaultPids // none asked for: the server's default bound
	}
	if err := m.reserve(owner, cmp.Or(spec.maxJobs, m.cfg.maxJobsPerClient)); err != nil {
		return nil, err
	}
	j, err := m.launch(owner, spec)
	if err != nil {
		m.release(owner)
		m.pool.refill()
		return nil, err
	}
	if err := m.register(j, owner); err != nil { // the server is closing: register ended the job
		m.release(owner)
		return nil, err
	}
	time.AfterFunc(refillDelay, m.pool.refill) // or sooner, once the job is gone (register)
	return j, nil
}

// launch begins the job in a sandbox from the pool. A spare whose init died while it waited (killed,
// or out of memory) is discarded by begin, and the next one is taken: more than the pool holds, and
// take makes a fresh one. The Start does not fail for it. Only errInitGone counts: the command never
// reached that init, so it cannot have run twice.
func (m *manager) launch(owner []string, spec *jobSpec) (*job, error) {
	for tries := 0; ; tries++ {
		sb, err := m.pool.take(spec.given)
		if err != nil {
			return nil, err
		}
		j, err := begin(sb, owner, spec, m.cg, m.cfg, m.budget)
		if !errors.Is(err, errInitGone) || tries > m.cfg.spareInits {
			return j, err
		}
		log.Printf("sandbox %s: its init died while it waited; taking another", sb.id)
	}
}

// reserve counts a job against the server's bound and its client's, perClient, or says why it cannot run.
func (m *manager) reserve(owner []string, perClient int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := identityKey(owner)
	switch {
	case m.closing:
		return clientErr(errClosing, "server is shutting down")
	case m.live >= m.cfg.maxJobs:
		return clientErr(errExhausted, "the server already runs its maximum of %d jobs", m.cfg.maxJobs)
	case m.running[key] >= perClient:
		return clientErr(errExhausted, "you already run %d jobs, the most one client may", perClient)
	}
	m.running[key]++
	m.live++
	return nil
}

// release undoes reserve. running keeps no zero count.
func (m *manager) release(owner []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := identityKey(owner)
	m.running[key]--
	if m.running[key] == 0 {
		delete(m.running, key)
	}
	m.live--
}

// register publishes a started job and starts its watcher. Registering and the closing check happen
// under one lock, so shutdown either sees this job in its list or this start sees closing: no job
// escapes the shutdown. If closing, the job is killed and cleaned up here.
func (m *manager) register(j *job, owner []string) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		j.proc.kill()
		j.log.Close()       // no client will read it: the pumps must not wait for a hold_output
		j.finish(func() {}) // start releases the reservation
		return clientErr(errClosing, "server is shutting down")
	}
	m.jobs[j.id] = j
	m.watchers.Go(func() { // under mu: once shutdown has seen closing, it waits for every watcher
		// Retired before done is closed: a client that has seen the end finds the records it keeps.
		j.finish(func() { m.release(owner); m.retire(j) })
		m.pool.refill() // the job that took a spare is gone
	})
	m.mu.Unlock()
	return nil
}

// get returns the job with id if owner may see it. A job that exists but belongs to someone else is
// reported exactly like one that does not exist.
func (m *manager) get(id string, caller []string) (*job, error) {
	m.mu.Lock()
	j := m.jobs[id]
	m.mu.Unlock()
	if j == nil || !sharesIdentity(j.owner, caller) {
		return nil, clientErr(errNotFound, "job %s not found", id)
	}
	return j, nil
}

// list returns the caller's jobs, oldest first.
func (m *manager) list(caller []string) []*job {
	m.mu.Lock()
	notCallers := func(j *job) bool { return !sharesIdentity(j.owner, caller) }
	js := slices.DeleteFunc(slices.Collect(maps.Values(m.jobs)), notCallers)
	m.mu.Unlock()
	// By start time: an id's time is when its sandbox was made, which for a spare precedes the Start.
	slices.SortFunc(js, func(a, b *job) int { return a.started.Compare(b.started) })
	return js
}

// retire records that j has ended, and forgets its client's oldest finished jobs beyond -retain_jobs.
// The count is per client, so that one client's many jobs cannot push out another's records.
func (m *manager) retire(j *job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := identityKey(j.owner)
	q := append(m.finished[k], j)
	for ; len(q) > m.cfg.retainJobs; q = q[1:] {
		delete(m.jobs, q[0].id)
		q[0].log.Forget()
	}
	m.finished[k] = q
}

// shutdown refuses new jobs, removes the spare sandboxes, stops every running job (each with its own
// grace period, all at once) and returns when all their cgroups are gone.
func (m *manager) shutdown() {
	m.mu.Lock()
	m.closing = true
	live := slices.Collect(maps.Values(m.jobs))
	m.mu.Unlock()
	m.pool.close()
	var wg sync.WaitGroup
	for _, j := range live {
		wg.Go(func() { j.stop(context.Background()) })
	}
	wg.Wait()
	m.watchers.Wait()
}

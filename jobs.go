package main

// jobs.go owns the job table and each job's life: validate, create the cgroup, spawn, pump output into
// the ring, wait, collect the final accounting, remove the cgroup, and evict old records.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Request bounds. The kernel's own are MAX_ARG_STRLEN (128 KiB per string) and a total near 2 MiB
// (execve(2)); ours are lower so one request cannot pin much server memory.
const (
	maxArgs         = 1024
	maxEnv          = 256
	maxStringBytes  = 128 << 10
	maxCommandBytes = 512 << 10
	minCPUQuota     = 1000 // the kernel's minimum cpu.max quota, in us
	cpuPeriod       = 100000
	defaultGrace    = 10 * time.Second
	maxGrace        = 10 * time.Minute
	maxPids         = 1 << 22 // PID_MAX_LIMIT on 64-bit; pids.max refuses more
)

// jobSpec is a validated Start request.
type jobSpec struct {
	argv  []string
	env   []string
	dir   string
	grace time.Duration
	lim   limits
}

// job is one job. Fields above mu are set before the job is published and never change.
type job struct {
	id      string
	owner   []string // SANs of the certificate that started it
	command []string
	grace   time.Duration
	started time.Time
	cg      *jobCgroup
	proc    *proc
	log     *ring
	outputs [2]*os.File    // read ends of the stdout and stderr pipes
	pumps   sync.WaitGroup // the two goroutines copying outputs into log
	done    chan struct{}  // closed once the fields below mu are final
	gone    chan struct{}  // closed after done, once the job's init has exited and its cgroup is removed

	mu            sync.Mutex // guards the fields below
	stopRequested bool       // a Stop came before the command's end was known
	exitKnown     bool       // the init has reported how the command ended
	ended         time.Time
	exit          exitInfo
	final         usage
}

// manager is the job table.
type manager struct {
	cg  *cgroupFS
	cfg serveConfig // ring size, retention, per-client bounds and spare count; read-only

	mu        sync.Mutex // guards jobs, running, live, closing, spares and sandboxes
	jobs      map[string]*job
	running   map[string]int // live jobs per identity
	live      int            // live jobs in all
	closing   bool
	spares    []*sandbox      // ready for a Start, oldest first; at most cfg.spareInits
	sandboxes map[string]bool // ids of the sandboxes no job has taken yet: spare, being made or removed
	watchers  sync.WaitGroup  // one per registered live job, done when its cgroup is gone

	wake   chan struct{}  // nudges warm to refill spares; closed by shutdown
	warmer sync.WaitGroup // the warm goroutine
}

func newManager(cg *cgroupFS, cfg serveConfig) *manager {
	m := &manager{cg: cg, cfg: cfg, jobs: map[string]*job{}, running: map[string]int{},
		sandboxes: map[string]bool{}, wake: make(chan struct{}, 1)}
	m.wake <- struct{}{}
	m.warmer.Add(1)
	go m.warm()
	return m
}

// identityKey names one client certificate's set of SANs, for per-client bounds: sorted, and quoted so
// that no name can run into the next.
func identityKey(owner []string) string {
	var b strings.Builder
	for _, n := range slices.Sorted(slices.Values(owner)) {
		b.WriteString(strconv.Quote(n))
	}
	return b.String()
}

// validate checks a request completely before anything is touched.
func validate(name string, args, env []string, dir string, grace time.Duration, lim limits) (*jobSpec, error) {
	bad := func(format string, a ...any) (*jobSpec, error) {
		return nil, status.Errorf(codes.InvalidArgument, format, a...)
	}
	if name == "" {
		return bad("command name is empty")
	}
	if len(args) > maxArgs || len(env) > maxEnv {
		return bad("at most %d args and %d env entries, got %d and %d", maxArgs, maxEnv, len(args), len(env))
	}
	total := 0
	for _, s := range append(append([]string{name, dir}, args...), env...) {
		if len(s) > maxStringBytes {
			return bad("an argument or env entry is %d bytes; the limit is %d", len(s), maxStringBytes)
		}
		if containsNUL(s) {
			return bad("command, args, env and dir cannot contain a NUL byte")
		}
		total += len(s)
	}
	if total > maxCommandBytes {
		return bad("command, args and env total %d bytes; the limit is %d", total, maxCommandBytes)
	}
	for _, kv := range env {
		if k, _, ok := cutEnv(kv); !ok || k == "" {
			return bad("env entry %.40q is not KEY=VALUE", kv)
		}
	}
	if dir == "" {
		dir = "/"
	}
	if dir[0] != '/' {
		return bad("working directory %.40q is not an absolute path", dir)
	}
	switch {
	case grace == 0:
		grace = defaultGrace
	case grace < 0 || grace > maxGrace:
		return bad("stop grace period %v is outside 0..%v", grace, maxGrace)
	}
	if err := validateLimits(lim); err != nil {
		return nil, err
	}
	return &jobSpec{argv: append([]string{name}, args...), env: jobEnv(env), dir: dir, grace: grace, lim: lim}, nil
}

func validateLimits(lim limits) error {
	bad := func(format string, a ...any) error { return status.Errorf(codes.InvalidArgument, format, a...) }
	maxQuota := uint64(cpuPeriod * runtime.NumCPU())
	if lim.cpuQuota != 0 && (lim.cpuQuota < minCPUQuota || lim.cpuQuota > maxQuota) {
		return bad("max_cpu_bandwidth %d is outside %d..%d (us per %d us period, %d CPUs)",
			lim.cpuQuota, minCPUQuota, maxQuota, cpuPeriod, runtime.NumCPU())
	}
	if lim.pids > maxPids {
		return bad("max_pids %d is over the kernel's limit of %d", lim.pids, maxPids)
	}
	page, mem := uint64(os.Getpagesize()), physicalMemory()
	if lim.memory != 0 && (lim.memory < page || lim.memory > mem) {
		return bad("max_memory_usage %d is outside %d..%d bytes (one page .. this host's memory)", lim.memory, page, mem)
	}
	return nil
}

// physicalMemory is the host's RAM in bytes; a memory limit above it would limit nothing.
func physicalMemory() uint64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 1 << 62
	}
	return si.Totalram * uint64(si.Unit)
}

// jobEnv is the minimal environment every job gets, then the request's entries (later ones win).
func jobEnv(extra []string) []string {
	env := []string{"PATH=" + defaultPath, "HOME=/root", "TERM=dumb"}
	seen := map[string]int{}
	for i, kv := range env {
		k, _, _ := cutEnv(kv)
		seen[k] = i
	}
	for _, kv := range extra {
		k, _, _ := cutEnv(kv)
		if i, ok := seen[k]; ok {
			env[i] = kv
			continue
		}
		seen[k] = len(env)
		env = append(env, kv)
	}
	return env
}

func cutEnv(kv string) (k, v string, ok bool) { return strings.Cut(kv, "=") }

func containsNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// start runs a validated job for owner.
func (m *manager) start(owner []string, spec *jobSpec) (*job, error) {
	if c := m.cg.missing(spec.lim); c != "" {
		return nil, status.Errorf(codes.FailedPrecondition,
			"this host cannot enforce the requested limit: cgroup controller %s is not available", c)
	}
	if err := m.reserve(owner); err != nil {
		return nil, err
	}
	j, err := m.spawnJob(owner, spec)
	if err != nil {
		m.release(owner)
	}
	return j, err
}

// reserve counts a job against the server's and its client's bounds, or says why it cannot run.
func (m *manager) reserve(owner []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := identityKey(owner)
	switch {
	case m.closing:
		return status.Error(codes.Unavailable, "server is shutting down")
	case m.live >= m.cfg.maxJobs:
		return status.Errorf(codes.ResourceExhausted, "the server already runs its maximum of %d jobs", m.cfg.maxJobs)
	case m.running[key] >= m.cfg.maxJobsPerClient:
		return status.Errorf(codes.ResourceExhausted, "you already run %d jobs, the most one client may", m.cfg.maxJobsPerClient)
	}
	m.running[key]++
	m.live++
	return nil
}

func (m *manager) release(owner []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := identityKey(owner)
	if m.running[key]--; m.running[key] == 0 {
		delete(m.running, key)
	}
	m.live--
}

// spawnJob starts the job in a sandbox and registers it.
func (m *manager) spawnJob(owner []string, spec *jobSpec) (*job, error) {
	j, err := m.startInSandbox(owner, spec)
	if err != nil {
		m.refill()
		return nil, err
	}
	// Registering and the closing check happen under one lock, so shutdown either sees this job in
	// its list or this start sees closing: no job escapes the shutdown.
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		j.proc.kill()
		j.finish(func() {}) // start releases the reservation when spawnJob fails
		return nil, status.Error(codes.Unavailable, "server is shutting down")
	}
	m.jobs[j.id] = j
	m.watchers.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.watchers.Done()
		j.finish(func() { m.release(owner) })
		m.evict()
	}()
	// The spare this job took is replaced once the job is gone (its init reaped, its cgroups removed)
	// or has run for refillDelay, not at once: making one (a clone with five new namespaces, an exec,
	// a Go runtime's start) competes with the job's own start where spares cannot start idle (no cpu
	// controller), and with the teardown of its sandbox and the client reading its end when done.
	// Measured on 2 CPUs, 20 ms between jobs: at once -> when done: Start 1.89x -> 1.28x of raw,
	// lifecycle 2.71x -> 2.33x; when done -> when gone: lifecycle 10.4 -> 8.9 ms (raw 4.4). With two
	// spares the next Start still finds one.
	go func() {
		timer := time.NewTimer(refillDelay)
		defer timer.Stop()
		select {
		case <-j.gone:
		case <-timer.C:
		}
		m.refill()
	}()
	return j, nil
}

const refillDelay = 100 * time.Millisecond

// startInSandbox starts the job in the oldest spare sandbox, or in a new one.
func (m *manager) startInSandbox(owner []string, spec *jobSpec) (*job, error) {
	for attempt := 0; ; attempt++ {
		sb, spare, err := m.takeSandbox()
		if err != nil {
			return nil, err
		}
		j, err := m.startIn(sb, owner, spec)
		var se *startError
		if err == nil || !spare || attempt > 0 || errors.As(err, &se) {
			return j, err
		}
		// A spare's init can die while it waits (the OOM killer, an operator): the job goes into
		// another sandbox, once.
		log.Printf("spare sandbox %s: %v; trying another", sb.id, err)
	}
}

// startIn starts the job's command in sb: normal priority and the job's limits for its cgroup, then the
// command to its init. On error sb is gone.
func (m *manager) startIn(sb *sandbox, owner []string, spec *jobSpec) (*job, error) {
	err := m.cg.setIdle(sb.cg, false)
	if err == nil {
		err = m.cg.writeLimits(sb.cg.jobDir(), spec.lim)
	}
	if err != nil {
		m.discard(sb)
		return nil, fmt.Errorf("prepare job cgroup: %w", err)
	}
	j := &job{id: sb.id, owner: owner, command: statusCommand(spec.argv), grace: spec.grace,
		started: time.Now(), cg: sb.cg, proc: sb.proc, outputs: sb.outputs, log: newRing(m.cfg.ringSize),
		done: make(chan struct{}), gone: make(chan struct{})}
	if err := j.proc.begin(initConfig{Argv: spec.argv, Env: spec.env, Dir: spec.dir, User: m.cfg.jobUser}); err != nil {
		m.discard(sb)
		return nil, err
	}
	j.pumps.Add(2)
	go j.pump(stdoutStream, j.outputs[0])
	go j.pump(stderrStream, j.outputs[1])
	return j, nil
}

// sandbox is what a job runs in, made before its Start: the job id, the cgroups named by it (cgroup v2
// cannot rename), the output pipes and the init, which starts up and sets up the namespaces meanwhile.
// That start-up is most of a Start's cost (the Go runtime and package initialisation of this 10 MB
// binary, ~17 ms of CPU here: BENCHMARKS.md), so the manager keeps cfg.spareInits sandboxes ready. An
// unused one costs one waiting init process (about 1.2 MiB private memory) and three empty cgroups.
type sandbox struct {
	id      string
	made    time.Time
	cg      *jobCgroup
	proc    *proc
	outputs [2]*os.File // read ends of the stdout and stderr pipes
}

// takeSandbox returns the oldest spare sandbox (spare is true), or makes one when there is none.
func (m *manager) takeSandbox() (sb *sandbox, spare bool, err error) {
	m.mu.Lock()
	if len(m.spares) > 0 {
		sb, m.spares = m.spares[0], m.spares[1:]
		delete(m.sandboxes, sb.id)
	}
	m.mu.Unlock()
	if sb != nil {
		return sb, true, nil
	}
	if sb, err = m.newSandbox(); err == nil {
		m.mu.Lock()
		delete(m.sandboxes, sb.id)
		m.mu.Unlock()
	}
	return sb, false, err
}

// refill wakes warm.
func (m *manager) refill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closing {
		select {
		case m.wake <- struct{}{}:
		default: // already awake
		}
	}
}

// warm keeps cfg.spareInits sandboxes ready, none older than spareMaxAge, until shutdown closes wake.
// Once a spare's init has exec'd, its cgroup is made idle (setIdle), so that the init's start-up takes
// only CPU time that jobs leave over; startIn undoes that. Not before the exec: the server waits for it
// holding the process-wide fork lock, which an idle exec could then hold for long.
func (m *manager) warm() {
	defer m.warmer.Done()
	tick := time.NewTicker(spareMaxAge / 2)
	defer tick.Stop()
	for {
		select {
		case _, ok := <-m.wake:
			if !ok {
				return
			}
		case <-tick.C:
			m.dropOldSpares()
		}
		for {
			m.mu.Lock()
			full := m.closing || len(m.spares) >= m.cfg.spareInits
			m.mu.Unlock()
			if full {
				break
			}
			sb, err := m.newSandbox()
			if err == nil {
				err = m.cg.setIdle(sb.cg, true)
			}
			if err != nil {
				if sb != nil {
					m.discard(sb)
				}
				log.Printf("prepare a spare job sandbox: %v", err) // the next Start makes its own
				break
			}
			m.mu.Lock()
			closing := m.closing
			if !closing {
				m.spares = append(m.spares, sb)
			}
			m.mu.Unlock()
			if closing {
				m.discard(sb)
			}
		}
	}
}

// spareMaxAge bounds how old a spare gets (checked every spareMaxAge/2): a job id is minted with its
// sandbox, and its time should stay within a minute of the job's start.
var spareMaxAge = 40 * time.Second

// dropOldSpares discards the spares made more than spareMaxAge ago; warm then makes new ones.
func (m *manager) dropOldSpares() {
	m.mu.Lock()
	var old []*sandbox
	for len(m.spares) > 0 && time.Since(m.spares[0].made) > spareMaxAge {
		old = append(old, m.spares[0])
		m.spares = m.spares[1:]
	}
	m.mu.Unlock()
	for _, sb := range old {
		m.discard(sb)
	}
}

// newSandbox makes a sandbox: id, cgroups, pipes, init.
func (m *manager) newSandbox() (*sandbox, error) {
	id, err := newULID(time.Now())
	if err != nil {
		return nil, fmt.Errorf("new job id: %w", err)
	}
	sb := &sandbox{id: id.String(), made: time.Now()}
	m.mu.Lock()
	m.sandboxes[sb.id] = true // before the cgroup exists, so that the set covers every cgroup not a job's
	m.mu.Unlock()
	var pipes [4]*os.File // out r/w, err r/w
	if sb.cg, err = m.cg.create(sb.id); err != nil {
		err = fmt.Errorf("create job cgroup: %w", err)
	} else if pipes[0], pipes[1], err = os.Pipe(); err == nil {
		if pipes[2], pipes[3], err = os.Pipe(); err == nil {
			sb.proc, err = startInit(sb.cg, sb.id, pipes[1], pipes[3])
		}
	}
	closeAll([]*os.File{pipes[1], pipes[3]}) // the init holds its own copies
	sb.outputs = [2]*os.File{pipes[0], pipes[2]}
	if err != nil {
		m.discard(sb)
		return nil, err
	}
	return sb, nil
}

// discard ends a sandbox that no job will use and removes what it holds.
func (m *manager) discard(sb *sandbox) {
	if sb.proc != nil {
		sb.proc.kill()
		sb.proc.reap()
	}
	closeAll(sb.outputs[:])
	if sb.cg != nil {
		if err := sb.cg.remove(); err != nil {
			log.Printf("sandbox %s: remove cgroup: %v", sb.id, err)
		}
	}
	m.mu.Lock()
	delete(m.sandboxes, sb.id)
	m.mu.Unlock()
}

// statusCommand is the command as Status and List show it: cut at 1 KiB, so that a List of many jobs
// with long command lines stays small.
func statusCommand(argv []string) []string {
	var out []string
	n := 0
	for i, a := range argv {
		if n += len(a); n > 1024 {
			return append(out, fmt.Sprintf("... (%d more args)", len(argv)-i))
		}
		out = append(out, a)
	}
	return out
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// pumpBufs lends the pumps their read buffers. The 64 KiB reads match the default pipe capacity
// (pipe(7)), so a job writing flat out needs few wakeups.
var pumpBufs = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// pump copies one output pipe into the ring until every writer is gone. It waits for the pipe through
// the runtime poller and holds a buffer only while it reads: an idle job's pumps hold no buffer and
// keep the small stacks goroutines start with. (A buffer local to the loop would live on the
// goroutine's stack, 2 x 128 KiB of stack per job.)
func (j *job) pump(s stream, f *os.File) {
	defer j.pumps.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		n, rerr := 0, error(nil)
		err := rc.Read(func(fd uintptr) bool {
			buf := pumpBufs.Get().(*[64 << 10]byte)
			defer pumpBufs.Put(buf)
			if n, rerr = syscall.Read(int(fd), buf[:]); rerr == syscall.EAGAIN {
				return false // wait until the pipe is readable
			}
			j.log.Write(s, buf[:max(n, 0)])
			return true
		})
		switch {
		case err != nil: // drain closed the pipe
			return
		case rerr == syscall.EINTR:
		case rerr != nil || n == 0: // n == 0: every writer is gone
			return
		}
	}
}

// finish waits for the job to end and then cleans up after it, in this order: the init's exit report;
// cgroup.kill for anything the command left in job/, and job/ empty; the output drained; the final
// accounting; the status published; the log closed (so a reader that sees EOF sees a final status).
// Then rund's own part, which a client need not wait for: the init reaped, the cgroups removed.
func (j *job) finish(ended func()) {
	exit := j.proc.wait()
	j.mu.Lock()
	j.exitKnown = true
	j.mu.Unlock()
	j.empty(j.cg.jobDir())
	j.drain()
	final, _ := readUsage(j.cg.jobDir())
	j.mu.Lock()
	j.ended, j.exit, j.final = time.Now(), exit, final
	j.mu.Unlock()
	ended() // before done: a client that sees the end may start its next job at once
	close(j.done)
	j.log.Close()
	// The init exits after its report, taking its namespaces with it.
	j.proc.reap()
	j.empty(j.cg.dir)
	if err := j.cg.remove(); err != nil {
		log.Printf("job %s: remove cgroup: %v", j.id, err)
	}
	close(j.gone)
}

// empty returns once dir holds no process, killing what it holds.
func (j *job) empty(dir string) {
	if busy, err := populated(dir); !busy && err == nil {
		return
	}
	if err := kill(dir); err != nil {
		log.Printf("job %s: %v", j.id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitEmpty(ctx, dir); err != nil {
		log.Printf("job %s: %v", j.id, err)
	}
}

// drain waits for the pumps to read the last bytes. Every job process is gone by now, but a job could
// have passed its pipe to a process outside (over a unix socket on the shared filesystem); such a
// holder must not keep the log open forever, so after a short wait the read ends are closed.
func (j *job) drain() {
	done := make(chan struct{})
	go func() { j.pumps.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	closeAll(j.outputs[:]) // unblocks a pump still reading
	<-done
}

// stop asks the job to end and returns once its cleanup is done (its cgroup is gone) or ctx ends. The
// first Stop of a running job starts escalate, which does not depend on that caller staying.
func (j *job) stop(ctx context.Context) error {
	j.mu.Lock()
	first := !j.exitKnown && !j.stopRequested
	j.stopRequested = j.stopRequested || !j.exitKnown // a job that already ended keeps its own state
	j.mu.Unlock()
	if first {
		go j.escalate()
	}
	select {
	case <-j.gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// escalate sends SIGTERM to the command and, if the job is still there after the grace period, SIGKILL
// to every process of the command's cgroup. Killing job/ and not the init lets the init report the
// command's SIGKILL exactly.
func (j *job) escalate() {
	j.proc.signal(syscall.SIGTERM)
	timer := time.NewTimer(j.grace)
	defer timer.Stop()
	select {
	case <-j.done:
	case <-timer.C:
		if err := kill(j.cg.jobDir()); err != nil {
			log.Printf("job %s: %v", j.id, err)
		}
	}
}

// snapshot is a job's status at one moment.
type snapshot struct {
	id            string
	command       []string
	started       time.Time
	running       bool
	stopRequested bool
	ended         time.Time
	exit          exitInfo
	use           usage
}

func (j *job) snapshot() snapshot {
	finished := false // checked before the copy: if done closes during it, the copy is not final
	select {
	case <-j.done:
		finished = true
	default:
	}
	j.mu.Lock()
	s := snapshot{id: j.id, command: j.command, started: j.started, stopRequested: j.stopRequested,
		ended: j.ended, exit: j.exit, use: j.final}
	j.mu.Unlock()
	if finished {
		return s
	}
	use, ok := readUsage(j.cg.jobDir())
	if !ok {
		// job/ is removed only after done is closed: the job ended since the check above.
		<-j.done
		return j.snapshot()
	}
	s.running, s.use = true, use
	return s
}

// get returns the job with id if owner may see it. A job that exists but belongs to someone else is
// reported exactly like one that does not exist.
func (m *manager) get(id string, caller []string) (*job, error) {
	m.mu.Lock()
	j := m.jobs[id]
	m.mu.Unlock()
	if j == nil || !sharesIdentity(j.owner, caller) {
		return nil, status.Errorf(codes.NotFound, "job %s not found", id)
	}
	return j, nil
}

// list returns the caller's jobs, oldest first.
func (m *manager) list(caller []string) []*job {
	m.evict()
	m.mu.Lock()
	var js []*job
	for _, j := range m.jobs {
		if sharesIdentity(j.owner, caller) {
			js = append(js, j)
		}
	}
	m.mu.Unlock()
	// By start time: an id's time is when its sandbox was made, which for a spare precedes the Start.
	sort.Slice(js, func(a, b int) bool { return js[a].started.Before(js[b].started) })
	return js
}

// evict drops each client's finished jobs beyond the retention bounds, oldest first. The count is per
// client, so that one client's many jobs cannot push out another's records.
func (m *manager) evict() {
	m.mu.Lock()
	defer m.mu.Unlock()
	var finished []*job
	for _, j := range m.jobs {
		select {
		case <-j.done: // ended is final and visible once done is closed
			finished = append(finished, j)
		default:
		}
	}
	sort.Slice(finished, func(a, b int) bool { return finished[a].ended.After(finished[b].ended) })
	cutoff := time.Now().Add(-m.cfg.retainFor)
	kept := map[string]int{}
	for _, j := range finished {
		k := identityKey(j.owner)
		if kept[k]++; kept[k] > m.cfg.retainJobs || j.ended.Before(cutoff) {
			delete(m.jobs, j.id)
		}
	}
}

// shutdown refuses new jobs, removes the spare sandboxes, stops every running job (each with its own
// grace period, all at once) and returns when all their cgroups are gone.
func (m *manager) shutdown() {
	m.mu.Lock()
	m.closing = true
	close(m.wake)
	var live []*job
	for _, j := range m.jobs {
		live = append(live, j)
	}
	spares := m.spares
	m.spares = nil
	m.mu.Unlock()
	m.warmer.Wait()
	for _, sb := range spares {
		m.discard(sb)
	}
	var wg sync.WaitGroup
	for _, j := range live {
		wg.Add(1)
		go func() { defer wg.Done(); j.stop(context.Background()) }()
	}
	wg.Wait()
	m.watchers.Wait()
}

// startErrorStatus turns a failed exec into the gRPC status a client can act on.
func startErrorStatus(err error) error {
	var se *startError
	if !errors.As(err, &se) {
		return err
	}
	if se.stage == "setup" {
		return err // the server's own failure: logged, and Internal to the client
	}
	code := codes.Internal
	switch {
	case se.stage == "dir":
		code = codes.InvalidArgument
	case se.errno == syscall.ENOENT:
		code = codes.NotFound
	case se.errno == syscall.EACCES || se.errno == syscall.EPERM:
		code = codes.PermissionDenied
	case se.errno == syscall.ENOEXEC || se.errno == syscall.E2BIG:
		code = codes.InvalidArgument
	}
	return status.Error(code, se.msg)
}

//go:build !rundinit

package main

// job.go owns one job's life, from the sandbox it runs in to its removal:
//
//	begin:  limits written, command sent to the init, pumps started
//	finish: exit report -> job/ emptied -> output drained -> final accounting -> status published (done)
//	        -> log closed -> init reaped -> cgroups removed (gone)
//	stop:   SIGTERM to every process of the job (by the init, ordered); after the grace period,
//	        cgroup.kill of job/ and SIGKILL to them by the init; an init that then does not report is
//	        SIGKILLed (its PID namespace goes with it)
//
// Goroutines of a job (who starts, what ends, who waits):
//   - two pumps: started by begin; end when every writer of their pipe is gone or drain closes it;
//     finish waits (j.pumps), through drain's waiter, which ends with them.
//   - the watcher: started by the manager once the job is registered (jobs.go); runs finish, ends
//     after gone; manager.shutdown waits (m.watchers).
//   - escalate: started by the first Stop of a running job; ends at done or after the grace period;
//     finish waits (j.escalation) before gone.
//   - the hold_output timer: a Start's with hold_output starts it (time.AfterFunc); it runs
//     releaseStartHold once, which does not block, and ends; nothing waits for it.
//
// Lock order: manager.mu before job.mu, and either before a ring's mu, which comes before budget.mu
// (budget.go). job.mu is never held while a ring's mu is taken.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"syscall"
	"time"
)

// job is one job. Fields above mu are set before the job is published and never change.
type job struct {
	*sandbox            // what it runs in (pool.go): id, cgroups, init, output pipes; only finish gives its uid back
	owner      []string // SANs of the certificate that started it
	command    []string
	grace      time.Duration
	started    time.Time
	log        *ring
	patience   time.Duration  // how long the job waits for a lossless reader that reads nothing
	pumps      sync.WaitGroup // the two goroutines copying outputs into log
	escalation sync.WaitGroup // the escalate goroutine, if a Stop started one
	done       chan struct{}  // closed once the fields below mu are final
	gone       chan struct{}  // closed after done, once the job's init has exited and its cgroup is removed

	mu            sync.Mutex // guards the fields below
	stopRequested bool       // a Stop came before the command's end was known
	exitKnown     bool       // the init has reported how the command ended
	ended         time.Time
	exit          exitReport
	final         usage
	lastUse       usage // the last usage a snapshot of the running job read
	startHold     *hold // the Start's hold_output, until releaseStartHold
}

// begin starts the job's command in sb, with the spec's limits on its cgroup and a ring of
// cfg.ringSize within the server's output budget. On error sb is discarded.
func begin(sb *sandbox, owner []string, spec *jobSpec, cg *cgroupFS, cfg jobsConfig, b *budget) (*job, error) {
	if err := cg.writeLimits(sb.cg.jobDir(), spec.lim); err != nil {
		sb.discard()
		return nil, fmt.Errorf("prepare job cgroup: %w", err)
	}
	j := &job{sandbox: sb, owner: owner, command: statusCommand(spec.argv), grace: spec.grace, started: time.Now(),
		log: newRing(cfg.ringSize), patience: cfg.losslessTimeout, done: make(chan struct{}), gone: make(chan struct{})}
	j.log.budget = b
	if spec.holdOutput {
		j.startHold = j.log.Hold(0) // before the command can write its first byte
		time.AfterFunc(cfg.losslessTimeout, j.releaseStartHold)
	}
	if err := j.proc.begin(initConfig{Argv: spec.argv, Env: spec.env, Dir: spec.dir}); err != nil {
		sb.discard()
		return nil, err
	}
	j.pumps.Go(func() { j.pump(stdoutStream, j.outputs[0]) })
	j.pumps.Go(func() { j.pump(stderrStream, j.outputs[1]) })
	return j, nil
}

// maxPumpRead is the most a pump reads, and so adds to the ring, at once. It matches the default pipe
// capacity (pipe(7)), so a job writing flat out needs few wakeups.
const maxPumpRead = 64 << 10

// pumpBufs lends the pumps their read buffers.
var pumpBufs = sync.Pool{New: func() any { return new([maxPumpRead]byte) }}

// pump copies one output pipe into the ring until every writer is gone. It waits for the pipe through
// the runtime poller and holds a buffer only while it reads: an idle job's pumps hold no buffer and
// keep the small stacks goroutines start with. (A buffer local to the loop would live on the
// goroutine's stack, 2 x 128 KiB of stack per job.)
func (j *job) pump(s stream, f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	size := min(maxPumpRead, j.log.capacity) // what one read may add to the ring: never more than it holds
	for {
		// A lossless reader that has not read what this read could overwrite keeps the job waiting in
		// write(2), its pipe full, until it reads, goes, or is demoted.
		j.log.WaitRoom(size, j.patience)
		n, rerr := 0, error(nil)
		err := rc.Read(func(fd uintptr) bool {
			buf := pumpBufs.Get().(*[maxPumpRead]byte)
			defer pumpBufs.Put(buf)
			if n, rerr = syscall.Read(int(fd), buf[:size]); rerr == syscall.EAGAIN {
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

// finish waits for the job to end and then cleans up after it, in the order at the top of this file.
// ended runs just before done is closed: a client that sees the end may start its next job at once.
// What follows done is rund's own part, which a client need not wait for.
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
	auditEnd(j)
	ended()
	close(j.done)
	j.releaseStartHold() // no lossless reader came: the budget may give the output up once it is old
	j.log.Close()
	// The init exits after its report, taking its namespaces with it.
	j.proc.reap()
	j.empty(j.cg.dir)
	if err := j.cg.remove(); err != nil {
		log.Printf("job %s: remove cgroup: %v", j.id, err)
	} else {
		j.release() // a uid whose processes might live on is never given to another job
	}
	j.escalation.Wait() // it returns at done
	close(j.gone)
}

// empty returns once dir holds no process, killing what it holds.
func (j *job) empty(dir string) {
	if busy, err := populated(dir); !busy && err == nil {
		return
	}
	j.logErr(kill(dir))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j.logErr(waitEmpty(ctx, dir))
}

// logErr logs err, if any, as the job's.
func (j *job) logErr(err error) {
	if err != nil {
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
	// A job that already ended keeps its own state; a second Stop finds the escalation under way.
	if !j.exitKnown && !j.stopRequested {
		j.stopRequested = true
		j.escalation.Go(j.escalate) // under mu, before finish sets exitKnown and so before it waits
	}
	j.mu.Unlock()
	select {
	case <-j.gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// escalate has the init send SIGTERM to every process of the job and, if the job is still there after
// the grace period, SIGKILLs them all: by cgroup.kill of job/, and by the init, which also reaches a
// process that left the cgroup (only one running as host root can, -unsafe_uncontained_jobs) and then
// reports the command's own end. An init that does not end is killed, which ends its PID namespace.
func (j *job) escalate() {
	j.proc.stop()
	select {
	case <-j.done:
		return
	case <-time.After(j.grace): // an unfired timer is collected since Go 1.23, no Stop needed
	}
	j.logErr(kill(j.cg.jobDir()))
	j.proc.stop()
	select {
	case <-j.done:
	case <-time.After(initReportWait):
		j.proc.kill()
	}
}

// initReportWait is how long an init has to report after its job's grace period: enough for its last
// reaps and for finish's drain (2 s).
const initReportWait = 5 * time.Second

// signal sends sig to the command: SIGKILL by cgroup.kill of job/ (every process of the command; the
// init still reports its end exactly), anything else through the init, which forwards it. A job whose
// end is known is refused.
func (j *job) signal(sig syscall.Signal) error {
	j.mu.Lock()
	known := j.exitKnown // the init has reported how the command ended
	j.mu.Unlock()
	if !known {
		var err error
		if sig == syscall.SIGKILL {
			err = kill(j.cg.jobDir())
		} else {
			err = j.proc.signal(sig)
		}
		if !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, os.ErrNotExist) {
			return err // nil, or the server's own failure
		}
	}
	return clientErr(errEnded, "job %s has ended", j.id)
}

// snapshot is a job's status at one moment.
type snapshot struct {
	id            string
	command       []string
	started       time.Time
	running       bool
	stopRequested bool
	ended         time.Time
	exit          exitReport
	use           usage
	given         given
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
		ended: j.ended, exit: j.exit, use: j.final, given: j.given}
	j.mu.Unlock()
	if finished {
		return s
	}
	use, err := readUsage(j.cg.jobDir())
	switch {
	case errors.Is(err, os.ErrNotExist):
		// job/ is removed only after done is closed: the job ended since the check above.
		<-j.done
		return j.snapshot()
	case err != nil:
		log.Printf("job %s: read usage: %v", j.id, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	// Anything else (EMFILE, ENOMEM) is passing: answer at once with the last figures known.
	if err == nil {
		j.lastUse = use
	}
	s.running, s.use = true, j.lastUse
	return s
}

// attachLossless puts a lossless reader's hold on the job's output at off and, once it is on, lets go of
// the Start's hold_output: the output is held without a gap from the first byte to that reader.
func (j *job) attachLossless(off int64) *hold {
	h := j.log.Hold(off)
	j.releaseStartHold()
	return h
}

// releaseStartHold lets go of the Start's hold_output, if it is still on: when a lossless reader takes
// over, when the job ends, or -lossless_timeout after the Start, whichever comes first.
func (j *job) releaseStartHold() {
	j.mu.Lock()
	start := j.startHold
	j.startHold = nil
	j.mu.Unlock()
	if start != nil {
		start.Release()
	}
}

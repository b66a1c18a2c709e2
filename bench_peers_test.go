package main

// The peers figures of `make bench` (issue 24): a contained job under rund against C sandboxes that give
// it the same, on one machine, rounds interleaved: bwrap (Debian's bubblewrap), `unshare -Urfpnm
// --mount-proc` and crun (Debian's crun 1.8, on a bundle made here; see crunPeer), installed from apt if
// missing and skipped with a note if they cannot be had. For each: the lifecycle of /bin/true one at a
// time and four at a time, and the memory of an idle job; and (its own figure, "client") `rund client
// run true` of this tree against that of 87fd982, the day before issue 24.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"rund/rpcpb"
)

// peerTools are the command lines of the peers that need no set-up, each put before the command: each
// gives it a user namespace (root mapped), a PID namespace with its own /proc and a network namespace;
// bwrap also a read-only root and a private /tmp and /var/tmp, as rund does (without rund's seccomp
// filter, which bwrap would take compiled).
var peerTools = []struct {
	name, pkg string
	argv      []string
}{
	{"bwrap", "bubblewrap", []string{"bwrap", "--unshare-all", "--uid", "0", "--ro-bind", "/", "/", "--proc", "/proc",
		"--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"}},
	{"unshare", "util-linux", []string{"unshare", "-Urfpnm", "--mount-proc"}},
}

// The commands the peers run: the measured job, and the idle one whose memory is measured (it writes
// nothing and blocks in clock_nanosleep, which benchAsleep looks for).
var (
	peerTrue = []string{"/bin/true"}
	peerIdle = []string{"/bin/sleep", "1000"}
)

// benchPeer is one C sandbox: command is its command line for argv, contained; within runs f where the
// tool's commands must be started and cleaned up from, which for most is anywhere (f runs as it is);
// cleanup, if any, runs after c.Wait and removes what the tool may have left behind.
type benchPeer struct {
	name    string
	command func(argv ...string) *exec.Cmd
	within  func(f func())
	cleanup func(c *exec.Cmd) error
}

// benchAnywhere is the within of the tools that start from any thread, and of rund (whose jobs its server starts).
func benchAnywhere(f func()) { f() }

// run runs c to its end (start, wait, cleanup), within p.within.
func (p *benchPeer) run(c *exec.Cmd) error {
	if err := c.Start(); err != nil {
		return err
	}
	err := c.Wait()
	if p.cleanup != nil {
		if e := p.cleanup(c); err == nil {
			err = e
		}
	}
	return err
}

// peers runs each tool's lifecycle one at a time (latency) and four at a time (jobs/s, and the
// machine's busy CPU per job), alternating with rund's; then the memory of idle jobs.
func (b *bench) peers() {
	b.t.Log("peers: rund, bwrap, unshare, crun ...")
	srv := b.rundServer("peers")
	defer srv.stop(b.t)
	_, c := b.dial(srv, "a")
	var tools []*benchPeer
	for _, p := range peerTools {
		if _, err := exec.LookPath(p.argv[0]); err != nil {
			exec.Command("apt-get", "install", "-y", "-q", p.pkg).Run()
		}
		tools = append(tools, &benchPeer{name: p.name, within: benchAnywhere,
			command: func(argv ...string) *exec.Cmd {
				return exec.Command(p.argv[0], append(slices.Clone(p.argv[1:]), argv...)...)
			}})
	}
	if cr, stop, err := b.crunPeer(); err != nil {
		b.detail("peers: crun skipped: %v", err)
	} else {
		defer stop()
		tools = append(tools, cr)
	}
	runs := map[string]func() error{"rund": func() error { return benchRundLifecycle(c) }}
	within := map[string]func(func()){"rund": benchAnywhere}
	names := []string{"rund"}
	var live []*benchPeer
	for _, p := range tools {
		var out bytes.Buffer
		cmd := p.command(peerTrue...)
		cmd.Stdout, cmd.Stderr = &out, &out
		var err error
		p.within(func() { err = p.run(cmd) })
		if err != nil {
			b.detail("peers: %s skipped: %v %s", p.name, err, strings.TrimSpace(out.String()))
			continue
		}
		runs[p.name] = func() error { return p.run(p.command(peerTrue...)) }
		within[p.name] = p.within
		names = append(names, p.name)
		live = append(live, p)
	}
	lat := map[string][]float64{}
	rate, cpu := map[string][]float64{}, map[string][]float64{}
	for range 4 {
		for _, n := range names {
			var err error
			within[n](func() {
				for range 50 {
					time.Sleep(20 * time.Millisecond) // the previous job's cleanup out of the way
					t0 := time.Now()
					if err = runs[n](); err != nil {
						return
					}
					lat[n] = append(lat[n], benchMs(time.Since(t0)))
				}
			})
			if err != nil {
				b.t.Fatalf("peers: %s: %v", n, err)
			}
			jobs, busy := benchFourInFlight(runs[n], within[n], 3*time.Second)
			rate[n] = append(rate[n], float64(jobs)/3)
			cpu[n] = append(cpu[n], busy/float64(jobs)*1000)
		}
	}
	pss, parts := b.peersIdleMemory(c, srv, live)
	for _, n := range names {
		b.detail("peers: %s lifecycle of /bin/true %s, p90 %.4g ms; 4 in flight: %.1f jobs/s, machine busy CPU per job %.1f ms "+
			"(medians of 4 rounds); idle job (%s) PSS median %.0f KiB of %d live at once (%s)", n, benchSummary(lat[n], "ms"),
			benchPct(lat[n], .9), benchPct(rate[n], .5), benchPct(cpu[n], .5), strings.Join(peerIdle, " "),
			benchPct(pss[n], .5), len(pss[n]), parts[n])
	}
	if _, ok := runs["bwrap"]; ok {
		b.peersRows(names, lat, cpu, rate, pss)
	}
}

// peersRows are the table's rows: rund against bwrap, judged against the targets; then each
// other peer against bwrap, for reference.
func (b *bench) peersRows(names []string, lat, cpu, rate, pss map[string][]float64) {
	ratio := func(x map[string][]float64, n string) float64 { return benchPct(x[n], .5) / benchPct(x["bwrap"], .5) }
	for _, r := range []struct {
		figure, unit string
		x            map[string][]float64
		target       float64
		atMost       bool
	}{
		{"contained /bin/true, rund against bwrap: lifecycle p50", "ms", lat, 0.8, true},
		{"↳ machine busy CPU per job, 4 in flight", "ms", cpu, 1.5, true},
		{"↳ jobs/s, 4 in flight", "/s", rate, 0.8, false},
		{"↳ memory per idle job (PSS of what stays alive): median", "KiB", pss, 3, true},
	} {
		q, target, met := benchJudge(ratio(r.x, "rund"), r.target, r.atMost)
		f := "%.1f %s"
		if r.unit == "KiB" {
			f = "%.0f %s"
		}
		b.rows = append(b.rows, benchRow{r.figure, fmt.Sprintf(f, benchPct(r.x["rund"], .5), r.unit),
			fmt.Sprintf(f+" (bwrap)", benchPct(r.x["bwrap"], .5), r.unit), q, target, met})
	}
	kib := benchPct(pss["rund init"], .5)
	b.rows = append(b.rows, benchRow{"↳ memory of an idle job's init (PSS), rund: median", fmt.Sprintf("%.0f KiB", kib), "–", "",
		"≤ 1024 KiB", map[bool]string{true: "yes", false: "NO"}[kib <= 1024]})
	for _, n := range names {
		if n == "rund" || n == "bwrap" {
			continue
		}
		b.rows = append(b.rows, benchRow{fmt.Sprintf("↳ %s against bwrap (not rund): lifecycle p50; CPU per job; jobs/s; idle PSS", n), "",
			fmt.Sprintf("%.1f ms; %.1f ms; %.1f /s; %.0f KiB (%s)", benchPct(lat[n], .5), benchPct(cpu[n], .5), benchPct(rate[n], .5),
				benchPct(pss[n], .5), n),
			fmt.Sprintf("%.2fx; %.2fx; %.2fx; %.2fx", ratio(lat, n), ratio(cpu, n), ratio(rate, n), ratio(pss, n)), "", ""})
	}
}

// crunPeer is crun running /bin/true as bwrap does, from a bundle made here: a config.json written
// below, and a rootfs that is / bound (crun 1.8 refuses "/" itself as a root). crun 1.8 also refuses
// this host's hybrid cgroup layout (cgroup2 at /sys/fs/cgroup/unified, v1 beside it) even with its cgroup
// manager disabled, since it checks the layout first. So crun runs from OS threads of this process that
// each have a mount namespace of their own (mountNSThreads), where the rootfs is bound and
// /sys/fs/cgroup is the cgroup2 mount: set up once, not per job, so crun pays no wrapper per job (an
// nsenter in front of it cost about 6 ms a job here), and the host's mounts and cgroup v1 hierarchies
// are untouched. crun runs with --cgroup-manager=disabled: bwrap and unshare make no cgroup either, and
// with one crun would make it at the cgroup2 root, outside the bench's tree. Each container has an id
// of its own and is deleted if crun left it; stop closes the threads, and with them the namespaces.
// The bench's loops run whole on those threads (within), so that no job waits for a thread to wake.
func (b *bench) crunPeer() (*benchPeer, func(), error) {
	path, err := exec.LookPath("crun")
	if err != nil {
		exec.Command("apt-get", "install", "-y", "-q", "crun").Run()
		if path, err = exec.LookPath("crun"); err != nil {
			return nil, nil, err
		}
	}
	dir := filepath.Join(b.dir, "crun")
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, nil, err
	}
	bundles := map[string]string{} // by the command line: one bundle per command the bench runs
	for i, argv := range [][]string{peerTrue, peerIdle} {
		bundle := filepath.Join(dir, strconv.Itoa(i))
		data, err := json.Marshal(crunConfig(rootfs, argv))
		if err == nil {
			err = os.Mkdir(bundle, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644)
		}
		if err != nil {
			return nil, nil, err
		}
		bundles[strings.Join(argv, " ")] = bundle
	}
	threads, err := startMountNSThreads(4, rootfs, b.mount) // one for each loop of benchFourInFlight
	if err != nil {
		return nil, nil, fmt.Errorf("crun's mount namespaces: %w", err)
	}
	prefix := fmt.Sprintf("rund-bench-%d-", os.Getpid())
	const state = "/run/crun"      // crun's state directory as root (crun --version)
	del := func(id string) error { // within
		if _, err := os.Stat(filepath.Join(state, id)); err != nil {
			return nil // crun run removed it, as it does when its container ends
		}
		if out, err := exec.Command(path, "delete", "-f", id).CombinedOutput(); err != nil {
			return fmt.Errorf("crun delete -f %s: %v %s", id, err, out)
		}
		return nil
	}
	p := &benchPeer{name: "crun",
		command: func(argv ...string) *exec.Cmd {
			id := prefix + strconv.FormatInt(b.seq.Add(1), 10)
			return exec.Command(path, "--cgroup-manager=disabled", "run", "--bundle", bundles[strings.Join(argv, " ")], id)
		},
		within:  threads.do,
		cleanup: func(c *exec.Cmd) error { return del(c.Args[len(c.Args)-1]) },
	}
	stop := func() {
		left, _ := filepath.Glob(filepath.Join(state, prefix+"*"))
		for _, d := range left {
			b.t.Errorf("peers: crun left container %s", filepath.Base(d))
			threads.do(func() {
				if err := del(filepath.Base(d)); err != nil {
					b.t.Error(err)
				}
			})
		}
		threads.close()
	}
	return p, stop, nil
}

// crunConfig is an OCI config that gives argv what bwrap's command line gives it: user, PID, mount,
// network, IPC, UTS and cgroup namespaces; root mapped to an unprivileged uid (one in no range rund
// hands out) and no capabilities; the read-only root (rootfs) with its own /proc, a /dev of the basic
// devices (crun makes them, as bwrap's --dev does), and tmpfs /tmp and /var/tmp; no_new_privs, which
// bwrap sets too.
func crunConfig(rootfs string, argv []string) map[string]any {
	const hostID = 1_800_000_000
	mount := func(dst, typ string, opts ...string) map[string]any {
		return map[string]any{"destination": dst, "type": typ, "source": typ, "options": opts}
	}
	var ns []map[string]string
	for _, n := range []string{"user", "pid", "mount", "network", "ipc", "uts", "cgroup"} {
		ns = append(ns, map[string]string{"type": n})
	}
	idMap := []map[string]int{{"containerID": 0, "hostID": hostID, "size": 1}}
	return map[string]any{
		"ociVersion": "1.0.0",
		"process": map[string]any{"user": map[string]int{"uid": 0, "gid": 0}, "args": argv, "cwd": "/",
			"env": []string{"PATH=" + defaultPath}, "noNewPrivileges": true},
		"root": map[string]any{"path": rootfs, "readonly": true},
		"mounts": []map[string]any{mount("/proc", "proc"), mount("/dev", "tmpfs", "nosuid", "mode=755"),
			mount("/tmp", "tmpfs", "nosuid", "nodev"), mount("/var/tmp", "tmpfs", "nosuid", "nodev")},
		"linux": map[string]any{"namespaces": ns, "uidMappings": idMap, "gidMappings": idMap},
	}
}

// mountNSThreads are OS threads of this process, each in a mount namespace of its own: a process
// started from one (os/exec forks from the calling thread) starts in that namespace. Go cannot setns(2)
// a mount namespace in a process with threads, but a thread can unshare(2) one, once locked to its
// goroutine; the goroutine never unlocks it, so the thread ends with the goroutine (the runtime makes
// its new threads from a clean one, never from a locked one), and the namespace, with its mounts, ends
// with the last process in it.
type mountNSThreads struct {
	fns chan func()
	wg  sync.WaitGroup
}

// startMountNSThreads starts n threads, each in a new mount namespace, private (nothing propagates to or
// from the host's), where / is bound recursively on rootfs and, if cgroup2 is not at /sys/fs/cgroup
// (a hybrid host), it is bound there.
func startMountNSThreads(n int, rootfs, cgroup2 string) (*mountNSThreads, error) {
	t := &mountNSThreads{fns: make(chan func())}
	ready := make(chan error)
	for range n {
		t.wg.Add(1)
		go t.serve(rootfs, cgroup2, ready, nil)
	}
	var errs []error
	for range n {
		errs = append(errs, <-ready)
	}
	if err := errors.Join(errs...); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// serve sets up this goroutine's thread and runs the functions it is given until close. onThread, if
// not nil, is closed once it has its thread.
func (t *mountNSThreads) serve(rootfs, cgroup2 string, ready chan<- error, onThread chan struct{}) {
	runtime.LockOSThread()
	if onThread != nil {
		close(onThread)
	}
	if unix.Gettid() == unix.Getpid() {
		// The main thread: the runtime never ends it, and /proc/self is its view of the mounts. Hand over
		// to a goroutine that is on another thread, which it must be while this one holds the main one.
		again := make(chan struct{})
		go t.serve(rootfs, cgroup2, ready, again)
		<-again
		runtime.UnlockOSThread()
		return
	}
	defer t.wg.Done()
	err := unix.Unshare(unix.CLONE_NEWNS)
	if err == nil {
		err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	}
	if err == nil {
		err = unix.Mount("/", rootfs, "", unix.MS_BIND|unix.MS_REC, "")
	}
	if err == nil && cgroup2 != "/sys/fs/cgroup" {
		err = unix.Mount(cgroup2, "/sys/fs/cgroup", "", unix.MS_BIND, "")
	}
	ready <- err
	if err != nil {
		return
	}
	for f := range t.fns {
		f()
	}
}

// do runs f on one of the threads, which runs nothing else meanwhile.
func (t *mountNSThreads) do(f func()) {
	done := make(chan struct{})
	t.fns <- func() { f(); close(done) }
	<-done
}

// close ends the threads, once each has run what it was given.
func (t *mountNSThreads) close() {
	close(t.fns)
	t.wg.Wait()
}

// benchIdleJobs is how many idle jobs of each tool are alive at once when their memory is read: enough
// that the pages they share are split among several, as on a machine running many.
const benchIdleJobs = 8

// peersIdleMemory starts benchIdleJobs idle jobs (peerIdle) under rund and under each peer, one tool
// at a time, and once all of them sleep reads the PSS (proportional set size: each page divided among
// the processes that map it) of every process of each job that stays alive while it idles: for rund
// the job's init and its command (the processes of its cgroup); for a peer the tool's process and all
// its descendants. It returns each tool's per-job sums (KiB) and the parts of the median job. The
// server's own memory for a job (its goroutines and ring) is not a process of the job and is not counted
// here ("static server RSS per idle job" counts it).
func (b *bench) peersIdleMemory(c rpcpb.JobControllerClient, srv *benchProc, tools []*benchPeer) (map[string][]float64, map[string]string) {
	ctx := context.Background()
	pss, parts := map[string][]float64{}, map[string]string{}
	var ids []*rpcpb.JobIdentifier
	var err error
	for range benchIdleJobs {
		id, err := c.Start(ctx, cmd(peerIdle[0], peerIdle[1:]...))
		if err != nil {
			b.t.Fatalf("peers: rund idle job: %v", err)
		}
		ids = append(ids, id)
	}
	var jobs []func() []benchProcPart
	for _, id := range ids {
		jobs = append(jobs, func() []benchProcPart {
			var ps []benchProcPart
			for _, leaf := range []string{"init", "job"} {
				data, _ := os.ReadFile(filepath.Join(srv.parent, id.Ulid, leaf, "cgroup.procs"))
				for _, f := range strings.Fields(string(data)) {
					pid, _ := strconv.Atoi(f)
					ps = append(ps, benchProcPart{pid, map[string]string{"init": "init", "job": "command"}[leaf]})
				}
			}
			return ps
		})
	}
	var roles map[string][]float64
	if pss["rund"], parts["rund"], roles, err = benchIdlePSS(jobs); err != nil {
		b.t.Errorf("peers: rund: %v", err)
	}
	pss["rund init"] = roles["init"] // the figure: PSS of the init
	for _, id := range ids {
		if _, err := c.Stop(ctx, id); err != nil {
			b.t.Fatalf("peers: stop rund idle job: %v", err)
		}
	}
	for _, p := range tools {
		var cmds []*exec.Cmd
		jobs = jobs[:0]
		p.within(func() {
			for range benchIdleJobs {
				cmd := p.command(peerIdle...)
				if err = cmd.Start(); err != nil {
					return
				}
				cmds = append(cmds, cmd)
				jobs = append(jobs, func() []benchProcPart { return benchProcTree(cmd.Process.Pid) })
			}
		})
		if err == nil {
			pss[p.name], parts[p.name], _, err = benchIdlePSS(jobs)
		}
		if err != nil {
			b.t.Errorf("peers: %s idle job: %v", p.name, err)
		}
		var ends []benchProcEnd
		for i, cmd := range cmds {
			ps := jobs[i]()
			ends = append(ends, benchProcEnds(ps)...)
			// The command's end ends the job: each tool reaps it, cleans up and exits with its status. A job
			// whose command never started (a failed start above) is killed whole.
			sleeping := slices.ContainsFunc(ps, func(q benchProcPart) bool { return q.name == "sleep" })
			for _, q := range ps {
				if q.name == "sleep" || !sleeping {
					syscall.Kill(q.pid, syscall.SIGKILL)
				}
			}
			cmd.Wait()
			if p.cleanup != nil {
				p.within(func() { err = p.cleanup(cmd) })
				if err != nil {
					b.t.Error(err)
				}
			}
		}
		// Not only the tool's own process, which is waited for: bwrap's exits without reaping its child, the
		// sandbox's PID 1, which may still be ending its PID namespace (the host's init reaps it).
		for _, e := range ends {
			if !e.wait(10 * time.Second) {
				b.t.Errorf("peers: %s idle job: process %d (%s) still there 10 s after its job ended", p.name, e.pid, e.name)
			}
		}
	}
	return pss, parts
}

// benchProcEnd is a pidfd of one process of a job, opened while the job lived, so that its end is
// learnt without a doubt about pid reuse.
type benchProcEnd struct {
	benchProcPart
	fd int
}

// benchProcEnds opens a pidfd of each of ps that is still there.
func benchProcEnds(ps []benchProcPart) []benchProcEnd {
	var ends []benchProcEnd
	for _, q := range ps {
		if fd, err := unix.PidfdOpen(q.pid, 0); err == nil {
			ends = append(ends, benchProcEnd{q, fd})
		}
	}
	return ends
}

// wait says whether the process has ended within d (its pidfd is readable once it has), and closes
// the pidfd.
func (e benchProcEnd) wait(d time.Duration) bool {
	defer unix.Close(e.fd)
	end := time.Now().Add(d)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}, max(0, int(time.Until(end).Milliseconds())))
		if err != unix.EINTR {
			return err == nil && n == 1
		}
	}
}

// benchProcPart is one process of a job, named by its role or its comm.
type benchProcPart struct {
	pid  int
	name string
}

// benchIdlePSS waits until every job's command sleeps, then sums each job's PSS. jobs[i] lists job i's
// processes. It returns the sums (KiB), the median job's parts, each with its anonymous share (Pss_Anon:
// heap, stacks, data written; the rest is files' pages, such as text and libraries), and each job's sum
// over the processes of each name.
func benchIdlePSS(jobs []func() []benchProcPart) ([]float64, string, map[string][]float64, error) {
	// Nothing tells when a job's command has started and gone idle; its state does, so it is polled.
	deadline := time.Now().Add(30 * time.Second)
	for _, job := range jobs {
		for !benchAsleep(job()) {
			if time.Now().After(deadline) {
				return nil, "", nil, fmt.Errorf("a job not asleep after 30 s: %v", job())
			}
			time.Sleep(time.Millisecond)
		}
	}
	var sums []float64
	var each []string
	roles := map[string][]float64{}
	for _, job := range jobs {
		var sum int64
		var ps []string
		role := map[string]int64{}
		for _, q := range job() {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", q.pid))
			if err != nil {
				return nil, "", nil, err
			}
			kb := benchKBField(data, "Pss")
			sum += kb
			role[q.name] += kb
			ps = append(ps, fmt.Sprintf("%s %d (anon %d)", q.name, kb, benchKBField(data, "Pss_Anon")))
		}
		sums = append(sums, float64(sum))
		for name, kb := range role {
			roles[name] = append(roles[name], float64(kb))
		}
		each = append(each, strings.Join(ps, " + ")+" KiB")
	}
	return sums, each[slices.Index(sums, benchPct(sums, .5))], roles, nil
}

// benchAsleep says whether one of a job's processes is sleep(1) blocked in clock_nanosleep: the job is
// set up and idle.
func benchAsleep(ps []benchProcPart) bool {
	for _, q := range ps {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", q.pid))
		call, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", q.pid))
		if strings.TrimSpace(string(comm)) == "sleep" && strings.HasPrefix(string(call), strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP)+" ") {
			return true
		}
	}
	return false
}

// benchProcTree is pid and all its descendants, each named by its comm, from /proc's parent links.
func benchProcTree(pid int) []benchProcPart {
	ents, _ := os.ReadDir("/proc")
	kids, comm := map[int][]int{}, map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		lp, rp := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')') // the comm may hold either
		if err != nil || lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(data[rp+1:])) // state, ppid, ...
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		kids[ppid] = append(kids[ppid], n)
		comm[n] = string(data[lp+1 : rp])
	}
	tree := []benchProcPart{{pid, comm[pid]}}
	for i := 0; i < len(tree); i++ {
		for _, k := range kids[tree[i].pid] {
			tree = append(tree, benchProcPart{k, comm[k]})
		}
	}
	return tree
}

// clientRun: `rund client run true` of this tree's rund against that of 87fd982 (main the day before
// issue 24), each with the PKI that its own `rund certs` writes (P-256 here, P-521 there), as a user
// following its README has, and each against a server of this tree that trusts that PKI; then 87fd982's
// client with this tree's PKI, which is the clients' code alone. Interleaved, each series first as often:
// wall time (fork and exec to exit) and the client's CPU (its user and system time, from wait4's rusage).
func (b *bench) clientRun() {
	const oldRev = "87fd982"
	b.t.Logf("client run: this tree against %s ...", oldRev)
	old, err := b.buildRundAt(oldRev)
	if err != nil {
		b.detail("client run: %s skipped: %v", oldRev, err)
		return
	}
	newPKI, oldPKI := b.certsOf(b.rund, "pki-new"), b.certsOf(old, "pki-"+oldRev)
	newSrv, oldSrv := b.rundServerPKI("client-new", newPKI), b.rundServerPKI("client-"+oldRev, oldPKI)
	defer newSrv.stop(b.t)
	defer oldSrv.stop(b.t)
	type series struct {
		bin, pki, addr string
		wall, cpu      []float64
	}
	all := []*series{{bin: b.rund, pki: newPKI, addr: newSrv.addr}, {bin: old, pki: oldPKI, addr: oldSrv.addr},
		{bin: old, pki: newPKI, addr: newSrv.addr}}
	for r := range 150 {
		s := all[(r+r/len(all))%len(all)] // 0 1 2, 1 2 0, 2 0 1, ...
		time.Sleep(50 * time.Millisecond) // the previous job's cleanup, and the spare it took remade, out of the way
		c := exec.Command(s.bin, "client", "run", "-addr", s.addr, "-ca", filepath.Join(s.pki, "ca.crt"),
			"-cert", filepath.Join(s.pki, "client.crt"), "-key", filepath.Join(s.pki, "client.key"), "true")
		t0 := time.Now()
		out, err := c.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			b.t.Fatalf("%s client run true: %v\n%s", s.bin, err, out)
		}
		s.wall = append(s.wall, benchMs(d))
		s.cpu = append(s.cpu, benchMs(c.ProcessState.UserTime()+c.ProcessState.SystemTime()))
	}
	cur, was, same := all[0], all[1], all[2]
	b.detail("`rund client run true`, this tree, its PKI: wall %s; client CPU %s", benchSummary(cur.wall, "ms"), benchSummary(cur.cpu, "ms"))
	b.detail("`rund client run true`, %s, its PKI: wall %s; client CPU %s", oldRev, benchSummary(was.wall, "ms"), benchSummary(was.cpu, "ms"))
	b.detail("`rund client run true`, %s, this tree's PKI: wall %s; client CPU %s", oldRev, benchSummary(same.wall, "ms"), benchSummary(same.cpu, "ms"))
	w, wo := benchPct(cur.wall, .5), benchPct(was.wall, .5)
	ratio, target, met := benchJudge(w/wo, 0.8, true)
	b.rows = append(b.rows, benchRow{fmt.Sprintf("`rund client run true` wall time, this tree against %s, each with its own `rund certs`: p50", oldRev),
		fmt.Sprintf("%.1f ms", w), fmt.Sprintf("%.1f ms (%s)", wo, oldRev), ratio, target, met})
	u, uo := benchPct(cur.cpu, .5), benchPct(was.cpu, .5)
	b.rows = append(b.rows, benchRow{"↳ the client's CPU (user + system): p50", fmt.Sprintf("%.1f ms", u),
		fmt.Sprintf("%.1f ms (%s)", uo, oldRev), fmt.Sprintf("%.2fx", u/uo), "", ""})
	ws := benchPct(same.wall, .5)
	b.rows = append(b.rows, benchRow{"↳ wall time, both with this tree's PKI (the clients' code alone): p50", fmt.Sprintf("%.1f ms", w),
		fmt.Sprintf("%.1f ms (%s)", ws, oldRev), fmt.Sprintf("%.2fx", w/ws), "", ""})
}

// certsOf is a new directory of b.dir with the PKI that bin's `rund certs` writes.
func (b *bench) certsOf(bin, name string) string {
	dir := filepath.Join(b.dir, name)
	if out, err := exec.Command(bin, "certs", "-dir", dir).CombinedOutput(); err != nil {
		b.t.Fatalf("%s certs -dir %s: %v\n%s", bin, dir, err, out)
	}
	return dir
}

// buildRundAt builds rund as `make build` does at rev, from a detached worktree that is removed after.
func (b *bench) buildRundAt(rev string) (string, error) {
	src, bin := filepath.Join(b.dir, "src-"+rev), filepath.Join(b.dir, "rund-"+rev)
	if out, err := exec.Command("git", "worktree", "add", "--detach", src, rev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git worktree add %s: %v %s", rev, err, out)
	}
	defer func() {
		if out, err := exec.Command("git", "worktree", "remove", "--force", src).CombinedOutput(); err != nil {
			b.t.Errorf("git worktree remove %s: %v %s", src, err, out)
		}
	}()
	if out, err := exec.Command("make", "--no-print-directory", "-C", src, "build", "BIN="+bin).CombinedOutput(); err != nil {
		return "", fmt.Errorf("make build at %s: %v %s", rev, err, out)
	}
	return bin, nil
}

// benchRundLifecycle is one contained /bin/true through rund: Start, its log to the end, Status.
func benchRundLifecycle(c rpcpb.JobControllerClient) error {
	ctx := context.Background()
	id, err := c.Start(ctx, cmd("/bin/true"))
	if err != nil {
		return err
	}
	s, err := c.ReadLog(ctx, &rpcpb.LogRequest{Ulid: id.Ulid})
	if err != nil {
		return err
	}
	for err == nil {
		_, err = s.Recv()
	}
	if err != io.EOF {
		return err
	}
	st, err := c.Status(ctx, id)
	if err == nil && st.State != rpcpb.JobStatus_STATE_EXITED {
		err = fmt.Errorf("job %s ended %v", id.Ulid, st.State)
	}
	return err
}

// benchFourInFlight runs run from four goroutines for d, each loop within within, and returns the runs done and the machine's
// busy CPU seconds meanwhile (all CPUs, from /proc/stat: what the tool, its jobs, the kernel's workers
// and this benchmark's own client side spent).
func benchFourInFlight(run func() error, within func(func()), d time.Duration) (int64, float64) {
	var done atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	busy0 := benchMachineBusy()
	for range 4 {
		wg.Go(func() {
			within(func() {
				for time.Now().Before(end) {
					if run() == nil {
						done.Add(1)
					}
				}
			})
		})
	}
	wg.Wait()
	return done.Load(), benchMachineBusy() - busy0
}

// benchMachineBusy is the CPU seconds all CPUs have spent other than idle and in iowait since boot
// (proc(5), /proc/stat's cpu line, in USER_HZ: 100 a second on Linux).
func benchMachineBusy() float64 {
	data, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(data), "\n")
	var ticks float64
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseFloat(f, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is in user already
			ticks += n
		}
	}
	return ticks / 100
}

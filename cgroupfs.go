//go:build !rundinit

package main

// cgroupfs.go owns every file rund reads or writes under the cgroup2 mount. The rules it follows are in
// the kernel's Documentation/admin-guide/cgroup-v2.rst ("cgroup v2" below).
//
// Layout of one job:
//
//	<parent>/<ulid>/        no processes; its subtree_control enables the controllers for job/
//	<parent>/<ulid>/init/   rund's PID 1 helper: outside the limits, so it costs the job nothing
//	<parent>/<ulid>/job/    the command and all its descendants; the limits and the accounting live here

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// wantedControllers are the controllers rund uses, for limits or for the accounting in Status.
var wantedControllers = []string{"cpu", "io", "memory", "pids"}

// limits are validated job limits; 0 means unset for every field (0 is never a valid limit).
type limits struct {
	cpuQuota                 uint64 // cpu.max quota per cpuPeriod (100000 us)
	memory                   uint64 // memory.max bytes
	pids                     uint64 // pids.max
	rbps, wbps, riops, wiops uint64 // io.max
}

// controllers lists the controllers a set of limits needs, in the order of wantedControllers, each
// named beside the limit that needs it: io for any key of the io.max line (ioMaxValue).
func (l limits) controllers() []string {
	needed := map[string]bool{"cpu": l.cpuQuota != 0, "io": ioMaxValue(l) != "", "memory": l.memory != 0,
		"pids": l.pids != 0}
	return slices.DeleteFunc(slices.Clone(wantedControllers), func(c string) bool { return !needed[c] })
}

// cgroupFS is rund's view of the cgroup2 hierarchy. It is set up once and read-only afterwards.
type cgroupFS struct {
	mount     string          // cgroup2 mount point
	parent    string          // directory holding the job cgroups
	available map[string]bool // controllers enabled in parent's subtree_control
	ioDevices []string        // "MAJ:MIN" of the disks io.max applies to (-io_devices); none: io limits are refused
	lock      *os.File        // parent, flock'ed: one server per parent (lockParent)
}

// lockParent takes an exclusive flock(2) on the parent directory, so that a second server on the same
// parent refuses to start before it touches anything: it would take the first one's job and spare
// cgroups for a crashed server's leftovers (removeStale). The lock goes with the process, however it
// ends.
func lockParent(parent string) (*os.File, error) {
	f, err := os.Open(parent)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) { // /proc/locks names the holder
			return nil, fmt.Errorf("another rund serves jobs in %s; give this one its own -cgroup", parent)
		}
		return nil, fmt.Errorf("flock %s: %w", parent, err)
	}
	return f, nil
}

// unlock releases the parent for another server; it is the last thing a server does.
func (cg *cgroupFS) unlock() { cg.lock.Close() }

// findCgroup2Mount returns the first cgroup2 mount point in mountinfo (proc(5) /proc/pid/mountinfo).
func findCgroup2Mount(mountinfo string) (string, error) {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && len(f) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return unescapeMountPath(f[4]), nil
		}
	}
	return "", fmt.Errorf("no cgroup2 mount in %s: rund needs cgroup v2", mountinfo)
}

// unescapeMountPath undoes the escapes the kernel writes in mountinfo for the four characters that would
// break its fields (fs/proc_namespace.c, mangle: space, tab, newline and backslash, as \ooo).
var unescapeMountPath = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace

// setupCgroups prepares parent (default <mount>/rund) for jobs: it enables the wanted controllers on
// the path from the mount down to parent and removes what a crashed rund left behind.
func setupCgroups(parent string, ioDevices []string) (*cgroupFS, error) {
	mount, err := findCgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	parent = filepath.Clean(cmp.Or(parent, filepath.Join(mount, "rund")))
	if rel, err := filepath.Rel(mount, parent); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("cgroup parent %s is not below the cgroup2 mount %s", parent, mount)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	lock, err := lockParent(parent)
	if err != nil {
		return nil, err
	}
	cg := &cgroupFS{mount: mount, parent: parent, lock: lock, available: map[string]bool{}, ioDevices: ioDevices}
	if err := cg.leaveEnablePath(); err != nil {
		// Not fatal either: without the move, enabling the controllers fails (EBUSY) and is logged.
		log.Print(err)
	}
	if err := cg.enableControllers(); err != nil {
		// Not fatal: jobs without limits still run; limits will fail with FailedPrecondition.
		log.Printf("cgroup controllers: %v", err)
	}
	for _, c := range strings.Fields(readString(filepath.Join(parent, "cgroup.subtree_control"))) {
		cg.available[c] = true
	}
	cg.removeStale()
	return cg, nil
}

// enableControllers writes "+ctrl" into cgroup.subtree_control from the mount down to parent, for the
// wanted controllers the hierarchy offers (rund has left that path first: leaveEnablePath).
func (cg *cgroupFS) enableControllers() error {
	offered := strings.Fields(readString(filepath.Join(cg.mount, "cgroup.controllers")))
	wanted := slices.DeleteFunc(slices.Clone(wantedControllers), func(c string) bool {
		return !slices.Contains(offered, c)
	})
	if len(wanted) == 0 {
		return fmt.Errorf("none of %v is offered by %s (held by cgroup v1?)", wantedControllers, cg.mount)
	}
	rel, _ := filepath.Rel(cg.mount, cg.parent)
	dir := cg.mount
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		dir = filepath.Join(dir, part)
		for _, c := range wanted {
			// One write per controller, so that one refused controller does not hide the others.
			if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil {
				log.Printf("enable %s: %v", c, err)
			}
		}
	}
	return nil
}

// leaveEnablePath moves rund (the whole process: cgroup.procs takes a pid for all its threads) into
// <own cgroup>/rund-server when its own cgroup is the parent or one of the parent's ancestors, whose
// subtree_control it is about to write: cgroup v2's "no internal process" rule forbids controllers in
// the subtree_control of a non-root cgroup that holds a process (cgroup-v2.rst). So does systemd's
// delegation before DelegateSubgroup= (254): the unit's main process starts in the delegated cgroup
// itself. The root cgroup is exempt from the rule, and a leaf beside the parent is fine: rund stays.
// rund-server may be left from a previous run (a restart); it holds no process then, as rund was its
// only one.
func (cg *cgroupFS) leaveEnablePath() error {
	own, err := ownCgroup()
	if err != nil {
		return err
	}
	ownDir := filepath.Join(cg.mount, own)
	rel, err := filepath.Rel(ownDir, cg.parent)
	if own == "/" || err != nil || strings.HasPrefix(rel, "..") {
		return nil // in the root cgroup, or elsewhere in the tree: nothing to leave
	}
	leaf := filepath.Join(ownDir, "rund-server")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("move rund serve out of %s: %w", ownDir, err)
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("move rund serve out of %s: %w", ownDir, err)
	}
	log.Printf("moved rund serve from %s into %s: the jobs' cgroups are below its own", ownDir, leaf)
	return nil
}

// ownCgroup returns this process's cgroup2 path from /proc/self/cgroup ("0::/path").
func ownCgroup() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("read /proc/self/cgroup: no cgroup2 entry")
}

// missing names every controller that lim needs and the hierarchy cannot give, or is empty.
func (cg *cgroupFS) missing(lim limits) []string {
	out := slices.DeleteFunc(lim.controllers(), func(c string) bool { return cg.available[c] })
	if !cg.available["io"] || ioMaxValue(lim) == "" {
		return out
	}
	if len(cg.ioDevices) == 0 {
		out = append(out, "io (rund serve was given no -io_devices)")
	}
	if why := ioLimitsWaitNow(); why != "" {
		out = append(out, why)
	}
	return out
}

// jobCgroup is one job's cgroup directory; see the layout at the top of this file.
type jobCgroup struct {
	dir string
}

func (j *jobCgroup) initDir() string { return filepath.Join(j.dir, "init") }
func (j *jobCgroup) jobDir() string  { return filepath.Join(j.dir, "job") }

// create makes the job's cgroups, with every available controller enabled for job/ (its limits are
// written at Start, by writeLimits). On error nothing is left behind.
func (cg *cgroupFS) create(id string) (_ *jobCgroup, err error) {
	j := &jobCgroup{dir: filepath.Join(cg.parent, id)}
	if err := os.Mkdir(j.dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			j.remove()
		}
	}()
	for c := range cg.available {
		if err := writeFile(filepath.Join(j.dir, "cgroup.subtree_control"), "+"+c); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{j.initDir(), j.jobDir()} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// writeLimits writes lim into the control files of the cgroup dir, one file after another, each value
// in one write(2) (writeFile); the first failed write ends it (write skips the rest), and its error
// names the file.
func (cg *cgroupFS) writeLimits(dir string, lim limits) error {
	var err error
	write := func(file, value string) {
		if err == nil {
			err = writeFile(filepath.Join(dir, file), value)
		}
	}
	if lim.cpuQuota != 0 {
		write("cpu.max", fmt.Sprintf("%d %d", lim.cpuQuota, cpuPeriod))
	}
	if lim.memory != 0 {
		write("memory.max", strconv.FormatUint(lim.memory, 10))
		// Without this, anonymous memory over the limit goes to swap and the limit means little. The file
		// is absent when the kernel does not account swap.
		if _, statErr := os.Stat(filepath.Join(dir, "memory.swap.max")); statErr == nil {
			write("memory.swap.max", "0")
		}
	}
	if lim.pids != 0 {
		write("pids.max", strconv.FormatUint(lim.pids, 10))
	}
	if io := ioMaxValue(lim); io != "" {
		// One write per device: io.max's lines are keyed by MAJ:MIN, and a write sets one (cgroup v2).
		for _, dev := range cg.ioDevices {
			write("io.max", dev+io)
		}
	}
	return err
}

// ioMaxValue formats the keys of one io.max line (" rbps=N wbps=N"), or "" when no io limit is set.
func ioMaxValue(lim limits) string {
	var b strings.Builder
	for _, k := range []struct {
		key   string
		value uint64 // 0: unset
	}{{"rbps", lim.rbps}, {"wbps", lim.wbps}, {"riops", lim.riops}, {"wiops", lim.wiops}} {
		if k.value != 0 {
			fmt.Fprintf(&b, " %s=%d", k.key, k.value)
		}
	}
	return b.String()
}

// kill SIGKILLs every process in dir and its descendants (cgroup v2 "cgroup.kill", Linux 5.14).
func kill(dir string) error {
	return writeFile(filepath.Join(dir, "cgroup.kill"), "1")
}

// populated reports whether dir or any descendant holds a process (cgroup.events "populated").
func populated(dir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return keyValue(data, "populated") != 0, nil
}

// waitEmpty returns once dir holds no process, polling cgroup.events with a backoff (1 ms doubling to
// 100 ms): a killed cgroup empties within milliseconds, and a longer wait is bounded by ctx.
func waitEmpty(ctx context.Context, dir string) error {
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		if busy, err := populated(dir); err != nil || !busy {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to empty: %w", dir, ctx.Err())
		case <-time.After(delay): // an unfired timer is collected since Go 1.23, no Stop needed
		}
	}
}

// remove deletes the job's cgroups, leaves first. rmdir of a cgroup whose last process is still
// exiting fails with EBUSY for a moment, so that is retried with backoff.
func (j *jobCgroup) remove() error {
	var first error
	for _, d := range []string{j.jobDir(), j.initDir(), j.dir} {
		if err := rmdirRetry(d); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func rmdirRetry(dir string) error {
	for delay := time.Millisecond; ; delay *= 2 {
		err := unix.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY) || delay >= 2*time.Second:
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		time.Sleep(delay)
	}
}

// removeStale empties and removes the job cgroups that a crashed rund left under parent. Only
// directories named like a job id are touched.
func (cg *cgroupFS) removeStale() {
	entries, _ := os.ReadDir(cg.parent)
	for _, e := range entries {
		if u, err := parseULID(e.Name()); err != nil || u.String() != e.Name() || !e.IsDir() {
			continue
		}
		j := &jobCgroup{dir: filepath.Join(cg.parent, e.Name())}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := errors.Join(kill(j.dir), waitEmpty(ctx, j.dir), j.remove())
		cancel()
		log.Printf("removed stale job cgroup %s: %v", e.Name(), err)
	}
}

// usage is what a job's cgroup accounted; a figure whose controller is off stays 0.
type usage struct {
	userUsec, systemUsec uint64
	memCurrent, memPeak  uint64
	ioRead, ioWrite      uint64
	pids, oomKills       uint64
}

// readUsage reads the accounting files of one cgroup. Missing files (controller off) count as 0. The
// error is cpu.stat's, which exists in every cgroup2 directory: fs.ErrNotExist means the cgroup is gone.
func readUsage(dir string) (usage, error) {
	read := func(name string) []byte { return readBytes(filepath.Join(dir, name)) }
	cpu, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return usage{}, err
	}
	u := usage{
		userUsec:   keyValue(cpu, "user_usec"),
		systemUsec: keyValue(cpu, "system_usec"),
		memCurrent: single(read("memory.current")),
		memPeak:    single(read("memory.peak")),
		pids:       single(read("pids.current")),
		oomKills:   keyValue(read("memory.events"), "oom_kill"),
	}
	u.ioRead, u.ioWrite = ioBytes(read("io.stat"))
	return u, nil
}

// keyValue returns the value of key in a flat-keyed cgroup file ("key value" lines), or 0.
func keyValue(data []byte, key string) uint64 {
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// single parses a one-value cgroup file ("123\n"); "max" and junk read as 0.
func single(data []byte) uint64 {
	n, _ := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
	return n
}

// ioBytes sums rbytes and wbytes over the devices of a nested-keyed io.stat
// ("8:0 rbytes=1 wbytes=2 rios=3 ...").
func ioBytes(data []byte) (read, write uint64) {
	for _, kv := range strings.Fields(string(data)) { // the devices' lines, split as their fields
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "rbytes":
			read += n
		case "wbytes":
			write += n
		}
	}
	return read, write
}

// writeFile writes one value to a cgroup control file. The kernel applies each write(2) as a unit, so
// the value must go in a single call; os.WriteFile's error already names the op and the path.
func writeFile(path, value string) error {
	return os.WriteFile(path, []byte(value), 0)
}

// readBytes returns the contents of path, or nothing if it cannot be read.
func readBytes(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

func readString(path string) string { return string(readBytes(path)) }

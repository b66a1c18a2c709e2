//go:build !rundinit

package main

// spec.go decides what a valid job request is. validate checks a request completely before anything
// is touched, and turns it into the jobSpec the rest of the core trusts.

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Request bounds. The kernel's own are MAX_ARG_STRLEN (128 KiB per string) and a total near 2 MiB
// (execve(2)); ours are lower so one request cannot pin much server memory.
const (
	maxArgs         = 1024
	maxEnv          = 256
	maxStringBytes  = 128 << 10
	maxCommandBytes = 512 << 10
	maxRequestBytes = maxCommandBytes + 64<<10 // a whole request: strings, their framing, the limits
	minCPUQuota     = 1000                     // the kernel's minimum cpu.max quota, in us
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

	holdOutput bool // keep the output from byte 0 for the first lossless reader

	network string // asked for: "host", the host's network namespace; "": its own
	root    bool   // asked for: to run uncontained
	given   given  // what it gets beyond the default containment: grants.go allow decides
	maxJobs int    // its identity's live jobs at most (its grant); 0: -max_jobs_per_client
}

// validate checks a request. A grace of 0 means the default; a negative one is refused.
func validate(name string, args, env []string, dir string, grace time.Duration, lim limits) (*jobSpec, error) {
	bad := func(format string, a ...any) (*jobSpec, error) { return nil, clientErr(errInvalid, format, a...) }
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
		if strings.ContainsRune(s, 0) {
			return bad("command, args, env and dir cannot contain a NUL byte")
		}
		total += len(s)
	}
	if total > maxCommandBytes {
		return bad("command, args and env total %d bytes; the limit is %d", total, maxCommandBytes)
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return bad("env entry %.40q is not KEY=VALUE", kv)
		}
	}
	dir = cmp.Or(dir, "/")
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
	maxQuota := uint64(cpuPeriod * runtime.NumCPU())
	if lim.cpuQuota != 0 && (lim.cpuQuota < minCPUQuota || lim.cpuQuota > maxQuota) {
		return clientErr(errInvalid, "max_cpu_bandwidth %d is outside %d..%d (us per %d us period, %d CPUs)",
			lim.cpuQuota, minCPUQuota, maxQuota, cpuPeriod, runtime.NumCPU())
	}
	if lim.pids > maxPids {
		return clientErr(errInvalid, "max_pids %d is over the kernel's limit of %d", lim.pids, maxPids)
	}
	page, mem := uint64(os.Getpagesize()), physicalMemory()
	if lim.memory != 0 && (lim.memory < page || lim.memory > mem) {
		return clientErr(errInvalid, "max_memory_usage %d is outside %d..%d bytes (one page .. this host's memory)",
			lim.memory, page, mem)
	}
	return nil
}

// physicalMemory is the host's RAM in bytes; a memory limit above it would limit nothing.
func physicalMemory() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 1 << 62
	}
	return uint64(si.Totalram) * uint64(si.Unit) // Totalram is 32 bits on 32-bit arches
}

// jobEnv is the minimal environment every job gets, then the request's entries (later ones win).
func jobEnv(extra []string) []string {
	env := []string{"PATH=" + defaultPath, "HOME=/root", "TERM=dumb"}
	for _, kv := range extra {
		key, _, _ := strings.Cut(kv, "=")
		key += "=" // an entry has this key exactly when it starts with the key and its '='
		if i := slices.IndexFunc(env, func(e string) bool { return strings.HasPrefix(e, key) }); i >= 0 {
			env[i] = kv
		} else {
			env = append(env, kv)
		}
	}
	return env
}

// forwardedSignals are what the Signal RPC may send a job besides SIGKILL (which is cgroup.kill): the
// job's init sends them to its command, each ordered in one byte (initproto.go orderStop).
var forwardedSignals = []unix.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGCONT, unix.SIGWINCH, unix.SIGALRM, unix.SIGTSTP}

// parseSignal reads a signal a client may send: a name (SIGINT or INT, any case) or a number, of the
// signals the init forwards, or SIGKILL.
func parseSignal(s string) (unix.Signal, error) {
	sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(s), "SIG"))
	if n, err := strconv.Atoi(s); err == nil {
		sig = unix.Signal(n)
	}
	if sig == unix.SIGKILL || slices.Contains(forwardedSignals, sig) {
		return sig, nil
	}
	var names []string
	for _, f := range append(forwardedSignals, unix.SIGKILL) {
		names = append(names, unix.SignalName(f))
	}
	return 0, clientErr(errInvalid, "signal %.20q is not one a job may be sent (%s, or their numbers)",
		s, strings.Join(names, " "))
}

// statusCommand is the command as Status and List show it: cut at 1 KiB, so that a List of many jobs
// with long command lines stays small.
func statusCommand(argv []string) []string {
	n := 0
	for i, a := range argv {
		n += len(a)
		if n > 1024 {
			return append(slices.Clone(argv[:i]), fmt.Sprintf("... (%d more args)", len(argv)-i))
		}
	}
	return slices.Clone(argv)
}

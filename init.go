package main

// init.go is everything that runs as a job's PID 1 ("rund init"), and the protocol it speaks with the
// server over two pipes (spawn.go is the server's side). The init sets up the job as setUpJob says, in
// the order it happens: its namespaces and mounts (the table jobMounts), what the command inherits from
// the forking thread, the syscall filter (seccomp.go); then it waits for the Start, execs the command as
// PID 2 into <job>/job (clone3 + CLONE_INTO_CGROUP), sends it the signals the server orders, reaps
// orphans and reports the command's exact wait status.
//
// Why a PID 1 of our own: the kernel drops signals to a namespace's init that has no handler for them
// (pid_namespaces(7)), so a command run as PID 1 could not be stopped with SIGTERM, and nothing would
// reap the orphans it leaves. The init lives in its own unlimited cgroup, so the limits a client sets
// are all its command gets.
//
// File descriptors of the init:
//
//	0      /dev/null
//	1, 2   the job's stdout and stderr pipes (the command inherits them)
//	3      config pipe: one initConfig, then the server's orders (obey); kept open as a lifeline: EOF
//	       means rund died
//	4      report pipe: one startReport, then, if the command started, one exitReport
//	5      <job>/job cgroup directory, for CLONE_INTO_CGROUP of the command
//
// Its environment's RUND_INIT is an initSetup (spawn.go says why not an argument). initproto.go encodes
// the messages.
//
// Goroutines of the init (it is a process of its own; its exit ends them all):
//   - main: setUpJob, locked to its thread from the first step that the command inherits; then reaping
//     until the command has ended.
//   - the Start reader (awaitStart): reads the Start and locks a contained job's mounts on a thread the
//     filter is not on, hands both results to main over a channel, and ends.
//   - the clone3 supervisor (seccomp.go): started once the filter is on; ends with the process.
//   - the order reader (obey), which is also the lifeline's: started once the command runs; ends with the
//     process.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultPath is the PATH of a job whose request sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runInit is the body of "rund init", the PID 1 of a job. It returns the process exit code.
func runInit() int {
	if os.Getpid() != 1 || len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "rund init: internal command, run by rund serve as a job's PID 1")
		return 2
	}
	cfgPipe, repPipe := initPipe(3, "config"), initPipe(4, "report")
	config := bufio.NewReader(cfgPipe)
	pid, fail := setUpJob(config)
	if fail == errNoStart {
		return 1 // rund is gone: no one to report to
	}
	if fail != nil {
		writeMessage(repPipe, fail.encode())
		return 1
	}
	writeMessage(repPipe, startReport{Pid: pid}.encode())
	var stopping atomic.Bool // a Stop came: the init waits for every process, not the command alone
	go obey(config, pid, &stopping)
	ws := reap(pid)
	if stopping.Load() {
		// The rest of the job has its grace period too; after it, rund's cgroup.kill ends them all.
		reap(-1)
	}
	// Our copies of the output pipes go now, so that rund's readers see EOF without waiting for this
	// process to exit; whatever else of the job still holds them, rund kills.
	unix.Close(1)
	unix.Close(2)
	rep := exitReport{Exited: ws.Exited(), Code: ws.ExitStatus()}
	if ws.Signaled() {
		rep = exitReport{Signal: int(ws.Signal())}
	}
	writeMessage(repPipe, rep.encode())
	return 0 // our exit makes the kernel SIGKILL whatever is left in the namespace
}

// obey carries out the server's orders (initproto.go orderStop; spawn.go signal and stop) until the
// config pipe ends, which is the lifeline: rund holds its write end, and once rund is gone the job goes
// too. Orders, not signals to the init: os/signal made four of an init's threads, and their wakeups
// cost a contained job 7% of its CPU (BENCHMARKS.md, "Where a Start's time goes"). Without a handler,
// a SIGINT, SIGTERM or SIGHUP from outside would end the init, so it has a session of its own
// (spawn.go), and only the host's root can send it one.
// A Stop sends SIGTERM to every process of the job and makes the init wait for all of them; a second
// Stop, its grace period's end, sends them SIGKILL: as systemd's KillMode=control-group stops a unit
// (systemd.kill(5)), so that a nested shell's trap runs within the grace period. kill -1 is every
// process of our PID namespace but ourselves (kill(2)), so also one that left the job's cgroup.
// Stopping is set before the SIGTERM, so reap cannot return alone once the command ends.
func obey(config *bufio.Reader, pid int, stopping *atomic.Bool) {
	for {
		o, err := config.ReadByte()
		if err != nil {
			syscall.Kill(-1, syscall.SIGKILL)
			return
		}
		if o != orderStop {
			syscall.Kill(pid, syscall.Signal(o))
			continue
		}
		again := stopping.Swap(true)
		if again {
			syscall.Kill(-1, syscall.SIGKILL)
			continue
		}
		syscall.Kill(-1, syscall.SIGTERM)
	}
}

// errNoStart is setUpJob's answer when the config pipe broke before a Start came: rund is gone.
var errNoStart = &startReport{Msg: "no Start: rund is gone"}

// setUpJob is the whole of a job's setup, in the order it happens, from the init's first instruction
// to its command's: one call per step, each under the privilege state it runs in (the comments in
// capitals). A contained job takes every step; an uncontained one (-unsafe_uncontained_jobs) skips
// those under "if contained" and its mount table has /proc alone. It returns the command's pid, or the
// report of the step that failed.
//
// Invariant (fail closed): a step that fails ends the setup, and no command runs; setUpJob never goes
// on past an error (TestSetupStepsFatal fails each step in turn). The steps of a spare run before its
// Start, where no job code runs; at the Start only the mounts are locked and the command started.
func setUpJob(start *bufio.Reader) (int, *startReport) {
	setupFailed := func(err error) (int, *startReport) {
		return 0, failure(stageSetup, err, "set up the job: %v", err)
	}
	// HOST ROOT, every capability, in the host's user namespace and in new PID, mount, network (but
	// with the grant of the host's: s.HostNet), UTS and IPC namespaces (spawn.go). No thread is filtered.
	// The mounts are the host's, shared.
	if err := step("close inherited fds", closeInherited); err != nil {
		return setupFailed(err)
	}
	var s initSetup
	if err := step("read the setup", func() error { return readSetup(&s) }); err != nil {
		return setupFailed(err)
	}
	contained := s.Own != nil // the server's choice: it leaves Own out for -unsafe_uncontained_jobs alone
	if err := step("make mounts slaves", makeMountsSlaves); err != nil {
		return setupFailed(err)
	}
	mounts := jobMounts(s)
	if err := step("make the job's mounts", func() error { return makeMounts(mounts, s) }); err != nil {
		return setupFailed(err)
	}
	// MOUNTS MADE: the job's own (jobMounts) over the host's; the host's writable as they were, until
	// they are locked at the Start.
	if err := step("set the hostname", func() error { return unix.Sethostname([]byte(s.Hostname)) }); err != nil {
		return setupFailed(err)
	}
	if !s.HostNet {
		if err := step("bring lo up", loopbackUp); err != nil {
			return setupFailed(err)
		}
	}
	// From here on this goroutine keeps its thread: what the command inherits from the thread that
	// forks it (no_new_privs, groups, session keyring, seccomp filter) is that thread's alone.
	runtime.LockOSThread()
	if err := step("set no_new_privs", setNoNewPrivs); err != nil {
		return setupFailed(err)
	}
	if err := step("join a new session keyring", joinSessionKeyring); err != nil {
		return setupFailed(err)
	}
	var listener, inherited int // the job's filter's clone3 listener; the filters the init had before it
	if contained {
		if err := step("drop supplementary groups", dropGroups); err != nil {
			return setupFailed(err)
		}
		// Where no pids.max bounds the job (jobs.go newManager), its own uid does: RLIMIT_NPROC counts
		// the tasks of the command's real uid in its user namespace (setrlimit(2)), the job's alone.
		// The init, real uid 0, is exempt.
		if err := step("bound the job's processes", func() error { return limitProcesses(s.NProc) }); err != nil {
			return setupFailed(err)
		}
		if err := step("install the syscall filter", func() (err error) {
			listener, inherited, err = installJobFilter()
			return err
		}); err != nil {
			return setupFailed(err)
		}
		// FILTER INSTALLED ON THIS THREAD: it and what it forks have the job's filter; the init's other
		// threads do not (Go starts none from a locked thread, runtime newm).
		go superviseClone3(listener)
	}
	// A SPARE, READY: it waits here for its Start. No job code has run. The Start is read, and the mounts
	// locked, on another thread, checked to be without the job's filter (awaitStart, lockMounts).
	lock := func() error { return nil }
	if contained {
		lock = func() error { return step("lock the mounts", func() error { return lockMounts(mounts, inherited) }) }
	}
	cfg, readErr, lockErr := awaitStart(start, lock)
	if readErr != nil {
		return 0, errNoStart
	}
	if lockErr != nil {
		return setupFailed(lockErr)
	}
	// MOUNTS LOCKED (contained): read-only but for the writable ones of jobMounts, and private: the
	// host's mounts no longer propagate in.
	path, fail := findCommand(&cfg, s.Own) // as the job's own uid: what it could see itself
	if fail != nil {
		return 0, fail
	}
	if contained {
		// The user namespace that the fork makes is owned by the effective uid of the thread that forks.
		if err := step("take the job's ids to fork", func() error { return becomeJobOwner(s.Own) }); err != nil {
			return setupFailed(err)
		}
	}
	// THE JOB'S EFFECTIVE UID AND GID ON THIS THREAD, root's filesystem ids and capabilities: the fork.
	pid, err := forkCommand(path, cfg, s.Own, inherited)
	if contained {
		// Not a step: the command has started. Root's uid was never left (real and saved), so this
		// cannot fail; if it did, the command is killed and the job does not start.
		if lerr := leaveJobOwner(); lerr != nil {
			if err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return setupFailed(fmt.Errorf("take root's ids back: %w", lerr))
		}
	}
	if err != nil {
		return 0, failure(stageExec, err, "exec %q: %v", cfg.Argv[0], errnoText(err))
	}
	// THE COMMAND RUNS (contained) as the job's own host uid, root of a user namespace of its own, owned
	// by that uid, that holds no capability over the job's other namespaces; filtered; mounts locked.
	return pid, nil
}

// failStep names a step that fails on purpose: the tests' way to prove each one fatal
// (TestSetupStepsFatal, through the test binary's "init"). rund never sets it.
var failStep string

// step runs one step of setUpJob and names it in its error.
func step(name string, do func() error) error {
	if name == failStep {
		return fmt.Errorf("%s: failed on purpose (failStep)", name)
	}
	if err := do(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// readSetup reads the init's RUND_INIT (spawn.go).
func readSetup(s *initSetup) error { return s.decode(os.Getenv("RUND_INIT")) }

// closeInherited: the command gets fds 0-2 only, not our control pipes, and not whatever rund itself
// inherited without O_CLOEXEC from the one that started it (os/exec passes those on). close_range(2).
func closeInherited() error { return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) }

// makeMountsSlaves makes every mount a slave of the host's: nothing mounted here shows on the host,
// while the host's mounts and unmounts still reach a spare that waits (mount_namespaces(7)), which so
// neither misses a new mount nor pins an unmounted one. A contained job's Start makes them private.
func makeMountsSlaves() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, "") }

// dropGroups drops root's supplementary groups: the command's user namespace refuses setgroups, so it
// could not drop them itself. For the calling thread alone (x/sys Setgroups is the raw call).
func dropGroups() error { return unix.Setgroups(nil) }

// setNoNewPrivs: no setuid binary or file capability raises what the command may do (prctl(2)).
func setNoNewPrivs() error { return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }

// joinSessionKeyring gives the init, and so the command, a new anonymous session keyring
// (keyrings(7), KEYCTL_JOIN_SESSION_KEYRING with no name): the command can neither read nor add to the
// keys of the server's session. A kernel built without keys has none to share (ENOSYS).
func joinSessionKeyring() error {
	_, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if e != 0 && e != unix.ENOSYS {
		return e
	}
	return nil
}

// limitProcesses sets RLIMIT_NPROC, soft and hard, to n; 0 leaves it as it is. The command cannot raise
// the hard limit: that takes CAP_SYS_RESOURCE in the host's user namespace.
func limitProcesses(n uint64) error {
	if n == 0 {
		return nil
	}
	return unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: n, Max: n})
}

// awaitStart reads the Start and then runs lock, on another goroutine: its thread is not the locked
// one that the filter is on (Go starts no thread from a locked one, runtime newm), so it may mount, and
// a locked thread waiting on the pipe itself would cost a wakeup at the Start. readErr is the pipe's
// (rund is gone); lock runs only after a Start.
func awaitStart(start *bufio.Reader, lock func() error) (cfg initConfig, readErr, lockErr error) {
	done := make(chan struct{})
	go func() {
		defer close(done) // what it sets is this function's to read from then on
		readErr = readDecoded(start, cfg.decode)
		if readErr == nil {
			lockErr = lock()
		}
	}()
	<-done
	return cfg, readErr, lockErr
}

// initPipe wraps one of the init's pipes for the runtime's poller. os/exec hands them over blocking, and
// a blocking read holds a thread: polled, the init has one thread fewer, and starts none once the
// command runs (BENCHMARKS.md, "Where a Start's time goes"). os.NewFile polls an fd that is non-blocking.
func initPipe(fd int, name string) *os.File {
	unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), name)
}

// reap waits for every child, as a PID 1 must, until pid has ended, and returns pid's wait status;
// with pid -1, until no child is left.
func reap(pid int) syscall.WaitStatus {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return syscall.WaitStatus(syscall.SIGKILL) // ECHILD: pid -1 is done; a pid of ours cannot be
		}
		if got == pid {
			return ws
		}
	}
}

// forkCommand starts the command as PID 2 in the job's cgroup (fd 5); own is a contained job's uid and
// gid (nil: uncontained), inherited the number of filters the init had before the job's. The command's
// stdin is the init's own /dev/null (spawn.go gives the init no Stdin, so os/exec opens os.DevNull
// for it).
func forkCommand(path string, cfg initConfig, own *jobUser, inherited int) (int, error) {
	sys := &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: 5}
	attr := &syscall.ProcAttr{Dir: cfg.Dir, Env: cfg.Env, Files: []uintptr{0, 1, 2}, Sys: sys}
	if own == nil {
		return syscall.ForkExec(path, cfg.Argv, attr)
	}
	ownUserns(sys, own)
	// The filter's rules for our own fork need two Ps (seccomp.go); spawn.go starts us with one. One
	// again after it: each P takes spans of its own, which an idle init keeps (BENCHMARKS.md, issue 24).
	runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(1)
	return forkExecFiltered(path, cfg.Argv, attr, inherited)
}

// findCommand checks the working directory and finds the command as the job's own uid (nil, an
// uncontained job: as root): what the checks see is what the command could, so a refusal tells the
// client nothing more about the host (checked as root, "-dir /root/x" told "not a directory" from "no
// such file"; issue 15). cfg.Dir becomes the directory, and path the command, with every link resolved
// (resolvePath).
func findCommand(cfg *initConfig, user *jobUser) (path string, fail *startReport) {
	err := asJobUser(user, func() {
		dir, err := resolvePath(cfg.Dir)
		if err == nil {
			// chdir(2) needs search permission, which the exec would otherwise report as its own EACCES.
			err = checkAccess(dir, true)
		}
		if err != nil {
			fail = pathFailure(stageDir, "working directory", cfg.Dir, err, user != nil)
			return
		}
		cfg.Dir = dir
		found, err := lookPath(cfg.Argv[0], dir, cfg.Env)
		if errors.Is(err, syscall.ENOENT) && !strings.Contains(cfg.Argv[0], "/") {
			fail = failure(stagePath, err, "command %q not found in the job's PATH", cfg.Argv[0])
			return
		}
		if err == nil {
			path, err = resolvePath(found)
		}
		if err != nil {
			fail = pathFailure(stagePath, "command", cfg.Argv[0], err, user != nil)
		}
	})
	if err != nil {
		return "", failure(stageSetup, err, "take the job user's ids: %v", err)
	}
	return path, fail
}

// pathFailure is the report of a working directory or command that the job cannot use. A contained
// job's name under one of its private directories is missing there, not on the host: the report says so.
func pathFailure(st stage, what, name string, err error, contained bool) *startReport {
	if errors.Is(err, errMagicLink) {
		return failure(st, syscall.EINVAL, "%s %q: %v; name it itself", what, name, err)
	}
	for _, d := range privateDirs {
		if contained && errors.Is(err, syscall.ENOENT) && (name == d || strings.HasPrefix(name, d+"/")) {
			return failure(st, err, "%s %q: %v in the job's own %s, which starts empty: not the host's",
				what, name, errnoText(err), d)
		}
	}
	return failure(st, err, "%s %q: %v", what, name, errnoText(err))
}

func failure(st stage, err error, format string, args ...any) *startReport {
	var errno syscall.Errno
	errors.As(err, &errno)
	return &startReport{Stage: st, Errno: int(errno), Msg: fmt.Sprintf(format, args...)}
}

// errnoText is the bare errno text ("no such file or directory") without an *os.PathError's path.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// loopbackUp sets IFF_UP on "lo", the only interface of a new network namespace (netdevice(7)).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq("lo") // fails only on a name of IFNAMSIZ or more
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// errMagicLink is resolvePath's refusal of a magic link.
var errMagicLink = errors.New("goes through a magic link of /proc (proc(5): fd, cwd, root, exe)")

// resolvePath returns path with every symbolic link resolved by its text (filepath.EvalSymlinks), so
// that the fork uses a path with no link at all: no magic link of /proc (/proc/PID/fd/N, cwd, root, exe;
// proc(5)) can take it to what a process holds rather than to a path, which from the forked command,
// before its exec, would be the init's own open files (its cgroup handle, its pipes) and the server's
// directories. A magic link's text, resolved as a path, leads only where the job could go by name.
// Where openat2(2) is allowed, a path that needs a magic link is refused by name first:
// RESOLVE_NO_MAGICLINKS fails it with ELOOP. (systemd's RestrictSUIDSGID= refuses openat2 with
// ENOSYS, since its flags cannot be filtered: there, the resolution holds alone.)
func resolvePath(path string) (string, error) {
	// ELOOP with RESOLVE_NO_MAGICLINKS and not without it: a magic link, not a loop of links.
	if openPath(path, unix.RESOLVE_NO_MAGICLINKS) == unix.ELOOP && openPath(path, 0) != unix.ELOOP {
		return "", errMagicLink
	}
	return filepath.EvalSymlinks(path)
}

// openPath opens path with O_PATH and the openat2(2) resolve flags, closes it at once, and returns the
// error.
func openPath(path string, resolve uint64) error {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve}
	fd, err := unix.Openat2(unix.AT_FDCWD, path, how)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// lookPath finds the command the way execvp(3) does, but on the job's PATH rather than the server's.
// A name with a slash is taken as is (relative to the working directory). EACCES is kept when a match
// exists but is not executable, so the client hears "permission denied" rather than "not found".
func lookPath(name, dir string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return name, checkAccess(name, false)
	}
	pathVar := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	found := error(syscall.ENOENT)
	for _, d := range filepath.SplitList(pathVar) {
		if !filepath.IsAbs(d) {
			continue // a relative PATH entry would depend on the working directory: skip it
		}
		p := filepath.Join(d, name)
		switch err := checkAccess(p, false); {
		case err == nil:
			return p, nil
		case errors.Is(err, syscall.EACCES):
			found = err
		}
	}
	return "", found
}

// checkAccess fails unless p is a directory the thread may search (dir), or a file, not a directory,
// that it may execute (!dir).
func checkAccess(p string, dir bool) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case dir && !fi.IsDir():
		return syscall.ENOTDIR
	case !dir && fi.IsDir():
		return syscall.EACCES
	}
	// As the job's user (asJobUser): AT_EACCESS checks the thread's fsuid, where access(2) would check
	// the real uid, root's.
	return unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS)
}

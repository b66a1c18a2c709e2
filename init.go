package main

// init.go is everything that runs as a job's PID 1 ("rund init"), and the protocol it speaks with the
// server over two pipes (spawn.go is the server's side). The init prepares its namespaces, waits for
// its command, execs it as PID 2 into <job>/job (clone3 + CLONE_INTO_CGROUP), forwards signals to it,
// reaps orphans and reports the command's exact wait status.
//
// A contained job (the default; README "What a job can do") differs in four places: setupMounts makes
// the job's own /tmp, /var/tmp, /dev/shm, cgroup view and -job_dirs; dropInherited installs the
// syscall filter (seccomp.go) on the thread that will fork; at the Start, lockMounts makes the host's
// mounts read-only and keeps later ones out; and the command is cloned into a user namespace of its
// own (ownUserns), root in it, its own host uid outside it. The init itself
// stays host root in the job's other namespaces, which the command so holds no capability over.
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
//	3      config pipe: one JSON initConfig, then kept open as a lifeline: EOF means rund died
//	4      report pipe: one JSON startReport, then, if the command started, one exitReport
//	5      <job>/job cgroup directory, for CLONE_INTO_CGROUP of the command
//
// Its environment's RUND_INIT is an initSetup, as JSON (spawn.go says why not an argument).
//
// Goroutines of the init (it is a process of its own; its exit ends them all):
//   - main: setup, the command's start, then reaping until the command has ended.
//   - the config reader: started once setup is done; reads the config, and for a contained job locks
//     its mounts (lockMounts), then ends; main waits for it.
//   - the signal forwarder: started once the command runs; ends with the process.
//   - the lifeline reader: started once the command runs; SIGKILLs the command on EOF; ends with the
//     process.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultPath is the PATH of a job whose request sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// initSetup is how the server starts an init (its RUND_INIT, as JSON): what it prepares before
// the job's Start.
type initSetup struct {
	Hostname  string   `json:"hostname"`       // the job id
	Own       *jobUser `json:"own,omitempty"`  // a contained job's own host uid:gid, root of its user namespace; nil: not contained
	TmpSize   uint64   `json:"tmp_size"`       // bytes of each private tmpfs, when contained
	Cgroup2   string   `json:"cgroup2"`        // the cgroup2 mount point, when contained
	JobCgroup string   `json:"job_cgroup"`     // <job>/job, bound read-only on Cgroup2 when contained
	Dirs      []string `json:"dirs,omitempty"` // -job_dirs: DIR/<id> is made the job's own and bound on DIR

	writable []string // the mounts of a contained job's own that it may write (setupMounts, lockMounts)
}

// initConfig is what the server tells the init at the Start: the command to run.
type initConfig struct {
	Argv []string `json:"argv"` // argv[0] is the command as requested
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
}

// jobUser is a contained job's own host uid and gid (pool.go uidRange).
type jobUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// startReport is the init's first message: the command's pid, or why it did not start.
type startReport struct {
	Pid   int    `json:"pid,omitempty"` // > 0 once the command runs
	Stage stage  `json:"stage,omitempty"`
	Errno int    `json:"errno,omitempty"`
	Msg   string `json:"msg,omitempty"` // for the client: no host path but the ones it named
}

// stage is the step of a start that failed; the server decides from it whose fault the failure is.
type stage string

const (
	stageSetup stage = "setup" // the init's own namespaces or files: the server's fault
	stageDir   stage = "dir"   // the requested working directory
	stagePath  stage = "path"  // finding the command
	stageExec  stage = "exec"  // the exec itself
)

// exitReport is the init's second and last message: how the command ended. The server reads a
// missing one as SIGKILL (spawn.go wait).
type exitReport struct {
	Exited bool `json:"exited"`
	Code   int  `json:"code"`   // exit status, when Exited
	Signal int  `json:"signal"` // the signal that ended it, when not Exited
}

// forwardedSignals are passed on from the init to the command (and so are what the Signal RPC may send,
// besides SIGKILL). Not SIGURG: the Go runtime preempts its own threads with it.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGTSTP}

// runInit is the body of "rund init", the PID 1 of a job. It returns the process exit code.
func runInit() int {
	if os.Getpid() != 1 || len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "rund init: internal command, run by rund serve as a job's PID 1")
		return 2
	}
	// The command gets fds 0-2 only: not our control pipes, and not whatever rund itself inherited
	// without O_CLOEXEC from the one that started it (os/exec passes those on). close_range(2).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return 1
	}
	// Up to the config, the work is done before the job's Start: namespaces, and the signal handlers
	// (the kernel drops signals to a PID 1 without a handler; rund sends none before the start report).
	setup, setupErr := prepare()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	cfgPipe, repPipe := initPipe(3, "config"), initPipe(4, "report")
	dec, enc := json.NewDecoder(cfgPipe), json.NewEncoder(repPipe)
	// The Start is read on another thread, unfiltered (Go starts none from a locked one, runtime newm),
	// where lockMounts may mount; it costs no wakeup: a locked thread never polls its own pipe.
	var cfg initConfig
	read := make(chan error)
	go func() {
		err := dec.Decode(&cfg)
		if err == nil && setupErr == nil && setup.Own != nil {
			setupErr = lockMounts(setup.writable)
		}
		read <- err
	}()
	if err := <-read; err != nil {
		return 1
	}
	pid, fail := startCommand(cfg, setup.Own, setupErr)
	if fail != nil {
		enc.Encode(fail)
		return 1
	}
	enc.Encode(startReport{Pid: pid})
	go func() {
		for s := range sigs {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}()
	go func() {
		// The lifeline: rund holds the write end; EOF means it is gone, so the job goes too.
		io.Copy(io.Discard, io.MultiReader(dec.Buffered(), cfgPipe))
		syscall.Kill(pid, syscall.SIGKILL)
	}()
	ws := reap(pid)
	// Our copies of the output pipes go now, so that rund's readers see EOF without waiting for this
	// process to exit; whatever else of the job still holds them, rund kills.
	unix.Close(1)
	unix.Close(2)
	rep := exitReport{Exited: ws.Exited(), Code: ws.ExitStatus()}
	if ws.Signaled() {
		rep = exitReport{Signal: int(ws.Signal())}
	}
	enc.Encode(rep)
	return 0 // our exit makes the kernel SIGKILL whatever is left in the namespace
}

// prepare sets up the job's namespaces and mounts as the init's RUND_INIT says, then what the command
// inherits from the thread that forks it (dropInherited). All of that is a thread's (no_new_privs,
// groups, session keyring, seccomp filter), so that thread is the caller's, locked to it from here on.
func prepare() (initSetup, error) {
	var setup initSetup
	if err := json.Unmarshal([]byte(os.Getenv("RUND_INIT")), &setup); err != nil {
		return setup, err
	}
	if err := setupNamespaces(&setup); err != nil {
		return setup, err
	}
	// The first use of a type builds encoding/json's reflection caches: done here, not in the Start
	// (BENCHMARKS.md, "Where a Start's time goes").
	json.Unmarshal([]byte(`{"argv":["x"],"env":["k=v"],"dir":"/"}`), new(initConfig))
	json.Marshal(startReport{Pid: 1})
	runtime.LockOSThread()
	return setup, dropInherited(setup.Own != nil)
}

// initPipe wraps one of the init's pipes for the runtime's poller. os/exec hands them over blocking, and
// a blocking read holds a thread: polled, the init has one thread fewer, and starts none once the
// command runs (BENCHMARKS.md, "Where a Start's time goes"). os.NewFile polls an fd that is non-blocking.
func initPipe(fd int, name string) *os.File {
	unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), name)
}

// reap waits for every child, as a PID 1 must, until pid has ended, and returns pid's wait status.
func reap(pid int) syscall.WaitStatus {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if got == pid {
			return ws
		}
		if err != nil && err != syscall.EINTR {
			return syscall.WaitStatus(syscall.SIGKILL) // cannot happen: pid is our child
		}
	}
}

// startCommand starts the command as PID 2 in the job's cgroup; own is a contained job's uid and gid.
func startCommand(cfg initConfig, own *jobUser, setupErr error) (int, *startReport) {
	if setupErr != nil {
		return 0, failure(stageSetup, setupErr, "set up job namespaces: %v", setupErr)
	}
	path, fail := findCommand(cfg, own)
	if fail != nil {
		return 0, fail
	}
	sys := &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: 5}
	// The command's stdin is the init's own /dev/null (spawn.go gives the init no Stdin, so os/exec
	// opens os.DevNull for it).
	attr := &syscall.ProcAttr{Dir: cfg.Dir, Env: cfg.Env, Files: []uintptr{0, 1, 2}, Sys: sys}
	forkExec := syscall.ForkExec
	if own != nil {
		ownUserns(sys, own)
		forkExec = forkExecFiltered
	}
	pid, err := forkExec(path, cfg.Argv, attr)
	if err != nil {
		return 0, failure(stageExec, err, "exec %q: %v", cfg.Argv[0], errnoText(err))
	}
	return pid, nil
}

// findCommand checks the working directory and finds the command as the job's own uid (nil, an
// uncontained job: as root): what the checks see is what the command could, so a refusal tells the
// client nothing more about the host (checked as root, "-dir /root/x" told "not a directory" from "no
// such file"; issue 15).
func findCommand(cfg initConfig, user *jobUser) (path string, fail *startReport) {
	err := asJobUser(user, func() {
		if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
			if err == nil {
				err = syscall.ENOTDIR
			}
			fail = failure(stageDir, err, "working directory %q: %v", cfg.Dir, errnoText(err))
			return
		}
		var err error
		path, err = lookPath(cfg.Argv[0], cfg.Dir, cfg.Env)
		switch {
		case errors.Is(err, syscall.ENOENT) && !strings.Contains(cfg.Argv[0], "/"):
			fail = failure(stagePath, err, "command %q not found in the job's PATH", cfg.Argv[0])
		case err != nil:
			fail = failure(stagePath, err, "command %q: %v", cfg.Argv[0], errnoText(err))
		}
	})
	if err != nil {
		return "", failure(stageSetup, err, "take the job user's ids: %v", err)
	}
	return path, fail
}

// asJobUser runs check with the filesystem ids of u (nil: root's, as they are) and no supplementary
// groups (setfsuid(2): a non-zero fsuid also takes root's file capabilities out of the effective set,
// capabilities(7)), then takes root's ids back. All of these are the calling thread's: the init's own, locked to it
// (runInit), whose groups the command does not inherit (ownUserns).
func asJobUser(u *jobUser, check func()) error {
	if u == nil {
		check()
		return nil
	}
	err := errors.Join(unix.Setgroups(nil), unix.Setfsgid(int(u.GID)), unix.Setfsuid(int(u.UID)))
	// setfsuid(2) reports no error; its result is read back.
	gid, _ := unix.SetfsgidRetGid(int(u.GID))
	uid, _ := unix.SetfsuidRetUid(int(u.UID))
	if err == nil && (uid != int(u.UID) || gid != int(u.GID)) {
		err = fmt.Errorf("setfsuid %d, setfsgid %d: have %d, %d", u.UID, u.GID, uid, gid)
	}
	if err == nil {
		check()
	}
	return errors.Join(err, unix.Setfsuid(0), unix.Setfsgid(0))
}

// ownUserns puts the command in a new user namespace in which uid and gid 0 are the job's own host uid
// and gid (user_namespaces(7)), and in a new cgroup namespace rooted at its cgroup: clone3 puts it
// into <job>/job before the namespace takes its root (cgroup_namespaces(7)). Its other namespaces stay
// owned by the host's user namespace, in which it holds no capability: it can neither mount, unmount
// nor remount, set the hostname or configure the network, and no file of the host's is its own.
func ownUserns(sys *syscall.SysProcAttr, u *jobUser) {
	sys.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWCGROUP
	sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(u.UID), Size: 1}}
	sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(u.GID), Size: 1}}
	sys.GidMappingsEnableSetgroups = false // the command can never take a group back
	// uid and gid 0 of the new namespace; the groups stay the empty list dropInherited left.
	sys.Credential = &syscall.Credential{NoSetGroups: true}
}

// dropInherited gives up, for the init and so for the command, what every job would otherwise share
// with the server. no_new_privs (prctl(2)): no setuid binary or file capability raises what the
// command may do. A new anonymous session keyring (keyrings(7), KEYCTL_JOIN_SESSION_KEYRING with no
// name): the command can neither read nor add to the keys of the server's session. A kernel built
// without keys has none to share (ENOSYS).
//
// A contained job also loses the server's supplementary groups (root's: its user namespace refuses
// setgroups, so the command could not drop them itself) and gets the syscall filter (seccomp.go), whose
// supervisor this starts; the filter's rules for the init's own fork need two Ps and no collection in
// progress (seccomp.go), arranged here, before the Start.
func dropInherited(contained bool) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); e != 0 && e != unix.ENOSYS {
		return fmt.Errorf("join a new session keyring: %w", e)
	}
	if !contained {
		return nil
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	runtime.GOMAXPROCS(2)
	listener, err := installJobFilter()
	if err != nil {
		return err
	}
	go superviseClone3(listener)
	return nil
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

// setupNamespaces runs in the init, inside the new namespaces: mounts made slaves of the host's (so
// nothing mounted here shows on the host, while the host's mounts and unmounts still reach the job: a
// spare's namespace can be old, and must neither miss a new mount nor pin an unmounted one;
// mount_namespaces(7)), a /proc of the new PID namespace, loopback up, hostname = the job id.
func setupNamespaces(s *initSetup) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if s.Own != nil {
		if err := setupMounts(s); err != nil {
			return err
		}
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	s.writable = append(s.writable, "/proc")
	if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	return loopbackUp()
}

// privateDirs get a fresh tmpfs in each contained job.
var privateDirs = []string{"/tmp", "/var/tmp", "/dev/shm"}

// setupMounts makes a contained job's own mounts, ahead of its Start: fresh tmpfs on privateDirs where
// the host has those directories (charged to the memory cgroup of the job, which writes them), on the
// cgroup2 mount the job's own cgroup, read-only, and on each of s.Dirs the job's own directory in it.
// Those it may write it lists in s.writable: at the Start, lockMounts makes every other mount
// read-only, those the host made meanwhile included. No job code runs before that.
func setupMounts(s *initSetup) error {
	for _, d := range s.Dirs { // made as the host's root, whose mounts are writable here until the Start
		own := filepath.Join(d, s.Hostname)
		err := os.Mkdir(own, 0o700)
		if err == nil {
			err = os.Lchown(own, int(s.Own.UID), int(s.Own.GID))
		}
		if err == nil {
			err = bindMount(own, d, 0)
		}
		if err != nil {
			return err
		}
	}
	for _, dir := range privateDirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue // nothing of the host's to hide there
		}
		opts := fmt.Sprintf("mode=1777,size=%d", s.TmpSize)
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		s.writable = append(s.writable, dir)
	}
	if err := bindMount(s.JobCgroup, s.Cgroup2, unix.MS_RDONLY|unix.MS_NOEXEC); err != nil {
		return err
	}
	s.writable = append(s.writable, s.Dirs...)
	return nil
}

// lockMounts, at a contained job's Start, stops the host's mounts from propagating into the job's
// namespace (MS_PRIVATE, mount_namespaces(7)), and makes every mount read-only (mount_setattr(2),
// AT_RECURSIVE), what propagated in while the sandbox waited as a spare included, then the job's own
// writable mounts writable again. A spare stays a slave
// while it waits, so that it pins no filesystem the host unmounts meanwhile; a running job pins what it
// saw at its Start, as a container does. Without this, a host mount made after setupMounts would be
// writable in the job wherever its modes let "others" write.
func lockMounts(writable []string) error {
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY, Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("lock mounts: %w", err)
	}
	for _, dir := range writable {
		if err := unix.MountSetattr(unix.AT_FDCWD, dir, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("make %s writable: %w", dir, err)
		}
	}
	return nil
}

// bindMount binds src on dst, nosuid, nodev and with flags: a bind mount takes flags only on a remount
// (mount(2)).
func bindMount(src, dst string, flags uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	flags |= unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", dst, err)
	}
	return nil
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

// lookPath finds the command the way execvp(3) does, but on the job's PATH rather than the server's.
// A name with a slash is taken as is (relative to the working directory). EACCES is kept when a match
// exists but is not executable, so the client hears "permission denied" rather than "not found".
func lookPath(name, dir string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, checkExecutable(p)
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
		switch err := checkExecutable(p); {
		case err == nil:
			return p, nil
		case errors.Is(err, syscall.EACCES):
			found = err
		}
	}
	return "", found
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case fi.IsDir():
		return syscall.EACCES
	}
	// As the job's user (asJobUser): AT_EACCESS checks the thread's fsuid, where access(2) would check
	// the real uid, root's.
	return unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS)
}

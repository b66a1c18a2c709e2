package main

// spawn.go starts a job: rund re-executes itself as "rund init", the PID 1 of the job's new PID, mount,
// network, UTS and IPC namespaces, cloned straight into <job>/init with clone3 + CLONE_INTO_CGROUP. The
// init prepares the namespaces, execs the command as PID 2 into <job>/job (clone3 again), forwards
// signals to it, reaps orphans and reports the command's exact wait status back to rund.
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
//	4      report pipe: JSON initReports back to rund (3 and 4 are made non-blocking: initPipe)
//	5      <job>/job cgroup directory, for CLONE_INTO_CGROUP of the command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// defaultPath is the PATH of a job whose request sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// initConfig is what rund tells the init.
type initConfig struct {
	Argv []string `json:"argv"` // argv[0] is the command as requested
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	User *jobUser `json:"user,omitempty"`
}

// jobUser is the unprivileged identity that job commands run as (rund serve -job_user).
type jobUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

func parseJobUser(s string) (*jobUser, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("want numeric UID:GID, e.g. 65534:65534, got %q", s)
	}
	return &jobUser{UID: uint32(uid), GID: uint32(gid)}, nil
}

// initReport is what the init tells rund: first a start report (Pid, or Errno and Stage when the
// command could not be started), then at most one exit report (Exited with Code, or Signal).
type initReport struct {
	Pid    int    `json:"pid,omitempty"`
	Stage  string `json:"stage,omitempty"` // "path", "dir", "exec" or "setup"
	Errno  int    `json:"errno,omitempty"`
	Msg    string `json:"msg,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal int    `json:"signal,omitempty"`
}

// startError is a command that could not be started; stage and errno decide the gRPC code.
type startError struct {
	stage string
	errno syscall.Errno
	msg   string
}

func (e *startError) Error() string { return e.msg }

// exitInfo is how a job's command ended.
type exitInfo struct {
	exited bool
	code   int
	signal int
}

// initExe is the binary run as a job's init: this very one, even if the file on disk was replaced.
// Tests point it at a build without the race detector, whose exit alone takes a second.
var initExe = "/proc/self/exe"

// proc is a started init, as rund sees it.
type proc struct {
	cmd      *exec.Cmd
	lifeline *os.File      // write end of the config pipe, held open while the job runs
	reports  *json.Decoder // the report pipe
	report   *os.File
}

// startInit starts a job's init into cg. The init sets up its namespaces (hostname is the job id) and
// then waits on its config pipe for the command, which begin sends: so jobs can be prepared before
// their Start (sandbox, jobs.go).
func startInit(cg *jobCgroup, hostname string, stdout, stderr *os.File) (*proc, error) {
	initFD, err := os.Open(cg.initDir())
	if err != nil {
		return nil, err
	}
	defer initFD.Close()
	jobFD, err := os.Open(cg.jobDir())
	if err != nil {
		return nil, err
	}
	defer jobFD.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		closeAll([]*os.File{cfgR, cfgW})
		return nil, err
	}

	cmd := &exec.Cmd{
		Path: initExe,
		Args: []string{"rund", "init", hostname},
		// None of the server's environment. One P: the init has little to run, and each P costs page
		// faults at start-up (perf stat of a start here: 21.6 ms of CPU with the default, 18.2 with one).
		Env:        []string{"GOMAXPROCS=1"},
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{cfgR, repW, jobFD},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET |
				syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
			UseCgroupFD: true,
			CgroupFD:    int(initFD.Fd()),
		},
	}
	err = cmd.Start()
	closeAll([]*os.File{cfgR, repW}) // the init's ends: a report read sees EOF once the init is gone
	if err != nil {
		closeAll([]*os.File{cfgW, repR})
		return nil, fmt.Errorf("start job init: %w", err)
	}
	return &proc{cmd: cmd, lifeline: cfgW, reports: json.NewDecoder(repR), report: repR}, nil
}

// begin sends the init its command and waits for the start report. If the command did not start, the
// caller ends the init (jobs.go discard).
func (p *proc) begin(cfg initConfig) error {
	var rep initReport
	err := json.NewEncoder(p.lifeline).Encode(cfg)
	if err == nil {
		err = p.reports.Decode(&rep)
	}
	if err != nil || rep.Pid == 0 {
		if err != nil {
			return fmt.Errorf("job init did not start: %w", err)
		}
		return &startError{stage: rep.Stage, errno: syscall.Errno(rep.Errno), msg: rep.Msg}
	}
	return nil
}

// signal sends sig to the init, which forwards it to the command.
func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// kill ends the init at once; the kernel then SIGKILLs every process in its PID namespace.
func (p *proc) kill() { p.cmd.Process.Kill() }

// wait returns how the command ended, from the init's exit report. If the init died without one (it
// was SIGKILLed, e.g. by cgroup.kill), so did the command: the kernel kills a PID namespace with its
// init.
func (p *proc) wait() exitInfo {
	var rep initReport
	err := p.reports.Decode(&rep)
	if err != nil || (!rep.Exited && rep.Signal == 0) {
		return exitInfo{signal: int(syscall.SIGKILL)}
	}
	return exitInfo{exited: rep.Exited, code: rep.Code, signal: rep.Signal}
}

// reap waits for the init to exit and closes rund's ends of its pipes.
func (p *proc) reap() {
	p.cmd.Wait()
	p.lifeline.Close()
	p.report.Close()
}

// forwardedSignals are passed on from the init to the command.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT}

// runInit is the body of "rund init", the PID 1 of a job. It returns the process exit code.
func runInit() int {
	if os.Getpid() != 1 || len(os.Args) != 3 {
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
	setupErr := setupNamespaces(os.Args[2])
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	cfgPipe, repPipe := initPipe(3, "config"), initPipe(4, "report")
	dec, enc := json.NewDecoder(cfgPipe), json.NewEncoder(repPipe)
	// The first use of a type builds encoding/json's reflection caches: done here, not in the Start
	// (start report sent 0.20 -> 0.08 ms after the command's exec, traced).
	json.Unmarshal([]byte(`{"argv":["x"],"env":["k=v"],"dir":"/","user":{"uid":1,"gid":1}}`), new(initConfig))
	json.Marshal(initReport{Pid: 1})
	var cfg initConfig
	if err := dec.Decode(&cfg); err != nil {
		return 1
	}
	pid, fail := startCommand(cfg, setupErr)
	if fail != nil {
		enc.Encode(fail)
		return 1
	}
	enc.Encode(initReport{Pid: pid})
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
	rep := initReport{Exited: ws.Exited(), Code: ws.ExitStatus()}
	if ws.Signaled() {
		rep = initReport{Signal: int(ws.Signal())}
	}
	enc.Encode(rep)
	return 0 // our exit makes the kernel SIGKILL whatever is left in the namespace
}

// initPipe wraps one of the init's pipes for the runtime's poller. os/exec hands them over blocking, and a
// blocking read holds a thread: polled, the init has one thread fewer, and starts none once the command
// runs (measured: lifecycle p50 8.18 -> 7.80 ms). If the fd cannot be polled (O_NONBLOCK or epoll_ctl
// failed), it is made blocking again, which works too.
func initPipe(fd int, name string) *os.File {
	unix.SetNonblock(fd, true)
	f := os.NewFile(uintptr(fd), name)
	if f.SetReadDeadline(time.Time{}) != nil { // os.ErrNoDeadline: not in the poller
		unix.SetNonblock(fd, false)
	}
	return f
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

// startCommand starts the command as PID 2 in the job's cgroup.
func startCommand(cfg initConfig, setupErr error) (int, *initReport) {
	if setupErr != nil {
		return 0, failure("setup", setupErr, "set up job namespaces: %v", setupErr)
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = syscall.ENOTDIR
		}
		return 0, failure("dir", err, "working directory %q: %v", cfg.Dir, errnoText(err))
	}
	path, err := lookPath(cfg.Argv[0], cfg.Dir, cfg.Env)
	switch {
	case errors.Is(err, syscall.ENOENT) && !strings.Contains(cfg.Argv[0], "/"):
		return 0, failure("path", err, "command %q not found in the job's PATH", cfg.Argv[0])
	case err != nil:
		return 0, failure("path", err, "command %q: %v", cfg.Argv[0], errnoText(err))
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, failure("setup", err, "open %s: %v", os.DevNull, err)
	}
	defer devnull.Close()
	sys := &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: 5}
	if u := cfg.User; u != nil {
		// no_new_privs (inherited by the command) keeps setuid binaries and file capabilities from
		// giving back what setuid to a non-zero uid takes away: every capability (capabilities(7)).
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return 0, failure("setup", err, "set no_new_privs: %v", err)
		}
		sys.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}
	}
	pid, err := syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: []uintptr{devnull.Fd(), 1, 2},
		Sys:   sys,
	})
	if err != nil {
		return 0, failure("exec", err, "exec %q: %v", cfg.Argv[0], errnoText(err))
	}
	return pid, nil
}

func failure(stage string, err error, format string, args ...any) *initReport {
	var errno syscall.Errno
	errors.As(err, &errno)
	return &initReport{Stage: stage, Errno: int(errno), Msg: fmt.Sprintf(format, args...)}
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
// spare's namespace can be a minute old, and must neither miss a new mount nor pin an unmounted one;
// mount_namespaces(7)), a /proc of the new PID namespace, loopback up, hostname = the job id.
func setupNamespaces(hostname string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	return loopbackUp()
}

// loopbackUp sets IFF_UP on "lo", the only interface of a new network namespace (netdevice(7)).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
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
	return unix.Access(p, unix.X_OK)
}

//go:build !rundinit

package main

// spawn.go is the server's side of a job's init (init.go is the init's side): it starts "rund init" as
// the PID 1 of the job's new PID, mount, network, UTS and IPC namespaces, cloned straight into
// <job>/init with clone3 + CLONE_INTO_CGROUP, sends it the command, and reads its reports. It starts
// no goroutine.

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initExe is the binary run as a job's init: the lean init in its sealed memfd once sealInit has made
// it, else this very binary, even if the file on disk was replaced. Tests point it at a lean init built
// without the race detector, whose exit alone takes a second.
var initExe = "/proc/self/exe"

// leanInit is the lean init's binary when make build carried it inside rund (initembed.go), else nil.
var leanInit []byte

// initMemfd is sealInit's memfd, which initExe names: held here, never closed, for as long as rund runs.
var initMemfd *os.File

// sealInit puts the lean init in a memfd, sealed so that nothing can change it once written
// (memfd_create(2), F_ADD_SEALS in fcntl(2)), and points initExe at it: every job's init runs the
// same pages, and links none of the server's packages nor runs their initialisers. The memfd stays
// open for as long as rund runs, close-on-exec: no init inherits it. With no lean init it does nothing.
func sealInit() error {
	if len(leanInit) == 0 {
		return nil
	}
	fd, err := unix.MemfdCreate("rund-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // MFD_EXEC is Linux 6.3's; before it, every memfd may be run
		fd, err = unix.MemfdCreate("rund-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return fmt.Errorf("memfd_create rund-init: %w", err)
	}
	// Above every fd that os/exec's child moves or dup2s before its execve (0-5, and as many above
	// them: syscall/exec_linux.go), which execve("/proc/self/fd/N") would otherwise find replaced.
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 64)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("fcntl F_DUPFD_CLOEXEC memfd:rund-init: %w", err)
	}
	f := os.NewFile(uintptr(high), "memfd:rund-init")
	_, err = f.Write(leanInit)
	if err == nil {
		seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
		_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("write and seal memfd:rund-init: %w", err)
	}
	initMemfd, initExe = f, fmt.Sprintf("/proc/self/fd/%d", high)
	return nil
}

// proc is a started init, as rund sees it.
type proc struct {
	cmd      *exec.Cmd
	lifeline *os.File      // write end of the config pipe: the Start, then orders; held open while the job runs
	reports  *bufio.Reader // the report pipe
	report   *os.File
}

// startInit starts a job's init into cg. The init sets up its namespaces and mounts as setup says and
// then waits on its config pipe for the command, which begin sends: so jobs can be prepared before
// their Start (sandbox, pool.go).
func startInit(cg *jobCgroup, setup initSetup, stdout, stderr *os.File) (*proc, error) {
	// All four are made before any error is checked: a failed one is nil, which closeAll leaves alone.
	initFD, err1 := os.Open(cg.initDir())
	jobFD, err2 := os.Open(cg.jobDir())
	cfgR, cfgW, err3 := os.Pipe()
	repR, repW, err4 := os.Pipe()
	defer closeAll([]*os.File{initFD, jobFD})
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		closeAll([]*os.File{cfgR, cfgW, repR, repW})
		return nil, err
	}

	flags := syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS |
		syscall.CLONE_NEWIPC
	if setup.HostNet {
		flags &^= syscall.CLONE_NEWNET // a grant (grants.go): the job is the host's network's, without a capability in it
	}
	cmd := &exec.Cmd{
		Path: initExe,
		Args: []string{"rund", "init"},
		// None of the server's environment. One P: the init has little to run, and each P costs page
		// faults at start-up (BENCHMARKS.md, "Where a Start's time goes"); a contained one takes a
		// second for its fork alone (init.go forkCommand). No collector: none may run while a contained init
		// forks the command under its filter (seccomp.go), and an init allocates little after its
		// start-up. The setup goes in the environment, not an argument: the job's processes may read
		// their init's /proc/1/cmdline, but its environ only with ptrace access to it (proc(5)), which
		// they have not.
		Env: []string{"GOMAXPROCS=1", "GOGC=off", "RUND_INIT=" + setup.encode()},
		// No Stdin: os/exec opens /dev/null for it, the init's fd 0, which its command inherits
		// (init.go forkCommand).
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{cfgR, repW, jobFD},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  uintptr(flags),
			UseCgroupFD: true,
			CgroupFD:    int(initFD.Fd()),
			// A session of its own, the job's too: not the terminal's or the service's process group, whose
			// SIGINT (a Ctrl-C of rund serve in the foreground) or SIGHUP would kill the init, which has no
			// handler for them (it takes orders, not signals: init.go obey), and with it the job at once;
			// and no controlling terminal for the job to open.
			Setsid: true,
		},
	}
	err := cmd.Start()
	closeAll([]*os.File{cfgR, repW}) // the init's ends: a report read sees EOF once the init is gone
	if err != nil {
		closeAll([]*os.File{cfgW, repR})
		return nil, fmt.Errorf("start job init: %w", err)
	}
	return &proc{cmd: cmd, lifeline: cfgW, reports: bufio.NewReader(repR), report: repR}, nil
}

// begin sends the init its command and waits for the start report. If the command did not start, the
// caller ends the init (sandbox.discard). errInitGone: the init was gone before the command was sent.
func (p *proc) begin(cfg initConfig) error {
	err := writeMessage(p.lifeline, cfg.encode())
	if errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %v", errInitGone, err)
	}
	if err != nil {
		return fmt.Errorf("send the job's command to its init: %w", err)
	}
	var rep startReport
	if err := readDecoded(p.reports, rep.decode); err != nil {
		return fmt.Errorf("job init did not start: %w", err)
	}
	if rep.Pid == 0 {
		return startFailure(rep)
	}
	return nil
}

// errInitGone is begin's error when the config pipe had no reader left: the init had exited (the
// kernel gives EPIPE only then, pipe(7)), so the command never reached it and cannot have run. The
// init alone holds the pipe's read end; its command does not inherit it (close_range, init.go).
var errInitGone = errors.New("the job's init is gone")

// signal has the init send sig (one of spec.go's forwardedSignals) to the command; os.ErrProcessDone
// once the init is gone.
func (p *proc) signal(sig syscall.Signal) error { return p.order(byte(sig)) }

// stop has the init send SIGTERM to every process of the job, and SIGKILL when called again.
func (p *proc) stop() error { return p.order(orderStop) }

// order writes one order to the init (initproto.go orderStop, init.go obey), which reads them as they
// come. A write waits at most orderWait, for an init that has stopped reading (stopped by the host's
// root, say) with the pipe full: escalate then goes on to kill it. EPIPE: the init is gone, and its read
// end with it; os.ErrClosed: reap has closed the pipe.
func (p *proc) order(o byte) error {
	p.lifeline.SetWriteDeadline(time.Now().Add(orderWait))
	_, err := p.lifeline.Write([]byte{o})
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
		return os.ErrProcessDone
	}
	if err != nil {
		return fmt.Errorf("order the job's init: %w", err)
	}
	return nil
}

// orderWait bounds a write of an order (proc.order).
const orderWait = time.Second

// kill ends the init at once; the kernel then SIGKILLs every process in its PID namespace.
func (p *proc) kill() { p.cmd.Process.Kill() }

// wait returns how the command ended, from the init's exit report. If the init died without one (it
// was SIGKILLed, e.g. by cgroup.kill), so did the command: the kernel kills a PID namespace with its
// init.
func (p *proc) wait() exitReport {
	var rep exitReport
	if err := readDecoded(p.reports, rep.decode); err != nil || (!rep.Exited && rep.Signal == 0) {
		return exitReport{Signal: int(syscall.SIGKILL)}
	}
	return rep
}

// reap waits for the init to exit and closes rund's ends of its pipes.
func (p *proc) reap() {
	p.cmd.Wait()
	p.lifeline.Close()
	p.report.Close()
}

// startFailure is the error for a start report without a pid: the client's error, of the kind the stage
// and errno say. A failure of the init's own setup is the server's: it has no kind, so the client
// hears only Internal and the log gets the message.
func startFailure(rep startReport) error {
	kind := cmp.Or(errnoKinds[syscall.Errno(rep.Errno)], errNotStarted)
	exit := 126 // the command cannot be run (sh(1), "Exit Status")
	switch {
	case rep.Stage == stageSetup:
		kind, exit = nil, 0
	case rep.Stage == stageDir:
		kind, exit = errInvalid, 0
	case rep.Errno == int(syscall.ENOENT):
		exit = 127
	}
	return &clientError{kind: kind, msg: rep.Msg, exit: exit}
}

// errnoKinds is the kind of a failed path lookup or exec of the command, by its errno; any other errno
// is errNotStarted.
var errnoKinds = map[syscall.Errno]error{
	syscall.ENOENT: errNotFound, syscall.EACCES: errDenied, syscall.EPERM: errDenied,
	syscall.ENOEXEC: errInvalid, syscall.E2BIG: errInvalid, syscall.EINVAL: errInvalid,
}

// closeAll closes every file of fs. A nil one is left alone: os.File's methods return ErrInvalid on a nil
// receiver.
func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

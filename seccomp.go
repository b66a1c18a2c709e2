package main

// seccomp.go is the job's syscall filter, a seccomp BPF program (seccomp(2); the kernel's
// Documentation/userspace-api/seccomp_filter.rst), and the supervisor that answers its clone3
// notifications (seccomp_unotify(2)).
//
// Where the filter goes: Go runs no code of ours between fork and exec, so the init installs the filter
// on its own forking thread (locked, no_new_privs set) before ForkExec, and the command inherits it
// from its first instruction: a filter is kept across fork, clone and execve (seccomp(2)).
//
// Why clone3 goes to user space: a filter sees the syscall's arguments only, and clone3's flags are
// behind a pointer (clone(2)), so no filter can tell a clone3 that makes a user namespace from one that
// does not. The job gets ENOSYS, as from Docker's default profile, and glibc (2.34 on) falls back to
// clone(2), whose flags the filter reads. Go uses clone3 only for CLONE_INTO_CGROUP and CLONE_NEWTIME
// (syscall/exec_linux.go), and does not fall back: a Go program in a job that asks for those fails.
// But the init's own ForkExec needs clone3 for CLONE_INTO_CGROUP, under the same filter. So the filter
// hands each clone3 to superviseClone3, which lets it continue when the caller is a thread of the
// init, and fails it with ENOSYS otherwise. (Kernels: the listener is Linux 5.0, letting a call
// continue 5.5; rund needs 5.7 for CLONE_INTO_CGROUP anyway. Only one filter of a thread may have a
// listener: under a container runtime that has one, installJobFilter fails with EBUSY.)
//
// Goroutines: the supervisor, started by the init before its ForkExec. It blocks in NOTIF_RECV for the
// life of the init and ends with the process (or at the listener's first error once it is closed; but
// closing it does not wake a RECV in progress, which holds its own reference to the file). No one
// waits for it. It needs no ready signal: a clone3 that comes before its first RECV waits in the
// filter's queue, and the go statement wakes an idle P to run it.
//
// The deadlocks forkExecFiltered is arranged around: while the kernel holds the init's clone3 for the
// supervisor, the forking thread keeps its P and cannot be preempted (runtime_BeforeFork enters no
// syscall), and the supervisor needs a P again to answer.
//   - With one P, there is none: GOMAXPROCS must be 2 or more, set explicitly (the runtime's own
//     GOMAXPROCS updater stops the world). The supervisor waits with unix.Syscall, not RawSyscall, so
//     that it holds no P while it waits.
//   - A garbage collection's stop-the-world, or its forEachP, waits for the forking thread, and the
//     supervisor cannot take a P back while it does: no collection may start, run or finish during
//     the ForkExec. Turning the collector off then is not enough (a start already past its trigger
//     check goes on): the init runs with GOGC=off from its start (spawn.go), or forkExecFiltered refuses.

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// action is what the filter does with one syscall.
type action int

const (
	deny       action = iota // EPERM
	denyNewNS                // EPERM if the flags (argument 0) ask for any new namespace (nsFlags)
	supervise                // SECCOMP_RET_USER_NOTIF: superviseClone3 decides
	denyFamily               // EPERM if the address family (argument 0) is one of refusedFamilies
)

// refusedFamilies are the address families whose sockets reach past the job's network namespace, which
// gives it only "lo": the filter refuses socket(2) for them, as Docker's default profile refuses
// AF_VSOCK. The rest either follow the network namespace or are refused outside the initial one by the
// kernel itself (Bluetooth, NFC, AppleTalk: "if (!net_eq(net, &init_net)) return -EAFNOSUPPORT").
var refusedFamilies = []uint32{
	// vsock ignores network namespaces: a job could reach the hypervisor's, or the VM host's, vsock
	// services (vsock(7)).
	unix.AF_VSOCK,
	// Qualcomm IPC Router: one global table of nodes and ports (net/qrtr), the SoC's modem and other
	// remote processors, whatever the namespace.
	unix.AF_QIPCRTR,
}

type syscallRule struct {
	name string
	nr   uintptr
	act  action
}

// jobRules is the filter; every syscall not named here is allowed. Docker's default profile is an
// allowlist, and gives a container without CAP_SYS_ADMIN EPERM for these too (it denies all namespace
// flags of clone and unshare, and ENOSYS for clone3). Ours is a denylist, which lets a job run what the
// host runs (a new syscall included). It differs from Docker in denying adjtimex and clock_adjtime
// (which only read the clock without CAP_SYS_TIME) and name_to_handle_at (of no use without
// open_by_handle_at), none of which a job needs.
//
// ptrace is allowed, as by Docker: with the command in a PID namespace of its own and under a uid of
// its own in a user namespace, ptrace_may_access (kernel/ptrace.c) keeps every process outside the
// job out of reach; and since Linux 4.8 the filter runs again after a tracer changes a syscall.
var jobRules = []syscallRule{
	// Keys: the kernel's keyrings are not namespaced (keyrings(7)); the job keeps no secrets there.
	{"keyctl", unix.SYS_KEYCTL, deny}, {"add_key", unix.SYS_ADD_KEY, deny},
	{"request_key", unix.SYS_REQUEST_KEY, deny},
	// New namespaces: the command is root in its own user namespace, so in a namespace it made it
	// would hold every capability, against the kernel's least-tested code (user_namespaces(7)): in a
	// network namespace, nf_tables, the way of several escalations to host root. clone3: see the top
	// of the file. setns: no namespace to join.
	{"unshare", unix.SYS_UNSHARE, denyNewNS}, {"clone", unix.SYS_CLONE, denyNewNS},
	{"clone3", unix.SYS_CLONE3, supervise}, {"setns", unix.SYS_SETNS, deny},
	// Mounts, old API and new (mount(2), fsopen(2)). umount(2), the one-argument call, exists on
	// none of our arches.
	{"mount", unix.SYS_MOUNT, deny}, {"umount2", unix.SYS_UMOUNT2, deny},
	{"pivot_root", unix.SYS_PIVOT_ROOT, deny}, {"move_mount", unix.SYS_MOVE_MOUNT, deny},
	{"open_tree", unix.SYS_OPEN_TREE, deny}, {"open_tree_attr", unix.SYS_OPEN_TREE_ATTR, deny},
	{"fsopen", unix.SYS_FSOPEN, deny}, {"fsmount", unix.SYS_FSMOUNT, deny},
	{"fsconfig", unix.SYS_FSCONFIG, deny}, {"fspick", unix.SYS_FSPICK, deny},
	{"mount_setattr", unix.SYS_MOUNT_SETATTR, deny},
	// Kernel attack surface: large interfaces with a history of privilege escalations.
	{"bpf", unix.SYS_BPF, deny}, {"perf_event_open", unix.SYS_PERF_EVENT_OPEN, deny},
	{"userfaultfd", unix.SYS_USERFAULTFD, deny}, {"io_uring_setup", unix.SYS_IO_URING_SETUP, deny},
	{"io_uring_enter", unix.SYS_IO_URING_ENTER, deny},
	{"io_uring_register", unix.SYS_IO_URING_REGISTER, deny},
	// The kernel itself: replacing it, or loading code into it.
	{"kexec_load", unix.SYS_KEXEC_LOAD, deny}, {"kexec_file_load", unix.SYS_KEXEC_FILE_LOAD, deny},
	{"init_module", unix.SYS_INIT_MODULE, deny}, {"finit_module", unix.SYS_FINIT_MODULE, deny},
	{"delete_module", unix.SYS_DELETE_MODULE, deny},
	// File handles name a file on a whole filesystem, past the job's mounts (open_by_handle_at(2)).
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, deny},
	{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT, deny},
	// Host administration.
	{"swapon", unix.SYS_SWAPON, deny}, {"swapoff", unix.SYS_SWAPOFF, deny},
	{"reboot", unix.SYS_REBOOT, deny}, {"syslog", unix.SYS_SYSLOG, deny}, {"acct", unix.SYS_ACCT, deny},
	{"quotactl", unix.SYS_QUOTACTL, deny}, {"quotactl_fd", unix.SYS_QUOTACTL_FD, deny},
	// Clocks: there is one clock for the whole host (time_namespaces(7) offsets only the monotonic
	// ones). 32-bit arm adds its y2038 calls in seccomp_arm.go.
	{"settimeofday", unix.SYS_SETTIMEOFDAY, deny}, {"clock_settime", unix.SYS_CLOCK_SETTIME, deny},
	{"clock_adjtime", unix.SYS_CLOCK_ADJTIME, deny}, {"adjtimex", unix.SYS_ADJTIMEX, deny},
	// Sockets that leave the network namespace (refusedFamilies).
	{"socket", unix.SYS_SOCKET, denyFamily},
}

// auditArch is the arch a native syscall reports in seccomp_data (linux/audit.h). Any other (i386 on
// amd64, 32-bit arm on arm64) numbers its syscalls differently and would slip past jobRules.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64,
	"arm": unix.AUDIT_ARCH_ARM, "riscv64": unix.AUDIT_ARCH_RISCV64}

// Offsets in struct seccomp_data (linux/seccomp.h). The low half of argument 0 is at offset 16 on a
// little-endian arch: all of ours.
const (
	dataNr, dataArch, dataArg0 = 0, 4, 16
	x32SyscallBit              = 0x40000000 // __X32_SYSCALL_BIT, arch/x86/include/uapi/asm/unistd.h
	// nsFlags are every CLONE_NEW* flag (linux/sched.h). CLONE_NEWTIME shares its bit with clone(2)'s
	// exit signal, which no valid signal number sets.
	nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWTIME
)

// jobFilter compiles jobRules for this GOARCH: the arch check, then one comparison per rule, then
// allow. The kernel's action cache (kernel/seccomp.c, seccomp_cache_prepare) finds that every syscall
// outside jobRules is allowed whatever its arguments, and skips the program for those.
func jobFilter() ([]unix.SockFilter, error) {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("build the job's seccomp filter: no audit arch for GOARCH %s", runtime.GOARCH)
	}
	kill, allow := ret(unix.SECCOMP_RET_KILL_PROCESS), ret(unix.SECCOMP_RET_ALLOW)
	eperm := ret(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	p := []unix.SockFilter{load(dataArch), jump(unix.BPF_JEQ, arch, 1, 0), kill, load(dataNr)}
	if runtime.GOARCH == "amd64" {
		// x32 syscalls come with the amd64 arch and this bit set in the number. Killed, like a foreign
		// arch: an x32 program could not even exit if each of its syscalls failed.
		p = append(p, jump(unix.BPF_JSET, x32SyscallBit, 0, 1), kill)
	}
	for _, r := range jobRules {
		switch nr := uint32(r.nr); r.act {
		case deny:
			p = append(p, jump(unix.BPF_JEQ, nr, 0, 1), eperm)
		case supervise:
			p = append(p, jump(unix.BPF_JEQ, nr, 0, 1), ret(unix.SECCOMP_RET_USER_NOTIF))
		case denyNewNS: // the accumulator then holds the flags, not nr: the match ends here either way
			p = append(p, jump(unix.BPF_JEQ, nr, 0, 4), load(dataArg0), jump(unix.BPF_JSET, nsFlags, 0, 1), eperm, allow)
		case denyFamily: // as denyNewNS: load, one test per family (to the eperm past allow), allow, eperm
			n := len(refusedFamilies)
			p = append(p, jump(unix.BPF_JEQ, nr, 0, uint8(n+3)), load(dataArg0))
			for i, f := range refusedFamilies {
				p = append(p, jump(unix.BPF_JEQ, f, uint8(n-i), 0))
			}
			p = append(p, allow, eperm)
		}
	}
	return append(p, allow), nil
}

func load(off uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
}

func jump(op uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

func ret(k uint32) unix.SockFilter { return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k} }

// installJobFilter installs the job's filter on the calling thread, which must be locked to its
// goroutine (runtime.LockOSThread) and have no_new_privs set, and returns the listener for clone3
// (close-on-exec, as seccomp(2) makes it) and the number of filters the thread had before (inherited: a
// service manager's, say). Only this thread and what it starts from now on are filtered: Go starts new
// threads of a process from a thread that is not locked (runtime newm).
func installJobFilter() (listener, inherited int, err error) {
	inherited, err = filterCount()
	if err != nil {
		return -1, 0, err
	}
	prog, err := jobFilter()
	if err != nil {
		return -1, 0, err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return -1, 0, fmt.Errorf("install the job's seccomp filter: %w", e)
	}
	return int(fd), inherited, nil
}

// filterCount is the calling thread's number of seccomp filters (proc(5): /proc/thread-self/status,
// "Seccomp_filters", Linux 5.9). A thread of the init has the ones it inherited, and the forking thread
// one more, the job's: the count tells them apart, where the seccomp mode (2 under any filter) would
// not under a service manager that filters rund itself. The caller must be locked to its thread.
func filterCount() (int, error) {
	data, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return 0, fmt.Errorf("count this thread's seccomp filters: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp_filters:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("count this thread's seccomp filters: no Seccomp_filters in /proc/thread-self/status")
}

// checkNotJobFiltered fails unless the calling thread, locked to its goroutine, has only the inherited
// filters, not the job's.
func checkNotJobFiltered(inherited int) error {
	n, err := filterCount()
	if err != nil {
		return err
	}
	if n != inherited {
		return fmt.Errorf("this thread has %d seccomp filters, the job's among them; want the %d inherited", n, inherited)
	}
	return nil
}

// seccompNotif is struct seccomp_notif, and seccompNotifResp struct seccomp_notif_resp
// (linux/seccomp.h).
type seccompNotif struct {
	ID         uint64
	Pid, Flags uint32
	Data       [64]byte // struct seccomp_data: the call is clone3 (the filter's only supervise rule)
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32 // a negated errno
	Flags uint32
}

// superviseClone3 answers the filter's clone3 notifications on listener, until the listener fails (see
// the top of the file for its lifetime). A clone3 of a thread of this process continues as if
// unfiltered; any other fails with ENOSYS.
func superviseClone3(listener int) {
	// Closed when it ends: a clone3 waiting for an answer then gets ENOSYS (seccomp_unotify(2)), and
	// the init's own fork fails rather than hangs.
	defer unix.Close(listener)
	for {
		var req seccompNotif // RECV wants it zeroed
		switch e := notifIoctl(listener, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); e {
		case 0:
		case unix.EINTR, unix.ENOENT: // ENOENT: the caller was killed before we read its clone3
			continue
		default:
			return
		}
		resp := seccompNotifResp{ID: req.ID, Error: -int32(unix.ENOSYS)}
		// The tid is first checked, then the notification found still pending: so its caller was alive
		// at the check, and the tid was not yet free for one of our threads to reuse
		// (seccomp_unotify(2), NOTIF_ID_VALID).
		if ownThread(req.Pid) && notifIoctl(listener, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&req.ID)) == 0 {
			resp = seccompNotifResp{ID: req.ID, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
		}
		notifIoctl(listener, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)) // ENOENT: caller gone
	}
}

// ownThread reports whether tid is a thread of this process. The kernel gives the tid in our PID
// namespace, and /proc must be that namespace's (the init mounts it); with any other /proc, or a tid
// of 0 (a caller outside our namespace), the answer is no, and the clone3 fails.
func ownThread(tid uint32) bool {
	return tid != 0 && unix.Access("/proc/self/task/"+strconv.FormatUint(uint64(tid), 10), unix.F_OK) == nil
}

// forkExecFiltered is syscall.ForkExec from the goroutine that installed the job's filter, refused
// unless clear of the deadlocks at the top of the file (two Ps or more, and the collector off: GOGC=off,
// spawn.go, so that no collection can be on its way) and unless the calling thread has the job's filter
// on top of the inherited ones: what it forks inherits its filters, and an unfiltered command must
// never start.
func forkExecFiltered(path string, argv []string, attr *syscall.ProcAttr, inherited int) (pid int, err error) {
	procs := runtime.GOMAXPROCS(0)
	// SetGCPercent is the only way to read GOGC, and it sets it too: to -1 (off), which it already is.
	gc := debug.SetGCPercent(-1)
	if procs < 2 || gc >= 0 {
		return 0, fmt.Errorf("fork %s under the job's seccomp filter: GOMAXPROCS %d and GOGC %d, want 2 or more and off",
			path, procs, gc)
	}
	n, err := filterCount()
	if err != nil {
		return 0, err
	}
	if n != inherited+1 {
		return 0, fmt.Errorf("fork %s under the job's seccomp filter: this thread has %d filters, want %d",
			path, n, inherited+1)
	}
	return syscall.ForkExec(path, argv, attr)
}

func notifIoctl(fd int, req uint, arg unsafe.Pointer) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	return e
}

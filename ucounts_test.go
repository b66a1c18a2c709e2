package main

// ucounts_test.go: a contained job's per-user kernel counts are charged to its own uid, never to host
// root (issue 22): the job's user namespace is owned by the job's uid (creds.go becomeJobOwner).

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mqAttr is struct mq_attr (mq_open(2)): longs, Go's int on Linux.
type mqAttr struct {
	flags, maxmsg, msgsize, curmsgs int
	_                               [4]int
}

// openMqueue creates a POSIX message queue of 10 messages of 8 KiB (the defaults' maximum), about 80 KiB
// of the creator's RLIMIT_MSGQUEUE.
func openMqueue(name string) (int, error) {
	p, err := unix.BytePtrFromString(name) // the kernel's name has no leading slash (mq_overview(7))
	if err != nil {
		return -1, err
	}
	attr := mqAttr{maxmsg: 10, msgsize: 8192}
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC,
		0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// holdQuotas (probe "hold-quotas") takes as many inotify instances and message queues as the kernel
// lets this process have, prints how many and "held", and holds them until it is killed.
func holdQuotas() {
	inotify := 0
	for ; ; inotify++ {
		if _, err := unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
			fmt.Printf("inotify-stop=%v\n", err)
			break
		}
	}
	queues := 0
	for ; ; queues++ {
		if _, err := openMqueue(fmt.Sprintf("rund-test-%d", queues)); err != nil {
			fmt.Printf("mqueue-stop=%v\n", err)
			break
		}
	}
	fmt.Printf("inotify=%d\nmqueues=%d\nheld\n", inotify, queues)
	time.Sleep(time.Hour)
}

// rootTakesQuotas takes one inotify instance and one message queue as this process, root, and gives
// them back.
func rootTakesQuotas() (inotifyErr, mqErr error) {
	fd, inotifyErr := unix.InotifyInit1(unix.IN_CLOEXEC)
	if inotifyErr == nil {
		unix.Close(fd)
	}
	name := fmt.Sprintf("rund-test-root-%d", os.Getpid())
	fd, mqErr = openMqueue(name)
	if mqErr == nil {
		unix.Close(fd)
		p, _ := unix.BytePtrFromString(name)
		unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0)
	}
	return inotifyErr, mqErr
}

// TestContainUcounts: a job that holds every inotify instance and message queue byte its uid may have
// leaves host root able to take one of each, and a second job able to take as many as the first.
// Before the fix the job's namespace was host root's, its counts host root's: root's next
// inotify_init failed with EMFILE and a second job got what the first had left.
func TestContainUcounts(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	data, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	maxInotify, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	held := func() map[string][]string {
		id := startJob(t, a, selfCmd(t, "hold-quotas"))
		t.Cleanup(func() { stopJob(t, a, id) })
		out, _ := outputUntil(t, a, id, "held\n")
		return facts(out)
	}
	first := held()
	if got := first["inotify"]; len(got) != 1 || got[0] != strconv.Itoa(maxInotify) {
		t.Errorf("the first job took %v inotify instances, want fs.inotify.max_user_instances %d (%v)",
			got, maxInotify, first["inotify-stop"])
	}
	if inotifyErr, mqErr := rootTakesQuotas(); inotifyErr != nil || mqErr != nil {
		t.Errorf("host root while a job holds all of its own: inotify_init %v, mq_open %v", inotifyErr, mqErr)
	}
	second := held()
	for _, k := range []string{"inotify", "mqueues"} {
		if fmt.Sprint(second[k]) != fmt.Sprint(first[k]) || first[k][0] == "0" {
			t.Errorf("%s: the first job took %v, the second %v; want the same, more than 0", k, first[k], second[k])
		}
	}
}

// TestContainProcessBound: a job whose Start sets no max_pids is held at -job_max_pids, here by
// RLIMIT_NPROC of its own uid (this host's cgroup2 has no pids controller; the VM suite's esc-nproc
// proves pids.max), and its Stop leaves no process of its uid. Before, nothing bounded it.
func TestContainProcessBound(t *testing.T) {
	const bound = 32
	ts := startServer(t, func(c *serveConfig) { c.defaultPids = bound })
	if ts.cg.available["pids"] {
		t.Skip("the pids controller is here: pids.max holds the default (TestLimits*)")
	}
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd(testExe, "e2e-tool", "forkbomb", "200", "60s"))
	uid := jobUID(t, ts, id)
	out, errs := outputUntil(t, a, id, "forkbomb ")
	line := out[strings.Index(out, "forkbomb "):]
	f := toolFigures(line[:strings.IndexByte(line, '\n')+1])
	if f["forked"]+f["threads"] > bound || f["failed"] == 0 || f["forked"] == 0 {
		t.Errorf("a fork bomb with -job_max_pids %d: %s (stderr %q); want at most %d tasks, and forks refused",
			bound, line, errs, bound)
	}
	if st := stopJob(t, a, id); st.State.String() != "STATE_STOPPED" {
		t.Errorf("stop: %v", st)
	}
	if left := uidProcs(uid); len(left) > 0 {
		t.Errorf("processes of the job's uid %d left after its Stop: %v", uid, left)
	}
}

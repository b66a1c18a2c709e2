package main

// contain_test.go: a contained job (issue 15) tries each way out it is known to have, and the test
// looks from the host for any trace of it. Each escape is a shell command that must fail inside the
// job (escapeScript prints "refused NAME" or "ESCAPED NAME"); the effect is then checked where it
// would show: the host's processes, cgroups, mounts and files. No test depends on the errno a refusal
// comes with (a seccomp filter may change it).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"rund/rpcpb"
)

// escape is one way out that a contained job tries: a shell command that must fail inside the job.
type escape struct {
	name  string
	sh    string
	needs string // a command the attempt runs, besides coreutils and mount: skipped if missing
}

// escapeScript runs each escape in turn and prints "refused NAME" or "ESCAPED NAME" for it; what the
// commands themselves print goes to stderr.
func escapeScript(es []escape) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "if { %s; } >&2; then echo %s; else echo %s; fi\n", e.sh, shellQuote("ESCAPED "+e.name), shellQuote("refused "+e.name))
	}
	return b.String()
}

// refusedAll is what escapeScript prints when every escape fails.
func refusedAll(es []escape) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "refused %s\n", e.name)
	}
	return b.String()
}

// runnable drops the escapes whose command the job's PATH lacks, saying so.
func runnable(t testing.TB, es []escape) []escape {
	var keep []escape
	for _, e := range es {
		if e.needs != "" && !onJobPath(e.needs) {
			t.Logf("skipping escape %q: %s is not on the job's PATH (%s)", e.name, e.needs, defaultPath)
			continue
		}
		keep = append(keep, e)
	}
	return keep
}

// onJobPath reports whether name is an executable file in a directory of a job's default PATH.
func onJobPath(name string) bool {
	for _, dir := range filepath.SplitList(defaultPath) {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// cgroupEscapes reach for cgroups other than the job's own: the cgroup2 root and the server's parent as
// the job would name them, another job's cgroup.kill, and writes to its own cgroup (read-only to it).
// Its own cgroup is named from /proc/self/cgroup, so that a job that were not contained would still
// write only there (never to the host's root cgroup), and a write to a cgroup a job could reach
// some other way writes back the value already there: the marker tells an escape, not the damage.
func cgroupEscapes(ts *testServer, victim, releaseAgent string) []escape {
	mount, parentRel := ts.cg.mount, strings.TrimPrefix(ts.cg.parent, ts.cg.mount)
	own := mount + `"$(sed -n 's/^0:://p' /proc/self/cgroup)"`
	es := []escape{
		{name: "move into the cgroup2 root", sh: "echo $$ > " + mount + "/cgroup.procs"},
		{name: "move into the server's parent cgroup", sh: "echo $$ > " + mount + parentRel + "/cgroup.procs"},
		{name: "kill another job", sh: "echo 1 > " + mount + parentRel + "/" + victim + "/job/cgroup.kill"},
		{name: "write own cgroup.max.descendants", sh: "echo 0 > " + own + "/cgroup.max.descendants"},
		{name: "write own cgroup.subtree_control", sh: "printf '' > " + own + "/cgroup.subtree_control"},
		{name: "make a child cgroup", sh: "mkdir " + own + "/escape"},
		{name: "cgroup2 mounted afresh", needs: "unshare",
			sh: `unshare -m sh -c 'mount -t cgroup2 none /mnt && v=$(cat /mnt/cgroup.max.descendants) && echo $v > /mnt/cgroup.max.descendants'`},
		{name: "cgroup v1 mounted afresh", needs: "unshare",
			sh: `unshare -UrmC sh -c 'mount -t cgroup -o memory none /mnt && v=$(cat /mnt/release_agent) && echo "$v" > /mnt/release_agent'`},
	}
	if releaseAgent != "" {
		es = append(es, escape{name: "write the v1 release_agent",
			sh: "echo " + shellQuote(strings.TrimSuffix(hostFile(releaseAgent), "\n")) + " > " + releaseAgent})
	}
	return es
}

// keyEscapes read the server's TLS key.
func keyEscapes(key string) []escape {
	return []escape{
		{name: "cat the server key", sh: "cat " + key},
		{name: "read the server key with head", sh: "head -c 4096 " + key},
	}
}

// procEscapes reach through /proc for the host's processes and another job's: hostPID is a process
// of the host (or another job) that the job must not see.
func procEscapes(hostPID int) []escape {
	p := strconv.Itoa(hostPID)
	return []escape{
		{name: "umount /proc", sh: "umount /proc"},
		{name: "lazy umount /proc", sh: "umount -l /proc"},
		{name: "umount /proc in a new mount namespace", needs: "unshare", sh: "unshare -m umount -l /proc"},
		{name: "see a host pid", sh: "test -e /proc/" + p},
		{name: "read another job's stdout", sh: "cat /proc/" + p + "/fd/1"},
		{name: "list the init's fds", sh: "ls /proc/1/fd"},
		{name: "enter the init's root", sh: "ls /proc/1/root/"},
		{name: "read the init's environment", sh: "cat /proc/1/environ"},
	}
}

// mountEscapes change mounts: the job's (whose changes a slave mount could pass back) or the host's.
// dir is a host directory to bind on; sb is a tmpfs of the test's own, whose superblock the host
// shares with the job: a remount of it, unlike one of the job's own mount, would show on the host.
// (Not "/" itself: a regression would leave the host's root file system read-only.)
func mountEscapes(ts *testServer, dir, sb string) []escape {
	return []escape{
		{name: "remount / read-write", sh: "mount -o remount,rw /"},
		{name: "remount / read-only", sh: "mount -o remount,bind,ro /"},
		{name: "remount a host file system read-only", sh: "mount -o remount,ro " + sb},
		{name: "bind / on /mnt", sh: "mount --bind / /mnt"},
		{name: "bind / on a directory", sh: "mount --bind / " + dir},
		{name: "tmpfs on /mnt", sh: "mount -t tmpfs none /mnt"},
		{name: "uncover the host /tmp", sh: "umount /tmp"},
		{name: "uncover the cgroup2 mount", sh: "umount -l " + ts.cg.mount},
		{name: "remount / read-write in a new mount namespace", needs: "unshare", sh: "unshare -m mount -o remount,rw /"},
		{name: "remount a host file system read-only in a new mount namespace", needs: "unshare", sh: "unshare -m mount -o remount,ro " + sb},
		{name: "uncover the host /tmp in a new mount namespace", needs: "unshare", sh: "unshare -m umount /tmp"},
		{name: "uncover the cgroup2 mount in a new mount namespace", needs: "unshare",
			sh: "unshare -m sh -c 'umount -l " + ts.cg.mount + " && ls " + ts.cg.parent + "'"},
	}
}

// hostTmpfs mounts a small tmpfs of the test's own on the host, unmounted at cleanup. Called before
// startServer, so that the spare sandboxes' mount namespaces hold it too.
func hostTmpfs(t testing.TB) string {
	t.Helper()
	requireRoot(t)
	dir := filepath.Join(jobTempDir(t), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// nsEscapes join the init's namespaces (those the server made, owned by the host's user namespace) or
// act on them.
func nsEscapes() []escape {
	return []escape{
		{name: "enter the init's network namespace", needs: "nsenter", sh: "nsenter --net=/proc/1/ns/net true"},
		{name: "enter the init's mount namespace", needs: "nsenter", sh: "nsenter --mount=/proc/1/ns/mnt true"},
		{name: "enter all the init's namespaces", needs: "nsenter", sh: "nsenter -t 1 -a true"},
		{name: "set the hostname", needs: "hostname", sh: "hostname rund-escaped"},
		{name: "write kernel.hostname", sh: "echo rund-escaped > /proc/sys/kernel/hostname"},
		{name: "write kernel.core_pattern", // its own value: the marker tells an escape, not the damage
			sh: "echo " + shellQuote(strings.TrimSuffix(hostFile("/proc/sys/kernel/core_pattern"), "\n")) + " > /proc/sys/kernel/core_pattern"},
		{name: "take lo down", needs: "ip", sh: "ip link set lo down"},
		// The job's own namespaces, of which it would be root (seccomp.go jobRules).
		{name: "make a user namespace", needs: "unshare", sh: "unshare -U true"},
		{name: "make a network namespace", needs: "unshare", sh: "unshare -n true"},
		{name: "make a mount namespace", needs: "unshare", sh: "unshare -m true"},
		{name: "make a UTS namespace", needs: "unshare", sh: "unshare -u true"},
		{name: "make an IPC namespace", needs: "unshare", sh: "unshare -i true"},
		{name: "make a PID namespace", needs: "unshare", sh: "unshare -p -f true"},
		{name: "make a cgroup namespace", needs: "unshare", sh: "unshare -C true"},
	}
}

// writeEscapes write to the host's files: dir is world-writable, so only the read-only mount stops it.
func writeEscapes(dir string) []escape {
	return []escape{
		{name: "touch a file in a 0777 host directory", sh: "touch " + dir + "/f"},
		{name: "rebind read-write in a new mount namespace", needs: "unshare",
			sh: "unshare -m sh -c 'mount --bind " + dir + " /mnt && mount -o remount,bind,rw /mnt && touch /mnt/f'"},
	}
}

// hostFile is a host file's content, "" if it cannot be read.
func hostFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// v1ReleaseAgent is the release_agent of a cgroup v1 hierarchy of the host, "" without one.
func v1ReleaseAgent() string {
	matches, _ := filepath.Glob("/sys/fs/cgroup/*/release_agent")
	if len(matches) == 0 {
		return ""
	}
	return matches[0]
}

// hostState is what an escape would change on the host, by name.
func hostState(t testing.TB) map[string]string {
	t.Helper()
	s := map[string]string{}
	for _, f := range []string{"/proc/self/mountinfo", "/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern"} {
		s[f] = hostFile(f)
	}
	if ra := v1ReleaseAgent(); ra != "" {
		s[ra] = hostFile(ra)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		s["interfaces"] += fmt.Sprintf("%s %v\n", i.Name, i.Flags)
	}
	return s
}

func assertHostUnchanged(t testing.TB, before map[string]string) {
	t.Helper()
	after := hostState(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("the host's %s changed:\nbefore:\n%s\nafter:\n%s", k, v, after[k])
		}
	}
}

// outputUntil follows a job's log until its stdout holds marker, and returns both streams so far.
func outputUntil(t testing.TB, c rpcpb.JobControllerClient, id, marker string) (stdout, stderr string) {
	t.Helper()
	stream, err := c.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	var out, errs []byte
	for !bytes.Contains(out, []byte(marker)) {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("job %s ended its log before printing %q: %v\nstdout:\n%s\nstderr:\n%s", id, marker, err, out, errs)
		}
		out, errs = append(out, msg.Stdout...), append(errs, msg.Stderr...)
	}
	return string(out), string(errs)
}

func stopJob(t testing.TB, c rpcpb.JobControllerClient, id string) *rpcpb.JobStatus {
	t.Helper()
	st, err := c.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatalf("stop %s: %v", id, err)
	}
	return st
}

// statusIDs are the fields of a process's "Uid:" or "Gid:" line in /proc/<pid>/status (real,
// effective, saved, filesystem), as the host sees them; nil if the process is gone.
func statusIDs(pid int, key string) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.Fields(v)
		}
	}
	return nil
}

// jobUID is the host uid of a running job's command, which must be its only process.
func jobUID(t testing.TB, ts *testServer, id string) uint32 {
	t.Helper()
	pids := jobPIDs(t, ts.cg.parent, id)
	if len(pids) != 1 {
		t.Fatalf("job %s has processes %v, want one", id, pids)
	}
	ids := statusIDs(pids[0], "Uid")
	if len(ids) != 4 || ids[1] != ids[0] || ids[2] != ids[0] || ids[3] != ids[0] {
		t.Fatalf("job %s process %d: uids %v, want four equal ones", id, pids[0], ids)
	}
	uid, err := strconv.ParseUint(ids[0], 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(uid)
}

// uidProcs lists the host's processes that have uid as any of their uids.
func uidProcs(uid uint32) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if slices.Contains(statusIDs(pid, "Uid"), strconv.FormatUint(uint64(uid), 10)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertAbsent fails for each path that exists on the host.
func assertAbsent(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s on the host: %v, want it absent", p, err)
		}
	}
}

// privateTmpPaths are the host paths that a job's files named name in its /tmp, /var/tmp and /dev/shm
// would be, were these not its own; name is unique, and a path found there is removed at cleanup.
func privateTmpPaths(t testing.TB) (name string, paths []string) {
	name = fmt.Sprintf("rund-contain-%d-%s-%d", os.Getpid(), sanitize(t.Name()), time.Now().UnixNano())
	for _, d := range privateDirs {
		paths = append(paths, filepath.Join(d, name))
	}
	t.Cleanup(func() {
		for _, p := range paths {
			os.Remove(p)
		}
	})
	return name, paths
}

// TestContainIdentity: a contained job is root of a user namespace of its own, in which uid and gid 0
// are one host uid of the server's range, a different one for each job; the host sees that uid.
func TestContainIdentity(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	uids := ts.m.cfg.contain.uids
	script := "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; echo ready; exec sleep 1000"
	ids := []string{startJob(t, a, cmd("sh", "-c", script)), startJob(t, a, cmd("sh", "-c", script))}
	seen := map[uint32]string{}
	for _, id := range ids {
		out, errs := outputUntil(t, a, id, "ready\n")
		u := jobUID(t, ts, id)
		if u == 0 || u < uids.first || u-uids.first >= uids.count {
			t.Errorf("job %s runs as host uid %d, want one of %d+%d", id, u, uids.first, uids.count)
		}
		if other, ok := seen[u]; ok {
			t.Errorf("jobs %s and %s both run as host uid %d", other, id, u)
		}
		seen[u] = id
		pid := jobPIDs(t, ts.cg.parent, id)[0]
		if g := statusIDs(pid, "Gid"); !slices.Equal(g, slices.Repeat([]string{fmt.Sprint(u)}, 4)) {
			t.Errorf("job %s: host gids %v, want %d", id, g, u)
		}
		if g := statusIDs(pid, "Groups"); len(g) != 0 {
			t.Errorf("job %s: supplementary groups %v, want none", id, g)
		}
		want := fmt.Sprintf("0\n0\n%10d %10d %10d\n%10d %10d %10d\ndeny\nready\n", 0, u, 1, 0, u, 1)
		if out != want {
			t.Errorf("job %s printed %q (stderr %q), want %q", id, out, errs, want)
		}
	}
	for _, id := range ids {
		stopJob(t, a, id)
	}
}

// TestContainCgroup: a contained job's cgroup namespace is rooted at its own cgroup, which it cannot
// leave nor change, and no cgroup of another job or of the server can it name.
func TestContainCgroup(t *testing.T) {
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	before := hostState(t)
	victim := startJob(t, b, cmd("sleep", "1000"))
	victimPIDs := jobPIDs(t, ts.cg.parent, victim)
	es := runnable(t, cgroupEscapes(ts, victim, v1ReleaseAgent()))
	id := startJob(t, a, cmd("sh", "-c", "grep '^0::' /proc/self/cgroup\n"+escapeScript(es)+"echo done; exec sleep 1000"))
	out, errs := outputUntil(t, a, id, "done\n")
	if want := "0::/\n" + refusedAll(es) + "done\n"; out != want {
		t.Errorf("job printed\n%s\nwant\n%s\nstderr:\n%s", out, want, errs)
	}
	jobDir := filepath.Join(ts.cg.parent, id, "job")
	pids := jobPIDs(t, ts.cg.parent, id)
	if len(pids) != 1 {
		t.Fatalf("%s holds %v, want the job's one process", jobDir, pids)
	}
	rel := strings.TrimPrefix(jobDir, ts.cg.mount)
	if cg := hostFile(fmt.Sprintf("/proc/%d/cgroup", pids[0])); !strings.Contains(cg, "\n0::"+rel+"\n") && !strings.HasPrefix(cg, "0::"+rel+"\n") {
		t.Errorf("the host sees the job in cgroups\n%s\nwant 0::%s", cg, rel)
	}
	if got := hostFile(filepath.Join(jobDir, "cgroup.max.descendants")); got != "max\n" {
		t.Errorf("the job's cgroup.max.descendants reads %q, want max", got)
	}
	assertAbsent(t, filepath.Join(jobDir, "escape"))
	if st, err := b.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: victim}); err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
		t.Errorf("the other client's job: %v %v, want it running", st, err)
	}
	if got := jobPIDs(t, ts.cg.parent, victim); !slices.Equal(got, victimPIDs) {
		t.Errorf("the other client's job holds %v, had %v", got, victimPIDs)
	}
	assertHostUnchanged(t, before)
	stopJob(t, a, id)
	stopJob(t, b, victim)
}

// TestContainServerKey: the server's TLS key, readable by root only, is not the job's to read, though
// every directory above it is open.
func TestContainServerKey(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	key := ts.pki.file("server.key")
	for _, dir := range []string{filepath.Dir(key), filepath.Dir(filepath.Dir(key))} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key: %v %v, want mode 0600", fi.Mode(), err)
	}
	es := keyEscapes(key)
	id := startJob(t, a, cmd("sh", "-c", escapeScript(es)))
	out, errs := readAll(t, a, id)
	if out != refusedAll(es) {
		t.Errorf("job printed\n%s\nwant\n%s\nstderr:\n%s", out, refusedAll(es), errs)
	}
	data, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.Contains(out+errs, line) {
			t.Errorf("the job's output holds the key's line %q", line)
		}
	}
}

// TestContainProc: the job's /proc is its PID namespace's; it can neither unmount it to see the
// host's, nor reach another job's process or its own init through it.
func TestContainProc(t *testing.T) {
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	victim := startJob(t, b, cmd("sh", "-c", "echo secret; exec sleep 1000"))
	outputUntil(t, b, victim, "secret\n")
	vpids := jobPIDs(t, ts.cg.parent, victim)
	if len(vpids) != 1 {
		t.Fatalf("victim holds %v, want one process", vpids)
	}
	es := runnable(t, append(procEscapes(vpids[0]), escape{name: "see the test's process", sh: fmt.Sprintf("test -e /proc/%d", os.Getpid())}))
	script := escapeScript(es) + `printf 'init=%s\n' "$(head -c 9 /proc/1/cmdline | tr '\0' ' ')"` + "\nexec " + testExe + " probe procs pid"
	id := startJob(t, a, cmd("sh", "-c", script))
	out, errs := readAll(t, a, id)
	prefix := refusedAll(es) + "init=rund init\n"
	rest, ok := strings.CutPrefix(out, prefix)
	if !ok {
		t.Fatalf("job printed\n%s\nwant it to begin\n%s\nstderr:\n%s", out, prefix, errs)
	}
	f := facts(rest)
	if len(f["pid"]) != 1 || !slices.Equal(f["procs"], []string{"1," + f["pid"][0]}) {
		t.Errorf("after the umounts /proc lists %v, want only the init and the probe (pid %v)", f["procs"], f["pid"])
	}
	stopJob(t, b, victim)
	if out, _ := readAll(t, b, victim); out != "secret\n" {
		t.Errorf("the other job's log holds %q, want its own output", out)
	}
}

// TestContainRemount: a contained job can change no mount, its own or the host's, and a new mount
// namespace of its own does not unlock them.
func TestContainRemount(t *testing.T) {
	sb := hostTmpfs(t)
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	dir := filepath.Join(jobTempDir(t), "target")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	before := hostState(t)
	es := runnable(t, mountEscapes(ts, dir, sb))
	id := startJob(t, a, cmd("sh", "-c", escapeScript(es)))
	out, errs := readAll(t, a, id)
	if out != refusedAll(es) {
		t.Errorf("job printed\n%s\nwant\n%s\nstderr:\n%s", out, refusedAll(es), errs)
	}
	assertHostUnchanged(t, before)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("%s on the host holds %v (%v), want it empty", dir, entries, err)
	}
}

// TestContainNamespaces: the namespaces the server made for the job are owned by the host's user
// namespace; the job can neither join nor change them. Namespaces it makes itself may exist, and
// change nothing of the host's nor of the job's own.
func TestContainNamespaces(t *testing.T) {
	if !onJobPath("nsenter") && !onJobPath("unshare") {
		t.Skipf("neither nsenter nor unshare (util-linux) is on the job's PATH %s", defaultPath)
	}
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	before := hostState(t)
	es := runnable(t, nsEscapes())
	id := startJob(t, a, cmd("sh", "-c", escapeScript(es)+"cat /proc/sys/kernel/hostname"))
	out, errs := readAll(t, a, id)
	if want := refusedAll(es) + id + "\n"; out != want {
		t.Errorf("job printed\n%s\nwant\n%s\nstderr:\n%s", out, want, errs)
	}
	t.Logf("job stderr:\n%s", errs)
	assertHostUnchanged(t, before)
}

// TestContainPrivateTmp: /tmp, /var/tmp and /dev/shm of a contained job are its own, empty at its start
// and gone with it.
func TestContainPrivateTmp(t *testing.T) {
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	name, hostPaths := privateTmpPaths(t)
	dirs := privateDirs
	writer := startJob(t, a, cmd("sh", "-c", "for d in "+strings.Join(dirs, " ")+"; do echo $d > $d/"+name+" && cat $d/"+name+"; done; echo ready; exec sleep 1000"))
	if out, errs := outputUntil(t, a, writer, "ready\n"); out != "/tmp\n/var/tmp\n/dev/shm\nready\n" {
		t.Fatalf("writer printed %q (stderr %q), want each directory written and read back", out, errs)
	}
	assertAbsent(t, hostPaths...)
	// While the writer runs, another job sees none of its files, nor any other.
	list := "find " + strings.Join(dirs, " ") + " -mindepth 1 | head -n 20" // a host's /tmp would be long
	if out, errs := readAll(t, b, startJob(t, b, cmd("sh", "-c", list))); out != "" || errs != "" {
		t.Errorf("a second job finds %q (stderr %q), want empty directories", out, errs)
	}
	stopJob(t, a, writer)
	assertAbsent(t, hostPaths...)
	if out, errs := readAll(t, a, startJob(t, a, cmd("sh", "-c", list))); out != "" || errs != "" {
		t.Errorf("after the writer, a new job finds %q (stderr %q), want empty directories", out, errs)
	}
}

// TestContainHostReadOnly: every host mount is read-only to a contained job, even where the directory's
// mode would let any user write.
func TestContainHostReadOnly(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	dir := filepath.Join(jobTempDir(t), "open")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	es := runnable(t, writeEscapes(dir))
	id := startJob(t, a, cmd("sh", "-c", escapeScript(es)))
	out, errs := readAll(t, a, id)
	if out != refusedAll(es) || !strings.Contains(errs, "Read-only file system") {
		t.Errorf("job printed\n%s\nstderr:\n%s\nwant\n%s\nand a read-only file system", out, errs, refusedAll(es))
	}
	assertAbsent(t, filepath.Join(dir, "f"))
}

// TestContainPathOracle: the working directory and the command are checked as the job's own user, so a
// Start's refusal tells nothing of what lies in a directory the job cannot read; as host root (not
// contained), it told a file from a missing one.
func TestContainPathOracle(t *testing.T) {
	requireRoot(t)
	secret := filepath.Join(jobTempDir(t), "secret")
	if err := os.Mkdir(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	file, missing := filepath.Join(secret, "f"), filepath.Join(secret, "missing")
	if err := os.WriteFile(file, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// startErr is a Start's refusal, its path named the same whatever it was.
	startErr := func(t *testing.T, c rpcpb.JobControllerClient, req *rpcpb.JobStartRequest) string {
		t.Helper()
		_, err := c.Start(ctx(t), req)
		if err == nil {
			t.Errorf("start %q in %q: started, want a refusal", req.Name, req.Dir)
			return ""
		}
		s := status.Convert(err)
		return s.Code().String() + ": " + strings.NewReplacer(file, "PATH", missing, "PATH").Replace(s.Message())
	}
	t.Run("contained", func(t *testing.T) {
		ts := startServer(t)
		a := ts.dialAs(t, "a")
		inFile := startErr(t, a, &rpcpb.JobStartRequest{Name: "true", Dir: file})
		inMissing := startErr(t, a, &rpcpb.JobStartRequest{Name: "true", Dir: missing})
		if inFile != inMissing || !strings.Contains(inFile, "permission denied") {
			t.Errorf("working directory: a file gives %q, a missing one %q; want the same permission denied", inFile, inMissing)
		}
		runFile, runMissing := startErr(t, a, cmd(file)), startErr(t, a, cmd(missing))
		onPath := startErr(t, a, &rpcpb.JobStartRequest{Name: "f", Env: []string{"PATH=" + secret}})
		want := codes.PermissionDenied.String() + `: command "PATH": permission denied`
		if runFile != want || runMissing != want {
			t.Errorf("command: a file gives %q, a missing one %q; want %q", runFile, runMissing, want)
		}
		if !strings.HasPrefix(onPath, codes.PermissionDenied.String()+":") {
			t.Errorf("command on PATH %s: %q, want PermissionDenied", secret, onPath)
		}
	})
	t.Run("uncontained", func(t *testing.T) {
		ts := startServer(t, uncontained)
		a := ts.dialAs(t, "a")
		inFile := startErr(t, a, &rpcpb.JobStartRequest{Name: "true", Dir: file})
		inMissing := startErr(t, a, &rpcpb.JobStartRequest{Name: "true", Dir: missing})
		if !strings.Contains(inFile, "not a directory") || !strings.Contains(inMissing, "no such file") {
			t.Errorf("working directory as host root: a file gives %q, a missing one %q; want them told apart", inFile, inMissing)
		}
		if st := waitDone(t, a, startJob(t, a, cmd(file))); st.GetExitCode().GetValue() != 0 {
			t.Errorf("command %s as host root: %v, want exit 0", file, st)
		}
	})
}

// TestContainStopBounded: an uncontained job (host root) that moves itself and its init out of its
// cgroups, ignoring SIGTERM, still ends by Stop, within bounded time: the init's death takes its PID
// namespace with it.
func TestContainStopBounded(t *testing.T) {
	ts := startServer(t, uncontained)
	a := ts.dialAs(t, "a")
	escapeDir := filepath.Join(ts.cg.parent, "escape-1")
	t.Cleanup(func() { // before the server's cleanup, which wants the parent empty
		if _, err := os.Stat(escapeDir); err != nil {
			return
		}
		kill(escapeDir)
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := waitEmpty(c, escapeDir); err != nil {
			t.Errorf("escape cgroup: %v", err)
		}
		if err := rmdirRetry(escapeDir); err != nil {
			t.Error(err)
		}
	})
	script := fmt.Sprintf("mkdir %[1]s && echo $$ > %[1]s/cgroup.procs && echo 1 > %[1]s/cgroup.procs && trap '' TERM && echo ready && exec sleep 1000", escapeDir)
	req := cmd("sh", "-c", script)
	req.StopGracePeriod = durationpb.New(time.Second)
	id := startJob(t, a, req)
	outputUntil(t, a, id, "ready\n")
	escaped := strings.Fields(hostFile(filepath.Join(escapeDir, "cgroup.procs")))
	if len(escaped) != 2 || len(jobPIDs(t, ts.cg.parent, id)) != 0 {
		t.Fatalf("the escape cgroup holds %v and the job's %v; want the init and the command moved out", escaped, jobPIDs(t, ts.cg.parent, id))
	}
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	st, err := a.Stop(c, &rpcpb.JobIdentifier{Ulid: id})
	took := time.Since(begin)
	if err != nil {
		t.Fatalf("Stop of a job outside its cgroups: %v after %v", err, took)
	}
	if st.State != rpcpb.JobStatus_STATE_STOPPED || !st.Killed || st.GetSignal().GetValue() != uint32(syscall.SIGKILL) {
		t.Errorf("final status %v, want stopped by SIGKILL", st)
	}
	if took < time.Second {
		t.Errorf("Stop returned after %v, within the 1 s grace period of a job that ignores SIGTERM", took)
	}
	wc, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := waitEmpty(wc, escapeDir); err != nil {
		t.Errorf("the escape cgroup after Stop: %v (holds %q)", err, hostFile(filepath.Join(escapeDir, "cgroup.procs")))
	}
}

// TestContainEscapesInARow: one contained job tries every escape above, one after another; none
// leaves a trace on the host, and Stop leaves neither a cgroup nor a process of the job's uid.
func TestContainEscapesInARow(t *testing.T) {
	sb := hostTmpfs(t)
	ts := startServer(t)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	key := ts.pki.file("server.key")
	for _, dir := range []string{filepath.Dir(key), filepath.Dir(filepath.Dir(key))} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tmp := jobTempDir(t)
	open, target := filepath.Join(tmp, "open"), filepath.Join(tmp, "target")
	for _, d := range []string{open, target} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	victim := startJob(t, b, cmd("sh", "-c", "echo secret; exec sleep 1000"))
	outputUntil(t, b, victim, "secret\n")
	vpids := jobPIDs(t, ts.cg.parent, victim)
	before := hostState(t)
	name, hostPaths := privateTmpPaths(t)

	var es []escape
	for _, group := range [][]escape{cgroupEscapes(ts, victim, v1ReleaseAgent()), keyEscapes(key), procEscapes(vpids[0]),
		mountEscapes(ts, target, sb), nsEscapes(), writeEscapes(open)} {
		es = append(es, group...)
	}
	es = runnable(t, es)
	script := escapeScript(es) + "for d in /tmp /var/tmp /dev/shm; do echo x > $d/" + name + "; done\necho done; exec sleep 1000"
	id := startJob(t, a, cmd("sh", "-c", script))
	out, errs := outputUntil(t, a, id, "done\n")
	if want := refusedAll(es) + "done\n"; out != want {
		t.Errorf("job printed\n%s\nwant\n%s\nstderr:\n%s", out, want, errs)
	}
	keyData, _ := os.ReadFile(key)
	for _, line := range strings.Split(strings.TrimSpace(string(keyData)), "\n") {
		if strings.Contains(out+errs, line) {
			t.Errorf("the job's output holds the server key's line %q", line)
		}
	}
	u := jobUID(t, ts, id)
	if got := uidProcs(u); len(got) != 1 {
		t.Errorf("processes of uid %d before Stop: %v, want the job's one", u, got)
	}
	if st, err := b.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: victim}); err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
		t.Errorf("the other client's job: %v %v, want it running", st, err)
	}
	stopJob(t, a, id)
	stopJob(t, b, victim)
	if out, _ := readAll(t, b, victim); out != "secret\n" {
		t.Errorf("the other job's log holds %q, want its own output", out)
	}
	assertNoJobCgroups(t, ts.cg.parent, ts.m)
	if got := uidProcs(u); len(got) != 0 {
		t.Errorf("processes of the job's uid %d outlived it: %v", u, got)
	}
	assertHostUnchanged(t, before)
	assertAbsent(t, append(hostPaths, filepath.Join(open, "f"))...)
	if entries, err := os.ReadDir(target); err != nil || len(entries) != 0 {
		t.Errorf("%s on the host holds %v (%v), want it empty", target, entries, err)
	}
}

// TestContainOrdinaryPrograms: what jobs are for still runs contained: a shell, coreutils, a Go
// binary, and python3 and make where the host has them.
func TestContainOrdinaryPrograms(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	file := filepath.Join(jobTempDir(t), "hello")
	if err := os.WriteFile(file, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type program struct {
		name  string
		req   *rpcpb.JobStartRequest
		match func(out string) bool
	}
	cases := []program{
		{"sh", cmd("sh", "-c", "echo $((6 * 7))"), func(o string) bool { return o == "42\n" }},
		{"ls", cmd("ls", "-d", "/etc"), func(o string) bool { return o == "/etc\n" }},
		{"cat", cmd("cat", file), func(o string) bool { return o == "hello\n" }},
		{"private tmp", cmd("sh", "-c", "echo tmp > /tmp/x && cat /tmp/x"), func(o string) bool { return o == "tmp\n" }},
		{"go binary", selfCmd(t, "pid"), func(o string) bool { return strings.HasPrefix(o, "pid=") && strings.HasSuffix(o, "\nppid=1\n") }},
	}
	for _, p := range []program{
		{"python3", cmd("python3", "-c", "print(1)"), func(o string) bool { return o == "1\n" }},
		{"make", cmd("make", "--version"), func(o string) bool { return strings.HasPrefix(o, "GNU Make ") }},
	} {
		if onJobPath(p.req.Name) {
			cases = append(cases, p)
		} else {
			t.Logf("%s is not on the job's PATH: not tried", p.req.Name)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := startJob(t, a, tc.req)
			out, errs := readAll(t, a, id)
			st := waitDone(t, a, id)
			if st.State != rpcpb.JobStatus_STATE_EXITED || st.GetExitCode().GetValue() != 0 || !tc.match(out) {
				t.Errorf("%v %v: %v, stdout %q, stderr %q", tc.req.Name, tc.req.Args, st, out, errs)
			}
		})
	}
}

// TestContainSeccomp: inside a real contained job every syscall the filter names is refused (EPERM;
// clone3 ENOSYS), the init's own clone3 having gone through, and the filter is in force in the
// command from its start; an uncontained job has no filter.
func TestContainSeccomp(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	out, errs := readAll(t, a, startJob(t, a, selfCmd(t, "syscalls")))
	got := syscallResults(out)
	for _, r := range jobRules {
		want := "EPERM"
		if r.act == supervise {
			want = "ENOSYS"
		}
		if got[r.name] != want {
			t.Errorf("%s in a contained job: %q, want %s (stderr %q)", r.name, got[r.name], want, errs)
		}
	}
	if got["os-exec"] != "ok" || got["unshare-plain"] != "ok" {
		t.Errorf("a contained job could not fork (%q) or unshare without CLONE_NEWUSER (%q)", got["os-exec"], got["unshare-plain"])
	}
	if out, _ := readAll(t, a, startJob(t, a, cmd("grep", "^Seccomp:", "/proc/self/status"))); out != "Seccomp:\t2\n" {
		t.Errorf("contained job's /proc/self/status says %q, want filter mode 2", out)
	}
}

// TestContainSeccompUncontained: -unsafe_uncontained_jobs means no filter. (A test of its own: a
// server's goroutine and fd checks would count another running server's spares.)
func TestContainSeccompUncontained(t *testing.T) {
	ts := startServer(t, uncontained)
	c := ts.dialAs(t, "a")
	if out, _ := readAll(t, c, startJob(t, c, cmd("grep", "^Seccomp:", "/proc/self/status"))); out != "Seccomp:\t0\n" {
		t.Errorf("uncontained job's /proc/self/status says %q, want no filter", out)
	}
}

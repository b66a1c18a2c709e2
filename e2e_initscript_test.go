package main

// e2e_initscript_test.go is the VM suite's proof of contrib/rund.init, the init script for hosts
// without systemd, which TestVM puts in the guest as /etc/init.d/rund (with /usr/local/bin/rund). It
// runs after the suite's own server has stopped, as a busybox init's boot would: from the root cgroup,
// with cgroup2 unmounted, /etc/default/rund naming another address and a flag, certificates in
// /etc/rund, and rund's default -cgroup.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

const (
	e2eInitScript  = "/etc/init.d/rund"
	e2eInitAddr    = "127.0.0.1:8001" // RUND_ADDR in /etc/default/rund: not the suite server's e2eAddr
	e2eInitPids    = 77               // -job_max_pids in RUND_FLAGS
	e2eInitCgroup  = "/sys/fs/cgroup"
	e2eInitParent  = e2eInitCgroup + "/rund" // rund's default -cgroup
	e2eInitLog     = "/var/log/rund.log"
	e2eInitPidFile = "/var/run/rund.pid"
	e2eInitTLS2    = "/run/rund/tls2" // the PKI that reload puts in /etc/rund
)

// initRun is what the init-script checks share: the server's pid and the job left running for stop.
type initRun struct {
	pid     int
	sleepID string
	jobPids []int
}

// checkInitScript: start, a job with limits, reload, stop, restart, each through the script.
func (g *e2eGuest) checkInitScript() {
	if err := setupInitScript(); err != nil {
		g.report("initscript-start", false, "set up the guest for the script: %v", err)
		return
	}
	var r initRun
	if g.initStart(&r) {
		g.initLimits(&r)
		g.initReload(&r)
	}
	g.initStop(&r)
	g.initRestart()
}

// setupInitScript unmounts cgroup2, for the script to mount, and writes /etc/default/rund and
// /etc/rund from the suite's PKI.
func setupInitScript() error {
	if err := unmount(e2eInitCgroup); err != nil {
		return err
	}
	for _, dir := range []string{"/etc/rund", "/etc/default"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := copyPKI(e2eTLS); err != nil {
		return err
	}
	def := fmt.Sprintf("RUND_ADDR=%s\nRUND_FLAGS=\"-job_max_pids %d\"\n", e2eInitAddr, e2eInitPids)
	return os.WriteFile("/etc/default/rund", []byte(def), 0o644)
}

func unmount(path string) error {
	if out, err := runOut("umount", path); err != nil {
		return fmt.Errorf("umount %s: %v: %s", path, err, out)
	}
	return nil
}

// copyPKI puts dir's CA, server certificate and key where the script has rund read them.
func copyPKI(dir string) error {
	for _, f := range []string{"ca.crt", "server.crt", "server.key"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join("/etc/rund", f), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// initScript runs the script with verb and returns its output and exit code (-1: it did not run).
func initScript(verb string) (string, int) {
	out, err := exec.Command(e2eInitScript, verb).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return strings.TrimSpace(string(out)), 0
	case errors.As(err, &exit):
		return strings.TrimSpace(string(out)), exit.ExitCode()
	}
	return err.Error(), -1
}

// cgroup2Mounts lists the mount points of cgroup2 in /proc/mounts.
func cgroup2Mounts() []string {
	var at []string
	for _, line := range strings.Split(readString("/proc/mounts"), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			at = append(at, f[1])
		}
	}
	return at
}

// initPid is the pid in the script's pid file, 0 if there is none.
func initPid() int {
	n, _ := strconv.Atoi(strings.TrimSpace(readString(e2eInitPidFile)))
	return n
}

// initLogLines are the lines of the script's log that hold sub.
func initLogLines(sub string) []string { return grepLines(readString(e2eInitLog), sub) }

// initStart: with no cgroup2 mounted, start mounts it at /sys/fs/cgroup, enables the controllers and
// starts rund on RUND_ADDR with the default -cgroup; rund stays in the root cgroup, which cgroup v2's
// no-internal-process rule exempts; status says 0; a second start starts nothing.
func (g *e2eGuest) initStart(r *initRun) bool {
	before := cgroup2Mounts()
	out, code := initScript("start")
	r.pid = initPid()
	own := strings.TrimSpace(readString(fmt.Sprintf("/proc/%d/cgroup", r.pid)))
	ctrl := strings.Fields(readString(e2eInitCgroup + "/cgroup.subtree_control"))
	sout, scode := initScript("status")
	again, acode := initScript("start")
	serving := initLogLines("rund serving on " + e2eInitAddr + "; jobs in " + e2eInitParent + ";")
	ok := len(before) == 0 && slices.Equal(cgroup2Mounts(), []string{e2eInitCgroup}) && code == 0 && r.pid > 0 &&
		own == "0::/" && scode == 0 && strings.Contains(sout, strconv.Itoa(r.pid)) &&
		acode == 0 && strings.Contains(again, "already running") && len(serving) == 1
	for _, c := range []string{"cpu", "io", "memory", "pids"} {
		ok = ok && slices.Contains(ctrl, c)
	}
	g.report("initscript-start", ok, "cgroup2 mounts before %v, after %v; start: exit %d %q; pid file %d, in %q; "+
		"root subtree_control %v; status: exit %d %q; start again: exit %d %q; the log: %q",
		before, cgroup2Mounts(), code, out, r.pid, own, ctrl, scode, sout, acode, again, serving)
	return ok
}

// initDial connects to the script's server with the client certificate of the PKI in dir.
func initDial(dir string) (*grpc.ClientConn, rpcpb.JobControllerClient, error) {
	cfg, err := clientTLS(dir+"/ca.crt", dir+"/client.crt", dir+"/client.key")
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(e2eInitAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, nil, err
	}
	return conn, rpcpb.NewJobControllerClient(conn), nil
}

// initLimits: on RUND_ADDR, a job gets the -job_max_pids of RUND_FLAGS in the default parent, and a
// job limited to 32 MiB that touches more is OOM-killed.
func (g *e2eGuest) initLimits(r *initRun) {
	conn, c, err := initDial(e2eTLS)
	if err != nil {
		g.report("initscript-limits", false, "%v", err)
		return
	}
	defer conn.Close()
	h := &e2eGuest{t: g.t, c: c}
	r.sleepID, err = h.start(tool("sleep", "60s"))
	var pidsMax string
	if err == nil { // Start returns once the job's init reports its command started
		job := filepath.Join(e2eInitParent, r.sleepID)
		pidsMax = strings.TrimSpace(readString(job + "/job/pids.max"))
		r.jobPids = append(cgroupPIDs(job+"/job"), cgroupPIDs(job+"/init")...)
	}
	const limit = 32 << 20
	req := tool("oom", strconv.Itoa(1<<20), strconv.Itoa(512<<20))
	req.MaxMemoryUsage = wrapperspb.UInt64(limit)
	_, _, st, oerr := h.run(req)
	ok := err == nil && pidsMax == strconv.Itoa(e2eInitPids) && len(r.jobPids) >= 2 && oerr == nil &&
		st.GetState() == rpcpb.JobStatus_STATE_OOM_KILLED && st.GetOomKills() >= 1
	g.report("initscript-limits", ok, "a job asking no pids limit: pids.max %q in %s (%d processes) %v; touching 1 MiB after "+
		"1 MiB under %d bytes: state %v, oom_kills %d, memory_peak %d %v",
		pidsMax, e2eInitParent, len(r.jobPids), err, limit, st.GetState(), st.GetOomKills(), st.GetMemoryPeak(), oerr)
}

// initReload: reload after /etc/rund got a new PKI: rund logs that it re-read the files, a client of
// the new PKI is served on a new connection and one of the old is refused.
func (g *e2eGuest) initReload(r *initRun) {
	err := os.RemoveAll(e2eInitTLS2)
	if err == nil {
		_, err = runOut(e2eRund, "certs", "-dir", e2eInitTLS2)
	}
	if err == nil {
		err = copyPKI(e2eInitTLS2)
	}
	if err != nil {
		g.report("initscript-reload", false, "a new PKI in /etc/rund: %v", err)
		return
	}
	out, rc := initScript("reload")
	want := "SIGHUP: reloaded /etc/rund/ca.crt, /etc/rund/server.crt, /etc/rund/server.key"
	for deadline := time.Now().Add(10 * time.Second); len(initLogLines(want)) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // the log file is all there is to watch
	}
	reloaded := initLogLines(want)
	newSt, newErr := initStatus(e2eInitTLS2, r.sleepID)
	_, oldErr := initStatus(e2eTLS, r.sleepID)
	ok := rc == 0 && len(reloaded) == 1 && newErr == nil && newSt.GetState() == rpcpb.JobStatus_STATE_RUNNING &&
		code(oldErr) == "Unavailable"
	g.report("initscript-reload", ok, "reload: exit %d %q; the log: %q; the new PKI's client: %v %v; the old one's: %v",
		rc, out, reloaded, newSt.GetState(), newErr, oldErr)
}

// initStatus asks the script's server, on a new connection as the PKI in dir's client, for a job's status.
func initStatus(dir, id string) (*rpcpb.JobStatus, error) {
	conn, c, err := initDial(dir)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := e2eCtx()
	defer cancel()
	return c.Status(ctx, &rpcpb.JobIdentifier{Ulid: id})
}

// running says whether pid is a process that has not ended: a zombie has, though the guest's PID 1,
// which inherits the script's rund, may not have reaped it yet.
func running(pid int) bool {
	stat := readString(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndex(stat, ") ")
	return pid > 0 && i > 0 && !strings.HasPrefix(stat[i+2:], "Z")
}

// initLeftovers lists what of a stopped rund remains: the pid file, a live rund process, the cgroups
// below its parent, its own leaf, the job's processes.
func initLeftovers(pid int, jobPids []int) []string {
	var left []string
	if !gone(e2eInitPidFile) {
		left = append(left, e2eInitPidFile)
	}
	if running(pid) {
		left = append(left, fmt.Sprintf("rund pid %d: %s", pid, readString(fmt.Sprintf("/proc/%d/stat", pid))))
	}
	entries, _ := os.ReadDir(e2eInitParent)
	for _, e := range entries {
		if e.IsDir() {
			left = append(left, "cgroup "+e.Name())
		}
	}
	if n := alive(jobPids); n > 0 {
		left = append(left, fmt.Sprintf("%d of the job's processes %v", n, jobPids))
	}
	return left
}

// initStop: stop ends rund and the job left running; status then says 3, and with a stale pid file 1,
// which stop removes.
func (g *e2eGuest) initStop(r *initRun) {
	begin := time.Now()
	out, code := initScript("stop")
	took := time.Since(begin)
	left := initLeftovers(r.pid, r.jobPids)
	sout, scode := initScript("status")
	stopping := initLogLines("terminated: stopping every job")
	err := os.WriteFile(e2eInitPidFile, []byte(strconv.Itoa(r.pid)+"\n"), 0o644)
	_, stale := initScript("status")
	_, staleStop := initScript("stop")
	_, after := initScript("status")
	ok := code == 0 && len(left) == 0 && scode == 3 && len(stopping) == 1 && err == nil && stale == 1 &&
		staleStop == 0 && after == 3 && gone(e2eInitPidFile)
	g.report("initscript-stop", ok, "stop with a job running: exit %d %q in %.2fs; left: %q; the log: %q; status: exit %d %q; "+
		"with a stale pid file (%v): status exit %d, stop exit %d, then status exit %d",
		code, out, took.Seconds(), left, stopping, scode, sout, err, stale, staleStop, after)
}

// initRestart: restart starts a stopped rund, and replaces a running one; stop then leaves nothing.
func (g *e2eGuest) initRestart() {
	out1, code1 := initScript("restart")
	pid1 := initPid()
	out2, code2 := initScript("restart")
	pid2 := initPid()
	own := strings.TrimSpace(readString(fmt.Sprintf("/proc/%d/cgroup", pid2)))
	_, scode := initScript("status")
	out3, code3 := initScript("stop")
	left := initLeftovers(pid2, nil)
	ok := code1 == 0 && code2 == 0 && pid1 > 0 && pid2 > 0 && pid1 != pid2 && !running(pid1) &&
		own == "0::/" && scode == 0 && code3 == 0 && len(left) == 0
	g.report("initscript-restart", ok, "restart when stopped: exit %d %q (pid %d); again: exit %d %q (pid %d, "+
		"in %q), status exit %d; stop: exit %d %q, left: %q",
		code1, out1, pid1, code2, out2, pid2, own, scode, code3, out3, left)
}

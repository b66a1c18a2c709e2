package main

// systemd_guest_test.go is the suite that runs inside the VM TestSystemdVM (systemd_vm_test.go) boots:
// Debian bookworm's or trixie's systemd as PID 1, contrib/rund.service installed as
// /etc/systemd/system/rund.service, contrib/rund.default as /etc/default/rund, rund in /usr/local/bin, a
// development PKI in /etc/rund. TestSystemdGuest is itself a systemd service
// there. It drives rund.service the way an administrator would (systemctl, `rund client` over mTLS)
// and looks at what systemd and the kernel show (/sys/fs/cgroup, /proc, the journal). It prints one
// line per check on the serial console:
//
//	E2E <name> PASS|FAIL <what was seen>
//
// The "off-" checks prove each hardening option the unit leaves off: each is turned on by a drop-in,
// and rund must then fail to serve or to run a contained job with every limit (the option breaks
// rund), or, for the ones that would bind the jobs, a job must see the difference.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"rund/rpcpb"
)

// The guest's layout: TestSystemdVM's initramfs and contrib/rund.service.
const (
	sdRund     = "/usr/local/bin/rund"
	sdTest     = "/usr/local/bin/rund.test"
	sdUnitFile = "/etc/systemd/system/rund.service"
	sdCgroup   = "/sys/fs/cgroup/system.slice/rund.service" // the unit's delegated cgroup
	sdServer   = sdCgroup + "/rund-server"                  // the leaf rund moves itself into
	sdJobs     = sdCgroup + "/jobs"                         // -cgroup
	sdDropins  = "/run/systemd/system/rund.service.d"
	sdWork     = "/run/rund-e2e"
	sdHome     = "/home/rund-e2e" // a file here tells whether jobs see /home
)

// sdLimits are the flags of `rund client start` that set every limit; the io ones need the disk.
func sdLimits() []string {
	return []string{"-max_cpu_bandwidth", "50000", "-max_memory_usage", "67108864", "-max_pids", "32",
		"-max_rbps", "10485760", "-max_wbps", "10485760", "-max_riops", "1000", "-max_wiops", "1000"}
}

// sdVariant is the unit with a drop-in, tried in a check of its own: start, serve, a contained job
// with every limit stopped by a client, stop (checkVariant).
type sdVariant struct {
	check  string // its name in systemdChecks
	dropin string // the [Service] lines
	// want is what must come of it: "breaks" (rund does not serve, or the job does not run, or its
	// command misses the SIGTERM of its Stop), "works", "inert" (works, and systemd gave rund no
	// seccomp filter more than the shipped unit does: the option does nothing), "oom" (a job's OOM
	// kill stops rund.service), or the name of a probe of sdProbeScript whose answer must differ from
	// the shipped unit's.
	want string
}

// sdSince is the systemd version that knows a variant's option value, where it is later than 252, the
// oldest the unit supports: an older systemd must refuse the drop-in (systemd-analyze verify warns),
// so the unit cannot turn it on there.
var sdSince = map[string]int{"off-ProtectControlGroups-private": 257}

// sdServe resets ExecStart and starts it anew with the shipped unit's certificate flags, for drop-ins
// that change the others.
const sdServe = "ExecStart=\nExecStart=/usr/local/bin/rund serve -ca /etc/rund/ca.crt -cert /etc/rund/server.crt -key /etc/rund/server.key $RUND_FLAGS"

// sdVariants: the options contrib/rund.service leaves off, each turned on, and each capability it
// keeps, taken out; and an uncontained server.
var sdVariants = []sdVariant{
	{"uncontained", sdServe + " -cgroup /sys/fs/cgroup/system.slice/rund.service/jobs -unsafe_uncontained_jobs", "works"},
	{"off-Caps-SYS_ADMIN", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_NET_ADMIN CAP_KILL", "breaks"},
	{"off-Caps-SETUID", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETGID CAP_NET_ADMIN CAP_KILL", "breaks"},
	{"off-Caps-SETGID", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_NET_ADMIN CAP_KILL", "breaks"},
	{"off-Caps-NET_ADMIN", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_SETGID CAP_KILL", "breaks"},
	// A Stop's SIGTERM no longer reaches the command: it is killed at the grace period's end.
	{"off-Caps-KILL", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_SETGID CAP_NET_ADMIN", "breaks"},
	{"off-ProtectControlGroups", "ProtectControlGroups=yes", "breaks"},
	{"off-ProtectControlGroups-private", "ProtectControlGroups=private\n" + sdServe + " -cgroup /sys/fs/cgroup/jobs", "breaks"},
	{"off-RestrictNamespaces", "RestrictNamespaces=yes", "breaks"},
	{"off-RestrictNamespaces-time", "RestrictNamespaces=~time", "inert"},
	{"off-PrivateUsers", "PrivateUsers=yes", "breaks"},
	{"off-PrivateNetwork", "PrivateNetwork=yes", "breaks"},
	{"off-ProtectHostname", "ProtectHostname=yes", "breaks"},
	{"off-SystemCallFilter", "SystemCallFilter=\nSystemCallFilter=@system-service", "breaks"},
	{"off-MemoryDenyWriteExecute", "MemoryDenyWriteExecute=yes", "mmap-wx"},
	{"off-ProtectHome", "ProtectHome=yes", "home"},
	{"off-UMask", "UMask=0077", "umask"},
	{"off-OOMPolicy", "OOMPolicy=stop", "oom"},
}

// systemdChecks are the names TestSystemdGuest reports, in order; TestSystemdVM expects a line for each.
var systemdChecks = append([]string{"systemd", "unit-verify", "start", "self-move", "job-limits", "cpu-max",
	"memory-oom", "io-rbps", "pids-max", "jobs-unrestricted", "reload", "crash-restart", "hardening", "stopping",
	"addr", "stop"}, sdVariantChecks()...)

func sdVariantChecks() []string {
	var names []string
	for _, v := range sdVariants {
		names = append(names, v.check)
	}
	return names
}

// sdProbeScript runs in a job and prints "<probe>=<answer>" for what a job can do: map W+X memory
// (perl's syscall: mmap(NULL, 4096, PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)),
// read a file in /home, and the umask its files get.
const sdProbeScript = `perl -e '$r = syscall(9, 0, 4096, 7, 0x22, -1, 0); print "mmap-wx=", ($r == -1 ? "$!" : "ok"), "\n"'
echo "home=$(cat ` + sdHome + `/probe 2>&1)"
echo "umask=$(umask)"
`

// sdProbeBaseline is sdProbeScript's answer under the shipped unit.
var sdProbeBaseline = map[string]string{"mmap-wx": "ok", "home": "readable", "umask": "0022"}

type sdGuest struct {
	defaults    string // /etc/default/rund as the suite keeps it
	startCursor string // the journal's position before the start check
	version     int    // systemd's
	dev         string // MAJ:MIN of the root disk
	mainPid     string // rund's pid, as systemd knows it
	jobID       string // a job left running from job-limits to crash-restart
	jobPids     []string
	filters     string // how many seccomp filters rund has under the shipped unit
}

func TestSystemdGuest(t *testing.T) {
	if os.Getenv("RUND_SYSTEMD_GUEST") != "1" {
		t.Skip("runs only inside the VM that TestSystemdVM boots (RUND_SYSTEMD_GUEST=1)")
	}
	g := &sdGuest{}
	if err := g.setup(); err != nil {
		t.Fatalf("guest setup: %v", err)
	}
	checks := []struct {
		name string
		fn   func() (bool, string)
	}{
		{"systemd", g.checkSystemd},
		{"unit-verify", g.checkVerify},
		{"start", g.checkStart},
		{"self-move", g.checkSelfMove},
		{"job-limits", g.checkJobLimits},
		{"cpu-max", g.checkCPU},
		{"memory-oom", g.checkOOM},
		{"io-rbps", g.checkIO},
		{"pids-max", g.checkPids},
		{"jobs-unrestricted", g.checkUnrestricted},
		{"reload", g.checkReload},
		{"crash-restart", g.checkCrashRestart},
		{"hardening", g.checkHardening},
		{"stopping", g.checkStopping},
		{"addr", g.checkAddr},
		{"stop", g.checkStop},
	}
	for _, v := range sdVariants {
		checks = append(checks, struct {
			name string
			fn   func() (bool, string)
		}{v.check, func() (bool, string) { return g.checkVariant(v) }})
	}
	for _, c := range checks {
		begin := time.Now()
		ok, detail := func() (ok bool, detail string) {
			defer func() {
				if r := recover(); r != nil {
					ok, detail = false, fmt.Sprintf("panic: %v", r)
				}
			}()
			return c.fn()
		}()
		res := "PASS"
		if !ok {
			res = "FAIL"
			t.Errorf("%s: %s", c.name, detail)
		}
		fmt.Printf("E2E %s %s %s [%.1fs]\n", c.name, res, strings.ReplaceAll(detail, "\n", " | "), time.Since(begin).Seconds())
	}
}

func (g *sdGuest) setup() error {
	dev, err := os.ReadFile("/sys/block/vda/dev")
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	g.dev = strings.TrimSpace(string(dev))
	ver, err := sdRun(time.Minute, "systemctl", "--version")
	if f := strings.Fields(ver); err == nil && len(f) > 1 {
		g.version, _ = strconv.Atoi(f[1])
	}
	// contrib/rund.default, installed by the initramfs, sets nothing: the unit's own RUND_ADDR=:8000
	// holds. The io limits need the disk, given the way the file shows.
	shipped, err := os.ReadFile("/etc/default/rund")
	if err != nil {
		return err
	}
	g.defaults = string(shipped) + "RUND_FLAGS=\"-io_devices " + g.dev + "\"\n"
	// The stop check reads what ExecStopPost saw, after rund's exit and before systemd's final kill
	// and removal of the cgroup. "+": outside the unit's sandbox, which has no writable /run.
	snapshot := "#!/bin/sh\ncd " + sdCgroup + " || exit 0\nfor d in $(find . -mindepth 1 -type d); do\n" +
		"\techo \"$d $(tr '\\n' ' ' <$d/cgroup.procs)\"\ndone >" + sdWork + "/stop-snapshot\n"
	for _, f := range []struct {
		path, data string
		mode       os.FileMode
	}{
		{sdWork + "/snapshot.sh", snapshot, 0o755},
		{sdDropins + "/e2e-snapshot.conf", "[Service]\nExecStopPost=+/bin/sh " + sdWork + "/snapshot.sh\n", 0o644},
		{sdHome + "/probe", "readable", 0o644},
		{"/etc/default/rund", g.defaults, 0o644},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	_, err = sdRun(time.Minute, "systemctl", "daemon-reload")
	return err
}

// sdRun runs a command and returns its output (stdout and stderr), trimmed.
func sdRun(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), err
}

// client runs `rund client CMD` with the development PKI's client certificate.
// Its error is the client's own message ("rund client start: Internal: ..."), or the exit status.
func (g *sdGuest) client(cmd string, args ...string) (string, error) {
	out, err := sdRun(2*time.Minute, sdRund, append([]string{"client", cmd,
		"-ca", "/etc/rund/ca.crt", "-cert", "/etc/rund/client.crt", "-key", "/etc/rund/client.key"}, args...)...)
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && out != "" {
			err = errors.New(out)
		}
	}
	return out, err
}

// runJob starts a job, reads its whole output (`rund client log` follows it to its end) and returns
// its id, output and final status.
func (g *sdGuest) runJob(limits []string, argv ...string) (string, string, *rpcpb.JobStatus, error) {
	id, err := g.client("start", append(append(slices.Clip(limits), "--"), argv...)...)
	if err != nil {
		return "", "", nil, err
	}
	out, err := g.client("log", id)
	if err != nil {
		return id, out, nil, err
	}
	st, err := g.status(id)
	return id, out, st, err
}

func (g *sdGuest) status(id string) (*rpcpb.JobStatus, error) {
	js, err := g.client("status", id)
	if err != nil {
		return nil, err
	}
	st := &rpcpb.JobStatus{}
	if err := protojson.Unmarshal([]byte(js), st); err != nil {
		return nil, fmt.Errorf("status %s: %v: %s", id, err, js)
	}
	return st, nil
}

// waitServing returns once a client call succeeds: after a crash systemd's restart is not waited for,
// and a variant may not serve at all.
func (g *sdGuest) waitServing(timeout time.Duration) (time.Duration, error) {
	begin := time.Now()
	for {
		_, err := g.client("list")
		if err == nil {
			return time.Since(begin), nil
		}
		if state := unitProp("ActiveState"); time.Since(begin) > timeout || state == "failed" || state == "inactive" {
			return time.Since(begin), fmt.Errorf("not serving after %.1fs (unit %s): %v", time.Since(begin).Seconds(), state, err)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition that has no event to wait on
	}
}

func unitProp(name string) string {
	v, _ := sdRun(time.Minute, "systemctl", "show", "-P", name, "rund.service")
	return v
}

// cursor is the journal's current position, for journalSince.
func cursor() string {
	out, _ := sdRun(time.Minute, "journalctl", "-n", "0", "--show-cursor", "--no-pager")
	_, c, _ := strings.Cut(out, "-- cursor: ")
	return strings.TrimSpace(c)
}

// journalSince returns the unit's journal lines (its own and systemd's about it) after cursor c.
func journalSince(c string) []string {
	sdRun(time.Minute, "journalctl", "--sync")
	out, _ := sdRun(time.Minute, "journalctl", "-u", "rund.service", "--after-cursor", c, "-o", "cat", "--no-pager")
	return strings.Split(out, "\n")
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimSpace(string(b))
}

// jobDirs lists the job (and spare) cgroups under -cgroup: directories named by a job id.
func jobDirs() []string {
	entries, _ := os.ReadDir(sdJobs)
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

func pidAlive(pid string) bool {
	_, err := os.Stat("/proc/" + pid)
	return err == nil
}

func (g *sdGuest) checkSystemd() (bool, string) {
	ver, err := sdRun(time.Minute, "systemctl", "--version")
	if err != nil {
		return false, err.Error()
	}
	ver, _, _ = strings.Cut(ver, "\n")
	n := 0
	if f := strings.Fields(ver); len(f) > 1 {
		n, _ = strconv.Atoi(f[1])
	}
	mounts := readTrim("/proc/self/mounts")
	var v1, v2 []string
	for _, line := range strings.Split(mounts, "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 2 && f[2] == "cgroup":
			v1 = append(v1, f[1])
		case len(f) > 2 && f[2] == "cgroup2":
			v2 = append(v2, f[1])
		}
	}
	ctrls := strings.Fields(readTrim("/sys/fs/cgroup/cgroup.controllers"))
	missing := slices.DeleteFunc(slices.Clone(wantedControllers), func(c string) bool { return slices.Contains(ctrls, c) })
	cmdline := readTrim("/proc/cmdline")
	uptime, _, _ := strings.Cut(readTrim("/proc/uptime"), " ")
	return n >= 252 && len(v1) == 0 && slices.Equal(v2, []string{"/sys/fs/cgroup"}) && len(missing) == 0 &&
			!strings.Contains(cmdline, "cgroup_no_v1"),
		fmt.Sprintf("%s (the unit needs 252); cgroup2 at %v, cgroup v1 mounts %v, without cgroup_no_v1 on the command line; "+
			"root controllers %v (missing %v); kernel up %ss", ver, v2, v1, ctrls, missing, uptime)
}

func (g *sdGuest) checkVerify() (bool, string) {
	out, err := sdRun(2*time.Minute, "systemd-analyze", "verify", sdUnitFile)
	if err != nil || out != "" {
		return false, fmt.Sprintf("systemd-analyze verify: %v: %s", err, out)
	}
	return true, "systemd-analyze verify " + sdUnitFile + ": no warnings"
}

// checkStart: Type=notify, so `systemctl start` returns once rund has sent READY=1, and a client's
// call made at once, with no retry, succeeds.
func (g *sdGuest) checkStart() (bool, string) {
	g.startCursor = cursor()
	begin := time.Now()
	if _, err := sdRun(2*time.Minute, "systemctl", "start", "rund.service"); err != nil {
		return false, err.Error()
	}
	started := time.Since(begin)
	_, callErr := g.client("list")
	g.mainPid = unitProp("MainPID")
	typ, state, sub, access := unitProp("Type"), unitProp("ActiveState"), unitProp("SubState"), unitProp("NotifyAccess")
	ok := callErr == nil && typ == "notify" && access == "main" && state == "active" && sub == "running"
	return ok, fmt.Sprintf("systemctl start returned after %.2fs (Type=%s, NotifyAccess=%s): %s/%s, MainPID %s; "+
		"a client call at once: error %v", started.Seconds(), typ, access, state, sub, g.mainPid, callErr)
}

// checkSelfMove: systemd started rund in the unit's cgroup (no DelegateSubgroup=); rund moved itself into
// rund-server, alone there, before enabling the controllers in the unit's cgroup and in jobs/.
func (g *sdGuest) checkSelfMove() (bool, string) {
	own := readTrim("/proc/" + g.mainPid + "/cgroup")
	unitProcs := readTrim(sdCgroup + "/cgroup.procs")
	svcCtl := strings.Fields(readTrim(sdCgroup + "/cgroup.subtree_control"))
	jobsCtl := strings.Fields(readTrim(sdJobs + "/cgroup.subtree_control"))
	ok := own == "0::/system.slice/rund.service/rund-server" && readTrim(sdServer+"/cgroup.procs") == g.mainPid && unitProcs == ""
	for _, ctl := range wantedControllers {
		ok = ok && slices.Contains(svcCtl, ctl) && slices.Contains(jobsCtl, ctl)
	}
	journal := journalSince(g.startCursor)
	moved := slices.DeleteFunc(slices.Clone(journal), func(l string) bool { return !strings.Contains(l, "moved rund serve") })
	// rund writes "+controller" into every subtree_control from the cgroup2 root down: above the unit
	// those are systemd's, which Delegate= has already enabled, so the writes must change nothing
	// and fail nowhere.
	enableErrs := slices.DeleteFunc(journal, func(l string) bool { return !strings.Contains(l, "enable ") })
	ok = ok && len(moved) == 1 && len(enableErrs) == 0
	return ok, fmt.Sprintf("MainPID %s in %q, alone in rund-server/; the unit's own cgroup holds %q; rund said %q; "+
		"subtree_control of rund.service %v, of jobs/ %v; jobs/ holds %d spare(s); errors enabling controllers: %q",
		g.mainPid, own, unitProcs, moved, svcCtl, jobsCtl, len(jobDirs()), enableErrs)
}

func (g *sdGuest) checkJobLimits() (bool, string) {
	id, err := g.client("start", append(sdLimits(), "--", "sleep", "600")...)
	if err != nil {
		return false, err.Error()
	}
	g.jobID = id
	dir := filepath.Join(sdJobs, id, "job")
	g.jobPids = strings.Fields(readTrim(dir + "/cgroup.procs"))
	st, err := g.status(id)
	if err != nil {
		return false, err.Error()
	}
	want := map[string]string{
		"cpu.max": "50000 100000", "memory.max": "67108864", "pids.max": "32",
		"io.max": g.dev + " rbps=10485760 wbps=10485760 riops=1000 wiops=1000",
	}
	ok := st.GetState() == rpcpb.JobStatus_STATE_RUNNING && len(g.jobPids) == 1
	var got []string
	for _, f := range slices.Sorted(maps.Keys(want)) {
		v := readTrim(filepath.Join(dir, f))
		ok = ok && v == want[f]
		got = append(got, fmt.Sprintf("%s=%q", f, v))
	}
	var cg string
	if len(g.jobPids) == 1 {
		cg = readTrim("/proc/" + g.jobPids[0] + "/cgroup")
		ok = ok && cg == "0::/system.slice/rund.service/jobs/"+id+"/job"
	}
	return ok, fmt.Sprintf("job %s %v, command pid %v in %q; %s", id, st.GetState(), g.jobPids, cg, strings.Join(got, " "))
}

func (g *sdGuest) checkCPU() (bool, string) {
	// 10% of one CPU for 3 s: at most 0.3 s of CPU time, with room for the period it ends in.
	_, out, st, err := g.runJob([]string{"-max_cpu_bandwidth", "10000"}, "timeout", "3", "sh", "-c", "while :; do :; done")
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, out)
	}
	cpu := st.GetUserTime().AsDuration() + st.GetSystemTime().AsDuration()
	return st.GetExitCode().GetValue() == 124 && cpu > 0 && cpu < time.Second,
		fmt.Sprintf("a 3 s busy loop at -max_cpu_bandwidth 10000 used %.2fs of CPU (exit %d)", cpu.Seconds(), st.GetExitCode().GetValue())
}

func (g *sdGuest) checkOOM() (bool, string) {
	// dd's 128 MiB buffer, filled from /dev/zero, in 32 MiB: the kernel's OOM killer ends it. systemd
	// sees the kill in the unit's memory.events; with OOMPolicy=stop it would stop rund.
	_, out, st, err := g.runJob([]string{"-max_memory_usage", "33554432"}, "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, out)
	}
	state, pid := unitProp("ActiveState"), unitProp("MainPID")
	return st.GetState() == rpcpb.JobStatus_STATE_OOM_KILLED && st.GetOomKills() > 0 && state == "active" && pid == g.mainPid,
		fmt.Sprintf("dd of 128 MiB at -max_memory_usage 32 MiB: %v, oom_kills %d, memory_peak %d; rund.service %s, MainPID %s (was %s)",
			st.GetState(), st.GetOomKills(), st.GetMemoryPeak(), state, pid, g.mainPid)
}

var killedProc = regexp.MustCompile(`Killing process [0-9]+ \(([^)]*)\)`)

var goLogLine = regexp.MustCompile(`^[0-9/]{10} [0-9:]{8} (.*)$`)

var ddSeconds = regexp.MustCompile(`copied, ([0-9.]+) s`)

func (g *sdGuest) checkIO() (bool, string) {
	// 3 MiB read with O_DIRECT from the root disk at 1 MiB/s: 2 s at least, whatever a first slice lets
	// through at once. The io limit is the disk behind / that rund found itself.
	_, out, st, err := g.runJob([]string{"-max_rbps", "1048576"},
		"dd", "if="+sdTest, "of=/dev/null", "bs=256k", "count=12", "iflag=direct")
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, out)
	}
	m := ddSeconds.FindStringSubmatch(out)
	secs := 0.0
	if m != nil {
		secs, _ = strconv.ParseFloat(m[1], 64)
	}
	return st.GetExitCode().GetValue() == 0 && secs >= 2 && st.GetIoReadBytes() >= 3<<20,
		fmt.Sprintf("dd iflag=direct of 3 MiB at -max_rbps 1 MiB/s took %.2fs; io_read_bytes %d", secs, st.GetIoReadBytes())
}

func (g *sdGuest) checkPids() (bool, string) {
	_, out, st, err := g.runJob([]string{"-max_pids", "24"}, sdTest, "e2e-tool", "forkbomb", "60", "2s")
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, out)
	}
	f := toolFigures(out)
	return st.GetExitCode().GetValue() == 0 && f["failed"] > 0 && f["forked"]+f["threads"] <= 24,
		fmt.Sprintf("-max_pids 24: %s", out)
}

// sdProbe runs sdProbeScript in a contained job and returns its answers by probe.
func (g *sdGuest) sdProbe() (map[string]string, error) {
	_, out, st, err := g.runJob(nil, "sh", "-c", sdProbeScript)
	if err == nil && st.GetExitCode().GetValue() != 0 {
		err = fmt.Errorf("probe job: %v exit %d", st.GetState(), st.GetExitCode().GetValue())
	}
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	res := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			res[k] = v
		}
	}
	return res, nil
}

func (g *sdGuest) checkUnrestricted() (bool, string) {
	res, err := g.sdProbe()
	if err != nil {
		return false, err.Error()
	}
	ok := true
	for k, v := range sdProbeBaseline {
		ok = ok && res[k] == v
	}
	return ok, fmt.Sprintf("a job under the shipped unit: %v", res)
}

func (g *sdGuest) checkReload() (bool, string) {
	c := cursor()
	if _, err := sdRun(time.Minute, "systemctl", "reload", "rund.service"); err != nil {
		return false, err.Error()
	}
	var lines []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		lines = journalSince(c)
		if slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "SIGHUP: reloaded") }) {
			break
		}
	}
	pid := unitProp("MainPID")
	ok := pid == g.mainPid && slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "SIGHUP: reloaded") })
	return ok, fmt.Sprintf("systemctl reload: MainPID %s (was %s); journal: %q", pid, g.mainPid, lines)
}

func (g *sdGuest) checkCrashRestart() (bool, string) {
	c := cursor()
	old := g.mainPid
	if _, err := sdRun(time.Minute, "systemctl", "kill", "-s", "KILL", "--kill-whom=main", "rund.service"); err != nil {
		return false, err.Error()
	}
	var pid string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if pid = unitProp("MainPID"); pid != "0" && pid != old && unitProp("ActiveState") == "active" {
			break
		}
	}
	took, err := g.waitServing(time.Minute)
	if err != nil {
		return false, err.Error()
	}
	g.mainPid = pid
	var alive []string
	for _, p := range g.jobPids {
		if pidAlive(p) {
			alive = append(alive, p)
		}
	}
	dirs := jobDirs()
	restarts := unitProp("NRestarts")
	killed := map[string]int{} // what systemd killed after rund's death, by command name
	for _, l := range journalSince(c) {
		if m := killedProc.FindStringSubmatch(l); m != nil {
			killed[m[1]]++
		}
	}
	ok := pid != old && restarts == "1" && len(alive) == 0 && !slices.Contains(dirs, g.jobID)
	return ok, fmt.Sprintf("SIGKILL to rund %s: restarted as %s (NRestarts %s), serving %.2fs later; the old job's command %v alive: %v; "+
		"job cgroups now %v; systemd killed what rund left: %v", old, pid, restarts, took.Seconds(), g.jobPids, alive, dirs, killed)
}

// capNames are the capabilities by bit (linux/capability.h), for CapBnd in /proc/PID/status.
var capNames = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
	"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
	"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}

func procStatus(pid string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(readTrim("/proc/"+pid+"/status"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func capSet(hex string) []string {
	mask, _ := strconv.ParseUint(hex, 16, 64)
	var caps []string
	for i, name := range capNames {
		if mask&(1<<i) != 0 {
			caps = append(caps, name)
		}
	}
	return caps
}

func (g *sdGuest) checkHardening() (bool, string) {
	st := procStatus(g.mainPid)
	g.filters = st["Seccomp_filters"]
	caps := capSet(st["CapBnd"])
	var want []string
	for _, line := range strings.Split(readTrim(sdUnitFile), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			want = strings.Fields(v)
		}
	}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(caps))
	sec, _ := sdRun(2*time.Minute, "systemd-analyze", "security", "--no-pager", "rund.service")
	lines := strings.Split(sec, "\n")
	overall := lines[len(lines)-1]
	ok := st["NoNewPrivs"] == "1" && st["Seccomp"] == "2" && len(want) > 0 && slices.Equal(got, want)
	return ok, fmt.Sprintf("rund %s: NoNewPrivs %s, Seccomp %s (%s filters), CapBnd %v (unit: %v); systemd-analyze security: %s",
		g.mainPid, st["NoNewPrivs"], st["Seccomp"], st["Seccomp_filters"], caps, want, strings.TrimSpace(overall))
}

// checkStopping: SIGTERM sent to rund itself, not by systemctl stop. rund sends STOPPING=1, and
// systemd shows the unit deactivating (stop-sigterm) while rund still ends its jobs: a job that ignores
// SIGTERM holds it there for its 5 s grace period. Without STOPPING=1 the unit would stay active until
// rund exits. Then the unit is started again.
func (g *sdGuest) checkStopping() (bool, string) {
	if _, err := g.client("start", "-grace", "5s", "--", "sh", "-c", "trap '' TERM; sleep 600 & wait"); err != nil {
		return false, err.Error()
	}
	pid := g.mainPid
	begin := time.Now()
	if _, err := sdRun(time.Minute, "systemctl", "kill", "-s", "TERM", "--kill-whom=main", "rund.service"); err != nil {
		return false, err.Error()
	}
	var seen string // the unit's state while rund was still alive, once it was not active
	for deadline := time.Now().Add(20 * time.Second); seen == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		state, sub := unitProp("ActiveState"), unitProp("SubState")
		if !pidAlive(pid) {
			break
		}
		if state != "active" {
			seen = state + "/" + sub
		}
	}
	after := time.Since(begin)
	for deadline := time.Now().Add(time.Minute); pidAlive(pid) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	state := unitProp("ActiveState")
	for deadline := time.Now().Add(time.Minute); state != "inactive" && state != "failed" && time.Now().Before(deadline); state = unitProp("ActiveState") {
		time.Sleep(100 * time.Millisecond)
	}
	result := unitProp("Result")
	_, err := sdRun(2*time.Minute, "systemctl", "start", "rund.service")
	g.mainPid = unitProp("MainPID")
	return seen == "deactivating/stop-sigterm" && state == "inactive" && result == "success" && err == nil,
		fmt.Sprintf("SIGTERM to rund %s with a job ignoring SIGTERM (grace 5s): while rund lived, %.2fs later, the unit was %q; "+
			"then %s, Result %s; started again as %s: %v", pid, after.Seconds(), seen, state, result, g.mainPid, err)
}

// checkAddr: RUND_ADDR in /etc/default/rund overrides the unit's :8000.
func (g *sdGuest) checkAddr() (bool, string) {
	if err := os.WriteFile("/etc/default/rund", []byte(g.defaults+"RUND_ADDR=127.0.0.1:8443\n"), 0o644); err != nil {
		return false, err.Error()
	}
	c := cursor()
	_, err := sdRun(2*time.Minute, "systemctl", "restart", "rund.service")
	_, on8443 := g.client("list", "-addr", "localhost:8443")
	_, on8000 := g.client("list")
	serving := slices.DeleteFunc(journalSince(c), func(l string) bool { return !strings.Contains(l, "rund serving on") })
	restoreErr := os.WriteFile("/etc/default/rund", []byte(g.defaults), 0o644)
	if restoreErr == nil {
		_, restoreErr = sdRun(2*time.Minute, "systemctl", "restart", "rund.service")
	}
	g.mainPid = unitProp("MainPID")
	_, back := g.client("list")
	ok := err == nil && on8443 == nil && on8000 != nil && len(serving) == 1 && strings.Contains(serving[0], "127.0.0.1:8443") &&
		restoreErr == nil && back == nil
	return ok, fmt.Sprintf("RUND_ADDR=127.0.0.1:8443: restart %v; rund said %q; a call to 8443: %v; to 8000: %v; "+
		"back to the default: %v, a call to 8000: %v", err, serving, on8443, on8000, restoreErr, back)
}

func (g *sdGuest) checkStop() (bool, string) {
	id, err := g.client("start", "--", "sleep", "600")
	if err != nil {
		return false, err.Error()
	}
	pids := strings.Fields(readTrim(filepath.Join(sdJobs, id, "job", "cgroup.procs")))
	before := jobDirs()
	os.Remove(sdWork + "/stop-snapshot")
	c := cursor()
	begin := time.Now()
	if _, err := sdRun(15*time.Minute, "systemctl", "stop", "rund.service"); err != nil {
		return false, err.Error()
	}
	took := time.Since(begin)
	snap := readTrim(sdWork + "/stop-snapshot")
	var left []string // cgroups that are not systemd's own or hold a process
	for _, line := range strings.Split(snap, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "./.control" || ((f[0] == "./rund-server" || f[0] == "./jobs") && len(f) == 1) {
			continue
		}
		left = append(left, line)
	}
	_, gone := os.Stat(sdCgroup)
	var alive []string
	for _, p := range pids {
		if pidAlive(p) {
			alive = append(alive, p)
		}
	}
	journal := journalSince(c)
	killed := slices.DeleteFunc(slices.Clone(journal), func(l string) bool { return !strings.Contains(l, "Killing process") })
	result, status := unitProp("Result"), unitProp("ExecMainStatus")
	ok := len(pids) == 1 && len(left) == 0 && errors.Is(gone, os.ErrNotExist) && len(alive) == 0 && len(killed) == 0 &&
		result == "success" && status == "0"
	return ok, fmt.Sprintf("systemctl stop with job %s (command %v) running, %d job and spare cgroup(s): %.2fs; Result %s, exit %s; "+
		"after rund's exit (ExecStopPost): cgroups beyond empty rund-server/ and jobs/ %q; after the stop: %s exists %v, command alive %v; "+
		"systemd killed %q", id, pids, len(before), took.Seconds(), result, status, left, sdCgroup, gone == nil, alive, killed)
}

// checkVariant tries the unit with v's drop-in: start, serve, a contained job with every limit that
// must take its Stop's SIGTERM (and the probes or an OOM kill, as v wants), stop.
func (g *sdGuest) checkVariant(v sdVariant) (bool, string) {
	dropin := sdDropins + "/zz-variant.conf"
	if err := os.WriteFile(dropin, []byte("[Service]\n"+v.dropin+"\n"), 0o644); err != nil {
		return false, err.Error()
	}
	defer func() {
		os.Remove(dropin)
		sdRun(time.Minute, "systemctl", "daemon-reload")
		sdRun(time.Minute, "systemctl", "reset-failed", "rund.service")
	}()
	// systemd ignores a line it cannot parse, with a warning: the drop-in must be taken as it is, or,
	// on a systemd older than the option's value, refused.
	out, err := sdRun(2*time.Minute, "systemd-analyze", "verify", "rund.service")
	if since := sdSince[v.check]; g.version < since {
		return out != "", fmt.Sprintf("%q on systemd %d (the value needs %d): systemd-analyze verify: %v: %s",
			v.dropin, g.version, since, err, out)
	}
	if err != nil || out != "" {
		return false, fmt.Sprintf("%q: systemd-analyze verify: %v: %s", v.dropin, err, out)
	}
	if _, err := sdRun(time.Minute, "systemctl", "daemon-reload"); err != nil {
		return false, err.Error()
	}
	c := cursor()
	broke, probe, oomStopped := g.variantCycle(v)
	var rund string
	filters := ""
	if pid := unitProp("MainPID"); pid != "0" && unitProp("ActiveState") == "active" && pidAlive(pid) {
		st := procStatus(pid) // empty if rund has just died (a restart loop)
		filters = st["Seccomp_filters"]
		rund = fmt.Sprintf("rund: NoNewPrivs %s, %s seccomp filters, %d capabilities", st["NoNewPrivs"], filters, len(capSet(st["CapBnd"])))
	}
	if _, err := sdRun(15*time.Minute, "systemctl", "stop", "rund.service"); err != nil {
		broke = append(broke, "stop: "+err.Error())
	}
	var said []string // rund's own lines (log's date and time first), without those
	for _, l := range journalSince(c) {
		if m := goLogLine.FindStringSubmatch(l); m != nil && !slices.Contains(said, m[1]) {
			said = append(said, m[1])
		}
	}
	if len(said) > 3 {
		said = said[len(said)-3:]
	}
	detail := fmt.Sprintf("%q: broke %q; %s; probes %v; rund said %q", v.dropin, broke, rund, probe, said)
	switch v.want {
	case "breaks":
		return len(broke) > 0, detail
	case "works":
		return len(broke) == 0, detail
	case "inert":
		return len(broke) == 0 && filters == g.filters, fmt.Sprintf("%s (shipped unit: %s filters)", detail, g.filters)
	case "oom":
		return len(broke) == 0 && oomStopped, fmt.Sprintf("a job's OOM kill stopped rund.service: %v; %s", oomStopped, detail)
	}
	return len(broke) == 0 && probe[v.want] != sdProbeBaseline[v.want], detail
}

// variantCycle starts the unit and uses it; broke says what failed.
func (g *sdGuest) variantCycle(v sdVariant) (broke []string, probe map[string]string, oomStopped bool) {
	if _, err := sdRun(2*time.Minute, "systemctl", "start", "rund.service"); err != nil {
		return []string{err.Error()}, nil, false
	}
	if _, err := g.waitServing(20 * time.Second); err != nil {
		return []string{err.Error()}, nil, false
	}
	// The command takes SIGTERM by ending with 0; a Stop that cannot signal it kills it at the grace's end.
	id, err := g.client("start", append(sdLimits(), "-grace", "5s", "--", "sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait")...)
	if err != nil {
		return []string{"start: " + err.Error()}, nil, false
	}
	procs := readTrim(filepath.Join(sdJobs, id, "job", "cgroup.procs"))
	js, err := g.client("stop", id)
	st := &rpcpb.JobStatus{}
	if err == nil {
		err = protojson.Unmarshal([]byte(js), st)
	}
	switch {
	case err != nil:
		broke = append(broke, "stop: "+err.Error())
	case procs == "" || st.GetKilled() || st.GetExitCode() == nil || st.GetExitCode().GetValue() != 0:
		broke = append(broke, fmt.Sprintf("job's command (pids %q) after its Stop: %v, killed %v, signal %d, exit %v",
			procs, st.GetState(), st.GetKilled(), st.GetSignal().GetValue(), st.GetExitCode()))
	}
	if _, ok := sdProbeBaseline[v.want]; ok {
		if probe, err = g.sdProbe(); err != nil {
			broke = append(broke, fmt.Sprintf("probe job: %v", err))
		}
	}
	if v.want == "oom" {
		// The job's own result does not matter: rund may be stopping while it reports. systemd acts on
		// the OOM kill when it reads the unit's memory.events; 20 s is far more than that takes.
		g.runJob([]string{"-max_memory_usage", "33554432"}, "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
		for deadline := time.Now().Add(20 * time.Second); !oomStopped && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			oomStopped = unitProp("ActiveState") != "active"
		}
	}
	return broke, probe, oomStopped
}

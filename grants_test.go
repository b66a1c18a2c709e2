package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"rund/rpcpb"
)

// noneMissing is a host with every controller, for parseGrants.
func noneMissing(limits) []string { return nil }

// TestParseGrants: a grants file is read whole or refused, with the key and the reason; keys are
// canonical names, as authz.go reads a certificate's.
func TestParseGrants(t *testing.T) {
	dirs := []string{"/srv/a", "/srv/b"}
	good := `{"dns:Controller.Example.": {"network": "host", "job_dirs": ["/srv/a"], "max_jobs": 3,
		"max": {"max_memory_usage": 1048576}, "default": {"max_memory_usage": 65536}},
		"email:Tech@Example.COM": {"root": true}, "*": {}}`
	got, err := parseGrants([]byte(good), dirs, noneMissing)
	if err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"*", "dns:controller.example", "email:Tech@example.com"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want the canonical names %q", keys, want)
	}
	if g := got["dns:controller.example"]; g.Network != "host" || g.MaxJobs != 3 || *g.JobDirs != nil && (*g.JobDirs)[0] != "/srv/a" {
		t.Errorf("controller's grant read as %+v", g)
	}
	for _, c := range []struct{ file, want string }{
		{`{"dns:a": {"netwrok": "host"}}`, "unknown field"},
		{`{"a": {}}`, `key "a": want`},
		{`{"dns:": {}}`, `key "dns:": want`},
		{`{"dns:a": {"network": "bridge"}}`, `network "bridge"`},
		{`{"dns:a": {"job_dirs": ["/srv/c"]}}`, `job_dirs "/srv/c" is not one of -job_dirs`},
		{`{"dns:a": {"max_jobs": -1}}`, "max_jobs -1 is negative"},
		{`{"dns:a": {"max": {"max_pids": 10}, "default": {"max_pids": 20}}}`, "default max_pids 20 is over its max 10"},
		{`{"dns:a": {"default": {"max_cpu_bandwidth": 5}}}`, "default: max_cpu_bandwidth 5 is outside"},
		{`{"dns:A": {}, "dns:a.": {}}`, "are the same name (dns:a)"},
		{`{"dns:a": {}} {}`, "more than one JSON value"},
		{`[]`, "cannot unmarshal array"},
	} {
		if _, err := parseGrants([]byte(c.file), dirs, noneMissing); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.file, err, c.want)
		}
	}
	noMemory := func(l limits) []string {
		if l.memory != 0 {
			return []string{"memory"}
		}
		return nil
	}
	if _, err := parseGrants([]byte(`{"*": {"max": {"max_memory_usage": 1048576}}}`), nil, noMemory); err == nil ||
		!strings.Contains(err.Error(), "cgroup controller memory not available") {
		t.Errorf("a ceiling this host cannot hold: error %v, want the controller named", err)
	}
}

// TestGrantsAllow: what a Start asks for beyond the default is given only with the grant; a grant's
// defaults fill the limits a Start leaves unset and its ceilings bound the rest.
func TestGrantsAllow(t *testing.T) {
	table, err := parseGrants([]byte(`{"dns:net": {"network": "host"}, "dns:root": {"root": true},
		"dns:dirs": {"job_dirs": ["/srv/a"], "max_jobs": 2},
		"*": {"max": {"max_memory_usage": 1000000, "max_pids": 50}, "default": {"max_memory_usage": 500000}}}`),
		[]string{"/srv/a", "/srv/b"}, noneMissing)
	if err != nil {
		t.Fatal(err)
	}
	gs := &grants{path: "grants.json", dirs: []string{"/srv/a", "/srv/b"}}
	gs.table.Store(table)
	allow := func(caller []string, network string, root bool, lim limits) (*jobSpec, error) {
		spec := &jobSpec{network: network, root: root, lim: lim}
		return spec, gs.allow(caller, spec)
	}
	for _, c := range []struct {
		caller  []string
		network string
		root    bool
		want    given
	}{
		{[]string{"dns:net"}, "host", false, given{hostNet: true}},
		{[]string{"dns:net"}, "", false, given{}}, // granted, not asked: contained as by default
		{[]string{"dns:root"}, "", true, given{root: true}},
		{[]string{"dns:dirs"}, "", false, given{dirs: []string{"/srv/a"}}},
	} {
		spec, err := allow(c.caller, c.network, c.root, limits{})
		if err != nil || !slices.Equal(spec.given.dirs, c.want.dirs) || spec.given.hostNet != c.want.hostNet ||
			spec.given.root != c.want.root {
			t.Errorf("%v asking network %q root %v: given %+v (%v), want %+v", c.caller, c.network, c.root,
				spec.given, err, c.want)
		}
	}
	for _, c := range []struct {
		caller  []string
		network string
		root    bool
		lim     limits
		code    error
		want    string
	}{
		{[]string{"dns:root"}, "host", false, limits{}, errDenied, `network "host" needs a grant`},
		{[]string{"dns:net"}, "", true, limits{}, errDenied, "root needs a grant"},
		{[]string{"dns:other"}, "", true, limits{}, errDenied, "root needs a grant"},
		{[]string{"dns:net", "dns:root"}, "", false, limits{}, errDenied, "dns:net and dns:root each have a grant"},
		{[]string{"dns:other"}, "", false, limits{memory: 2000000}, errDenied, "max_memory_usage 2000000 is over 1000000"},
		{[]string{"dns:other"}, "", false, limits{pids: 51}, errDenied, "max_pids 51 is over 50"},
		{[]string{"dns:net"}, "bridge", false, limits{}, errInvalid, `network "bridge"`},
	} {
		_, err := allow(c.caller, c.network, c.root, c.lim)
		if !errors.Is(err, c.code) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v asking network %q root %v %+v: %v, want %v saying %q", c.caller, c.network, c.root, c.lim,
				err, c.code, c.want)
		}
	}
	spec, err := allow([]string{"dns:other"}, "", false, limits{pids: 10})
	if err != nil || spec.lim.memory != 500000 || spec.lim.pids != 10 {
		t.Errorf("under \"*\": limits %+v (%v), want the default memory 500000 and the asked pids 10", spec.lim, err)
	}
	if spec, _ := allow([]string{"dns:dirs"}, "", false, limits{}); spec.maxJobs != 2 || spec.lim != (limits{}) {
		t.Errorf("dns:dirs: max_jobs %d, limits %+v; want its own grant's 2 and none of \"*\"'s", spec.maxJobs, spec.lim)
	}
	none := &grants{}
	if err := none.allow([]string{"dns:net"}, &jobSpec{network: "host"}); !strings.Contains(fmt.Sprint(err),
		"this server has no -grants file") {
		t.Errorf("without a file, network host: %v, want it refused for want of a -grants file", err)
	}
	everyone := &grants{uncontained: true}
	spec = &jobSpec{network: "host"}
	if err := everyone.allow([]string{"dns:x"}, spec); err != nil || !spec.given.root || !spec.given.hostNet {
		t.Errorf("-unsafe_uncontained_jobs: given %+v (%v), want root and the host's network for everyone", spec.given, err)
	}
	// Which jobs a spare fits: under -unsafe_uncontained_jobs (no containment) a root job takes one.
	contained, uncontained := &pool{contain: &containment{}}, &pool{}
	for _, c := range []struct {
		p    *pool
		g    given
		fits bool
	}{
		{contained, given{}, true}, {contained, given{root: true}, false}, {contained, given{hostNet: true}, false},
		{contained, given{dirs: []string{}}, false}, {uncontained, given{root: true}, true},
		{uncontained, given{root: true, hostNet: true}, false},
	} {
		if c.p.fits(c.g) != c.fits {
			t.Errorf("pool contained %v, given %+v: a spare fits %v, want %v", c.p.contain != nil, c.g, !c.fits, c.fits)
		}
	}
}

// writeGrants writes a grants file for a test server and returns the option that serves it.
func writeGrants(t *testing.T, content string) (string, serverOpt) {
	path := filepath.Join(t.TempDir(), "grants.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, func(c *serveConfig) { c.grantsFile = path }
}

// TestGrantNetworkHost: a job of an identity with network "host" that asks for it is in the host's
// network namespace: it reaches a listener on the host's loopback and sees the host's interfaces, and
// still cannot configure one. Not asked, the same identity's job has its own namespace; another
// identity that asks is refused, and the trail says so.
func TestGrantNetworkHost(t *testing.T) {
	tr := captureTrail(t)
	_, opt := writeGrants(t, `{"dns:a": {"network": "host"}}`)
	ts := startServer(t, opt)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() { // ends when lis is closed
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var hostIfs []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		hostIfs = append(hostIfs, i.Name)
	}
	probe := selfCmd(t, "dial="+lis.Addr().String(), "net", "set-lo-flags", "firewall")
	probe.Network = "host"
	id := startJob(t, a, probe)
	out, errs := readAll(t, a, id)
	f := facts(out)
	var jobIfs []string
	for _, v := range f["if"] {
		jobIfs = append(jobIfs, strings.Fields(v)[0])
	}
	if !slices.Equal(f["dial"], []string{"<nil>"}) || !slices.Equal(jobIfs, hostIfs) ||
		!slices.Equal(f["set-lo-flags"], []string{"operation not permitted"}) ||
		len(f["firewall"]) != 1 || !strings.HasPrefix(f["firewall"][0], "refused") {
		t.Errorf("network host job: dial %q, interfaces %q (host's %q), set lo's flags %q, firewall %q (stderr %q); "+
			"want the listener reached, the host's interfaces, and both refused", f["dial"], jobIfs, hostIfs,
			f["set-lo-flags"], f["firewall"], errs)
	}
	if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || st.Network != "host" || st.Root {
		t.Errorf("its status: %v (%v), want network host, not root", st, err)
	}
	id = startJob(t, a, selfCmd(t, "dial="+lis.Addr().String(), "net"))
	out, _ = readAll(t, a, id)
	if f := facts(out); len(f["dial"]) != 1 || f["dial"][0] == "<nil>" || !slices.Equal(f["if"], []string{"lo up=true"}) {
		t.Errorf("not asked for: dial %q, interfaces %q; want its own namespace, lo alone", f["dial"], f["if"])
	}
	if st, _ := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); st.GetNetwork() != "" {
		t.Errorf("not asked for: status network %q, want none", st.GetNetwork())
	}
	_, err = b.Start(ctx(t), probe)
	if code(err) != "PermissionDenied" || !strings.Contains(err.Error(), `network "host" needs a grant`) {
		t.Errorf("b, without the grant: %v, want PermissionDenied naming the grant", err)
	}
	want := map[string]any{"method": "Start", "code": "PermissionDenied", "identity": "dns:b", "network": "host"}
	if find(tr.lines(t, "audit"), want) == nil {
		t.Errorf("the trail has no line %v", want)
	}
}

// TestGrantRoot: a job of an identity granted root that asks for it runs as host root with the host's
// mounts: it writes a file in a host directory that only root may, and the host sees it. Without the
// grant the Start is refused, and the grant's own identity runs contained unless it asks.
func TestGrantRoot(t *testing.T) {
	_, opt := writeGrants(t, `{"dns:a": {"root": true}}`)
	ts := startServer(t, opt)
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	dir := t.TempDir() // root's, mode 0700, in the host's /tmp
	write := func(name string) *rpcpb.JobStartRequest {
		// The host uid that the job's uid 0 is, then the write.
		return cmd("sh", "-c", "read a b c </proc/self/uid_map; echo $b; echo x > "+filepath.Join(dir, name)+
			" 2>/dev/null || echo refused")
	}
	req := write("root")
	req.Root = true
	id := startJob(t, a, req)
	if out, errs := readAll(t, a, id); out != "0\n" {
		t.Errorf("root job printed %q (stderr %q), want host uid 0 and the write done", out, errs)
	}
	if fi, err := os.Stat(filepath.Join(dir, "root")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("on the host, the root job's file: %v, want it there, root's", err)
	}
	if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || !st.Root || st.Network != "" {
		t.Errorf("its status: %v (%v), want root, its own network", st, err)
	}
	id = startJob(t, a, write("contained"))
	if out, _ := readAll(t, a, id); strings.HasPrefix(out, "0\n") || !strings.HasSuffix(out, "refused\n") {
		t.Errorf("not asked for: printed %q, want its own host uid and the write refused", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "contained")); err == nil {
		t.Errorf("a contained job wrote in the host's %s", dir)
	}
	if _, err := b.Start(ctx(t), req); code(err) != "PermissionDenied" || !strings.Contains(err.Error(), "root needs a grant") {
		t.Errorf("b, without the grant: %v, want PermissionDenied naming root", err)
	}
	// The client asks by its flag; list says what each job was given.
	if code, out, errs := ts.runCLI(t, "run", "-root", "--", "sh", "-c", "read a b c </proc/self/uid_map; echo $b"); code != 0 ||
		out != "0\n" {
		t.Errorf("rund client run -root: exit %d, stdout %q, stderr %q; want host uid 0", code, out, errs)
	}
	if _, out, _ := ts.runCLI(t, "list"); len(grepLines(out, " root ")) != 2 || len(grepLines(out, " - ")) != 1 {
		t.Errorf("list:\n%s\nwant two jobs given root and one nothing", out)
	}
}

// TestGrantJobDirsAndReload: a grant's job_dirs are the only -job_dirs its jobs write in, its max_jobs
// bounds its live jobs; a reload of a bad file keeps the grants in force, of a good one replaces them
// for the next Start.
func TestGrantJobDirsAndReload(t *testing.T) {
	requireRoot(t)
	var dirs []string
	for _, name := range []string{"one", "two"} {
		d := filepath.Join(jobTempDir(t), name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	path, opt := writeGrants(t, `{"dns:a": {"job_dirs": ["`+dirs[0]+`"], "max_jobs": 1}}`)
	ts := startServer(t, opt, func(c *serveConfig) { c.contain.dirs = dirs })
	a := ts.dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "echo ready; exec sleep 1000"))
	waitOutput(t, a, id, "ready")
	for i, want := range []bool{true, false} {
		if _, err := os.Stat(filepath.Join(dirs[i], id)); (err == nil) != want {
			t.Errorf("%s/<job id> exists: %v, want %v", dirs[i], err == nil, want)
		}
	}
	if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); err != nil || !slices.Equal(st.JobDirs, dirs[:1]) {
		t.Errorf("status job_dirs %q (%v), want %q", st.GetJobDirs(), err, dirs[:1])
	}
	if _, err := a.Start(ctx(t), cmd("true")); code(err) != "ResourceExhausted" {
		t.Errorf("a second live job with max_jobs 1: %v, want ResourceExhausted", err)
	}
	if err := os.WriteFile(path, []byte(`{"dns:a": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.m.grants.load(); err == nil {
		t.Errorf("a reload of a broken file succeeded")
	}
	if _, err := a.Start(ctx(t), cmd("true")); code(err) != "ResourceExhausted" {
		t.Errorf("after a failed reload: %v, want the grant in force (max_jobs 1)", err)
	}
	if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.m.grants.load(); err != nil {
		t.Fatal(err)
	}
	second := startJob(t, a, cmd("true"))
	if st := waitDone(t, a, second); !slices.Equal(st.JobDirs, dirs) {
		t.Errorf("after the reload: job_dirs %q, want all of -job_dirs %q", st.JobDirs, dirs)
	}
	stopJob(t, a, id)
	if st, _ := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); !slices.Equal(st.GetJobDirs(), dirs[:1]) {
		t.Errorf("the first job keeps what it was given: job_dirs %q, want %q", st.GetJobDirs(), dirs[:1])
	}
}

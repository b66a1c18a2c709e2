package main

// Tests of -job_dirs: the host directories where contained jobs may write, each job in its own.

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestContainJobDirs: a contained job writes in a -job_dirs directory only to its own DIR/<id>, which
// it sees as DIR, owned by its root; it sees no other job's files there, and the host gets what it
// wrote under the job's uid. A job that wrote nothing, and a spare that no job took, leave nothing.
func TestContainJobDirs(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(jobTempDir(t), "out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var writer string
	var uid uint32
	// Registered before startServer, so that it runs after the server's shutdown (t.Cleanup is LIFO),
	// when every job and spare is gone.
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{writer}) {
			t.Errorf("after shutdown %s holds %v, want only the writer's directory %s", dir, names, writer)
		}
	})
	ts := startServer(t, func(c *serveConfig) { c.contain.dirs = []string{dir} })
	a, b := ts.dialAs(t, "a"), ts.dialAs(t, "b")
	writer = startJob(t, a, cmd("sh", "-c", "echo hi >"+dir+"/f && ls -A "+dir+" && stat -c %u:%a "+dir+
		" && mkdir "+dir+"/sub && echo ready && exec sleep 1000"))
	if out, errs := outputUntil(t, a, writer, "ready\n"); out != "f\n0:700\nready\n" {
		t.Fatalf("writer printed %q (stderr %q), want its file listed and the directory its root's, mode 700", out, errs)
	}
	uid = jobUID(t, ts, writer)
	f := filepath.Join(dir, writer, "f")
	if data, err := os.ReadFile(f); err != nil || string(data) != "hi\n" {
		t.Errorf("on the host %s holds %q (%v), want the job's line", f, data, err)
	}
	for _, p := range []string{f, filepath.Join(dir, writer), filepath.Join(dir, writer, "sub")} {
		if fi, err := os.Lstat(p); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("on the host %s: %v, want it owned by the job's uid %d", p, err, uid)
		}
	}
	// Meanwhile another client's job sees an empty DIR, and not the writer's files under their host path.
	peek := "ls -A " + dir + "; ls " + dir + "/" + writer + " 2>/dev/null; cat " + f + " 2>/dev/null; true"
	if out, errs := readAll(t, b, startJob(t, b, cmd("sh", "-c", peek))); out != "" || errs != "" {
		t.Errorf("another job found %q (stderr %q), want nothing", out, errs)
	}
	// Nor does a job learn DIR, its uid or the server's cgroup from its init: not by its command line,
	// and its environment is closed to the job.
	initArgs := "tr '\\0' ' ' </proc/1/cmdline; cat /proc/1/environ >/dev/null 2>&1 && echo environ readable; true"
	if out, errs := readAll(t, b, startJob(t, b, cmd("sh", "-c", initArgs))); out != "rund init " || strings.Contains(out+errs, dir) {
		t.Errorf("a job read of its init %q (stderr %q), want only \"rund init \"", out, errs)
	}
	stopJob(t, a, writer)
	if out, errs := readAll(t, a, startJob(t, a, cmd("sh", "-c", peek))); out != "" || errs != "" {
		t.Errorf("after the writer, a new job of its client found %q (stderr %q), want nothing", out, errs)
	}
}

// TestCheckJobDirs: serve refuses a -job_dirs directory that jobs could not bind on, or that a user
// but root could change under the init.
func TestCheckJobDirs(t *testing.T) {
	requireRoot(t) // the directories are chowned
	base := jobTempDir(t)
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.Chmod(p, mode), os.Chown(p, uid, 0)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok, ok2, open, user := mk("ok", 0o755, 0), mk("ok2", 0o700, 0), mk("open", 0o777, 0), mk("user", 0o755, 1234)
	nested := mk("ok/in", 0o755, 0)
	inShm, err := os.MkdirTemp("/dev/shm", "rund-test-") // root's, mode 0700, and a job's /dev/shm hides it
	if err != nil {
		t.Skip(err)
	}
	defer os.Remove(inShm)
	link, linkInShm := filepath.Join(base, "link"), filepath.Join(base, "link-in-shm")
	if err := errors.Join(os.Symlink(ok, link), os.Symlink(inShm, linkInShm)); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dirs []string
		want string // "" for no error
	}{
		{[]string{ok}, ""},
		{[]string{ok, ok2}, ""},
		{[]string{"relative"}, `"relative": want an absolute path other than /, clean and with no symbolic link`},
		{[]string{ok + "/"}, "want an absolute path other than /, clean"},
		{[]string{"/"}, "want an absolute path other than /"},
		{[]string{""}, "want an absolute path"},
		{[]string{link}, "with no symbolic link"},
		{[]string{linkInShm}, "with no symbolic link"},
		{[]string{filepath.Join(base, "missing")}, "want an existing directory"},
		{[]string{file}, "want an existing directory, owned by root"},
		{[]string{open}, "writable by no one else"},
		{[]string{user}, "owned by root"},
		{[]string{ok, nested}, "the same as, inside or around " + ok},
		{[]string{ok, ok}, "the same as, inside or around " + ok},
		{[]string{inShm}, "the same as, inside or around /dev/shm"},
		{[]string{"/dev"}, "the same as, inside or around /dev/shm"},
		{[]string{nested, ok}, "the same as, inside or around " + ok},
		{[]string{"/sys/fs/cgroup"}, "the same as, inside or around /sys"},
	} {
		err := checkJobDirs(c.dirs)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("checkJobDirs(%q) = %v, want %q", c.dirs, err, c.want)
		}
	}
}

// TestUIDRange: uids are handed out round robin, each once until given back, from a random start
// (a restarted server does not begin with the uids its last run's jobs had); a range that holds an id
// of the host's passwd or group is refused.
func TestUIDRange(t *testing.T) {
	const first, count = 1879048192 + 200000, 4
	r, err := newUIDRange(first, count)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for range count {
		u, err := r.take()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, u.UID)
	}
	if _, err := r.take(); err == nil {
		t.Errorf("a fifth take from a range of %d: no error", count)
	}
	for i, uid := range got {
		if want := first + (got[0]-first+uint32(i))%count; uid != want {
			t.Errorf("take %d gave uid %d, want %d (round robin from %d)", i, uid, want, got[0])
		}
	}
	r.give(got[1])
	if u, err := r.take(); err != nil || u.UID != got[1] {
		t.Errorf("take after giving %d back: %v, %v", got[1], u, err)
	}
	starts := map[uint32]bool{}
	for range 8 {
		r, _ := newUIDRange(first, 65536)
		u, _ := r.take()
		starts[u.UID] = true
	}
	if len(starts) == 1 {
		t.Errorf("8 new ranges all started at uid %v: want a random start", starts)
	}
	if _, err := newUIDRange(0, 10); err == nil {
		t.Error("a range from uid 0: no error")
	}
	if data, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(data), ":65534:") {
		if _, err := newUIDRange(65500, 100); err == nil || !strings.Contains(err.Error(), "65534") {
			t.Errorf("a range over the host's uid 65534: %v, want it refused", err)
		}
	}
}

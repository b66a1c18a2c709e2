package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestContainMagicLinks: a working directory or command that resolves through a magic link of /proc is
// refused with InvalidArgument naming it (init.go throughMagicLink). Before, -dir /proc/self/fd/5 put
// the job in its own cgroup directory on the host's cgroup2 mount (the init's cgroup handle, open in the
// child until its exec), from where it listed every job's cgroup; /proc/self/cwd was the server's
// working directory. The same paths' plain directories still work.
func TestContainMagicLinks(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	link := filepath.Join(jobTempDir(t), "to-fd5")
	if err := os.Symlink("/proc/self/fd/5", link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir, name, want string
	}{
		{"/proc/self/fd/5", "ls", "working directory \"/proc/self/fd/5\": goes through a magic link"},
		{"/proc/self/cwd", "ls", "working directory \"/proc/self/cwd\": goes through a magic link"},
		{"/proc/1/root/tmp", "ls", "goes through a magic link"},
		{link, "ls", "goes through a magic link"}, // a plain link whose target is one
		{"/", "/proc/self/exe", "command \"/proc/self/exe\": goes through a magic link"},
		{"/", "/proc/self/root/bin/true", "goes through a magic link"},
	} {
		req := cmd(c.name)
		req.Dir = c.dir
		_, err := a.Start(ctx(t), req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("dir %q command %q: %v; want InvalidArgument, %q", c.dir, c.name, err, c.want)
		}
	}
	for _, dir := range []string{"/proc", "/proc/sys", "/"} { // no magic link on the way: allowed
		req := cmd("pwd")
		req.Dir = dir
		if out, errs := readAll(t, a, startJob(t, a, req)); out != dir+"\n" {
			t.Errorf("dir %s: pwd printed %q (stderr %q)", dir, out, errs)
		}
	}
}

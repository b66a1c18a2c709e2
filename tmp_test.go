package main

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestContainTmpShared: a contained job's /tmp, /var/tmp and /dev/shm share one -job_tmp_size (64 MiB
// on the test server): 40 MiB in /tmp leave no room for 40 more in /dev/shm. Before, each was a tmpfs
// of its own, three times the size.
func TestContainTmpShared(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	script := "head -c 41943040 /dev/zero > /tmp/a; echo $?; head -c 41943040 /dev/zero > /dev/shm/b; echo $?; " +
		"head -c 1048576 /dev/zero > /var/tmp/c; echo $?"
	out, errs := readAll(t, a, startJob(t, a, cmd("sh", "-c", script)))
	if out != "0\n1\n1\n" || !strings.Contains(errs, "No space left on device") {
		t.Errorf("40 MiB to /tmp, then 40 MiB to /dev/shm and 1 MiB to /var/tmp: exit codes %q (stderr %q); "+
			"want 0, 1, 1: one 64 MiB tmpfs for the three", out, errs)
	}
	// Its inodes are bounded too (kernel memory that size= does not count): one per 4 KiB of 64 MiB,
	// the tmpfs' root and the three directories among them.
	out, errs = readAll(t, a, startJob(t, a, selfCmd(t, "fill-inodes")))
	if f := facts(out); fmt.Sprint(f["files"]) != "[16380]" || !strings.Contains(out, "no space left") {
		t.Errorf("empty files in /tmp: %q (stderr %q), want 16380 and then ENOSPC", out, errs)
	}
}

// TestContainTmpTotal: where no memory controller charges a job's tmpfs to it, the sandboxes' tmpfs
// together stay within -job_tmp_total: a Start past it gets ResourceExhausted, and one job's end makes
// room for the next.
func TestContainTmpTotal(t *testing.T) {
	ts := startServer(t, func(c *serveConfig) { c.spareInits = 0; c.tmpTotal = 3 * c.contain.tmpSize })
	if ts.cg.available["memory"] {
		t.Skip("the memory controller is here: each job's tmpfs is charged to its memory cgroup")
	}
	a := ts.dialAs(t, "a")
	var ids []string
	for range 3 {
		ids = append(ids, startJob(t, a, cmd("sleep", "1000")))
	}
	_, err := a.Start(ctx(t), cmd("sleep", "1000"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "-job_tmp_total") {
		t.Errorf("a fourth job of 64 MiB of /tmp within 192 MiB: %v, want ResourceExhausted naming -job_tmp_total", err)
	}
	stopJob(t, a, ids[0])
	stopJob(t, a, startJob(t, a, cmd("sleep", "1000"))) // room again
	for _, id := range ids[1:] {
		stopJob(t, a, id)
	}
}

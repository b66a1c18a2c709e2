package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLeanInitFromSealedMemfd: rund as make build makes it runs each job's init from a sealed memfd
// holding the lean init (issue 24): the init's executable is that memfd, it links no grpc (rund itself
// does), nobody can write to it, and the job runs as ever.
func TestLeanInitFromSealedMemfd(t *testing.T) {
	rund := cliBinary(t)
	parent := subprocessParent(t, "lean")
	pki := newTestPKI(t)
	srv, addr, _ := serverProcessOf(t, rund, pki, parent)
	defer func() { // its shutdown ends the job and removes every cgroup it made, the spares' too
		srv.Process.Signal(syscall.SIGTERM)
		if err := srv.Wait(); err != nil {
			t.Errorf("server after SIGTERM: %v", err)
		}
	}()
	a := (&testServer{addr: addr, pki: pki}).dialAs(t, "a")
	id := startJob(t, a, cmd("sh", "-c", "echo lean; exec sleep 1000"))
	waitOutput(t, a, id, "lean\n")

	procs, err := os.ReadFile(filepath.Join(parent, id, "init", "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.Fields(string(procs))[0]
	exe := filepath.Join("/proc", pid, "exe")
	if link, _ := os.Readlink(exe); !strings.HasPrefix(link, "/memfd:rund-init") {
		t.Errorf("the job's init runs %q; want the memfd rund-init", link)
	}
	lean, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(rund)
	if err != nil {
		t.Fatal(err)
	}
	const grpc = "google.golang.org/grpc"
	if bytes.Contains(lean, []byte(grpc)) || !bytes.Contains(full, []byte(grpc)) {
		t.Errorf("%s: in the init %v, in rund %v; want only in rund", grpc,
			bytes.Contains(lean, []byte(grpc)), bytes.Contains(full, []byte(grpc)))
	}

	if f, err := os.OpenFile(exe, os.O_WRONLY, 0); err == nil {
		_, err = f.Write([]byte("x"))
		f.Close()
		if err == nil {
			t.Error("a write to the job's init's executable went through")
		}
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const want = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&want != want {
		t.Errorf("the init's memfd: seals %#x, %v; want %#x", seals, err, want)
	}
}

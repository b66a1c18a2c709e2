package main

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestInitPipeIsPolled: the init's pipes arrive blocking (os/exec); initPipe must hand them to the runtime
// poller, which a read deadline proves (an unpolled file refuses deadlines).
func TestInitPipeIsPolled(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil { // blocking, as the init gets them
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "w")
	defer w.Close()
	if w.SetReadDeadline(time.Time{}) == nil {
		t.Fatal("a blocking fd should not be pollable: the check below would prove nothing")
	}
	f := initPipe(p[0], "r")
	defer f.Close()
	if err := f.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatalf("initPipe returned an unpolled file: %v", err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of an empty polled pipe: got %v, want a deadline error", err)
	}
}

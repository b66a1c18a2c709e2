package main

// Fuzz targets for the parsers of untrusted input that are not beside their own code: request
// validation and log offsets. (ULID parsing is fuzzed in ulid_test.go, cgroup files in cgroupfs_test.go.)
// `make fuzz` runs every target; seeds are here and in testdata/fuzz.

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzValidate: any request either is refused with InvalidArgument (as a client sees it) or yields a spec that obeys every
// bound validate promises; it never panics.
func FuzzValidate(f *testing.F) {
	f.Add("sh", "-c", "A=1", "/", int64(0), uint64(0), uint64(0))
	f.Add("", "", "", "", int64(-1), uint64(999), uint64(1))
	f.Add("a\x00b", "x", "=", "rel", int64(time.Hour), uint64(1<<40), uint64(1<<63))
	f.Add("true", strings.Repeat("x", 200), "PATH=/bin", "/tmp", int64(time.Second), uint64(50000), uint64(4096))
	f.Fuzz(func(t *testing.T, name, arg, env, dir string, grace int64, cpu, mem uint64) {
		spec, err := validate(name, []string{arg}, []string{env}, dir, time.Duration(grace), limits{cpuQuota: cpu, memory: mem})
		if err != nil {
			if pe := publicError("validate", err); status.Code(pe) != codes.InvalidArgument || status.Convert(pe).Message() == "" {
				t.Fatalf("refusal %v is not an InvalidArgument with a message", err)
			}
			return
		}
		for _, s := range append(append([]string{spec.dir}, spec.argv...), spec.env...) {
			if strings.IndexByte(s, 0) >= 0 || len(s) > maxStringBytes {
				t.Fatalf("accepted %q", s)
			}
		}
		if spec.argv[0] != name || spec.argv[0] == "" || spec.dir[0] != '/' {
			t.Fatalf("accepted name %q dir %q", spec.argv[0], spec.dir)
		}
		if spec.grace <= 0 || spec.grace > maxGrace {
			t.Fatalf("accepted grace %v", spec.grace)
		}
		if cpu != 0 && (cpu < minCPUQuota || cpu > cpuPeriod*1024) {
			t.Fatalf("accepted cpu quota %d", cpu)
		}
		if !strings.HasPrefix(spec.env[0], "PATH=") && !strings.HasPrefix(env, "PATH=") {
			t.Fatalf("environment lost its PATH: %q", spec.env)
		}
	})
}

// FuzzRingOffsets: whatever the writes and the offset asked for, a reader gets the bytes at exactly
// the offsets it is told, and lost + read accounts for everything from its offset to the tail.
func FuzzRingOffsets(f *testing.F) {
	f.Add([]byte("hello world"), uint16(3), int64(0), false)
	f.Add(make([]byte, 70000), uint16(1), int64(5), true)
	f.Add([]byte{1, 2, 3}, uint16(60000), int64(99999999), false)
	f.Add([]byte("x"), uint16(0), int64(-5), true)
	f.Fuzz(func(t *testing.T, chunk []byte, repeat uint16, off int64, alternate bool) {
		r := newRing(maxChunk)
		var total int64
		for i := 0; i < int(repeat%200) && len(chunk) > 0; i++ {
			s := stdoutStream
			if alternate && i%2 == 1 {
				s = stderrStream
			}
			r.Write(s, chunk)
			total += int64(len(chunk))
		}
		r.Close()
		buf := make([]byte, maxChunk)
		at, lostSum, read := off, int64(0), int64(0)
		for {
			n, _, got, lost, err := r.Read(context.Background(), at, buf, false)
			switch {
			case off < 0 || off > total:
				if err == nil || errors.Is(err, io.EOF) {
					t.Fatalf("offset %d of %d accepted", off, total)
				}
				return
			case errors.Is(err, io.EOF):
				if at != total || lostSum+read != total-off {
					t.Fatalf("ended at %d with lost %d + read %d, want the tail %d from %d", at, lostSum, read, total, off)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got != at+lost {
				t.Fatalf("chunk at %d after asking %d and losing %d", got, at, lost)
			}
			for i := range n { // byte at absolute offset o is chunk[o % len(chunk)]
				if buf[i] != chunk[(got+int64(i))%int64(len(chunk))] {
					t.Fatalf("wrong byte at offset %d", got+int64(i))
				}
			}
			lostSum, read, at = lostSum+lost, read+int64(n), got+int64(n)
		}
	})
}

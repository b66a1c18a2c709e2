package main

// cgroupfs_test.go: the parsers of cgroup and proc files (no root needed, fake files in t.TempDir()),
// fuzz targets for them, and waitEmpty against a real cgroup (root).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTemp writes data to a new file in a test directory and returns its path.
func writeTemp(t testing.TB, name, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Lines of a mountinfo as this host writes them (proc(5)).
const (
	miRoot     = "26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
	miTmpfs    = "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
	miCgroupV1 = "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
	miNamedV1  = "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup2 rw,name=systemd\n"
	miCgroup2  = "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)

func TestFindCgroup2Mount(t *testing.T) {
	cases := []struct {
		name, mountinfo, want string // want "" means an error
	}{
		{"hybrid host", miRoot + miTmpfs + miCgroupV1 + miCgroup2, "/sys/fs/cgroup/unified"},
		{"unified host with optional fields",
			"25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate\n",
			"/sys/fs/cgroup"},
		{"escaped space", miRoot + `41 30 0:38 / /mnt/my\040cgroups rw - cgroup2 none rw` + "\n", "/mnt/my cgroups"},
		{"first of two", miCgroup2 + "41 30 0:38 / /mnt/second rw - cgroup2 none rw\n", "/sys/fs/cgroup/unified"},
		{"v1 mount whose source is named cgroup2", miNamedV1, ""},
		{"no cgroup2", miRoot + miTmpfs + miCgroupV1, ""},
		{"empty", "", ""},
		{"truncated line", "40 30 0:37 - cgroup2 cgroup2 rw\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findCgroup2Mount(writeTemp(t, "mountinfo", tc.mountinfo))
			switch {
			case tc.want == "" && err == nil:
				t.Errorf("findCgroup2Mount = %q, want an error", got)
			case tc.want == "" && !strings.Contains(err.Error(), "cgroup v2"):
				t.Errorf("error %q does not say cgroup v2 is needed", err)
			case tc.want != "" && (err != nil || got != tc.want):
				t.Errorf("findCgroup2Mount = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := findCgroup2Mount(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing mountinfo: %v, want ErrNotExist", err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"/sys/fs/cgroup", "/sys/fs/cgroup"},
		{`/a\040b`, "/a b"},
		{`/tab\011nl\012`, "/tab\tnl\n"},
		{`/back\134slash`, `/back\slash`},
		{`\040\040`, "  "},
		{`\134040`, `\040`}, // an escaped backslash followed by digits is not a second escape
		{`/short\04`, `/short\04`},
		{`/end\`, `/end\`},
		{`/not\8octal`, `/not\8octal`},
		{`/over\400`, `/over\400`}, // 256 does not fit a byte
		{`/max\377`, `/max\377`},   // the kernel escapes only space, tab, newline and backslash
		{`/sign\+12`, `/sign\+12`},
	}
	for _, tc := range cases {
		if got := unescapeMountPath(tc.in); got != tc.want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// escapeMountPath escapes like the kernel's mangle_path for mountinfo: space, tab, newline and
// backslash become \ooo.
func escapeMountPath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzUnescapeMountPath(f *testing.F) {
	for _, s := range []string{"", "/sys/fs/cgroup", `/a\040b`, `\134`, `\`, `\0`, `\04`, `\400`, `\777\`, "/a b\t\\\n", "\xff\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := unescapeMountPath(s) // must not panic on anything
		if len(got) > len(s) {
			t.Errorf("unescapeMountPath(%q) = %q grew", s, got)
		}
		if !strings.Contains(s, `\`) && got != s {
			t.Errorf("unescapeMountPath(%q) = %q, want it unchanged (no backslash)", s, got)
		}
		if back := unescapeMountPath(escapeMountPath(s)); back != s {
			t.Errorf("unescape(escape(%q)) = %q", s, back)
		}
	})
}

func TestKeyValue(t *testing.T) {
	cpuStat := "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n"
	cases := []struct {
		name, data, key string
		want            uint64
	}{
		{"cpu.stat user", cpuStat, "user_usec", 1000},
		{"cpu.stat system", cpuStat, "system_usec", 500},
		{"zero value", cpuStat, "nr_periods", 0},
		{"absent key", cpuStat, "nr_throttled", 0},
		{"prefix of a key", cpuStat, "user", 0},
		{"suffix of a key", cpuStat, "usec", 0},
		{"no trailing newline", "populated 1", "populated", 1},
		{"cgroup.events", "populated 0\nfrozen 1\n", "populated", 0},
		{"first occurrence wins", "oom_kill 2\noom_kill 7\n", "oom_kill", 2},
		{"max uint64", "x 18446744073709551615\n", "x", 1<<64 - 1},
		{"overflow saturates", "x 18446744073709551616\n", "x", 1<<64 - 1},
		{"junk value", "x max\n", "x", 0},
		{"negative", "x -1\n", "x", 0},
		{"empty file", "", "x", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := keyValue([]byte(tc.data), tc.key); got != tc.want {
				t.Errorf("keyValue(%q, %q) = %d, want %d", tc.data, tc.key, got, tc.want)
			}
		})
	}
}

func FuzzKeyValue(f *testing.F) {
	f.Add([]byte("populated 1\nfrozen 0\n"), "populated", uint64(1))
	f.Add([]byte("user_usec 10\n"), "user_usec", uint64(1<<64-1))
	f.Add([]byte(""), "", uint64(0))
	f.Add([]byte("a\nb c d\n\n"), "b", uint64(42))
	f.Fuzz(func(t *testing.T, data []byte, key string, v uint64) {
		keyValue(data, key) // must not panic on anything
		// A well-formed file: key's line after other lines, which keyValue must skip.
		if key == "" || strings.ContainsAny(key, " \n\r") || strings.HasPrefix(key, "other") {
			return
		}
		file := fmt.Sprintf("other 7\nother_%s 9\n%s %d\n%s 1\n", key, key, v, key)
		if got := keyValue([]byte(file), key); got != v {
			t.Errorf("keyValue(%q, %q) = %d, want %d", file, key, got, v)
		}
	})
}

func TestSingle(t *testing.T) {
	cases := []struct {
		data string
		want uint64
	}{
		{"123\n", 123},
		{"0\n", 0},
		{"max\n", 0},
		{"", 0},
		{" 42 \n", 42},
		{"-1\n", 0},
		{"18446744073709551615\n", 1<<64 - 1},
		{"18446744073709551616\n", 1<<64 - 1}, // saturates, as strconv does
		{"1 2\n", 0},
	}
	for _, tc := range cases {
		if got := single([]byte(tc.data)); got != tc.want {
			t.Errorf("single(%q) = %d, want %d", tc.data, got, tc.want)
		}
	}
}

func TestIOBytes(t *testing.T) {
	cases := []struct {
		name, data  string
		read, write uint64
	}{
		{"empty (io controller off)", "", 0, 0},
		{"one device", "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n", 4096, 8192},
		{"several devices, discards not counted",
			"8:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=5000 dios=1\n" +
				"253:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=3 dios=1\n" +
				"7:1 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n",
			1010, 2020},
		{"no trailing newline", "8:0 rbytes=1 wbytes=2", 1, 2},
		{"key order does not matter", "8:0 wbytes=5 rbytes=3\n", 3, 5},
		{"junk value counts 0", "8:0 rbytes=x wbytes=2\n8:16 rbytes=1\n", 1, 2},
		{"prefixed keys are other keys", "8:0 xrbytes=9 rbytesx=9 rbytes=1\n", 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, w := ioBytes([]byte(tc.data))
			if r != tc.read || w != tc.write {
				t.Errorf("ioBytes = %d, %d; want %d, %d", r, w, tc.read, tc.write)
			}
		})
	}
}

func FuzzIOBytes(f *testing.F) {
	f.Add([]byte("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n"), uint64(1), uint64(2), uint64(3), uint64(4), uint8(2))
	f.Add([]byte("rbytes=\n=\n= = rbytes==1"), uint64(1<<64-1), uint64(1), uint64(0), uint64(0), uint8(0))
	f.Add([]byte(""), uint64(0), uint64(0), uint64(0), uint64(0), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, r1, w1, r2, w2 uint64, devices uint8) {
		ioBytes(data) // must not panic on anything
		// A well-formed io.stat of n devices, alternating two sets of counters, against a plain sum.
		var b strings.Builder
		var wantR, wantW uint64
		for i := range int(devices % 16) {
			r, w := r1, w1
			if i%2 == 1 {
				r, w = r2, w2
			}
			fmt.Fprintf(&b, "%d:%d rbytes=%d wbytes=%d rios=%d wios=%d dbytes=%d dios=%d\n", 8+i, i*16, r, w, r2, w1, r1, w2)
			wantR += r
			wantW += w
		}
		if gotR, gotW := ioBytes([]byte(b.String())); gotR != wantR || gotW != wantW {
			t.Errorf("ioBytes(%q) = %d, %d; want %d, %d", b.String(), gotR, gotW, wantR, wantW)
		}
	})
}

func TestIOMaxValue(t *testing.T) {
	cases := []struct {
		lim  limits
		want string
	}{
		{limits{}, ""},
		{limits{cpuQuota: 5000, memory: 1 << 20, pids: 3}, ""},
		{limits{rbps: 1}, " rbps=1"},
		{limits{wiops: 7}, " wiops=7"},
		{limits{wbps: 1 << 20, riops: 100}, " wbps=1048576 riops=100"},
		{limits{rbps: 1, wbps: 2, riops: 3, wiops: 4}, " rbps=1 wbps=2 riops=3 wiops=4"},
		{limits{rbps: 1<<64 - 1}, " rbps=18446744073709551615"},
	}
	for _, tc := range cases {
		if got := ioMaxValue(tc.lim); got != tc.want {
			t.Errorf("ioMaxValue(%+v) = %q, want %q", tc.lim, got, tc.want)
		}
	}
}

func TestLimitsControllers(t *testing.T) {
	cases := []struct {
		lim  limits
		want []string
	}{
		{limits{}, nil},
		{limits{cpuQuota: 1000}, []string{"cpu"}},
		{limits{memory: 1}, []string{"memory"}},
		{limits{pids: 1}, []string{"pids"}},
		{limits{rbps: 1}, []string{"io"}},
		{limits{wbps: 1}, []string{"io"}},
		{limits{riops: 1}, []string{"io"}},
		{limits{wiops: 1}, []string{"io"}},
		{limits{rbps: 1, wbps: 1, riops: 1, wiops: 1}, []string{"io"}},
		{limits{cpuQuota: 1, memory: 1, pids: 1, wiops: 1}, []string{"cpu", "io", "memory", "pids"}},
	}
	for _, tc := range cases {
		if got := tc.lim.controllers(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v.controllers() = %v, want %v", tc.lim, got, tc.want)
		}
		// Every controller a limit needs is one rund asks the hierarchy for.
		for _, c := range tc.lim.controllers() {
			if !slices.Contains(wantedControllers, c) {
				t.Errorf("%+v needs %s, which is not in wantedControllers %v", tc.lim, c, wantedControllers)
			}
		}
	}
}

// TestIOLimitNeedsDevices: with the io controller on but no -io_devices, an io limit is refused, naming
// the flag; with devices, or without an io limit, nothing is missing.
func TestIOLimitNeedsDevices(t *testing.T) {
	cg := &cgroupFS{available: map[string]bool{"cpu": true, "io": true}}
	if got := cg.missing(limits{rbps: 1, cpuQuota: 1}); len(got) != 1 || !strings.Contains(got[0], "-io_devices") {
		t.Errorf("io limit without -io_devices: missing %q, want one entry naming -io_devices", got)
	}
	if got := cg.missing(limits{cpuQuota: 1}); len(got) != 0 {
		t.Errorf("cpu limit: missing %q, want none", got)
	}
	cg.ioDevices = []string{"8:0"}
	if got := cg.missing(limits{wiops: 1}); len(got) != 0 {
		t.Errorf("io limit with -io_devices 8:0: missing %q, want none", got)
	}
}

// testCgroup makes an empty cgroup below the cgroup2 mount and removes it at cleanup (killing what is
// left in it first).
func testCgroup(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	mount, err := findCgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mount, fmt.Sprintf("rund-test-%s-%d", sanitize(t.Name()), os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if busy, _ := populated(dir); busy {
			kill(dir)
			cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			waitEmpty(cx, dir)
		}
		if err := rmdirRetry(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// sleepIn starts `sleep 1000` directly in cgroup dir (clone3 CLONE_INTO_CGROUP) and returns a channel
// that yields its Wait result; the process is reaped concurrently, as rund's init reaps its job.
func sleepIn(t *testing.T, dir string) <-chan error {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	c := exec.Command("sleep", "1000")
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait(); close(waited) }() // later receives get nil
	t.Cleanup(func() {
		c.Process.Kill()
		<-waited
	})
	return waited
}

func TestWaitEmptyAfterKill(t *testing.T) {
	dir := testCgroup(t)
	cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitEmpty(cx, dir); err != nil {
		t.Fatalf("waitEmpty on an empty cgroup: %v", err)
	}
	waited := sleepIn(t, dir)
	if busy, err := populated(dir); err != nil || !busy {
		t.Fatalf("populated with sleep inside = %v, %v; want true", busy, err)
	}
	if err := kill(dir); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := waitEmpty(cx, dir); err != nil {
		t.Fatalf("waitEmpty after cgroup.kill: %v", err)
	}
	if busy, err := populated(dir); err != nil || busy {
		t.Errorf("populated after waitEmpty = %v, %v; want false", busy, err)
	}
	var exitErr *exec.ExitError
	if err := <-waited; !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("sleep ended with %v, want SIGKILL", err)
	}
	if err := rmdirRetry(dir); err != nil {
		t.Fatalf("rmdirRetry: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup still there after rmdirRetry: %v", err)
	}
}

func TestWaitEmptyDeadline(t *testing.T) {
	dir := testCgroup(t)
	sleepIn(t, dir)
	cx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := waitEmpty(cx, dir)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitEmpty on a busy cgroup with a 100ms deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("waitEmpty gave up after %v, before its deadline", d)
	}
	if busy, _ := populated(dir); !busy {
		t.Error("cgroup emptied by itself; the test proves nothing")
	}
}

func TestWaitEmptyCancel(t *testing.T) {
	dir := testCgroup(t)
	sleepIn(t, dir)
	cx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitEmpty(cx, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("waitEmpty with a cancelled context: %v, want Canceled", err)
	}
}

func TestWaitEmptyMissingCgroup(t *testing.T) {
	requireRoot(t)
	cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitEmpty(cx, filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("waitEmpty of a directory that does not exist succeeded")
	}
}

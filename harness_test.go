package main

// harness_test.go: a real server on loopback with a real PKI, for the tests of every other file.
// The test binary doubles as rund: TestMain runs "init" (a job's PID 1), "serve" (a server in a
// subprocess) and "probe" (a job command that reports what it sees from inside the namespaces).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "init":
			failStep = os.Getenv("RUND_TEST_FAIL_STEP") // TestSetupStepsFatal
			os.Exit(runInit())
		case "serve":
			os.Exit(runServe(os.Args[2:]))
		case "client":
			os.Exit(runClient(os.Args[2:], clientIO{os.Stdout, os.Stderr}))
		case "probe":
			os.Exit(probe(os.Args[2:]))
		case "e2e-tool":
			os.Exit(e2eTool(os.Args[2:]))
		case "seccomp-child":
			os.Exit(seccompChild(os.Args[2:]))
		case "filtered":
			os.Exit(execFiltered(os.Args[2:]))
		}
	}
	// os/signal starts one watcher goroutine at the first Notify, for the life of the process: started
	// here, so that the goroutine leak checks do not count it against the first test that runs
	// `rund client run` (which forwards signals) in process.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	signal.Stop(c)
	os.Exit(runTests(m))
}

// runTests points initExe at a build of the lean init, when one can be made: under -race every job's
// init would otherwise be this test binary, and the race runtime sleeps a second at each exit.
//
// Contained jobs have a /tmp, /var/tmp and /dev/shm of their own and run as a uid of their own, so the
// files tests hand to jobs (this binary as the probe, scripts, working directories) live in
// /run/rund-test-<pid> (or /var/lib/...), which is TMPDIR for the tests: not under any of those, and
// not under the checkout, whose path may be neither (a clone in /tmp, or in root's 0700 home).
func runTests(m *testing.M) int {
	// A fuzzing worker (go test -fuzz runs this binary again with -test.fuzzworker, internal/fuzz) runs
	// fuzz targets only, which need none of this, and the coordinator kills it at the end: what it made
	// here would be left behind.
	if slices.Contains(os.Args[1:], "-test.fuzzworker") {
		return m.Run()
	}
	base := "/run"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = "/var/lib"
	}
	dir := filepath.Join(base, fmt.Sprintf("rund-test-%d", os.Getpid()))
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Setenv("TMPDIR", filepath.Join(dir, "tmp"))
	if err := copyFile(mustExecutable(), filepath.Join(dir, "rund.test")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testExe = filepath.Join(dir, "rund.test")
	build := exec.Command("go", "build", "-tags", "rundinit", "-o", filepath.Join(dir, "rund-init"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err == nil {
		initExe = filepath.Join(dir, "rund-init")
	} else {
		fmt.Fprintf(os.Stderr, "tests use the race-enabled test binary as job init (slow): go build: %v\n%s", err, out)
	}
	if err := makeRund(runtime.GOARCH, filepath.Join(dir, "rund")); err == nil {
		rundExe = filepath.Join(dir, "rund")
	} else {
		fmt.Fprintf(os.Stderr, "tests that run rund itself are skipped: %v\n", err)
	}
	return m.Run()
}

// testExe is a copy of this test binary that jobs can run (runTests).
var testExe string

// rundExe is rund as make build makes it, its lean init inside (runTests), or "" if it could not be
// built; initExe is that lean init alone, which the tests' in-process servers run as each job's init.
var rundExe string

func mustExecutable() string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

// jobTempDir is t.TempDir, which jobs can read: contained jobs run as a uid of their own, and
// t.TempDir's parent is mode 0700.
func jobTempDir(t testing.TB) string {
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testPKI is a CA with a server certificate and clients: a (dns:a), b (dns:b) and c (dns:c and dns:a,
// so it shares one name with a), all written to dir.
type testPKI struct {
	dir string
	ca  *issued
}

var clientNames = map[string][]string{"a": {"a"}, "b": {"b"}, "c": {"c", "a"}}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	if p.ca, err = issue(certSpec{name: "test CA", isCA: true}, nil); err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(p.dir, "ca.crt"), p.ca.cert.Raw)
	p.leaf(t, "server", certSpec{name: "localhost", dns: []string{"localhost"},
		ips: []net.IP{net.IPv4(127, 0, 0, 1)}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	for name, dns := range clientNames {
		p.leaf(t, name, certSpec{name: name, dns: dns, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	}
	return p
}

// leaf issues a certificate from the test CA and writes it as dir/name.{crt,key}.
func (p *testPKI) leaf(t testing.TB, name string, spec certSpec) *issued {
	t.Helper()
	c, err := issue(spec, p.ca)
	if err == nil {
		err = c.write(p.dir, name)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *testPKI) file(name string) string { return filepath.Join(p.dir, name) }

func writePEM(t testing.TB, path string, der []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// testServer is a server in this process, with its own cgroup parent.
type testServer struct {
	addr string
	pki  *testPKI
	m    *manager
	cg   *cgroupFS
}

type serverOpt func(*serveConfig)

// requireRoot skips a test that needs root and cgroup2 when they are missing. CI runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates cgroups and namespaces")
	}
	if _, err := findCgroup2Mount("/proc/self/mountinfo"); err != nil {
		t.Skip(err)
	}
}

// startServer runs a server on a loopback port. Cleanup shuts it down and checks that no job cgroup,
// no job process and no goroutine outlives it.
func startServer(t *testing.T, opts ...serverOpt) *testServer {
	t.Helper()
	requireRoot(t)
	goroutines, fds := runtime.NumGoroutine(), openFDs()
	ts, stop := serveInProcess(t, "rund-test", opts...)
	t.Cleanup(func() {
		stop()
		assertNoJobCgroups(t, ts.cg.parent, nil)
		if err := rmdirRetry(ts.cg.parent); err != nil {
			t.Errorf("remove test cgroup parent: %v", err)
		}
		assertGoroutines(t, goroutines)
		assertFDs(t, fds)
	})
	return ts
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

// assertFDs waits (bounded, like assertGoroutines) for the open fd count to fall back to want.
func assertFDs(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFDs() > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openFDs(); n > want {
		entries, _ := os.ReadDir("/proc/self/fd")
		var links []string
		for _, e := range entries {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			links = append(links, e.Name()+"->"+l)
		}
		t.Errorf("%d file descriptors outlived the test (had %d): %v", n-want, want, links)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// serveInProcess runs a server in this process, its cgroup parent named prefix-PID-test; stop shuts it
// down (every job stopped, its cgroups removed) and leaves the parent for the caller.
func serveInProcess(tb testing.TB, prefix string, opts ...serverOpt) (ts *testServer, stop func()) {
	requireRoot(tb)
	mount, _ := findCgroup2Mount("/proc/self/mountinfo")
	c := serveConfig{jobsConfig: jobsConfig{ringSize: 1 << 20, retainJobs: 1000, maxJobs: 1000,
		maxJobsPerClient: 1000, spareInits: 2, losslessTimeout: 30 * time.Second, outputBudget: 1 << 30},
		conns: connBounds{maxConns: 100000, maxPending: 100000, maxPendingPerPrefix: 100000, maxInflight: 100000,
			maxInflightPerClient: 100000, idle: time.Hour, requestBody: time.Minute},
		cgroupParent: filepath.Join(mount, fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), sanitize(tb.Name())))}
	// Contained, as by default, with a uid range of its own beyond the default one.
	c.contain = &containment{uids: &uidRange{first: 1879048192 + 65536 + 1024*uint32(testServers.Add(1)), count: 1024,
		used: map[uint32]bool{}}, tmpSize: 64 << 20}
	for _, o := range opts {
		o(&c)
	}
	ts = &testServer{pki: newTestPKI(tb)}
	tlsCfg, err := newRotatingTLS(ts.pki.file("ca.crt"), ts.pki.file("server.crt"), ts.pki.file("server.key"), "")
	if err != nil {
		tb.Fatal(err)
	}
	if ts.cg, err = setupCgroups(c.cgroupParent, c.ioDevices); err != nil {
		tb.Fatal(err)
	}
	ts.m = newManager(ts.cg, c.jobsConfig)
	if err := ts.m.grants.load(); err != nil {
		ts.m.shutdown()
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ts.addr = lis.Addr().String()
	srv, _ := newGRPCServer(tlsCfg, ts.m, c)
	lis = newConnTable(lis, c.conns)
	served := make(chan struct{})
	go func() { srv.Serve(lis); close(served) }()
	return ts, func() {
		srv.Stop()
		ts.m.shutdown()
		<-served
		ts.cg.unlock()
	}
}

// testServers numbers the in-process servers, for their uid ranges.
var testServers atomic.Uint32

// uncontained runs the server's jobs as -unsafe_uncontained_jobs does.
func uncontained(c *serveConfig) { c.contain = nil }

// assertNoJobCgroups fails if any directory is left below parent, other than the idle sandboxes of m
// (a running server's spares, at most its -spare_inits; m is nil once it has shut down). A spare in
// the making is not idle yet, so with m it waits (bounded, like assertGoroutines) for the rest to go.
func assertNoJobCgroups(t testing.TB, parent string, m *manager) {
	t.Helper()
	leftovers := func() []string {
		var left []string
		spares := 0
		entries, _ := os.ReadDir(parent) // sorted by name: ULIDs, so by age
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if m != nil && spares < m.cfg.spareInits && idleSandbox(filepath.Join(parent, e.Name())) {
				spares++
				continue
			}
			left = append(left, e.Name())
		}
		return left
	}
	left := leftovers()
	for deadline := time.Now().Add(5 * time.Second); m != nil && len(left) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		left = leftovers()
	}
	for _, name := range left {
		t.Errorf("cgroup %s/%s outlived its job", parent, name)
	}
}

// assertGoroutines waits (bounded) for the goroutine count to fall back to want. Goroutines of closed
// connections and ended jobs exit asynchronously, so this is the one place that polls.
func assertGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > want {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines outlived the test (had %d):\n%s", n-want, want, buf)
	}
}

// dialAs connects as client name ("a", "b" or "c") and closes the connection at cleanup.
func (ts *testServer) dialAs(t testing.TB, name string) rpcpb.JobControllerClient {
	t.Helper()
	cfg, err := clientTLS(ts.pki.file("ca.crt"), ts.pki.file(name+".crt"), ts.pki.file(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return ts.dialTLS(t, cfg)
}

func (ts *testServer) dialTLS(t testing.TB, cfg *tls.Config) rpcpb.JobControllerClient {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rpcpb.NewJobControllerClient(conn)
}

// ctx is a context for one test call, bounded so a hang fails instead of stalling CI.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// startJob starts argv as the given client and fails the test on error.
func startJob(t testing.TB, c rpcpb.JobControllerClient, req *rpcpb.JobStartRequest) string {
	t.Helper()
	id, err := c.Start(ctx(t), req)
	if err != nil {
		t.Fatalf("start %v %v: %v", req.Name, req.Args, err)
	}
	return id.Ulid
}

func cmd(name string, args ...string) *rpcpb.JobStartRequest {
	return &rpcpb.JobStartRequest{Name: name, Args: args}
}

// readAll reads a job's whole log (following until the job ends) and returns stdout and stderr. It
// reads lossy, so that waiting for a job that floods its output does not hold the job back.
func readAll(t testing.TB, c rpcpb.JobControllerClient, id string) (stdout, stderr string) {
	t.Helper()
	stream, err := c.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out.String(), errb.String()
		}
		if err != nil {
			t.Fatalf("log %s: %v", id, err)
		}
		out.Write(msg.Stdout)
		errb.Write(msg.Stderr)
	}
}

// waitDone follows the log to its end (which comes after the final status is set) and returns the status.
func waitDone(t testing.TB, c rpcpb.JobControllerClient, id string) *rpcpb.JobStatus {
	t.Helper()
	readAll(t, c, id)
	st, err := c.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.State == rpcpb.JobStatus_STATE_RUNNING {
		t.Fatalf("job %s still running after its log ended", id)
	}
	return st
}

// selfCmd runs this test binary inside a job as "probe what...".
func selfCmd(t testing.TB, what ...string) *rpcpb.JobStartRequest {
	t.Helper()
	return cmd(testExe, append([]string{"probe"}, what...)...)
}

// probe runs inside a job and prints what it sees, one "key=value" line per fact.
func probe(what []string) int {
	for _, w := range what {
		switch w {
		case "pid":
			fmt.Printf("pid=%d\nppid=%d\n", os.Getpid(), os.Getppid())
		case "procs":
			entries, _ := os.ReadDir("/proc")
			var pids []string
			for _, e := range entries {
				if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
					pids = append(pids, e.Name())
				}
			}
			fmt.Printf("procs=%s\n", strings.Join(pids, ","))
		case "net":
			ifs, err := net.Interfaces()
			if err != nil {
				fmt.Printf("net-error=%v\n", err)
			}
			for _, i := range ifs {
				fmt.Printf("if=%s up=%v\n", i.Name, i.Flags&net.FlagUp != 0)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				var c net.Conn
				if c, err = net.Dial("tcp", l.Addr().String()); err == nil {
					c.Close()
				}
				l.Close()
			}
			fmt.Printf("loopback-dial=%v\n", err == nil)
		case "hostname":
			h, _ := os.Hostname()
			fmt.Printf("hostname=%s\n", h)
		case "env":
			for _, kv := range os.Environ() {
				fmt.Printf("env=%s\n", kv)
			}
		case "fds":
			entries, _ := os.ReadDir("/proc/self/fd")
			var fds []string
			for _, e := range entries {
				fds = append(fds, e.Name())
			}
			fmt.Printf("fds=%s\n", strings.Join(fds, ","))
		case "cwd":
			wd, _ := os.Getwd()
			fmt.Printf("cwd=%s\n", wd)
		case "keys": // the session keyring, and whether the server's test key is found from it
			ring, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
			_, serr := unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", "rund-test-secret", 0)
			fmt.Printf("session-keyring=%d %v\nserver-key-found=%v\n", ring, err, serr == nil)
			status, _ := os.ReadFile("/proc/self/status")
			for _, line := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok {
					fmt.Printf("no-new-privs=%s\n", strings.TrimSpace(v))
				}
			}
		case "syscalls": // "syscall=<name> <errno or ok>" for each syscall the job's filter denies (seccomp_test.go)
			probeSyscalls()
		case "hold-quotas": // inotify instances and message queues, as many as it may, held (ucounts_test.go)
			holdQuotas()
		case "firewall": // iptables' raw socket, then nf_tables' netlink (e2e_grants_test.go)
			fmt.Printf("firewall=%s\n", tryFirewall())
		case "set-lo-flags": // lo's flags set to what they are: needs CAP_NET_ADMIN over its namespace (grants_test.go)
			ifr, err := unix.NewIfreq("lo")
			fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err == nil {
				err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
			}
			if err == nil {
				err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
			}
			unix.Close(fd)
			fmt.Printf("set-lo-flags=%v\n", err)
		case "fill-inodes": // empty files in /tmp until the tmpfs refuses one (tmp_test.go)
			n, err := 0, error(nil)
			for ; err == nil; n++ {
				err = os.WriteFile(fmt.Sprintf("/tmp/i%d", n), nil, 0o644)
			}
			fmt.Printf("files=%d\nfill-error=%v\n", n-1, err)
		default:
			if addr, ok := strings.CutPrefix(w, "dial="); ok { // a TCP connection to addr (grants_test.go)
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil {
					c.Close()
				}
				fmt.Printf("dial=%v\n", err)
			}
		}
	}
	return 0
}

// tryFirewall tries the first step of changing a firewall rule both ways there are: iptables' raw
// socket (CAP_NET_RAW), and a message to nf_tables (nfnetlink_rcv answers EPERM without CAP_NET_ADMIN
// over the network namespace, before it reads the message). It says "refused: ..." if both are refused.
func tryFirewall() string {
	fd, rawErr := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if rawErr == nil {
		unix.Close(fd)
		return "a raw socket opened"
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Sprintf("refused: raw socket: %v; nf_tables netlink socket: %v", rawErr, err)
	}
	defer unix.Close(fd)
	// One NFNL_MSG_BATCH_BEGIN for nf_tables (subsystem 10), with an ack asked for: struct nlmsghdr, then
	// struct nfgenmsg (family, version, res_id in network order).
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_MSG_BATCH_BEGIN)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.BigEndian.PutUint16(msg[unix.NLMSG_HDRLEN+2:], unix.NFNL_SUBSYS_NFTABLES)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Sprintf("refused: raw socket: %v; nf_tables send: %v", rawErr, err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || n < unix.NLMSG_HDRLEN+4 || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return fmt.Sprintf("nf_tables answered %d bytes (%v)", n, err)
	}
	errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])))
	if errno != syscall.EPERM {
		return fmt.Sprintf("nf_tables answered errno %d (%v)", int(errno), errno)
	}
	return fmt.Sprintf("refused: raw socket: %v; nf_tables: %v", rawErr, errno)
}

// facts parses probe output into key -> values.
func facts(out string) map[string][]string {
	f := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			f[k] = append(f[k], v)
		}
	}
	return f
}

func code(err error) string { return status.Code(err).String() }

//go:build !rundinit

// Command rund runs Linux processes ("jobs") for remote clients over mutual TLS, each in its own
// cgroup v2 and PID, mount, network, UTS and IPC namespaces. See README.md.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
)

const mainUsage = `usage: rund <command> [flags]; rund <command> -h for its flags

commands:
  serve     run the server
  client    talk to a server (rund client -h for its commands)
  certs     write a PKI (a CA and its key, server and two client certificates), or one more certificate from it
  version   print rund's version, VCS revision and Go version`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, mainUsage)
		os.Exit(2)
	}
	var code int
	switch cmd := os.Args[1]; {
	case cmd == "serve":
		code = runServe(os.Args[2:])
	case cmd == "client":
		code = runClient(os.Args[2:], clientIO{os.Stdout, os.Stderr})
	case cmd == "certs":
		code = runCerts(os.Args[2:])
	case cmd == "init":
		code = runInit()
	case cmd == "version" || cmd == "-version" || cmd == "--version":
		fmt.Println(versionLine())
	case isHelp(cmd):
		fmt.Println(mainUsage)
	default:
		fmt.Fprintf(os.Stderr, "rund: %v\n", unknownCommand(cmd, []string{"serve", "client", "certs", "version", "help"}))
		code = 2
	}
	os.Exit(code)
}

func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// parseFlags parses args with fs and keeps the flag package's own printing quiet, so that a bad flag
// is one line from the caller. -h prints head and the flags with their defaults on stdout and returns
// flag.ErrHelp (exitCode: 0).
func parseFlags(fs *flag.FlagSet, args []string, head string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "%s\n\nflags:\n", head)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	return err
}

// parseArgs parses the flags of a command that takes no other arguments, printing any error as one
// line on stderr; ok is false when the command must exit with code.
func parseArgs(fs *flag.FlagSet, args []string, head string) (code int, ok bool) {
	err := parseFlags(fs, args, head, os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// defaultFile is where a certificate or key is looked for when no flag or variable names it:
// ./tls/name if it is there (a checkout after make run), else name in configDir.
func defaultFile(name string) string {
	if _, err := os.Stat(filepath.Join("tls", name)); err == nil {
		return filepath.Join("tls", name)
	}
	return filepath.Join(configDir(), name)
}

// configDir is where rund certs writes by default: $XDG_CONFIG_HOME/rund, or ~/.config/rund.
func configDir() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "tls"
	}
	return filepath.Join(dir, "rund")
}

// version is set by make release from git describe (-ldflags -X main.version=...); a plain go build
// leaves it empty and the module version that Go stamps from the checkout stands in.
var version string

func versionLine() string {
	bi, _ := debug.ReadBuildInfo() // there is one: rund is built in module mode
	rev := "unknown"
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			rev = s.Value
		}
	}
	return fmt.Sprintf("rund %s (revision %s, %s)", cmp.Or(version, bi.Main.Version), rev, bi.GoVersion)
}

// serveConfig is everything "rund serve" takes from its flags: its own, and the job table's.
type serveConfig struct {
	addr, ca, cert, key string
	crl                 string // -crl: "" for none
	cgroupParent        string
	logFormat           string
	ioDevices           []string
	conns               connBounds
	jobsConfig
}

const serveHead = `usage: rund serve [flags]

Serve jobs to clients with a certificate signed by -ca. Sizes are bytes; durations 30s, 2m, 24h.

example:
  rund serve -addr :8000 -max_jobs_per_client 10`

func runServe(args []string) int {
	var c serveConfig
	fs := flag.NewFlagSet("rund serve", flag.ContinueOnError)
	serveFlags(fs, &c)
	contain := containFlags(fs)
	code, ok := parseArgs(fs, args, serveHead)
	if !ok {
		return code
	}
	if err := setLogFormat(c.logFormat); err != nil {
		log.Printf("rund serve: %v", err)
		return 2
	}
	for _, bad := range []struct {
		is  bool
		msg string
	}{
		{c.ringSize < maxChunk, fmt.Sprintf("-log_buffer must be at least %d bytes", maxChunk)},
		{c.outputBudget < int64(c.ringSize), "-output_budget must be at least -log_buffer"},
		{min(c.losslessTimeout, c.conns.idle, c.conns.requestBody) <= 0,
			"-lossless_timeout, -conn_idle_timeout and -request_body_timeout must be positive"},
		{c.spareInits < 0 || c.spareInits > 64, "-spare_inits must be 0..64"},
		{c.defaultPids > maxPids, fmt.Sprintf("-job_max_pids must be at most %d", maxPids)},
	} {
		if bad.is {
			log.Printf("rund serve: %s", bad.msg)
			return 2
		}
	}
	contained, err := contain()
	if err == nil && contained == nil && c.grantsFile != "" {
		err = errors.New("-grants says who may run as root; -unsafe_uncontained_jobs gives that to everyone: use one")
	}
	if err != nil {
		log.Printf("rund serve: %v", err)
		return 2
	}
	c.contain = contained
	if err := serve(c); err != nil {
		log.Printf("rund serve: %v", err)
		return 1
	}
	return 0
}

// setLogFormat sets the form of rund serve's log on stderr, the audit trail's (audit.go) and every
// log.Printf's alike. text is slog's default: the log package's lines, slog's as "INFO msg key=value ...".
func setLogFormat(format string) error {
	switch format {
	case "text":
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	default:
		return fmt.Errorf("-log_format %q: want text or json", format)
	}
	return nil
}

// serveFlags registers rund serve's flags, other than containment's (containFlags), each into its field of c.
func serveFlags(fs *flag.FlagSet, c *serveConfig) {
	fs.StringVar(&c.addr, "addr", ":8000", "listen address")
	fs.StringVar(&c.ca, "ca", defaultFile("ca.crt"), "CA certificate that client certificates must chain to")
	fs.StringVar(&c.cert, "cert", defaultFile("server.crt"), "server certificate")
	fs.StringVar(&c.key, "key", defaultFile("server.key"), "server private key (mode 0600)")
	fs.StringVar(&c.crl, "crl", "", "CRL (PEM or DER), signed by a CA of -ca, of client certificates to refuse, "+
		"at the handshake and at each call; reloaded on SIGHUP")
	fs.StringVar(&c.cgroupParent, "cgroup", "", "cgroup2 directory for job cgroups (default <cgroup2 mount>/rund)")
	fs.StringVar(&c.grantsFile, "grants", "", "JSON file of what each client identity's jobs may have beyond the "+
		"default containment: the host's network, root, which -job_dirs, limits (README, \"Grants\"); reloaded on SIGHUP")
	fs.StringVar(&c.logFormat, "log_format", "text", "the log's lines, the audit trail's too: text or json (log/slog)")
	fs.Func("io_devices",
		"comma-separated MAJ:MIN whole-disk block devices that io limits apply to (without them, io limits are refused)",
		func(s string) error { c.ioDevices = strings.Split(s, ","); return nil })
	fs.IntVar(&c.ringSize, "log_buffer", 1<<20, "bytes of output kept per job")
	fs.IntVar(&c.retainJobs, "retain_jobs", 1000, "finished jobs kept for status and log, per client")
	fs.IntVar(&c.maxJobs, "max_jobs", 1000, "live jobs the server runs at most")
	fs.IntVar(&c.maxJobsPerClient, "max_jobs_per_client", 100, "live jobs one client identity runs at most")
	fs.IntVar(&c.spareInits, "spare_inits", 2, "job inits started ahead of the Starts that will use them; 0 for none")
	fs.Int64Var(&c.outputBudget, "output_budget", min(256<<20, int64(physicalMemory()/8)),
		"bytes of output all jobs' rings may hold together; finished jobs' output goes first "+
			"(by default min(256 MiB, RAM/8), here)")
	fs.IntVar(&c.conns.maxConns, "max_conns", 1000, "open connections at most (lowered to keep fds for jobs)")
	fs.IntVar(&c.conns.maxPending, "max_pending_conns", 256, "connections in their TLS handshake at most, in all")
	fs.IntVar(&c.conns.maxPendingPerPrefix, "max_pending_conns_per_prefix", 8,
		"connections in their TLS handshake at most, per source /24 (IPv4) or /64 (IPv6)")
	fs.IntVar(&c.conns.maxPendingPerPrefix, "max_pending_conns_per_ip", 8, "the old name of -max_pending_conns_per_prefix")
	fs.DurationVar(&c.conns.idle, "conn_idle_timeout", 2*time.Minute,
		"a connection with no request in flight this long (from its handshake, or its last request) is closed")
	fs.DurationVar(&c.conns.requestBody, "request_body_timeout", 5*time.Second,
		"a request whose message has not arrived whole this long after its headers is cancelled")
	fs.IntVar(&c.conns.maxInflight, "max_requests", 1024,
		"requests in flight at most, in all (a log stream until it ends)")
	fs.IntVar(&c.conns.maxInflightPerClient, "max_requests_per_client", 128,
		"requests in flight at most, per client identity (a log stream until it ends)")
	fs.Uint64Var(&c.tmpTotal, "job_tmp_total", physicalMemory()/2, "bytes the tmpfs of all contained jobs (and "+
		"spares), -job_tmp_size each, may hold together where the memory controller is missing; 0 for no bound "+
		"(by default RAM/2, here)")
	fs.Uint64Var(&c.defaultPids, "job_max_pids", 4096, "processes (threads) a job may have when its Start sets no "+
		"max_pids: its pids.max, or where the pids controller is missing, RLIMIT_NPROC of a contained job's own uid; "+
		"0 for no bound")
	fs.DurationVar(&c.losslessTimeout, "lossless_timeout", 30*time.Second,
		"a lossless log reader (rund client run and log) that reads nothing this long no longer holds its job back")
}

// containFlags registers the flags of job containment; what it returns makes the containment from
// them once they are parsed: nil with -unsafe_uncontained_jobs.
func containFlags(fs *flag.FlagSet) func() (*containment, error) {
	uncontained := fs.Bool("unsafe_uncontained_jobs", false,
		"run jobs as host root, with the host's mounts, cgroups and syscalls: anyone with a client certificate owns the host")
	uidFirst := fs.Uint("job_uid_first", 1879048192,
		"first host uid (and gid) of contained jobs; each live job has one of its own")
	uidCount := fs.Uint("job_uid_count", 65536, "how many host uids from -job_uid_first contained jobs may use")
	tmpSize := fs.Uint64("job_tmp_size", 256<<20,
		"bytes of each contained job's private /tmp, /var/tmp and /dev/shm together (charged to its memory)")
	var dirs []string
	fs.Func("job_dirs", "comma-separated root-owned host directories where contained jobs may write: "+
		"each sees DIR as its own new DIR/<job id>, kept if not empty",
		func(s string) error { dirs = strings.Split(s, ","); return nil })
	return func() (*containment, error) {
		if *uncontained {
			if dirs != nil {
				return nil, errors.New("-job_dirs is for contained jobs; -unsafe_uncontained_jobs writes anywhere")
			}
			return nil, nil
		}
		if *tmpSize < 1<<20 { // tmpfs reads size=0 as no bound at all
			return nil, errors.New("-job_tmp_size must be at least 1 MiB")
		}
		uids, err := newUIDRange(uint32(min(*uidFirst, 1<<32-1)), uint32(min(*uidCount, 1<<32-1)))
		if err != nil {
			return nil, err
		}
		if err := checkJobDirs(dirs); err != nil {
			return nil, err
		}
		return &containment{uids: uids, tmpSize: *tmpSize, dirs: dirs}, nil
	}
}

// checkJobDirs refuses a directory in -job_dirs that a job's init could not bind its own directory on,
// or whose bind would hide a mount of the job's (one inside or around another, or around or inside a
// job's private /tmp, /var/tmp or /dev/shm, /proc or /sys, also by a symbolic link),
// and one that a user but root could change: the init makes DIR/<id> there as root, and chowns it to
// the job's uid. (The directories above DIR must be root's alone too; README says so, rund does not
// check them.)
func checkJobDirs(dirs []string) error {
	for i, d := range dirs {
		if err := checkJobDir(d); err != nil {
			return fmt.Errorf("-job_dirs %q: %w", d, err)
		}
		// The other dirs, and a job's own mounts: its bind would hide its private directories (init.go) or
		// be hidden by them, and in /proc or /sys the init would make and chown DIR/<id> in a kernel file
		// system (in /sys/fs/cgroup, a cgroup).
		for _, o := range slices.Concat(dirs[:i], dirs[i+1:], privateDirs, []string{"/proc", "/sys"}) {
			if nested(d, o) {
				return fmt.Errorf("-job_dirs %q: the same as, inside or around %s", d, o)
			}
		}
	}
	return nil
}

// checkJobDir refuses a -job_dirs path that is not absolute, not clean, /, or has a symbolic link on
// it: the checks of checkJobDirs compare paths as strings, and the init binds d itself. It refuses one
// that is not a directory, or that a user but root could change: the init makes DIR/<id> in it as root.
func checkJobDir(d string) error {
	const wantPath = "want an absolute path other than /, clean and with no symbolic link"
	if !filepath.IsAbs(d) || d == "/" {
		return errors.New(wantPath)
	}
	if filepath.Clean(d) != d {
		return fmt.Errorf("%s (its clean form is %s)", wantPath, filepath.Clean(d))
	}
	real, err := filepath.EvalSymlinks(d)
	if err != nil {
		return fmt.Errorf("want an existing directory with no symbolic link on its path: %w", err)
	}
	if real != d {
		return fmt.Errorf("%s (it resolves to %s)", wantPath, real)
	}
	const wantDir = "want an existing directory, owned by root and writable by no one else"
	fi, err := os.Stat(d)
	if err != nil {
		return fmt.Errorf("%s: %w", wantDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s (it is not a directory)", wantDir)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		return fmt.Errorf("%s (its owner is uid %d)", wantDir, uid)
	}
	if fi.Mode()&0o022 != 0 {
		return fmt.Errorf("%s (its mode is %v)", wantDir, fi.Mode().Perm())
	}
	return nil
}

// nested says whether the clean paths a and b are the same, or one is inside the other.
func nested(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// serve runs the server until SIGTERM or SIGINT, then stops accepting, ends every job, removes their
// cgroups and returns nil. Its goroutines: one runs srv.Serve and ends when the server stops (its result
// goes to a buffered channel, read only if it ends first); one runs GracefulStop at shutdown and ends
// when the last call does, or when srv.Stop cuts the calls off 5 s after the jobs are gone.
func serve(c serveConfig) error {
	n := newNotifier()
	if err := checkHost(c.contain != nil); err != nil {
		return err
	}
	tlsCfg, err := newRotatingTLS(c.ca, c.cert, c.key, c.crl)
	if err != nil {
		return err
	}
	cg, err := setupCgroups(c.cgroupParent, c.ioDevices)
	if err != nil {
		return err
	}
	defer cg.unlock()
	lis, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	c.conns.maxConns = fdBoundConns(c)
	lis = newConnTable(lis, c.conns)
	// The output budget bounds what the rings hold, not the garbage their growth leaves behind: a soft
	// memory limit (runtime/debug) has the GC collect before the runtime's memory passes the budget by
	// more than the server's own working set (48 MiB; RSS adds the binary's pages). GOMEMLIMIT wins.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(c.outputBudget + 48<<20)
	}
	if err := sealInit(); err != nil { // before the first spare's init starts
		log.Printf("the lean init: %v; rund runs itself as each job's init (slower to start, as contained)", err)
	}
	m := newManager(cg, c.jobsConfig)
	if err := m.grants.load(); err != nil {
		m.shutdown()
		return fmt.Errorf("-grants %w", err)
	}
	srv, health := newGRPCServer(tlsCfg, m, c)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Printf("rund serving on %s; jobs in %s; controllers %v; io devices %v; output budget %d MiB",
		lis.Addr(), cg.parent, slices.Sorted(maps.Keys(cg.available)), cg.ioDevices, c.outputBudget>>20)
	// The listener queues connections from net.Listen on, and Serve accepts them: clients may call now.
	n.notify("READY=1")
	err = awaitStop(c, sigs, served, tlsCfg.reload, m.grants)
	n.notify("STOPPING=1")
	health.Shutdown() // NOT_SERVING to every watcher
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }() // refuses new calls at once
	m.shutdown()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	return err
}

// awaitStop returns when SIGTERM or SIGINT arrives (nil), or when Serve ends (its error); on SIGHUP it
// re-reads the certificates and the grants.
func awaitStop(c serveConfig, sigs <-chan os.Signal, served <-chan error, reload func() error, gs *grants) error {
	for {
		select {
		case err := <-served:
			return err
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Printf("%v: stopping every job", s)
				return nil
			}
			reloadTLS(c, reload)
			reloadGrants(gs)
		}
	}
}

// reloadTLS re-reads the server's certificates and CRL on SIGHUP; if it cannot, the old ones stay in use.
func reloadTLS(c serveConfig, reload func() error) {
	if err := reload(); err != nil {
		log.Printf("SIGHUP: keeping the old certificates and CRL: %v", err)
		return
	}
	log.Printf("SIGHUP: reloaded %s", strings.Join(slices.DeleteFunc([]string{c.ca, c.cert, c.key, c.crl},
		func(f string) bool { return f == "" }), ", "))
}

// reloadGrants re-reads -grants on SIGHUP; if it cannot, the grants in force stay.
func reloadGrants(gs *grants) {
	if gs.path == "" {
		return
	}
	if err := gs.load(); err != nil {
		log.Printf("SIGHUP: keeping the grants in force: %v", err)
		return
	}
	log.Printf("SIGHUP: reloaded %s", gs.path)
}

// fdBoundConns is -max_conns, lowered if need be so that connections cannot take the fds that jobs
// need: each live job or spare holds four (its output pipes, its init's two), a starting one a few
// more for a moment, and the server a few hundred of its own. Go raises the soft RLIMIT_NOFILE to the
// hard one at start (os package, Go 1.19).
func fdBoundConns(c serveConfig) int {
	var l syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) // cannot fail for RLIMIT_NOFILE
	room := int(min(l.Cur, 1<<30)) - 256 - 4*(c.maxJobs+c.spareInits)
	if room < c.conns.maxConns {
		log.Printf("-max_conns %d lowered to %d: RLIMIT_NOFILE is %d and jobs need theirs",
			c.conns.maxConns, max(room, 16), l.Cur)
		return max(room, 16)
	}
	return c.conns.maxConns
}

//go:build !rundinit

package main

// client.go is "rund client": one subcommand per RPC plus "run" (start, follow the log, exit with the
// job's code: clientrun.go). Output rules: start prints the id alone; status and stop print JSON; list
// prints a table (or JSON with -json); log writes the job's stdout to stdout and its stderr to stderr;
// every error is one line on stderr, with exit code 2 for a usage error and 1 for the rest (run's are
// docker run's: runExitCodes); -h exits 0.
// run and log read losslessly (the job waits for them); if bytes were lost all the same, they say how
// many on stderr and exit with exitLost unless the job's own code is non-zero.

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"golang.org/x/sys/unix"
	"rund/rpcpb"
)

// clientCmd is one of the client's commands.
type clientCmd struct {
	name     string
	operands string // what follows its flags, as its usage line shows it
	nargs    int    // how many operands it takes, or commandLine
	help     string // what it does, for the client's help and its own -h
	example  string // for its -h, after "rund client "
	notes    string // for its -h, after the example
}

// commandLine, as a clientCmd's nargs, is a command to run and its arguments: any number, of which
// checkArgs wants one at least.
const commandLine = -1

// clientCmds are the client's commands, in the order its help lists them.
var clientCmds = []clientCmd{
	{name: "start", operands: "[--] NAME [ARG...]", nargs: commandLine,
		help:    "start a job; print its id",
		example: "start -max_memory_usage 512MiB -cpus 0.5 -- sh -c 'echo hi'"},
	{name: "run", operands: "[--] NAME [ARG...]", nargs: commandLine,
		help:    "start a job, stream all its output, exit with its exit code",
		example: "run -max_pids 64 -- ls -l /",
		notes:   runExitCodes},
	{name: "status", operands: "ID", nargs: 1,
		help:    "print a job's status as JSON",
		example: "status $ID"},
	{name: "stop", operands: "ID", nargs: 1,
		help:    "stop a job (SIGTERM, grace period, SIGKILL); print its final status as JSON",
		example: "stop $ID"},
	{name: "log", operands: "ID", nargs: 1,
		help:    "stream a job's output: its stdout to stdout, its stderr to stderr",
		example: "log -follow=false $ID"},
	{name: "signal", operands: "ID SIGNAL", nargs: 2,
		help:    "send a signal (INT, TERM, HUP, ... or a number) to the job's command",
		example: "signal $ID INT"},
	{name: "list", operands: "", nargs: 0,
		help:    "list your jobs in a table, oldest first",
		example: "list -state running"},
}

// usage is what follows the command's name in its usage line.
func (c clientCmd) usage() string {
	return strings.TrimSpace("[flags] " + c.operands)
}

// checkArgs refuses operands that are not as many as c takes.
func (c clientCmd) checkArgs(pos []string) error {
	if c.nargs == commandLine && len(pos) == 0 {
		return fmt.Errorf("no command given: rund client %s [flags] -- NAME [ARG...]", c.name)
	}
	if c.nargs == commandLine || len(pos) == c.nargs {
		return nil
	}
	if c.nargs == 0 {
		return fmt.Errorf("unexpected argument %q; rund client %s -h for help", pos[0], c.name)
	}
	return fmt.Errorf("want %d argument(s) (%s), got %d; rund client %s -h for help",
		c.nargs, c.operands, len(pos), c.name)
}

const clientNotes = `
The server and credentials: -addr -ca -cert -key, else RUND_ADDR RUND_CA RUND_CERT RUND_KEY, else
localhost:8000 with ca.crt, client.crt and client.key from ./tls if there, else from %s.
run exits as docker run does (rund client run -h); log exits 3 when output was lost; the other
commands exit 1 on an error, 2 on a usage error.
run passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the job; a second Ctrl-C within 2 s stops it.
`

// clientUsage is the client's help: its commands, then clientNotes.
func clientUsage() string {
	var b strings.Builder
	b.WriteString("usage: rund client <command> [flags] [args]; rund client <command> -h for its flags\n\ncommands:\n")
	for _, c := range clientCmds {
		fmt.Fprintf(&b, "  %-6s %-27s %s\n", c.name, c.usage(), c.help)
	}
	return b.String() + fmt.Sprintf(clientNotes, configDir())
}

// clientIO is where the client writes; tests replace it.
type clientIO struct {
	stdout, stderr io.Writer
}

// clientOpts is what a client command's flags say.
type clientOpts struct {
	addr, ca, cert, key                  string // flags; dial falls back to RUND_* and the defaults
	verbose, follow, lossy, json, idOnly bool
	offset                               uint64
	state                                string

	req *rpcpb.JobStartRequest // start and run: its flags from startFlags, its command from the operands
}

// runClient runs one client command and returns the process exit code.
func runClient(args []string, out clientIO) int {
	if len(args) == 0 {
		fmt.Fprint(out.stderr, clientUsage())
		return 2
	}
	if isHelp(args[0]) {
		fmt.Fprint(out.stdout, clientUsage())
		return 0
	}
	cmd, args := args[0], args[1:]
	code, err := clientCommand(cmd, args, out)
	if cmd == "run" && err != nil && (code == 1 || code == 2) {
		code = exitRund // run's own failure, as docker run's; not a code the command could have returned
	}
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != 0 {
			err = fmt.Errorf("%v: %s", st.Code(), st.Message())
		}
		fmt.Fprintf(out.stderr, "rund client %s: %v\n", cmd, err)
	}
	return code
}

func clientCommand(cmd string, args []string, out clientIO) (int, error) {
	var names []string
	for _, c := range clientCmds {
		names = append(names, c.name)
	}
	i := slices.Index(names, cmd)
	if i < 0 {
		return 2, unknownCommand(cmd, names)
	}
	spec := clientCmds[i]
	fs := flag.NewFlagSet("rund client "+cmd, flag.ContinueOnError)
	o := clientFlags(cmd, fs)
	head := fmt.Sprintf("usage: rund client %s %s\n\n%s.\n\nexample:\n  rund client %s\n%s",
		cmd, spec.usage(), spec.help, spec.example, spec.notes)
	pos, err := parseInterspersed(fs, args, head, out.stdout, spec.nargs != commandLine)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	if err := spec.checkArgs(pos); err != nil {
		return 2, err
	}
	if spec.nargs == commandLine {
		o.req.Name, o.req.Args = pos[0], pos[1:]
	}
	addr, cfg, err := serverOf(o)
	if err != nil {
		return 1, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	code, err := callClient(context.Background(), rpcpb.NewJobControllerClient(conn), cmd, pos, o, out)
	if status.Code(err) == codes.Unavailable {
		err = whyUnavailable(addr, cfg, err)
	}
	return code, err
}

// callClient makes the call that cmd stands for and prints its result. pos are the operands, as many as
// cmd's entry in clientCmds takes (clientCommand checked): for status, stop, signal and log, pos[0] is
// the job's id.
func callClient(ctx context.Context, c rpcpb.JobControllerClient, cmd string, pos []string, o *clientOpts,
	out clientIO) (int, error) {
	switch cmd {
	case "start":
		id, err := c.Start(ctx, o.req)
		if err != nil {
			return 1, err
		}
		fmt.Fprintln(out.stdout, id.Ulid)
		return 0, nil
	case "run":
		return runJob(ctx, c, o.req, o.verbose, out)
	case "status":
		return out.printJSON(c.Status(ctx, &rpcpb.JobIdentifier{Ulid: pos[0]}))
	case "stop":
		return out.printJSON(c.Stop(ctx, &rpcpb.JobIdentifier{Ulid: pos[0]}))
	case "list":
		l, err := c.List(ctx, &rpcpb.ListRequest{})
		if err != nil {
			return 1, err
		}
		return out.printList(l, o, time.Now())
	case "signal":
		_, err := c.Signal(ctx, &rpcpb.SignalRequest{Ulid: pos[0], Signal: pos[1]})
		return exitOnErr(err)
	}
	// What is left is log.
	lr := &rpcpb.LogRequest{Ulid: pos[0], Offset: o.offset, NoFollow: !o.follow, Lossless: !o.lossy}
	var lost uint64
	err := streamLog(ctx, c, lr, &lost, out)
	if err != nil {
		return 1, err
	}
	if lost > 0 {
		return exitLost, nil
	}
	return 0, nil
}

// clientFlags registers the flags that cmd takes.
func clientFlags(cmd string, fs *flag.FlagSet) *clientOpts {
	o, dir := &clientOpts{req: &rpcpb.JobStartRequest{}}, configDir()
	fs.StringVar(&o.addr, "addr", "", "server address (else $RUND_ADDR, else localhost:8000)")
	fs.StringVar(&o.ca, "ca", "",
		"CA certificate that signed the server's (else $RUND_CA, else ca.crt in ./tls or "+dir+")")
	fs.StringVar(&o.cert, "cert", "", "client certificate (else $RUND_CERT, else client.crt in ./tls or "+dir+")")
	fs.StringVar(&o.key, "key", "", "client private key (else $RUND_KEY, else client.key in ./tls or "+dir+")")
	switch cmd {
	case "start", "run":
		startFlags(fs, o.req)
		if cmd == "run" {
			fs.BoolVar(&o.verbose, "v", false, "print the job id on stderr")
		}
	case "log":
		fs.Uint64Var(&o.offset, "offset", 0, "start at this byte offset of the job's output")
		fs.BoolVar(&o.follow, "follow", true, "wait for more output until the job ends")
		fs.BoolVar(&o.lossy, "lossy", false, "never hold the job back; bytes overwritten before they are read are lost")
	case "list":
		fs.BoolVar(&o.json, "json", false, "print the jobs' status as JSON")
		fs.BoolVar(&o.idOnly, "q", false, "print only the job ids")
		fs.Func("state", "only jobs in this state: running, done (not running), or exited, signaled, stopped, oom_killed",
			func(s string) error {
				if _, ok := rpcpb.JobStatus_State_value["STATE_"+strings.ToUpper(s)]; !ok && s != "done" {
					return errors.New("want running, done, exited, signaled, stopped or oom_killed")
				}
				o.state = s
				return nil
			})
	}
	return o
}

// parseInterspersed parses args with fs and returns the arguments that are not flags; interspersed,
// flags may also come after them (rund client status ID -addr X), until a "--".
func parseInterspersed(fs *flag.FlagSet, args []string, head string, stdout io.Writer,
	interspersed bool) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args, head, stdout); err != nil {
			return nil, err
		}
		rest := fs.Args()
		dashes := len(rest) < len(args) && args[len(args)-len(rest)-1] == "--"
		if len(rest) == 0 || !interspersed || dashes {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// startFlags registers the flags of a job's start request, each into its field of req. A limit is sent
// only when its flag is given, so "-max_pids 0" reaches the server and gets its clear error instead of
// meaning "no limit".
func startFlags(fs *flag.FlagSet, req *rpcpb.JobStartRequest) {
	for _, l := range []struct {
		name, help string
		field      **wrapperspb.UInt64Value
	}{
		{name: "max_memory_usage", help: "memory.max, bytes, e.g. 512MiB or 1.5G", field: &req.MaxMemoryUsage},
		{name: "max_pids", help: "pids.max, e.g. 64 or 1k", field: &req.MaxPids},
		{name: "max_rbps", help: "io.max, bytes read/s, e.g. 10MB/s", field: &req.MaxRbps},
		{name: "max_wbps", help: "io.max, bytes written/s, e.g. 10MB/s", field: &req.MaxWbps},
		{name: "max_riops", help: "io.max, reads/s, e.g. 1000 or 10k", field: &req.MaxRiops},
		{name: "max_wiops", help: "io.max, writes/s, e.g. 1000 or 10k", field: &req.MaxWiops},
	} {
		fs.Func(l.name, l.help, func(s string) error {
			n, err := parseSize(s)
			*l.field = wrapperspb.UInt64(n)
			return err
		})
	}
	fs.Func("max_cpu_bandwidth", "cpu.max quota in us per 100000 us period, e.g. 50000 for half a CPU",
		func(s string) error {
			n, err := strconv.ParseUint(s, 10, 32)
			req.MaxCpuBandwidth = wrapperspb.UInt32(uint32(n))
			if err != nil {
				return errors.New("want microseconds per 100000 us period, 0 to 4294967295")
			}
			return nil
		})
	fs.StringVar(&req.Network, "network", "", `"host" for the host's network namespace, if the server's grants `+
		"give it to you (default: the job's own, with lo alone)")
	fs.BoolVar(&req.Root, "root", false, "run as host root with the host's mounts, uncontained, if the server's grants "+
		"give it to you")
	fs.Func("cpus", "CPUs the job may use, e.g. 0.5 (= -max_cpu_bandwidth 50000)", func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		quota := math.Round(f * 100000) // checked after rounding: just under 2^32 must not wrap to 0
		if err != nil || !(quota >= 1 && quota < 1<<32) {
			return errors.New("want a positive number of CPUs, e.g. 0.5 or 2")
		}
		req.MaxCpuBandwidth = wrapperspb.UInt32(uint32(quota))
		return nil
	})
	fs.StringVar(&req.Dir, "dir", "", "absolute working directory (default /)")
	fs.Func("grace", "stop grace period between SIGTERM and SIGKILL, e.g. 30s, 2m or 30 (seconds; default 10s)",
		func(s string) error {
			d, err := parseDuration(s)
			req.StopGracePeriod = durationpb.New(d)
			return err
		})
	fs.Func("env", "KEY=VALUE added to the job's environment (repeatable)", func(s string) error {
		req.Env = append(req.Env, s)
		return nil
	})
}

// serverOf is the address and TLS configuration of the server that o, RUND_ADDR, RUND_CA, RUND_CERT
// and RUND_KEY, or the defaults name, in that order (clientNotes).
func serverOf(o *clientOpts) (string, *tls.Config, error) {
	cfg, err := clientTLS(cmp.Or(o.ca, os.Getenv("RUND_CA"), defaultFile("ca.crt")),
		cmp.Or(o.cert, os.Getenv("RUND_CERT"), defaultFile("client.crt")),
		cmp.Or(o.key, os.Getenv("RUND_KEY"), defaultFile("client.key")))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf(
			"%w (give -ca, -cert and -key, or set RUND_CA, RUND_CERT and RUND_KEY, or run rund certs)", err)
	}
	return cmp.Or(o.addr, os.Getenv("RUND_ADDR"), "localhost:8000"), cfg, err
}

// whyUnavailable explains a call to addr that failed with Unavailable when the server refused this
// client's certificate: in TLS 1.3 the server checks it after the client has finished its handshake, so
// grpc-go sees a closed connection ("broken pipe") and not the alert. A handshake of our own with cfg,
// and a read, get the alert; a server that accepts the certificate sends its HTTP/2 settings at once.
// err otherwise.
func whyUnavailable(addr string, cfg *tls.Config, err error) error {
	cfg.NextProtos = []string{"h2"} // grpc-go dials with a copy of cfg (credentials.NewTLS)
	conn, dialErr := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if dialErr != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, readErr := conn.Read(make([]byte, 1))
	var alert *net.OpError
	if errors.As(readErr, &alert) && alert.Op == "remote error" {
		return fmt.Errorf("the server refused this client's certificate (%v): is it signed by the server's CA, "+
			"for client authentication, and not expired? (%w)", alert.Err, err)
	}
	return err
}

func exitOnErr(err error) (int, error) {
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// printJSON takes an RPC's results as they are: out.printJSON(c.Status(ctx, id)).
func (out clientIO) printJSON(m proto.Message, err error) (int, error) {
	if err != nil {
		return 1, err
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return 1, err
	}
	fmt.Fprintln(out.stdout, string(b))
	return 0, nil
}

// printList prints the jobs that -state selects in List's order, oldest start first (rpc.proto): their
// ids (-q), their status as JSON (-json), or a table with the command cut at 40 characters (as docker
// ps cuts it).
func (out clientIO) printList(l *rpcpb.JobList, o *clientOpts, now time.Time) (int, error) {
	l.Jobs = slices.DeleteFunc(l.Jobs, func(j *rpcpb.JobStatus) bool {
		if o.state == "done" {
			return j.State == rpcpb.JobStatus_STATE_RUNNING
		}
		return o.state != "" && j.State.String() != "STATE_"+strings.ToUpper(o.state)
	})
	if o.json {
		return out.printJSON(l, nil)
	}
	tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
	if !o.idOnly {
		fmt.Fprintln(tw, "ID\tSTATE\tEXIT\tSTARTED\tRUN TIME\tCPU\tMEM PEAK\tGIVEN\tCOMMAND")
	}
	for _, j := range l.Jobs {
		if o.idOnly {
			fmt.Fprintln(tw, j.Ulid)
			continue
		}
		exit, end, start := "-", now, j.StartTime.AsTime()
		if j.ExitCode != nil {
			exit = strconv.Itoa(int(j.ExitCode.Value))
		} else if j.Signal != nil {
			exit = unix.SignalName(syscall.Signal(j.Signal.Value))
		}
		if j.EndTime != nil {
			end = j.EndTime.AsTime()
		}
		command := strings.Join(j.Command, " ")
		if len(command) > 40 {
			command = command[:37] + "..."
		}
		state := strings.ToLower(strings.TrimPrefix(j.State.String(), "STATE_"))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\t%s\n", j.Ulid, state,
			exit, humanDuration(now.Sub(start)), humanDuration(end.Sub(start)),
			humanDuration(j.UserTime.AsDuration()+j.SystemTime.AsDuration()), humanBytes(j.MemoryPeak), givenText(j), command)
	}
	return exitOnErr(tw.Flush())
}

// givenText is what a job was given beyond the default containment (the server's grants), for list: "-" for nothing.
func givenText(j *rpcpb.JobStatus) string {
	var g []string
	if j.Network != "" {
		g = append(g, "network="+j.Network)
	}
	if j.Root {
		g = append(g, "root")
	}
	return cmp.Or(strings.Join(g, ","), "-")
}

// streamLog writes a job's output until the stream ends, moving req.Offset past each byte written, so
// that a retry with req resumes there. A gap (bytes overwritten before they could be sent) is reported
// on stderr and added to lost.
func streamLog(ctx context.Context, c rpcpb.JobControllerClient, req *rpcpb.LogRequest, lost *uint64,
	out clientIO) error {
	stream, err := c.ReadLog(ctx, req) // sends req before it returns
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if msg.Lost > 0 {
			*lost += msg.Lost
			fmt.Fprintf(out.stderr, "rund: %d bytes of output were lost before offset %d (the server's log buffer overflowed)\n",
				msg.Lost, msg.Offset)
		}
		out.stdout.Write(msg.Stdout)
		out.stderr.Write(msg.Stderr)
		req.Offset = msg.Offset + uint64(len(msg.Stdout)+len(msg.Stderr))
	}
}

// clientTLS is the client's configuration: it trusts only caFile and wants the ServerAuth EKU.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg, err := tlsFiles(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return requireEKU(cs.VerifiedChains[0][0], x509.ExtKeyUsageServerAuth, "server")
	}
	return cfg, nil
}

// unknownCommand says that name is none of names, and which one it is nearest to: the one that starts
// with the most of it, two letters at least.
func unknownCommand(name string, names []string) error {
	best, most := "", 1
	for _, n := range names {
		k := 0
		for k < min(len(n), len(name)) && n[k] == name[k] {
			k++
		}
		if k > most {
			best, most = n, k
		}
	}
	if best != "" {
		return fmt.Errorf("unknown command %q; did you mean %q?", name, best)
	}
	return fmt.Errorf("unknown command %q; the commands are %s", name, strings.Join(names, ", "))
}

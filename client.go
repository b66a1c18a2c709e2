package main

// client.go is "rund client": one subcommand per RPC plus "run" (start, follow the log, exit with the
// job's code). Output rules: start prints the id alone; status, stop and list print JSON; log writes the
// job's stdout to stdout and its stderr to stderr; every error is one line on stderr and a non-zero exit.
// run and log read losslessly (the job waits for them); if bytes were lost all the same, they say how
// many on stderr and exit with exitLost unless the job's own code is non-zero.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"golang.org/x/sys/unix"
	"rund/rpcpb"
)

const clientUsage = `usage: rund client <command> [flags] [args]

commands:
  start [limits] -- NAME [ARG...]   start a job; prints its id
  run   [limits] -- NAME [ARG...]   start a job, stream all its output, exit with its exit code
  status ID                         JSON status
  stop ID                           stop (SIGTERM, grace period, SIGKILL); JSON final status
  log [-offset N] [-follow=false] [-lossy] ID
                                    stream output: job stdout to stdout, stderr to stderr
  signal ID SIGNAL                  send a signal (INT, TERM, HUP, ... or a number) to the job's command
  list                              JSON status of all your jobs

every command takes -addr, -ca, -cert, -key; "rund client start -h" lists the limits.
run and log exit 3 when output was lost (run: unless the job's own exit code is non-zero).
run passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the job; a second Ctrl-C within 2 s stops it.
run -v prints the job id on stderr; run always prints it when interrupted or cut off.`

// exitLost is the exit code of run and log when bytes of the job's output were lost.
const exitLost = 3

// clientIO is where the client writes; tests replace it.
type clientIO struct {
	stdout, stderr io.Writer
}

// runClient runs one client command and returns the process exit code.
func runClient(args []string, out clientIO) int {
	if len(args) == 0 {
		fmt.Fprintln(out.stderr, clientUsage)
		return 2
	}
	cmd, args := args[0], args[1:]
	code, err := clientCommand(cmd, args, out)
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != 0 {
			err = fmt.Errorf("%v: %s", st.Code(), st.Message())
		}
		fmt.Fprintf(out.stderr, "rund client %s: %v\n", cmd, err)
	}
	return code
}

func clientCommand(cmd string, args []string, out clientIO) (int, error) {
	fs := flag.NewFlagSet("rund client "+cmd, flag.ContinueOnError)
	fs.SetOutput(out.stderr)
	addr := fs.String("addr", "localhost:8000", "server address")
	ca := fs.String("ca", "tls/ca.crt", "CA certificate that signed the server's certificate")
	cert := fs.String("cert", "tls/client.crt", "client certificate")
	key := fs.String("key", "tls/client.key", "client private key")
	var build func() (*rpcpb.JobStartRequest, error)
	verbose := fs.Bool("v", false, "run: print the job id on stderr")
	offset := fs.Uint64("offset", 0, "log: start at this byte offset")
	follow := fs.Bool("follow", true, "log: wait for more output until the job ends")
	lossy := fs.Bool("lossy", false, "log: never hold the job back; bytes overwritten before they are read are lost")
	switch cmd {
	case "start", "run":
		build = startFlags(fs)
	case "status", "stop", "log", "list", "signal":
	default:
		return 2, fmt.Errorf("unknown command %q\n%s", cmd, clientUsage)
	}
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	wantArgs := map[string]int{"status": 1, "stop": 1, "log": 1, "list": 0, "signal": 2}
	if n, ok := wantArgs[cmd]; ok && fs.NArg() != n {
		return 2, fmt.Errorf("want %d argument(s), got %d\n%s", n, fs.NArg(), clientUsage)
	}
	conn, c, err := dial(*addr, *ca, *cert, *key)
	if err != nil {
		return 1, err
	}
	defer conn.Close()
	ctx := context.Background()
	id := &rpcpb.JobIdentifier{Ulid: fs.Arg(0)}
	switch cmd {
	case "start", "run":
		req, err := build()
		if err != nil {
			return 2, err
		}
		if req.Name, req.Args = fs.Arg(0), fs.Args()[min(1, fs.NArg()):]; cmd == "start" {
			return out.printID(c.Start(ctx, req))
		}
		return runJob(ctx, c, req, *verbose, out)
	case "status":
		return out.printJSON(c.Status(ctx, id))
	case "stop":
		return out.printJSON(c.Stop(ctx, id))
	case "list":
		return out.printJSON(c.List(ctx, &rpcpb.ListRequest{}))
	case "signal":
		_, err := c.Signal(ctx, &rpcpb.SignalRequest{Ulid: id.Ulid, Signal: fs.Arg(1)})
		return exitOnErr(err)
	}
	req := &rpcpb.LogRequest{Ulid: id.Ulid, Offset: *offset, NoFollow: !*follow, Lossless: !*lossy}
	var lost uint64
	if err = streamLog(ctx, c, req, &lost, out); err == nil && lost > 0 {
		return exitLost, nil
	}
	return exitOnErr(err)
}

// startFlags registers the limit flags. A limit is sent only when its flag is given, so "-max_pids 0"
// reaches the server and gets its clear error instead of silently meaning "no limit".
func startFlags(fs *flag.FlagSet) func() (*rpcpb.JobStartRequest, error) {
	req := &rpcpb.JobStartRequest{}
	limits := map[string]**wrapperspb.UInt64Value{
		"max_memory_usage": &req.MaxMemoryUsage, "max_rbps": &req.MaxRbps, "max_wbps": &req.MaxWbps,
		"max_riops": &req.MaxRiops, "max_wiops": &req.MaxWiops, "max_pids": &req.MaxPids,
	}
	values := map[string]*uint64{}
	for name := range limits {
		values[name] = fs.Uint64(name, 0, strings.TrimPrefix(name, "max_")+" limit")
	}
	cpu := fs.Uint("max_cpu_bandwidth", 0, "cpu.max quota in us per 100000 us period")
	fs.StringVar(&req.Dir, "dir", "", "absolute working directory (default /)")
	grace := fs.Duration("grace", 0, "stop grace period between SIGTERM and SIGKILL (default 10s)")
	fs.Func("env", "KEY=VALUE added to the job's environment (repeatable)", func(s string) error {
		req.Env = append(req.Env, s)
		return nil
	})
	return func() (*rpcpb.JobStartRequest, error) {
		var err error
		fs.Visit(func(f *flag.Flag) {
			if field := limits[f.Name]; field != nil {
				*field = wrapperspb.UInt64(*values[f.Name])
			}
			switch f.Name {
			case "max_cpu_bandwidth":
				if *cpu > 1<<32-1 {
					err = fmt.Errorf("-max_cpu_bandwidth %d does not fit in 32 bits", *cpu)
				}
				req.MaxCpuBandwidth = wrapperspb.UInt32(uint32(*cpu))
			case "grace":
				req.StopGracePeriod = durationpb.New(*grace)
			}
		})
		if fs.NArg() == 0 && err == nil {
			err = errors.New("no command given: rund client start [flags] -- NAME [ARG...]")
		}
		return req, err
	}
}

func dial(addr, ca, cert, key string) (*grpc.ClientConn, rpcpb.JobControllerClient, error) {
	cfg, err := clientTLS(ca, cert, key)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, nil, err
	}
	return conn, rpcpb.NewJobControllerClient(conn), nil
}

func exitOnErr(err error) (int, error) {
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// printID and printJSON take an RPC's results as they are: out.printJSON(c.Status(ctx, id)).
func (out clientIO) printID(id *rpcpb.JobIdentifier, err error) (int, error) {
	if err == nil {
		fmt.Fprintln(out.stdout, id.GetUlid())
	}
	return exitOnErr(err)
}

func (out clientIO) printJSON(m proto.Message, err error) (int, error) {
	if err != nil {
		return 1, err
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err == nil {
		fmt.Fprintln(out.stdout, string(b))
	}
	return exitOnErr(err)
}

// streamLog writes a job's output until the stream ends, moving req.Offset past each byte written, so
// that a retry with req resumes there. A gap (bytes overwritten before they could be sent) is reported
// on stderr and added to lost.
func streamLog(ctx context.Context, c rpcpb.JobControllerClient, req *rpcpb.LogRequest, lost *uint64, out clientIO) error {
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

// runJob starts a job, follows its whole log (resuming from the last offset if the stream breaks),
// passes on the signals the client gets, and returns the job's exit code, or 128+signal as a shell
// would.
func runJob(ctx context.Context, c rpcpb.JobControllerClient, req *rpcpb.JobStartRequest, verbose bool, out clientIO) (int, error) {
	req.HoldOutput = true // nothing is overwritten before the log below attaches
	id, err := c.Start(ctx, req)
	if err != nil {
		return 1, err
	}
	out.stderr = &lockedWriter{w: out.stderr} // the signal forwarder writes too
	if verbose {
		fmt.Fprintf(out.stderr, "rund: job %s\n", id.Ulid)
	}
	defer forwardSignals(c, id.Ulid, out)()
	lr := &rpcpb.LogRequest{Ulid: id.Ulid, Lossless: true}
	var lost uint64
	for tries := 0; ; tries++ {
		if err = streamLog(ctx, c, lr, &lost, out); err == nil {
			break
		}
		if tries == 5 {
			return 1, fmt.Errorf("job %s: %w", id.Ulid, err)
		}
		time.Sleep(time.Duration(tries+1) * 200 * time.Millisecond) // reconnect backoff
	}
	st, err := c.Status(ctx, id)
	if err != nil {
		return 1, fmt.Errorf("job %s: %w", id.Ulid, err)
	}
	code := 128 + int(st.GetSignal().GetValue())
	if st.ExitCode != nil {
		code = int(st.ExitCode.Value)
	}
	if lost > 0 {
		fmt.Fprintf(out.stderr, "rund: job %s: %d bytes of its output were lost in all\n", id.Ulid, lost)
		if code == 0 {
			code = exitLost
		}
	}
	return code, nil
}

// forwardSignals passes SIGINT, SIGTERM, SIGHUP and SIGQUIT that this process gets on to job id, as a
// terminal passes Ctrl-C to its foreground job; a second SIGINT within 2 s stops the job instead. The
// returned func ends the forwarding and waits for its goroutine.
func forwardSignals(c rpcpb.JobControllerClient, id string, out clientIO) (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	ctx, cancel := context.WithCancel(context.Background())
	var forwarder sync.WaitGroup
	forwarder.Go(func() {
		var lastInt time.Time
		for s := range sigs {
			if ctx.Err() != nil {
				return // stopped: what is left in sigs goes nowhere
			}
			name := unix.SignalName(s.(syscall.Signal))
			var err error
			if s == syscall.SIGINT && time.Since(lastInt) < 2*time.Second {
				fmt.Fprintf(out.stderr, "rund: job %s: stopping it\n", id)
				_, err = c.Stop(ctx, &rpcpb.JobIdentifier{Ulid: id})
			} else {
				fmt.Fprintf(out.stderr, "rund: job %s: sending it %s (Ctrl-C twice within 2 s stops it)\n", id, name)
				_, err = c.Signal(ctx, &rpcpb.SignalRequest{Ulid: id, Signal: name})
			}
			if s == syscall.SIGINT {
				lastInt = time.Now()
			}
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(out.stderr, "rund: job %s: %s: %v\n", id, name, err)
			}
		}
	})
	return func() {
		signal.Stop(sigs) // no signal reaches sigs after this, so it can be closed
		cancel()
		close(sigs)
		forwarder.Wait()
	}
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

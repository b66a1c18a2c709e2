//go:build !rundinit

package main

// clientrun.go is `rund client run`: it starts a job with its output held, follows the whole of its log
// (resuming where a broken stream stopped), passes on the signals the client gets, and exits as docker
// run does. forwardSignals starts the one goroutine here; the func it returns ends it and waits for it,
// and runJob calls that func before it returns.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"golang.org/x/sys/unix"
	"rund/rpcpb"
)

// runExitCodes is run's exit status, for its -h and the README.
const runExitCodes = `
exit status, as docker run's:
  N    the job's own exit code; 128+N if signal N ended it
  3    the job exited 0, but bytes of its output were lost
  125  rund's own failure: no connection, a refused call, a bad flag
  126  the command cannot be run (not executable, not a program)
  127  the command was not found`

// Exit codes of run besides the job's own, as docker run has them (docker-run(1), "Exit Status"): rund's
// own failure (no connection, a refusal, a bad flag) is exitRund; a command that the job could not find
// or run exits as a shell's would (the server says which: the trailer exitTrailer). exitLost is the exit
// code of run and log when bytes of the job's output were lost, and the job's own was 0.
const (
	exitLost = 3
	exitRund = 125
)

// runJob starts a job, follows its whole log (resuming from the last offset if the stream breaks),
// passes on the signals the client gets, and returns the job's exit code, or 128+signal as a shell
// would.
func runJob(ctx context.Context, c rpcpb.JobControllerClient, req *rpcpb.JobStartRequest, verbose bool,
	out clientIO) (int, error) {
	req.HoldOutput = true // nothing is overwritten before the log below attaches
	var trailer metadata.MD
	id, err := c.Start(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		if code, convErr := strconv.Atoi(strings.Join(trailer.Get(exitTrailer), "")); convErr == nil {
			return code, err
		}
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
		err = streamLog(ctx, c, lr, &lost, out)
		if err == nil {
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

//go:build !rundinit

package main

// errors.go names the kinds of error the core (jobs, pool, spawn, ring) returns for a client to act
// on. The core knows nothing of gRPC: server.go alone maps a kind to a status code (codeOf). Any other
// error is the server's own failure, logged there in full and answered with a bare Internal.

import (
	"errors"
	"fmt"
)

var (
	errInvalid     = errors.New("invalid request")                  // the request itself is wrong
	errNotFound    = errors.New("not found")                        // no such job, or a missing command
	errDenied      = errors.New("permission denied")                // the job's command may not be run
	errUnsupported = errors.New("not supported by this host")       // e.g. a limit without its controller
	errExhausted   = errors.New("bound reached")                    // a server or per-client bound
	errClosing     = errors.New("server is shutting down")          // no new work is taken
	errOutOfRange  = errors.New("offset outside the output")        // a log offset past the end
	errEnded       = errors.New("job has ended")                    // e.g. a signal to a finished job
	errNotStarted  = errors.New("command could not be started")     // exec failed for another reason
	errNoIdentity  = errors.New("caller has no usable certificate") // authentication
)

// clientError is an error whose message is meant for the client; kind says what it is. A nil kind is
// the server's own fault (a job's init could not set up): the client then gets a bare Internal.
type clientError struct {
	kind error
	msg  string
	exit int // a command that could not be run: 126, or 127 if not found, as a shell exits (exitTrailer)
}

// exitTrailer is the trailer of a Start whose command could not be run: the exit code a shell would
// give, which rund client run exits with.
const exitTrailer = "rund-exit-code"

func (e *clientError) Error() string { return e.msg }
func (e *clientError) Unwrap() error { return e.kind }

// clientErr makes a clientError of kind with a formatted message.
func clientErr(kind error, format string, a ...any) error {
	return &clientError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPublicError: every kind of core error reaches the client with its own code and message, and
// nothing else reaches it but a bare Internal.
func TestPublicError(t *testing.T) {
	for kind, code := range codeOf {
		err := publicError("/rund.JobController/Start", clientErr(kind, "msg for %v", kind))
		if status.Code(err) != code || status.Convert(err).Message() != fmt.Sprintf("msg for %v", kind) {
			t.Errorf("kind %v: got %v, want %v with its message", kind, err, code)
		}
	}
	hostPath := &os.PathError{Op: "write", Path: "/sys/fs/cgroup/rund/X/memory.max", Err: syscall.EINVAL}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string // the whole message, when it is not the error's own
	}{
		{"nil", nil, codes.OK, ""},
		{"host error", fmt.Errorf("prepare job cgroup: %w", hostPath), codes.Internal, "Start failed on the server; its log has the details"},
		{"setup failure has no kind", startFailure(startReport{Stage: stageSetup, Errno: int(syscall.EPERM), Msg: "set up job namespaces: /x"}),
			codes.Internal, "Start failed on the server; its log has the details"},
		{"grpc status passes", status.Error(codes.Aborted, "a"), codes.Aborted, "a"},
		{"cancelled", context.Canceled, codes.Canceled, ""},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"ring offset", errOffsetBeyondEnd, codes.OutOfRange, "offset is beyond the end of the job's output"},
	} {
		err := publicError("/rund.JobController/Start", tc.err)
		if status.Code(err) != tc.code || (tc.msg != "" && status.Convert(err).Message() != tc.msg) {
			t.Errorf("%s: got %v, want %v %q", tc.name, err, tc.code, tc.msg)
		}
		if strings.Contains(fmt.Sprint(err), "/sys/") || strings.Contains(fmt.Sprint(err), "/x") {
			t.Errorf("%s: a host path reached the client: %v", tc.name, err)
		}
	}
}

// TestStartFailureKinds: a start report's stage and errno decide whose fault a failed start is.
func TestStartFailureKinds(t *testing.T) {
	for _, tc := range []struct {
		stage stage
		errno syscall.Errno
		kind  error // nil: the server's own
	}{
		{stageSetup, syscall.ENOENT, nil},
		{stageDir, syscall.ENOENT, errInvalid},
		{stagePath, syscall.ENOENT, errNotFound},
		{stagePath, syscall.EACCES, errDenied},
		{stageExec, syscall.EPERM, errDenied},
		{stageExec, syscall.ENOEXEC, errInvalid},
		{stageExec, syscall.E2BIG, errInvalid},
		{stageExec, syscall.ETXTBSY, errNotStarted},
	} {
		err := startFailure(startReport{Stage: tc.stage, Errno: int(tc.errno), Msg: "m"})
		var ce *clientError
		if !errors.As(err, &ce) || ce.kind != tc.kind || err.Error() != "m" {
			t.Errorf("%s %v: got %#v, want kind %v and message m", tc.stage, tc.errno, err, tc.kind)
		}
	}
}

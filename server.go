//go:build !rundinit

package main

// server.go is the gRPC face of the job manager: it authenticates each call, maps requests to jobs and
// errors to status codes (publicError, the one place that does). Clients never see a host path:
// internal errors are logged here in full and answered with a short Internal status.
//
// Goroutines: grpc-go's own, one per connection and per call; the server starts none.

import (
	"context"
	"errors"
	"io"
	"log"
	"path"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

// maxHeaderBytes bounds a request's headers: gRPC's own come to a few hundred bytes.
const maxHeaderBytes = 16 << 10

// newGRPCServer serves the job API over mutual TLS, within the bounds of conns.go: a connection has 5 s
// for its handshake, and once idle for -conn_idle_timeout it is sent a GOAWAY (MaxConnectionIdle); its
// requests are counted from their headers, and their bodies have -request_body_timeout. The largest valid request is a
// Start of maxCommandBytes plus a few bytes of framing per string, so grpc-go refuses anything over
// maxRequestBytes with ResourceExhausted before it is decoded. A request's headers are bounded too
// (maxHeaderBytes): grpc-go's default, 16 MiB, let each stream in flight hold that much in decoded
// header strings (HPACK repeats a field for a byte). Every handler's error goes through
// publicError. Beside the job API: the standard health service (grpc_health_probe, load balancers),
// whose Shutdown the caller calls when the server's shutdown starts, and server reflection (grpcurl
// without the .proto), under the same mTLS and bounds.
func newGRPCServer(r *rotatingTLS, m *manager, c serveConfig) (*grpc.Server, *health.Server) {
	srv := grpc.NewServer(grpc.Creds(boundedCreds{credentials.NewTLS(r.listener()), &r.crl}),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxConcurrentStreams(256), grpc.ConnectionTimeout(5*time.Second), grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: c.conns.idle}),
		grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			if err := admitRequest(ctx); err != nil { // a log stream counts until it ends
				return ctx, publicError(info.FullMethodName, err)
			}
			return bodyDeadline(ctx, c.conns.requestBody), nil
		}),
		grpc.UnaryInterceptor(publicUnary), grpc.StreamInterceptor(publicStream))
	rpcpb.RegisterJobControllerServer(srv, &server{m: m})
	hs := health.NewServer() // the whole server ("") is SERVING until Shutdown; so is the job API
	hs.SetServingStatus(rpcpb.JobController_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

// publicUnary is the unary interceptor: a unary handler's error reaches the client through publicError.
// The call goes on the audit trail (audit.go).
func publicUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	bodyArrived(ctx) // grpc-go reads a unary request whole before its interceptor
	resp, err := h(ctx, req)
	err = publicError(info.FullMethod, err)
	auditCall(ctx, info.FullMethod, req, resp, err)
	return resp, err
}

// publicStream is the stream interceptor: a streaming handler's error reaches the client through
// publicError. The call goes on the audit trail.
func publicStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	bs := &bodyStream{ServerStream: ss}
	err := publicError(info.FullMethod, h(srv, bs))
	auditCall(ss.Context(), info.FullMethod, bs.req, nil, err)
	return err
}

// bodyStream stops a streaming request's body deadline once its first message is read, and keeps that
// message for the audit trail.
type bodyStream struct {
	grpc.ServerStream
	req any // the request, once read; only the handler's goroutine reads and writes it
}

func (s *bodyStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	bodyArrived(s.Context())
	s.req = m
	return err
}

type server struct {
	rpcpb.UnimplementedJobControllerServer
	m *manager
}

// codeOf maps each kind of client error (errors.go) to its gRPC status code.
var codeOf = map[error]codes.Code{
	errInvalid:     codes.InvalidArgument,
	errNotFound:    codes.NotFound,
	errDenied:      codes.PermissionDenied,
	errUnsupported: codes.FailedPrecondition,
	errExhausted:   codes.ResourceExhausted,
	errClosing:     codes.Unavailable,
	errOutOfRange:  codes.OutOfRange,
	errEnded:       codes.FailedPrecondition,
	errNotStarted:  codes.Internal,
	errNoIdentity:  codes.Unauthenticated,
}

// publicError is the only way an error reaches a client. A client error gets its kind's code and its
// own message; a status (from grpc-go itself) and a context's end pass through; anything else is the
// server's own failure: logged in full here, and a bare Internal to the client, which never sees a
// host path.
func publicError(method string, err error) error {
	if err == nil {
		return nil
	}
	if ce := (*clientError)(nil); errors.As(err, &ce) {
		if code, ok := codeOf[ce.kind]; ok {
			return status.Error(code, ce.msg)
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	op := path.Base(method)
	log.Printf("%s: %v", op, err)
	return status.Errorf(codes.Internal, "%s failed on the server; its log has the details", op)
}

func (s *server) Start(ctx context.Context, req *rpcpb.JobStartRequest) (*rpcpb.JobIdentifier, error) {
	caller, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	if len(caller) == 0 {
		return nil, clientErr(errDenied, "your certificate has no subject alternative name, so jobs could not be tied to you")
	}
	lim, err := startLimits(req)
	if err != nil {
		return nil, err
	}
	var grace time.Duration
	if g := req.GetStopGracePeriod(); g != nil {
		if err := g.CheckValid(); err != nil {
			return nil, clientErr(errInvalid, "stop_grace_period: %v", err)
		}
		grace = g.AsDuration()
		if grace == 0 { // unlike an unset one, which means the default
			return nil, clientErr(errInvalid, "stop grace period 0s: want more than 0, at most %v (or none, for %v)",
				maxGrace, defaultGrace)
		}
	}
	spec, err := validate(req.GetName(), req.GetArgs(), req.GetEnv(), req.GetDir(), grace, lim)
	if err != nil {
		return nil, err
	}
	spec.holdOutput, spec.network, spec.root = req.GetHoldOutput(), req.GetNetwork(), req.GetRoot()
	j, err := s.m.start(caller, spec)
	if ce := (*clientError)(nil); errors.As(err, &ce) && ce.exit != 0 {
		grpc.SetTrailer(ctx, metadata.Pairs(exitTrailer, strconv.Itoa(ce.exit)))
	}
	if err != nil {
		return nil, err
	}
	return &rpcpb.JobIdentifier{Ulid: j.id}, nil
}

// startLimits reads a Start's limits. It rejects a limit that is set to 0: the wrappers say "set", and
// no controller takes 0 as a limit (io.max and pids.max would read it as "nothing at all", cpu.max
// refuses it).
func startLimits(req *rpcpb.JobStartRequest) (limits, error) {
	cpu := req.GetMaxCpuBandwidth()
	lim := limits{cpuQuota: uint64(cpu.GetValue())}
	if cpu != nil && lim.cpuQuota == 0 {
		return limits{}, clientErr(errInvalid, "max_cpu_bandwidth is 0; leave it unset for no limit")
	}
	for _, f := range limitFields(req, &lim) {
		if f.w != nil && f.w.GetValue() == 0 {
			return limits{}, clientErr(errInvalid, "%s is 0; leave it unset for no limit", f.name)
		}
		*f.to = f.w.GetValue()
	}
	return lim, nil
}

// limitField is one of a Start's counted limits: its name in the request, its value there (nil: unset)
// and where it goes in lim.
type limitField struct {
	name string
	w    *wrapperspb.UInt64Value
	to   *uint64
}

// limitFields are a Start's limits but cpu's, which is of another type.
func limitFields(req *rpcpb.JobStartRequest, lim *limits) []limitField {
	return []limitField{
		{"max_memory_usage", req.GetMaxMemoryUsage(), &lim.memory}, {"max_pids", req.GetMaxPids(), &lim.pids},
		{"max_rbps", req.GetMaxRbps(), &lim.rbps}, {"max_wbps", req.GetMaxWbps(), &lim.wbps},
		{"max_riops", req.GetMaxRiops(), &lim.riops}, {"max_wiops", req.GetMaxWiops(), &lim.wiops},
	}
}

// lookup authenticates the caller and finds a job it may see.
func (s *server) lookup(ctx context.Context, id string) (*job, error) {
	caller, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	u, err := parseULID(id)
	if err != nil {
		return nil, clientErr(errInvalid, "%v", err)
	}
	return s.m.get(u.String(), caller)
}

func (s *server) Stop(ctx context.Context, req *rpcpb.JobIdentifier) (*rpcpb.JobStatus, error) {
	j, err := s.lookup(ctx, req.GetUlid())
	if err != nil {
		return nil, err
	}
	if err := j.stop(ctx); err != nil {
		return nil, err
	}
	return statusProto(j.snapshot()), nil
}

func (s *server) Status(ctx context.Context, req *rpcpb.JobIdentifier) (*rpcpb.JobStatus, error) {
	j, err := s.lookup(ctx, req.GetUlid())
	if err != nil {
		return nil, err
	}
	return statusProto(j.snapshot()), nil
}

func (s *server) Signal(ctx context.Context, req *rpcpb.SignalRequest) (*rpcpb.SignalResponse, error) {
	j, err := s.lookup(ctx, req.GetUlid())
	if err != nil {
		return nil, err
	}
	sig, err := parseSignal(req.GetSignal())
	if err != nil {
		return nil, err
	}
	if err := j.signal(sig); err != nil {
		return nil, err
	}
	return &rpcpb.SignalResponse{}, nil
}

func (s *server) List(ctx context.Context, _ *rpcpb.ListRequest) (*rpcpb.JobList, error) {
	caller, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	out := &rpcpb.JobList{}
	for _, j := range s.m.list(caller) {
		out.Jobs = append(out.Jobs, statusProto(j.snapshot()))
	}
	return out, nil
}

func (s *server) Log(req *rpcpb.JobIdentifier, stream grpc.ServerStreamingServer[rpcpb.JobLog]) error {
	// The original clients cannot be told of a loss, so they lose nothing.
	return s.ReadLog(&rpcpb.LogRequest{Ulid: req.GetUlid(), Lossless: true}, stream)
}

func (s *server) ReadLog(req *rpcpb.LogRequest, stream grpc.ServerStreamingServer[rpcpb.JobLog]) error {
	ctx := stream.Context()
	j, err := s.lookup(ctx, req.GetUlid())
	if err != nil {
		return err
	}
	buf := make([]byte, maxChunk)
	off := int64(req.GetOffset())
	if off < 0 {
		return clientErr(errOutOfRange, "offset is beyond any job's output")
	}
	read := j.log.Read
	if req.GetLossless() {
		h := j.attachLossless(off)
		defer h.Release() // a cancelled or broken stream lets the job go on at once
		read = h.Read
	}
	for {
		n, s, at, lost, err := read(ctx, off, buf, !req.GetNoFollow())
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		if _, err := callerIdentity(ctx); err != nil { // revoked since the stream began
			return err
		}
		msg := &rpcpb.JobLog{Offset: uint64(at), Lost: uint64(lost)}
		if s == stdoutStream {
			msg.Stdout = buf[:n]
		} else {
			msg.Stderr = buf[:n]
		}
		// Send marshals msg before it returns, so buf can be reused: this server installs no stats
		// handler or tracer, the only things grpc-go lets keep a sent message.
		if err := stream.Send(msg); err != nil {
			return err
		}
		off = at + int64(n)
	}
}

// statusProto fills the original fields with their original meaning and the extensions.
func statusProto(s snapshot) *rpcpb.JobStatus {
	st := &rpcpb.JobStatus{
		Ulid:          s.id,
		Command:       s.command,
		Root:          s.given.root,
		JobDirs:       s.given.dirs,
		StartTime:     timestamppb.New(s.started),
		UserTime:      durationpb.New(time.Duration(s.use.userUsec) * time.Microsecond),
		SystemTime:    durationpb.New(time.Duration(s.use.systemUsec) * time.Microsecond),
		MemoryCurrent: s.use.memCurrent,
		MemoryPeak:    s.use.memPeak,
		IoReadBytes:   s.use.ioRead,
		IoWriteBytes:  s.use.ioWrite,
		PidsCurrent:   s.use.pids,
		OomKills:      s.use.oomKills,
		State:         rpcpb.JobStatus_STATE_RUNNING,
	}
	if s.given.hostNet {
		st.Network = "host"
	}
	if s.running {
		return st
	}
	st.EndTime = timestamppb.New(s.ended)
	st.Stopped = s.stopRequested
	if s.exit.Exited {
		st.ExitCode = wrapperspb.UInt32(uint32(s.exit.Code))
	} else {
		st.Killed = true
		st.Signal = wrapperspb.UInt32(uint32(s.exit.Signal))
	}
	switch { // a Stop explains a SIGKILL better than an OOM kill some process had earlier
	case s.stopRequested:
		st.State = rpcpb.JobStatus_STATE_STOPPED
	case st.Killed && s.exit.Signal == int(syscall.SIGKILL) && s.use.oomKills > 0:
		st.State = rpcpb.JobStatus_STATE_OOM_KILLED
	case st.Killed:
		st.State = rpcpb.JobStatus_STATE_SIGNALED
	default:
		st.State = rpcpb.JobStatus_STATE_EXITED
	}
	return st
}

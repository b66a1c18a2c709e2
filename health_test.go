package main

import (
	"crypto/tls"
	"slices"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// TestHealthAndReflection uses grpc-go's own clients, as grpc_health_probe and grpcurl would: the
// health service says SERVING, and NOT_SERVING to a watcher once SIGTERM starts the shutdown;
// reflection lists rund's service and describes it; both only behind mTLS.
func TestHealthAndReflection(t *testing.T) {
	parent := subprocessParent(t, "health")
	pki := newTestPKI(t)
	srv, addr, _ := serverProcess(t, pki, parent)
	defer srv.Process.Kill()
	cfg, err := clientTLS(pki.file("ca.crt"), pki.file("a.crt"), pki.file("a.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	health := healthpb.NewHealthClient(conn)
	for _, service := range []string{"", "rund.JobController"} {
		resp, err := health.Check(ctx(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, %v; want SERVING", service, resp, err)
		}
	}

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	got, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range got.GetListServicesResponse().GetService() {
		services = append(services, s.Name)
	}
	if !slices.Contains(services, "rund.JobController") || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v; want rund.JobController and grpc.health.v1.Health", services)
	}
	refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "rund.JobController"}})
	if got, err = refl.Recv(); err != nil || len(got.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection of rund.JobController: %v, %v", got, err)
	}
	refl.CloseSend()

	// Without a client certificate, neither service answers.
	anon, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: cfg.RootCAs})))
	defer anon.Close()
	if _, err := healthpb.NewHealthClient(anon).Check(ctx(t), &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("health Check without a client certificate succeeded")
	}

	watch, err := health.Watch(ctx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v, %v; want SERVING first", resp, err)
	}
	srv.Process.Signal(syscall.SIGTERM)
	resp, err := watch.Recv()
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Watch after SIGTERM: %v, %v (%v); want NOT_SERVING", resp, err, status.Code(err))
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("server after SIGTERM: %v", err)
	}
}

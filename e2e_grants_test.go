package main

// e2e_grants_test.go is the VM suite's check of grants (grants.go): the guest server runs with a grants
// file that gives the "client" identity network "host" and root, and client2 a memory ceiling and
// default and nothing else. The guest has a
// dummy interface with a documentation address (e2eDummyAddr), which a job in its own network namespace
// cannot reach.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"rund/rpcpb"
)

const (
	e2eGrants    = "/run/rund/grants.json"
	e2eDummyAddr = "192.0.2.1" // on dummy0 (RFC 5737 TEST-NET-1)
	// e2eGrantsFile gives the first development client what a network appliance's controller gets, and
	// bounds the second's memory: 32 MiB unless it asks, 64 MiB at most.
	e2eGrantsFile = `{"dns:client": {"network": "host", "root": true},
		"dns:client2": {"max": {"max_memory_usage": 67108864}, "default": {"max_memory_usage": 33554432}}}`
)

// setupGrants writes the grants file and brings up dummy0 (the dummy module makes it) with its address.
func setupGrants() error {
	if err := os.WriteFile(e2eGrants, []byte(e2eGrantsFile), 0o600); err != nil {
		return err
	}
	for _, args := range [][]string{{"addr", "add", e2eDummyAddr + "/24", "dev", "dummy0"}, {"link", "set", "dummy0", "up"}} {
		if out, err := runOut("ip", args...); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// checkGrants: a job given the host's network reaches a listener on the guest's dummy0 address and
// cannot change an interface, an address, a route or a firewall rule; a job given root is root on the
// guest; client2, without the grants, is refused and the trail says so; the same client's job that asks
// for nothing has neither.
func (g *e2eGuest) checkGrants() {
	lis, err := net.Listen("tcp", e2eDummyAddr+":0")
	if err != nil {
		g.report("grant-network-host", false, "listen on dummy0: %v", err)
		return
	}
	defer lis.Close()
	go func() { // ends when lis is closed
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tries := "ip link set dummy0 down; ip addr add 198.51.100.1/24 dev dummy0; ip route add 203.0.113.0/24 dev lo; " +
		e2eTest + " probe dial=" + lis.Addr().String() + " set-lo-flags firewall"
	req := &rpcpb.JobStartRequest{Name: "/bin/sh", Args: []string{"-c", tries}, Network: "host"}
	out, errs, st, err := g.run(req)
	f := facts(out)
	after, _ := runOut("ip", "-o", "addr", "show", "dev", "dummy0")
	routes, _ := runOut("ip", "route")
	dummy, _ := net.InterfaceByName("dummy0")
	refused := strings.Count(errs, "Operation not permitted") + strings.Count(errs, "Permission denied")
	g.report("grant-network-host", err == nil && st.GetNetwork() == "host" && len(f["dial"]) == 1 && f["dial"][0] == "<nil>" &&
		refused >= 3 && len(f["set-lo-flags"]) == 1 && f["set-lo-flags"][0] == "operation not permitted" &&
		strings.HasPrefix(strings.Join(f["firewall"], ""), "refused") && dummy != nil && dummy.Flags&net.FlagUp != 0 &&
		!strings.Contains(after, "198.51.100.1") && !strings.Contains(routes, "203.0.113."),
		"dial %s: %q; ip link/addr/route refused %d of 3 (%q); lo flags %q; firewall %q; dummy0 after: %q; "+
			"routes: %q; status network %q (%v)", lis.Addr(), f["dial"], refused, errorSummary(errs), f["set-lo-flags"],
		f["firewall"], after, routes, st.GetNetwork(), err)

	proof := "/root/rund-grant-root"
	os.Remove(proof)
	root := &rpcpb.JobStartRequest{Name: "/bin/sh", Args: []string{"-c", "read a b c </proc/self/uid_map; echo $b; touch " + proof},
		Root: true}
	out, errs, st, err = g.run(root)
	fi, statErr := os.Stat(proof)
	g.report("grant-root", err == nil && out == "0\n" && statErr == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 && st.GetRoot(),
		"job's uid 0 is host uid %q (stderr %q); %s: %v; status root %v (%v)", out, errs, proof, statErr, st.GetRoot(), err)

	g.checkGrantsDenied(lis.Addr().String(), proof)
}

// checkGrantsDenied: client2 asking for either grant is refused, and its refusal is on the trail; the
// client's own job that asks for nothing reaches neither dummy0 nor /root.
func (g *e2eGuest) checkGrantsDenied(addr, proof string) {
	os.Remove(proof)
	c2, err := g.dialAs("client2")
	if err != nil {
		g.report("grant-denied", false, "dial as client2: %v", err)
		return
	}
	defer c2.Close()
	ctx, cancel := e2eCtx()
	defer cancel()
	client2 := rpcpb.NewJobControllerClient(c2)
	_, netErr := client2.Start(ctx, &rpcpb.JobStartRequest{Name: "/bin/true", Network: "host"})
	_, rootErr := client2.Start(ctx, &rpcpb.JobStartRequest{Name: "/bin/true", Root: true})
	trail := g.serverLines(2, "method=Start code=PermissionDenied", "identity=dns:client2")
	plain := &rpcpb.JobStartRequest{Name: "/bin/sh", Args: []string{"-c", e2eTest + " probe dial=" + addr + "; touch " + proof}}
	out, _, st, err := g.run(plain)
	f := facts(out)
	_, statErr := os.Stat(proof)
	g.report("grant-denied", code(netErr) == "PermissionDenied" && code(rootErr) == "PermissionDenied" && len(trail) == 2 &&
		err == nil && len(f["dial"]) == 1 && f["dial"][0] != "<nil>" && statErr != nil && st.GetNetwork() == "" && !st.GetRoot(),
		"client2: network host %v, root %v; trail %q; the client's job asking for nothing: dial %q, %s: %v (%v)",
		netErr, rootErr, trail, f["dial"], proof, statErr, err)
	g.checkGrantLimits(client2)
}

// checkGrantLimits: client2's grant bounds its memory. A job that asks for no limit gets the grant's
// default and is OOM-killed at it, touching 1 MiB at a time towards 512 MiB (memory.peak may pass
// memory.max by a page or so: the charge comes before the reclaim that fails); one that asks for more
// than the ceiling is refused, naming the limit.
func (g *e2eGuest) checkGrantLimits(client2 rpcpb.JobControllerClient) {
	ctx, cancel := e2eCtx()
	defer cancel()
	over := tool("sleep", "1s")
	over.MaxMemoryUsage = wrapperspb.UInt64(128 << 20)
	_, overErr := client2.Start(ctx, over)
	id, err := client2.Start(ctx, tool("oom", strconv.Itoa(1<<20), strconv.Itoa(512<<20)))
	var st *rpcpb.JobStatus
	if err == nil {
		st, err = followToEnd(ctx, client2, id.GetUlid())
	}
	peak := st.GetMemoryPeak()
	g.report("grant-limits", code(overErr) == "PermissionDenied" && strings.Contains(fmt.Sprint(overErr), "max_memory_usage") &&
		err == nil && st.GetState() == rpcpb.JobStatus_STATE_OOM_KILLED && peak <= 33554432+64<<10 && peak > 16<<20,
		"asking 128 MiB: %v; asking nothing, touching up to 512 MiB: state %v, memory peak %d (the default 33554432) (%v)",
		overErr, st.GetState(), peak, err)
}

// run starts a job and follows it to its end.
func (g *e2eGuest) run(req *rpcpb.JobStartRequest) (string, string, *rpcpb.JobStatus, error) {
	id, err := g.start(req)
	if err != nil {
		return "", "", nil, err
	}
	return g.wait(id)
}

// dialAs connects as another of the identities rund certs made.
func (g *e2eGuest) dialAs(name string) (*grpc.ClientConn, error) {
	cfg, err := clientTLS(e2eTLS+"/ca.crt", e2eTLS+"/"+name+".crt", e2eTLS+"/"+name+".key")
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(e2eAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

// serverLines returns the server's stderr lines that contain every one of subs, once there are n of them
// or 10 s have passed. A refusal's audit line is written before the client has its answer, but the
// guest reads the server's stderr on its own goroutine, which may not have got to it yet.
func (g *e2eGuest) serverLines(n int, subs ...string) []string {
	const bound = 10 * time.Second
	deadline := time.Now().Add(bound)
	timeout := time.AfterFunc(bound, func() {
		g.logMu.Lock()
		g.logAdded.Broadcast()
		g.logMu.Unlock()
	})
	defer timeout.Stop()
	g.logMu.Lock()
	defer g.logMu.Unlock()
	for {
		var out []string
		for _, l := range g.serverLog {
			if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
				out = append(out, l)
			}
		}
		if len(out) >= n || !time.Now().Before(deadline) {
			return out
		}
		g.logAdded.Wait()
	}
}

// runOut runs a guest command and returns its combined output.
func runOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// followToEnd reads a job's log to its end, which comes after its final status is set, and returns that.
func followToEnd(ctx context.Context, c rpcpb.JobControllerClient, id string) (*rpcpb.JobStatus, error) {
	stream, err := c.Log(ctx, &rpcpb.JobIdentifier{Ulid: id})
	for err == nil {
		_, err = stream.Recv()
	}
	if err != io.EOF {
		return nil, err
	}
	return c.Status(ctx, &rpcpb.JobIdentifier{Ulid: id})
}

package main

// tls_test.go: who the server lets in (against a real server from startServer), what a client accepts as
// a server, the key-file mode check and the development PKI.

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

var (
	ekuClient = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	ekuServer = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
)

// tlsCert turns an issued certificate into what crypto/tls presents.
func tlsCert(i *issued) *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{i.cert.Raw}, PrivateKey: i.key, Leaf: i.cert}
}

// mustIssue is issue that fails the test on error.
func mustIssue(t testing.TB, spec certSpec, parent *issued) *issued {
	t.Helper()
	c, err := issue(spec, parent)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pkiKeyPair loads dir/name.{crt,key} of a test PKI.
func pkiKeyPair(t testing.TB, p *testPKI, name string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.file(name+".crt"), p.file(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// presentingTLS is a TLS 1.3 client configuration that trusts p's CA and presents cert (none when nil)
// whatever the server asks for. With tls.Config.Certificates, crypto/tls would quietly withhold a
// certificate that is not from one of the CAs the server names, and the server would only ever see
// "no certificate"; GetClientCertificate makes every case reach the server's verification.
func presentingTLS(t testing.TB, p *testPKI, cert *tls.Certificate) *tls.Config {
	t.Helper()
	data, err := os.ReadFile(p.file("ca.crt"))
	pool := x509.NewCertPool()
	if err != nil || !pool.AppendCertsFromPEM(data) {
		t.Fatalf("read CA %s: %v", p.file("ca.crt"), err)
	}
	if cert == nil {
		cert = &tls.Certificate{}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert, nil
		},
	}
}

// TestTLSServerRejectMatrix connects to a real server with one client configuration per case and
// makes one RPC: a rejected handshake is codes.Unavailable. The TLS alert the server sends on a second,
// raw connection says which check refused it, so a case cannot pass by failing for another reason.
func TestTLSServerRejectMatrix(t *testing.T) {
	ts := startServer(t)
	p := ts.pki
	otherCA := mustIssue(t, certSpec{name: "other CA", isCA: true}, nil)
	now := time.Now()
	aOwnKey := pkiKeyPair(t, p, "a")
	bOwnKey := pkiKeyPair(t, p, "b")

	cases := []struct {
		name string
		cfg  func() *tls.Config
		// wantAlert is the TLS alert the server sends; "" means it lets the client in.
		wantAlert string
	}{
		{"accepted client a (clientTLS)", func() *tls.Config {
			cfg, err := clientTLS(p.file("ca.crt"), p.file("a.crt"), p.file("a.key"))
			if err != nil {
				t.Fatal(err)
			}
			return cfg
		}, ""},
		{"accepted client a (presented)", func() *tls.Config { return presentingTLS(t, p, aOwnKey) }, ""},
		{"no client certificate", func() *tls.Config { return presentingTLS(t, p, nil) }, "certificate required"},
		{"no client certificate (no GetClientCertificate)", func() *tls.Config {
			cfg := presentingTLS(t, p, nil)
			cfg.GetClientCertificate = nil
			return cfg
		}, "certificate required"},
		{"client certificate from another CA", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(mustIssue(t, certSpec{name: "a", dns: []string{"a"}, eku: ekuClient}, otherCA)))
		}, "unknown certificate authority"},
		{"self-signed CA certificate as client", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(otherCA))
		}, "unknown certificate authority"},
		{"server's own certificate and key", func() *tls.Config {
			cfg, err := clientTLS(p.file("ca.crt"), p.file("server.crt"), p.file("server.key"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.GetClientCertificate = presentingTLS(t, p, &cfg.Certificates[0]).GetClientCertificate
			return cfg
		}, "bad certificate"},
		{"expired client certificate", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(mustIssue(t, certSpec{name: "x", dns: []string{"x"}, eku: ekuClient,
				notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, p.ca)))
		}, "expired certificate"},
		{"not yet valid client certificate", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(mustIssue(t, certSpec{name: "x", dns: []string{"x"}, eku: ekuClient,
				notBefore: now.Add(24 * time.Hour), notAfter: now.Add(48 * time.Hour)}, p.ca)))
		}, "expired certificate"},
		{"client certificate without any EKU", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(mustIssue(t, certSpec{name: "x", dns: []string{"x"}}, p.ca)))
		}, "bad certificate"},
		{"client certificate with only the ServerAuth EKU", func() *tls.Config {
			return presentingTLS(t, p, tlsCert(mustIssue(t, certSpec{name: "x", dns: []string{"x"}, eku: ekuServer}, p.ca)))
		}, "bad certificate"},
		{"a's certificate with b's key", func() *tls.Config {
			return presentingTLS(t, p, &tls.Certificate{Certificate: aOwnKey.Certificate, PrivateKey: bOwnKey.PrivateKey})
		}, "error decrypting message"},
		{"client offering only TLS 1.2", func() *tls.Config {
			cfg := presentingTLS(t, p, aOwnKey)
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return cfg
		}, "protocol version not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.dialTLS(t, tc.cfg()).List(ctx(t), &rpcpb.ListRequest{})
			switch {
			case tc.wantAlert == "" && err != nil:
				t.Fatalf("List: %v, want success", err)
			case tc.wantAlert != "" && status.Code(err) != codes.Unavailable:
				t.Fatalf("List: %v (%s), want Unavailable", err, code(err))
			}
			// gRPC's error may be the broken pipe of its first write instead of the alert, so the
			// reason is read from a connection that only reads.
			err = firstRead(t, ts.addr, tc.cfg())
			switch {
			case tc.wantAlert == "" && err != nil:
				t.Fatalf("TLS connection: %v, want the server's first bytes", err)
			case tc.wantAlert != "" && (err == nil || !strings.Contains(err.Error(), "tls: "+tc.wantAlert)):
				t.Fatalf("TLS connection: %v, want the alert %q", err, tc.wantAlert)
			}
		})
	}
}

// firstRead connects to addr with cfg (offering h2, as gRPC does) and reads the server's first byte.
// In TLS 1.3 the client finishes its handshake before the server has judged the client's certificate,
// so a refusal arrives as an alert on that read.
func firstRead(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(conn, make([]byte, 1))
	return err
}

// TestTLSNegotiatesTLS13AndH2 checks what a real server negotiates with a proper client.
func TestTLSNegotiatesTLS13AndH2(t *testing.T) {
	ts := startServer(t)
	cfg, err := clientTLS(ts.pki.file("ca.crt"), ts.pki.file("a.crt"), ts.pki.file("a.key"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ts.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
	if cs.NegotiatedProtocol != "h2" {
		t.Errorf("ALPN %q, want h2", cs.NegotiatedProtocol)
	}
}

// TestTLSSANBypassAppendedCertificate: a client that presents its own valid certificate followed by
// another client's (public) certificate is still only itself.
func TestTLSSANBypassAppendedCertificate(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	req := cmd("sleep", "1000")
	req.StopGracePeriod = durationpbSecond()
	aJob := startJob(t, a, req)
	t.Cleanup(func() { stopAs(t, a, aJob) })

	aLeaf := pkiKeyPair(t, ts.pki, "a").Certificate[0]
	b := pkiKeyPair(t, ts.pki, "b")
	forged := &tls.Certificate{Certificate: [][]byte{b.Certificate[0], aLeaf}, PrivateKey: b.PrivateKey}
	mallory := ts.dialTLS(t, presentingTLS(t, ts.pki, forged))

	_, err := mallory.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: aJob})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Status of a's job as b+a's leaf: %v (%s), want NotFound", err, code(err))
	}
	list, err := mallory.List(ctx(t), &rpcpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range list.Jobs {
		if j.Ulid == aJob {
			t.Errorf("List as b+a's leaf shows a's job %s", aJob)
		}
	}
	// The chain is used, though: the connection is b's, and b's own job is visible to it.
	bJob := startJob(t, mallory, cmd("true"))
	if _, err := ts.dialAs(t, "b").Status(ctx(t), &rpcpb.JobIdentifier{Ulid: bJob}); err != nil {
		t.Errorf("b cannot see the job started by b+a's leaf: %v", err)
	}
	waitDone(t, mallory, bJob)
}

// handshake runs one TLS handshake over loopback between tls.Server(srv) and tls.Client(cli) and
// returns each side's error. The client then reads one byte the server sends on success, because in TLS
// 1.3 the client's handshake completes before the server has judged the client's certificate.
func handshake(t *testing.T, srv, cli *tls.Config) (srvErr, cliErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	deadline := time.Now().Add(10 * time.Second)
	srvDone := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		tc := tls.Server(c, srv)
		if err = tc.Handshake(); err == nil {
			_, err = tc.Write([]byte{1})
		}
		srvDone <- err
	}()
	c, err := net.DialTimeout("tcp", lis.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(deadline)
	cli = cli.Clone()
	cli.ServerName = cmp.Or(cli.ServerName, "localhost")
	tc := tls.Client(c, cli)
	if cliErr = tc.Handshake(); cliErr == nil {
		_, cliErr = io.ReadFull(tc, make([]byte, 1))
	}
	c.Close()
	return <-srvDone, cliErr
}

// TestTLSClientRejectsServerWithoutServerAuth: clientTLS wants the ServerAuth EKU explicitly, including
// from a server certificate with no EKU at all, which crypto/tls alone would accept.
func TestTLSClientRejectsServerWithoutServerAuth(t *testing.T) {
	p := newTestPKI(t)
	cli, err := clientTLS(p.file("ca.crt"), p.file("a.crt"), p.file("a.key"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		eku     []x509.ExtKeyUsage
		wantErr string // in the client's error; "" for success
	}{
		{"ServerAuth", ekuServer, ""},
		{"ClientAuth only", ekuClient, "incompatible key usage"},
		{"no EKU", nil, "lacks the server-auth extended key usage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leaf := mustIssue(t, certSpec{name: "localhost", dns: []string{"localhost"}, eku: tc.eku}, p.ca)
			srv := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*tlsCert(leaf)}}
			_, cliErr := handshake(t, srv, cli)
			switch {
			case tc.wantErr == "" && cliErr != nil:
				t.Fatalf("client: %v, want success", cliErr)
			case tc.wantErr != "" && (cliErr == nil || !strings.Contains(cliErr.Error(), tc.wantErr)):
				t.Fatalf("client: %v, want an error containing %q", cliErr, tc.wantErr)
			}
		})
	}
}

// TestTLSServerRejectsOwnCertificateWithClientAuth: a server certificate that also carries ClientAuth
// passes every other check, so only serverTLS's own-certificate rule keeps it from acting as a client.
func TestTLSServerRejectsOwnCertificateWithClientAuth(t *testing.T) {
	p := newTestPKI(t)
	p.leaf(t, "both", certSpec{name: "localhost", dns: []string{"localhost"},
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	srv, err := serverTLS(p.file("ca.crt"), p.file("both.crt"), p.file("both.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []string{"both", "a"} {
		t.Run(client, func(t *testing.T) {
			cli, err := clientTLS(p.file("ca.crt"), p.file(client+".crt"), p.file(client+".key"))
			if err != nil {
				t.Fatal(err)
			}
			srvErr, cliErr := handshake(t, srv, cli)
			if client == "a" {
				if srvErr != nil || cliErr != nil {
					t.Fatalf("server: %v, client: %v; want success", srvErr, cliErr)
				}
				return
			}
			if srvErr == nil || !strings.Contains(srvErr.Error(), "own certificate") {
				t.Errorf("server: %v, want the own-certificate refusal", srvErr)
			}
			if cliErr == nil {
				t.Errorf("client: handshake succeeded, want an alert")
			}
		})
	}
}

func TestLoadKeyPairKeyMode(t *testing.T) {
	cases := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o660, false},
	}
	for _, tc := range cases {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			if err := mustIssue(t, certSpec{name: "k", dns: []string{"k"}, eku: ekuClient}, nil).write(dir, "k"); err != nil {
				t.Fatal(err)
			}
			crt, key := filepath.Join(dir, "k.crt"), filepath.Join(dir, "k.key")
			if err := os.Chmod(key, tc.mode); err != nil {
				t.Fatal(err)
			}
			cert, err := loadKeyPair(crt, key)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("loadKeyPair with key mode %v: %v", tc.mode, err)
			case tc.ok && len(cert.Certificate) != 1:
				t.Fatalf("loadKeyPair returned %d certificates", len(cert.Certificate))
			case !tc.ok && err == nil:
				t.Fatalf("loadKeyPair accepted a key with mode %v", tc.mode)
			case !tc.ok && !strings.Contains(err.Error(), "chmod 600"):
				t.Fatalf("error %q does not say how to fix it (chmod 600)", err)
			}
		})
	}
}

var devPKIFiles = []string{"ca.crt", "ca.key", "client.crt", "client.key", "client2.crt", "client2.key", "server.crt", "server.key"}

// localServer is rund certs' default server certificate: localhost, 127.0.0.1 and ::1.
func localServer(t testing.TB) certSpec {
	t.Helper()
	spec, err := serverSpec("localhost,127.0.0.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// readCert parses the one PEM certificate in path.
func readCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: want exactly one PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWriteDevPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if err := writeDevPKI(dir, localServer(t)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if !slices.Equal(names, devPKIFiles) {
		t.Errorf("files %v, want %v", names, devPKIFiles)
	}
	for _, n := range devPKIFiles {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(n, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", n, fi.Mode().Perm())
		}
	}

	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	if !ca.IsCA {
		t.Errorf("ca.crt is not a CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	certs := map[string]*x509.Certificate{"ca": ca}
	for _, name := range []string{"server", "client", "client2"} {
		c := readCert(t, filepath.Join(dir, name+".crt"))
		certs[name] = c
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not chain to ca.crt: %v", name, err)
		}
		if c.IsCA {
			t.Errorf("%s is a CA", name)
		}
	}
	for name, c := range certs {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: public key %T, want ECDSA P-256", name, c.PublicKey)
		}
		if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: signed with %v, want ECDSA-SHA256", name, c.SignatureAlgorithm)
		}
	}

	srv := certs["server"]
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(srv.DNSNames, []string{"localhost"}) || !slices.Equal(ips, []string{"127.0.0.1", "::1"}) {
		t.Errorf("server SANs: DNS %v IP %v, want localhost, 127.0.0.1, ::1", srv.DNSNames, ips)
	}
	if !slices.Equal(srv.ExtKeyUsage, ekuServer) {
		t.Errorf("server EKU %v, want ServerAuth", srv.ExtKeyUsage)
	}
	for _, name := range []string{"client", "client2"} {
		c := certs[name]
		if !slices.Equal(c.ExtKeyUsage, ekuClient) {
			t.Errorf("%s EKU %v, want ClientAuth", name, c.ExtKeyUsage)
		}
		if len(certIdentity(c)) == 0 {
			t.Errorf("%s has no SAN", name)
		}
	}
	if id1, id2 := certIdentity(certs["client"]), certIdentity(certs["client2"]); sharesIdentity(id1, id2) {
		t.Errorf("client %v and client2 %v share a name, so each could touch the other's jobs", id1, id2)
	}

	// A server built from these files lets both clients in.
	srvCfg, err := serverTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"client", "client2"} {
		cli, err := clientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if srvErr, cliErr := handshake(t, srvCfg, cli); srvErr != nil || cliErr != nil {
			t.Errorf("%s: server %v, client %v; want a handshake", name, srvErr, cliErr)
		}
	}
}

// TestWriteDevPKIRerunReplacesNoFile: a run into a directory that holds any file it would write fails
// and changes nothing there. (The first version replaced ca.crt and server.crt before it stopped at the
// existing server.key, leaving a PKI whose certificates matched neither the keys nor each other.)
func TestWriteDevPKIRerunReplacesNoFile(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"complete PKI from an earlier run", func(t *testing.T, dir string) {
			if err := writeDevPKI(dir, localServer(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{"only the last key", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "client2.key"), []byte("old key"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"only a certificate", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("old cert"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(t, dir)
			before := readDir(t, dir)
			err := writeDevPKI(dir, localServer(t))
			if err == nil {
				t.Fatal("writeDevPKI into a directory with an existing PKI file succeeded")
			}
			if !errors.Is(err, os.ErrExist) {
				t.Errorf("writeDevPKI: %v, want an error wrapping os.ErrExist", err)
			}
			after := readDir(t, dir)
			for name, data := range after {
				if old, ok := before[name]; !ok {
					t.Errorf("the failed run wrote %s", name)
				} else if !bytes.Equal(old, data) {
					t.Errorf("the failed run rewrote %s", name)
				}
			}
			if len(after) != len(before) {
				t.Errorf("files before %d, after %d", len(before), len(after))
			}
		})
	}
}

// readDir returns the contents of every file in dir by name.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

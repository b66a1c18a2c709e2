package main

// pki_test.go: the PKI for the field (issue 26, item 4): rund certs' server names, its kept CA key and
// the certificates it issues from it later; the README's openssl recipes; and -crl, at the handshake,
// at each call on a connection made before, and across SIGHUP reloads.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rund/rpcpb"
)

// certs runs `rund certs` with args and returns its exit code.
func certs(args ...string) int { return runCerts(args) }

// TestCertsServerNames: -server_names are the server certificate's SANs, and a client that dials the
// server by one of them verifies it; by a name it lacks (localhost, the default's) it does not.
func TestCertsServerNames(t *testing.T) {
	dir := t.TempDir()
	if code := certs("-dir", dir, "-server_names", "dev1.example, 192.0.2.2,fd00::2"); code != 0 {
		t.Fatalf("rund certs -server_names: exit %d", code)
	}
	srv := readCert(t, filepath.Join(dir, "server.crt"))
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(srv.DNSNames, []string{"dev1.example"}) || !slices.Equal(ips, []string{"192.0.2.2", "fd00::2"}) {
		t.Errorf("server SANs: DNS %v IP %v, want dev1.example, 192.0.2.2, fd00::2", srv.DNSNames, ips)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	srvCfg, err := serverTLS(f("ca.crt"), f("server.crt"), f("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{"192.0.2.2": true, "dev1.example": true, "fd00::2": true, "localhost": false} {
		cli, err := clientTLS(f("ca.crt"), f("client.crt"), f("client.key"))
		if err != nil {
			t.Fatal(err)
		}
		cli.ServerName = name
		_, cliErr := handshake(t, srvCfg, cli)
		switch {
		case ok && cliErr != nil:
			t.Errorf("a client dialing %s: %v, want a handshake", name, cliErr)
		case !ok && (cliErr == nil || !strings.Contains(cliErr.Error(), "certificate is valid for")):
			t.Errorf("a client dialing %s: %v, want the server's certificate refused for its names", name, cliErr)
		}
	}
}

// TestCertsNamesRefused: a name that is no DNS name or IP address is refused with a reason, and
// nothing is written.
func TestCertsNamesRefused(t *testing.T) {
	for _, tc := range []struct{ names, want string }{
		{"", "empty name"},
		{"a,,b", "empty name"},
		{"*.example", "no wildcards"},
		{"Dev1.example", "lower-case"},
		{"192.0.2.256", "mistyped IP address"},
		{"fe80::1%eth0", "lower-case"},
		{"a_b", "lower-case"},
		{"-a.example", "no hyphen at its ends"},
		{"a..b", "each label 1 to 63"},
		{strings.Repeat("a", 64) + ".example", "each label 1 to 63"},
	} {
		t.Run(tc.names, func(t *testing.T) {
			_, err := serverSpec(tc.names)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("serverSpec(%q): %v, want an error saying %q", tc.names, err, tc.want)
			}
			dir := t.TempDir()
			if code := certs("-dir", dir, "-server_names", tc.names); code != 2 {
				t.Errorf("rund certs -server_names %q: exit %d, want 2", tc.names, code)
			}
			if code := certs("-dir", dir, "-client", tc.names); code != 2 {
				t.Errorf("rund certs -client %q: exit %d, want 2", tc.names, code)
			}
			if files := readDir(t, dir); len(files) != 0 {
				t.Errorf("a refused run wrote %d files", len(files))
			}
		})
	}
	for _, ok := range []string{"a", "dev-1.example", "xn--bcher-kva.example", "10.example"} {
		if err := checkDNSName(ok); err != nil {
			t.Errorf("checkDNSName(%q): %v, want it accepted", ok, err)
		}
	}
}

// TestCertsKeepsCAKey: the CA's key is written 0600 and matches ca.crt; a second run into the same
// directory refuses, names what is there, and changes no file.
func TestCertsKeepsCAKey(t *testing.T) {
	dir := t.TempDir()
	if err := writeDevPKI(dir, localServer(t)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v, want mode 0600", fi, err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")); err != nil {
		t.Errorf("ca.key is not ca.crt's key: %v", err)
	}
	before := readDir(t, dir)
	_, err = writeCerts(dir, "", "", localServer(t))
	if !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), filepath.Join(dir, "ca.key")) ||
		!strings.Contains(err.Error(), "never replaces") {
		t.Errorf("a second rund certs: %v, want a refusal naming %s", err, filepath.Join(dir, "ca.key"))
	}
	if code := certs("-dir", dir); code != 1 {
		t.Errorf("a second rund certs: exit %d, want 1", code)
	}
	after := readDir(t, dir)
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("the refused run changed %s", name)
		}
	}
}

// TestCertsClientFromKeptCA: -client NAME issues a client certificate from DIR's CA, the identity
// dns:NAME; it refuses to replace one, a CA key that is not ca.crt's, or one others may read.
func TestCertsClientFromKeptCA(t *testing.T) {
	dir := t.TempDir()
	if err := writeDevPKI(dir, localServer(t)); err != nil {
		t.Fatal(err)
	}
	if code := certs("-dir", dir, "-client", "alice"); code != 0 {
		t.Fatalf("rund certs -client alice: exit %d", code)
	}
	ca, alice := readCert(t, filepath.Join(dir, "ca.crt")), readCert(t, filepath.Join(dir, "alice.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := alice.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: ekuClient}); err != nil {
		t.Errorf("alice.crt does not verify as a client of ca.crt: %v", err)
	}
	if ids := certIdentity(alice); !slices.Equal(ids, []string{"dns:alice"}) {
		t.Errorf("alice's identity %v, want dns:alice", ids)
	}
	if fi, err := os.Stat(filepath.Join(dir, "alice.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("alice.key: %v %v, want mode 0600", fi, err)
	}
	before := readDir(t, dir)
	if err := issueFromCA(dir, "alice", certSpec{name: "alice", dns: []string{"alice"}}); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second -client alice: %v, want a refusal (file exists)", err)
	}

	other := t.TempDir()
	if err := writeDevPKI(other, localServer(t)); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := os.ReadFile(filepath.Join(other, "ca.key"))
	os.WriteFile(filepath.Join(dir, "ca.key"), otherKey, 0o600) // another CA's key beside ca.crt
	err := issueFromCA(dir, "bob", certSpec{name: "bob", dns: []string{"bob"}})
	if err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Errorf("-client bob with another CA's key: %v, want a refusal", err)
	}
	os.WriteFile(filepath.Join(dir, "ca.key"), before["ca.key"], 0o600)
	os.Chmod(filepath.Join(dir, "ca.key"), 0o644)
	if err := issueFromCA(dir, "bob", certSpec{name: "bob", dns: []string{"bob"}}); err == nil ||
		!strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("-client bob with ca.key readable by others: %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bob.crt")); err == nil {
		t.Errorf("a refused -client bob wrote bob.crt")
	}
	if code := certs("-dir", t.TempDir(), "-client", "bob"); code != 1 {
		t.Errorf("-client in a directory with no CA: exit %d, want 1", code)
	}
}

// TestCertsIssuedIdentitiesServe: a client issued later with -client NAME, and a second device's
// server certificate from -server NAME, work with a real server: the client is NAME to it.
func TestCertsIssuedIdentitiesServe(t *testing.T) {
	parent := subprocessParent(t, "certs")
	dir := t.TempDir()
	for _, args := range [][]string{{}, {"-client", "alice"}, {"-server", "dev2", "-server_names", "dev2.example,127.0.0.1"}} {
		if code := certs(append([]string{"-dir", dir}, args...)...); code != 0 {
			t.Fatalf("rund certs %v: exit %d", args, code)
		}
	}
	pki := &testPKI{dir: dir}
	srv, addr, lines := serverProcessFlags(t, os.Args[0], pki, parent, nil,
		[]string{"-cert", pki.file("dev2.crt"), "-key", pki.file("dev2.key")})
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	ts := &testServer{addr: addr, pki: pki}
	alice := dialNamed(t, ts, "alice", "dev2.example")
	id := startJob(t, alice, cmd("true"))
	waitLine(t, lines, "method=Start code=OK identity=dns:alice ")
	waitDone(t, alice, id)
	other, err := dialNamed(t, ts, "client", "dev2.example").Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
	if status.Code(err) != codes.NotFound {
		t.Errorf("alice's job to the identity client: %v %v, want NotFound", other, err)
	}
}

// TestP521PKIStillWorks: a PKI of ECDSA P-521 keys, as rund certs wrote before it wrote P-256 (issue
// 24), still serves: the server's and the client's configurations from those files complete a mutual
// handshake, and the server sees the client's certificate.
func TestP521PKIStillWorks(t *testing.T) {
	dir := t.TempDir()
	ca, err := issue(certSpec{name: "old CA", isCA: true, curve: elliptic.P521()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.crt"), ca.cert.Raw)
	leaves := map[string]certSpec{
		"server": {name: "localhost", dns: []string{"localhost"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		"client": {name: "client", dns: []string{"client"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	old := &testPKI{dir: dir, ca: ca}
	for name, spec := range leaves {
		spec.curve = elliptic.P521()
		old.leaf(t, name, spec)
		if pub := readCert(t, filepath.Join(dir, name+".crt")).PublicKey.(*ecdsa.PublicKey); pub.Curve != elliptic.P521() {
			t.Fatalf("%s: key on %s, want P-521", name, pub.Curve.Params().Name)
		}
	}
	srvCfg, err := serverTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := clientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg.ServerName, cliCfg.NextProtos = "localhost", []string{"h2"}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, srvCfg)
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	if err := tls.Client(b, cliCfg).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if peers := srv.ConnectionState().PeerCertificates; len(peers) == 0 || peers[0].Subject.CommonName != "client" {
		t.Errorf("the server sees %v, want the client's certificate", peers)
	}
}

// dialNamed connects as the client whose files are name.{crt,key}, checking the server's certificate
// for serverName.
func dialNamed(t *testing.T, ts *testServer, name, serverName string) rpcpb.JobControllerClient {
	t.Helper()
	cfg, err := clientTLS(ts.pki.file("ca.crt"), ts.pki.file(name+".crt"), ts.pki.file(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = serverName
	return ts.dialTLS(t, cfg)
}

// waitLine reads lines until one contains s, and returns it; it fails the test if none does within 30 s.
func waitLine(t *testing.T, lines <-chan string, s string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the server's log ended before a line with %q", s)
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			t.Fatalf("no line with %q in the server's log within 30s", s)
		}
	}
}

// writeCRL writes a CRL signed by issuer that revokes certs, valid until nextUpdate: PEM, or DER.
func writeCRL(t *testing.T, path string, issuer *issued, nextUpdate time.Time, der bool, certs ...*x509.Certificate) {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: nextUpdate}
	for _, c := range certs {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	data, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer.cert, issuer.key)
	if err != nil {
		t.Fatal(err)
	}
	if !der {
		data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: data})
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCRLLoad: a CRL is read in PEM or DER, and only if a CA of -ca signed it; one past its next
// update is logged and still enforced.
func TestCRLLoad(t *testing.T) {
	p := newTestPKI(t)
	b := readCert(t, p.file("b.crt"))
	crl := p.file("crl.pem")
	for _, der := range []bool{false, true} {
		writeCRL(t, crl, p.ca, time.Now().Add(time.Hour), der, b)
		l, err := loadCRL(crl, p.file("ca.crt"))
		if err != nil || !l.revokes([]*x509.Certificate{b}) || l.revokes([]*x509.Certificate{readCert(t, p.file("a.crt"))}) {
			t.Errorf("CRL (DER %v) revoking b: %v, want b revoked and a not", der, err)
		}
	}
	otherCA := mustIssue(t, certSpec{name: "test CA", isCA: true}, nil) // the same name, another key
	writeCRL(t, crl, otherCA, time.Now().Add(time.Hour), false, b)
	if _, err := loadCRL(crl, p.file("ca.crt")); err == nil || !strings.Contains(err.Error(), "not signed by a CA of") {
		t.Errorf("a CRL of another CA: %v, want it refused", err)
	}
	os.WriteFile(crl, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644)
	if _, err := loadCRL(crl, p.file("ca.crt")); err == nil || !strings.Contains(err.Error(), "read CRL "+crl) {
		t.Errorf("a CRL that does not parse: %v, want it refused", err)
	}
	if _, err := loadCRL(p.file("none.pem"), p.file("ca.crt")); !errors.Is(err, os.ErrNotExist) ||
		!strings.Contains(err.Error(), p.file("none.pem")) {
		t.Errorf("a missing CRL: %v, want its path and ENOENT", err)
	}

	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)
	writeCRL(t, crl, p.ca, time.Now().Add(-time.Minute), false, b)
	l, err := loadCRL(crl, p.file("ca.crt"))
	if err != nil || !l.revokes([]*x509.Certificate{b}) {
		t.Errorf("a stale CRL: %v, want it loaded and b still revoked", err)
	}
	l.revokes([]*x509.Certificate{b})
	if n := strings.Count(logged.String(), "past its next update"); n != 1 {
		t.Errorf("a stale CRL logged %d times, want once: %q", n, logged.String())
	}
}

// TestCRLHandshakeAndReload: a client the CRL revokes is refused at the handshake, as a certificate
// verification error (which the audit trail records); a reload whose CRL is bad or another CA's fails and
// keeps the CRL in use; a good one takes effect.
func TestCRLHandshakeAndReload(t *testing.T) {
	p := newTestPKI(t)
	crl := p.file("crl.pem")
	writeCRL(t, crl, p.ca, time.Now().Add(time.Hour), false, readCert(t, p.file("b.crt")))
	r, err := newRotatingTLS(p.file("ca.crt"), p.file("server.crt"), p.file("server.key"), crl)
	if err != nil {
		t.Fatal(err)
	}
	try := func(name string) error {
		cli, err := clientTLS(p.file("ca.crt"), p.file(name+".crt"), p.file(name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		srvErr, _ := handshake(t, r.listener(), cli)
		return srvErr
	}
	wantRevoked := func(when string) {
		t.Helper()
		var bad *tls.CertificateVerificationError
		if err := try("b"); !errors.As(err, &bad) || !strings.Contains(err.Error(), "is revoked by "+crl) {
			t.Errorf("%s: b's handshake: %v, want it refused as revoked", when, err)
		}
		if err := try("a"); err != nil {
			t.Errorf("%s: a's handshake: %v, want it accepted", when, err)
		}
	}
	wantRevoked("at start")

	os.WriteFile(crl, []byte("not a CRL"), 0o644)
	if err := r.reload(); err == nil {
		t.Errorf("reload of a CRL that does not parse succeeded")
	}
	wantRevoked("after a bad CRL")
	writeCRL(t, crl, mustIssue(t, certSpec{name: "test CA", isCA: true}, nil), time.Now().Add(time.Hour), false)
	if err := r.reload(); err == nil || !strings.Contains(err.Error(), "not signed by") {
		t.Errorf("reload of another CA's CRL: %v, want it refused", err)
	}
	wantRevoked("after another CA's CRL")

	writeCRL(t, crl, p.ca, time.Now().Add(time.Hour), true, readCert(t, p.file("a.crt")))
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	if try("a") == nil || try("b") != nil {
		t.Errorf("after a CRL that revokes a instead: a %v, b %v; want a refused and b let in", try("a"), try("b"))
	}
}

// TestServeRefusesForeignCRL: rund serve does not start with a CRL that no CA of -ca signed.
func TestServeRefusesForeignCRL(t *testing.T) {
	parent := subprocessParent(t, "crl")
	p := newTestPKI(t)
	writeCRL(t, p.file("crl.pem"), mustIssue(t, certSpec{name: "other CA", isCA: true}, nil), time.Now().Add(time.Hour), false)
	c := exec.CommandContext(ctx(t), os.Args[0], "serve", "-addr", "127.0.0.1:0", "-cgroup", parent,
		"-ca", p.file("ca.crt"), "-cert", p.file("server.crt"), "-key", p.file("server.key"), "-crl", p.file("crl.pem"))
	out, err := c.CombinedOutput()
	if c.ProcessState == nil || c.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "not signed by a CA of") {
		t.Errorf("rund serve -crl <another CA's>: %v\n%s\nwant exit 1, the CRL refused", err, out)
	}
}

// recipe is the README's ```sh block whose first line is "# recipe: name ...".
func recipe(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```sh\n# recipe: "+name+" ")
	_, rest, _ = strings.Cut(rest, "\n") // the rest of its comment line
	block, _, closed := strings.Cut(rest, "\n```\n")
	if !ok || !closed {
		t.Fatalf("README has no sh block \"# recipe: %s\"", name)
	}
	return block
}

// runRecipe runs a README recipe with bash in dir, failing on any command's failure.
func runRecipe(t *testing.T, dir, name, script string) {
	t.Helper()
	c := exec.Command("bash", "-euo", "pipefail", "-c", script)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("recipe %s: %v\n%s", name, err, out)
	}
}

// TestOpenSSLRecipes: the README's openssl recipes, run as written, make a PKI rund serves with: a CA,
// a device's server certificate, clients alice and bob, and a CRL. Then alice is revoked with openssl
// ca: once the server has the new CRL (SIGHUP), her connection made before it loses her job at its next
// call and her open log stream at the job's next output, a new connection of hers is refused at the
// handshake, each on the audit trail; bob carries on. A bad CRL on a later SIGHUP keeps hers in force.
func TestOpenSSLRecipes(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is missing; .ci/run installs it")
		}
		t.Skip("openssl not installed")
	}
	parent := subprocessParent(t, "openssl")
	dir := t.TempDir()
	for _, name := range []string{"ca", "server", "client", "crl"} {
		runRecipe(t, dir, name, recipe(t, name))
	}
	runRecipe(t, dir, "client bob", strings.Replace(recipe(t, "client"), "name=alice sans=DNS:alice", "name=bob sans=DNS:bob", 1))
	pki := &testPKI{dir: dir}
	srv, addr, lines := serverProcessFlags(t, os.Args[0], pki, parent, nil,
		[]string{"-cert", pki.file("dev1.crt"), "-key", pki.file("dev1.key"), "-crl", pki.file("crl.pem")})
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	ts := &testServer{addr: addr, pki: pki}
	alice, bob := dialNamed(t, ts, "alice", "dev1.example"), dialNamed(t, ts, "bob", "dev1.example")
	flag := filepath.Join(jobTempDir(t), "go-on")
	id := startJob(t, alice, cmd("sh", "-c", "echo ready; while [ ! -e "+flag+" ]; do sleep 0.05; done; echo after; exec sleep 1000"))
	waitLine(t, lines, "method=Start code=OK identity=dns:alice ")
	stream, err := alice.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || string(msg.Stdout) != "ready\n" {
		t.Fatalf("alice's log before revocation: %q %v", msg.GetStdout(), err)
	}

	runRecipe(t, dir, "revoke", recipe(t, "revoke"))
	srv.Process.Signal(syscall.SIGHUP)
	waitLine(t, lines, "SIGHUP: reloaded "+pki.file("ca.crt")+", "+pki.file("dev1.crt")+", "+pki.file("dev1.key")+", "+pki.file("crl.pem"))
	if _, err := alice.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("alice's Status on her connection made before the revocation: %v, want Unauthenticated", err)
	}
	if line := waitLine(t, lines, "method=Status code=Unauthenticated"); !strings.Contains(line, "identity=dns:alice ") {
		t.Errorf("the audit line of alice's refused Status: %s, want her identity", line)
	}
	if _, err := alice.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("alice's Stop: %v, want Unauthenticated", err)
	}
	os.WriteFile(flag, nil, 0o644)
	if msg, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("alice's log stream opened before the revocation, at the job's next output: %q %v, want Unauthenticated",
			msg.GetStdout(), err)
	}
	if _, err := dialNamed(t, ts, "alice", "dev1.example").List(ctx(t), &rpcpb.ListRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("alice's new connection: %v, want it refused at the handshake (Unavailable)", err)
	}
	if line := waitLine(t, lines, "method=handshake code=Unauthenticated"); !strings.Contains(line, "dns:alice") ||
		!strings.Contains(line, "revoked") {
		t.Errorf("the audit line of alice's refused handshake: %s, want her name and why", line)
	}
	if _, err := bob.List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Errorf("bob, not revoked, on his connection: %v", err)
	}
	badCRLKeepsOld(t, srv, lines, ts, alice)
}

// badCRLKeepsOld: after a SIGHUP with a CRL file that does not parse, the CRL in force still refuses
// alice, at the handshake and on her old connection, and lets bob in.
func badCRLKeepsOld(t *testing.T, srv *exec.Cmd, lines <-chan string, ts *testServer, alice rpcpb.JobControllerClient) {
	pki := ts.pki
	os.WriteFile(pki.file("crl.pem"), []byte("garbage"), 0o644)
	srv.Process.Signal(syscall.SIGHUP)
	waitLine(t, lines, "SIGHUP: keeping the old certificates and CRL: read CRL "+pki.file("crl.pem"))
	if _, err := dialNamed(t, ts, "alice", "dev1.example").List(ctx(t), &rpcpb.ListRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("alice's new connection after a bad CRL: %v, want the old CRL still refusing her", err)
	}
	if _, err := alice.List(ctx(t), &rpcpb.ListRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("alice's List on her old connection after a bad CRL: %v, want Unauthenticated", err)
	}
	if _, err := dialNamed(t, ts, "bob", "dev1.example").List(ctx(t), &rpcpb.ListRequest{}); err != nil {
		t.Errorf("bob's new connection after a bad CRL: %v", err)
	}
}

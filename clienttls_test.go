package main

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// resumeHandshake is handshake (tls_test.go) that also says whether the client resumed a session. The
// client reads the byte the server sends on success, and with it the session ticket sent before it.
func resumeHandshake(t *testing.T, srv, cli *tls.Config) (resumed bool, srvErr, cliErr error) {
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
	defer c.Close()
	c.SetDeadline(deadline)
	tc := tls.Client(c, cli)
	if cliErr = tc.Handshake(); cliErr == nil {
		_, cliErr = tc.Read(make([]byte, 1))
	}
	return tc.ConnectionState().DidResume, <-srvDone, cliErr
}

// TestClientResumesTLSSession: a client (serverOf, as each rund client process makes it) resumes the
// session of the one before it, with the same files and server address only; the server still judges a
// resumed client by its CRL; and no session is kept in a cache directory that others can read.
func TestClientResumesTLSSession(t *testing.T) {
	p := newTestPKI(t)
	crl := p.file("crl.pem")
	writeCRL(t, crl, p.ca, time.Now().Add(time.Hour), false)
	r, err := newRotatingTLS(p.file("ca.crt"), p.file("server.crt"), p.file("server.key"), crl)
	if err != nil {
		t.Fatal(err)
	}
	lis := r.listener() // one, as rund serve's: a session ticket is sealed with its keys
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	try := func(addr, ca, name string) (bool, error, error) {
		_, cfg, err := serverOf(&clientOpts{addr: addr, ca: ca, cert: p.file(name + ".crt"), key: p.file(name + ".key")})
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "localhost"
		return resumeHandshake(t, lis, cfg)
	}
	for i, want := range []bool{false, true, true} {
		resumed, srvErr, cliErr := try("rund.test:1", p.file("ca.crt"), "a")
		if resumed != want || srvErr != nil || cliErr != nil {
			t.Fatalf("a's handshake %d: resumed %v (want %v), server %v, client %v", i, resumed, want, srvErr, cliErr)
		}
	}
	dir := filepath.Join(cache, "rund", "tls-sessions")
	files, _ := os.ReadDir(dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 || len(files) != 1 {
		t.Fatalf("session directory %s: %v %v, %d files; want mode 0700 and one file", dir, fi, err, len(files))
	}
	if fi, err := os.Stat(filepath.Join(dir, files[0].Name())); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("session file: %v %v, want mode 0600", fi, err)
	}

	caCopy := filepath.Join(t.TempDir(), "ca.crt") // the same CA, other bytes
	data, _ := os.ReadFile(p.file("ca.crt"))
	os.WriteFile(caCopy, append([]byte("# a comment\n"), data...), 0o644)
	for _, tc := range []struct{ what, addr, ca, name string }{
		{"another address", "rund.test:2", p.file("ca.crt"), "a"},
		{"another CA file", "rund.test:1", caCopy, "a"},
		{"another client", "rund.test:1", p.file("ca.crt"), "b"},
	} {
		if resumed, srvErr, cliErr := try(tc.addr, tc.ca, tc.name); resumed || srvErr != nil || cliErr != nil {
			t.Errorf("%s: resumed %v, server %v, client %v; want a full handshake", tc.what, resumed, srvErr, cliErr)
		}
	}

	writeCRL(t, crl, p.ca, time.Now().Add(time.Hour), false, readCert(t, p.file("a.crt")))
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	var bad *tls.CertificateVerificationError
	if _, srvErr, _ := try("rund.test:1", p.file("ca.crt"), "a"); !errors.As(srvErr, &bad) ||
		!strings.Contains(srvErr.Error(), "is revoked by") {
		t.Errorf("a's resumption after its revocation: server %v, want it refused as revoked", srvErr)
	}

	os.Chmod(dir, 0o755)
	o := &clientOpts{addr: "rund.test:1", ca: p.file("ca.crt"), cert: p.file("a.crt"), key: p.file("a.key")}
	_, cfg, err := serverOf(o)
	if err != nil || cfg.ClientSessionCache != nil {
		t.Errorf("a session directory of mode 0755: %v, cache %v; want none used", err, cfg.ClientSessionCache)
	}
}

// TestClientKeyParsedAtHandshake: the client parses its key only when a server asks for its certificate;
// a key that does not parse still fails the command, naming the files.
func TestClientKeyParsedAtHandshake(t *testing.T) {
	ts := startServer(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600)
	code, out, errs := ts.runCLI(t, "list", "-key", bad)
	if code != 1 || out != "" || !strings.Contains(errs, "load "+ts.pki.file("a.crt")+" and "+bad) {
		t.Errorf("a key that does not parse: exit %d stdout %q stderr %q; want 1 and the files named", code, out, errs)
	}
	if code, out, errs := ts.runCLI(t, "list", "-q"); code != 0 || errs != "" {
		t.Errorf("list with a good key: exit %d stdout %q stderr %q", code, out, errs)
	}
}

package main

// tls.go owns the TLS configuration of both ends and the development PKI.
//
// Both ends speak TLS 1.3 only and keep Go's default key exchanges (X25519MLKEM768 first): no curve list
// is pinned. The server requires a client certificate that chains to -ca and carries the ClientAuth
// extended key usage explicitly; Go alone would also accept a certificate with no EKU at all.

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// loadKeyPair loads a certificate and its key, refusing a key file that group or others can read.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	fi, err := os.Stat(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("private key %s has mode %v: it must not be readable by group or others (chmod 600 %s)",
			keyFile, fi.Mode().Perm(), keyFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s and %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// tlsFiles is what both ends load alike: TLS 1.3 only, their own certificate, and caFile's pool that the
// other end must chain to, as RootCAs (which only a client reads) and ClientCAs (which only a server reads).
func tlsFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("read CA %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}, nil
}

// serverTLS is the server's configuration: mutual TLS 1.3 against caFile.
func serverTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg, err := tlsFiles(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	own := cfg.Certificates[0].Certificate[0]
	cfg.NextProtos = []string{"h2"} // set here too, as rotatingTLS hands this config out directly
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf := cs.VerifiedChains[0][0]
		if bytes.Equal(leaf.Raw, own) {
			return errors.New("the server's own certificate cannot be used as a client")
		}
		return requireEKU(leaf, x509.ExtKeyUsageClientAuth, "client")
	}
	return cfg, nil
}

// rotatingTLS is the listener's configuration, and reload, which re-reads the files: each handshake
// takes the configuration last read, so certificates can be rotated without a restart while open
// connections (and the jobs and streams on them) carry on. A reload that fails keeps the old one.
func rotatingTLS(ca, cert, key string) (listen *tls.Config, reload func() error, err error) {
	var current atomic.Pointer[tls.Config]
	reload = func() error {
		cfg, err := serverTLS(ca, cert, key)
		if err == nil {
			current.Store(cfg)
		}
		return err
	}
	get := func(*tls.ClientHelloInfo) (*tls.Config, error) { return current.Load(), nil }
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: get}, reload, reload()
}

// clientTLS is the client's configuration: it trusts only caFile and wants the ServerAuth EKU.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg, err := tlsFiles(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return requireEKU(cs.VerifiedChains[0][0], x509.ExtKeyUsageServerAuth, "server")
	}
	return cfg, nil
}

func requireEKU(c *x509.Certificate, eku x509.ExtKeyUsage, role string) error {
	if !slices.Contains(c.ExtKeyUsage, eku) {
		return fmt.Errorf("certificate %q lacks the %s-auth extended key usage", c.Subject.CommonName, role)
	}
	return nil
}

// certSpec describes a certificate to issue.
type certSpec struct {
	name      string // CommonName
	dns       []string
	ips       []net.IP
	eku       []x509.ExtKeyUsage
	notBefore time.Time
	notAfter  time.Time
	isCA      bool
}

// issued is a certificate and its key.
type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue creates a certificate per spec, signed by parent (self-signed when parent is nil). Keys are
// ECDSA P-521; x509 signs with SHA-512 for that curve.
func issue(spec certSpec, parent *issued) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notBefore := cmp.Or(spec.notBefore, time.Now().Add(-time.Hour))    // unset: valid from an hour ago
	notAfter := cmp.Or(spec.notAfter, notBefore.Add(365*24*time.Hour)) // unset: for a year
	// No SerialNumber: x509.CreateCertificate draws a random one (RFC 5280, 4.1.2.2).
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: spec.name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              spec.dns,
		IPAddresses:           spec.ips,
		ExtKeyUsage:           spec.eku,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  spec.isCA,
	}
	if spec.isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if parent == nil {
		parent = &issued{cert: tmpl, key: key} // self-signed
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, &key.PublicKey, parent.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &issued{cert: cert, key: key}, err
}

// write saves the certificate (0644) and key (0600) as dir/name.crt and dir/name.key, replacing neither.
func (i *issued) write(dir, name string) error {
	keyDER, err := x509.MarshalECPrivateKey(i.key)
	if err != nil {
		return err
	}
	if err := createPEM(filepath.Join(dir, name+".crt"), 0o644, "CERTIFICATE", i.cert.Raw); err != nil {
		return err
	}
	return createPEM(filepath.Join(dir, name+".key"), 0o600, "EC PRIVATE KEY", keyDER)
}

// createPEM writes one PEM block to path, created with perm from the start (so a key is never briefly
// world-readable); it fails with an os.ErrExist error rather than replace a file.
func createPEM(path string, perm os.FileMode, blockType string, der []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}))
	return errors.Join(err, f.Close())
}

// writeDevPKI writes a development PKI into dir: ca.crt, server.{crt,key} (localhost, 127.0.0.1, ::1)
// and two distinct clients, client.{crt,key} and client2.{crt,key}. The CA's key is never written: it
// signs these four and is dropped, so nobody can mint more certificates from a dev setup.
func writeDevPKI(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := issue(certSpec{name: "rund development CA", isCA: true}, nil)
	if err != nil {
		return err
	}
	leaves := []struct {
		file string
		spec certSpec
	}{
		{"server", certSpec{name: "localhost", dns: []string{"localhost"},
			ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}},
		{"client", certSpec{name: "client", dns: []string{"client"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
		{"client2", certSpec{name: "client2", dns: []string{"client2"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	}
	// Refuse before writing anything: a certificate replaced next to a key that is kept would leave a
	// PKI whose certificates match neither the keys nor each other.
	files := []string{"ca.crt"}
	for _, l := range leaves {
		files = append(files, l.file+".crt", l.file+".key")
	}
	for _, f := range files {
		switch _, err := os.Lstat(filepath.Join(dir, f)); {
		case err == nil:
			return fmt.Errorf("%s: %w (remove the old development PKI first)", filepath.Join(dir, f), os.ErrExist)
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	if err := createPEM(filepath.Join(dir, "ca.crt"), 0o644, "CERTIFICATE", ca.cert.Raw); err != nil {
		return err
	}
	for _, l := range leaves {
		leaf, err := issue(l.spec, ca)
		if err == nil {
			err = leaf.write(dir, l.file)
		}
		if err != nil {
			return fmt.Errorf("write %s certificate: %w", l.file, err)
		}
	}
	return nil
}

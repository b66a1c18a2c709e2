//go:build !rundinit

package main

// certs.go owns the development PKI and `rund certs`, which writes it: a CA, a server certificate for
// localhost and two client certificates, enough to try rund on one machine. It is not part of the
// trusted core (what `rund serve` and `rund init` run); the tests issue their certificates with it too.

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

const certsHead = `usage: rund certs [-dir DIR]

Write a development PKI: a CA, a server certificate for localhost, and client
certificates for two identities (client, client2), each with its key.`

// runCerts is `rund certs`: it writes the development PKI into -dir, which rund serve and rund client
// look in by default (defaultFile).
func runCerts(args []string) int {
	fs := flag.NewFlagSet("rund certs", flag.ContinueOnError)
	dir := fs.String("dir", configDir(), "directory to write into; existing keys are never overwritten")
	code, ok := parseArgs(fs, args, certsHead)
	if !ok {
		return code
	}
	if err := writeDevPKI(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "rund certs: %v\n", err)
		return 1
	}
	fmt.Printf("wrote a development PKI to %s/\n", *dir)
	return 0
}

// devLeaves are the development PKI's certificates besides its CA, each written as file.crt and file.key.
var devLeaves = []struct {
	file string
	spec certSpec
}{
	{file: "server", spec: certSpec{name: "localhost", dns: []string{"localhost"},
		ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}},
	{file: "client", spec: certSpec{name: "client", dns: []string{"client"},
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	{file: "client2", spec: certSpec{name: "client2", dns: []string{"client2"},
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
}

// writeDevPKI writes a development PKI into dir: ca.crt, server.{crt,key} (localhost, 127.0.0.1, ::1)
// and two distinct clients, client.{crt,key} and client2.{crt,key}. The CA's key is never written: it
// signs these four and is dropped, so nobody can mint more certificates from a dev setup.
func writeDevPKI(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := refuseDevPKIFiles(dir); err != nil {
		return err
	}
	ca, err := issue(certSpec{name: "rund development CA", isCA: true}, nil)
	if err != nil {
		return err
	}
	if err := createPEM(filepath.Join(dir, "ca.crt"), 0o644, "CERTIFICATE", ca.cert.Raw); err != nil {
		return err
	}
	for _, l := range devLeaves {
		leaf, err := issue(l.spec, ca)
		if err != nil {
			return fmt.Errorf("write %s certificate: %w", l.file, err)
		}
		if err := leaf.write(dir, l.file); err != nil {
			return fmt.Errorf("write %s certificate: %w", l.file, err)
		}
	}
	return nil
}

// refuseDevPKIFiles fails, with an os.ErrExist error, if dir holds any file writeDevPKI writes. It is
// called before anything is written: a certificate replaced next to a key that is kept would leave a
// PKI whose certificates match neither the keys nor each other.
func refuseDevPKIFiles(dir string) error {
	files := []string{"ca.crt"}
	for _, l := range devLeaves {
		files = append(files, l.file+".crt", l.file+".key")
	}
	for _, f := range files {
		path := filepath.Join(dir, f)
		_, err := os.Lstat(path)
		if err == nil {
			return fmt.Errorf("%s: %w (remove the old development PKI first)", path, os.ErrExist)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
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
		return nil, fmt.Errorf("generate a key for %q: %w", spec.name, err)
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
		return nil, fmt.Errorf("sign the certificate of %q: %w", spec.name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("read back the certificate of %q: %w", spec.name, err)
	}
	return &issued{cert: cert, key: key}, nil
}

// write saves the certificate (0644) and key (0600) as dir/name.crt and dir/name.key, replacing neither.
func (i *issued) write(dir, name string) error {
	keyDER, err := x509.MarshalECPrivateKey(i.key)
	if err != nil {
		return fmt.Errorf("encode the key of %s: %w", name, err)
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

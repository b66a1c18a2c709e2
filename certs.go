//go:build !rundinit

package main

// certs.go owns the PKI that `rund certs` writes: a CA whose key it keeps (ca.key, 0600, never replaced),
// a server certificate for -server_names and two client certificates; and, from that CA, one more client
// (-client NAME) or server (-server NAME) certificate at a time. It is not part of the trusted core (what
// `rund serve` and `rund init` run); the tests issue their certificates with it too.

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
	"strings"
	"time"
)

const certsHead = `usage: rund certs [-dir DIR] [-server_names NAME,...]
       rund certs [-dir DIR] -client NAME
       rund certs [-dir DIR] -server NAME -server_names NAME,...

Write a PKI into DIR: a CA and its key (ca.key: it signs new certificates; keep it off the devices),
a server certificate for -server_names, and client certificates for two identities (client, client2).
With -client or -server, issue one more certificate, NAME.crt and NAME.key, from DIR's CA.
No file is ever replaced.`

// runCerts is `rund certs`: it writes the PKI into -dir, which rund serve and rund client look in by
// default (defaultFile), or issues one more certificate from its CA.
func runCerts(args []string) int {
	fs := flag.NewFlagSet("rund certs", flag.ContinueOnError)
	dir := fs.String("dir", configDir(), "directory to write into; existing files are never replaced")
	names := fs.String("server_names", "localhost,127.0.0.1,::1",
		"comma-separated DNS names and IP addresses that clients dial the server by (no wildcards)")
	client := fs.String("client", "",
		"issue one more client certificate from DIR's CA: `NAME`.{crt,key}, the identity dns:NAME")
	server := fs.String("server", "",
		"issue one more server certificate from DIR's CA: `NAME`.{crt,key}, for -server_names")
	code, ok := parseArgs(fs, args, certsHead)
	if !ok {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	srv, err := serverSpec(*names)
	switch {
	case set["client"] && (set["server"] || set["server_names"]):
		err = errors.New("-client takes neither -server nor -server_names")
	case set["server"] && !set["server_names"]:
		err = errors.New("-server needs -server_names: the names and addresses clients dial that server by")
	case set["client"]:
		err = checkName("-client", *client)
	case set["server"]:
		err = cmp.Or(err, checkName("-server", *server))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rund certs: %v\n", err)
		return 2
	}
	msg, err := writeCerts(*dir, *client, *server, srv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rund certs: %v\n", err)
		return 1
	}
	fmt.Println(msg)
	return 0
}

// writeCerts does what runCerts was asked, its flags checked, and says what it wrote.
func writeCerts(dir, client, server string, srv certSpec) (string, error) {
	switch {
	case client != "":
		spec := certSpec{name: client, dns: []string{client}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if err := issueFromCA(dir, client, spec); err != nil {
			return "", err
		}
		return fmt.Sprintf("wrote %s/%s.crt and %s.key: the client identity dns:%s", dir, client, client, client), nil
	case server != "":
		srv.name = server
		if err := issueFromCA(dir, server, srv); err != nil {
			return "", err
		}
		return fmt.Sprintf("wrote %s/%s.crt and %s.key: a server certificate for %s", dir, server, server,
			strings.Join(sanList(srv), ", ")), nil
	}
	if err := writeDevPKI(dir, srv); err != nil {
		return "", err
	}
	return fmt.Sprintf("wrote a PKI to %s/: the server certificate is for %s; %s/ca.key signs new certificates: "+
		"keep it secret, and off the devices", dir, strings.Join(sanList(srv), ", "), dir), nil
}

// serverSpec is the server certificate for names, as -server_names gives them: each an IP address or
// a DNS name (checkDNSName).
func serverSpec(names string) (certSpec, error) {
	spec := certSpec{name: "rund server", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(n); ip != nil {
			spec.ips = append(spec.ips, ip)
			continue
		}
		if err := checkDNSName(n); err != nil {
			return certSpec{}, fmt.Errorf("-server_names: %q is no IP address, and %w", n, err)
		}
		spec.dns = append(spec.dns, n)
	}
	return spec, nil
}

// sanList is a certificate's names, as a person reads them.
func sanList(spec certSpec) []string {
	names := spec.dns
	for _, ip := range spec.ips {
		names = append(names, ip.String())
	}
	return names
}

// checkName is checkDNSName's error, if any, for flag's value n.
func checkName(flag, n string) error {
	if err := checkDNSName(n); err != nil {
		return fmt.Errorf("%s %q: %w", flag, n, err)
	}
	return nil
}

// checkDNSName refuses a name that is not a DNS name of dot-separated labels of lower-case letters,
// digits and hyphens, none at a label's ends (RFC 1123 2.1), 253 bytes at most, whose last label is not
// all digits (RFC 3696 2: so that a mistyped IP address is not taken for a name). It is a certificate's
// DNS SAN, which authz.go compares without regard to case, and a client's is a file name in -dir too:
// so lower case only. No wildcard: each server gets its own names, and a client one identity.
func checkDNSName(n string) error {
	const want = "want a DNS name of lower-case letters, digits, hyphens and dots"
	labels := strings.Split(n, ".")
	switch {
	case n == "":
		return errors.New("an empty name")
	case strings.Contains(n, "*"):
		return errors.New("no wildcards: give each server its own names")
	case len(n) > 253:
		return errors.New("longer than 253 bytes")
	case strings.Trim(labels[len(labels)-1], "0123456789") == "":
		return errors.New("a DNS name's last label is not all digits (a mistyped IP address?)")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' ||
			strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return fmt.Errorf("%s, each label 1 to 63 long with no hyphen at its ends", want)
		}
	}
	return nil
}

// devClients are the PKI's client certificates, each written as file.crt and file.key.
var devClients = []string{"client", "client2"}

// writeDevPKI writes a PKI into dir: ca.key and ca.crt, server.{crt,key} per server, and two distinct
// clients, client.{crt,key} and client2.{crt,key}. The CA lasts ten years and the others one: so
// that certificates issued from it later (issueFromCA) can run their year too.
func writeDevPKI(dir string, server certSpec) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := []string{"ca.key", "ca.crt", "server.crt", "server.key"}
	for _, c := range devClients {
		files = append(files, c+".crt", c+".key")
	}
	if err := refuseFiles(dir, files...); err != nil {
		return fmt.Errorf("%w: rund certs never replaces a PKI's files (-client NAME or -server NAME issues "+
			"one more certificate from its CA; for a new PKI, give another -dir)", err)
	}
	ca, err := issue(certSpec{name: "rund CA", isCA: true, notAfter: time.Now().AddDate(10, 0, 0)}, nil)
	if err != nil {
		return err
	}
	if err := ca.write(dir, "ca"); err != nil { // the key first: it is the one that must never be replaced
		return err
	}
	server.name = cmp.Or(server.name, "rund server")
	leaves := map[string]certSpec{"server": server}
	for _, c := range devClients {
		leaves[c] = certSpec{name: c, dns: []string{c}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	for file, spec := range leaves {
		leaf, err := issue(spec, ca)
		if err == nil {
			err = leaf.write(dir, file)
		}
		if err != nil {
			return fmt.Errorf("write %s certificate: %w", file, err)
		}
	}
	return nil
}

// issueFromCA issues a certificate per spec from dir's CA (ca.crt and ca.key, which must match), and
// writes it as dir/name.{crt,key}; it replaces no file. It lasts a year, or until the CA's own end.
func issueFromCA(dir, name string, spec certSpec) error {
	if err := refuseFiles(dir, name+".crt", name+".key"); err != nil {
		return err
	}
	pair, err := loadKeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return fmt.Errorf("load the CA of %s (rund certs -dir %s writes one): %w", dir, dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !pair.Leaf.IsCA {
		return fmt.Errorf("%s/ca.crt and ca.key are no CA of rund certs (want an ECDSA CA certificate): "+
			"for another CA, see README, \"Your own CA\"", dir)
	}
	now := time.Now()
	spec.notBefore = now.Add(-time.Hour)
	spec.notAfter = now.AddDate(1, 0, 0)
	if pair.Leaf.NotAfter.Before(spec.notAfter) {
		spec.notAfter = pair.Leaf.NotAfter
	}
	leaf, err := issue(spec, &issued{cert: pair.Leaf, key: key})
	if err != nil {
		return err
	}
	return leaf.write(dir, name)
}

// refuseFiles fails, with an os.ErrExist error, if dir holds any of files. It is called before anything
// is written: a certificate replaced next to a key that is kept would leave a PKI whose certificates
// match neither the keys nor each other.
func refuseFiles(dir string, files ...string) error {
	for _, f := range files {
		path := filepath.Join(dir, f)
		_, err := os.Lstat(path)
		if err == nil {
			return fmt.Errorf("%s: %w", path, os.ErrExist)
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
	curve     elliptic.Curve // nil: P-256
}

// issued is a certificate and its key.
type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue creates a certificate per spec, signed by parent (self-signed when parent is nil). Keys are
// ECDSA P-256; x509 signs with SHA-256 for that curve. P-256 and not P-521 (issue 24): both are beyond
// reach, but crypto/ecdsa's P-256 ships its tables precomputed (and assembly on amd64 and arm64), where
// P-521 builds its table in each new process, so every `rund client` paid for it before its handshake.
func issue(spec certSpec, parent *issued) (*issued, error) {
	curve := spec.curve
	if curve == nil {
		curve = elliptic.P256()
	}
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
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

// write saves the key (0600) and certificate (0644) as dir/name.key and dir/name.crt, replacing neither.
func (i *issued) write(dir, name string) error {
	keyDER, err := x509.MarshalECPrivateKey(i.key)
	if err != nil {
		return fmt.Errorf("encode the key of %s: %w", name, err)
	}
	if err := createPEM(filepath.Join(dir, name+".key"), 0o600, "EC PRIVATE KEY", keyDER); err != nil {
		return err
	}
	return createPEM(filepath.Join(dir, name+".crt"), 0o644, "CERTIFICATE", i.cert.Raw)
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

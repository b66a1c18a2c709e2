//go:build !rundinit

package main

// tls.go owns the server's mutual TLS configuration and its CRL (-crl), and what both ends load alike
// (tlsFiles) and require of the other's certificate (requireEKU); the client's own configuration is
// client.go's clientTLS, and the development PKI certs.go's.
//
// Both ends speak TLS 1.3 only and keep Go's default key exchanges (X25519MLKEM768 first): no curve list
// is pinned. The server requires a client certificate that chains to -ca and carries the ClientAuth
// extended key usage explicitly; Go alone would also accept a certificate with no EKU at all.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"
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
		return tls.Certificate{}, fmt.Errorf(
			"private key %s has mode %v: it must not be readable by group or others (chmod 600 %s)",
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
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
	}, nil
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

// rotatingTLS is rund serve's TLS state as last read from -ca, -cert, -key and -crl (reload): each
// handshake takes the configuration last read, so certificates can be rotated without a restart while
// open connections (and the jobs and streams on them) carry on; and each call is checked against the CRL
// last read (callerIdentity), so a client revoked since its handshake loses its jobs at its next call.
type rotatingTLS struct {
	ca, cert, key, crlFile string // crlFile is "" without -crl
	cfg                    atomic.Pointer[tls.Config]
	crl                    atomic.Pointer[crlSet] // nil without -crl
}

func newRotatingTLS(ca, cert, key, crlFile string) (*rotatingTLS, error) {
	r := &rotatingTLS{ca: ca, cert: cert, key: key, crlFile: crlFile}
	return r, r.reload()
}

// reload reads the files again. If any is bad, the configuration and CRL in use stay, together.
func (r *rotatingTLS) reload() error {
	cfg, err := serverTLS(r.ca, r.cert, r.key)
	if err != nil {
		return err
	}
	var crl *crlSet
	if r.crlFile != "" {
		if crl, err = loadCRL(r.crlFile, r.ca); err != nil {
			return err
		}
	}
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err == nil && crl.revokes(cs.VerifiedChains[0]) {
			err = fmt.Errorf("certificate serial %x is revoked by %s", cs.VerifiedChains[0][0].SerialNumber, crl.file)
		}
		if err != nil { // for the audit trail, which records crypto/tls's own refusals (auditHandshake)
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	r.cfg.Store(cfg)
	r.crl.Store(crl)
	return nil
}

// listener is the listener's configuration: each handshake gets the one last read.
func (r *rotatingTLS) listener() *tls.Config {
	get := func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.cfg.Load(), nil }
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: get}
}

// crlSet is a loaded -crl: the serial numbers it revokes, of certificates its issuer signed (RFC 5280
// 5.3.3: a CRL speaks for its issuer's certificates alone).
type crlSet struct {
	file       string
	issuer     []byte          // the DER subject of the CA that signed it
	serials    map[string]bool // in decimal
	nextUpdate time.Time
	staleSaid  atomic.Bool // its staleness has been logged
}

// loadCRL reads a CRL, PEM or DER, that a CA certificate of caFile signed.
func loadCRL(file, caFile string) (*crlSet, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	rl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("read CRL %s: %w", file, err)
	}
	cas, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	signed := false
	for block, rest := pem.Decode(cas); block != nil && !signed; block, rest = pem.Decode(rest) {
		ca, err := x509.ParseCertificate(block.Bytes)
		signed = err == nil && bytes.Equal(ca.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(ca) == nil
	}
	if !signed {
		return nil, fmt.Errorf("read CRL %s: not signed by a CA of %s", file, caFile)
	}
	l := &crlSet{file: file, issuer: rl.RawIssuer, serials: map[string]bool{}, nextUpdate: rl.NextUpdate}
	for _, e := range rl.RevokedCertificateEntries {
		l.serials[e.SerialNumber.String()] = true
	}
	l.revokes(nil) // logs it now if it is stale already
	return l, nil
}

// revokes says whether the CRL revokes a certificate of chain; a nil one revokes none. A CRL past its
// nextUpdate is logged, once, and still enforced: failing open would readmit every client it revokes.
func (l *crlSet) revokes(chain []*x509.Certificate) bool {
	if l == nil {
		return false
	}
	if !l.nextUpdate.IsZero() && time.Now().After(l.nextUpdate) {
		said := l.staleSaid.Swap(true)
		if !said {
			log.Printf("CRL %s is past its next update, %s: still enforced; write a newer one and send SIGHUP",
				l.file, l.nextUpdate.Format(time.RFC3339))
		}
	}
	return slices.ContainsFunc(chain, func(c *x509.Certificate) bool {
		return bytes.Equal(c.RawIssuer, l.issuer) && l.serials[c.SerialNumber.String()]
	})
}

func requireEKU(c *x509.Certificate, eku x509.ExtKeyUsage, role string) error {
	if !slices.Contains(c.ExtKeyUsage, eku) {
		return fmt.Errorf("certificate %q lacks the %s-auth extended key usage", c.Subject.CommonName, role)
	}
	return nil
}

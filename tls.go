//go:build !rundinit

package main

// tls.go owns the server's mutual TLS configuration, and what both ends load alike (tlsFiles) and
// require of the other's certificate (requireEKU); the client's own configuration is client.go's
// clientTLS, and the development PKI certs.go's.
//
// Both ends speak TLS 1.3 only and keep Go's default key exchanges (X25519MLKEM768 first): no curve list
// is pinned. The server requires a client certificate that chains to -ca and carries the ClientAuth
// extended key usage explicitly; Go alone would also accept a certificate with no EKU at all.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
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

// rotatingTLS is the listener's configuration, and reload, which re-reads the files: each handshake
// takes the configuration last read, so certificates can be rotated without a restart while open
// connections (and the jobs and streams on them) carry on. A reload that fails keeps the old one.
func rotatingTLS(ca, cert, key string) (listen *tls.Config, reload func() error, err error) {
	var current atomic.Pointer[tls.Config]
	reload = func() error {
		cfg, err := serverTLS(ca, cert, key)
		if err != nil {
			return err
		}
		current.Store(cfg)
		return nil
	}
	get := func(*tls.ClientHelloInfo) (*tls.Config, error) { return current.Load(), nil }
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: get}, reload, reload()
}

func requireEKU(c *x509.Certificate, eku x509.ExtKeyUsage, role string) error {
	if !slices.Contains(c.ExtKeyUsage, eku) {
		return fmt.Errorf("certificate %q lacks the %s-auth extended key usage", c.Subject.CommonName, role)
	}
	return nil
}

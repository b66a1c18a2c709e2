//go:build !rundinit

package main

// clienttls.go is the client's TLS: its configuration from its files (clientFiles), the session cache
// that lets the next client resume instead of a full handshake (sessionFiles), and what a refused
// certificate looks like (whyUnavailable). The server's configuration is tls.go's.

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// clientFiles is the client's configuration from its files: it trusts only caFile and wants the
// ServerAuth EKU. Its key is parsed only when a server asks for the certificate, which a resumed session
// (sessionFiles) does not: parsing a key computes its public key, and for an ECDSA key the first such
// computation in a process builds crypto/ecdsa's table of its curve. bind is a digest of the three files.
func clientFiles(caFile, certFile, keyFile string) (cfg *tls.Config, bind []byte, err error) {
	certPEM, keyPEM, err := readKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	pool, caPEM, err := readCA(caFile)
	if err != nil {
		return nil, nil, err
	}
	pair := sync.OnceValues(func() (tls.Certificate, error) { return parseKeyPair(certFile, keyFile, certPEM, keyPEM) })
	h := sha256.New()
	for _, b := range [][]byte{caPEM, certPEM, keyPEM} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		// As crypto/tls does with Certificates: none is sent that the server's request does not accept.
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := pair()
			if err != nil {
				return nil, err
			}
			if cri.SupportsCertificate(&cert) != nil {
				return &tls.Certificate{}, nil
			}
			return &cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return requireEKU(cs.VerifiedChains[0][0], x509.ExtKeyUsageServerAuth, "server")
		},
	}, h.Sum(nil), nil
}

// sessionFiles keeps the client's TLS 1.3 session tickets (RFC 8446 4.6.1) in the user's cache directory,
// one file for each server address and set of files (-ca, -cert, -key: bind), so that the next rund
// client resumes the session instead of a full handshake, which checks a chain and two signatures and
// makes one. On resumption crypto/tls still checks that the chain it verified leads to a CA of -ca and
// has not expired, and calls VerifyConnection; the server checks the same of the client's chain, and its
// CRL. A ticket lets its holder resume as this client until the server drops it, so it is kept as the
// key is: mode 0600, in a directory of this user that no one else can read.
type sessionFiles struct {
	dir  string
	bind []byte // digest of the server address and the three files' contents
}

// newSessionFiles is the session cache for addr and bind, or nil if there is no private cache directory.
func newSessionFiles(addr string, bind []byte) tls.ClientSessionCache {
	base, err := os.UserCacheDir()
	if err != nil {
		return nil
	}
	dir := filepath.Join(base, "rund", "tls-sessions")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Lstat(dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o077 != 0 ||
		int(st.Uid) != os.Getuid() {
		return nil
	}
	h := sha256.New()
	h.Write(bind)
	h.Write([]byte(addr))
	return &sessionFiles{dir: dir, bind: h.Sum(nil)}
}

// path is the file of the session for key, which crypto/tls makes of the server's name.
func (s *sessionFiles) path(key string) string {
	h := sha256.Sum256(append(append([]byte{}, s.bind...), key...))
	return filepath.Join(s.dir, hex.EncodeToString(h[:16]))
}

// Get reads a session that Put wrote: the ticket's length (2 bytes), the ticket, the state.
func (s *sessionFiles) Get(key string) (*tls.ClientSessionState, bool) {
	data, err := os.ReadFile(s.path(key))
	if err != nil || len(data) < 2 || len(data) < 2+int(binary.BigEndian.Uint16(data)) {
		return nil, false
	}
	n := 2 + int(binary.BigEndian.Uint16(data))
	state, err := tls.ParseSessionState(data[n:])
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(data[2:n], state)
	return cs, err == nil
}

// Put writes a session for the next client, or removes it (cs nil). A session that cannot be written
// is not kept: the next client makes a full handshake.
func (s *sessionFiles) Put(key string, cs *tls.ClientSessionState) {
	path := s.path(key)
	if cs == nil {
		os.Remove(path)
		return
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || state == nil || len(ticket) > 0xffff {
		return
	}
	b, err := state.Bytes()
	if err != nil {
		return
	}
	f, err := os.CreateTemp(s.dir, ".new-*") // mode 0600; renamed over path whole, as clients may run at once
	if err != nil {
		return
	}
	_, err = f.Write(append(append(binary.BigEndian.AppendUint16(nil, uint16(len(ticket))), ticket...), b...))
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// whyUnavailable explains a call to addr that failed with Unavailable when the server refused this
// client's certificate: in TLS 1.3 the server checks it after the client has finished its handshake, so
// grpc-go sees a closed connection ("broken pipe") and not the alert. A handshake of our own with cfg,
// and a read, get the alert; a server that accepts the certificate sends its HTTP/2 settings at once.
// err otherwise.
func whyUnavailable(addr string, cfg *tls.Config, err error) error {
	cfg.NextProtos = []string{"h2"} // grpc-go dials with a copy of cfg (credentials.NewTLS)
	conn, dialErr := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if dialErr != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, readErr := conn.Read(make([]byte, 1))
	var alert *net.OpError
	if errors.As(readErr, &alert) && alert.Op == "remote error" {
		return fmt.Errorf("the server refused this client's certificate (%v): is it signed by the server's CA, "+
			"for client authentication, and not expired? (%w)", alert.Err, err)
	}
	return err
}

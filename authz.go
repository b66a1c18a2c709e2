//go:build !rundinit

package main

// authz.go decides who a caller is and which jobs it may touch.
//
// A caller is the set of subject alternative names (DNS, IP, email, URI) of its verified client
// certificate: the leaf of the chain that crypto/tls verified against -ca (VerifiedChains[0][0]). The
// certificates a client merely presents (PeerCertificates) are never read, so a client cannot claim
// another's names by appending a certificate of theirs to its chain.
//
// A job belongs to the names of the certificate that started it. A caller may touch a job when it
// shares at least one name with the owner; to everyone else the job does not exist.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/peer"
)

// callerIdentity returns the SANs of the caller's verified certificate, each prefixed with its kind so
// that a DNS name can never equal an email address of the same spelling. A certificate that the CRL in
// force revokes (SIGHUP may have read it after the connection's handshake: tls.go) is refused with
// Unauthenticated, as it no longer proves who the caller is; its names still come with the error, for
// the audit trail's line.
func callerIdentity(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, clientErr(errNoIdentity, "no peer information")
	}
	info, ok := p.AuthInfo.(connInfo) // conns.go boundedCreds
	if !ok || verifiedLeaf(info.State) == nil {
		return nil, clientErr(errNoIdentity, "no verified client certificate")
	}
	ids := certIdentity(verifiedLeaf(info.State))
	if info.crl.Load().revokes(info.State.VerifiedChains[0]) {
		return ids, clientErr(errNoIdentity, "your certificate has been revoked")
	}
	return ids, nil
}

// verifiedLeaf is the client certificate that crypto/tls verified against -ca, or nil.
func verifiedLeaf(s tls.ConnectionState) *x509.Certificate {
	if len(s.VerifiedChains) == 0 || len(s.VerifiedChains[0]) == 0 {
		return nil
	}
	return s.VerifiedChains[0][0]
}

// certIdentity lists a certificate's SANs as "dns:", "ip:", "email:" and "uri:" names, each in the
// canonical form of canonicalSAN, so that two spellings of one name are one identity.
func certIdentity(c *x509.Certificate) []string {
	var ids []string
	for _, n := range c.DNSNames {
		ids = append(ids, "dns:"+canonicalSAN("dns", n))
	}
	for _, ip := range c.IPAddresses {
		ids = append(ids, "ip:"+canonicalSAN("ip", ip.String()))
	}
	for _, e := range c.EmailAddresses {
		ids = append(ids, "email:"+canonicalSAN("email", e))
	}
	for _, u := range c.URIs {
		ids = append(ids, "uri:"+canonicalSAN("uri", u.String()))
	}
	return ids
}

// canonicalSAN is the one spelling of a name of kind "dns", "ip", "email" or "uri". DNS names compare
// case-insensitively (RFC 4343), with the root's trailing dot dropped; so do an email address's domain,
// but not its local part, which is the mailbox's own (RFC 5321 2.4). An IP is written as net.IP writes
// it (RFC 5952 for IPv6; an IPv4-mapped address as IPv4); a URI as net/url parses and writes it. A
// value that does not parse is kept as it is: it can then match only itself.
func canonicalSAN(kind, v string) string {
	switch kind {
	case "dns":
		// The root's one trailing dot: "alice." is "alice". A name that would still end in a dot is no
		// DNS name and stays as it is, so that every canonical form is its own (fuzzed).
		v = asciiLower(v)
		if name := strings.TrimSuffix(v, "."); !strings.HasSuffix(name, ".") {
			return name
		}
	case "email":
		if at := strings.LastIndexByte(v, '@'); at >= 0 {
			return v[:at+1] + canonicalSAN("dns", v[at+1:])
		}
	case "ip":
		if ip := net.ParseIP(v); ip != nil {
			return ip.String()
		}
	case "uri":
		if u, err := url.Parse(v); err == nil {
			return u.String()
		}
	}
	return v
}

// asciiLower lowers the bytes A-Z and leaves every other byte as it is: DNS case-insensitivity is
// ASCII's (RFC 4343), and no two different names may come out the same.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// sharesIdentity reports whether the caller shares at least one name with the owner.
func sharesIdentity(owner, caller []string) bool {
	return slices.ContainsFunc(caller, func(c string) bool { return slices.Contains(owner, c) })
}

// identityKey names one client certificate's set of SANs, for per-client bounds: sorted, and each quoted
// (%q) so that no name can run into the next.
func identityKey(owner []string) string {
	return fmt.Sprintf("%q", slices.Sorted(slices.Values(owner)))
}

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
	"crypto/x509"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// callerIdentity returns the SANs of the caller's verified certificate, each prefixed with its kind so
// that a DNS name can never equal an email address of the same spelling.
func callerIdentity(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, clientErr(errNoIdentity, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, clientErr(errNoIdentity, "no verified client certificate")
	}
	return certIdentity(info.State.VerifiedChains[0][0]), nil
}

// certIdentity lists a certificate's SANs as "dns:", "ip:", "email:" and "uri:" names.
func certIdentity(c *x509.Certificate) []string {
	var ids []string
	for _, n := range c.DNSNames {
		ids = append(ids, "dns:"+n)
	}
	for _, ip := range c.IPAddresses {
		ids = append(ids, "ip:"+ip.String())
	}
	for _, e := range c.EmailAddresses {
		ids = append(ids, "email:"+e)
	}
	for _, u := range c.URIs {
		ids = append(ids, "uri:"+u.String())
	}
	return ids
}

// sharesIdentity reports whether the caller shares at least one name with the owner.
func sharesIdentity(owner, caller []string) bool {
	for _, c := range caller {
		if slices.Contains(owner, c) {
			return true
		}
	}
	return false
}

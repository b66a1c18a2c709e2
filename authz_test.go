package main

// authz_test.go: who may touch which job. Clients a (dns:a), b (dns:b) and c (dns:c, dns:a) of the
// harness: c shares a name with a, b shares none.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"rund/rpcpb"
)

func durationpbSecond() *durationpb.Duration { return durationpb.New(time.Second) }

// longJob runs script with a one-second stop grace period.
func longJob(script string) *rpcpb.JobStartRequest {
	req := cmd("sh", "-c", script)
	req.StopGracePeriod = durationpbSecond()
	return req
}

// stopAs stops job id as client c and fails the test if that fails. It is meant for t.Cleanup, where
// the harness's ctx would be registered too late to be cancelled.
func stopAs(t testing.TB, c rpcpb.JobControllerClient, id string) {
	t.Helper()
	cx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Stop(cx, &rpcpb.JobIdentifier{Ulid: id}); err != nil {
		t.Errorf("stop %s as its owner: %v", id, err)
	}
}

// firstRecv opens a log stream and returns its first message or error.
func firstRecv(stream interface{ Recv() (*rpcpb.JobLog, error) }, err error) (*rpcpb.JobLog, error) {
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// jobRPCs are the calls that name a job, in the order the matrix runs them: Stop last, because from
// a client that may touch the job it ends it.
var jobRPCs = []struct {
	name string
	call func(t *testing.T, c rpcpb.JobControllerClient, id string) (*rpcpb.JobLog, error)
}{
	{"Status", func(t *testing.T, c rpcpb.JobControllerClient, id string) (*rpcpb.JobLog, error) {
		_, err := c.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		return nil, err
	}},
	{"Log", func(t *testing.T, c rpcpb.JobControllerClient, id string) (*rpcpb.JobLog, error) {
		return firstRecv(c.Log(ctx(t), &rpcpb.JobIdentifier{Ulid: id}))
	}},
	{"ReadLog", func(t *testing.T, c rpcpb.JobControllerClient, id string) (*rpcpb.JobLog, error) {
		return firstRecv(c.ReadLog(ctx(t), &rpcpb.LogRequest{Ulid: id, NoFollow: true}))
	}},
	{"Stop", func(t *testing.T, c rpcpb.JobControllerClient, id string) (*rpcpb.JobLog, error) {
		_, err := c.Stop(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		return nil, err
	}},
}

func listIDs(t *testing.T, c rpcpb.JobControllerClient) []string {
	t.Helper()
	l, err := c.List(ctx(t), &rpcpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range l.Jobs {
		ids = append(ids, j.Ulid)
	}
	return ids
}

func neverStartedID(t testing.TB) string {
	t.Helper()
	u, err := newULID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// TestAuthzCrossClientMatrix: to b, a's job does not exist, in exactly the words used for a job that
// never existed; c, which shares dns:a with a, may do everything a may.
func TestAuthzCrossClientMatrix(t *testing.T) {
	ts := startServer(t)
	a, b, c := ts.dialAs(t, "a"), ts.dialAs(t, "b"), ts.dialAs(t, "c")
	aJob := startJob(t, a, longJob("echo ready; exec sleep 1000"))
	t.Cleanup(func() { stopAs(t, a, aJob) })
	bJob := startJob(t, b, longJob("exec sleep 1000"))
	t.Cleanup(func() { stopAs(t, b, bJob) })
	never := neverStartedID(t)

	t.Run("List", func(t *testing.T) {
		for _, tc := range []struct {
			client     string
			c          rpcpb.JobControllerClient
			want, hide string
		}{
			{"a", a, aJob, bJob},
			{"b", b, bJob, aJob},
			{"c", c, aJob, bJob},
		} {
			ids := listIDs(t, tc.c)
			if !slices.Contains(ids, tc.want) || slices.Contains(ids, tc.hide) {
				t.Errorf("List as %s = %v, want %s and not %s", tc.client, ids, tc.want, tc.hide)
			}
		}
	})

	for _, rpc := range jobRPCs {
		t.Run(rpc.name, func(t *testing.T) {
			_, neverErr := rpc.call(t, b, never)
			if status.Code(neverErr) != codes.NotFound {
				t.Fatalf("%s of a never-started id: %v (%s), want NotFound", rpc.name, neverErr, code(neverErr))
			}
			_, err := rpc.call(t, b, aJob)
			if status.Code(err) != codes.NotFound {
				t.Fatalf("%s of a's job as b: %v (%s), want NotFound", rpc.name, err, code(err))
			}
			got := strings.ReplaceAll(status.Convert(err).Message(), aJob, "<id>")
			want := strings.ReplaceAll(status.Convert(neverErr).Message(), never, "<id>")
			if got != want {
				t.Errorf("%s of a's job as b says %q; of a job that never existed, %q", rpc.name, got, want)
			}
			if st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: aJob}); err != nil || st.State != rpcpb.JobStatus_STATE_RUNNING {
				t.Fatalf("after b's %s, a's job: %v, %v; want it still running", rpc.name, st.GetState(), err)
			}

			msg, err := rpc.call(t, c, aJob)
			if err != nil {
				t.Fatalf("%s of a's job as c: %v, want success", rpc.name, err)
			}
			if rpc.name == "Log" || rpc.name == "ReadLog" {
				if string(msg.Stdout) != "ready\n" {
					t.Errorf("%s as c: first message %v, want stdout \"ready\\n\"", rpc.name, msg)
				}
			}
		})
	}
	st, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: aJob})
	if err != nil || st.State != rpcpb.JobStatus_STATE_STOPPED {
		t.Errorf("after c's Stop, a sees its job as %v, %v; want STOPPED", st.GetState(), err)
	}
}

// TestAuthzNoSANCertificate: a certificate with a CommonName and no SAN has no identity. It may not
// start jobs, and it sees none.
func TestAuthzNoSANCertificate(t *testing.T) {
	ts := startServer(t)
	ts.pki.leaf(t, "nosan", certSpec{name: "a", eku: ekuClient}) // CommonName "a", which is not a name
	a, nosan := ts.dialAs(t, "a"), ts.dialAs(t, "nosan")
	aJob := startJob(t, a, cmd("true"))
	waitDone(t, a, aJob)

	_, err := nosan.Start(ctx(t), cmd("true"))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "subject alternative name") {
		t.Errorf("Start without SAN: %v, want PermissionDenied mentioning the subject alternative name", err)
	}
	if ids := listIDs(t, nosan); len(ids) != 0 {
		t.Errorf("List without SAN = %v, want nothing", ids)
	}
	if _, err := nosan.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: aJob}); status.Code(err) != codes.NotFound {
		t.Errorf("Status of a's job without SAN: %v, want NotFound", err)
	}
}

// leafWithSANs issues a client certificate from p's CA with the given email and DNS SANs (certSpec has no
// email field) and writes it as name.{crt,key}.
func leafWithSANs(t *testing.T, p *testPKI, name string, emails, dns []string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		Subject:        pkix.Name{CommonName: name},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		EmailAddresses: emails,
		DNSNames:       dns,
		ExtKeyUsage:    ekuClient,
		KeyUsage:       x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.cert, &key.PublicKey, p.ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&issued{cert: cert, key: key}).write(p.dir, name); err != nil {
		t.Fatal(err)
	}
}

// TestAuthzSANKindsArePrefixed: an email SAN and a DNS SAN of the same spelling are different names,
// over the wire too; two certificates with the same email SAN are the same caller.
func TestAuthzSANKindsArePrefixed(t *testing.T) {
	ts := startServer(t)
	leafWithSANs(t, ts.pki, "mail1", []string{"ops@example.org"}, nil)
	leafWithSANs(t, ts.pki, "mail2", []string{"ops@example.org"}, nil)
	leafWithSANs(t, ts.pki, "dnsmail", nil, []string{"ops@example.org"})
	owner := ts.dialAs(t, "mail1")
	id := startJob(t, owner, cmd("true"))
	waitDone(t, owner, id)
	for _, tc := range []struct {
		client string
		want   codes.Code
	}{{"mail2", codes.OK}, {"dnsmail", codes.NotFound}, {"a", codes.NotFound}} {
		_, err := ts.dialAs(t, tc.client).Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
		if status.Code(err) != tc.want {
			t.Errorf("Status of email:ops@example.org's job as %s: %v, want %v", tc.client, err, tc.want)
		}
	}
}

func TestAuthzMalformedIDs(t *testing.T) {
	ts := startServer(t)
	a := ts.dialAs(t, "a")
	valid := neverStartedID(t)
	cases := map[string]string{
		"25 characters":    valid[:25],
		"27 characters":    valid + "0",
		"empty":            "",
		"U":                "U" + valid[1:],
		"lower-case u":     valid[:25] + "u", // lower case and I, L, O are valid spellings (ULID spec)
		"overflow 8":       "8" + strings.Repeat("0", 25),
		"overflow Z":       "Z" + strings.Repeat("Z", 25),
		"non-ASCII":        valid[:24] + "é",
		"NUL":              valid[:25] + "\x00",
		"path separator":   valid[:25] + "/",
		"whitespace":       " " + valid[1:],
		"long":             strings.Repeat("0", 1<<12),
		"ulid in sentence": "id " + valid,
	}
	for name, id := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: id})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("Status(%q): %v (%s), want InvalidArgument", id, err, code(err))
			}
		})
	}
	// The control: the same call with a well-formed id gets past the parser.
	if _, err := a.Status(ctx(t), &rpcpb.JobIdentifier{Ulid: valid}); status.Code(err) != codes.NotFound {
		t.Errorf("Status of a well-formed unknown id: %v, want NotFound", err)
	}
}

func TestCertIdentity(t *testing.T) {
	uri, _ := url.Parse("spiffe://example.org/ns/a")
	cases := []struct {
		name string
		cert x509.Certificate
		want []string
	}{
		{"no SAN, CommonName ignored", x509.Certificate{}, nil},
		{"DNS", x509.Certificate{DNSNames: []string{"a", "b.example"}}, []string{"dns:a", "dns:b.example"}},
		{"IPv4", x509.Certificate{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, []string{"ip:10.0.0.1"}},
		{"IPv4 in 4 bytes", x509.Certificate{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1).To4()}}, []string{"ip:10.0.0.1"}},
		{"IPv6", x509.Certificate{IPAddresses: []net.IP{net.ParseIP("2001:db8::1")}}, []string{"ip:2001:db8::1"}},
		{"email", x509.Certificate{EmailAddresses: []string{"a@example.org"}}, []string{"email:a@example.org"}},
		{"URI", x509.Certificate{URIs: []*url.URL{uri}}, []string{"uri:spiffe://example.org/ns/a"}},
		{"every kind, in kind order", x509.Certificate{
			URIs: []*url.URL{uri}, EmailAddresses: []string{"a"}, IPAddresses: []net.IP{net.IPv6loopback}, DNSNames: []string{"a"},
		}, []string{"dns:a", "ip:::1", "email:a", "uri:spiffe://example.org/ns/a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cert.Subject.CommonName = "cn"
			if got := certIdentity(&tc.cert); !slices.Equal(got, tc.want) {
				t.Errorf("certIdentity = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSharesIdentity(t *testing.T) {
	cases := []struct {
		name          string
		owner, caller []string
		want          bool
	}{
		{"same", []string{"dns:a"}, []string{"dns:a"}, true},
		{"one of several", []string{"dns:a", "dns:x"}, []string{"dns:c", "dns:a"}, true},
		{"disjoint", []string{"dns:a"}, []string{"dns:b"}, false},
		{"same spelling, other kind", []string{"dns:a@b"}, []string{"email:a@b"}, false},
		{"prefix is not a name", []string{"dns:ab"}, []string{"dns:a"}, false},
		{"empty caller", []string{"dns:a"}, nil, false},
		{"empty owner", nil, []string{"dns:a"}, false},
		{"both empty", nil, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sharesIdentity(tc.owner, tc.caller); got != tc.want {
				t.Errorf("sharesIdentity(%q, %q) = %v, want %v", tc.owner, tc.caller, got, tc.want)
			}
		})
	}
}

// TestCanonicalSAN: pairs of spellings that name one identity, and pairs that must stay two.
func TestCanonicalSAN(t *testing.T) {
	for _, tc := range []struct {
		kind, a, b string
		same       bool
	}{
		{"dns", "ALICE", "alice", true},
		{"dns", "Host.Example.ORG.", "host.example.org", true},
		{"dns", "host.example.org..", "host.example.org", false}, // only the root's one dot
		{"dns", "alice", "alicf", false},
		{"dns", "a\xc3\x84", "a\xc3\xa4", false}, // non-ASCII case is not folded
		{"dns", "a\xff", "a\xfe", false},         // nor are invalid bytes merged
		{"email", "Bob@Example.ORG", "Bob@example.org.", true},
		{"email", "Bob@example.org", "bob@example.org", false}, // the mailbox is the server's to fold
		{"email", "a@b@C", "a@b@c", true},                      // the domain is after the last @
		{"ip", "::ffff:10.0.0.1", "10.0.0.1", true},
		{"ip", "2001:DB8:0:0:0:0:0:1", "2001:db8::1", true},
		{"ip", "10.0.0.1", "10.0.0.2", false},
		{"ip", "not an ip", "not an ip", true},
		{"uri", "SPIFFE://example.org/a", "spiffe://example.org/a", true},
		{"uri", "spiffe://example.org/a", "spiffe://example.org/A", false},
	} {
		ca, cb := canonicalSAN(tc.kind, tc.a), canonicalSAN(tc.kind, tc.b)
		if (ca == cb) != tc.same {
			t.Errorf("%s %q -> %q and %q -> %q: same = %v, want %v", tc.kind, tc.a, ca, tc.b, cb, ca == cb, tc.same)
		}
	}
	// Through certificates: ALICE and alice. are one identity.
	if !sharesIdentity(certIdentity(&x509.Certificate{DNSNames: []string{"ALICE"}}),
		certIdentity(&x509.Certificate{DNSNames: []string{"alice."}})) {
		t.Error("ALICE and alice. are two identities")
	}
}

// FuzzCanonicalSAN: canonical forms are fixed points, never collapse names that differ other than by
// what the rules fold, and never panic.
func FuzzCanonicalSAN(f *testing.F) {
	for _, s := range []string{"ALICE.", "a@B.C", "::ffff:1.2.3.4", "HTTP://x/%41", "\xff", ""} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, kind := range []string{"dns", "email", "ip", "uri"} {
			ca := canonicalSAN(kind, a)
			if again := canonicalSAN(kind, ca); again != ca {
				t.Fatalf("%s %q -> %q -> %q: not a fixed point", kind, a, ca, again)
			}
			if kind == "dns" && ca == canonicalSAN(kind, b) &&
				strings.TrimSuffix(strings.ToLower(a), ".") != strings.TrimSuffix(strings.ToLower(b), ".") && asciiOnly(a+b) {
				t.Fatalf("dns %q and %q are one identity", a, b)
			}
		}
	})
}

func asciiOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

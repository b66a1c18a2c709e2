package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// refEncode is an independent encoder for cross-checking String: math/big
// prints base 32 with digits 0-9a-v, which we map index-for-index onto Crockford.
func refEncode(b [16]byte) string {
	s := new(big.Int).SetBytes(b[:]).Text(32)
	s = strings.Repeat("0", 26-len(s)) + s
	const std = "0123456789abcdefghijklmnopqrstuv"
	out := make([]byte, len(s))
	for i := range s {
		out[i] = crockford[strings.IndexByte(std, s[i])]
	}
	return string(out)
}

func TestULIDKnownVectors(t *testing.T) {
	ff := ulid(bytes.Repeat([]byte{0xFF}, 16))
	tests := []struct {
		u    ulid
		want string
	}{
		{ulid{}, "00000000000000000000000000"},
		{ff, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
		{ulid{15: 1}, "00000000000000000000000001"},
		{ulid{15: 32}, "00000000000000000000000010"},
		// Vector from the oklog/ulid tests: timestamp 1469918176385.
		{ulid{0x01, 0x56, 0x3d, 0xf3, 0x64, 0x81, 0xd6, 0x76, 0x4c, 0x61, 0xef, 0xb9, 0x93, 0x02, 0xbd, 0x5b}, "01ARYZ6S41TSV4RRFFQ69G5FAV"},
	}
	for _, tt := range tests {
		if got := tt.u.String(); got != tt.want {
			t.Errorf("%x.String() = %q, want %q", tt.u[:], got, tt.want)
		}
		if ref := refEncode(tt.u); ref != tt.want {
			t.Errorf("refEncode(%x) = %q, want %q (test helper is wrong)", tt.u[:], ref, tt.want)
		}
		got, err := parseULID(tt.want)
		if err != nil || got != tt.u {
			t.Errorf("parseULID(%q) = %x, %v; want %x", tt.want, got[:], err, tt.u[:])
		}
	}
	if ms := tests[4].u.Time().UnixMilli(); ms != 1469918176385 {
		t.Errorf("vector Time() = %d ms, want 1469918176385", ms)
	}
	for i := 0; i < 100; i++ {
		var b [16]byte
		rand.Read(b[:])
		if got, want := ulid(b).String(), refEncode(b); got != want {
			t.Fatalf("%x.String() = %q, reference encoder says %q", b, got, want)
		}
	}
}

func TestULIDTimeRoundTrip(t *testing.T) {
	for _, ms := range []int64{0, 1, 255, 256, 1<<32 - 1, 1 << 32, 1469918176385, time.Now().UnixMilli(), 1<<48 - 1} {
		u, err := newULID(time.UnixMilli(ms).Add(999 * time.Microsecond)) // sub-ms part is dropped
		if err != nil {
			t.Fatalf("newULID(%d ms): %v", ms, err)
		}
		if got := u.Time(); got.UnixMilli() != ms || got.Location() != time.UTC {
			t.Errorf("newULID(%d ms).Time() = %v (%d ms), want %d ms in UTC", ms, got, got.UnixMilli(), ms)
		}
	}
	for _, ms := range []int64{-1, 1 << 48} {
		if _, err := newULID(time.UnixMilli(ms)); err == nil || !strings.Contains(err.Error(), "48-bit") {
			t.Errorf("newULID(%d ms) error = %v, want out-of-range error", ms, err)
		}
	}
}

type failReader struct{ n int } // gives n bytes, then fails

func (r *failReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("entropy gone")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

// Not parallel: it swaps the process-wide rand.Reader.
func TestNewULIDRandFailure(t *testing.T) {
	orig := rand.Reader
	t.Cleanup(func() { rand.Reader = orig })
	for _, n := range []int{0, 9} {
		rand.Reader = &failReader{n: n}
		u, err := newULID(time.Now())
		if err == nil || u != (ulid{}) {
			t.Errorf("with %d random bytes available: newULID = %v, %v; want zero id and error", n, u, err)
		}
	}
	rand.Reader = orig
	if _, err := newULID(time.Now()); err != nil {
		t.Fatalf("newULID with restored rand.Reader: %v", err)
	}
}

func TestParseULIDBad(t *testing.T) {
	valid := "01ARYZ6S41TSV4RRFFQ69G5FAV"
	tests := []struct{ name, in, reason string }{
		{"empty", "", "want 26 characters, got 0"},
		{"25 chars", valid[:25], "want 26 characters, got 25"},
		{"27 chars", valid + "0", "want 26 characters, got 27"},
		{"U", valid[:25] + "U", "invalid character 'U' at position 25"},
		{"u", valid[:25] + "u", "invalid character 'u' at position 25"},
		{"lower-case overflow", "z" + valid[1:], "overflows 128 bits"},
		{"hyphen", valid[:25] + "-", "invalid character '-' at position 25"},
		{"8 first", "8" + valid[1:], "overflows 128 bits (first character must be 0-7)"},
		{"Z first", "Z" + valid[1:], "overflows 128 bits"},
		{"non-ASCII", valid[:24] + "é", "invalid character 'é' at position 24"},
		{"invalid UTF-8", valid[:25] + "\xff", `invalid character '\xff' at position 25`},
		{"NUL", valid[:3] + "\x00" + valid[4:], `invalid character '\x00' at position 3`},
		{"1 MiB", strings.Repeat("0", 1<<20), "want 26 characters, got 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := parseULID(tt.in)
			if err == nil {
				t.Fatalf("parseULID = %v, want error", u)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "parse job id \"") || !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q does not name the input and %q", msg, tt.reason)
			}
			if len(msg) > 200 {
				t.Errorf("error is %d bytes long; the input should be truncated", len(msg))
			}
		})
	}
	if _, err := parseULID("7" + valid[1:]); err != nil {
		t.Errorf("first character 7 must be accepted: %v", err)
	}
}

func TestULIDSortsByTime(t *testing.T) {
	// Include carries across byte boundaries, where a wrong byte order would show.
	ms := []int64{0, 1, 31, 32, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<40 - 1, 1 << 40}
	for now, i := time.Now().UnixMilli(), int64(0); i < 50; i++ {
		ms = append(ms, now+i) // now lies between 1<<40 and 1<<48-2
	}
	ms = append(ms, 1<<48-2, 1<<48-1)
	prev := ""
	for i, m := range ms {
		u, err := newULID(time.UnixMilli(m))
		if err != nil {
			t.Fatal(err)
		}
		s := u.String()
		if i > 0 && s <= prev {
			t.Fatalf("id at %d ms %q does not sort after the previous id %q", m, s, prev)
		}
		prev = s
	}
}

func TestNewULIDConcurrentUnique(t *testing.T) {
	const goroutines, each = 16, 1000
	results := make([][]ulid, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				u, err := newULID(time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				results[g] = append(results[g], u)
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*each)
	for _, r := range results {
		for _, u := range r {
			s := u.String()
			if seen[s] {
				t.Fatalf("duplicate id %s", s)
			}
			seen[s] = true
		}
	}
	if len(seen) != goroutines*each {
		t.Fatalf("got %d unique ids, want %d", len(seen), goroutines*each)
	}
}

func FuzzParseULID(f *testing.F) {
	for _, s := range []string{
		"00000000000000000000000000", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01ARYZ6S41TSV4RRFFQ69G5FAV",
		"", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01aryz6s41tsv4rrffq69g5fav", "01ARYZ6S41TSV4RRFFQ69G5FAI",
		"01ARYZ6S41TSV4RRFFQ69G5FA", "01ARYZ6S41TSV4RRFFQ69G5FAVV", "01ARYZ6S41TSV4RRFFQ69G5Fé", "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseULID(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "parse job id ") {
				t.Fatalf("error %q lacks the usual prefix", err)
			}
			return
		}
		if got := u.String(); got != canonicalCrockford(s) {
			t.Fatalf("parseULID(%q).String() = %q, want %q", s, got, canonicalCrockford(s))
		}
	})
}

// canonicalCrockford spells s the way the ULID spec's decoder reads it, independently of parseULID:
// upper case, I and L as 1, O as 0.
func canonicalCrockford(s string) string {
	return strings.NewReplacer("I", "1", "L", "1", "O", "0").Replace(strings.ToUpper(s))
}

// TestParseULIDSpellings: every spelling the ULID spec decodes to one id names that id.
func TestParseULIDSpellings(t *testing.T) {
	want, err := parseULID("01ARYZ6S41TSV4RRFFQ69G5FAV")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"01aryz6s41tsv4rrffq69g5fav", "01ARYZ6S41TSV4RRFFQ69G5FAV", "0lARYZ6S4iTSV4RRFFQ69G5FAV",
		"OLARYZ6S4ITSV4RRFFQ69G5FAV", "o1aRyZ6s41TsV4rRfFq69g5fAv"} {
		if got, err := parseULID(s); err != nil || got != want {
			t.Errorf("parseULID(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}

func FuzzULIDRoundTrip(f *testing.F) {
	f.Add(make([]byte, 16))
	f.Add(bytes.Repeat([]byte{0xFF}, 16))
	f.Add([]byte("0123456789abcdefXYZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 16 {
			return
		}
		u := ulid(b[:16])
		s := u.String()
		got, err := parseULID(s)
		if err != nil || got != u {
			t.Fatalf("parseULID(%q) = %x, %v; want %x", s, got[:], err, u[:])
		}
		if want := refEncode(u); s != want {
			t.Fatalf("%x.String() = %q, reference encoder says %q", u[:], s, want)
		}
	})
}

// Time returns the id's millisecond timestamp, in UTC (tests only).
func (u ulid) Time() time.Time {
	return time.UnixMilli(int64(binary.BigEndian.Uint64(u[:8]) >> 16)).UTC()
}

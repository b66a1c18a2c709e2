//go:build !rundinit

package main

// Job ids are ULIDs (https://github.com/ulid/spec): as plain strings they sort
// by creation time, and their 80 random bits make them unguessable.

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// crockford is the spec's base32 alphabet; it omits I, L, O and U so ids
// cannot be misread or spell words.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ulid is a 128-bit ULID: 48-bit ms timestamp then 80 random bits.
type ulid [16]byte

// newULID uses io.ReadFull on rand.Reader rather than rand.Read, because
// rand.Read crashes the process on failure and we must return an error.
func newULID(now time.Time) (ulid, error) {
	var u ulid
	ms := now.UnixMilli()
	if ms < 0 || ms >= 1<<48 { // the spec says to reject, not wrap
		return u, fmt.Errorf("new job id: time %v outside the 48-bit ULID range", now)
	}
	binary.BigEndian.PutUint64(u[:8], uint64(ms)<<16) // bytes 6-7 are overwritten below
	if _, err := io.ReadFull(rand.Reader, u[6:]); err != nil {
		return ulid{}, fmt.Errorf("new job id: read random bits: %w", err)
	}
	return u, nil
}

// String takes 5 bits at a time from the low end; 26*5 = 130, so the
// first character carries only the top 3 bits.
func (u ulid) String() string {
	hi, lo := binary.BigEndian.Uint64(u[:8]), binary.BigEndian.Uint64(u[8:])
	var b [26]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(b[:])
}

// parseULID decodes an id the way the ULID spec says Crockford base32 is read: case-insensitively,
// with I and L read as 1 and O as 0 (U stays invalid). Nothing above 2^128-1 is accepted. An id is
// always written in upper case (String), so callers key on u.String(), never on the input.
func parseULID(s string) (ulid, error) {
	if len(s) != 26 {
		return ulid{}, parseErr(s, fmt.Sprintf("want 26 characters, got %d", len(s)))
	}
	var hi, lo uint64
	for i := 0; i < len(s); i++ {
		v := crockfordValue(s[i])
		if v < 0 {
			r, size := utf8.DecodeRuneInString(s[i:])
			c := fmt.Sprintf("%q", r)
			if r == utf8.RuneError && size == 1 { // not UTF-8: show the byte, not '\ufffd'
				c = fmt.Sprintf(`'\x%02x'`, s[i])
			}
			return ulid{}, parseErr(s, fmt.Sprintf("invalid character %s at position %d (ids use Crockford base32)", c, i))
		}
		if i == 0 && v > 7 {
			return ulid{}, parseErr(s, "overflows 128 bits (first character must be 0-7)")
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	var u ulid
	binary.BigEndian.PutUint64(u[:8], hi)
	binary.BigEndian.PutUint64(u[8:], lo)
	return u, nil
}

// crockfordValue is c's 5-bit value in Crockford base32, or -1.
func crockfordValue(c byte) int {
	if 'a' <= c && c <= 'z' {
		c -= 'a' - 'A'
	}
	if i := strings.IndexByte("OIL", c); i >= 0 {
		c = "011"[i]
	}
	return strings.IndexByte(crockford, c)
}

// parseErr quotes at most 40 bytes of the input so huge inputs stay out of logs.
func parseErr(s, reason string) error {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Errorf("parse job id %q: %s", s, reason)
}

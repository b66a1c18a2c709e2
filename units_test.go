package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"512M", 512e6, true}, {"512MB", 512e6, true}, {"512MiB", 512 << 20, true},
		{"1.5GiB", 1610612736, true}, {"1.5G", 1.5e9, true}, {"10MB/s", 10e6, true}, {"100k", 100e3, true}, {"100K", 100e3, true},
		{"2Ti", 2 << 40, true}, {"1T", 1e12, true}, {"0.5k", 500, true}, {"64B", 64, true},
		{"", 0, false}, {"B", 0, false}, {"1.5", 0, false}, {"-5", 0, false}, {"10X", 0, false}, {"1e3", 0, false},
		{"0x10", 0, false}, {"Inf", 0, false}, {"NaN", 0, false}, {"1_000", 0, false}, {"99999999999T", 0, false},
		{"5 M", 0, false}, {"5m", 0, false}, {"1KiKi", 0, false}, {"+5", 0, false}, {"-0", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true}, {"0.5", 500 * time.Millisecond, true}, {"30s", 30 * time.Second, true},
		{"2m", 2 * time.Minute, true}, {"1h30m", 90 * time.Minute, true},
		{"", 0, false}, {"3parsecs", 0, false}, {"1e3", 0, false}, {"Inf", 0, false}, {"0x10", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestHumanUnits(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 999: "999B", 1000: "1.0kB", 1234567: "1.2MB", 5e9: "5.0GB", 7e12: "7.0TB", 3e15: "3000.0TB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{400 * time.Millisecond: "0.4s", 12 * time.Second: "12.0s",
		245 * time.Second: "4m05s", 123 * time.Minute: "2h03m", 50*time.Hour + 3*time.Minute: "50h03m"} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzParseSize: parseSize never panics, and what it accepts is what its rule says: a number, then
// one of its units, then an optional B and /s; a value it prints back in bytes parses to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1.5GiB", "10MB/s", "100k", "0", "1.5", "-1", "1e3", "18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(s, " \t+-eE") {
			t.Errorf("parseSize(%q) = %d: accepted a sign, a blank or an exponent", s, n)
		}
		if n < 1<<53 {
			if back, err := parseSize(strconv.FormatUint(n, 10) + "B"); err != nil || back != n {
				t.Errorf("parseSize(%q) = %d, but %d B parses to %d, %v", s, n, n, back, err)
			}
		}
	})
}

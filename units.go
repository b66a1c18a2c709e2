//go:build !rundinit

package main

// units.go holds the command line's rules for numbers as people write them, in and out: sizes,
// rates and counts (512M, 1.5GiB, 10MB/s, 100k), durations (30s, 2m, 30), and the short forms that
// rund client list prints. k, M, G and T are powers of 1000 and Ki, Mi, Gi and Ti powers of 1024
// (IEC 80000-13, as Kubernetes reads them), in and out alike.

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeUnits are the units parseSize reads: powers of 1024, then powers of 1000 (K as well as k).
var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

var errSize = errors.New("want a whole number with an optional unit: k M G T (1000^n) or Ki Mi Gi Ti (1024^n), " +
	"then an optional B and /s, e.g. 512M, 1.5GiB, 10MB/s, 100k")

// parseSize reads a size, a rate or a count: a number, a unit from sizeUnits, then "B" and "/s",
// each optional. A fraction is taken only where the unit makes it whole (1.5k, not 1.5).
func parseSize(s string) (uint64, error) {
	num, mult := strings.TrimSuffix(strings.TrimSuffix(s, "/s"), "B"), uint64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64) // exact for whole numbers up to 2^53: 8 PiB
	v := f * float64(mult)
	if err != nil || strings.ContainsAny(num, "+-xXpPeEiInN_") || !(v >= 0 && v < 1<<64) || v != math.Trunc(v) {
		return 0, errSize
	}
	return uint64(v), nil
}

// parseDuration reads a Go duration (30s, 2m, 1h30m) or a bare number of seconds (30, 0.5).
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && !strings.ContainsAny(s, "xXpPeEiInN_") && f < 1e9 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want a duration such as 30s, 2m or 1h30m, or a number of seconds")
	}
	return d, nil
}

// humanBytes is n in the largest unit of 1000 that keeps it at 1 or more: 0B, 999B, 1.2kB, 35.0MB.
func humanBytes(n uint64) string {
	f, u := float64(n), 0
	for ; f >= 1000 && u < 4; u++ {
		f /= 1000
	}
	if u == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%.1f%cB", f, " kMGT"[u])
}

// humanDuration is d in two units at most: 0.4s, 12.0s, 4m05s, 2h03m, 50h03m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

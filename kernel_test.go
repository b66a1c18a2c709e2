package main

import (
	"strings"
	"testing"
)

func TestKernelFloor(t *testing.T) {
	for _, tc := range []struct{ release, err string }{
		{"6.1.0-56-cloud-amd64", ""},
		{"5.19.0", ""},
		{"10.0", ""},
		{"5.18.17-arch1", "Linux 5.18.17-arch1 is older than 5.19; rund needs clone3 with CLONE_INTO_CGROUP (Linux 5.7), " +
			"mount_setattr(2) (5.12), cgroup.kill (5.14) and memory.peak (5.19)"},
		{"5.10.0-32-cloud-amd64", "Linux 5.10.0-32-cloud-amd64 is older than 5.19"},
		{"4.19.0", "Linux 4.19.0 is older than 5.19"},
		{"garbage", "Linux garbage is older than 5.19"},
	} {
		err := checkKernel(tc.release)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("checkKernel(%q) = %v, want %q", tc.release, err, tc.err)
		}
	}
	if err := checkHost(true); err != nil {
		t.Errorf("this host: %v", err)
	}
}

// TestIOLimitsWait: io limits wait on a 32-bit kernel (a 32-bit build on a 32-bit machine) until it has
// been up ioLimitsUptime seconds, and nowhere else.
func TestIOLimitsWait(t *testing.T) {
	for _, tc := range []struct {
		bits    int
		machine string
		uptime  int64
		wait    bool
	}{
		{32, "armv7l", 12, true},
		{32, "armv7l", ioLimitsUptime - 1, true},
		{32, "i686", 0, true},
		{32, "armv7l", ioLimitsUptime, false},
		{32, "aarch64", 12, false}, // an armv7 rund on a 64-bit kernel
		{32, "x86_64", 12, false},
		{64, "aarch64", 12, false},
		{64, "riscv64", 0, false},
	} {
		why := ioLimitsWait(tc.bits, tc.machine, tc.uptime)
		if (why != "") != tc.wait || tc.wait && !strings.Contains(why, "32-bit kernel") {
			t.Errorf("ioLimitsWait(%d, %q, %d) = %q, want a wait: %v", tc.bits, tc.machine, tc.uptime, why, tc.wait)
		}
	}
}

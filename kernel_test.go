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

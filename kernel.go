package main

// kernel.go is the kernel floor: what rund needs of Linux that came last, checked when rund serve
// starts, so that a kernel without it is refused with a message that names it, not met with a job
// that fails half-made.

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelFeatures are the newest of the kernel features rund uses, each with the release that brought
// it: clone(2) for clone3 and CLONE_INTO_CGROUP, mount_setattr(2), and
// Documentation/admin-guide/cgroup-v2.rst for cgroup.kill and memory.peak.
var kernelFeatures = []struct {
	what         string
	major, minor int
}{
	{"clone3 with CLONE_INTO_CGROUP", 5, 7},
	{"mount_setattr(2)", 5, 12},
	{"cgroup.kill", 5, 14},
	{"memory.peak", 5, 19},
}

// checkKernel refuses a kernel release older than any of kernelFeatures, naming each it lacks.
func checkKernel(release string) error {
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor) // a release it cannot read is 0.0, older than any
	var lacks []string
	for _, f := range kernelFeatures {
		if major < f.major || major == f.major && minor < f.minor {
			lacks = append(lacks, fmt.Sprintf("%s (Linux %d.%d)", f.what, f.major, f.minor))
		}
	}
	if len(lacks) > 0 {
		return fmt.Errorf("Linux %s lacks what rund needs: %s", release, strings.Join(lacks, ", "))
	}
	return nil
}

// checkHost checks the running kernel, and for contained jobs that user namespaces are on
// (user_namespaces(7): user.max_user_namespaces is 0 where an administrator turned them off).
func checkHost(contained bool) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %v", err)
	}
	if err := checkKernel(unix.ByteSliceToString(u.Release[:])); err != nil {
		return err
	}
	if n, _ := os.ReadFile("/proc/sys/user/max_user_namespaces"); contained && strings.TrimSpace(string(n)) == "0" {
		return fmt.Errorf("user namespaces are off (sysctl user.max_user_namespaces = 0): contained jobs need them")
	}
	return nil
}

//go:build !rundinit

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

// kernelNeeds are the newest kernel features rund uses, each with the release that brought it (clone(2),
// mount_setattr(2), Documentation/admin-guide/cgroup-v2.rst): so rund needs Linux 5.19.
const kernelNeeds = "clone3 with CLONE_INTO_CGROUP (Linux 5.7), mount_setattr(2) (5.12), " +
	"cgroup.kill (5.14) and memory.peak (5.19)"

// checkKernel refuses a kernel release older than 5.19.
func checkKernel(release string) error {
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor) // a release it cannot read is 0.0, older than any
	if major < 5 || major == 5 && minor < 19 {
		return fmt.Errorf("Linux %s is older than 5.19; rund needs %s", release, kernelNeeds)
	}
	return nil
}

// checkHost checks the running kernel, and for contained jobs that user namespaces are on
// (user_namespaces(7): user.max_user_namespaces is 0 where an administrator turned them off).
func checkHost(contained bool) error {
	var u unix.Utsname
	unix.Uname(&u) // cannot fail: u is valid memory
	if err := checkKernel(unix.ByteSliceToString(u.Release[:])); err != nil {
		return err
	}
	if n, _ := os.ReadFile("/proc/sys/user/max_user_namespaces"); contained && strings.TrimSpace(string(n)) == "0" {
		return fmt.Errorf("user namespaces are off (sysctl user.max_user_namespaces = 0): contained jobs need them")
	}
	return nil
}

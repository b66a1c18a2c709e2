//go:build !rundinit

package main

// kernel.go is the kernel floor: what rund needs of Linux that came last, checked when rund serve
// starts, so that a kernel without it is refused with a message that names it, not met with a job
// that fails half-made.

import (
	"fmt"
	"os"
	"strconv"
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

// ioLimitsUptime is how long a 32-bit kernel must have been up before rund writes an io.max. Such a
// kernel's jiffies are 32 bits and start 300 s before they wrap (INITIAL_JIFFIES, include/linux/jiffies.h),
// so that wrap bugs show early; Debian bookworm's armhf 6.1 has one: the first bio that an io.max
// throttles before the wrap hits the BUG_ON in throtl_trim_slice (block/blk-throttle.c), and the host
// panics (make e2e-armv7 saw it on every boot). Refused, a Start gets an error it can act on instead.
const ioLimitsUptime = 310

// ioLimitsWait says why this host cannot take io limits yet, or "": a 32-bit kernel (bits, the word
// size of rund's build, is 32, and the kernel's machine is not a 64-bit one running it) up for less
// than ioLimitsUptime seconds.
func ioLimitsWait(bits int, machine string, uptime int64) string {
	if bits == 64 || machine == "aarch64" || machine == "x86_64" || uptime >= ioLimitsUptime {
		return ""
	}
	return fmt.Sprintf("io (on a 32-bit kernel, from %d s of uptime: it is %d s; README \"Limits\")",
		ioLimitsUptime, uptime)
}

// ioLimitsWaitNow is ioLimitsWait for this host, now.
func ioLimitsWaitNow() string {
	if strconv.IntSize == 64 {
		return ""
	}
	var u unix.Utsname
	unix.Uname(&u) // cannot fail: u is valid memory
	var si unix.Sysinfo_t
	unix.Sysinfo(&si) // cannot fail: si is valid memory
	return ioLimitsWait(strconv.IntSize, unix.ByteSliceToString(u.Machine[:]), int64(si.Uptime))
}

package main

import "golang.org/x/sys/unix"

// 32-bit arm's setresuid and the rest take 16-bit ids; the calls with 32-bit ids have numbers of their
// own there (arch/arm/tools/syscall.tbl). Job uids are above 2^16.
func init() {
	sysSetresuid, sysSetresgid = unix.SYS_SETRESUID32, unix.SYS_SETRESGID32
	sysGetresuid, sysGetresgid = unix.SYS_GETRESUID32, unix.SYS_GETRESGID32
}

package main

import "golang.org/x/sys/unix"

// 32-bit arm also sets the clocks through the y2038-safe calls of Linux 5.1, which 64-bit arches do
// not have (the rest of jobRules has the same names everywhere).
func init() {
	jobRules = append(jobRules, syscallRule{"clock_settime64", unix.SYS_CLOCK_SETTIME64, deny},
		syscallRule{"clock_adjtime64", unix.SYS_CLOCK_ADJTIME64, deny})
}

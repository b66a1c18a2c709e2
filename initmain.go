//go:build rundinit

package main

// initmain.go is the main of the lean init: built with -tags rundinit, the package is only the files
// of a job's PID 1 (init.go, mounts.go, creds*.go, seccomp*.go) and this one, and the binary only runs
// "rund init". Every other file of the package is //go:build !rundinit, so that none of the server's
// and client's packages (grpc, protobuf, crypto/tls) are linked, nor their initialisers run at each job
// start.

import "os"

func main() { os.Exit(runInit()) }

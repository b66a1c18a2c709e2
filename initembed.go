//go:build embedinit && !rundinit

package main

// initembed.go carries the lean init (initmain.go) inside rund: make build links it first, for the same
// GOOS and GOARCH, and builds rund with -tags embedinit and a -overlay that names that binary as
// rund-init.bin, so nothing is written into the checkout. rund serve runs it from a sealed memfd
// (spawn.go sealInit). A plain `go build` leaves this file out: rund is then its own jobs' init.

import _ "embed"

//go:embed rund-init.bin
var embeddedInit []byte

func init() { leanInit = embeddedInit }

//go:build !rundinit

package main

// notify.go tells a service manager when rund serve is ready and when it stops, by the protocol of
// sd_notify(3): one unix datagram per state, to the socket NOTIFY_SOCKET names. systemd's Type=notify
// (contrib/rund.service) makes `systemctl start` return only once READY=1 arrives.

import (
	"log"
	"net"
	"os"
)

// notifier is where the states go: NOTIFY_SOCKET's value, or "" for nowhere.
type notifier struct{ socket string }

// newNotifier takes NOTIFY_SOCKET and unsets it, as sd_notify(3)'s unset_environment does, so that no
// process rund starts inherits it. (A job's environment is its request's alone, and systemd's
// NotifyAccess=main takes messages from rund's own pid only.)
func newNotifier() notifier {
	n := notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	return n
}

// notify sends state ("READY=1"); a failure is logged, as the service manager's view is all it costs.
// A socket name that starts with '@' is in the abstract namespace (sd_notify(3)): Go's net package
// maps a leading '@' to that namespace itself (unix(7)).
func (n notifier) notify(state string) {
	if n.socket == "" {
		return
	}
	conn, err := net.Dial("unixgram", n.socket)
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		log.Printf("sd_notify %s: %v", state, err)
	}
}

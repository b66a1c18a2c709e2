package main

// creds.go holds the credential changes of the init's forking thread (init.go setUpJob), each made on
// that thread alone and read back: the job's filesystem ids while its command is looked for
// (asJobUser), the job's effective ids while the command is forked, so that the job's user namespace
// is its own uid's (becomeJobOwner, leaveJobOwner), and the command's own user namespace (ownUserns).
// x/sys's Setresuid and Setresgid change every thread of the process (Go's syscall package, since Go
// 1.16); the calls here are raw, for the calling thread only, as credentials are in Linux
// (credentials(7)).

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// asJobUser runs check with the filesystem ids of u (nil: root's, as they are) and no supplementary
// groups (setfsuid(2): a non-zero fsuid also takes root's file capabilities out of the effective set,
// capabilities(7)), then takes root's ids back. All of these are the calling thread's: the init's own,
// locked to it (setUpJob), whose groups the command does not inherit (ownUserns). Each change is made
// alone and read back; check runs only if all took, and an error (a change, or the way back, that did
// not take) fails the job's start: the thread's ids are then unknown, and the init ends.
func asJobUser(u *jobUser, check func()) error {
	if u == nil {
		check()
		return nil
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := setFSID(unix.SetfsgidRetGid, "fsgid", u.GID); err != nil {
		return err
	}
	if err := setFSID(unix.SetfsuidRetUid, "fsuid", u.UID); err != nil {
		return errors.Join(err, setFSID(unix.SetfsgidRetGid, "fsgid", 0))
	}
	check()
	if err := setFSID(unix.SetfsuidRetUid, "fsuid", 0); err != nil {
		return err
	}
	return setFSID(unix.SetfsgidRetGid, "fsgid", 0)
}

// setFSID sets the thread's fsuid or fsgid with set (unix.SetfsuidRetUid or SetfsgidRetGid) and reads
// it back. setfsuid(2) and setfsgid(2) report no error: they return the previous id whether or not the
// change took, and a call with -1, never a valid id, changes nothing and returns the one in force.
func setFSID(set func(int) (int, error), name string, id uint32) error {
	set(int(id))
	now, _ := set(-1)
	if now != int(id) {
		return fmt.Errorf("set%s %d: the %s is still %d", name, id, name, now)
	}
	return nil
}

// ownUserns puts the command in a new user namespace in which uid and gid 0 are the job's own host uid
// and gid (user_namespaces(7)), and in a new cgroup namespace rooted at its cgroup: clone3 puts it
// into <job>/job before the namespace takes its root (cgroup_namespaces(7)). Its other namespaces stay
// owned by the host's user namespace, in which it holds no capability: it can neither mount, unmount
// nor remount, set the hostname or configure the network, and no file of the host's is its own.
func ownUserns(sys *syscall.SysProcAttr, u *jobUser) {
	sys.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWCGROUP
	sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(u.UID), Size: 1}}
	sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(u.GID), Size: 1}}
	sys.GidMappingsEnableSetgroups = false // the command can never take a group back
	// uid and gid 0 of the new namespace; the groups stay the empty list setUpJob left.
	sys.Credential = &syscall.Credential{NoSetGroups: true}
}

// sysSetresuid and the rest are the calls with 32-bit ids; 32-bit arm numbers them apart (creds_arm.go).
var sysSetresuid, sysSetresgid, sysGetresuid, sysGetresgid uintptr = unix.SYS_SETRESUID, unix.SYS_SETRESGID,
	unix.SYS_GETRESUID, unix.SYS_GETRESGID

// becomeJobOwner sets the calling thread's effective uid and gid to the job's own, so that the user
// namespace its next clone makes is owned by the job's uid (user_namespaces(7): the owner is the
// effective uid of the process that creates it). The kernel charges a user's counts in a namespace up
// the chain of owners (ucounts: inotify instances and watches, mqueue bytes, pending signals, user
// namespaces, processes), so the job's are charged to its own uid, never to host root.
//
// The fork needs no privilege of root's beyond that, and takes none it has not: the thread takes root's
// filesystem ids back, with which the kernel checks the clone into the job's root-owned cgroup
// (clone(2), CLONE_INTO_CGROUP) and the opening of the command's id maps; the maps are those that a
// namespace's owner may write itself, its own euid and egid (user_namespaces(7)); and its effective
// capabilities, cleared by the change of euid, are raised again from the permitted set (capset(2)),
// for kernels that keep user namespaces to CAP_SYS_ADMIN (Debian's kernel.unprivileged_userns_clone).
// None of it needs a capability that the server's systemd unit leaves out (CAP_SETPCAP,
// CAP_DAC_OVERRIDE). The command gets none of it: a new user namespace gives its child capabilities
// there alone (kernel/user_namespace.c, set_cred_user_ns). The real and saved uids stay 0 all along,
// which is what lets the thread take root's ids back (setfsuid(2), setresuid(2)).
//
// The steps run in this order; at the first that fails the thread takes root's ids back (leaveJobOwner).
func becomeJobOwner(u *jobUser) error {
	steps := []func() error{
		func() error { return setEffectiveIDs(u.UID, u.GID) },
		func() error { return setFSID(unix.SetfsuidRetUid, "fsuid", 0) },
		func() error { return setFSID(unix.SetfsgidRetGid, "fsgid", 0) },
		raiseCapabilities,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return errors.Join(err, leaveJobOwner())
		}
	}
	return nil
}

// leaveJobOwner takes root's effective ids back, checked; the kernel then raises the effective
// capabilities to the permitted set, and the filesystem ids follow the effective ones (capabilities(7)).
func leaveJobOwner() error { return setEffectiveIDs(0, 0) }

// raiseCapabilities sets the calling thread's effective capabilities to its permitted ones (capset(2):
// within the permitted set no capability is needed).
func raiseCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// setEffectiveIDs sets the calling thread's effective uid and gid (the real and saved ones stay), and
// reads them back. The gid goes first: the change of euid away from 0 clears CAP_SETGID.
func setEffectiveIDs(uid, gid uint32) error {
	keep := ^uintptr(0) // -1: leave that id as it is (setresuid(2))
	if _, _, e := unix.RawSyscall(sysSetresgid, keep, uintptr(gid), keep); e != 0 {
		return fmt.Errorf("setresgid -1 %d -1: %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(sysSetresuid, keep, uintptr(uid), keep); e != 0 {
		return fmt.Errorf("setresuid -1 %d -1: %w", uid, e)
	}
	var r, e, s uint32
	unix.RawSyscall(sysGetresuid, uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&e)), uintptr(unsafe.Pointer(&s)))
	var rg, eg, sg uint32
	unix.RawSyscall(sysGetresgid, uintptr(unsafe.Pointer(&rg)), uintptr(unsafe.Pointer(&eg)), uintptr(unsafe.Pointer(&sg)))
	if e != uid || eg != gid {
		return fmt.Errorf("set effective ids %d:%d: they are %d:%d", uid, gid, e, eg)
	}
	return nil
}

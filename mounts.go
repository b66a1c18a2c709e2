package main

// mounts.go is the table of a contained job's mounts (jobMounts): the one place they are decided, with
// why each is there. The init (init.go setUpJob) makes them before the job's Start, as the host's root
// in the job's new mount namespace, and locks them at the Start (lockMounts): every mount read-only but
// the writable ones of the table, and no more propagation from the host's.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// mountKind is how a jobMount is made.
type mountKind int

const (
	ownDir     mountKind = iota // source (DIR/<id>) made, the job's own, and bound on target (DIR)
	tmpfs                       // a fresh tmpfs of -job_tmp_size on target, its root root's alone
	scratchDir                  // source made in that tmpfs, mode 1777, and bound on target
	bindRO                      // source bound on target read-only and noexec
	procfs                      // a proc of the job's PID namespace on target
)

// jobMount is one mount a job gets over the host's. Every one is nosuid and nodev.
type jobMount struct {
	target   string
	source   string // ownDir, scratchDir and bindRO: what is bound on target
	kind     mountKind
	writable bool   // left writable when lockMounts makes every other mount read-only
	why      string // why the job gets it, and why so
}

// privateDirs are each contained job's own, in one fresh tmpfs.
var privateDirs = []string{"/tmp", "/var/tmp", "/dev/shm"}

// jobMounts is the one place a job's mounts are decided: every mount it gets over the host's, in the
// order they are made (makeMounts), and which stay writable (lockMounts). Everything else a contained
// job sees is the host's, read-only from its Start on. An uncontained job gets its /proc alone.
func jobMounts(s initSetup) []jobMount {
	proc := jobMount{target: "/proc", kind: procfs, writable: true,
		why: "the job's own processes; writable for what a process sets of its own (oom_score_adj, comm); " +
			"the rest of /proc, /proc/sys included, is the host root's, to which the job's uid has no right"}
	if s.Own == nil {
		return []jobMount{proc}
	}
	var t []jobMount
	for _, d := range s.Dirs { // s.Hostname is the job id, a ULID the server made
		t = append(t, jobMount{target: d, source: filepath.Join(d, s.Hostname), kind: ownDir, writable: true,
			why: "-job_dirs: the job writes its own DIR/<id> there, which outlives it; the rest of DIR is hidden"})
	}
	t = append(t, scratchMounts()...)
	t = append(t, jobMount{target: s.Cgroup2, source: s.JobCgroup, kind: bindRO,
		why: "the job sees its own cgroup and no other one's; read-only, it cannot move a process or raise a limit"})
	return append(t, proc)
}

// scratchMounts give the job's /tmp, /var/tmp and /dev/shm one tmpfs of -job_tmp_size between them:
// it is mounted on the first, each gets a directory in it, and their binds hide the tmpfs' root, the
// first's bind last (it covers the directories the others are bound from). A directory the host lacks
// is left out: there is nothing of the host's to hide there.
func scratchMounts() []jobMount {
	var dirs []string
	for _, d := range privateDirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil
	}
	anchor := dirs[0]
	t := []jobMount{{target: anchor, kind: tmpfs,
		why: "the job's scratch space, one -job_tmp_size for the three, charged to its memory cgroup where " +
			"there is one (else to -job_tmp_total); its root is hidden under the binds"}}
	for _, d := range append(dirs[1:], anchor) {
		name := strings.ReplaceAll(strings.TrimPrefix(d, "/"), "/", "-") // var-tmp
		t = append(t, jobMount{target: d, source: filepath.Join(anchor, name), kind: scratchDir, writable: true,
			why: "the job's own, hiding the host's; every user of the job may write it, as a /tmp"})
	}
	return t
}

// makeMounts makes mounts, as the host's root, in the job's mount namespace (its mounts are slaves).
func makeMounts(mounts []jobMount, s initSetup) error {
	for _, m := range mounts {
		if err := makeMount(m, s); err != nil {
			return err
		}
	}
	return nil
}

func makeMount(m jobMount, s initSetup) error {
	switch m.kind {
	case ownDir: // made as the host's root, which may write DIR (checkJobDirs: root's alone)
		if err := os.Mkdir(m.source, 0o700); err != nil {
			return err
		}
		if err := os.Lchown(m.source, int(s.Own.UID), int(s.Own.GID)); err != nil {
			return err
		}
		return bindMount(m.source, m.target, 0)
	case tmpfs:
		// Inodes and dentries are kernel memory that size= does not count: one inode per 4 KiB of it.
		opts := fmt.Sprintf("mode=0700,size=%d,nr_inodes=%d", s.TmpSize, max(s.TmpSize/4096, 1024))
		return mountFS("tmpfs", m.target, opts, 0)
	case scratchDir: // mode 1777 set after the mkdir, past the umask
		if err := unix.Mkdir(m.source, 0o1777); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.source, err)
		}
		if err := unix.Chmod(m.source, 0o1777); err != nil {
			return fmt.Errorf("chmod %s: %w", m.source, err)
		}
		return bindMount(m.source, m.target, 0)
	case bindRO:
		return bindMount(m.source, m.target, unix.MS_RDONLY|unix.MS_NOEXEC)
	case procfs:
		return mountFS("proc", m.target, "", unix.MS_NOEXEC)
	}
	return fmt.Errorf("mount %s: unknown kind %d", m.target, m.kind)
}

// lockMounts, at a contained job's Start, stops the host's mounts from propagating into the job's
// namespace (MS_PRIVATE, mount_namespaces(7)), and makes every mount read-only (mount_setattr(2),
// AT_RECURSIVE), what propagated in while the sandbox waited as a spare included, then the writable
// ones of jobMounts writable again. A spare stays a slave while it waits, so that it pins no
// filesystem the host unmounts meanwhile; a running job pins what it saw at its Start, as a container
// does. Without this, a host mount made after the spare's setup would be writable in the job wherever
// its modes let "others" write. The job's filter refuses mount_setattr: this runs on a thread without
// it, checked (inherited is the number of filters the init's threads have without the job's), or not at
// all.
func lockMounts(mounts []jobMount, inherited int) error {
	runtime.LockOSThread() // the check and the mounts on one thread
	defer runtime.UnlockOSThread()
	if err := checkNotJobFiltered(inherited); err != nil {
		return err
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY, Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("make every mount read-only and private: %w", err)
	}
	for _, m := range mounts {
		if !m.writable {
			continue
		}
		err := unix.MountSetattr(unix.AT_FDCWD, m.target, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
		if err != nil {
			return fmt.Errorf("make %s writable: %w", m.target, err)
		}
	}
	return nil
}

// bindMount binds src on dst, nosuid, nodev and with flags: a bind mount takes flags only on a remount
// (mount(2)).
func bindMount(src, dst string, flags uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	flags |= unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", dst, err)
	}
	return nil
}

// mountFS mounts a new filesystem of fstype on target, nosuid, nodev and with flags.
func mountFS(fstype, target, data string, flags uintptr) error {
	if err := unix.Mount(fstype, target, fstype, unix.MS_NOSUID|unix.MS_NODEV|flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

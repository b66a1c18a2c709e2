package main

// initproto.go is the protocol between the server (spawn.go) and a job's init (init.go): its messages,
// each one line of fields in a fixed order, every field a Go-quoted string (strconv.Quote: any byte,
// newlines and NUL escaped, so a line holds a whole message and RUND_INIT no NUL), and after the Start
// the server's orders, a byte each (orderStop). Not encoding/json: its code, and the reflection caches
// it builds, are pages that every idle init kept (issue 24).

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
)

// initSetup is how the server starts an init (its RUND_INIT): what it prepares before the job's Start.
type initSetup struct {
	Hostname string // the job id
	// Own is a contained job's own host uid:gid (its userns root); nil: uncontained.
	Own       *jobUser
	TmpSize   uint64   // bytes of each private tmpfs, when contained
	Cgroup2   string   // the cgroup2 mount point, when contained
	JobCgroup string   // <job>/job, bound read-only on Cgroup2 when contained
	Dirs      []string // -job_dirs: DIR/<id> is made the job's own and bound on DIR
	NProc     uint64   // RLIMIT_NPROC of a contained job's command; 0: none
	HostNet   bool     // in the host's network namespace (grants.go): no lo to bring up
}

// initConfig is what the server tells the init at the Start: the command to run.
type initConfig struct {
	Argv []string // argv[0] is the command as requested
	Env  []string
	Dir  string
}

// After the Start the server gives the init orders on the same pipe (init.go obey, spawn.go order):
// each one byte, a signal number to send the command, or orderStop. One byte, so that reading one
// allocates nothing: the init never collects (GOGC=off), and a client may send as many Signals as it
// likes.
const orderStop byte = 0xff // SIGTERM to every process of the job; a second one: SIGKILL to them

// jobUser is a contained job's own host uid and gid (pool.go uidRange).
type jobUser struct {
	UID uint32
	GID uint32
}

// startReport is the init's first message: the command's pid, or why it did not start.
type startReport struct {
	Pid   int // > 0 once the command runs
	Stage stage
	Errno int
	Msg   string // for the client: no host path but the ones it named
}

// stage is the step of a start that failed; the server decides from it whose fault the failure is.
type stage string

const (
	stageSetup stage = "setup" // the init's own namespaces, mounts, filter or credentials: the server's fault
	stageDir   stage = "dir"   // the requested working directory
	stagePath  stage = "path"  // finding the command
	stageExec  stage = "exec"  // the exec itself
)

// exitReport is the init's second and last message: how the command ended. The server reads a
// missing one as SIGKILL (spawn.go wait).
type exitReport struct {
	Exited bool
	Code   int // exit status, when Exited
	Signal int // the signal that ended it, when not Exited
}

// encode is the setup's line (without its newline). Own is two fields, empty when nil; Dirs are last.
func (s initSetup) encode() string {
	uid, gid := "", ""
	if s.Own != nil {
		uid, gid = strconv.FormatUint(uint64(s.Own.UID), 10), strconv.FormatUint(uint64(s.Own.GID), 10)
	}
	return quoteFields(append([]string{s.Hostname, uid, gid, strconv.FormatUint(s.TmpSize, 10), s.Cgroup2,
		s.JobCgroup, strconv.FormatUint(s.NProc, 10), strconv.FormatBool(s.HostNet)}, s.Dirs...))
}

func (s *initSetup) decode(line string) error {
	f := &fields{line: line}
	s.Hostname = f.str()
	uid, gid := f.str(), f.str()
	if uid != "" || gid != "" {
		s.Own = &jobUser{UID: uint32(f.uint(uid, 32)), GID: uint32(f.uint(gid, 32))}
	}
	s.TmpSize = f.uint(f.str(), 64)
	s.Cgroup2 = f.str()
	s.JobCgroup = f.str()
	s.NProc = f.uint(f.str(), 64)
	s.HostNet = f.bool(f.str())
	s.Dirs = f.rest()
	return f.err
}

// encode is the config's line: the directory, the number of arguments, the arguments, the environment.
func (c initConfig) encode() string {
	return quoteFields(append(append([]string{c.Dir, strconv.Itoa(len(c.Argv))}, c.Argv...), c.Env...))
}

func (c *initConfig) decode(line string) error {
	f := &fields{line: line}
	c.Dir = f.str()
	argc := f.int(f.str())
	rest := f.rest()
	if f.err != nil {
		return f.err
	}
	if argc < 1 || argc > len(rest) {
		return errors.New("config message: argument count out of range")
	}
	c.Argv, c.Env = rest[:argc], rest[argc:]
	return nil
}

func (r startReport) encode() string {
	return quoteFields([]string{strconv.Itoa(r.Pid), string(r.Stage), strconv.Itoa(r.Errno), r.Msg})
}

func (r *startReport) decode(line string) error {
	f := &fields{line: line}
	r.Pid = f.int(f.str())
	r.Stage = stage(f.str())
	r.Errno = f.int(f.str())
	r.Msg = f.str()
	return f.err
}

func (r exitReport) encode() string {
	return quoteFields([]string{strconv.FormatBool(r.Exited), strconv.Itoa(r.Code), strconv.Itoa(r.Signal)})
}

func (r *exitReport) decode(line string) error {
	f := &fields{line: line}
	r.Exited = f.bool(f.str())
	r.Code = f.int(f.str())
	r.Signal = f.int(f.str())
	return f.err
}

// writeMessage writes one message, a line.
func writeMessage(w io.Writer, line string) error {
	_, err := io.WriteString(w, line+"\n")
	return err
}

// readDecoded reads one message and decodes it with decode (a message type's decode method).
func readDecoded(r *bufio.Reader, decode func(string) error) error {
	line, err := readMessage(r)
	if err != nil {
		return err
	}
	return decode(line)
}

// readMessage reads one message's line; io.EOF or io.ErrUnexpectedEOF if the pipe ends before it does.
func readMessage(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err == io.EOF && line != "" {
		err = io.ErrUnexpectedEOF
	}
	return strings.TrimSuffix(line, "\n"), err
}

func quoteFields(fields []string) string {
	var b []byte
	for i, s := range fields {
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendQuote(b, s)
	}
	return string(b)
}

// fields is a message's fields, taken in order; err is the first that was missing, malformed or did
// not parse, or the line's own fault.
type fields struct {
	line string // what is left of it
	err  error
}

func (f *fields) fail(err error) {
	if f.err == nil && err != nil {
		f.err = err
	}
}

// str takes the next field; "" once there is none or one is malformed (and f.err says so).
func (f *fields) str() string {
	q, err := strconv.QuotedPrefix(f.line)
	if err != nil {
		f.fail(errors.New("message field missing or malformed"))
		return ""
	}
	f.line = strings.TrimPrefix(f.line[len(q):], " ")
	s, _ := strconv.Unquote(q) // cannot fail: QuotedPrefix found it whole
	return s
}

// rest takes every field left.
func (f *fields) rest() []string {
	var all []string
	for f.line != "" && f.err == nil {
		all = append(all, f.str())
	}
	return all
}

func (f *fields) uint(s string, bits int) uint64 {
	n, err := strconv.ParseUint(s, 10, bits)
	f.fail(err)
	return n
}

func (f *fields) int(s string) int {
	n, err := strconv.Atoi(s)
	f.fail(err)
	return n
}

func (f *fields) bool(s string) bool {
	b, err := strconv.ParseBool(s)
	f.fail(err)
	return b
}

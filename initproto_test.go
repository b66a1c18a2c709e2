package main

import (
	"bufio"
	"reflect"
	"strings"
	"testing"
)

// TestInitMessagesRoundTrip: every message the server and a job's init exchange (initproto.go) decodes
// to what was encoded, whatever bytes its strings hold, each on one line; and a malformed line is an
// error, not a message.
func TestInitMessagesRoundTrip(t *testing.T) {
	odd := []string{"", " ", "a b", "\n", "x\r\ny", "\x00", "\"", "\\", "\xff\xfe", "é", `" "`}
	setups := []initSetup{
		{Hostname: "01M94F17NVEH83CNTAP54XHD18", Own: &jobUser{UID: 1879048192, GID: 4294967295}, TmpSize: 1 << 40,
			Cgroup2: "/sys/fs/cgroup", JobCgroup: "/sys/fs/cgroup/rund/x/job", Dirs: odd, NProc: 7, HostNet: true},
		{Hostname: "x"},
	}
	for _, s := range setups {
		line := s.encode()
		var got initSetup
		if err := got.decode(line); err != nil || !reflect.DeepEqual(got, s) || strings.ContainsAny(line, "\n\x00") {
			t.Errorf("setup %+v: line %q decoded to %+v, %v", s, line, got, err)
		}
	}
	for _, c := range []initConfig{{Argv: odd, Env: odd, Dir: "/\n"}, {Argv: []string{"true"}, Env: []string{}, Dir: "/"}} {
		var got initConfig
		if err := got.decode(c.encode()); err != nil || !reflect.DeepEqual(got, c) {
			t.Errorf("config %q: decoded to %q, %v", c, got, err)
		}
	}
	for _, r := range []startReport{{Pid: 2}, {Stage: stagePath, Errno: 2, Msg: "command \"a\nb\" not found"}} {
		var got startReport
		if err := got.decode(r.encode()); err != nil || got != r {
			t.Errorf("start report %+v: decoded to %+v, %v", r, got, err)
		}
	}
	for _, r := range []exitReport{{Exited: true, Code: 255}, {Signal: 9}} {
		var got exitReport
		if err := got.decode(r.encode()); err != nil || got != r {
			t.Errorf("exit report %+v: decoded to %+v, %v", r, got, err)
		}
	}
	bad := map[string]func(string) error{
		`"1" "" "" "x"`:        new(initSetup).decode, // TmpSize not a number
		`"h" "1"`:              new(initSetup).decode, // fields missing
		`"/" "2" "a"`:          new(initConfig).decode,
		`"/" "0"`:              new(initConfig).decode, // no argv[0]
		`"/" "1" "a" unquoted`: new(initConfig).decode,
		`"/" "-1" "a"`:         new(initConfig).decode,
		`"2" "" "0"`:           new(startReport).decode,
		`"yes" "0" "0"`:        new(exitReport).decode,
	}
	for line, decode := range bad {
		if err := decode(line); err == nil {
			t.Errorf("malformed %q: decoded without an error", line)
		}
	}
	r := bufio.NewReader(strings.NewReader(`"a"` + "\n" + `"b`))
	if line, err := readMessage(r); line != `"a"` || err != nil {
		t.Errorf("first message: %q, %v", line, err)
	}
	if line, err := readMessage(r); err == nil {
		t.Errorf("a message cut short: %q read without an error", line)
	}
}

// FuzzInitMessages: any line either fails to decode or decodes to messages whose own lines decode to
// the same again; no line panics a decoder. The lines come from the server or the init, not a job, but
// the init's side runs beside one.
func FuzzInitMessages(f *testing.F) {
	f.Add(initSetup{Hostname: "h", Own: &jobUser{UID: 1, GID: 2}, Dirs: []string{"/d"}}.encode())
	f.Add(initConfig{Argv: []string{"sh", "-c", "x"}, Env: []string{"A=1"}, Dir: "/"}.encode())
	f.Add(startReport{Stage: stageExec, Errno: 13, Msg: "m"}.encode())
	f.Add(exitReport{Exited: true, Code: 3}.encode())
	f.Add(`"a" "b`)
	f.Fuzz(func(t *testing.T, line string) {
		var s, s2 initSetup
		if s.decode(line) == nil && (s2.decode(s.encode()) != nil || !reflect.DeepEqual(s, s2)) {
			t.Fatalf("setup from %q: %+v re-decoded to %+v", line, s, s2)
		}
		var c, c2 initConfig
		if c.decode(line) == nil && (c2.decode(c.encode()) != nil || !reflect.DeepEqual(c, c2) || len(c.Argv) < 1) {
			t.Fatalf("config from %q: %+v re-decoded to %+v", line, c, c2)
		}
		var r, r2 startReport
		if r.decode(line) == nil && (r2.decode(r.encode()) != nil || r != r2) {
			t.Fatalf("start report from %q: %+v re-decoded to %+v", line, r, r2)
		}
		var e, e2 exitReport
		if e.decode(line) == nil && (e2.decode(e.encode()) != nil || e != e2) {
			t.Fatalf("exit report from %q: %+v re-decoded to %+v", line, e, e2)
		}
	})
}

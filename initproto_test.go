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

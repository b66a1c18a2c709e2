package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// runCLI runs "rund client" as client a of ts and returns its exit code, stdout and stderr.
func (ts *testServer) runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	conn := []string{"-addr", ts.addr, "-ca", ts.pki.file("ca.crt"), "-cert", ts.pki.file("a.crt"), "-key", ts.pki.file("a.key")}
	full := append([]string{args[0]}, append(conn, args[1:]...)...)
	var out, errb bytes.Buffer
	code := runClient(full, clientIO{&out, &errb})
	return code, out.String(), errb.String()
}

func TestClientCommands(t *testing.T) {
	ts := startServer(t)

	code, out, errs := ts.runCLI(t, "start", "--", "sh", "-c", "echo to-out; echo to-err >&2")
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 26 || out != id+"\n" {
		t.Fatalf("start: exit %d, stdout %q, stderr %q; want the id alone", code, out, errs)
	}
	code, out, errs = ts.runCLI(t, "log", id)
	if code != 0 || out != "to-out\n" || errs != "to-err\n" {
		t.Errorf("log: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = ts.runCLI(t, "log", "-offset", "3", "-follow=false", id)
	if code != 0 || !strings.HasSuffix("to-out\n", out) || len(out) == 0 {
		t.Errorf("log -offset 3: exit %d, stdout %q", code, out)
	}
	for _, cmd := range []string{"status", "stop"} {
		code, out, errs = ts.runCLI(t, cmd, id)
		var st map[string]any
		if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || st["ulid"] != id || st["state"] != "STATE_EXITED" {
			t.Errorf("%s: exit %d, %v, stdout %q, stderr %q", cmd, code, err, out, errs)
		}
	}
	code, out, _ = ts.runCLI(t, "list", "-json")
	var list struct{ Jobs []struct{ Ulid string } }
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list.Jobs) != 1 || list.Jobs[0].Ulid != id {
		t.Errorf("list: exit %d, %v, stdout %q", code, err, out)
	}
}

func TestClientRunExitCodes(t *testing.T) {
	ts := startServer(t)
	for _, tc := range []struct {
		script string
		code   int
		out    string
	}{
		{"echo hello; exit 3", 3, "hello\n"},
		{"echo bye; kill -TERM $$", 128 + 15, "bye\n"},
		{"true", 0, ""},
	} {
		code, out, errs := ts.runCLI(t, "run", "--", "sh", "-c", tc.script)
		if code != tc.code || out != tc.out || errs != "" {
			t.Errorf("run %q: exit %d stdout %q stderr %q, want %d %q", tc.script, code, out, errs, tc.code, tc.out)
		}
	}
}

func TestClientErrors(t *testing.T) {
	ts := startServer(t)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 1, "NotFound"},
		{[]string{"status", "not-an-id"}, 1, "InvalidArgument"},
		{[]string{"start", "-max_pids", "0", "--", "true"}, 1, "max_pids is 0"},
		{[]string{"start", "--", "rund-no-such-command"}, 1, "NotFound"},
		{[]string{"start"}, 2, "no command given"},
		{[]string{"status"}, 2, "want 1 argument"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"list", "x"}, 2, "unexpected argument"}, // it used to panic: the count came from the help text
	} {
		code, out, errs := ts.runCLI(t, tc.args...)
		firstLine, _, _ := strings.Cut(errs, "\n")
		if code != tc.code || out != "" || !strings.Contains(firstLine, tc.msg) || !strings.HasPrefix(errs, "rund client ") {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit %d and %q on stderr's first line", tc.args, code, out, errs, tc.code, tc.msg)
		}
	}
}

// TestClientRunOwnFailures: run's exit codes besides the job's own, as docker run's (issue 25): 125 for
// rund's own failure, 126 for a command that cannot be run, 127 for one not found; and errors that name
// their cause (the working directory, the job's own /tmp).
func TestClientRunOwnFailures(t *testing.T) {
	ts := startServer(t)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "--", "rund-no-such-command"}, 127, "NotFound"},
		{[]string{"run", "--", "/etc/hostname"}, 126, `"/etc/hostname"`},
		{[]string{"run", "--", "/tmp/rund-no-such-command"}, 127, "in the job's own /tmp, which starts empty"},
		{[]string{"run", "-dir", "/root", "--", "/bin/true"}, 125, `working directory "/root": permission denied`},
		{[]string{"run", "-max_pids", "0", "--", "true"}, 125, "max_pids is 0"},
		{[]string{"run", "-no-such-flag", "--", "true"}, 125, "no-such-flag"},
		{[]string{"run"}, 125, "no command given"},
		{[]string{"run", "-root", "--", "true"}, 125, "PermissionDenied: root needs a grant, and this server has no -grants file"},
		{[]string{"run", "-network", "host", "--", "true"}, 125, `network "host" needs a grant`},
		{[]string{"run", "-addr", "127.0.0.1:1", "--", "true"}, 125, "Unavailable"},
	} {
		code, out, errs := ts.runCLI(t, tc.args...)
		if code != tc.code || out != "" || !strings.Contains(errs, tc.msg) {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit %d and %q", tc.args, code, out, errs, tc.code, tc.msg)
		}
	}
}

// TestClientNamesRefusedCertificate: a client whose certificate the server refuses is told so, with the
// server's TLS alert, not grpc-go's "broken pipe" or "connection closed".
func TestClientNamesRefusedCertificate(t *testing.T) {
	ts := startServer(t)
	otherCA := mustIssue(t, certSpec{name: "other CA", isCA: true}, nil)
	stranger := mustIssue(t, certSpec{name: "mallory", dns: []string{"mallory"}, eku: ekuClient}, otherCA)
	if err := stranger.write(ts.pki.dir, "mallory"); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := runClient([]string{"list", "-addr", ts.addr, "-ca", ts.pki.file("ca.crt"), "-cert", ts.pki.file("mallory.crt"),
		"-key", ts.pki.file("mallory.key")}, clientIO{&out, &errb})
	// Go's client sends no certificate that the server's CA list does not name: the alert is then
	// "certificate required"; one sent anyway gets "unknown certificate authority".
	if code != 1 || !strings.Contains(errb.String(), "refused this client's certificate (tls: ") {
		t.Errorf("exit %d stderr %q: want 1 and the server's alert", code, errb.String())
	}
}

package main

// cli_test.go runs the command line as a user does: the scripts in testdata/cli/*.txt, in the way of
// age's testscript tests (with no dependency), and the examples in README.md, against a test server.
//
// A script is one command or assertion a line; # starts a comment. $WORK (the script's own directory,
// also its starting directory), $ADDR, $CERTS (a directory with ca.crt, client.crt, client.key) and any
// variable set by env or save are expanded; arguments split at blanks, and '...' quotes.
//
//	rund ARGS...     run the rund binary; it must exit 0
//	! rund ARGS...   it must exit non-zero
//	code N           the last command exited N
//	stdout RE        the last command's stdout matches RE (multi-line mode); ! stdout RE: it does not
//	stderr RE        the same for stderr
//	env K=V          set K for the commands after it (an empty V unsets it)
//	cd DIR           run the commands after it in DIR
//	save NAME        set $NAME to the last command's stdout, trimmed
//	mkdir DIR        make DIR, mode 0755
//	wait ID          wait until the job $ID has ended (through the server's own Status)

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// cliEnv is one script's state.
type cliEnv struct {
	t              *testing.T
	ts             *testServer
	dir            string
	vars           map[string]string
	env            []string // for the commands
	stdout, stderr string
	code           int
}

func TestCLIScripts(t *testing.T) {
	rund := cliBinary(t)
	ts := startServer(t)
	scripts, _ := filepath.Glob("testdata/cli/*.txt")
	if len(scripts) == 0 {
		t.Fatal("no scripts in testdata/cli")
	}
	for _, script := range scripts {
		t.Run(strings.TrimSuffix(filepath.Base(script), ".txt"), func(t *testing.T) {
			e := newCLIEnv(t, ts, rund)
			data, err := os.ReadFile(script)
			if err != nil {
				t.Fatal(err)
			}
			for n, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					e.step(fmt.Sprintf("%s:%d", script, n+1), line)
				}
			}
		})
	}
}

// cliBinary is the build of rund that runTests made, next to which nothing else is needed.
func cliBinary(t *testing.T) string {
	if rundExe == "" {
		t.Skip("no build of rund to run (runTests could not make it)")
	}
	return rundExe
}

// newCLIEnv makes a script's directory, with client a's credentials in $CERTS (and b's as client2),
// and an environment
// with none of the RUND_ variables and a config directory of its own.
func newCLIEnv(t *testing.T, ts *testServer, rund string) *cliEnv {
	e := &cliEnv{t: t, ts: ts, dir: jobTempDir(t)}
	certs := filepath.Join(e.dir, "certs")
	os.Mkdir(certs, 0o700)
	for from, to := range map[string]string{"ca.crt": "ca.crt", "a.crt": "client.crt", "a.key": "client.key",
		"b.crt": "client2.crt", "b.key": "client2.key"} {
		data, err := os.ReadFile(ts.pki.file(from))
		if err == nil {
			err = os.WriteFile(filepath.Join(certs, to), data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	e.vars = map[string]string{"WORK": e.dir, "ADDR": ts.addr, "CERTS": certs, "RUND": rund}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUND_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			e.env = append(e.env, kv)
		}
	}
	e.env = append(e.env, "XDG_CONFIG_HOME="+filepath.Join(e.dir, "config"))
	return e
}

// step runs one line of a script.
func (e *cliEnv) step(where, line string) {
	e.t.Helper()
	neg := strings.HasPrefix(line, "! ")
	words := splitWords(os.Expand(strings.TrimPrefix(line, "! "), func(k string) string { return e.vars[k] }))
	verb, args := words[0], words[1:]
	switch verb {
	case "rund":
		e.run(args)
		if (e.code != 0) != neg {
			e.t.Fatalf("%s: %s: exit %d\nstdout: %s\nstderr: %s", where, line, e.code, e.stdout, e.stderr)
		}
	case "code":
		if want, _ := strconv.Atoi(args[0]); e.code != want {
			e.t.Fatalf("%s: exit %d, want %d\nstderr: %s", where, e.code, want, e.stderr)
		}
	case "stdout", "stderr":
		out := map[string]string{"stdout": e.stdout, "stderr": e.stderr}[verb]
		if regexp.MustCompile("(?m)"+args[0]).MatchString(out) == neg {
			e.t.Fatalf("%s: %s: %s was:\n%s", where, line, verb, out)
		}
	case "env":
		k, v, _ := strings.Cut(args[0], "=")
		e.env = append(e.env, k+"="+v)
	case "cd":
		e.dir = args[0]
	case "save":
		e.vars[args[0]] = strings.TrimSpace(e.stdout)
	case "mkdir":
		if err := os.MkdirAll(args[0], 0o755); err != nil {
			e.t.Fatal(err)
		}
	case "wait":
		waitDone(e.t, e.ts.dialAs(e.t, "a"), args[0])
	default:
		e.t.Fatalf("%s: unknown verb %q", where, verb)
	}
}

func (e *cliEnv) run(args []string) {
	cmd := exec.Command(e.vars["RUND"], args...)
	cmd.Dir, cmd.Env = e.dir, e.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	e.stdout, e.stderr, e.code = out.String(), errb.String(), cmd.ProcessState.ExitCode()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		e.t.Fatal(err)
	}
}

// splitWords splits s at blanks, keeping what is between single quotes as one word.
func splitWords(s string) []string {
	var words []string
	var w strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words, inWord = append(words, w.String()), false
				w.Reset()
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// TestREADMEExamples runs every ```console block of README.md as a user would type it: each "$ "
// line through sh in one shell session, in a directory with ./rund and client credentials in ./tls,
// RUND_ADDR pointing at a test server. What a command prints (stdout and stderr) must be the lines
// under it, where "..." in a line matches any text and a line of "..." alone any lines, and a run of
// blanks any run of blanks (a table's columns are as wide as their widest cell).
func TestREADMEExamples(t *testing.T) {
	rund := cliBinary(t)
	ts := startServer(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := consoleBlocks(string(readme))
	if len(blocks) < 2 {
		t.Fatalf("README has %d console blocks; the examples are gone?", len(blocks))
	}
	for i, block := range blocks {
		e := newCLIEnv(t, ts, rund)
		os.Rename(filepath.Join(e.dir, "certs"), filepath.Join(e.dir, "tls"))
		if err := os.Symlink(rund, filepath.Join(e.dir, "rund")); err != nil {
			t.Fatal(err)
		}
		e.env = append(e.env, "RUND_ADDR="+ts.addr)
		var script strings.Builder
		for _, c := range block {
			fmt.Fprintf(&script, "%s\necho '@@end'\n", c.cmd)
		}
		sh := exec.Command("sh", "-c", script.String())
		sh.Dir, sh.Env = e.dir, e.env
		out, _ := sh.CombinedOutput()
		got := strings.Split(string(out), "@@end\n")
		for j, c := range block {
			if j >= len(got) || !ellipsisMatch(c.want, strings.Split(strings.TrimSuffix(got[j], "\n"), "\n")) {
				t.Errorf("README console block %d, $ %s\nwant:\n%s\ngot:\n%s", i+1, c.cmd, strings.Join(c.want, "\n"), append(got, "")[j])
			}
		}
	}
}

type consoleCmd struct {
	cmd  string
	want []string
}

// consoleBlocks reads the ```console blocks of a markdown text: commands ("$ " lines) and what each
// prints.
func consoleBlocks(md string) [][]consoleCmd {
	var blocks [][]consoleCmd
	in := false
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```console":
			in, blocks = true, append(blocks, nil)
		case strings.HasPrefix(line, "```"):
			in = false
		case in && strings.HasPrefix(line, "$ "):
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], consoleCmd{cmd: line[2:]})
		case in:
			b := blocks[len(blocks)-1]
			b[len(b)-1].want = append(b[len(b)-1].want, line)
		}
	}
	return blocks
}

// ellipsisMatch says whether got matches want line by line, "..." in a line matching any text and a
// line of "..." any number of lines.
func ellipsisMatch(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0 || len(got) == 1 && got[0] == ""
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if ellipsisMatch(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	parts := strings.Split(strings.Join(strings.Fields(want[0]), " "), "...")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return len(got) > 0 && regexp.MustCompile("^"+strings.Join(parts, ".*")+"$").MatchString(strings.Join(strings.Fields(got[0]), " ")) && ellipsisMatch(want[1:], got[1:])
}

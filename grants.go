//go:build !rundinit

package main

// grants.go owns what each client identity's jobs may have beyond the default containment, as the
// operator's -grants file says: the host's network, running as host root, which -job_dirs they write,
// and ceilings and defaults for their limits and live jobs. A Start asks for the host's network and for
// root by name (JobStartRequest network, root); it gets them only if its identity's grant has them, and
// PermissionDenied naming the grant if not. Without a file every identity has the default: no grant,
// all of -job_dirs, the server's bounds; with -unsafe_uncontained_jobs, everything (both flags together
// are refused: main.go).
//
// The file is JSON: an object whose keys are names as authz.go reads a certificate ("dns:host.example",
// "ip:192.0.2.7", "email:ops@example.com", "uri:spiffe://..."), or "*" for a certificate no other key
// names, and whose values are grants (grant's fields). A certificate whose names match two keys is
// refused: rund does not choose between grants. SIGHUP reloads it; a file that does not parse or check
// keeps the old one in use. A running job keeps what it was given.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
)

// grant is what one identity's jobs may have; its zero value is the default containment.
type grant struct {
	Network string      `json:"network"`  // "host": a Start may ask for the host's network namespace
	Root    bool        `json:"root"`     // a Start may ask to run uncontained, as host root
	JobDirs *[]string   `json:"job_dirs"` // the -job_dirs its jobs write; absent: all of them
	MaxJobs int         `json:"max_jobs"` // its live jobs at most; 0: -max_jobs_per_client
	Max     grantLimits `json:"max"`      // ceilings on the limits a Start asks for; 0: none
	Default grantLimits `json:"default"`  // the limits of a Start that sets none; 0: the ceiling, or none
}

// grantLimits are limits, named as a Start names them.
type grantLimits struct {
	CPU    uint64 `json:"max_cpu_bandwidth"`
	Memory uint64 `json:"max_memory_usage"`
	Pids   uint64 `json:"max_pids"`
	RBPS   uint64 `json:"max_rbps"`
	WBPS   uint64 `json:"max_wbps"`
	RIOPS  uint64 `json:"max_riops"`
	WIOPS  uint64 `json:"max_wiops"`
}

func (g grantLimits) limits() limits {
	return limits{cpuQuota: g.CPU, memory: g.Memory, pids: g.Pids, rbps: g.RBPS, wbps: g.WBPS, riops: g.RIOPS,
		wiops: g.WIOPS}
}

// given is what a job got beyond the default containment: what its Start asked for, allowed.
type given struct {
	hostNet bool
	root    bool
	dirs    []string // the -job_dirs it writes its own DIR/<id> in; nil: all of them
}

// grants is the table in force. Its methods are safe to call from any goroutine.
type grants struct {
	path        string       // -grants; "": no file
	uncontained bool         // -unsafe_uncontained_jobs: every identity has every grant
	dirs        []string     // -job_dirs
	cg          *cgroupFS    // its controllers, which a grant's limits need
	table       atomic.Value // map[string]*grant, keyed by canonical name or "*"; replaced whole by load
}

// load reads the file and puts it in force; on error the table in force stays.
func (gs *grants) load() error {
	if gs.path == "" {
		return nil
	}
	data, err := os.ReadFile(gs.path)
	if err != nil {
		return err
	}
	t, err := parseGrants(data, gs.dirs, gs.cg.missing)
	if err != nil {
		return fmt.Errorf("%s: %w", gs.path, err)
	}
	gs.table.Store(t)
	return nil
}

// parseGrants reads a grants file and checks every grant in it: job_dirs among dirs, defaults within
// the ceilings and valid as a Start's limits, and no limit whose controller is missing (which would
// refuse every Start of that identity as Unsupported).
func parseGrants(data []byte, dirs []string, missing func(limits) []string) (map[string]*grant, error) {
	var raw map[string]*grant
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	t := map[string]*grant{}
	for name, g := range raw {
		key, err := grantKey(name)
		if err != nil {
			return nil, err
		}
		if t[key] != nil {
			return nil, fmt.Errorf("%q and another key are the same name (%s)", name, key)
		}
		if g == nil {
			g = &grant{}
		}
		if err := checkGrant(g, dirs, missing); err != nil {
			return nil, fmt.Errorf("%q: %w", name, err)
		}
		t[key] = g
	}
	return t, nil
}

// grantKey is a file's key in the canonical form authz.go gives a certificate's names.
func grantKey(name string) (string, error) {
	if name == "*" {
		return name, nil
	}
	kind, v, _ := strings.Cut(name, ":")
	if !slices.Contains([]string{"dns", "ip", "email", "uri"}, kind) || v == "" {
		return "", fmt.Errorf("key %q: want \"*\" or dns:, ip:, email: or uri: and a name", name)
	}
	return kind + ":" + canonicalSAN(kind, v), nil
}

func checkGrant(g *grant, dirs []string, missing func(limits) []string) error {
	if g.Network != "" && g.Network != "host" {
		return fmt.Errorf("network %q: want \"host\", or no network key", g.Network)
	}
	if g.MaxJobs < 0 {
		return fmt.Errorf("max_jobs %d is negative", g.MaxJobs)
	}
	if g.JobDirs != nil {
		for _, d := range *g.JobDirs {
			if !slices.Contains(dirs, d) {
				return fmt.Errorf("job_dirs %q is not one of -job_dirs %q", d, dirs)
			}
		}
	}
	for _, l := range []grantLimits{g.Max, g.Default} {
		if cs := missing(l.limits()); len(cs) > 0 {
			return fmt.Errorf("this host cannot enforce its limits: cgroup controller %s not available",
				strings.Join(cs, " and controller "))
		}
	}
	if err := validateLimits(g.Default.limits()); err != nil {
		return fmt.Errorf("default: %w", err)
	}
	def := g.Default.limits()
	for _, f := range boundedLimits(&def, g) {
		if f.max != 0 && *f.asked > f.max {
			return fmt.Errorf("default %s %d is over its max %d", f.name, *f.asked, f.max)
		}
	}
	return nil
}

// boundedLimit is one limit of a Start, with its ceiling and default in a grant.
type boundedLimit struct {
	name     string
	asked    *uint64
	max, def uint64
}

func boundedLimits(lim *limits, g *grant) []boundedLimit {
	return []boundedLimit{
		{"max_cpu_bandwidth", &lim.cpuQuota, g.Max.CPU, g.Default.CPU},
		{"max_memory_usage", &lim.memory, g.Max.Memory, g.Default.Memory},
		{"max_pids", &lim.pids, g.Max.Pids, g.Default.Pids},
		{"max_rbps", &lim.rbps, g.Max.RBPS, g.Default.RBPS},
		{"max_wbps", &lim.wbps, g.Max.WBPS, g.Default.WBPS},
		{"max_riops", &lim.riops, g.Max.RIOPS, g.Default.RIOPS},
		{"max_wiops", &lim.wiops, g.Max.WIOPS, g.Default.WIOPS},
	}
}

// of returns the grant of a certificate's names: the one key among them, or "*", or the default.
func (gs *grants) of(caller []string) (*grant, error) {
	t, _ := gs.table.Load().(map[string]*grant)
	var keys []string
	for _, name := range caller {
		if t[name] != nil {
			keys = append(keys, name)
		}
	}
	switch {
	case len(keys) > 1:
		return nil, clientErr(errDenied, "your certificate's names %s each have a grant in the server's grants "+
			"file; it must name one of them only", strings.Join(keys, " and "))
	case len(keys) == 1:
		return t[keys[0]], nil
	case t["*"] != nil:
		return t["*"], nil
	}
	return &grant{}, nil
}

// allow decides a Start: what it asks for beyond the default (network, root) against the caller's
// grant, and its limits against the grant's ceilings, filling in the grant's defaults. It sets
// spec.given, spec.maxJobs and spec.lim, or says which grant the caller lacks.
func (gs *grants) allow(caller []string, spec *jobSpec) error {
	if spec.network != "" && spec.network != "host" {
		return clientErr(errInvalid, "network %q: want \"host\", or none for the job's own", spec.network)
	}
	hostNet := spec.network == "host"
	if gs.uncontained {
		spec.given = given{hostNet: hostNet, root: true}
		return nil
	}
	g, err := gs.of(caller)
	if err != nil {
		return err
	}
	lacks := func(what string) error {
		if gs.path == "" {
			return clientErr(errDenied, "%s needs a grant, and this server has no -grants file", what)
		}
		return clientErr(errDenied, "%s needs a grant that your identity does not have in the server's -grants file", what)
	}
	if hostNet && g.Network != "host" {
		return lacks(`network "host"`)
	}
	if spec.root && !g.Root {
		return lacks("root")
	}
	for _, f := range boundedLimits(&spec.lim, g) {
		*f.asked = cmp.Or(*f.asked, f.def, f.max)
		if f.max != 0 && *f.asked > f.max {
			return clientErr(errDenied, "%s %d is over %d, the most your identity's grant allows", f.name,
				*f.asked, f.max)
		}
	}
	spec.given = given{hostNet: hostNet, root: spec.root}
	if g.JobDirs != nil && !spec.root && !slices.Equal(*g.JobDirs, gs.dirs) {
		spec.given.dirs = append([]string{}, *g.JobDirs...) // not nil: none at all is not "all"
	}
	spec.maxJobs = g.MaxJobs
	return nil
}

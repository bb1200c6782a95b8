package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pptpgw/internal/metrics"
	"pptpgw/rules"
)

// The reloader: a valid file goes to every applier in order and becomes
// the running configuration; an invalid one or a fixed-key change reaches
// no applier; a failing applier stops the reload and the ones before it get
// the running configuration back; the flags keep overriding the file; each
// outcome is counted.
func TestReloader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("wan: w0\nlan: [l0]\n")
	src := configSource{path: path, flags: func(c *rules.Config) { c.LAN = []string{"flag0"} }}
	cur, err := src.load()
	if err != nil {
		t.Fatal(err)
	}
	r := newReloader(cur, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := r.reload("test"); err == nil || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("a reload before the appliers are in place: %v, want refused", err)
	}
	var calls []string
	failSecond := false
	r.add("a", func(c *rules.Config) error { calls = append(calls, "a:"+c.Timeouts.Hold.String()); return nil })
	r.add("b", func(c *rules.Config) error {
		calls = append(calls, "b:"+c.Timeouts.Hold.String())
		if failSecond && c.Timeouts.Hold.String() == "1s" {
			return errors.New("kernel said no")
		}
		return nil
	})
	counts := func() (ok, failed uint64) {
		m := metrics.Collect(r).Map()
		return m["reloads_ok"], m["reloads_failed"]
	}

	write("wan: w0\nlan: [l0]\ntimeouts:\n  hold: 1s\n")
	if err := r.reload("test"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(calls, ","); got != "a:1s,b:1s" || r.current().Timeouts.Hold.String() != "1s" ||
		r.current().LAN[0] != "flag0" {
		t.Fatalf("valid reload: appliers %s, running hold %v lan %v", got, r.current().Timeouts.Hold, r.current().LAN)
	}

	for _, bad := range []string{
		"wan: w0\nlan: [l0]\ntimeouts:\n  hold: 1m\n", // invalid value
		"wan: w0\nlan: [l0]\nbogus: 1\n",              // unknown key
		"wan: w0\nlan: [l0]\ntable: t2\n",             // fixed key
	} {
		calls = nil
		write(bad)
		err := r.reload("test")
		if err == nil || len(calls) != 0 || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: err %v, appliers %v; want refused with the file named, before any applier", bad, err, calls)
		}
	}

	// b fails: a gets the running configuration (hold 1s) back.
	calls = nil
	failSecond = true
	write("wan: w0\nlan: [l0]\ntimeouts:\n  hold: 2s\n")
	r.appliers[1].apply = func(c *rules.Config) error {
		calls = append(calls, "b:"+c.Timeouts.Hold.String())
		return errors.New("kernel said no")
	}
	err = r.reload("test")
	if err == nil || !strings.Contains(err.Error(), "b: kernel said no") {
		t.Fatalf("failing applier: %v", err)
	}
	if got := strings.Join(calls, ","); got != "a:2s,b:2s,a:1s" || r.current().Timeouts.Hold.String() != "1s" {
		t.Fatalf("failing applier: appliers %s, running hold %v; want a:2s,b:2s,a:1s and 1s", got, r.current().Timeouts.Hold)
	}
	if ok, failed := counts(); ok != 1 || failed != 5 {
		t.Fatalf("reloads ok %d failed %d, want 1 and 5", ok, failed)
	}
	if err := metrics.Collect(r).Validate(); err != nil {
		t.Fatal(err)
	}
	// Stopping: no reload after close.
	r.close()
	calls = nil
	write("wan: w0\nlan: [l0]\n")
	if err := r.reload("test"); err == nil || len(calls) != 0 {
		t.Fatalf("reload after close: %v, appliers %v", err, calls)
	}
}

func TestReloadCLI(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reload", "--help"}, 0, "Usage: pptpgw reload [--admin-socket PATH]"},
		{[]string{"reload", "--admin-socket", filepath.Join(dir, "none.sock")}, 1, "no daemon answers at"},
		{[]string{"reload", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"run", "--help"}, 0, "--state-file"},
	} {
		out, code := pptpgw(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("pptpgw %v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

// keyLine finds the line of the serve config key a validation error names.
func TestKeyLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(path, []byte("pool: 10.8.0.10-20\nlog_level: loud\nlimits:\n  max_conns: 1\n  max_conns_per_source: -1\nsplit_routes: [x]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for msg, want := range map[string]int{
		"limits.max_conns_per_source -1: want 0 or more": 5,
		"limits.max_conns 1: whatever":                   4,
		`log level "loud": want debug`:                   2,
		`split route "x": want an IPv4 prefix`:           6,
		`pool "10.8.0.10-20": bad`:                       1,
		"no pool: set --pool":                            0,
	} {
		if got := keyLine(path, msg); got != want {
			t.Errorf("%q: line %d, want %d", msg, got, want)
		}
	}
}

package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A reload of `pptpgw serve` refuses a change to metrics or admin_group:
// the /metrics listener and the admin socket's group are set up at start
// and nothing applies them again, so before, such a reload was reported
// "configuration reloaded" while the old address and group stayed.
func TestServeReloadRefusesObsChange(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "chap-secrets")
	if err := os.WriteFile(sec, []byte("alice * pass *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "serve.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte("pool: 10.8.0.10-10.8.0.20\nsecrets: "+sec+"\n"+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("metrics: 127.0.0.1:9300\n")
	src := serveSource{path: cfgPath}
	sc, _, err := src.load()
	if err != nil {
		t.Fatal(err)
	}
	r := &serveReloader{src: src, log: slog.New(slog.NewTextHandler(io.Discard, nil)), level: new(slog.LevelVar),
		counters: newReloadCounters(), admin: sc.AdminSocket, tun: sc.TUN, metrics: sc.Metrics, adminGroup: sc.AdminGroup}
	for _, tc := range []struct{ file, key string }{
		{"metrics: 127.0.0.1:9301\n", "metrics"},
		{"", "metrics"},
		{"metrics: 127.0.0.1:9300\nadmin_group: root\n", "admin_group"},
	} {
		write(tc.file)
		err := r.reload("test") // r.srv is nil: a reload that got past the checks would panic
		if err == nil || !strings.Contains(err.Error(), tc.key+": cannot change while running") {
			t.Errorf("%q: reload %v, want %s refused", tc.file, err, tc.key)
		}
	}
}

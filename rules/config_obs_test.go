package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The operations keys (issue 8): documented, parsed, and their errors name
// file, line and key.
func TestObsKeys(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"`metrics`", "`admin_group`", "`127.0.0.1:9247`", "`0660`"} {
		if !strings.Contains(string(doc), k) {
			t.Errorf("CONFIG.md does not mention %s", k)
		}
	}
	good := filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(good, []byte("wan: eth0\nlan: [eth1]\nmetrics: 127.0.0.1:9247\nadmin_group: pptpgw\n"), 0o600)
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.Metrics != "127.0.0.1:9247" || c.AdminGroup != "pptpgw" {
		t.Errorf("good config: %v, metrics %q, admin_group %q", err, c.Metrics, c.AdminGroup)
	}
	if d := Default(); d.Metrics != "" || d.AdminGroup != "" {
		t.Errorf("defaults: metrics %q, admin_group %q; want both unset", d.Metrics, d.AdminGroup)
	}
	for _, tc := range []struct{ line, want string }{
		{"metrics: 127.0.0.1", "good.yaml:3: metrics: want HOST:PORT"},
		{"metrics: ':x'", `good.yaml:3: metrics: port "x" is not a number`},
		{"metrics: 'bad host:9247'", `good.yaml:3: metrics: host "bad host"`},
		{"admin_group: 'wheel group'", `good.yaml:3: admin_group: "wheel group" is not a group name or number`},
	} {
		os.WriteFile(good, []byte("wan: eth0\nlan: [eth1]\n"+tc.line+"\n"), 0o600)
		c, err := Load(good)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.line, err, tc.want)
		}
	}
	for _, ok := range []string{"", ":9247", "[::1]:9247", "localhost:9247", "0.0.0.0:0"} {
		if m := ValidMetricsAddr(ok); m != "" {
			t.Errorf("%q refused: %s", ok, m)
		}
	}
	for _, ok := range []string{"", "pptpgw", "adm", "1001", "_ops-team"} {
		if m := ValidAdminGroup(ok); m != "" {
			t.Errorf("%q refused: %s", ok, m)
		}
	}
}

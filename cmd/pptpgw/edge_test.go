package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// `pptpgw timeouts` prints the daemon's and the kernel's timeouts with
// their sources.
func TestTimeoutsCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(cfg, []byte("wan: eth0\nlan: [eth1]\ntimeouts: {hold: 200ms}\n"+
		"conntrack_timeouts:\n  tcp: {established: 2h}\n  rules: [{protocol: udp, dport: 53, udp: {replied: 5s}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := pptpgw(t, nil, "timeouts", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, re := range []string{
		`(?m)^SCOPE\s+TIMEOUT\s+VALUE\s+FROM$`,
		`(?m)^pptpgw\s+hold\s+200ms\s+config .*gw.yaml:3$`,
		`(?m)^pptpgw\s+gre_replied\s+3m0s\s+default$`,
		`(?m)^kernel tcp\s+established\s+2h0m0s\s+config .*gw.yaml:5 \(ct timeout ct_tcp_[0-9a-f]{8}\)$`,
		`(?m)^kernel tcp\s+close\s+\d+\S*\s+kernel (sysctl nf_conntrack_tcp_timeout_close|built-in)$`,
		`(?m)^kernel rule 0 \(udp dport 53\)\s+replied\s+5s\s+config .*gw.yaml:6$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	if out, code := pptpgw(t, nil, "timeouts", "--config", filepath.Join(t.TempDir(), "none.yaml")); code != 2 {
		t.Errorf("missing config: exit %d\n%s", code, out)
	}
	// A configuration the daemon refuses has no timeouts in force.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("wan: eth0\nlan: [eth1]\nconntrack_timeouts:\n  tcp: {established: 1500ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := pptpgw(t, nil, "timeouts", "--config", bad); code != 2 || !regexp.MustCompile(`bad.yaml:4: conntrack_timeouts.tcp.established`).MatchString(out) {
		t.Errorf("invalid config: exit %d\n%s", code, out)
	}
}

package pptp

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pptpgw/pptp/mppe"
	"pptpgw/pptp/ppp"
)

// readmeConfigExample returns the YAML of the config reference in
// pptp/README.md.
func readmeConfigExample(tb testing.TB) string {
	tb.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		tb.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## Config reference")
	if !ok {
		tb.Fatal("no config reference in README")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	example, _, _ := strings.Cut(rest, "```")
	return example
}

// TestServeConfigExample loads the config reference of pptp/README.md verbatim.
func TestServeConfigExample(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serve.yaml")
	os.WriteFile(p, []byte(readmeConfigExample(t)), 0o600)
	fc, err := LoadFileConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PoolStart.String() != "10.8.0.10" || cfg.LocalIP.String() != "10.8.0.1" || len(cfg.SplitRoutes) != 1 ||
		cfg.GRE.RecvWindow != 256 || cfg.EchoIdle != 60*time.Second || cfg.AllowUnencrypted || fc.TUN != "pptpgw0" ||
		cfg.Listen != ":1723" || cfg.CallRequestTimeout != 10*time.Second || cfg.AuthTimeout != 15*time.Second ||
		cfg.MaxUnauthCallsPerConn != 4 || cfg.MaxUnauthCallsPerSource != 256 {
		t.Fatalf("parsed %+v", cfg)
	}
	if l, err := fc.Level(); err != nil || l != slog.LevelInfo {
		t.Fatalf("level %v, %v", l, err)
	}
	// PAP without optional encryption is refused with a reason.
	fc.Auth = []string{"pap"}
	if _, err := fc.Config(); err == nil || !strings.Contains(err.Error(), "encryption: optional") {
		t.Fatalf("pap with required encryption: %v", err)
	}
}

// TestFileConfigErrors: a bad key or value names the file and its line; bad
// settings name the setting.
func TestFileConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		yaml string
		want []string // in the error of LoadFileConfig, or else of Config/Level
	}{
		{"pool: 10.8.0.10-20\npoool: typo\n", []string{"bad.yaml", "line 2", "poool"}},
		{"pool: 10.8.0.10-20\nmru: big\n", []string{"bad.yaml", "line 2", "big"}},
		{"pool: 10.8.0.10-20\nlimits:\n  max_conn: 3\n", []string{"bad.yaml", "line 3", "max_conn"}},
		{"listen: :1723\n", []string{"no pool"}},
		{"pool: 10.8.0.10-20\nlisten: 'a:b:c'\n", []string{`listen "a:b:c"`}},
		{"pool: 10.8.0.10-20\nlisten: pptp.example\n", []string{`listen "pptp.example"`}},
		{"pool: 10.8.0.10-20\nmppe_bits: [64]\n", []string{"mppe_bits 64"}},
		{"pool: 10.8.0.10-20\nlocal_ip: 10.8.0.15\n", []string{"inside the pool"}},
		{"pool: 10.8.0.10-20\nlog_level: loud\n", []string{`log level "loud"`, "want debug, info, warn or error"}},
		{"pool: 10.8.0.10-20\ntimeouts:\n  auth: -1s\n", []string{"timeouts.auth -1s: want 0 or more"}},
		{"pool: 10.8.0.10-20\nlimits:\n  unauthenticated_calls_per_conn: -1\n", []string{"limits.unauthenticated_calls_per_conn -1"}},
		{"pool: 10.8.0.10-20\nlimits:\n  max_conns: -1\n", []string{"limits.max_conns -1: want 0 or more"}},
		{"pool: 10.8.0.10-20\ntimeouts: {echo_idle: -1s}\n", []string{"timeouts.echo_idle -1s: want 0 or more"}},
		{"pool: 10.8.0.10-20\ngre: {ack_delay: -5ms}\n", []string{"gre.ack_delay -5ms: want 0 or more"}},
	} {
		p := filepath.Join(dir, "bad.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o600)
		fc, err := LoadFileConfig(p)
		if err == nil {
			_, err = fc.Config()
		}
		if err == nil {
			_, err = fc.Level()
		}
		if err == nil {
			t.Errorf("%q: no error", tc.yaml)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q, want %q in it", tc.yaml, err, w)
			}
		}
	}
}

// TestListenAddr: an address alone means port 1723, as pptpd's listen
// option takes it; :PORT and IP:PORT stay as they are.
func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":                    ":1723",
		"203.0.113.20":        "203.0.113.20:1723",
		"203.0.113.20:1723":   "203.0.113.20:1723",
		"203.0.113.20:10723":  "203.0.113.20:10723",
		":1724":               ":1724",
		"0.0.0.0":             "0.0.0.0:1723",
		"::1":                 "[::1]:1723",
		"[2001:db8::1]":       "[2001:db8::1]:1723",
		"[2001:db8::1]:17230": "[2001:db8::1]:17230",
		"localhost:1723":      "localhost:1723",
	} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a:b:c", "pptp.example", "203.0.113", "[203.0.113.20"} {
		if got, err := ListenAddr(in); err == nil {
			t.Errorf("ListenAddr(%q) = %q, want an error", in, got)
		}
	}
	// The server's Config takes the same forms.
	cfg := Config{Listen: "127.0.0.1", PoolStart: poolStart, PoolEnd: netip.MustParseAddr("10.8.0.20")}
	if err := cfg.defaults(); err != nil || cfg.Listen != "127.0.0.1:1723" {
		t.Fatalf("defaults: %v, listen %q", err, cfg.Listen)
	}
}

// TestFileConfigAuthAndBits: the spellings auth and mppe_bits take.
func TestFileConfigAuthAndBits(t *testing.T) {
	fc := FileConfig{Pool: "10.8.0.10-20", Encryption: "optional", Auth: []string{"MS-CHAPv2", "chap", "pap"}, MPPEBits: []int{128, 40, 56}}
	cfg, err := fc.Config()
	if err != nil {
		t.Fatal(err)
	}
	if want := []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthCHAPMD5, ppp.AuthPAP}; !slices.Equal(cfg.Auth, want) {
		t.Errorf("auth %v, want %v", cfg.Auth, want)
	}
	if want := []mppe.Strength{mppe.Bits128, mppe.Bits40, mppe.Bits56}; !slices.Equal(cfg.MPPEStrengths, want) {
		t.Errorf("mppe bits %v, want %v", cfg.MPPEStrengths, want)
	}
	fc.Auth = []string{"eap"}
	if _, err := fc.Config(); err == nil || !strings.Contains(err.Error(), `auth "eap": want mschapv2, chap-md5 or pap`) {
		t.Errorf("auth eap: %v", err)
	}
}

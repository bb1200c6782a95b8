package pptp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
)

// FuzzFileConfig: no file makes LoadFileConfig, Level or Config panic; a
// load error names the file; a loaded FileConfig re-encodes to YAML that
// loads back to the same FileConfig (the strict decoder neither loses nor
// invents a field); and a Config that FileConfig.Config accepts is one
// NewServer accepts, with a valid pool, an MRU in range, MPPE for every
// method that cannot provide keys unless encryption is optional, and no
// negative limit or duration.
func FuzzFileConfig(f *testing.F) {
	f.Add([]byte(readmeConfigExample(f)))
	for _, s := range []string{
		"pool: 10.8.0.10-20\n",
		"pool: 10.8.0.10-20\npoool: typo\n",
		"pool: 10.8.0.10-20\nmru: big\n",
		"pool: 10.8.0.10-20\nlimits:\n  max_conn: 3\n",
		"pool: 10.8.0.10-20\nlisten: 'a:b:c'\n",
		"pool: 10.8.0.10-20\nmppe_bits: [64]\n",
		"pool: 10.8.0.10-20\nlocal_ip: 10.8.0.15\n",
		"pool: 10.8.0.10-20\nlog_level: loud\n",
		"pool: 10.8.0.10-20\nencryption: optional\nauth: [pap, chap]\nmppe_mode: stateful\n",
		"pool: 10.8.0.10-20\nlimits: {max_conns: 4, max_sessions: 2}\ntimeouts: {echo_idle: 1m30s}\ngre: {window: 64, reorder_timeout: 20ms}\n",
		"pool: 0.0.0.0-255.255.255.255\nlocal_ip: ::1\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	in, again := filepath.Join(dir, "serve.yaml"), filepath.Join(dir, "again.yaml")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(in, b, 0o600); err != nil {
			t.Fatal(err)
		}
		fc, err := LoadFileConfig(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), in+": ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		enc, err := yaml.Marshal(fc)
		if err != nil {
			t.Fatalf("loaded config does not encode: %v", err)
		}
		if err := os.WriteFile(again, enc, 0o600); err != nil {
			t.Fatal(err)
		}
		fc2, err := LoadFileConfig(again)
		if err != nil {
			t.Fatalf("re-encoded config does not load: %v\n%s", err, enc)
		}
		if enc2, _ := yaml.Marshal(fc2); !bytes.Equal(enc, enc2) {
			t.Fatalf("config changed on a round trip:\n%s\nthen\n%s", enc, enc2)
		}
		fc.Level()
		cfg, err := fc.Config()
		if err != nil {
			return
		}
		if !cfg.PoolStart.Is4() || !cfg.PoolEnd.Is4() || cfg.PoolEnd.Less(cfg.PoolStart) {
			t.Fatalf("accepted pool %s-%s", cfg.PoolStart, cfg.PoolEnd)
		}
		if cfg.MRU != 0 && (cfg.MRU < 576 || cfg.MRU > 1500) {
			t.Fatalf("accepted mru %d", cfg.MRU)
		}
		for _, m := range cfg.Auth {
			if m != ppp.AuthMSCHAPv2 && !cfg.AllowUnencrypted {
				t.Fatalf("accepted auth %s with encryption required", m)
			}
		}
		for _, n := range []int{cfg.MaxConns, cfg.MaxConnsPerSource, cfg.MaxSessions, cfg.MaxCallsPerConn, cfg.GRE.ReorderMax} {
			if n < 0 {
				t.Fatalf("accepted a negative limit: %+v", fc.Limits)
			}
		}
		for _, d := range []time.Duration{cfg.FirstMessageTimeout, cfg.EchoIdle, cfg.EchoTimeout, cfg.PPPEcho, cfg.GRE.ReorderTimeout, cfg.GRE.AckDelay} {
			if d < 0 {
				t.Fatalf("accepted a negative duration: %+v %+v", fc.Timeouts, fc.GRE)
			}
		}
		greConn, _ := gre.Pipe(loopback, loopback, 1)
		cfg.Secrets = mapSecrets{}
		if _, err := NewServer(cfg, greConn, nil); err != nil {
			t.Fatalf("Config accepted what NewServer refuses: %v", err)
		}
	})
}

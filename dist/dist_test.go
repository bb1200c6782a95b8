// Package dist holds what `make install` puts on a machine besides the
// binary: the systemd units and the example configurations. Its tests keep
// them true: the units verify with systemd-analyze, keep the capabilities
// and directories the daemons need, and the examples load.
package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"pptpgw/pptp"
	"pptpgw/rules"
)

// unitSettings parses the Key=Value lines of a unit (comments skipped;
// repeated keys keep every value).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, l)
		}
		m[k] = append(m[k], v)
	}
	return m
}

// The units keep what the daemons need and what the issue asks of them:
// reload by SIGHUP, restart on failure, CAP_NET_ADMIN and CAP_NET_RAW
// through the sandbox, the state directory of the state file, the runtime
// directory of the default admin sockets (kept when one of the two stops).
func TestUnits(t *testing.T) {
	for _, u := range []struct {
		file, cmd, sock string
	}{
		{"pptpgw.service", "run", rules.DefaultAdminSocket},
		{"pptpgw-serve.service", "serve", pptp.DefaultAdminSocket},
	} {
		s := unitSettings(t, u.file)
		one := func(k string) string {
			if len(s[k]) != 1 {
				t.Errorf("%s: %s set %d times", u.file, k, len(s[k]))
				return ""
			}
			return s[k][0]
		}
		if got := one("ExecStart"); !strings.HasPrefix(got, "@SBINDIR@/pptpgw "+u.cmd+" --config @SYSCONFDIR@/pptpgw/") {
			t.Errorf("%s: ExecStart=%s", u.file, got)
		}
		for k, want := range map[string]string{
			"ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure", "StateDirectory": "pptpgw",
			"RuntimeDirectory": "pptpgw", "RuntimeDirectoryPreserve": "yes", "ProtectSystem": "strict",
			"ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
		} {
			if got := one(k); got != want {
				t.Errorf("%s: %s=%s, want %s", u.file, k, got, want)
			}
		}
		for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
			caps := strings.Fields(one(k))
			for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_CHOWN"} {
				if !contains(caps, c) {
					t.Errorf("%s: %s lacks %s", u.file, k, c)
				}
			}
		}
		if dir := filepath.Dir(u.sock); dir != "/run/"+one("RuntimeDirectory") {
			t.Errorf("%s: default admin socket %s is not in RuntimeDirectory %s", u.file, u.sock, one("RuntimeDirectory"))
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// The example configurations `make install` puts in /etc/pptpgw load; the
// gateway's is refused until wan and lan are set (a freshly installed unit
// must not start translating on guessed interfaces), and valid with them.
func TestExampleConfigs(t *testing.T) {
	c, err := rules.Load("pptpgw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "wan: required") ||
		!strings.Contains(err.Error(), "lan: required") || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("pptpgw.yaml as installed: %v; want exactly wan and lan required", err)
	}
	sc, err := pptp.LoadFileConfig("serve.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Config(); err != nil {
		t.Errorf("serve.yaml: %v", err)
	}
	// The metrics and admin_group lines, uncommented, are valid too.
	for _, f := range []string{"pptpgw.yaml", "serve.yaml"} {
		b, _ := os.ReadFile(f)
		text := strings.ReplaceAll(string(b), "# metrics:", "metrics:")
		text = strings.ReplaceAll(text, "# wan:", "wan:")
		text = strings.ReplaceAll(text, "# lan:", "lan:")
		text = strings.ReplaceAll(text, "# admin_group:", "admin_group:")
		p := filepath.Join(t.TempDir(), f)
		os.WriteFile(p, []byte(text), 0o600)
		if f == "pptpgw.yaml" {
			c, err := rules.Load(p)
			if err != nil || c.Validate() != nil || c.Metrics == "" || c.AdminGroup == "" {
				t.Errorf("%s uncommented: %v %+v", f, err, c)
			}
			continue
		}
		sc, err := pptp.LoadFileConfig(p)
		if err != nil || sc.Metrics == "" || sc.AdminGroup == "" {
			t.Errorf("%s uncommented: %v %+v", f, err, sc)
		}
	}
}

func goBin(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// `make install` into a temporary DESTDIR puts the binary, both units (with
// the prefix filled in) and both example configs in place, and never
// overwrites a config that is there. The installed units verify with
// systemd-analyze.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest := t.TempDir()
	install := func() {
		t.Helper()
		cmd := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr", "GO="+goBin(t))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	for path, mode := range map[string]os.FileMode{
		"usr/sbin/pptpgw":                             0o755,
		"usr/lib/systemd/system/pptpgw.service":       0o644,
		"usr/lib/systemd/system/pptpgw-serve.service": 0o644,
		"etc/pptpgw/pptpgw.yaml":                      0o640,
		"etc/pptpgw/serve.yaml":                       0o640,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	unit := filepath.Join(dest, "usr/lib/systemd/system/pptpgw.service")
	if s := unitSettings(t, unit); s["ExecStart"][0] != "/usr/sbin/pptpgw run --config /etc/pptpgw/pptpgw.yaml" {
		t.Errorf("installed ExecStart=%s", s["ExecStart"][0])
	}
	cfg := filepath.Join(dest, "etc/pptpgw/pptpgw.yaml")
	os.WriteFile(cfg, []byte("wan: mine\n"), 0o640)
	install()
	if b, _ := os.ReadFile(cfg); string(b) != "wan: mine\n" {
		t.Errorf("a second make install overwrote the config: %q", b)
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed: units not verified")
	}
	// verify checks that ExecStart's binary exists: point the copies at
	// the staged one.
	dir := t.TempDir()
	var units []string
	for _, u := range []string{"pptpgw.service", "pptpgw-serve.service"} {
		b, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/sbin/pptpgw", filepath.Join(dest, "usr/sbin/pptpgw")))
		p := filepath.Join(dir, u)
		os.WriteFile(p, b, 0o644)
		units = append(units, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

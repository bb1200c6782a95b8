package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const poolBase = "wan: eth0\nlan: [eth1]\n"

func TestPoolConfig(t *testing.T) {
	c, err := Parse([]byte(poolBase + `forwards:
  - port: 1723
    to: [10.0.1.5, 10.0.1.6, 10.0.1.7]
    balance: source-hash
    health: {interval: 3s, timeout: 1s, probe: tcp}
  - port: 1724
    to: 10.0.2.5
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	f := c.Forwards[0]
	if !f.IsPool() || f.To != "10.0.1.5" || len(f.Members()) != 3 || f.Members()[2] != netip.MustParseAddr("10.0.1.7") ||
		f.BalanceOrDefault() != BalanceSourceHash || f.Health.Interval != 3*time.Second || f.Health.Probe != ProbeTCP {
		t.Fatalf("pool forward: %+v", f)
	}
	if h := f.Health.WithDefaults(); h.Fall != DefaultHealthFall || h.Rise != DefaultHealthRise || h.Timeout != time.Second {
		t.Fatalf("defaults: %+v", h)
	}
	if g := c.Forwards[1]; g.IsPool() || g.To != "10.0.2.5" || len(g.Members()) != 1 || g.Addr() != netip.MustParseAddr("10.0.2.5") {
		t.Fatalf("single forward: %+v", g)
	}
	// Defaults of a bare pool.
	c, err = Parse([]byte(poolBase + "forwards: [{port: 1723, to: [10.0.1.5, 10.0.1.6]}]\n"))
	if err != nil || c.Validate() != nil {
		t.Fatal(err, c.Validate())
	}
	if f := c.Forwards[0]; f.BalanceOrDefault() != BalanceLeastCalls || f.Health.WithDefaults() !=
		(Health{Interval: 5 * time.Second, Timeout: 2 * time.Second, Probe: ProbeControl, Fall: 2, Rise: 2}) {
		t.Fatalf("defaults: %+v", f)
	}
	// Marshal round trip keeps the list.
	b, err := yaml.Marshal(c.Forwards)
	if err != nil || !strings.Contains(string(b), "10.0.1.6") {
		t.Fatalf("marshal: %v %s", err, b)
	}
}

func TestPoolConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, nope]\n", "gw.yaml:5: forwards[0].to[1]: \"nope\" is not an IP address"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.5]\n", "forwards[0].to[1]: 10.0.1.5 is already a server of forwards[0].to[0]"},
		{"forwards:\n  - {port: 1723, to: [10.0.1.5, 10.0.1.6]}\n  - {port: 1724, to: 10.0.1.6}\n", "forwards[1].to: 10.0.1.6 is already a server"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.6]\n    balance: random\n", "gw.yaml:6: forwards[0].balance: \"random\" is not a balance policy"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.6]\n    health: {probe: icmp}\n", "forwards[0].health.probe: \"icmp\" is not a probe"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.6]\n    health: {interval: 1s, timeout: 3s}\n", "forwards[0].health.timeout: 3s is longer than the interval"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.6]\n    health: {interval: 1ms}\n", "forwards[0].health.interval: 1ms is shorter"},
		{"forwards:\n  - port: 1723\n    to: 10.0.1.5\n    balance: source-hash\n", "forwards[0].to: balance and health need a pool"},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, \"::1\"]\n", "forwards[0].to[1]: ::1 is not an IPv4 address"},
	} {
		p := filepath.Join(t.TempDir(), "gw.yaml")
		os.WriteFile(p, []byte(poolBase+tc.yaml), 0o644)
		c, err := Load(p)
		if err != nil {
			t.Errorf("%q: load: %v", tc.yaml, err)
			continue
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"forwards:\n  - port: 1723\n    too: 10.0.1.5\n", "line 5: unknown field \"too\""},
		{"forwards:\n  - port: 1723\n    to: [10.0.1.5, 10.0.1.6]\n    health: {intervall: 1s}\n", "line 6: unknown field \"intervall\""},
		{"forwards:\n  - port: 1723\n    to: {a: 1}\n", "to is an address or a list"},
	} {
		if _, err := Parse([]byte(poolBase + tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestPoolConfigDoc(t *testing.T) {
	doc, _ := os.ReadFile("CONFIG.md")
	for _, k := range []string{"balance", "health", "interval", "timeout", "probe", "fall", "rise", "least-calls", "source-hash",
		"`5s`", "`2s`", "`control`"} {
		if !strings.Contains(string(doc), k) {
			t.Errorf("CONFIG.md does not mention %s", k)
		}
	}
}

// FuzzPoolConfig: no pool configuration makes Parse or Validate panic, and
// one that passes yields a Plan that passes Plan.check, whose rules build,
// and whose pools have only IPv4 members, at most MaxPoolMembers.
func FuzzPoolConfig(f *testing.F) {
	f.Add([]byte(poolBase + "forwards: [{port: 1723, to: [10.0.1.5, 10.0.1.6], balance: source-hash, health: {interval: 1s, timeout: 1s}}]\n"))
	f.Add([]byte(poolBase + "forwards:\n  - port: 1724\n    to: [10.0.1.5]\n  - {port: 1723, to: 10.0.1.9}\n"))
	f.Add([]byte(poolBase + "forwards: [{port: 1723, to: [10.0.1.5, 10.0.1.6], health: {probe: none, fall: 3, rise: 1}}]\n"))
	f.Add([]byte(poolBase + "forwards: [{port: 1723, to: [[1]]}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil || c.Validate() != nil {
			return
		}
		p := NewPlan(c)
		if err := p.check(); err != nil {
			t.Fatalf("valid config gives a bad plan: %v\n%s", err, b)
		}
		for _, f := range c.Forwards {
			if len(f.Members()) > MaxPoolMembers {
				t.Fatalf("%d members passed validation", len(f.Members()))
			}
			for _, m := range f.Members() {
				if !m.Is4() {
					t.Fatalf("member %v passed validation", m)
				}
			}
		}
		p.QueueImpl = QueueXT
		var got []ruleMsg
		if _, err := InstallConn(fakeConn(t, &got), p); err != nil {
			t.Fatalf("install: %v", err)
		}
	})
}

package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/nat"
	"pptpgw/rules"
)

// A pool of the configuration reaches the engine with its defaults, and a
// single forward stays a plain one.
func TestNewEngineGetsPools(t *testing.T) {
	cfg, err := rules.Parse([]byte(`
wan: wan0
lan: [lan0]
forwards:
  - {port: 1724, to: 10.0.1.5}
  - port: 1723
    to: [10.0.2.5, 10.0.2.6]
    balance: source-hash
    health: {interval: 3s, probe: tcp, rise: 4}
  - {port: 1725, to: [10.0.3.5, 10.0.3.6]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	res := &rules.Resolved{PublicIP: netip.MustParseAddr("203.0.113.1"), WANIndex: 2, LANIndex: []uint32{3}}
	e := newEngine(cfg, res, conntrack.NewFakeClock(time.Time{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	a := netip.MustParseAddr
	want := []nat.Pool{
		{Port: 1723, Members: []netip.Addr{a("10.0.2.5"), a("10.0.2.6")}, Balance: nat.BalanceSourceHash,
			Health: nat.Health{Interval: 3 * time.Second, Timeout: 2 * time.Second, Probe: nat.ProbeTCP, Fall: 2, Rise: 4}},
		{Port: 1725, Members: []netip.Addr{a("10.0.3.5"), a("10.0.3.6")}, Balance: nat.BalanceLeastCalls,
			Health: nat.Health{Interval: 5 * time.Second, Timeout: 2 * time.Second, Probe: nat.ProbeControl, Fall: 2, Rise: 2}},
	}
	s := e.Settings()
	if !reflect.DeepEqual(s.Pools, want) {
		t.Errorf("engine pools\n%+v\nwant\n%+v", s.Pools, want)
	}
	if !reflect.DeepEqual(s.Forwards, []nat.Forward{{Port: 1724, InsideIP: a("10.0.1.5")}}) {
		t.Errorf("plain forwards %+v", s.Forwards)
	}
	if got := len(e.Pools()); got != 2 {
		t.Errorf("%d pools listed", got)
	}
}

// poolRun.Apply is the reload's entry: a changed config changes the
// engine's pools, the same config changes nothing, Close drops them.
func TestPoolRunApply(t *testing.T) {
	parse := func(y string) *rules.Config {
		t.Helper()
		c, err := rules.Parse([]byte("wan: wan0\nlan: [lan0]\n" + y))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := parse("forwards: [{port: 1723, to: [10.0.2.5, 10.0.2.6]}]\n")
	res := &rules.Resolved{PublicIP: netip.MustParseAddr("203.0.113.1"), WANIndex: 2, LANIndex: []uint32{3}}
	e := newEngine(c1, res, conntrack.NewFakeClock(time.Time{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := poolRun{e}
	if err := p.Apply(c1); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(parse("forwards: [{port: 1723, to: [10.0.2.5, 10.0.2.6, 10.0.2.7]}]\n")); err != nil {
		t.Fatal(err)
	}
	if got := e.Settings().Pools; len(got) != 1 || len(got[0].Members) != 3 {
		t.Fatalf("after Apply: %+v", got)
	}
	if err := p.Close(); err != nil || len(e.Settings().Pools) != 0 || len(e.Pools()) != 0 {
		t.Fatalf("after Close: %v %+v", err, e.Settings().Pools)
	}
}

func TestPrintPools(t *testing.T) {
	now := time.Unix(1000, 0)
	var b bytes.Buffer
	printPools(&b, []nat.PoolInfo{{Port: 1723, Balance: "least-calls", Probe: "control", Members: []nat.MemberInfo{
		{Addr: netip.MustParseAddr("10.0.1.5"), State: nat.MemberUp, Since: now.Add(-time.Minute), Conns: 3, Calls: 2, Picks: 7, Setups: 6,
			Probes: []nat.ProbeResult{{OK: true}, {OK: true}}},
		{Addr: netip.MustParseAddr("10.0.1.6"), State: nat.MemberDown, Since: now.Add(-5 * time.Second),
			Probes: []nat.ProbeResult{{OK: true}, {OK: false, Err: "connection refused"}}},
	}}}, now)
	out := b.String()
	for _, w := range []string{"port 1723  balance least-calls  probe control", "10.0.1.5  up     1m0s ago  3      2      7      6",
		"10.0.1.6  down   5s ago", "+- (connection refused)"} {
		if !strings.Contains(out, w) {
			t.Errorf("pool table lacks %q:\n%s", w, out)
		}
	}
	b.Reset()
	printPools(&b, nil, now)
	if !strings.Contains(b.String(), "no pools") {
		t.Errorf("empty: %q", b.String())
	}
}

func TestPoolCLI(t *testing.T) {
	out, code := pptpgw(t, nil, "pool", "--help")
	if code != 0 || !strings.Contains(out, "Usage: pptpgw pool [--json]") {
		t.Errorf("pool --help: exit %d, output:\n%s", code, out)
	}
	out, code = pptpgw(t, nil, "pool", "--admin-socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(out, "no pptpgw run answers") {
		t.Errorf("pool without daemon: exit %d, output:\n%s", code, out)
	}
	if out, _ := pptpgw(t, nil, "help"); !strings.Contains(out, "pool") {
		t.Errorf("help does not list pool:\n%s", out)
	}
}

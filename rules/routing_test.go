package rules

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"pptpgw/internal/fwmark"
)

const routingYAML = `wan: wan0
lan: [lan0]
routing:
  tables:
    - {name: corp, id: 200, routes: [{to: default, via: 198.51.100.1, interface: up1}, {to: 192.0.2.0/24, interface: up1, metric: 5}]}
  rules:
    - {from: 10.7.1.0/24, table: corp, priority: 1000}
    - {class: bulk, table: corp}
    - {to: 192.0.2.0/24, table: main}
    - {iif: lan0, to: 203.0.113.0/24, table: 200}
`

// ourRuleRE finds rules of RouteProtocol in `ip rule show` (whose proto
// filter this iproute2 ignores).
var ourRuleRE = regexp.MustCompile(`(?m)^\d+:.* proto 147$`)

func withClasses(t *testing.T, names ...string) {
	old := RoutingClasses
	RoutingClasses = func(*Config) []string { return names }
	t.Cleanup(func() { RoutingClasses = old })
}

func TestRoutingConfig(t *testing.T) {
	withClasses(t, "voice", "bulk")
	c, err := Parse([]byte(routingYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := NewRoutingPlan(c)
	if len(p.Routes) != 2 || p.Routes[0].String() != "0.0.0.0/0 table 200 via 198.51.100.1 dev up1" ||
		p.Routes[1].Metric != 5 {
		t.Errorf("routes %v", p.Routes)
	}
	want := []string{
		"1000: from 10.7.1.0/24 lookup 200",
		"20000: fwmark 0x2/0xff lookup 200",
		"20001: to 192.0.2.0/24 lookup 254",
		"20002: to 203.0.113.0/24 iif lan0 lookup 200",
	}
	for i, r := range p.Rules {
		if i >= len(want) || r.String() != want[i] {
			t.Errorf("rule %d = %q, want %q", i, r, want[min(i, len(want)-1)])
		}
	}
	if p.Rules[1].Mark != fwmark.Class(1) || p.Rules[1].Mask != fwmark.ClassMask {
		t.Errorf("class rule mark %#x/%#x", p.Rules[1].Mark, p.Rules[1].Mask)
	}
}

func TestRoutingConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"routing: {tables: [{name: main, id: 5, routes: [{to: default, interface: a}]}]}", "routing.tables[0].name: \"main\" is a kernel table"},
		{"routing: {tables: [{name: x, id: 254, routes: [{to: default, interface: a}]}]}", "line 5: routing.tables[0].id: 254 is a kernel table"},
		{"routing: {tables: [{name: x, id: 9}]}", "routing.tables[0].routes: a table needs at least one route"},
		{"routing: {tables: [{name: x, id: 9, routes: [{to: 10.0.0.1/8, via: 10.0.0.1}]}]}", "has host bits set"},
		{"routing: {tables: [{name: x, id: 9, routes: [{to: default}]}]}", "routing.tables[0].routes[0]: needs via"},
		{"routing: {tables: [{name: x, id: 9, routes: [{to: default, via: fe80::1}]}]}", "routing.tables[0].routes[0].via: \"fe80::1\" is not an IPv4 address"},
		{"routing: {rules: [{from: 10.0.0.0/8, table: nope}]}", "routing.rules[0].table: \"nope\" is not in routing.tables"},
		{"routing: {rules: [{class: bulk, table: main}]}", "routing.rules[0].class: \"bulk\": no classes are defined"},
		{"routing: {rules: [{to: 10.0.0.0/8, table: main, priority: 32766}]}", "routing.rules[0].priority: 32766 out of range"},
		{"routing: {rules: [{tabel: main}]}", "unknown field \"tabel\""},
	} {
		c, err := Parse([]byte("wan: wan0\nlan: [lan0]\n\n\n" + tc.yaml + "\n"))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// TestRouterNetns installs tables and rules in a fresh namespace, swaps them
// for another plan, finds them again from a second Router (as the next start
// after kill -9 would) and removes exactly its own.
func TestRouterNetns(t *testing.T) {
	withClasses(t, "voice", "bulk")
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "add", "up1", "type", "veth", "peer", "name", "up1p")
	nsRun(t, ns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	for _, l := range []string{"up1", "up1p", "lan0", "lan0p", "lo"} {
		nsRun(t, ns, "ip", "link", "set", l, "up")
	}
	nsRun(t, ns, "ip", "addr", "add", "198.51.100.2/24", "dev", "up1")
	nsRun(t, ns, "ip", "addr", "add", "10.7.1.1/24", "dev", "lan0")
	nsRun(t, ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The operator's own rule and route: never touched.
	nsRun(t, ns, "ip", "rule", "add", "priority", "1000", "from", "10.9.0.0/16", "lookup", "300")
	nsRun(t, ns, "ip", "route", "add", "default", "via", "198.51.100.9", "table", "300")

	c, err := Parse([]byte(routingYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := NewRouter(int(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	plan := NewRoutingPlan(c)
	if err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	routes := nsRun(t, ns, "ip", "route", "show", "table", "200", "proto", "147")
	for _, w := range []string{"default via 198.51.100.1 dev up1", "192.0.2.0/24 dev up1 scope link metric 5"} {
		if !strings.Contains(routes, w) {
			t.Errorf("table 200 lacks %q:\n%s", w, routes)
		}
	}
	rules := nsRun(t, ns, "ip", "rule", "show")
	for _, w := range []string{
		"1000:\tfrom 10.7.1.0/24 lookup 200 proto 147",
		"20000:\tfrom all fwmark 0x2/0xff lookup 200 proto 147",
		"20001:\tfrom all to 192.0.2.0/24 lookup main proto 147",
		"20002:\tfrom all to 203.0.113.0/24 iif lan0 lookup 200 proto 147",
		"1000:\tfrom 10.9.0.0/16 lookup 300",
	} {
		if !strings.Contains(rules, w) {
			t.Errorf("ip rule lacks %q:\n%s", w, rules)
		}
	}
	// The kernel routes by them: a LAN client's traffic to the outside
	// takes table corp, a bulk-class packet too, others main (none here).
	get := func(args ...string) string {
		out, _ := exec.Command("ip", append([]string{"netns", "exec", ns, "ip", "route", "get"}, args...)...).CombinedOutput()
		return string(out)
	}
	if out := get("203.0.113.50", "from", "10.7.1.5", "iif", "lan0"); !strings.Contains(out, "via 198.51.100.1 dev up1 table 200") {
		t.Errorf("client 10.7.1.5 not routed by table 200: %s", out)
	}
	if out := get("203.0.113.50", "mark", "0x2"); !strings.Contains(out, "via 198.51.100.1 dev up1 table 200") {
		t.Errorf("bulk mark not routed by table 200: %s", out)
	}
	if out := get("203.0.113.50", "mark", "0x1"); strings.Contains(out, "table 200") {
		t.Errorf("voice mark routed by table 200: %s", out)
	}
	// The operator's bits above fwmark.Mask do not change the class rule.
	if out := get("203.0.113.50", "mark", "0x7f000002"); !strings.Contains(out, "table 200") {
		t.Errorf("bulk mark with operator bits not routed by table 200: %s", out)
	}

	// Applying the same plan again changes nothing (no duplicates).
	if err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if again := nsRun(t, ns, "ip", "rule", "show"); again != rules {
		t.Errorf("second Apply changed the rules:\n%s\nthen\n%s", rules, again)
	}

	// A second Router (the next start after kill -9) finds them and swaps
	// to another plan: the gateway moves, a rule moves, one goes.
	r2, err := NewRouter(int(h))
	if err != nil {
		t.Fatal(err)
	}
	if ro, ru, err := r2.Owned(); err != nil || ro != 2 || ru != 4 {
		t.Errorf("Owned() = %d routes, %d rules, %v; want 2, 4", ro, ru, err)
	}
	c.Routing.Tables[0].Routes = c.Routing.Tables[0].Routes[:1]
	c.Routing.Tables[0].Routes[0].Via = "198.51.100.3"
	c.Routing.Rules = c.Routing.Rules[:2]
	c.Routing.Rules[0].Priority = 1100
	if err := r2.Apply(NewRoutingPlan(c)); err != nil {
		t.Fatal(err)
	}
	routes = nsRun(t, ns, "ip", "route", "show", "table", "all", "proto", "147")
	if !strings.Contains(routes, "default via 198.51.100.3 dev up1 table 200") || strings.Contains(routes, "198.51.100.1") ||
		strings.Contains(routes, "192.0.2.0/24") {
		t.Errorf("after the swap, routes:\n%s", routes)
	}
	rules = nsRun(t, ns, "ip", "rule", "show")
	if n := len(ourRuleRE.FindAllString(rules, -1)); n != 2 ||
		!strings.Contains(rules, "1100:\tfrom 10.7.1.0/24 lookup 200") || !strings.Contains(rules, "20000:\tfrom all fwmark 0x2/0xff") {
		t.Errorf("after the swap, %d rules:\n%s", n, rules)
	}

	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if out := nsRun(t, ns, "ip", "rule", "show"); ourRuleRE.MatchString(out) {
		t.Errorf("rules left after Close:\n%s", out)
	}
	if out := nsRun(t, ns, "ip", "route", "show", "table", "all", "proto", "147"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after Close:\n%s", out)
	}
	if out := nsRun(t, ns, "ip", "rule", "show"); !strings.Contains(out, "from 10.9.0.0/16 lookup 300") {
		t.Errorf("the operator's rule is gone:\n%s", out)
	}
	if out := nsRun(t, ns, "ip", "route", "show", "table", "300"); !strings.Contains(out, "default via 198.51.100.9") {
		t.Errorf("the operator's route is gone:\n%s", out)
	}
}

// CONFIG.md documents every key of issue 10, and the yaml tags are those
// keys (so a new field cannot go undocumented).
func TestEdgeConfigDoc(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, v := range []any{Routing{}, RouteTable{}, Route{}, RouteRule{}, KernelTimeouts{}, TCPTimeouts{},
		UDPTimeouts{}, GRETimeouts{}, TimeoutRule{}, MSSRule{}, Uplink{}} {
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			keys = append(keys, rt.Field(i).Tag.Get("yaml"))
		}
	}
	keys = append(keys, "routing", "conntrack_timeouts", "uplinks", "default", "rules", "147", "20000", "4700", "500",
		"pptpgw timeouts", "uplink_pin", "gre_wrong_uplink")
	for _, k := range keys {
		if !strings.Contains(string(doc), "`"+k+"`") && !strings.Contains(string(doc), "`"+k+" ") {
			t.Errorf("CONFIG.md does not mention `%s`", k)
		}
	}
}

// FuzzEdgeConfig: no input makes the keys of issue 10 panic Parse,
// Validate, the plans or the report, and whatever validates installs (into
// a fake connection) without an error.
func FuzzEdgeConfig(f *testing.F) {
	for _, s := range []string{routingYAML, ctTimeoutsYAML, uplinksYAML, edgeGoldenYAML,
		"wan: a\nlan: [b]\nmss_clamp: {default: off, rules: [{interface: c, mss: 1400}]}\n",
		"wan: a\nlan: [b]\nrouting: {rules: [{from: 0.0.0.0/0, table: 7}]}\n", "wan: [a, b]\nlan: [c]\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		TimeoutReport(c, BuiltinKernelTimeoutBase())
		if c.Validate() != nil {
			return
		}
		NewRoutingPlan(c)
		p := NewPlan(c)
		p.QueueImpl = QueueXT
		var got []ruleMsg
		if _, err := InstallConn(fakeConn(t, &got), p); err != nil {
			t.Fatalf("valid config does not install: %v\n%s", err, b)
		}
	})
}

// TestRoutingClassFromClasses: a rule's `class:` names an entry of the
// shaping feature's `classes:` list, matched on its class bits; an unknown
// class is refused with its line.
func TestRoutingClassFromClasses(t *testing.T) {
	const cfg = `wan: eth0
lan: [eth1]
classes:
  - name: voice
    match: [{protocol: udp, dport: 5060}]
  - name: bulk
    match: [{protocol: tcp, dport: "1000-65535"}]
routing:
  tables:
    - {name: corp, id: 200, routes: [{to: default, via: 198.51.100.1, interface: up1}]}
  rules:
    - {class: bulk, table: corp}
`
	c, err := Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := NewRoutingPlan(c)
	if len(p.Rules) != 1 || p.Rules[0].Mark != fwmark.Class(1) || p.Rules[0].Mask != fwmark.ClassMask {
		t.Fatalf("rules %v, want fwmark %#x/%#x", p.Rules, fwmark.Class(1), fwmark.ClassMask)
	}
	bad, err := Parse([]byte(strings.Replace(cfg, "{class: bulk,", "{class: video,", 1)))
	if err == nil {
		err = bad.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "line 12") || !strings.Contains(err.Error(), "video") {
		t.Fatalf("unknown class: %v, want an error naming line 12 and the class", err)
	}
}

package rules

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLinkWatcherRestoresRoutes: the kernel deletes a table's routes with
// their interface going down; re-applying the plan on the watcher's report
// puts them back once the interface is up again.
func TestLinkWatcherRestoresRoutes(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "add", "up1", "type", "veth", "peer", "name", "up1p")
	for _, l := range []string{"up1", "up1p", "lo"} {
		nsRun(t, ns, "ip", "link", "set", l, "up")
	}
	nsRun(t, ns, "ip", "addr", "add", "198.51.100.2/24", "dev", "up1")
	r, err := NewRouter(int(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	plan := RoutingPlan{Routes: []PlanRoute{{Table: 200, Dst: netip.MustParsePrefix("0.0.0.0/0"),
		Gw: netip.MustParseAddr("198.51.100.1"), Dev: "up1"}}}
	if err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	w, err := WatchLinks(int(h))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var applied atomic.Int32
	go func() {
		done <- w.Run(ctx, 50*time.Millisecond, func() error {
			applied.Add(1)
			return r.Apply(plan) // fails while up1 is down: retried
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	table := func() string { return nsRun(t, ns, "ip", "route", "show", "table", "200") }
	nsRun(t, ns, "ip", "link", "set", "up1", "down")
	if got := table(); strings.Contains(got, "default") {
		t.Fatalf("the kernel kept the route of a downed interface (the test premise):\n%s", got)
	}
	nsRun(t, ns, "ip", "link", "set", "up1", "up")
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = table(); strings.Contains(got, "default via 198.51.100.1 dev up1") {
			break
		}
	}
	if !strings.Contains(got, "default via 198.51.100.1 dev up1") {
		t.Errorf("route not restored after up1 came back (%d re-applies):\n%s", applied.Load(), got)
	}
}

// TestRouterFailedChangeKeepsOld: a plan whose route cannot be written (its
// interface does not exist) returns the error and deletes nothing: the old
// route of that key and the old rules stay until an Apply succeeds.
func TestRouterFailedChangeKeepsOld(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "add", "up1", "type", "veth", "peer", "name", "up1p")
	for _, l := range []string{"up1", "up1p", "lo"} {
		nsRun(t, ns, "ip", "link", "set", l, "up")
	}
	nsRun(t, ns, "ip", "addr", "add", "198.51.100.2/24", "dev", "up1")
	r, err := NewRouter(int(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	dflt := netip.MustParsePrefix("0.0.0.0/0")
	gw := netip.MustParseAddr("198.51.100.1")
	a := RoutingPlan{
		Routes: []PlanRoute{{Table: 200, Dst: dflt, Gw: gw, Dev: "up1"}},
		Rules:  []PlanRule{{Priority: 1000, Table: 200, Src: netip.MustParsePrefix("10.7.1.0/24")}},
	}
	if err := r.Apply(a); err != nil {
		t.Fatal(err)
	}
	b := RoutingPlan{
		Routes: []PlanRoute{{Table: 200, Dst: dflt, Gw: gw, Dev: "nosuch0"}},
		Rules:  []PlanRule{{Priority: 1100, Table: 200, Src: netip.MustParsePrefix("10.7.1.0/24")}},
	}
	if err := r.Apply(b); err == nil {
		t.Fatal("a route through a missing interface applied without error")
	}
	if got := nsRun(t, ns, "ip", "route", "show", "table", "200"); !strings.Contains(got, "default via 198.51.100.1 dev up1") {
		t.Errorf("the old route went with the failed change:\n%s", got)
	}
	if got := nsRun(t, ns, "ip", "rule", "show"); !strings.Contains(got, "1000:\tfrom 10.7.1.0/24 lookup 200") {
		t.Errorf("the old rule went with the failed change:\n%s", got)
	}
	if err := r.Apply(a); err != nil {
		t.Fatal(err)
	}
	if got := nsRun(t, ns, "ip", "rule", "show"); strings.Contains(got, "1100:") || !strings.Contains(got, "1000:\tfrom 10.7.1.0/24 lookup 200") {
		t.Errorf("after applying the old plan again:\n%s", got)
	}
}

// TestUplinkRoutesWithoutVia: `wan: [up1, up2]` gives uplinks without via;
// their pin tables route through the gateway of the main table's default
// route out of each (a device route would ARP for every destination on an
// Ethernet uplink), and without one Apply fails instead of guessing.
func TestUplinkRoutesWithoutVia(t *testing.T) {
	ns, h := testNetns(t)
	for i, l := range []string{"up1", "up2"} {
		nsRun(t, ns, "ip", "link", "add", l, "type", "veth", "peer", "name", l+"p")
		nsRun(t, ns, "ip", "link", "set", l, "up")
		nsRun(t, ns, "ip", "link", "set", l+"p", "up")
		nsRun(t, ns, "ip", "addr", "add", []string{"198.51.100.2/24", "192.0.2.2/24"}[i], "dev", l)
	}
	c, err := Parse([]byte("wan: [up1, up2]\nlan: [lan0]\n"))
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
	if err := r.Apply(NewRoutingPlan(c)); err == nil {
		t.Error("applied without a gateway for the uplinks")
	}
	nsRun(t, ns, "ip", "route", "add", "default", "via", "198.51.100.1", "dev", "up1", "metric", "10")
	nsRun(t, ns, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "up2", "metric", "20")
	if err := r.Apply(NewRoutingPlan(c)); err != nil {
		t.Fatal(err)
	}
	for table, want := range map[string]string{"4700": "default via 198.51.100.1 dev up1", "4701": "default via 192.0.2.1 dev up2"} {
		if got := nsRun(t, ns, "ip", "route", "show", "table", table); !strings.Contains(got, want) {
			t.Errorf("table %s: want %q:\n%s", table, want, got)
		}
	}
}

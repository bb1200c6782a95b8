package rules

import (
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// In the kernel: Apply keeps a set the plan declares with its elements,
// deletes a set and a regular chain the plan no longer declares, adds a
// new set, moves a base chain whose priority changed, leaves a base chain
// the plan no longer has empty, and never touches another table.
func TestApplyNetns(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "nft", "add table ip other; add set ip other s { type ipv4_addr; }; add element ip other s { 10.9.9.9 }")
	plan := Plan{Table: "pgr", WAN: "wan0", Queue: 47, FailOpen: true, MSS: MSSClamp{Mode: MSSAuto}, NetNS: int(h)}
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	// extra adds, after the plan's own, a set "kept" (and "fresh" if
	// asked) looked up by a rule in the regular chain "sub", and a base
	// chain "moving" at prio.
	extra := func(sets []string, sub bool, prio int32, moving bool) fillFunc {
		return func(c *nftables.Conn, tb *nftables.Table, p Plan, impl QueueImpl) {
			addRules(c, tb, p, impl)
			var kept *nftables.Set
			for _, name := range sets {
				s := &nftables.Set{Table: tb, Name: name, KeyType: nftables.TypeIPAddr}
				if err := c.AddSet(s, nil); err != nil {
					t.Fatal(err)
				}
				if name == "kept" {
					kept = s
				}
			}
			if sub && kept != nil {
				ch := c.AddChain(&nftables.Chain{Name: "sub", Table: tb})
				c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
					&expr.Lookup{SourceRegister: 1, SetName: kept.Name, SetID: kept.ID},
					&expr.Counter{},
				}})
			}
			if moving {
				c.AddChain(&nftables.Chain{Name: "moving", Table: tb, Type: nftables.ChainTypeFilter,
					Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio))})
			}
		}
	}
	list := func() string {
		out, err := nsListTable(ns, "pgr")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := in.apply(plan, extra([]string{"kept"}, true, 10, true)); err != nil {
		t.Fatal(err)
	}
	nsRun(t, ns, "nft", "add element ip pgr kept { 10.1.2.3, 10.1.2.4 }")

	// Again, with MSS off and "moving" at another priority: the elements stay.
	plan.MSS = MSSClamp{Mode: MSSOff}
	if err := in.apply(plan, extra([]string{"kept"}, true, 20, true)); err != nil {
		t.Fatal(err)
	}
	got := list()
	for _, want := range []string{"10.1.2.3", "10.1.2.4", "chain sub", "ip saddr @kept counter",
		"chain moving", "type filter hook forward priority 20;"} {
		if !strings.Contains(got, want) {
			t.Errorf("after a reload keeping the set, the table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "maxseg") || strings.Contains(got, "forward priority 10;") {
		t.Errorf("the old rules or the old priority survived:\n%s", got)
	}

	// Without "kept", "sub" and "moving", with a new set "fresh".
	if err := in.apply(plan, extra([]string{"fresh"}, false, 0, false)); err != nil {
		t.Fatal(err)
	}
	got = list()
	for _, gone := range []string{"set kept", "10.1.2.3", "chain sub"} {
		if strings.Contains(got, gone) {
			t.Errorf("%q survived a reload that no longer declares it:\n%s", gone, got)
		}
	}
	for _, want := range []string{"set fresh", "chain moving", "chain queue_postrouting", "ip protocol gre notrack"} {
		if !strings.Contains(got, want) {
			t.Errorf("the table lacks %q:\n%s", want, got)
		}
	}
	if i := strings.Index(got, "chain moving {"); i >= 0 {
		block := strings.SplitN(got[i:], "}", 2)[0]
		if n := len(strings.Fields(strings.TrimSpace(block))); strings.Count(strings.TrimSpace(block), "\n") != 1 {
			t.Errorf("the base chain left behind is not empty (%d words):\n%s", n, block)
		}
	}
	if other := nsRun(t, ns, "nft", "list", "table", "ip", "other"); !strings.Contains(other, "10.9.9.9") {
		t.Errorf("another table was touched:\n%s", other)
	}
	// The plain Apply of the plan: the sets of the last fill go, as no
	// plan declares them.
	if err := in.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if got := list(); strings.Contains(got, "set fresh") {
		t.Errorf("a set no plan declares survived:\n%s", got)
	}
}

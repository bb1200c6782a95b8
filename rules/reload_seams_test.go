package rules

import (
	"strings"
	"testing"

	"pptpgw/conntrack"
)

// In the kernel: a reload of a table installed with the GRE fast path keeps
// the fast path's maps, their elements and the rules that use them. The
// reloaded configuration says gre_path as the operator wrote it (auto, the
// default), never resolved: Apply must not read that as "no fast path"
// (before, it deleted gre_out and gre_in with every live call's elements,
// and the flusher's every transaction failed from then on).
func TestApplyKeepsFastPathNetns(t *testing.T) {
	ns, h := testNetns(t)
	plan := Plan{Table: "pgf", WAN: "wan0", Queue: 48, FailOpen: true, MSS: MSSClamp{Mode: MSSAuto},
		NetNS: int(h), GREPath: GREPathAuto}
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	if !in.KernelGRE {
		t.Skip("this kernel cannot run the GRE fast path")
	}
	m, err := NewGREMaps(plan.Table, int(h))
	if err != nil {
		t.Fatal(err)
	}
	out := conntrack.GREOut{Key: conntrack.OutKey{InsideIP: [4]byte{10, 0, 0, 2}, PeerIP: [4]byte{198, 51, 100, 7}, PeerCallID: 0x1234},
		PublicIP: [4]byte{203, 0, 113, 1}}
	inb := conntrack.GREIn{Key: conntrack.InKey{PublicIP: [4]byte{203, 0, 113, 1}, PeerIP: [4]byte{198, 51, 100, 7}, OutsideCallID: 0x4321},
		InsideIP: [4]byte{10, 0, 0, 2}, InsideCallID: 0x0777}
	if err := m.Update(nil, nil, []conntrack.GREOut{out}, []conntrack.GREIn{inb}); err != nil {
		t.Fatal(err)
	}
	for _, gp := range []string{GREPathAuto, GREPathKernel, ""} {
		next := plan
		next.GREPath = gp
		next.MSS = MSSClamp{Mode: MSSOff} // something that changes
		if err := in.Apply(next); err != nil {
			t.Fatalf("gre_path %q: %v", gp, err)
		}
		got, err := nsListTable(ns, plan.Table)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"map " + SetGREOut, "map " + SetGREIn, "198.51.100.7", "@" + SetGREOut, "@" + SetGREIn} {
			if !strings.Contains(got, want) {
				t.Errorf("after a reload with gre_path %q the table lacks %q:\n%s", gp, want, got)
			}
		}
		if err := m.Update(nil, nil, nil, nil); err != nil {
			t.Errorf("gre_path %q: the flusher's maps after the reload: %v", gp, err)
		}
		if o, i, err := m.Read(); err != nil || len(o) != 1 || len(i) != 1 {
			t.Errorf("gre_path %q: elements after the reload: %d out, %d in, %v", gp, len(o), len(i), err)
		}
	}
}

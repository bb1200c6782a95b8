package rules

import (
	"slices"
	"strings"
	"testing"

	"pptpgw/conntrack"
	"pptpgw/qos/police"
)

// kfeat (issue 12): the fast path's maps for classes, policing and uplinks
// in a kernel (a throwaway netns).

func kfeatPlan(t *testing.T, h int, l police.Limit) Plan {
	p := goldenFastPathPlan(t)
	p.Table, p.NetNS, p.CallPolice, p.QueueImpl = "pgk", h, l, QueueAuto
	return p
}

func sortedOut(es []conntrack.GREOut) []conntrack.GREOut {
	for i := range es {
		es[i].Packets, es[i].Bytes, es[i].Dropped = 0, 0, 0
	}
	slices.SortFunc(es, func(a, b conntrack.GREOut) int { return int(a.Key.PeerCallID) - int(b.Key.PeerCallID) })
	return es
}

// Elements of every kind go in and come back as written (interface, class,
// policing), move between maps when a call's class, policing or interface
// changes (deleted as the kernel holds them, in one transaction), and go.
func TestFastPathQoSMapsNetns(t *testing.T) {
	_, h := testNetns(t)
	in, err := Install(kfeatPlan(t, int(h), police.Limit{BytesPerSecond: 125000, Burst: 15000}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	m, err := NewGREMaps("pgk", int(h))
	if err != nil {
		t.Fatal(err)
	}
	inside, peer, pub := [4]byte{10, 0, 0, 2}, [4]byte{198, 51, 100, 7}, [4]byte{203, 0, 113, 1}
	el := func(id uint16, ifx uint32, class uint8, pol bool) (conntrack.GREOut, conntrack.GREIn) {
		return conntrack.GREOut{Key: conntrack.OutKey{InsideIP: inside, PeerIP: peer, PeerCallID: id},
				OutData: conntrack.OutData{PublicIP: pub, IfIndex: ifx, Class: class, Policed: pol}},
			conntrack.GREIn{Key: conntrack.InKey{PublicIP: pub, PeerIP: peer, OutsideCallID: id + 100},
				InData: conntrack.InData{InsideIP: inside, InsideCallID: id + 200, IfIndex: ifx, Class: class, Policed: pol}}
	}
	o1, i1 := el(1, 1, 0, false) // plain
	o2, i2 := el(2, 1, 1, false) // classed
	o3, i3 := el(3, 1, 0, true)  // policed
	o4, i4 := el(4, 1, 1, true)  // both
	check := func(what string, wantOut []conntrack.GREOut, wantIn []conntrack.GREIn) {
		t.Helper()
		outs, ins, err := m.Read()
		if err != nil {
			t.Fatal(err)
		}
		if got := sortedOut(outs); !slices.Equal(got, sortedOut(wantOut)) {
			t.Errorf("%s: out elements\n%+v\nwant\n%+v", what, got, wantOut)
		}
		for i := range ins {
			ins[i].Packets, ins[i].Bytes, ins[i].Dropped = 0, 0, 0
		}
		slices.SortFunc(ins, func(a, b conntrack.GREIn) int { return int(a.Key.OutsideCallID) - int(b.Key.OutsideCallID) })
		if !slices.Equal(ins, wantIn) {
			t.Errorf("%s: in elements\n%+v\nwant\n%+v", what, ins, wantIn)
		}
	}
	if err := m.Update(nil, nil, []conntrack.GREOut{o1, o2, o3, o4}, []conntrack.GREIn{i1, i2, i3, i4}); err != nil {
		t.Fatal(err)
	}
	check("added", []conntrack.GREOut{o1, o2, o3, o4}, []conntrack.GREIn{i1, i2, i3, i4})

	// Call 1 becomes classed and policed, call 2 plain, call 3 moves to
	// interface 7; each deletion names what the kernel holds.
	n1o, n1i := el(1, 1, 1, true)
	n2o, n2i := el(2, 1, 0, false)
	n3o, n3i := el(3, 7, 0, true)
	if err := m.Update([]conntrack.GREOut{o1, o2, o3}, []conntrack.GREIn{i1, i2, i3},
		[]conntrack.GREOut{n1o, n2o, n3o}, []conntrack.GREIn{n1i, n2i, n3i}); err != nil {
		t.Fatal(err)
	}
	check("changed", []conntrack.GREOut{n1o, n2o, n3o, o4}, []conntrack.GREIn{n1i, n2i, n3i, i4})

	// Deleting by the wrong held data fails (and changes nothing).
	if err := m.Update([]conntrack.GREOut{o3}, nil, nil, nil); err == nil {
		t.Error("deleting call 3's element by its old interface succeeded")
	}
	if err := m.Update([]conntrack.GREOut{n1o, n2o, n3o, o4}, []conntrack.GREIn{n1i, n2i, n3i, i4}, nil, nil); err != nil {
		t.Fatal(err)
	}
	check("deleted", nil, nil)
}

// A table of the type before kfeat (keys without the interface, no maps
// for classed calls), as an older daemon left it: nothing to adopt, no
// error, and Install replaces it with the new types.
func TestFastPathOlderMapsNetns(t *testing.T) {
	ns, h := testNetns(t)
	// No table at all (a first start): nothing, and no error.
	if outs, ins, err := ReadGREElements("pgk", int(h)); err != nil || len(outs)+len(ins) != 0 {
		t.Fatalf("no table: %v %v %v, want nothing and no error", outs, ins, err)
	}
	nsRun(t, ns, "nft", `add table ip pgk
add map ip pgk gre_out { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; counter; }
add map ip pgk gre_in { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }
add element ip pgk gre_out { 10.0.0.2 . 198.51.100.7 . 5 : 203.0.113.1 }`)
	outs, ins, err := ReadGREElements("pgk", int(h))
	if err != nil || len(outs) != 0 || len(ins) != 0 {
		t.Fatalf("older maps: %v %v %v, want nothing and no error", outs, ins, err)
	}
	in, err := Install(kfeatPlan(t, int(h), police.Limit{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	out, err := nsListTable(ns, "pgk")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "map gre_out {\n\t\ttype ipv4_addr . ipv4_addr . inet_service . iface_index : ipv4_addr") ||
		strings.Contains(out, "10.0.0.2") || !strings.Contains(out, "map gre_outq") {
		t.Errorf("after Install:\n%s", out)
	}
	if outs, ins, err := ReadGREElements("pgk", int(h)); err != nil || len(outs)+len(ins) != 0 {
		t.Errorf("new maps: %v %v %v", outs, ins, err)
	}
}

// A reload that changes the policer's rate replaces the dynamic sets (new
// name, the old one gone) in its batch and keeps every element; one that
// drops the classes and policing keeps their chains, which elements of
// calls set up before still jump to.
func TestFastPathReloadPolicerNetns(t *testing.T) {
	ns, h := testNetns(t)
	a := police.Limit{BytesPerSecond: 125000, Burst: 15000}
	in, err := Install(kfeatPlan(t, int(h), a))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	m, err := NewGREMaps("pgk", int(h))
	if err != nil {
		t.Fatal(err)
	}
	o := conntrack.GREOut{Key: conntrack.OutKey{InsideIP: [4]byte{10, 0, 0, 2}, PeerIP: [4]byte{198, 51, 100, 7}, PeerCallID: 5},
		OutData: conntrack.OutData{PublicIP: [4]byte{203, 0, 113, 1}, IfIndex: 1, Class: 1, Policed: true}}
	if err := m.Update(nil, nil, []conntrack.GREOut{o}, nil); err != nil {
		t.Fatal(err)
	}
	b := police.Limit{BytesPerSecond: 250000, Burst: 300000}
	if err := in.Apply(kfeatPlan(t, int(h), b)); err != nil {
		t.Fatal(err)
	}
	out, _ := nsListTable(ns, "pgk")
	if !strings.Contains(out, "set "+greLimName(true, b)) || strings.Contains(out, "set "+greLimName(true, a)) ||
		!strings.Contains(out, "limit rate over 250000 bytes/second burst 50000 bytes") {
		t.Errorf("after the rate change:\n%s", out)
	}
	if outs, _, err := m.Read(); err != nil || len(outs) != 1 || outs[0].OutData != o.OutData {
		t.Errorf("the element after the reload: %+v %v", outs, err)
	}
	p := kfeatPlan(t, int(h), police.Limit{})
	p.Classes = nil
	if err := in.Apply(p); err != nil {
		t.Fatal(err)
	}
	out, _ = nsListTable(ns, "pgk")
	for _, ch := range []string{"chain gre_out_c1p", "chain gre_in_c1", "chain gre_out_c0p", "set " + greLimName(true, b)} {
		if !strings.Contains(out, ch) {
			t.Errorf("a reload without classes and policing dropped %q:\n%s", ch, out)
		}
	}
	if outs, _, err := m.Read(); err != nil || len(outs) != 1 {
		t.Errorf("the element after the second reload: %+v %v", outs, err)
	}
}

// Elements to adopt whose chain the plan lacks (a class or a policer the
// configuration dropped since the state snapshot) are left out: one would
// fail the whole install. The others are kept.
func TestAdoptableNeedsChains(t *testing.T) {
	p := Plan{fpClasses: 2, AdoptOut: []conntrack.GREOut{
		{OutData: conntrack.OutData{Class: 0}},
		{OutData: conntrack.OutData{Class: 2}},
		{OutData: conntrack.OutData{Class: 3}},
		{OutData: conntrack.OutData{Class: 1, Policed: true}},
	}, AdoptIn: []conntrack.GREIn{{InData: conntrack.InData{Class: 3}}, {InData: conntrack.InData{Policed: true}}}}
	outs, ins := adoptable(p)
	if len(outs) != 2 || outs[1].Class != 2 || len(ins) != 0 {
		t.Errorf("without policing: %+v %+v", outs, ins)
	}
	p.fpPolice = police.Limit{BytesPerSecond: 1000, Burst: 2000}
	outs, ins = adoptable(p)
	if len(outs) != 3 || !outs[2].Policed || len(ins) != 1 || !ins[0].Policed {
		t.Errorf("with policing: %+v %+v", outs, ins)
	}
}

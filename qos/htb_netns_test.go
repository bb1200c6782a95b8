package qos

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/vishvananda/netlink"

	"pptpgw/internal/nstest"
)

// The Shaper in a fresh namespace, on a veth pair: Apply builds the tree,
// applying the same config again changes nothing, a changed config
// changes rates and leaves in place, a new default class rebuilds the
// tree, an interface dropped from the config loses its tree, Close removes
// what is left, and a root qdisc the Shaper did not create is left alone by
// Close.
func TestShaperApplyClose(t *testing.T) {
	nstest.Run(t, func() {
		var b [2]byte
		_, _ = rand.Read(b[:])
		a, z := "qa"+hex.EncodeToString(b[:]), "qz"+hex.EncodeToString(b[:])
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: z}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{a, z} {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		tree := func(bulkRate Rate, withPPTP bool) []Tree {
			t := Tree{Interface: a, Rate: 20e6, Default: 2, Leaves: []Leaf{
				{Index: 0, Name: "interactive", Priority: 1, Rate: 2e6, Ceil: 20e6},
				{Index: 2, Name: "bulk", Priority: 7, Rate: bulkRate, Ceil: 20e6},
			}}
			if withPPTP {
				t.Leaves = append(t.Leaves, Leaf{Index: 1, Name: "pptp", Priority: 2, Rate: 5e6, Ceil: 20e6})
			}
			return []Tree{t}
		}
		s := NewShaper(nil)
		if err := s.Apply(tree(10e6, true)); err != nil {
			t.Fatal(err)
		}
		if k := s.LeafKind(); k != LeafFQCodel && k != LeafSFQ && k != LeafPfifo {
			t.Fatalf("leaf kind %q", k)
		}
		ids := func() map[uint32]uint64 {
			t.Helper()
			l, _ := netlink.LinkByName(a)
			cs, err := netlink.ClassList(l, RootHandle)
			if err != nil {
				t.Fatal(err)
			}
			m := map[uint32]uint64{}
			for _, c := range cs {
				h := c.(*netlink.HtbClass)
				m[h.Handle] = h.Rate
			}
			return m
		}
		want := map[uint32]uint64{LinkClassID: 20e6 / 8, ClassID(0): 2e6 / 8, ClassID(1): 5e6 / 8, ClassID(2): 10e6 / 8}
		if got := ids(); !equal(got, want) {
			t.Fatalf("classes %v, want %v", got, want)
		}
		// Same config again: nothing changes.
		if err := s.Apply(tree(10e6, true)); err != nil {
			t.Fatal(err)
		}
		if got := ids(); !equal(got, want) {
			t.Fatalf("after a second Apply: %v", got)
		}
		// Changed: bulk's rate, pptp gone.
		if err := s.Apply(tree(15e6, false)); err != nil {
			t.Fatal(err)
		}
		want = map[uint32]uint64{LinkClassID: 20e6 / 8, ClassID(0): 2e6 / 8, ClassID(2): 15e6 / 8}
		if got := ids(); !equal(got, want) {
			t.Fatalf("after a change: %v, want %v", got, want)
		}
		st, err := ReadStats(tree(15e6, false))
		if err != nil || len(st) != 1 || !st[0].Present || st[0].Default != "bulk" || len(st[0].Classes) != 2 ||
			!st[0].Classes[0].Found || st[0].Classes[0].ID != "1:10" || st[0].Classes[1].ID != "1:30" {
			t.Fatalf("ReadStats = %+v, %v", st, err)
		}
		// A new default class: a new tree with it.
		nd := tree(15e6, false)
		nd[0].Default = 0
		if err := s.Apply(nd); err != nil {
			t.Fatal(err)
		}
		if got := ids(); !equal(got, want) {
			t.Fatalf("after a new default: %v, want %v", got, want)
		}
		if st, _ := ReadStats(nd); len(st) != 1 || st[0].Default != "interactive" {
			t.Fatalf("ReadStats after a new default = %+v", st)
		}
		l, _ := netlink.LinkByName(a)
		qs, _ := netlink.QdiscList(l)
		for _, q := range qs {
			if h, ok := q.(*netlink.Htb); ok && h.Defcls != ClassID(0)&0xffff {
				t.Fatalf("root default %#x, want %#x", h.Defcls, ClassID(0)&0xffff)
			}
		}
		// Not in the config any more: its root goes.
		if err := s.Apply(nil); err != nil {
			t.Fatal(err)
		}
		if root(t, a) == "htb" {
			t.Fatal("root still there after Apply(nil)")
		}
		// Close removes what it created, not someone else's root.
		if err := s.Apply(tree(10e6, true)); err != nil {
			t.Fatal(err)
		}
		lz, _ := netlink.LinkByName(z)
		other := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: lz.Attrs().Index, Handle: RootHandle, Parent: netlink.HANDLE_ROOT})
		if err := netlink.QdiscAdd(other); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if root(t, a) == "htb" || root(t, z) != "htb" {
			t.Fatalf("after Close: %s root %q, %s root %q", a, root(t, a), z, root(t, z))
		}
		// An interface that does not exist is an error naming it.
		if err := NewShaper(nil).Apply([]Tree{{Interface: "nosuch0", Rate: 1e6}}); err == nil {
			t.Fatal("Apply on a missing interface succeeded")
		}
	})
}

// A tree left by a run that was killed (its Shaper never closed) is
// replaced by the next run's: HTB cannot change its root in place, so
// applying over it used to fail with EINVAL and the daemon could not start.
func TestShaperReplacesLeftTree(t *testing.T) {
	nstest.Run(t, func() {
		var b [2]byte
		_, _ = rand.Read(b[:])
		a, z := "qa"+hex.EncodeToString(b[:]), "qz"+hex.EncodeToString(b[:])
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: z}); err != nil {
			t.Fatal(err)
		}
		tree := func(def int, rate Rate) []Tree {
			return []Tree{{Interface: a, Rate: 20e6, Default: def, Leaves: []Leaf{
				{Index: 0, Name: "interactive", Priority: 1, Rate: 2e6, Ceil: 20e6},
				{Index: 1, Name: "bulk", Priority: 7, Rate: rate, Ceil: 20e6},
			}}}
		}
		if err := NewShaper(nil).Apply(tree(1, 10e6)); err != nil { // "killed": never closed
			t.Fatal(err)
		}
		s := NewShaper(nil)
		if err := s.Apply(tree(0, 5e6)); err != nil {
			t.Fatalf("apply over the tree a killed run left: %v", err)
		}
		l, _ := netlink.LinkByName(a)
		cs, err := netlink.ClassList(l, RootHandle)
		if err != nil {
			t.Fatal(err)
		}
		rates := map[uint32]uint64{}
		for _, c := range cs {
			rates[c.Attrs().Handle] = c.(*netlink.HtbClass).Rate
		}
		if rates[ClassID(1)] != 5e6/8 {
			t.Errorf("bulk class after the new run: %d bytes/s, want %d", rates[ClassID(1)], uint64(5e6/8))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if r := root(t, a); r == "htb" {
			t.Fatalf("after Close the root is still %q", r)
		}
	})
}

func root(t *testing.T, name string) string {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	qs, _ := netlink.QdiscList(l)
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q.Type()
		}
	}
	return ""
}

func equal(a, b map[uint32]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

package conntrack

import (
	"math/rand/v2"
	"testing"
)

// The calls' hash sets (callset.go) behave as Go maps keyed by the same
// keys, through growth, shrinking, wrapped clusters and replacements.
func TestCallSetAgainstMap(t *testing.T) {
	for _, out := range []bool{false, true} {
		s := newCallSet(out)
		ref := map[[2]uint64]*Call{}
		key := func(c *Call) [2]uint64 { a, b := s.keyOf(c); return [2]uint64{a, uint64(b)} }
		r := rand.New(rand.NewPCG(3, 4))
		mk := func() *Call {
			// Few distinct keys, so that puts replace and clusters form.
			ip := [4]byte{10, 0, 0, byte(r.IntN(4))}
			peer := [4]byte{198, 51, 100, byte(r.IntN(4))}
			id := uint16(r.IntN(300))
			return &Call{InsideIP: ip, PublicIP: ip, PeerIP: peer, OutsideCallID: id, PeerCallID: id}
		}
		for step := range 60000 {
			c := mk()
			k := key(c)
			// Grow to thousands, then shrink to a few, twice.
			grow := (step/15000)%2 == 0
			switch op := r.IntN(10); {
			case op < 5 && grow || op < 2:
				s.put(c)
				ref[k] = c
			case op < 8:
				a, b := s.keyOf(c)
				got := s.remove(a, b)
				if got != ref[k] {
					t.Fatalf("out=%v step %d: remove returned %p, want %p", out, step, got, ref[k])
				}
				delete(ref, k)
			default:
				a, b := s.keyOf(c)
				if got := s.find(a, b); got != ref[k] {
					t.Fatalf("out=%v step %d: find %p, want %p", out, step, got, ref[k])
				}
			}
			if s.len() != len(ref) {
				t.Fatalf("out=%v step %d: len %d, want %d", out, step, s.len(), len(ref))
			}
			if step%997 == 0 {
				for k, c := range ref {
					if got := s.find(k[0], uint16(k[1])); got != c {
						t.Fatalf("out=%v step %d: lost %v", out, step, k)
					}
				}
				if n := len(s.all()); n != len(ref) || s.n*4 > len(s.slots)*3 {
					t.Fatalf("out=%v step %d: %d in all(), %d slots for %d", out, step, n, len(s.slots), len(ref))
				}
			}
		}
		if len(s.slots) > 64 && s.n*16 < len(s.slots) {
			t.Fatalf("out=%v: %d slots for %d calls: not shrunk", out, len(s.slots), s.n)
		}
	}
}

// Keys differing in one field only land on different home slots (the
// seeded hash mixes every field).
func TestCallSetSpreads(t *testing.T) {
	s := newCallSet(false)
	s.resize(1 << 16)
	homes := map[int]bool{}
	for id := range 1000 {
		homes[s.slot(pack([4]byte{203, 0, 113, 1}, [4]byte{198, 51, 100, 7}), uint16(id))] = true
	}
	for ip := range 256 {
		homes[s.slot(pack([4]byte{203, 0, 113, 1}, [4]byte{198, 51, 100, byte(ip)}), 7)] = true
	}
	if len(homes) < 1200 {
		t.Fatalf("1256 keys on %d home slots of 65536", len(homes))
	}
}

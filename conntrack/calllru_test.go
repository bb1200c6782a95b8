package conntrack

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// The intrusive LRU behaves as golang-lru's simplelru, which the table used
// before (issue 12, memory): the same order, the same evictions.
func TestCallLRUAgainstSimpleLRU(t *testing.T) {
	var gotEv, wantEv []InKey
	l := newCallLRU(func(k InKey, c *Call) {
		if c.inKey() != k {
			t.Fatalf("evicted %v with call of %v", k, c.inKey())
		}
		gotEv = append(gotEv, k)
	})
	ref, _ := simplelru.NewLRU[InKey, *Call](1000, func(k InKey, _ *Call) { wantEv = append(wantEv, k) })
	calls := make([]*Call, 64)
	for i := range calls {
		calls[i] = &Call{PublicIP: [4]byte{192, 0, 2, 1}, PeerIP: [4]byte{198, 51, 100, 1}, OutsideCallID: uint16(i + 1)}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for step := range 20000 {
		c := calls[r.IntN(len(calls))]
		k := c.inKey()
		switch r.IntN(6) {
		case 0, 1:
			if !ref.Contains(k) {
				l.Add(k, c)
				ref.Add(k, c)
			}
		case 2:
			_, ok1 := l.Get(k)
			_, ok2 := ref.Get(k)
			if ok1 != ok2 {
				t.Fatalf("step %d: Get %v", step, ok1)
			}
		case 3:
			if l.Remove(k) != ref.Remove(k) {
				t.Fatalf("step %d: Remove", step)
			}
		case 4:
			x1, ok1 := l.Peek(k)
			x2, ok2 := ref.Peek(k)
			if ok1 != ok2 || x1 != x2 || l.Contains(k) != ref.Contains(k) {
				t.Fatalf("step %d: Peek", step)
			}
		case 5:
			if r.IntN(200) == 0 {
				l.Purge()
				ref.Purge()
				slices.SortFunc(gotEv, cmpInKey)
				slices.SortFunc(wantEv, cmpInKey) // Purge's order is the map's
			}
		}
		if !slices.Equal(l.Values(), ref.Values()) || l.Len() != ref.Len() {
			t.Fatalf("step %d: order %v, want %v", step, keys(l.Values()), keys(ref.Values()))
		}
		if !slices.Equal(gotEv, wantEv) {
			t.Fatalf("step %d: evicted %v, want %v", step, gotEv, wantEv)
		}
	}
}

func cmpInKey(a, b InKey) int { return int(a.OutsideCallID) - int(b.OutsideCallID) }

func keys(cs []*Call) []uint16 {
	var out []uint16
	for _, c := range cs {
		out = append(out, c.OutsideCallID)
	}
	return out
}

package nat

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"pptpgw/conntrack"
)

var (
	pk1 = PoolKey{[4]byte{203, 0, 113, 1}, [4]byte{198, 51, 100, 1}}
	pk2 = PoolKey{[4]byte{203, 0, 113, 1}, [4]byte{198, 51, 100, 2}}
)

// fixedRand returns starts from a list (then repeats the last one).
func fixedRand(starts ...uint32) func(uint32) uint32 {
	i := 0
	return func(n uint32) uint32 {
		v := starts[min(i, len(starts)-1)]
		i++
		return v % n
	}
}

func TestAllocCollisionProbes(t *testing.T) {
	clk := conntrack.NewFakeClock(time.Time{})
	// Every start is ID 100 (rand 99): the allocator must probe upward.
	a := NewAllocator(AllocatorConfig{Quarantine: time.Minute, Rand: fixedRand(99)}, clk)
	for want := uint16(100); want < 110; want++ {
		got, err := a.Alloc(pk1)
		if err != nil || got != want {
			t.Fatalf("Alloc = %d, %v; want %d", got, err, want)
		}
	}
	if s := a.Stats(); s.Collisions != 9 || s.Allocated != 10 {
		t.Fatalf("stats %+v", s)
	}
	// Another peer has its own pool: 100 is free there.
	if got, _ := a.Alloc(pk2); got != 100 {
		t.Fatalf("pool 2 got %d", got)
	}
}

func TestAllocWrapsAndSkipsZero(t *testing.T) {
	clk := conntrack.NewFakeClock(time.Time{})
	a := NewAllocator(AllocatorConfig{Rand: fixedRand(65534)}, clk) // start 65535
	for _, want := range []uint16{65535, 1, 2} {
		if got, err := a.Alloc(pk1); err != nil || got != want {
			t.Fatalf("Alloc = %d, %v; want %d", got, err, want)
		}
	}
}

func TestAllocExhaustionAndQuarantine(t *testing.T) {
	clk := conntrack.NewFakeClock(time.Time{})
	a := NewAllocator(AllocatorConfig{Quarantine: 2 * time.Minute}, clk)
	seen := make(map[uint16]bool)
	for range PoolSize {
		id, err := a.Alloc(pk1)
		if err != nil {
			t.Fatal(err)
		}
		if id == 0 || seen[id] {
			t.Fatalf("bad or duplicate id %d", id)
		}
		seen[id] = true
	}
	if _, err := a.Alloc(pk1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
	if !a.Release(pk1, 4242) {
		t.Fatal("Release")
	}
	if a.Release(pk1, 4242) {
		t.Fatal("double Release accepted")
	}
	if u, q := a.InUse(pk1); u != PoolSize-1 || q != 1 {
		t.Fatalf("InUse = %d, %d", u, q)
	}
	clk.Advance(2*time.Minute - time.Second)
	if _, err := a.Alloc(pk1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("quarantined ID reused early: %v", err)
	}
	clk.Advance(time.Second)
	if id, err := a.Alloc(pk1); err != nil || id != 4242 {
		t.Fatalf("after quarantine: %d, %v", id, err)
	}
	if s := a.Stats(); s.Exhausted != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAllocQuarantineSkipsRecentlyReleased(t *testing.T) {
	clk := conntrack.NewFakeClock(time.Time{})
	a := NewAllocator(AllocatorConfig{Quarantine: time.Minute, Rand: fixedRand(9)}, clk)
	id, _ := a.Alloc(pk1) // 10
	a.Release(pk1, id)
	if got, _ := a.Alloc(pk1); got != 11 {
		t.Fatalf("got %d, want 11 (10 is quarantined)", got)
	}
	clk.Advance(time.Minute)
	if got, _ := a.Alloc(pk1); got != 10 {
		t.Fatalf("got %d, want 10 after quarantine", got)
	}
}

func TestAllocForgetsEmptyPools(t *testing.T) {
	clk := conntrack.NewFakeClock(time.Time{})
	a := NewAllocator(AllocatorConfig{Quarantine: time.Minute}, clk)
	id, _ := a.Alloc(pk1)
	a.Release(pk1, id)
	a.Tick()
	if len(a.pools) != 1 {
		t.Fatal("pool with a quarantined ID forgotten")
	}
	clk.Advance(time.Minute)
	a.Tick()
	if len(a.pools) != 0 {
		t.Fatalf("%d pools left", len(a.pools))
	}
	if a.Release(pk1, id) {
		t.Fatal("release into a forgotten pool")
	}
}

// refModel is the allocator written naively: a map of states, linear scan.
type refModel struct {
	used  map[uint16]bool
	quar  map[uint16]time.Time
	q     time.Duration
	clock func() time.Time
}

func (m *refModel) alloc(start uint32) (uint16, bool) {
	now := m.clock()
	for i := range uint32(PoolSize) {
		id := uint16(1 + (start+i)%PoolSize)
		if m.used[id] {
			continue
		}
		if until, ok := m.quar[id]; ok && now.Before(until) {
			continue
		}
		delete(m.quar, id)
		m.used[id] = true
		return id, true
	}
	return 0, false
}

func (m *refModel) release(id uint16) bool {
	if !m.used[id] {
		return false
	}
	delete(m.used, id)
	if m.q > 0 {
		m.quar[id] = m.clock().Add(m.q)
	}
	return true
}

// TestAllocAgainstReference drives the allocator and the naive model with the
// same random starts, releases and clock steps and requires identical results.
// Starts are drawn from a narrow window so that probing and quarantine
// collisions happen constantly.
func TestAllocAgainstReference(t *testing.T) {
	for seed := range uint64(5) {
		r := rand.New(rand.NewPCG(seed, 99))
		clk := conntrack.NewFakeClock(time.Time{})
		var start uint32
		q := time.Duration(seed) * 10 * time.Second // seed 0: no quarantine
		a := NewAllocator(AllocatorConfig{Quarantine: q, Rand: func(uint32) uint32 { return start }}, clk)
		m := &refModel{used: map[uint16]bool{}, quar: map[uint16]time.Time{}, q: q, clock: clk.Now}
		var live []uint16
		for op := range 10000 {
			switch x := r.IntN(20); {
			case x < 9:
				start = uint32(r.IntN(300))
				got, err := a.Alloc(pk1)
				want, ok := m.alloc(start)
				if (err == nil) != ok || got != want {
					t.Fatalf("seed %d op %d: Alloc = %d, %v; model %d, %v", seed, op, got, err, want, ok)
				}
				if ok {
					live = append(live, got)
				}
			case x < 18 && len(live) > 0:
				i := r.IntN(len(live))
				id := live[i]
				if r.IntN(20) == 0 {
					id = uint16(r.IntN(400)) // sometimes release garbage
				} else {
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
				}
				if got, want := a.Release(pk1, id), m.release(id); got != want {
					t.Fatalf("seed %d op %d: Release(%d) = %v, model %v", seed, op, id, got, want)
				}
			default:
				clk.Advance(time.Duration(r.IntN(5000)) * time.Millisecond)
			}
		}
		if s := a.Stats(); s.Collisions < 500 {
			t.Fatalf("seed %d: only %d collisions: the test does not exercise probing", seed, s.Collisions)
		}
	}
}

func BenchmarkAllocRelease(b *testing.B) {
	a := NewAllocator(AllocatorConfig{}, conntrack.SystemClock{})
	b.ReportAllocs()
	for b.Loop() {
		id, _ := a.Alloc(pk1)
		a.Release(pk1, id)
	}
}

package police

import (
	"math/rand/v2"
	"testing"
)

// A naive reference: tokens in float bytes, refilled by elapsed time.
type ref struct {
	tokens float64
	last   int64
}

func (r *ref) allow(l Limit, now int64, n int) bool {
	r.tokens = min(float64(l.Burst), r.tokens+float64(now-r.last)*float64(l.BytesPerSecond)/1e9)
	r.last = now
	if float64(n) > r.tokens+1e-6*float64(n) {
		return false
	}
	r.tokens -= float64(n)
	return true
}

// The bucket holds a flow sending at twice the rate to the rate (plus one
// burst), and agrees with the naive token bucket on (almost) every packet.
func TestBucketAgainstReference(t *testing.T) {
	l := Limit{BytesPerSecond: 1_250_000, Burst: 100 << 10} // 10mbit, 100kb
	var b Bucket
	r := ref{tokens: float64(l.Burst)}
	rng := rand.New(rand.NewPCG(1, 2))
	now, passed, disagree := int64(0), 0, 0
	const dur = int64(10e9)
	for now < dur {
		n := 64 + rng.IntN(1400)
		ok := b.Allow(l, now, n)
		if ok != r.allow(l, now, n) {
			disagree++
		}
		if ok {
			passed += n
		}
		// 2.5 MB/s on average: twice the rate.
		now += int64(n) * 1e9 / 2_500_000 * int64(rng.IntN(3)) // bursty: 0..2 gaps
	}
	want := float64(l.BytesPerSecond)*float64(dur)/1e9 + float64(l.Burst)
	if got := float64(passed); got > want*1.001 || got < want*0.99 {
		t.Errorf("passed %.0f bytes in 10 s, want %.0f (rate x time + burst)", got, want)
	}
	// Rounding of per-packet costs (integer ns) may flip a packet at the
	// edge; never more than a handful in ~20000.
	if disagree > 20 {
		t.Errorf("disagrees with the reference on %d packets", disagree)
	}
}

func TestBucketBurstAndIdle(t *testing.T) {
	l := Limit{BytesPerSecond: 1000, Burst: 3000}
	var b Bucket
	for i := range 3 {
		if !b.Allow(l, 0, 1000) {
			t.Fatalf("packet %d of the burst dropped", i)
		}
	}
	if b.Allow(l, 0, 1) {
		t.Fatal("over the burst passed")
	}
	if !b.Allow(l, 1e9, 1000) || b.Allow(l, 1e9, 1000) {
		t.Fatal("one second refills exactly 1000 bytes")
	}
	// A long idle period refills the burst, not more.
	for i := range 3 {
		if !b.Allow(l, 100e9, 1000) {
			t.Fatalf("after idle, packet %d dropped", i)
		}
	}
	if b.Allow(l, 100e9, 1000) {
		t.Fatal("idle time accumulated beyond the burst")
	}
	if !(&Bucket{}).Allow(Limit{}, 0, 65535) {
		t.Fatal("zero Limit polices")
	}
}

func TestBucketNoAllocs(t *testing.T) {
	l := Limit{BytesPerSecond: 1e6, Burst: 1e5}
	var b Bucket
	now := int64(0)
	if a := testing.AllocsPerRun(1000, func() { now += 1000; b.Allow(l, now, 1500) }); a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

// Wait says exactly when Allow would pass the packet.
func TestWaitTake(t *testing.T) {
	l := Limit{BytesPerSecond: 1000, Burst: 2000}
	var b Bucket
	if b.Wait(l, 0, 1000) != 0 {
		t.Fatal("full bucket waits")
	}
	b.Take(l, 0, 1000)
	b.Take(l, 0, 1000)
	w := b.Wait(l, 0, 1000)
	if w != 1e9 {
		t.Fatalf("Wait = %d, want 1 s", w)
	}
	probe := b
	if probe.Allow(l, w-1, 1000) {
		t.Fatal("Allow passed before Wait said")
	}
	if !b.Allow(l, w, 1000) {
		t.Fatal("Allow refused when Wait said")
	}
}

// Package police is a token bucket for policing: a packet over the rate is
// dropped, not delayed. It has no clock and no lock: the caller passes the
// time and serialises calls (the call table's lock does, for GRE).
package police

// Limit is a policer's setting; the zero Limit polices nothing.
type Limit struct {
	BytesPerSecond uint64
	Burst          uint32 // bytes of credit an idle bucket holds
}

// Enabled reports whether l polices anything.
func (l Limit) Enabled() bool { return l.BytesPerSecond > 0 }

// Bucket is one token bucket in its GCRA form: tat is the theoretical
// arrival time (ns, on the caller's time line) at which the bucket would be
// full again. A packet of n bytes passes if, after adding its cost
// (n/rate), the bucket is no more than Burst bytes' worth of time ahead of
// now. Integer arithmetic only: a cost is n*1e9/rate ns (n <= 65535, so
// no overflow), the tolerance Burst*1e9/rate (Burst < 2^32: < 4.3e18).
// The zero Bucket is full.
type Bucket struct{ tat int64 }

// Allow reports whether a packet of n bytes at time now (ns) conforms to
// l, and takes its cost from the bucket if it does. Packets that do not
// conform take nothing: they are dropped.
func (b *Bucket) Allow(l Limit, now int64, n int) bool {
	if l.BytesPerSecond == 0 {
		return true
	}
	cost := int64(uint64(n) * 1e9 / l.BytesPerSecond)
	tau := int64(uint64(l.Burst) * 1e9 / l.BytesPerSecond)
	tat := max(b.tat, now)
	if tat+cost-now > tau {
		return false
	}
	b.tat = tat + cost
	return true
}

// Wait returns how long (ns) after now a packet of n bytes would conform
// to l (0: it conforms now). It changes nothing: a shaper waits that long
// and then calls Take.
func (b *Bucket) Wait(l Limit, now int64, n int) int64 {
	if l.BytesPerSecond == 0 {
		return 0
	}
	cost := int64(uint64(n) * 1e9 / l.BytesPerSecond)
	tau := int64(uint64(l.Burst) * 1e9 / l.BytesPerSecond)
	return max(max(b.tat, now)+cost-tau-now, 0)
}

// Take charges a packet of n bytes at now, whether it conforms or not.
func (b *Bucket) Take(l Limit, now int64, n int) {
	if l.BytesPerSecond == 0 {
		return
	}
	b.tat = max(b.tat, now) + int64(uint64(n)*1e9/l.BytesPerSecond)
}

package nat

import (
	"errors"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	"pptpgw/conntrack"
)

// ErrExhausted is returned by Allocator.Alloc when every call ID of a
// (public IP, peer IP) pool is in use or quarantined.
var ErrExhausted = errors.New("nat: outside call IDs exhausted for this public/peer pair")

// PoolKey selects a call-ID pool. The peer demultiplexes GRE by its own
// address and the call ID we announced, so IDs must be unique per
// (public IP, peer IP) and may repeat across peers.
type PoolKey struct {
	PublicIP, PeerIP [4]byte
}

// PoolSize is the number of usable call IDs per pool: 1..65535. Call ID 0 is
// never handed out (several implementations treat it as "no call").
const PoolSize = 65535

// AllocatorConfig configures an Allocator.
type AllocatorConfig struct {
	// Quarantine is how long a released ID is held back before reuse, so
	// that late GRE or control messages of the old call cannot reach a new
	// one. 0 means no quarantine (conntrack.Timeouts.WithDefaults turns a zero
	// Timeouts.Quarantine into the 2 minute default before it gets here).
	Quarantine time.Duration
	// Rand returns a uniform value in [0, n). nil means math/rand/v2. Tests
	// inject a deterministic source.
	Rand func(n uint32) uint32
}

// Allocator hands out outside call IDs: per pool, from a random start,
// collision-checked against IDs in use and in quarantine. Safe for
// concurrent use; its mutex is the innermost lock of the gateway (see the
// lock order in the package comment).
type Allocator struct {
	clk  conntrack.Clock
	q    time.Duration
	rand func(n uint32) uint32

	mu    sync.Mutex
	pools map[PoolKey]*pool
	stats AllocStats
}

// AllocStats counts allocator events. Released counts every release;
// ReleasedUnused those freed at once (ReleaseUnused).
type AllocStats struct {
	Allocated, Released, ReleasedUnused, Exhausted, Collisions uint64
}

type quarantined struct {
	id    uint16
	until time.Time
}

// pool is a bitset of busy IDs (in use or quarantined) plus the quarantine
// FIFO. All quarantines last the same time, so the FIFO is ordered by expiry.
type pool struct {
	busy  idSet
	quar  idSet // subset of busy: quarantined, not in use
	inUse int
	fifo  []quarantined
}

// idSet is a set of call IDs, a bitset in 16 chunks of 4096 IDs (512 bytes)
// allocated on first use: a pool with a handful of calls (there is one pool
// per (public IP, peer IP), so one per server a flood talks to) costs about
// 0.8 KB instead of 16 KB, a full one the same as a flat bitset.
type idSet struct {
	chunks [65536 / idChunk]*[idChunk / 64]uint64
}

const idChunk = 4096

func (s *idSet) has(id uint16) bool { return s.word(int(id>>6))&(1<<(id&63)) != 0 }

func (s *idSet) add(id uint16) {
	c := s.chunks[id/idChunk]
	if c == nil {
		c = new([idChunk / 64]uint64)
		s.chunks[id/idChunk] = c
	}
	c[id%idChunk>>6] |= 1 << (id & 63)
}

func (s *idSet) del(id uint16) {
	if c := s.chunks[id/idChunk]; c != nil {
		c[id%idChunk>>6] &^= 1 << (id & 63)
	}
}

// word returns the bits of IDs w*64 .. w*64+63 (0 in a chunk not allocated).
func (s *idSet) word(w int) uint64 {
	c := s.chunks[w/(idChunk/64)]
	if c == nil {
		return 0
	}
	return c[w%(idChunk/64)]
}

// NewAllocator returns an allocator. clk nil means the system clock.
func NewAllocator(cfg AllocatorConfig, clk conntrack.Clock) *Allocator {
	if clk == nil {
		clk = conntrack.SystemClock{}
	}
	r := cfg.Rand
	if r == nil {
		r = rand.Uint32N
	}
	q := max(cfg.Quarantine, 0)
	return &Allocator{clk: clk, q: q, rand: r, pools: make(map[PoolKey]*pool)}
}

// drain frees the quarantined IDs whose time is up.
func (p *pool) drain(now time.Time) {
	n := 0
	for n < len(p.fifo) && !now.Before(p.fifo[n].until) {
		id := p.fifo[n].id
		p.quar.del(id)
		p.busy.del(id)
		n++
	}
	if n > 0 {
		p.fifo = append(p.fifo[:0], p.fifo[n:]...)
	}
}

// scan returns the first free ID in [lo, hi), or -1.
func (p *pool) scan(lo, hi int) int {
	for i := lo; i < hi; {
		w := i >> 6
		free := ^p.busy.word(w) &^ (1<<(uint(i)&63) - 1)
		if free != 0 {
			if j := w<<6 + bits.TrailingZeros64(free); j < hi {
				return j
			}
			return -1
		}
		i = (w + 1) << 6
	}
	return -1
}

// Alloc returns a free outside call ID of pool k.
func (a *Allocator) Alloc(k PoolKey) (uint16, error) {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pools[k]
	if p == nil {
		// ID 0 is never scanned (scan starts at 1) and never released
		// (Release refuses it), so it needs no bit, nor a chunk for one.
		p = &pool{}
		a.pools[k] = p
	}
	p.drain(now)
	start := 1 + int(a.rand(PoolSize))
	id := p.scan(start, 65536)
	if id < 0 {
		id = p.scan(1, start)
	}
	if id < 0 {
		a.stats.Exhausted++
		return 0, ErrExhausted
	}
	if id != start {
		a.stats.Collisions++
	}
	p.busy.add(uint16(id))
	p.inUse++
	a.stats.Allocated++
	return uint16(id), nil
}

// Release hands id back to pool k; it becomes allocatable again after the
// quarantine. It reports false (and changes nothing) if id was not in use.
func (a *Allocator) Release(k PoolKey, id uint16) bool { return a.release(k, id, true) }

// ReleaseUnused hands back an id that never carried GRE (a call refused,
// failed, cleared or stopped before its first GRE packet; the engine keeps
// the quarantine for a request it gave up on unanswered): no late packet
// of the old call can reach a new one, so it is free at once,
// without quarantine. Otherwise a flood of calls that never carry
// anything would hold the pool for the quarantine after it stopped.
func (a *Allocator) ReleaseUnused(k PoolKey, id uint16) bool { return a.release(k, id, false) }

func (a *Allocator) release(k PoolKey, id uint16, quarantine bool) bool {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pools[k]
	if p == nil || id == 0 || !p.busy.has(id) || p.quar.has(id) {
		return false
	}
	p.inUse--
	a.stats.Released++
	if !quarantine {
		a.stats.ReleasedUnused++
	}
	if quarantine && a.q > 0 {
		p.quar.add(id)
		p.fifo = append(p.fifo, quarantined{id, now.Add(a.q)})
	} else {
		p.busy.del(id)
	}
	p.drain(now)
	// Empty pools are forgotten by Tick, not here: a pool that empties and
	// refills at once (one call at a time) would be reallocated each time.
	return true
}

// Tick frees expired quarantines and forgets empty pools.
func (a *Allocator) Tick() {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, p := range a.pools {
		p.drain(now)
		if p.inUse == 0 && len(p.fifo) == 0 {
			delete(a.pools, k)
		}
	}
}

// InUse returns how many IDs of pool k are in use and in quarantine.
func (a *Allocator) InUse(k PoolKey) (used, quarantined int) {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pools[k]
	if p == nil {
		return 0, 0
	}
	p.drain(now)
	return p.inUse, len(p.fifo)
}

// Stats returns the allocator counters.
func (a *Allocator) Stats() AllocStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

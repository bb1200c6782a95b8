package conntrack

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// Memory (issue 12): the table's two indexes of calls (inbound key: the
// primary one, in the LRU; outbound key: set-up calls) are hash sets of
// *Call, not Go maps. A map[InKey]*Call slot holds the key and the pointer
// (24 bytes, with padding), at a load between 7/16 and 7/8: about 43 bytes
// per call each. Here a slot is the pointer alone (the key is read from the
// call), at a load between 3/8 and 3/4: about 14 bytes per call.
//
// Open addressing with linear probing and backward-shift deletion (no
// tombstones), sized by powers of two, grown at a load of 3/4 and shrunk
// below 1/16 (so that a burst does not leave its size behind, unlike a Go
// map). The hash is keyed by a random per-set seed, so that keys chosen by
// peers (call IDs) cannot be made to collide without knowing it.

// callSet is a set of calls keyed by their inbound key (out false) or their
// outbound key (out true). A call's key must not change while it is in the
// set (Establish deletes a call before changing its peer call ID).
type callSet struct {
	slots []*Call
	n     int
	shift uint // 64 - log2(len(slots))
	out   bool
	seed  [3]uint64
}

const callSetMin = 8

func newCallSet(out bool) *callSet {
	s := &callSet{out: out, seed: [3]uint64{rand.Uint64(), rand.Uint64(), rand.Uint64()}}
	s.resize(callSetMin)
	return s
}

func pack(x, y [4]byte) uint64 {
	return uint64(binary.LittleEndian.Uint32(x[:])) | uint64(binary.LittleEndian.Uint32(y[:]))<<32
}

// keyOf returns c's key in the set, packed: two addresses and a call ID.
func (s *callSet) keyOf(c *Call) (uint64, uint16) {
	if s.out {
		return pack(c.InsideIP, c.PeerIP), c.PeerCallID
	}
	return pack(c.PublicIP, c.PeerIP), c.OutsideCallID
}

// slot is the home slot of key (a, b).
func (s *callSet) slot(a uint64, b uint16) int {
	x := a ^ s.seed[0]
	hi, lo := bits.Mul64(x, uint64(b)^s.seed[1]^0xa0761d6478bd642f)
	hi, lo = bits.Mul64(hi^lo^0xe7037ed1a0b428db, x^s.seed[2])
	return int((hi ^ lo) >> s.shift)
}

func (s *callSet) len() int { return s.n }

// find returns the call with key (a, b), nil if none.
func (s *callSet) find(a uint64, b uint16) *Call {
	mask := len(s.slots) - 1
	for i := s.slot(a, b); ; i = (i + 1) & mask {
		c := s.slots[i]
		if c == nil {
			return nil
		}
		if x, y := s.keyOf(c); x == a && y == b {
			return c
		}
	}
}

func (s *callSet) getIn(k InKey) *Call   { return s.find(pack(k.PublicIP, k.PeerIP), k.OutsideCallID) }
func (s *callSet) getOut(k OutKey) *Call { return s.find(pack(k.InsideIP, k.PeerIP), k.PeerCallID) }

// put adds c, replacing the call with the same key if there is one.
func (s *callSet) put(c *Call) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(len(s.slots) * 2)
	}
	a, b := s.keyOf(c)
	mask := len(s.slots) - 1
	for i := s.slot(a, b); ; i = (i + 1) & mask {
		x := s.slots[i]
		if x == nil {
			s.slots[i] = c
			s.n++
			return
		}
		if xa, xb := s.keyOf(x); xa == a && xb == b {
			s.slots[i] = c
			return
		}
	}
}

// remove removes the call with key (a, b) and returns it, nil if none.
func (s *callSet) remove(a uint64, b uint16) *Call {
	mask := len(s.slots) - 1
	i := s.slot(a, b)
	for ; ; i = (i + 1) & mask {
		c := s.slots[i]
		if c == nil {
			return nil
		}
		if x, y := s.keyOf(c); x == a && y == b {
			break
		}
	}
	c := s.slots[i]
	// Backward shift: move later members of the cluster whose home slot
	// is not between the hole and them into the hole.
	for j := (i + 1) & mask; s.slots[j] != nil; j = (j + 1) & mask {
		h := s.slot(s.keyOf(s.slots[j]))
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = nil
	s.n--
	if len(s.slots) > callSetMin && s.n*16 < len(s.slots) {
		s.resize(len(s.slots) / 4)
	}
	return c
}

func (s *callSet) removeIn(k InKey) *Call {
	return s.remove(pack(k.PublicIP, k.PeerIP), k.OutsideCallID)
}

func (s *callSet) removeOut(k OutKey) *Call {
	return s.remove(pack(k.InsideIP, k.PeerIP), k.PeerCallID)
}

// resize rehashes into size slots (a power of two, at least callSetMin).
func (s *callSet) resize(size int) {
	size = max(size, callSetMin)
	old := s.slots
	s.slots = make([]*Call, size)
	s.shift = uint(64 - bits.TrailingZeros(uint(size)))
	s.n = 0
	for _, c := range old {
		if c != nil {
			s.put(c)
		}
	}
}

// all returns the calls of the set, in no particular order.
func (s *callSet) all() []*Call {
	out := make([]*Call, 0, s.n)
	for _, c := range s.slots {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// each calls f for every call of the set; f must not change the set.
func (s *callSet) each(f func(*Call)) {
	for _, c := range s.slots {
		if c != nil {
			f(c)
		}
	}
}

// clear empties the set and gives its memory back.
func (s *callSet) clear() {
	s.slots = nil
	s.resize(callSetMin)
}

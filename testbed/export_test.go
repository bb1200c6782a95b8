package testbed

import "math/rand/v2"

// CreateNamedNS lets package testbed_test make a namespace that clashes
// with a topology's.
var CreateNamedNS = createNamedNS

// FloodSegment is floodSegment with a random source seeded by seed.
func FloodSegment(b []byte, seed uint64, src, dst [4]byte, garbage bool) []byte {
	return floodSegment(b, rand.New(rand.NewPCG(seed, 1)), src, dst, garbage)
}

// SendGRE sends one GRE packet per key from a namespace (sendGRE).
var SendGRE = sendGRE

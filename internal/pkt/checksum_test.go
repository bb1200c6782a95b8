package pkt

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// naiveChecksum is RFC 1071 written the obvious way, as the reference.
func naiveChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := Checksum(b), naiveChecksum(b); got != want {
			t.Fatalf("len %d: got %#04x want %#04x", n, got, want)
		}
	}
	// Known vector from RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2.
	if got := Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("RFC 1071 example: %#04x", got)
	}
}

// TestSumCarries: all-ones data and initial values push every carry of the
// 64-bit accumulation; lengths cover every tail after whole 64-byte rounds,
// at every start alignment.
func TestSumCarries(t *testing.T) {
	ones := make([]byte, 300)
	for i := range ones {
		ones[i] = 0xff
	}
	r := rand.New(rand.NewPCG(7, 8))
	rnd := make([]byte, 300)
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	for _, buf := range [][]byte{ones, rnd} {
		for start := range 8 {
			for n := 0; start+n <= len(buf); n++ {
				b := buf[start : start+n]
				for _, initial := range []uint16{0, 1, 0x8000, 0xfffe, 0xffff} {
					want := Combine(^naiveChecksum(b), initial)
					if got := Sum(b, initial); got != want {
						t.Fatalf("start %d len %d initial %#04x: Sum %#04x, want %#04x", start, n, initial, got, want)
					}
				}
			}
		}
	}
}

// randomCovered fills a random buffer whose checksum field sits at offset 0.
func randomCovered(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	binary.BigEndian.PutUint16(b, 0)
	binary.BigEndian.PutUint16(b, Checksum(b))
	return b
}

func TestUpdateByteAgainstRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 20000 {
		n := 4 + r.IntN(60)
		b := randomCovered(r, n)
		off := 2 + r.IntN(n-2) // any byte but the checksum field, odd or even
		old, nw := b[off], byte(r.Uint32())
		if iter%7 == 0 {
			nw = old // no-op change
		}
		hc := UpdateByte(binary.BigEndian.Uint16(b), off, old, nw)
		b[off] = nw
		binary.BigEndian.PutUint16(b, 0)
		want := Checksum(b)
		if hc != want {
			t.Fatalf("iter %d off %d (%s): incremental %#04x, recomputed %#04x",
				iter, off, map[bool]string{true: "odd", false: "even"}[off%2 == 1], hc, want)
		}
	}
}

func TestUpdate16AndAddrAgainstRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		n := 8 + 2*r.IntN(30)
		b := randomCovered(r, n)
		off := 2 + 2*r.IntN((n-6)/2) // even offset, 4 bytes available
		var old, nw [4]byte
		copy(old[:], b[off:])
		binary.BigEndian.PutUint32(nw[:], r.Uint32())
		hc := binary.BigEndian.Uint16(b)
		if r.IntN(2) == 0 {
			hc = UpdateAddr(hc, old, nw)
			copy(b[off:], nw[:])
		} else {
			o, w := binary.BigEndian.Uint16(old[:]), binary.BigEndian.Uint16(nw[:])
			hc = Update16(hc, o, w)
			binary.BigEndian.PutUint16(b[off:], w)
		}
		binary.BigEndian.PutUint16(b, 0)
		if want := Checksum(b); hc != want {
			t.Fatalf("incremental %#04x, recomputed %#04x", hc, want)
		}
	}
}

func TestCombineAndPseudoHeader(t *testing.T) {
	src, dst := [4]byte{10, 0, 0, 1}, [4]byte{203, 0, 113, 9}
	ph := []byte{10, 0, 0, 1, 203, 0, 113, 9, 0, 6, 0x01, 0x02}
	if got, want := PseudoHeaderSum(src, dst, 6, 0x0102), Sum(ph, 0); got != want {
		t.Fatalf("pseudo header %#04x want %#04x", got, want)
	}
	a, b := []byte{1, 2, 3, 4}, []byte{0xff, 0xfe, 9, 9}
	if got, want := Combine(Sum(a, 0), Sum(b, 0)), Sum(append(a, b...), 0); got != want {
		t.Fatalf("combine %#04x want %#04x", got, want)
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(1500)
	b.ReportAllocs()
	for b.Loop() {
		Checksum(buf)
	}
}

package mppe

// rc4 is RC4 with an in-place key schedule.
//
// Why not crypto/rc4: its NewCipher returns a freshly heap-allocated *Cipher
// (about 1 KiB) and there is no way to re-key an existing one, while
// stateless MPPE re-keys before every packet (twice: once for the interim
// key, once for the session key). Keeping the state inline in the
// Encrypter/Decrypter gives zero allocations per packet. The keystream is
// checked against crypto/rc4 in the tests (TestRC4MatchesStdlib), and the
// loop is the same generic algorithm crypto/rc4 uses (uint32 state entries).
type rc4 struct {
	s    [256]uint32
	i, j uint8
}

// identity is the initial RC4 state; copying it is faster than the loop.
var identity = func() (s [256]uint32) {
	for i := range s {
		s[i] = uint32(i)
	}
	return s
}()

func (c *rc4) setKey(key []byte) {
	switch len(key) {
	case 16: // MPPE-128 re-keys twice per stateless packet: unrolled by the key length
		c.setKey16((*[16]byte)(key))
		return
	case 8:
		c.setKey8((*[8]byte)(key))
		return
	}
	c.s = identity
	var j uint8
	k := 0
	for i := 0; i < 256; i++ {
		j += uint8(c.s[i]) + key[k]
		c.s[i], c.s[j] = c.s[j], c.s[i]
		if k++; k == len(key) {
			k = 0
		}
	}
	c.i, c.j = 0, 0
}

func (c *rc4) setKey16(key *[16]byte) {
	c.s = identity
	s := &c.s
	var j uint8
	for i := 0; i < 256; i += 16 {
		for k := 0; k < 16; k++ {
			x := s[uint8(i+k)]
			j += uint8(x) + key[k]
			s[uint8(i+k)] = s[j]
			s[j] = x
		}
	}
	c.i, c.j = 0, 0
}

func (c *rc4) setKey8(key *[8]byte) {
	c.s = identity
	s := &c.s
	var j uint8
	for i := 0; i < 256; i += 8 {
		for k := 0; k < 8; k++ {
			x := s[uint8(i+k)]
			j += uint8(x) + key[k]
			s[uint8(i+k)] = s[j]
			s[j] = x
		}
	}
	c.i, c.j = 0, 0
}

// xorKeyStream sets dst[k] = src[k] ^ keystream for len(src) octets;
// dst and src may be the same slice.
func (c *rc4) xorKeyStream(dst, src []byte) {
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	i, j := c.i, c.j
	s := &c.s
	for k, v := range src {
		i++
		x := s[i]
		j += uint8(x)
		y := s[j]
		s[i], s[j] = y, x
		dst[k] = v ^ uint8(s[uint8(x+y)])
	}
	c.i, c.j = i, j
}

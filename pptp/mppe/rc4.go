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

func (c *rc4) setKey(key []byte) {
	for i := range c.s {
		c.s[i] = uint32(i)
	}
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

package ppp

import (
	"encoding/binary"

	"pptpgw/pptp/mppe"
)

// CCP option 18, MPPE (RFC 3078 §2):
//
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type=18   |   Length=6    |        Supported Bits         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|        Supported Bits         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Supported Bits as a big-endian uint32 (mppe.Options): H (stateless)
// 0x01000000, M (56-bit) 0x80, S (128-bit) 0x40, L (40-bit) 0x20,
// D (obsolete) 0x10, C (MPPC compression) 0x01 - the values pppd and
// Windows use.
const (
	ccpMPPE        = mppe.OptionType
	mppeH   uint32 = uint32(mppe.OptH)
)

func strengthBit(s mppe.Strength) uint32 { return uint32(mppe.StrengthBit(s)) }

// bitStrength is the strongest strength offered in b (b must offer one).
func bitStrength(b uint32) mppe.Strength {
	for _, s := range []mppe.Strength{mppe.Bits128, mppe.Bits56, mppe.Bits40} {
		if b&strengthBit(s) != 0 {
			return s
		}
	}
	return mppe.Bits40
}

type ccp struct {
	f fsm
	s *Session
	// what the configuration allows
	allowStrength         uint32
	allowH, allowStateful bool
	// our request
	sendMPPE bool
	want     uint32
	// the peer's request we Acked
	hisMPPE bool
	his     uint32
	// result
	opened bool
}

func (c *ccp) init(s *Session) {
	c.s = s
	c.f = fsm{s: s, proto: ProtoCCP, name: "CCP", h: c}
	for _, st := range s.cfg.MPPEStrengths {
		c.allowStrength |= strengthBit(st)
	}
	c.allowH, c.allowStateful = s.cfg.AllowStateless, s.cfg.AllowStateful
}

// offer is everything we support: all allowed strengths, H if stateless is
// allowed (and preferred when both are).
func (c *ccp) offer() uint32 {
	b := c.allowStrength
	if c.allowH {
		b |= mppeH
	}
	return b
}

// choose picks one set of bits from what the peer offers: the strongest
// common strength, and stateless if the peer offers it and we allow it (or
// if we do not allow stateful). ok is false if nothing is in common.
func (c *ccp) choose(peer uint32) (uint32, bool) {
	common := peer & c.allowStrength
	if common == 0 {
		return 0, false
	}
	b := strengthBit(bitStrength(common))
	if (peer&mppeH != 0 && c.allowH) || !c.allowStateful {
		b |= mppeH
	}
	return b, true
}

func (c *ccp) resetCI() {
	c.sendMPPE, c.want = true, c.offer()
	c.hisMPPE, c.his = false, 0
}

func (c *ccp) addCI(b []byte) []byte {
	if c.sendMPPE {
		b = appendOpt32(b, ccpMPPE, c.want)
	}
	return b
}

func (c *ccp) nakCI(opts []byte, asReject bool) bool {
	if asReject {
		return c.rejCI(opts)
	}
	it := optIter{b: opts}
	for {
		typ, val, _, ok := it.next()
		if !ok {
			break
		}
		if typ != ccpMPPE || len(val) != 4 || !c.sendMPPE {
			continue
		}
		if b, ok := c.choose(binary.BigEndian.Uint32(val)); ok {
			c.want = b
		}
	}
	return !it.err
}

func (c *ccp) rejCI(opts []byte) bool {
	it := optIter{b: opts}
	for {
		typ, _, _, ok := it.next()
		if !ok {
			break
		}
		if typ == ccpMPPE && c.sendMPPE {
			c.sendMPPE = false
			if c.s.cfg.RequireMPPE {
				c.s.closeLater(ReasonNoMPPE, "peer refuses MPPE")
			}
		}
	}
	return !it.err
}

func (c *ccp) reqCI(opts, reply []byte, rejectOnly bool) (byte, []byte) {
	rej := reply
	nak := c.s.nakBuf[:0]
	var his uint32
	hisMPPE := false
	it := optIter{b: opts}
	for {
		typ, val, whole, ok := it.next()
		if !ok {
			break
		}
		if typ != ccpMPPE || len(val) != 4 {
			rej = append(rej, whole...) // Deflate, BSD, MPPC-only, ...: not supported
			continue
		}
		v := binary.BigEndian.Uint32(val)
		b, ok := c.choose(v)
		switch {
		case ok && b == v:
			his, hisMPPE = v, true
		case rejectOnly:
			rej = append(rej, whole...)
		case ok:
			nak = appendOpt32(nak, ccpMPPE, b)
		default:
			nak = appendOpt32(nak, ccpMPPE, c.offer())
		}
	}
	if !hisMPPE && len(rej) == 0 && len(nak) == 0 && c.s.cfg.RequireMPPE && !rejectOnly {
		// RFC 1661 §5.3: Nak may suggest an option the peer did not include.
		nak = appendOpt32(nak, ccpMPPE, c.offer())
	}
	c.s.nakBuf = nak[:0]
	if len(rej) > 0 {
		return codeConfRej, rej
	}
	if len(nak) > 0 {
		return codeConfNak, append(rej, nak...)
	}
	c.his, c.hisMPPE = his, hisMPPE
	return codeConfAck, rej
}

func (c *ccp) up() {
	switch {
	case c.sendMPPE && c.hisMPPE && c.want == c.his:
		c.opened = true
		c.s.mppeUp(bitStrength(c.want), c.want&mppeH != 0)
	case !c.sendMPPE && !c.hisMPPE && !c.s.cfg.RequireMPPE:
		c.opened = true // no encryption, by agreement
		c.s.networkChanged()
	default:
		c.s.closeLater(ReasonNoMPPE, "MPPE not agreed in both directions")
	}
}

func (c *ccp) down() {
	c.opened = false
	c.s.mppeDown()
}

func (c *ccp) finished() {
	c.opened = false
	if c.s.cfg.RequireMPPE {
		c.s.closeLater(ReasonNoMPPE, "CCP failed and MPPE is required")
		return
	}
	c.s.networkChanged()
}

// extCode handles Reset-Request / Reset-Ack (RFC 1962 §5). For MPPE the
// sender changes its key and sets the flushed bit on its next packet
// (RFC 3078 §7); the Reset-Ack we send back is informational.
func (c *ccp) extCode(code, id byte, data []byte) bool {
	switch code {
	case codeResetReq:
		c.s.count(ReasonCCPResetReq)
		if c.f.state != stOpened {
			return true
		}
		c.s.mppeResetReceived()
		c.s.endCtl(c.s.beginCtl(ProtoCCP, codeResetAck, id))
	case codeResetAck:
	default:
		return false
	}
	return true
}

// sendResetRequest asks the peer to re-synchronise (stateful MPPE lost a packet).
func (c *ccp) sendResetRequest() {
	if c.f.state != stOpened {
		return
	}
	c.s.endCtl(c.s.beginCtl(ProtoCCP, codeResetReq, c.f.newID()))
}

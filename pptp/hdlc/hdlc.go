// Package hdlc implements RFC 1662 asynchronous HDLC-like framing, the byte
// stream format PPP uses on a serial line or pty (pppd <-> pptp, pptpd <-> pppd).
//
// A frame on the wire:
//
//	+------+---------------------------------------------+------+
//	| 0x7E | escaped( PPP frame | FCS-16 low | FCS-16 hi ) | 0x7E |
//	+------+---------------------------------------------+------+
//
// Escaping (RFC 1662 §4.2): 0x7E and 0x7D, and every byte below 0x20 whose bit
// is set in the Async-Control-Character-Map, are sent as 0x7D followed by the
// byte XOR 0x20. The FCS-16 (RFC 1662 §C.2) covers the unescaped frame, is
// complemented and sent least significant byte first.
//
// It owns the byte-stream framing only. It must not know the PPP protocols
// inside the frames (pptp/ppp), nor the pty or process it talks to.
package hdlc

import "errors"

const (
	// Flag delimits frames.
	Flag = 0x7E
	// Escape introduces an escaped byte (next byte XOR 0x20).
	Escape = 0x7D
	// EscapeXOR is applied to the byte after Escape.
	EscapeXOR = 0x20

	// InitFCS16 is the initial FCS-16 value.
	InitFCS16 uint16 = 0xFFFF
	// GoodFCS16 is the FCS-16 of a frame including its own (complemented) FCS.
	GoodFCS16 uint16 = 0xF0B8

	// DefaultACCM escapes every control character (RFC 1662 default).
	DefaultACCM uint32 = 0xFFFFFFFF

	// FCSLen is the number of FCS bytes appended to each frame.
	FCSLen = 2
)

// ErrBadFCS is returned by Unframe for a frame whose FCS does not check.
var ErrBadFCS = errors.New("hdlc: bad FCS")

// ErrShort is returned by Unframe for a frame too short to carry an FCS.
var ErrShort = errors.New("hdlc: frame shorter than FCS")

// fcsTab is the FCS-16 lookup table of RFC 1662 §C.2 (polynomial
// x**0 + x**5 + x**12 + x**16, bit-reversed 0x8408).
var fcsTab = func() (t [256]uint16) {
	for b := 0; b < 256; b++ {
		v := uint16(b)
		for i := 0; i < 8; i++ {
			if v&1 != 0 {
				v = v>>1 ^ 0x8408
			} else {
				v >>= 1
			}
		}
		t[b] = v
	}
	return t
}()

// FCS16 folds b into the running FCS fcs (start with InitFCS16).
func FCS16(fcs uint16, b []byte) uint16 {
	for _, c := range b {
		fcs = fcs>>8 ^ fcsTab[byte(fcs)^c]
	}
	return fcs
}

// Encoder frames PPP frames for an async line.
type Encoder struct {
	// ACCM is the transmit Async-Control-Character-Map: bit n set means byte n
	// (n < 0x20) is escaped. The zero value escapes nothing below 0x20;
	// use NewEncoder for the RFC default (all escaped).
	ACCM uint32
}

// NewEncoder returns an Encoder with the default ACCM (all control characters escaped).
func NewEncoder() Encoder { return Encoder{ACCM: DefaultACCM} }

func (e Encoder) needsEscape(c byte) bool {
	if c == Flag || c == Escape {
		return true
	}
	return c < 0x20 && e.ACCM&(1<<c) != 0
}

func (e Encoder) appendByte(dst []byte, c byte) []byte {
	if e.needsEscape(c) {
		return append(dst, Escape, c^EscapeXOR)
	}
	return append(dst, c)
}

// Append appends frame (a PPP frame without FCS), escaped and followed by its
// FCS, between two flags, to dst and returns the extended slice.
func (e Encoder) Append(dst, frame []byte) []byte {
	dst = append(dst, Flag)
	for _, c := range frame {
		dst = e.appendByte(dst, c)
	}
	fcs := ^FCS16(InitFCS16, frame)
	dst = e.appendByte(dst, byte(fcs))
	dst = e.appendByte(dst, byte(fcs>>8))
	return append(dst, Flag)
}

// Encode frames one PPP frame with the default ACCM.
func Encode(frame []byte) []byte {
	return NewEncoder().Append(make([]byte, 0, 2*len(frame)+6), frame)
}

// Unframe checks the FCS of an unescaped frame (PPP frame followed by its two
// FCS bytes) and returns the PPP frame without the FCS.
func Unframe(b []byte) ([]byte, error) {
	if len(b) < FCSLen {
		return nil, ErrShort
	}
	if FCS16(InitFCS16, b) != GoodFCS16 {
		return nil, ErrBadFCS
	}
	return b[:len(b)-FCSLen], nil
}

// DefaultMaxFrame bounds a frame being decoded (PPP MRU 1500 plus headroom).
const DefaultMaxFrame = 4096

// Stats counts what a Decoder saw.
type Stats struct {
	Frames  uint64 // good frames returned
	BadFCS  uint64 // frames dropped for a bad FCS
	Short   uint64 // frames dropped for being shorter than the FCS (not empty flag pairs)
	TooLong uint64 // frames dropped for exceeding MaxFrame
	Aborted uint64 // frames dropped because of an escape directly before a flag (RFC 1662 §4.4.1 abort)
	// Discarded counts unescaped control bytes dropped per the receive ACCM.
	Discarded uint64
}

// Decoder reassembles frames from an async byte stream. Bytes received before
// the first flag are treated as the start of a frame (RFC 1662 allows the
// opening flag to be omitted between back-to-back frames, and a peer may
// start without one). The zero value is ready to use.
type Decoder struct {
	// MaxFrame bounds the unescaped frame length; 0 means DefaultMaxFrame.
	MaxFrame int
	// ACCM is the receive Async-Control-Character-Map: an unescaped byte
	// n < 0x20 whose bit is set was inserted by the line, not the peer, and
	// is discarded (RFC 1662 §7.1). Zero (the default) keeps every byte.
	ACCM uint32

	buf      []byte
	esc      bool
	overflow bool
	stats    Stats
}

// Stats returns the counters.
func (d *Decoder) Stats() Stats { return d.stats }

// Feed consumes b and returns the complete, FCS-checked frames it finished,
// without their FCS. Returned frames are freshly allocated and owned by the
// caller. Frames with a bad FCS are dropped and counted.
func (d *Decoder) Feed(b []byte) [][]byte {
	var out [][]byte
	d.FeedFunc(b, func(f []byte) { out = append(out, append([]byte(nil), f...)) })
	return out
}

// FeedFunc is Feed without allocation: fn is called for each good frame with
// a slice that is only valid during the call.
func (d *Decoder) FeedFunc(b []byte, fn func(frame []byte)) {
	max := d.MaxFrame
	if max <= 0 {
		max = DefaultMaxFrame
	}
	for _, c := range b {
		switch {
		case c == Flag:
			d.endFrame(fn)
		case d.overflow:
			// discard until the next flag
		case c == Escape:
			d.esc = true
		case c < 0x20 && d.ACCM&(1<<c) != 0 && !d.esc:
			d.stats.Discarded++
		default:
			if d.esc {
				c ^= EscapeXOR
				d.esc = false
			}
			if len(d.buf) >= max+FCSLen {
				d.overflow = true
				d.buf = d.buf[:0]
				continue
			}
			d.buf = append(d.buf, c)
		}
	}
}

func (d *Decoder) endFrame(fn func([]byte)) {
	buf, esc, overflow := d.buf, d.esc, d.overflow
	d.buf, d.esc, d.overflow = d.buf[:0], false, false
	switch {
	case overflow:
		d.stats.TooLong++
	case esc:
		d.stats.Aborted++
	case len(buf) == 0:
		// back-to-back flags: inter-frame fill, not an error
	default:
		f, err := Unframe(buf)
		switch err {
		case nil:
			d.stats.Frames++
			fn(f)
		case ErrShort:
			d.stats.Short++
		default:
			d.stats.BadFCS++
		}
	}
}

package mppe

import "errors"

// MPPE packet header (RFC 3078 §3), following the PPP protocol 0x00FD:
//
//	 0                   1
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|A|B|C|D|    Coherency Count    |   then the encrypted PPP protocol
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   field and data
//
// A: the RC4 tables were re-initialised (the key changed) before this packet.
// B, C: MPPC (RFC 2118) history reset / compressed; never set by MPPE alone.
// D: the packet is encrypted.
const (
	HeaderLen = 2
	// Protocol is the PPP protocol number of compressed/encrypted datagrams.
	Protocol = 0x00FD

	FlagFlushed    uint16 = 0x8000 // A
	FlagB          uint16 = 0x4000 // B (MPPC)
	FlagCompressed uint16 = 0x2000 // C (MPPC)
	FlagEncrypted  uint16 = 0x1000 // D
	CountMask      uint16 = 0x0FFF
	countSpace            = 0x1000

	// DefaultMaxJump bounds how far ahead of the last accepted packet a
	// coherency count may be: beyond half the count space a packet is
	// indistinguishable from a late one, and every step costs a re-key.
	DefaultMaxJump = countSpace / 2
)

// Decrypt errors. Every error leaves the plaintext undefined; the packet must
// be dropped (and counted) by the caller.
var (
	ErrShort        = errors.New("mppe: packet too short")
	ErrNotEncrypted = errors.New("mppe: D (encrypted) bit not set")
	ErrCompressed   = errors.New("mppe: MPPC-compressed packet (C bit) not supported")
	ErrNotFlushed   = errors.New("mppe: A (flushed) bit missing on a stateless or flag packet")
	ErrLate         = errors.New("mppe: coherency count not ahead of the last packet (late, duplicate or replayed)")
	ErrTooFar       = errors.New("mppe: coherency count too far ahead")
	// ErrNeedReset (stateful mode): a packet was lost; the receiver discards
	// packets until one with the A bit arrives. The caller should send a CCP
	// Reset-Request (rate-limited: this is returned for every discarded packet).
	ErrNeedReset = errors.New("mppe: stateful packet loss, CCP Reset-Request needed")
)

// keyState is the session-key schedule of one direction (RFC 3078 §7.3).
type keyState struct {
	s     Strength
	n     int      // key length in octets, 8 or 16
	start [16]byte // the master ("start") key of this direction
	sess  [16]byte // current session key
	rc    rc4
	buf   [112]byte // SHA1 input scratch
	keys  uint64    // number of key changes so far
}

func (k *keyState) init(startKey [16]byte, s Strength) {
	if !s.Valid() {
		panic("mppe: invalid strength")
	}
	k.s, k.n, k.start = s, s.KeyLen(), startKey
	d := newKeyFromSHA(&k.buf, k.start[:k.n], k.start[:k.n])
	copy(k.sess[:k.n], d[:k.n])
	ReduceKey(k.sess[:k.n], s)
	k.rc.setKey(k.sess[:k.n])
}

// rekey changes the session key (RFC 3078 §7.3, what Linux and Windows do):
// InterimKey = GetNewKeyFromSHA(StartKey, SessionKey); SessionKey =
// RC4(InterimKey, InterimKey); reduce; re-initialise RC4 with SessionKey.
func (k *keyState) rekey() {
	d := newKeyFromSHA(&k.buf, k.start[:k.n], k.sess[:k.n])
	k.rc.setKey(d[:k.n])
	k.rc.xorKeyStream(k.sess[:k.n], d[:k.n])
	ReduceKey(k.sess[:k.n], k.s)
	k.rc.setKey(k.sess[:k.n])
	k.keys++
}

// Encrypter encrypts the packets of one direction. Not safe for concurrent use.
type Encrypter struct {
	k            keyState
	stateless    bool
	ccount       uint16 // count of the last packet sent (starts at 0xFFF: the first is 0)
	resetPending bool
}

// NewEncrypter starts an encrypter from this direction's master (start) key;
// for 40/56-bit only its first 8 octets are used. The initial session key
// is derived as RFC 3079 §3.1-3.3 describe.
func NewEncrypter(startKey [16]byte, s Strength, stateless bool) *Encrypter {
	e := &Encrypter{stateless: stateless, ccount: CountMask}
	e.k.init(startKey, s)
	return e
}

// Overhead is the number of octets Encrypt adds to a packet.
func (e *Encrypter) Overhead() int { return HeaderLen }

// Encrypt appends the MPPE packet for protoAndData (the PPP protocol field,
// normally 2 octets, followed by the data) to dst and returns the extended
// slice: 2-octet header then the encrypted input. It does not allocate when
// dst has HeaderLen+len(protoAndData) spare capacity. For in-place use put
// the plaintext at buf[HeaderLen:] and call Encrypt(buf[:0], buf[HeaderLen:HeaderLen+n]);
// any other overlap between dst's spare capacity and protoAndData is an error.
//
// The first packet after NewEncrypter carries count 0 and, in stateful mode,
// no A bit (the tables were just initialised from the initial key): this is
// what Windows and Linux peers do.
func (e *Encrypter) Encrypt(dst, protoAndData []byte) []byte {
	e.ccount = (e.ccount + 1) & CountMask
	hdr := FlagEncrypted | e.ccount
	if e.stateless || e.ccount&0xFF == 0xFF || e.resetPending {
		e.k.rekey()
		hdr |= FlagFlushed
		e.resetPending = false
	}
	// One pass from protoAndData into dst; in the in-place form both are the same
	// memory and nothing is copied at all.
	n := len(dst)
	dst = grow(dst, HeaderLen+len(protoAndData))
	dst[n], dst[n+1] = byte(hdr>>8), byte(hdr)
	e.k.rc.xorKeyStream(dst[n+HeaderLen:], protoAndData)
	return dst
}

// ResetReceived is called when the peer's CCP Reset-Request arrives: in
// stateful mode the next packet changes the key and carries the A bit. Any
// number of Reset-Requests before that packet cause a single key change
// (the peer cannot know how many of them arrived).
func (e *Encrypter) ResetReceived() {
	if !e.stateless {
		e.resetPending = true
	}
}

// Count returns the coherency count of the last packet sent.
func (e *Encrypter) Count() uint16 { return e.ccount }

// KeyChanges returns how many times the session key has changed.
func (e *Encrypter) KeyChanges() uint64 { return e.k.keys }

// Decrypter decrypts the packets of one direction. Not safe for concurrent use.
type Decrypter struct {
	k         keyState
	stateless bool
	ccount    uint16 // count of the last accepted packet
	discard   bool   // stateful: loss seen, waiting for a flushed packet
	maxJump   int
}

// NewDecrypter mirrors NewEncrypter for the receiving direction.
func NewDecrypter(startKey [16]byte, s Strength, stateless bool) *Decrypter {
	d := &Decrypter{stateless: stateless, ccount: CountMask, maxJump: DefaultMaxJump}
	d.k.init(startKey, s)
	return d
}

// SetMaxJump bounds the forward distance (1..2048) of an accepted coherency
// count from the last accepted one; packets further ahead get ErrTooFar and
// do not change the state. In stateless mode each step costs one key change.
func (d *Decrypter) SetMaxJump(n int) {
	d.maxJump = min(max(n, 1), DefaultMaxJump)
}

// Discarding reports whether a stateful decrypter is waiting for a flushed
// packet after loss.
func (d *Decrypter) Discarding() bool { return d.discard }

// KeyChanges returns how many times the session key has changed.
func (d *Decrypter) KeyChanges() uint64 { return d.k.keys }

// flagsBetween counts the flag packets (count low octet 0xFF) strictly
// between counts last and last+dist.
func flagsBetween(last uint16, dist int) int {
	first := int(0xFF-(last&0xFF)) & 0xFF // steps from last to its next flag count
	if first == 0 {
		first = 256
	}
	if first >= dist {
		return 0
	}
	return 1 + (dist-1-first)/256
}

// Decrypt decrypts one MPPE packet (header included, PPP protocol 0x00FD
// already stripped), appends the PPP protocol field and data to dst and
// returns the extended slice. It does not allocate when dst has room;
// Decrypt(pkt[:0], pkt) decrypts in place.
//
// Coherency count handling (RFC 3078 §8):
//   - stateless: every packet must carry A; the key is changed once per count
//     step from the last accepted packet, so lost packets are skipped;
//     packets that are not ahead (late, duplicated, replayed) get ErrLate,
//     those more than SetMaxJump ahead get ErrTooFar.
//   - stateful: a packet whose count is not the successor of the last one
//     switches to discarding: it and all following packets get ErrNeedReset
//     until a packet with A arrives; then the key is changed once for every
//     flag packet missed and once for the flushed packet itself.
//
// The returned protocol field is as the peer sent it (1 octet if it used
// PFC: an odd first octet).
func (d *Decrypter) Decrypt(dst, pkt []byte) ([]byte, error) {
	if len(pkt) <= HeaderLen {
		return dst, ErrShort
	}
	hdr := uint16(pkt[0])<<8 | uint16(pkt[1])
	cc := hdr & CountMask
	flushed := hdr&FlagFlushed != 0
	if hdr&FlagEncrypted == 0 {
		return dst, ErrNotEncrypted
	}
	if hdr&FlagCompressed != 0 {
		return dst, ErrCompressed
	}
	dist := int((cc - d.ccount) & CountMask)
	if d.stateless {
		if !flushed {
			return dst, ErrNotFlushed
		}
		if dist == 0 || dist > DefaultMaxJump {
			return dst, ErrLate
		}
		if dist > d.maxJump {
			return dst, ErrTooFar
		}
		for range dist {
			d.k.rekey()
		}
		d.ccount = cc
	} else {
		if cc&0xFF == 0xFF && !flushed {
			return dst, ErrNotFlushed
		}
		switch {
		case !d.discard && dist == 1:
			if flushed {
				d.k.rekey()
			}
		case !d.discard:
			d.discard = true
			return dst, ErrNeedReset
		case !flushed || dist == 0 || dist > DefaultMaxJump:
			return dst, ErrNeedReset
		case dist > d.maxJump:
			return dst, ErrTooFar
		default: // discarding and a flushed packet ahead: re-synchronise
			for range flagsBetween(d.ccount, dist) + 1 {
				d.k.rekey()
			}
			d.discard = false
		}
		d.ccount = cc
	}
	// One pass: the keystream is XORed from pkt straight into dst (no copy first).
	// In place (dst = pkt[:0]) the output trails the input by HeaderLen octets, which
	// the forward loop of xorKeyStream handles.
	n, m := len(dst), len(pkt)-HeaderLen
	dst = grow(dst, m)
	d.k.rc.xorKeyStream(dst[n:n+m], pkt[HeaderLen:])
	return dst, nil
}

// grow extends dst by n octets, keeping its contents, reallocating only when the
// capacity is short.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst[:len(dst)+n]
	}
	return append(dst, make([]byte, n)...)
}

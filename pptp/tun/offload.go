package tun

import (
	"encoding/binary"
	"errors"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Offloads (IFF_VNET_HDR): every packet through the device is preceded by a struct
// virtio_net_hdr. That lets both directions work on TCP "super-packets" of up to 64 KiB
// instead of one MTU-sized packet per system call and per trip through the kernel
// stack:
//
//   - Read (TSO, TUN_F_TSO4|TUN_F_CSUM): the kernel hands over a TCP packet of many
//     segments (or one with only a partial checksum); ReadPacket cuts it into MTU-sized
//     IPv4/TCP packets with full checksums, one per call, like the kernel would have.
//   - Write (GRO in userspace): QueuePacket holds consecutive in-order segments of one
//     TCP flow and Flush writes them as one GSO packet, which the kernel forwards or
//     delivers as a whole (and the receiving TCP acknowledges as a whole).
//
// The layout of struct virtio_net_hdr (native byte order, 10 octets):
//
//	flags(1) gso_type(1) hdr_len(2) gso_size(2) csum_start(2) csum_offset(2)
const vnetHdrLen = 10

type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// IPv4 and TCP offsets used here.
const (
	ipTotalLen = 2
	ipID       = 4
	ipFrag     = 6
	ipTTL      = 8
	ipProto    = 9
	ipCsum     = 10
	ipSrc      = 12
	tcpSeq     = 4
	tcpAck     = 8
	tcpOff     = 12
	tcpFlags   = 13
	tcpWin     = 14
	tcpCsum    = 16

	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
	flagURG = 0x20
	flagECE = 0x40
	flagCWR = 0x80

	ipDF = 0x4000
	ipMF = 0x2000

	maxGROSegs = 64
)

var (
	errBadGSO      = errors.New("tun: malformed offload packet from the kernel")
	errShortBuffer = errors.New("tun: buffer too small for the packet")
)

// sum is the RFC 1071 one's-complement sum of b added to acc (unfolded).
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	acc += c
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

// fold reduces an unfolded sum to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// pseudoSum is the IPv4 pseudo-header sum for TCP of length tcpLen.
func pseudoSum(ip []byte, tcpLen int) uint64 {
	return sum(ip[ipSrc:ipSrc+8], uint64(unix.IPPROTO_TCP)+uint64(tcpLen))
}

func ipHeaderChecksum(ip []byte, ihl int) {
	ip[ipCsum], ip[ipCsum+1] = 0, 0
	binary.BigEndian.PutUint16(ip[ipCsum:], ^fold(sum(ip[:ihl], 0)))
}

// segmenter cuts one TSO packet from the kernel into MTU-sized packets.
type segmenter struct {
	pkt     []byte // IPv4 + TCP header + payload (in Device.rbuf)
	hl, ihl int    // IP+TCP header length, IP header length
	mss     int
	off     int // payload octets already handed out
	i       int // segments handed out
}

func (s *segmenter) pending() bool { return s.pkt != nil && s.hl+s.off < len(s.pkt) }

// start validates a TCPV4 GSO packet and prepares segmenting it.
func (s *segmenter) start(h *vnetHdr, pkt []byte) error {
	s.pkt = nil
	if len(pkt) < 40 || pkt[0]>>4 != 4 || pkt[ipProto] != unix.IPPROTO_TCP {
		return errBadGSO
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl+20 {
		return errBadGSO
	}
	hl := ihl + int(pkt[ihl+tcpOff]>>4)*4
	if hl < ihl+20 || hl > len(pkt) || h.gsoSize == 0 {
		return errBadGSO
	}
	*s = segmenter{pkt: pkt, hl: hl, ihl: ihl, mss: int(h.gsoSize)}
	if hl == len(pkt) { // no payload: one packet
		s.mss = 1
	}
	return nil
}

// next writes the next segment to b and returns its length.
func (s *segmenter) next(b []byte) (int, error) {
	pay := min(s.mss, len(s.pkt)-s.hl-s.off)
	if pay < 0 {
		pay = 0
	}
	n := s.hl + pay
	if len(b) < n {
		s.pkt = nil
		return 0, errShortBuffer
	}
	copy(b, s.pkt[:s.hl])
	copy(b[s.hl:], s.pkt[s.hl+s.off:s.hl+s.off+pay])
	ip, tcp := b[:s.ihl], b[s.ihl:n]
	binary.BigEndian.PutUint16(ip[ipTotalLen:], uint16(n))
	binary.BigEndian.PutUint16(ip[ipID:], binary.BigEndian.Uint16(s.pkt[ipID:])+uint16(s.i))
	ipHeaderChecksum(ip, s.ihl)
	binary.BigEndian.PutUint32(tcp[tcpSeq:], binary.BigEndian.Uint32(s.pkt[s.ihl+tcpSeq:])+uint32(s.off))
	last := s.hl+s.off+pay >= len(s.pkt)
	if !last {
		tcp[tcpFlags] &^= flagFIN | flagPSH
	}
	if s.i > 0 {
		tcp[tcpFlags] &^= flagCWR
	}
	tcp[tcpCsum], tcp[tcpCsum+1] = 0, 0
	binary.BigEndian.PutUint16(tcp[tcpCsum:], ^fold(sum(tcp, pseudoSum(ip, len(tcp)))))
	s.off += pay
	s.i++
	if last {
		s.pkt = nil
	}
	return n, nil
}

// finishChecksum completes a NEEDS_CSUM packet: the field holds the pseudo-header sum,
// the sum from csum_start on gives the final value.
func finishChecksum(h *vnetHdr, pkt []byte) bool {
	start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if start > len(pkt) || at+2 > len(pkt) {
		return false
	}
	v := ^fold(sum(pkt[start:], 0))
	binary.BigEndian.PutUint16(pkt[at:], v)
	return true
}

// coalescer holds TCP segments of one flow to write them as one GSO packet.
type coalescer struct {
	buf    []byte // vnet header + IPv4 + TCP + payload
	n      int    // used octets of buf (0: nothing held)
	hl     int    // IP+TCP header length of the held packet
	mss    int    // payload length of the first segment (gso_size)
	segs   int
	closed bool // a short or PSH segment ended it: nothing more may be appended
	next   uint32
}

// tcpSegment checks pkt is a plain IPv4 TCP data segment that may be merged (no IP
// options or fragments, DF, only ACK and maybe PSH, payload, valid checksums) and
// returns its header length.
func tcpSegment(pkt []byte) (hl int, ok bool) {
	if len(pkt) < 41 || pkt[0] != 0x45 || pkt[ipProto] != unix.IPPROTO_TCP ||
		int(binary.BigEndian.Uint16(pkt[ipTotalLen:])) != len(pkt) {
		return 0, false
	}
	if frag := binary.BigEndian.Uint16(pkt[ipFrag:]); frag&^ipDF != 0 || frag&ipDF == 0 {
		return 0, false
	}
	hl = 20 + int(pkt[20+tcpOff]>>4)*4
	if hl < 40 || hl >= len(pkt) {
		return 0, false
	}
	if f := pkt[20+tcpFlags]; f&^flagPSH != flagACK {
		return 0, false
	}
	// Merging drops the individual checksums: a corrupted segment must not be covered.
	if fold(sum(pkt[:20], 0)) != 0xffff || fold(sum(pkt[20:], pseudoSum(pkt, len(pkt)-20))) != 0xffff {
		return 0, false
	}
	return hl, true
}

// mergeable reports whether the segment pkt (header length hl) continues the held one.
func (c *coalescer) mergeable(pkt []byte, hl int) bool {
	if c.n == 0 || c.closed || hl != c.hl || c.segs >= maxGROSegs {
		return false
	}
	h := c.buf[vnetHdrLen : vnetHdrLen+c.hl]
	pay := len(pkt) - hl
	if pay > c.mss || c.n+pay > vnetHdrLen+65535 || binary.BigEndian.Uint32(pkt[20+tcpSeq:]) != c.next {
		return false
	}
	// Same TOS, TTL, addresses, ports, ack, window, options; flags differ at most in PSH.
	return pkt[1] == h[1] && pkt[ipTTL] == h[ipTTL] && string(pkt[ipSrc:24]) == string(h[ipSrc:24]) &&
		string(pkt[20+tcpAck:20+tcpFlags]) == string(h[20+tcpAck:20+tcpFlags]) &&
		string(pkt[20+tcpWin:20+tcpCsum]) == string(h[20+tcpWin:20+tcpCsum]) &&
		string(pkt[40:hl]) == string(h[40:hl])
}

func (c *coalescer) hold(pkt []byte, hl int) {
	if len(c.buf) < vnetHdrLen+65535 {
		c.buf = make([]byte, vnetHdrLen+65535)
	}
	c.n = vnetHdrLen + copy(c.buf[vnetHdrLen:], pkt)
	c.hl, c.mss, c.segs = hl, len(pkt)-hl, 1
	c.next = binary.BigEndian.Uint32(pkt[20+tcpSeq:]) + uint32(len(pkt)-hl)
	c.closed = pkt[20+tcpFlags]&flagPSH != 0
}

func (c *coalescer) add(pkt []byte, hl int) {
	pay := pkt[hl:]
	c.n += copy(c.buf[c.n:], pay)
	c.segs++
	c.next += uint32(len(pay))
	if pkt[20+tcpFlags]&flagPSH != 0 {
		c.buf[vnetHdrLen+20+tcpFlags] |= flagPSH
		c.closed = true
	}
	if len(pay) < c.mss {
		c.closed = true
	}
}

// take finalises the held packet (vnet header, lengths, checksums) and returns it for
// writing; the coalescer is empty after.
func (c *coalescer) take() []byte {
	b := c.buf[:c.n]
	c.n = 0
	pkt := b[vnetHdrLen:]
	if c.segs == 1 { // unchanged packet, its own checksums
		clear(b[:vnetHdrLen])
		return b
	}
	binary.BigEndian.PutUint16(pkt[ipTotalLen:], uint16(len(pkt)))
	ipHeaderChecksum(pkt, 20)
	binary.BigEndian.PutUint16(pkt[20+tcpCsum:], fold(pseudoSum(pkt, len(pkt)-20)))
	h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4,
		hdrLen: uint16(c.hl), gsoSize: uint16(c.mss), csumStart: 20, csumOffset: tcpCsum}
	h.encode(b)
	return b
}

// writeSegments cuts a merged packet (vnet header + GSO packet, as take returns it) back
// into its segments and writes each with an empty vnet header: the fallback when the
// kernel refuses the GSO packet.
func writeSegments(b []byte, write func([]byte) error) error {
	var h vnetHdr
	h.decode(b)
	var s segmenter
	if err := s.start(&h, b[vnetHdrLen:]); err != nil {
		return err
	}
	seg := make([]byte, vnetHdrLen+65535) // rare path
	for s.pending() {
		n, err := s.next(seg[vnetHdrLen:])
		if err != nil {
			return err
		}
		if err := write(seg[:vnetHdrLen+n]); err != nil {
			return err
		}
	}
	return nil
}

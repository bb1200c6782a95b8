package tun

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// tcpPacket builds a valid IPv4/TCP segment (DF, ACK|flags, timestamp-sized options).
func tcpPacket(seq uint32, flags byte, payload []byte) []byte {
	p := make([]byte, 52+len(payload))
	p[0], p[pkt.IPv4TTLOffset], p[pkt.IPv4ProtocolOffset] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(p[pkt.IPv4TotalLenOffset:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[pkt.IPv4IDOffset:], 77)
	binary.BigEndian.PutUint16(p[pkt.IPv4FlagsFragOffset:], pkt.IPv4FlagDontFrag)
	copy(p[pkt.IPv4SrcAddrOffset:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[pkt.TCPSeqNumOffset:], seq)
	binary.BigEndian.PutUint32(t[pkt.TCPAckNumOffset:], 99)
	t[pkt.TCPDataOffsetOffset] = 8 << 4
	t[pkt.TCPFlagsOffset] = pkt.TCPFlagAck | flags
	binary.BigEndian.PutUint16(t[pkt.TCPWindowOffset:], 512)
	copy(t[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(t[32:], payload)
	setChecksums(p, 20)
	return p
}

func validTCP(t *testing.T, p []byte) {
	t.Helper()
	ip := pkt.IPv4(p)
	if !ip.IsValid(len(p)) || int(ip.TotalLength()) != len(p) {
		t.Fatal("bad total length")
	}
	if !ip.IsChecksumValid() {
		t.Fatal("bad IP checksum")
	}
	if !pkt.TCP(ip.Payload()).IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress()) {
		t.Fatal("bad TCP checksum")
	}
}

// TestCoalesceSegmentRoundTrip merges in-order segments into one GSO packet the way
// QueuePacket does and cuts it again the way ReadPacket does: the segments must come
// back byte for byte (except IP ID numbering) with valid checksums.
func TestCoalesceSegmentRoundTrip(t *testing.T) {
	const mss = 100
	var segs [][]byte
	seq := uint32(1000)
	for i := range 5 {
		n, fl := mss, byte(0)
		if i == 4 {
			n, fl = 37, pkt.TCPFlagPsh
		}
		pay := bytes.Repeat([]byte{byte('a' + i)}, n)
		segs = append(segs, tcpPacket(seq, fl, pay))
		seq += uint32(n)
	}
	var c coalescer
	for i, s := range segs {
		hl, ok := tcpSegment(s)
		if !ok {
			t.Fatalf("segment %d not accepted", i)
		}
		if i == 0 {
			c.hold(s, hl)
			continue
		}
		if !c.mergeable(s, hl) {
			t.Fatalf("segment %d not mergeable", i)
		}
		c.add(s, hl)
	}
	if !c.closed || c.segs != 5 {
		t.Fatalf("closed %v segs %d", c.closed, c.segs)
	}
	out := c.take()
	var h vnetHdr
	h.decode(out)
	if h.gsoType != unix.VIRTIO_NET_HDR_GSO_TCPV4 || h.gsoSize != mss || h.hdrLen != 52 ||
		h.flags != unix.VIRTIO_NET_HDR_F_NEEDS_CSUM || h.csumStart != 20 || h.csumOffset != 16 {
		t.Fatalf("vnet header %+v", h)
	}
	super := append([]byte(nil), out[vnetHdrLen:]...)
	if !pkt.IPv4(super).IsChecksumValid() || len(super) != 52+4*mss+37 {
		t.Fatalf("super packet: len %d", len(super))
	}
	// The kernel's view: checksum partial; ReadPacket's segmenter must restore the
	// original segments from exactly this.
	var s segmenter
	if err := s.start(&h, super); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	for i := range segs {
		if !s.pending() {
			t.Fatalf("only %d segments", i)
		}
		n, err := s.next(buf)
		if err != nil {
			t.Fatal(err)
		}
		got := buf[:n]
		validTCP(t, got)
		want := append([]byte(nil), segs[i]...)
		binary.BigEndian.PutUint16(want[pkt.IPv4IDOffset:], 77+uint16(i))
		setChecksums(want, 20)
		if !bytes.Equal(got, want) {
			t.Fatalf("segment %d:\n got %x\nwant %x", i, got, want)
		}
	}
	if s.pending() {
		t.Fatal("extra segments")
	}
}

// TestWriteSegmentsFallback: a merged packet the kernel refused is written again as
// its original segments (empty vnet header, valid checksums).
func TestWriteSegmentsFallback(t *testing.T) {
	var segs [][]byte
	for i := range 3 {
		segs = append(segs, tcpPacket(500+uint32(i)*80, 0, bytes.Repeat([]byte{byte(i)}, 80)))
	}
	var c coalescer
	hl, _ := tcpSegment(segs[0])
	c.hold(segs[0], hl)
	for _, s := range segs[1:] {
		c.add(s, hl)
	}
	var got [][]byte
	err := writeSegments(c.take(), func(p []byte) error {
		if !bytes.Equal(p[:vnetHdrLen], make([]byte, vnetHdrLen)) {
			t.Fatal("vnet header not empty")
		}
		got = append(got, append([]byte(nil), p[vnetHdrLen:]...))
		return nil
	})
	if err != nil || len(got) != len(segs) {
		t.Fatalf("err %v, %d segments", err, len(got))
	}
	for i := range segs {
		validTCP(t, got[i])
		if !bytes.Equal(got[i][20:], segs[i][20:]) {
			t.Fatalf("segment %d differs", i)
		}
	}
}

func TestCoalesceRefuses(t *testing.T) {
	base := tcpPacket(1000, 0, make([]byte, 100))
	hl, _ := tcpSegment(base)
	cases := map[string][]byte{
		"gap":    tcpPacket(1101, 0, make([]byte, 100)),
		"bigger": tcpPacket(1100, 0, make([]byte, 101)),
		"other ack": func() []byte {
			p := tcpPacket(1100, 0, make([]byte, 100))
			p[20+pkt.TCPAckNumOffset+3]++
			fix(p)
			return p
		}(),
		"other port": func() []byte { p := tcpPacket(1100, 0, make([]byte, 100)); p[21]++; fix(p); return p }(),
		"options":    func() []byte { p := tcpPacket(1100, 0, make([]byte, 100)); p[20+31]++; fix(p); return p }(),
	}
	for name, p := range cases {
		var c coalescer
		c.hold(base, hl)
		h2, ok := tcpSegment(p)
		if ok && c.mergeable(p, h2) {
			t.Errorf("%s: merged", name)
		}
	}
	// Not accepted for merging at all: corrupted checksum, SYN, FIN, no DF, no payload.
	bad := tcpPacket(1100, 0, make([]byte, 100))
	bad[len(bad)-1] ^= 1
	syn := tcpPacket(1100, pkt.TCPFlagSyn, make([]byte, 10))
	fin := tcpPacket(1100, pkt.TCPFlagFin, make([]byte, 10))
	nodf := tcpPacket(1100, 0, make([]byte, 10))
	binary.BigEndian.PutUint16(nodf[pkt.IPv4FlagsFragOffset:], 0)
	fix(nodf)
	empty := tcpPacket(1100, 0, nil)
	for name, p := range map[string][]byte{"corrupt": bad, "syn": syn, "fin": fin, "no DF": nodf, "empty": empty} {
		if _, ok := tcpSegment(p); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	// After a short segment nothing more is merged.
	var c coalescer
	c.hold(base, hl)
	short := tcpPacket(1100, 0, make([]byte, 50))
	h2, _ := tcpSegment(short)
	c.add(short, h2)
	next := tcpPacket(1150, 0, make([]byte, 50))
	if h3, _ := tcpSegment(next); c.mergeable(next, h3) {
		t.Error("merged after a short segment")
	}
	// A single held segment is written unchanged with an empty vnet header.
	var one coalescer
	one.hold(base, hl)
	out := one.take()
	if !bytes.Equal(out[:vnetHdrLen], make([]byte, vnetHdrLen)) || !bytes.Equal(out[vnetHdrLen:], base) {
		t.Error("single segment changed")
	}
}

func fix(p []byte) { setChecksums(p, 20) }

// TestFinishChecksum: a NEEDS_CSUM packet (pseudo-header sum in the field) gets its
// final checksum.
func TestFinishChecksum(t *testing.T) {
	p := tcpPacket(5, pkt.TCPFlagPsh, []byte("hello, partial checksum"))
	ip, tcp := pkt.IPv4(p), pkt.TCP(p[20:])
	want := tcp.Checksum()
	tcp.SetChecksum(pkt.PseudoHeaderSum(ip.SourceAddress(), ip.DestinationAddress(), pkt.IPv4ProtocolTCP, uint16(len(tcp))))
	h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: pkt.TCPChecksumOffset}
	if !finishChecksum(&h, p) || tcp.Checksum() != want {
		t.Fatalf("checksum %04x want %04x", tcp.Checksum(), want)
	}
	h.csumStart = uint16(len(p))
	if finishChecksum(&h, p) {
		t.Fatal("out-of-range csum_start accepted")
	}
}

// FuzzSegment: whatever the kernel's vnet header and packet say, segmenting never
// panics and never writes past the buffer.
func FuzzSegment(f *testing.F) {
	p := tcpPacket(1, pkt.TCPFlagPsh, make([]byte, 300))
	hdr := make([]byte, vnetHdrLen)
	(&vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 100, hdrLen: 52}).encode(hdr)
	f.Add(append(hdr, p...))
	f.Add(append(make([]byte, vnetHdrLen), p[:45]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < vnetHdrLen {
			return
		}
		var h vnetHdr
		h.decode(b)
		p := append([]byte(nil), b[vnetHdrLen:]...)
		if h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
			finishChecksum(&h, p)
		}
		var s segmenter
		if s.start(&h, p) != nil {
			return
		}
		out := make([]byte, 1500)
		for i := 0; s.pending(); i++ {
			if i > len(p) {
				t.Fatal("segmenting does not end")
			}
			n, err := s.next(out)
			if err != nil {
				return
			}
			if n > len(out) {
				t.Fatal("overrun")
			}
		}
	})
}

// FuzzCoalesce: packets from the peer (network bytes) go through the merge decision;
// no panic, and whatever is merged is a GSO packet whose segments have valid checksums.
func FuzzCoalesce(f *testing.F) {
	a := tcpPacket(1000, 0, make([]byte, 100))
	b := tcpPacket(1100, pkt.TCPFlagPsh, make([]byte, 60))
	f.Add(a, b, a)
	f.Add(a, a, b)
	f.Fuzz(func(t *testing.T, p1, p2, p3 []byte) {
		var c coalescer
		for _, p := range [][]byte{p1, p2, p3} {
			hl, ok := tcpSegment(p)
			switch {
			case ok && c.mergeable(p, hl):
				c.add(p, hl)
			case ok && c.n == 0:
				c.hold(p, hl)
			}
		}
		if c.n == 0 {
			return
		}
		segs := c.segs
		out := c.take()
		var h vnetHdr
		h.decode(out)
		if segs == 1 {
			return
		}
		var s segmenter
		if err := s.start(&h, append([]byte(nil), out[vnetHdrLen:]...)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		for n := 0; s.pending(); n++ {
			k, err := s.next(buf)
			if err != nil {
				t.Fatal(err)
			}
			validTCP(t, buf[:k])
			if n >= segs {
				t.Fatal("more segments out than in")
			}
		}
	})
}

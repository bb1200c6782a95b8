package tun

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// benchSegments returns 44 in-order 1448-octet segments of one flow (a 64 KiB
// TSO burst) and the GSO packet they merge into, vnet header first.
func benchSegments(b *testing.B) (segs [][]byte, merged []byte) {
	const mss, n = 1448, 44
	for i := range n {
		fl := byte(0)
		if i == n-1 {
			fl = pkt.TCPFlagPsh
		}
		segs = append(segs, tcpPacket(1000+uint32(i*mss), fl, bytes.Repeat([]byte{byte(i)}, mss)))
	}
	var c coalescer
	coalesce(b, &c, segs)
	return segs, append([]byte(nil), c.take()...)
}

// coalesce runs segs through c as QueuePacket does; every one must merge.
func coalesce(b *testing.B, c *coalescer, segs [][]byte) {
	for i, s := range segs {
		hl, ok := tcpSegment(s)
		switch {
		case !ok:
			b.Fatal("segment refused")
		case i == 0:
			c.hold(s, hl)
		case c.mergeable(s, hl):
			c.add(s, hl)
		default:
			b.Fatal("not mergeable")
		}
	}
}

// BenchmarkSegment: ReadPacket's TSO path, a 64 KiB packet from the kernel cut
// into 44 segments with their IPv4 and TCP checksums.
func BenchmarkSegment(b *testing.B) {
	_, merged := benchSegments(b)
	var h vnetHdr
	h.decode(merged)
	super := merged[vnetHdrLen:]
	out := make([]byte, 2000)
	b.SetBytes(int64(len(super)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var s segmenter
		if err := s.start(&h, super); err != nil {
			b.Fatal(err)
		}
		for s.pending() {
			if _, err := s.next(out); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCoalesce: QueuePacket's GRO path, 44 segments checked (both
// checksums), merged and finalised as one GSO packet.
func BenchmarkCoalesce(b *testing.B) {
	segs, merged := benchSegments(b)
	var c coalescer
	b.SetBytes(int64(len(merged) - vnetHdrLen))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		coalesce(b, &c, segs)
		c.take()
	}
}

// BenchmarkFinishChecksum: a 1500-octet NEEDS_CSUM packet from the kernel.
func BenchmarkFinishChecksum(b *testing.B) {
	p := tcpPacket(5, pkt.TCPFlagPsh, make([]byte, 1448))
	h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: pkt.TCPChecksumOffset}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		finishChecksum(&h, p)
	}
}

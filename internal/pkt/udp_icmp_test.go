package pkt_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
)

// udpPacket builds IPv4 + UDP carrying payload with gopacket (an encoder
// independent of pkt), checksums computed.
func udpPacket(t testing.TB, src, dst [4]byte, sport, dport uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: pkttest.IP4(src), DstIP: pkttest.IP4(dst)}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return pkttest.Serialize(t, ip, udp, gopacket.Payload(payload))
}

// icmpPacket builds IPv4 + ICMP (type, code, id, seq) carrying payload with gopacket.
func icmpPacket(t testing.TB, src, dst [4]byte, typ, code uint8, id, seq uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: pkttest.IP4(src), DstIP: pkttest.IP4(dst)}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq}
	return pkttest.Serialize(t, ip, icmp, gopacket.Payload(payload))
}

func TestUDPViewAgainstGopacket(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("x"), []byte("hello, dhcp"), bytes.Repeat([]byte{0xff}, 301)} {
		b := udpPacket(t, lanA, server, 68, 67, payload)
		p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
		gudp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("gopacket: no UDP in % x", b)
		}
		ip := pkt.IPv4(b)
		u := pkt.UDP(ip.Payload())
		if !u.IsValid() {
			t.Fatalf("len %d: IsValid", len(payload))
		}
		if u.SourcePort() != uint16(gudp.SrcPort) || u.DestinationPort() != uint16(gudp.DstPort) ||
			u.Length() != gudp.Length || u.Checksum() != gudp.Checksum || !bytes.Equal(u.Payload(), gudp.Payload) {
			t.Fatalf("len %d: UDP view disagrees with gopacket: %+v", len(payload), gudp)
		}
		if got := u.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()); got != gudp.Checksum {
			t.Fatalf("len %d: CalculateChecksum %#04x, gopacket %#04x", len(payload), got, gudp.Checksum)
		}
		// Bytes beyond Length (link padding) are not payload and not summed.
		padded := append(append([]byte(nil), u...), 0xde, 0xad)
		if pu := pkt.UDP(padded); !pu.IsValid() || !bytes.Equal(pu.Payload(), gudp.Payload) ||
			pu.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()) != gudp.Checksum {
			t.Fatalf("len %d: padding counted", len(payload))
		}
	}
}

// TestUDPChecksumZeroIsSentAsOnes: a datagram whose checksum computes to 0
// carries 0xffff (RFC 768: 0 means "no checksum").
func TestUDPChecksumZeroIsSentAsOnes(t *testing.T) {
	b := udpPacket(t, lanA, server, 68, 67, make([]byte, 10))
	ip := pkt.IPv4(b)
	u := pkt.UDP(ip.Payload())
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	// Choose the last payload word so that the covered sum is 0xffff.
	s := pkt.Sum(u[:pkt.UDPChecksumOffset], pkt.PseudoHeaderSum(src, dst, pkt.IPv4ProtocolUDP, u.Length()))
	s = pkt.Sum(u[pkt.UDPChecksumOffset+2:len(u)-2], s)
	binary.BigEndian.PutUint16(u[len(u)-2:], ^s)
	if got := u.CalculateChecksum(src, dst); got != 0xffff {
		t.Fatalf("CalculateChecksum = %#04x, want 0xffff", got)
	}
}

func TestUDPIsValidRejects(t *testing.T) {
	good := pkt.IPv4(udpPacket(t, lanA, server, 1, 2, []byte("abcd"))).Payload()
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       good[:7],
		"length<8":    withUint16(good, pkt.UDPLengthOffset, 7),
		"length>data": withUint16(good, pkt.UDPLengthOffset, uint16(len(good)+1)),
		"truncated":   good[:len(good)-1],
	} {
		if pkt.UDP(b).IsValid() {
			t.Errorf("%s: IsValid accepted", name)
		}
	}
}

func TestICMPv4ViewAgainstGopacket(t *testing.T) {
	for _, tc := range []struct {
		typ, code uint8
		payload   []byte
	}{
		{pkt.ICMPv4Echo, 0, []byte("ping payload")},
		{pkt.ICMPv4EchoReply, 0, []byte("odd")},
		{pkt.ICMPv4Unreachable, 4, make([]byte, 28)},
		{pkt.ICMPv4TimeExceed, 0, nil},
	} {
		b := icmpPacket(t, lanA, server, tc.typ, tc.code, 0x1234, 7, tc.payload)
		p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
		gicmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if !ok {
			t.Fatalf("gopacket: no ICMP in % x", b)
		}
		c := pkt.ICMPv4(pkt.IPv4(b).Payload())
		if !c.IsValid() {
			t.Fatal("IsValid")
		}
		if c.Type() != gicmp.TypeCode.Type() || c.Code() != gicmp.TypeCode.Code() || c.Checksum() != gicmp.Checksum ||
			c.Ident() != gicmp.Id || c.Sequence() != gicmp.Seq {
			t.Fatalf("type %d: ICMPv4 view disagrees with gopacket: %+v", tc.typ, gicmp)
		}
		if got := c.CalculateChecksum(); got != gicmp.Checksum {
			t.Fatalf("type %d: CalculateChecksum %#04x, gopacket %#04x", tc.typ, got, gicmp.Checksum)
		}
		// An echo answered in place, as a kernel does: type 0, checksum patched.
		if tc.typ == pkt.ICMPv4Echo {
			c.SetChecksum(pkt.UpdateByte(c.Checksum(), pkt.ICMPv4TypeOffset, c.Type(), pkt.ICMPv4EchoReply))
			c[pkt.ICMPv4TypeOffset] = pkt.ICMPv4EchoReply
			want := icmpPacket(t, lanA, server, pkt.ICMPv4EchoReply, 0, 0x1234, 7, tc.payload)
			if !bytes.Equal(b, want) {
				t.Fatalf("echo reply\n got % x\nwant % x", b, want)
			}
		}
	}
	if pkt.ICMPv4(make([]byte, pkt.ICMPv4MinimumSize-1)).IsValid() {
		t.Error("short ICMP accepted")
	}
}

// withUint16 returns a copy of b with the 16-bit word at off set to v.
func withUint16(b []byte, off int, v uint16) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint16(c[off:], v)
	return c
}

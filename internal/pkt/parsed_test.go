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

// TestParseAgainstGopacket: Parse's flat summary of TCP, UDP, ICMP, GRE and a
// fragment says what gopacket decodes from the same bytes.
func TestParseAgainstGopacket(t *testing.T) {
	seq := uint32(9)
	for name, b := range map[string][]byte{
		"tcp":          pkttest.TCP(t, lanA, server, 40000, 1723, []byte("control"), pkttest.TCPOpt{SYN: true, ACK: true, Seq: 0xfedcba98, Options: true}),
		"tcp-empty":    pkttest.TCP(t, lanA, server, 1, 2, nil, pkttest.TCPOpt{FIN: true, ACK: true}),
		"udp":          udpPacket(t, lanA, server, 68, 67, []byte("bootp")),
		"icmp":         icmpPacket(t, lanA, server, pkt.ICMPv4Echo, 0, 0x4242, 3, []byte("ping")),
		"gre":          pkttest.GRE(t, lanA, server, 5, pkttest.GREOpt{Seq: &seq, IPOptions: true}),
		"fragment":     pkttest.GRE(t, lanA, server, 5, pkttest.GREOpt{FlagsFrag: 0x2000}),
		"tcp-trailing": append(pkttest.TCP(t, lanA, server, 3, 4, []byte("pad"), pkttest.TCPOpt{ACK: true}), 0, 0, 0),
	} {
		var p pkt.Parsed
		p.Parse(b)
		if p.Err != "" {
			t.Errorf("%s: Err %q", name, p.Err)
			continue
		}
		g := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
		gip := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		frag := gip.Flags&layers.IPv4MoreFragments != 0 || gip.FragOffset != 0
		if !bytes.Equal(p.Src[:], gip.SrcIP.To4()) || !bytes.Equal(p.Dst[:], gip.DstIP.To4()) ||
			p.Proto != uint8(gip.Protocol) || p.IPLen != int(gip.IHL)*4 || p.TotalLen != int(gip.Length) || p.Fragment != frag {
			t.Errorf("%s: IPv4 summary %+v, gopacket %+v", name, p, gip)
		}
		if !bytes.Equal(p.Transport(b), gip.Payload) || !bytes.Equal(p.IPv4(b), b[:gip.Length]) {
			t.Errorf("%s: Transport/IPv4 bytes differ from gopacket's", name)
		}
		var sport, dport uint16
		var payload []byte
		switch l := g.Layer(layers.LayerTypeTCP); {
		case frag:
			payload = gip.Payload
		case l != nil:
			tcp := l.(*layers.TCP)
			sport, dport, payload = uint16(tcp.SrcPort), uint16(tcp.DstPort), tcp.Payload
			var flags uint8
			for bit, set := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR} {
				if set {
					flags |= 1 << bit
				}
			}
			if p.TCPFlags != flags || p.TCPSeq != tcp.Seq {
				t.Errorf("%s: TCP flags %#02x seq %d, gopacket %#02x %d", name, p.TCPFlags, p.TCPSeq, flags, tcp.Seq)
			}
		case g.Layer(layers.LayerTypeUDP) != nil:
			udp := g.Layer(layers.LayerTypeUDP).(*layers.UDP)
			sport, dport, payload = uint16(udp.SrcPort), uint16(udp.DstPort), udp.Payload
		case g.Layer(layers.LayerTypeICMPv4) != nil:
			icmp := g.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			sport, dport, payload = icmp.Id, icmp.Id, icmp.Payload
		default: // GRE: the IP payload
			payload = gip.Payload
		}
		if p.SrcPort != sport || p.DstPort != dport || !bytes.Equal(p.Payload(b), payload) {
			t.Errorf("%s: ports %d>%d payload % x, gopacket %d>%d % x", name, p.SrcPort, p.DstPort, p.Payload(b), sport, dport, payload)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	tcp := pkttest.TCP(t, lanA, server, 1, 2, []byte("abc"), pkttest.TCPOpt{ACK: true})
	udp := udpPacket(t, lanA, server, 1, 2, []byte("abc"))
	icmp := icmpPacket(t, lanA, server, pkt.ICMPv4Echo, 0, 1, 1, nil)
	for name, tc := range map[string]struct {
		b   []byte
		err string
	}{
		"empty":          {nil, pkt.ErrIPv4},
		"short":          {tcp[:19], pkt.ErrIPv4},
		"ipv6":           {withByte(tcp, 0, 0x60), pkt.ErrIPv4},
		"total>len":      {tcp[:len(tcp)-1], pkt.ErrIPv4},
		"tcp doff>len":   {withByte(tcp, 20+pkt.TCPDataOffsetOffset, 0xf0), pkt.ErrTransport},
		"tcp doff<5":     {withByte(tcp, 20+pkt.TCPDataOffsetOffset, 0x40), pkt.ErrTransport},
		"tcp cut":        {cutIPv4(tcp, 20+19), pkt.ErrTransport},
		"udp length>len": {withUint16(udp, 20+pkt.UDPLengthOffset, 100), pkt.ErrTransport},
		"udp cut":        {cutIPv4(udp, 20+7), pkt.ErrTransport},
		"icmp cut":       {cutIPv4(icmp, 20+7), pkt.ErrTransport},
		// A fragment's transport header is not read: a cut one is fine.
		"fragment cut": {withUint16(cutIPv4(tcp, 20+4), pkt.IPv4FlagsFragOffset, pkt.IPv4FlagMoreFrags), ""},
	} {
		var p pkt.Parsed
		p.Parse(tc.b)
		if p.Err != tc.err {
			t.Errorf("%s: Err %q, want %q", name, p.Err, tc.err)
		}
		if p.Err == pkt.ErrIPv4 && (p != pkt.Parsed{Err: pkt.ErrIPv4}) {
			t.Errorf("%s: fields set on a bad IPv4 header: %+v", name, p)
		}
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	b := pkttest.TCP(t, lanA, server, 40000, 1723, []byte("x"), pkttest.TCPOpt{SYN: true, Options: true})
	var p pkt.Parsed
	if n := testing.AllocsPerRun(1000, func() { p.Parse(b) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

// FuzzParse: Parse never panics; Err is set exactly when the views' IsValid say
// so; what it reports agrees with the views and stays within the packet.
func FuzzParse(f *testing.F) {
	seq := uint32(1)
	f.Add(pkttest.TCP(f, lanA, server, 40000, 1723, []byte("seed"), pkttest.TCPOpt{SYN: true, Options: true}))
	f.Add(udpPacket(f, lanA, server, 68, 67, []byte("bootp")))
	f.Add(icmpPacket(f, lanA, server, pkt.ICMPv4Echo, 0, 9, 9, []byte("ping")))
	f.Add(pkttest.GRE(f, lanA, server, 5, pkttest.GREOpt{Seq: &seq, IPOptions: true}))
	f.Add(pkttest.GRE(f, lanA, server, 5, pkttest.GREOpt{FlagsFrag: 0x2001}))
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p pkt.Parsed
		p.Parse(b)
		ip := pkt.IPv4(b)
		if !ip.IsValid(len(b)) {
			if (p != pkt.Parsed{Err: pkt.ErrIPv4}) {
				t.Fatalf("invalid IPv4 header parsed as %+v", p)
			}
			return
		}
		if p.Err == pkt.ErrIPv4 {
			t.Fatal("valid IPv4 header reported malformed")
		}
		if p.Src != ip.SourceAddress() || p.Dst != ip.DestinationAddress() || p.Proto != ip.Protocol() ||
			p.IPLen != ip.HeaderLength() || p.TotalLen != int(ip.TotalLength()) || p.Fragment != ip.IsFragment() {
			t.Fatalf("IPv4 summary %+v disagrees with the view", p)
		}
		l4 := ip.Payload()
		var valid bool
		switch {
		case p.Fragment:
			valid = true
		case p.Proto == pkt.IPv4ProtocolTCP:
			valid = pkt.TCP(l4).IsValid()
			if valid && (p.SrcPort != pkt.TCP(l4).SourcePort() || p.TCPSeq != pkt.TCP(l4).SequenceNumber() ||
				p.TCPFlags != pkt.TCP(l4).Flags() || p.PayloadOff != p.IPLen+pkt.TCP(l4).DataOffset()) {
				t.Fatalf("TCP summary %+v disagrees with the view", p)
			}
		case p.Proto == pkt.IPv4ProtocolUDP:
			valid = pkt.UDP(l4).IsValid()
			if valid && (p.DstPort != pkt.UDP(l4).DestinationPort() || p.PayloadOff != p.IPLen+pkt.UDPMinimumSize) {
				t.Fatalf("UDP summary %+v disagrees with the view", p)
			}
		case p.Proto == pkt.IPv4ProtocolICMP:
			valid = pkt.ICMPv4(l4).IsValid()
		default:
			valid = true
		}
		if valid != (p.Err == "") {
			t.Fatalf("Err %q, but the views say valid=%v (%+v)", p.Err, valid, p)
		}
		if p.Err != "" {
			if p.Err != pkt.ErrTransport {
				t.Fatalf("Err %q", p.Err)
			}
			return
		}
		if !(pkt.IPv4MinimumSize <= p.IPLen && p.IPLen <= p.PayloadOff && p.PayloadOff <= p.PayloadEnd &&
			p.PayloadEnd <= p.TotalLen && p.TotalLen <= len(b)) {
			t.Fatalf("offsets out of order or bounds: %+v, %d bytes", p, len(b))
		}
		// The payload ends at Total Length, except UDP's, which ends where
		// its Length says (padding after a datagram is not payload).
		end := p.TotalLen
		if p.Proto == pkt.IPv4ProtocolUDP && !p.Fragment {
			end = p.IPLen + int(pkt.UDP(l4).Length())
		}
		if p.PayloadEnd != end {
			t.Fatalf("payload ends at %d, want %d: %+v", p.PayloadEnd, end, p)
		}
		if len(p.IPv4(b)) != p.TotalLen || len(p.Transport(b)) != p.TotalLen-p.IPLen || len(p.Payload(b)) != p.PayloadEnd-p.PayloadOff {
			t.Fatal("accessor lengths")
		}
	})
}

func withByte(b []byte, off int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[off] = v
	return c
}

// cutIPv4 returns the first n bytes of the IPv4 packet b with Total Length set
// to n and the header checksum left as it was (Parse does not verify it).
func cutIPv4(b []byte, n int) []byte {
	return withUint16(b[:n], pkt.IPv4TotalLenOffset, uint16(n))
}

// A UDP datagram shorter than its IP payload (padding after it) has a
// Payload that ends where its Length says; an ICMP message that is not an
// echo has no identifier, so no ports.
func TestParseUDPLengthAndICMPPorts(t *testing.T) {
	b := udpPacket(t, lanA, server, 68, 67, []byte("bootp"))
	padded := append(bytes.Clone(b), 0, 0, 0, 0)
	ip := pkt.IPv4(padded)
	binary.BigEndian.PutUint16(padded[pkt.IPv4TotalLenOffset:], uint16(len(padded)))
	ip.SetChecksum(0)
	ip.SetChecksum(ip.CalculateChecksum())
	var p pkt.Parsed
	p.Parse(padded)
	if p.Err != "" || string(p.Payload(padded)) != "bootp" {
		t.Errorf("padded UDP: Err %q, payload %q, want \"bootp\"", p.Err, p.Payload(padded))
	}
	p.Parse(icmpPacket(t, lanA, server, pkt.ICMPv4Unreachable, 3, 0x4242, 3, []byte("orig")))
	if p.Err != "" || p.SrcPort != 0 || p.DstPort != 0 {
		t.Errorf("ICMP unreachable: %+v, want no ports", p)
	}
	p.Parse(icmpPacket(t, lanA, server, pkt.ICMPv4EchoReply, 0, 0x4242, 3, []byte("pong")))
	if p.SrcPort != 0x4242 || p.DstPort != 0x4242 {
		t.Errorf("ICMP echo reply: ports %d/%d, want the identifier", p.SrcPort, p.DstPort)
	}
}

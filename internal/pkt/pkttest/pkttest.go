// Package pkttest builds IPv4/TCP/GRE packets with gopacket, an encoder
// independent of internal/pkt, for tests of the packet paths. Test code only.
package pkttest

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"pptpgw/internal/pkt"
)

// Addresses for tests: two inside hosts, the gateway's public address and a
// server outside (documentation ranges, RFC 5737, and 10/8).
var (
	LANA     = [4]byte{10, 0, 0, 2}
	LANB     = [4]byte{10, 0, 0, 3}
	PublicIP = [4]byte{203, 0, 113, 1}
	Server   = [4]byte{198, 51, 100, 7}
)

// Packet fixtures built with gopacket, so that the bytes under test come from
// an independent encoder.

func IP4(a [4]byte) net.IP { return net.IPv4(a[0], a[1], a[2], a[3]).To4() }

func Serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

type GREOpt struct {
	Seq, Ack  *uint32
	ID        uint16 // IP ID
	FlagsFrag uint16 // raw flags+fragment offset word
	Payload   []byte
	IPOptions bool
}

// GRE builds IPv4 + enhanced GRE (version 1, K set) carrying payload.
func GRE(t testing.TB, src, dst [4]byte, callID uint16, o GREOpt) []byte {
	t.Helper()
	if o.Payload == nil {
		o.Payload = []byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04} // PPP LCP-ish
	}
	g := &layers.GRE{
		KeyPresent: true, Version: 1, Protocol: layers.EthernetTypePPP,
		Key: uint32(len(o.Payload))<<16 | uint32(callID),
	}
	if o.Seq != nil {
		g.SeqPresent, g.Seq = true, *o.Seq
	}
	if o.Ack != nil {
		g.AckPresent, g.Ack = true, *o.Ack
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolGRE, SrcIP: IP4(src), DstIP: IP4(dst), Id: o.ID}
	ip.Flags = layers.IPv4Flag(o.FlagsFrag >> 13)
	ip.FragOffset = o.FlagsFrag & 0x1fff
	if o.IPOptions {
		ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	}
	return Serialize(t, ip, g, gopacket.Payload(o.Payload))
}

type TCPOpt struct {
	SYN, ACK, FIN, RST, PSH bool
	Seq, AckNum             uint32
	Options                 bool
}

// TCP builds IPv4 + TCP carrying payload.
func TCP(t testing.TB, src, dst [4]byte, sport, dport uint16, payload []byte, o TCPOpt) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: IP4(src), DstIP: IP4(dst), Id: 7, Flags: layers.IPv4DontFragment}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport),
		Seq: o.Seq, Ack: o.AckNum, SYN: o.SYN, ACK: o.ACK, FIN: o.FIN, RST: o.RST, PSH: o.PSH, Window: 64240,
	}
	if o.Options {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return Serialize(t, ip, tcp, gopacket.Payload(payload))
}

// CheckSums verifies the IPv4 header checksum and, for TCP, the TCP checksum
// by full recomputation, and that gopacket decodes the packet cleanly.
func CheckSums(t testing.TB, b []byte) {
	t.Helper()
	ip := pkt.IPv4(b)
	if !ip.IsValid(len(b)) {
		t.Fatalf("invalid IPv4 packet % x", b)
	}
	if got, want := ip.Checksum(), ip.CalculateChecksum(); got != want {
		t.Fatalf("IPv4 checksum %#04x, recomputed %#04x", got, want)
	}
	if ip.Protocol() == pkt.IPv4ProtocolTCP && !ip.IsFragment() {
		seg := pkt.TCP(ip.Payload())
		if got, want := seg.Checksum(), seg.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()); got != want {
			t.Fatalf("TCP checksum %#04x, recomputed %#04x", got, want)
		}
	}
	// gopacket must decode the headers (it may not know the PPP payload).
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	switch {
	case ip.IsFragment():
	case ip.Protocol() == pkt.IPv4ProtocolGRE && p.Layer(layers.LayerTypeGRE) == nil,
		ip.Protocol() == pkt.IPv4ProtocolTCP && p.Layer(layers.LayerTypeTCP) == nil:
		t.Fatalf("gopacket cannot decode: %v", p.ErrorLayer())
	}
}

// GREKey returns the call ID in the key of the GRE packet b.
func GREKey(b []byte) uint16 {
	ip := pkt.IPv4(b)
	return binary.BigEndian.Uint16(ip.Payload()[6:])
}

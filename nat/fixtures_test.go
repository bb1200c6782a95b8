package nat

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Packet fixtures built with gopacket, so that the bytes under test come from
// an independent encoder.

func ip4(a [4]byte) net.IP { return net.IPv4(a[0], a[1], a[2], a[3]).To4() }

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

type greOpt struct {
	seq, ack  *uint32
	id        uint16 // IP ID
	flagsFrag uint16 // raw flags+fragment offset word
	payload   []byte
	ipOptions bool
}

// mkGRE builds IPv4 + enhanced GRE (version 1, K set) carrying payload.
func mkGRE(t testing.TB, src, dst [4]byte, callID uint16, o greOpt) []byte {
	t.Helper()
	if o.payload == nil {
		o.payload = []byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04} // PPP LCP-ish
	}
	g := &layers.GRE{
		KeyPresent: true, Version: 1, Protocol: layers.EthernetTypePPP,
		Key: uint32(len(o.payload))<<16 | uint32(callID),
	}
	if o.seq != nil {
		g.SeqPresent, g.Seq = true, *o.seq
	}
	if o.ack != nil {
		g.AckPresent, g.Ack = true, *o.ack
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolGRE, SrcIP: ip4(src), DstIP: ip4(dst), Id: o.id}
	ip.Flags = layers.IPv4Flag(o.flagsFrag >> 13)
	ip.FragOffset = o.flagsFrag & 0x1fff
	if o.ipOptions {
		ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	}
	return serialize(t, ip, g, gopacket.Payload(o.payload))
}

type tcpOpt struct {
	syn, ack, fin, rst, psh bool
	seq, ackNum             uint32
	options                 bool
}

// mkTCP builds IPv4 + TCP carrying payload.
func mkTCP(t testing.TB, src, dst [4]byte, sport, dport uint16, payload []byte, o tcpOpt) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4(src), DstIP: ip4(dst), Id: 7, Flags: layers.IPv4DontFragment}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport),
		Seq: o.seq, Ack: o.ackNum, SYN: o.syn, ACK: o.ack, FIN: o.fin, RST: o.rst, PSH: o.psh, Window: 64240,
	}
	if o.options {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

// checkSums verifies the IPv4 header checksum and, for TCP, the TCP checksum
// by full recomputation, and that gopacket decodes the packet cleanly.
func checkSums(t testing.TB, b []byte) {
	t.Helper()
	ip := IPv4(b)
	if !ip.IsValid(len(b)) {
		t.Fatalf("invalid IPv4 packet % x", b)
	}
	if got, want := ip.Checksum(), ip.CalculateChecksum(); got != want {
		t.Fatalf("IPv4 checksum %#04x, recomputed %#04x", got, want)
	}
	if ip.Protocol() == IPv4ProtocolTCP && !ip.IsFragment() {
		seg := TCP(ip.Payload())
		if got, want := seg.Checksum(), seg.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()); got != want {
			t.Fatalf("TCP checksum %#04x, recomputed %#04x", got, want)
		}
	}
	// gopacket must decode the headers (it may not know the PPP payload).
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	switch {
	case ip.IsFragment():
	case ip.Protocol() == IPv4ProtocolGRE && p.Layer(layers.LayerTypeGRE) == nil,
		ip.Protocol() == IPv4ProtocolTCP && p.Layer(layers.LayerTypeTCP) == nil:
		t.Fatalf("gopacket cannot decode: %v", p.ErrorLayer())
	}
}

func greKey(b []byte) uint16 {
	ip := IPv4(b)
	return binary.BigEndian.Uint16(ip.Payload()[6:])
}

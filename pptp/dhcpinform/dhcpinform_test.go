package dhcpinform

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	clientIP = netip.MustParseAddr("10.99.0.10")
	serverIP = netip.MustParseAddr("10.99.0.1")
	mac      = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30}
)

// inform builds a DHCPINFORM the way a Windows PPP client sends it, with
// gopacket (an independent encoder).
func inform(t testing.TB, mutate func(ip *layers.IPv4, udp *layers.UDP, d *layers.DHCPv4)) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 128, Protocol: layers.IPProtocolUDP,
		SrcIP: clientIP.AsSlice(), DstIP: net.IPv4bcast}
	udp := &layers.UDP{SrcPort: 68, DstPort: 67}
	d := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet,
		Xid: 0xdeadbeef, ClientIP: clientIP.AsSlice(), ClientHWAddr: mac,
		Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeInform)}),
			layers.NewDHCPOption(layers.DHCPOptHostname, []byte("winclient")),
			layers.NewDHCPOption(layers.DHCPOptParamsRequest, []byte{1, 15, 3, 6, 44, 46, 47, 31, 33, 121, 249, 43}),
		}}
	if mutate != nil {
		mutate(ip, udp, d)
	}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, d)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func TestParseInform(t *testing.T) {
	in, err := Parse(inform(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if in.Xid != 0xdeadbeef || in.Ciaddr != clientIP || in.Src != clientIP || in.Hlen != 6 ||
		!bytes.Equal(in.Chaddr[:6], mac) || !in.Requested(249) || in.Requested(250) {
		t.Fatalf("parsed %+v", in)
	}
}

func decodeReply(t *testing.T, pkt []byte) (*layers.IPv4, *layers.UDP, *layers.DHCPv4) {
	t.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	d, _ := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
	if ip == nil || udp == nil || d == nil {
		t.Fatalf("layers missing: %v", p)
	}
	// Checksums: gopacket, an independent encoder, computes the same ones.
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true},
		ip, udp, gopacket.Payload(udp.Payload)); err != nil {
		t.Fatal(err)
	}
	if want := buf.Bytes(); !bytes.Equal(pkt[10:12], want[10:12]) || !bytes.Equal(pkt[26:28], want[26:28]) {
		t.Errorf("checksums IPv4 % x UDP % x, gopacket computes % x and % x", pkt[10:12], pkt[26:28], want[10:12], want[26:28])
	}
	return ip, udp, d
}

// optionData concatenates all instances of an option (RFC 3396).
func optionData(d *layers.DHCPv4, code layers.DHCPOpt) ([]byte, int) {
	var v []byte
	n := 0
	for _, o := range d.Options {
		if o.Type == code {
			v = append(v, o.Data...)
			n++
		}
	}
	return v, n
}

// A request whose hlen exceeds chaddr's 16 bytes is answered as before, with
// the length capped so that the reply stays well formed (a FuzzParse find).
func TestAnswerCapsHlen(t *testing.T) {
	req := inform(t, nil)
	req[20+8+2] = 17 // hlen
	reply, ok := Answer(req, serverIP, nil, nil)
	if !ok {
		t.Fatal("Answer refused the request")
	}
	if _, _, d := decodeReply(t, reply); d.HardwareLen != 16 {
		t.Errorf("reply hlen %d, want 16", d.HardwareLen)
	}
}

func TestAnswerDecodesWithGopacket(t *testing.T) {
	routes := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.10.0/24"),
		netip.MustParsePrefix("172.16.5.4/32"),
		netip.MustParsePrefix("198.51.100.128/25"),
		netip.MustParsePrefix("0.0.0.0/0"),
	}
	dns := []netip.Addr{netip.MustParseAddr("10.99.0.53"), netip.MustParseAddr("10.99.0.54")}
	reply, ok := Answer(inform(t, nil), serverIP, routes, dns)
	if !ok {
		t.Fatal("Answer refused a DHCPINFORM")
	}
	ip, udp, d := decodeReply(t, reply)
	if !ip.SrcIP.Equal(serverIP.AsSlice()) || !ip.DstIP.Equal(clientIP.AsSlice()) {
		t.Errorf("IP %v -> %v", ip.SrcIP, ip.DstIP)
	}
	if udp.SrcPort != 67 || udp.DstPort != 68 {
		t.Errorf("UDP %d -> %d", udp.SrcPort, udp.DstPort)
	}
	if d.Operation != layers.DHCPOpReply || d.Xid != 0xdeadbeef || !d.ClientIP.Equal(clientIP.AsSlice()) ||
		!d.YourClientIP.Equal(net.IPv4zero) || !bytes.Equal(d.ClientHWAddr, mac) {
		t.Errorf("BOOTP fields: %+v", d)
	}
	if len(d.Contents) < minBootpSize {
		t.Errorf("BOOTP message %d octets, want >= %d", len(d.Contents), minBootpSize)
	}
	mt, _ := optionData(d, layers.DHCPOptMessageType)
	if !bytes.Equal(mt, []byte{byte(layers.DHCPMsgTypeAck)}) {
		t.Errorf("message type %v", mt)
	}
	sid, _ := optionData(d, layers.DHCPOptServerID)
	if !bytes.Equal(sid, serverIP.AsSlice()) {
		t.Errorf("server id %v", sid)
	}
	dv, _ := optionData(d, layers.DHCPOptDNS)
	if !bytes.Equal(dv, []byte{10, 99, 0, 53, 10, 99, 0, 54}) {
		t.Errorf("DNS %v", dv)
	}
	// Option 121 byte-exact RFC 3442 encoding, written out by hand.
	want := []byte{
		8, 10, 10, 99, 0, 1,
		24, 192, 168, 10, 10, 99, 0, 1,
		32, 172, 16, 5, 4, 10, 99, 0, 1,
		25, 198, 51, 100, 128, 10, 99, 0, 1,
		0, 10, 99, 0, 1,
	}
	for _, code := range []layers.DHCPOpt{121, 249} {
		v, _ := optionData(d, code)
		if !bytes.Equal(v, want) {
			t.Errorf("option %d = %v\nwant %v", code, v, want)
		}
		got, routers, err := DecodeRoutes(v)
		if err != nil || len(got) != len(routes) {
			t.Fatalf("DecodeRoutes: %v %v", got, err)
		}
		for i := range got {
			if got[i] != routes[i] || routers[i] != serverIP {
				t.Errorf("route %d = %v via %v", i, got[i], routers[i])
			}
		}
	}
}

func TestManyRoutesSplitOption(t *testing.T) {
	var routes []netip.Prefix
	for i := range 60 {
		routes = append(routes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
	}
	reply, err := AnswerConfig(inform(t, nil), Config{ServerIP: serverIP, Routes: routes,
		Router: netip.MustParseAddr("10.99.0.2"), Domain: "corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, d := decodeReply(t, reply)
	v, n := optionData(d, 121)
	if n < 2 {
		t.Fatalf("60 routes x 7 octets must be split, got %d instance(s)", n)
	}
	got, routers, err := DecodeRoutes(v)
	if err != nil || len(got) != 60 || routers[59] != netip.MustParseAddr("10.99.0.2") {
		t.Fatalf("decoded %d routes, %v", len(got), err)
	}
	dom, _ := optionData(d, layers.DHCPOptDomainName)
	if string(dom) != "corp.example" {
		t.Errorf("domain %q", dom)
	}
}

func TestBroadcastWithoutCiaddr(t *testing.T) {
	pkt := inform(t, func(ip *layers.IPv4, _ *layers.UDP, d *layers.DHCPv4) {
		d.ClientIP = net.IPv4zero
		ip.SrcIP = net.IPv4zero
	})
	reply, ok := Answer(pkt, serverIP, nil, nil)
	if !ok {
		t.Fatal("refused")
	}
	ip, _, _ := decodeReply(t, reply)
	if !ip.DstIP.Equal(net.IPv4bcast) {
		t.Errorf("dst %v", ip.DstIP)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		err  error
	}{
		{"empty", nil, ErrNotIPv4},
		{"discover", inform(t, func(_ *layers.IPv4, _ *layers.UDP, d *layers.DHCPv4) {
			d.Options[0] = layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeDiscover)})
		}), ErrNotInform},
		{"no message type", inform(t, func(_ *layers.IPv4, _ *layers.UDP, d *layers.DHCPv4) {
			d.Options = d.Options[1:]
		}), ErrNotInform},
		{"reply op", inform(t, func(_ *layers.IPv4, _ *layers.UDP, d *layers.DHCPv4) {
			d.Operation = layers.DHCPOpReply
		}), ErrBOOTP},
		{"wrong ports", inform(t, func(_ *layers.IPv4, u *layers.UDP, _ *layers.DHCPv4) {
			u.SrcPort = 1068
		}), ErrPorts},
		{"fragment", func() []byte {
			p := inform(t, nil)
			p[6] |= 0x20 // MF
			return p
		}(), ErrFragment},
		{"tcp", func() []byte {
			p := inform(t, nil)
			p[9] = 6
			return p
		}(), ErrNotUDP},
		{"truncated", inform(t, nil)[:100], ErrIPHeader},
		{"bad option length", func() []byte {
			p := inform(t, nil)
			p[20+8+240+1] = 200 // length of the first option runs past the end
			return p
		}(), ErrOptions},
		{"ipv6", []byte{0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrNotIPv4},
	}
	for _, tc := range tests {
		_, err := Parse(tc.pkt)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if _, ok := Answer(tc.pkt, serverIP, nil, nil); ok {
			t.Errorf("%s: answered", tc.name)
		}
	}
	if _, err := AnswerConfig(inform(t, nil), Config{}); !errors.Is(err, ErrNoAddress) {
		t.Errorf("no server address: %v", err)
	}
}

func TestIsDHCPRequest(t *testing.T) {
	if !IsDHCPRequest(inform(t, nil)) {
		t.Error("inform not recognised")
	}
	reply, _ := Answer(inform(t, nil), serverIP, nil, nil)
	if IsDHCPRequest(reply) || IsDHCPRequest(nil) || IsDHCPRequest([]byte{0x45}) {
		t.Error("false positive")
	}
	frag := inform(t, func(ip *layers.IPv4, _ *layers.UDP, _ *layers.DHCPv4) { ip.Flags = layers.IPv4MoreFragments })
	short := inform(t, nil)
	short = short[:len(short)-1] // Total Length beyond the bytes
	if IsDHCPRequest(frag) || IsDHCPRequest(short) {
		t.Error("fragment or truncated packet taken for a request")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(inform(f, nil))
	f.Add(inform(f, func(_ *layers.IPv4, _ *layers.UDP, d *layers.DHCPv4) { d.Options = nil }))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		in, err := Parse(pkt)
		if err != nil {
			return
		}
		reply, err := Build(in, Config{ServerIP: serverIP, Routes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(reply, layers.LayerTypeIPv4, gopacket.Default)
		if p.ErrorLayer() != nil || p.Layer(layers.LayerTypeDHCPv4) == nil {
			t.Fatalf("reply does not decode: %v", p)
		}
	})
}

func FuzzDecodeRoutes(f *testing.F) {
	f.Add(EncodeRoutes(nil, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, serverIP))
	f.Add([]byte{33, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, v []byte) {
		routes, routers, err := DecodeRoutes(v)
		if err != nil {
			return
		}
		if len(routes) != len(routers) {
			t.Fatal("length mismatch")
		}
		// Re-encoding each route with its router gives a canonical form
		// that decodes to the same routes.
		var enc []byte
		for i := range routes {
			enc = EncodeRoutes(enc, routes[i:i+1], routers[i])
		}
		r2, _, err := DecodeRoutes(enc)
		if err != nil || len(r2) != len(routes) {
			t.Fatalf("re-decode: %v", err)
		}
		for i := range r2 {
			if r2[i] != routes[i] {
				t.Fatalf("route %d: %v != %v", i, r2[i], routes[i])
			}
		}
	})
}

func BenchmarkAnswer(b *testing.B) {
	pkt := inform(b, nil)
	routes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Answer(pkt, serverIP, routes, nil); !ok {
			b.Fatal("refused")
		}
	}
}

package pptp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"pptpgw/internal/pkt"
)

// tcpSYN builds an IPv4 TCP SYN carrying opts, with a valid TCP checksum.
func tcpSYN(opts []byte, flags byte) []byte {
	doff := 20 + len(opts)
	p := make([]byte, 20+doff+10)
	p[0], p[8], p[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], []byte{10, 8, 0, 10})
	copy(p[16:], []byte{10, 99, 0, 2})
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = byte(doff/4) << 4
	tcp[13] = flags
	copy(tcp[20:], opts)
	binary.BigEndian.PutUint16(tcp[16:], ^tcpSum(p))
	return p
}

// tcpSum is the ones' complement sum of p's TCP segment with its
// pseudo-header: 0xffff when the checksum is right.
func tcpSum(p []byte) uint16 {
	ip := pkt.IPv4(p)
	tcp := ip.Payload()
	return pkt.Sum(tcp, pkt.PseudoHeaderSum(ip.SourceAddress(), ip.DestinationAddress(), pkt.IPv4ProtocolTCP, uint16(len(tcp))))
}

func mssOf(p []byte, off int) uint16 { return binary.BigEndian.Uint16(p[20+20+off:]) }

func TestClampMSS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []byte
		flags   byte
		off     int // offset of the MSS value within the options
		changed bool
		want    uint16
	}{
		{"even offset", []byte{2, 4, 0x05, 0xb4}, 0x02, 2, true, 1356},
		{"odd offset", []byte{1, 2, 4, 0x05, 0xb4, 0, 0, 0}, 0x02, 3, true, 1356},
		{"after timestamps", []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0x8c}, 0x12, 14, true, 1356},
		{"already small", []byte{2, 4, 0x04, 0x00}, 0x02, 2, false, 1024},
		{"not a SYN", []byte{2, 4, 0x05, 0xb4}, 0x10, 2, false, 1460},
		{"end of options first", []byte{0, 0, 2, 4, 0x05, 0xb4, 0, 0}, 0x02, 4, false, 1460},
		{"bad option length", []byte{3, 0, 2, 4, 0x05, 0xb4, 0, 0}, 0x02, 4, false, 1460},
	} {
		p := tcpSYN(tc.opts, tc.flags)
		if got := ClampMSS(p, 1356); got != tc.changed {
			t.Errorf("%s: changed = %v", tc.name, got)
		}
		if m := mssOf(p, tc.off); m != tc.want {
			t.Errorf("%s: mss %d, want %d", tc.name, m, tc.want)
		}
		if tcpSum(p) != 0xffff {
			t.Errorf("%s: TCP checksum broken after clamp", tc.name)
		}
	}
	if (&Config{MRU: 1400}).MSS() != 1356 {
		t.Fatal("MSS for MRU 1400 must be 1400-40-4")
	}
}

func FuzzClampMSS(f *testing.F) {
	f.Add([]byte{2, 4, 0x05, 0xb4}, byte(0x02), uint16(1356), 0)
	f.Add([]byte{1, 2, 4, 0xff, 0xff, 0, 0, 0}, byte(0x12), uint16(536), 3)
	f.Add([]byte{}, byte(0x02), uint16(1), 30)
	f.Fuzz(func(t *testing.T, opts []byte, flags byte, mss uint16, cut int) {
		if len(opts) > 40 {
			opts = opts[:40]
		}
		opts = append(opts, make([]byte, (4-len(opts)%4)%4)...)
		p := tcpSYN(opts, flags)
		ClampMSS(p, mss)
		if tcpSum(p) != 0xffff {
			t.Fatalf("checksum broken: %x", p)
		}
		if cut >= 0 && cut < len(p) { // truncated packets never panic
			ClampMSS(p[:cut], mss)
		}
	})
}

// dhcpInform builds a Windows-style DHCPINFORM from the client's tunnel address.
func dhcpInform(client netip.Addr) []byte {
	bootp := make([]byte, 240)
	bootp[0], bootp[1], bootp[2] = 1, 1, 6
	binary.BigEndian.PutUint32(bootp[4:], 0x12345678)
	c4 := client.As4()
	copy(bootp[12:], c4[:])
	copy(bootp[28:], []byte{2, 0, 0, 0, 0, 1})
	copy(bootp[236:], []byte{99, 130, 83, 99})
	bootp = append(bootp, 53, 1, 8, 55, 5, 1, 3, 6, 121, 249, 255)
	p := make([]byte, 28+len(bootp))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], c4[:])
	copy(p[16:], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(p[10:], pkt.Checksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], 68)
	binary.BigEndian.PutUint16(p[22:], 67)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(bootp)))
	copy(p[28:], bootp)
	return p
}

func TestDHCPINFORMSplitRoutes(t *testing.T) {
	routes := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("192.0.2.0/24")}
	r := newRig(t, func(c *Config) { c.SplitRoutes = routes })
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping(t, c, localIP, 64)
	got := make(chan []byte, 1)
	c.OnIP(func(p []byte) {
		select {
		case got <- append([]byte(nil), p...):
		default:
		}
	})
	if err := c.SendIP(dhcpInform(c.Session().Info().LocalIP)); err != nil {
		t.Fatal(err)
	}
	var p []byte
	select {
	case p = <-got:
	case <-time.After(3 * time.Second):
		t.Fatal("no DHCPACK")
	}
	if p[9] != 17 || binary.BigEndian.Uint16(p[20:]) != 67 || binary.BigEndian.Uint16(p[22:]) != 68 {
		t.Fatalf("not a DHCP reply: % x", p[:28])
	}
	// Option 249 with 10.99/16 must be in it: width 16, 10.99, router 10.8.0.9.
	if !bytes.Contains(p, []byte{16, 10, 99, 10, 8, 0, 9}) || !bytes.Contains(p, []byte{249}) {
		t.Fatalf("routes missing from % x", p)
	}
	if r.srv.Counters()["dhcpinform_answered"] != 1 {
		t.Fatal("not counted")
	}
	// Without split routes the server leaves DHCP alone (forwards it like any packet).
	r2 := newRig(t, nil)
	c2, err := r2.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ping(t, c2, localIP, 64)
	c2.SendIP(dhcpInform(c2.Session().Info().LocalIP))
	time.Sleep(100 * time.Millisecond)
	if r2.srv.Counters()["dhcpinform_answered"] != 0 {
		t.Fatal("answered without split routes")
	}
}

func TestSpoofedSourceDropped(t *testing.T) {
	r := newRig(t, nil)
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping(t, c, localIP, 64)
	before := r.net.written.Load()
	c.SendIP(udpPacket(netip.MustParseAddr("10.8.0.77"), behind, 100))
	time.Sleep(100 * time.Millisecond)
	if r.net.written.Load() != before || r.srv.Counters()["peer_spoofed_source"] != 1 {
		t.Fatalf("spoofed packet forwarded: %v", r.srv.Counters())
	}
}

// BenchmarkClampMSS: a SYN whose MSS option (after timestamps, odd offset)
// is clamped, restored between rounds so that every round rewrites it.
func BenchmarkClampMSS(b *testing.B) {
	p := tcpSYN([]byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 4, 0x05, 0xb4, 0, 0, 0}, 0x02)
	orig := append([]byte(nil), p...)
	b.ReportAllocs()
	for b.Loop() {
		if !ClampMSS(p, 1356) {
			b.Fatal("not clamped")
		}
		copy(p, orig)
	}
}

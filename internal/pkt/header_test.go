package pkt_test

import (
	"bytes"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
)

var lanA, lanB, pubIP, server = pkttest.LANA, pkttest.LANB, pkttest.PublicIP, pkttest.Server

func TestViewsAgainstGopacket(t *testing.T) {
	for _, opts := range []bool{false, true} {
		b := pkttest.TCP(t, lanA, server, 40000, 1723, []byte("hello, pptp"), pkttest.TCPOpt{SYN: true, Seq: 0x01020304, AckNum: 9, Options: opts})
		p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
		gip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		gtcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)

		ip := pkt.IPv4(b)
		if !ip.IsValid(len(b)) {
			t.Fatal("IsValid")
		}
		if ip.HeaderLength() != int(gip.IHL)*4 || ip.TotalLength() != gip.Length || ip.ID() != gip.Id ||
			ip.Protocol() != uint8(gip.Protocol) || ip.Checksum() != gip.Checksum ||
			!bytes.Equal(sliceOf(ip.SourceAddress()), gip.SrcIP) || !bytes.Equal(sliceOf(ip.DestinationAddress()), gip.DstIP) ||
			ip.IsFragment() || ip.MoreFragments() || ip.FragmentOffset() != 0 {
			t.Fatalf("IPv4 view disagrees with gopacket: %+v", gip)
		}
		if !ip.IsChecksumValid() || ip.CalculateChecksum() != gip.Checksum {
			t.Fatal("IPv4 checksum")
		}
		tcp := pkt.TCP(ip.Payload())
		if !tcp.IsValid() {
			t.Fatal("TCP IsValid")
		}
		if tcp.SourcePort() != uint16(gtcp.SrcPort) || tcp.DestinationPort() != uint16(gtcp.DstPort) ||
			tcp.SequenceNumber() != gtcp.Seq || tcp.AckNumber() != gtcp.Ack ||
			tcp.DataOffset() != int(gtcp.DataOffset)*4 || tcp.Flags()&pkt.TCPFlagSyn == 0 ||
			tcp.Checksum() != gtcp.Checksum || !bytes.Equal(tcp.Payload(), gtcp.Payload) {
			t.Fatalf("TCP view disagrees with gopacket: %+v", gtcp)
		}
		if !tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress()) ||
			tcp.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()) != gtcp.Checksum {
			t.Fatal("TCP checksum")
		}
	}
}

func TestSetAddressChecksumUpdate(t *testing.T) {
	b := pkttest.GRE(t, lanA, server, 5, pkttest.GREOpt{IPOptions: true})
	ip := pkt.IPv4(b)
	ip.SetSourceAddressWithChecksumUpdate(pubIP)
	ip.SetDestinationAddressWithChecksumUpdate(lanB)
	want := pkttest.GRE(t, pubIP, lanB, 5, pkttest.GREOpt{IPOptions: true})
	if !bytes.Equal(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
}

func TestFragmentFlags(t *testing.T) {
	for _, tc := range []struct {
		word       uint16
		frag, more bool
		off        int
	}{
		{0x4000, false, false, 0}, // DF only
		{0x2000, true, true, 0},   // first fragment
		{0x2003, true, true, 24},  // middle
		{0x0003, true, false, 24}, // last
	} {
		b := pkttest.GRE(t, lanA, server, 5, pkttest.GREOpt{FlagsFrag: tc.word})
		ip := pkt.IPv4(b)
		if ip.IsFragment() != tc.frag || ip.MoreFragments() != tc.more || ip.FragmentOffset() != tc.off {
			t.Errorf("%#04x: frag %v more %v off %d", tc.word, ip.IsFragment(), ip.MoreFragments(), ip.FragmentOffset())
		}
	}
}

func TestIsValidRejects(t *testing.T) {
	good := pkttest.TCP(t, lanA, server, 1, 1723, []byte{1, 2, 3}, pkttest.TCPOpt{})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          good[:19],
		"version6":       mut(func(b []byte) []byte { b[0] = 0x65; return b }),
		"ihl4":           mut(func(b []byte) []byte { b[0] = 0x44; return b }),
		"ihl>total":      mut(func(b []byte) []byte { b[0] = 0x4f; b[2], b[3] = 0, 40; return b }),
		"total>len":      mut(func(b []byte) []byte { b[2], b[3] = 0xff, 0xff; return b }),
		"total<ihl":      mut(func(b []byte) []byte { b[2], b[3] = 0, 10; return b }),
		"truncated-body": good[:len(good)-1],
	} {
		if pkt.IPv4(b).IsValid(len(b)) {
			t.Errorf("%s: IsValid accepted", name)
		}
	}
	// Trailing link padding beyond Total Length is fine.
	padded := append(append([]byte(nil), good...), 0, 0)
	if ip := pkt.IPv4(padded); !ip.IsValid(len(padded)) || len(ip.Payload()) != len(good)-20 {
		t.Error("padded packet")
	}
	seg := pkt.TCP(pkt.IPv4(good).Payload())
	for name, b := range map[string][]byte{
		"short":    seg[:19],
		"doff<5":   append([]byte(nil), seg...),
		"doff>len": append([]byte(nil), seg...),
	} {
		switch name {
		case "doff<5":
			b[12] = 0x40
		case "doff>len":
			b[12] = 0xf0
		}
		if pkt.TCP(b).IsValid() {
			t.Errorf("TCP %s: IsValid accepted", name)
		}
	}
}

// FuzzTCPIPViews: the views never panic once IsValid said yes, and the
// incremental address rewrite keeps the header checksum equal to a full
// recomputation.
func FuzzTCPIPViews(f *testing.F) {
	f.Add(pkttest.TCP(f, lanA, server, 40000, 1723, []byte("seed"), pkttest.TCPOpt{SYN: true, Options: true}), uint32(0x01020304))
	f.Add(pkttest.GRE(f, lanA, server, 5, pkttest.GREOpt{IPOptions: true}), uint32(0xcb007101))
	f.Add([]byte{0x45, 0, 0, 20}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, a uint32) {
		addr := [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}
		ip := pkt.IPv4(b)
		if !ip.IsValid(len(b)) {
			return
		}
		_ = ip.Payload()
		_, _, _, _ = ip.ID(), ip.FragmentOffset(), ip.MoreFragments(), ip.Protocol()
		ip.SetChecksum(ip.CalculateChecksum())
		ip.SetSourceAddressWithChecksumUpdate(addr)
		ip.SetDestinationAddressWithChecksumUpdate(addr)
		if ip.Checksum() != ip.CalculateChecksum() || !ip.IsChecksumValid() {
			t.Fatalf("checksum %#04x, recomputed %#04x", ip.Checksum(), ip.CalculateChecksum())
		}
		seg := pkt.TCP(ip.Payload())
		if !seg.IsValid() {
			return
		}
		_, _, _, _ = seg.SourcePort(), seg.DestinationPort(), seg.SequenceNumber(), seg.AckNumber()
		_ = seg.Flags()
		pl := seg.Payload()
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		seg.SetChecksum(seg.CalculateChecksum(src, dst))
		if len(pl) > 0 {
			i := int(addr[0]) % len(pl)
			cs := pkt.UpdateByte(seg.Checksum(), seg.DataOffset()+i, pl[i], addr[1])
			pl[i] = addr[1]
			seg.SetChecksum(cs)
			if !seg.IsChecksumValid(src, dst) {
				t.Fatalf("TCP checksum invalid after byte update at %d", i)
			}
		}
	})
}

func sliceOf(a [4]byte) []byte { return a[:] }

package nat

import (
	"testing"

	"pptpgw/conntrack"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// fixup makes a fuzzed packet's checksums valid, so that the test can demand
// they are still valid after the engine rewrote it.
func fixup(b []byte) {
	ip := pkt.IPv4(b)
	if !ip.IsValid(len(b)) {
		return
	}
	ip.SetChecksum(ip.CalculateChecksum())
	if ip.Protocol() != pkt.IPv4ProtocolTCP || ip.IsFragment() {
		return
	}
	if seg := pkt.TCP(ip.Payload()); seg.IsValid() {
		seg.SetChecksum(seg.CalculateChecksum(ip.SourceAddress(), ip.DestinationAddress()))
	}
}

func checkValid(t *testing.T, b []byte, what string) {
	ip := pkt.IPv4(b)
	if !ip.IsValid(len(b)) {
		return
	}
	if !ip.IsChecksumValid() {
		t.Fatalf("%s: IPv4 checksum invalid: % x", what, b)
	}
	if ip.Protocol() != pkt.IPv4ProtocolTCP || ip.IsFragment() {
		return
	}
	if seg := pkt.TCP(ip.Payload()); seg.IsValid() && !seg.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress()) {
		t.Fatalf("%s: TCP checksum invalid: % x", what, b)
	}
}

// FuzzEngineProcess feeds arbitrary IPv4/TCP/GRE packets, in sequence, to an
// engine that tracks one call: no panic, and every accepted or released
// packet keeps valid checksums.
func FuzzEngineProcess(f *testing.F) {
	f.Add(pkttest.GRE(f, lanA, server, 555, pkttest.GREOpt{}), pkttest.GRE(f, server, pubIP, 1, pkttest.GREOpt{}), uint8(0))
	f.Add(pkttest.GRE(f, server, pubIP, 1, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(2)}), []byte{}, uint8(1))
	ocrq := (&wire.OCRQ{CallID: 9}).Append(nil)
	f.Add(pkttest.TCP(f, lanA, server, 40001, 1723, nil, pkttest.TCPOpt{SYN: true, Seq: 1}),
		pkttest.TCP(f, lanA, server, 40001, 1723, ocrq[:13], pkttest.TCPOpt{ACK: true, Seq: 2}), uint8(2))
	f.Add(pkttest.TCP(f, server, lanA, 1723, 40000, (&wire.OCRP{CallID: 3, PeerCallID: 1}).Append(nil), pkttest.TCPOpt{ACK: true, Seq: 5}),
		pkttest.TCP(f, lanA, server, 40000, 1723, ocrq, pkttest.TCPOpt{ACK: true, Seq: 2, Options: true}), uint8(3))
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 47, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, []byte{0x46}, uint8(4))
	f.Fuzz(func(t *testing.T, p1, p2 []byte, mode uint8) {
		e, clk := newEngine(t, func(c *EngineConfig) { c.Strict = mode&1 != 0 })
		addCall(t, e, lanA, 40000, 7, 555)
		e.SetReleaser(func(id uint32, data []byte, v pkt.Verdict) {
			if v == pkt.Accept {
				checkValid(t, data, "released")
			}
		})
		for i, b := range [][]byte{p1, p2} {
			b = append([]byte(nil), b...)
			fixup(b)
			p := nfq.Packet{ID: uint32(i), Payload: b, Hook: nfq.HookPrerouting}
			switch (mode >> (1 + 2*i)) & 3 {
			case 0:
				p.InDev = lanIf
			case 1:
				p.InDev = wanIf
			case 2:
				p.Hook = nfq.HookOutput
			default:
				p.InDev = 42
			}
			v, r := checkedProcess(t, e, &p)
			if r == "" {
				t.Fatal("empty reason")
			}
			if v == pkt.Accept {
				checkValid(t, p.Payload, "accepted")
			}
		}
		clk.Advance(conntrack.DefaultHold)
		e.Tick()
		_ = e.Calls()
		_ = e.Counters()
	})
}

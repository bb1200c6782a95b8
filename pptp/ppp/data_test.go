package ppp

import (
	"fmt"
	"testing"

	"pptpgw/pptp/mppe"
)

// dataPair returns a pair that is up, with data frames delivered
// synchronously and allocation-free IP callbacks.
func dataPair(tb testing.TB, auth AuthMethod, mppeOn, stateless bool) (*pair, *int, *int) {
	clk, s, c := newConfigs()
	s.Auth = []AuthMethod{auth}
	if !mppeOn {
		s.RequireMPPE, c.RequireMPPE = false, false
		s.MPPEStrengths = []mppe.Strength{mppe.Bits128}
		c.MPPEStrengths = []mppe.Strength{mppe.Bits40}
	}
	s.AllowStateless, s.AllowStateful = stateless, !stateless
	p := upPair(tb, s, c, clk)
	if p.srv.Info().MPPE != mppeOn {
		tb.Fatalf("MPPE %v", p.srv.Info().MPPE)
	}
	var ns, nc int
	p.srv.OnIP(func([]byte) { ns++ })
	p.cli.OnIP(func([]byte) { nc++ })
	p.direct = true
	return p, &ns, &nc
}

func TestDataPathZeroAllocs(t *testing.T) {
	for _, c := range []struct {
		mppe, stateless bool
	}{{true, true}, {true, false}, {false, false}} {
		t.Run(fmt.Sprintf("mppe=%v/stateless=%v", c.mppe, c.stateless), func(t *testing.T) {
			auth := AuthMSCHAPv2
			if !c.mppe {
				auth = AuthPAP
			}
			p, ns, nc := dataPair(t, auth, c.mppe, c.stateless)
			mtu := p.cli.Info().MTU
			if want := 1400 - 4; c.mppe && mtu != want {
				t.Errorf("MTU %d, want %d", mtu, want)
			}
			pkt := ipPacket(mtu, 7)
			allocs := testing.AllocsPerRun(2000, func() {
				if err := p.cli.SendIP(pkt); err != nil {
					t.Fatal(err)
				}
				if err := p.srv.SendIP(pkt); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per round trip", allocs)
			}
			if *ns != *nc || *ns < 2000 {
				t.Errorf("delivered %d / %d", *ns, *nc)
			}
			if err := p.cli.SendIP(ipPacket(mtu+1, 0)); err != ErrTooBig {
				t.Errorf("oversized packet: %v", err)
			}
		})
	}
}

func BenchmarkSendIP(b *testing.B) {
	for _, c := range []struct {
		name            string
		mppe, stateless bool
	}{{"mppe128-stateless", true, true}, {"mppe128-stateful", true, false}, {"plain", false, false}} {
		b.Run(c.name, func(b *testing.B) {
			auth := AuthMSCHAPv2
			if !c.mppe {
				auth = AuthPAP
			}
			p, _, _ := dataPair(b, auth, c.mppe, c.stateless)
			p.cli.send = func([]byte) {} // encrypt only
			pkt := ipPacket(1396, 1)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := p.cli.SendIP(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip: SendIP on the client, Input (decrypt, deliver) on the server.
func BenchmarkRoundTrip(b *testing.B) {
	for _, c := range []struct {
		name            string
		mppe, stateless bool
	}{{"mppe128-stateless", true, true}, {"mppe128-stateful", true, false}, {"plain", false, false}} {
		b.Run(c.name, func(b *testing.B) {
			auth := AuthMSCHAPv2
			if !c.mppe {
				auth = AuthPAP
			}
			p, ns, _ := dataPair(b, auth, c.mppe, c.stateless)
			pkt := ipPacket(1396, 1)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := p.cli.SendIP(pkt); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if *ns != b.N {
				b.Fatalf("delivered %d of %d", *ns, b.N)
			}
		})
	}
}

// BenchmarkSessionSetup: a full server+client negotiation (LCP, MS-CHAPv2,
// CCP/MPPE-128, IPCP) in memory.
func BenchmarkSessionSetup(b *testing.B) {
	b.ReportAllocs()
	for range b.N {
		clk, s, c := newConfigs()
		upPair(b, s, c, clk)
	}
}

package ppp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"pptpgw/pptp/mppe"
)

func TestMatrixUpAndExchange(t *testing.T) {
	type tc struct {
		auth      AuthMethod
		strength  mppe.Strength
		stateless bool
		mppe      bool
	}
	var cases []tc
	for _, st := range []mppe.Strength{mppe.Bits40, mppe.Bits56, mppe.Bits128} {
		for _, sl := range []bool{true, false} {
			cases = append(cases, tc{AuthMSCHAPv2, st, sl, true})
		}
	}
	cases = append(cases, tc{auth: AuthMSCHAPv2}, tc{auth: AuthCHAPMD5}, tc{auth: AuthPAP})
	for _, c := range cases {
		name := fmt.Sprintf("%s/mppe=%v/%s/stateless=%v", c.auth, c.mppe, c.strength, c.stateless)
		t.Run(name, func(t *testing.T) {
			clk, s, cl := newConfigs()
			s.Auth = []AuthMethod{c.auth}
			if c.mppe {
				s.MPPEStrengths = []mppe.Strength{c.strength}
				s.AllowStateless, s.AllowStateful = c.stateless, !c.stateless
			} else {
				s.RequireMPPE = false
				s.MPPEStrengths = []mppe.Strength{mppe.Bits128}
				if c.auth == AuthMSCHAPv2 { // MPPE possible: the client refuses it by strength
					cl.MPPEStrengths = []mppe.Strength{mppe.Bits40}
					cl.RequireMPPE = false
				} else {
					cl.RequireMPPE = false
				}
			}
			p := upPair(t, s, cl, clk)
			si, ci := p.srv.Info(), p.cli.Info()
			if si.Username != testUser || si.Auth != c.auth || ci.Auth != c.auth {
				t.Errorf("auth info: server %+v client %+v", si, ci)
			}
			if si.PeerIP != cliIP || si.LocalIP != srvIP || ci.LocalIP != cliIP || ci.PeerIP != srvIP {
				t.Errorf("addresses: server local %v peer %v, client local %v peer %v", si.LocalIP, si.PeerIP, ci.LocalIP, ci.PeerIP)
			}
			if len(ci.DNS) != 2 || ci.DNS[0] != dns1 || ci.DNS[1] != dns2 {
				t.Errorf("client DNS %v", ci.DNS)
			}
			if si.MPPE != c.mppe || ci.MPPE != c.mppe {
				t.Fatalf("MPPE server %v client %v, want %v", si.MPPE, ci.MPPE, c.mppe)
			}
			if c.mppe && (si.MPPEStrength != c.strength || ci.MPPEStrength != c.strength ||
				si.Stateless != c.stateless || ci.Stateless != c.stateless) {
				t.Errorf("MPPE params server %v/%v client %v/%v", si.MPPEStrength, si.Stateless, ci.MPPEStrength, ci.Stateless)
			}
			if si.State != "Running" || ci.State != "Running" {
				t.Errorf("states %s %s", si.State, ci.State)
			}
			// 600 packets cross the stateful flag packets (count low octet 0xFF) twice.
			p.exchange(t, 600, 200)
			if n := p.srv.Info().PktsIn; n != 600 {
				t.Errorf("server PktsIn %d", n)
			}
			if len(p.srv.Counters()) != 0 || len(p.cli.Counters()) != 0 {
				t.Errorf("unexpected drops: srv %v cli %v", p.srv.Counters(), p.cli.Counters())
			}
			// Orderly teardown from the client.
			p.cli.Close("user hangup")
			if !p.runUntil(30, p.bothDone) {
				t.Fatalf("not done: %s %s", p.srv.State(), p.cli.State())
			}
			if len(p.released) != 1 || p.released[0] != cliIP || p.allocs != 1 {
				t.Errorf("alloc %d release %v", p.allocs, p.released)
			}
			if r := p.srv.Info().Reason; r != "terminated by peer" {
				t.Errorf("server reason %q", r)
			}
			if err := p.cli.SendIP(ipPacket(40, 0)); err != ErrNotUp {
				t.Errorf("SendIP after close: %v", err)
			}
		})
	}
}

// The peer renegotiates LCP mid-session: authentication, CCP and IPCP run
// again, the address is kept, data flows again with fresh MPPE state.
func TestLCPRenegotiation(t *testing.T) {
	for _, stateless := range []bool{true, false} {
		clk, s, c := newConfigs()
		s.AllowStateless, s.AllowStateful = stateless, !stateless
		p := newPairClk(t, clk, s, c)
		var cliReq []byte
		challenges := 0
		p.drop = func(fromServer bool, f []byte) bool {
			if fromServer && binary.BigEndian.Uint16(f) == ProtoCHAP && f[2] == chapChallenge {
				challenges++
			}
			if !fromServer && cliReq == nil && binary.BigEndian.Uint16(f) == ProtoLCP && f[2] == codeConfReq {
				cliReq = append([]byte(nil), f...)
			}
			return false
		}
		p.start()
		if !p.runUntil(30, p.bothUp) {
			t.Fatal("not up")
		}
		p.exchange(t, 50, 100)
		p.srv.Input(cliReq)
		running := func() bool { return p.srv.State() == "Running" && p.cli.State() == "Running" }
		if !p.runUntil(30, running) {
			t.Fatalf("not running again: %s %s %v %v", p.srv.State(), p.cli.State(), p.srv.Counters(), p.cli.Counters())
		}
		p.exchange(t, 300, 100)
		if p.allocs != 1 || len(p.released) != 0 || challenges != 2 {
			t.Fatalf("allocs %d released %v challenges %d", p.allocs, p.released, challenges)
		}
	}
}

package nat

import (
	"net/netip"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// Reconfigure changes what a running engine does without dropping what it
// tracks: strict reaches an existing connection's translator, new timeouts
// apply to a live call, a lowered max_calls evicts nothing but refuses new
// calls, a new forward is recognised, and the LAN interfaces change.
func TestReconfigure(t *testing.T) {
	e, clk := newEngine(t, nil)
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	out := a.call(7, 500)
	out2 := a.call(8, 501)
	gre(t, e, pkttest.GRE(t, lanA, server, 500, pkttest.GREOpt{}), lanIf)

	cfg := EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf, 9}, MaxCalls: 2, Strict: true,
		Timeouts: conntrack.Timeouts{GREUnreplied: 5 * time.Second}, Forwards: []Forward{{Port: 1723, InsideIP: netip.AddrFrom4(lanB)}}}
	e.Reconfigure(cfg)
	if s := e.Settings(); !s.Strict || s.MaxCalls != 2 || s.Timeouts.GREUnreplied != 5*time.Second ||
		s.Timeouts.GREReplied != conntrack.DefaultGREReplied || len(s.Forwards) != 1 {
		t.Fatalf("settings after Reconfigure: %+v", s)
	}
	// Nothing dropped: both calls are there.
	if _, calls := e.table.Len(); calls != 2 {
		t.Fatalf("%d calls after lowering max_calls to 2, want both kept", calls)
	}
	// The new bound refuses a third call (its request passes untranslated).
	req := &wire.OCRQ{CallID: 9, CallSerial: 3, RecvWindow: 16}
	if got := a.msg(true, req); u16at(got, 12) != 9 {
		t.Fatalf("a call beyond the lowered max_calls got outside ID %d", u16at(got, 12))
	}
	// The existing connection's translator is strict now: a malformed
	// message on it is dropped (lenient, its translator would pass it).
	a.send(true, []byte("this is not a PPTP control message at all"), pkttest.TCPOpt{ACK: true}, pkt.Drop)
	// The new timeout applies to the live unreplied call (out2 never
	// carried GRE): gone after 6 s, while the one that did is within its
	// (also 5 s, unreplied) timeout only if refreshed.
	clk.Advance(6 * time.Second)
	if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, out2, pkttest.GREOpt{}), wanIf); v != pkt.Drop {
		t.Fatal("the unreplied call outlived the new gre_unreplied")
	}
	_ = out
	// The new LAN interface counts as inside.
	p := nfq.Packet{Payload: pkttest.GRE(t, lanA, server, 777, pkttest.GREOpt{}), InDev: 9}
	if _, r := e.Process(&p); r != ReasonGRENoCall {
		t.Fatalf("GRE from the new LAN interface: %s, want it handled as outbound (%s)", r, ReasonGRENoCall)
	}
	// The forward is known: a connection to the inside server lanB:1723
	// from outside is tracked.
	syn := pkttest.TCP(t, server, lanB, 50000, 1723, nil, pkttest.TCPOpt{SYN: true})
	if _, r := e.Process(&nfq.Packet{Payload: syn, InDev: wanIf}); r != ReasonCtlNew {
		t.Fatalf("SYN to the new forward: %s, want %s", r, ReasonCtlNew)
	}
}

// Reconfigure while packets flow (run with -race).
func TestReconfigureConcurrent(t *testing.T) {
	e, _ := newEngine(t, nil)
	out := addCall(t, e, lanA, 40000, 7, 555)
	inT := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3000 {
			b := append([]byte(nil), inT...)
			if v, r := e.Process(&nfq.Packet{Payload: b, InDev: wanIf}); v != pkt.Accept {
				t.Errorf("%v %s", v, r)
				return
			}
		}
	}()
	for i := range 200 {
		e.Reconfigure(EngineConfig{LANIfs: []uint32{lanIf}, Strict: i%2 == 0, MaxCalls: 10 + i,
			Timeouts: conntrack.Timeouts{GREReplied: time.Duration(200+i) * time.Second}})
	}
	<-done
}

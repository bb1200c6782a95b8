package nat

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
)

const (
	wanIf = 2
	lanIf = 3
)

func newEngine(t testing.TB, mod func(*EngineConfig)) (*Engine, *conntrack.FakeClock) {
	t.Helper()
	clk := conntrack.NewFakeClock(time.Time{})
	cfg := EngineConfig{
		PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf}, MaxCalls: 100,
	}
	if mod != nil {
		mod(&cfg)
	}
	return NewEngine(cfg, clk), clk
}

// addCall tracks an established call without going through the control
// channel: inside host ip:sport, its call ID insideID, the server's peerID.
// It returns the outside call ID.
func addCall(t testing.TB, e *Engine, ip [4]byte, sport, insideID, peerID uint16) uint16 {
	t.Helper()
	k := conntrack.ControlKey{InsideIP: ip, PeerIP: server, InsidePort: sport, PeerPort: 1723}
	cn, ok := e.table.LookupControl(k)
	var c *control
	if ok {
		c = cn.Data.(*control)
	} else {
		var err error
		if cn, err = e.table.AddControl(k, pubIP, false); err != nil {
			t.Fatal(err)
		}
		c = &control{tc: cn}
		c.tr = helper.NewTranslator(&mapper{e, c}, helper.Config{})
		cn.Data = c
	}
	m := &mapper{e, c}
	out, err := m.AllocOutside(insideID)
	if err != nil {
		t.Fatal(err)
	}
	m.Event(helper.Event{Kind: helper.CallEstablished, InsideID: insideID, OutsideID: out, PeerID: peerID})
	return out
}

func process(t testing.TB, e *Engine, b []byte, inIf uint32, hook nfq.Hook) (pkt.Verdict, string) {
	t.Helper()
	return checkedProcess(t, e, &nfq.Packet{ID: 1, Payload: b, InDev: inIf, Hook: hook})
}

// checkedProcess runs p through the engine and checks the Modified contract
// nfq relies on: a packet whose bytes changed is marked Modified (or nfq
// would send the original back), and only an accepted one.
func checkedProcess(t testing.TB, e *Engine, p *nfq.Packet) (pkt.Verdict, string) {
	t.Helper()
	before := bytes.Clone(p.Payload)
	v, r := e.Process(p)
	changed := !bytes.Equal(before, p.Payload)
	if changed && !p.Modified {
		t.Fatalf("%s: packet rewritten but not marked Modified", r)
	}
	if p.Modified && v != pkt.Accept {
		t.Fatalf("%s: verdict %v with Modified set", r, v)
	}
	return v, r
}

func u32p(v uint32) *uint32 { return &v }

func TestGRETranslation(t *testing.T) {
	e, _ := newEngine(t, nil)
	out := addCall(t, e, lanA, 40000, 7, 555)
	routerOut := addCall(t, e, pubIP, 40001, 7, 556) // router-originated call, same inside ID

	for _, tc := range []struct {
		name   string
		in     []byte
		inIf   uint32
		hook   nfq.Hook
		v      pkt.Verdict
		reason string
		want   []byte // nil: unchanged
	}{
		{"out", pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting, pkt.Accept, ReasonGREOut,
			pkttest.GRE(t, pubIP, server, 555, pkttest.GREOpt{})},
		{"out-seq-ack-options", pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(9), IPOptions: true, ID: 77}),
			lanIf, nfq.HookPrerouting, pkt.Accept, ReasonGREOut,
			pkttest.GRE(t, pubIP, server, 555, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(9), IPOptions: true, ID: 77})},
		{"in", pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Seq: u32p(3)}), wanIf, nfq.HookPrerouting, pkt.Accept, ReasonGREIn,
			pkttest.GRE(t, server, lanA, 7, pkttest.GREOpt{Seq: u32p(3)})},
		{"in-ack-only", pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Ack: u32p(3), Payload: []byte{}}), wanIf, nfq.HookPrerouting, pkt.Accept, ReasonGREIn,
			pkttest.GRE(t, server, lanA, 7, pkttest.GREOpt{Ack: u32p(3), Payload: []byte{}})},
		{"router-out", pkttest.GRE(t, pubIP, server, 556, pkttest.GREOpt{}), 0, nfq.HookOutput, pkt.Accept, ReasonGREOut, nil},
		{"router-in", pkttest.GRE(t, server, pubIP, routerOut, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting, pkt.Accept, ReasonGREIn,
			pkttest.GRE(t, server, pubIP, 7, pkttest.GREOpt{})},
		{"out-unknown-peer-id", pkttest.GRE(t, lanA, server, 554, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"out-other-host", pkttest.GRE(t, lanB, server, 555, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"out-from-wan-side", pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"in-unknown-id", pkttest.GRE(t, server, pubIP, out+1, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"in-other-peer", pkttest.GRE(t, [4]byte{198, 51, 100, 8}, pubIP, out, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"in-inside-key", pkttest.GRE(t, server, pubIP, 7, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting, pkt.Drop, ReasonGRENoCall, nil},
		{"first-fragment", pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{FlagsFrag: 0x2000}), lanIf, nfq.HookPrerouting, pkt.Drop, ReasonGREFragment, nil},
		{"last-fragment", pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{FlagsFrag: 0x0010}), wanIf, nfq.HookPrerouting, pkt.Drop, ReasonGREFragment, nil},
		{"unknown-iface", pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{}), 9, nfq.HookPrerouting, pkt.Accept, ReasonUnknownIface, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]byte(nil), tc.in...)
			v, r := process(t, e, tc.in, tc.inIf, tc.hook)
			if v != tc.v || r != tc.reason {
				t.Fatalf("verdict %v %q, want %v %q", v, r, tc.v, tc.reason)
			}
			want := tc.want
			if want == nil {
				want = orig
			}
			if !bytes.Equal(tc.in, want) {
				t.Fatalf("got  % x\nwant % x", tc.in, want)
			}
			pkttest.CheckSums(t, tc.in)
		})
	}
	calls := e.Calls()
	if len(calls) != 2 {
		t.Fatalf("calls: %+v", calls)
	}
	for _, c := range calls {
		if c.InsideIP == netip.AddrFrom4(lanA) && (c.PktsOut != 2 || c.PktsIn != 2 || c.State != "replied" || c.BytesOut == 0) {
			t.Fatalf("call counters %+v", c)
		}
	}
	cs := e.Counters()
	if cs[ReasonGREOut] != 3 || cs[ReasonGREIn] != 3 || cs[ReasonGRENoCall] != 6 || cs[ReasonGREFragment] != 2 {
		t.Fatalf("counters %v", cs)
	}
}

func TestMalformed(t *testing.T) {
	gre := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{})
	tcp := pkttest.TCP(t, lanA, server, 40000, 1723, nil, pkttest.TCPOpt{ACK: true})
	mut := func(b []byte, f func(b []byte)) []byte { b = append([]byte(nil), b...); f(b); return b }
	udp := mut(gre, func(b []byte) { b[9] = 17 })
	udp = mut(udp, func(b []byte) { pkt.IPv4(b).SetChecksum(pkt.IPv4(b).CalculateChecksum()) })
	for _, tc := range []struct {
		name   string
		b      []byte
		strict pkt.Verdict // lenient => pkt.Accept unless noted
		reason string
		always pkt.Verdict
		fixed  bool // verdict does not depend on the mode
	}{
		{"truncated-ip", gre[:12], pkt.Drop, ReasonIPMalformed, 0, false},
		{"ipv6-version", mut(gre, func(b []byte) { b[0] = 0x60 }), pkt.Drop, ReasonIPMalformed, 0, false},
		{"total-length-too-big", mut(gre, func(b []byte) { b[2] = 0xff }), pkt.Drop, ReasonIPMalformed, 0, false},
		{"tcp-bad-offset", mut(tcp, func(b []byte) { b[20+12] = 0xf0 }), pkt.Drop, ReasonTCPMalformed, 0, false},
		{"tcp-short", mut(tcp, func(b []byte) { b[3] = 30 })[:30], pkt.Drop, ReasonTCPMalformed, 0, false},
		{"tcp-fragment", mut(tcp, func(b []byte) { b[6] = 0x20 }), pkt.Drop, ReasonTCPFragment, 0, false},
		{"gre-version0", mut(gre, func(b []byte) { b[21] = 0 }), pkt.Drop, ReasonGREMalformed, pkt.Drop, true},
		{"gre-checksum-bit", mut(gre, func(b []byte) { b[20] |= 0x80 }), pkt.Drop, ReasonGREMalformed, pkt.Drop, true},
		{"gre-no-key", mut(gre, func(b []byte) { b[20] &^= 0x20 }), pkt.Drop, ReasonGREMalformed, pkt.Drop, true},
		{"gre-proto-ip", mut(gre, func(b []byte) { b[22], b[23] = 0x08, 0x00 }), pkt.Drop, ReasonGREMalformed, pkt.Drop, true},
		{"gre-short", mut(gre, func(b []byte) { b[3] = 24 })[:24], pkt.Drop, ReasonGREMalformed, pkt.Drop, true},
		{"udp", udp, pkt.Accept, ReasonNotPPTP, pkt.Accept, true},
		{"tcp-other-port", pkttest.TCP(t, lanA, server, 40000, 443, []byte("x"), pkttest.TCPOpt{}), pkt.Accept, ReasonNotPPTP, pkt.Accept, true},
	} {
		for _, strict := range []bool{true, false} {
			e, _ := newEngine(t, func(c *EngineConfig) { c.Strict = strict })
			addCall(t, e, lanA, 40000, 7, 555)
			b := append([]byte(nil), tc.b...)
			v, r := process(t, e, b, lanIf, nfq.HookPrerouting)
			want := pkt.Accept
			if tc.fixed {
				want = tc.always
			} else if strict {
				want = tc.strict
			}
			if v != want || r != tc.reason {
				t.Errorf("%s strict=%v: %v %q, want %v %q", tc.name, strict, v, r, want, tc.reason)
			}
			if !bytes.Equal(b, tc.b) {
				t.Errorf("%s: packet modified", tc.name)
			}
			if e.Counters()[tc.reason] != 1 {
				t.Errorf("%s: counter %q = %d", tc.name, tc.reason, e.Counters()[tc.reason])
			}
		}
	}
}

// A full table refuses a new call instead of evicting a set-up one (its
// outside ID is free again at once), then the GRE timeouts apply.
func TestGRETimeoutsAndFullTable(t *testing.T) {
	e, clk := newEngine(t, func(c *EngineConfig) {
		c.MaxCalls = 2
		c.Timeouts.CallIDQuarantine = time.Minute
	})
	addCall(t, e, lanA, 40000, 1, 501)
	o2 := addCall(t, e, lanA, 40000, 2, 502)
	pk := PoolKey{pubIP, server}
	if v, _ := process(t, e, pkttest.GRE(t, lanA, server, 501, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting); v != pkt.Accept {
		t.Fatal("call 1")
	}
	cn, _ := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	if _, err := (&mapper{e, cn.Data.(*control)}).AllocOutside(3); err != conntrack.ErrTableFull {
		t.Fatalf("third call in a table of two set-up calls: %v, want ErrTableFull", err)
	}
	if v, r := process(t, e, pkttest.GRE(t, server, pubIP, o2, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting); v != pkt.Accept {
		t.Fatalf("set-up call lost to a new one: %v %s", v, r)
	}
	if used, q := e.alloc.InUse(pk); used != 2 || q != 0 {
		t.Fatalf("allocator: %d used, %d quarantined; the refused call's ID must be free at once", used, q)
	}
	if c := e.Counters(); c["calls_refused_table_full"] != 1 || c["calls_evicted"] != 0 || c["callid_released_unused"] != 1 {
		t.Fatalf("counters %v", c)
	}

	// Call 1 has seen outbound only: unreplied timeout (30s).
	clk.Advance(conntrack.DefaultGREUnreplied + time.Second)
	if v, _ := process(t, e, pkttest.GRE(t, lanA, server, 501, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting); v != pkt.Drop {
		t.Fatal("unreplied call outlived its timeout")
	}
	// Call 3 gets traffic both ways, then survives 179s but not 181s.
	o3b := addCall(t, e, lanB, 40001, 3, 503)
	process(t, e, pkttest.GRE(t, lanB, server, 503, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting)
	process(t, e, pkttest.GRE(t, server, pubIP, o3b, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting)
	clk.Advance(conntrack.DefaultGREReplied - time.Second)
	e.Tick()
	if v, _ := process(t, e, pkttest.GRE(t, lanB, server, 503, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting); v != pkt.Accept {
		t.Fatal("replied call expired early")
	}
	clk.Advance(conntrack.DefaultGREReplied + time.Second)
	e.Tick()
	if _, calls := e.table.Len(); calls != 0 {
		t.Fatalf("%d calls left after every timeout", calls)
	}
	clk.Advance(time.Minute)
	e.Tick()
	if used, q := e.alloc.InUse(pk); used != 0 || q != 0 {
		t.Fatalf("allocator after quarantine: %d used, %d quarantined", used, q)
	}
}

func TestNoAllocsGRE(t *testing.T) {
	e, _ := newEngine(t, nil)
	out := addCall(t, e, lanA, 40000, 7, 555)
	outT := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	inT := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	buf := make([]byte, len(outT))
	p := &nfq.Packet{Payload: buf}
	for name, f := range map[string]func(){
		"out": func() {
			copy(buf, outT)
			*p = nfq.Packet{Payload: buf, InDev: lanIf}
			if v, _ := e.Process(p); v != pkt.Accept {
				t.Fatal("out not accepted")
			}
		},
		"in": func() {
			copy(buf, inT)
			*p = nfq.Packet{Payload: buf, InDev: wanIf}
			if v, _ := e.Process(p); v != pkt.Accept {
				t.Fatal("in not accepted")
			}
		},
		"no-call": func() {
			copy(buf, inT)
			buf[20+7]++ // wrong key
			*p = nfq.Packet{Payload: buf, InDev: wanIf}
			e.Process(p)
		},
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}

func benchGRE(b *testing.B, inbound bool) {
	e := NewEngine(EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf}}, conntrack.SystemClock{})
	out := addCall(b, e, lanA, 40000, 7, 555)
	tmpl := pkttest.GRE(b, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(1), Payload: make([]byte, 1400)})
	inIf := uint32(lanIf)
	if inbound {
		tmpl = pkttest.GRE(b, server, pubIP, out, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(1), Payload: make([]byte, 1400)})
		inIf = wanIf
	}
	buf := make([]byte, len(tmpl))
	b.SetBytes(int64(len(tmpl)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf[:40], tmpl) // headers only: the rewrite touches nothing beyond
		p := nfq.Packet{Payload: buf, InDev: inIf}
		if v, _ := e.Process(&p); v != pkt.Accept {
			b.Fatal("not accepted")
		}
	}
}

func BenchmarkGREOut(b *testing.B) { benchGRE(b, false) }
func BenchmarkGREIn(b *testing.B)  { benchGRE(b, true) }

// TestEngineConcurrent runs GRE, control segments, Tick and Calls at once
// (meaningful under -race).
func TestEngineConcurrent(t *testing.T) {
	e, clk := newEngine(t, nil)
	out := addCall(t, e, lanA, 40000, 7, 555)
	outT := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{})
	inT := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{})
	done := make(chan struct{})
	for _, tmpl := range [][]byte{outT, inT} {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 2000 {
				b := append([]byte(nil), tmpl...)
				inIf := uint32(lanIf)
				if pkt.IPv4(b).DestinationAddress() == pubIP {
					inIf = wanIf
				}
				if v, r := e.Process(&nfq.Packet{Payload: b, InDev: inIf}); v != pkt.Accept {
					t.Errorf("%v %s", v, r)
					return
				}
			}
		}()
	}
	go func() {
		defer func() { done <- struct{}{} }()
		c := newClient(t, e, lanB, 40001)
		c.startControl()
		for i := range 50 {
			c.call(uint16(100+i), uint16(700+i))
			clk.Advance(time.Millisecond)
			e.Tick()
			e.Calls()
			e.Counters()
		}
	}()
	for range 3 {
		<-done
	}
}

func TestDropSummaryLog(t *testing.T) {
	var buf bytes.Buffer
	e, clk := newEngine(t, func(c *EngineConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	})
	e.Tick() // first summary: nothing dropped yet
	for range 3 {
		process(t, e, pkttest.GRE(t, server, pubIP, 4, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting)
	}
	e.Tick()
	if buf.Len() != 0 {
		t.Fatalf("logged before the interval: %s", buf.String())
	}
	clk.Advance(SummaryInterval)
	e.Tick()
	if got := buf.String(); !strings.Contains(got, "gre_no_call=3") || strings.Count(got, "\n") != 1 {
		t.Fatalf("summary: %q", got)
	}
	clk.Advance(SummaryInterval)
	e.Tick()
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("logged without new drops: %q", buf.String())
	}
}

// Addresses shared by the engine tests.
var lanA, lanB, pubIP, server = pkttest.LANA, pkttest.LANB, pkttest.PublicIP, pkttest.Server

// The engine's metrics: a valid snapshot (labels, unique keys, help), every
// declared key present before anything was counted, and the keys of
// `pptpgw calls --json` counting in a positive case.
func TestMetrics(t *testing.T) {
	e, _ := newEngine(t, nil)
	s := metrics.Collect(e)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	keys := []string{ReasonGREOut, ReasonGREIn, ReasonGRENoCall, ReasonCtlNew, ReasonNotPPTP,
		"calls_mapped", "calls_established", "calls_cleared", "ctl_holding", "calls_evicted", "calls_expired",
		"conns_evicted", "conns_expired", "conns_active", "calls_active", "callid_allocated",
		"callid_released", "callid_collisions", "helper_" + helper.ReasonNoSYN.String(),
		ReasonCtlRefused, ReasonCtlHoldFull, "conns_early_dropped", "calls_early_dropped", "conns_refused_table_full",
		"conns_refused_per_source", "calls_refused_table_full", "calls_refused_per_source",
		"calls_refused_per_conn", "conns_setup", "calls_setup", "callid_released_unused"}
	for _, k := range keys {
		if v, ok := s.Get(k); !ok || v != 0 {
			t.Errorf("fresh engine: %q = %d, present %v; want present at 0", k, v, ok)
		}
	}
	if _, ok := s.Get("helper_none"); ok {
		t.Error("helper_none is exported; a segment without a reason counts as ctl_ok")
	}

	out := addCall(t, e, lanA, 40000, 0x100, 555)
	process(t, e, pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{}), lanIf, nfq.HookPrerouting)
	process(t, e, pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting)
	process(t, e, pkttest.GRE(t, server, pubIP, out+1, pkttest.GREOpt{}), wanIf, nfq.HookPrerouting)
	m := metrics.Collect(e).Map()
	for k, want := range map[string]uint64{ReasonGREOut: 1, ReasonGREIn: 1, ReasonGRENoCall: 1,
		"calls_mapped": 1, "calls_established": 1, "calls_active": 1, "conns_active": 1, "callid_allocated": 1} {
		if m[k] != want {
			t.Errorf("%q = %d, want %d", k, m[k], want)
		}
	}
}

// A packet queued with no bytes (before the copy mode was set) is dropped in
// both modes: nothing can be checked or sent back, and it may be GRE.
func TestEmptyPayloadDropped(t *testing.T) {
	for _, strict := range []bool{false, true} {
		e, _ := newEngine(t, func(c *EngineConfig) { c.Strict = strict })
		if v, r := process(t, e, nil, lanIf, nfq.HookPrerouting); v != pkt.Drop || r != ReasonIPMalformed {
			t.Errorf("strict=%v: %v %q, want drop %q", strict, v, r, ReasonIPMalformed)
		}
	}
}

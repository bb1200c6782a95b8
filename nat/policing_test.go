package nat

import (
	"net/netip"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/conntrack"
	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/qos"
	"pptpgw/qos/police"
)

// Shaping (issue 9): classes of calls and per-call policing, on the fake
// clock.

func qosClasses(t testing.TB, y string) []qos.Class {
	t.Helper()
	var cs []qos.Class
	if err := yaml.Unmarshal([]byte(y), &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

const testClasses = `
- name: voip
  match: [{protocol: udp, dport: 5060}]
- name: boss
  match: [{inside: 10.0.0.77}]
- name: tunnels
  match: [{pptp: gre}]
- name: ctl
  match: [{pptp: control}]
`

// sendGRE runs one outbound (or inbound) GRE packet of n payload bytes of
// the call and returns the verdict and what it set.
func sendGRE(t testing.TB, e *Engine, in [4]byte, peerID, outside uint16, inbound bool, n int, mark uint32) (pkt.Verdict, nfq.Attrs) {
	t.Helper()
	var b []byte
	p := nfq.Packet{Mark: mark}
	if inbound {
		b = pkttest.GRE(t, server, pubIP, outside, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, n)})
		p.InDev = wanIf
	} else {
		b = pkttest.GRE(t, in, server, peerID, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, n)})
		p.InDev = lanIf
	}
	p.Payload = b
	v, _ := checkedProcess(t, e, &p)
	return v, p.Set
}

func TestCallClass(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) { c.QoS = QoSConfig{Classes: qosClasses(t, testClasses)} })
	boss := [4]byte{10, 0, 0, 77}
	outBoss := addCall(t, e, boss, 40000, 7, 555)
	outA := addCall(t, e, lanA, 40001, 8, 556)
	for _, c := range []struct {
		in          [4]byte
		peer, out   uint16
		class       int
		inbound     bool
		mark        uint32
		wantMark    uint32
		description string
	}{
		{boss, 555, outBoss, 1, false, 0, fwmark.Class(1), "inside host, out"},
		{boss, 555, outBoss, 1, true, 0xab000000, 0xab000000 | fwmark.Class(1), "inside host, in; operator bits kept"},
		{lanA, 556, outA, 2, false, 0x0300 | fwmark.Class(7), 0x0300 | fwmark.Class(2), "pptp: gre, out; uplink bits kept, old class replaced"},
		{lanA, 556, outA, 2, true, 0, fwmark.Class(2), "pptp: gre, in"},
	} {
		v, set := sendGRE(t, e, c.in, c.peer, c.out, c.inbound, 100, c.mark)
		if v != pkt.Accept || !set.SetMark || !set.SetPriority || set.Mark != c.wantMark || set.Priority != qos.ClassID(c.class) {
			t.Errorf("%s: %v %+v, want mark %#x priority %#x", c.description, v, set, c.wantMark, qos.ClassID(c.class))
		}
	}
	calls := e.Calls()
	if len(calls) != 2 || calls[0].Class != "tunnels" || calls[1].Class != "boss" {
		t.Errorf("calls = %+v", calls)
	}

	// Control segments: the first control class (or the inside host's).
	e2, _ := newEngine(t, func(c *EngineConfig) { c.QoS = QoSConfig{Classes: qosClasses(t, testClasses)} })
	cl := newClient(t, e2, lanA, 40002)
	b := pkttest.TCP(t, lanA, server, 40002, 1723, nil, pkttest.TCPOpt{ACK: true, Seq: cl.seqOut})
	p := nfq.Packet{Payload: b, InDev: lanIf}
	if v, _ := e2.Process(&p); v != pkt.Accept || p.Set.Priority != qos.ClassID(3) || fwmark.ClassOf(p.Set.Mark) != 3 {
		t.Errorf("control segment: %v %+v, want class 3 (ctl)", v, p.Set)
	}

	// Without classes nothing is set.
	e3, _ := newEngine(t, nil)
	out3 := addCall(t, e3, lanA, 40000, 7, 555)
	if v, set := sendGRE(t, e3, lanA, 555, out3, false, 100, 0); v != pkt.Accept || set != (nfq.Attrs{}) {
		t.Errorf("no classes: %v %+v", v, set)
	}
}

// Two calls, each sending at twice its policed rate in both directions for
// ten seconds of fake time: each direction of each call is held to the
// rate (plus its burst), and the excess is dropped and counted as that
// call's.
func TestCallPolicing(t *testing.T) {
	const rate = 1_250_000 // 10mbit in bytes/s
	lim := police.Limit{BytesPerSecond: rate, Burst: 100 << 10}
	e, clk := newEngine(t, func(c *EngineConfig) { c.QoS = QoSConfig{CallLimit: lim} })
	type call struct {
		in          [4]byte
		peer, out   uint16
		pass, drops [2]int
	}
	calls := []*call{{in: lanA, peer: 555}, {in: [4]byte{10, 0, 0, 9}, peer: 556}}
	for i, c := range calls {
		c.out = addCall(t, e, c.in, uint16(40000+i), 7, c.peer)
	}
	const size = 1400 // GRE payload; the policed length is the IP packet's
	var ipLen int
	{
		b := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, size)})
		ipLen = len(b)
	}
	// Every 1400-byte packet at 2x the rate: one per ipLen/(2*rate) s.
	gap := time.Duration(float64(ipLen) / (2 * rate) * float64(time.Second))
	const dur = 10 * time.Second
	for now := time.Duration(0); now < dur; now += gap {
		for _, c := range calls {
			for dir := range 2 {
				v, _ := sendGRE(t, e, c.in, c.peer, c.out, dir == 1, size, 0)
				if v == pkt.Accept {
					c.pass[dir]++
				} else {
					c.drops[dir]++
				}
			}
		}
		clk.Advance(gap)
	}
	want := float64(rate)*dur.Seconds() + float64(lim.Burst)
	var totalDrops uint64
	for i, c := range calls {
		for dir := range 2 {
			got := float64(c.pass[dir] * ipLen)
			if got > want*1.02 || got < want*0.98 {
				t.Errorf("call %d dir %d passed %.0f bytes in %v, want %.0f (+-2%%)", i, dir, got, dur, want)
			}
		}
		info := e.Calls()
		var ci *CallInfo
		for j := range info {
			if info[j].InsideIP.As4() == c.in {
				ci = &info[j]
			}
		}
		if ci == nil || ci.PolicedOut != uint64(c.drops[0]) || ci.PolicedIn != uint64(c.drops[1]) || c.drops[0] == 0 {
			t.Errorf("call %d: CallInfo %+v, dropped %v", i, ci, c.drops)
		}
		totalDrops += uint64(c.drops[0] + c.drops[1])
	}
	if got := e.counters.Load(int(rGREPoliced)); got != totalDrops {
		t.Errorf("gre_policed = %d, want %d", got, totalDrops)
	}
}

// Policing and classes keep the GRE path free of allocations.
func TestNoAllocsGREQoS(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.QoS = QoSConfig{Classes: qosClasses(t, testClasses), CallLimit: police.Limit{BytesPerSecond: 1, Burst: 1}}
	})
	out := addCall(t, e, lanA, 40000, 7, 555)
	outT := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	inT := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	buf := make([]byte, len(outT))
	p := &nfq.Packet{Payload: buf}
	for name, f := range map[string]func(){
		"out": func() { copy(buf, outT); *p = nfq.Packet{Payload: buf, InDev: lanIf}; e.Process(p) },
		"in":  func() { copy(buf, inT); *p = nfq.Packet{Payload: buf, InDev: wanIf}; e.Process(p) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
	if e.counters.Load(int(rGREPoliced)) == 0 {
		t.Error("nothing policed at 1 byte/s")
	}
}

// BenchmarkGREOutQoS is BenchmarkGREOut with the call classed and policed
// (at a rate it never reaches): the cost of shaping on the GRE path.
func BenchmarkGREOutQoS(b *testing.B) {
	e := NewEngine(EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf},
		QoS: QoSConfig{Classes: qosClasses(b, testClasses), CallLimit: police.Limit{BytesPerSecond: 1 << 60, Burst: 1 << 30}}},
		conntrack.SystemClock{})
	addCall(b, e, lanA, 40000, 7, 555)
	tmpl := pkttest.GRE(b, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(1), Payload: make([]byte, 1400)})
	buf := make([]byte, len(tmpl))
	b.SetBytes(int64(len(tmpl)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf[:40], tmpl)
		p := nfq.Packet{Payload: buf, InDev: lanIf}
		if v, _ := e.Process(&p); v != pkt.Accept || !p.Set.SetPriority {
			b.Fatal("not accepted and classed")
		}
	}
}

// A reload that changes the per-call rate re-rates the calls policed at the
// old one, as the kernel fast path does with its buckets; turning policing
// off keeps the calls' policers (the kernel keeps their chains and sets).
func TestCallPolicingReload(t *testing.T) {
	const size = 1400
	ipLen := len(pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, size)}))
	slow := police.Limit{BytesPerSecond: 125_000, Burst: 16 << 10} // 1mbit
	fast := police.Limit{BytesPerSecond: 500_000, Burst: 16 << 10} // 4mbit
	base := EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf}, MaxCalls: 100}
	e, clk := newEngine(t, func(c *EngineConfig) { c.QoS = QoSConfig{CallLimit: slow} })
	out := addCall(t, e, lanA, 40000, 7, 555)
	// passed sends outbound at 8 Mbit/s for 4 s and returns the rate that
	// passed, in bytes per second.
	passed := func() float64 {
		const dur = 4 * time.Second
		gap := time.Duration(float64(ipLen) / 1_000_000 * float64(time.Second))
		n := 0
		for now := time.Duration(0); now < dur; now += gap {
			if v, _ := sendGRE(t, e, lanA, 555, out, false, size, 0); v == pkt.Accept {
				n++
			}
			clk.Advance(gap)
		}
		return float64(n*ipLen) / dur.Seconds()
	}
	near := func(what string, got float64, l police.Limit) {
		t.Helper()
		want := float64(l.BytesPerSecond) + float64(l.Burst)/4
		if got < want*0.95 || got > want*1.05 {
			t.Errorf("%s: %.0f bytes/s passed, want about %.0f", what, got, want)
		}
	}
	near("before the reload", passed(), slow)

	cfg := base
	cfg.QoS = QoSConfig{CallLimit: fast}
	e.Reconfigure(cfg)
	near("after the reload to 4mbit", passed(), fast)

	cfg.QoS = QoSConfig{}
	e.Reconfigure(cfg)
	near("after policing was turned off", passed(), fast)
	other := [4]byte{10, 0, 0, 9}
	out2 := addCall(t, e, other, 40001, 8, 556)
	for i := 0; i < 200; i++ { // 280 kB at once: far over any bucket above
		if v, _ := sendGRE(t, e, other, 556, out2, false, size, 0); v != pkt.Accept {
			t.Fatalf("a call set up with policing off was policed at packet %d", i)
		}
	}
}

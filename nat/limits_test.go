package nat

import (
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// syn sends a SYN from ip:port to the server's port 1723 through e.
func syn(t *testing.T, e *Engine, ip [4]byte, port uint16) (pkt.Verdict, string) {
	t.Helper()
	p := nfq.Packet{Payload: pkttest.TCP(t, ip, server, port, 1723, nil, pkttest.TCPOpt{SYN: true}), InDev: lanIf}
	return e.Process(&p)
}

// A SYN flood through the engine into a small table: the live calls and
// their established connections stay, SYNs take over each other's places
// (early drop), and once the table is full of established connections new
// SYNs are dropped and counted.
func TestSYNFloodKeepsLiveCalls(t *testing.T) {
	e, clk := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 8 })
	var live []*client
	var outs []uint16
	for i := range 3 {
		c := newClient(t, e, insideHost(i), 40000)
		c.startControl()
		outs = append(outs, c.call(0x100, 0x4000+uint16(i)))
		live = append(live, c)
	}
	if conns, _ := e.table.InSetup(); conns != 0 {
		t.Fatalf("%d connections in setup after SCCRP", conns)
	}
	flooder := [4]byte{10, 9, 9, 9}
	for i := range 1000 {
		if v, r := syn(t, e, flooder, uint16(1024+i)); v != pkt.Accept || r != ReasonCtlNew {
			t.Fatalf("SYN %d: %v %s", i, v, r)
		}
		if i%100 == 0 {
			clk.Advance(time.Second)
		}
	}
	for i, c := range live {
		if v, _ := gre(t, e, pkttest.GRE(t, c.ip, server, 0x4000+uint16(i), pkttest.GREOpt{}), lanIf); v != pkt.Accept {
			t.Fatalf("live call %d lost to the flood", i)
		}
		if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, outs[i], pkttest.GREOpt{}), wanIf); v != pkt.Accept {
			t.Fatalf("live call %d lost to the flood (inbound)", i)
		}
	}
	c := e.Counters()
	if c["conns_early_dropped"] != 1000-5 || c["conns_evicted"] != 0 || c["calls_evicted"] != 0 || c["conns_setup"] != 5 {
		t.Fatalf("counters %v", c)
	}
	// Fill the rest with established connections: now SYNs are refused.
	for i := range 5 {
		x := newClient(t, e, insideHost(10+i), 40000)
		x.startControl()
	}
	if v, r := syn(t, e, flooder, 9); v != pkt.Drop || r != ReasonCtlRefused {
		t.Fatalf("SYN into a table of established connections: %v %s, want drop %s", v, r, ReasonCtlRefused)
	}
	if c := e.Counters(); c["conns_refused_table_full"] != 1 || c[ReasonCtlRefused] != 1 {
		t.Fatalf("counters %v", c)
	}
	// The SYNs' short timeout frees their places; an established
	// connection's does not come near.
	clk.Advance(conntrack.SetupTimeout + time.Second)
	e.Tick()
	if conns, _ := e.table.Len(); conns != 8 {
		t.Fatalf("%d connections after the setup timeout, want the 8 established", conns)
	}
}

// Per-source limits through the engine: a host's SYNs beyond
// conns_per_source are dropped, its calls beyond calls_per_conn and
// calls_per_source pass untranslated (alloc_failed); other hosts are not
// affected, and the refused calls take no outside call ID.
func TestPerSourceLimits(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.Limits = conntrack.Limits{ConnsPerSource: 2, CallsPerConn: 2, CallsPerSource: 3}
	})
	a1 := newClient(t, e, lanA, 40000)
	a2 := newClient(t, e, lanA, 40001)
	a1.startControl()
	a2.startControl()
	if v, r := syn(t, e, lanA, 40002); v != pkt.Drop || r != ReasonCtlRefused {
		t.Fatalf("third connection of a host: %v %s", v, r)
	}
	b := newClient(t, e, lanB, 40000)
	b.startControl()
	a1.call(1, 0x4001)
	a1.call(2, 0x4002)
	req := &wire.OCRQ{CallID: 3, CallSerial: 3, RecvWindow: 16}
	if got := a1.msg(true, req); u16at(got, 12) != 3 {
		t.Fatalf("call over calls_per_conn was translated to %#x", u16at(got, 12))
	}
	a2.call(4, 0x4004)
	if got := a2.msg(true, &wire.OCRQ{CallID: 5, CallSerial: 5, RecvWindow: 16}); u16at(got, 12) != 5 {
		t.Fatalf("call over calls_per_source was translated to %#x", u16at(got, 12))
	}
	b.call(1, 0x4101)
	c := e.Counters()
	if c["conns_refused_per_source"] != 1 || c["calls_refused_per_conn"] != 1 || c["calls_refused_per_source"] != 1 ||
		c["helper_alloc_failed"] != 2 || c["calls_active"] != 4 {
		t.Fatalf("counters %v", c)
	}
	if used, q := e.alloc.InUse(PoolKey{pubIP, server}); used != 4 || q != 0 {
		t.Fatalf("allocator: %d used, %d quarantined; refused calls must hold no ID", used, q)
	}
}

// An outside call ID comes back without quarantine when its call never
// carried GRE, and with it when it did.
func TestNoQuarantineWithoutGRE(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) { c.Timeouts.CallIDQuarantine = time.Minute })
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	pk := PoolKey{pubIP, server}
	a.call(1, 0x4001) // set up, never carries GRE
	out2 := a.call(2, 0x4002)
	gre(t, e, pkttest.GRE(t, lanA, server, 0x4002, pkttest.GREOpt{}), lanIf)
	gre(t, e, pkttest.GRE(t, server, pubIP, out2, pkttest.GREOpt{}), wanIf)
	a.msg(true, &wire.OCRQ{CallID: 3, CallSerial: 3, RecvWindow: 16}) // requested, never answered
	a.msg(true, &wire.CCRQ{CallID: 1})
	a.msg(true, &wire.CCRQ{CallID: 2})
	a.msg(true, &wire.CCRQ{CallID: 3})
	if used, q := e.alloc.InUse(pk); used != 0 || q != 1 {
		t.Fatalf("allocator: %d used, %d quarantined; want only the call that carried GRE quarantined", used, q)
	}
	if c := e.Counters(); c["callid_released"] != 3 || c["callid_released_unused"] != 2 {
		t.Fatalf("counters %v", c)
	}
}

// A call whose request went out but that the gateway gave up on itself
// (idle expiry of state in setup) keeps its outside ID in quarantine: the
// peer may still answer that ID, and a new call must not receive it.
func TestQuarantineUnansweredRequest(t *testing.T) {
	e, clk := newEngine(t, func(c *EngineConfig) { c.Timeouts.CallIDQuarantine = time.Hour })
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	a.msg(true, &wire.OCRQ{CallID: 7, CallSerial: 7, RecvWindow: 16}) // never answered
	clk.Advance(conntrack.SetupTimeout + time.Second)
	e.Tick()
	if _, calls := e.table.Len(); calls != 0 {
		t.Fatalf("%d calls left after the setup timeout", calls)
	}
	if used, q := e.alloc.InUse(PoolKey{pubIP, server}); used != 0 || q != 1 {
		t.Fatalf("allocator: %d used, %d quarantined; want the unanswered request's ID quarantined", used, q)
	}
}

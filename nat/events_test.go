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

// drain returns the events waiting in s.
func drain(s *EventSub) []Event {
	var out []Event
	for {
		select {
		case ev := <-s.C:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// A call's life as two listeners see it: the control connection tracked,
// the call set up with its three IDs, cleared with its GRE counters; then a
// second call that idles out, and refusals by the per-source limits. The
// teardown counters match.
func TestEventsCallLife(t *testing.T) {
	e, clk := newEngine(t, func(c *EngineConfig) {
		c.Limits = conntrack.Limits{ConnsPerSource: 1, CallsPerConn: 1, CallsPerSource: 2}
	})
	s1, s2 := e.SubscribeEvents(0), e.SubscribeEvents(0)
	defer s1.Close()
	defer s2.Close()
	if v, _ := metricsValue(e, "event_listeners"); v != 2 {
		t.Fatalf("event_listeners = %d, want 2", v)
	}
	c := newClient(t, e, lanA, 40000)
	c.startControl()
	out := c.call(7, 0x4007)
	gre(t, e, pkttest.GRE(t, lanA, server, 0x4007, pkttest.GREOpt{}), lanIf)
	gre(t, e, pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{}), wanIf)
	c.msg(true, &wire.CCRQ{CallID: 7})
	c.msg(false, &wire.CDN{CallID: 0x4007, Result: 1})

	for _, s := range []*EventSub{s1, s2} {
		evs := drain(s)
		if len(evs) != 3 {
			t.Fatalf("%d events, want control-new, call-setup, call-cleared: %+v", len(evs), evs)
		}
		if ev := evs[0]; ev.Type != EventControlNew || ev.InsideIP != lanA || ev.InsidePort != 40000 || ev.PeerIP != server || ev.PeerPort != 1723 || ev.Reason != "tracked" {
			t.Errorf("first event %+v", ev)
		}
		if ev := evs[1]; ev.Type != EventCallSetup || ev.InsideCallID != 7 || ev.OutsideCallID != out || ev.PeerCallID != 0x4007 || ev.PublicIP != pubIP {
			t.Errorf("second event %+v", ev)
		}
		ev := evs[2]
		if ev.Type != EventCallCleared || ev.Reason != conntrack.ReasonCleared || ev.OutsideCallID != out ||
			ev.PktsOut != 1 || ev.PktsIn != 1 || ev.BytesOut == 0 || ev.BytesIn == 0 {
			t.Errorf("third event %+v", ev)
		}
		if j := ev.JSON(); j.Event != "call-cleared" || j.InsideIP.String() != "10.0.0.2" && !j.InsideIP.IsValid() {
			t.Errorf("JSON %+v", j)
		}
	}

	// A second call on the same connection idles out.
	c.call(8, 0x4008)
	drain(s1)
	clk.Advance(conntrack.DefaultGREUnreplied + time.Second)
	e.Tick()
	var expired int
	for _, ev := range drain(s1) {
		if ev.Type == EventCallExpired && ev.InsideCallID == 8 {
			expired++
		}
	}
	if expired != 1 {
		t.Errorf("call-expired events for call 8: %d, want 1", expired)
	}

	// Refusals: a second connection of the same host (conns_per_source 1).
	newClient(t, e, lanB, 40000).startControl()
	drain(s1)
	syn(t, e, lanB, 40001)
	evs := drain(s1)
	if len(evs) != 1 || evs[0].Type != EventRefused || evs[0].What != "control" || evs[0].Reason != "per_source" {
		t.Errorf("refused connection: %+v", evs)
	}
	m := e.Counters()
	if m["call_teardown_cleared"] != 1 || m["call_teardown_expired"] != 1 {
		t.Errorf("teardown counters: cleared %d, expired %d, conn_removed %d", m["call_teardown_cleared"],
			m["call_teardown_expired"], m["call_teardown_conn_removed"])
	}
	if m["events_lost"] != 0 {
		t.Errorf("events_lost = %d", m["events_lost"])
	}
}

func metricsValue(e *Engine, k string) (uint64, bool) {
	v, ok := e.Counters()[k]
	return v, ok
}

// A listener that does not read loses what does not fit its buffer, counted
// for it and in events_lost; the engine never waits, and another listener
// still gets everything.
func TestEventsSlowListener(t *testing.T) {
	e, _ := newEngine(t, nil)
	slow, fast := e.SubscribeEvents(2), e.SubscribeEvents(100)
	defer fast.Close()
	for i := range 5 {
		addCall(t, e, lanA, 40000+uint16(i), 7, 0x4000+uint16(i)) // one call-setup each
	}
	if got := len(drain(fast)); got != 5 {
		t.Errorf("fast listener got %d events, want 5", got)
	}
	if got := len(drain(slow)); got != 2 {
		t.Errorf("slow listener got %d events, want its buffer of 2", got)
	}
	if n := slow.TakeLost(); n != 3 {
		t.Errorf("slow listener lost %d, want 3", n)
	}
	if n := slow.TakeLost(); n != 0 {
		t.Errorf("TakeLost again = %d, want 0", n)
	}
	if v, _ := metricsValue(e, "events_lost"); v != 3 {
		t.Errorf("events_lost = %d, want 3", v)
	}
	slow.Close()
	slow.Close() // idempotent
	if v, _ := metricsValue(e, "event_listeners"); v != 1 {
		t.Errorf("event_listeners after Close = %d, want 1", v)
	}
}

// Publishing allocates nothing, with or without listeners, and the GRE
// path stays allocation-free with a listener attached.
func TestEventsNoAllocs(t *testing.T) {
	e, _ := newEngine(t, nil)
	tc, err := e.table.AddControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 1, PeerPort: 1723}, pubIP, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { e.eventCallSetup(tc, 1, 2, 3) }); n != 0 {
		t.Errorf("no listener: %v allocs per event", n)
	}
	s := e.SubscribeEvents(16)
	defer s.Close()
	if n := testing.AllocsPerRun(1000, func() {
		e.eventCallSetup(tc, 1, 2, 3)
		<-s.C
	}); n != 0 {
		t.Errorf("one listener: %v allocs per event", n)
	}
	out := addCall(t, e, lanA, 40000, 7, 555)
	in := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Payload: make([]byte, 100)})
	buf := make([]byte, len(in))
	if n := testing.AllocsPerRun(1000, func() {
		copy(buf, in)
		p := nfq.Packet{Payload: buf, InDev: wanIf}
		if v, _ := e.Process(&p); v != pkt.Accept {
			t.Fatal("GRE not accepted")
		}
	}); n != 0 {
		t.Errorf("GRE with a listener: %v allocs per packet", n)
	}
}

// drops_total counts exactly the packets dropped, by reason, and the new
// families' keys are all present at zero on a fresh engine.
func TestDropAndTrafficCounters(t *testing.T) {
	e, _ := newEngine(t, nil)
	m := e.Counters()
	for _, k := range []string{"drop_gre_no_call", "drop_gre_malformed", "drop_ctl_refused", "drop_helper_out_of_order",
		"ctl_segments_out", "ctl_segments_in", "gre_bytes_out", "gre_bytes_in", "call_teardown_cleared",
		"call_teardown_expired", "call_teardown_evicted", "callid_in_use", "callid_quarantined", "events_lost", "event_listeners"} {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("fresh engine: %q = %d, present %v", k, v, ok)
		}
	}
	out := addCall(t, e, lanA, 40000, 7, 555)
	g := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Payload: make([]byte, 100)})
	gre(t, e, g, wanIf)
	gre(t, e, pkttest.GRE(t, server, pubIP, out+1, pkttest.GREOpt{}), wanIf)
	gre(t, e, pkttest.GRE(t, server, pubIP, out+2, pkttest.GREOpt{}), wanIf)
	m = e.Counters()
	if m["drop_gre_no_call"] != 2 || m[ReasonGRENoCall] != 2 {
		t.Errorf("drop_gre_no_call = %d, gre_no_call = %d; want 2, 2", m["drop_gre_no_call"], m[ReasonGRENoCall])
	}
	if m["gre_bytes_in"] != uint64(len(g)) || m["callid_in_use"] != 1 {
		t.Errorf("gre_bytes_in = %d (want %d), callid_in_use = %d (want 1)", m["gre_bytes_in"], len(g), m["callid_in_use"])
	}
	// Lenient: a malformed IPv4 packet is accepted, so it is no drop.
	process(t, e, []byte{0x45, 0, 0}, lanIf, nfq.HookPrerouting)
	if m := e.Counters(); m[ReasonIPMalformed] != 1 || m["drop_ip_malformed"] != 0 {
		t.Errorf("lenient malformed: ip_malformed %d, drop_ip_malformed %d; want 1, 0", m[ReasonIPMalformed], m["drop_ip_malformed"])
	}
}

// A call still being set up that makes room for a new one (the table full)
// is a call-evicted event with reason early_dropped, counted as such.
func TestEventsEarlyDrop(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 })
	tc, err := e.table.AddControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723}, pubIP, false)
	if err != nil {
		t.Fatal(err)
	}
	c := &control{tc: tc}
	m := &mapper{e, c}
	s := e.SubscribeEvents(0)
	defer s.Close()
	for id := uint16(1); id <= 3; id++ {
		if _, err := m.AllocOutside(id); err != nil {
			t.Fatalf("call %d: %v", id, err)
		}
	}
	evs := drain(s)
	if len(evs) != 1 || evs[0].Type != EventCallEvicted || evs[0].Reason != conntrack.ReasonEarlyDrop || evs[0].InsideCallID != 1 {
		t.Fatalf("events %+v, want one call-evicted (early_dropped) of call 1", evs)
	}
	if v := e.Counters()["call_teardown_early_dropped"]; v != 1 {
		t.Errorf("call_teardown_early_dropped = %d, want 1", v)
	}
}

// Listeners come and go while control connections are tracked from two
// goroutines (run with -race): no event is sent to a closed listener's
// accounting after Close, and event_listeners ends at 0.
func TestEventsConcurrentListeners(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 50 })
	done := make(chan struct{})
	for g := range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				b := pkttest.TCP(t, lanA, server, uint16(1024+g*3000+i), 1723, nil, pkttest.TCPOpt{SYN: true})
				e.Process(&nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting})
			}
		}()
	}
	var got int
	for i := 0; i < 2; {
		select {
		case <-done:
			i++
		default:
			s := e.SubscribeEvents(8)
			for range 4 {
				select {
				case <-s.C:
					got++
				case <-time.After(time.Millisecond):
				}
			}
			s.Close()
		}
	}
	if v, _ := metricsValue(e, "event_listeners"); v != 0 {
		t.Errorf("event_listeners = %d after every Close", v)
	}
	t.Logf("%d events read by short-lived listeners", got)
}

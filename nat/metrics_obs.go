package nat

import (
	"pptpgw/helper"
	"pptpgw/internal/metrics"
)

// The families operators graph and alert on (issue 8: Prometheus, as
// pptpgw_<name>). They are part of the engine's one metrics.Source
// (Collect): the same Snapshot feeds `pptpgw calls --json` (by key) and
// /metrics (by family), and the hot path only adds to atomic counters.
var (
	descPPTPPackets = &metrics.Desc{Name: "packets_total", Labels: []string{"path", "direction"},
		Help: "PPTP packets by path and direction (out: inside to peer, in: peer to inside): gre counts GRE translated, control every TCP 1723 segment the engine saw from a known side (tracked or not; passed, held or dropped)."}
	descBytes = &metrics.Desc{Name: "bytes_total", Labels: []string{"direction"},
		Help: "Bytes (whole IPv4 packets) of GRE translated, by direction."}
	descCallSetups = &metrics.Desc{Name: "call_setups_total",
		Help: "Calls set up (Outgoing-Call-Reply or Incoming-Call-Connected seen): from here GRE flows."}
	descTeardowns = &metrics.Desc{Name: "call_teardowns_total", Labels: []string{"reason"},
		Help: "Calls removed from the table, by reason: cleared (Call-Clear-Request, Call-Disconnect-Notify, failed setup), control_stopped (Stop-Control-Connection, FIN, RST), conn_removed (with its control connection), expired, evicted, early_dropped, other (replaced, purged)."}
	descDrops = &metrics.Desc{Name: "drops_total", Labels: []string{"reason"},
		Help: "Packets the engine dropped, by reason (the engine's or the control translator's)."}
	descCallsActive = &metrics.Desc{Name: "calls_active", Kind: metrics.Gauge,
		Help: "Calls tracked now (set up or being set up)."}
	descConnsActive = &metrics.Desc{Name: "control_connections_active", Kind: metrics.Gauge,
		Help: "PPTP control connections tracked now."}
	descPoolInUse = &metrics.Desc{Name: "callid_pool_in_use", Kind: metrics.Gauge,
		Help: "Outside call IDs in use now, all (public address, peer) pools together."}
	descPoolQuarantined = &metrics.Desc{Name: "callid_pool_quarantined", Kind: metrics.Gauge,
		Help: "Outside call IDs in quarantine now (released, not yet reusable)."}
	descEventsLost = &metrics.Desc{Name: "events_lost_total",
		Help: "Call events not delivered to a `pptpgw events` listener whose buffer was full (counted once per listener)."}
	descEventListeners = &metrics.Desc{Name: "event_listeners", Kind: metrics.Gauge,
		Help: "`pptpgw events` listeners connected now."}
)

func teardown(why string) metrics.Def {
	return metrics.Def{Desc: descTeardowns, LabelValues: []string{why}, Key: "call_teardown_" + why}
}

// dropKinds are the counters of drops_total: every reason that can come
// with a Drop verdict (the engine's, then the translator's).
var dropKinds = func() []int {
	out := []int{int(rCtl)}
	for _, r := range append(dropReasons[:], policyDrops[:]...) {
		out = append(out, int(r))
	}
	for r := helper.ReasonNone + 1; r < helper.NumReasons; r++ {
		out = append(out, helperReason(r))
	}
	return out
}()

// newDropCounters declares one drop counter per reason, in the index space
// of the engine's counters (reason, then helperReason); only dropKinds are
// exported.
func newDropCounters() *metrics.Counters {
	defs := make([]metrics.Def, int(numReasons)+int(helper.NumReasons))
	name := func(i int) string {
		if i < int(numReasons) {
			return reason(i).String()
		}
		return "helper_" + helper.Reason(i-int(numReasons)).String()
	}
	for i := range defs {
		n := name(i)
		defs[i] = metrics.Def{Desc: descDrops, LabelValues: []string{n}, Key: "drop_" + n}
	}
	return metrics.NewCounters(defs)
}

// collectObs emits the drops, the allocator's gauges and the event
// counters (part of Collect).
func (e *Engine) collectObs(emit func(metrics.Sample)) {
	for _, i := range dropKinds {
		emit(metrics.Sample{Desc: descDrops, LabelValues: []string{e.drops.Key(i)[len("drop_"):]},
			Key: e.drops.Key(i), Value: e.drops.Load(i)})
	}
	inUse, quar := e.alloc.Totals()
	emit(metrics.Sample{Desc: descPoolInUse, Key: "callid_in_use", Value: uint64(inUse)})
	emit(metrics.Sample{Desc: descPoolQuarantined, Key: "callid_quarantined", Value: uint64(quar)})
	emit(metrics.Sample{Desc: descEventsLost, Key: "events_lost", Value: e.events.lost.Load()})
	emit(metrics.Sample{Desc: descEventListeners, Key: "event_listeners", Value: uint64(e.events.n.Load())})
}

// Totals returns how many outside call IDs are in use and in quarantine,
// over all pools (quarantines that are over are not drained here: Tick
// does that every 100 ms).
func (a *Allocator) Totals() (inUse, quarantined int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pools {
		inUse += p.inUse
		quarantined += len(p.fifo)
	}
	return inUse, quarantined
}

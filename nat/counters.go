package nat

import (
	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
)

// reason is why the engine gave a packet its verdict, or an event it
// counts. Each has one counter (and one key in `pptpgw calls --json`); the
// translator's own reasons follow them (helperReason).
type reason uint8

const (
	rGREOut           reason = iota // outbound GRE translated
	rGREIn                          // inbound GRE translated
	rGRENoCall                      // GRE matching no established call: dropped
	rGREMalformed                   // not enhanced GRE v1 (incl. C=1): dropped
	rGREFragment                    // an IPv4 fragment of GRE: dropped (see processGRE)
	rCtl                            // control segment passed (maybe rewritten)
	rCtlHeld                        // control segment held for the rest of a call-ID field
	rCtlReleased                    // held segment completed and released
	rCtlHoldExpire                  // held segment timed out
	rCtlHoldFull                    // segment not held: MaxHeldBytes reached; let go (lenient) or dropped
	rCtlNoConn                      // strict: data on an untracked control connection
	rCtlPickup                      // lenient: control connection picked up mid-stream
	rCtlEmpty                       // segment without data on an untracked connection
	rCtlUntracked                   // TCP 1723 to an inside server that is not forwarded
	rCtlNew                         // control connection tracked from its SYN
	rCtlRefused                     // new control connection refused (full table, per-source limit): dropped
	rIPMalformed                    // not a whole IPv4 packet
	rTCPMalformed                   // TCP header cut short or with a bad data offset
	rTCPFragment                    // an IPv4 fragment of TCP 1723
	rNotPPTP                        // neither GRE nor TCP 1723: accepted untouched
	rUnknownIface                   // direction unknown: accepted untouched
	rCallIDsOut                     // no outside call ID left for a (public, peer) pair
	rCallsMapped                    // an inside call ID got its outside ID
	rCallsEstablished               // a call was set up (OCRP/ICCN): GRE may flow
	rCallsCleared                   // a call was cleared or its control connection stopped
	rEstablishNoCall                // a set-up message for a call the table no longer has
	// observability (issue 8): packets_total{path="control"}, bytes_total,
	// call_teardowns_total{reason} (counted in callRemoved, events.go).
	rCtlSegOut           // a TCP 1723 segment of tracked PPTP, inside to peer
	rCtlSegIn            // a TCP 1723 segment of tracked PPTP, peer to inside
	rGREBytesOut         // bytes of GRE translated, inside to peer
	rGREBytesIn          // bytes of GRE translated, peer to inside
	rTeardownCleared     // call removed: Call-Clear-Request, Call-Disconnect-Notify, failed setup
	rTeardownStopped     // call removed: its control connection stopped (Stop-Control-Connection, FIN, RST)
	rTeardownConnRemoved // call removed with its control connection (expired, evicted, replaced)
	rTeardownExpired     // call removed: idle timeout
	rTeardownEvicted     // call removed: LRU bound
	rTeardownEarlyDrop   // call removed: not set up, and the table was full
	rTeardownOther       // call removed: replaced by a newer call, or purged
	rGREPoliced          // shaping (issue 9): GRE over its call's policing rate: dropped
	rGREWrongUplink      // GRE on another uplink than its call's (issue 10): dropped
	numReasons
)

// Reasons returned by Process, as strings (the translator's come back with
// their own names, helper.Reason.String).
const (
	ReasonGREOut        = "gre_out"
	ReasonGREIn         = "gre_in"
	ReasonGRENoCall     = "gre_no_call"
	ReasonGREMalformed  = "gre_malformed"
	ReasonGREFragment   = "gre_fragment"
	ReasonCtl           = "ctl_ok"
	ReasonCtlHeld       = "ctl_held"
	ReasonCtlReleased   = "ctl_released"
	ReasonCtlHoldExpire = "ctl_hold_expired"
	ReasonCtlHoldFull   = "ctl_hold_full"
	ReasonCtlNoConn     = "ctl_no_conn"
	ReasonCtlPickup     = "ctl_pickup"
	ReasonCtlEmpty      = "ctl_untracked_empty"
	ReasonCtlUntracked  = "ctl_untracked"
	ReasonCtlNew        = "ctl_new"
	ReasonCtlRefused    = "ctl_refused"
	ReasonIPMalformed   = "ip_malformed"
	ReasonTCPMalformed  = "tcp_malformed"
	ReasonTCPFragment   = "tcp_fragment"
	ReasonNotPPTP       = "not_pptp"
	ReasonUnknownIface  = "unknown_iface"
	ReasonCallIDsOut    = "callid_exhausted"
	ReasonGREPoliced    = "gre_policed" // shaping (issue 9)
	ReasonGREUplink     = "gre_wrong_uplink"
)

// reasonDefs gives each reason its key and its metric family and labels:
// the one table a new reason is added to.
var reasonDefs = [numReasons]metrics.Def{
	rGREOut:           {Desc: descPPTPPackets, LabelValues: []string{"gre", "out"}, Key: ReasonGREOut},
	rGREIn:            {Desc: descPPTPPackets, LabelValues: []string{"gre", "in"}, Key: ReasonGREIn},
	rGRENoCall:        packets(ReasonGRENoCall),
	rGREMalformed:     packets(ReasonGREMalformed),
	rGREFragment:      packets(ReasonGREFragment),
	rCtl:              packets(ReasonCtl),
	rCtlHeld:          packets(ReasonCtlHeld),
	rCtlReleased:      packets(ReasonCtlReleased),
	rCtlHoldExpire:    packets(ReasonCtlHoldExpire),
	rCtlHoldFull:      packets(ReasonCtlHoldFull),
	rCtlNoConn:        packets(ReasonCtlNoConn),
	rCtlPickup:        packets(ReasonCtlPickup),
	rCtlEmpty:         packets(ReasonCtlEmpty),
	rCtlUntracked:     packets(ReasonCtlUntracked),
	rCtlNew:           packets(ReasonCtlNew),
	rCtlRefused:       packets(ReasonCtlRefused),
	rIPMalformed:      packets(ReasonIPMalformed),
	rTCPMalformed:     packets(ReasonTCPMalformed),
	rTCPFragment:      packets(ReasonTCPFragment),
	rNotPPTP:          packets(ReasonNotPPTP),
	rUnknownIface:     packets(ReasonUnknownIface),
	rCallIDsOut:       packets(ReasonCallIDsOut),
	rCallsMapped:      {Desc: descCallEvents, LabelValues: []string{"mapped"}, Key: "calls_mapped"},
	rCallsEstablished: {Desc: descCallSetups, Key: "calls_established"},
	rCallsCleared:     {Desc: descCallEvents, LabelValues: []string{"cleared"}, Key: "calls_cleared"},
	rEstablishNoCall:  {Desc: descCallEvents, LabelValues: []string{"establish_no_call"}, Key: "establish_no_call"},

	rCtlSegOut:           {Desc: descPPTPPackets, LabelValues: []string{"control", "out"}, Key: "ctl_segments_out"},
	rCtlSegIn:            {Desc: descPPTPPackets, LabelValues: []string{"control", "in"}, Key: "ctl_segments_in"},
	rGREBytesOut:         {Desc: descBytes, LabelValues: []string{"out"}, Key: "gre_bytes_out"},
	rGREBytesIn:          {Desc: descBytes, LabelValues: []string{"in"}, Key: "gre_bytes_in"},
	rTeardownCleared:     teardown(conntrack.ReasonCleared),
	rTeardownStopped:     teardown(conntrack.ReasonStopped),
	rTeardownConnRemoved: teardown(conntrack.ReasonConnRemoved),
	rTeardownExpired:     teardown(conntrack.ReasonExpired),
	rTeardownEvicted:     teardown(conntrack.ReasonEvicted),
	rTeardownEarlyDrop:   teardown(conntrack.ReasonEarlyDrop),
	rTeardownOther:       teardown("other"),
	rGREPoliced:          packets(ReasonGREPoliced),
	rGREWrongUplink:      packets(ReasonGREUplink),
}

// packets is the Def of a reason counted in packets_total{reason}.
func packets(key string) metrics.Def {
	return metrics.Def{Desc: descPackets, LabelValues: []string{key}, Key: key}
}

func (r reason) String() string { return reasonDefs[r].Key }

// The engine's metric families. Keys (`pptpgw calls --json`) are the reason
// names above, "helper_" + the translator's reasons, and the names below.
var (
	descPackets = &metrics.Desc{Name: "decisions_total", Labels: []string{"reason"},
		Help: "Packets the engine decided on other than translated GRE, by reason (drops, control segments, untouched)."}
	descCallEvents = &metrics.Desc{Name: "call_events_total", Labels: []string{"event"},
		Help: "Call life-cycle events: mapped (outside call ID given), cleared (by signalling: Call-Clear-Request, Call-Disconnect-Notify, failed setup, or its control connection stopped), establish_no_call (a set-up message for a call no longer tracked)."}
	descHelper = &metrics.Desc{Name: "control_translator_total", Labels: []string{"reason"},
		Help: "What the control-stream translator noticed about segments, by reason (see package helper)."}
	descHolding = &metrics.Desc{Name: "control_segments_held", Kind: metrics.Gauge,
		Help: "Control segments held now, waiting for the rest of a call-ID field."}
	descRemoved = &metrics.Desc{Name: "removed_total", Labels: []string{"what", "reason"},
		Help: "Calls and control connections removed from the table by idle timeouts (expired), to make room for new state while not yet established (early_dropped), or by the LRU bound (evicted; the table makes room before it is reached, so this stays 0)."}
	descRefused = &metrics.Desc{Name: "refused_total", Labels: []string{"what", "reason"},
		Help: "New calls and control connections not tracked: the table full of established state (table_full), a per-source limit (per_source), the calls-per-connection limit (per_conn)."}
	descActive = &metrics.Desc{Name: "setup_active", Kind: metrics.Gauge, Labels: []string{"what"},
		Help: "Calls and control connections tracked now and not yet established (control, call)."}
	descCallIDs = &metrics.Desc{Name: "callid_events_total", Labels: []string{"event"},
		Help: "Outside call-ID allocator events: allocated, released (all), released_unused (of those, free at once: the call never carried GRE), collisions (random start taken)."}
)

// helperReason is the counter index of a translator reason.
func helperReason(r helper.Reason) int { return int(numReasons) + int(r) }

// newCounters declares one counter per reason and per translator reason.
func newCounters() *metrics.Counters {
	defs := append(make([]metrics.Def, 0, int(numReasons)+int(helper.NumReasons)), reasonDefs[:]...)
	for r := range helper.NumReasons {
		name := r.String()
		if r == helper.ReasonNone {
			name = "none"
		}
		defs = append(defs, metrics.Def{Desc: descHelper, LabelValues: []string{name}, Key: "helper_" + name})
	}
	return metrics.NewCounters(defs)
}

func (e *Engine) count(v pkt.Verdict, r reason) (pkt.Verdict, string) {
	e.counters.Inc(int(r))
	if v == pkt.Drop {
		e.drops.Inc(int(r))
	}
	return v, r.String()
}

// Collect emits every counter and gauge of the engine (metrics.Source).
func (e *Engine) Collect(emit func(metrics.Sample)) {
	if e.kp != nil {
		// The kernel path's counters up to now (as Calls reads them), so
		// a scrape and `pptpgw calls` agree; on error, as of the last read.
		_ = e.kp.sync()
	}
	e.counters.Collect(func(s metrics.Sample) {
		if s.Key != "helper_none" { // a segment with no reason is counted as ctl_ok
			emit(s)
		}
	})
	e.ctlMu.Lock()
	holding := len(e.holds)
	e.ctlMu.Unlock()
	emit(metrics.Sample{Desc: descHolding, Key: "ctl_holding", Value: uint64(holding)})
	st := e.table.Stats()
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"call", "evicted"}, Key: "calls_evicted", Value: st.CallsEvicted})
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"call", "expired"}, Key: "calls_expired", Value: st.CallsExpired})
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"control", "evicted"}, Key: "conns_evicted", Value: st.ConnsEvicted})
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"control", "expired"}, Key: "conns_expired", Value: st.ConnsExpired})
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"call", "early_dropped"}, Key: "calls_early_dropped", Value: st.CallsEarlyDropped})
	emit(metrics.Sample{Desc: descRemoved, LabelValues: []string{"control", "early_dropped"}, Key: "conns_early_dropped", Value: st.ConnsEarlyDropped})
	for _, r := range []struct {
		what, reason, key string
		v                 uint64
	}{
		{"control", "table_full", "conns_refused_table_full", st.ConnsRefusedFull},
		{"control", "per_source", "conns_refused_per_source", st.ConnsRefusedSource},
		{"call", "table_full", "calls_refused_table_full", st.CallsRefusedFull},
		{"call", "per_source", "calls_refused_per_source", st.CallsRefusedSource},
		{"call", "per_conn", "calls_refused_per_conn", st.CallsRefusedConn},
	} {
		emit(metrics.Sample{Desc: descRefused, LabelValues: []string{r.what, r.reason}, Key: r.key, Value: r.v})
	}
	controls, calls := e.table.Len()
	setupControls, setupCalls := e.table.InSetup()
	emit(metrics.Sample{Desc: descConnsActive, Key: "conns_active", Value: uint64(controls)})
	emit(metrics.Sample{Desc: descCallsActive, Key: "calls_active", Value: uint64(calls)})
	emit(metrics.Sample{Desc: descActive, LabelValues: []string{"control"}, Key: "conns_setup", Value: uint64(setupControls)})
	emit(metrics.Sample{Desc: descActive, LabelValues: []string{"call"}, Key: "calls_setup", Value: uint64(setupCalls)})
	as := e.alloc.Stats()
	emit(metrics.Sample{Desc: descCallIDs, LabelValues: []string{"allocated"}, Key: "callid_allocated", Value: as.Allocated})
	emit(metrics.Sample{Desc: descCallIDs, LabelValues: []string{"released"}, Key: "callid_released", Value: as.Released})
	emit(metrics.Sample{Desc: descCallIDs, LabelValues: []string{"released_unused"}, Key: "callid_released_unused", Value: as.ReleasedUnused})
	emit(metrics.Sample{Desc: descCallIDs, LabelValues: []string{"collision"}, Key: "callid_collisions", Value: as.Collisions})
	e.collectObs(emit)        // issue 8 (metrics_obs.go)
	e.collectPools(emit)      // pool (issue 11)
	e.collectKernelPath(emit) // kernel fast path (issue 12)
}

// Counters returns every counter and gauge of the engine as the flat map of
// `pptpgw calls --json`.
func (e *Engine) Counters() map[string]uint64 { return metrics.Collect(e).Map() }

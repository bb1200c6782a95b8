package nat

import (
	"time"

	"pptpgw/internal/pkt"
)

// SummaryInterval is the minimum time between two "dropped packets" log
// lines; the packet path itself never logs.
const SummaryInterval = 10 * time.Second

// Tick expires held segments (lenient: released unmodified; strict:
// dropped), idle calls and control connections, and quarantined call IDs,
// and logs the rate-limited drop summary. Call it periodically from one
// goroutine (e.g. every 100ms: it bounds how late a hold expires).
func (e *Engine) Tick() {
	now := e.clk.Now()
	var rel []release
	e.ctlMu.Lock()
	kept := e.holds[:0]
	for _, h := range e.holds {
		if now.Before(h.deadline) {
			kept = append(kept, h)
			continue
		}
		h.c.tr.ExpireHeld()
		e.heldBytes -= len(h.buf)
		e.counters.Inc(int(rCtlHoldExpire))
		v := pkt.Accept
		if e.conf().set.Strict {
			v = pkt.Drop
			e.drops.Inc(int(rCtlHoldExpire))
		}
		rel = append(rel, release{h.queue, h.id, h.buf, v})
	}
	clear(e.holds[len(kept):])
	e.holds = kept
	e.ctlMu.Unlock()
	e.release(rel)
	e.table.Sweep()
	e.alloc.Tick()
	e.logDrops(now)
}

// dropReasons are the reasons logged in the periodic drop summary.
// GRE on the wrong uplink is a fault of the routing around the gateway.
var dropReasons = [...]reason{rGRENoCall, rGREMalformed, rGREFragment, rCtlNoConn, rCtlHoldExpire,
	rIPMalformed, rTCPMalformed, rTCPFragment, rCallIDsOut, rCtlRefused, rCtlHoldFull, rGREWrongUplink}

// policyDrops are drops by policy rather than by fault: counted in
// drops_total like dropReasons, but not in the warning summary.
var policyDrops = [...]reason{rGREPoliced}

// logDrops logs, at most once per SummaryInterval, how many packets were
// dropped (or malformed) per reason since the last line. Only Tick calls it.
func (e *Engine) logDrops(now time.Time) {
	if now.Sub(e.lastSummary) < SummaryInterval {
		return
	}
	e.lastSummary = now
	var attrs []any
	for _, r := range dropReasons {
		n := e.counters.Load(int(r))
		if d := n - e.lastDrops[r]; d > 0 {
			attrs = append(attrs, r.String(), d)
		}
		e.lastDrops[r] = n
	}
	if len(attrs) > 0 {
		e.log.Warn("pptp packets dropped or malformed since last report", attrs...)
	}
}

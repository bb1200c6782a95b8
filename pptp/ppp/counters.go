package ppp

import (
	"sync/atomic"

	"pptpgw/internal/metrics"
)

// Reason is a constant reason for a dropped frame or a failed session; each
// one is counted per Session (see Session.Counters and Session.Metrics) and
// in Config.Totals when set.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonShort
	ReasonBadLength
	ReasonBadProtocol
	ReasonBadOptions
	ReasonUnknownProtocol  // answered with LCP Protocol-Reject
	ReasonUnknownCode      // answered with Code-Reject
	ReasonWrongPhase       // frame for a protocol not running now
	ReasonUnexpected       // valid packet not expected in this state (stale id, ...)
	ReasonBadAuthPacket    // malformed PAP/CHAP packet
	ReasonAuthFailed       // wrong credentials (server) or rejected (client)
	ReasonAuthTimeout      // no authentication exchange in time
	ReasonBadAuthenticator // MS-CHAPv2 Authenticator Response did not verify
	ReasonLoopback         // our own magic number came back
	ReasonNakLoop          // negotiation did not converge
	ReasonNotUp            // data frame before the network is up
	ReasonPlainWithMPPE    // unencrypted IP while MPPE is on
	ReasonDecrypt          // MPPE packet malformed or undecryptable
	ReasonMPPELate         // MPPE coherency count not ahead: late, duplicated or replayed
	ReasonMPPEReset        // MPPE lost sync, CCP Reset-Request sent
	ReasonTooBig           // packet larger than the peer's MRU
	ReasonEchoTimeout
	ReasonDiscard // LCP Discard-Request received
	ReasonCCPResetReq
	ReasonNoMPPE    // MPPE required but not agreed
	ReasonNCPFailed // IPCP did not come up / no address
	ReasonClosed    // closed locally (Close) or by the peer (Terminate-Request)
	ReasonIPAlloc   // AllocIP failed
	reasonCount
)

var reasonNames = [reasonCount]string{
	ReasonNone:             "none",
	ReasonShort:            "short",
	ReasonBadLength:        "bad_length",
	ReasonBadProtocol:      "bad_protocol_field",
	ReasonBadOptions:       "bad_options",
	ReasonUnknownProtocol:  "unknown_protocol",
	ReasonUnknownCode:      "unknown_code",
	ReasonWrongPhase:       "wrong_phase",
	ReasonUnexpected:       "unexpected",
	ReasonBadAuthPacket:    "bad_auth_packet",
	ReasonAuthFailed:       "auth_failed",
	ReasonAuthTimeout:      "auth_timeout",
	ReasonBadAuthenticator: "bad_authenticator_response",
	ReasonLoopback:         "loopback",
	ReasonNakLoop:          "nak_loop",
	ReasonNotUp:            "not_up",
	ReasonPlainWithMPPE:    "plain_ip_with_mppe",
	ReasonDecrypt:          "mppe_decrypt",
	ReasonMPPELate:         "mppe_late_or_replayed",
	ReasonMPPEReset:        "mppe_reset_request_sent",
	ReasonTooBig:           "too_big",
	ReasonEchoTimeout:      "echo_timeout",
	ReasonDiscard:          "discard_request",
	ReasonCCPResetReq:      "mppe_reset_request_received",
	ReasonNoMPPE:           "mppe_refused",
	ReasonNCPFailed:        "ipcp_failed",
	ReasonClosed:           "closed",
	ReasonIPAlloc:          "ip_alloc_failed",
}

func (r Reason) String() string {
	if r < reasonCount {
		return reasonNames[r]
	}
	return "unknown"
}

// descEvents is the family of the reasons: one sample per reason, zero or not.
var descEvents = &metrics.Desc{Name: "ppp_events_total", Labels: []string{"reason"},
	Help: "PPP frames dropped and session failures, by reason."}

// reasonDefs are the counters of a Session (and of Config.Totals), every Reason
// but ReasonNone in order (Reason.index); their flat keys are the reasons
// prefixed "ppp_".
var reasonDefs = func() []metrics.Def {
	defs := make([]metrics.Def, 0, reasonCount-1)
	for r := ReasonNone + 1; r < reasonCount; r++ {
		defs = append(defs, metrics.Def{Desc: descEvents, LabelValues: []string{r.String()}, Key: "ppp_" + r.String()})
	}
	return defs
}()

// NewCounters returns a set of counters of every Reason, for Config.Totals: the
// sessions sharing it count into it besides their own.
func NewCounters() *metrics.Counters { return metrics.NewCounters(reasonDefs) }

// index is r's index in reasonDefs; ok is false for ReasonNone and unknown values.
func (r Reason) index() (int, bool) { return int(r) - 1, r > ReasonNone && r < reasonCount }

// counters are one Session's counts, indexed by Reason.index like reasonDefs: an
// array inside the Session rather than a metrics.Counters of its own, so that a
// session costs no allocation for them.
type counters [reasonCount - 1]atomic.Uint64

// Collect emits every reason, zero or not (metrics.Source).
func (c *counters) Collect(emit func(metrics.Sample)) {
	for i := range c {
		d := &reasonDefs[i]
		emit(metrics.Sample{Desc: d.Desc, LabelValues: d.LabelValues, Key: d.Key, Value: c[i].Load()})
	}
}

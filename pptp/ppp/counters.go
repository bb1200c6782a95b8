package ppp

import "sync/atomic"

// Reason is a constant reason for a dropped frame or a failed session; each
// one is counted per Session (see Session.Counters).
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

type counters [reasonCount]atomic.Uint64

func (c *counters) inc(r Reason) {
	if r < reasonCount {
		c[r].Add(1)
	}
}

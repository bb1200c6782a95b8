package pptp

import "pptpgw/internal/metrics"

// counter is one of the server's counters: an index into Server.counters and
// counterDefs. Its flat key (counterDefs[c].Key) is what `pptpgw sessions
// --json` shows.
type counter int

const (
	cConnsAccepted counter = iota
	cConnLimitGlobal
	cConnLimitSource
	cConnEvictedUnauth

	cCtrlReadError
	cCtrlBadMessage
	cCtrlNotStarted
	cCtrlDuplicateSCCRQ
	cCtrlBadVersion
	cCtrlUnexpectedICRP
	cCtrlWrongDirection
	cCtrlCCRQUnknownCall
	cCtrlUnexpectedCDN
	cCtrlUnexpected
	cCtrlEchoTimeout
	cCtrlSetLinkInfo
	cCtrlWANErrorNotify
	cCtrlEchoSent

	cCallsStarted
	cCallLimitConn
	cCallDuplicatePeerID
	cCallLimitGlobal
	cCallIDExhausted
	cCallLimitUnauthConn
	cCallLimitUnauthSource

	cTimeoutFirstMessage
	cTimeoutCallRequest
	cTimeoutAuth

	cSessionsUp
	cSessionsEnded
	cPoolExhausted
	cSessionLimit
	cRouteAddFailed

	cNetReadError
	cNetNotIPv4
	cNetNoSession
	cNetPeerWindowFull
	cNetTxQueueFull
	cSendIPFailed
	cGRESendFailed
	cPeerNotIPv4
	cPeerSpoofedSource
	cNetWriteFailed
	cDHCPInformAnswered
	cLogSuppressed

	numCounters
)

// session.logged has a bit per counter.
var _ [64 - numCounters]struct{}

var (
	descConns = &metrics.Desc{Name: "control_connections_total", Labels: []string{"result"},
		Help: "Control connections (TCP 1723) accepted, refused by a limit, or evicted (not authenticated) to make room for a new one."}
	descCtrlErrors = &metrics.Desc{Name: "control_errors_total", Labels: []string{"reason"},
		Help: "Control-channel errors: bad or unexpected messages from the PNS (ignored, or the connection closed) and timeouts."}
	descCtrlNotices = &metrics.Desc{Name: "control_notices_total", Labels: []string{"message"},
		Help: "Control messages accepted and only counted (Set-Link-Info, WAN-Error-Notify)."}
	descCtrlEcho = &metrics.Desc{Name: "control_echo_requests_total",
		Help: "Echo-Requests sent on quiet control connections."}
	descCalls = &metrics.Desc{Name: "calls_total", Labels: []string{"result"},
		Help: "Outgoing-Call-Requests answered: started, or refused and why."}
	descTimedOut = &metrics.Desc{Name: "preauth_timeouts_total", Labels: []string{"stage"},
		Help: "Control connections and calls closed before authentication because the peer did not reach the next stage in time: first_message (no SCCRQ), call_request (no call after SCCRP), auth (PPP authentication not done)."}
	descLogSuppressed = &metrics.Desc{Name: "log_lines_suppressed_total",
		Help: "Warnings left out of the log by the rate limit (each interval's count is logged as one line)."}
	descSessions = &metrics.Desc{Name: "sessions_ended_total",
		Help: "Sessions ended (calls, authenticated or not)."}
	descSessionSetups = &metrics.Desc{Name: "session_setups_total",
		Help: "Sessions whose PPP came up (authenticated, address given)."}
	descSessionErrors = &metrics.Desc{Name: "session_errors_total", Labels: []string{"reason"},
		Help: "Authenticated sessions that could not get an address (pool exhausted, or max_sessions reached) or their route."}
	descNetReadErrors = &metrics.Desc{Name: "tun_read_errors_total",
		Help: "Failed reads from the TUN device."}
	descDropped = &metrics.Desc{Name: "packets_dropped_total", Labels: []string{"direction", "reason"},
		Help: "IP packets (and PPP frames) dropped by the server's glue, by direction (to_peer: from the kernel to a client, from_peer: the other way) and reason."}
	descDHCP = &metrics.Desc{Name: "dhcpinform_answered_total",
		Help: "DHCPINFORMs from clients answered with the split routes."}

	descSessionsActive = &metrics.Desc{Name: "sessions_active", Kind: metrics.Gauge, Help: "Sessions now (calls, up or coming up)."}
	descConnsActive    = &metrics.Desc{Name: "control_connections_active", Kind: metrics.Gauge, Help: "Control connections now."}
	descTxQueued       = &metrics.Desc{Name: "tx_queued_packets", Kind: metrics.Gauge,
		Help: "Packets from the kernel waiting for clients' GRE windows, over all sessions."}
)

func def(d *metrics.Desc, key string, labels ...string) metrics.Def {
	return metrics.Def{Desc: d, LabelValues: labels, Key: key}
}

// counterDefs declares every server counter once; the keys are those of the admin
// reply since the server was first written.
var counterDefs = [numCounters]metrics.Def{
	cConnsAccepted:     def(descConns, "conns_accepted", "accepted"),
	cConnLimitGlobal:   def(descConns, "conn_limit_global", "limit_global"),
	cConnLimitSource:   def(descConns, "conn_limit_source", "limit_source"),
	cConnEvictedUnauth: def(descConns, "conn_evicted_unauthenticated", "evicted_unauthenticated"),

	cCtrlReadError:       def(descCtrlErrors, "ctrl_read_error", "read_error"),
	cCtrlBadMessage:      def(descCtrlErrors, "ctrl_bad_message", "bad_message"),
	cCtrlNotStarted:      def(descCtrlErrors, "ctrl_not_started", "not_started"),
	cCtrlDuplicateSCCRQ:  def(descCtrlErrors, "ctrl_duplicate_sccrq", "duplicate_sccrq"),
	cCtrlBadVersion:      def(descCtrlErrors, "ctrl_bad_version", "bad_version"),
	cCtrlUnexpectedICRP:  def(descCtrlErrors, "ctrl_unexpected_icrp", "unexpected_icrp"),
	cCtrlWrongDirection:  def(descCtrlErrors, "ctrl_wrong_direction", "wrong_direction"),
	cCtrlCCRQUnknownCall: def(descCtrlErrors, "ctrl_ccrq_unknown_call", "ccrq_unknown_call"),
	cCtrlUnexpectedCDN:   def(descCtrlErrors, "ctrl_unexpected_cdn", "unexpected_cdn"),
	cCtrlUnexpected:      def(descCtrlErrors, "ctrl_unexpected", "unexpected"),
	cCtrlEchoTimeout:     def(descCtrlErrors, "ctrl_echo_timeout", "echo_timeout"),
	cCtrlSetLinkInfo:     def(descCtrlNotices, "ctrl_set_link_info", "set_link_info"),
	cCtrlWANErrorNotify:  def(descCtrlNotices, "ctrl_wan_error_notify", "wan_error_notify"),
	cCtrlEchoSent:        def(descCtrlEcho, "ctrl_echo_sent"),

	cCallsStarted:          def(descCalls, "calls_started", "started"),
	cCallLimitConn:         def(descCalls, "call_limit_conn", "limit_conn"),
	cCallDuplicatePeerID:   def(descCalls, "call_duplicate_peer_id", "duplicate_peer_id"),
	cCallLimitGlobal:       def(descCalls, "call_limit_global", "limit_global"),
	cCallIDExhausted:       def(descCalls, "call_id_exhausted", "id_exhausted"),
	cCallLimitUnauthConn:   def(descCalls, "call_limit_unauthenticated_conn", "limit_unauthenticated_conn"),
	cCallLimitUnauthSource: def(descCalls, "call_limit_unauthenticated_source", "limit_unauthenticated_source"),

	// The first-message timeout was a control error (its key is kept); it is the first
	// of the three pre-authentication stages now.
	cTimeoutFirstMessage: def(descTimedOut, "ctrl_first_message_timeout", "first_message"),
	cTimeoutCallRequest:  def(descTimedOut, "timeout_call_request", "call_request"),
	cTimeoutAuth:         def(descTimedOut, "timeout_auth", "auth"),

	cSessionsUp:     def(descSessionSetups, "sessions_up"),
	cSessionsEnded:  def(descSessions, "sessions_ended"),
	cPoolExhausted:  def(descSessionErrors, "pool_exhausted", "pool_exhausted"),
	cSessionLimit:   def(descSessionErrors, "session_limit", "session_limit"),
	cRouteAddFailed: def(descSessionErrors, "route_add_failed", "route_add_failed"),

	cNetReadError:       def(descNetReadErrors, "net_read_error"),
	cNetNotIPv4:         def(descDropped, "net_not_ipv4", "to_peer", "not_ipv4"),
	cNetNoSession:       def(descDropped, "net_no_session", "to_peer", "no_session"),
	cNetPeerWindowFull:  def(descDropped, "net_peer_window_full", "to_peer", "peer_window_full"),
	cNetTxQueueFull:     def(descDropped, "net_tx_queue_full", "to_peer", "tx_queue_full"),
	cSendIPFailed:       def(descDropped, "send_ip_failed", "to_peer", "send_ip_failed"),
	cGRESendFailed:      def(descDropped, "gre_send_failed", "to_peer", "gre_send_failed"),
	cPeerNotIPv4:        def(descDropped, "peer_not_ipv4", "from_peer", "not_ipv4"),
	cPeerSpoofedSource:  def(descDropped, "peer_spoofed_source", "from_peer", "spoofed_source"),
	cNetWriteFailed:     def(descDropped, "net_write_failed", "from_peer", "write_failed"),
	cDHCPInformAnswered: def(descDHCP, "dhcpinform_answered"),
	cLogSuppressed:      def(descLogSuppressed, "log_suppressed"),
}

func (c counter) key() string { return counterDefs[c].Key }

func (s *Server) count(c counter) { s.counters.Inc(int(c)) }

// collectGauges emits the server's gauges (metrics.SourceFunc).
func (s *Server) collectGauges(emit func(metrics.Sample)) {
	s.mu.Lock()
	sessions, conns := len(s.sessions), len(s.conns)
	s.mu.Unlock()
	emit(metrics.Sample{Desc: descSessionsActive, Key: "sessions_active", Value: uint64(sessions)})
	emit(metrics.Sample{Desc: descConnsActive, Key: "control_connections_active", Value: uint64(conns)})
	emit(metrics.Sample{Desc: descTxQueued, Key: "tx_queued_packets", Value: uint64(max(s.txQueued.Load(), 0))})
}

// Metrics returns a snapshot of every counter and gauge of the server: its own, the
// GRE mux's (keys "gre_...") and the PPP reasons summed over all its sessions
// (keys "ppp_...").
func (s *Server) Metrics() metrics.Snapshot {
	return metrics.Collect(s.counters, metrics.SourceFunc(s.collectGauges), s.mux, s.pppTotals, &s.obsTotals)
}

// Counters returns Metrics as the flat map of the admin reply: every key, zero or not.
func (s *Server) Counters() map[string]uint64 { return s.Metrics().Map() }

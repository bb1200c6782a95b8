package pptp

import (
	"testing"
)

// adminKeys are the keys of `pptpgw sessions --json` before the counters moved onto
// internal/metrics; each keeps its meaning.
var adminKeys = []string{
	"call_duplicate_peer_id", "call_id_exhausted", "call_limit_conn", "call_limit_global", "calls_started",
	"conn_limit_global", "conn_limit_source", "conns_accepted", "ctrl_bad_message", "ctrl_bad_version",
	"ctrl_ccrq_unknown_call", "ctrl_duplicate_sccrq", "ctrl_echo_sent", "ctrl_echo_timeout",
	"ctrl_first_message_timeout", "ctrl_not_started", "ctrl_read_error", "ctrl_set_link_info", "ctrl_unexpected",
	"ctrl_unexpected_cdn", "ctrl_unexpected_icrp", "ctrl_wan_error_notify", "ctrl_wrong_direction",
	"dhcpinform_answered", "gre_closed", "gre_duplicate", "gre_late", "gre_out_of_window", "gre_parse",
	"gre_reorder_full", "gre_resync", "gre_rx_packets", "gre_rx_reads", "gre_send_failed", "gre_send_window_full",
	"gre_unknown_call", "net_no_session", "net_not_ipv4", "net_peer_window_full", "net_read_error",
	"net_tx_queue_full", "net_write_failed", "peer_not_ipv4", "peer_spoofed_source", "pool_exhausted",
	"route_add_failed", "send_ip_failed", "sessions_ended", "sessions_up",
}

// TestMetrics: the server's snapshot is valid for exporters, has every admin key
// of old (and the PPP reasons), and counts a session's way: up, then ended, GRE
// packets received, and a refused password as a PPP reason.
func TestMetrics(t *testing.T) {
	r := newRig(t, nil)
	snap := r.srv.Metrics()
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(adminKeys, "ppp_auth_failed", "sessions_active") {
		if v, ok := snap.Get(k); !ok || v != 0 {
			t.Errorf("%s = %d, %v before any session; want 0, true", k, v, ok)
		}
	}
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	ping(t, c, localIP, 64)
	get := func(k string) uint64 {
		t.Helper()
		v, ok := r.srv.Metrics().Get(k)
		if !ok {
			t.Fatalf("no %s in the snapshot", k)
		}
		return v
	}
	if get("sessions_up") != 1 || get("calls_started") != 1 || get("conns_accepted") != 1 ||
		get("sessions_active") != 1 || get("gre_rx_packets") == 0 {
		t.Fatalf("after one session: %v", r.srv.Counters())
	}
	c.Close()
	waitFor(t, func() bool { return r.srv.Counters()["sessions_ended"] == 1 })
	if _, err := r.dial(t, "alice", "wrong", nil); err == nil {
		t.Fatal("wrong password accepted")
	}
	waitFor(t, func() bool { return r.srv.Counters()["ppp_auth_failed"] == 1 })
	if err := r.srv.Metrics().Validate(); err != nil {
		t.Fatal(err)
	}
	if len(r.srv.Counters()) != len(r.srv.Metrics()) {
		t.Fatal("flat keys not unique")
	}
}

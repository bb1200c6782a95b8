package main

import (
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/nat"
	"pptpgw/nat/nfq"
	"pptpgw/rules"
)

// Every engine setting of the configuration reaches the engine the daemon
// runs: drop one line of newEngine's plumbing and this fails.
func TestNewEngineGetsConfig(t *testing.T) {
	cfg, err := rules.Parse([]byte(`
wan: wan0
lan: [lan0]
strict: true
max_calls: 3
limits: {conns_per_source: 4, calls_per_conn: 5, calls_per_source: 6}
timeouts:
  gre_unreplied: 11s
  gre_replied: 22m
  control_idle: 33m
  call_id_quarantine: 44s
  hold: 55ms
forwards:
  - {port: 1724, to: 10.0.1.5}
`))
	if err != nil {
		t.Fatal(err)
	}
	res := &rules.Resolved{PublicIP: netip.MustParseAddr("203.0.113.1"), WANIndex: 2, LANIndex: []uint32{3}}
	e := newEngine(cfg, res, conntrack.NewFakeClock(time.Time{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := nat.Settings{
		Strict: true,
		Timeouts: conntrack.Timeouts{GREUnreplied: 11 * time.Second, GREReplied: 22 * time.Minute,
			ControlIdle: 33 * time.Minute, CallIDQuarantine: 44 * time.Second, Hold: 55 * time.Millisecond},
		Limits:   conntrack.Limits{ConnsPerSource: 4, CallsPerConn: 5, CallsPerSource: 6},
		MaxCalls: 3,
		Forwards: []nat.Forward{{Port: 1724, InsideIP: netip.MustParseAddr("10.0.1.5")}},
	}
	if got := e.Settings(); !reflect.DeepEqual(got, want) {
		t.Errorf("engine runs with\n%+v\nwant (from the config)\n%+v", got, want)
	}
	if got := e.PublicIP(); got != res.PublicIP {
		t.Errorf("engine public address %v, want %v", got, res.PublicIP)
	}
	if got := e.WANIndex(); got != res.WANIndex {
		t.Errorf("engine WAN index %d, want %d", got, res.WANIndex)
	}

	// The defaults reach it too (a config with none of these keys).
	def, err := rules.Parse([]byte("wan: wan0\nlan: [lan0]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := newEngine(def, res, nil, slog.New(slog.NewTextHandler(io.Discard, nil))).Settings()
	if d.Strict || d.MaxCalls != conntrack.DefaultMaxCalls || d.Timeouts != (conntrack.Timeouts{}).WithDefaults() ||
		d.Limits != (conntrack.Limits{}).WithDefaults() {
		t.Errorf("defaults: engine runs with %+v", d)
	}
}

// The queue length the configuration defaults to is nfq's own default
// (declared twice only because rules cannot import nfq).
func TestDefaultQueueLen(t *testing.T) {
	if rules.DefaultQueueLen != nfq.DefaultMaxQueueLen || rules.Default().QueueLen != nfq.DefaultMaxQueueLen {
		t.Errorf("rules.DefaultQueueLen = %d, Default().QueueLen = %d, nfq.DefaultMaxQueueLen = %d: want equal",
			rules.DefaultQueueLen, rules.Default().QueueLen, nfq.DefaultMaxQueueLen)
	}
}

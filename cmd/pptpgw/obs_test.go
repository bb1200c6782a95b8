package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"pptpgw/internal/pkt/pkttest"
	"pptpgw/internal/promexport"
	"pptpgw/nat"
	"pptpgw/nat/nfq"
	"pptpgw/rules"
)

func testEngine() *nat.Engine {
	return nat.NewEngine(nat.EngineConfig{PublicIP: netip.AddrFrom4(pkttest.PublicIP), WANIf: 2, LANIfs: []uint32{3},
		MaxCalls: 100, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
}

// The gateway's exposition carries every family the operators' dashboards
// need (issue 8; nfqueue_* need a bound queue: the netns test checks them),
// and promtool finds nothing wrong with it.
func TestGatewayExposition(t *testing.T) {
	e := testEngine()
	rec := httptest.NewRecorder()
	newExporter("pptpgw_", e).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	if rec.Code != 200 {
		t.Fatalf("scrape %d: %s", rec.Code, text)
	}
	for _, f := range []string{"calls_active gauge", "control_connections_active gauge", "call_setups_total counter",
		"call_teardowns_total counter", "packets_total counter", "bytes_total counter", "drops_total counter",
		"callid_pool_in_use gauge", "build_info gauge", "events_lost_total counter"} {
		if !strings.Contains(text, "# TYPE pptpgw_"+f+"\n") {
			t.Errorf("no family pptpgw_%s", f)
		}
	}
	for _, s := range []string{`pptpgw_packets_total{direction="out",path="gre"} 0`, `pptpgw_packets_total{direction="in",path="control"} 0`,
		`pptpgw_call_teardowns_total{reason="cleared"} 0`, `pptpgw_drops_total{reason="gre_no_call"} 0`} {
		if !strings.Contains(text, s+"\n") {
			t.Errorf("no sample %s", s)
		}
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make test installs it)")
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// serveEngineAdmin serves the gateway's admin commands for e on a socket in
// a temp dir.
func serveEngineAdmin(t *testing.T, e *nat.Engine) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := listenAdminGroup(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket without a group: %v, %v; want mode 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go serveAdmin(ctx, l, func(cmd string) (any, error) {
		if cmd == "events" {
			return eventsStream(e), nil
		}
		return nat.CallsReply{Calls: e.Calls(), Counters: e.Counters()}, nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return sock
}

func waitListeners(t *testing.T, e *nat.Engine, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.Counters()["event_listeners"] != n {
		if time.Now().After(deadline) {
			t.Fatalf("event_listeners = %d, want %d", e.Counters()["event_listeners"], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syns sends n SYNs of new control connections from the LAN through e:
// each is a control-new event (the table of 100 early-drops older ones).
func syns(t *testing.T, e *nat.Engine, n int) {
	for i := range n {
		b := pkttest.TCP(t, pkttest.LANA, pkttest.Server, uint16(1024+i%60000), 1723, nil, pkttest.TCPOpt{SYN: true})
		e.Process(&nfq.Packet{Payload: b, InDev: 3, Hook: nfq.HookPrerouting})
	}
}

// `pptpgw events` over the admin socket: a listener gets the events as
// JSON lines and the text format renders them; when the listener stops
// reading, the engine goes on, drops what does not fit, and the stream
// says "lost N": every event published is either delivered or counted as
// lost, exactly. The listener's departure is noticed.
func TestEventsStream(t *testing.T) {
	e := testEngine()
	sock := serveEngineAdmin(t, e)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan nat.EventJSON, 16)
	go streamEvents(ctx, sock, func(ev nat.EventJSON) error { got <- ev; return nil })
	waitListeners(t, e, 1)
	syns(t, e, 1)
	select {
	case ev := <-got:
		if ev.Event != "control-new" || ev.InsideIP != netip.AddrFrom4(pkttest.LANA) || ev.PeerPort != 1723 {
			t.Errorf("event %+v", ev)
		}
		line := formatEvent(ev)
		if !strings.Contains(line, "[CONTROL-NEW] reason=tracked inside=") || !strings.Contains(line, " peer=") {
			t.Errorf("text line %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	waitListeners(t, e, 0)

	// A listener that does not read while 20000 events happen.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "events\n")
	waitListeners(t, e, 1)
	const total = 20000
	start := time.Now()
	syns(t, e, total)
	t.Logf("%d events published in %v with a stalled listener", total, time.Since(start))
	var delivered, lost uint64
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	sc := bufio.NewScanner(c)
	for delivered+lost < total && sc.Scan() {
		var ev nat.EventJSON
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if ev.Event == nat.EventLost {
			lost += ev.Lost
		} else {
			delivered++
		}
	}
	if delivered+lost != total || lost == 0 {
		t.Errorf("delivered %d + lost %d, want %d with some lost", delivered, lost, total)
	}
	if m := e.Counters(); m["events_lost"] != lost {
		t.Errorf("events_lost = %d, the stream said %d", m["events_lost"], lost)
	}
	t.Logf("delivered %d, lost %d", delivered, lost)
	c.Close()
	waitListeners(t, e, 0)
}

// With admin_group, the socket belongs to that group, mode 0660; an
// unknown group is an error at start.
func TestAdminSocketGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the socket to another group")
	}
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := listenAdminGroup(sock, "0")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v, %v; want 0660", fi.Mode(), err)
	}
	// A reload without admin_group takes the group's access away.
	if err := setAdminGroup(sock, ""); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("after setAdminGroup(\"\"): mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := setAdminGroup(sock, "no-such-group-pptpgw"); err == nil {
		t.Error("unknown group accepted by setAdminGroup")
	}
	l.Close()
	if _, err := listenAdminGroup(filepath.Join(t.TempDir(), "b.sock"), "no-such-group-pptpgw"); err == nil ||
		!strings.Contains(err.Error(), "no such group") {
		t.Errorf("unknown group: %v", err)
	}
}

// BenchmarkGatewayScrape: one /metrics scrape of an engine with 1000
// tracked connections (the Go runtime and process collectors included).
func BenchmarkGatewayScrape(b *testing.B) {
	e := nat.NewEngine(nat.EngineConfig{PublicIP: netip.AddrFrom4(pkttest.PublicIP), WANIf: 2, LANIfs: []uint32{3},
		MaxCalls: 10000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	for i := range 1000 {
		p := pkttest.TCP(b, pkttest.LANA, pkttest.Server, uint16(1024+i), 1723, nil, pkttest.TCPOpt{SYN: true})
		e.Process(&nfq.Packet{Payload: p, InDev: 3, Hook: nfq.HookPrerouting})
	}
	h := newExporter("pptpgw_", e).Handler()
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// The text format of the events that have no call, and of a lost line.
func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 12, 1, 22, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		ev   nat.EventJSON
		want string
	}{
		{nat.EventJSON{Time: at, Event: "refused", What: "control", Reason: "per_source",
			InsideIP: netip.MustParseAddr("10.0.0.2"), InsidePort: 40001, PublicIP: netip.MustParseAddr("203.0.113.1"),
			PeerIP: netip.MustParseAddr("198.51.100.7"), PeerPort: 1723},
			"22:00:00.000 [REFUSED] control reason=per_source inside=10.0.0.2:40001 outside=203.0.113.1 peer=198.51.100.7:1723"},
		{nat.EventJSON{Time: at, Event: "refused", What: "call", Reason: "per_conn", InsideCallID: 9,
			InsideIP: netip.MustParseAddr("10.0.0.2"), InsidePort: 40001, PublicIP: netip.MustParseAddr("203.0.113.1"),
			PeerIP: netip.MustParseAddr("198.51.100.7"), PeerPort: 1723},
			"22:00:00.000 [REFUSED] call reason=per_conn inside=10.0.0.2:40001 call=9 outside=203.0.113.1 peer=198.51.100.7:1723"},
		{nat.EventJSON{Time: at, Event: nat.EventLost, Lost: 12}, "22:00:00.000 lost 12 events (this listener read too slowly)"},
	} {
		if got := formatEvent(tc.ev); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// Bad operations settings stop both daemons before they touch anything,
// naming the key.
func TestObsFlagsRejected(t *testing.T) {
	out, code := pptpgw(t, nil, "run", "--wan", "eth0", "--lan", "eth1", "--metrics", "127.0.0.1")
	if code != 2 || !strings.Contains(out, "metrics: want HOST:PORT") {
		t.Errorf("run --metrics 127.0.0.1: exit %d\n%s", code, out)
	}
	out, code = pptpgw(t, nil, "serve", "--pool", "10.8.0.10-10.8.0.20", "--metrics", ":x")
	if code != 1 || !strings.Contains(out, `metrics: port "x"`) {
		t.Errorf("serve --metrics :x: exit %d\n%s", code, out)
	}
	out, code = pptpgw(t, nil, "events", "--admin-socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(out, "no pptpgw run answers") {
		t.Errorf("events without daemon: exit %d\n%s", code, out)
	}
	if out, code = pptpgw(t, nil, "events", "--help"); code != 0 || !strings.Contains(out, "Usage: pptpgw events") {
		t.Errorf("events --help: exit %d\n%s", code, out)
	}
}

// The appliers a reload calls: /metrics moves to the new address, the admin
// socket's group follows admin_group.
func TestObsAppliers(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := testEngine()
	m := &gatewayMetrics{Exp: newExporter("pptpgw_", e)}
	m.Endpoint = promexport.NewEndpoint(m.Exp, log)
	defer m.Endpoint.Close()
	cfg := rules.Default()
	if err := m.Apply(cfg); err != nil || m.Endpoint.Addr() != nil {
		t.Fatalf("metrics unset: %v, serving on %v", err, m.Endpoint.Addr())
	}
	cfg.Metrics = "127.0.0.1:0"
	if err := m.Apply(cfg); err != nil || m.Endpoint.Addr() == nil {
		t.Fatalf("metrics set: %v, serving on %v", err, m.Endpoint.Addr())
	}
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := listenAdminGroup(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg.AdminGroup = strconv.Itoa(os.Getegid())
	if err := (adminGroup{sock}).Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v after admin_group, want 0660", fi.Mode().Perm())
	}
}

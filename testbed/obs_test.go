package testbed_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Issue 8 (operations): /metrics scraped in a live gateway, checked with
// promtool and compared with `pptpgw calls --json`, and `pptpgw events`
// showing a call's life, with two listeners at once.

// scrapeMetrics GETs http://addr/metrics inside n.
func scrapeMetrics(ctx context.Context, n *NS, addr string) (string, error) {
	cl := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return n.DialContext(ctx, network, a)
		},
	}, Timeout: 5 * time.Second}
	defer cl.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b), err
}

// promValues parses the text format's samples: "name{labels}" (as written:
// client_golang sorts label names) -> value.
func promValues(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// promtoolCheck runs `promtool check metrics` on text; it must report no
// problem (lint included).
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// eventListener runs `pptpgw events [--json]` in the gateway's namespace and
// collects its lines.
type eventListener struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func listenEvents(t *testing.T, ctx context.Context, gw *Gateway, asJSON bool) *eventListener {
	t.Helper()
	args := []string{"events", "--admin-socket", gw.Socket}
	if asJSON {
		args = append(args, "--json")
	}
	l := &eventListener{cmd: gw.NS.Command(ctx, gw.Bin, args...), done: make(chan struct{})}
	out, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *eventListener) stop() {
	if l.cmd.Process != nil {
		l.cmd.Process.Kill()
	}
	l.cmd.Wait()
}

func (l *eventListener) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// waitLines waits until l has a line for which ok holds.
func (l *eventListener) waitLine(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range l.get() {
			if ok(s) {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event; lines so far:\n%s", what, strings.Join(l.get(), "\n"))
	return ""
}

func TestGatewayMetricsAndEvents(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	const addr = "127.0.0.1:9247"
	gw := startGatewayConfig(t, ctx, topo, bin, "metrics: "+addr+"\n")
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	js := listenEvents(t, ctx, gw, true)
	txt := listenEvents(t, ctx, gw, false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if testbedtest.Counter(t, rep.Counters, "event_listeners") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event_listeners never reached 2: %v", rep.Counters["event_listeners"])
		}
		time.Sleep(20 * time.Millisecond)
	}

	const frames = 20
	var during nat.CallsReply
	var scrape1, scrape2 string
	var holdErr error
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: frames, Timeout: 20 * time.Second, Hold: func() {
		// No GRE flows while the PNS holds: a scrape, the admin reply and
		// a second scrape must agree.
		if scrape1, holdErr = scrapeMetrics(ctx, gw.NS, addr); holdErr != nil {
			return
		}
		if during, holdErr = gw.Calls(ctx); holdErr != nil {
			return
		}
		scrape2, holdErr = scrapeMetrics(ctx, gw.NS, addr)
	}})
	if holdErr != nil {
		t.Fatal(holdErr)
	}
	if !res.OK() {
		t.Fatalf("PNS through the gateway failed: %s\nlog:\n%s", res, gw.Log())
	}
	promtoolCheck(t, scrape1)
	v1, v2 := promValues(t, scrape1), promValues(t, scrape2)
	if len(during.Calls) != 1 {
		t.Fatalf("calls --json during the call: %d calls, want 1", len(during.Calls))
	}
	call := during.Calls[0]
	c := during.Counters
	// The call's own values cannot move while the PNS holds: equal in
	// both scrapes and in calls --json. Control-plane counters may see a
	// late TCP ACK between the three reads: calls --json's value lies
	// between the two scrapes'.
	for _, w := range []struct {
		series string
		want   uint64
		exact  bool
	}{
		{"pptpgw_calls_active", uint64(len(during.Calls)), true},
		{"pptpgw_control_connections_active", testbedtest.Counter(t, c, "conns_active"), true},
		{"pptpgw_call_setups_total", testbedtest.Counter(t, c, "calls_established"), true},
		{`pptpgw_packets_total{direction="out",path="gre"}`, call.PktsOut, true},
		{`pptpgw_packets_total{direction="in",path="gre"}`, call.PktsIn, true},
		{`pptpgw_bytes_total{direction="out"}`, call.BytesOut, true},
		{`pptpgw_bytes_total{direction="in"}`, call.BytesIn, true},
		{"pptpgw_callid_pool_in_use", 1, true},
		{"pptpgw_event_listeners", 2, true},
		{`pptpgw_packets_total{direction="out",path="control"}`, testbedtest.Counter(t, c, "ctl_segments_out"), false},
		{`pptpgw_drops_total{reason="gre_no_call"}`, testbedtest.Counter(t, c, "drop_gre_no_call"), false},
		{"pptpgw_nfqueue_packets_total", testbedtest.Counter(t, c, "nfqueue_packets"), false},
	} {
		got1, ok1 := v1[w.series]
		got2, ok2 := v2[w.series]
		want := float64(w.want)
		bad := !ok1 || !ok2 || got1 > want || want > got2
		if w.exact {
			bad = bad || got1 != want || got2 != want
		}
		if bad {
			t.Errorf("%s = %v, %v (present %v, %v); calls --json says %d", w.series, got1, got2, ok1, ok2, w.want)
		}
	}
	// With the kernel fast path established calls' GRE never reaches the
	// queue (and is counted from the maps' counters above).
	if v1["pptpgw_gre_kernel_path"] == 0 && v1["pptpgw_nfqueue_packets_total"] < 2*frames {
		t.Errorf("pptpgw_nfqueue_packets_total = %v, want at least the %d GRE frames, each queued once", v1["pptpgw_nfqueue_packets_total"], 2*frames)
	}
	if call.PktsOut < frames || call.PktsIn < frames {
		t.Errorf("call counters %d/%d, want at least %d frames each way", call.PktsOut, call.PktsIn, frames)
	}
	// The control path, nfqueue, build_info and a teardown series exist
	// (promtool already checked their format).
	for _, s := range []string{`pptpgw_packets_total{direction="in",path="control"}`, `pptpgw_call_teardowns_total{reason="cleared"}`,
		`pptpgw_nfqueue_verdicts_total`, `pptpgw_events_lost_total`} {
		if _, ok := v1[s]; !ok {
			t.Errorf("scrape lacks %s", s)
		}
	}
	if !strings.Contains(scrape1, "pptpgw_build_info{") {
		t.Error("scrape lacks pptpgw_build_info")
	}

	// The call's life in the JSON stream: the connection tracked, the call
	// set up with the IDs calls --json showed, and cleared with its counters.
	parse := func(s string) nat.EventJSON {
		var ev nat.EventJSON
		if err := json.Unmarshal([]byte(s), &ev); err != nil {
			t.Fatalf("events --json line %q: %v", s, err)
		}
		return ev
	}
	is := func(kind string) func(string) bool {
		return func(s string) bool { return parse(s).Event == kind }
	}
	ev := parse(js.waitLine(t, "control-new", is("control-new")))
	if ev.InsideIP != call.InsideIP || ev.PeerIP != call.PeerIP || ev.PeerPort != 1723 {
		t.Errorf("control-new %+v, want inside %v peer %v:1723", ev, call.InsideIP, call.PeerIP)
	}
	ev = parse(js.waitLine(t, "call-setup", is("call-setup")))
	if ev.InsideCallID != call.InsideCallID || ev.OutsideCallID != call.OutsideCallID || ev.PeerCallID != call.PeerCallID {
		t.Errorf("call-setup %+v; calls --json showed %+v", ev, call)
	}
	ev = parse(js.waitLine(t, "call-cleared", is("call-cleared")))
	if ev.OutsideCallID != call.OutsideCallID || ev.Reason != "cleared" || ev.PktsOut < call.PktsOut || ev.PktsIn < call.PktsIn {
		t.Errorf("call-cleared %+v; calls --json showed %+v", ev, call)
	}
	for _, l := range js.get() {
		if parse(l).Event == nat.EventLost {
			t.Errorf("a listener lost events: %s", l)
		}
	}
	// The text listener saw the same life, one line per event.
	line := txt.waitLine(t, "[CALL-SETUP]", func(s string) bool { return strings.Contains(s, "[CALL-SETUP]") })
	want := fmt.Sprintf("call=%d outside=%s call=%d peer=%s:1723 call=%d", call.InsideCallID, call.PublicIP,
		call.OutsideCallID, call.PeerIP, call.PeerCallID)
	if !strings.Contains(line, want) {
		t.Errorf("text line %q lacks %q", line, want)
	}
	txt.waitLine(t, "[CALL-CLEARED]", func(s string) bool {
		return strings.Contains(s, "[CALL-CLEARED] reason=cleared") && strings.Contains(s, " pkts=")
	})
	t.Logf("events (text):\n%s", strings.Join(txt.get(), "\n"))
}

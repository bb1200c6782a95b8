package promexport

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"pptpgw/internal/metrics"
)

var (
	descPkts  = &metrics.Desc{Name: "packets_total", Labels: []string{"path", "direction"}, Help: "Packets."}
	descCalls = &metrics.Desc{Name: "calls_active", Kind: metrics.Gauge, Help: "Calls now."}
)

func scrape(t *testing.T, e *Exporter) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Code, rec.Body.String()
}

// A snapshot's families come out with the prefix, their kind, help and
// labels, the values read at scrape time, and build_info; promtool finds
// nothing to complain about.
func TestExposition(t *testing.T) {
	c := metrics.NewCounters([]metrics.Def{
		{Desc: descPkts, LabelValues: []string{"gre", "out"}, Key: "gre_out"},
		{Desc: descPkts, LabelValues: []string{"gre", "in"}, Key: "gre_in"},
	})
	var active uint64 = 3
	e := New("pptpgw_", "v1.2", "go1.26", c, metrics.SourceFunc(func(emit func(metrics.Sample)) {
		emit(metrics.Sample{Desc: descCalls, Key: "calls_active", Value: active})
	}))
	c.Add(0, 7)
	code, text := scrape(t, e)
	if code != 200 {
		t.Fatalf("scrape %d: %s", code, text)
	}
	for _, want := range []string{
		"# HELP pptpgw_packets_total Packets.\n# TYPE pptpgw_packets_total counter\n",
		`pptpgw_packets_total{direction="out",path="gre"} 7` + "\n",
		`pptpgw_packets_total{direction="in",path="gre"} 0` + "\n",
		"# TYPE pptpgw_calls_active gauge\npptpgw_calls_active 3\n",
		`pptpgw_build_info{goversion="go1.26",version="v1.2"} 1` + "\n",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, text)
		}
	}
	// Read at scrape time, not copied at registration.
	c.Inc(1)
	active = 0
	_, text = scrape(t, e)
	if !strings.Contains(text, `pptpgw_packets_total{direction="in",path="gre"} 1`) || !strings.Contains(text, "pptpgw_calls_active 0\n") {
		t.Errorf("second scrape does not show the new values:\n%s", text)
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

// A source added later (another feature's, e.g. reloads_total) appears in
// the next scrape; a broken one (label values not matching its labels) is
// an HTTP 500, never a silently wrong exposition.
func TestAddAndBrokenSource(t *testing.T) {
	e := New("pptpgw_", "v", "go")
	d := &metrics.Desc{Name: "reloads_total", Labels: []string{"result"}, Help: "Reloads."}
	e.Sources.Add(metrics.SourceFunc(func(emit func(metrics.Sample)) {
		emit(metrics.Sample{Desc: d, LabelValues: []string{"ok"}, Key: "reloads_ok", Value: 2})
	}))
	if _, text := scrape(t, e); !strings.Contains(text, `pptpgw_reloads_total{result="ok"} 2`) {
		t.Errorf("added source missing:\n%s", text)
	}
	e.Sources.Add(metrics.SourceFunc(func(emit func(metrics.Sample)) {
		emit(metrics.Sample{Desc: d, Key: "reloads_bad", Value: 1}) // no label value
	}))
	if code, text := scrape(t, e); code != http.StatusInternalServerError {
		t.Errorf("broken source: HTTP %d, want 500:\n%s", code, text)
	}
}

// Serve binds at once (a bad or taken address is an error at start) and
// answers on /metrics until its context ends.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := New("pptpgw_", "v", "go")
	a, err := Serve(ctx, "127.0.0.1:0", e, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(ctx, a.String(), e, log); err == nil {
		t.Error("second Serve on a taken address succeeded")
	}
	resp, err := http.Get("http://" + a.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "pptpgw_build_info") {
		t.Errorf("GET /metrics: %s\n%s", resp.Status, b)
	}
	cancel()
}

// Endpoint follows the reload contract: the same address keeps its
// listener, a new one is bound before the old closes, a taken one is
// refused with the old still serving, "" stops.
func TestEndpointApply(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ep := NewEndpoint(New("pptpgw_", "v", "go"), log)
	defer ep.Close()
	get := func(a string) error {
		resp, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := ep.Apply("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	first := ep.Addr()
	if err := ep.Apply("127.0.0.1:0"); err != nil || ep.Addr() != first {
		t.Fatalf("same address: %v, listener %v -> %v", err, first, ep.Addr())
	}
	if err := get(first.String()); err != nil {
		t.Fatal(err)
	}
	// A taken address: refused, the old listener still serves.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := ep.Apply(taken.Addr().String()); err == nil {
		t.Fatal("taken address accepted")
	}
	if err := get(first.String()); err != nil {
		t.Fatalf("old listener gone after a refused change: %v", err)
	}
	// A free address: the new one serves, the old one is closed.
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	next := free.Addr().String()
	free.Close()
	if err := ep.Apply(next); err != nil {
		t.Fatal(err)
	}
	if err := get(next); err != nil {
		t.Fatal(err)
	}
	if err := get(first.String()); err == nil {
		t.Error("old listener still serving after the change")
	}
	if err := ep.Apply(""); err != nil || ep.Addr() != nil {
		t.Fatalf("off: %v %v", err, ep.Addr())
	}
	if err := get(next); err == nil {
		t.Error("still serving after Apply(\"\")")
	}
}

package main

import (
	"context"
	"encoding/xml"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/nat"
	"pptpgw/rules"
)

// The chart is well-formed SVG with one pair of bars per case that has a
// ratio, each bar as long as its figure relative to the larger one.
func TestBenchSVG(t *testing.T) {
	rows := []benchRow{
		{Case: "tunnel", KernelValue: 800, PPTPGWValue: 400, Unit: "Mbit/s", Ratio: 0.5},
		{Case: "split <calls>", Kernel: "0/4 calls ok", PPTPGW: "4/4 calls ok"}, // no figure: not drawn
		{Case: "bulk", KernelValue: 10, PPTPGWValue: 20, Unit: "Gbit/s", Ratio: 2},
	}
	b := benchSVG(rows)
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	var widths []string
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed: %v\n%s", err, b)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			for _, a := range se.Attr {
				if a.Name.Local == "width" && a.Value != "100%" && a.Value != "12" {
					widths = append(widths, a.Value)
				}
			}
		}
	}
	if got := strings.Join(widths, ","); got != "300,150,150,300" {
		t.Errorf("bar widths %s, want 300,150,150,300 (Linux, pptpgw per case)", got)
	}
	if strings.Contains(string(b), "split") {
		t.Error("a case without a figure was drawn")
	}
}

func TestWithRatio(t *testing.T) {
	k := &benchSide{vals: map[string]float64{"tunnel": 800}}
	g := &benchSide{gw: true, vals: map[string]float64{"tunnel": 600}}
	r := withRatio(benchRow{Case: "x"}, "tunnel", k, g)
	if r.Ratio != 0.75 || r.Unit != "Mbit/s" || r.KernelValue != 800 || r.PPTPGWValue != 600 {
		t.Errorf("%+v", r)
	}
	if r := withRatio(benchRow{Case: "x"}, "split", k, g); r.Ratio != 0 {
		t.Errorf("a case without figures got a ratio: %+v", r)
	}
}

// The fast path's reload contract: the same configuration applies again
// (idempotent), auto keeps the running path, a different path or queue
// count is refused with a reason, Close stops it.
func TestFastPathApply(t *testing.T) {
	cfg := rules.Default()
	cfg.GREPath, cfg.Queues = rules.GREPathUserspace, 2
	e := nat.NewEngine(nat.EngineConfig{}, nil)
	f := newFastPath(context.Background(), e, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := 0; i < 2; i++ {
		if err := f.Apply(cfg); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	auto := *cfg
	auto.GREPath = rules.GREPathAuto
	if err := f.Apply(&auto); err != nil {
		t.Errorf("auto: %v", err)
	}
	other := *cfg
	other.GREPath = rules.GREPathKernel
	if err := f.Apply(&other); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("switching the GRE path: %v", err)
	}
	more := *cfg
	more.Queues = 3
	if err := f.Apply(&more); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("changing queues: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// countingMaps is a KernelMaps that counts the flusher's reads.
type countingMaps struct{ reads atomic.Int64 }

func (m *countingMaps) Update([]conntrack.GREOut, []conntrack.GREIn, []conntrack.GREOut, []conntrack.GREIn) error {
	return nil
}

func (m *countingMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) {
	m.reads.Add(1)
	return nil, nil, nil
}

// Close is final: a reload that reaches the fast path's Apply after the
// daemon closed it on its way out (the admin socket still answers then) is
// refused and does not start the flusher again (before, it did: a flusher
// writing to a table reduced to its fail-safe rule).
func TestFastPathApplyAfterClose(t *testing.T) {
	cfg := rules.Default()
	cfg.GREPath, cfg.Queues = rules.GREPathKernel, 1
	m := &countingMaps{}
	// A short GRE timeout makes the flusher read the counters every 5 ms.
	e := nat.NewEngine(nat.EngineConfig{KernelMaps: m, Timeouts: conntrack.Timeouts{GREUnreplied: 20 * time.Millisecond, GREReplied: 20 * time.Millisecond}}, nil)
	f := newFastPath(context.Background(), e, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.reads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if m.reads.Load() == 0 {
		t.Fatal("the flusher never read the maps")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(cfg); err == nil {
		t.Error("Apply after Close succeeded")
	}
	n := m.reads.Load()
	time.Sleep(200 * time.Millisecond) // 40 periods of the flusher
	if got := m.reads.Load(); got != n {
		t.Errorf("the flusher runs again after Close: %d reads more", got-n)
	}
}

// The admin command "memory" (the bench's daemon memory): a collection,
// then the heap and the resident set, both non-zero, the heap within what
// the runtime holds.
func TestMemoryNow(t *testing.T) {
	r, err := memoryNow()
	if err != nil {
		t.Fatal(err)
	}
	if r.RSS == 0 || r.HeapInuse == 0 || r.HeapInuse > r.Sys || r.Goroutines < 1 || r.RSSAnon == 0 || r.RSSFile == 0 || r.RSSAnon+r.RSSFile > r.RSS {
		t.Fatalf("%+v", r)
	}
	// The memory classes cover what the runtime holds: they add up to
	// their total, and the heap's objects are among them.
	var sum uint64
	for name, v := range r.Classes {
		if name != "total" {
			sum += v
		}
	}
	if r.Classes["heap/objects"] == 0 || sum != r.Classes["total"] {
		t.Fatalf("memory classes %v: sum %d", r.Classes, sum)
	}
}

func TestClassesGrowth(t *testing.T) {
	c0 := map[string]uint64{"heap/objects": 1000, "heap/released": 0, "os-stacks": 10, "total": 1010}
	c1 := map[string]uint64{"heap/objects": 5000, "heap/released": 1000, "os-stacks": 10, "total": 6010}
	got := classesGrowth(c0, c1, 8000, 2)
	want := "; Go runtime per call: heap/objects +2000, heap/released +500; RSS beyond what the runtime holds +2000"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if classesGrowth(nil, c1, 1, 1) != "" {
		t.Fatal("no classes from an older daemon: nothing to say")
	}
}

// The memory row compares bytes per call the other way round: Linux's /
// pptpgw's, so that higher is better as in every other row.
func TestMemoryRowRatio(t *testing.T) {
	k := &benchSide{vals: map[string]float64{"memory": 512}, mem: "k"}
	g := &benchSide{gw: true, vals: map[string]float64{"memory": 1024}, mem: "g"}
	r := memoryRow(k, g)
	if r.Ratio != 0.5 || r.KernelValue != 512 || r.PPTPGWValue != 1024 || r.Kernel != "k" || r.PPTPGW != "g" {
		t.Fatalf("%+v", r)
	}
	if r := memoryRow(&benchSide{vals: map[string]float64{}}, g); r.Ratio != 0 {
		t.Fatalf("no Linux figure, ratio %v", r.Ratio)
	}
}

package metrics

import (
	"strings"
	"testing"
)

var (
	testPackets = &Desc{Name: "packets_total", Help: "Packets by reason.", Labels: []string{"reason"}}
	testActive  = &Desc{Name: "active", Help: "Things now.", Kind: Gauge}
)

func TestCountersSnapshot(t *testing.T) {
	c := NewCounters([]Def{
		{testPackets, []string{"ok"}, "ok"},
		{testPackets, []string{"bad"}, "bad"},
	})
	c.Inc(0)
	c.Add(0, 2)
	active := SourceFunc(func(emit func(Sample)) { emit(Sample{Desc: testActive, Key: "active", Value: 7}) })
	s := Collect(c, active)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	m := s.Map()
	if m["ok"] != 3 || m["active"] != 7 {
		t.Fatalf("map %v", m)
	}
	if v, ok := s.Get("bad"); !ok || v != 0 {
		t.Fatalf("Get(bad) = %d, %v: a declared counter must be present at zero", v, ok)
	}
	if _, ok := s.Get("nope"); ok {
		t.Fatal("Get of an undeclared key succeeded")
	}
	f := s.Families()
	if len(f) != 2 || f[0].Desc != testActive || len(f[1].Samples) != 2 {
		t.Fatalf("families %+v", f)
	}
}

func TestValidateCatches(t *testing.T) {
	other := &Desc{Name: "packets_total", Help: "again"}
	for name, s := range map[string]Snapshot{
		"labels":    {{Desc: testPackets, Key: "a"}},
		"dup key":   {{Desc: testActive, Key: "a"}, {Desc: testActive, Key: "a"}},
		"dup name":  {{Desc: testPackets, LabelValues: []string{"x"}, Key: "a"}, {Desc: other, Key: "b"}},
		"no desc":   {{Key: "a"}},
		"empty key": {{Desc: testActive}},
		"no help":   {{Desc: &Desc{Name: "x"}, Key: "x"}},
	} {
		if err := s.Validate(); err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
			t.Errorf("%s: Validate() = %v, want an error", name, err)
		}
	}
}

func TestIncDoesNotAllocate(t *testing.T) {
	c := NewCounters([]Def{{testPackets, []string{"ok"}, "ok"}})
	if n := testing.AllocsPerRun(1000, func() { c.Inc(0) }); n != 0 {
		t.Fatalf("Inc allocates %v times", n)
	}
}

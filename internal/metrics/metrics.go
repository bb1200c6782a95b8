// Package metrics is the one counters pattern of the gateway and the server:
// every counter and gauge is declared once, with a name, a help text and its
// labels (reason, direction, ...), and every reader takes the same Snapshot.
// `pptpgw calls --json` and `pptpgw sessions --json` read a Snapshot as a
// flat map of keys; a Prometheus endpoint reads the same Snapshot as
// families with labels.
//
// The hot path only touches Counters: a fixed array of atomic counters
// indexed by a small integer (an enum of the owning package), so counting a
// packet is one atomic add and never allocates or looks up a map. Gauges and
// counters owned by other structures (a table's length, a socket's error
// count) are read when a snapshot is taken, through a Source.
//
// It owns naming and collecting only. It must not know what is counted,
// and it does not serve anything: exporters (admin socket, Prometheus) live
// with the commands.
package metrics

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
)

// Kind says how a value behaves over time.
type Kind uint8

const (
	// Counter only grows (until the process restarts).
	Counter Kind = iota
	// Gauge goes up and down (a current number of things).
	Gauge
)

func (k Kind) String() string {
	if k == Gauge {
		return "gauge"
	}
	return "counter"
}

// Desc describes one metric family. Declare each once, as a package-level
// variable of the package that owns what it counts.
type Desc struct {
	// Name is the family's name without the product prefix, in Prometheus
	// style: snake_case, counters ending in _total ("packets_total").
	Name string
	// Help says what one unit of it is, in one sentence.
	Help string
	Kind Kind
	// Labels are the family's label names, in order ("reason").
	Labels []string
}

// Sample is one value of a family with its label values.
type Sample struct {
	Desc *Desc
	// LabelValues match Desc.Labels one for one.
	LabelValues []string
	// Key is the sample's name in the flat JSON map of the admin replies
	// ("gre_no_call"); unique within one daemon's Snapshot.
	Key   string
	Value uint64
}

// Source contributes samples to a snapshot.
type Source interface {
	Collect(emit func(Sample))
}

// SourceFunc adapts a function to Source (for gauges read on demand).
type SourceFunc func(emit func(Sample))

// Collect calls f.
func (f SourceFunc) Collect(emit func(Sample)) { f(emit) }

// Snapshot is every sample of a set of sources at one moment.
type Snapshot []Sample

// Collect takes a snapshot of srcs, in their order.
func Collect(srcs ...Source) Snapshot {
	var s Snapshot
	for _, src := range srcs {
		src.Collect(func(x Sample) { s = append(s, x) })
	}
	return s
}

// Map returns the snapshot as the flat key -> value map of the admin
// replies. Every declared sample has its key, zero or not.
func (s Snapshot) Map() map[string]uint64 {
	m := make(map[string]uint64, len(s))
	for _, x := range s {
		m[x.Key] += x.Value
	}
	return m
}

// Get returns the value of the sample with key k.
func (s Snapshot) Get(k string) (uint64, bool) {
	for _, x := range s {
		if x.Key == k {
			return x.Value, true
		}
	}
	return 0, false
}

// Families groups the snapshot by family, families sorted by name and
// samples in collection order (for exporters).
func (s Snapshot) Families() []Family {
	idx := map[*Desc]int{}
	var out []Family
	for _, x := range s {
		i, ok := idx[x.Desc]
		if !ok {
			i = len(out)
			idx[x.Desc] = i
			out = append(out, Family{Desc: x.Desc})
		}
		out[i].Samples = append(out[i].Samples, x)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Desc.Name < out[j].Desc.Name })
	return out
}

// Family is one Desc with its samples.
type Family struct {
	Desc    *Desc
	Samples []Sample
}

// Validate checks that every sample has as many label values as its family
// has labels, that keys are unique, and that a family name is declared by one
// Desc only: the invariants exporters rely on. Tests of each daemon call it.
func (s Snapshot) Validate() error {
	keys := map[string]bool{}
	names := map[string]*Desc{}
	var errs []string
	for _, x := range s {
		if x.Desc == nil {
			errs = append(errs, fmt.Sprintf("%q: no Desc", x.Key))
			continue
		}
		if len(x.LabelValues) != len(x.Desc.Labels) {
			errs = append(errs, fmt.Sprintf("%q: %d label values for %d labels of %s", x.Key, len(x.LabelValues), len(x.Desc.Labels), x.Desc.Name))
		}
		if x.Key == "" || keys[x.Key] {
			errs = append(errs, fmt.Sprintf("key %q empty or not unique", x.Key))
		}
		keys[x.Key] = true
		if d, ok := names[x.Desc.Name]; ok && d != x.Desc {
			errs = append(errs, fmt.Sprintf("family %s declared twice", x.Desc.Name))
		}
		names[x.Desc.Name] = x.Desc
		if x.Desc.Help == "" {
			errs = append(errs, fmt.Sprintf("family %s has no help", x.Desc.Name))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("metrics: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Def is one counter of a Counters set: its family, its label values and
// its flat key.
type Def struct {
	Desc        *Desc
	LabelValues []string
	Key         string
}

// Counters is a fixed set of atomic counters, indexed by the owner's enum
// (0 .. len(defs)-1). The zero value is unusable; use NewCounters.
type Counters struct {
	defs []Def
	vals []atomic.Uint64
}

// NewCounters returns a set of counters, all zero, one per def.
func NewCounters(defs []Def) *Counters {
	return &Counters{defs: defs, vals: make([]atomic.Uint64, len(defs))}
}

// Add adds n to counter i.
func (c *Counters) Add(i int, n uint64) { c.vals[i].Add(n) }

// Inc adds one to counter i.
func (c *Counters) Inc(i int) { c.vals[i].Add(1) }

// Load returns counter i.
func (c *Counters) Load(i int) uint64 { return c.vals[i].Load() }

// Key returns the flat key of counter i.
func (c *Counters) Key(i int) string { return c.defs[i].Key }

// Collect emits every counter of the set, zero or not.
func (c *Counters) Collect(emit func(Sample)) {
	for i := range c.defs {
		d := &c.defs[i]
		emit(Sample{Desc: d.Desc, LabelValues: d.LabelValues, Key: d.Key, Value: c.vals[i].Load()})
	}
}

package gre

import (
	"strings"

	"pptpgw/internal/metrics"
)

// Drop reasons, counted per Mux and per Call. The names are the reason labels
// (and, prefixed "gre_", the keys of the server's counters).
const (
	ReasonParse       = "parse"        // not a valid enhanced GRE header
	ReasonUnknownCall = "unknown_call" // no call for (peer, call ID)
	ReasonDuplicate   = "duplicate"    // seq already delivered: replay or duplicate
	ReasonOutOfWindow = "out_of_window"
	ReasonLate        = "late"         // arrived after the reorder timeout skipped it
	ReasonReorderFull = "reorder_full" // reorder buffer overflow forced a skip
	ReasonWindowFull  = "send_window_full"
	ReasonClosed      = "closed"
	ReasonResync      = "resync" // sequence resynchronised after consecutive out-of-window packets
)

// counter indexes a Mux's counters (and, below numDrops, a Call's drops).
type counter int

const (
	dropParse counter = iota
	dropUnknownCall
	dropDuplicate
	dropOutOfWindow
	dropLate
	dropReorderFull
	dropWindowFull
	dropClosed
	countResync
	numDrops // a Call counts the ones above; the Mux all
)

const (
	countRxPackets = numDrops + iota
	countRxReads
	numCounters
)

var (
	descDrops = &metrics.Desc{Name: "gre_drops_total", Labels: []string{"direction", "reason"},
		Help: "GRE packets dropped, by direction (rx: received from the peer, tx: to be sent to it) and reason."}
	descResyncs = &metrics.Desc{Name: "gre_resyncs_total",
		Help: "Times a call's receive sequence jumped to the peer's after consecutive out-of-window packets."}
	descRxPackets = &metrics.Desc{Name: "gre_rx_packets_total", Help: "GRE packets read from the socket."}
	descRxReads   = &metrics.Desc{Name: "gre_rx_reads_total",
		Help: "Read system calls on the GRE socket (rx packets / rx reads is the mean recvmmsg batch)."}
)

func dropDef(direction, reason string) metrics.Def {
	return metrics.Def{Desc: descDrops, LabelValues: []string{direction, reason}, Key: "gre_" + reason}
}

// counterDefs are the Mux's counters; their keys carry the "gre_" prefix the
// server's admin reply shows.
var counterDefs = []metrics.Def{
	dropParse:       dropDef("rx", ReasonParse),
	dropUnknownCall: dropDef("rx", ReasonUnknownCall),
	dropDuplicate:   dropDef("rx", ReasonDuplicate),
	dropOutOfWindow: dropDef("rx", ReasonOutOfWindow),
	dropLate:        dropDef("rx", ReasonLate),
	dropReorderFull: dropDef("rx", ReasonReorderFull),
	dropWindowFull:  dropDef("tx", ReasonWindowFull),
	dropClosed:      dropDef("rx", ReasonClosed),
	countResync:     {Desc: descResyncs, Key: "gre_" + ReasonResync},
	countRxPackets:  {Desc: descRxPackets, Key: "gre_rx_packets"},
	countRxReads:    {Desc: descRxReads, Key: "gre_rx_reads"},
}

// reasonOf is the short name of counter c: its flat key without "gre_".
func reasonOf(c counter) string { return strings.TrimPrefix(counterDefs[c].Key, "gre_") }

// Collect emits the Mux's counters (metrics.Source), keys prefixed "gre_".
func (m *Mux) Collect(emit func(metrics.Sample)) { m.counters.Collect(emit) }

// Metrics returns a snapshot of the Mux's counters.
func (m *Mux) Metrics() metrics.Snapshot { return metrics.Collect(m) }

// Counters returns the drop counters by reason plus "rx_packets" and "rx_reads" (read
// system calls: rx_packets/rx_reads is the mean recvmmsg batch), every one of them,
// zero or not.
func (m *Mux) Counters() map[string]uint64 {
	out := make(map[string]uint64, numCounters)
	for c := range numCounters {
		out[reasonOf(c)] = m.counters.Load(int(c))
	}
	return out
}

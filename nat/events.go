package nat

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/conntrack"
)

// Call events (issue 8): what `pptpgw events` streams, like `conntrack -E`.
//
// The engine produces an Event where a call or a control connection changes
// state: a control connection tracked (controlFor), a call set up
// (mapper.Event on CallEstablished), a call removed for any reason (the
// table's OnCallRemoved: cleared, control_stopped, expired, evicted, ...),
// and new state refused (controlFor, mapper.AllocOutside). Each listener
// (Engine.SubscribeEvents) has a bounded channel; publish never waits: an
// event that does not fit is dropped and counted for that listener (its
// stream shows "lost N events") and in events_lost_total.
//
// Cost when nobody listens: one atomic load, no lock, no allocation. Most
// events are on the control path, but a call expiring during a GRE lookup
// publishes from the GRE path (under Table.mu): with listeners, publish
// takes eventHub.mu, a leaf lock (see the lock order in doc.go). An Event
// is a fixed-size value; sending it copies it into the channel's buffer
// and allocates nothing.

// EventType is what happened.
type EventType uint8

// Event types. Their names (String) are what the stream shows.
const (
	EventControlNew  EventType = iota + 1 // a control connection is tracked
	EventCallSetup                        // a call was set up (GRE may flow)
	EventCallCleared                      // a call was cleared by signalling (or its connection went)
	EventCallExpired                      // a call idled out
	EventCallEvicted                      // a call made room for another (evicted, early_dropped)
	EventRefused                          // a new control connection or call was not tracked
)

var eventNames = [...]string{
	EventControlNew:  "control-new",
	EventCallSetup:   "call-setup",
	EventCallCleared: "call-cleared",
	EventCallExpired: "call-expired",
	EventCallEvicted: "call-evicted",
	EventRefused:     "refused",
}

func (t EventType) String() string {
	if int(t) < len(eventNames) && eventNames[t] != "" {
		return eventNames[t]
	}
	return "unknown"
}

// Event is one state change. Fields that do not apply are zero.
type Event struct {
	Time time.Time
	Type EventType
	// What is "control" or "call".
	What string
	// Reason: for removals, conntrack's reason (cleared, control_stopped,
	// conn_removed, expired, evicted, early_dropped, replaced, purged);
	// for refusals, table_full, per_source, per_conn, callid_exhausted or
	// exists; for control-new, tracked (from its SYN) or picked_up.
	Reason string

	InsideIP, PublicIP, PeerIP [4]byte
	InsidePort, PeerPort       uint16
	// Call IDs: the inside party's own, the one the gateway put on the
	// wire for it, the peer's.
	InsideCallID, OutsideCallID, PeerCallID uint16
	// GRE counters of a removed call.
	PktsOut, PktsIn, BytesOut, BytesIn uint64
}

// EventJSON is an Event as one line of `pptpgw events --json`: the one
// declaration of that JSON shape. A line with Event "lost" says how many
// events this listener missed (Lost).
type EventJSON struct {
	Time       time.Time  `json:"time"`
	Event      string     `json:"event"`
	What       string     `json:"what,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	InsideIP   netip.Addr `json:"inside_ip,omitzero"`
	InsidePort uint16     `json:"inside_port,omitempty"`
	PublicIP   netip.Addr `json:"public_ip,omitzero"`
	PeerIP     netip.Addr `json:"peer_ip,omitzero"`
	PeerPort   uint16     `json:"peer_port,omitempty"`
	// Call IDs are always written (0 is a valid call ID); for control
	// events they are 0, and refusals carry only the inside one.
	InsideCallID  uint16 `json:"inside_call_id"`
	OutsideCallID uint16 `json:"outside_call_id"`
	PeerCallID    uint16 `json:"peer_call_id"`
	PktsOut       uint64 `json:"pkts_out,omitempty"`
	PktsIn        uint64 `json:"pkts_in,omitempty"`
	BytesOut      uint64 `json:"bytes_out,omitempty"`
	BytesIn       uint64 `json:"bytes_in,omitempty"`
	Lost          uint64 `json:"lost,omitempty"`
}

// EventLost is EventJSON.Event of a "lost N events" line.
const EventLost = "lost"

func addr4(a [4]byte) netip.Addr {
	if a == ([4]byte{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom4(a)
}

// JSON returns the event as a line of the JSON stream.
func (ev *Event) JSON() EventJSON {
	return EventJSON{
		Time: ev.Time, Event: ev.Type.String(), What: ev.What, Reason: ev.Reason,
		InsideIP: addr4(ev.InsideIP), InsidePort: ev.InsidePort, PublicIP: addr4(ev.PublicIP),
		PeerIP: addr4(ev.PeerIP), PeerPort: ev.PeerPort,
		InsideCallID: ev.InsideCallID, OutsideCallID: ev.OutsideCallID, PeerCallID: ev.PeerCallID,
		PktsOut: ev.PktsOut, PktsIn: ev.PktsIn, BytesOut: ev.BytesOut, BytesIn: ev.BytesIn,
	}
}

// EventSub is one listener: read Events from C until Close.
type EventSub struct {
	C    <-chan Event
	c    chan Event
	lost atomic.Uint64
	hub  *eventHub
	once sync.Once
}

// TakeLost returns how many events did not fit in C since the last call,
// and resets the count.
func (s *EventSub) TakeLost() uint64 { return s.lost.Swap(0) }

// Close unsubscribes. C is not closed (publish may still hold a copy of
// the listener list); stop reading it.
func (s *EventSub) Close() {
	s.once.Do(func() { s.hub.remove(s) })
}

// eventHub fans events out to listeners. The zero value has no listener.
type eventHub struct {
	n    atomic.Int32 // len(subs): publish's lock-free "nobody listens"
	lost atomic.Uint64

	mu   sync.Mutex // a leaf: taken under ctlMu and Table.mu, takes nothing
	subs []*EventSub
}

// DefaultEventBuffer is the channel size of a listener: events that fit
// while the listener is slow; beyond it they are dropped and counted.
const DefaultEventBuffer = 4096

// SubscribeEvents adds a listener with a buffer of n events (0:
// DefaultEventBuffer).
func (e *Engine) SubscribeEvents(n int) *EventSub {
	if n <= 0 {
		n = DefaultEventBuffer
	}
	c := make(chan Event, n)
	s := &EventSub{C: c, c: c, hub: &e.events}
	h := &e.events
	h.mu.Lock()
	h.subs = append(h.subs, s)
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
	return s
}

func (h *eventHub) remove(s *EventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.subs {
		if x == s {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			break
		}
	}
	h.n.Store(int32(len(h.subs)))
}

// listening reports whether anyone listens: the check every producer makes
// before building an Event.
func (h *eventHub) listening() bool { return h.n.Load() > 0 }

// publish sends ev to every listener without waiting.
func (h *eventHub) publish(ev *Event) {
	h.mu.Lock()
	for _, s := range h.subs {
		select {
		case s.c <- *ev:
		default:
			s.lost.Add(1)
			h.lost.Add(1)
		}
	}
	h.mu.Unlock()
}

// eventControlNew: controlFor tracked k (ctlMu held).
func (e *Engine) eventControlNew(k conntrack.ControlKey, pub [4]byte, r reason) {
	if !e.events.listening() {
		return
	}
	why := "tracked"
	if r == rCtlPickup {
		why = "picked_up"
	}
	ev := Event{Time: e.clk.Now(), Type: EventControlNew, What: "control", Reason: why,
		InsideIP: k.InsideIP, InsidePort: k.InsidePort, PublicIP: pub, PeerIP: k.PeerIP, PeerPort: k.PeerPort}
	e.events.publish(&ev)
}

// eventRefused: a new control connection (insideID, outsideID 0) or call
// was not tracked because of err.
func (e *Engine) eventRefused(what string, k conntrack.ControlKey, pub [4]byte, insideID uint16, err error) {
	if !e.events.listening() {
		return
	}
	ev := Event{Time: e.clk.Now(), Type: EventRefused, What: what, Reason: refusalReason(err),
		InsideIP: k.InsideIP, InsidePort: k.InsidePort, PublicIP: pub, PeerIP: k.PeerIP, PeerPort: k.PeerPort,
		InsideCallID: insideID}
	e.events.publish(&ev)
}

// refusalReason names err the way refused_total{reason} does.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, conntrack.ErrTableFull):
		return "table_full"
	case errors.Is(err, conntrack.ErrSourceLimit):
		return "per_source"
	case errors.Is(err, conntrack.ErrConnLimit):
		return "per_conn"
	case errors.Is(err, conntrack.ErrCallExists):
		return "exists"
	case errors.Is(err, ErrExhausted):
		return ReasonCallIDsOut
	}
	return "error"
}

// eventCallSetup: tc's call insideID was set up.
func (e *Engine) eventCallSetup(tc *conntrack.Control, insideID, outsideID, peerID uint16) {
	if !e.events.listening() {
		return
	}
	k := tc.Key
	ev := Event{Time: e.clk.Now(), Type: EventCallSetup, What: "call",
		InsideIP: k.InsideIP, InsidePort: k.InsidePort, PublicIP: tc.PublicIP, PeerIP: k.PeerIP, PeerPort: k.PeerPort,
		InsideCallID: insideID, OutsideCallID: outsideID, PeerCallID: peerID}
	e.events.publish(&ev)
}

// callRemoved counts the removal of c by its reason and publishes it. It
// runs in the table's OnCallRemoved (Table.mu held).
func (e *Engine) callRemoved(c *conntrack.Call, why string) {
	t := EventCallCleared
	r := rTeardownOther
	switch why {
	case conntrack.ReasonCleared:
		r = rTeardownCleared
	case conntrack.ReasonStopped:
		r = rTeardownStopped
	case conntrack.ReasonConnRemoved:
		r = rTeardownConnRemoved
	case conntrack.ReasonExpired:
		t, r = EventCallExpired, rTeardownExpired
	case conntrack.ReasonEvicted:
		t, r = EventCallEvicted, rTeardownEvicted
	case conntrack.ReasonEarlyDrop:
		t, r = EventCallEvicted, rTeardownEarlyDrop
	}
	e.counters.Inc(int(r))
	if !e.events.listening() {
		return
	}
	ev := Event{Time: e.clk.Now(), Type: t, What: "call", Reason: why,
		InsideIP: c.InsideIP, InsidePort: c.InsidePort(), PublicIP: c.PublicIP, PeerIP: c.PeerIP,
		InsideCallID: c.InsideCallID, OutsideCallID: c.OutsideCallID, PeerCallID: c.PeerCallID}
	ev.PktsOut, ev.PktsIn, ev.BytesOut, ev.BytesIn = c.Counters()
	e.events.publish(&ev)
}

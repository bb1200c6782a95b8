package nat

import (
	"net/netip"
	"sort"

	"pptpgw/pptp/wire"
)

// CallInfo is one tracked call as `pptpgw calls` shows it: one row of its table
// and one element of CallsReply.Calls in its --json output. It is the one
// declaration of that JSON shape; the command and the testbed both use it.
type CallInfo struct {
	// InsideIP and InsidePort are the inside party's end of the control
	// connection (the client, or the server behind a forward).
	InsideIP   netip.Addr `json:"inside_ip"`
	InsidePort uint16     `json:"inside_port"`
	// PublicIP is the address the call is translated to.
	PublicIP netip.Addr `json:"public_ip"`
	// PublicPort is the forwarded port of a published server; omitted when
	// the kernel chose the port (masquerade of a client's connection).
	PublicPort uint16     `json:"public_port,omitempty"`
	PeerIP     netip.Addr `json:"peer_ip"`
	// InsideCallID is the inside party's own call ID, OutsideCallID the one
	// the gateway put on the wire for it, PeerCallID the peer's own.
	InsideCallID  uint16 `json:"inside_call_id"`
	OutsideCallID uint16 `json:"outside_call_id"`
	PeerCallID    uint16 `json:"peer_call_id"`
	// State is conntrack.CallState: requested, unreplied or replied.
	State string `json:"state"`
	// IdleSeconds is the time since the call's last packet.
	IdleSeconds float64 `json:"idle_seconds"`
	// Packets and bytes of GRE, out (inside to peer) and in.
	PktsOut  uint64 `json:"pkts_out"`
	PktsIn   uint64 `json:"pkts_in"`
	BytesOut uint64 `json:"bytes_out"`
	BytesIn  uint64 `json:"bytes_in"`

	// Shaping (issue 9): the call's class (omitted: none) and its GRE
	// packets dropped by `policing.pptp_call`, out and in.
	Class      string `json:"class,omitempty"`
	PolicedOut uint64 `json:"policed_out"`
	PolicedIn  uint64 `json:"policed_in"`
	// pool (issue 11): Direction is "outbound" (an inside client's call to
	// an outside server), "published" (an outside client's call to a
	// server behind a forward) or "hairpin" (an inside client's call to the
	// public address, taken by a pool member); Member is the pool member
	// that took it (omitted outside pools).
	Direction string     `json:"direction"`
	Member    netip.Addr `json:"member,omitzero"`
}

// CallsReply is the whole answer to the admin command "calls" (`pptpgw
// calls --json`): the calls, and every counter of the gateway by its key
// (the engine's and the queue's; see internal/metrics).
type CallsReply struct {
	Calls    []CallInfo        `json:"calls"`
	Counters map[string]uint64 `json:"counters"`
}

// Calls returns a snapshot of the tracked calls, ordered by inside address
// and call ID. With the kernel fast path, the maps' counters are read first.
func (e *Engine) Calls() []CallInfo {
	if e.kp != nil {
		_ = e.kp.sync() // the kernel's counters up to now; on error, as of the last read
	}
	snap := e.table.Snapshot()
	out := make([]CallInfo, 0, len(snap))
	for _, s := range snap {
		c := CallInfo{
			InsideIP: netip.AddrFrom4(s.InsideIP), InsidePort: s.InsidePort,
			PublicIP: netip.AddrFrom4(s.PublicIP), PeerIP: netip.AddrFrom4(s.PeerIP),
			InsideCallID: s.InsideCallID, OutsideCallID: s.OutsideCallID, PeerCallID: s.PeerCallID,
			State: s.State.String(), IdleSeconds: s.Idle.Seconds(),
			PktsOut: s.PktsOut, PktsIn: s.PktsIn, BytesOut: s.BytesOut, BytesIn: s.BytesIn,
			Class: e.qos.Load().className(s.Class), PolicedOut: s.PolicedOut, PolicedIn: s.PolicedIn,
		}
		c.Direction = DirectionOutbound // pool (issue 11)
		if !s.Forward && e.memberOf(s.PeerIP) != nil {
			c.Direction, c.Member = DirectionHairpin, c.PeerIP
		}
		if s.Forward {
			c.Direction = DirectionPublished
			if e.memberOf(s.InsideIP) != nil {
				c.Member = c.InsideIP
			}
			c.PublicPort = e.forwardPort(s.InsideIP)
			if c.PublicPort == 0 {
				c.PublicPort = wire.ControlPort
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].InsideIP.Compare(out[j].InsideIP); c != 0 {
			return c < 0
		}
		return out[i].InsideCallID < out[j].InsideCallID
	})
	return out
}

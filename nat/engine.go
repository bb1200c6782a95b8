// Package nat is the gateway's userspace data path for PPTP: IPv4/TCP header
// views and checksum helpers, the outside call-ID allocator, and the Engine
// that rewrites the packets NFQUEUE hands it (GRE entirely, TCP 1723 control
// segments through the helper ALG).
package nat

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"pptpgw/internal/pkt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/pptp/wire"
)

// Hook is the netfilter hook a packet was queued from.
type Hook uint8

const (
	Prerouting Hook = iota // forwarded or locally destined packets
	Output                 // router-originated packets
	// Postrouting: packets queued after routing on their way out of the
	// WAN, forwarded or router-originated. The kernel reports no ingress
	// interface there; they are outbound by construction.
	Postrouting
)

// Verdict is the Engine's decision on a packet.
type Verdict uint8

const (
	Accept Verdict = iota // let it go (possibly rewritten in place)
	Drop                  // drop it
	Hold                  // the engine kept a copy; the verdict comes later via the releaser
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Hold:
		return "hold"
	}
	return "unknown"
}

// Packet is one queued IPv4 packet.
type Packet struct {
	ID    uint32 // NFQUEUE packet ID, passed back to the releaser for held packets
	Data  []byte // the IPv4 packet; Process may rewrite it in place
	InIf  uint32 // ingress ifindex (0 if none)
	OutIf uint32 // egress ifindex (0 if not yet routed)
	Hook  Hook
}

// Forward publishes a PPTP server inside: the kernel DNATs TCP Port on the
// public address to InsideIP:1723. The Engine then sees the control
// connection with the inside party as the server (roles reversed) and
// translates its calls the same way.
type Forward struct {
	Port     uint16 // public TCP port (informational: shown as PublicPort in Calls)
	InsideIP netip.Addr
}

// EngineConfig configures an Engine. The config is fixed for the Engine's
// life; a reload builds a new Engine.
type EngineConfig struct {
	PublicIP netip.Addr // the WAN address calls are translated to (IPv4)
	WANIf    uint32     // ifindex of the WAN interface
	LANIfs   []uint32   // ifindexes of the LAN interfaces; empty: every non-WAN interface
	// Strict drops malformed IPv4/TCP packets and untracked control segments
	// carrying data; lenient (false) accepts them untouched. GRE that is
	// malformed, fragmented or matches no call is dropped in both modes: GRE
	// is notracked, so the kernel would forward it untranslated.
	Strict      bool
	Timeouts    conntrack.Timeouts
	MaxCalls    int           // bound of the call table (and of the control connection table)
	HoldTimeout time.Duration // how long a held control segment waits (default 300ms)
	Forwards    []Forward
	Logger      *slog.Logger // nil: slog.Default()
}

// DefaultHoldTimeout is the default EngineConfig.HoldTimeout.
const DefaultHoldTimeout = 300 * time.Millisecond

// SummaryInterval is the minimum time between two "dropped packets" log
// lines; the packet path itself never logs.
const SummaryInterval = 10 * time.Second

// Reasons returned by Process and counted in Counters. Helper verdicts come
// back with the helper's own reason string, counted as "helper_" + reason.
const (
	ReasonGREOut        = "gre_out"             // outbound GRE translated
	ReasonGREIn         = "gre_in"              // inbound GRE translated
	ReasonGRENoCall     = "gre_no_call"         // GRE matching no established call: dropped
	ReasonGREMalformed  = "gre_malformed"       // not enhanced GRE v1 (incl. C=1): dropped
	ReasonGREFragment   = "gre_fragment"        // an IPv4 fragment of GRE: dropped (see processGRE)
	ReasonCtl           = "ctl_ok"              // control segment passed (maybe rewritten)
	ReasonCtlHeld       = "ctl_held"            // control segment held for the rest of a call-ID field
	ReasonCtlReleased   = "ctl_released"        // held segment completed and released
	ReasonCtlHoldExpire = "ctl_hold_expired"    // held segment timed out
	ReasonCtlNoConn     = "ctl_no_conn"         // strict: data on an untracked control connection
	ReasonCtlPickup     = "ctl_pickup"          // lenient: control connection picked up mid-stream
	ReasonCtlEmpty      = "ctl_untracked_empty" // segment without data on an untracked connection
	ReasonCtlUntracked  = "ctl_untracked"       // TCP 1723 to an inside server that is not forwarded
	ReasonCtlNew        = "ctl_new"             // control connection tracked from its SYN
	ReasonIPMalformed   = "ip_malformed"
	ReasonTCPMalformed  = "tcp_malformed"
	ReasonTCPFragment   = "tcp_fragment"
	ReasonNotPPTP       = "not_pptp"      // neither GRE nor TCP 1723: accepted untouched
	ReasonUnknownIface  = "unknown_iface" // direction unknown: accepted untouched
	ReasonCallIDsOut    = "callid_exhausted"
)

type reason uint8

const (
	rGREOut reason = iota
	rGREIn
	rGRENoCall
	rGREMalformed
	rGREFragment
	rCtl
	rCtlHeld
	rCtlReleased
	rCtlHoldExpire
	rCtlNoConn
	rCtlPickup
	rCtlEmpty
	rCtlUntracked
	rCtlNew
	rIPMalformed
	rTCPMalformed
	rTCPFragment
	rNotPPTP
	rUnknownIface
	rCallIDsOut
	rCallsMapped
	rCallsEstablished
	rCallsCleared
	rEstablishNoCall
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonGREOut, ReasonGREIn, ReasonGRENoCall, ReasonGREMalformed, ReasonGREFragment,
	ReasonCtl, ReasonCtlHeld, ReasonCtlReleased, ReasonCtlHoldExpire, ReasonCtlNoConn,
	ReasonCtlPickup, ReasonCtlEmpty, ReasonCtlUntracked, ReasonCtlNew,
	ReasonIPMalformed, ReasonTCPMalformed, ReasonTCPFragment, ReasonNotPPTP, ReasonUnknownIface,
	ReasonCallIDsOut, "calls_mapped", "calls_established", "calls_cleared", "establish_no_call",
}

// CallInfo describes one tracked call (for `pptpgw calls`).
type CallInfo struct {
	InsideIP, PublicIP, PeerIP              netip.Addr
	InsidePort, PublicPort                  uint16 // PublicPort: forwarded port, 0 when the kernel chose it (masquerade)
	InsideCallID, OutsideCallID, PeerCallID uint16
	State                                   string
	Idle                                    time.Duration
	PktsOut, PktsIn, BytesOut, BytesIn      uint64
}

// Engine translates PPTP packets. Process, Tick, Calls and Counters are safe
// for concurrent use.
//
// Locking: ctlMu serialises the control path (helper state, held packets);
// the GRE path takes only the table lock. Order: ctlMu -> conntrack.Table.mu
// -> Allocator.mu (the table's removal callback releases IDs).
type Engine struct {
	pub      [4]byte // new control connections' public address; ctlMu
	wan      atomic.Uint32
	lan      []uint32
	strict   bool
	holdTO   time.Duration
	forwards map[[4]byte]uint16 // inside server IP -> public port
	clk      conntrack.Clock
	log      *slog.Logger

	table *conntrack.Table
	alloc *Allocator

	counters [numReasons]atomic.Uint64
	releaser atomic.Pointer[func(id uint32, data []byte, v Verdict)]

	ctlMu         sync.Mutex
	holds         []*heldPkt
	helperReasons map[string]uint64

	// Drop summary logging (Tick only): logs are rate-limited to one line
	// per SummaryInterval listing the drop reasons that grew.
	lastSummary time.Time
	lastDrops   [numReasons]uint64
}

// ctl is the engine's state of one control connection (conntrack.Conn.Data).
type ctl struct {
	cn *conntrack.Conn
	hc *helper.Conn
}

// heldPkt is a control segment the helper is holding: an owned copy of the
// whole IPv4 packet.
type heldPkt struct {
	id       uint32
	buf      []byte
	tcpOff   int
	c        *ctl
	dir      helper.Dir
	deadline time.Time
}

type release struct {
	id   uint32
	data []byte
	v    Verdict
}

// NewEngine returns an Engine. clk nil means the system clock.
func NewEngine(cfg EngineConfig, clk conntrack.Clock) *Engine {
	if clk == nil {
		clk = conntrack.SystemClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	to := cfg.Timeouts.WithDefaults()
	e := &Engine{
		lan:           append([]uint32(nil), cfg.LANIfs...),
		strict:        cfg.Strict,
		holdTO:        cfg.HoldTimeout,
		forwards:      make(map[[4]byte]uint16),
		clk:           clk,
		log:           log,
		helperReasons: make(map[string]uint64),
	}
	e.wan.Store(cfg.WANIf)
	if e.holdTO <= 0 {
		e.holdTO = DefaultHoldTimeout
	}
	if cfg.PublicIP.Is4() {
		e.pub = cfg.PublicIP.As4()
	} else {
		log.Error("nat: public address is not IPv4; no call will be translated", "public", cfg.PublicIP)
	}
	for _, f := range cfg.Forwards {
		if f.InsideIP.Is4() {
			e.forwards[f.InsideIP.As4()] = f.Port
		}
	}
	e.alloc = NewAllocator(AllocatorConfig{Quarantine: to.Quarantine}, clk)
	e.table = conntrack.New(conntrack.Config{
		Timeouts: to,
		MaxCalls: cfg.MaxCalls,
		OnCallRemoved: func(c *conntrack.Call, why string) {
			e.alloc.Release(PoolKey{c.PublicIP, c.PeerIP}, c.OutsideCallID)
			if why == conntrack.ReasonCleared || why == conntrack.ReasonStopped {
				e.counters[rCallsCleared].Add(1)
			}
		},
	}, clk)
	return e
}

// SetReleaser sets the function that receives the verdict of a held packet
// (or of one released by Tick). data is the packet to send with an Accept
// verdict; it is only valid during the call.
func (e *Engine) SetReleaser(f func(id uint32, data []byte, v Verdict)) {
	e.releaser.Store(&f)
}

func (e *Engine) count(v Verdict, r reason) (Verdict, string) {
	e.counters[r].Add(1)
	return v, reasonNames[r]
}

// malformed applies the strict/lenient policy to a malformed packet.
func (e *Engine) malformed(r reason) (Verdict, string) {
	if e.strict {
		return e.count(Drop, r)
	}
	return e.count(Accept, r)
}

// direction reports whether p travels outbound (from the inside party).
func (e *Engine) direction(p *Packet) (outbound, known bool) {
	if p.Hook == Output || p.Hook == Postrouting {
		return true, true // leaving through the WAN (or router-originated)
	}
	if p.InIf == e.wan.Load() {
		return false, true
	}
	if len(e.lan) == 0 {
		return true, true
	}
	for _, i := range e.lan {
		if p.InIf == i {
			return true, true
		}
	}
	return false, false
}

// Process translates one IPv4 packet from NFQUEUE.
//
// A packet's way through the engine:
//  1. Validate the IPv4 header (IsValid); decide the direction from the hook
//     and ingress interface: LAN, Output or Postrouting => outbound, WAN =>
//     inbound.
//  2. GRE (47), outbound: look the call up by (src, dst, key = peer's call
//     ID), rewrite src to the public address. Inbound: look it up by
//     (dst = public, src = peer, key = outside call ID), rewrite dst to the
//     inside host and the key to its call ID. The IP checksum is patched
//     incrementally; enhanced GRE carries no checksum (C=1 is rejected).
//  3. TCP with port 1723 on the peer's (or, for forwards, the inside) side:
//     find or create the control connection, feed the payload to its helper,
//     patch the TCP checksum for every rewritten byte (RFC 1624). A held
//     segment is copied; its verdict comes later through the releaser.
//  4. Anything else is accepted untouched.
func (e *Engine) Process(p *Packet) (Verdict, string) {
	ip := pkt.IPv4(p.Data)
	if !ip.IsValid(len(p.Data)) {
		return e.malformed(rIPMalformed)
	}
	out, known := e.direction(p)
	switch ip.Protocol() {
	case pkt.IPv4ProtocolGRE:
		if !known {
			return e.count(Accept, rUnknownIface)
		}
		return e.processGRE(ip, out)
	case pkt.IPv4ProtocolTCP:
		return e.processTCP(p, ip, out, known)
	}
	return e.count(Accept, rNotPPTP)
}

// processGRE translates GRE.
//
// IPv4 fragments of GRE are dropped (counted as gre_fragment). The gateway's
// GRE rules sit at priority -50, after nf_defrag_ipv4 (-400), which the
// kernel's own conntrack/NAT for the other traffic keeps loaded, so GRE
// reaches us reassembled; only the first fragment would carry the key and
// translating it while dropping the rest would only waste bandwidth.
func (e *Engine) processGRE(ip pkt.IPv4, out bool) (Verdict, string) {
	if ip.IsFragment() {
		return e.count(Drop, rGREFragment)
	}
	g := ip.Payload()
	if _, _, err := wire.ParseGRE(g); err != nil {
		return e.count(Drop, rGREMalformed)
	}
	key := binary.BigEndian.Uint16(g[wire.GREKeyCallIDOffset:])
	n := int(ip.TotalLength())
	if out {
		pub, ok := e.table.Outbound(conntrack.OutKey{
			InsideIP: ip.SourceAddress(), PeerIP: ip.DestinationAddress(), PeerCallID: key}, n)
		if !ok {
			return e.count(Drop, rGRENoCall)
		}
		ip.SetSourceAddressWithChecksumUpdate(pub)
		return e.count(Accept, rGREOut)
	}
	inside, insideID, ok := e.table.Inbound(conntrack.InKey{
		PublicIP: ip.DestinationAddress(), PeerIP: ip.SourceAddress(), OutsideCallID: key}, n)
	if !ok {
		return e.count(Drop, rGRENoCall)
	}
	ip.SetDestinationAddressWithChecksumUpdate(inside)
	binary.BigEndian.PutUint16(g[wire.GREKeyCallIDOffset:], insideID)
	return e.count(Accept, rGREIn)
}

func (e *Engine) processTCP(p *Packet, ip pkt.IPv4, out, known bool) (Verdict, string) {
	if ip.IsFragment() {
		return e.malformed(rTCPFragment)
	}
	tcp := pkt.TCP(ip.Payload())
	if !tcp.IsValid() {
		return e.malformed(rTCPMalformed)
	}
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	sp, dp := tcp.SourcePort(), tcp.DestinationPort()
	if sp != wire.ControlPort && dp != wire.ControlPort {
		return e.count(Accept, rNotPPTP)
	}
	if !known {
		return e.count(Accept, rUnknownIface)
	}
	k := conntrack.ConnKey{InsideIP: src, PeerIP: dst, InsidePort: sp, PeerPort: dp}
	if !out {
		k = conntrack.ConnKey{InsideIP: dst, PeerIP: src, InsidePort: dp, PeerPort: sp}
	}
	fl := tcp.Flags()
	syn, fin, rst := fl&pkt.TCPFlagSyn != 0, fl&pkt.TCPFlagFin != 0, fl&pkt.TCPFlagRst != 0
	opening := syn && fl&pkt.TCPFlagAck == 0
	payload := tcp.Payload()
	hdir := helper.Inbound
	if out {
		hdir = helper.Outbound
	}

	e.ctlMu.Lock()
	c, v, r := e.ctlFor(k, out, opening, len(payload))
	if c == nil {
		e.ctlMu.Unlock()
		return v, r
	}
	var rel []release
	if len(payload) == 0 {
		res := c.hc.Process(hdir, tcp.SequenceNumber(), syn, fin, rst, nil)
		rel = e.released(c, hdir, res, rel)
		v, r = e.helperVerdict(res, r)
		e.ctlMu.Unlock()
		e.release(rel)
		return v, r
	}
	// The helper may hold on to the payload, so it gets an owned copy.
	// Control segments are rare (a handful per call): one allocation each.
	buf := append([]byte(nil), p.Data...)
	tcpOff := ip.HeaderLength()
	plOff := tcpOff + tcp.DataOffset()
	pl := buf[plOff : plOff+len(payload)]
	res := c.hc.Process(hdir, tcp.SequenceNumber(), syn, fin, rst, pl)
	rel = e.released(c, hdir, res, rel)
	switch res.Verdict {
	case helper.Hold:
		e.holds = append(e.holds, &heldPkt{
			id: p.ID, buf: buf, tcpOff: tcpOff, c: c, dir: hdir, deadline: e.clk.Now().Add(e.holdTO)})
		v, r = e.count(Hold, rCtlHeld)
	case helper.Accept:
		if len(res.Patches) > 0 {
			seg := pkt.TCP(p.Data[tcpOff:])
			cs := seg.Checksum()
			for _, pt := range res.Patches {
				if pt.Off < 0 || pt.Off >= len(payload) {
					continue // a helper bug; never write outside the payload
				}
				cs = pkt.UpdateByte(cs, pt.Off, pt.Old, pt.New)
				payload[pt.Off] = pt.New
			}
			seg.SetChecksum(cs)
		}
		v, r = e.helperVerdict(res, r)
	default:
		v, r = e.helperVerdict(res, r)
	}
	e.ctlMu.Unlock()
	e.release(rel)
	return v, r
}

// ctlFor finds or creates the control connection of key k. With a nil ctl it
// returns the final verdict for a segment that is not tracked. ctlMu is held.
func (e *Engine) ctlFor(k conntrack.ConnKey, out, opening bool, dataLen int) (*ctl, Verdict, string) {
	clientInside := k.PeerPort == wire.ControlPort // the inside party is the PPTP client
	_, forwarded := e.forwards[k.InsideIP]
	serverInside := !clientInside && (forwarded || k.InsideIP == e.pub)
	// The direction in which this connection is opened by a SYN.
	creator := (clientInside && out) || (serverInside && !out)
	cn, ok := e.table.LookupConn(k)
	if ok && !(opening && creator) {
		if c, _ := cn.Data.(*ctl); c != nil {
			return c, 0, ""
		}
	}
	if !clientInside && !serverInside {
		v, r := e.count(Accept, rCtlUntracked)
		return nil, v, r
	}
	var r reason
	switch {
	case opening && creator:
		r = rCtlNew // a new connection (replaces a stale one with the same tuple)
	case dataLen == 0:
		// Pure ACK/FIN/RST of an untracked connection: nothing to rewrite.
		v, r := e.count(Accept, rCtlEmpty)
		return nil, v, r
	case !e.strict:
		r = rCtlPickup
	default:
		v, r := e.count(Drop, rCtlNoConn)
		return nil, v, r
	}
	e.counters[r].Add(1)
	cn = e.table.AddConn(k, e.pub, serverInside)
	c := &ctl{cn: cn}
	c.hc = helper.NewConn(&mapper{e: e, c: c}, helper.Config{Strict: e.strict})
	cn.Data = c
	e.log.Debug("pptp control connection tracked", "inside", addrPort(k.InsideIP, k.InsidePort),
		"peer", addrPort(k.PeerIP, k.PeerPort), "how", reasonNames[r])
	return c, 0, reasonNames[r]
}

func addrPort(a [4]byte, p uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(a), p)
}

// helperVerdict maps a helper result to the engine's verdict and reason.
// created is the reason of a connection created by this segment, if any.
func (e *Engine) helperVerdict(res helper.Result, created string) (Verdict, string) {
	v := Accept
	if res.Verdict == helper.Drop {
		v = Drop
	}
	if res.Reason != "" {
		e.helperReasons[res.Reason]++
		if v == Drop || created == "" {
			return v, res.Reason
		}
	}
	if created != "" {
		return v, created
	}
	return e.count(v, rCtl)
}

// released handles res.Released: the held segment of c in direction dir is
// complete and patched; fix its TCP checksum and queue its release.
func (e *Engine) released(c *ctl, dir helper.Dir, res helper.Result, rel []release) []release {
	if !res.Released {
		return rel
	}
	idx := -1
	for i, h := range e.holds {
		if h.c == c && h.dir == dir {
			idx = i
			break
		}
	}
	if idx < 0 {
		return rel
	}
	h := e.holds[idx]
	e.holds = append(e.holds[:idx], e.holds[idx+1:]...)
	seg := pkt.TCP(h.buf[h.tcpOff:])
	cs := seg.Checksum()
	for _, pt := range res.ReleasedPatches {
		cs = pkt.UpdateByte(cs, pt.Off, pt.Old, pt.New)
	}
	seg.SetChecksum(cs)
	e.counters[rCtlReleased].Add(1)
	return append(rel, release{h.id, h.buf, Accept})
}

func (e *Engine) release(rel []release) {
	if len(rel) == 0 {
		return
	}
	f := e.releaser.Load()
	for _, r := range rel {
		if f != nil {
			(*f)(r.id, r.data, r.v)
		}
	}
}

// Tick expires held packets (lenient: released unmodified; strict: dropped),
// idle calls and control connections, and quarantined call IDs, and logs
// the rate-limited drop summary. Call it periodically from one goroutine
// (e.g. every 100ms: it bounds how late a hold expires).
func (e *Engine) Tick() {
	now := e.clk.Now()
	var rel []release
	e.ctlMu.Lock()
	kept := e.holds[:0]
	for _, h := range e.holds {
		if now.Before(h.deadline) {
			kept = append(kept, h)
			continue
		}
		h.c.hc.ExpireHeld()
		e.counters[rCtlHoldExpire].Add(1)
		v := Accept
		if e.strict {
			v = Drop
		}
		rel = append(rel, release{h.id, h.buf, v})
	}
	clear(e.holds[len(kept):])
	e.holds = kept
	e.ctlMu.Unlock()
	e.release(rel)
	e.table.Sweep()
	e.alloc.Tick()
	e.logDrops(now)
}

// dropReasons are the reasons logged in the periodic drop summary.
var dropReasons = [...]reason{rGRENoCall, rGREMalformed, rGREFragment, rCtlNoConn, rCtlHoldExpire,
	rIPMalformed, rTCPMalformed, rTCPFragment, rCallIDsOut}

// logDrops logs, at most once per SummaryInterval, how many packets were
// dropped (or malformed) per reason since the last line. Only Tick calls it.
func (e *Engine) logDrops(now time.Time) {
	if now.Sub(e.lastSummary) < SummaryInterval {
		return
	}
	e.lastSummary = now
	var attrs []any
	for _, r := range dropReasons {
		n := e.counters[r].Load()
		if d := n - e.lastDrops[r]; d > 0 {
			attrs = append(attrs, reasonNames[r], d)
		}
		e.lastDrops[r] = n
	}
	if len(attrs) > 0 {
		e.log.Warn("pptp packets dropped or malformed since last report", attrs...)
	}
}

// SetPublicIP changes the address new control connections (and their calls)
// are translated to: a WAN whose address changed under masquerade, such as a
// DHCP or PPPoE uplink. Connections already tracked keep the address they
// were set up with; the kernel's masquerade drops theirs with the old
// address, and their calls expire or are torn down with them.
func (e *Engine) SetPublicIP(a netip.Addr) error {
	if !a.Is4() {
		return fmt.Errorf("public address %v is not IPv4", a)
	}
	e.ctlMu.Lock()
	e.pub = a.As4()
	e.ctlMu.Unlock()
	return nil
}

// SetWANIndex changes the WAN's interface index: the interface was deleted
// and created again under the same name (a PPPoE or VPN uplink reconnecting).
func (e *Engine) SetWANIndex(i uint32) { e.wan.Store(i) }

// WANIndex returns the WAN interface index the engine uses.
func (e *Engine) WANIndex() uint32 { return e.wan.Load() }

// PublicIP returns the address new control connections are translated to
// (invalid if none was configured).
func (e *Engine) PublicIP() netip.Addr {
	e.ctlMu.Lock()
	defer e.ctlMu.Unlock()
	if e.pub == ([4]byte{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom4(e.pub)
}

// Calls returns a snapshot of the tracked calls, ordered by inside address
// and call ID.
func (e *Engine) Calls() []CallInfo {
	snap := e.table.Snapshot()
	out := make([]CallInfo, 0, len(snap))
	for _, s := range snap {
		ci := CallInfo{
			InsideIP: netip.AddrFrom4(s.InsideIP), PublicIP: netip.AddrFrom4(s.PublicIP),
			PeerIP: netip.AddrFrom4(s.PeerIP), InsidePort: s.InsidePort,
			InsideCallID: s.InsideCallID, OutsideCallID: s.OutsideCallID, PeerCallID: s.PeerCallID,
			State: s.State.String(), Idle: s.Idle,
			PktsOut: s.PktsOut, PktsIn: s.PktsIn, BytesOut: s.BytesOut, BytesIn: s.BytesIn,
		}
		if s.Forward {
			ci.PublicPort = e.forwards[s.InsideIP]
			if ci.PublicPort == 0 {
				ci.PublicPort = wire.ControlPort
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].InsideIP.Compare(out[j].InsideIP); c != 0 {
			return c < 0
		}
		return out[i].InsideCallID < out[j].InsideCallID
	})
	return out
}

// Counters returns every counter: packet verdict reasons, helper reasons
// ("helper_<reason>"), table and allocator statistics and gauges.
func (e *Engine) Counters() map[string]uint64 {
	m := make(map[string]uint64, int(numReasons)+16)
	for i := range numReasons {
		m[reasonNames[i]] = e.counters[i].Load()
	}
	e.ctlMu.Lock()
	for k, v := range e.helperReasons {
		m["helper_"+k] = v
	}
	m["ctl_holding"] = uint64(len(e.holds))
	e.ctlMu.Unlock()
	st := e.table.Stats()
	m["calls_evicted"] = st.CallsEvicted
	m["calls_expired"] = st.CallsExpired
	m["conns_evicted"] = st.ConnsEvicted
	m["conns_expired"] = st.ConnsExpired
	conns, calls := e.table.Len()
	m["conns_active"] = uint64(conns)
	m["calls_active"] = uint64(calls)
	as := e.alloc.Stats()
	m["callid_allocated"] = as.Allocated
	m["callid_released"] = as.Released
	m["callid_collisions"] = as.Collisions
	return m
}

// mapper implements helper.Mapper for one control connection on top of the
// allocator and the table. It runs with the engine's ctlMu held.
type mapper struct {
	e *Engine
	c *ctl
}

func (m *mapper) AllocOutside(insideID uint16) (uint16, error) {
	t, cn := m.e.table, m.c.cn
	if o, ok := t.OutsideOf(cn, insideID); ok {
		return o, nil // a retransmitted request
	}
	pk := PoolKey{cn.PublicIP, cn.Key.PeerIP}
	id, err := m.e.alloc.Alloc(pk)
	if err != nil {
		m.e.counters[rCallIDsOut].Add(1)
		return 0, err
	}
	if err := t.AddCall(cn, insideID, id); err != nil {
		m.e.alloc.Release(pk, id)
		return 0, err
	}
	m.e.counters[rCallsMapped].Add(1)
	return id, nil
}

func (m *mapper) OutsideOf(insideID uint16) (uint16, bool) {
	return m.e.table.OutsideOf(m.c.cn, insideID)
}

func (m *mapper) InsideOf(outsideID uint16) (uint16, bool) {
	return m.e.table.InsideOf(m.c.cn, outsideID)
}

func (m *mapper) Event(ev helper.Event) {
	t, cn := m.e.table, m.c.cn
	switch ev.Kind {
	case helper.CallEstablished:
		if err := t.Establish(cn, ev.InsideID, ev.PeerID); err != nil {
			m.e.counters[rEstablishNoCall].Add(1)
			return
		}
		m.e.counters[rCallsEstablished].Add(1)
		m.e.log.Debug("pptp call established", "inside", netip.AddrFrom4(cn.Key.InsideIP),
			"inside_call_id", ev.InsideID, "outside_call_id", ev.OutsideID, "peer_call_id", ev.PeerID)
	case helper.CallFailed, helper.CallCleared:
		t.RemoveCall(cn, ev.InsideID, conntrack.ReasonCleared)
	case helper.ControlStopped:
		t.StopConn(cn)
	case helper.EchoSeen:
		t.RefreshCalls(cn)
	}
}

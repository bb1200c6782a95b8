package nat

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
)

// Forward publishes a PPTP server inside: the kernel DNATs TCP Port on the
// public address to InsideIP:1723. The Engine then sees the control
// connection with the inside party as the server (roles reversed) and
// translates its calls the same way.
type Forward struct {
	Port     uint16 // public TCP port (shown as public_port in `pptpgw calls`)
	InsideIP netip.Addr
}

// EngineConfig configures an Engine. Reconfigure (reload.go) applies a new
// one to a running Engine, except PublicIP and WANIf (SetPublicIP,
// SetWANIndex) and Logger.
type EngineConfig struct {
	PublicIP netip.Addr // the WAN address calls are translated to (IPv4)
	WANIf    uint32     // ifindex of the WAN interface
	LANIfs   []uint32   // ifindexes of the LAN interfaces; empty: every non-WAN interface
	// Strict drops malformed IPv4/TCP packets and untracked control segments
	// carrying data; lenient (false) accepts them untouched. GRE that is
	// malformed, fragmented or matches no call is dropped in both modes: GRE
	// is notracked, so the kernel would forward it untranslated.
	Strict bool
	// Timeouts of the call table, the allocator's quarantine and held
	// segments; zero fields take conntrack's defaults.
	Timeouts conntrack.Timeouts
	// Limits per source host and per control connection; zero fields take
	// conntrack's defaults.
	Limits   conntrack.Limits
	MaxCalls int // bound of the call table (and of the control connection table); 0: conntrack.DefaultMaxCalls
	Forwards []Forward
	Logger   *slog.Logger // nil: slog.Default()

	// Shaping (issue 9): classes of PPTP traffic, per-call policing.
	QoS QoSConfig
	// pool (issue 11): published server pools (pool.go).
	Pools []Pool
	// Kernel fast path (issue 12): with KernelMaps set, established calls'
	// GRE is translated by these nftables maps (kernelpath.go); nil: every
	// GRE packet through NFQUEUE (gre_path: userspace).
	KernelMaps KernelMaps
}

// Settings are the values an Engine runs with, defaults applied: what the
// configuration became once it reached the engine.
type Settings struct {
	Strict   bool
	Timeouts conntrack.Timeouts
	Limits   conntrack.Limits
	MaxCalls int
	Forwards []Forward

	// pool (issue 11): the pools, defaults applied.
	Pools []Pool
}

// Engine translates PPTP packets. Process, Handle, Tick, Calls, Collect and
// Counters are safe for concurrent use (the lock order is in the package
// comment).
type Engine struct {
	pub [4]byte // new control connections' public address; ctlMu
	wan atomic.Uint32
	clk conntrack.Clock
	log *slog.Logger

	table *conntrack.Table
	alloc *Allocator

	counters *metrics.Counters // indexed by reason (counters.go)
	releaser atomic.Pointer[func(queue uint16, id uint32, data []byte, v pkt.Verdict)]

	ctlMu     sync.Mutex
	holds     []*heldSegment
	heldBytes int // sum of the holds' copies
	maxHeld   int // MaxHeldBytes; tests lower it

	// Drop summary logging (Tick only): logs are rate-limited to one line
	// per SummaryInterval listing the drop reasons that grew.
	lastSummary time.Time
	lastDrops   [numReasons]uint64

	// observability (issue 8): drops_total by reason, call events.
	drops  *metrics.Counters // same index space as counters (metrics_obs.go)
	events eventHub          // events.go
	// Shaping (issue 9): policing.go.
	qos atomic.Pointer[engineQoS] // reloadable: Reconfigure swaps it
	// pool (issue 11): the pools, replaced as a whole by ApplyPools (pool.go).
	poolSet atomic.Pointer[poolSet]
	poolMu  sync.Mutex // serialises ApplyPools
	// Hairpin (hairpin.go): the aliases of hairpin calls, and the public
	// address for the GRE path.
	hpMu    sync.Mutex
	hp      map[hpKey][4]byte
	pubHP   atomic.Uint32
	hpCount [numHP]atomic.Uint64
	kp      *kernelPath // kernel fast path (issue 12); nil: userspace GRE
	// several uplinks (issue 10, uplinks.go)
	ups uplinkState
	// Reload (issue 8): the reloadable settings, LAN interfaces and
	// forwards, swapped whole by Reconfigure (reload.go).
	cur atomic.Pointer[live]
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
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = conntrack.DefaultMaxCalls
	}
	l := newLive(cfg)
	e := &Engine{
		clk:      clk,
		log:      log,
		counters: newCounters(),
		maxHeld:  MaxHeldBytes,
		drops:    newDropCounters(),
	}
	e.setQoS(cfg.QoS) // shaping (issue 9)
	e.wan.Store(cfg.WANIf)
	if cfg.PublicIP.Is4() {
		e.pub = cfg.PublicIP.As4()
		e.setPubHP(e.pub) // pool (issue 11): hairpin.go
	} else {
		log.Error("nat: public address is not IPv4; no call will be translated", "public", cfg.PublicIP)
	}
	e.cur.Store(l)
	e.alloc = NewAllocator(AllocatorConfig{Quarantine: l.set.Timeouts.CallIDQuarantine}, clk)
	e.initPools(cfg.Pools) // pool (issue 11), pool.go
	e.table = conntrack.New(conntrack.Config{
		Timeouts: l.set.Timeouts,
		Limits:   l.set.Limits,
		MaxCalls: l.set.MaxCalls,
		OnCallRemoved: func(c *conntrack.Call, why string) {
			pk := PoolKey{c.PublicIP, c.PeerIP}
			switch {
			case c.CarriedGRE() || unansweredRequest(c, why):
				e.alloc.Release(pk, c.OutsideCallID)
			case e.kp != nil && e.kp.releaseLater(c, pk): // kernel fast path (issue 12): its GRE may have gone by the kernel
			default:
				e.alloc.ReleaseUnused(pk, c.OutsideCallID)
			}
			if why == conntrack.ReasonCleared || why == conntrack.ReasonStopped {
				e.counters.Inc(int(rCallsCleared))
			}
			e.callRemoved(c, why) // teardown counters and events (events.go)
			e.poolCallRemoved(c)  // pool (issue 11)
			if e.kp != nil {
				e.kp.down(c)
			}
		},
		OnCallEstablished: func(c *conntrack.Call) {
			// A hairpin call, whose GRE never crosses an uplink, stays on
			// the userspace path (kernelEligible); classes, policers and
			// uplinks go into the elements (kfeat: kernelpath_qos.go).
			// A call set up again (another peer call ID) that no longer
			// qualifies (a reload dropped its class or policer) gives its
			// elements up: left in the kernel under its old key, they
			// would translate until the call ends.
			switch {
			case e.kp == nil:
			case e.kernelEligible(c):
				e.kp.up(c)
			default:
				e.kp.down(c)
			}
		},
		OnControlRemoved: func(cn *conntrack.Control, why string) {
			e.poolControlRemoved(cn, why) // pool (issue 11)
			e.controlRemoved(cn, why)     // uplink pins (issue 10)
		},
	}, clk)
	if cfg.KernelMaps != nil {
		e.kp = newKernelPath(cfg.KernelMaps, e.table, e.alloc, e.conf().set.Timeouts)
		e.kp.eligible = e.kernelEligible
		e.kp.carried = e.countKernelGRE
		e.setupKernelQoS() // kfeat (issue 12): kernelpath_qos.go
	}
	return e
}

// unansweredRequest reports whether c leaves the table while the peer may
// still answer it: its request went out with the outside call ID, no reply
// came, and the gateway gave up on it on its own (idle expiry, early drop,
// the connection's own expiry or eviction). A late reply and GRE for that
// ID must not reach a new call that got it, so it is quarantined like a call
// that carried GRE. Calls refused, failed, cleared or stopped by signalling
// come back at once.
func unansweredRequest(c *conntrack.Call, why string) bool {
	if c.State() != conntrack.CallRequested {
		return false
	}
	switch why {
	case conntrack.ReasonExpired, conntrack.ReasonEarlyDrop, conntrack.ReasonConnRemoved, conntrack.ReasonEvicted:
		return true
	}
	return false
}

// Settings returns what the engine runs with, defaults applied.
func (e *Engine) Settings() Settings {
	s := e.conf().set
	s.Pools = slices.Clone(e.ps().cfg) // pool (issue 11): as last applied
	return s
}

// SetReleaser sets the function that receives the verdict of a held packet
// (or of one released by Tick). data is the packet to send with an Accept
// verdict; it is only valid during the call.
func (e *Engine) SetReleaser(f func(id uint32, data []byte, v pkt.Verdict)) {
	e.SetQueueReleaser(func(_ uint16, id uint32, data []byte, v pkt.Verdict) { f(id, data, v) })
}

// SetQueueReleaser is SetReleaser for several queues: f also gets the
// number of the queue the held packet came from (nfq.Packet.Queue).
func (e *Engine) SetQueueReleaser(f func(queue uint16, id uint32, data []byte, v pkt.Verdict)) {
	e.releaser.Store(&f)
}

// Handle is Process as an nfq.Handler. A packet Process rewrote is marked
// Modified (by processGRE and processTCP) so that nfq sends its bytes back.
func (e *Engine) Handle(p *nfq.Packet) pkt.Verdict {
	v, _ := e.Process(p)
	return v
}

// Process decides about one IPv4 packet from NFQUEUE and rewrites it in
// place; it returns the verdict and the reason counted for it.
//
// A packet's way through the engine:
//  1. Parse it once (pkt.Parsed); decide the direction from the hook and
//     the ingress interface (direction): LAN, Output or Postrouting =>
//     outbound, WAN => inbound.
//  2. GRE (47): processGRE (gre.go) finds the call from either direction
//     and rewrites the source (outbound) or destination and key (inbound).
//  3. TCP with port 1723 on the peer's (or, for forwards, the inside) side:
//     processTCP (control.go) feeds the payload to the control connection's
//     translator and patches the TCP checksum for every rewritten byte. A
//     held segment is copied; its verdict comes later through the releaser.
//  4. Anything else is accepted untouched.
func (e *Engine) Process(p *nfq.Packet) (pkt.Verdict, string) {
	if len(p.Payload) == 0 {
		// Queued before the copy mode was set: nothing to look at, and
		// nothing nfq could send back. Dropped in both modes (it may be
		// GRE, which must never leave untranslated).
		return e.count(pkt.Drop, rIPMalformed)
	}
	var pp pkt.Parsed
	pp.Parse(p.Payload)
	if pp.Err == pkt.ErrIPv4 {
		return e.malformed(rIPMalformed)
	}
	out, known := e.direction(p)
	switch pp.Proto {
	case pkt.IPv4ProtocolGRE:
		if !known {
			return e.count(pkt.Accept, rUnknownIface)
		}
		return e.processGRE(p, &pp, out)
	case pkt.IPv4ProtocolTCP:
		v, r := e.processTCP(p, &pp, out, known)
		e.classControl(p, v, insideOf(&pp, out)) // shaping (issue 9): policing.go
		return v, r
	}
	return e.count(pkt.Accept, rNotPPTP)
}

// direction reports whether p travels outbound (from the inside party).
func (e *Engine) direction(p *nfq.Packet) (outbound, known bool) {
	if p.Hook == nfq.HookOutput || p.Hook == nfq.HookPostrouting {
		return true, true // leaving through the WAN (or router-originated)
	}
	if p.InDev == e.wan.Load() || e.isUplinkIf(p.InDev) {
		return false, true
	}
	lan := e.conf().lan
	if len(lan) == 0 {
		return true, true
	}
	for _, i := range lan {
		if p.InDev == i {
			return true, true
		}
	}
	return false, false
}

// malformed applies the strict/lenient policy to a malformed packet.
func (e *Engine) malformed(r reason) (pkt.Verdict, string) {
	if e.conf().set.Strict {
		return e.count(pkt.Drop, r)
	}
	return e.count(pkt.Accept, r)
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
	e.setPubHP(e.pub) // pool (issue 11): hairpin.go
	e.ctlMu.Unlock()
	e.SetUplink(0, 0, a) // issue 10
	return nil
}

// SetWANIndex changes the WAN's interface index: the interface was deleted
// and created again under the same name (a PPPoE or VPN uplink reconnecting).
func (e *Engine) SetWANIndex(i uint32) {
	old := e.wan.Swap(i)
	// Refresh the kernel path's elements once: setUplink does when the
	// uplink table's index changed (several uplinks), else here if the
	// WAN's did (kfeat, issue 12).
	if !e.setUplink(0, i, netip.Addr{}) && old != i {
		e.refreshKernelGRE()
	}
}

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

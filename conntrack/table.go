// Package conntrack tracks PPTP control connections and the calls (GRE flows)
// they set up, for the gateway's userspace GRE NAT. It also holds the
// gateway's timeouts and their defaults (Timeouts, Default*), which the
// configuration and the engine share, and the injectable Clock.
//
// It owns the call table: keys, states, idle timeouts, the LRU bound and
// every removal. It must not know about packets, PPTP's wire formats, the
// allocator's pools (it reports removals through OnCallRemoved) or the
// configuration file.
//
// A control connection is keyed by its inside 4-tuple as the gateway's
// NFQUEUE hook sees it (after kernel de-NAT): inside IP:port <-> peer IP:port,
// one of the ports being 1723. Each call is reachable in O(1) from both
// directions of GRE:
//
//	outbound (inside -> peer): OutKey{InsideIP, PeerIP, PeerCallID}   (the GRE key the inside host sends)
//	inbound  (peer -> public): InKey{PublicIP, PeerIP, OutsideCallID} (the GRE key the peer sends)
//
// The inbound key is unique by construction (nat allocates OutsideCallID per
// (PublicIP, PeerIP)), so it doubles as the primary key: the calls' LRU
// (calllru.go: intrusive, with simplelru's semantics; its index and the
// outbound one are hash sets of calls, callset.go) is keyed by InKey and
// every removal, whatever its cause (early drop, idle expiry, call clear,
// control stop), goes through the LRU's eviction callback, which cleans
// the outbound index and the connection's call list and reports the
// removal (nat releases the outside call ID there, into quarantine if the
// call carried GRE).
//
// # Bounds, early drop and limits
//
// Established state is never evicted by state that is not (the kernel
// conntrack's early-drop idea). A control connection is in setup from its
// SYN (or pickup) until its Start-Control-Connection-Reply (EstablishControl)
// or the set-up of one of its calls; a call is in setup from its request
// until its reply (Establish). Entries in setup expire after SetupTimeout
// and sit in a FIFO of their own (setupQueue), oldest first: when the
// connection or call table is full, the oldest entry in setup is dropped
// (ReasonEarlyDrop), and if there is none, the new entry is refused
// (ErrTableFull). So the tables' bounds (MaxConns, MaxCalls) are never
// enforced by removing an established connection or a set-up call: those
// leave only by their idle timeouts, which their GRE (Outbound, Inbound) and
// Echo (RefreshCalls) keep fresh, or by their signalling.
//
// Limits (per source host: connections and calls; per connection: calls)
// refuse new state too (ErrSourceLimit, ErrConnLimit), so that one host
// cannot take the tables or the outside call-ID pools. A connection's
// source is the host that opened it: the inside host, or the outside peer
// for forwards and the gateway's own server.
//
// # Locking
//
// One mutex, Table.mu, guards everything in a Table; the lock order across
// packages is written once, in package nat's comment. The OnCallRemoved
// callback runs with Table.mu held and must not call back into the Table.
//
// Why not sharded locks (as gVisor's conntrack does)? The table is fed by one
// NFQUEUE reader goroutine, so the lock is uncontended in practice; critical
// sections are one or two map operations; and the global bounds need one
// count and one early-drop FIFO anyway, which sharding would split into
// per-shard bounds.
// If profiling ever shows contention, the natural split is per NFQUEUE queue
// (one Table per queue), not per hash bucket.
package conntrack

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// ControlKey identifies a control connection by its inside 4-tuple.
type ControlKey struct {
	InsideIP, PeerIP     [4]byte
	InsidePort, PeerPort uint16
}

// OutKey finds a call from an outbound GRE packet (src, dst, key).
type OutKey struct {
	InsideIP, PeerIP [4]byte
	PeerCallID       uint16
}

// InKey finds a call from an inbound GRE packet (dst, src, key).
type InKey struct {
	PublicIP, PeerIP [4]byte
	OutsideCallID    uint16
}

// CallState is the state of a tracked call.
type CallState uint8

const (
	// CallRequested: the call ID was mapped, the call is not set up yet (no GRE).
	CallRequested CallState = iota
	// CallUnreplied: set up (OCRP/ICCN), GRE not yet seen in both directions.
	CallUnreplied
	// CallReplied: GRE seen in both directions.
	CallReplied
)

func (s CallState) String() string {
	switch s {
	case CallRequested:
		return "requested"
	case CallUnreplied:
		return "unreplied"
	case CallReplied:
		return "replied"
	}
	return "unknown"
}

// Removal reasons reported to Config.OnCallRemoved and counted in Stats.
const (
	ReasonEvicted     = "evicted"         // LRU bound reached
	ReasonExpired     = "expired"         // idle timeout
	ReasonCleared     = "cleared"         // Call-Clear-Request / Call-Disconnect-Notify / failed setup
	ReasonStopped     = "control_stopped" // Stop-Control-Connection, FIN, RST
	ReasonConnRemoved = "conn_removed"    // its control connection was evicted, expired or replaced
	ReasonReplaced    = "replaced"        // a newer call took over its outbound key
	ReasonPurged      = "purged"          // Table.Purge
	ReasonEarlyDrop   = "early_dropped"   // not established, and the table was full
)

// Errors.
var (
	ErrConnGone   = errors.New("conntrack: control connection no longer tracked")
	ErrCallExists = errors.New("conntrack: call already tracked")
	ErrNoCall     = errors.New("conntrack: no such call")
	// ErrTableFull: the table is full of established state; nothing new is
	// tracked until some of it leaves.
	ErrTableFull = errors.New("conntrack: table full of established state")
	// ErrSourceLimit: the source host holds Limits.ConnsPerSource
	// connections or Limits.CallsPerSource calls.
	ErrSourceLimit = errors.New("conntrack: per-source limit reached")
	// ErrConnLimit: the control connection holds Limits.CallsPerConn calls.
	ErrConnLimit = errors.New("conntrack: calls per control connection limit reached")
)

// Control is a tracked control connection. Exported fields are set at creation
// and never change; the rest is guarded by the Table.
type Control struct {
	Key      ControlKey
	PublicIP [4]byte
	// Forward: the inside party is a server reached through a port forward
	// (the peer opened the connection).
	Forward bool
	Created time.Time
	// Data belongs to the caller (nat keeps its helper state here). The
	// Table never reads or writes it; the caller synchronises access.
	Data any

	lastSeen    time.Time
	calls       []*Call
	src         *source
	setup       setupHooks[Control] // in Table.setupConns until established
	established bool
	closing     bool
	dead        bool
}

func (cn *Control) hooks() *setupHooks[Control] { return &cn.setup }

// Source returns the address of the host that opened the connection: the
// inside host, or the peer for a forward (or the gateway's own server).
func (cn *Control) Source() [4]byte { return sourceOf(cn.Key, cn.Forward) }

func sourceOf(k ControlKey, forward bool) [4]byte {
	if forward {
		return k.PeerIP
	}
	return k.InsideIP
}

// source is what one source host holds in the table.
type source struct{ conns, calls int }

// Call is a tracked call. Exported identity fields never change after
// creation, except PeerCallID which is set once by Establish.
type Call struct {
	conn                       *Control
	InsideIP, PublicIP, PeerIP [4]byte
	InsideCallID               uint16
	OutsideCallID              uint16
	PeerCallID                 uint16

	state           CallState
	seenOut, seenIn bool
	// uplink is 1 + the index of the uplink the kernel path put the call
	// on, 0 until it did (KernelUplink; kfeat, issue 12).
	uplink uint8
	// class is the call's class, 1 + index in `classes:`, 0 for none
	// (shaping, issue 9: qos.go). uplink and class sit here, not in
	// callQoS, to fill what would be padding (memory, issue 12).
	class int16
	// created and lastSeen are nanoseconds of the table's clock since its
	// epoch (Table.nanos): 8 bytes each instead of a time.Time's 24.
	created, lastSeen                  int64
	setup                              setupHooks[Call] // in Table.setupCalls until its reply
	pktsOut, pktsIn, bytesOut, bytesIn uint64

	// Shaping (issue 9): class and policers (qos.go).
	qos callQoS

	// Memory (issue 12): the LRU's links (calllru.go) and the kernel fast
	// path's record (kernelrec.go).
	lru    lruHooks
	kernel KernelRec
}

func (c *Call) hooks() *setupHooks[Call] { return &c.setup }

// CarriedGRE reports whether GRE of the call was seen in either direction.
// Only for OnCallRemoved (it reads state the table lock guards).
func (c *Call) CarriedGRE() bool { return c.seenOut || c.seenIn }

// State is the call's state. Only for OnCallRemoved, like CarriedGRE.
func (c *Call) State() CallState { return c.state }

func (c *Call) inKey() InKey { return InKey{c.PublicIP, c.PeerIP, c.OutsideCallID} }
func (c *Call) outKey() OutKey {
	return OutKey{c.InsideIP, c.PeerIP, c.PeerCallID}
}

// Config configures a Table.
type Config struct {
	Timeouts Timeouts
	Limits   Limits
	MaxCalls int // bound of the call table; 0 => DefaultMaxCalls
	MaxConns int // bound of the control connection table; 0 => MaxCalls
	// OnCallRemoved is called, with the table lock held, for every call that
	// leaves the table. It must not call into the Table.
	OnCallRemoved func(c *Call, reason string)

	// OnControlRemoved is called, with the table lock held, for every
	// control connection that leaves the table (after its calls), with the
	// reason (ReasonEvicted if the LRU bound pushed it out). It must not
	// call into the Table. Pools (issue 11) and uplink pins (issue 10)
	// follow their connections with it.
	OnControlRemoved func(cn *Control, reason string)
	// Kernel fast path (issue 12): OnCallEstablished is called, with the
	// table lock held, when Establish sets a call up (GRE may flow). Like
	// OnCallRemoved it must not call into the Table.
	OnCallEstablished func(c *Call)
}

// Stats are removal and refusal counters.
type Stats struct {
	CallsEvicted, CallsExpired, ConnsEvicted, ConnsExpired uint64
	// Early drops: state in setup removed to make room (ReasonEarlyDrop).
	ConnsEarlyDropped, CallsEarlyDropped uint64
	// Refusals, by reason: the table full of established state
	// (ErrTableFull), a per-source limit (ErrSourceLimit), the per-connection
	// limit (ErrConnLimit).
	ConnsRefusedFull, ConnsRefusedSource                   uint64
	CallsRefusedFull, CallsRefusedSource, CallsRefusedConn uint64
}

// Table is the connection and call table. All methods are safe for
// concurrent use.
type Table struct {
	clk      Clock
	to       Timeouts
	lim      Limits
	maxConns int
	maxCalls int
	onRemove func(*Call, string)
	onConnRm func(*Control, string) // Config.OnControlRemoved
	onUp     func(*Call)            // kernel fast path (issue 12)

	// epoch is the instant calls' times count from (Table.nanos).
	epoch time.Time

	mu    sync.Mutex
	conns *simplelru.LRU[ControlKey, *Control]
	calls *callLRU // primary store and inbound index
	out   *callSet // outbound index (established calls only; callset.go)
	// State in setup, oldest first: the early-drop candidates.
	setupConns setupQueue[Control, *Control]
	setupCalls setupQueue[Call, *Call]
	sources    map[[4]byte]*source
	// reason is the removal reason passed to the eviction callbacks; empty
	// means the LRU evicted on its own because it was full.
	reason string
	stats  Stats
}

// New returns an empty table. clk nil means SystemClock.
func New(cfg Config, clk Clock) *Table {
	if clk == nil {
		clk = SystemClock{}
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = cfg.MaxCalls
	}
	t := &Table{
		clk:      clk,
		epoch:    clk.Now(),
		to:       cfg.Timeouts.WithDefaults(),
		lim:      cfg.Limits.WithDefaults(),
		maxConns: cfg.MaxConns,
		maxCalls: cfg.MaxCalls,
		onRemove: cfg.OnCallRemoved,
		onUp:     cfg.OnCallEstablished,
		onConnRm: cfg.OnControlRemoved,
		out:      newCallSet(true),
		sources:  make(map[[4]byte]*source),
	}
	// NewLRU only fails for size <= 0, excluded above. The LRUs never
	// evict on their own: AddControl and AddCall make room (early drop) or
	// refuse before they add.
	t.calls = newCallLRU(t.callEvicted)
	t.conns, _ = simplelru.NewLRU[ControlKey, *Control](cfg.MaxConns, t.connEvicted)
	return t
}

// Timeouts returns the effective timeouts (defaults applied).
func (t *Table) Timeouts() Timeouts { t.mu.Lock(); defer t.mu.Unlock(); return t.to }

// Limits returns the effective limits (defaults applied).
func (t *Table) Limits() Limits { t.mu.Lock(); defer t.mu.Unlock(); return t.lim }

// callEvicted is the single exit path of a call. t.mu is held.
func (t *Table) callEvicted(_ InKey, c *Call) {
	reason := t.reason
	if reason == "" {
		reason = ReasonEvicted
		t.stats.CallsEvicted++
	}
	if c.state != CallRequested {
		if k := c.outKey(); t.out.getOut(k) == c {
			t.out.removeOut(k)
		}
	}
	t.setupCalls.remove(c)
	if cn := c.conn; cn != nil {
		if cn.src != nil {
			cn.src.calls--
		}
		for i, x := range cn.calls {
			if x == c {
				last := len(cn.calls) - 1
				cn.calls[i] = cn.calls[last]
				cn.calls[last] = nil
				cn.calls = cn.calls[:last]
				break
			}
		}
	}
	if t.onRemove != nil {
		t.onRemove(c, reason)
	}
}

// connEvicted is the single exit path of a control connection. t.mu is held.
func (t *Table) connEvicted(_ ControlKey, cn *Control) {
	if t.reason == "" {
		t.stats.ConnsEvicted++
	}
	cn.dead = true
	t.setupConns.remove(cn)
	saved := t.reason
	t.reason = ReasonConnRemoved
	for len(cn.calls) > 0 {
		c := cn.calls[len(cn.calls)-1]
		if !t.calls.Remove(c.inKey()) {
			// Not in the LRU (cannot happen); unlink by hand to end the loop.
			cn.calls = cn.calls[:len(cn.calls)-1]
		}
	}
	t.reason = saved
	if s := cn.src; s != nil {
		s.conns--
		if s.conns <= 0 && s.calls <= 0 {
			delete(t.sources, cn.Source())
		}
	}
	if t.onConnRm != nil {
		r := t.reason
		if r == "" {
			r = ReasonEvicted
		}
		t.onConnRm(cn, r)
	}
}

func (t *Table) removeCall(c *Call, reason string) {
	saved := t.reason
	t.reason = reason
	t.calls.Remove(c.inKey())
	t.reason = saved
}

func (t *Table) removeConn(cn *Control, reason string) {
	saved := t.reason
	t.reason = reason
	t.conns.Remove(cn.Key)
	t.reason = saved
}

func (t *Table) callTimeout(c *Call) time.Duration {
	switch c.state {
	case CallUnreplied:
		return t.to.GREUnreplied
	case CallReplied:
		return t.to.GREReplied
	}
	return min(SetupTimeout, t.to.ControlIdle)
}

func (t *Table) connTimeout(cn *Control) time.Duration {
	switch {
	case cn.closing:
		return min(ClosingTimeout, t.to.ControlIdle)
	case !cn.established:
		return min(SetupTimeout, t.to.ControlIdle)
	}
	return t.to.ControlIdle
}

// earlyDropConn removes the oldest control connection in setup, if there
// is one, to make room in the full connection table. t.mu is held.
func (t *Table) earlyDropConn() bool {
	cn := t.setupConns.front()
	if cn == nil {
		return false
	}
	t.stats.ConnsEarlyDropped++
	t.removeConn(cn, ReasonEarlyDrop)
	return true
}

// earlyDropCall removes the oldest call waiting for its reply, if there
// is one, to make room in the full call table. t.mu is held.
func (t *Table) earlyDropCall() bool {
	c := t.setupCalls.front()
	if c == nil {
		return false
	}
	t.stats.CallsEarlyDropped++
	t.removeCall(c, ReasonEarlyDrop)
	return true
}

func (t *Table) callExpired(c *Call, now time.Time) bool {
	return time.Duration(t.nanos(now)-c.lastSeen) > t.callTimeout(c)
}

// nanos is now as a call's time: nanoseconds since the table's epoch (with
// the clock's monotonic reading when both have one).
func (t *Table) nanos(now time.Time) int64 { return int64(now.Sub(t.epoch)) }

// at is the instant of a call's time ns.
func (t *Table) at(ns int64) time.Time { return t.epoch.Add(time.Duration(ns)) }

func (t *Table) connExpired(cn *Control, now time.Time) bool {
	return now.Sub(cn.lastSeen) > t.connTimeout(cn)
}

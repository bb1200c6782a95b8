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
// (PublicIP, PeerIP)), so it doubles as the primary key: the LRU
// (hashicorp/golang-lru/v2 simplelru) is keyed by InKey and every removal,
// whatever its cause (early drop, idle expiry, call clear, control stop),
// goes through the LRU's eviction callback, which cleans the outbound index,
// the connection's call list and reports the removal (nat releases the
// outside call ID there, into quarantine if the call carried GRE).
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

// The gateway's defaults: the configuration (package rules) starts from
// them and the engine falls back to them, so there is one set.
const (
	DefaultGREUnreplied = 30 * time.Second
	DefaultGREReplied   = 180 * time.Second
	DefaultControlIdle  = time.Hour
	DefaultQuarantine   = 2 * time.Minute
	DefaultHold         = 300 * time.Millisecond
	// DefaultMaxCalls bounds the call table (and, separately, the control
	// connection table).
	DefaultMaxCalls = 65536
	// ClosingTimeout is the idle timeout of a control connection after its
	// calls were stopped (Stop-Control-Connection, FIN or RST): long enough
	// for the remaining reply and FIN/ACK exchange to pass the helper.
	ClosingTimeout = 10 * time.Second
	// SetupTimeout is the idle timeout of state not yet established: a
	// control connection without its Start-Control-Connection-Reply and a
	// call without its reply (the kernel gives an unanswered SYN 60s too).
	// A PAC answers an Outgoing-Call-Request once the call is connected,
	// which takes seconds, even for a dial-up line.
	SetupTimeout = time.Minute

	// Per-source and per-connection limits (Limits). A client host runs one
	// control connection per VPN session and one call on it (pptp-linux,
	// Windows); a PAC concentrator behind one address, or an office NAT in
	// front of a forwarded server, a few dozen. An attacker needs far more to
	// hurt: 256 connections x 64 calls are out of reach because of the
	// 1024 calls per source, which is 1.6% of a (public, peer) call-ID pool
	// of 65535, so exhausting one takes 64 hosts.
	DefaultConnsPerSource = 256
	DefaultCallsPerConn   = 64
	DefaultCallsPerSource = 1024
)

// Limits bound what one source host and one control connection may hold in
// the table: the `limits:` block of the configuration and what the table
// runs with, one type for both. Zero fields take the defaults
// (WithDefaults).
type Limits struct {
	// ConnsPerSource: control connections opened by one host.
	ConnsPerSource int `yaml:"conns_per_source"`
	// CallsPerConn: calls on one control connection.
	CallsPerConn int `yaml:"calls_per_conn"`
	// CallsPerSource: calls on all control connections one host opened.
	CallsPerSource int `yaml:"calls_per_source"`
}

// WithDefaults returns l with zero (or negative) fields replaced by the
// defaults.
func (l Limits) WithDefaults() Limits {
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&l.ConnsPerSource, DefaultConnsPerSource},
		{&l.CallsPerConn, DefaultCallsPerConn},
		{&l.CallsPerSource, DefaultCallsPerSource},
	} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	return l
}

// Timeouts are the gateway's timeouts: the `timeouts:` block of the
// configuration (YAML durations such as "30s") and what the table and the
// engine run with, one type for both. Zero fields take the defaults
// (WithDefaults); a negative CallIDQuarantine disables quarantine.
type Timeouts struct {
	// GREUnreplied: a call set up (OCRP/ICCN) whose GRE was not yet seen in
	// both directions.
	GREUnreplied time.Duration `yaml:"gre_unreplied"`
	// GREReplied: a call whose GRE was seen in both directions.
	GREReplied time.Duration `yaml:"gre_replied"`
	// ControlIdle: an established control connection with no segment and
	// no GRE of its calls (Echo counts). State still in setup gets
	// SetupTimeout (or ControlIdle if that is shorter).
	ControlIdle time.Duration `yaml:"control_idle"`
	// CallIDQuarantine: how long nat holds a released outside call ID back
	// before it hands it out again.
	CallIDQuarantine time.Duration `yaml:"call_id_quarantine"`
	// Hold: how long nat holds a control segment that ends inside a call-ID
	// field, waiting for the rest, before it lets it go unmodified.
	Hold time.Duration `yaml:"hold"`
}

// WithDefaults returns t with zero fields replaced by the defaults.
func (t Timeouts) WithDefaults() Timeouts {
	if t.GREUnreplied <= 0 {
		t.GREUnreplied = DefaultGREUnreplied
	}
	if t.GREReplied <= 0 {
		t.GREReplied = DefaultGREReplied
	}
	if t.ControlIdle <= 0 {
		t.ControlIdle = DefaultControlIdle
	}
	if t.CallIDQuarantine == 0 {
		t.CallIDQuarantine = DefaultQuarantine
	}
	if t.CallIDQuarantine < 0 {
		t.CallIDQuarantine = 0
	}
	if t.Hold <= 0 {
		t.Hold = DefaultHold
	}
	return t
}

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
	Created                    time.Time

	state                              CallState
	lastSeen                           time.Time
	setup                              setupHooks[Call] // in Table.setupCalls until its reply
	seenOut, seenIn                    bool
	pktsOut, pktsIn, bytesOut, bytesIn uint64
}

func (c *Call) hooks() *setupHooks[Call] { return &c.setup }

// CarriedGRE reports whether GRE of the call was seen in either direction.
// Only for OnCallRemoved (it reads state the table lock guards).
func (c *Call) CarriedGRE() bool { return c.seenOut || c.seenIn }

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

	mu    sync.Mutex
	conns *simplelru.LRU[ControlKey, *Control]
	calls *simplelru.LRU[InKey, *Call] // primary store and inbound index
	out   map[OutKey]*Call             // outbound index (established calls only)
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
		to:       cfg.Timeouts.WithDefaults(),
		lim:      cfg.Limits.WithDefaults(),
		maxConns: cfg.MaxConns,
		maxCalls: cfg.MaxCalls,
		onRemove: cfg.OnCallRemoved,
		out:      make(map[OutKey]*Call),
		sources:  make(map[[4]byte]*source),
	}
	// NewLRU only fails for size <= 0, excluded above. The LRUs never
	// evict on their own: AddControl and AddCall make room (early drop) or
	// refuse before they add.
	t.calls, _ = simplelru.NewLRU[InKey, *Call](cfg.MaxCalls, t.callEvicted)
	t.conns, _ = simplelru.NewLRU[ControlKey, *Control](cfg.MaxConns, t.connEvicted)
	return t
}

// Timeouts returns the effective timeouts (defaults applied).
func (t *Table) Timeouts() Timeouts { return t.to }

// Limits returns the effective limits (defaults applied).
func (t *Table) Limits() Limits { return t.lim }

// callEvicted is the single exit path of a call. t.mu is held.
func (t *Table) callEvicted(_ InKey, c *Call) {
	reason := t.reason
	if reason == "" {
		reason = ReasonEvicted
		t.stats.CallsEvicted++
	}
	if c.state != CallRequested {
		if k := c.outKey(); t.out[k] == c {
			delete(t.out, k)
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
	return now.Sub(c.lastSeen) > t.callTimeout(c)
}

func (t *Table) connExpired(cn *Control, now time.Time) bool {
	return now.Sub(cn.lastSeen) > t.connTimeout(cn)
}

// ---- control connections ----

// AddControl starts tracking a control connection, in setup until
// EstablishControl, replacing (and removing the calls of) any connection
// with the same key. It refuses (ErrSourceLimit) a connection beyond its
// source's Limits.ConnsPerSource; in a full table it early-drops the oldest
// connection in setup, and refuses (ErrTableFull) if there is none.
func (t *Table) AddControl(k ControlKey, publicIP [4]byte, forward bool) (*Control, error) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.conns.Peek(k); ok {
		t.removeConn(old, ReasonReplaced)
	}
	ip := sourceOf(k, forward)
	if s := t.sources[ip]; s != nil && s.conns >= t.lim.ConnsPerSource {
		t.stats.ConnsRefusedSource++
		return nil, ErrSourceLimit
	}
	if t.conns.Len() >= t.maxConns && !t.earlyDropConn() {
		t.stats.ConnsRefusedFull++
		return nil, ErrTableFull
	}
	s := t.sources[ip] // after the early drop, which may have removed it
	if s == nil {
		s = &source{}
		t.sources[ip] = s
	}
	s.conns++
	cn := &Control{Key: k, PublicIP: publicIP, Forward: forward, Created: now, lastSeen: now, src: s}
	t.setupConns.push(cn)
	t.conns.Add(k, cn)
	return cn, nil
}

// EstablishControl marks cn set up (its Start-Control-Connection-Reply was
// seen): from now on it has the ControlIdle timeout and is no candidate for
// early drop.
func (t *Table) EstablishControl(cn *Control) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.establishControl(cn)
}

func (t *Table) establishControl(cn *Control) {
	if cn.dead || cn.established {
		return
	}
	cn.established = true
	t.setupConns.remove(cn)
}

// LookupControl finds a control connection and marks it active. An idle-expired
// connection is removed (with its calls) and not returned.
func (t *Table) LookupControl(k ControlKey) (*Control, bool) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	cn, ok := t.conns.Get(k)
	if !ok {
		return nil, false
	}
	if t.connExpired(cn, now) {
		t.stats.ConnsExpired++
		t.removeConn(cn, ReasonExpired)
		return nil, false
	}
	cn.lastSeen = now
	return cn, true
}

// RemoveControl stops tracking cn and its calls.
func (t *Table) RemoveControl(cn *Control, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return
	}
	t.removeConn(cn, reason)
}

// StopControl removes all calls of cn and lets cn itself expire after
// ClosingTimeout (Stop-Control-Connection, FIN, RST).
func (t *Table) StopControl(cn *Control) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(cn.calls) > 0 {
		t.removeCall(cn.calls[len(cn.calls)-1], ReasonStopped)
	}
	cn.closing = true
}

// RefreshCalls marks cn and all its calls active now: a control-channel Echo
// keeps the calls of that control connection alive.
func (t *Table) RefreshCalls(cn *Control) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return
	}
	cn.lastSeen = now
	t.conns.Get(cn.Key)
	for _, c := range cn.calls {
		c.lastSeen = now
		t.calls.Get(c.inKey())
	}
}

// ---- calls ----

// AddCall tracks a new call of cn in state CallRequested (in setup until
// Establish): the inside host's call ID insideID is seen by the peer as
// outsideID. The caller (nat) owns outsideID's allocation; OnCallRemoved
// hands it back. It refuses a call beyond Limits.CallsPerConn
// (ErrConnLimit) or its source's Limits.CallsPerSource (ErrSourceLimit); in
// a full table it early-drops the oldest call waiting for its reply, and
// refuses (ErrTableFull) if there is none.
func (t *Table) AddCall(cn *Control, insideID, outsideID uint16) error {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return ErrConnGone
	}
	c := &Call{
		conn:          cn,
		InsideIP:      cn.Key.InsideIP,
		PublicIP:      cn.PublicIP,
		PeerIP:        cn.Key.PeerIP,
		InsideCallID:  insideID,
		OutsideCallID: outsideID,
		Created:       now,
		lastSeen:      now,
	}
	if t.calls.Contains(c.inKey()) {
		return ErrCallExists
	}
	for _, x := range cn.calls {
		if x.InsideCallID == insideID {
			return ErrCallExists
		}
	}
	if len(cn.calls) >= t.lim.CallsPerConn {
		t.stats.CallsRefusedConn++
		return ErrConnLimit
	}
	if cn.src.calls >= t.lim.CallsPerSource {
		t.stats.CallsRefusedSource++
		return ErrSourceLimit
	}
	if t.calls.Len() >= t.maxCalls && !t.earlyDropCall() {
		t.stats.CallsRefusedFull++
		return ErrTableFull
	}
	cn.src.calls++
	cn.calls = append(cn.calls, c)
	t.setupCalls.push(c)
	t.calls.Add(c.inKey(), c)
	return nil
}

func (cn *Control) byInside(id uint16) *Call {
	for _, c := range cn.calls {
		if c.InsideCallID == id {
			return c
		}
	}
	return nil
}

func (cn *Control) byOutside(id uint16) *Call {
	for _, c := range cn.calls {
		if c.OutsideCallID == id {
			return c
		}
	}
	return nil
}

// OutsideOf returns the outside call ID of cn's call with inside ID id.
func (t *Table) OutsideOf(cn *Control, id uint16) (uint16, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := cn.byInside(id); c != nil {
		return c.OutsideCallID, true
	}
	return 0, false
}

// InsideOf returns the inside call ID of cn's call with outside ID id.
func (t *Table) InsideOf(cn *Control, id uint16) (uint16, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := cn.byOutside(id); c != nil {
		return c.InsideCallID, true
	}
	return 0, false
}

// Establish records the peer's call ID of cn's call insideID and installs
// the outbound GRE index: the call is set up and GRE may flow, and cn is
// established too (a call was set up on it). A different call holding the
// same outbound key (the peer reused its call ID before we saw the old
// call's clear) is removed.
func (t *Table) Establish(cn *Control, insideID, peerID uint16) error {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := cn.byInside(insideID)
	if c == nil {
		return ErrNoCall
	}
	if c.state != CallRequested {
		if c.PeerCallID == peerID {
			return nil
		}
		if k := c.outKey(); t.out[k] == c {
			delete(t.out, k)
		}
	}
	c.PeerCallID = peerID
	k := c.outKey()
	if old := t.out[k]; old != nil && old != c {
		t.removeCall(old, ReasonReplaced)
	}
	c.state = CallUnreplied
	c.seenIn, c.seenOut = false, false
	c.lastSeen = now
	t.out[k] = c
	t.setupCalls.remove(c)
	t.establishControl(cn)
	t.calls.Get(c.inKey())
	return nil
}

// RemoveCall removes cn's call with inside ID insideID.
func (t *Table) RemoveCall(cn *Control, insideID uint16, reason string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := cn.byInside(insideID)
	if c == nil {
		return false
	}
	t.removeCall(c, reason)
	return true
}

// ---- GRE fast path (no allocations) ----

// Outbound accounts an outbound GRE packet of n bytes and returns the public
// address to use as its source.
func (t *Table) Outbound(k OutKey, n int) (publicIP [4]byte, ok bool) {
	now := t.clk.Now()
	t.mu.Lock()
	c := t.out[k]
	if c == nil {
		t.mu.Unlock()
		return publicIP, false
	}
	if t.callExpired(c, now) {
		t.stats.CallsExpired++
		t.removeCall(c, ReasonExpired)
		t.mu.Unlock()
		return publicIP, false
	}
	t.calls.Get(c.inKey())
	c.lastSeen = now
	c.conn.lastSeen = now // a live call keeps its control connection alive
	c.pktsOut++
	c.bytesOut += uint64(n)
	c.seenOut = true
	if c.seenIn {
		c.state = CallReplied
	}
	publicIP = c.PublicIP
	t.mu.Unlock()
	return publicIP, true
}

// Inbound accounts an inbound GRE packet of n bytes and returns the inside
// address and call ID to deliver it to. Calls not yet set up do not match.
func (t *Table) Inbound(k InKey, n int) (insideIP [4]byte, insideID uint16, ok bool) {
	now := t.clk.Now()
	t.mu.Lock()
	c, found := t.calls.Get(k)
	if !found || c.state == CallRequested {
		t.mu.Unlock()
		return insideIP, 0, false
	}
	if t.callExpired(c, now) {
		t.stats.CallsExpired++
		t.removeCall(c, ReasonExpired)
		t.mu.Unlock()
		return insideIP, 0, false
	}
	c.lastSeen = now
	c.conn.lastSeen = now
	c.pktsIn++
	c.bytesIn += uint64(n)
	c.seenIn = true
	if c.seenOut {
		c.state = CallReplied
	}
	insideIP, insideID = c.InsideIP, c.InsideCallID
	t.mu.Unlock()
	return insideIP, insideID, true
}

// ---- maintenance and introspection ----

// Sweep removes every idle-expired call and control connection and returns
// how many calls and connections it removed.
func (t *Table) Sweep() (calls, conns int) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.calls.Values() {
		if t.callExpired(c, now) {
			t.stats.CallsExpired++
			t.removeCall(c, ReasonExpired)
			calls++
		}
	}
	for _, cn := range t.conns.Values() {
		if t.connExpired(cn, now) {
			t.stats.ConnsExpired++
			n := len(cn.calls)
			t.removeConn(cn, ReasonExpired)
			calls += n
			conns++
		}
	}
	return calls, conns
}

// Purge removes everything.
func (t *Table) Purge() {
	t.mu.Lock()
	defer t.mu.Unlock()
	saved := t.reason
	t.reason = ReasonPurged
	t.calls.Purge()
	t.conns.Purge()
	t.reason = saved
}

// CallSnapshot is a copy of a call's state.
type CallSnapshot struct {
	InsideIP, PublicIP, PeerIP              [4]byte
	InsidePort, PeerPort                    uint16
	InsideCallID, OutsideCallID, PeerCallID uint16
	Forward                                 bool
	State                                   CallState
	Created                                 time.Time
	Idle                                    time.Duration
	PktsOut, PktsIn, BytesOut, BytesIn      uint64
}

// Snapshot copies every call, most recently used first.
func (t *Table) Snapshot() []CallSnapshot {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	vals := t.calls.Values() // oldest first
	out := make([]CallSnapshot, 0, len(vals))
	for i := len(vals) - 1; i >= 0; i-- {
		c := vals[i]
		s := CallSnapshot{
			InsideIP: c.InsideIP, PublicIP: c.PublicIP, PeerIP: c.PeerIP,
			InsideCallID: c.InsideCallID, OutsideCallID: c.OutsideCallID, PeerCallID: c.PeerCallID,
			State: c.state, Created: c.Created, Idle: now.Sub(c.lastSeen),
			PktsOut: c.pktsOut, PktsIn: c.pktsIn, BytesOut: c.bytesOut, BytesIn: c.bytesIn,
		}
		if c.conn != nil {
			s.InsidePort, s.PeerPort, s.Forward = c.conn.Key.InsidePort, c.conn.Key.PeerPort, c.conn.Forward
		}
		out = append(out, s)
	}
	return out
}

// Len returns the number of tracked control connections and calls.
func (t *Table) Len() (conns, calls int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns.Len(), t.calls.Len()
}

// InSetup returns how many of the tracked control connections and calls
// are still in setup (the early-drop candidates).
func (t *Table) InSetup() (conns, calls int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setupConns.n, t.setupCalls.n
}

// Stats returns the removal counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// setupHooks link an entry into a setupQueue.
type setupHooks[T any] struct {
	prev, next *T
	queued     bool
}

// setupQueue is an intrusive FIFO of entries in setup (control connections
// without Start-Control-Connection-Reply, calls without their reply),
// oldest first: the candidates for early drop. Push, remove and front are
// O(1) and allocate nothing beyond the entry itself.
type setupQueue[T any, P interface {
	*T
	hooks() *setupHooks[T]
}] struct {
	head, tail *T
	n          int
}

func (q *setupQueue[T, P]) push(x P) {
	h := x.hooks()
	if h.queued {
		return
	}
	h.prev, h.next, h.queued = q.tail, nil, true
	if q.tail != nil {
		P(q.tail).hooks().next = x
	} else {
		q.head = x
	}
	q.tail = x
	q.n++
}

func (q *setupQueue[T, P]) remove(x P) {
	h := x.hooks()
	if !h.queued {
		return
	}
	if h.prev != nil {
		P(h.prev).hooks().next = h.next
	} else {
		q.head = h.next
	}
	if h.next != nil {
		P(h.next).hooks().prev = h.prev
	} else {
		q.tail = h.prev
	}
	*h = setupHooks[T]{}
	q.n--
}

// front returns the oldest entry, nil if the queue is empty.
func (q *setupQueue[T, P]) front() P { return q.head }

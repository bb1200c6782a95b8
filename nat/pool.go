package nat

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/fwmark"
	"pptpgw/internal/metrics"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
)

// Server pools (issue 11): a forward with several members. The way of a
// new control connection from an outside client to a pool:
//
//  1. Its opening SYN (to the public port) is queued in prerouting before
//     dstnat (rules/nft_pool.go). poolSYN recognises it (a pool's port, a
//     destination that is no member, no member bits in the mark yet) and
//     picks a member by the pool's policy among the members that are up
//     (pick). The verdict sets the member's bits in the mark
//     (fwmark.Member), keeping every other bit.
//  2. The kernel's DNAT rule for those bits sends it to the member; its
//     conntrack keeps the whole connection there.
//  3. After dstnat the SYN is queued again like every forwarded control
//     segment; the engine tracks the connection with the member as inside
//     party (controlFor; forwardPort knows the member) and counts the setup
//     on the member (poolTracked).
//  4. Calls on it get outside call IDs from the allocator's pool of
//     (public address, client): two members that hand out the same call
//     IDs to clients never collide, and outbound calls of LAN clients draw
//     from the same pools. GRE follows the call's control connection (the
//     table knows its inside address: the member), both ways.
//
// Members are probed (RunHealth, pool_probe.go); one that fails Fall probes
// in a row is down and gets no new connections, its live connections and
// calls stay; Rise probes in a row bring it back. With no member up, new
// connections are spread over all members by the same policy (a failing
// probe must not turn into an outage of the whole pool; a member that is
// really gone answers with a reset or a timeout, as it would with no pool),
// counted as pool_no_member_up.

// Balance policies (rules.BalanceLeastCalls, rules.BalanceSourceHash).
const (
	BalanceLeastCalls = "least-calls"
	BalanceSourceHash = "source-hash"
)

// Pool is a published server pool.
type Pool struct {
	Port    uint16 // public TCP port
	Members []netip.Addr
	Balance string // BalanceLeastCalls (default) or BalanceSourceHash
	Health  Health
}

// Health configures a pool's probes.
type Health struct {
	Interval, Timeout time.Duration
	Probe             string // ProbeControl, ProbeTCP or ProbeNone
	Fall, Rise        int
}

// MemberState is a member's health.
type MemberState string

const (
	MemberUp   MemberState = "up"
	MemberDown MemberState = "down"
)

// probeHistoryLen is how many probe results a member keeps for `pptpgw pool`.
const probeHistoryLen = 8

// poolState is one pool at run time.
type poolState struct {
	cfg     Pool
	members []*member
	rr      atomic.Uint32 // round-robin start among equally loaded members
	noneUp  atomic.Uint64 // picks made with no member up
}

// poolSet is the pools the engine runs with: replaced as a whole by
// ApplyPools (a reload), read without a lock by the packet path.
type poolSet struct {
	cfg     []Pool // as applied, defaults filled in
	pools   []*poolState
	members map[[4]byte]*member // member address -> member
	done    chan struct{}       // closed when a newer set replaces this one
}

// member is one server of a pool in one poolSet.
type member struct {
	pool *poolState
	idx  int // its index in the pool: the mark bits fwmark.Member(idx)
	addr netip.Addr
	a4   [4]byte
	*memberStats
}

// memberStats is what the engine knows about a member address: it
// survives ApplyPools as long as the address stays a member (of any pool),
// so live connections and calls keep being counted where they are. The
// counters are atomics: they are updated under the table's lock
// (OnCallRemoved, OnControlRemoved) and read without one.
type memberStats struct {
	down  atomic.Bool
	conns atomic.Int64 // control connections tracked now
	calls atomic.Int64 // calls tracked now

	picks, setups, callsTotal, hairpins atomic.Uint64
	probesOK, probesFailed, changes     atomic.Uint64

	mu      sync.Mutex // the probe state below
	fails   int        // consecutive failed probes
	passes  int        // consecutive passed probes
	since   time.Time  // of the last state change (or start)
	history []ProbeResult
}

// ProbeResult is one probe of a member.
type ProbeResult struct {
	At  time.Time `json:"at"`
	OK  bool      `json:"ok"`
	RTT float64   `json:"rtt_ms"`
	Err string    `json:"error,omitempty"`
}

// ps returns the pools the engine runs with now.
func (e *Engine) ps() *poolSet { return e.poolSet.Load() }

// ApplyPools makes the engine run with pools cfg (defaults applied) from
// now on: new connections are placed by the new pools; connections already
// tracked stay where they are, and a member address that stays a member
// keeps its state and counters (up or down, probe history, live
// connections and calls). The probes (RunHealth) restart with the new set.
// Applying the pools the engine already runs with changes nothing. The
// kernel's half (the DNAT rules by member index) is the nftables table's.
func (e *Engine) ApplyPools(cfg []Pool) error {
	e.poolMu.Lock()
	defer e.poolMu.Unlock()
	var norm []Pool
	seen := map[[4]byte]bool{}
	for _, pc := range cfg {
		if len(pc.Members) == 0 || len(pc.Members) > fwmark.MaxMembers {
			return fmt.Errorf("nat: pool on port %d: %d members (1..%d)", pc.Port, len(pc.Members), fwmark.MaxMembers)
		}
		for _, a := range pc.Members {
			if !a.Is4() {
				return fmt.Errorf("nat: pool on port %d: member %v is not IPv4", pc.Port, a)
			}
			if seen[a.As4()] {
				return fmt.Errorf("nat: %v is a member twice", a)
			}
			seen[a.As4()] = true
		}
		pc.Members = slices.Clone(pc.Members)
		pc.Health = withHealthDefaults(pc.Health)
		if pc.Balance == "" {
			pc.Balance = BalanceLeastCalls
		}
		norm = append(norm, pc)
	}
	old := e.ps()
	if old != nil && reflect.DeepEqual(old.cfg, norm) {
		return nil
	}
	now := e.clk.Now()
	ns := &poolSet{cfg: norm, members: make(map[[4]byte]*member), done: make(chan struct{})}
	for _, pc := range norm {
		ps := &poolState{cfg: pc}
		for i, a := range pc.Members {
			m := &member{pool: ps, idx: i, addr: a, a4: a.As4()}
			if old != nil && old.members[m.a4] != nil {
				m.memberStats = old.members[m.a4].memberStats
			} else {
				m.memberStats = &memberStats{since: now}
			}
			ps.members = append(ps.members, m)
			ns.members[m.a4] = m
		}
		ns.pools = append(ns.pools, ps)
	}
	e.poolSet.Store(ns)
	if old != nil {
		close(old.done)
	}
	return nil
}

// forwardPort returns the public port of a published server or pool
// member at inside address a, or 0.
func (e *Engine) forwardPort(a [4]byte) uint16 {
	if p, ok := e.conf().forwards[a]; ok {
		return p
	}
	if m := e.ps().members[a]; m != nil {
		return m.pool.cfg.Port
	}
	return 0
}

func withHealthDefaults(h Health) Health {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Probe == "" {
		h.Probe = ProbeControl
	}
	if h.Fall <= 0 {
		h.Fall = 2
	}
	if h.Rise <= 0 {
		h.Rise = 2
	}
	return h
}

// poolSYN handles the opening SYN of a pooled forward queued before dstnat
// (step 1 above). ok is false for every other packet.
func (e *Engine) poolSYN(p *nfq.Packet, pp *pkt.Parsed) (v pkt.Verdict, r string, ok bool) {
	set := e.ps()
	if len(set.pools) == 0 || p.Hook != nfq.HookPrerouting || pp.Fragment || pp.Err != "" ||
		pp.TCPFlags&(pkt.TCPFlagSyn|pkt.TCPFlagAck) != pkt.TCPFlagSyn || fwmark.MemberOf(p.Mark) >= 0 {
		return 0, "", false
	}
	if _, isMember := set.members[pp.Dst]; isMember {
		return 0, "", false // after dstnat: tracked by processTCP
	}
	var ps *poolState
	for _, x := range set.pools {
		if x.cfg.Port == pp.DstPort {
			ps = x
			break
		}
	}
	if ps == nil {
		return 0, "", false
	}
	hairpin := p.InDev != e.wan.Load() && !e.isUplinkIf(p.InDev)
	if hairpin && pp.Dst != e.pubAddr().As4() {
		// From inside to another address of the gateway: not the pool's.
		return pkt.Accept, e.hpCountOf(hpNotOurs), true
	}
	m := ps.pick(pp.Src, hairpin)
	m.picks.Add(1)
	p.SetMarkBits(fwmark.MemberMask, fwmark.Member(m.idx))
	if hairpin {
		p.SetMarkBits(fwmark.Hairpin, fwmark.Hairpin)
		m.hairpins.Add(1)
	}
	return pkt.Accept, ReasonPoolPick, true
}

// ReasonPoolPick is Process's reason for a pool's opening SYN sent to a
// member.
const ReasonPoolPick = "pool_pick"

// pick chooses the member for a new connection from client src. A
// hairpin connection is always placed by source hash (see hairpin.go).
func (ps *poolState) pick(src [4]byte, hairpin bool) *member {
	cands := make([]*member, 0, len(ps.members))
	for _, m := range ps.members {
		if !m.down.Load() {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		ps.noneUp.Add(1)
		cands = append(cands, ps.members...)
	}
	if ps.cfg.Balance == BalanceSourceHash || hairpin {
		// Rendezvous hashing: the member with the highest hash of (client,
		// member) wins, so a member going down moves only its own clients.
		var best *member
		var bestH uint64
		for _, m := range cands {
			h := fnv.New64a()
			h.Write(src[:])
			h.Write(m.a4[:])
			if v := h.Sum64(); best == nil || v > bestH {
				best, bestH = m, v
			}
		}
		return best
	}
	start := int(ps.rr.Add(1)) % len(cands)
	var best *member
	var bestLoad int64
	for i := range cands {
		m := cands[(start+i)%len(cands)]
		if l := m.conns.Load() + m.calls.Load(); best == nil || l < bestLoad {
			best, bestLoad = m, l
		}
	}
	return best
}

// poolTracked counts a control connection the engine started tracking
// (controlFor). ctlMu is held.
func (e *Engine) poolTracked(tc *conntrack.Control) {
	if !tc.Forward {
		return
	}
	if m := e.ps().members[tc.Key.InsideIP]; m != nil {
		m.conns.Add(1)
		m.setups.Add(1)
	}
}

// poolControlRemoved is the table's OnControlRemoved (Table.mu held).
func (e *Engine) poolControlRemoved(tc *conntrack.Control, _ string) {
	if !tc.Forward {
		return
	}
	if m := e.ps().members[tc.Key.InsideIP]; m != nil {
		m.conns.Add(-1)
	}
}

// poolCallAdded counts a call mapped on a member's connection (ctlMu held).
func (e *Engine) poolCallAdded(tc *conntrack.Control) {
	if !tc.Forward {
		return
	}
	if m := e.ps().members[tc.Key.InsideIP]; m != nil {
		m.calls.Add(1)
		m.callsTotal.Add(1)
	}
}

// poolCallRemoved is called from OnCallRemoved (Table.mu held).
func (e *Engine) poolCallRemoved(c *conntrack.Call) {
	e.hairpinCallRemoved(c)
	if !c.Forward() {
		return
	}
	if m := e.ps().members[c.InsideIP]; m != nil {
		m.calls.Add(-1)
	}
}

// memberOf returns the member a forwarded connection's inside address is,
// or nil.
func (e *Engine) memberOf(inside [4]byte) *member { return e.ps().members[inside] }

// probeDone records one probe of m and changes its state after Fall
// failures or Rise successes in a row. It reports the new state if it
// changed.
func (e *Engine) probeDone(m *member, res ProbeResult) (MemberState, bool) {
	h := m.pool.cfg.Health
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history = append(m.history, res)
	if len(m.history) > probeHistoryLen {
		m.history = slices.Delete(m.history, 0, len(m.history)-probeHistoryLen)
	}
	if res.OK {
		m.probesOK.Add(1)
		m.passes++
		m.fails = 0
		if m.down.Load() && m.passes >= h.Rise {
			m.down.Store(false)
			m.since = res.At
			m.changes.Add(1)
			e.log.Warn("pool member up", "port", m.pool.cfg.Port, "member", m.addr, "passed", m.passes)
			return MemberUp, true
		}
		return "", false
	}
	m.probesFailed.Add(1)
	m.fails++
	m.passes = 0
	if !m.down.Load() && m.fails >= h.Fall {
		m.down.Store(true)
		m.since = res.At
		m.changes.Add(1)
		e.log.Warn("pool member down: no new control connections; live ones stay", "port", m.pool.cfg.Port,
			"member", m.addr, "failed", m.fails, "err", res.Err)
		return MemberDown, true
	}
	return "", false
}

// MemberInfo is one pool member as `pptpgw pool` shows it.
type MemberInfo struct {
	Addr  netip.Addr  `json:"addr"`
	State MemberState `json:"state"`
	// Since is when the member last changed state (or the daemon started).
	Since time.Time `json:"since"`
	Conns int64     `json:"conns"`
	Calls int64     `json:"calls"`
	// Picks: opening SYNs the engine sent to it; Setups: control
	// connections tracked on it; CallsTotal: calls mapped on it.
	Picks        uint64        `json:"picks"`
	Hairpins     uint64        `json:"hairpin_picks"` // of Picks: from inside (hairpin)
	Setups       uint64        `json:"setups"`
	CallsTotal   uint64        `json:"calls_total"`
	ProbesOK     uint64        `json:"probes_ok"`
	ProbesFailed uint64        `json:"probes_failed"`
	Changes      uint64        `json:"state_changes"`
	Probes       []ProbeResult `json:"probes"`
}

// PoolInfo is one pool as `pptpgw pool` shows it.
type PoolInfo struct {
	Port    uint16       `json:"port"`
	Balance string       `json:"balance"`
	Probe   string       `json:"probe"`
	NoneUp  uint64       `json:"picks_none_up"`
	Members []MemberInfo `json:"members"`
}

// PoolsReply is the answer to the admin command "pool".
type PoolsReply struct {
	Pools []PoolInfo `json:"pools"`
}

// Pools returns the state of every pool.
func (e *Engine) Pools() []PoolInfo {
	set := e.ps()
	out := make([]PoolInfo, 0, len(set.pools))
	for _, ps := range set.pools {
		pi := PoolInfo{Port: ps.cfg.Port, Balance: ps.cfg.Balance, Probe: ps.cfg.Health.Probe, NoneUp: ps.noneUp.Load()}
		for _, m := range ps.members {
			m.mu.Lock()
			mi := MemberInfo{Addr: m.addr, State: MemberUp, Since: m.since, Conns: m.conns.Load(), Calls: m.calls.Load(),
				Picks: m.picks.Load(), Hairpins: m.hairpins.Load(), Setups: m.setups.Load(), CallsTotal: m.callsTotal.Load(),
				ProbesOK: m.probesOK.Load(), ProbesFailed: m.probesFailed.Load(), Changes: m.changes.Load(),
				Probes: slices.Clone(m.history)}
			m.mu.Unlock()
			if m.down.Load() {
				mi.State = MemberDown
			}
			pi.Members = append(pi.Members, mi)
		}
		out = append(out, pi)
	}
	return out
}

// The pools' metric families.
var (
	descPoolMember = &metrics.Desc{Name: "pool_member_total", Labels: []string{"port", "member", "event"},
		Help: "Per pool member: picks (opening SYNs sent to it), setups (control connections tracked on it), calls (mapped on it), probes_ok, probes_failed, state_changes."}
	descPoolActive = &metrics.Desc{Name: "pool_member_active", Kind: metrics.Gauge, Labels: []string{"port", "member", "what"},
		Help: "Per pool member: control connections and calls tracked now, and up (1) or down (0)."}
	descHairpin = &metrics.Desc{Name: "pool_hairpin_total", Labels: []string{"what"},
		Help: "Hairpin packets: GRE of a member to its inside host (gre_member, both passes), of a host to its member (gre_client), and packets queued from inside that were no hairpin's, accepted untouched (not_ours)."}
	descPoolNoneUp = &metrics.Desc{Name: "pool_none_up_total", Labels: []string{"port"},
		Help: "New connections to a pool sent to a member while no member was up (spread over all)."}
)

// collectPools emits the pools' metrics (Collect).
func (e *Engine) collectPools(emit func(metrics.Sample)) {
	for i, r := range hpReasons {
		emit(metrics.Sample{Desc: descHairpin, LabelValues: []string{r[len("pool_hairpin_"):]}, Key: r, Value: e.hpCount[i].Load()})
	}
	for _, ps := range e.ps().pools {
		port := strconv.Itoa(int(ps.cfg.Port))
		emit(metrics.Sample{Desc: descPoolNoneUp, LabelValues: []string{port}, Key: "pool_" + port + "_none_up", Value: ps.noneUp.Load()})
		for _, m := range ps.members {
			a := m.addr.String()
			key := "pool_" + port + "_" + a + "_"
			up := uint64(1)
			if m.down.Load() {
				up = 0
			}
			for _, c := range []struct {
				ev string
				v  uint64
			}{{"picks", m.picks.Load()}, {"hairpin_picks", m.hairpins.Load()}, {"setups", m.setups.Load()}, {"calls", m.callsTotal.Load()},
				{"probes_ok", m.probesOK.Load()}, {"probes_failed", m.probesFailed.Load()}, {"state_changes", m.changes.Load()}} {
				emit(metrics.Sample{Desc: descPoolMember, LabelValues: []string{port, a, c.ev}, Key: key + c.ev, Value: c.v})
			}
			for _, g := range []struct {
				what string
				v    uint64
			}{{"conns", uint64(max(m.conns.Load(), 0))}, {"calls", uint64(max(m.calls.Load(), 0))}, {"up", up}} {
				emit(metrics.Sample{Desc: descPoolActive, LabelValues: []string{port, a, g.what}, Key: key + g.what + "_now", Value: g.v})
			}
		}
	}
}

// Directions of a call (CallInfo.Direction).
const (
	DirectionOutbound  = "outbound"
	DirectionPublished = "published"
	// DirectionHairpin: an inside client's call to the public address,
	// taken by a pool member (hairpin.go).
	DirectionHairpin = "hairpin"
)

// initPools applies the configuration's pools at NewEngine; a bad pool is
// logged and left out (rules.Config.Validate refuses it before).
func (e *Engine) initPools(cfg []Pool) {
	e.hp = make(map[hpKey][4]byte)
	e.poolSet.Store(&poolSet{members: map[[4]byte]*member{}, done: make(chan struct{})})
	if err := e.ApplyPools(cfg); err != nil {
		e.log.Error("nat: pools not applied", "err", err)
	}
}

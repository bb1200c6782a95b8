package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"pptpgw/conntrack"
	"pptpgw/pptp/wire"
	"pptpgw/qos"
	"pptpgw/qos/police"
)

// The ruleset Install programs, all in one table `ip <Plan.Table>` so other
// rulesets are never touched (shown as `nft list table ip pptpgw` prints it;
// "queue" is the native expression or the xtables NFQUEUE target):
//
//	chain raw_prerouting   { type filter hook prerouting priority raw (-300)
//	    ip protocol gre notrack }                  // 1. GRE bypasses conntrack/NAT
//	chain raw_output       { type filter hook output priority raw (-300)
//	    ip protocol gre notrack }
//	chain nat_prerouting   { type nat hook prerouting priority dstnat (-100)
//	    iifname WAN tcp dport P dnat to X[:1723] } // 2. forwards (only if any)
//	chain queue_prerouting { type filter hook prerouting priority -50
//	    ip protocol gre iifname WAN queue num N          // 3. from the WAN, after
//	    tcp dport 1723 iifname WAN queue num N [bypass]  //    de-NAT, before routing;
//	    tcp sport 1723 iifname WAN queue num N [bypass] } //    GRE never bypasses
//	chain queue_postrouting { type filter hook postrouting priority -50
//	    tcp flags syn fib saddr type != local
//	        tcp option maxseg size set rt mtu | V  // MSS clamp of forwarded SYNs, unless off
//	    ... oifname WAN ... (same 3 rules) }           //    to the WAN: after routing, before SNAT
//	chain nat_postrouting  { type nat hook postrouting priority srcnat (100)
//	    oifname WAN masquerade | snat to PUBLIC }  // 4. everything else: kernel NAT
//
// Without a daemon on the queue (before it binds, after a crash or kill -9)
// the table stays and the kernel drops GRE at the queue rules: GRE is
// notracked, so nothing else would translate it and it would leave the WAN
// with its inside source address. Bypass (fail_open) applies to TCP 1723
// only, whose connections the kernel still masquerades. On a clean stop
// ReduceToFailsafe leaves only
//
//	chain failsafe { type filter hook postrouting priority -50
//	    ip protocol gre oifname WAN fib saddr type != local drop }
//
// so that GRE of calls that were live keeps being dropped rather than
// forwarded with inside sources once the table's notrack and NAT are gone.

// Chain names and priorities.
const (
	ChainRawPrerouting    = "raw_prerouting"
	ChainRawOutput        = "raw_output"
	ChainNATPrerouting    = "nat_prerouting"
	ChainQueuePrerouting  = "queue_prerouting"
	ChainQueuePostrouting = "queue_postrouting"
	ChainNATPostrouting   = "nat_postrouting"
	// ChainFailsafe is the one chain of the table a clean stop leaves.
	ChainFailsafe = "failsafe"

	// PriorityQueue: in prerouting after conntrack (-200) and dstnat
	// (-100); in postrouting before srcnat (100).
	PriorityQueue = -50
)

// QueueImpl says how packets are sent to NFQUEUE.
type QueueImpl string

const (
	// QueueAuto probes the kernel and prefers QueueNative.
	QueueAuto QueueImpl = ""
	// QueueNative is nft's own `queue` expression (CONFIG_NFT_QUEUE).
	QueueNative QueueImpl = "nft-queue"
	// QueueXT is the xtables NFQUEUE target (rev 3) run by nft_compat, as
	// iptables-nft emits it.
	QueueXT QueueImpl = "xt-NFQUEUE"
)

// Plan is everything Install needs; build it with NewPlan.
type Plan struct {
	Table      string
	WAN        string
	LAN        []string   // informational: no rule depends on it
	PublicAddr netip.Addr // invalid: masquerade on WAN
	Queue      uint16
	// FailOpen sets the NFQUEUE bypass flag on the TCP 1723 rules: with no
	// daemon bound, control connections pass (the kernel still masquerades
	// them) instead of being dropped. The GRE rules never bypass.
	FailOpen bool
	MSS      MSSClamp
	Forwards []Forward
	// QueueImpl forces an implementation; QueueAuto probes the kernel.
	QueueImpl QueueImpl
	// NetNS is an open fd of the network namespace to program; 0 means the
	// caller's.
	NetNS int

	// Shaping (issue 9): the classes whose kernel-path matches nft_qos.go
	// turns into the classification chain.
	Classes []qos.Class
	// Kernel fast path and queue readers (issue 12, nft_fastpath.go).
	// GREPath: GREPathKernel, GREPathUserspace or GREPathAuto (probed).
	GREPath string
	// AdoptOut and AdoptIn are fast-path elements put into the new table's
	// maps in the batch that installs it (nat.Engine.AdoptKernelGRE).
	AdoptOut []conntrack.GREOut
	AdoptIn  []conntrack.GREIn
	// Queues is the number of queues from Queue on that GRE and control
	// packets are balanced over (0 and 1: one).
	Queues uint16

	kernelGRE bool // resolved by InstallConn
	// routing at the edge (issue 10): conntrack timeouts (ct_timeouts.go),
	// over the base values the configuration leaves unset.
	CtTimeouts    KernelTimeouts
	CtTimeoutBase KernelTimeoutBase
	// Uplinks, with two or more: all of them, [0] being WAN (uplinks.go).
	Uplinks []PlanUplink

	// kfeat (issue 12): the per-call policer of GRE (policing.pptp_call),
	// which the fast path applies to policed calls (nft_fastpath_qos.go).
	CallPolice police.Limit
	fpClasses  int          // classes with a fast-path chain: never fewer than before a reload
	fpPolice   police.Limit // the fast path's policer: kept by a reload that turns policing off
}

// NewPlan derives the Plan from a validated Config.
func NewPlan(c *Config) Plan {
	p := Plan{
		Table:      c.Table,
		WAN:        c.WAN,
		LAN:        append([]string(nil), c.LAN...),
		PublicAddr: c.PublicAddr(),
		Queue:      c.Queue,
		FailOpen:   c.FailOpen,
		MSS:        c.MSSClamp,
		Forwards:   append([]Forward(nil), c.Forwards...),
		Classes:    c.Classes, // shaping (issue 9)
		GREPath:    c.GREPath,
		Queues:     uint16(c.EffectiveQueues()),
	}
	p.edgeFromConfig(c)          // routing at the edge (issue 10)
	p.CallPolice = callPolice(c) // kfeat (issue 12)
	return p
}

// Installed is a ruleset Install put in the kernel.
type Installed struct {
	Plan Plan
	// QueueImpl is the queue implementation in use (never QueueAuto).
	QueueImpl QueueImpl
	// ReplacedStale is true if a table of the same name existed (left by a
	// crashed or killed run) and was replaced.
	ReplacedStale bool
	// ReplacedFailsafe is true if the table found was the fail-safe table a
	// clean stop leaves (ReduceToFailsafe); ReplacedStale is false then.
	ReplacedFailsafe bool
	// KernelGRE: the table has the fast path's maps and rules (issue 12).
	KernelGRE bool

	conn *nftables.Conn
}

// Install programs plan's table in one atomic batch, replacing a stale table
// of the same name. The kernel either takes the whole ruleset or none of it.
func Install(plan Plan) (*Installed, error) {
	c, err := nftables.New(nftables.WithNetNSFd(plan.NetNS))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return InstallConn(c, plan)
}

// InstallConn is Install over a given connection (tests use a fake one).
func InstallConn(c *nftables.Conn, plan Plan) (*Installed, error) {
	if err := plan.check(); err != nil {
		return nil, err
	}
	impl := plan.QueueImpl
	var err error
	if impl == QueueAuto {
		native, err := ProbeNativeQueue(c, plan.Table)
		if err != nil {
			return nil, err
		}
		impl = QueueXT
		if native {
			impl = QueueNative
		}
	}
	plan.fastPathQoS(Plan{}) // kfeat (issue 12): nft_fastpath_qos.go
	if plan.kernelGRE, err = resolveGREPath(c, plan); err != nil {
		return nil, err
	}
	found, err := findLeftover(c, plan.Table)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	// One batch replaces whatever is there, so GRE never crosses a moment
	// without a rule that queues or drops it.
	replaceTable(c, plan.Table, func(t *nftables.Table) { addRules(c, t, plan, impl) })
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables: install table ip %s: %w", plan.Table, explain(err))
	}
	return &Installed{Plan: plan, QueueImpl: impl, ReplacedStale: found == leftoverStale,
		ReplacedFailsafe: found == leftoverFailsafe, KernelGRE: plan.kernelGRE, conn: c}, nil
}

// replaceTable queues, into c's batch, the deletion of table `ip name` if
// it exists and its creation with the chains and rules fill adds:
// add+delete+add deletes a table without failing when there is none.
func replaceTable(c *nftables.Conn, name string, fill func(*nftables.Table)) {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	fill(c.AddTable(t))
}

// ReduceToFailsafe replaces the table, in one atomic batch, by the
// fail-safe table (FailsafeRuleset): one rule that drops GRE leaving the
// WAN with a source address that is not the gateway's own. The daemon calls
// it on a clean stop instead of removing the table: GRE is never tracked or
// NATed by the kernel while the table exists, and once it is gone the
// kernel would forward the GRE of calls that were live with their inside
// source addresses. The next Install replaces it in its own batch.
func (in *Installed) ReduceToFailsafe() error {
	replaceTable(in.conn, in.Plan.Table, func(t *nftables.Table) {
		addFailsafe(in.conn, t, in.Plan.WAN)
		addFailsafeUplinks(in.conn, t, in.Plan) // issue 10
	})
	if err := in.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: replace table ip %s by its fail-safe rule: %w", in.Plan.Table, explain(err))
	}
	return nil
}

// FailsafeRuleset is what ReduceToFailsafe leaves, as nft(8) input (and
// the command that removes it), for logs and documentation.
func FailsafeRuleset(table, wan string) string {
	return fmt.Sprintf("table ip %s { chain %s { type filter hook postrouting priority %d; policy accept; "+
		"ip protocol gre oifname %q fib saddr type != local drop; }; }", table, ChainFailsafe, PriorityQueue, wan)
}

// addFailsafe adds the fail-safe chain to t (see ReduceToFailsafe). It
// matches after routing and before any source NAT, where GRE forwarded
// from inside still has its inside source; the gateway's own GRE (a PPTP
// client on the router, its source a local address) and GRE between inside
// networks pass.
func addFailsafe(c *nftables.Conn, t *nftables.Table, wan string) {
	ch := c.AddChain(&nftables.Chain{
		Name: ChainFailsafe, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityRef(PriorityQueue),
	})
	var ex []expr.Any
	for _, e := range [][]expr.Any{MatchGRE(), MatchIfname(expr.MetaKeyOIFNAME, wan), MatchSourceNotLocal(),
		{&expr.Verdict{Kind: expr.VerdictDrop}}} {
		ex = append(ex, e...)
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
}

// Remove deletes the table. Removing a table that is already gone is not an
// error.
func (in *Installed) Remove() error {
	return removeTable(in.conn, in.Plan.Table)
}

// RemoveTable deletes table `ip name` in the caller's network namespace, for
// leftovers of a crashed run; a missing table is not an error.
func RemoveTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return removeTable(c, name)
}

func removeTable(c *nftables.Conn, name string) error {
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table ip %s: %w", name, explain(err))
	}
	return nil
}

// ProbeNativeQueue reports whether the kernel has nft's `queue` expression:
// it sends one batch that adds a scratch table with a queue rule in a regular
// (unhooked) chain and deletes it again. The kernel answers ENOENT for an
// unknown expression and rolls the batch back; on success the table is gone
// at the end of the batch. Either way nothing is left behind and no packet
// ever sees the rule.
func ProbeNativeQueue(c *nftables.Conn, table string) (bool, error) {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: probeName(table)}
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Queue{Num: 0, Total: 1, Flag: expr.QueueFlagBypass},
	}})
	c.DelTable(t)
	err := c.Flush()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	default:
		return false, fmt.Errorf("nftables: probe for queue expression: %w", explain(err))
	}
}

func probeName(table string) string { return table + "_probe" }

// leftover is what Install found under its table's name.
type leftover uint8

const (
	leftoverNone     leftover = iota
	leftoverStale             // a full table: a crashed or killed run, or another program
	leftoverFailsafe          // the fail-safe table of a clean stop
)

func findLeftover(c *nftables.Conn, name string) (leftover, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return leftoverNone, err
	}
	if !slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == name }) {
		return leftoverNone, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return leftoverNone, err
	}
	var ours []string
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == name {
			ours = append(ours, ch.Name)
		}
	}
	if len(ours) == 1 && ours[0] == ChainFailsafe {
		return leftoverFailsafe, nil
	}
	return leftoverStale, nil
}

// explain adds a hint to the errors people hit most.
func explain(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (needs root or CAP_NET_ADMIN)", err)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (the kernel lacks an nftables expression this ruleset uses: "+
			"nft_compat + xt_NFQUEUE or nft_queue, nft_nat/nft_masq, nft_ct (notrack), nft_rt, nft_exthdr, nft_fib_ipv4)", err)
	}
	return err
}

func (p Plan) check() error {
	if !tableRE.MatchString(p.Table) {
		return fmt.Errorf("rules: bad table name %q", p.Table)
	}
	if !ifnameRE.MatchString(p.WAN) {
		return fmt.Errorf("rules: bad wan interface name %q", p.WAN)
	}
	if p.PublicAddr.IsValid() && !p.PublicAddr.Is4() {
		return fmt.Errorf("rules: public address %s is not IPv4", p.PublicAddr)
	}
	for _, f := range p.Forwards {
		if !f.Addr().Is4() || f.Port == 0 {
			return fmt.Errorf("rules: bad forward %d -> %q", f.Port, f.To)
		}
		if err := checkPool(f); err != nil {
			return err
		}
	}
	switch p.QueueImpl {
	case QueueAuto, QueueNative, QueueXT:
	default:
		return fmt.Errorf("rules: unknown queue implementation %q", p.QueueImpl)
	}
	return nil
}

// addRules queues the chains and rules of plan into table t.
func addRules(c *nftables.Conn, t *nftables.Table, p Plan, impl QueueImpl) {
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: t, Type: typ, Hooknum: hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)),
		})
	}
	rule := func(ch *nftables.Chain, ex ...[]expr.Any) {
		var all []expr.Any
		for _, e := range ex {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}

	fp := addFastPath(c, t, p) // kernel fast path (issue 12): its maps, nil if off

	// 1. GRE skips conntrack, so the kernel never NATs or tracks it.
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{ChainRawPrerouting, nftables.ChainHookPrerouting}, {ChainRawOutput, nftables.ChainHookOutput}} {
		rule(chain(h.name, nftables.ChainTypeFilter, h.hook, -300), MatchGRE(), []expr.Any{&expr.Notrack{}})
	}

	// 2. Published PPTP servers.
	if len(p.Forwards) > 0 {
		ch := chain(ChainNATPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100)
		for _, f := range p.Forwards {
			if f.IsPool() {
				addPoolDNAT(c, t, ch, p.WAN, f) // pool (issue 11), nft_pool.go
				continue
			}
			rule(ch, MatchIfname(expr.MetaKeyIIFNAME, p.WAN), MatchTCPPort(false, f.Port), DNAT(f.Addr(), f.Port))
		}
	}

	addPoolQueue(c, t, p, impl) // pool (issue 11): opening SYNs of pools, nft_pool.go

	// 3. PPTP control and GRE crossing the WAN go to the engine; PPTP
	// between inside networks is none of its business. Packets from the
	// WAN are queued in prerouting, before routing and after conntrack has
	// undone the kernel's NAT (-100), so the engine sees inside addresses
	// and its new GRE destination (the inside host) is what gets routed.
	// Packets to the WAN are queued in postrouting, after routing and
	// before the kernel's SNAT (100), like SNAT itself: giving GRE the
	// gateway's own source address before routing would make it a martian
	// (a local source arriving on a LAN port) that the kernel drops.
	// Router-originated PPTP leaves through postrouting too, so no output
	// chain is needed (and none queues a packet twice).
	pre := chain(ChainQueuePrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, PriorityQueue)
	post := chain(ChainQueuePostrouting, nftables.ChainTypeFilter, nftables.ChainHookPostrouting, PriorityQueue)

	// MSS clamping of forwarded TCP SYNs. Each base chain costs every
	// packet on its hook a call and a packet-info setup whatever its rules
	// say, so the clamp rides in queue_postrouting rather than in a forward
	// chain of its own: forwarded packets cross three of our base chains
	// instead of four. With 10 and 50 copies of the chains under iperf3,
	// perf found 14-23% less time in them per packet, and at 50 copies
	// iperf3 moved 3-4% more; without copies the difference is far below
	// run-to-run noise, as is the whole table's. Forwarded packets reach
	// postrouting after the forward hook with the same route, so `rt mtu`
	// is the same; postrouting also carries the gateway's own packets,
	// which the forward hook never did, and `fib saddr type != local`
	// leaves those alone. The rule comes first: a queued SYN (to or from
	// port 1723) resumes at the next hook entry, not at the next rule.
	if p.MSS.Rules != nil {
		rule(post, MatchTCPSyn(), MatchSourceNotLocal(), addMSSRules(c, t, p.MSS)) // issue 10
	} else if p.MSS.Mode != MSSOff {
		rule(post, MatchTCPSyn(), MatchSourceNotLocal(), SetMSS(p.MSS))
	}

	// GRE is queued without bypass whatever fail_open says: with no daemon
	// bound the kernel drops it here. Bypassed, it would leave the WAN
	// untranslated (it is notracked, so no NAT of the kernel touches it),
	// with its inside source address. TCP 1723 may bypass: the kernel
	// masquerades it like any connection; only its call IDs go unrewritten.
	greQ := QueueBalanceExprs(impl, p.Queue, p.Queues, false) // several queues: issue 12
	q := QueueBalanceExprs(impl, p.Queue, p.Queues, p.FailOpen)
	for _, h := range []struct {
		ch    *nftables.Chain
		iface expr.MetaKey
	}{{pre, expr.MetaKeyIIFNAME}, {post, expr.MetaKeyOIFNAME}} {
		// Every forwarded packet crosses both chains, so the cheap,
		// selective protocol and port matches come first and the interface
		// name (a 16-byte load and compare) last: bulk non-PPTP traffic
		// leaves each rule after one or two compares. Measured with iperf3
		// and 10 copies of the chains, this halves their cost per packet.
		// An early `return` for packets not crossing the WAN was not
		// measurably cheaper for bulk TCP, and a verdict map on the
		// protocol jumping to per-protocol chains was dearer (measured
		// with perf as above).
		wan := MatchIfname(h.iface, p.WAN)
		fp.addRule(c, t, h.ch, h.iface, p.outsideIfnames()) // kernel fast path (issue 12): before GRE is queued
		rule(h.ch, MatchGRE(), wan, greQ)
		rule(h.ch, MatchTCPPort(false, wire.ControlPort), wan, q)
		rule(h.ch, MatchTCPPort(true, wire.ControlPort), wan, q)
	}

	// 4. Everything else: kernel NAT on the WAN.
	ch := chain(ChainNATPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100)
	addPoolSNAT(c, t, ch, p) // pool (issue 11): hairpin SNAT, nft_pool.go
	if p.PublicAddr.IsValid() {
		rule(ch, MatchIfname(expr.MetaKeyOIFNAME, p.WAN), SNAT(p.PublicAddr))
	} else {
		rule(ch, MatchIfname(expr.MetaKeyOIFNAME, p.WAN), []expr.Any{&expr.Masq{}})
	}

	addQoSRules(c, t, p)          // shaping (issue 9): nft_qos.go
	addCtTimeouts(c, t, p)        // issue 10
	addUplinkRules(c, t, p, impl) // issue 10
}

// The expression builders below emit exactly what nft(8) 1.0.6 emits for the
// same rule text (checked byte for byte by the golden tests).

// MatchGRE is `ip protocol gre`.
func MatchGRE() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_GRE}},
	}
}

// MatchTCPPort is `tcp dport P` (or `tcp sport P` if src).
func MatchTCPPort(src bool, port uint16) []expr.Any {
	off := uint32(2)
	if src {
		off = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// MatchIfname is `iifname NAME` / `oifname NAME` (key MetaKeyIIFNAME or
// MetaKeyOIFNAME): an exact match on the 16-byte, NUL-padded name.
func MatchIfname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// MatchTCPSyn is `tcp flags syn` (SYN set, whatever else is).
func MatchTCPSyn() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x00}},
	}
}

// MatchSourceNotLocal is `fib saddr type != local`: the source address is
// none of this host's own (the packet was not sent by the gateway itself).
func MatchSourceNotLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// SetMSS is `tcp option maxseg size set rt mtu` (auto) or `... set V`. The
// kernel only ever lowers the MSS option, never raises it.
func SetMSS(m MSSClamp) []expr.Any {
	write := &expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2 /* maxseg */, Offset: 2, Len: 2, SourceRegister: 1}
	if m.Mode == MSSFixed {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Value)},
			write,
		}
	}
	return []expr.Any{
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		write,
	}
}

// SNAT is `snat to ADDR`. Like nft, only the min registers are sent for a
// single address/port; the kernel takes max = min.
func SNAT(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

// DNAT is `dnat to ADDR` when the public port is 1723, else
// `dnat to ADDR:1723`: the server behind always listens on 1723, so the
// engine (which looks at port 1723 after dstnat) sees its control stream.
func DNAT(a netip.Addr, publicPort uint16) []expr.Any {
	b := a.As4()
	if publicPort == wire.ControlPort {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: b[:]},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}
	}
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(wire.ControlPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1,
			RegProtoMin: 2, Specified: true},
	}
}

// QueueExprs is `queue num N [bypass]`: the native expression or the xtables
// NFQUEUE target.
func QueueExprs(impl QueueImpl, num uint16, bypass bool) []expr.Any {
	if impl == QueueNative {
		q := &expr.Queue{Num: num, Total: 1}
		if bypass {
			q.Flag = expr.QueueFlagBypass
		}
		return []expr.Any{q}
	}
	info := xt.Unknown(NFQInfoV3(num, bypass))
	return []expr.Any{&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}}
}

// NFQInfoV3 is struct xt_NFQ_info_v3 (linux/netfilter/xt_NFQUEUE.h) in host
// byte order, padded to 8 bytes as nft_compat requires:
//
//	__u16 queuenum; __u16 queues_total; __u16 flags; (2 bytes padding)
//
// queues_total must be at least 1; flag 0x1 is NFQ_FLAG_BYPASS.
func NFQInfoV3(num uint16, bypass bool) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint16(b[0:], num)
	binary.NativeEndian.PutUint16(b[2:], 1)
	if bypass {
		binary.NativeEndian.PutUint16(b[4:], 0x1)
	}
	return b
}

// EnableIPForward sets net.ipv4.ip_forward=1 in the caller's network
// namespace (the /proc/sys view follows the thread's netns).
func EnableIPForward() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}
	return nil
}

// LogValue lets callers log an Installed directly with slog.
func (in *Installed) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("table", "ip "+in.Plan.Table),
		slog.Int("queue", int(in.Plan.Queue)),
		slog.String("queue_impl", string(in.QueueImpl)),
		slog.Bool("fail_open", in.Plan.FailOpen),
		slog.Bool("replaced_stale", in.ReplacedStale),
		slog.Bool("replaced_failsafe", in.ReplacedFailsafe),
	)
}

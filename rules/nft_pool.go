package rules

import (
	"fmt"

	"golang.org/x/sys/unix"

	"pptpgw/pptp/wire"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"pptpgw/internal/fwmark"
)

// Server pools (issue 11). For a forward with several members the engine
// chooses the member of each new control connection; the kernel's DNAT
// follows the choice, and its conntrack keeps the connection on that member
// for the connection's life:
//
//	chain pool_prerouting  { type filter hook prerouting priority -150
//	    tcp dport P tcp flags & (syn | ack) == syn iifname WAN queue num N [bypass]
//	    tcp dport P tcp flags & (syn | ack) == syn fib daddr type local iifname != WAN queue num N [bypass] }
//	                       // (with several uplinks, the first rule for
//	                       //  each uplink too, and every "iifname != WAN"
//	                       //  here and in pool_hairpin excludes them all)
//	                       // 1. the opening SYN goes to the engine before
//	                       //    dstnat; its verdict sets the member's
//	                       //    bits in the mark (internal/fwmark.Member),
//	                       //    from inside to the public address also
//	                       //    the hairpin bit
//	chain nat_prerouting   { type nat hook prerouting priority dstnat (-100)
//	    tcp dport P meta mark & 0x007f0000 == 0x00010000 dnat to M1[:1723]
//	    tcp dport P meta mark & 0x007f0000 == 0x00020000 dnat to M2[:1723]
//	    ...
//	    iifname WAN tcp dport P dnat to M1[:1723] }
//	                       // 2. one rule per member; the last one takes a
//	                       //    SYN without member bits (no daemon bound and
//	                       //    fail_open: the queue rule let it bypass)
//	chain pool_hairpin     { type filter hook prerouting priority -50
//	    tcp dport 1723 ct status dnat iifname != WAN queue num N [bypass]
//	    tcp sport 1723 ct status snat iifname != WAN queue num N [bypass]
//	    ip protocol gre fib daddr type local iifname != WAN queue num N }
//	                       // 3. hairpin: the control stream of a LAN host's
//	                       //    connection to a member, and GRE from inside
//	                       //    to the gateway's addresses (the host's to
//	                       //    the public address, the member's to the
//	                       //    public address its peer appears as)
//	chain pool_hairpin_post { type filter hook postrouting priority -50
//	    ip protocol gre meta mark & 0x00800000 == 0x00800000 queue num N }
//	                       // 4. hairpin GRE the engine readdressed in
//	                       //    prerouting gets the public address as
//	                       //    source after routing (before, it would be
//	                       //    a martian)
//	chain nat_postrouting  { ...
//	    meta mark & 0x00800000 == 0x00800000 snat to ct original ip daddr
//	    ... }              // 5. a hairpin connection reaches its member
//	                       //    from the public address the host called,
//	                       //    so the member's answers come back through
//	                       //    the gateway whatever subnet the host is on
//
// After dstnat the SYN reaches queue_prerouting (from the WAN) or
// pool_hairpin (from inside) with the member's address: the engine tracks
// the connection under that member and translates its calls' IDs (nat/pool.go,
// nat/hairpin.go).

// ChainPoolPrerouting is the chain that queues the opening SYNs of pooled
// forwards before dstnat.
const (
	ChainPoolPrerouting = "pool_prerouting"
	// PriorityPool: after conntrack (-200), before dstnat (-100).
	PriorityPool = -150
	// ChainPoolHairpin and ChainPoolHairpinPost queue hairpin traffic
	// (PriorityQueue, like the other queue chains).
	ChainPoolHairpin     = "pool_hairpin"
	ChainPoolHairpinPost = "pool_hairpin_post"
)

// hasPool reports whether p has a pool.
func (p Plan) hasPool() bool {
	for _, f := range p.Forwards {
		if f.IsPool() {
			return true
		}
	}
	return false
}

// addPoolQueue adds pool_prerouting if plan has a pool.
func addPoolQueue(c *nftables.Conn, t *nftables.Table, p Plan, impl QueueImpl) {
	var ch *nftables.Chain
	for _, f := range p.Forwards {
		if !f.IsPool() {
			continue
		}
		if ch == nil {
			ch = c.AddChain(&nftables.Chain{
				Name: ChainPoolPrerouting, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(PriorityPool),
			})
		}
		for _, up := range p.outsideIfnames() {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchTCPPort(false, f.Port), matchOpeningSyn(),
				MatchIfname(expr.MetaKeyIIFNAME, up), QueueExprs(impl, p.Queue, p.FailOpen))})
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchTCPPort(false, f.Port), matchOpeningSyn(),
			matchDestLocal(), p.matchNotOutside(), QueueExprs(impl, p.Queue, p.FailOpen))})
	}
	if ch == nil {
		return
	}
	hp := c.AddChain(&nftables.Chain{
		Name: ChainPoolHairpin, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(PriorityQueue),
	})
	notWAN := p.matchNotOutside()
	// From the host: DNATed to the member. From the member: SNATed too
	// (a published server's answers to outside clients are DNAT only, and
	// leave through queue_postrouting).
	for _, r := range []struct {
		src    bool
		status uint32
	}{{false, ipsDstNAT}, {true, ipsSrcNAT}} {
		c.AddRule(&nftables.Rule{Table: t, Chain: hp, Exprs: concat(MatchTCPPort(r.src, wire.ControlPort), matchCtStatus(r.status),
			notWAN, QueueExprs(impl, p.Queue, p.FailOpen))})
	}
	// GRE never bypasses (see addRules): unqueued, hairpin GRE would reach
	// neither side, and the engine accepts GRE to the gateway that is none
	// of the pool's untouched.
	c.AddRule(&nftables.Rule{Table: t, Chain: hp, Exprs: concat(MatchGRE(), matchDestLocal(), notWAN,
		QueueExprs(impl, p.Queue, false))})
	post := c.AddChain(&nftables.Chain{
		Name: ChainPoolHairpinPost, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(PriorityQueue),
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(MatchGRE(), MatchMarkBits(fwmark.Hairpin, fwmark.Hairpin),
		QueueExprs(impl, p.Queue, false))})
}

// addPoolSNAT adds the hairpin SNAT rule to nat_postrouting (step 5) if
// plan has a pool.
func addPoolSNAT(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, p Plan) {
	if !p.hasPool() {
		return
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchMarkBits(fwmark.Hairpin, fwmark.Hairpin), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyDST, Direction: 0},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	})})
}

// matchDestLocal is `fib daddr type local`.
func matchDestLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// outsideIfnames are the interfaces outside clients come in by: the WAN
// and, with several uplinks (issue 10), every other uplink.
func (p Plan) outsideIfnames() []string {
	names := []string{p.WAN}
	if len(p.Uplinks) > 1 {
		for _, u := range p.Uplinks[1:] {
			names = append(names, u.Name)
		}
	}
	return names
}

// matchNotOutside is `iifname != WAN` (and `iifname != UPLINK` for every
// other uplink): traffic from inside. Without the other uplinks, an
// outside client's control segments and GRE arriving by uplink 1 were
// queued by pool_hairpin as well as by queue_prerouting's rules of that
// uplink, so the engine saw them twice; GRE translated by the first pass
// was dropped by the second (gre_no_call) whenever pool_hairpin's hook ran
// first (a pool added by a reload registers its chain last, and of two
// chains of one priority the last registered runs first).
func (p Plan) matchNotOutside() []expr.Any {
	var ex []expr.Any
	for _, n := range p.outsideIfnames() {
		ex = append(ex, matchIfnameNot(expr.MetaKeyIIFNAME, n)...)
	}
	return ex
}

// matchIfnameNot is `iifname != NAME` / `oifname != NAME`.
func matchIfnameNot(key expr.MetaKey, name string) []expr.Any {
	m := MatchIfname(key, name)
	m[1].(*expr.Cmp).Op = expr.CmpOpNeq
	return m
}

// Conntrack status bits (linux/netfilter/nf_conntrack_common.h).
const (
	ipsSrcNAT = 0x10
	ipsDstNAT = 0x20
)

// matchCtStatus is `ct status snat` / `ct status dnat` (bit set).
func matchCtStatus(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// addPoolDNAT adds forward f's DNAT rules (a pool) to nat_prerouting.
func addPoolDNAT(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, wan string, f Forward) {
	ms := f.Members()
	for i, m := range ms {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
			MatchTCPPort(false, f.Port), MatchMarkBits(fwmark.MemberMask, fwmark.Member(i)), DNAT(m, f.Port))})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchIfname(expr.MetaKeyIIFNAME, wan),
		MatchTCPPort(false, f.Port), DNAT(ms[0], f.Port))})
}

// matchOpeningSyn is `tcp flags & (syn | ack) == syn` (after a tcp match,
// so without nft's l4proto dependency).
func matchOpeningSyn() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// MatchMarkBits is `meta mark & MASK == V`.
func MatchMarkBits(mask, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(v)},
	}
}

func concat(ex ...[]expr.Any) []expr.Any {
	var all []expr.Any
	for _, e := range ex {
		all = append(all, e...)
	}
	return all
}

// checkPool checks a pool's members for Plan.check.
func checkPool(f Forward) error {
	if len(f.Pool) > MaxPoolMembers {
		return fmt.Errorf("rules: forward %d: %d members, at most %d", f.Port, len(f.Pool), MaxPoolMembers)
	}
	for _, m := range f.Members() {
		if !m.Is4() {
			return fmt.Errorf("rules: bad pool member of forward %d in %q", f.Port, f.Pool)
		}
	}
	return nil
}

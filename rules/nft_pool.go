package rules

import (
	"fmt"

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
//	    tcp dport P tcp flags & (syn | ack) == syn iifname WAN queue num N [bypass] }
//	                       // 1. the opening SYN goes to the engine before
//	                       //    dstnat; its verdict sets the member's
//	                       //    bits in the mark (internal/fwmark.Member)
//	chain nat_prerouting   { type nat hook prerouting priority dstnat (-100)
//	    iifname WAN tcp dport P meta mark & 0x00ff0000 == 0x00010000 dnat to M1[:1723]
//	    iifname WAN tcp dport P meta mark & 0x00ff0000 == 0x00020000 dnat to M2[:1723]
//	    ...
//	    iifname WAN tcp dport P dnat to M1[:1723] }
//	                       // 2. one rule per member; the last one takes a
//	                       //    SYN without member bits (no daemon bound and
//	                       //    fail_open: the queue rule let it bypass)
//
// After dstnat the SYN reaches queue_prerouting as every forwarded control
// segment does, with the member's address: the engine tracks the connection
// under that member and translates its calls' IDs into the public
// address's one ID space (nat/pool.go).

// ChainPoolPrerouting is the chain that queues the opening SYNs of pooled
// forwards before dstnat.
const (
	ChainPoolPrerouting = "pool_prerouting"
	// PriorityPool: after conntrack (-200), before dstnat (-100).
	PriorityPool = -150
)

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
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchTCPPort(false, f.Port), matchOpeningSyn(),
			MatchIfname(expr.MetaKeyIIFNAME, p.WAN), QueueExprs(impl, p.Queue, p.FailOpen))})
	}
}

// addPoolDNAT adds forward f's DNAT rules (a pool) to nat_prerouting.
func addPoolDNAT(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, wan string, f Forward) {
	ms := f.Members()
	for i, m := range ms {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(MatchIfname(expr.MetaKeyIIFNAME, wan),
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

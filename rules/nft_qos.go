package rules

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"pptpgw/internal/fwmark"
	"pptpgw/qos"
)

// Shaping (issue 9): the classification of kernel-path traffic.
//
//	chain qos_postrouting { type filter hook postrouting priority mangle (-150)
//	    meta mark & 0xff == k+1 meta priority set 1:(16*(k+1)) return
//	                                            // for each class k the engine gives
//	    meta mark & 0xff != 0 return            // classed already
//	    <match of class i, alternative j>
//	        meta mark set meta mark & 0xffffff00 | i+1
//	        meta priority set 1:(16*(i+1)) return
//	    ... }
//
// The chain runs in postrouting, so every packet leaving any interface,
// forwarded or the gateway's own, is classed once, after routing and before
// the queue rules (-50) and SNAT (100): matches see inside addresses. PPTP
// that the engine handles gets its class from the engine's verdict instead.
// GRE and control from the WAN are queued in prerouting, where the verdict
// sets their mark and priority; forwarding then resets skb->priority
// (ip_forward sets it from the TOS), so the first rules give a packet
// carrying an engine class's bits its priority back. Those to the WAN are
// classed here first and the engine's verdict, which comes later (-50),
// overrides the class of a call that matched a class of its own.
// Alternatives naming `pptp` or `inside` are the engine's only.

// ChainQoS is the classification chain (only when classes are configured).
const (
	ChainQoS    = "qos_postrouting"
	PriorityQoS = -150 // mangle
)

// addQoSRules queues the classification chain of p.Classes into t.
func addQoSRules(c *nftables.Conn, t *nftables.Table, p Plan) {
	var engine []int // classes the engine may give
	for i, cl := range p.Classes {
		if slices.ContainsFunc(cl.Match, func(m qos.Match) bool { return !m.Kernel() }) {
			engine = append(engine, i)
		}
	}
	if !hasKernelMatch(p.Classes) && len(engine) == 0 {
		return
	}
	ch := c.AddChain(&nftables.Chain{
		Name: ChainQoS, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(PriorityQoS)),
	})
	add := func(ex ...[]expr.Any) {
		var all []expr.Any
		for _, e := range ex {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	for _, i := range engine {
		add(MatchClass(i), SetPriority(i), Verdict(expr.VerdictReturn))
	}
	add(MatchClassed(), Verdict(expr.VerdictReturn))
	for i, cl := range p.Classes {
		for _, m := range cl.Match {
			if !m.Kernel() {
				continue
			}
			for _, match := range QoSMatches(m) {
				add(match, SetClass(i), Verdict(expr.VerdictReturn))
			}
		}
	}
}

func hasKernelMatch(cs []qos.Class) bool {
	for _, c := range cs {
		for _, m := range c.Match {
			if m.Kernel() {
				return true
			}
		}
	}
	return false
}

// MatchClassed is `meta mark & 0xff != 0`: the packet has a class.
func MatchClassed() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(fwmark.ClassMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// MatchClass is `meta mark & 0xff == i+1`: the packet has class i.
func MatchClass(i int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(fwmark.ClassMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(fwmark.Class(i))},
	}
}

// SetPriority is `meta priority set 1:(16*(i+1))` (qos.ClassID).
func SetPriority(i int) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(qos.ClassID(i))},
		&expr.Meta{Key: expr.MetaKeyPRIORITY, SourceRegister: true, Register: 1},
	}
}

// SetClass is `meta mark set meta mark & ~ClassMask | i+1 meta priority
// set 1:(16*(i+1))`: the class bits of the mark (fwmark.Class) and the HTB
// class id (qos.ClassID).
func SetClass(i int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^fwmark.ClassMask),
			Xor:  binaryutil.NativeEndian.PutUint32(fwmark.Class(i))},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		SetPriority(i)[0], SetPriority(i)[1],
	}
}

// Verdict is a verdict statement (`return`, `accept`, ...).
func Verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// QoSMatches expands one alternative into the match expressions of one
// rule per combination of its listed values (src x dst x sport x dport),
// each field in the order nft(8) would put it: ip saddr, ip daddr, ip dscp,
// meta l4proto, th sport, th dport.
func QoSMatches(m qos.Match) [][]expr.Any {
	rules := [][]expr.Any{nil}
	cross := func(opts [][]expr.Any) {
		if len(opts) == 0 {
			return
		}
		var next [][]expr.Any
		for _, r := range rules {
			for _, o := range opts {
				next = append(next, append(append([]expr.Any(nil), r...), o...))
			}
		}
		rules = next
	}
	var src, dst, sport, dport [][]expr.Any
	for _, p := range m.Src {
		src = append(src, MatchPrefix(12, p))
	}
	for _, p := range m.Dst {
		dst = append(dst, MatchPrefix(16, p))
	}
	cross(src)
	cross(dst)
	if m.DSCP.Set {
		cross([][]expr.Any{MatchDSCP(m.DSCP.Value)})
	}
	if m.Protocol != 0 {
		cross([][]expr.Any{MatchL4Proto(uint8(m.Protocol))})
	}
	for _, r := range m.Sport {
		sport = append(sport, MatchPortRange(0, r))
	}
	for _, r := range m.Dport {
		dport = append(dport, MatchPortRange(2, r))
	}
	cross(sport)
	cross(dport)
	return rules
}

// MatchPrefix is `ip saddr P` (off 12) or `ip daddr P` (off 16), as nft
// encodes it: a prefix ending on a byte boundary loads only the bytes it
// covers, any other loads the address and masks it.
func MatchPrefix(off uint32, p netip.Prefix) []expr.Any {
	a := p.Addr().As4()
	n := uint32(p.Bits()) / 8
	if p.Bits()%8 != 0 {
		n = 4
	}
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}}
	if p.Bits()%8 != 0 {
		m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), p.Bits()).Masked().Addr().As4()
		ex = append(ex, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m[:n], Xor: make([]byte, n)})
	}
	return append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:n]})
}

// MatchDSCP is `ip dscp D`.
func MatchDSCP(d uint8) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 1, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0xfc}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{d << 2}},
	}
}

// MatchL4Proto is `meta l4proto P`.
func MatchL4Proto(p uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// MatchPortRange is `th sport R` (off 0) or `th dport R` (off 2); a range
// is `th dport lo-hi` (two compares, as nft sends it).
func MatchPortRange(off uint32, r qos.PortRange) []expr.Any {
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}}
	if r.Lo == r.Hi {
		return append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Lo)})
	}
	return append(ex,
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Lo)},
		&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Hi)})
}

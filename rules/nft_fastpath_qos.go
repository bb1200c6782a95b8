package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"pptpgw/conntrack"
	"pptpgw/qos"
	"pptpgw/qos/police"
)

// kfeat (issue 12): classes and per-call policing on the kernel fast path.
//
// A call with neither class nor policer has its elements in gre_out and
// gre_in (nft_fastpath.go): one lookup per packet, as before. A call with a
// class or a policer has them in other maps, which a packet reaches only
// when gre_out/gre_in missed, so that those calls cost the common case
// nothing:
//
//	map gre_outq  { type KEY : ipv4_addr; counter; }                  // translation
//	map gre_inq   { type KEY : ipv4_addr . inet_service; counter; }
//	map gre_outp  { type KEY : verdict; }   // -> jump gre_out_c<class+1>[p]
//	map gre_inp   { type KEY : verdict; }   // -> jump gre_in_c<class+1>[p]
//	set gre_outpd { type KEY; counter; }    // policed calls: their drops
//	set gre_inpd  { type KEY; counter; }
//	set gre_lim_out_R_B { type KEY; flags dynamic,timeout; timeout 30s; } // with policing
//	set gre_lim_in_R_B  { ... }
//	chain queue_postrouting { ... after the gre_out rule:
//	    ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b
//	        ip saddr . ip daddr . @th,48,16 . meta oif vmap @gre_outp }
//	chain gre_out_c<k>[p] {
//	    [p]   KEY update @gre_lim_out_R_B { KEY limit rate over R bytes/second burst B bytes }
//	          KEY @gre_outpd drop
//	    [k>0] meta mark set meta mark & 0xffffff00 | k meta priority set 1:(16*k)
//	    ip saddr set KEY map @gre_outq accept }
//	(inbound alike, in queue_prerouting, with meta iif and gre_in's rewrite)
//
// KEY is the fast path's key (ip saddr . ip daddr . @th,48,16 . meta oif
// outbound, ip daddr . ip saddr . @th,48,16 . meta iif inbound).
//
// Classes: the chain of class k sets what the engine's verdict sets for
// the call's GRE (fwmark.Class bits, the operator's and the daemon's other
// bits kept; skb->priority the HTB class id); after forwarding,
// qos_postrouting gives inbound GRE its priority back from the mark as it
// does for the verdict's. The mark is set with constants per class chain,
// so no two-register bitwise (kernel >= 6.13, which google/nftables v0.3.0
// cannot encode) is needed.
//
// Policing (policing.pptp_call: one rate for every call, each direction):
// the dynamic set's elements are created by the first packet of a policed
// call, each with its own clone of the limit (nft_dynset, as nft's meters;
// its bucket holds at least a second at the rate: nftLimit),
// and refreshed by every packet; one idle for 30 s goes and the call's next
// packet starts a full bucket. A packet over the rate passes the limit
// ("over") and is counted in the call's element of gre_outpd/gre_inpd and
// dropped; the engine reads those counters with the others and counts them
// as the call's policed_out/policed_in and drops_total{reason="gre_policed"}.
// Why a dynamic set and not a limit in the translation maps themselves
// (NFTA_SET_EXPRESSIONS, a template cloned into every element, which
// nft_lookup evaluates): google/nftables v0.3.0 encodes a set's expressions
// only as its fixed counter (Set.Counter) and an element's not at all,
// while its Dynset carries any expressions (NFTA_DYNSET_EXPR), which is
// what nft(8) sends for `update @set { key limit ... }`. The dynamic sets'
// size is the kernel's default for them, 65535 elements per direction:
// more policed calls than that at once, and the extra calls' GRE passes
// the kernel's policer unlimited (nft_dynset cannot add their bucket).
//
// The rate is in the name of the dynamic sets and in the rules: a reload
// that changes it creates new sets and deletes the old ones in the
// transaction that replaces the rules (rules/reload.go deletes named sets
// the plan no longer has), so every call's elements in the other maps
// stay and only the buckets start full.
//
// A reload never removes a class's chain (nor the policed chains) that a
// previous plan had: elements of calls set up before may still jump to it
// (Plan.fastPathQoS).

// Map and set names of classed and policed calls.
const (
	SetGREOutQ    = "gre_outq"
	SetGREInQ     = "gre_inq"
	SetGREOutP    = "gre_outp"
	SetGREInP     = "gre_inp"
	SetGREOutDrop = "gre_outpd"
	SetGREInDrop  = "gre_inpd"
	greLimPrefix  = "gre_lim_"
	greChainOut   = "gre_out_c"
	greChainIn    = "gre_in_c"
	// GREPoliceIdle is how long an idle policed call's bucket is kept.
	GREPoliceIdle = 30 * time.Second
)

// greMapSet is every map of the fast path in one table.
type greMapSet struct {
	out, in, outq, inq, outp, inp, outd, ind *nftables.Set
	limOut, limIn                            *nftables.Set // nil without policing
}

func allGRESets(t *nftables.Table) greMapSet {
	inData := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	m := func(name string, counter bool, data nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, IsMap: true, Counter: counter, KeyType: greKeyType, DataType: data}
	}
	return greMapSet{
		out:  m(SetGREOut, true, nftables.TypeIPAddr),
		in:   m(SetGREIn, true, inData),
		outq: m(SetGREOutQ, true, nftables.TypeIPAddr),
		inq:  m(SetGREInQ, true, inData),
		outp: m(SetGREOutP, false, nftables.TypeVerdict),
		inp:  m(SetGREInP, false, nftables.TypeVerdict),
		outd: &nftables.Set{Table: t, Name: SetGREOutDrop, Counter: true, KeyType: greKeyType},
		ind:  &nftables.Set{Table: t, Name: SetGREInDrop, Counter: true, KeyType: greKeyType},
	}
}

// list is the maps the engine writes (not the dynamic sets).
func (m greMapSet) list() []*nftables.Set {
	return []*nftables.Set{m.out, m.in, m.outq, m.inq, m.outp, m.inp, m.outd, m.ind}
}

// greLimName is the name of a dynamic set of limit l (out or in).
func greLimName(out bool, l police.Limit) string {
	d := "in"
	if out {
		d = "out"
	}
	return fmt.Sprintf("%s%s_%d_%d", greLimPrefix, d, l.BytesPerSecond, l.Burst)
}

// greQoSChain is the chain of calls with class (1 + index; 0: none) and
// policing, outbound or inbound.
func greQoSChain(out bool, class uint8, policed bool) string {
	n := greChainIn
	if out {
		n = greChainOut
	}
	n += strconv.Itoa(int(class))
	if policed {
		n += "p"
	}
	return n
}

// parseQoSChain is greQoSChain's inverse.
func parseQoSChain(name string, out bool) (class uint8, policed, ok bool) {
	p := greChainIn
	if out {
		p = greChainOut
	}
	rest, found := strings.CutPrefix(name, p)
	if !found {
		return 0, false, false
	}
	rest, policed = strings.CutSuffix(rest, "p")
	k, err := strconv.ParseUint(rest, 10, 8)
	if err != nil || (k == 0 && !policed) {
		return 0, false, false
	}
	return uint8(k), policed, true
}

// special reports whether a call's elements go to the maps of this file.
func special(class uint8, policed bool) bool { return class != 0 || policed }

// fastPathQoS sets the classes and the policer the fast path's chains are
// made for: those of p, and never fewer classes than prev had nor, with
// policing turned off, no policed chains if prev had them (calls set up
// before keep theirs, as in the engine).
func (p *Plan) fastPathQoS(prev Plan) {
	p.fpClasses = max(len(p.Classes), prev.fpClasses)
	p.fpPolice = p.CallPolice
	if !p.fpPolice.Enabled() {
		p.fpPolice = prev.fpPolice
	}
}

// adoptable returns the elements to adopt whose chain the plan has (the
// engine adopts only those: nat's kernelQoSFits; one that jumps to a
// missing chain would fail the whole install).
func adoptable(p Plan) ([]conntrack.GREOut, []conntrack.GREIn) {
	fits := func(class uint8, policed bool) bool {
		return int(class) <= p.fpClasses && (!policed || p.fpPolice.Enabled())
	}
	var outs []conntrack.GREOut
	for _, o := range p.AdoptOut {
		if fits(o.Class, o.Policed) {
			outs = append(outs, o)
		}
	}
	var ins []conntrack.GREIn
	for _, i := range p.AdoptIn {
		if fits(i.Class, i.Policed) {
			ins = append(ins, i)
		}
	}
	return outs, ins
}

// FastPathChains returns the classes (1..classes) and whether policed calls
// have chains in the installed table (for nat.Engine.SetKernelQoSChains).
func (in *Installed) FastPathChains() (classes int, policed bool) {
	return in.Plan.fpClasses, in.Plan.fpPolice.Enabled()
}

// callPolice is policing.pptp_call as the engine applies it
// (cmd/pptpgw's engineQoS).
func callPolice(c *Config) police.Limit {
	p := c.Policing.PPTPCall
	if p == nil {
		return police.Limit{}
	}
	b := p.Burst
	if b == 0 {
		b = qos.DefaultBurst(p.Rate)
	}
	return police.Limit{BytesPerSecond: p.Rate.BytesPerSecond(), Burst: uint32(b)}
}

// addQoSChains queues the dynamic sets and the chains of classed and
// policed calls.
func addQoSChains(c *nftables.Conn, t *nftables.Table, ms *greMapSet, p Plan) {
	pol := p.fpPolice.Enabled()
	if pol {
		lim := func(out bool) *nftables.Set {
			s := &nftables.Set{Table: t, Name: greLimName(out, p.fpPolice), KeyType: greKeyType,
				Dynamic: true, HasTimeout: true, Timeout: GREPoliceIdle}
			if err := c.AddSet(s, nil); err != nil {
				panic(err) // fixed types
			}
			return s
		}
		ms.limOut, ms.limIn = lim(true), lim(false)
	}
	for _, out := range []bool{true, false} {
		for k := 0; k <= p.fpClasses; k++ {
			for _, policed := range []bool{false, true} {
				if (k == 0 && !policed) || (policed && !pol) {
					continue
				}
				ch := c.AddChain(&nftables.Chain{Name: greQoSChain(out, uint8(k), policed), Table: t})
				for _, ex := range qosChainRules(*ms, out, k, policed, p.fpPolice) {
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
				}
			}
		}
	}
}

// qosChainRules are the rules of the chain of class k (1 + index; 0: none)
// and policing.
func qosChainRules(ms greMapSet, out bool, k int, policed bool, l police.Limit) [][]expr.Any {
	key, lim, drops, xlate := greKeyIn, ms.limIn, ms.ind, fastPathInXlate(ms.inq)
	if out {
		key, lim, drops, xlate = greKeyOut, ms.limOut, ms.outd, fastPathOutXlate(ms.outq)
	}
	var rs [][]expr.Any
	if policed {
		r := append(key(), &expr.Dynset{SrcRegKey: 1, SetName: lim.Name, SetID: lim.ID,
			Operation: uint32(unix.NFT_DYNSET_OP_UPDATE),
			Exprs:     []expr.Any{nftLimit(l)}})
		r = append(r, key()...)
		r = append(r, &expr.Lookup{SourceRegister: 1, SetName: drops.Name, SetID: drops.ID},
			&expr.Verdict{Kind: expr.VerdictDrop})
		rs = append(rs, r)
	}
	if k > 0 {
		rs = append(rs, SetClass(k-1))
	}
	return append(rs, xlate)
}

// nftLimit is `limit rate over R bytes/second burst B' bytes` for l. The
// kernel's byte limit (nft_limit_init) holds unit * (rate + burst) / rate
// of time, that is one second at the rate plus the burst: at least a
// second's worth, whatever the burst. So B' is what l's burst exceeds a
// second at the rate by (0 if it does not): the bucket holds max(rate x 1
// s, l.Burst) bytes, the nearest the kernel can do to l's. The long-run
// rate is l's.
func nftLimit(l police.Limit) *expr.Limit {
	var b uint32
	if uint64(l.Burst) > l.BytesPerSecond {
		b = l.Burst - uint32(l.BytesPerSecond)
	}
	return &expr.Limit{Type: expr.LimitTypePktBytes, Rate: l.BytesPerSecond, Over: true, Unit: expr.LimitTimeSecond, Burst: b}
}

// KernelPoliceDepth is the depth in bytes of the kernel fast path's bucket
// for l (nftLimit): max(one second at the rate, l.Burst).
func KernelPoliceDepth(l police.Limit) uint64 { return max(l.BytesPerSecond, uint64(l.Burst)) }

// fastPathQoSJump is the rule that sends a classed or policed call's GRE to
// its chain.
func fastPathQoSJump(vmap *nftables.Set, out bool, guard []expr.Any) []expr.Any {
	key := greKeyIn()
	if out {
		key = greKeyOut()
	}
	ex := append(matchPPTPGREOn(guard), key...)
	return append(ex, &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: vmap.Name, SetID: vmap.ID})
}

// elemOp is one element list for one map.
type elemOp struct {
	del bool
	set *nftables.Set
	els []nftables.SetElement
}

// greElems is a set of elements sorted into the maps that hold them.
type greElems struct {
	ms  greMapSet
	els map[*nftables.Set][]nftables.SetElement
}

// elems sorts elements into the maps that hold them (by their class and
// policing).
func (m greMapSet) elems(outs []conntrack.GREOut, ins []conntrack.GREIn) greElems {
	g := greElems{ms: m, els: map[*nftables.Set][]nftables.SetElement{}}
	add := func(s *nftables.Set, el nftables.SetElement) { g.els[s] = append(g.els[s], el) }
	for _, o := range outs {
		k, v := outKeyOf(o), append([]byte(nil), o.PublicIP[:]...)
		if !special(o.Class, o.Policed) {
			add(m.out, nftables.SetElement{Key: k, Val: v})
			continue
		}
		add(m.outq, nftables.SetElement{Key: k, Val: v})
		add(m.outp, nftables.SetElement{Key: k,
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: greQoSChain(true, o.Class, o.Policed)}})
		if o.Policed {
			add(m.outd, nftables.SetElement{Key: k})
		}
	}
	for _, i := range ins {
		k, v := inKeyOf(i), inVal(i.InData)
		if !special(i.Class, i.Policed) {
			add(m.in, nftables.SetElement{Key: k, Val: v})
			continue
		}
		add(m.inq, nftables.SetElement{Key: k, Val: v})
		add(m.inp, nftables.SetElement{Key: k,
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: greQoSChain(false, i.Class, i.Policed)}})
		if i.Policed {
			add(m.ind, nftables.SetElement{Key: k})
		}
	}
	return g
}

// ops lists the element lists in a fixed order. Additions: translations
// before the verdict maps that send GRE to them; deletions: the verdict
// maps first (all are in one transaction anyway).
func (g greElems) ops(del bool) []elemOp {
	order := []*nftables.Set{g.ms.out, g.ms.in, g.ms.outq, g.ms.inq, g.ms.outd, g.ms.ind, g.ms.outp, g.ms.inp}
	if del {
		order = []*nftables.Set{g.ms.outp, g.ms.inp, g.ms.out, g.ms.in, g.ms.outq, g.ms.inq, g.ms.outd, g.ms.ind}
	}
	var r []elemOp
	for _, s := range order {
		if els := g.els[s]; len(els) > 0 {
			var keyOnly []nftables.SetElement
			if del {
				for _, e := range els {
					keyOnly = append(keyOnly, nftables.SetElement{Key: e.Key})
				}
				els = keyOnly
			}
			r = append(r, elemOp{del, s, els})
		}
	}
	return r
}

// readGRE returns every element of the maps with its counters; classed and
// policed calls' elements with their class, policing and drops. An element
// of gre_outq/gre_inq without its verdict is left out (the engine then adds
// it again).
func readGRE(c *nftables.Conn, ms greMapSet) ([]conntrack.GREOut, []conntrack.GREIn, error) {
	get := func(s *nftables.Set) ([]nftables.SetElement, error) {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nftables: list map %s: %w", s.Name, err)
		}
		return els, nil
	}
	var all [8][]nftables.SetElement
	for i, s := range ms.list() {
		els, err := get(s)
		if err != nil {
			return nil, nil, err
		}
		all[i] = els
	}
	prof := func(els []nftables.SetElement, out bool) map[string][2]uint8 {
		r := map[string][2]uint8{}
		for _, el := range els {
			if k, p, ok := parseQoSChain(verdictChain(el.Val), out); ok {
				var pb uint8
				if p {
					pb = 1
				}
				r[string(el.Key)] = [2]uint8{k, pb}
			}
		}
		return r
	}
	drops := func(els []nftables.SetElement) map[string][2]uint64 {
		r := map[string][2]uint64{}
		for _, el := range els {
			if el.Counter != nil {
				r[string(el.Key)] = [2]uint64{el.Counter.Packets, el.Counter.Bytes}
			} else {
				r[string(el.Key)] = [2]uint64{}
			}
		}
		return r
	}
	outP, inP := prof(all[4], true), prof(all[5], false)
	outD, inD := drops(all[6]), drops(all[7])
	outs := make([]conntrack.GREOut, 0, len(all[0])+len(all[2]))
	for _, el := range all[0] {
		if o, ok := decodeOut(el); ok {
			outs = append(outs, o)
		}
	}
	for _, el := range all[2] {
		o, ok := decodeOut(el)
		p, pok := outP[string(el.Key)]
		if !ok || !pok {
			continue
		}
		o.Class, o.Policed = p[0], p[1] == 1
		if d, dok := outD[string(el.Key)]; o.Policed && !dok {
			continue
		} else {
			o.Dropped, o.DroppedBytes = d[0], d[1]
		}
		outs = append(outs, o)
	}
	ins := make([]conntrack.GREIn, 0, len(all[1])+len(all[3]))
	for _, el := range all[1] {
		if i, ok := decodeIn(el); ok {
			ins = append(ins, i)
		}
	}
	for _, el := range all[3] {
		i, ok := decodeIn(el)
		p, pok := inP[string(el.Key)]
		if !ok || !pok {
			continue
		}
		i.Class, i.Policed = p[0], p[1] == 1
		if d, dok := inD[string(el.Key)]; i.Policed && !dok {
			continue
		} else {
			i.Dropped, i.DroppedBytes = d[0], d[1]
		}
		ins = append(ins, i)
	}
	return outs, ins, nil
}

// verdictChain returns the chain of a vmap element's data as
// google/nftables returns it (the NFTA_DATA_VERDICT attributes).
func verdictChain(b []byte) string {
	as, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		return ""
	}
	for _, a := range as {
		if a.Type == unix.NFTA_VERDICT_CHAIN {
			name, _, _ := strings.Cut(string(a.Data), "\x00") // a C string
			return name
		}
	}
	return ""
}

package rules

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"pptpgw/conntrack"
)

// The kernel fast path for established GRE (issue 12, `gre_path: kernel`).
// Two maps and two rules join the table Install programs (nft(8) text;
// the call ID types print as inet_service):
//
//	map gre_out { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; counter; }
//	    // inside . peer . peer's call ID (GRE key)      -> public address
//	map gre_in  { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }
//	    // public . peer . outside call ID (GRE key)     -> inside address . inside call ID
//	chain queue_prerouting {  ... (before the GRE queue rule)
//	    ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b iifname WAN
//	        ip daddr, @th,48,16 set (ip daddr . ip saddr . @th,48,16 map @gre_in) accept }
//	chain queue_postrouting { ... (before the GRE queue rule)
//	    ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b oifname WAN
//	        ip saddr set ip saddr . ip daddr . @th,48,16 map @gre_out accept }
//
// The inbound rule has no nft text: one lookup fills two registers (the
// inside address, the inside call ID) and two payload writes put them in
// place (the address with the IP checksum update nft uses; enhanced GRE
// has no checksum of its own). The match on the first 32 bits is
// wire.ParseGRE's: version 1, K set, C, R, s, recursion and the other flags
// clear (S and A either way), protocol PPP; anything else misses the rule
// and is queued, as is GRE whose key is in no element (first packets,
// unknown and torn-down calls). No rule touches conntrack: GRE stays
// notracked. Elements carry counters, which the engine reads (nat's
// kernelpath.go).
//
// Placement: these are ip-family rules in the chains that queue GRE (after
// routing for outbound, before it for inbound), so the kernel's routing,
// TTL, fib and fragment handling are unchanged. The other
// placement, the device's netdev ingress hook with `fwd`, was not built
// (see README, "Kernel fast path").

// Map names of the fast path.
const (
	SetGREOut = "gre_out"
	SetGREIn  = "gre_in"
)

// greHeaderMask and greHeaderPPTP: @th,0,32 & mask == value is enhanced GRE
// as wire.ParseGRE accepts it (S and A may be either).
var (
	greHeaderMask = []byte{0xef, 0x7f, 0xff, 0xff}
	greHeaderPPTP = []byte{0x20, 0x01, 0x88, 0x0b}
)

// greKeyType is ipv4_addr . ipv4_addr . inet_service (12 bytes: the call ID
// padded to a register).
var greKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetService)

func greSets(t *nftables.Table) (out, in *nftables.Set) {
	out = &nftables.Set{Table: t, Name: SetGREOut, IsMap: true, Counter: true,
		KeyType: greKeyType, DataType: nftables.TypeIPAddr}
	in = &nftables.Set{Table: t, Name: SetGREIn, IsMap: true, Counter: true,
		KeyType: greKeyType, DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	return out, in
}

// addGRESets queues the two maps (with the elements to adopt) into c's
// batch.
func addGRESets(c *nftables.Conn, t *nftables.Table, adoptOut []conntrack.GREOut, adoptIn []conntrack.GREIn) (out, in *nftables.Set, err error) {
	out, in = greSets(t)
	if err := c.AddSet(out, outElems(adoptOut)); err != nil {
		return nil, nil, fmt.Errorf("nftables: map %s: %w", SetGREOut, err)
	}
	if err := c.AddSet(in, inElems(adoptIn)); err != nil {
		return nil, nil, fmt.Errorf("nftables: map %s: %w", SetGREIn, err)
	}
	return out, in, nil
}

// MatchPPTPGRE is `ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b`.
func MatchPPTPGRE() []expr.Any {
	return append(MatchGRE(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: greHeaderMask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: greHeaderPPTP},
	)
}

// greKeyLoad loads addr1 . addr2 . @th,48,16 into registers 1, 9, 10 (the
// concatenation nft builds for a lookup).
func greKeyLoad(off1, off2 uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off1, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: off2, Len: 4},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 6, Len: 2},
	}
}

// ipAddrWrite is `ip saddr set` (off 12) / `ip daddr set` (off 16) from
// register 1, with nft's IP checksum update.
func ipAddrWrite(off uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader,
		Offset: off, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
}

// FastPathOut is the outbound rule (to the WAN, in queue_postrouting).
func FastPathOut(set *nftables.Set, wan string) []expr.Any {
	ex := append(MatchPPTPGRE(), MatchIfname(expr.MetaKeyOIFNAME, wan)...)
	ex = append(ex, greKeyLoad(12, 16)...)
	return append(ex,
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
		ipAddrWrite(12),
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// FastPathIn is the inbound rule (from the WAN, in queue_prerouting): the
// lookup's data is the inside address (register 1) and the inside call ID
// (register 9, the second 32-bit register of the concatenation).
func FastPathIn(set *nftables.Set, wan string) []expr.Any {
	ex := append(MatchPPTPGRE(), MatchIfname(expr.MetaKeyIIFNAME, wan)...)
	ex = append(ex, greKeyLoad(16, 12)...)
	return append(ex,
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
		ipAddrWrite(16),
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 9, Base: expr.PayloadBaseTransportHeader,
			Offset: 6, Len: 2},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// Element encodings: keys and data as the kernel holds them (big endian,
// each part padded to 4 bytes).

func greKey(a, b [4]byte, id uint16) []byte {
	k := make([]byte, 12)
	copy(k, a[:])
	copy(k[4:], b[:])
	binary.BigEndian.PutUint16(k[8:], id)
	return k
}

func outElems(es []conntrack.GREOut) []nftables.SetElement {
	r := make([]nftables.SetElement, 0, len(es))
	for _, e := range es {
		r = append(r, nftables.SetElement{Key: greKey(e.Key.InsideIP, e.Key.PeerIP, e.Key.PeerCallID), Val: append([]byte(nil), e.PublicIP[:]...)})
	}
	return r
}

func inElems(es []conntrack.GREIn) []nftables.SetElement {
	r := make([]nftables.SetElement, 0, len(es))
	for _, e := range es {
		v := make([]byte, 8)
		copy(v, e.InsideIP[:])
		binary.BigEndian.PutUint16(v[4:], e.InsideCallID)
		r = append(r, nftables.SetElement{Key: greKey(e.Key.PublicIP, e.Key.PeerIP, e.Key.OutsideCallID), Val: v})
	}
	return r
}

func decodeOut(el nftables.SetElement) (conntrack.GREOut, bool) {
	if len(el.Key) != 12 || len(el.Val) != 4 {
		return conntrack.GREOut{}, false
	}
	var o conntrack.GREOut
	copy(o.Key.InsideIP[:], el.Key)
	copy(o.Key.PeerIP[:], el.Key[4:])
	o.Key.PeerCallID = binary.BigEndian.Uint16(el.Key[8:])
	copy(o.PublicIP[:], el.Val)
	if el.Counter != nil {
		o.Packets, o.Bytes = el.Counter.Packets, el.Counter.Bytes
	}
	return o, true
}

func decodeIn(el nftables.SetElement) (conntrack.GREIn, bool) {
	if len(el.Key) != 12 || len(el.Val) != 8 {
		return conntrack.GREIn{}, false
	}
	var i conntrack.GREIn
	copy(i.Key.PublicIP[:], el.Key)
	copy(i.Key.PeerIP[:], el.Key[4:])
	i.Key.OutsideCallID = binary.BigEndian.Uint16(el.Key[8:])
	copy(i.InsideIP[:], el.Val)
	i.InsideCallID = binary.BigEndian.Uint16(el.Val[4:])
	if el.Counter != nil {
		i.Packets, i.Bytes = el.Counter.Packets, el.Counter.Bytes
	}
	return i, true
}

// GREMaps changes and reads the fast path's maps of an installed table
// (nat.KernelMaps).
type GREMaps struct {
	conn    *nftables.Conn
	out, in *nftables.Set
}

// NewGREMaps returns the fast path's maps of table `ip table` in the
// network namespace netns (0: the caller's). The maps need not exist yet:
// Update and Read fail until Install made them.
func NewGREMaps(table string, netns int) (*GREMaps, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	o, i := greSets(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})
	return &GREMaps{conn: c, out: o, in: i}, nil
}

// Update deletes and adds elements in one transaction (deletions first).
func (m *GREMaps) Update(delOut []conntrack.OutKey, delIn []conntrack.InKey, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	var dOut []nftables.SetElement
	for _, k := range delOut {
		dOut = append(dOut, nftables.SetElement{Key: greKey(k.InsideIP, k.PeerIP, k.PeerCallID)})
	}
	var dIn []nftables.SetElement
	for _, k := range delIn {
		dIn = append(dIn, nftables.SetElement{Key: greKey(k.PublicIP, k.PeerIP, k.OutsideCallID)})
	}
	for _, op := range []struct {
		del bool
		set *nftables.Set
		els []nftables.SetElement
	}{{true, m.out, dOut}, {true, m.in, dIn}, {false, m.out, outElems(addOut)}, {false, m.in, inElems(addIn)}} {
		if len(op.els) == 0 {
			continue
		}
		var err error
		if op.del {
			err = m.conn.SetDeleteElements(op.set, op.els)
		} else {
			err = m.conn.SetAddElements(op.set, op.els)
		}
		if err != nil {
			return err
		}
	}
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: update GRE maps: %w", explain(err))
	}
	return nil
}

// Read returns every element of both maps with its counters.
func (m *GREMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) {
	return readGRE(m.conn, m.out, m.in)
}

func readGRE(c *nftables.Conn, so, si *nftables.Set) ([]conntrack.GREOut, []conntrack.GREIn, error) {
	els, err := c.GetSetElements(so)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list map %s: %w", so.Name, err)
	}
	outs := make([]conntrack.GREOut, 0, len(els))
	for _, el := range els {
		if o, ok := decodeOut(el); ok {
			outs = append(outs, o)
		}
	}
	if els, err = c.GetSetElements(si); err != nil {
		return nil, nil, fmt.Errorf("nftables: list map %s: %w", si.Name, err)
	}
	ins := make([]conntrack.GREIn, 0, len(els))
	for _, el := range els {
		if i, ok := decodeIn(el); ok {
			ins = append(ins, i)
		}
	}
	return outs, ins, nil
}

// ReadGREElements returns the fast path's elements in table `ip name` of the
// network namespace netns (0: the caller's) as a previous run left them,
// for the engine to adopt (nat.Engine.AdoptKernelGRE) before Install
// replaces the table. No table or no maps is no elements, not an error.
func ReadGREElements(name string, netns int) ([]conntrack.GREOut, []conntrack.GREIn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	sets, err := c.GetSets(t)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("nftables: list sets of ip %s: %w", name, err)
	}
	have := 0
	for _, s := range sets {
		if s.Name == SetGREOut || s.Name == SetGREIn {
			have++
		}
	}
	if have != 2 {
		return nil, nil, nil
	}
	so, si := greSets(t)
	return readGRE(c, so, si)
}

// ProbeKernelGRE reports whether the kernel runs the fast path's maps and
// rules: one batch adds a scratch table with both maps and both rules (in
// unhooked chains, so no packet sees them) and deletes it again, as
// ProbeNativeQueue does.
func ProbeKernelGRE(c *nftables.Conn, table string) (bool, error) {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: probeName(table) + "_gre"}
	c.AddTable(t)
	so, si, err := addGRESets(c, t, nil, nil)
	if err != nil {
		return false, err
	}
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: FastPathOut(so, "probe0")})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: FastPathIn(si, "probe0")})
	c.DelTable(t)
	err = c.Flush()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		return false, nil
	default:
		return false, fmt.Errorf("nftables: probe for the kernel GRE path: %w", explain(err))
	}
}

// gre_path values.
const (
	GREPathAuto      = "auto"
	GREPathKernel    = "kernel"
	GREPathUserspace = "userspace"
)

// ResolveGREPath decides whether plan's table gets the fast path: kernel
// (an error if the kernel cannot run it), userspace, or auto (probed).
func ResolveGREPath(plan Plan) (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(plan.NetNS))
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	return resolveGREPath(c, plan)
}

func resolveGREPath(c *nftables.Conn, p Plan) (bool, error) {
	switch p.GREPath {
	case GREPathUserspace, "": // a Plan without it: the ruleset before issue 12
		return false, nil
	case GREPathKernel, GREPathAuto:
	default:
		return false, fmt.Errorf("rules: unknown gre_path %q", p.GREPath)
	}
	ok, err := ProbeKernelGRE(c, p.Table)
	if err != nil {
		return false, err
	}
	if !ok && p.GREPath == GREPathKernel {
		return false, fmt.Errorf("rules: gre_path: kernel, but this kernel rejects the fast path's maps or rules " +
			"(needs nft_lookup, nft_payload writes, concatenated map keys and element counters); use gre_path: userspace")
	}
	return ok, nil
}

// fastPath is the fast path being added to a table in one batch.
type fastPath struct{ out, in *nftables.Set }

// addFastPath queues the fast path's maps (and the elements to adopt) into
// the batch if the plan has it, and returns nil otherwise.
func addFastPath(c *nftables.Conn, t *nftables.Table, p Plan) *fastPath {
	if !p.kernelGRE {
		return nil
	}
	out, in, err := addGRESets(c, t, p.AdoptOut, p.AdoptIn)
	if err != nil {
		// Fixed types and well-formed elements: AddSet cannot fail here.
		panic(err)
	}
	return &fastPath{out, in}
}

// addRule adds the fast path's rule for chain ch (iface: the interface
// match of that chain, IIFNAME inbound, OIFNAME outbound).
func (fp *fastPath) addRule(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, iface expr.MetaKey, wan string) {
	if fp == nil {
		return
	}
	ex := FastPathOut(fp.out, wan)
	if iface == expr.MetaKeyIIFNAME {
		ex = FastPathIn(fp.in, wan)
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
}

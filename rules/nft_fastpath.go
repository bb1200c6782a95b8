package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"pptpgw/conntrack"
	"pptpgw/qos/police"
)

// The kernel fast path for established GRE (issue 12, `gre_path: kernel`).
// Two maps and two rules join the table Install programs (nft(8) text;
// the call ID types print as inet_service):
//
//	map gre_out { type ipv4_addr . ipv4_addr . inet_service . iface_index : ipv4_addr; counter; }
//	    // inside . peer . peer's call ID (GRE key) . uplink  -> public address
//	map gre_in  { type ipv4_addr . ipv4_addr . inet_service . iface_index : ipv4_addr . inet_service; counter; }
//	    // public . peer . outside call ID (GRE key) . uplink -> inside address . inside call ID
//	chain queue_prerouting {  ... (before the GRE queue rules)
//	    ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b
//	        ip daddr, @th,48,16 set (ip daddr . ip saddr . @th,48,16 . meta iif map @gre_in) accept }
//	chain queue_postrouting { ... (before the GRE queue rules)
//	    ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b
//	        ip saddr set ip saddr . ip daddr . @th,48,16 . meta oif map @gre_out accept }
//
// The uplink's interface (meta oif outbound, meta iif inbound) is part of
// the key (kfeat): an element matches its call's GRE on its call's uplink
// only, on any of several uplinks; GRE on another interface misses and is
// queued, and the engine drops it as gre_wrong_uplink. Calls with a class
// or a policer have their elements in other maps, reached only when
// gre_out/gre_in miss (nft_fastpath_qos.go).
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

// greKeyType is ipv4_addr . ipv4_addr . inet_service . iface_index (16
// bytes: the call ID padded to a register; the interface index in host
// byte order, as meta iif/oif load it).
var greKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeIFIndex)

// addGRESets queues the maps into c's batch (the elements to adopt are
// added by addGREElements once the chains they name exist).
func addGRESets(c *nftables.Conn, t *nftables.Table) (greMapSet, error) {
	ms := allGRESets(t)
	for _, s := range ms.list() {
		if err := c.AddSet(s, nil); err != nil {
			return ms, fmt.Errorf("nftables: map %s: %w", s.Name, err)
		}
	}
	return ms, nil
}

// MatchPPTPGRE is `ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b`.
func MatchPPTPGRE() []expr.Any { return matchPPTPGREOn(nil) }

// matchPPTPGREOn is MatchPPTPGRE with guard (an interface match) between the
// protocol and the header: GRE crossing the chain on another interface (a
// packet's other direction: every forwarded packet crosses both queue
// chains) leaves the rule at the interface compare instead of costing the
// map lookups of a direction it is not in.
func matchPPTPGREOn(guard []expr.Any) []expr.Any {
	return append(append(MatchGRE(), guard...),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: greHeaderMask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: greHeaderPPTP},
	)
}

// greKeyLoad loads addr1 . addr2 . @th,48,16 . meta dev into registers 1,
// 9, 10, 11 (the concatenation nft builds for a lookup).
func greKeyLoad(off1, off2 uint32, dev expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off1, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: off2, Len: 4},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 6, Len: 2},
		&expr.Meta{Key: dev, Register: 11},
	}
}

// greKeyOut and greKeyIn are the key loads of the outbound and inbound
// rules.
func greKeyOut() []expr.Any { return greKeyLoad(12, 16, expr.MetaKeyOIF) }
func greKeyIn() []expr.Any  { return greKeyLoad(16, 12, expr.MetaKeyIIF) }

// ipAddrWrite is `ip saddr set` (off 12) / `ip daddr set` (off 16) from
// register 1, with nft's IP checksum update.
func ipAddrWrite(off uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader,
		Offset: off, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
}

// FastPathOut is the outbound rule (to an uplink, in queue_postrouting).
func FastPathOut(set *nftables.Set, guard []expr.Any) []expr.Any {
	return append(matchPPTPGREOn(guard), fastPathOutXlate(set)...)
}

// fastPathOutXlate is the outbound rule after the GRE match.
func fastPathOutXlate(set *nftables.Set) []expr.Any {
	return append(greKeyOut(),
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
		ipAddrWrite(12),
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// FastPathIn is the inbound rule (from an uplink, in queue_prerouting): the
// lookup's data is the inside address (register 1) and the inside call ID
// (register 9, the second 32-bit register of the concatenation).
func FastPathIn(set *nftables.Set, guard []expr.Any) []expr.Any {
	return append(matchPPTPGREOn(guard), fastPathInXlate(set)...)
}

// fastPathInXlate is the inbound rule after the GRE match.
func fastPathInXlate(set *nftables.Set) []expr.Any {
	return append(greKeyIn(),
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
		ipAddrWrite(16),
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 9, Base: expr.PayloadBaseTransportHeader,
			Offset: 6, Len: 2},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// Element encodings: keys and data as the kernel holds them (big endian,
// each part padded to 4 bytes; the interface index in host byte order).

func greKey(a, b [4]byte, id uint16, ifindex uint32) []byte {
	k := make([]byte, 16)
	copy(k, a[:])
	copy(k[4:], b[:])
	binary.BigEndian.PutUint16(k[8:], id)
	binary.NativeEndian.PutUint32(k[12:], ifindex)
	return k
}

func outKeyOf(e conntrack.GREOut) []byte {
	return greKey(e.Key.InsideIP, e.Key.PeerIP, e.Key.PeerCallID, e.IfIndex)
}

func inKeyOf(e conntrack.GREIn) []byte {
	return greKey(e.Key.PublicIP, e.Key.PeerIP, e.Key.OutsideCallID, e.IfIndex)
}

func inVal(d conntrack.InData) []byte {
	v := make([]byte, 8)
	copy(v, d.InsideIP[:])
	binary.BigEndian.PutUint16(v[4:], d.InsideCallID)
	return v
}

// decodeKey splits a 16-byte key; ok is false for any other length (a map
// of an older type).
func decodeKey(k []byte) (a, b [4]byte, id uint16, ifindex uint32, ok bool) {
	if len(k) != 16 {
		return a, b, 0, 0, false
	}
	copy(a[:], k)
	copy(b[:], k[4:])
	return a, b, binary.BigEndian.Uint16(k[8:]), binary.NativeEndian.Uint32(k[12:]), true
}

func decodeOut(el nftables.SetElement) (conntrack.GREOut, bool) {
	var o conntrack.GREOut
	var ok bool
	o.Key.InsideIP, o.Key.PeerIP, o.Key.PeerCallID, o.IfIndex, ok = decodeKey(el.Key)
	if !ok || len(el.Val) != 4 {
		return conntrack.GREOut{}, false
	}
	copy(o.PublicIP[:], el.Val)
	if el.Counter != nil {
		o.Packets, o.Bytes = el.Counter.Packets, el.Counter.Bytes
	}
	return o, true
}

func decodeIn(el nftables.SetElement) (conntrack.GREIn, bool) {
	var i conntrack.GREIn
	var ok bool
	i.Key.PublicIP, i.Key.PeerIP, i.Key.OutsideCallID, i.IfIndex, ok = decodeKey(el.Key)
	if !ok || len(el.Val) != 8 {
		return conntrack.GREIn{}, false
	}
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
	conn *nftables.Conn
	s    greMapSet
}

// NewGREMaps returns the fast path's maps of table `ip table` in the
// network namespace netns (0: the caller's). The maps need not exist yet:
// Update and Read fail until Install made them.
func NewGREMaps(table string, netns int) (*GREMaps, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &GREMaps{conn: c, s: allGRESets(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})}, nil
}

// Update deletes and adds elements in one transaction (deletions first).
// An element is deleted by what the kernel holds (its key includes the
// interface; its class and policing say which maps hold it).
func (m *GREMaps) Update(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	dels := m.s.elems(delOut, delIn)
	adds := m.s.elems(addOut, addIn)
	for _, op := range append(dels.ops(true), adds.ops(false)...) {
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

// Read returns every element of the maps with its counters.
func (m *GREMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) {
	return readGRE(m.conn, m.s)
}

// ReadGREElements returns the fast path's elements in table `ip name` of the
// network namespace netns (0: the caller's) as a previous run left them,
// for the engine to adopt (nat.Engine.AdoptKernelGRE) before Install
// replaces the table. No table or no maps is no elements, not an error;
// so are maps of an older type (their keys have another length).
func ReadGREElements(name string, netns int) ([]conntrack.GREOut, []conntrack.GREIn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	// No table, nothing to adopt. Asked first: google/nftables wraps
	// GetSets' error with %v, so its ENOENT for a missing table cannot be
	// told from any other failure (a warning at every first start).
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == name }) {
		return nil, nil, nil
	}
	sets, err := c.GetSets(t)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("nftables: list sets of ip %s: %w", name, err)
	}
	have := map[string]bool{}
	for _, s := range sets {
		have[s.Name] = true
	}
	ms := allGRESets(t)
	for _, s := range ms.list() {
		if !have[s.Name] {
			return nil, nil, nil // an older table: nothing to adopt
		}
	}
	return readGRE(c, ms)
}

// ProbeKernelGRE reports whether the kernel runs the fast path's maps and
// rules: one batch adds a scratch table with the maps and rules (in
// unhooked chains, so no packet sees them), classed and policed ones too,
// and deletes it again, as ProbeNativeQueue does.
func ProbeKernelGRE(c *nftables.Conn, table string) (bool, error) {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: probeName(table) + "_gre"}
	c.AddTable(t)
	fp := addFastPath(c, t, Plan{kernelGRE: true, fpClasses: 1,
		fpPolice: police.Limit{BytesPerSecond: 125000, Burst: 15000}})
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	fp.addRule(c, t, ch, expr.MetaKeyOIFNAME, []string{"probe0"})
	fp.addRule(c, t, ch, expr.MetaKeyIIFNAME, []string{"probe0"})
	c.DelTable(t)
	err := c.Flush()
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
type fastPath struct{ s greMapSet }

// addFastPath queues the fast path's maps, its chains for classed and
// policed calls and the elements to adopt into the batch if the plan has
// it, and returns nil otherwise.
func addFastPath(c *nftables.Conn, t *nftables.Table, p Plan) *fastPath {
	if !p.kernelGRE {
		return nil
	}
	ms, err := addGRESets(c, t)
	if err != nil {
		// Fixed types: AddSet cannot fail here.
		panic(err)
	}
	addQoSChains(c, t, &ms, p) // nft_fastpath_qos.go
	for _, op := range ms.elems(adoptable(p)).ops(false) {
		if err := c.SetAddElements(op.set, op.els); err != nil {
			panic(err) // well-formed elements
		}
	}
	return &fastPath{ms}
}

// addRule adds the fast path's rules for chain ch (iface: the interface
// match of that chain, IIFNAME inbound, OIFNAME outbound): the one for
// calls without class or policer, then the one that sends the others'
// GRE to their chain (nft_fastpath_qos.go).
//
// The rules come once per uplink, each guarded by the uplink's name (iface:
// iifname in prerouting, oifname in postrouting) right after the protocol:
// the key's interface index already confines an element to its uplink, but
// without the guard every GRE packet would also pay two failing lookups in
// the chain of the direction it is not in (a LAN's GRE in prerouting, the
// WAN's in postrouting), which measurably slowed the common case (`pptpgw
// bench`, GRE throughput and packets/s at one call: 0.88-0.93 of Linux's
// helper without the guard, 2 December 01:33-01:43 UTC).
func (fp *fastPath) addRule(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, iface expr.MetaKey, uplinks []string) {
	if fp == nil {
		return
	}
	for _, name := range uplinks {
		guard := MatchIfname(iface, name)
		ex, qx := FastPathOut(fp.s.out, guard), fastPathQoSJump(fp.s.outp, true, guard)
		if iface == expr.MetaKeyIIFNAME {
			ex, qx = FastPathIn(fp.s.in, guard), fastPathQoSJump(fp.s.inp, false, guard)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: qx})
	}
}

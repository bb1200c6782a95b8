package rules

// Several uplinks (issue 10): the `uplinks:` key.
//
//	uplinks:
//	  - {interface: wan0, via: 203.0.113.254}                              # masqueraded
//	  - {interface: wan1, public_address: 198.51.100.10, via: 198.51.100.1} # SNATed
//
// Uplink 0 is the WAN (`wan:` defaults to it). Each uplink gets the WAN's
// rules in the daemon's table (queue, masquerade or SNAT, forwards, the
// fail-safe drop). A PPTP call's GRE leaves by the uplink its control
// connection left by: the engine publishes (inside host, peer) -> uplink
// in the verdict map uplink_pin, and
//
//	map uplink_pin { type ipv4_addr . ipv4_addr : verdict }
//	chain uplink_0 { meta mark set meta mark & 0xffff00ff | 0x00000100 }
//	chain uplink_1 { meta mark set meta mark & 0xffff00ff | 0x00000200 }
//	chain uplink_pin_prerouting { type filter hook prerouting priority -150;
//	    ip protocol gre ip saddr . ip daddr vmap @uplink_pin }
//
// marks that GRE before routing (fwmark.Uplink(i), keeping every other
// bit); the routing plan adds per uplink the table UplinkTable(i) with a
// default route out of it and the rule `fwmark (i+1)<<8/0xff00 lookup
// UplinkTable(i)` at priority UplinkRulePriority+i, ahead of any rule of
// `routing:` without a smaller priority.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"pptpgw/internal/fwmark"
	"pptpgw/pptp/wire"
)

// Uplink pinning: names and numbers.
const (
	SetUplinkPin            = "uplink_pin"
	ChainUplinkPin          = "uplink_pin_prerouting"
	PriorityUplinkPin       = -150
	DefaultUplinkTable      = 4700 // uplink i's table is 4700+i unless set
	UplinkRulePriority      = 500  // uplink i's fwmark rule is at 500+i
	uplinkChainPrefix       = "uplink_"
	maxPendingPins          = 4096
	maxPinsPerBatch         = 256
	uplinkRulePriorityLimit = UplinkRulePriority + fwmark.MaxUplinks
)

// Uplink is one entry of `uplinks:`.
type Uplink struct {
	Interface     string `yaml:"interface"`
	PublicAddress string `yaml:"public_address"`
	Via           string `yaml:"via"`
	Table         uint32 `yaml:"table"`
}

// UplinkChain is the name of the chain that marks GRE for uplink i.
func UplinkChain(i int) string { return uplinkChainPrefix + strconv.Itoa(i) }

// UplinkTable is the routing table of uplink i.
func (c *Config) UplinkTable(i int) uint32 {
	if t := c.Uplinks[i].Table; t != 0 {
		return t
	}
	return DefaultUplinkTable + uint32(i)
}

// wanListAsUplinks rewrites `wan: [a, b, ...]` as `wan: a` plus `uplinks:
// [{interface: a}, {interface: b}, ...]` (all masqueraded, no next hop of
// their own: their pin tables take the main table's gateways, see
// PlanRoute.GwFromMain). Any other document is returned as it is.
// Decoding errors come from the original text (decodeErrorsBut), and
// Parse gives the uplinks the lines of the list's items (wanListLines).
func wanListAsUplinks(b []byte) ([]byte, error) {
	if !bytes.Contains(b, []byte("wan")) {
		return b, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return b, nil // the strict decoder reports what is wrong
	}
	m := doc.Content[0]
	var wan *yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "wan" {
			wan = m.Content[i+1]
		}
	}
	if wan == nil || wan.Kind != yaml.SequenceNode {
		return b, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "uplinks" {
			return nil, fmt.Errorf("line %d: wan is a list and uplinks is set: list the interfaces in uplinks only", wan.Line)
		}
	}
	if len(wan.Content) == 0 {
		return nil, fmt.Errorf("line %d: wan: an empty list", wan.Line)
	}
	// The rewritten text has other line numbers (yaml.Marshal drops blank
	// lines and moves comments): every decoding error but wan's own type
	// comes from the original text, with the operator's line numbers.
	if err := decodeErrorsBut(b, wan.Line); err != nil {
		return nil, err
	}
	ups := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, n := range wan.Content {
		if n.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: wan: a list of interface names", n.Line)
		}
		ups.Content = append(ups.Content, &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "interface"}, {Kind: yaml.ScalarNode, Value: n.Value, Style: n.Style}}})
	}
	first := *wan.Content[0]
	*wan = first
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "uplinks"}, ups)
	return yaml.Marshal(&doc)
}

// decodeErrorsBut decodes b strictly into a scratch Config and returns its
// errors except the one a list at line wanLine makes for the string wan.
func decodeErrorsBut(b []byte, wanLine int) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(Default())
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil // a syntax error: the same in the rewritten text, which Parse decodes next
	}
	wanErr := fmt.Sprintf("line %d: cannot unmarshal !!seq into string", wanLine)
	var keep []string
	for _, e := range te.Errors {
		if e != wanErr {
			keep = append(keep, e)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return cleanYAMLError(&yaml.TypeError{Errors: keep})
}

// wanListLines gives the uplinks a `wan: [a, b]` list stands for the
// lines of the list's items, so that Validate's errors about them name the
// line the operator wrote.
func (c *Config) wanListLines() {
	if _, list := c.lines["wan[0]"]; !list {
		return
	}
	if _, set := c.lines["uplinks"]; set {
		return
	}
	c.lines["uplinks"] = c.lines["wan"]
	for i := 0; ; i++ {
		l, ok := c.lines[fmt.Sprintf("wan[%d]", i)]
		if !ok {
			return
		}
		c.lines[fmt.Sprintf("uplinks[%d]", i)] = l
		c.lines[fmt.Sprintf("uplinks[%d].interface", i)] = l
	}
}

// applyUplinkDefaults makes uplink 0 the WAN when `wan:` and
// `public_address:` are not set (Parse calls it).
func (c *Config) applyUplinkDefaults() {
	if len(c.Uplinks) == 0 {
		return
	}
	if c.WAN == "" {
		c.WAN = c.Uplinks[0].Interface
	}
	if c.PublicAddress == "" {
		c.PublicAddress = c.Uplinks[0].PublicAddress
	}
}

// validateUplinks reports the problems of c.Uplinks.
func (c *Config) validateUplinks(bad func(field, format string, a ...any)) {
	if len(c.Uplinks) == 0 {
		return
	}
	if len(c.Uplinks) > fwmark.MaxUplinks {
		bad("uplinks", "%d uplinks; at most %d", len(c.Uplinks), fwmark.MaxUplinks)
	}
	u0 := c.Uplinks[0]
	if c.WAN != u0.Interface {
		bad("wan", "%q is not uplinks[0].interface (%q): with uplinks, the first one is the wan", c.WAN, u0.Interface)
	}
	if c.PublicAddress != u0.PublicAddress {
		bad("public_address", "%q is not uplinks[0].public_address (%q): set it there", c.PublicAddress, u0.PublicAddress)
	}
	ifs, pubs, tables := map[string]int{}, map[string]int{}, map[uint32]int{}
	for i, u := range c.Uplinks {
		p := fmt.Sprintf("uplinks[%d]", i)
		switch {
		case u.Interface == "":
			bad(p+".interface", "required")
		case !ifnameRE.MatchString(u.Interface):
			bad(p+".interface", "%q is not a valid interface name", u.Interface)
		default:
			if j, dup := ifs[u.Interface]; dup {
				bad(p+".interface", "%q is already uplinks[%d]", u.Interface, j)
			}
			ifs[u.Interface] = i
			for k, l := range c.LAN {
				if l == u.Interface {
					bad(p+".interface", "%q is also lan[%d]", l, k)
				}
			}
		}
		if u.PublicAddress != "" {
			a, err := netip.ParseAddr(u.PublicAddress)
			switch {
			case err != nil || !a.Is4():
				bad(p+".public_address", "%q is not an IPv4 address", u.PublicAddress)
			case !a.IsGlobalUnicast() && !a.IsPrivate():
				bad(p+".public_address", "%s is not a unicast address", a)
			default:
				if j, dup := pubs[a.String()]; dup {
					bad(p+".public_address", "%s is already uplinks[%d]'s", a, j)
				}
				pubs[a.String()] = i
			}
		}
		if u.Via != "" {
			if a, err := netip.ParseAddr(u.Via); err != nil || !a.Is4() {
				bad(p+".via", "%q is not an IPv4 address", u.Via)
			}
		}
		if len(c.Uplinks) > 1 {
			t := c.UplinkTable(i)
			switch {
			case t >= unix.RT_TABLE_DEFAULT && t <= unix.RT_TABLE_LOCAL:
				bad(p+".table", "%d is a kernel table", t)
			default:
				if j, dup := tables[t]; dup {
					bad(p+".table", "table %d is already uplinks[%d]'s", t, j)
				}
				tables[t] = i
				for k, rt := range c.Routing.Tables {
					if rt.ID == t {
						bad(p+".table", "table %d is also routing.tables[%d]", t, k)
					}
				}
			}
		}
	}
}

// PlanUplink is one uplink in the nftables plan.
type PlanUplink struct {
	Name   string
	Public netip.Addr // invalid: masquerade
}

// uplinkPlan fills p.Uplinks from c.
func (p *Plan) uplinkPlan(c *Config) {
	for _, u := range c.Uplinks {
		a, _ := netip.ParseAddr(u.PublicAddress)
		p.Uplinks = append(p.Uplinks, PlanUplink{Name: u.Interface, Public: a})
	}
}

// uplinkRoutes adds each uplink's table and fwmark rule to rp (with two
// uplinks or more).
func (c *Config) uplinkRoutes(rp *RoutingPlan) {
	if len(c.Uplinks) < 2 {
		return
	}
	for i, u := range c.Uplinks {
		gw, _ := netip.ParseAddr(u.Via)
		t := c.UplinkTable(i)
		rp.Routes = append(rp.Routes, PlanRoute{Table: t, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0),
			Gw: gw, Dev: u.Interface, GwFromMain: !gw.IsValid()})
		rp.Rules = append(rp.Rules, PlanRule{Priority: UplinkRulePriority + i, Table: t,
			Mark: fwmark.Uplink(i), Mask: fwmark.UplinkMask})
	}
}

// addUplinkRules adds, for uplinks 1.. of p, the rules the WAN has, and
// with two uplinks or more the pinning map and chains.
func addUplinkRules(c *nftables.Conn, t *nftables.Table, p Plan, impl QueueImpl) {
	if len(p.Uplinks) < 2 {
		return
	}
	chain := func(name string) *nftables.Chain { return &nftables.Chain{Name: name, Table: t} }
	rule := func(ch *nftables.Chain, ex ...[]expr.Any) {
		var all []expr.Any
		for _, e := range ex {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	greQ := QueueExprs(impl, p.Queue, false)
	q := QueueExprs(impl, p.Queue, p.FailOpen)
	for _, u := range p.Uplinks[1:] {
		if len(p.Forwards) > 0 {
			for _, f := range p.Forwards {
				rule(chain(ChainNATPrerouting), MatchIfname(expr.MetaKeyIIFNAME, u.Name), MatchTCPPort(false, f.Port), DNAT(f.Addr(), f.Port))
			}
		}
		for _, h := range []struct {
			ch    string
			iface expr.MetaKey
		}{{ChainQueuePrerouting, expr.MetaKeyIIFNAME}, {ChainQueuePostrouting, expr.MetaKeyOIFNAME}} {
			wan := MatchIfname(h.iface, u.Name)
			rule(chain(h.ch), MatchGRE(), wan, greQ)
			rule(chain(h.ch), MatchTCPPort(false, wire.ControlPort), wan, q)
			rule(chain(h.ch), MatchTCPPort(true, wire.ControlPort), wan, q)
		}
		if u.Public.IsValid() {
			rule(chain(ChainNATPostrouting), MatchIfname(expr.MetaKeyOIFNAME, u.Name), SNAT(u.Public))
		} else {
			rule(chain(ChainNATPostrouting), MatchIfname(expr.MetaKeyOIFNAME, u.Name), []expr.Any{&expr.Masq{}})
		}
	}
	for i := range p.Uplinks {
		ch := c.AddChain(&nftables.Chain{Name: UplinkChain(i), Table: t})
		rule(ch, SetMarkBits(fwmark.UplinkMask, fwmark.Uplink(i)))
	}
	set := uplinkPinSet(t)
	if err := c.AddSet(set, nil); err != nil {
		return // cannot happen for this static set; the Flush would fail anyway
	}
	pre := c.AddChain(&nftables.Chain{Name: ChainUplinkPin, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(PriorityUplinkPin)})
	rule(pre, MatchGRE(), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
	})
}

func uplinkPinSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: SetUplinkPin, IsMap: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr), DataType: nftables.TypeVerdict}
}

// SetMarkBits is `meta mark set meta mark & ~mask | v`: the bits of mask
// become v, every other bit (the operator's) stays.
func SetMarkBits(mask, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^mask), Xor: binaryutil.NativeEndian.PutUint32(v & mask)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// addFailsafeUplinks adds the fail-safe drop for uplinks 1.. of p.
func addFailsafeUplinks(c *nftables.Conn, t *nftables.Table, p Plan) {
	if len(p.Uplinks) < 2 {
		return
	}
	ch := &nftables.Chain{Name: ChainFailsafe, Table: t}
	for _, u := range p.Uplinks[1:] {
		var ex []expr.Any
		for _, e := range [][]expr.Any{MatchGRE(), MatchIfname(expr.MetaKeyOIFNAME, u.Name), MatchSourceNotLocal(),
			{&expr.Verdict{Kind: expr.VerdictDrop}}} {
			ex = append(ex, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
	}
}

// ResolvedUplink is an uplink's interface index and public address.
type ResolvedUplink struct {
	Index  uint32
	Public netip.Addr
}

// ResolveUplinks looks up the interfaces of c.Uplinks: an unknown one is an
// error; a masqueraded one takes its first IPv4 address.
func ResolveUplinks(c *Config) ([]ResolvedUplink, error) {
	var out []ResolvedUplink
	for i, u := range c.Uplinks {
		ifc, err := net.InterfaceByName(u.Interface)
		if err != nil {
			return nil, fmt.Errorf("uplinks[%d] interface %q: %w", i, u.Interface, unknownIf(err))
		}
		r := ResolvedUplink{Index: uint32(ifc.Index)}
		if r.Public, _ = netip.ParseAddr(u.PublicAddress); !r.Public.IsValid() {
			if r.Public, err = firstIPv4(ifc); err != nil {
				return nil, fmt.Errorf("uplinks[%d]: %w (set public_address or give it one)", i, err)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// UplinkPins keeps the map uplink_pin of the daemon's table in step with
// the engine's pins (it implements nat.Pinner). Pin and Unpin only queue;
// Run applies the queue in batches, in order.
//
// Run keeps what the engine wants pinned (want) apart from what the
// kernel's map is believed to hold (state): a batch the kernel refuses, or
// a map emptied by a reinstall, costs a read-back and a retry, never the
// knowledge of the pins in force. Keys not yet written stay dirty and are
// retried every pinRetry.
type UplinkPins struct {
	table string
	conn  *nftables.Conn
	ops   chan pinOp
	log   *slog.Logger
	// Run only:
	want  map[[8]byte]int      // the pins the engine has published
	state map[[8]byte]int      // what the kernel's map holds, as far as known
	dirty map[[8]byte]struct{} // keys where state may differ from want
	// Dropped counts pins not queued (the queue was full); Failed the
	// batches the kernel refused even after reading the map back.
	Dropped, Failed atomic.Uint64
}

type pinOp struct {
	key    [8]byte
	uplink int // -1: unpin; resync: write every pin again
}

const resync = -2

// pinRetry is how often Run retries keys the kernel refused.
const pinRetry = time.Second

// NewUplinkPins returns the writer of table's uplink_pin map in the network
// namespace netnsFd (0: the caller's).
func NewUplinkPins(table string, netnsFd int, log *slog.Logger) (*UplinkPins, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFd))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &UplinkPins{table: table, conn: c, ops: make(chan pinOp, maxPendingPins), log: log,
		want: map[[8]byte]int{}, state: map[[8]byte]int{}, dirty: map[[8]byte]struct{}{}}, nil
}

func pinKey(inside, peer [4]byte) [8]byte {
	var k [8]byte
	copy(k[:4], inside[:])
	copy(k[4:], peer[:])
	return k
}

// Pin queues inside . peer -> uplink.
func (u *UplinkPins) Pin(inside, peer [4]byte, uplink int) {
	u.enqueue(pinOp{pinKey(inside, peer), uplink})
}

// Unpin queues the removal of inside . peer.
func (u *UplinkPins) Unpin(inside, peer [4]byte) { u.enqueue(pinOp{pinKey(inside, peer), -1}) }

func (u *UplinkPins) enqueue(op pinOp) {
	select {
	case u.ops <- op:
	default:
		u.Dropped.Add(1)
	}
}

// Reinstalled tells the writer that the table was installed again (a
// reload replaces it with an empty map): every pin in force is written
// again, in order with the pins queued before.
func (u *UplinkPins) Reinstalled() {
	select {
	case u.ops <- pinOp{uplink: resync}:
	default:
		u.Dropped.Add(1)
	}
}

// Run applies queued pins until ctx ends. Start it once the table exists.
func (u *UplinkPins) Run(ctx context.Context) {
	retry := time.NewTicker(pinRetry)
	defer retry.Stop()
	var dropped uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			if len(u.dirty) > 0 {
				u.write()
			}
		case op := <-u.ops:
			u.take(op)
		more:
			for n := 1; n < maxPinsPerBatch; n++ {
				select {
				case op := <-u.ops:
					u.take(op)
				default:
					break more
				}
			}
			u.write()
		}
		if d := u.Dropped.Load(); d != dropped && u.log != nil {
			u.log.Error("uplink pins: updates lost, the queue was full; the GRE of the pairs concerned may leave by the wrong uplink",
				"lost", d-dropped, "queue", maxPendingPins)
			dropped = d
		}
	}
}

// take records op in want (Run only).
func (u *UplinkPins) take(op pinOp) {
	switch {
	case op.uplink == resync:
		// The map is empty now: everything wanted is to be written.
		clear(u.state)
		for k := range u.want {
			u.dirty[k] = struct{}{}
		}
	case op.uplink < 0:
		delete(u.want, op.key)
		u.dirty[op.key] = struct{}{}
	default:
		u.want[op.key] = op.uplink
		u.dirty[op.key] = struct{}{}
	}
}

// write brings the dirty keys of the map to want; when the kernel refuses
// (state was wrong: a reinstall not yet announced), it reads the map back
// and tries once more over every key.
func (u *UplinkPins) write() {
	err := u.sync()
	if err != nil {
		if rerr := u.readState(); rerr == nil {
			for k := range u.state {
				u.dirty[k] = struct{}{}
			}
			for k := range u.want {
				u.dirty[k] = struct{}{}
			}
			err = u.sync()
		}
	}
	if err != nil {
		u.Failed.Add(1)
		if u.log != nil {
			u.log.Error("uplink pins: nftables map update failed; retrying", "pending", len(u.dirty), "err", err)
		}
	}
}

// readState replaces state by the kernel's map.
func (u *UplinkPins) readState() error {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: u.table}
	els, err := u.conn.GetSetElements(uplinkPinSet(t))
	if err != nil {
		return err
	}
	st := map[[8]byte]int{}
	for _, e := range els {
		if len(e.Key) != 8 || e.VerdictData == nil {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(e.VerdictData.Chain, uplinkChainPrefix))
		if err != nil {
			continue
		}
		st[[8]byte(e.Key)] = i
	}
	u.state = st
	return nil
}

// sync writes the dirty keys, maxPinsPerBatch at a time, one nftables
// batch each; what the kernel took leaves dirty.
func (u *UplinkPins) sync() error {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: u.table}
	set := uplinkPinSet(t)
	keys := make([][8]byte, 0, len(u.dirty))
	for k := range u.dirty {
		keys = append(keys, k)
	}
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), maxPinsPerBatch)]
		keys = keys[len(chunk):]
		var dels, adds []nftables.SetElement
		for _, k := range chunk {
			want, wok := u.want[k]
			have, hok := u.state[k]
			if wok && hok && want == have {
				continue
			}
			if hok {
				dels = append(dels, nftables.SetElement{Key: append([]byte(nil), k[:]...)})
			}
			if wok {
				adds = append(adds, nftables.SetElement{Key: append([]byte(nil), k[:]...),
					VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: UplinkChain(want)}})
			}
		}
		if len(dels)+len(adds) > 0 {
			var errs []error
			if len(dels) > 0 {
				errs = append(errs, u.conn.SetDeleteElements(set, dels))
			}
			if len(adds) > 0 {
				errs = append(errs, u.conn.SetAddElements(set, adds))
			}
			errs = append(errs, u.conn.Flush())
			if err := errors.Join(errs...); err != nil {
				return err
			}
		}
		for _, k := range chunk {
			if want, ok := u.want[k]; ok {
				u.state[k] = want
			} else {
				delete(u.state, k)
			}
			delete(u.dirty, k)
		}
	}
	return nil
}

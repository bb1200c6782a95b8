package rules

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Apply brings the running table to plan's ruleset in one nftables
// transaction (live reload, issue 8), without a moment without rules,
// without losing a queued packet, and without emptying a set:
//
//   - Sets are the engine's; a reload never empties them. Named sets and
//     maps that the plan declares and the table already has are kept with
//     their elements (re-declaring an existing set with the same
//     properties changes nothing in the kernel); sets the plan declares
//     that do not exist yet are added; sets the plan no longer declares are
//     deleted after the rules that used them.
//   - Named objects (the ct timeout objects, named by a hash of their
//     policy) the plan no longer declares are deleted after the rules that
//     referred to them; those it declares are kept.
//   - Chains and rules are replaced: every chain of the table is flushed
//     and plan's chains and rules are added, in the same batch, so every
//     packet meets either the old rules or the new ones (GRE is never
//     forwarded untranslated for lack of a rule).
//   - A base chain is kept, not deleted and added again, unless its hook,
//     priority or type changed: the kernel unregisters the hook of a
//     deleted base chain, and unregistering any netfilter hook drops every
//     packet then waiting in an NFQUEUE for its verdict
//     (nfqnl_nf_hook_drop). Replacing the whole table in one batch lost
//     packets that way: up to 2 of 1000 GRE frames across 9 reloads in
//     half the runs (testbed TestGatewayReloadWhileGREFlows), none with
//     this. For the same reason a base chain the plan no longer has (such
//     as nat_prerouting after the last forward is removed) is left empty
//     with its accept policy (one with another policy is deleted); a
//     regular chain (a jump target, no hook) the plan no longer has is
//     deleted.
//
// On error the kernel keeps the old ruleset and in is unchanged. The queue
// implementation found by Install is kept; the table name and the queue
// number cannot change (the daemon is bound to the queue), so Apply
// refuses a plan that changes them. The GRE fast path stays as Install
// resolved it (the maps and their elements are kept).
func (in *Installed) Apply(plan Plan) error {
	return in.apply(plan, addRules)
}

// fillFunc adds a plan's chains, rules and sets to a table (addRules).
type fillFunc func(c *nftables.Conn, t *nftables.Table, p Plan, impl QueueImpl)

func (in *Installed) apply(plan Plan, fill fillFunc) error {
	if plan.Table != in.Plan.Table || plan.Queue != in.Plan.Queue {
		return fmt.Errorf("rules: table ip %s queue %d cannot change to table ip %s queue %d while running",
			in.Plan.Table, in.Plan.Queue, plan.Table, plan.Queue)
	}
	plan.QueueImpl = in.QueueImpl
	plan.NetNS = in.Plan.NetNS
	// The GRE fast path was resolved (probed) by Install and cannot change
	// while running (the engine has its maps or not): a reloaded plan
	// carries gre_path as written (auto), never resolved, and without this
	// its maps, with every live call's elements, would be deleted.
	plan.kernelGRE = in.KernelGRE
	plan.fastPathQoS(in.Plan) // kfeat (issue 12)
	if err := plan.check(); err != nil {
		return err
	}
	want, err := planned(plan, in.QueueImpl, fill)
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: plan.Table}
	all, err := in.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("nftables: list chains: %w", explain(err))
	}
	sets, err := in.conn.GetSets(t)
	if err != nil {
		return fmt.Errorf("nftables: list sets of table ip %s: %w", plan.Table, explain(err))
	}
	objs, err := in.conn.GetNamedObjects(t)
	if err != nil {
		return fmt.Errorf("nftables: list objects of table ip %s: %w", plan.Table, explain(err))
	}
	in.conn.AddTable(t)
	var gone []*nftables.Chain
	for _, ch := range all {
		if ch.Table == nil || ch.Table.Name != plan.Table {
			continue
		}
		ch.Table = t
		in.conn.FlushChain(ch)
		pc, planned := want.chains[ch.Name]
		switch {
		case planned && !pc.sameHook(ch):
			in.conn.DelChain(ch) // added again by fill, with its new hook
		case planned:
		case ch.Hooknum == nil:
			gone = append(gone, ch) // a regular chain: no hook to unregister
		case ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept:
			gone = append(gone, ch)
		}
	}
	fill(in.conn, t, plan, in.QueueImpl)
	for _, ch := range gone {
		in.conn.DelChain(ch)
	}
	for _, s := range sets {
		if !s.Anonymous && !want.sets[s.Name] {
			s.Table = t
			in.conn.DelSet(s)
		}
	}
	// Named objects the plan no longer declares (ct timeout objects are
	// named by a hash of their policy: every changed timeout is a new
	// object) go after the rules that referred to them.
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok && !want.objs[objKey{no.Name, uint32(no.Type)}] {
			in.conn.DeleteObject(&nftables.NamedObj{Table: t, Name: no.Name, Type: no.Type})
		}
	}
	if err := in.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: update table ip %s: %w", plan.Table, explain(err))
	}
	in.Plan = plan
	return nil
}

// plannedChain is a chain fill adds: its hook (if a base chain).
type plannedChain struct {
	base     bool
	hook     uint32
	priority int32
	typ      string
}

func (p plannedChain) sameHook(ch *nftables.Chain) bool {
	if !p.base || ch.Hooknum == nil || ch.Priority == nil {
		return !p.base && ch.Hooknum == nil
	}
	return uint32(*ch.Hooknum) == p.hook && int32(*ch.Priority) == p.priority && string(ch.Type) == p.typ
}

// plannedObjects are the chains, named sets and objects fill adds for a
// plan.
type plannedObjects struct {
	chains map[string]plannedChain
	sets   map[string]bool
	objs   map[objKey]bool
}

// objKey is a named object: its name and type.
type objKey struct {
	name string
	typ  uint32
}

// planned runs fill against a connection that only records, and returns
// the chains and named sets it adds.
func planned(plan Plan, impl QueueImpl, fill fillFunc) (plannedObjects, error) {
	po := plannedObjects{chains: map[string]plannedChain{}, sets: map[string]bool{}, objs: map[objKey]bool{}}
	const subsys = unix.NFNL_SUBSYS_NFTABLES << 8
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if len(m.Data) < 4 {
				continue
			}
			switch m.Header.Type {
			case subsys | unix.NFT_MSG_NEWCHAIN:
				if err := po.addChain(m.Data[4:]); err != nil {
					return nil, err
				}
			case subsys | unix.NFT_MSG_NEWSET:
				if err := po.addSet(m.Data[4:]); err != nil {
					return nil, err
				}
			case subsys | unix.NFT_MSG_NEWOBJ:
				if err := po.addObj(m.Data[4:]); err != nil {
					return nil, err
				}
			}
		}
		return req, nil
	}))
	if err != nil {
		return po, err
	}
	fill(c, c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: plan.Table}), plan, impl)
	if err := c.Flush(); err != nil {
		return po, err
	}
	return po, nil
}

func (po *plannedObjects) addChain(b []byte) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	var name string
	var pc plannedChain
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_NAME:
			name = ad.String()
		case unix.NFTA_CHAIN_TYPE:
			pc.typ = ad.String()
		case unix.NFTA_CHAIN_HOOK:
			pc.base = true
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						pc.hook = binary.BigEndian.Uint32(nd.Bytes())
					case unix.NFTA_HOOK_PRIORITY:
						pc.priority = int32(binary.BigEndian.Uint32(nd.Bytes()))
					}
				}
				return nil
			})
		}
	}
	po.chains[name] = pc
	return ad.Err()
}

func (po *plannedObjects) addSet(b []byte) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	var name string
	var flags uint32
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_NAME:
			name = ad.String()
		case unix.NFTA_SET_FLAGS:
			flags = binary.BigEndian.Uint32(ad.Bytes())
		}
	}
	if flags&unix.NFT_SET_ANONYMOUS == 0 {
		po.sets[name] = true
	}
	return ad.Err()
}

func (po *plannedObjects) addObj(b []byte) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	var k objKey
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_OBJ_NAME:
			k.name = ad.String()
		case unix.NFTA_OBJ_TYPE:
			k.typ = binary.BigEndian.Uint32(ad.Bytes())
		}
	}
	po.objs[k] = true
	return ad.Err()
}

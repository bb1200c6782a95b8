package rules

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Apply brings the running table to plan's ruleset in one nftables
// transaction (live reload, issue 8), without a moment without rules and
// without losing a queued packet:
//
//   - The batch flushes the rules of the table's chains and adds plan's
//     chains and rules; the kernel commits it as a whole, so every packet
//     meets either the old rules or the new ones (GRE is never forwarded
//     untranslated for lack of a rule).
//   - No base chain is deleted: the kernel unregisters the hook of a
//     deleted base chain, and unregistering any netfilter hook drops every
//     packet then waiting in an NFQUEUE for its verdict
//     (nfqnl_nf_hook_drop). Replacing the whole table in one batch (as
//     Install does) lost packets that way: up to 2 of 1000 GRE frames
//     across 9 reloads in half the runs (testbed
//     TestGatewayReloadWhileGREFlows), none with this. So chains both
//     rulesets have are updated in place, and a chain the new plan no
//     longer has (nat_prerouting when the last forward goes) is left empty
//     with its accept policy; one with another policy is deleted.
//
// On error the kernel keeps the old ruleset and in is unchanged. The queue
// implementation found by Install is kept; the table name and the queue
// number cannot change (the daemon is bound to the queue), so Apply
// refuses a plan that changes them.
func (in *Installed) Apply(plan Plan) error {
	if plan.Table != in.Plan.Table || plan.Queue != in.Plan.Queue {
		return fmt.Errorf("rules: table ip %s queue %d cannot change to table ip %s queue %d while running",
			in.Plan.Table, in.Plan.Queue, plan.Table, plan.Queue)
	}
	plan.QueueImpl = in.QueueImpl
	plan.NetNS = in.Plan.NetNS
	if err := plan.check(); err != nil {
		return err
	}
	want, err := chainNames(plan, in.QueueImpl)
	if err != nil {
		return err
	}
	all, err := in.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("nftables: list chains: %w", explain(err))
	}
	t := in.conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: plan.Table})
	var gone []*nftables.Chain
	for _, ch := range all {
		if ch.Table == nil || ch.Table.Name != plan.Table {
			continue
		}
		ch.Table = t
		in.conn.FlushChain(ch)
		if !slices.Contains(want, ch.Name) && ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept {
			gone = append(gone, ch)
		}
	}
	addRules(in.conn, t, plan, in.QueueImpl)
	for _, ch := range gone {
		in.conn.DelChain(ch)
	}
	if err := in.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: update table ip %s: %w", plan.Table, explain(err))
	}
	in.Plan = plan
	return nil
}

// chainNames returns the chains addRules creates for plan, in order, by
// running it against a connection that only records.
func chainNames(plan Plan, impl QueueImpl) ([]string, error) {
	var names []string
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWCHAIN) || len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				return nil, err
			}
			for ad.Next() {
				if ad.Type() == unix.NFTA_CHAIN_NAME {
					names = append(names, ad.String())
				}
			}
		}
		return req, nil
	}))
	if err != nil {
		return nil, err
	}
	addRules(c, c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: plan.Table}), plan, impl)
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return names, nil
}

package rules

import (
	"fmt"

	"github.com/google/nftables"
)

// Apply replaces the running table by plan's, in one nftables transaction
// (live reload, issue 8): the batch deletes the table and adds it again
// with plan's chains and rules, and the kernel commits it as a whole, so
// every packet meets either the old ruleset or the new one, never a table
// without rules (GRE is never forwarded untranslated for lack of a rule,
// and queued packets keep flowing to the same queue). On error the kernel
// keeps the old table and in is unchanged. The queue implementation found
// by Install is kept; the table name and the queue number cannot change
// (the daemon is bound to the queue), so Apply refuses a plan that changes
// them.
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
	replaceTable(in.conn, plan.Table, func(t *nftables.Table) { addRules(in.conn, t, plan, in.QueueImpl) })
	if err := in.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: replace table ip %s: %w", plan.Table, explain(err))
	}
	in.Plan = plan
	return nil
}

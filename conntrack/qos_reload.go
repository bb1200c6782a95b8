package conntrack

import "pptpgw/qos/police"

// RerateCalls gives every call policed at old the policer l instead, with
// full buckets, and returns how many calls it changed. A reload that
// changes policing.pptp_call's rate or burst calls it: the kernel fast
// path's policed calls all take the new rate with the reload's table (their
// buckets are replaced), so the calls whose GRE goes through the queue must
// too, or a call's rate would depend on the path its packets take. Calls
// with another policer (restored from a snapshot of another
// configuration) or none keep theirs.
func (t *Table) RerateCalls(old, l police.Limit) int {
	if !old.Enabled() || old == l {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.calls.Values() {
		if p := c.qos.pol; p != nil && p.limit == old {
			p.limit = l
			p.bucket = [2]police.Bucket{}
			n++
		}
	}
	return n
}

package conntrack

import (
	"testing"

	"pptpgw/qos/police"
)

// A call gets its policer's memory when it is policed, not before; a
// policer turned off stops policing and keeps what it counted (issue 12,
// memory).
func TestPolicerAllocatedOnDemand(t *testing.T) {
	tb, _, _ := newTable(t, Config{})
	cn := setup(t, tb)
	c := cn.byInside(7)
	k := OutKey{InsideIP: inside, PeerIP: peer, PeerCallID: 55}
	tb.SetCallQoS(cn, 7, 2, police.Limit{})
	if class, policed := c.KernelQoS(); c.qos.pol != nil || class != 3 || policed {
		t.Fatalf("classed, not policed: policer %v, KernelQoS %d %v", c.qos.pol, class, policed)
	}
	tb.SetCallQoS(cn, 7, -1, police.Limit{BytesPerSecond: 1000, Burst: 1500})
	if _, policed := c.KernelQoS(); c.qos.pol == nil || !policed {
		t.Fatal("policed call without a policer")
	}
	var policed int
	for range 10 {
		if _, q, ok := tb.OutboundQoS(k, 1000); ok && q.Policed {
			policed++
		}
	}
	if policed == 0 || tb.Snapshot()[0].PolicedOut != uint64(policed) {
		t.Fatalf("policed %d, snapshot %+v", policed, tb.Snapshot()[0])
	}
	tb.SetCallQoS(cn, 7, -1, police.Limit{})
	if _, q, _ := tb.OutboundQoS(k, 100000); q.Policed || c.qos.policing() {
		t.Fatal("a policer turned off still polices")
	}
	if tb.Snapshot()[0].PolicedOut != uint64(policed) {
		t.Fatal("turning the policer off lost its count")
	}
}

package nat

import (
	"net/netip"
	"testing"
)

// With several uplinks, only calls of uplink 0 (the WAN) take the kernel
// fast path: its rules match GRE on the WAN only, and they translate
// without the engine's uplink check, so an element of a call on another
// uplink would translate and accept that call's GRE arriving on (or routed
// out of) the WAN, the wrong uplink, which the engine drops as
// gre_wrong_uplink. Such calls stay on the userspace path.
func TestKernelPathOnlyUplinkZero(t *testing.T) {
	e, f, _ := kernelEngine(t)
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetPinner(&fakePins{})
	a := &upClient{t: t, e: e, ip: lanA, port: 40000, outDev: wanIf, seqOut: 1000, seqIn: 9000}
	b := &upClient{t: t, e: e, ip: lanB, port: 40000, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	a.call(1, 500)
	b.call(1, 501)
	flush(t, e)
	for k := range f.out {
		if k.InsideIP != lanA {
			t.Errorf("kernel element for a call of uplink 1: %+v", k)
		}
	}
	for k := range f.in {
		if k.PublicIP != pubIP {
			t.Errorf("kernel element for a call of uplink 1: %+v", k)
		}
	}
	if len(f.out) != 1 || len(f.in) != 1 {
		t.Errorf("elements: %d out, %d in; want the WAN call's one each", len(f.out), len(f.in))
	}
}

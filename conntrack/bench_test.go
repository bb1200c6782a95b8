package conntrack

import (
	"testing"
	"time"
)

// The GRE path's table lookups with 10,000 set-up calls (issue 12: the
// indexes became hash sets of calls; the lookups must not get slower).
func benchTable(b *testing.B) (*Table, []OutKey, []InKey) {
	t := New(Config{MaxCalls: 20000, Limits: Limits{CallsPerConn: 200, CallsPerSource: 20000, ConnsPerSource: 1000}}, NewFakeClock(time.Time{}))
	var outs []OutKey
	var ins []InKey
	for i := range 100 {
		cn, err := t.AddControl(ControlKey{InsideIP: [4]byte{10, 1, 0, byte(i)}, PeerIP: [4]byte{198, 51, 100, 7}, InsidePort: 40000, PeerPort: 1723}, [4]byte{203, 0, 113, 1}, false)
		if err != nil {
			b.Fatal(err)
		}
		for j := range uint16(100) {
			id := uint16(i)*100 + j + 1
			if err := t.AddCall(cn, 0x100+j, id); err != nil {
				b.Fatal(err)
			}
			if err := t.Establish(cn, 0x100+j, 0x4000+j); err != nil {
				b.Fatal(err)
			}
			outs = append(outs, OutKey{cn.Key.InsideIP, cn.Key.PeerIP, 0x4000 + j})
			ins = append(ins, InKey{[4]byte{203, 0, 113, 1}, cn.Key.PeerIP, id})
		}
	}
	return t, outs, ins
}

func BenchmarkTableOutbound(b *testing.B) {
	t, outs, _ := benchTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, ok := t.Outbound(outs[(i*7919)%len(outs)], 100); !ok {
			b.Fatal("no call")
		}
	}
}

func BenchmarkTableInbound(b *testing.B) {
	t, _, ins := benchTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, _, ok := t.Inbound(ins[(i*7919)%len(ins)], 100); !ok {
			b.Fatal("no call")
		}
	}
}

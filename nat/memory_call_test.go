package nat

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"pptpgw/internal/pkt/pkttest"
)

// boundCallKernel: a call with GRE both ways on an established connection
// shared by 100 calls, with the kernel fast path on (its elements wanted
// and held): the bench's memory case (`pptpgw bench --only memory`), the
// engine alone. 268 bytes measured (651 before issue 12's memory work: the
// kernel path's two maps, golang-lru's entries, the indexes' Go maps,
// time.Time fields, every call's policer, the wanted element data kept).
const boundCallKernel = 320

// TestMemoryPerCallKernelPath measures what the bench's memory case costs
// the engine: 10,000 calls set up through the control channel, 100 per
// connection, GRE both ways through userspace, then the kernel path's
// elements flushed.
func TestMemoryPerCallKernelPath(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 10k calls")
	}
	const n, perConn = 10000, 100
	const conns = n / perConn
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 * n; c.KernelMaps = nopMaps{}; c.Limits.CallsPerConn = perConn })
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = newClient(t, e, insideHost(i), 40000)
		clients[i].startControl()
		clients[i].lastOut = nil
	}
	flush(t, e)
	before := heap()
	for _, c := range clients {
		for j := range uint16(perConn) {
			out := c.call(0x100+j, 0x4000+j)
			gre(t, e, pkttest.GRE(t, c.ip, server, 0x4000+j, pkttest.GREOpt{}), lanIf)
			gre(t, e, pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{}), wanIf)
		}
		c.lastOut = nil
	}
	flush(t, e)
	call := (heap() - before) / n
	if _, calls := e.table.Len(); calls != n {
		t.Fatalf("%d calls tracked, want %d", calls, n)
	}
	if out, in, _ := e.kp.stats(); out != n || in != n {
		t.Fatalf("kernel holds %d/%d elements, want %d", out, in, n)
	}
	if p := os.Getenv("PPTPGW_HEAP_PROFILE"); p != "" {
		// go test -memprofilerate 1, then pprof -sample_index=inuse_space
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	runtime.KeepAlive(clients)
	runtime.KeepAlive(e)
	t.Logf("bytes per call with GRE, kernel path, %d calls per connection: %d (bound %d)", perConn, call, boundCallKernel)
	if call > boundCallKernel {
		t.Errorf("over the bound")
	}
}

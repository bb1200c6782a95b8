package nat

import (
	"encoding/binary"
	"runtime"
	"testing"

	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// What the table's state costs, measured through the engine's own packet
// path (conntrack, the translator, the allocator and the engine's records
// together). The figures are logged (go test -v -run TestMemory ./nat) and
// bounded by the constants below, which the README and CONFIG.md quote.
const (
	// boundSYNConn: a control connection tracked from a SYN alone.
	boundSYNConn = 1024
	// boundConn: an established control connection (SCCRQ/SCCRP seen).
	boundConn = 1280
	// boundConnFull: an established connection whose rewrites filled its
	// patch memory in both directions (the most one can cost).
	boundConnFull = 6144
	// boundCall: a call with GRE both ways, on an established connection
	// (267 bytes measured after issue 12's memory work; 440 before).
	boundCall = 320
	// boundPool: an outside call-ID pool (one per public IP and server)
	// holding a single call.
	boundPool = 1024
)

// heap returns the live heap after a full collection.
func heap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// insideHost returns inside host i (10.1.x.y): one source per few
// connections, below the per-source limits.
func insideHost(i int) [4]byte { return [4]byte{10, 1, byte(i >> 8), byte(i)} }

func TestMemoryPerConnAndCall(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 10k connections and calls")
	}
	const n = 10000
	// SYN-only connections: what a SYN flood costs per entry.
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 * n })
	syns := make([][]byte, n)
	for i := range syns {
		syns[i] = pkttest.TCP(t, insideHost(i/4), server, uint16(40000+i%4), 1723, nil, pkttest.TCPOpt{SYN: true, Seq: uint32(i)})
	}
	before := heap()
	for i, b := range syns {
		p := nfq.Packet{ID: uint32(i), Payload: b, InDev: lanIf}
		if v, r := e.Process(&p); v != pkt.Accept || r != ReasonCtlNew {
			t.Fatalf("SYN %d: %v %s", i, v, r)
		}
	}
	synConn := (heap() - before) / n
	if conns, _ := e.table.Len(); conns != n {
		t.Fatalf("%d connections tracked, want %d", conns, n)
	}
	runtime.KeepAlive(e)

	// Established connections, then calls on them with GRE both ways.
	const conns, perConn = 200, n / 200
	e, _ = newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 * n })
	clients := make([]*client, conns)
	before = heap()
	for i := range clients {
		clients[i] = newClient(t, e, insideHost(i), 40000)
		clients[i].startControl()
		clients[i].lastOut = nil // the test's, not the gateway's
	}
	mid := heap()
	conn := (mid - before) / conns
	for _, c := range clients {
		for j := range uint16(perConn) {
			out := c.call(0x100+j, 0x4000+j)
			gre(t, e, pkttest.GRE(t, c.ip, server, 0x4000+j, pkttest.GREOpt{}), lanIf)
			gre(t, e, pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{}), wanIf)
		}
	}
	for _, c := range clients {
		c.lastOut = nil
	}
	call := (heap() - mid) / n
	if _, calls := e.table.Len(); calls != n {
		t.Fatalf("%d calls tracked, want %d", calls, n)
	}
	if setupConns, setupCalls := e.table.InSetup(); setupConns != 0 || setupCalls != 0 {
		t.Fatalf("in setup: %d connections, %d calls; want all established", setupConns, setupCalls)
	}
	runtime.KeepAlive(clients)
	t.Logf("bytes per SYN-only control connection: %d (bound %d); per established connection: %d (bound %d); per call with GRE: %d (bound %d)",
		synConn, boundSYNConn, conn, boundConn, call, boundCall)
	if synConn > boundSYNConn || conn > boundConn || call > boundCall {
		t.Errorf("over the stated bounds")
	}
}

// A SYN flood of ten times the table's size leaves the heap within the
// table's bound: the table holds max_calls connections at most, each at its
// SYN-only cost.
func TestMemorySYNFloodBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("floods 20k SYNs")
	}
	const maxCalls, flood = 2000, 20000
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = maxCalls })
	before := heap()
	b := pkttest.TCP(t, lanA, server, 1, 1723, nil, pkttest.TCPOpt{SYN: true})
	tcp := pkt.TCP(pkt.IPv4(b).Payload())
	for i := range flood {
		// Random-looking source ports from a handful of hosts, as a flood
		// tool sends them; the checksum is not checked on this path.
		pkt.IPv4(b).SetSourceAddressWithChecksumUpdate(insideHost(i % 100))
		binary.BigEndian.PutUint16(tcp[pkt.TCPSrcPortOffset:], uint16(i*7919)|1)
		p := nfq.Packet{ID: uint32(i), Payload: b, InDev: lanIf}
		e.Process(&p)
	}
	grown := heap() - before
	conns, _ := e.table.Len()
	c := e.Counters()
	t.Logf("%d SYNs into max_calls %d: %d tracked, %d early-dropped, %d refused per source; heap +%d bytes (bound %d)",
		flood, maxCalls, conns, c["conns_early_dropped"], c["conns_refused_per_source"], grown, maxCalls*boundSYNConn)
	if conns > maxCalls {
		t.Fatalf("%d connections tracked, over max_calls %d", conns, maxCalls)
	}
	if c["conns_early_dropped"] == 0 {
		t.Fatal("the flood filled the table without early drops")
	}
	if grown > maxCalls*boundSYNConn {
		t.Errorf("heap grew %d bytes, over the bound %d", grown, maxCalls*boundSYNConn)
	}
	runtime.KeepAlive(e)
}

// A call-ID pool costs what it holds: a pool with one call (a call to a
// server no other call goes to, the worst case of a flood to many
// addresses) allocates one chunk of the busy set, not a 16 KB bitmap.
func TestMemoryPoolPerCall(t *testing.T) {
	const n = 10000
	a := NewAllocator(AllocatorConfig{}, nil)
	keys := make([]PoolKey, n)
	for i := range keys {
		keys[i] = PoolKey{pubIP, [4]byte{198, 51, byte(i >> 8), byte(i)}}
	}
	before := heap()
	for _, k := range keys {
		if _, err := a.Alloc(k); err != nil {
			t.Fatal(err)
		}
	}
	perPool := (heap() - before) / n
	t.Logf("bytes per call-ID pool holding one call: %d (bound %d)", perPool, boundPool)
	if perPool > boundPool {
		t.Errorf("a one-call pool costs %d bytes, over the bound %d", perPool, boundPool)
	}
	runtime.KeepAlive(a)
}

// The most a control connection can cost: its patch memory full in both
// directions (a request and a reply repeated until the rings wrap).
func TestMemoryConnFull(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 200 connections with full patch memory")
	}
	const conns = 200
	e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 * conns })
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = newClient(t, e, insideHost(i), 40000)
		clients[i].startControl()
		clients[i].lastOut = nil
	}
	before := heap()
	for _, c := range clients {
		out := c.call(0x100, 0x4000)
		for range 150 { // 2 patches per message and direction: > ringSize
			c.msg(true, &wire.OCRQ{CallID: 0x100, CallSerial: 1, RecvWindow: 16})
			c.msg(false, &wire.OCRP{CallID: 0x4000, PeerCallID: out, Result: 1, RecvWindow: 16})
		}
		c.lastOut = nil
	}
	full := (heap() - before) / conns // the call's own cost included
	t.Logf("bytes a connection with one call gains when its patch memory fills: %d (bound %d, with boundConn %d)",
		full, boundConnFull-boundConn, boundConn)
	if full > boundConnFull-boundConn {
		t.Errorf("over the bound")
	}
	runtime.KeepAlive(clients)
}

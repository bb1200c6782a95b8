package testbed_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/internal/pkt"
	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The hardening tests reproduce, at a bounded scale, what one host could do
// to the gateway (issue 7: SYN floods, garbage segments to port 1723,
// call-ID exhaustion) while 10 live calls pass GRE: the calls must pass GRE
// again afterwards, nothing established may be evicted, refusals and early
// drops are counted by reason, and the daemon's RSS stays under a bound.

// Bounds of the daemon's RSS after a flood. A small table (max_calls 64)
// holds a few hundred KB whatever comes; the rest is the Go runtime and the
// daemon's fixed buffers (about 10 MB idle), with the collector's headroom.
const smallTableRSS = 48 << 20

// liveCalls are 10 calls from two mini PNSes (5 calls on one control
// connection each) to a mini PAC, held up while a test floods the gateway.
type liveCalls struct {
	up      sync.WaitGroup
	release chan struct{}
	done    sync.WaitGroup
	res     []PNSResult
	once    sync.Once
}

// startLiveCalls sets up the calls from clients (5 each), round-trips 20
// frames on each, and holds them until finish. A PAC must be running.
func startLiveCalls(ctx context.Context, clients []*NS) *liveCalls {
	l := &liveCalls{release: make(chan struct{}), res: make([]PNSResult, len(clients))}
	for i, n := range clients {
		l.up.Add(1)
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			held := false
			l.res[i] = RunPNS(ctx, n, PNSConfig{Server: ServerIP, Calls: 5, Frames: 20, FramesAfterHold: 20,
				Timeout: 90 * time.Second, Hold: func() {
					held = true
					l.up.Done()
					<-l.release
				}})
			if !held {
				l.up.Done()
			}
		}()
	}
	l.up.Wait()
	return l
}

// finish lets the calls round-trip 20 more frames each, clear and stop,
// and fails the test unless every call carried all its frames both times.
func (l *liveCalls) finish(t *testing.T, gw *Gateway) {
	t.Helper()
	l.once.Do(func() { close(l.release) })
	l.done.Wait()
	for _, r := range l.res {
		if !r.OK() {
			t.Errorf("a live call did not survive the flood:\n%s\ngateway log:\n%s", r, tail(gw.Log(), 40))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// floodTopology starts a topology with clients c0, c1 (live calls), c2
// (the attacker) and c3 (a later legitimate client), a mini PAC and the
// gateway with config, and sets up the live calls. The context bounds the
// whole test (90s).
func floodTopology(t *testing.T, config string) (context.Context, *Topology, *Gateway, *liveCalls) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	bin := testbedtest.PPTPGW(t)
	topo := testbedtest.New(t, Config{Clients: 4})
	cfg := filepath.Join(topo.Dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := topo.StartPAC(topo.Server, topo.Server.IP); err != nil {
		t.Fatal(err)
	}
	gw, err := topo.StartGateway(ctx, bin, "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	live := startLiveCalls(ctx, topo.Clients[:2])
	t.Cleanup(func() { live.once.Do(func() { close(live.release) }); live.done.Wait() })
	// Whether they came up is in their results (finish) and in
	// calls_active, which the tests check after each flood.
	return ctx, topo, gw, live
}

// counters reads the gateway's counters, once the queue has drained.
func counters(t *testing.T, ctx context.Context, gw *Gateway) nat.CallsReply {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// rssUnder fails the test if the gateway's RSS is over bound; before is
// its RSS before the flood, for the log.
func rssUnder(t *testing.T, gw *Gateway, before, bound int64) {
	t.Helper()
	after := rss(t, gw)
	t.Logf("gateway RSS %d KB before, %d KB after the flood (bound %d KB)", before>>10, after>>10, bound>>10)
	if after > bound {
		t.Errorf("RSS %d KB over the bound %d KB", after>>10, bound>>10)
	}
}

// rss returns the gateway's resident set size.
func rss(t *testing.T, gw *Gateway) int64 {
	t.Helper()
	pid := gw.Proc.Cmd.Process.Pid
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.TrimSpace(string(comm)) != "pptpgw" {
		t.Fatalf("pid %d is %q, not the gateway", pid, comm)
	}
	n, err := RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lanHosts returns n spoofed LAN sources 10.77.0.100...
func lanHosts(n int) []netip.Addr {
	var a []netip.Addr
	for i := range n {
		a = append(a, netip.AddrFrom4([4]byte{10, 77, 0, byte(100 + i)}))
	}
	return a
}

// noEviction fails the test if established state was evicted.
func noEviction(t *testing.T, rep nat.CallsReply) {
	t.Helper()
	for _, k := range []string{"conns_evicted", "calls_evicted"} {
		if n := testbedtest.Counter(t, rep.Counters, k); n != 0 {
			t.Errorf("%s = %d: the table evicted state to make room", k, n)
		}
	}
}

// Rows 1 and 3 of issue 7: SYNs to TCP 1723 with random source ports from
// one LAN host, from 150 LAN sources, and from one host to 40 WAN
// addresses, into a table of 64 (conns_per_source 16). One host is held to
// its limit; many hosts fill the table, and the entries that never became
// established make room for each other (early drop); the 10 live calls
// and their connections are never touched.
func TestGatewaySYNFlood(t *testing.T) {
	ctx, topo, gw, live := floodTopology(t, "max_calls: 64\nlimits: {conns_per_source: 16}\n")
	attacker := topo.Clients[2]
	before := rss(t, gw)

	var wan []netip.Addr
	for i := range 40 {
		wan = append(wan, netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}))
	}
	for _, f := range []struct {
		name   string
		flood  TCPFlood
		reason string // the counter that must have grown
	}{
		{"one host", TCPFlood{Count: 20000, Seed: 1}, "conns_refused_per_source"},
		{"150 hosts", TCPFlood{Count: 20000, Sources: lanHosts(150), Seed: 2}, "conns_early_dropped"},
		{"one host to 40 WAN addresses", TCPFlood{Count: 20000, Dests: wan, Seed: 3}, "conns_refused_per_source"},
	} {
		was := testbedtest.Counter(t, counters(t, ctx, gw).Counters, f.reason)
		start := time.Now()
		if _, err := attacker.SendTCPFlood(ctx, f.flood); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		rep := counters(t, ctx, gw)
		c := rep.Counters
		t.Logf("%s: %d SYNs in %v: conns_active %d (in setup %d), early dropped %d, refused per source %d, refused table full %d",
			f.name, f.flood.Count, time.Since(start).Round(time.Millisecond), c["conns_active"], c["conns_setup"],
			c["conns_early_dropped"], c["conns_refused_per_source"], c["conns_refused_table_full"])
		if testbedtest.Counter(t, c, f.reason) == was {
			t.Errorf("%s: %s did not grow", f.name, f.reason)
		}
		if n := testbedtest.Counter(t, c, "conns_active"); n > 64 {
			t.Errorf("%s: %d connections tracked, over max_calls 64", f.name, n)
		}
		if n := testbedtest.Counter(t, c, "calls_active"); n != 10 {
			t.Errorf("%s: %d calls tracked, want the 10 live ones", f.name, n)
		}
		noEviction(t, rep)
	}
	rssUnder(t, gw, before, smallTableRSS)
	live.finish(t, gw)
}

// Row 2 of issue 7: a larger SYN flood into the default table (max_calls
// 65536) from 40 LAN sources. The table holds at most 256 connections per
// source, each at its SYN-only cost, so RSS stays far below the bound
// derived from max_calls (defaultTableRSS).
func TestGatewaySYNFloodMemory(t *testing.T) {
	ctx, topo, gw, live := floodTopology(t, "")
	before := rss(t, gw)
	start := time.Now()
	if _, err := topo.Clients[2].SendTCPFlood(ctx, TCPFlood{Count: 100000, Sources: lanHosts(40), Seed: 4}); err != nil {
		t.Fatal(err)
	}
	rep := counters(t, ctx, gw)
	c := rep.Counters
	t.Logf("100000 SYNs from 40 sources in %v: conns_active %d, refused per source %d",
		time.Since(start).Round(time.Millisecond), c["conns_active"], c["conns_refused_per_source"])
	if n := testbedtest.Counter(t, c, "conns_active"); n > 40*256+2 {
		t.Errorf("%d connections tracked, over 40 sources x conns_per_source 256", n)
	}
	if testbedtest.Counter(t, c, "conns_refused_per_source") == 0 {
		t.Error("no SYN refused per source: the flood did not reach the limit")
	}
	rssUnder(t, gw, before, defaultTableRSS)
	noEviction(t, rep)
	live.finish(t, gw)
}

// defaultTableRSS bounds the RSS of a gateway with the default max_calls
// (65536) under a SYN flood, which fills the connection table only: 65536
// connections at their SYN-only cost (1 KB, nat's memory_test), twice over
// for the collector's headroom, on top of the small table's bound.
const defaultTableRSS = smallTableRSS + 2*65536*1024

// Row 4 of issue 7: garbage TCP segments to port 1723 from 150 LAN sources
// in lenient mode: SYNs carrying Outgoing-Call-Requests, requests in the
// middle of streams never seen open (picked up), random bytes with random
// flags. The connections and calls they create are in setup, the first to
// go when the table is full (the connection table fills first here, and
// its early drops take their calls along); the live calls stay.
func TestGatewayGarbageFlood(t *testing.T) {
	ctx, topo, gw, live := floodTopology(t, "max_calls: 64\nstrict: false\n")
	before := rss(t, gw)
	if _, err := topo.Clients[2].SendTCPFlood(ctx, TCPFlood{Count: 20000, Sources: lanHosts(150), Garbage: true, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	rep := counters(t, ctx, gw)
	c := rep.Counters
	t.Logf("20000 garbage segments: conns_active %d (setup %d), calls_active %d (setup %d), early dropped conns %d calls %d, "+
		"refused conns %d calls %d, pickups %d, calls mapped %d",
		c["conns_active"], c["conns_setup"], c["calls_active"], c["calls_setup"], c["conns_early_dropped"], c["calls_early_dropped"],
		c["conns_refused_table_full"], c["calls_refused_table_full"], c[nat.ReasonCtlPickup], c["calls_mapped"])
	for _, k := range []string{"conns_early_dropped", nat.ReasonCtlPickup, "calls_mapped"} {
		if testbedtest.Counter(t, c, k) == 0 {
			t.Errorf("%s = 0: the garbage did not reach the table's bound", k)
		}
	}
	if n, setup := testbedtest.Counter(t, c, "calls_active"), testbedtest.Counter(t, c, "calls_setup"); n > 64 || n-setup != 10 {
		t.Errorf("calls_active %d (%d in setup): want at most 64, the 10 live ones established", n, setup)
	}
	noEviction(t, rep)
	rssUnder(t, gw, before, smallTableRSS)
	live.finish(t, gw)
}

// Row 5 of issue 7: one client opens 10 control connections and sends 200
// Outgoing-Call-Requests on each (the PAC answers them all). It gets
// calls_per_source (256 here) calls, the rest pass untranslated and are
// counted; another client's new call works meanwhile; and once the
// attacker hangs up, its IDs, which never carried GRE, are free at once
// (no quarantine) and a new call works again.
func TestGatewayCallFlood(t *testing.T) {
	ctx, topo, gw, live := floodTopology(t, "max_calls: 1024\nlimits: {calls_per_conn: 64, calls_per_source: 256}\n")
	attacker, other := topo.Clients[2], topo.Clients[3]
	res := RunCallFlood(ctx, attacker, ServerIP, 10, 200, 3*time.Second)
	// The attacker has closed its connections when RunCallFlood returns;
	// check what it held first, from the counters.
	rep := counters(t, ctx, gw)
	c := rep.Counters
	t.Logf("call flood: %+v; calls mapped %d, refused per conn %d, per source %d",
		res, c["calls_mapped"], c["calls_refused_per_conn"], c["calls_refused_per_source"])
	if res.Error != "" || res.Conns != 10 || res.Requests != 2000 {
		t.Fatalf("call flood did not run: %+v", res)
	}
	if testbedtest.Counter(t, c, "calls_refused_per_conn") == 0 || testbedtest.Counter(t, c, "calls_refused_per_source") == 0 {
		t.Errorf("the limits refused nothing: %v", c)
	}
	// 10 live + 256 of the attacker: nothing beyond the limit was mapped.
	if n := testbedtest.Counter(t, c, "calls_mapped"); n != 10+256 {
		t.Errorf("%d calls mapped, want %d", n, 10+256)
	}
	during := RunPNS(ctx, other, PNSConfig{Server: ServerIP, Frames: 50})
	if !during.OK() {
		t.Errorf("another client's call after the call flood failed: %s", during)
	}
	rep = counters(t, ctx, gw)
	c = rep.Counters
	if n := testbedtest.Counter(t, c, "calls_active"); n != 10 {
		t.Errorf("%d calls left after the attacker hung up, want the 10 live ones", n)
	}
	// Every call of the attacker left without GRE: its ID came back at once
	// (as did every ID of a refused call). Only the other client's call,
	// which carried GRE, is in quarantine.
	if r, u := testbedtest.Counter(t, c, "callid_released"), testbedtest.Counter(t, c, "callid_released_unused"); u < 256 || r-u != 1 {
		t.Errorf("callid_released %d, of them without quarantine %d: want all but the one that carried GRE", r, u)
	}
	noEviction(t, rep)
	live.finish(t, gw)
}

// The flood's segments are well formed where they claim to be: valid IP
// and TCP checksums, port 1723.
func TestFloodSegments(t *testing.T) {
	var buf []byte
	src, dst := [4]byte{10, 77, 0, 100}, ServerIP.As4()
	for i, garbage := range []bool{false, true, true, true, true, true} {
		buf = FloodSegment(buf[:0], uint64(i), src, dst, garbage)
		var p pkt.Parsed
		p.Parse(buf)
		ip := pkt.IPv4(buf)
		if p.Err != "" || p.Proto != pkt.IPv4ProtocolTCP || p.DstPort != 1723 || !ip.IsChecksumValid() ||
			!pkt.TCP(ip.Payload()).IsChecksumValid(src, dst) {
			t.Fatalf("segment %d (garbage %v): %+v", i, garbage, p)
		}
		if !garbage && p.TCPFlags != pkt.TCPFlagSyn {
			t.Fatalf("flood SYN has flags %#x", p.TCPFlags)
		}
	}
}

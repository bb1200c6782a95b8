package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"pptpgw/rules"
	"pptpgw/testbed"
)

// GRE packets/s at 1, 100 and 10,000 live calls, as the highest rate with
// less than 0.1 % loss, and memory per live call at 10,000 calls (issue 12).
//
// Calls: set up through the control channel by the mini PNS from 4 client
// hosts to the mini PAC (testbed.HoldCalls), one GRE frame sent on each as
// soon as it is up (Linux's helper turns the call's expectation into a
// tracked GRE flow on it), then held. Linux's helper carries GRE for one
// call per control connection only (one GRE keymap per direction per
// master connection, nf_conntrack_proto_gre.c: a second call's is refused;
// the "2 control connections x 3 calls" row shows it), so its calls come
// one per connection; pptpgw's come benchCallsPerConn per connection at
// 10,000 calls (--calls-per-conn; 1 gives both sides the same workload)
// and one per connection below that.
//
// The rate search: the client hosts holding calls send GRE (64-byte
// payloads) on them round robin, paced (testbed.SendGREPaced), all together
// at a total rate that starts at benchRateStart packets/s and rises by 60 %
// each step, benchRateSecs per step; the PAC echoes every frame back through
// the gateway. Loss is what the senders' sockets took against what the
// server's interface received (counted 300 ms after the step). The search
// stops at the first step losing >= 0.1 % (the figure is the step before)
// or when the rate sent grows by less than 5 % over the step before
// (saturated: the figure is the higher of the two), at most benchRateSteps
// steps. On veth the gateway's (and the receiver's) softirq work runs in
// the sending thread's context, on its CPU, so a sender that cannot go
// faster is mostly the forwarding path's cost per packet: saturation
// without loss is still a figure of the gateway.
const (
	benchRateStart = 50000.0
	benchRateSteps = 10
	benchRateSecs  = 1
	benchLossMax   = 0.001
)

// benchGRECalls are the live-call counts of the grepps case; the last one
// also measures memory per call (case "memory").
var benchGRECalls = []int{1, 100, 10000}

// benchCallsPerConn is pptpgw's calls per control connection at 10,000
// calls (--calls-per-conn).
var benchCallsPerConn = 100

// benchLimitsConfig writes a configuration raising the per-source and
// per-connection limits (the bench measures speed, not policy) and
// returns the gateway flags that use it, with a cleanup.
func benchLimitsConfig() ([]string, func(), error) {
	cfg, err := os.CreateTemp("", "pptpgw-bench-*.yaml")
	if err != nil {
		return nil, nil, err
	}
	_, err = cfg.WriteString("limits:\n  conns_per_source: 65536\n  calls_per_source: 65536\n  calls_per_conn: 65535\n")
	cfg.Close()
	if err != nil {
		os.Remove(cfg.Name())
		return nil, nil, err
	}
	return append(append([]string(nil), benchGatewayArgs...), "--config", cfg.Name()), func() { os.Remove(cfg.Name()) }, nil
}

func benchGREpps(ctx context.Context, self string, s *benchSide, calls int) (string, error) {
	topo, err := testbed.New(testbed.Config{Clients: 4})
	if err != nil {
		return "", err
	}
	defer topo.Close()
	var gw *testbed.Gateway
	perConn := 1
	if s.gw {
		args, done, err := benchLimitsConfig()
		if err != nil {
			return "", err
		}
		defer done()
		if gw, err = topo.StartGateway(ctx, self, args...); err != nil {
			return "", err
		}
		defer gw.Stop()
		if calls >= 1000 {
			perConn = benchCallsPerConn
		}
	} else if err := topo.KernelHelper(ctx); err != nil {
		return "", err
	}
	if calls < 1000 {
		if _, err := topo.StartPAC(topo.Server, testbed.ServerIP); err != nil {
			return "", err
		}
	} else if err := benchStartPACProcess(ctx, self, topo); err != nil {
		return "", err
	}
	mem := calls == benchGRECalls[len(benchGRECalls)-1] && benchWant["memory"]
	var m0 benchMem
	if mem {
		if m0, err = readBenchMem(ctx, topo, gw); err != nil {
			return "", err
		}
	}
	held, err := testbed.HoldCalls(ctx, topo, testbed.HoldPlan{Server: testbed.ServerIP, Calls: calls, PerConn: perConn,
		Timeout: 150 * time.Second})
	if err != nil {
		return "", err
	}
	defer held.Release(20 * time.Second)
	out := fmt.Sprintf("%d/%d calls up (%d per connection, %.1fs); ", held.Up, calls, perConn, held.Setup.Seconds())
	if held.Up == 0 {
		return out + "no call came up: " + held.FirstEr, nil
	}
	time.Sleep(300 * time.Millisecond) // the first frames' echoes; the kernel path's elements
	if mem {
		m1, err := readBenchMem(ctx, topo, gw)
		if err != nil {
			return "", err
		}
		s.mem = memSummary(ctx, topo, s, m0, m1, held.Up)
	}
	if !benchWant["grepps"] {
		return out + "no rate search (case grepps not asked)", nil
	}
	best, note, err := greRateSearch(ctx, topo, held.Keys, 64, benchRateStart)
	if err != nil {
		return "", err
	}
	s.vals[fmt.Sprintf("grepps%d", calls)] = best
	return out + fmt.Sprintf("%.0f packets/s with < 0.1%% loss (%s)", best, note), nil
}

// greRateSearch is the bounded search described above, with size-byte
// payloads from start packets/s on.
func greRateSearch(ctx context.Context, topo *testbed.Topology, keys [][]uint16, size int, start float64) (best float64, note string, err error) {
	var senders []int
	for i := range keys {
		if len(keys[i]) > 0 {
			senders = append(senders, i)
		}
	}
	rate := start
	note = fmt.Sprintf("stopped at the last step, %d", benchRateSteps)
	for step := 0; step < benchRateSteps && ctx.Err() == nil; step++ {
		rx0, err := rxPackets(ctx, topo.Server)
		if err != nil {
			return 0, "", err
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sent uint64
		var took time.Duration
		var serr error
		for _, i := range senders {
			c := topo.Clients[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, d, err := testbed.SendGREPaced(ctx, c, c.IP, testbed.ServerIP, keys[i], size, rate/float64(len(senders)), benchRateSecs*time.Second)
				mu.Lock()
				sent += n
				took = max(took, d)
				if err != nil && serr == nil {
					serr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if serr != nil {
			return 0, "", serr
		}
		time.Sleep(300 * time.Millisecond)
		rx1, err := rxPackets(ctx, topo.Server)
		if err != nil {
			return 0, "", err
		}
		got := rx1 - rx0
		achieved := float64(sent) / max(took.Seconds(), benchRateSecs)
		loss := 0.0
		if sent > 0 {
			loss = 1 - float64(min(got, sent))/float64(sent)
		}
		if loss >= benchLossMax {
			return best, fmt.Sprintf("next step: %.0f/s sent, %.2f%% lost", achieved, 100*loss), nil
		}
		if achieved < 1.05*best {
			return max(best, achieved), fmt.Sprintf("saturated: %.0f/s asked, %.0f/s sent, %.2f%% lost", rate, achieved, 100*loss), nil
		}
		best = achieved
		rate = max(rate, achieved) * 1.6
	}
	return best, note, nil
}

// benchMem is one reading of memory for the memory case.
type benchMem struct {
	rss, heap  uint64            // the daemon's VmRSS and Go heap in use after a collection, bytes (pptpgw only)
	conntrack  uint64            // entries in the gateway namespace
	classes    map[string]uint64 // the daemon's runtime/metrics memory classes (memoryReply.Classes)
	anon, file uint64            // VmRSS's anonymous and file-backed parts
}

// readBenchMem reads the gateway's conntrack count and, with pptpgw, the
// daemon's memory after a forced collection (admin command "memory":
// runtime/debug.FreeOSMemory, then VmRSS and the Go heap in use).
func readBenchMem(ctx context.Context, topo *testbed.Topology, gw *testbed.Gateway) (benchMem, error) {
	var m benchMem
	ct, err := topo.GW.ReadSysctl("net/netfilter/nf_conntrack_count")
	if err != nil {
		return m, err
	}
	if m.conntrack, err = strconv.ParseUint(ct, 10, 64); err != nil {
		return m, err
	}
	if gw == nil {
		return m, nil
	}
	b, err := queryAdmin("pptpgw run", gw.Socket, "memory")
	if err != nil {
		return m, err
	}
	var r memoryReply
	if err := json.Unmarshal(b, &r); err != nil {
		return m, fmt.Errorf("admin command memory: %w: %q", err, b)
	}
	m.rss, m.heap, m.classes, m.anon, m.file = r.RSS, r.HeapInuse, r.Classes, r.RSSAnon, r.RSSFile
	return m, nil
}

// slabObjSize is the object size of slab cache name (/proc/slabinfo).
func slabObjSize(name string) (uint64, error) {
	caches, err := readSlabinfo()
	if err != nil {
		return 0, err
	}
	c, ok := caches[name]
	if !ok {
		return 0, fmt.Errorf("/proc/slabinfo: no cache %s", name)
	}
	return c.objSize, nil
}

type slabCache struct{ active, objSize uint64 }

func readSlabinfo() (map[string]slabCache, error) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return nil, err
	}
	caches := map[string]slabCache{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") || f[0] == "slabinfo" {
			continue
		}
		a, err1 := strconv.ParseUint(f[1], 10, 64)
		o, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 == nil && err2 == nil {
			caches[f[0]] = slabCache{active: a, objSize: o}
		}
	}
	return caches, sc.Err()
}

// percpuBytes is Percpu from /proc/meminfo, in bytes.
func percpuBytes() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Percpu:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no Percpu")
}

// nftElementBytes measures what one element of the fast path's maps costs
// the kernel: in namespace n, a throwaway table with maps of the same types
// (counter on every element) gets benchCalElems elements in each map in
// one transaction; the cost is the growth of the slab caches that grew by
// at least half an object per element (the elements themselves; other
// caches' churn from the rest of the machine is left out) plus the growth
// of per-CPU memory (the counters), divided by the elements. Not counted:
// the hash tables' bucket arrays (kvmalloc, about 8-16 bytes per element).
const benchCalElems = 10000

func nftElementBytes(ctx context.Context, n *testbed.NS) (float64, error) {
	var b strings.Builder
	b.WriteString("table ip pptpgw_bench_cal {\n" +
		"  map o { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; counter; }\n" +
		"  map i { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }\n}\n")
	for _, m := range []string{"o", "i"} {
		fmt.Fprintf(&b, "add element ip pptpgw_bench_cal %s {", m)
		for k := 0; k < benchCalElems; k++ {
			if k > 0 {
				b.WriteString(",")
			}
			if m == "o" {
				fmt.Fprintf(&b, " 10.%d.%d.2 . 192.0.2.1 . %d : 203.0.113.1", k>>8&0xff, k&0xff, k+1)
			} else {
				fmt.Fprintf(&b, " 203.0.113.1 . 192.0.2.1 . %d : 10.%d.%d.2 . %d", k+1, k>>8&0xff, k&0xff, k+1)
			}
		}
		b.WriteString(" }\n")
	}
	f, err := os.CreateTemp("", "pptpgw-bench-*.nft")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return 0, err
	}
	f.Close()
	s0, err := readSlabinfo()
	if err != nil {
		return 0, err
	}
	p0, err := percpuBytes()
	if err != nil {
		return 0, err
	}
	if _, err := n.Output(ctx, "nft", "-f", f.Name()); err != nil {
		return 0, err
	}
	defer n.Output(context.Background(), "nft", "delete", "table", "ip", "pptpgw_bench_cal")
	s1, err := readSlabinfo()
	if err != nil {
		return 0, err
	}
	p1, err := percpuBytes()
	if err != nil {
		return 0, err
	}
	const elems = 2 * benchCalElems
	var total float64
	for name, c := range s1 {
		if c0, ok := s0[name]; ok && c.active > c0.active && c.active-c0.active >= elems/2 {
			total += float64(c.active-c0.active) * float64(c.objSize)
		}
	}
	if p1 > p0 {
		total += float64(p1 - p0)
	}
	return total / elems, nil
}

// gatewayElements counts the elements of the fast path's two maps in the
// gateway's table (nft prints one counter per element).
func gatewayElements(ctx context.Context, topo *testbed.Topology) (int, error) {
	n := 0
	for _, m := range []string{rules.SetGREOut, rules.SetGREIn} {
		out, err := topo.GW.Output(ctx, "nft", "list", "map", "ip", rules.DefaultTable, m)
		if err != nil {
			return 0, err
		}
		n += bytes.Count(out, []byte("counter packets"))
	}
	return n, nil
}

// memSummary turns two readings around the set-up of `calls` calls into
// the memory case's figures: Linux's helper: conntrack entries added x the
// nf_conntrack slab object size (its extensions, allocated apart, are not
// counted); pptpgw: the daemon's RSS growth, plus in the kernel the map
// elements x nftElementBytes and any conntrack entries added (the control
// connections; GRE is notracked). The compared figure is bytes per call in
// all (daemon + kernel); its ratio is Linux's / pptpgw's (lower memory is
// better, so higher is better as for every other case).
func memSummary(ctx context.Context, topo *testbed.Topology, s *benchSide, m0, m1 benchMem, calls int) string {
	ctSize, err := slabObjSize("nf_conntrack")
	if err != nil {
		return err.Error()
	}
	ct := float64(m1.conntrack) - float64(m0.conntrack)
	ctBytes := ct * float64(ctSize) / float64(calls)
	if !s.gw {
		s.vals["memory"] = ctBytes
		return fmt.Sprintf("%.0f B/call: %.2f conntrack entries/call x %d B", ctBytes, ct/float64(calls), ctSize)
	}
	daemon := (float64(m1.rss) - float64(m0.rss)) / float64(calls)
	heap := (float64(m1.heap) - float64(m0.heap)) / float64(calls)
	elems, err := gatewayElements(ctx, topo)
	if err != nil {
		return err.Error()
	}
	per, err := nftElementBytes(ctx, topo.Clients[0])
	if err != nil {
		return err.Error()
	}
	kern := float64(elems)*per/float64(calls) + ctBytes
	s.vals["memory"] = daemon + kern
	return fmt.Sprintf("%.0f B/call: daemon RSS +%.0f B/call (anonymous %+.0f, file-backed %+.0f; Go heap +%.0f); kernel %.0f B/call (%.2f map elements/call x %.0f B, %.2f conntrack entries/call x %d B)%s",
		daemon+kern, daemon, (float64(m1.anon)-float64(m0.anon))/float64(calls), (float64(m1.file)-float64(m0.file))/float64(calls), heap, kern, float64(elems)/float64(calls), per, ct/float64(calls), ctSize,
		classesGrowth(m0.classes, m1.classes, float64(m1.rss)-float64(m0.rss), calls))
}

// classesGrowth says where the daemon's memory grew, per call, by
// runtime/metrics memory class (issue 12: what the resident set holds
// beyond the heap): the classes that grew or shrank by at least 1 byte
// per call, largest first, and what VmRSS grew beyond what the runtime
// holds without having released it to the kernel (total - heap/released).
func classesGrowth(c0, c1 map[string]uint64, rss float64, calls int) string {
	if len(c0) == 0 || len(c1) == 0 || calls == 0 {
		return ""
	}
	type g struct {
		name string
		d    float64
	}
	var gs []g
	for name, v := range c1 {
		if name == "total" {
			continue
		}
		if d := (float64(v) - float64(c0[name])) / float64(calls); d >= 1 || d <= -1 {
			gs = append(gs, g{name, d})
		}
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].d > gs[j].d || (gs[i].d == gs[j].d && gs[i].name < gs[j].name) })
	var b strings.Builder
	b.WriteString("; Go runtime per call:")
	for i, x := range gs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %+.0f", x.name, x.d)
	}
	held := func(c map[string]uint64) float64 { return float64(c["total"]) - float64(c["heap/released"]) }
	fmt.Fprintf(&b, "; RSS beyond what the runtime holds %+.0f", (rss-(held(c1)-held(c0)))/float64(calls))
	return b.String()
}

// benchStartPACProcess runs the mini PAC in a process of its own in the
// server's namespace (`pptpgw bench --pac ADDR`): 10,000 control
// connections of Linux's helper are 10,000 descriptors at each end, more
// than one process may open here (RLIMIT_NOFILE 20000, no CAP_SYS_RESOURCE
// to raise it). It stops when its stdin closes or the topology does.
func benchStartPACProcess(ctx context.Context, self string, topo *testbed.Topology) error {
	cmd := topo.Server.Command(ctx, self, "bench", "--pac", testbed.ServerIP.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if _, err := topo.Start(cmd); err != nil {
		return err
	}
	topo.OnClose(func() error { return in.Close() })
	ready := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		ready <- l
		io.Copy(io.Discard, out)
	}()
	select {
	case l := <-ready:
		if strings.TrimSpace(l) != "ready" {
			return fmt.Errorf("mini PAC process: %q", l)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("mini PAC process: not ready in 10s")
	}
}

// benchServePAC is `pptpgw bench --pac ADDR`: a mini PAC in this
// process's namespace until stdin closes.
func benchServePAC(addr string) int {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw bench --pac:", err)
		return 2
	}
	p, err := testbed.ListenPAC(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw bench --pac:", err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	p.Close()
	return 0
}

// greBWSize is the GRE payload of the throughput case: a full-size PPP
// frame of a 1500-byte path.
const greBWSize = 1400

// benchGREbw is GRE throughput: one call set up through the control
// channel, its client sending greBWSize-byte payloads paced (the rate
// search above, from 20k packets/s), the PAC echoing every frame back
// through the gateway, so both directions carry the load. The figure is
// the GRE payload rate of one direction, in Mbit/s, at the highest step
// with < 0.1 % loss.
func benchGREbw(ctx context.Context, self string, s *benchSide) (string, error) {
	topo, err := testbed.New(testbed.Config{Clients: 1})
	if err != nil {
		return "", err
	}
	defer topo.Close()
	if s.gw {
		gw, err := topo.StartGateway(ctx, self, benchGatewayArgs...)
		if err != nil {
			return "", err
		}
		defer gw.Stop()
	} else if err := topo.KernelHelper(ctx); err != nil {
		return "", err
	}
	if _, err := topo.StartPAC(topo.Server, testbed.ServerIP); err != nil {
		return "", err
	}
	held, err := testbed.HoldCalls(ctx, topo, testbed.HoldPlan{Server: testbed.ServerIP, Calls: 1, PerConn: 1, Timeout: 30 * time.Second})
	if err != nil {
		return "", err
	}
	defer held.Release(10 * time.Second)
	if held.Up == 0 {
		return "no call came up: " + held.FirstEr, nil
	}
	time.Sleep(300 * time.Millisecond) // the first frames' echoes; the kernel path's elements
	best, note, err := greRateSearch(ctx, topo, held.Keys, greBWSize, 20000)
	if err != nil {
		return "", err
	}
	mbps := best * greBWSize * 8 / 1e6
	s.vals["grebw"] = mbps
	return fmt.Sprintf("%.0f Mbit/s (%.0f packets/s) with < 0.1%% loss (%s)", mbps, best, note), nil
}

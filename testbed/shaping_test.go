package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Shaping (issue 9). The link is 20mbit in both directions; four bulk TCP
// streams (iperf3 -P 4) and a ping every 50 ms run together, first through
// a plain 20mbit tbf with a large buffer (1 MB, ~400 ms at the rate) on the
// gateway's WAN (uploads) and LAN bridge (downloads), then through
// pptpgw's HTB trees, where ICMP is classed interactive and the rest falls
// to the bulk default.

const (
	shapeRate  = 20e6 // bit/s
	shapeSecs  = 8
	shapeEvery = 50 * time.Millisecond
)

func shapingYAML(topo *Topology) string {
	return fmt.Sprintf(`classes:
  - name: interactive
    match:
      - {protocol: icmp}
  - name: bulk
shaping:
  - interface: %[1]s
    rate: 20mbit
    default: bulk
    classes:
      - {class: interactive, priority: 1, rate: 2mbit, ceil: 20mbit}
      - {class: bulk, priority: 7, rate: 18mbit, ceil: 20mbit}
  - interface: %[2]s
    rate: 20mbit
    default: bulk
    classes:
      - {class: interactive, priority: 1, rate: 2mbit}
      - {class: bulk, priority: 7, rate: 18mbit}
`, topo.WANIf, topo.LANIf)
}

// loadRun is one bulk transfer with a ping alongside.
type loadRun struct {
	mbps       float64
	p50, p95   time.Duration
	lost, sent int
}

func (r loadRun) String() string {
	return fmt.Sprintf("bulk %.1f Mbit/s (%.2f of the link), ping p50 %v p95 %v, %d/%d lost",
		r.mbps, r.mbps*1e6/shapeRate, r.p50.Round(100*time.Microsecond), r.p95.Round(100*time.Microsecond), r.lost, r.sent)
}

// measureLoad runs iperf3 (4 streams; reverse: the server sends) from
// client 0 to the server and pings the server every 50 ms from the second
// second of the transfer to its last.
func measureLoad(t *testing.T, ctx context.Context, topo *Topology, reverse bool) loadRun {
	t.Helper()
	type pr struct {
		r   PingResult
		err error
	}
	pc := make(chan pr, 1)
	go func() {
		select {
		case <-time.After(1500 * time.Millisecond): // streams up to speed
		case <-ctx.Done():
		}
		n := int((shapeSecs*time.Second - 2500*time.Millisecond) / shapeEvery)
		r, err := Ping(ctx, topo.Clients[0], topo.Server.IP, shapeEvery, n)
		pc <- pr{r, err}
	}()
	ir, err := RunIperfWith(ctx, topo, topo.Clients[0], topo.Server, topo.Server.IP,
		IperfOptions{Seconds: shapeSecs, Streams: 4, Reverse: reverse})
	p := <-pc
	if err != nil {
		t.Fatalf("iperf3: %v", err)
	}
	if p.err != nil {
		t.Fatalf("ping: %v", p.err)
	}
	return loadRun{mbps: ir.Gbps * 1000, p50: p.r.Percentile(50), p95: p.r.Percentile(95), lost: p.r.Lost(), sent: p.r.Sent}
}

func addTBF(t *testing.T, h *netlink.Handle, ifname string) {
	t.Helper()
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	const rate = shapeRate / 8 // bytes/s
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(9, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       rate, Limit: 1 << 20, Buffer: netlink.Xmittime(rate, 32<<10),
	}
	if err := h.QdiscReplace(q); err != nil {
		t.Fatalf("tbf on %s: %v", ifname, err)
	}
	t.Cleanup(func() { _ = h.QdiscDel(q) })
}

func rootKinds(t *testing.T, h *netlink.Handle, ifname string) string {
	t.Helper()
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	var k []string
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			k = append(k, q.Type())
		}
	}
	return strings.Join(k, ",")
}

// TestShapingLatencyUnderLoad is the acceptance test: bulk gets
// 0.85-1.0 of the link and the ping's p95 stays under 10 ms through the
// HTB trees, uploads and downloads, where the tbf shows the bloat that
// this prevents. A shaped run outside the bounds is measured once more (the
// VM is shared with other builds) before it fails.
func TestShapingLatencyUnderLoad(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "iperf3")
	topo := testbedtest.New(t, Config{Clients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	h := topo.GW.Netlink()
	dirs := []struct {
		name    string
		reverse bool
		ifname  string
	}{{"upload", false, topo.WANIf}, {"download", true, topo.LANIf}}

	// 1. The bloat: a plain tbf, the gateway without shaping.
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	bloat := map[string]loadRun{}
	for _, d := range dirs {
		addTBF(t, h, d.ifname)
		r := measureLoad(t, ctx, topo, d.reverse)
		t.Logf("%s through tbf 20mbit, 1 MB buffer: %v", d.name, r)
		bloat[d.name] = r
		if err := h.QdiscDel(&netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: mustIndex(t, h, d.ifname),
			Handle: netlink.MakeHandle(9, 0), Parent: netlink.HANDLE_ROOT}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}

	// 2. pptpgw's HTB trees.
	gw = startGatewayConfig(t, ctx, topo, bin, shapingYAML(topo))
	if !strings.Contains(gw.Log(), "qos leaf qdisc") {
		t.Errorf("the leaf qdisc probe was not logged:\n%s", gw.Log())
	}
	for _, d := range dirs {
		if k := rootKinds(t, h, d.ifname); k != "htb" {
			t.Fatalf("%s root qdisc = %q, want htb", d.ifname, k)
		}
		b := bloat[d.name]
		if b.p95 < 50*time.Millisecond {
			t.Errorf("%s: the tbf run shows no bloat (p95 %v): the comparison proves nothing", d.name, b.p95)
		}
		var r loadRun
		for try := 1; try <= 2; try++ {
			r = measureLoad(t, ctx, topo, d.reverse)
			t.Logf("%s through pptpgw HTB 20mbit (try %d): %v", d.name, try, r)
			if frac := r.mbps * 1e6 / shapeRate; frac >= 0.85 && frac <= 1.0 && r.p95 < 10*time.Millisecond {
				break
			}
		}
		if frac := r.mbps * 1e6 / shapeRate; frac < 0.85 || frac > 1.0 {
			t.Errorf("%s: bulk got %.2f of the link, want 0.85-1.0", d.name, frac)
		}
		if r.p95 >= 10*time.Millisecond {
			t.Errorf("%s: ping p95 %v under load, want < 10ms (tbf: %v)", d.name, r.p95, b.p95)
		}
	}

	// 3. pptpgw qos --json shows both trees with the kernel's counters:
	// ICMP counted in interactive, the transfers in bulk.
	out, err := topo.GW.Output(ctx, bin, "qos", "--json", "--admin-socket", gw.Socket)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		LeafQdisc  string `json:"leaf_qdisc"`
		Interfaces []struct {
			Interface string `json:"interface"`
			Present   bool   `json:"present"`
			Classes   []struct {
				Class   string `json:"class"`
				ID      string `json:"id"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
				Found   bool   `json:"found"`
			} `json:"classes"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("qos --json: %v\n%s", err, out)
	}
	t.Logf("pptpgw qos --json: %s", out)
	if len(rep.Interfaces) != 2 || rep.LeafQdisc == "" {
		t.Fatalf("qos: %s", out)
	}
	for _, is := range rep.Interfaces {
		if !is.Present || len(is.Classes) != 2 {
			t.Errorf("qos: %s: %+v", is.Interface, is)
			continue
		}
		ia, bu := is.Classes[0], is.Classes[1]
		if ia.ID != "1:10" || bu.ID != "1:20" || !ia.Found || !bu.Found {
			t.Errorf("qos: %s classes %+v", is.Interface, is.Classes)
		}
		// At least the echoes of one run (~100) in interactive, and the
		// bulk class far busier.
		if ia.Packets < 100 || bu.Bytes < 10*ia.Bytes {
			t.Errorf("qos: %s: interactive %d packets %d bytes, bulk %d bytes", is.Interface, ia.Packets, ia.Bytes, bu.Bytes)
		}
	}
	if txt, err := topo.GW.Output(ctx, bin, "qos", "--admin-socket", gw.Socket); err != nil || !strings.Contains(string(txt), "interactive") {
		t.Errorf("pptpgw qos: %v\n%s", err, txt)
	} else {
		t.Logf("pptpgw qos:\n%s", txt)
	}

	// 4. A clean stop removes exactly the roots it created.
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if k := rootKinds(t, h, d.ifname); strings.Contains(k, "htb") {
			t.Errorf("%s still has %q after the gateway stopped", d.ifname, k)
		}
	}
}

func mustIndex(t *testing.T, h *netlink.Handle, name string) int {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

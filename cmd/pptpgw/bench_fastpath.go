package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"strings"
	"sync"
	"time"

	"pptpgw/testbed"
)

// Issue 12's additions to `pptpgw bench`: the ratio of every case that has
// one figure, a progress line, call setups per second, --gre-path and
// --svg.

// benchGatewayArgs are extra `pptpgw run` flags for every gateway the bench
// starts (--gre-path).
var benchGatewayArgs []string

// benchUnits is the unit of each case's compared figure (higher is better).
var benchUnits = map[string]string{
	"clients": "frames/s", "greburst": "frames/s", "tunnel": "Mbit/s", "setups": "setups/s", "bulk": "Gbit/s",
}

// withRatio adds case c's figures and pptpgw's ratio to Linux's to r.
func withRatio(r benchRow, c string, k, g *benchSide) benchRow {
	kv, gv := k.vals[c], g.vals[c]
	if kv <= 0 || gv <= 0 {
		return r
	}
	r.KernelValue, r.PPTPGWValue, r.Unit, r.Ratio = kv, gv, benchUnits[c], gv/kv
	return r
}

var benchStarted = time.Now()

// progress prints which case runs now on stderr (one line each).
func progress(c string, gw bool) {
	side := "Linux helper"
	if gw {
		side = "pptpgw"
	}
	if c == "bulk" {
		side = "masquerade and pptpgw alternating"
	}
	fmt.Fprintf(os.Stderr, "pptpgw bench: %6.1fs  %s (%s)\n", time.Since(benchStarted).Seconds(), c, side)
}

func progressDone() {
	fmt.Fprintf(os.Stderr, "pptpgw bench: %6.1fs  done\n", time.Since(benchStarted).Seconds())
}

// Call setups: each is a whole PPTP control session of the mini PNS against
// the mini PAC through the gateway: TCP, Start-Control-Connection, one call
// (Outgoing-Call-Request/Reply, translated), Call-Clear,
// Stop-Control-Connection, FIN. No GRE: the mini PNS pauses 50 ms after its
// frames, which would be what is measured. Sequential: one after another;
// parallel: 16 workers, spread over 4 client hosts. A closed connection
// stays tracked for 10 s, so thousands of sessions a second from a few hosts
// would meet the per-source limit (256 connections) and be refused: the
// gateway runs with limits.conns_per_source and calls_per_source raised for
// this case, to measure its speed rather than its policy. Bounded in count
// and time.
const (
	benchSetupsSeq      = 1000
	benchSetupsPar      = 16
	benchSetupsParEach  = 125
	benchSetupsDeadline = 60 * time.Second
)

func benchSetups(ctx context.Context, self string, s *benchSide) error {
	cfg, err := os.CreateTemp("", "pptpgw-bench-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Name())
	if _, err := cfg.WriteString("limits:\n  conns_per_source: 65536\n  calls_per_source: 65536\n"); err != nil {
		return err
	}
	cfg.Close()
	saved := benchGatewayArgs
	benchGatewayArgs = append(append([]string(nil), saved...), "--config", cfg.Name())
	defer func() { benchGatewayArgs = saved }()
	return withTopology(ctx, self, 4, s.gw, func(topo *testbed.Topology) error {
		if err := benchSetupsPAC(ctx, self, topo); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, benchSetupsDeadline)
		defer cancel()
		one := func(c *testbed.NS, id uint16) bool {
			r := testbed.RunPNS(ctx, c, testbed.PNSConfig{Server: testbed.ServerIP, Calls: 1,
				BaseCallID: id, Timeout: 5 * time.Second})
			return r.OK()
		}
		use, own := daemonUsage(s.gw), benchUsage()
		start := time.Now()
		seqOK := 0
		took := make([]time.Duration, 0, benchSetupsSeq)
		for i := 0; i < benchSetupsSeq && ctx.Err() == nil; i++ {
			t0 := time.Now()
			if one(topo.Clients[i%len(topo.Clients)], uint16(0x0100+i)) {
				seqOK++
				took = append(took, time.Since(t0))
			}
		}
		seq := float64(seqOK) / time.Since(start).Seconds()
		use.phase("sequential", seqOK)
		own.phase("sequential", seqOK)
		start = time.Now()
		var mu sync.Mutex
		parOK := 0
		var wg sync.WaitGroup
		for w := 0; w < benchSetupsPar; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < benchSetupsParEach && ctx.Err() == nil; i++ {
					if one(topo.Clients[w%len(topo.Clients)], uint16(0x1000+w*benchSetupsParEach+i)) {
						mu.Lock()
						parOK++
						mu.Unlock()
					}
				}
			}(w)
		}
		wg.Wait()
		par := float64(parOK) / time.Since(start).Seconds()
		use.phase("parallel", parOK)
		own.phase("parallel", parOK)
		s.setups = fmt.Sprintf("%.0f/s sequential (%d/%d ok, %s), %.0f/s 16 parallel (%d/%d ok)%s%s",
			seq, seqOK, benchSetupsSeq, setupQuantiles(took), par, parOK, benchSetupsPar*benchSetupsParEach, use, own)
		s.vals["setups"] = par
		return nil
	})
}

// benchSVG draws the rows that have a ratio as a horizontal bar chart:
// per case, Linux's figure and pptpgw's, scaled to the larger of the two,
// with the values and the ratio written next to the bars. Hand-written SVG
// 1.1, no dependency.
func benchSVG(rows []benchRow) []byte {
	const (
		width  = 760
		label  = 300
		barMax = 300
		barH   = 14
		rowH   = 52
		top    = 40
	)
	var rs []benchRow
	for _, r := range rows {
		if r.Ratio > 0 {
			rs = append(rs, r)
		}
	}
	var b strings.Builder
	h := top + rowH*len(rs) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">pptpgw bench: pptpgw vs Linux's PPTP helper (higher is better)</text>`+"\n")
	fmt.Fprintf(&b, `<rect x="%d" y="8" width="12" height="12" fill="#888"/><text x="%d" y="19">Linux</text>`+"\n", width-170, width-154)
	fmt.Fprintf(&b, `<rect x="%d" y="8" width="12" height="12" fill="#2a7"/><text x="%d" y="19">pptpgw</text>`+"\n", width-100, width-84)
	for i, r := range rs {
		y := top + i*rowH
		name := r.Label
		if name == "" {
			name = r.Case
		}
		if len(name) > 48 {
			name = name[:45] + "..."
		}
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+barH, html.EscapeString(name))
		fmt.Fprintf(&b, `<text x="10" y="%d" fill="#555">ratio %.2f</text>`+"\n", y+2*barH+4, r.Ratio)
		m := max(r.KernelValue, r.PPTPGWValue)
		for j, v := range []struct {
			val  float64
			fill string
		}{{r.KernelValue, "#888"}, {r.PPTPGWValue, "#2a7"}} {
			w := int(v.val / m * barMax)
			yy := y + j*(barH+4)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", label, yy, max(w, 1), barH, v.fill)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s %s</text>`+"\n", label+max(w, 1)+6, yy+barH-3, svgNum(v.val), html.EscapeString(r.Unit))
		}
	}
	fmt.Fprintf(&b, `<text x="10" y="%d" fill="#555">%s</text>`+"\n", h-10, html.EscapeString("made by `pptpgw bench --svg`"))
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// rxPackets is the packet count received by n's interface.
func rxPackets(ctx context.Context, n *testbed.NS) (uint64, error) {
	out, err := n.Output(ctx, "ip", "-s", "-j", "link", "show", "dev", n.If)
	if err != nil {
		return 0, err
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("ip -s link %s: %v: %s", n.If, err, out)
	}
	return links[0].Stats.RX.Packets, nil
}

func grePPSRows(k, g *benchSide) []benchRow {
	var rows []benchRow
	for _, n := range benchGRECalls {
		c := fmt.Sprintf("grepps%d", n)
		benchUnits[c] = "packets/s"
		rows = append(rows, withRatio(benchRow{
			Case:   fmt.Sprintf("GRE packets/s, highest rate with < 0.1%% loss, %d live calls (paced senders: the client hosts holding them, up to 4), 64-byte payloads, echoed", n),
			Kernel: k.grepps[n], PPTPGW: g.grepps[n], Label: fmt.Sprintf("GRE packets/s (< 0.1%% loss), %d live calls", n)}, c, k, g))
	}
	return rows
}

// svgNum writes a figure for the chart: 717k, 1.25M, 13.4.
func svgNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.4g", v)
	}
}

// memoryRow is the memory case's row.
func memoryRow(k, g *benchSide) benchRow {
	n := benchGRECalls[len(benchGRECalls)-1]
	r := benchRow{Case: fmt.Sprintf("memory per live call at %d calls, bytes (daemon RSS growth + kernel; ratio: Linux / pptpgw, so > 1 is less memory)", n),
		Kernel: k.mem, PPTPGW: g.mem, Label: fmt.Sprintf("memory/live call, %d calls (lower better)", n)}
	kv, gv := k.vals["memory"], g.vals["memory"]
	if kv > 0 && gv > 0 {
		r.KernelValue, r.PPTPGWValue, r.Unit, r.Ratio = kv, gv, "bytes/call (lower is better)", kv/gv
	}
	return r
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"pptpgw/testbed"
)

// benchRow is one measured case of `pptpgw bench`.
type benchRow struct {
	Case   string `json:"case"`
	Kernel string `json:"kernel"` // Linux's helper (or plain masquerade for bulk TCP)
	PPTPGW string `json:"pptpgw"`
	// The figure compared, where a case has one (higher is better), its
	// unit and pptpgw's ratio to Linux's (issue 12).
	KernelValue float64 `json:"kernel_value,omitempty"`
	PPTPGWValue float64 `json:"pptpgw_value,omitempty"`
	Unit        string  `json:"unit,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"`
	// Label is the case's short name in the --svg chart (default: Case, cut).
	Label string `json:"label,omitempty"`
}

func cmdBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	clients := fs.Int("clients", 6, "pptp-linux clients behind the gateway")
	frames := fs.Int("frames", 200, "frames each client sends through its call")
	secs := fs.Int("seconds", 5, "length of each iperf3 run")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	only := fs.String("only", "", "comma-separated cases to run (default all): "+strings.Join(benchCases, ", "))
	svg := fs.String("svg", "", "also draw the table as an SVG bar chart (pptpgw vs Linux per case) into this file")
	placement := fs.String("placement", "ip", "tunnel case with --gre-path kernel: ip (the daemon's rules) or netdev (an experiment: the same maps at the devices' ingress with fwd)")
	grePath := fs.String("gre-path", "", "the gateway's --gre-path (kernel, userspace, auto; default: its default)")
	gwConfig := fs.String("gateway-config", "", "pass --config FILE to every pptpgw run the bench starts (e.g. classes or policing, to measure their cost on the GRE cases)")
	gwProfile := fs.String("gateway-cpuprofile", "", "pass --cpuprofile FILE to every pptpgw run the bench starts (the last one's profile stays; e.g. with --only setups)")
	gwMemProfile := fs.String("gateway-memprofile", "", "pass --memprofile FILE to every pptpgw run the bench starts: a heap profile at each memory reading (the last one stays; e.g. with --only memory)")
	pac := fs.String("pac", "", "internal: serve the bench's mini PAC on this address in the current namespace until stdin closes")
	extraGW := addGatewayArgFlag(fs) // issue 12, setups
	fs.StringVar(&benchSetupsPACMode, "setups-pac", "inprocess", "setups case: where the mini PAC runs: inprocess (in the bench process, with the mini PNS) or process (a process of its own, as a real server is)")
	perConn := fs.Int("calls-per-conn", benchCallsPerConn, "pptpgw's calls per control connection in the 10,000-call cases (Linux's helper: always 1)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw bench [flags]

Measures pptpgw against Linux's own PPTP helper (nf_conntrack_pptp/nf_nat_pptp,
'ct helper "pptp"' + masquerade) in one run, in throwaway network namespaces:
  - N pptp-linux clients behind one address calling one pptpd at once,
  - several calls on one control connection (Go mini PNS/PAC),
  - control messages split across TCP segments inside the call-ID field,
  - TCP inside one PPTP session (Go client, MS-CHAPv2 + MPPE-128) to
    'pptpgw serve' on the WAN: the GRE is NATed by pptpgw's kernel
    fast path (or its queue, --gre-path userspace) or by Linux's helper,
  - GRE packets/s at 1, 100 and 10,000 live calls: the highest paced rate
    with < 0.1%% loss (a bounded search), and memory per live call at
    10,000 calls (the daemon's RSS growth, the kernel's map elements and
    conntrack entries),
  - GRE throughput on one call, 1400-byte payloads echoed both ways: the
    highest paced rate with < 0.1%% loss,
  - call setups per second, sequential and 16 in parallel,
  - bulk TCP (iperf3) through the gateway vs plain kernel masquerade.
The cases where the two sides are close (the MPPE tunnel, GRE throughput,
bulk TCP) run 3 alternated rounds (Linux, pptpgw, Linux, ...) and compare
each side's best round, so that load coming and going weighs on both.
Every load is bounded in count and time; the whole run in 12 minutes. Needs root, pptp-linux, pptpd, iperf3.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *pac != "" {
		return benchServePAC(*pac)
	}
	cases, err := parseCases(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw bench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "pptpgw bench: needs root (it creates network namespaces); try sudo")
		return 1
	}
	if *clients < 1 || *clients > testbed.MaxClients || *frames < 1 || *secs < 1 || *secs > 60 {
		fmt.Fprintf(os.Stderr, "pptpgw bench: need 1 <= clients <= %d, frames >= 1, 1 <= seconds <= 60\n", testbed.MaxClients)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw bench:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 12*time.Minute)
	defer cancel()
	benchGatewayArgs = nil
	if benchCallsPerConn = *perConn; benchCallsPerConn < 1 || benchCallsPerConn > 10000 {
		fmt.Fprintln(os.Stderr, "pptpgw bench: --calls-per-conn must be 1..10000")
		return 2
	}
	if benchSetupsPACMode != "inprocess" && benchSetupsPACMode != "process" {
		fmt.Fprintln(os.Stderr, "pptpgw bench: --setups-pac must be inprocess or process")
		return 2
	}
	if benchPlacement = *placement; benchPlacement != "ip" && benchPlacement != "netdev" {
		fmt.Fprintln(os.Stderr, "pptpgw bench: --placement must be ip or netdev")
		return 2
	}
	if *grePath != "" {
		benchGatewayArgs = []string{"--gre-path", *grePath}
	}
	if *gwProfile != "" {
		benchGatewayArgs = append(benchGatewayArgs, "--cpuprofile", *gwProfile)
	}
	benchGatewayArgs = append(benchGatewayArgs, *extraGW...)
	if *gwMemProfile != "" {
		benchGatewayArgs = append(benchGatewayArgs, "--memprofile", *gwMemProfile)
	}
	if *gwConfig != "" { // kfeat (issue 12)
		benchGatewayArgs = append(benchGatewayArgs, "--config", *gwConfig)
	}
	rows, err := runBench(ctx, self, cases, *clients, *frames, *secs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw bench:", err)
		return 1
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, benchSVG(rows), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "pptpgw bench:", err)
			return 1
		}
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(rows)
	} else {
		printBench(os.Stdout, rows)
	}
	return 0
}

// benchCases are the cases of the table, in order, as --only names them.
var benchCases = []string{"clients", "multicall", "split", "greburst", "grepps", "grebw", "memory", "tunnel", "setups", "bulk"}

// benchWant is the set of cases this run measures.
var benchWant map[string]bool

// parseCases turns --only's list into a set (all cases when empty).
func parseCases(only string) (map[string]bool, error) {
	set := map[string]bool{}
	if strings.TrimSpace(only) == "" {
		for _, c := range benchCases {
			set[c] = true
		}
		return set, nil
	}
	for _, c := range strings.Split(only, ",") {
		c = strings.TrimSpace(c)
		if !slices.Contains(benchCases, c) {
			return nil, fmt.Errorf("--only: unknown case %q (cases: %s)", c, strings.Join(benchCases, ", "))
		}
		set[c] = true
	}
	return set, nil
}

// benchSide is one column of the table: Linux's helper or pptpgw.
type benchSide struct {
	gw                                   bool
	ppp, multi, split, gre, bulk, tunnel string
	grebw                                string // GRE throughput, 1400-byte payloads (bench_calls.go)
	bulkBest                             float64
	setups                               string             // issue 12
	grepps                               map[int]string     // by live calls (issue 12)
	vals                                 map[string]float64 // the compared figure by case (issue 12)
	mem                                  string             // memory per live call (issue 12)
}

// withTopology runs fn in a fresh topology of n clients, behind either
// pptpgw or Linux's helper (ct helper "pptp" + masquerade).
func withTopology(ctx context.Context, self string, n int, gw bool, fn func(*testbed.Topology) error) error {
	topo, err := testbed.New(testbed.Config{Clients: n})
	if err != nil {
		return err
	}
	defer topo.Close()
	if gw {
		g, err := topo.StartGateway(ctx, self, benchGatewayArgs...)
		if err != nil {
			return err
		}
		defer g.Stop()
		benchGateway = g // the setups case reads its CPU time (bench_setups.go)
	} else if err := topo.KernelHelper(ctx); err != nil {
		return err
	}
	return fn(topo)
}

func runBench(ctx context.Context, self string, cases map[string]bool, clients, frames, secs int) ([]benchRow, error) {
	const greFrames = 5000
	benchWant = cases
	k, g := &benchSide{vals: map[string]float64{}}, &benchSide{gw: true, vals: map[string]float64{}}
	for _, s := range []*benchSide{k, g} {
		var err error
		if cases["clients"] {
			progress("clients", s.gw)
			err = withTopology(ctx, self, clients, s.gw, func(topo *testbed.Topology) error {
				if _, err := topo.StartPPTPD(ctx, testbed.PPTPDConfig{}); err != nil {
					return err
				}
				s.ppp, s.vals["clients"] = pppSummary(testbed.RunPPTPClients(ctx, topo, topo.Clients, testbed.ServerIP, frames, nil), frames)
				return nil
			})
		}
		if err == nil && cases["multicall"] {
			progress("multicall", s.gw)
			err = withTopology(ctx, self, 2, s.gw, func(topo *testbed.Topology) error {
				s.multi = callsSummary(testbed.RunMultiCall(ctx, topo, testbed.MultiCallConfig{Clients: 2, Calls: 3, Frames: 20}))
				return nil
			})
		}
		if err == nil && cases["split"] {
			progress("split", s.gw)
			err = withTopology(ctx, self, 2, s.gw, func(topo *testbed.Topology) error {
				s.split = callsSummary(testbed.RunSplitControl(ctx, topo, nil))
				return nil
			})
		}
		if err == nil && cases["greburst"] {
			progress("greburst", s.gw)
			err = withTopology(ctx, self, 1, s.gw, func(topo *testbed.Topology) error {
				start := time.Now()
				r := testbed.RunMultiCall(ctx, topo, testbed.MultiCallConfig{Clients: 1, Calls: 1, Frames: greFrames})
				el := time.Since(start)
				good, sent := 0, 0
				for _, p := range r.PNS {
					for _, c := range p.Calls {
						good, sent = good+c.Good, sent+c.Sent
					}
				}
				s.gre = fmt.Sprintf("%d/%d echoed (%d sent) in %.2fs", good, greFrames, sent, el.Seconds())
				s.vals["greburst"] = float64(good) / el.Seconds()
				return nil
			})
		}
		if err == nil && (cases["grepps"] || cases["memory"]) {
			s.grepps = map[int]string{}
			for _, n := range benchGRECalls {
				if !cases["grepps"] && n != benchGRECalls[len(benchGRECalls)-1] {
					continue
				}
				progress(fmt.Sprintf("grepps, %d calls", n), s.gw)
				if s.grepps[n], err = benchGREpps(ctx, self, s, n); err != nil {
					break
				}
			}
		}
		if err == nil && cases["setups"] {
			progress("setups", s.gw)
			err = benchSetups(ctx, self, s)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", map[bool]string{false: "Linux helper", true: "pptpgw"}[s.gw], err)
		}
	}

	// The throughput cases whose two sides differ by a few percent run in
	// alternated rounds (Linux, pptpgw, Linux, ...), each side's best
	// kept, as bulk does: load that comes and goes while the bench runs
	// then weighs on both sides alike.
	if cases["tunnel"] {
		if err := benchAlternated(ctx, "tunnel", k, g, func(s *benchSide) (float64, string, error) {
			r, err := tunnelIperf(ctx, self, s.gw, secs)
			return r.Gbps * 1000, "", err
		}, func(s *benchSide, best float64, _ string, all []float64) {
			s.tunnel = fmt.Sprintf("%.0f Mbit/s (%s)", best, roundsNote(all, "%.0f"))
		}); err != nil {
			return nil, err
		}
	}
	if cases["grebw"] {
		if err := benchAlternated(ctx, "grebw", k, g, func(s *benchSide) (float64, string, error) {
			s.vals["grebw"] = 0
			note, err := benchGREbw(ctx, self, s)
			return s.vals["grebw"], note, err
		}, func(s *benchSide, _ float64, note string, all []float64) {
			s.grebw = fmt.Sprintf("%s; %s Mbit/s", note, roundsNote(all, "%.0f"))
		}); err != nil {
			return nil, err
		}
	}

	if cases["bulk"] {
		progress("bulk", true)
		if err := benchBulk(ctx, self, k, g, secs); err != nil {
			return nil, err
		}
	}

	var rows []benchRow
	for _, r := range []struct {
		c   string
		row benchRow
	}{
		{"clients", benchRow{Case: fmt.Sprintf("%d pptp-linux clients -> 1 pptpd, %d frames each", clients, frames), Kernel: k.ppp, PPTPGW: g.ppp, Label: fmt.Sprintf("%d pptp-linux clients, echoed frames/s", clients)}},
		{"multicall", benchRow{Case: "2 control connections x 3 calls each (same call IDs)", Kernel: k.multi, PPTPGW: g.multi}},
		{"split", benchRow{Case: "control messages split inside the call-ID field", Kernel: k.split, PPTPGW: g.split}},
		{"greburst", benchRow{Case: fmt.Sprintf("GRE burst: %d frames on one call, echoed by the PAC", greFrames), Kernel: k.gre, PPTPGW: g.gre, Label: "GRE burst on one call, echoed frames/s"}},
		{"tunnel", benchRow{Case: fmt.Sprintf("TCP inside one PPTP session (MPPE-128) to pptpgw serve, best of %d alternated iperf3 %ds runs", benchRounds, secs), Kernel: k.tunnel, PPTPGW: g.tunnel, Label: "TCP inside an MPPE-128 tunnel"}},
		{"setups", benchRow{Case: "call setups (control connection, call, clear): sequential, 16 in parallel", Kernel: k.setups, PPTPGW: g.setups, Label: "call setups/s, 16 in parallel"}},
		{"bulk", benchRow{Case: fmt.Sprintf("bulk TCP, best of 3 iperf3 %ds runs (Linux column: plain masquerade)", secs), Kernel: k.bulk, PPTPGW: g.bulk, Label: "bulk TCP (Linux: plain masquerade)"}},
	} {
		if cases[r.c] {
			rows = append(rows, withRatio(r.row, r.c, k, g))
		}
		if r.c == "greburst" && cases["grepps"] {
			rows = append(rows, grePPSRows(k, g)...)
		}
		if r.c == "greburst" && cases["grebw"] {
			benchUnits["grebw"] = "Mbit/s"
			rows = append(rows, withRatio(benchRow{Case: fmt.Sprintf("GRE throughput, 1 live call, %d-byte payloads echoed both ways: highest rate with < 0.1%% loss (GRE payload, one way)", greBWSize),
				Kernel: k.grebw, PPTPGW: g.grebw, Label: fmt.Sprintf("GRE throughput, %d-byte payloads", greBWSize)}, "grebw", k, g))
		}
		if r.c == "greburst" && cases["memory"] {
			rows = append(rows, memoryRow(k, g))
		}
	}
	progressDone()
	return rows, nil
}

// benchBulk: bulk TCP never leaves the kernel in either case; alternate the
// two three times in one topology and keep each one's best, since a shared
// 2-core machine is noisy.
// benchRounds is how many alternated rounds benchAlternated runs.
const benchRounds = 3

// benchAlternated runs one case benchRounds times on each side, alternating
// Linux's helper and pptpgw, keeps each side's best figure (the compared
// one, vals[c]) and hands it, the note of the round that made it and every
// round's figure to done.
func benchAlternated(ctx context.Context, c string, k, g *benchSide, run func(*benchSide) (float64, string, error), done func(s *benchSide, best float64, note string, all []float64)) error {
	var all [2][]float64
	var best [2]float64
	var notes [2]string
	for round := 0; round < benchRounds; round++ {
		for _, s := range []*benchSide{k, g} {
			progress(fmt.Sprintf("%s, round %d of %d", c, round+1, benchRounds), s.gw)
			v, note, err := run(s)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", map[bool]string{false: "Linux helper", true: "pptpgw"}[s.gw], c, err)
			}
			i := b2i(s.gw)
			all[i] = append(all[i], v)
			if len(all[i]) == 1 || v > best[i] {
				best[i], notes[i] = v, note
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	for _, s := range []*benchSide{k, g} {
		i := b2i(s.gw)
		s.vals[c] = best[i]
		done(s, best[i], notes[i], all[i])
	}
	return nil
}

// roundsNote lists the rounds' figures: "best of 705, 742, 731".
func roundsNote(all []float64, format string) string {
	parts := make([]string, len(all))
	for i, v := range all {
		parts[i] = fmt.Sprintf(format, v)
	}
	return "best of " + strings.Join(parts, ", ")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func benchBulk(ctx context.Context, self string, k, g *benchSide, secs int) error {
	err := withTopology(ctx, self, 1, false, func(topo *testbed.Topology) error {
		if err := topo.KernelReset(ctx); err != nil {
			return err
		}
		for round := 0; round < 3; round++ {
			if err := topo.KernelMasquerade(ctx); err != nil {
				return err
			}
			r, err := testbed.RunIperf(ctx, topo, secs)
			if err != nil {
				return fmt.Errorf("iperf3 (masquerade): %w", err)
			}
			k.bulkBest = max(k.bulkBest, r.Gbps)
			if err := topo.KernelReset(ctx); err != nil {
				return err
			}
			gw, err := topo.StartGateway(ctx, self)
			if err != nil {
				return err
			}
			r, err = testbed.RunIperf(ctx, topo, secs)
			gw.Stop()
			if err != nil {
				return fmt.Errorf("iperf3 (pptpgw): %w", err)
			}
			g.bulkBest = max(g.bulkBest, r.Gbps)
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.vals["bulk"], g.vals["bulk"] = k.bulkBest, g.bulkBest
	k.bulk = fmt.Sprintf("%.2f Gbit/s", k.bulkBest)
	g.bulk = fmt.Sprintf("%.2f Gbit/s (%.3f of masquerade)", g.bulkBest, g.bulkBest/k.bulkBest)
	return nil
}

// pppSummary says how many clients got all their frames back, with none of
// another client's, and the aggregate echoed-frame rate.
func pppSummary(r testbed.PPTPClientsResult, frames int) (string, float64) {
	ok, good, cross := 0, 0, 0
	var longest float64
	for _, s := range r.Summaries {
		if s.OK() {
			ok++
		}
		good += s.Good
		cross += s.Foreign
		longest = max(longest, s.Seconds)
	}
	out := fmt.Sprintf("%d/%d clients ok, %d/%d frames back", ok, len(r.Summaries)+len(r.Errors),
		good, frames*(len(r.Summaries)+len(r.Errors)))
	if cross > 0 {
		out += fmt.Sprintf(", %d cross-talk", cross)
	}
	rate := 0.0
	if longest > 0 {
		rate = float64(good) / longest
		out += fmt.Sprintf(", %.0f frames/s", rate)
	}
	return out, rate
}

func callsSummary(r testbed.MultiCallResult) string {
	total, ok := 0, 0
	for _, p := range r.PNS {
		for _, c := range p.Calls {
			total++
			if c.OK() {
				ok++
			}
		}
	}
	return fmt.Sprintf("%d/%d calls ok", ok, total)
}

func printBench(w io.Writer, rows []benchRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tLINUX HELPER\tPPTPGW\tRATIO")
	for _, r := range rows {
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Case, r.Kernel, r.PPTPGW, ratio)
	}
	tw.Flush()
}

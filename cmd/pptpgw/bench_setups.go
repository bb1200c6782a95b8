package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"pptpgw/testbed"
)

// Call setups per second (issue 12, the setups work): bench plumbing to try
// gateway settings without rebuilding.

// gatewayArgs is the bench's repeatable --gateway-arg: extra `pptpgw run`
// arguments for every gateway the bench starts (e.g. --gateway-arg=--queues=1).
type gatewayArgs []string

func (g *gatewayArgs) String() string { return strings.Join(*g, " ") }

func (g *gatewayArgs) Set(s string) error {
	*g = append(*g, s)
	return nil
}

// addGatewayArgFlag defines --gateway-arg on fs.
func addGatewayArgFlag(fs *flag.FlagSet) *gatewayArgs {
	g := &gatewayArgs{}
	fs.Var(g, "gateway-arg", "an extra argument for every `pptpgw run` the bench starts, repeatable (e.g. --gateway-arg=--queues=1)")
	return g
}

// setupQuantiles describes the sequential set-ups' durations: the median
// and the 90th percentile (robust to the load spikes of a shared machine,
// where the rate is not).
func setupQuantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no set-up completed"
	}
	d = slices.Clone(d)
	slices.Sort(d)
	us := func(x time.Duration) int64 { return x.Microseconds() }
	return fmt.Sprintf("median %d µs, p90 %d µs", us(d[len(d)/2]), us(d[len(d)*9/10]))
}

// benchSetupsPACMode is --setups-pac: where the setups case's mini PAC runs.
var benchSetupsPACMode = "inprocess"

// benchSetupsPAC starts the setups case's mini PAC: in the bench process
// (inprocess), where the mini PNS runs too, or in a process of its own in
// the server's namespace (process).
func benchSetupsPAC(ctx context.Context, self string, topo *testbed.Topology) error {
	if benchSetupsPACMode == "process" {
		return benchStartPACProcess(ctx, self, topo)
	}
	_, err := topo.StartPAC(topo.Server, testbed.ServerIP)
	return err
}

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// benchGateway is the gateway withTopology started last (nil before any).
var benchGateway *testbed.Gateway

// procUsage is a process's CPU time and context switches so far, summed
// over its threads.
type procUsage struct {
	cpu time.Duration
	csw uint64
}

// readProcUsage reads pid's threads' run time (the first field of
// /proc/PID/task/TID/schedstat, in ns: finer than the 10 ms ticks of
// /proc/PID/stat) and context switches (voluntary and not, from their
// status files).
func readProcUsage(pid int) (procUsage, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return procUsage{}, err
	}
	var u procUsage
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				u.cpu += time.Duration(ns)
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				u.csw += n
			}
		}
	}
	return u, nil
}

// setupUsage measures the gateway daemon's CPU time and context switches
// per set-up in each phase of the setups case: the daemon's own cost of a
// set-up, which the rates (and Linux's side) hide; it barely moves with the
// load of other processes, where the rates swing. Empty for Linux's helper
// (its work is spread over the senders' system calls and softirqs).
type setupUsage struct {
	pid    int
	last   procUsage
	phases []string
	who    string // "daemon" or "bench"
}

// daemonUsage starts measuring the current gateway (nil unless gw).
func daemonUsage(gw bool) *setupUsage {
	if !gw || benchGateway == nil || benchGateway.Proc.Cmd.Process == nil {
		return nil
	}
	u := &setupUsage{pid: benchGateway.Proc.Cmd.Process.Pid, who: "daemon"}
	var err error
	if u.last, err = readProcUsage(u.pid); err != nil {
		return nil
	}
	return u
}

// phase closes a phase of n set-ups.
func (u *setupUsage) phase(name string, n int) {
	if u == nil || n == 0 {
		return
	}
	now, err := readProcUsage(u.pid)
	if err != nil {
		return
	}
	u.phases = append(u.phases, fmt.Sprintf("%s %.0f µs CPU, %.1f context switches", name,
		float64((now.cpu-u.last.cpu).Microseconds())/float64(n), float64(now.csw-u.last.csw)/float64(n)))
	u.last = now
}

func (u *setupUsage) String() string {
	if u == nil || len(u.phases) == 0 {
		return ""
	}
	return "; " + u.who + " per set-up: " + strings.Join(u.phases, ", ")
}

// benchUsage measures the bench process itself (the mini PNS and, by
// default, the mini PAC) per set-up, on both sides: what the endpoints
// cost, to see whether they, not the gateway, limit one side.
func benchUsage() *setupUsage {
	u := &setupUsage{pid: os.Getpid(), who: "bench"}
	var err error
	if u.last, err = readProcUsage(u.pid); err != nil {
		return nil
	}
	return u
}

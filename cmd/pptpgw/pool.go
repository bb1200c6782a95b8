package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"pptpgw/nat"
	"pptpgw/rules"
)

// Server pools (issue 11): the engine's pools from the configuration, and
// `pptpgw pool`.

// enginePools is the configuration's pools as the engine takes them.
func enginePools(cfg *rules.Config) []nat.Pool {
	var out []nat.Pool
	for _, f := range cfg.Forwards {
		if !f.IsPool() {
			continue
		}
		h := f.Health.WithDefaults()
		out = append(out, nat.Pool{Port: f.Port, Members: f.Members(), Balance: f.BalanceOrDefault(),
			Health: nat.Health{Interval: h.Interval, Timeout: h.Timeout, Probe: h.Probe, Fall: h.Fall, Rise: h.Rise}})
	}
	return out
}

// poolRun is the running pools' owner for reloads (issue 8's contract):
// Apply makes the engine place and probe by cfg's pools, keeping members
// that stay (nat.Engine.ApplyPools); the probes follow on their own
// (nat.Engine.RunHealth). The pools' kernel half, the DNAT rules by member
// index and the hairpin chains, belongs to the nftables table. It owns no
// other state, so Close only stops placing new connections by pool.
type poolRun struct{ e *nat.Engine }

// Apply implements the reload contract: idempotent, no moment without
// service (connections already tracked stay where they are).
func (p poolRun) Apply(cfg *rules.Config) error { return p.e.ApplyPools(enginePools(cfg)) }

// Close drops the pools from the engine.
func (p poolRun) Close() error { return p.e.ApplyPools(nil) }

func cmdPool(args []string) int {
	fs := flag.NewFlagSet("pool", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	sock := fs.String("admin-socket", rules.DefaultAdminSocket, "admin socket of the running gateway")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw pool [--json] [--admin-socket PATH]

Lists the server pools of a running 'pptpgw run' (forwards whose 'to' is a
list): for each member its state (up/down, since when), live control
connections and calls, how many new connections it was sent and took
(setups), its calls in total, and its last probes.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	b, err := queryAdmin("pptpgw run", *sock, "pool")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw pool:", err)
		return 1
	}
	if *asJSON {
		os.Stdout.Write(b)
		return 0
	}
	var r nat.PoolsReply
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw pool: bad answer from daemon:", err)
		return 1
	}
	printPools(os.Stdout, r.Pools, time.Now())
	return 0
}

func printPools(w io.Writer, pools []nat.PoolInfo, now time.Time) {
	if len(pools) == 0 {
		fmt.Fprintln(w, "(no pools: no forward has a list of servers)")
		return
	}
	for i, p := range pools {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "port %d  balance %s  probe %s  picks with no member up %d\n", p.Port, p.Balance, p.Probe, p.NoneUp)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MEMBER\tSTATE\tSINCE\tCONNS\tCALLS\tPICKS\tSETUPS\tCALLS TOTAL\tPROBES OK/FAILED\tLAST PROBES")
		for _, m := range p.Members {
			var hist strings.Builder
			for _, pr := range m.Probes {
				if pr.OK {
					hist.WriteByte('+')
				} else {
					hist.WriteByte('-')
				}
			}
			last := ""
			if n := len(m.Probes); n > 0 && !m.Probes[n-1].OK {
				last = " (" + m.Probes[n-1].Err + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s ago\t%d\t%d\t%d\t%d\t%d\t%d/%d\t%s%s\n", m.Addr, m.State,
				now.Sub(m.Since).Round(time.Second), m.Conns, m.Calls, m.Picks, m.Setups, m.CallsTotal,
				m.ProbesOK, m.ProbesFailed, hist.String(), last)
		}
		tw.Flush()
	}
}

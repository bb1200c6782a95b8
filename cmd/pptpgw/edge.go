package main

// Routing at the edge (issue 10): the policy routes and rules and the GRE
// conntrack sysctls the daemon owns while it runs (the nftables parts ride
// in the table rules.Install programs).

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"pptpgw/rules"
)

// edge is the kernel state of issue 10 outside the nftables table, each
// piece behind Apply/Close.
type edge struct {
	router *rules.Router
	gre    rules.GRESysctls
	log    *slog.Logger
}

// startEdge installs cfg's routing tables and rules (replacing what a
// killed run left: they are found by their protocol number) and sets the
// GRE conntrack sysctls.
func startEdge(cfg *rules.Config, log *slog.Logger) (*edge, error) {
	r, err := rules.NewRouter(0)
	if err != nil {
		return nil, err
	}
	e := &edge{router: r, log: log}
	if ro, ru, err := r.Owned(); err == nil && ro+ru > 0 {
		log.Warn("found routes and rules of an earlier run (crashed or killed); replacing them",
			"routes", ro, "rules", ru, "proto", rules.RouteProtocol)
	}
	if err := e.Apply(cfg); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Apply brings routes, rules and sysctls to cfg (idempotent; reload-ready).
func (e *edge) Apply(cfg *rules.Config) error {
	plan := rules.NewRoutingPlan(cfg)
	if err := e.router.Apply(plan); err != nil {
		return fmt.Errorf("policy routing: %w", err)
	}
	if err := e.gre.Apply(cfg.ConntrackTimeouts.GRE); err != nil {
		return fmt.Errorf("conntrack_timeouts.gre: %w", err)
	}
	if len(plan.Routes)+len(plan.Rules) > 0 {
		e.log.Info("policy routing installed", "routes", len(plan.Routes), "rules", len(plan.Rules), "proto", rules.RouteProtocol)
	}
	return nil
}

// Close removes the routes and rules and restores the sysctls.
func (e *edge) Close() error {
	return errors.Join(e.router.Close(), e.gre.Close())
}

// cmdTimeouts prints every timeout in force: the daemon's own and the
// kernel conntrack's, with where each comes from.
func cmdTimeouts(args []string) int {
	fs := flag.NewFlagSet("timeouts", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "YAML config file of the gateway (default: the built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	cfg := rules.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = rules.Load(*cfgPath); err != nil {
			fmt.Fprintln(os.Stderr, "pptpgw timeouts:", err)
			return 2
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SCOPE\tTIMEOUT\tVALUE\tFROM")
	for _, l := range rules.TimeoutReport(cfg, rules.ReadKernelTimeoutBase()) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", l.Scope, l.Name, l.Value, l.Source)
	}
	w.Flush()
	return 0
}

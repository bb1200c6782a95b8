package main

// Routing at the edge (issue 10): the policy routes and rules and the GRE
// conntrack sysctls the daemon owns while it runs (the nftables parts ride
// in the table rules.Install programs).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"pptpgw/internal/fwmark"
	"pptpgw/nat"
	"pptpgw/rules"
)

// edge is the kernel state of issue 10 outside the nftables table, each
// piece behind Apply/Close.
type edge struct {
	router *rules.Router
	gre    rules.GRESysctls // StatePath: next to the admin socket
	log    *slog.Logger

	mu       sync.Mutex        // Apply, Close and the keeper's re-applies
	plan     rules.RoutingPlan // the plan in force
	stopKeep func()            // ends keepRoutes (nil: not running)
}

// attachUplinks gives the engine its uplink table and the writer of the
// uplink_pin map (with two uplinks or more; nil otherwise). It runs before
// the queue is read, so every control connection is pinned.
func attachUplinks(cfg *rules.Config, engine *nat.Engine, log *slog.Logger) (*rules.UplinkPins, error) {
	if len(cfg.Uplinks) < 2 {
		return nil, nil
	}
	ups, err := rules.ResolveUplinks(cfg)
	if err != nil {
		return nil, err
	}
	var nu []nat.Uplink
	for i, u := range ups {
		nu = append(nu, nat.Uplink{IfIndex: u.Index, PublicIP: u.Public})
		log.Info("uplink", "index", i, "interface", cfg.Uplinks[i].Interface, "public", u.Public,
			"table", cfg.UplinkTable(i), "mark", fmt.Sprintf("%#x", fwmark.Uplink(i)))
	}
	engine.SetUplinks(nu)
	pins, err := rules.NewUplinkPins(cfg.Table, 0, log)
	if err != nil {
		return nil, err
	}
	engine.SetPinner(pins)
	return pins, nil
}

// followUplinks keeps the engine in step with uplinks 1.. (uplink 0 is the
// WAN, which followWAN follows): their index when they come back, and
// their address when masqueraded.
func followUplinks(ctx context.Context, cfg *rules.Config, engine *nat.Engine, log *slog.Logger) {
	ups := engine.Uplinks()
	for i := 1; i < len(ups) && i < len(cfg.Uplinks); i++ {
		name := cfg.Uplinks[i].Interface
		w, err := rules.WatchWAN(name)
		if err != nil {
			log.Warn("cannot follow uplink changes", "uplink", name, "err", err)
			continue
		}
		ev := rules.WANEvents{
			Index: func(x int) {
				log.Info("uplink created again; following its new index", "uplink", name, "index", x)
				engine.SetUplink(i, uint32(x), netip.Addr{})
			},
			Missing: func(err error) { log.Warn("uplink or its IPv4 address is gone", "uplink", name, "err", err) },
		}
		if cfg.Uplinks[i].PublicAddress == "" {
			ev.Addr = func(a netip.Addr) {
				log.Info("uplink address changed; new control connections use it", "uplink", name, "new", a)
				engine.SetUplink(i, 0, a)
			}
		}
		go func() {
			defer w.Close()
			if err := w.Run(ctx, rules.WANState{Index: int(ups[i].IfIndex), Addr: ups[i].PublicIP}, ev); err != nil {
				log.Error("stopped following uplink changes", "uplink", name, "err", err)
			}
		}()
	}
}

// startEdge installs cfg's routing tables and rules (replacing what a
// killed run left: they are found by their protocol number), sets the GRE
// conntrack sysctls, and with several uplinks starts writing pins (the
// table exists now) and following the uplinks.
func startEdge(ctx context.Context, cfg *rules.Config, log *slog.Logger, engine *nat.Engine, pins *rules.UplinkPins) (*edge, error) {
	if pins != nil {
		go pins.Run(ctx)
		followUplinks(ctx, cfg, engine, log)
	}
	r, err := rules.NewRouter(0)
	if err != nil {
		return nil, err
	}
	e := &edge{router: r, log: log}
	// Kept next to the admin socket (one per daemon and namespace) so that
	// a start after kill -9 restores the true originals on its way out.
	e.gre.StatePath = cfg.AdminSocket + ".gre-sysctls"
	if ro, ru, err := r.Owned(); err == nil && ro+ru > 0 {
		log.Warn("found routes and rules of an earlier run (crashed or killed); replacing them",
			"routes", ro, "rules", ru, "proto", rules.RouteProtocol)
	}
	if err := e.Apply(cfg); err != nil {
		e.Close()
		return nil, err
	}
	e.keepRoutes(ctx)
	return e, nil
}

// keepRoutes applies the plan in force again after link and address
// changes: the kernel deletes the routes of an interface that goes down,
// loses its last address or is deleted (an uplink reconnecting), the pin
// tables' default routes among them.
func (e *edge) keepRoutes(ctx context.Context) {
	w, err := rules.WatchLinks(0)
	if err != nil {
		e.log.Warn("cannot follow link changes: routes the kernel deletes with an interface will not be put back", "err", err)
		return
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	e.stopKeep = func() { cancel(); <-done }
	go func() {
		defer close(done)
		defer w.Close()
		failing := false
		err := w.Run(kctx, 200*time.Millisecond, func() error {
			e.mu.Lock()
			defer e.mu.Unlock()
			err := e.router.Apply(e.plan)
			switch {
			case err != nil && !failing:
				e.log.Warn("policy routing: cannot restore routes after a link change; retrying", "err", err)
			case err == nil && failing:
				e.log.Info("policy routing restored after a link change")
			}
			failing = err != nil
			return err
		})
		if err != nil {
			e.log.Error("stopped following link changes: routes the kernel deletes will not be put back", "err", err)
		}
	}()
}

// Apply brings routes, rules and sysctls to cfg (idempotent; reload-ready).
func (e *edge) Apply(cfg *rules.Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	plan := rules.NewRoutingPlan(cfg)
	e.plan = plan // what the keeper restores, also when some of it failed now
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

// Close removes the routes and rules and restores the sysctls; what it
// could not do is logged too (runGateway defers it).
func (e *edge) Close() error {
	if e.stopKeep != nil {
		e.stopKeep()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	err := errors.Join(e.router.Close(), e.gre.Close())
	if err != nil {
		e.log.Error("could not remove all policy routing or restore the GRE sysctls; the next start replaces or restores them",
			"proto", rules.RouteProtocol, "err", err)
	}
	return err
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
		// What the daemon would refuse is not in force: say why instead.
		if err := cfg.Validate(); err != nil {
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

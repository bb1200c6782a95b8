package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/metrics"
	"pptpgw/nat"
	"pptpgw/rules"
)

func runUsage(fs *flag.FlagSet) func() {
	return func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw run --wan IFACE --lan IFACE[,IFACE] [flags]

Runs the PPTP-aware NAT gateway. Generic traffic is masqueraded by the kernel
on the WAN interface (or SNATed to public_address); only PPTP control (TCP 1723)
and GRE are queued to this daemon (NFQUEUE), which rewrites call IDs so that any
number of PPTP clients behind the one public address can call the same server.
The WAN is followed by name: if it is deleted and created again (a PPPoE or
VPN uplink reconnecting), pptpgw uses the new interface; when masquerading,
new calls follow its primary IPv4 address if that changes (DHCP, PPPoE), as
the kernel's masquerade does.

Everything the daemon needs lives in one nftables table (default "pptpgw") that
is replaced at start and removed on SIGTERM/SIGINT; other rulesets are left
alone. Needs root (CAP_NET_ADMIN). With no --config it needs only --wan/--lan.
Flags override the config file. See rules/CONFIG.md for every setting.

Flags:
`)
		fs.PrintDefaults()
	}
}

func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	wan := fs.String("wan", "", "outside interface (masquerade/SNAT happens there)")
	lan := fs.String("lan", "", "inside interface(s), comma-separated")
	cfgPath := fs.String("config", "", "YAML config file (optional)")
	adminSock := fs.String("admin-socket", "", "unix socket for 'pptpgw calls' (default "+rules.DefaultAdminSocket+")")
	table := fs.String("table", "", "nftables table name the daemon owns (default "+rules.DefaultTable+")")
	queueNum := fs.Uint("queue", 0, fmt.Sprintf("NFQUEUE number for PPTP control and GRE (default %d)", rules.Default().Queue))
	failClosed := fs.Bool("fail-closed", false, "drop queued packets while no daemon listens (default: fail-open)")
	strict := fs.Bool("strict", false, "drop malformed PPTP control messages instead of passing them")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile to this file until the daemon exits (for diagnosing load)")
	fs.Usage = runUsage(fs)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pptpgw run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	cfg := rules.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = rules.Load(*cfgPath); err != nil {
			fmt.Fprintln(os.Stderr, "pptpgw run:", err)
			return 2
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "wan":
			cfg.WAN = *wan
		case "lan":
			cfg.LAN = splitList(*lan)
		case "admin-socket":
			cfg.AdminSocket = *adminSock
		case "table":
			cfg.Table = *table
		case "queue":
			cfg.Queue = uint16(*queueNum)
		case "fail-closed":
			cfg.FailOpen = !*failClosed
		case "strict":
			cfg.Strict = *strict
		case "log-level":
			cfg.LogLevel = *logLevel
		}
	})
	if *queueNum > 65535 {
		fmt.Fprintln(os.Stderr, "pptpgw run: --queue must be 0..65535")
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw run: invalid configuration:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "pptpgw run: needs root (CAP_NET_ADMIN) to program nftables and bind NFQUEUE; try sudo")
		return 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pptpgw run: --cpuprofile:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "pptpgw run: --cpuprofile:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runGateway(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw run:", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// runGateway brings the gateway up, serves until ctx ends, and tears down
// what it installed.
func runGateway(ctx context.Context, cfg *rules.Config, log *slog.Logger) error {
	start := time.Now()
	res, err := rules.Resolve(cfg)
	if err != nil {
		return err
	}
	if cfg.IPForward {
		if err := rules.EnableIPForward(); err != nil {
			return fmt.Errorf("enable IPv4 forwarding: %w", err)
		}
	}
	engine := newEngine(cfg, res, conntrack.SystemClock{}, log)

	// Bind the queue before the rules exist so that no packet is ever
	// queued to a socket nobody reads (fail-closed would drop it).
	q, err := openQueue(cfg.Queue, engine, log)
	if err != nil {
		return err
	}
	defer q.close()
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	q.start(qctx)

	adminL, err := listenAdmin(cfg.AdminSocket)
	if err != nil {
		return err
	}
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	go serveAdmin(actx, adminL, func(cmd string) (any, error) {
		switch cmd {
		case "calls":
			return callsReply(engine, q), nil
		default:
			return nil, fmt.Errorf("unknown admin command %q (try: calls)", cmd)
		}
	}, log)

	followWAN(ctx, cfg, engine, res, log)

	plan := rules.NewPlan(cfg)
	inst, err := rules.Install(plan)
	if err != nil {
		return fmt.Errorf("install nftables table %q: %w", plan.Table, err)
	}
	defer func() {
		if err := inst.Remove(); err != nil {
			log.Error("removing nftables table failed", "table", plan.Table, "err", err)
		} else {
			log.Info("removed nftables table", "table", plan.Table)
		}
	}()
	if inst.ReplacedStale {
		log.Warn("replaced a stale nftables table left by an earlier run", "table", plan.Table)
	}
	log.Info("ready", "wan", cfg.WAN, "lan", strings.Join(cfg.LAN, ","), "public", res.PublicIP,
		"table", plan.Table, "queue", cfg.Queue, "queue_impl", inst.QueueImpl,
		"fail_open", cfg.FailOpen, "strict", cfg.Strict, "admin_socket", cfg.AdminSocket,
		"startup", time.Since(start).Round(time.Millisecond))

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "reason", context.Cause(ctx))
			return nil
		case <-tick.C:
			engine.Tick()
		}
	}
}

// followWAN keeps the engine in step with the WAN interface until ctx ends:
// its index when it is created again under its name (a PPPoE or VPN uplink
// reconnecting), and, when masquerading (no public_address), its primary
// IPv4 address, which masquerade uses, when that changes (DHCP, PPPoE).
func followWAN(ctx context.Context, cfg *rules.Config, engine *nat.Engine, res *rules.Resolved, log *slog.Logger) {
	w, err := rules.WatchWAN(cfg.WAN)
	if err != nil {
		log.Warn("cannot follow WAN interface changes; keeping the interface and address found at start",
			"wan", cfg.WAN, "public", res.PublicIP, "err", err)
		return
	}
	masq := !cfg.PublicAddr().IsValid()
	ev := rules.WANEvents{
		Index: func(i int) {
			log.Info("WAN interface created again; following its new index", "wan", cfg.WAN,
				"old_index", engine.WANIndex(), "index", i)
			engine.SetWANIndex(uint32(i))
		},
		Missing: func(err error) {
			log.Warn("WAN interface or its IPv4 address is gone; keeping the last ones for new calls",
				"wan", cfg.WAN, "public", engine.PublicIP(), "err", err)
		},
	}
	if masq {
		ev.Addr = func(a netip.Addr) {
			old := engine.PublicIP()
			if err := engine.SetPublicIP(a); err != nil {
				log.Error("WAN address change", "err", err)
				return
			}
			log.Info("WAN address changed; new control connections use it", "old", old, "new", a)
		}
	}
	go func() {
		defer w.Close()
		if err := w.Run(ctx, rules.WANState{Index: int(res.WANIndex), Addr: res.PublicIP}, ev); err != nil {
			log.Error("stopped following WAN interface changes", "err", err)
		}
	}()
}

// newEngine is where the configuration reaches the engine: every setting
// the engine runs with comes from cfg here (TestNewEngineGetsConfig).
func newEngine(cfg *rules.Config, res *rules.Resolved, clk conntrack.Clock, log *slog.Logger) *nat.Engine {
	var fwds []nat.Forward
	for _, f := range cfg.Forwards {
		fwds = append(fwds, nat.Forward{Port: f.Port, InsideIP: f.Addr()})
	}
	return nat.NewEngine(nat.EngineConfig{
		PublicIP: res.PublicIP,
		WANIf:    res.WANIndex,
		LANIfs:   res.LANIndex,
		Strict:   cfg.Strict,
		Timeouts: cfg.Timeouts,
		Limits:   cfg.Limits,
		MaxCalls: cfg.MaxCalls,
		Forwards: fwds,
		Logger:   log,
	}, clk)
}

// callsReply answers the admin command "calls": the engine's calls and the
// counters of the engine and the queue, from one metrics snapshot.
func callsReply(e *nat.Engine, q *queue) nat.CallsReply {
	return nat.CallsReply{Calls: e.Calls(), Counters: metrics.Collect(e, q.conn).Map()}
}

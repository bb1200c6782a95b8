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
	"pptpgw/nat/nfq"
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
is replaced at start; other rulesets are left alone. No inside address leaves
the WAN untranslated while the daemon is not running: after a crash the table
stays and drops GRE; on SIGTERM/SIGINT it is reduced to one rule that drops
GRE forwarded to the WAN (logged; the next start replaces it, 'nft delete
table ip pptpgw' removes it). SIGHUP (or 'pptpgw reload') re-reads the config
file, the flags still overriding it, and applies it without dropping a call;
an invalid one is refused and logged. The call table is saved to state_file
(--state-file) on SIGTERM/SIGINT and every 10 s, and restored at start, so
calls survive a restart or upgrade. Needs root
(CAP_NET_ADMIN). With no --config it needs only --wan/--lan. Flags override
the config file. See rules/CONFIG.md for every setting.

Flags:
`)
		fs.PrintDefaults()
	}
}

func cmdRun(args []string) int {
	// From the first instruction on, SIGHUP must not kill the daemon (its
	// default action): it would stop translating with its table in place.
	// runGateway reloads the configuration on it (reload.go). SIGPIPE
	// (a log reader gone: stderr is a broken pipe) would kill it too.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	signal.Ignore(syscall.SIGPIPE)

	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	wan := fs.String("wan", "", "outside interface (masquerade/SNAT happens there)")
	lan := fs.String("lan", "", "inside interface(s), comma-separated")
	cfgPath := fs.String("config", "", "YAML config file (optional)")
	adminSock := fs.String("admin-socket", "", "unix socket for 'pptpgw calls' (default "+rules.DefaultAdminSocket+")")
	table := fs.String("table", "", "nftables table name the daemon owns (default "+rules.DefaultTable+")")
	queueNum := fs.Uint("queue", 0, fmt.Sprintf("NFQUEUE number for PPTP control and GRE (default %d)", rules.Default().Queue))
	failClosed := fs.Bool("fail-closed", false, "drop PPTP control (TCP 1723) while no daemon listens (default: let it pass, masqueraded; GRE is dropped then either way)")
	strict := fs.Bool("strict", false, "drop malformed PPTP control messages instead of passing them")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this TCP address, e.g. 127.0.0.1:9247 (default: the config's metrics key; off)")
	queuesN := fs.Int("queues", -1, "number of NFQUEUE queues and readers from --queue on (default: one per CPU)")
	grePath := fs.String("gre-path", "", "GRE of established calls: kernel (nftables maps), userspace (NFQUEUE) or auto (default: kernel if the kernel runs it)")
	stateFile := fs.String("state-file", "", "where the call table is saved and restored from, \"\" for none (default "+rules.DefaultStateFile+")")
	queueWait := addQueueWaitFlag(fs) // issue 12, setups
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile to this file until the daemon exits (for diagnosing load)")
	memProfile := fs.String("memprofile", "", "write a Go heap profile to this file at every admin command memory (for diagnosing memory; issue 12)")
	fs.Usage = runUsage(fs)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pptpgw run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	if *queueNum > 65535 {
		fmt.Fprintln(os.Stderr, "pptpgw run: --queue must be 0..65535")
		return 2
	}
	// The flags given override the file, at start and at every reload.
	src := configSource{path: *cfgPath, flags: func(cfg *rules.Config) {
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
			case "state-file":
				cfg.StateFile = *stateFile
			case "metrics":
				cfg.Metrics = *metricsAddr
			case "gre-path":
				cfg.GREPath = *grePath
			case "queues":
				cfg.Queues = *queuesN
			case "queue-wait":
				cfg.QueueWait = *queueWait
			}
		})
	}}
	cfg, err := src.load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw run:", err)
		return 2
	}
	level := new(slog.LevelVar)
	level.Set(cfg.SlogLevel())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
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
	setMemProfile(*memProfile) // issue 12: memory.go
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runGateway(ctx, cfg, log, hup, src, level); err != nil {
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

// runGateway brings the gateway up, serves until ctx ends, and leaves the
// fail-safe table (rules.Installed.ReduceToFailsafe) behind. A SIGHUP on
// hup reloads the configuration from src (reload.go); the call table is
// restored from and saved to state_file (state.go).
//
// The order keeps inside addresses off the WAN at every step: the queue is
// bound before the rules exist, so whatever they (or a table left by an
// earlier run) queue reaches this daemon; the table is installed, replacing
// a leftover in the same batch, before IPv4 forwarding is switched on; on
// the way out the table is reduced to its fail-safe rule while the queue is
// still being read, and only then is the queue closed.
func runGateway(ctx context.Context, cfg *rules.Config, log *slog.Logger, hup <-chan os.Signal, src configSource, level *slog.LevelVar) error {
	start := time.Now()
	res, err := rules.Resolve(cfg)
	if err != nil {
		return err
	}
	if err := resolveGREPath(cfg, log); err != nil { // kernel fast path (issue 12)
		return err
	}
	engine := newEngine(cfg, res, conntrack.SystemClock{}, log)
	pins, err := attachUplinks(cfg, engine, log) // several uplinks (issue 10)
	if err != nil {
		return err
	}
	rl := newReloader(cfg, src, log)
	state := &stateKeeper{engine: engine, owner: cfg.StateOwner(), path: func() string { return rl.current().StateFile }, log: log}
	state.restore()

	q, err := openQueues(cfg.Queue, cfg.EffectiveQueues(), cfg.QueueLen, nfqWait(cfg.QueueWait), engine, log) // several readers: issue 12
	if err != nil {
		return err
	}
	defer q.close()
	// Not derived from ctx: the reader must keep answering while the
	// deferred reduction to the fail-safe table runs on the way out (the
	// defers run in reverse: reduce, then qcancel, then q.close).
	qctx, qcancel := context.WithCancel(context.Background())
	defer qcancel()
	q.start(qctx)

	shape, err := startShaping(cfg, log) // shaping (issue 9): qos.go
	if err != nil {
		return err
	}
	defer shape.stop(log)

	adminL, err := listenAdminGroup(cfg.AdminSocket, cfg.AdminGroup)
	if err != nil {
		return err
	}
	gm, err := startGatewayMetrics(ctx, cfg, engine, q, log) // issue 8 (metrics_http.go)
	if err != nil {
		return err
	}
	gm.Exp.Sources.Add(rl) // reloads_total
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	go serveAdmin(actx, adminL, func(cmd string) (any, error) {
		switch cmd {
		case "calls":
			return callsReply(engine, q, rl), nil
		case "reload":
			if err := rl.reload("admin socket"); err != nil {
				return nil, err
			}
			return reloadReply{Reloaded: true}, nil
		case "events":
			return eventsStream(engine), nil
		case "qos": // shaping (issue 9)
			return shape.reply()
		case "pool": // pool (issue 11)
			return nat.PoolsReply{Pools: engine.Pools()}, nil
		case "memory": // issue 12: memory.go
			return memoryProfiled(memProfileFile)
		default:
			return nil, fmt.Errorf("unknown admin command %q (try: calls, reload, events, qos, pool, memory)", cmd)
		}
	}, log)

	followWAN(ctx, cfg, engine, res, log)
	if err := (poolRun{engine}).Apply(cfg); err != nil { // pool (issue 11): pool.go; reload calls it too
		return err
	}
	go engine.RunHealth(ctx, nil) // pool (issue 11): probes of pool members

	plan := rules.NewPlan(cfg)
	adoptGRE(engine, &plan, log) // kernel fast path (issue 12)
	// Saved once more on the way out, after the reduction to the fail-safe
	// table below (defers run in reverse): no packet reaches the engine then.
	defer state.save("shutdown")
	inst, err := rules.Install(plan)
	if err != nil {
		return fmt.Errorf("install nftables table %q: %w", plan.Table, err)
	}
	defer func() {
		if err := inst.ReduceToFailsafe(); err != nil {
			// The full table stays: with the queue closed it drops GRE
			// like after a crash, and keeps masquerading the rest.
			log.Error("could not reduce the nftables table to its fail-safe rule; left it in place",
				"table", plan.Table, "err", err)
			return
		}
		log.Info("left the fail-safe nftables table: it drops GRE forwarded to the WAN until the next start",
			"table", plan.Table, "ruleset", rules.FailsafeRuleset(plan.Table, plan.WAN),
			"remove_with", "nft delete table ip "+plan.Table)
	}()
	edge, err := startEdge(ctx, cfg, log, engine, pins) // routing at the edge (issue 10)
	if err != nil {
		return err
	}
	defer edge.Close()
	switch {
	case inst.ReplacedStale:
		log.Warn("replaced a stale nftables table left by an earlier run (crashed or killed)", "table", plan.Table)
	case inst.ReplacedFailsafe:
		log.Info("replaced the fail-safe table left by the last clean stop", "table", plan.Table)
	}
	fp := newFastPath(qctx, engine, cfg, log) // kernel fast path and queues (issue 12): Apply/Close for reload
	fp.inst = inst                            // kfeat (issue 12): which classes and policers have chains
	if err := fp.Apply(cfg); err != nil {
		return err
	}
	defer fp.Close() // stops the flusher before the table is reduced
	// Registered last of the state a reload changes, so it runs first on
	// the way out: it waits for a reload in flight (from the admin socket,
	// still served) and refuses the next, so no applier runs on the fast
	// path, edge or table while they are being closed or reduced.
	defer rl.close()
	if cfg.IPForward {
		if err := rules.EnableIPForward(); err != nil {
			return fmt.Errorf("enable IPv4 forwarding: %w", err)
		}
	}
	// The appliers of a reload, in order (reload.go): the engine's
	// settings, the table (sets and their elements kept), then what each
	// feature owns in the kernel.
	rl.add("engine", engineApplier(engine))
	rl.add("nftables", nftApplier(inst))
	rl.add("daemon", miscApplier(level))
	rl.add("shaping", shape.Apply)         // issue 9: HTB trees, the engine's classes
	rl.add("pools", poolRun{engine}.Apply) // issue 11
	rl.add("edge", edge.Apply)             // issue 10: routing, ct timeouts, uplink pins
	rl.add("fastpath", fp.Apply)           // issue 12: gre_path and queues are fixed
	rl.add("metrics", gm.Apply)            // /metrics address
	rl.add("admin_group", adminGroup{cfg.AdminSocket}.Apply)
	rl.add("queue_wait", queueWaitApplier(cfg.QueueWait).Apply)
	go state.run(actx)
	log.Info("ready", "wan", cfg.WAN, "lan", strings.Join(cfg.LAN, ","), "public", res.PublicIP,
		"table", plan.Table, "queue", cfg.Queue, "queues", cfg.EffectiveQueues(), "queue_wait", cfg.QueueWait, "queue_impl", inst.QueueImpl,
		"queue_len", cfg.QueueLen, "gre_path", cfg.GREPath, "fail_open", cfg.FailOpen, "strict", cfg.Strict, "admin_socket", cfg.AdminSocket,
		"startup", time.Since(start).Round(time.Millisecond))

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	drops := time.NewTicker(kernelDropsEvery)
	defer drops.Stop()
	var last nfq.KernelStats
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "reason", context.Cause(ctx))
			return nil
		case <-hup:
			_ = rl.reload("SIGHUP") // logged and counted; refused leaves everything as it was
		case <-tick.C:
			engine.Tick()
		case <-drops.C:
			last = q.warnKernelDrops(last)
		}
	}
}

// kernelDropsEvery is how often the daemon reads the kernel's queue drop
// counters to warn about new drops: at most one log line per period, and
// far more often than the kernel's 32-bit counters can wrap.
const kernelDropsEvery = 10 * time.Second

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
	return nat.NewEngine(engineConfig(cfg, res, log), clk)
}

// engineConfig is the engine's configuration from cfg, at start and at
// every reload.
func engineConfig(cfg *rules.Config, res *rules.Resolved, log *slog.Logger) nat.EngineConfig {
	var fwds []nat.Forward
	for _, f := range cfg.Forwards {
		if f.IsPool() {
			continue // pool (issue 11): enginePools
		}
		fwds = append(fwds, nat.Forward{Port: f.Port, InsideIP: f.Addr()})
	}
	return nat.EngineConfig{
		PublicIP: res.PublicIP,
		WANIf:    res.WANIndex,
		LANIfs:   res.LANIndex,
		Strict:   cfg.Strict,
		Timeouts: cfg.Timeouts,
		Limits:   cfg.Limits,
		MaxCalls: cfg.MaxCalls,
		Forwards: fwds,
		Logger:   log,
		QoS:      engineQoS(cfg),   // shaping (issue 9): qos.go
		Pools:    enginePools(cfg), // pool (issue 11), pool.go

		KernelMaps: greMaps(cfg), // kernel fast path (issue 12)
	}
}

// callsReply answers the admin command "calls": the engine's calls and the
// counters of the engine and the queue, from one metrics snapshot.
func callsReply(e *nat.Engine, q metrics.Source, more ...metrics.Source) nat.CallsReply {
	return nat.CallsReply{Calls: e.Calls(), Counters: metrics.Collect(append([]metrics.Source{e, q}, more...)...).Map()}
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"pptpgw/pptp"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/tun"
)

func serveUsage(fs *flag.FlagSet) func() {
	return func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw serve --pool A-B --secrets FILE [flags]

Runs a PPTP server (RFC 2637 PAC) entirely in userspace: control channel on
TCP 1723, enhanced GRE on a raw socket, PPP with MS-CHAPv2 and MPPE-128
(required by default, what Windows clients expect), and one shared TUN device
(default %q) that carries the server's tunnel address and a /32 route per
session. Needs root (CAP_NET_ADMIN for the TUN, CAP_NET_RAW for GRE).

The server's own tunnel address (--local-ip) defaults to the address just below
the pool, is announced to clients in IPCP and answers ping. Users come from a
pppd chap-secrets file (refused when world-readable); a fixed address in its
fourth column is honoured. To reach hosts behind the server, enable
net.ipv4.ip_forward and route the pool back to this host.

Flags override the config file. Config keys (YAML, unknown keys are errors):
  listen, pool, local_ip, dns: [..], split_routes: [..] (pushed via DHCPINFORM),
  secrets, server_name, auth: [mschapv2|chap-md5|pap], encryption: required|optional,
  mppe_bits: [40|56|128], mppe_mode: any|stateless|stateful, mru, tun, admin_socket,
  admin_group, metrics, log_level, limits: {max_conns, max_conns_per_source, max_sessions, max_calls_per_conn,
  unauthenticated_calls_per_conn, unauthenticated_calls_per_source},
  timeouts: {first_message, call_request, auth, echo_idle, echo_timeout, ppp_echo},
  gre: {window, reorder_timeout, reorder_max, ack_delay}

Before authentication (defaults in brackets): a connection must send SCCRQ
within timeouts.first_message [10s] and a call within timeouts.call_request
[10s]; a call must finish PPP authentication within timeouts.auth [15s]; calls
not yet authenticated are capped per connection [4] and per source IP [256];
an address and a max_sessions slot are given only after authentication. When
max_conns is reached, the oldest unauthenticated connection makes room (one of
the new connection's own source first). Warnings a flood can trigger are
logged once per 10s per message, then as one line with the count left out.

Example:
  pptpgw serve --pool 10.8.0.10-10.8.0.200 --secrets /etc/ppp/chap-secrets

Flags:
`, pptp.DefaultTUN)
		fs.PrintDefaults()
	}
}

func cmdServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "TCP listen address for the control channel: IP, IP:PORT or :PORT (default :1723)")
	pool := fs.String("pool", "", "client address pool A-B, e.g. 10.8.0.10-10.8.0.200 (required)")
	secretsPath := fs.String("secrets", "", "pppd chap-secrets file (required; not world-readable)")
	cfgPath := fs.String("config", "", "YAML config file (optional)")
	localIP := fs.String("local-ip", "", "server's tunnel address (default: the address below the pool)")
	adminSock := fs.String("admin-socket", "", "unix socket for 'pptpgw sessions' (default "+pptp.DefaultAdminSocket+")")
	tunName := fs.String("tun", "", "TUN device name (default "+pptp.DefaultTUN+")")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics on this TCP address, e.g. 127.0.0.1:9248 (default: the config's metrics key; off)")
	fs.Usage = serveUsage(fs)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pptpgw serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	// From here on SIGHUP reloads the configuration (serve_reload.go)
	// instead of killing the server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "pptpgw serve: "+format+"\n", a...)
		return 1
	}
	src := serveSource{path: *cfgPath, flags: func(sc *pptp.FileConfig) {
		for _, o := range []struct {
			flag string
			dst  *string
		}{
			{*listen, &sc.Listen}, {*pool, &sc.Pool}, {*secretsPath, &sc.Secrets}, {*localIP, &sc.LocalIP},
			{*adminSock, &sc.AdminSocket}, {*tunName, &sc.TUN}, {*logLevel, &sc.LogLevel}, {*metricsAddr, &sc.Metrics},
		} {
			if o.flag != "" {
				*o.dst = o.flag
			}
		}
	}}
	sc, cfg, err := src.load()
	if err != nil {
		return fail("%v", err)
	}
	level, _ := sc.Level() // checked by load
	if os.Geteuid() != 0 {
		return fail("must run as root: the TUN device needs CAP_NET_ADMIN and the GRE socket CAP_NET_RAW")
	}
	lv := new(slog.LevelVar)
	lv.Set(level)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sr := &serveReloader{src: src, log: log, level: lv, counters: newReloadCounters(), admin: sc.AdminSocket, tun: sc.TUN,
		metrics: sc.Metrics, adminGroup: sc.AdminGroup}
	if err := runServe(ctx, cfg, sc.TUN, sc.AdminSocket, serveObs{sc.Metrics, sc.AdminGroup}, log, sr, hup); err != nil {
		return fail("%v", err)
	}
	return 0
}

// runServe opens the TUN and the GRE socket and serves until ctx ends.
func runServe(ctx context.Context, cfg pptp.Config, tunName, adminSock string, obs serveObs, log *slog.Logger, sr *serveReloader, hup <-chan os.Signal) error {
	mru := int(cfg.MRU)
	if mru == 0 {
		mru = ppp.DefaultMRU
	}
	// The TUN MTU is the largest IP packet a session carries: MRU minus the MPPE
	// header and encrypted protocol field, so the kernel fragments or sends
	// "fragmentation needed" instead of us dropping oversize packets.
	dev, err := tun.Open(tunName, mru-4)
	if err != nil {
		return err
	}
	defer dev.Close()
	greConn, err := gre.ListenRaw(netip.Addr{})
	if err != nil {
		return fmt.Errorf("raw GRE socket: %w", err)
	}
	srv, err := pptp.NewServer(cfg, greConn, dev)
	if err != nil {
		greConn.Close()
		return err
	}
	if err := dev.AddAddr(srv.Config().LocalIP); err != nil {
		greConn.Close()
		return err
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && strings.TrimSpace(string(b)) != "1" {
		log.Warn("net.ipv4.ip_forward is 0: clients reach only this host's addresses")
	}
	adminL, err := listenAdminGroup(adminSock, obs.AdminGroup)
	if err != nil {
		greConn.Close()
		return err
	}
	if err := startServeMetrics(ctx, obs.Metrics, srv, log, sr); err != nil {
		adminL.Close()
		greConn.Close()
		return err
	}
	sr.srv = srv
	go sr.run(ctx, hup)
	go serveAdmin(ctx, adminL, func(cmd string) (any, error) {
		switch cmd {
		case "sessions":
			return pptp.AdminReply{Sessions: srv.Sessions(), Counters: srv.Counters()}, nil
		case "reload":
			if err := sr.reload("admin socket"); err != nil {
				return nil, err
			}
			return reloadReply{Reloaded: true}, nil
		}
		return nil, fmt.Errorf("unknown admin command %q (try: sessions, reload)", cmd)
	}, log)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-time.After(50 * time.Millisecond):
	}
	log.Info("ready", "listen", srv.Config().Listen, "tun", dev.Name(), "local_ip", srv.Config().LocalIP,
		"admin_socket", adminSock)
	err = <-errc
	log.Info("stopped")
	return err
}

func cmdSessions(args []string) int {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	adminSock := fs.String("admin-socket", pptp.DefaultAdminSocket, "unix socket of the running 'pptpgw serve'")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pptpgw sessions [--json] [--admin-socket PATH]\n\nLists the live sessions of a running 'pptpgw serve'.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	b, err := queryAdmin("pptpgw serve", *adminSock, "sessions")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pptpgw sessions: %v\n", err)
		return 1
	}
	var rep pptp.AdminReply
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintf(os.Stderr, "pptpgw sessions: bad answer from the server: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tPEER\tCALL IDS (our/peer)\tADDRESS\tSTATE\tAUTH\tENCRYPTION\tBYTES IN\tBYTES OUT\tUPTIME\tRATE\tRATE DROPS IN/OUT")
	for _, s := range rep.Sessions {
		rate := s.Rate // shaping (issue 9)
		if rate == "" {
			rate = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d/%d\n", s.User, s.Peer, s.LocalCallID, s.PeerCallID,
			s.Address, s.State, s.Auth, s.Encryption, s.BytesIn, s.BytesOut,
			time.Duration(s.UptimeSeconds*float64(time.Second)).Round(time.Second).String(), rate, s.RateDropsIn, s.RateDropsOut)
	}
	tw.Flush()
	fmt.Printf("%d session(s)\n", len(rep.Sessions))
	return 0
}

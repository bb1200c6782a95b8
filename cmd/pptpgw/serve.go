package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/pptp"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/mppe"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/secrets"
	"pptpgw/pptp/tun"
)

// serveConfig is the YAML config of `pptpgw serve` (unknown keys are errors).
type serveConfig struct {
	Listen      string   `yaml:"listen"`
	Pool        string   `yaml:"pool"`
	LocalIP     string   `yaml:"local_ip"`
	DNS         []string `yaml:"dns"`
	SplitRoutes []string `yaml:"split_routes"`
	Secrets     string   `yaml:"secrets"`
	ServerName  string   `yaml:"server_name"`
	Auth        []string `yaml:"auth"`       // mschapv2, chap-md5, pap
	Encryption  string   `yaml:"encryption"` // required (default) | optional
	MPPEBits    []int    `yaml:"mppe_bits"`  // 40, 56, 128
	MPPEMode    string   `yaml:"mppe_mode"`  // any (default) | stateless | stateful
	MRU         uint16   `yaml:"mru"`
	TUN         string   `yaml:"tun"`
	AdminSocket string   `yaml:"admin_socket"`
	LogLevel    string   `yaml:"log_level"`
	Limits      struct {
		MaxConns          int `yaml:"max_conns"`
		MaxConnsPerSource int `yaml:"max_conns_per_source"`
		MaxSessions       int `yaml:"max_sessions"`
		MaxCallsPerConn   int `yaml:"max_calls_per_conn"`
	} `yaml:"limits"`
	Timeouts struct {
		FirstMessage time.Duration `yaml:"first_message"`
		EchoIdle     time.Duration `yaml:"echo_idle"`
		EchoTimeout  time.Duration `yaml:"echo_timeout"`
		PPPEcho      time.Duration `yaml:"ppp_echo"`
	} `yaml:"timeouts"`
	GRE struct {
		Window         uint16        `yaml:"window"`
		ReorderTimeout time.Duration `yaml:"reorder_timeout"`
		ReorderMax     int           `yaml:"reorder_max"`
		AckDelay       time.Duration `yaml:"ack_delay"`
	} `yaml:"gre"`
}

const defaultTUN = "pptpgw0"

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
  log_level, limits: {max_conns, max_conns_per_source, max_sessions, max_calls_per_conn},
  timeouts: {first_message, echo_idle, echo_timeout, ppp_echo},
  gre: {window, reorder_timeout, reorder_max, ack_delay}

Example:
  pptpgw serve --pool 10.8.0.10-10.8.0.200 --secrets /etc/ppp/chap-secrets

Flags:
`, defaultTUN)
		fs.PrintDefaults()
	}
}

// loadServeConfig reads a YAML config strictly (unknown fields are errors).
func loadServeConfig(path string) (*serveConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c serveConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// toServerConfig validates everything that needs no privileges.
func (sc *serveConfig) toServerConfig() (pptp.Config, error) {
	var cfg pptp.Config
	cfg.Listen = sc.Listen
	if sc.Pool == "" {
		return cfg, errors.New("no pool: set --pool A-B (e.g. 10.8.0.10-10.8.0.200)")
	}
	var err error
	if cfg.PoolStart, cfg.PoolEnd, err = pptp.ParseRange(sc.Pool); err != nil {
		return cfg, err
	}
	if sc.LocalIP != "" {
		if cfg.LocalIP, err = netip.ParseAddr(sc.LocalIP); err != nil || !cfg.LocalIP.Is4() {
			return cfg, fmt.Errorf("local IP %q: want an IPv4 address", sc.LocalIP)
		}
	}
	for _, d := range sc.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			return cfg, fmt.Errorf("dns %q: want an IPv4 address", d)
		}
		cfg.DNS = append(cfg.DNS, a)
	}
	for _, r := range sc.SplitRoutes {
		p, err := netip.ParsePrefix(r)
		if err != nil || !p.Addr().Is4() {
			return cfg, fmt.Errorf("split route %q: want an IPv4 prefix", r)
		}
		cfg.SplitRoutes = append(cfg.SplitRoutes, p.Masked())
	}
	for _, a := range sc.Auth {
		switch strings.ToLower(a) {
		case "mschapv2", "ms-chapv2", "mschap-v2":
			cfg.Auth = append(cfg.Auth, ppp.AuthMSCHAPv2)
		case "chap-md5", "chap":
			cfg.Auth = append(cfg.Auth, ppp.AuthCHAPMD5)
		case "pap":
			cfg.Auth = append(cfg.Auth, ppp.AuthPAP)
		default:
			return cfg, fmt.Errorf("auth %q: want mschapv2, chap-md5 or pap", a)
		}
	}
	switch sc.Encryption {
	case "", "required":
	case "optional":
		cfg.AllowUnencrypted = true
	default:
		return cfg, fmt.Errorf("encryption %q: want required or optional", sc.Encryption)
	}
	if !cfg.AllowUnencrypted {
		for _, m := range cfg.Auth {
			if m != ppp.AuthMSCHAPv2 {
				return cfg, fmt.Errorf("auth %s yields no MPPE keys: set encryption: optional to allow it", m)
			}
		}
	}
	for _, b := range sc.MPPEBits {
		switch b {
		case 40:
			cfg.MPPEStrengths = append(cfg.MPPEStrengths, mppe.Bits40)
		case 56:
			cfg.MPPEStrengths = append(cfg.MPPEStrengths, mppe.Bits56)
		case 128:
			cfg.MPPEStrengths = append(cfg.MPPEStrengths, mppe.Bits128)
		default:
			return cfg, fmt.Errorf("mppe_bits %d: want 40, 56 or 128", b)
		}
	}
	switch sc.MPPEMode {
	case "", "any":
	case "stateless":
		cfg.StatelessOnly = true
	case "stateful":
		cfg.StatefulOnly = true
	default:
		return cfg, fmt.Errorf("mppe_mode %q: want any, stateless or stateful", sc.MPPEMode)
	}
	if sc.MRU != 0 && (sc.MRU < 576 || sc.MRU > 1500) {
		return cfg, fmt.Errorf("mru %d: want 576..1500", sc.MRU)
	}
	cfg.MRU = sc.MRU
	cfg.ServerName = sc.ServerName
	cfg.MaxConns, cfg.MaxConnsPerSource = sc.Limits.MaxConns, sc.Limits.MaxConnsPerSource
	cfg.MaxSessions, cfg.MaxCallsPerConn = sc.Limits.MaxSessions, sc.Limits.MaxCallsPerConn
	cfg.FirstMessageTimeout, cfg.EchoIdle = sc.Timeouts.FirstMessage, sc.Timeouts.EchoIdle
	cfg.EchoTimeout, cfg.PPPEcho = sc.Timeouts.EchoTimeout, sc.Timeouts.PPPEcho
	cfg.GRE = gre.Config{RecvWindow: sc.GRE.Window, ReorderTimeout: sc.GRE.ReorderTimeout,
		ReorderMax: sc.GRE.ReorderMax, AckDelay: sc.GRE.AckDelay}
	// Validate the pool/local IP combination now (NewServer repeats it).
	probe := cfg
	probe.Secrets = &secrets.Secrets{}
	if _, err := pptp.NewServer(probe, nil, nil); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func cmdServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "TCP listen address for the control channel (default :1723)")
	pool := fs.String("pool", "", "client address pool A-B, e.g. 10.8.0.10-10.8.0.200 (required)")
	secretsPath := fs.String("secrets", "", "pppd chap-secrets file (required; not world-readable)")
	cfgPath := fs.String("config", "", "YAML config file (optional)")
	localIP := fs.String("local-ip", "", "server's tunnel address (default: the address below the pool)")
	adminSock := fs.String("admin-socket", "", "unix socket for 'pptpgw sessions' (default "+pptp.DefaultAdminSocket+")")
	tunName := fs.String("tun", "", "TUN device name (default "+defaultTUN+")")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	fs.Usage = serveUsage(fs)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pptpgw serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "pptpgw serve: "+format+"\n", a...)
		return 1
	}
	sc := &serveConfig{}
	if *cfgPath != "" {
		var err error
		if sc, err = loadServeConfig(*cfgPath); err != nil {
			return fail("config: %v", err)
		}
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{
		{*listen, &sc.Listen}, {*pool, &sc.Pool}, {*secretsPath, &sc.Secrets}, {*localIP, &sc.LocalIP},
		{*adminSock, &sc.AdminSocket}, {*tunName, &sc.TUN}, {*logLevel, &sc.LogLevel},
	} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	level, err := parseLevel(sc.LogLevel)
	if err != nil {
		return fail("log level %q: want debug, info, warn or error", sc.LogLevel)
	}
	cfg, err := sc.toServerConfig()
	if err != nil {
		return fail("%v", err)
	}
	if sc.Secrets == "" {
		return fail("no secrets file: set --secrets FILE (pppd chap-secrets format)")
	}
	sec, err := secrets.Load(sc.Secrets)
	if err != nil {
		return fail("%v", err)
	}
	cfg.Secrets = sec
	if os.Geteuid() != 0 {
		return fail("must run as root: the TUN device needs CAP_NET_ADMIN and the GRE socket CAP_NET_RAW")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log
	if sc.TUN == "" {
		sc.TUN = defaultTUN
	}
	if sc.AdminSocket == "" {
		sc.AdminSocket = pptp.DefaultAdminSocket
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runServe(ctx, cfg, sc.TUN, sc.AdminSocket, log); err != nil {
		return fail("%v", err)
	}
	return 0
}

// runServe opens the TUN and the GRE socket and serves until ctx ends.
func runServe(ctx context.Context, cfg pptp.Config, tunName, adminSock string, log *slog.Logger) error {
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
	adminL, err := listenAdmin(adminSock)
	if err != nil {
		greConn.Close()
		return err
	}
	go serveAdmin(ctx, adminL, func(cmd string) (any, error) {
		if cmd != "sessions" {
			return nil, fmt.Errorf("unknown admin command %q (try: sessions)", cmd)
		}
		return pptp.AdminReply{Sessions: srv.Sessions(), Counters: srv.Counters()}, nil
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
	fmt.Fprintln(tw, "USER\tPEER\tCALL IDS (our/peer)\tADDRESS\tSTATE\tAUTH\tENCRYPTION\tBYTES IN\tBYTES OUT\tUPTIME")
	for _, s := range rep.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.User, s.Peer, s.LocalCallID, s.PeerCallID,
			s.Address, s.State, s.Auth, s.Encryption, s.BytesIn, s.BytesOut,
			time.Duration(s.UptimeSeconds*float64(time.Second)).Round(time.Second).String())
	}
	tw.Flush()
	fmt.Printf("%d session(s)\n", len(rep.Sessions))
	return 0
}

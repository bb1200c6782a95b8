package pptp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/internal/logging"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/mppe"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/wire"
	"pptpgw/qos"
)

// DefaultTUN is the name of the server's shared TUN device.
const DefaultTUN = "pptpgw0"

// FileConfig is the YAML config file of `pptpgw serve` (the reference is in
// pptp/README.md; unknown keys are errors). Its fields are the file's
// strings and numbers as written: Config turns them into a validated Config.
// Flags of the command override fields before that.
type FileConfig struct {
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
	// operations (issue 8): /metrics address ("" = off), admin socket group.
	Metrics    string `yaml:"metrics"`
	AdminGroup string `yaml:"admin_group"`
	Limits     struct {
		MaxConns          int `yaml:"max_conns"`
		MaxConnsPerSource int `yaml:"max_conns_per_source"`
		MaxSessions       int `yaml:"max_sessions"`
		MaxCallsPerConn   int `yaml:"max_calls_per_conn"`
		// Calls that have not finished PPP authentication yet.
		UnauthCallsPerConn   int `yaml:"unauthenticated_calls_per_conn"`
		UnauthCallsPerSource int `yaml:"unauthenticated_calls_per_source"`
		// Shaping (issue 9): the rate of each session, each direction.
		SessionRate qos.Rate `yaml:"session_rate"`
	} `yaml:"limits"`
	Timeouts struct {
		FirstMessage time.Duration `yaml:"first_message"`
		CallRequest  time.Duration `yaml:"call_request"`
		Auth         time.Duration `yaml:"auth"`
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

	// Shaping (issue 9): per-user overrides of limits.session_rate.
	Users map[string]UserConfig `yaml:"users"`
}

// The spellings of auth and mppe_bits in the file.
var (
	authNames = map[string]ppp.AuthMethod{
		"mschapv2": ppp.AuthMSCHAPv2, "ms-chapv2": ppp.AuthMSCHAPv2, "mschap-v2": ppp.AuthMSCHAPv2,
		"chap-md5": ppp.AuthCHAPMD5, "chap": ppp.AuthCHAPMD5,
		"pap": ppp.AuthPAP,
	}
	mppeBits = map[int]mppe.Strength{40: mppe.Bits40, 56: mppe.Bits56, 128: mppe.Bits128}
)

// LoadFileConfig reads a YAML config strictly (unknown fields are errors).
// Errors name the file and, for a bad key or value, the line.
func LoadFileConfig(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c FileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Level returns the parsed log_level (info when unset).
func (fc *FileConfig) Level() (slog.Level, error) {
	l, err := logging.ParseLevel(fc.LogLevel)
	if err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", fc.LogLevel)
	}
	return l, nil
}

// Config validates everything that needs no privileges and returns the
// server's Config (without Secrets and Logger, which the caller opens).
func (fc *FileConfig) Config() (Config, error) {
	var cfg Config
	var err error
	if cfg.Listen, err = ListenAddr(fc.Listen); err != nil {
		return cfg, err
	}
	if fc.Pool == "" {
		return cfg, errors.New("no pool: set --pool A-B (e.g. 10.8.0.10-10.8.0.200)")
	}
	if cfg.PoolStart, cfg.PoolEnd, err = ParseRange(fc.Pool); err != nil {
		return cfg, err
	}
	if fc.LocalIP != "" {
		if cfg.LocalIP, err = netip.ParseAddr(fc.LocalIP); err != nil || !cfg.LocalIP.Is4() {
			return cfg, fmt.Errorf("local IP %q: want an IPv4 address", fc.LocalIP)
		}
	}
	for _, d := range fc.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			return cfg, fmt.Errorf("dns %q: want an IPv4 address", d)
		}
		cfg.DNS = append(cfg.DNS, a)
	}
	for _, r := range fc.SplitRoutes {
		p, err := netip.ParsePrefix(r)
		if err != nil || !p.Addr().Is4() {
			return cfg, fmt.Errorf("split route %q: want an IPv4 prefix", r)
		}
		cfg.SplitRoutes = append(cfg.SplitRoutes, p.Masked())
	}
	for _, a := range fc.Auth {
		m, ok := authNames[strings.ToLower(a)]
		if !ok {
			return cfg, fmt.Errorf("auth %q: want mschapv2, chap-md5 or pap", a)
		}
		cfg.Auth = append(cfg.Auth, m)
	}
	switch fc.Encryption {
	case "", "required":
	case "optional":
		cfg.AllowUnencrypted = true
	default:
		return cfg, fmt.Errorf("encryption %q: want required or optional", fc.Encryption)
	}
	if !cfg.AllowUnencrypted {
		for _, m := range cfg.Auth {
			if m != ppp.AuthMSCHAPv2 {
				return cfg, fmt.Errorf("auth %s yields no MPPE keys: set encryption: optional to allow it", m)
			}
		}
	}
	for _, b := range fc.MPPEBits {
		st, ok := mppeBits[b]
		if !ok {
			return cfg, fmt.Errorf("mppe_bits %d: want 40, 56 or 128", b)
		}
		cfg.MPPEStrengths = append(cfg.MPPEStrengths, st)
	}
	switch fc.MPPEMode {
	case "", "any":
	case "stateless":
		cfg.StatelessOnly = true
	case "stateful":
		cfg.StatefulOnly = true
	default:
		return cfg, fmt.Errorf("mppe_mode %q: want any, stateless or stateful", fc.MPPEMode)
	}
	if fc.MRU != 0 && (fc.MRU < 576 || fc.MRU > 1500) {
		return cfg, fmt.Errorf("mru %d: want 576..1500", fc.MRU)
	}
	cfg.MRU = fc.MRU
	// A negative limit would refuse every connection or call, a negative
	// duration fire at once; 0 keeps a field's default.
	for _, l := range []struct {
		name string
		v    int
	}{
		{"limits.max_conns", fc.Limits.MaxConns}, {"limits.max_conns_per_source", fc.Limits.MaxConnsPerSource},
		{"limits.max_sessions", fc.Limits.MaxSessions}, {"limits.max_calls_per_conn", fc.Limits.MaxCallsPerConn},
		{"limits.unauthenticated_calls_per_conn", fc.Limits.UnauthCallsPerConn},
		{"limits.unauthenticated_calls_per_source", fc.Limits.UnauthCallsPerSource},
		{"gre.reorder_max", fc.GRE.ReorderMax},
	} {
		if l.v < 0 {
			return cfg, fmt.Errorf("%s %d: want 0 or more", l.name, l.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"timeouts.first_message", fc.Timeouts.FirstMessage}, {"timeouts.echo_idle", fc.Timeouts.EchoIdle},
		{"timeouts.echo_timeout", fc.Timeouts.EchoTimeout}, {"timeouts.ppp_echo", fc.Timeouts.PPPEcho},
		{"timeouts.call_request", fc.Timeouts.CallRequest}, {"timeouts.auth", fc.Timeouts.Auth},
		{"gre.reorder_timeout", fc.GRE.ReorderTimeout}, {"gre.ack_delay", fc.GRE.AckDelay},
	} {
		if d.v < 0 {
			return cfg, fmt.Errorf("%s %s: want 0 or more", d.name, d.v)
		}
	}
	if cfg.RateLimits, err = fc.rateLimits(); err != nil { // shaping (issue 9): ratelimit.go
		return cfg, err
	}
	cfg.ServerName = fc.ServerName
	cfg.MaxConns, cfg.MaxConnsPerSource = fc.Limits.MaxConns, fc.Limits.MaxConnsPerSource
	cfg.MaxSessions, cfg.MaxCallsPerConn = fc.Limits.MaxSessions, fc.Limits.MaxCallsPerConn
	cfg.MaxUnauthCallsPerConn, cfg.MaxUnauthCallsPerSource = fc.Limits.UnauthCallsPerConn, fc.Limits.UnauthCallsPerSource
	cfg.FirstMessageTimeout, cfg.EchoIdle = fc.Timeouts.FirstMessage, fc.Timeouts.EchoIdle
	cfg.CallRequestTimeout, cfg.AuthTimeout = fc.Timeouts.CallRequest, fc.Timeouts.Auth
	cfg.EchoTimeout, cfg.PPPEcho = fc.Timeouts.EchoTimeout, fc.Timeouts.PPPEcho
	cfg.GRE = gre.Config{RecvWindow: fc.GRE.Window, ReorderTimeout: fc.GRE.ReorderTimeout,
		ReorderMax: fc.GRE.ReorderMax, AckDelay: fc.GRE.AckDelay}
	// Validate the pool/local IP combination now (NewServer repeats it).
	probe := cfg
	if err := probe.defaults(); err != nil {
		return cfg, err
	}
	if _, err := probe.newPool(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// ListenAddr returns the TCP listen address for s as pptpd's listen option
// takes it: "" is ":1723", an address alone (203.0.113.20, ::1) gets port
// 1723, and HOST:PORT or :PORT are used as they are.
func ListenAddr(s string) (string, error) {
	if s == "" {
		return fmt.Sprintf(":%d", wire.ControlPort), nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	host := s
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		host = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, wire.ControlPort).String(), nil
	}
	return "", fmt.Errorf("listen %q: want an IP address, IP:PORT or :PORT", s)
}

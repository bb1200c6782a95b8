// Package rules holds the gateway's configuration and programs the kernel's
// nftables ruleset for it.
//
// The configuration is YAML (see CONFIG.md). Load decodes it strictly: an
// unknown or misspelled key is an error naming its line. Validate checks the
// values and names every bad field (with its line when the config came from a
// file).
//
// It owns the gateway's configuration (keys, defaults, validation) and
// everything it installs in the kernel: the nftables table, interface
// resolution and the WAN watcher. It must not know about packets, calls or
// the engine's internals: the engine's own types it configures (Timeouts,
// with their defaults) come from package conntrack.
package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"pptpgw/conntrack"
	"pptpgw/internal/logging"
	"pptpgw/pptp/wire"
	"pptpgw/qos"
)

// Defaults. Kept as constants so the documentation and the code cannot drift
// apart silently: config_test checks CONFIG.md mentions each of them.
const (
	DefaultTable       = "pptpgw"
	DefaultQueue       = 47 // same number as the GRE protocol: easy to remember
	DefaultAdminSocket = "/run/pptpgw/admin.sock"
	DefaultLogLevel    = "info"

	// DefaultQueueLen is nfq.DefaultMaxQueueLen (which rules cannot import:
	// nfq's tests import rules); cmd/pptpgw's tests check they agree.
	DefaultQueueLen = 8192

	// MaxMaxCalls bounds max_calls so a typo cannot make the tracking table
	// reserve unbounded memory.
	MaxMaxCalls = 1 << 22
	// MaxCallsPerConn bounds limits.calls_per_conn: a control connection
	// cannot carry more calls than there are call IDs.
	MaxCallsPerConn = 65535
	// MaxQueueLen bounds queue_len: each packet waiting in the kernel holds
	// its buffer (a few KB), so a million is already gigabytes.
	MaxQueueLen = 1 << 20
	// MaxHold bounds timeouts.hold: a held control segment stalls its TCP
	// stream, so holding longer than this is never useful.
	MaxHold = 10 * time.Second
)

// Config is the gateway's configuration. The zero value is not useful: start
// from Default() (Load does) and override fields.
type Config struct {
	// WAN is the outside interface: masquerade/SNAT happens there.
	WAN string `yaml:"wan"`
	// LAN lists the inside interfaces.
	LAN []string `yaml:"lan"`
	// PublicAddress, if set, is an IPv4 address to SNAT to instead of
	// masquerading to the WAN interface's primary address.
	PublicAddress string `yaml:"public_address"`
	// Table is the name of the nftables table (family ip) the daemon owns.
	Table string `yaml:"table"`
	// Queue is the NFQUEUE number PPTP control and GRE packets go to.
	Queue uint16 `yaml:"queue"`
	// QueueLen is how many packets the kernel holds for the daemon waiting
	// for a verdict; it drops the rest (counted as nfqueue_queue_dropped).
	QueueLen uint32 `yaml:"queue_len"`
	// FailOpen makes the kernel accept PPTP control (TCP 1723) when no
	// daemon listens on the queue (NFQUEUE bypass); false drops it
	// (fail-closed). GRE is dropped then either way.
	FailOpen bool `yaml:"fail_open"`
	// Strict drops malformed control messages instead of passing them
	// untouched. GRE that matches no call is dropped either way.
	Strict bool `yaml:"strict"`
	// Timeouts of the call table, the call-ID quarantine and held control
	// segments: the engine's own type (one declaration, one set of
	// defaults, in package conntrack).
	Timeouts conntrack.Timeouts `yaml:"timeouts"`
	// MaxCalls bounds the number of tracked calls (and, separately, of
	// tracked control connections).
	MaxCalls int `yaml:"max_calls"`
	// Limits bound what one source host and one control connection may
	// hold: the engine's own type (package conntrack), like Timeouts.
	Limits conntrack.Limits `yaml:"limits"`
	// AdminSocket is the unix socket `pptpgw calls` talks to.
	AdminSocket string `yaml:"admin_socket"`
	// MSSClamp clamps the MSS of forwarded TCP SYNs.
	MSSClamp MSSClamp `yaml:"mss_clamp"`
	// IPForward makes the daemon set net.ipv4.ip_forward=1 at start.
	IPForward bool `yaml:"ip_forward"`
	// Forwards publishes PPTP servers behind the gateway.
	Forwards []Forward `yaml:"forwards"`
	// LogLevel is one of debug, info, warn (or warning), error, in any case,
	// optionally with a slog offset such as info+2 (logging.ParseLevel).
	LogLevel string `yaml:"log_level"`

	// operations: metrics, admin socket group (issue 8, config_obs.go)
	// Metrics is the TCP address /metrics is served on ("" = off).
	Metrics string `yaml:"metrics"`
	// AdminGroup owns the admin socket (mode 0660); "" = root only (0600).
	AdminGroup string `yaml:"admin_group"`
	// Shaping (issue 9): config_qos.go validates these.
	Classes  []qos.Class   `yaml:"classes"`
	Shaping  []qos.Shaping `yaml:"shaping"`
	Policing qos.Policing  `yaml:"policing"`
	// Kernel fast path and queue readers (issue 12), config_fastpath.go.
	// GREPath: "kernel", "userspace" or "auto" (the default: kernel where
	// the kernel runs it, probed at start).
	GREPath string `yaml:"gre_path"`
	// Queues is the number of NFQUEUE queues (and readers) from Queue on;
	// 0: one per CPU.
	Queues int `yaml:"queues"`
	// routing at the edge (issue 10): policy routing (routing.go) and the
	// kernel's conntrack timeouts (ct_timeouts.go).
	Routing           Routing        `yaml:"routing"`
	ConntrackTimeouts KernelTimeouts `yaml:"conntrack_timeouts"`
	// Uplinks are several WAN interfaces (uplinks.go); the first is `wan`.
	Uplinks []Uplink `yaml:"uplinks"`
	// Reload and restart (issue 8)
	// StateFile is where the call table is saved (on SIGTERM/SIGINT and
	// every 10 s) and restored from at start; "" keeps no state.
	StateFile string `yaml:"state_file"`
	// Call setups per second (issue 12), config_setups.go.
	// QueueWait is how the queue readers wait for packets: "poller" (the
	// default) or "syscall".
	QueueWait string `yaml:"queue_wait"`

	// lines maps a field path ("timeouts.hold", "forwards[1].to") to the
	// line it was set on, for error messages; file is the config's path.
	lines map[string]int
	file  string
	// loaded holds the values the file set for the keys command-line flags
	// usually override, so a line number is only quoted for a value that
	// still comes from the file.
	loaded map[string]string
}

// flagKeys are the keys `pptpgw run` has flags for.
func (c *Config) flagKeys() map[string]string {
	return map[string]string{
		"wan":          c.WAN,
		"lan":          strings.Join(c.LAN, ","),
		"table":        c.Table,
		"queue":        strconv.Itoa(int(c.Queue)),
		"admin_socket": c.AdminSocket,
		"log_level":    c.LogLevel,
		"metrics":      c.Metrics,
	}
}

// Forward publishes a PPTP server behind the gateway: TCP connections to
// Port on the WAN are DNATed to To, port 1723.
type Forward struct {
	Port uint16 `yaml:"port"`
	To   string `yaml:"to"`

	// pool (issue 11): `to` given as a list (config_pool.go).
	Pool    []string `yaml:"-"` // every member when `to` was a list; To is the first
	Balance string   `yaml:"balance"`
	Health  Health   `yaml:"health"`
}

// Addr returns the parsed To address (valid after Validate).
func (f Forward) Addr() netip.Addr {
	a, _ := netip.ParseAddr(f.To)
	return a
}

// MSSMode says how forwarded TCP SYNs have their MSS clamped.
type MSSMode uint8

const (
	MSSAuto  MSSMode = iota // clamp to the route's path MTU ("auto")
	MSSOff                  // no clamping ("off")
	MSSFixed                // clamp to a fixed value (a number)
)

// Smallest and largest fixed MSS accepted: the kernel's TCP_MIN_MSS and the
// largest MSS an IPv4 packet can carry.
const (
	MinMSS = 88
	MaxMSS = 65495
)

// MSSClamp is the mss_clamp setting: "auto", "off" or a number.
type MSSClamp struct {
	Mode  MSSMode
	Value uint16 // for MSSFixed

	// Rules (issue 10, mss_rules.go), from the mapping form
	// `{default: ..., rules: [...]}`: nil for the scalar form. A pointer
	// keeps MSSClamp comparable.
	Rules *[]MSSRule
}

func (m MSSClamp) String() string {
	switch m.Mode {
	case MSSAuto:
		return "auto"
	case MSSOff:
		return "off"
	default:
		return strconv.Itoa(int(m.Value))
	}
}

// ParseMSSClamp parses "auto", "off" or a decimal MSS.
func ParseMSSClamp(s string) (MSSClamp, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto":
		return MSSClamp{Mode: MSSAuto}, nil
	case "off", "false", "no":
		return MSSClamp{Mode: MSSOff}, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return MSSClamp{}, fmt.Errorf("mss_clamp must be \"auto\", \"off\" or a number, not %q", s)
	}
	if n < MinMSS || n > MaxMSS {
		return MSSClamp{}, fmt.Errorf("mss_clamp %d out of range %d..%d", n, MinMSS, MaxMSS)
	}
	return MSSClamp{Mode: MSSFixed, Value: uint16(n)}, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (m *MSSClamp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		return m.unmarshalRules(n) // issue 10
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: mss_clamp must be \"auto\", \"off\" or a number", n.Line)
	}
	v, err := ParseMSSClamp(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*m = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (m MSSClamp) MarshalYAML() (any, error) {
	if m.Rules != nil {
		return m.marshalRules() // issue 10
	}
	if m.Mode == MSSFixed {
		return int(m.Value), nil
	}
	return m.String(), nil
}

// Default returns the configuration used when no file is given. WAN and LAN
// are empty: the caller (command-line flags) must set them.
func Default() *Config {
	return &Config{
		Table:       DefaultTable,
		Queue:       DefaultQueue,
		QueueLen:    DefaultQueueLen,
		FailOpen:    true,
		Strict:      false,
		Timeouts:    conntrack.Timeouts{}.WithDefaults(),
		MaxCalls:    conntrack.DefaultMaxCalls,
		Limits:      conntrack.Limits{}.WithDefaults(),
		AdminSocket: DefaultAdminSocket,
		MSSClamp:    MSSClamp{Mode: MSSAuto},
		IPForward:   true,
		LogLevel:    DefaultLogLevel,
		GREPath:     GREPathAuto,
		StateFile:   DefaultStateFile,
	}
}

// Load reads and strictly decodes the YAML file at path on top of Default().
// It does not call Validate: callers usually override fields from flags
// first. Errors name the file and line.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.file = path
	return c, nil
}

// Parse decodes YAML bytes strictly on top of Default(). An empty document
// yields the defaults.
func Parse(b []byte) (*Config, error) {
	c := Default()
	nb, err := wanListAsUplinks(b) // issue 10: `wan:` may be a list
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(nb))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil // empty file: defaults
		}
		return nil, cleanYAMLError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	c.applyUplinkDefaults() // issue 10
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		c.lines = map[string]int{}
		collectLines(&root, "", c.lines)
		c.wanListLines() // issue 10
	}
	c.loaded = c.flagKeys()
	return c, nil
}

// cleanYAMLError makes yaml's messages read as ours ("line 3: field wna not
// found in type rules.Config" -> "line 3: unknown field \"wna\"").
var notFoundRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

func cleanYAMLError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.Replace(msg, "unmarshal errors:\n  ", "", 1)
	msg = notFoundRE.ReplaceAllString(msg, "unknown field \"$1\"")
	return errors.New(msg)
}

// collectLines records the line of every mapping key and sequence item.
func collectLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			collectLines(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			collectLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[p] = c.Line
			collectLines(c, p, out)
		}
	}
}

// FieldError is one invalid setting. Field is the YAML path, e.g.
// "timeouts.hold" or "forwards[1].to".
type FieldError struct {
	Field string
	File  string // config file, if loaded from one
	Line  int    // 0 if unknown (set by flags or code)
	Msg   string
}

func (e *FieldError) Error() string {
	switch {
	case e.Line > 0 && e.File != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
}

// ifnameRE: what the kernel accepts as an interface name, minus oddities
// (IFNAMSIZ-1 = 15 bytes, no '/', ':' or whitespace).
var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.@+-]{1,15}$`)

// tableRE: table names we are willing to create.
var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)

// Validate checks every field and returns all problems joined (each a
// *FieldError), or nil.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		fe := &FieldError{Field: field, Msg: fmt.Sprintf(format, a...), File: c.file}
		top := field
		if i := strings.IndexAny(top, ".["); i > 0 {
			top = top[:i]
		}
		if v, ok := c.loaded[top]; ok && v != c.flagKeys()[top] {
			fe.File = "" // set by a flag, not by the file
		} else if c.lines != nil {
			fe.Line = c.lines[field]
			if fe.Line == 0 {
				// "lan[1]" unknown? fall back to its parent key.
				if i := strings.LastIndexAny(field, ".["); i > 0 {
					fe.Line = c.lines[field[:i]]
				}
			}
		}
		errs = append(errs, fe)
	}

	if c.WAN == "" {
		bad("wan", "required: the outside interface (set it here or with --wan)")
	} else if !ifnameRE.MatchString(c.WAN) {
		bad("wan", "%q is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . - @ +)", c.WAN)
	}
	if len(c.LAN) == 0 {
		bad("lan", "required: at least one inside interface (set it here or with --lan)")
	}
	seen := map[string]bool{}
	for i, l := range c.LAN {
		f := fmt.Sprintf("lan[%d]", i)
		switch {
		case !ifnameRE.MatchString(l):
			bad(f, "%q is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . - @ +)", l)
		case l == c.WAN:
			bad(f, "%q is also the wan interface", l)
		case seen[l]:
			bad(f, "%q listed twice", l)
		}
		seen[l] = true
	}
	if c.PublicAddress != "" {
		a, err := netip.ParseAddr(c.PublicAddress)
		switch {
		case err != nil:
			bad("public_address", "%q is not an IP address", c.PublicAddress)
		case !a.Is4():
			bad("public_address", "%s is not an IPv4 address", a)
		case !a.IsGlobalUnicast() && !a.IsPrivate():
			bad("public_address", "%s is not a unicast address", a)
		}
	}
	if !tableRE.MatchString(c.Table) {
		bad("table", "%q is not a valid table name (letter or _, then up to 63 of A-Z a-z 0-9 _ -)", c.Table)
	}
	t := c.Timeouts
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"timeouts.gre_unreplied", t.GREUnreplied},
		{"timeouts.gre_replied", t.GREReplied},
		{"timeouts.control_idle", t.ControlIdle},
		{"timeouts.call_id_quarantine", t.CallIDQuarantine},
		{"timeouts.hold", t.Hold},
	} {
		if d.v <= 0 {
			bad(d.name, "must be positive, got %s", d.v)
		}
	}
	if t.GREUnreplied > 0 && t.GREReplied > 0 && t.GREReplied < t.GREUnreplied {
		bad("timeouts.gre_replied", "%s is shorter than gre_unreplied (%s): a flow would expire sooner once answered", t.GREReplied, t.GREUnreplied)
	}
	if t.Hold > MaxHold {
		bad("timeouts.hold", "%s is longer than the %s maximum: a held segment stalls its control connection", t.Hold, MaxHold)
	}
	if c.QueueLen < 1 || c.QueueLen > MaxQueueLen {
		bad("queue_len", "%d out of range 1..%d", c.QueueLen, MaxQueueLen)
	}
	if c.MaxCalls < 1 || c.MaxCalls > MaxMaxCalls {
		bad("max_calls", "%d out of range 1..%d", c.MaxCalls, MaxMaxCalls)
	}
	for _, l := range []struct {
		name   string
		v, max int
	}{
		{"limits.conns_per_source", c.Limits.ConnsPerSource, MaxMaxCalls},
		{"limits.calls_per_conn", c.Limits.CallsPerConn, MaxCallsPerConn},
		{"limits.calls_per_source", c.Limits.CallsPerSource, MaxMaxCalls},
	} {
		if l.v < 1 || l.v > l.max {
			bad(l.name, "%d out of range 1..%d", l.v, l.max)
		}
	}
	switch {
	case c.AdminSocket == "":
		bad("admin_socket", "required")
	case !filepath.IsAbs(c.AdminSocket):
		bad("admin_socket", "%q must be an absolute path", c.AdminSocket)
	case len(c.AdminSocket) > 107:
		bad("admin_socket", "path is %d bytes; a unix socket path holds at most 107", len(c.AdminSocket))
	}
	if c.MSSClamp.Mode == MSSFixed && (c.MSSClamp.Value < MinMSS || c.MSSClamp.Value > MaxMSS) {
		bad("mss_clamp", "%d out of range %d..%d", c.MSSClamp.Value, MinMSS, MaxMSS)
	}
	ports := map[uint16]int{}
	for i, f := range c.Forwards {
		p := fmt.Sprintf("forwards[%d]", i)
		if f.Port == 0 {
			bad(p+".port", "required (1..65535; usually 1723)")
		} else if j, dup := ports[f.Port]; dup {
			bad(p+".port", "port %d is already forwarded by forwards[%d]", f.Port, j)
		} else {
			ports[f.Port] = i
		}
		a, err := netip.ParseAddr(f.To)
		switch {
		case f.To == "":
			bad(p+".to", "required: the inside PPTP server's IPv4 address")
		case err != nil:
			bad(p+".to", "%q is not an IP address (give the address only: the server must listen on %d)", f.To, wire.ControlPort)
		case !a.Is4():
			bad(p+".to", "%s is not an IPv4 address", a)
		case !a.IsGlobalUnicast() && !a.IsPrivate():
			bad(p+".to", "%s is not a unicast address", a)
		}
	}
	c.validatePool(bad)
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	c.validateObs(bad)      // issue 8 (config_obs.go)
	c.validateQoS(bad)      // shaping (issue 9): config_qos.go
	c.validateFastPath(bad) // kernel fast path (issue 12)
	c.validateSetups(bad)   // queue readers' wait (issue 12, setups)
	c.validateEdge(bad)     // routing at the edge (issue 10)
	c.validateOps(bad)
	return errors.Join(errs...)
}

// SlogLevel returns the parsed LogLevel (info if invalid).
func (c *Config) SlogLevel() slog.Level {
	l, _ := logging.ParseLevel(c.LogLevel)
	return l
}

// PublicAddr returns the parsed PublicAddress; the zero Addr means
// masquerade.
func (c *Config) PublicAddr() netip.Addr {
	a, _ := netip.ParseAddr(c.PublicAddress)
	return a
}

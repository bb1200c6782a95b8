package qos

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Class is one entry of the top-level `classes:` list (first match wins).
// A class used only as a shaping default may have no Match.
type Class struct {
	Name  string  `yaml:"name"`
	Match []Match `yaml:"match"`
}

// Match is one alternative of a class: every field that is set must match
// (AND); the alternatives of a class are ORed.
type Match struct {
	Src      Prefixes `yaml:"src"`
	Dst      Prefixes `yaml:"dst"`
	Protocol Protocol `yaml:"protocol"`
	Sport    Ports    `yaml:"sport"`
	Dport    Ports    `yaml:"dport"`
	DSCP     DSCP     `yaml:"dscp"`
	// PPTP matches the PPTP traffic the engine handles: PPTPControl the
	// control connections, PPTPGRE the calls' GRE, PPTPBoth both.
	PPTP PPTPMatch `yaml:"pptp"`
	// Inside is an inside host: for PPTP, the calls of that client.
	Inside string `yaml:"inside"`
}

// Kernel reports whether the alternative is for traffic on the kernel's
// path (classified by nftables): it names no PPTP traffic and no inside
// host.
func (m *Match) Kernel() bool { return m.PPTP == PPTPNone && m.Inside == "" }

// InsideAddr is the parsed Inside (invalid if unset or bad).
func (m *Match) InsideAddr() netip.Addr {
	a, _ := netip.ParseAddr(m.Inside)
	return a
}

// Prefixes is a prefix (or address) or a list of them.
type Prefixes []netip.Prefix

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Prefixes) UnmarshalYAML(n *yaml.Node) error {
	vals, err := scalars(n, "a prefix such as 10.0.0.0/8 or a list of them")
	if err != nil {
		return err
	}
	*p = nil
	for _, v := range vals {
		x, err := parsePrefix(v.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", v.Line, err)
		}
		*p = append(*p, x)
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(s)
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 prefix or address", s)
	}
	return p.Masked(), nil
}

// Protocol is an IP protocol number; 0 means any.
type Protocol uint8

// Protocol names the config accepts.
var protocolNames = map[string]Protocol{"icmp": 1, "tcp": 6, "udp": 17, "gre": 47}

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Protocol) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: protocol is tcp, udp, icmp, gre or a number", n.Line)
	}
	v, err := ParseProtocol(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*p = v
	return nil
}

// ParseProtocol parses tcp, udp, icmp, gre or a number 1-255.
func ParseProtocol(s string) (Protocol, error) {
	if p, ok := protocolNames[strings.ToLower(strings.TrimSpace(s))]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 255 {
		return 0, fmt.Errorf("protocol %q: want tcp, udp, icmp, gre or a number 1-255", s)
	}
	return Protocol(n), nil
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Ports is a port, a range "1000-2000", or a list of them.
type Ports []PortRange

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Ports) UnmarshalYAML(n *yaml.Node) error {
	vals, err := scalars(n, `a port, a range "1000-2000" or a list of them`)
	if err != nil {
		return err
	}
	*p = nil
	for _, v := range vals {
		r, err := ParsePortRange(v.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", v.Line, err)
		}
		*p = append(*p, r)
	}
	return nil
}

// ParsePortRange parses "80" or "1000-2000".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	}
	if err1 != nil || err2 != nil || a == 0 || b < a {
		return PortRange{}, fmt.Errorf("port %q: want 1-65535 or a range lo-hi", s)
	}
	return PortRange{uint16(a), uint16(b)}, nil
}

// DSCP is a DSCP code point; Set says whether it was given.
type DSCP struct {
	Value uint8
	Set   bool
}

var dscpNames = map[string]uint8{
	"cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56,
	"af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
	"af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
	"ef": 46, "be": 0, "va": 44, "le": 1,
}

// ParseDSCP parses a name (ef, af41, cs1, ...) or a number 0-63.
func ParseDSCP(s string) (uint8, error) {
	if v, ok := dscpNames[strings.ToLower(strings.TrimSpace(s))]; ok {
		return v, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("dscp %q: want a name (ef, af41, cs1, ...) or a number 0-63", s)
	}
	return uint8(n), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *DSCP) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: dscp is a name or a number 0-63", n.Line)
	}
	v, err := ParseDSCP(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = DSCP{v, true}
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d DSCP) MarshalYAML() (any, error) {
	if !d.Set {
		return nil, nil
	}
	return int(d.Value), nil
}

// PPTPMatch selects the PPTP traffic the engine classifies.
type PPTPMatch uint8

const (
	PPTPNone    PPTPMatch = iota
	PPTPControl           // "control": the control connections (TCP 1723)
	PPTPGRE               // "gre": the calls' GRE
	PPTPBoth              // "true": both
)

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *PPTPMatch) UnmarshalYAML(n *yaml.Node) error {
	switch strings.ToLower(n.Value) {
	case "control":
		*p = PPTPControl
	case "gre":
		*p = PPTPGRE
	case "true", "yes", "both":
		*p = PPTPBoth
	case "false", "no":
		*p = PPTPNone
	default:
		return fmt.Errorf("line %d: pptp is control, gre or true", n.Line)
	}
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (p PPTPMatch) MarshalYAML() (any, error) {
	return [...]any{false, "control", "gre", true}[p&3], nil
}

// scalars returns n's scalar, or the scalars of a sequence n.
func scalars(n *yaml.Node, what string) ([]*yaml.Node, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return []*yaml.Node{n}, nil
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: want %s", c.Line, what)
			}
		}
		return n.Content, nil
	}
	return nil, fmt.Errorf("line %d: want %s", n.Line, what)
}

// Shaping is one entry of `shaping:`: an interface whose egress is shaped.
type Shaping struct {
	Interface string `yaml:"interface"`
	// Rate is the real link rate: the HTB root.
	Rate Rate `yaml:"rate"`
	// Default is the class of unmatched traffic (a name in `classes:`).
	Default string `yaml:"default"`
	// Ingress shapes what arrives on Interface (IFB); refused, see CONFIG.md.
	Ingress bool         `yaml:"ingress"`
	Classes []ShapeClass `yaml:"classes"`
}

// ShapeClass is one HTB leaf: a class of `classes:` on a shaped interface.
type ShapeClass struct {
	Class    string `yaml:"class"`
	Priority int    `yaml:"priority"` // HTB prio 0 (first) .. 7
	Rate     Rate   `yaml:"rate"`
	Ceil     Rate   `yaml:"ceil"`    // 0: the interface's rate
	Burst    Size   `yaml:"burst"`   // 0: computed
	Quantum  Size   `yaml:"quantum"` // 0: computed
}

// Policing is the `policing:` key.
type Policing struct {
	PPTPCall *Police `yaml:"pptp_call"`
}

// Police is a token bucket: Rate, and Burst bytes of credit.
type Police struct {
	Rate  Rate `yaml:"rate"`
	Burst Size `yaml:"burst"` // 0: DefaultBurst(Rate)
}

// DefaultBurst is the burst a policer gets when none is given: 50 ms at
// the rate, and at least 16 full-size packets.
func DefaultBurst(r Rate) Size {
	return max(Size(r.BytesPerSecond()/20), 16*1514)
}

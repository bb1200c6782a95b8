package rules

import (
	"fmt"
	"regexp"

	"pptpgw/internal/fwmark"
	"pptpgw/qos"
)

// Shaping (issue 9): validation of classes, shaping and policing.

// classNameRE: class names (they appear in `pptpgw qos` and in metrics).
var classNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)

// MaxRulesPerMatch bounds the nftables rules one match alternative expands
// to (src x dst x sport x dport lists).
const MaxRulesPerMatch = 64

// MinPoliceBurst is the smallest policing burst: one full-size frame, or
// no packet could ever pass.
const MinPoliceBurst = 1514

func (c *Config) validateQoS(bad func(field, format string, a ...any)) {
	names := map[string]int{}
	if len(c.Classes) > fwmark.MaxClasses {
		bad("classes", "%d classes; at most %d", len(c.Classes), fwmark.MaxClasses)
	}
	for i, cl := range c.Classes {
		f := fmt.Sprintf("classes[%d]", i)
		switch j, dup := names[cl.Name]; {
		case cl.Name == "":
			bad(f+".name", "required")
		case !classNameRE.MatchString(cl.Name):
			bad(f+".name", "%q: a letter, then up to 31 of A-Z a-z 0-9 _ -", cl.Name)
		case dup:
			bad(f+".name", "%q is already classes[%d]", cl.Name, j)
		default:
			names[cl.Name] = i
		}
		for j, m := range cl.Match {
			c.validateMatch(bad, fmt.Sprintf("%s.match[%d]", f, j), m)
		}
	}
	ifaces := map[string]int{}
	for i, s := range c.Shaping {
		f := fmt.Sprintf("shaping[%d]", i)
		switch j, dup := ifaces[s.Interface]; {
		case s.Interface == "":
			bad(f+".interface", "required: the interface whose egress is shaped")
		case !ifnameRE.MatchString(s.Interface):
			bad(f+".interface", "%q is not a valid interface name", s.Interface)
		case dup:
			bad(f+".interface", "%q is already shaped by shaping[%d]", s.Interface, j)
		default:
			ifaces[s.Interface] = i
		}
		if s.Ingress {
			bad(f+".ingress", "not supported: shape downloads on the LAN interface instead (see CONFIG.md, Shaping: an IFB on the WAN sees packets before nftables and the engine class them)")
		}
		if s.Rate == 0 {
			bad(f+".rate", "required: the link's real rate, e.g. 20mbit")
		}
		if s.Default == "" {
			bad(f+".default", "required: the class of unmatched traffic")
		} else if _, ok := names[s.Default]; !ok {
			bad(f+".default", "unknown class %q (not in classes)", s.Default)
		}
		if len(s.Classes) == 0 {
			bad(f+".classes", "required: at least the default class")
		}
		seen := map[string]int{}
		hasDefault := false
		var sum qos.Rate
		for j, sc := range s.Classes {
			g := fmt.Sprintf("%s.classes[%d]", f, j)
			if k, dup := seen[sc.Class]; dup {
				bad(g+".class", "%q is already %s.classes[%d]", sc.Class, f, k)
			}
			seen[sc.Class] = j
			if _, ok := names[sc.Class]; !ok {
				bad(g+".class", "unknown class %q (not in classes)", sc.Class)
			}
			hasDefault = hasDefault || sc.Class == s.Default
			if sc.Priority < 0 || sc.Priority > 7 {
				bad(g+".priority", "%d out of range 0..7 (0 is served first)", sc.Priority)
			}
			switch {
			case sc.Rate == 0:
				bad(g+".rate", "required: the class's guaranteed rate")
			case s.Rate != 0 && sc.Rate > s.Rate:
				bad(g+".rate", "%s is above the interface's rate %s", sc.Rate, s.Rate)
			}
			if sc.Ceil != 0 && s.Rate != 0 && sc.Ceil > s.Rate {
				bad(g+".ceil", "%s is above the interface's rate %s", sc.Ceil, s.Rate)
			} else if sc.Ceil != 0 && sc.Ceil < sc.Rate {
				bad(g+".ceil", "%s is below the class's rate %s", sc.Ceil, sc.Rate)
			}
			if sc.Quantum != 0 && (sc.Quantum < 1514 || sc.Quantum > 200000) {
				bad(g+".quantum", "%s out of range 1514b..200000b", sc.Quantum)
			}
			if sc.Burst != 0 && sc.Burst < 1600 {
				bad(g+".burst", "%s is less than one full-size frame (1600b)", sc.Burst)
			}
			sum += sc.Rate
		}
		if s.Default != "" && len(s.Classes) > 0 && !hasDefault {
			if _, ok := names[s.Default]; ok {
				bad(f+".default", "class %q has no entry in %s.classes", s.Default, f)
			}
		}
		if s.Rate != 0 && sum > s.Rate {
			bad(f+".classes", "the classes' rates add up to %s, above the interface's rate %s: HTB could not guarantee them", sum, s.Rate)
		}
	}
	if p := c.Policing.PPTPCall; p != nil {
		if p.Rate == 0 {
			bad("policing.pptp_call.rate", "required: each call's rate per direction, e.g. 10mbit")
		}
		if p.Burst != 0 && p.Burst < MinPoliceBurst {
			bad("policing.pptp_call.burst", "%s is less than one full-size frame (%db)", p.Burst, MinPoliceBurst)
		}
	}
}

func (c *Config) validateMatch(bad func(field, format string, a ...any), f string, m qos.Match) {
	pptp := m.PPTP != qos.PPTPNone || m.Inside != ""
	kernel := len(m.Src) > 0 || len(m.Dst) > 0 || m.Protocol != 0 || len(m.Sport) > 0 || len(m.Dport) > 0 || m.DSCP.Set
	switch {
	case !pptp && !kernel:
		bad(f, "matches every packet: leave it out and make the class a shaping default instead")
	case pptp && kernel:
		bad(f, "pptp and inside match calls (classed by the engine) and cannot be combined with src, dst, protocol, ports or dscp (classed by nftables): use two alternatives")
	}
	for _, l := range []struct {
		k string
		v qos.Prefixes
	}{{"src", m.Src}, {"dst", m.Dst}} {
		for _, p := range l.v {
			if p.Bits() == 0 {
				bad(f+"."+l.k, "%s matches every address: leave %s out", p, l.k)
			}
		}
	}
	if m.Inside != "" && !m.InsideAddr().Is4() {
		bad(f+".inside", "%q is not an IPv4 address", m.Inside)
	}
	if (len(m.Sport) > 0 || len(m.Dport) > 0) && m.Protocol != 6 && m.Protocol != 17 {
		bad(f+".protocol", "sport and dport need protocol: tcp or udp")
	}
	n := max(len(m.Src), 1) * max(len(m.Dst), 1) * max(len(m.Sport), 1) * max(len(m.Dport), 1)
	if n > MaxRulesPerMatch {
		bad(f, "expands to %d rules (src x dst x sport x dport); at most %d: use prefixes and ranges", n, MaxRulesPerMatch)
	}
}

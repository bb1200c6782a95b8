package rules

// MSS rules (issue 10): `mss_clamp: {default: auto, rules: [{dst: PREFIX,
// mss: N}, {interface: IF, mss: N}]}` for paths that cross a tunnel or a
// PPPoE uplink.
//
// With rules, queue_postrouting's clamp rule jumps to a regular chain where
// the first matching rule sets its MSS and returns; the default (auto: the
// route's MTU, a number, or off: nothing) applies to the rest:
//
//	chain queue_postrouting { ...
//	    tcp flags syn fib saddr type != local jump mss_clamp ... }
//	chain mss_clamp {
//	    oifname "wan1" tcp option maxseg size set 1452 return   // {interface: wan1}
//	    iifname "wan1" tcp option maxseg size set 1452 return
//	    ip daddr 10.99.0.0/16 tcp option maxseg size set 1360 return // {dst: ...}
//	    ip saddr 10.99.0.0/16 tcp option maxseg size set 1360 return
//	    tcp option maxseg size set rt mtu }                     // default
//
// Each rule matches both ways, so the SYN (to the destination, out of the
// interface) and the SYN-ACK (from it, in by it) are both clamped and both
// ends learn the smaller MSS. The kernel's tcp option write never raises
// an MSS (nft_exthdr_tcp_set_eval returns when the new value is not
// smaller, "increase can cause connection to stall"), so a rule only ever
// lowers it; the netns test checks a SYN whose MSS is already below the
// rule's passes unchanged.

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.yaml.in/yaml/v3"
)

// ChainMSSClamp is the regular chain of the MSS rules.
const ChainMSSClamp = "mss_clamp"

// MSSRule clamps the MSS of SYNs to or from Dst, or out of or in by
// Interface (exactly one of them), to MSS.
type MSSRule struct {
	Dst       string `yaml:"dst"`
	Interface string `yaml:"interface"`
	MSS       int    `yaml:"mss"`
}

// mssClampMap is the mapping form of mss_clamp.
type mssClampMap struct {
	Default yaml.Node `yaml:"default"`
	Rules   []MSSRule `yaml:"rules"`
}

// knownKeys is KnownFields for a node decoded on its own (Node.Decode does
// not inherit the strictness of Parse's decoder): a key not in keys is an
// error naming its line.
func knownKeys(n *yaml.Node, keys ...string) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(keys, k.Value) {
			return fmt.Errorf("line %d: unknown field %q", k.Line, k.Value)
		}
	}
	return nil
}

func (m *MSSClamp) unmarshalRules(n *yaml.Node) error {
	if err := knownKeys(n, "default", "rules"); err != nil {
		return err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "rules" && n.Content[i+1].Kind == yaml.SequenceNode {
			for _, r := range n.Content[i+1].Content {
				if err := knownKeys(r, "dst", "interface", "mss"); err != nil {
					return err
				}
			}
		}
	}
	var v mssClampMap
	if err := n.Decode(&v); err != nil {
		return err
	}
	*m = MSSClamp{Mode: MSSAuto}
	if v.Default.Kind != 0 {
		if err := m.UnmarshalYAML(&v.Default); err != nil {
			return err
		}
	}
	rules := v.Rules
	if rules == nil {
		rules = []MSSRule{}
	}
	m.Rules = &rules
	return nil
}

func (m MSSClamp) marshalRules() (any, error) {
	d, _ := MSSClamp{Mode: m.Mode, Value: m.Value}.MarshalYAML()
	return map[string]any{"default": d, "rules": *m.Rules}, nil
}

// validateMSSRules reports the problems of c.MSSClamp.Rules.
func (c *Config) validateMSSRules(bad func(field, format string, a ...any)) {
	if c.MSSClamp.Rules == nil {
		return
	}
	for i, r := range *c.MSSClamp.Rules {
		p := fmt.Sprintf("mss_clamp.rules[%d]", i)
		switch {
		case r.Dst == "" && r.Interface == "":
			bad(p, "needs dst (a prefix) or interface")
		case r.Dst != "" && r.Interface != "":
			bad(p, "give dst or interface, not both (write two rules)")
		case r.Dst != "":
			if pf, err := parseRoutePrefix(r.Dst); err != nil {
				bad(p+".dst", "%v", err)
			} else if pf.Bits() == 0 {
				bad(p+".dst", "%s matches everything: use mss_clamp.default", r.Dst)
			}
		default:
			if !ifnameRE.MatchString(r.Interface) {
				bad(p+".interface", "%q is not a valid interface name", r.Interface)
			}
		}
		if r.MSS < MinMSS || r.MSS > MaxMSS {
			bad(p+".mss", "%d out of range %d..%d", r.MSS, MinMSS, MaxMSS)
		}
	}
}

// addMSSRules adds the chain mss_clamp for m (whose Rules is set) to t and
// returns the jump to it.
func addMSSRules(c *nftables.Conn, t *nftables.Table, m MSSClamp) []expr.Any {
	ch := c.AddChain(&nftables.Chain{Name: ChainMSSClamp, Table: t})
	add := func(ex ...[]expr.Any) {
		var all []expr.Any
		for _, e := range ex {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	for _, r := range *m.Rules {
		set := SetMSS(MSSClamp{Mode: MSSFixed, Value: uint16(r.MSS)})
		if r.Interface != "" {
			add(MatchIfname(expr.MetaKeyOIFNAME, r.Interface), set, ret)
			add(MatchIfname(expr.MetaKeyIIFNAME, r.Interface), set, ret)
			continue
		}
		pf, _ := parseRoutePrefix(r.Dst)
		add(MatchAddr(true, pf), set, ret)
		add(MatchAddr(false, pf), set, ret)
	}
	if m.Mode != MSSOff {
		add(SetMSS(MSSClamp{Mode: m.Mode, Value: m.Value}))
	}
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainMSSClamp}}
}

// validateEdge checks the keys of issue 10 (routing at the edge).
func (c *Config) validateEdge(bad func(field, format string, a ...any)) {
	c.validateRouting(bad)
	c.validateKernelTimeouts(bad)
	c.validateMSSRules(bad)
	c.validateUplinks(bad)
}

// edgeFromConfig fills the Plan fields of issue 10 from c.
func (p *Plan) edgeFromConfig(c *Config) {
	p.CtTimeouts = c.ConntrackTimeouts
	if !c.ConntrackTimeouts.IsZero() {
		p.CtTimeoutBase = ReadKernelTimeoutBase()
	}
	if c.MSSClamp.Rules != nil {
		r := append([]MSSRule(nil), *c.MSSClamp.Rules...)
		p.MSS.Rules = &r
	}
	if len(c.Uplinks) > 1 {
		p.uplinkPlan(c)
	}
}

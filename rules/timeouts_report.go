package rules

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// TimeoutLine is one timeout in force: what `pptpgw timeouts` prints.
type TimeoutLine struct {
	// Scope: "pptpgw" (the daemon's own call table), "kernel tcp",
	// "kernel udp", "kernel gre", or "kernel rule N (match)".
	Scope string
	Name  string
	Value time.Duration
	// Source: "config FILE:LINE", "default", "kernel sysctl NAME" or
	// "kernel built-in".
	Source string
}

// TimeoutReport lists every timeout in force for c: the daemon's own
// (GRE, control, hold: from c.Timeouts) and the kernel conntrack's for the
// traffic the daemon leaves to it (from c.ConntrackTimeouts over base, the
// namespace's sysctls), each with where it comes from.
func TimeoutReport(c *Config, base KernelTimeoutBase) []TimeoutLine {
	if len(base.TCP) != len(tcpStates) || len(base.UDP) != len(udpStates) {
		base = BuiltinKernelTimeoutBase()
	}
	from := func(key string) string {
		if l := c.lines[key]; l > 0 {
			if c.file != "" {
				return fmt.Sprintf("config %s:%d", c.file, l)
			}
			return fmt.Sprintf("config line %d", l)
		}
		return ""
	}
	var out []TimeoutLine
	t := c.Timeouts
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"gre_unreplied", t.GREUnreplied}, {"gre_replied", t.GREReplied}, {"control_idle", t.ControlIdle},
		{"call_id_quarantine", t.CallIDQuarantine}, {"hold", t.Hold},
	} {
		src := from("timeouts." + d.key)
		if src == "" {
			src = "default"
		}
		out = append(out, TimeoutLine{"pptpgw", d.key, d.v, src})
	}
	k := c.ConntrackTimeouts
	for i, s := range tcpStates {
		key := "conntrack_timeouts.tcp." + s.key
		if v := *s.get(&k.TCP); v > 0 {
			out = append(out, TimeoutLine{"kernel tcp", s.key, v, from(key) + " (ct timeout ct_tcp)"})
		} else {
			out = append(out, TimeoutLine{"kernel tcp", s.key, time.Duration(base.TCP[i]) * time.Second, base.TCPSource[i]})
		}
	}
	for i, s := range udpStates {
		key := "conntrack_timeouts.udp." + s.key
		if v := *s.get(&k.UDP); v > 0 {
			out = append(out, TimeoutLine{"kernel udp", s.key, v, from(key) + " (ct timeout ct_udp)"})
		} else {
			out = append(out, TimeoutLine{"kernel udp", s.key, time.Duration(base.UDP[i]) * time.Second, base.UDPSource[i]})
		}
	}
	for _, g := range []struct {
		key, sysctl string
		v           time.Duration
	}{{"unreplied", SysctlGREUnreplied, k.GRE.Unreplied}, {"replied", SysctlGREReplied, k.GRE.Replied}} {
		if g.v > 0 {
			out = append(out, TimeoutLine{"kernel gre", g.key, g.v, from("conntrack_timeouts.gre."+g.key) + " (sysctl " + g.sysctl + ")"})
			continue
		}
		if b, err := os.ReadFile(sysctlDir + "/" + g.sysctl); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				out = append(out, TimeoutLine{"kernel gre", g.key, time.Duration(n) * time.Second, "kernel sysctl " + g.sysctl})
			}
		}
	}
	objs, _ := ctTimeoutPlan(k, base)
	pol, name := map[string][]uint32{}, map[string]string{}
	for _, o := range objs {
		pol[o.base], name[o.base] = o.policy, o.name
	}
	for i := range out {
		for b, n := range name {
			out[i].Source = strings.Replace(out[i].Source, "(ct timeout "+b+")", "(ct timeout "+n+")", 1)
		}
	}
	for i, r := range k.Rules {
		scope := fmt.Sprintf("kernel rule %d (%s)", i, r.match())
		p := pol["ct_rule_"+strconv.Itoa(i)]
		layer := func(state string, own, def time.Duration, defKey string, j int, baseSrc string) {
			switch {
			case own > 0:
				out = append(out, TimeoutLine{scope, state, own, from(fmt.Sprintf("conntrack_timeouts.rules[%d].%s.%s", i, r.Protocol, state))})
			case def > 0:
				out = append(out, TimeoutLine{scope, state, def, from(defKey)})
			default:
				out = append(out, TimeoutLine{scope, state, time.Duration(p[j]) * time.Second, baseSrc})
			}
		}
		if r.Protocol == "udp" {
			for j, s := range udpStates {
				layer(s.key, *s.get(&r.UDP), *s.get(&k.UDP), "conntrack_timeouts.udp."+s.key, j, base.UDPSource[j])
			}
		} else {
			for j, s := range tcpStates {
				layer(s.key, *s.get(&r.TCP), *s.get(&k.TCP), "conntrack_timeouts.tcp."+s.key, j, base.TCPSource[j])
			}
		}
	}
	for i := range out {
		if strings.HasPrefix(out[i].Source, " (") || out[i].Source == "" {
			out[i].Source = "config" + out[i].Source // set in code, not from a file line
		}
	}
	return out
}

// match describes a timeout rule's selectors.
func (r TimeoutRule) match() string {
	s := []string{r.Protocol}
	if r.Src != "" {
		s = append(s, "src "+r.Src)
	}
	if r.Dst != "" {
		s = append(s, "dst "+r.Dst)
	}
	if r.Sport != 0 {
		s = append(s, "sport "+strconv.Itoa(int(r.Sport)))
	}
	if r.Dport != 0 {
		s = append(s, "dport "+strconv.Itoa(int(r.Dport)))
	}
	return strings.Join(s, " ")
}

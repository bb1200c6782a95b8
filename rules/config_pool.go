package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Server pools (issue 11): a forward whose `to` is a list of addresses
// publishes several PPTP servers behind one public port. The engine picks
// the member of each new control connection (balance), probes the members
// (health) and translates every member's call IDs into the one ID space of
// the public address.

// Balance policies of a pool.
const (
	// BalanceLeastCalls sends a new control connection to the healthy
	// member with the fewest live control connections plus calls (ties go
	// round-robin).
	BalanceLeastCalls = "least-calls"
	// BalanceSourceHash sends a client address to the same member while
	// that member is up (rendezvous hashing: when a member goes down, only
	// its clients move).
	BalanceSourceHash = "source-hash"
)

// Health probes.
const (
	// ProbeControl: TCP connect to port 1723, then a
	// Start-Control-Connection-Request that must be answered by a
	// Start-Control-Connection-Reply with result 1 (OK) within the timeout;
	// the probe then sends Stop-Control-Connection-Request and closes.
	ProbeControl = "control"
	// ProbeTCP: TCP connect to port 1723 within the timeout.
	ProbeTCP = "tcp"
	// ProbeNone: no probes; every member is always up.
	ProbeNone = "none"
)

// Pool defaults.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthProbe    = ProbeControl
	DefaultBalance        = BalanceLeastCalls
	// DefaultHealthFall and DefaultHealthRise: consecutive failed probes
	// that mark a member down, passed probes that bring it back.
	DefaultHealthFall = 2
	DefaultHealthRise = 2
	// MaxPoolMembers is how many members a pool may have (the member
	// field of the packet mark, internal/fwmark, numbers 127).
	MaxPoolMembers = 127
	// MinHealthInterval bounds how often a member is probed.
	MinHealthInterval = 100 * time.Millisecond
)

// Health is the `health:` block of a pooled forward.
type Health struct {
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Probe    string        `yaml:"probe"`
	// Fall and Rise: consecutive failures that mark a member down and
	// successes that bring it back up.
	Fall int `yaml:"fall"`
	Rise int `yaml:"rise"`
}

// WithDefaults returns h with its zero fields set to the defaults.
func (h Health) WithDefaults() Health {
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultHealthTimeout
	}
	if h.Probe == "" {
		h.Probe = DefaultHealthProbe
	}
	if h.Fall == 0 {
		h.Fall = DefaultHealthFall
	}
	if h.Rise == 0 {
		h.Rise = DefaultHealthRise
	}
	return h
}

// forwardKeys are the keys of one `forwards` item.
var forwardKeys = []string{"port", "to", "balance", "health"}

// UnmarshalYAML implements yaml.Unmarshaler: `to` is an address or a list
// of addresses. Unknown keys are errors, as everywhere in the file.
func (f *Forward) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a forward is a mapping {port, to[, balance, health]}", n.Line)
	}
	var aux struct {
		Port    uint16    `yaml:"port"`
		To      yaml.Node `yaml:"to"`
		Balance string    `yaml:"balance"`
		Health  Health    `yaml:"health"`
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(forwardKeys, k.Value) {
			return fmt.Errorf("line %d: unknown field %q", k.Line, k.Value)
		}
	}
	if h := mapValue(n, "health"); h != nil {
		if h.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: health is a mapping {interval, timeout, probe, fall, rise}", h.Line)
		}
		for i := 0; i+1 < len(h.Content); i += 2 {
			if k := h.Content[i]; !slices.Contains([]string{"interval", "timeout", "probe", "fall", "rise"}, k.Value) {
				return fmt.Errorf("line %d: unknown field %q", k.Line, k.Value)
			}
		}
	}
	if err := n.Decode(&aux); err != nil {
		return err
	}
	out := Forward{Port: aux.Port, Balance: aux.Balance, Health: aux.Health}
	switch aux.To.Kind {
	case 0: // not given
	case yaml.ScalarNode:
		out.To = aux.To.Value
	case yaml.SequenceNode:
		for _, m := range aux.To.Content {
			if m.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: to: each member is an IPv4 address", m.Line)
			}
			out.Pool = append(out.Pool, m.Value)
		}
		if len(out.Pool) > 0 {
			out.To = out.Pool[0]
		}
	default:
		return fmt.Errorf("line %d: to is an address or a list of addresses", aux.To.Line)
	}
	*f = out
	return nil
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// MarshalYAML implements yaml.Marshaler (a pool's `to` is written as a
// list, a single address as before).
func (f Forward) MarshalYAML() (any, error) {
	type plain struct {
		Port    uint16  `yaml:"port"`
		To      any     `yaml:"to"`
		Balance string  `yaml:"balance,omitempty"`
		Health  *Health `yaml:"health,omitempty"`
	}
	p := plain{Port: f.Port, To: f.To, Balance: f.Balance}
	if len(f.Pool) > 1 {
		p.To = f.Pool
	}
	if f.Health != (Health{}) {
		h := f.Health
		p.Health = &h
	}
	return p, nil
}

// Members returns the forward's servers: every `to` address, in order.
func (f Forward) Members() []netip.Addr {
	list := f.Pool
	if len(list) == 0 {
		list = []string{f.To}
	}
	out := make([]netip.Addr, 0, len(list))
	for _, s := range list {
		a, _ := netip.ParseAddr(s)
		out = append(out, a)
	}
	return out
}

// IsPool reports whether the forward is a pool: more than one member. A
// single `to` keeps the plain forward (one DNAT rule, no probes).
func (f Forward) IsPool() bool { return len(f.Pool) > 1 }

// BalanceOrDefault is Balance with the default applied.
func (f Forward) BalanceOrDefault() string {
	if f.Balance == "" {
		return DefaultBalance
	}
	return f.Balance
}

// validatePool checks the pool keys of every forward (the first member,
// `to`, is checked by Validate with the single-address rules).
func (c *Config) validatePool(bad func(field, format string, a ...any)) {
	members := map[netip.Addr]string{}
	for i, f := range c.Forwards {
		p := fmt.Sprintf("forwards[%d]", i)
		if len(f.Pool) > MaxPoolMembers {
			bad(p+".to", "%d members; a pool holds at most %d", len(f.Pool), MaxPoolMembers)
		}
		for j, s := range f.Pool {
			fp := fmt.Sprintf("%s.to[%d]", p, j)
			a, err := netip.ParseAddr(s)
			switch {
			case j == 0:
				// Validate checked it as `to`.
			case err != nil:
				bad(fp, "%q is not an IP address (give the address only: the server must listen on 1723)", s)
				continue
			case !a.Is4():
				bad(fp, "%s is not an IPv4 address", a)
				continue
			case !a.IsGlobalUnicast() && !a.IsPrivate():
				bad(fp, "%s is not a unicast address", a)
				continue
			}
			if err != nil {
				continue
			}
			if prev, dup := members[a]; dup {
				bad(fp, "%s is already a server of %s", a, prev)
				continue
			}
			members[a] = fp
		}
		if len(f.Pool) == 0 {
			if a, err := netip.ParseAddr(f.To); err == nil {
				if prev, dup := members[a]; dup {
					bad(p+".to", "%s is already a server of %s", a, prev)
				}
				members[a] = p + ".to"
			}
		}
		switch f.Balance {
		case "", BalanceLeastCalls, BalanceSourceHash:
		default:
			bad(p+".balance", "%q is not a balance policy (%s or %s)", f.Balance, BalanceLeastCalls, BalanceSourceHash)
		}
		h := f.Health
		if h.Interval < 0 || (h.Interval > 0 && h.Interval < MinHealthInterval) {
			bad(p+".health.interval", "%s is shorter than the %s minimum", h.Interval, MinHealthInterval)
		}
		if h.Timeout < 0 {
			bad(p+".health.timeout", "must be positive, got %s", h.Timeout)
		}
		if hd := h.WithDefaults(); hd.Timeout > hd.Interval && h.Interval >= MinHealthInterval {
			bad(p+".health.timeout", "%s is longer than the interval (%s): probes would overlap", hd.Timeout, hd.Interval)
		}
		switch h.Probe {
		case "", ProbeControl, ProbeTCP, ProbeNone:
		default:
			bad(p+".health.probe", "%q is not a probe (%s, %s or %s)", h.Probe, ProbeControl, ProbeTCP, ProbeNone)
		}
		for _, x := range []struct {
			k string
			v int
		}{{"fall", h.Fall}, {"rise", h.Rise}} {
			if x.v < 0 || x.v > 100 {
				bad(p+".health."+x.k, "%d out of range 1..100", x.v)
			}
		}
		if !f.IsPool() && (f.Balance != "" || f.Health != (Health{})) {
			bad(p+".to", "balance and health need a pool: give `to` as a list of two or more addresses")
		}
	}
}

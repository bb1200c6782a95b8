package rules

// Kernel conntrack timeouts (issue 10): the `conntrack_timeouts:` key.
//
// The traffic that stays on the kernel's path (everything but PPTP) is
// tracked by the kernel's conntrack. Its timeouts are set with nftables ct
// timeout objects in the daemon's table, one per protocol default and one
// per rule, assigned to new connections by a chain that runs after
// conntrack has created the entry (priority -200) and before it is confirmed
// (the end of postrouting/input), where `ct timeout set` takes effect:
//
//	ct timeout ct_tcp { protocol tcp; l3proto ip; policy = { established: 1234, ... } }
//	chain ct_timeouts_prerouting { type filter hook prerouting priority -150;
//	    ct state new meta l4proto tcp ct timeout set "ct_tcp"       // defaults first,
//	    ct state new meta l4proto udp ct timeout set "ct_udp"
//	    ct state new udp dport 53 ct timeout set "ct_rule_1"         // then rules, last
//	    ct state new ... ct timeout set "ct_rule_0" }                // to first: the first
//	chain ct_timeouts_output { ... hook output ... (the same rules) } // matching rule wins
//
// A ct timeout object holds a value for every state of its protocol (the
// kernel requires a full policy); the states the configuration leaves unset
// take the namespace's sysctls as Install finds them (KernelTimeoutBase).
// Object names end in a hash of their policy (ct_tcp_1a2b3c4d): see
// hashName.
//
// GRE the daemon does not handle would use the per-namespace sysctls
// net.netfilter.nf_conntrack_gre_timeout{,_stream}; GRESysctls sets them
// from `conntrack_timeouts.gre` and restores the values it found on Close.

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"pptpgw/qos"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Chains of the ct timeout rules, and their priority: after conntrack
// (-200), before dstnat (-100).
const (
	ChainCtTimeoutsPrerouting = "ct_timeouts_prerouting"
	ChainCtTimeoutsOutput     = "ct_timeouts_output"
	PriorityCtTimeouts        = -150
)

// KernelTimeouts is the `conntrack_timeouts:` key. Zero durations are
// unset: the kernel's value stays.
type KernelTimeouts struct {
	TCP   TCPTimeouts   `yaml:"tcp"`
	UDP   UDPTimeouts   `yaml:"udp"`
	GRE   GRETimeouts   `yaml:"gre"`
	Rules []TimeoutRule `yaml:"rules"`
}

// TCPTimeouts are the kernel's TCP conntrack states.
type TCPTimeouts struct {
	SynSent        time.Duration `yaml:"syn_sent"`
	SynRecv        time.Duration `yaml:"syn_recv"`
	Established    time.Duration `yaml:"established"`
	FinWait        time.Duration `yaml:"fin_wait"`
	CloseWait      time.Duration `yaml:"close_wait"`
	LastAck        time.Duration `yaml:"last_ack"`
	TimeWait       time.Duration `yaml:"time_wait"`
	Close          time.Duration `yaml:"close"`
	SynSent2       time.Duration `yaml:"syn_sent2"`
	Retrans        time.Duration `yaml:"retrans"`
	Unacknowledged time.Duration `yaml:"unacknowledged"`
}

// UDPTimeouts are the kernel's UDP conntrack states.
type UDPTimeouts struct {
	Unreplied time.Duration `yaml:"unreplied"`
	Replied   time.Duration `yaml:"replied"`
}

// GRETimeouts set the sysctls nf_conntrack_gre_timeout (Unreplied) and
// nf_conntrack_gre_timeout_stream (Replied).
type GRETimeouts struct {
	Unreplied time.Duration `yaml:"unreplied"`
	Replied   time.Duration `yaml:"replied"`
}

// TimeoutRule applies other timeouts to matching traffic: Protocol (tcp or
// udp, required) and any of Dport, Sport, Src, Dst.
type TimeoutRule struct {
	Protocol string      `yaml:"protocol"`
	Dport    uint16      `yaml:"dport"`
	Sport    uint16      `yaml:"sport"`
	Src      string      `yaml:"src"`
	Dst      string      `yaml:"dst"`
	TCP      TCPTimeouts `yaml:"tcp"`
	UDP      UDPTimeouts `yaml:"udp"`
}

// MaxKernelTimeout bounds every conntrack timeout: the kernel keeps them in
// 32-bit jiffies-derived seconds; a year is far beyond any use.
const MaxKernelTimeout = 365 * 24 * time.Hour

// tcpStates names the TCP states in the kernel's order (CTA_TIMEOUT_TCP_*
// minus one, google/nftables' CtStateTCP*), with the sysctl each defaults
// to ("" for syn_sent2, which has none) and the kernel's built-in value.
var tcpStates = []struct {
	key    string
	sysctl string
	def    uint32
	get    func(*TCPTimeouts) *time.Duration
}{
	{"syn_sent", "nf_conntrack_tcp_timeout_syn_sent", 120, func(t *TCPTimeouts) *time.Duration { return &t.SynSent }},
	{"syn_recv", "nf_conntrack_tcp_timeout_syn_recv", 60, func(t *TCPTimeouts) *time.Duration { return &t.SynRecv }},
	{"established", "nf_conntrack_tcp_timeout_established", 432000, func(t *TCPTimeouts) *time.Duration { return &t.Established }},
	{"fin_wait", "nf_conntrack_tcp_timeout_fin_wait", 120, func(t *TCPTimeouts) *time.Duration { return &t.FinWait }},
	{"close_wait", "nf_conntrack_tcp_timeout_close_wait", 60, func(t *TCPTimeouts) *time.Duration { return &t.CloseWait }},
	{"last_ack", "nf_conntrack_tcp_timeout_last_ack", 30, func(t *TCPTimeouts) *time.Duration { return &t.LastAck }},
	{"time_wait", "nf_conntrack_tcp_timeout_time_wait", 120, func(t *TCPTimeouts) *time.Duration { return &t.TimeWait }},
	{"close", "nf_conntrack_tcp_timeout_close", 10, func(t *TCPTimeouts) *time.Duration { return &t.Close }},
	{"syn_sent2", "", 120, func(t *TCPTimeouts) *time.Duration { return &t.SynSent2 }},
	{"retrans", "nf_conntrack_tcp_timeout_max_retrans", 300, func(t *TCPTimeouts) *time.Duration { return &t.Retrans }},
	{"unacknowledged", "nf_conntrack_tcp_timeout_unacknowledged", 300, func(t *TCPTimeouts) *time.Duration { return &t.Unacknowledged }},
}

var udpStates = []struct {
	key    string
	sysctl string
	def    uint32
	get    func(*UDPTimeouts) *time.Duration
}{
	{"unreplied", "nf_conntrack_udp_timeout", 30, func(t *UDPTimeouts) *time.Duration { return &t.Unreplied }},
	{"replied", "nf_conntrack_udp_timeout_stream", 120, func(t *UDPTimeouts) *time.Duration { return &t.Replied }},
}

// GRE sysctls.
const (
	SysctlGREUnreplied = "nf_conntrack_gre_timeout"
	SysctlGREReplied   = "nf_conntrack_gre_timeout_stream"
)

// sysctlDir is where the netfilter sysctls of the caller's network
// namespace are (a variable for tests).
var sysctlDir = "/proc/sys/net/netfilter"

// KernelTimeoutBase is the value, in seconds, of every TCP and UDP state
// the configuration leaves unset, and where it came from.
type KernelTimeoutBase struct {
	TCP, UDP             []uint32
	TCPSource, UDPSource []string // "kernel sysctl NAME" or "kernel built-in"
}

// ReadKernelTimeoutBase reads the conntrack sysctls of the caller's network
// namespace; a state without a readable sysctl takes the kernel's built-in
// default.
func ReadKernelTimeoutBase() KernelTimeoutBase {
	var b KernelTimeoutBase
	read := func(name string, def uint32) (uint32, string) {
		if name != "" {
			if s, err := os.ReadFile(sysctlDir + "/" + name); err == nil {
				if v, err := strconv.ParseUint(strings.TrimSpace(string(s)), 10, 32); err == nil {
					return uint32(v), "kernel sysctl " + name
				}
			}
		}
		return def, "kernel built-in"
	}
	for _, s := range tcpStates {
		v, src := read(s.sysctl, s.def)
		b.TCP, b.TCPSource = append(b.TCP, v), append(b.TCPSource, src)
	}
	for _, s := range udpStates {
		v, src := read(s.sysctl, s.def)
		b.UDP, b.UDPSource = append(b.UDP, v), append(b.UDPSource, src)
	}
	return b
}

// BuiltinKernelTimeoutBase is the kernel's compiled-in defaults (for tests
// and when no sysctl is readable).
func BuiltinKernelTimeoutBase() KernelTimeoutBase {
	var b KernelTimeoutBase
	for _, s := range tcpStates {
		b.TCP, b.TCPSource = append(b.TCP, s.def), append(b.TCPSource, "kernel built-in")
	}
	for _, s := range udpStates {
		b.UDP, b.UDPSource = append(b.UDP, s.def), append(b.UDPSource, "kernel built-in")
	}
	return b
}

func (t TCPTimeouts) isZero() bool { return t == TCPTimeouts{} }
func (t UDPTimeouts) isZero() bool { return t == UDPTimeouts{} }

// IsZero reports whether no conntrack timeout is configured (no object,
// rule or sysctl is touched then).
func (k KernelTimeouts) IsZero() bool {
	return k.TCP.isZero() && k.UDP.isZero() && k.GRE == GRETimeouts{} && len(k.Rules) == 0
}

func secs(d time.Duration) uint32 { return uint32((d + time.Second - 1) / time.Second) }

// tcpPolicy is base overlaid by each set layer, in order.
func tcpPolicy(base []uint32, layers ...TCPTimeouts) []uint32 {
	p := slices.Clone(base)
	for _, l := range layers {
		for i, s := range tcpStates {
			if d := *s.get(&l); d > 0 {
				p[i] = secs(d)
			}
		}
	}
	return p
}

func udpPolicy(base []uint32, layers ...UDPTimeouts) []uint32 {
	p := slices.Clone(base)
	for _, l := range layers {
		for i, s := range udpStates {
			if d := *s.get(&l); d > 0 {
				p[i] = secs(d)
			}
		}
	}
	return p
}

// validateKernelTimeouts reports the problems of c.ConntrackTimeouts.
func (c *Config) validateKernelTimeouts(bad func(field, format string, a ...any)) {
	k := c.ConntrackTimeouts
	checkTCP := func(p string, t TCPTimeouts) {
		for _, s := range tcpStates {
			checkKernelTimeout(bad, p+"."+s.key, *s.get(&t))
		}
	}
	checkUDP := func(p string, t UDPTimeouts) {
		for _, s := range udpStates {
			checkKernelTimeout(bad, p+"."+s.key, *s.get(&t))
		}
	}
	checkTCP("conntrack_timeouts.tcp", k.TCP)
	checkUDP("conntrack_timeouts.udp", k.UDP)
	checkKernelTimeout(bad, "conntrack_timeouts.gre.unreplied", k.GRE.Unreplied)
	checkKernelTimeout(bad, "conntrack_timeouts.gre.replied", k.GRE.Replied)
	for i, r := range k.Rules {
		p := fmt.Sprintf("conntrack_timeouts.rules[%d]", i)
		switch r.Protocol {
		case "tcp":
			if !r.UDP.isZero() {
				bad(p+".udp", "a tcp rule takes tcp: timeouts")
			}
			if r.TCP.isZero() {
				bad(p+".tcp", "required: at least one TCP state timeout")
			}
		case "udp":
			if !r.TCP.isZero() {
				bad(p+".tcp", "a udp rule takes udp: timeouts")
			}
			if r.UDP.isZero() {
				bad(p+".udp", "required: at least one UDP state timeout")
			}
		case "":
			bad(p+".protocol", "required: tcp or udp")
		default:
			bad(p+".protocol", "%q: must be tcp or udp", r.Protocol)
		}
		checkTCP(p+".tcp", r.TCP)
		checkUDP(p+".udp", r.UDP)
		for _, s := range []struct{ key, v string }{{"src", r.Src}, {"dst", r.Dst}} {
			if s.v == "" {
				continue
			}
			if pf, err := parseRoutePrefix(s.v); err != nil {
				bad(p+"."+s.key, "%v", err)
			} else if pf.Bits() == 0 {
				bad(p+"."+s.key, "%s matches everything; leave it out", s.v)
			}
		}
	}
}

func checkKernelTimeout(bad func(field, format string, a ...any), field string, d time.Duration) {
	switch {
	case d < 0:
		bad(field, "must be positive, got %s", d)
	case d > MaxKernelTimeout:
		bad(field, "%s is longer than the %s maximum", d, MaxKernelTimeout)
	case d > 0 && d%time.Second != 0:
		bad(field, "%s: the kernel counts whole seconds", d)
	}
}

// ctTimeoutObj is one ct timeout object of the plan.
type ctTimeoutObj struct {
	name   string // base + "_" + a hash of proto and policy
	proto  uint8
	policy []uint32 // in the kernel's state order
	base   string   // ct_tcp, ct_udp, ct_rule_N
}

// hashName names o after its content. The kernel cannot update a ct
// timeout object in place (NEWOBJ on an existing one is a silent no-op for
// this type), so a changed policy must be a new object: with the content
// in the name, a reload that keeps the table's objects and replaces its
// rules refers to new objects exactly when the timeouts changed.
func (o *ctTimeoutObj) hashName() {
	h := fnv.New32a()
	h.Write([]byte{o.proto})
	for _, v := range o.policy {
		binary.Write(h, binary.BigEndian, v)
	}
	o.base, o.name = o.name, fmt.Sprintf("%s_%08x", o.name, h.Sum32())
}

// CtTimeoutObjects returns the names of the ct timeout objects Install puts
// in p's table: a reload that keeps objects may delete the table's other
// ct timeout objects once the new rules are in.
func CtTimeoutObjects(p Plan) []string {
	objs, _ := ctTimeoutPlan(p.CtTimeouts, p.CtTimeoutBase)
	var out []string
	for _, o := range objs {
		out = append(out, o.name)
	}
	return out
}

// ctTimeoutRule assigns obj to new connections matching the rule.
type ctTimeoutRule struct {
	obj          string
	proto        uint8
	sport, dport uint16
	src, dst     netip.Prefix
}

// ctTimeoutPlan is what addCtTimeouts installs for k over base.
func ctTimeoutPlan(k KernelTimeouts, base KernelTimeoutBase) ([]ctTimeoutObj, []ctTimeoutRule) {
	var objs []ctTimeoutObj
	var rules []ctTimeoutRule
	if len(base.TCP) != len(tcpStates) || len(base.UDP) != len(udpStates) {
		base = BuiltinKernelTimeoutBase()
	}
	if !k.TCP.isZero() {
		objs = append(objs, ctTimeoutObj{name: "ct_tcp", proto: unix.IPPROTO_TCP, policy: tcpPolicy(base.TCP, k.TCP)})
		rules = append(rules, ctTimeoutRule{obj: "ct_tcp", proto: unix.IPPROTO_TCP})
	}
	if !k.UDP.isZero() {
		objs = append(objs, ctTimeoutObj{name: "ct_udp", proto: unix.IPPROTO_UDP, policy: udpPolicy(base.UDP, k.UDP)})
		rules = append(rules, ctTimeoutRule{obj: "ct_udp", proto: unix.IPPROTO_UDP})
	}
	// The last `ct timeout set` a connection meets wins: rules go in
	// reverse so that the first matching one of the configuration does.
	for i := len(k.Rules) - 1; i >= 0; i-- {
		r := k.Rules[i]
		o := ctTimeoutObj{name: "ct_rule_" + strconv.Itoa(i)}
		if r.Protocol == "udp" {
			o.proto, o.policy = unix.IPPROTO_UDP, udpPolicy(base.UDP, k.UDP, r.UDP)
		} else {
			o.proto, o.policy = unix.IPPROTO_TCP, tcpPolicy(base.TCP, k.TCP, r.TCP)
		}
		objs = append(objs, o)
		ru := ctTimeoutRule{obj: o.name, proto: o.proto, sport: r.Sport, dport: r.Dport}
		if r.Src != "" {
			ru.src, _ = parseRoutePrefix(r.Src)
		}
		if r.Dst != "" {
			ru.dst, _ = parseRoutePrefix(r.Dst)
		}
		rules = append(rules, ru)
	}
	named := map[string]string{}
	for i := range objs {
		objs[i].hashName()
		named[objs[i].base] = objs[i].name
	}
	for i := range rules {
		rules[i].obj = named[rules[i].obj]
	}
	return objs, rules
}

// ctTimeoutMu serialises marshalling ct timeout objects: google/nftables'
// expr.CtTimeout writes the policy into a package-level defaults map.
var ctTimeoutMu sync.Mutex

// addCtTimeouts adds the ct timeout objects and chains of p to t (nothing
// when p.CtTimeouts configures no TCP or UDP timeout).
func addCtTimeouts(c *nftables.Conn, t *nftables.Table, p Plan) {
	objs, rules := ctTimeoutPlan(p.CtTimeouts, p.CtTimeoutBase)
	if len(objs) == 0 {
		return
	}
	ctTimeoutMu.Lock()
	for _, o := range objs {
		pol := expr.CtStatePolicyTimeout{}
		for i, v := range o.policy {
			pol[uint16(i)] = v
		}
		c.AddObj(&nftables.NamedObj{Table: t, Name: o.name, Type: nftables.ObjTypeCtTimeout,
			Obj: &expr.CtTimeout{L3Proto: unix.NFPROTO_IPV4, L4Proto: o.proto, Policy: pol}})
	}
	ctTimeoutMu.Unlock()
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{ChainCtTimeoutsPrerouting, nftables.ChainHookPrerouting}, {ChainCtTimeoutsOutput, nftables.ChainHookOutput}} {
		ch := c.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: h.hook,
			Priority: nftables.ChainPriorityRef(PriorityCtTimeouts)})
		for _, r := range rules {
			ex := MatchCtStateNew()
			ex = append(ex, MatchL4Proto(r.proto)...)
			if r.src.IsValid() {
				ex = append(ex, MatchAddr(false, r.src)...)
			}
			if r.dst.IsValid() {
				ex = append(ex, MatchAddr(true, r.dst)...)
			}
			switch {
			case r.sport != 0 && r.dport != 0:
				// Both ports in one load, as nft merges them.
				ex = append(ex,
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(
						binaryutil.BigEndian.PutUint16(r.sport), r.dport)})
			case r.sport != 0:
				ex = append(ex, MatchPort(false, r.sport)...)
			case r.dport != 0:
				ex = append(ex, MatchPort(true, r.dport)...)
			}
			ex = append(ex, &expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: r.obj})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
		}
	}
}

// MatchCtStateNew is `ct state new`.
func MatchCtStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// MatchPort is `th dport P` (or `th sport P`): the transport header's port
// field, after a protocol match.
func MatchPort(dst bool, port uint16) []expr.Any {
	off := uint32(0)
	if dst {
		off = 2
	}
	return MatchPortRange(off, qos.PortRange{Lo: port, Hi: port})
}

// MatchAddr is `ip daddr PREFIX` (or `ip saddr PREFIX`) as nft emits it:
// a prefix ending on a byte loads and compares only its bytes, another one
// loads the whole address and masks it first.
func MatchAddr(dst bool, p netip.Prefix) []expr.Any {
	off := uint32(12)
	if dst {
		off = 16
	}
	a := p.Masked().Addr().As4()
	n := uint32(p.Bits()) / 8
	if p.Bits()%8 != 0 {
		n = 4
	}
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}}
	if p.Bits()%8 != 0 {
		m := binaryutil.BigEndian.PutUint32(^uint32(0) << (32 - p.Bits()))
		ex = append(ex, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m[:n], Xor: make([]byte, n)})
	}
	return append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:n]})
}

// GRESysctls sets the GRE conntrack sysctls of the caller's network
// namespace and restores them on Close.
//
// With StatePath set, the values found before the first change are also
// kept in that file until Close restores them: a run killed with -9 leaves
// it behind, and the next run restores the true originals from it rather
// than taking the killed run's settings for them.
type GRESysctls struct {
	StatePath string
	saved     map[string]string // sysctl -> value found before the first change
}

// Apply sets the sysctls g configures and restores those it no longer
// configures to the values found before the first Apply.
func (s *GRESysctls) Apply(g GRETimeouts) error {
	if s.saved == nil {
		s.saved = map[string]string{}
		if s.StatePath != "" {
			if b, err := os.ReadFile(s.StatePath); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if k, v, ok := strings.Cut(line, "="); ok && (k == SysctlGREUnreplied || k == SysctlGREReplied) {
						s.saved[k] = v + "\n"
					}
				}
			}
		}
	}
	defer s.persist() // the restored ones leave the file (best effort: the next run restores them again)
	for _, x := range []struct {
		name string
		d    time.Duration
	}{{SysctlGREUnreplied, g.Unreplied}, {SysctlGREReplied, g.Replied}} {
		p := sysctlDir + "/" + x.name
		if x.d == 0 {
			if old, ok := s.saved[x.name]; ok {
				if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
					return fmt.Errorf("restore %s: %w", x.name, err)
				}
				delete(s.saved, x.name)
			}
			continue
		}
		if _, ok := s.saved[x.name]; !ok {
			old, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", x.name, err)
			}
			s.saved[x.name] = string(old)
			// On disk before the sysctl changes: a kill -9 right after
			// the write must not lose the original.
			if err := s.persist(); err != nil {
				return fmt.Errorf("keep the original %s in %s: %w", x.name, s.StatePath, err)
			}
		}
		if err := os.WriteFile(p, []byte(strconv.Itoa(int(secs(x.d)))+"\n"), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", x.name, err)
		}
	}
	return nil
}

// Close restores every sysctl Apply changed.
func (s *GRESysctls) Close() error { return s.Apply(GRETimeouts{}) }

// persist writes the saved originals to StatePath, or removes it when
// nothing is changed.
func (s *GRESysctls) persist() error {
	if s.StatePath == "" {
		return nil
	}
	if len(s.saved) == 0 {
		if err := os.Remove(s.StatePath); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	var b strings.Builder
	for _, k := range []string{SysctlGREUnreplied, SysctlGREReplied} {
		if v, ok := s.saved[k]; ok {
			fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(v))
		}
	}
	// Written whole or not at all: a torn file would lose an original.
	tmp := s.StatePath + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.StatePath)
}

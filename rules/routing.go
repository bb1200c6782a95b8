package rules

// Policy routing (issue 10): the `routing:` key's tables, routes and rules,
// installed over rtnetlink and owned by the daemon.
//
// Ownership: every route and rule the daemon adds carries RouteProtocol in
// rtm_protocol (routes) or FRA_PROTOCOL (rules), a number no other routing
// daemon uses (see /etc/iproute2/rt_protos). Apply and Close find their own
// entries again by that number alone, so routes and rules left by a run
// killed with -9 are found and replaced (or removed) by the next start, and
// the operator's hand-written ones are never touched. `ip route show table
// all proto 147` and `ip rule show proto 147` list them.
//
// Apply never leaves a moment without a route: routes are replaced in place
// (RTM_NEWROUTE with NLM_F_REPLACE, `ip route replace`), new rules are added
// before the old ones are deleted, and only then are the routes no rule or
// configuration wants any more removed.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"pptpgw/internal/fwmark"
)

// RouteProtocol tags the routes and rules the daemon owns (rtm_protocol and
// FRA_PROTOCOL). 147 is unassigned in iproute2's rt_protos and in the
// kernel's RTPROT_* list; `ip route show proto 147` shows ours.
const RouteProtocol = 147

// DefaultRulePriority is the priority of the first `routing.rules` entry
// without one; the next such rule gets the next number. It stays below the
// kernel's `main` (32766) and `default` (32767) rules.
const DefaultRulePriority = 20000

// MaxRulePriority is the largest priority a configured rule may have: 32766
// and 32767 belong to the kernel's main and default lookups.
const MaxRulePriority = 32765

// Routing is the `routing:` key.
type Routing struct {
	Tables []RouteTable `yaml:"tables"`
	Rules  []RouteRule  `yaml:"rules"`
}

// RouteTable is one routing table the daemon fills.
type RouteTable struct {
	Name   string  `yaml:"name"`
	ID     uint32  `yaml:"id"`
	Routes []Route `yaml:"routes"`
}

// Route is one route of a table. To is a prefix or "default"; Via a
// gateway; Interface the outgoing interface (at least one of Via and
// Interface). Metric is the route's priority (0: the kernel's default).
type Route struct {
	To        string `yaml:"to"`
	Via       string `yaml:"via"`
	Interface string `yaml:"interface"`
	Metric    uint32 `yaml:"metric"`
}

// RouteRule is one policy rule: traffic matching every selector set (From,
// To, Class, IIF) looks up Table. Priority 0 means DefaultRulePriority plus
// the rule's index among those without one.
type RouteRule struct {
	From     string `yaml:"from"`
	To       string `yaml:"to"`
	Class    string `yaml:"class"`
	IIF      string `yaml:"iif"`
	Table    string `yaml:"table"`
	Priority int    `yaml:"priority"`
}

// RoutingClasses returns the names of the traffic classes of c (the
// `classes:` key of shaping, issue 9), in order: a rule's `class:` is the
// index of its name there, matched as fwmark.Class(index) on the class bits
// of the packet mark. A variable so that tests can name classes without a
// `classes:` list.
var RoutingClasses = func(c *Config) []string {
	names := make([]string, len(c.Classes))
	for i, cl := range c.Classes {
		names[i] = cl.Name
	}
	return names
}

// wellKnownTables are the kernel's own table names.
var wellKnownTables = map[string]uint32{"main": unix.RT_TABLE_MAIN, "default": unix.RT_TABLE_DEFAULT, "local": unix.RT_TABLE_LOCAL}

// parseRoutePrefix parses a route or rule destination: "default" or
// "any" (0.0.0.0/0), an IPv4 prefix, or an address (a /32).
func parseRoutePrefix(s string) (netip.Prefix, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "default", "any", "all":
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a prefix", s)
		}
		if !p.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("%s is not IPv4", p)
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix", s)
	}
	if !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%s is not IPv4", a)
	}
	return netip.PrefixFrom(a, 32), nil
}

// tableID resolves a rule's table: a configured table name, main, default,
// local, or a number.
func (r Routing) tableID(name string) (uint32, bool) {
	for _, t := range r.Tables {
		if t.Name == name {
			return t.ID, true
		}
	}
	if id, ok := wellKnownTables[name]; ok {
		return id, true
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil && n > 0 {
		return uint32(n), true
	}
	return 0, false
}

// validateRouting reports the problems of c.Routing through bad.
func (c *Config) validateRouting(bad func(field, format string, a ...any)) {
	r := c.Routing
	names, ids := map[string]int{}, map[uint32]int{}
	for i, t := range r.Tables {
		p := fmt.Sprintf("routing.tables[%d]", i)
		switch {
		case t.Name == "":
			bad(p+".name", "required: the name rules refer to")
		case wellKnownTables[t.Name] != 0:
			bad(p+".name", "%q is a kernel table; give yours another name", t.Name)
		case !tableRE.MatchString(t.Name):
			bad(p+".name", "%q is not a valid name (letter or _, then A-Z a-z 0-9 _ -)", t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				bad(p+".name", "%q is already routing.tables[%d]", t.Name, j)
			}
			names[t.Name] = i
		}
		switch {
		case t.ID == 0:
			bad(p+".id", "required: the table's number (1..252 or 256..4294967295)")
		case t.ID >= unix.RT_TABLE_DEFAULT && t.ID <= unix.RT_TABLE_LOCAL:
			bad(p+".id", "%d is a kernel table (253 default, 254 main, 255 local)", t.ID)
		default:
			if j, dup := ids[t.ID]; dup {
				bad(p+".id", "%d is already routing.tables[%d]", t.ID, j)
			}
			ids[t.ID] = i
		}
		if len(t.Routes) == 0 {
			bad(p+".routes", "a table needs at least one route")
		}
		dsts := map[string]int{}
		for k, rt := range t.Routes {
			q := fmt.Sprintf("%s.routes[%d]", p, k)
			if rt.To == "" {
				bad(q+".to", "required: a prefix or default")
			} else if pfx, err := parseRoutePrefix(rt.To); err != nil {
				bad(q+".to", "%v", err)
			} else {
				key := pfx.String() + "/" + strconv.Itoa(int(rt.Metric))
				if j, dup := dsts[key]; dup {
					bad(q+".to", "%s (metric %d) is already routes[%d] of this table", pfx, rt.Metric, j)
				}
				dsts[key] = k
			}
			if rt.Via == "" && rt.Interface == "" {
				bad(q, "needs via (a gateway), interface, or both")
			}
			if rt.Via != "" {
				if a, err := netip.ParseAddr(rt.Via); err != nil || !a.Is4() {
					bad(q+".via", "%q is not an IPv4 address", rt.Via)
				}
			}
			if rt.Interface != "" && !ifnameRE.MatchString(rt.Interface) {
				bad(q+".interface", "%q is not a valid interface name", rt.Interface)
			}
		}
	}
	classes := RoutingClasses(c)
	for i, ru := range r.Rules {
		p := fmt.Sprintf("routing.rules[%d]", i)
		if ru.Table == "" {
			bad(p+".table", "required: a table of routing.tables, main, default or a number")
		} else if _, ok := r.tableID(ru.Table); !ok {
			bad(p+".table", "%q is not in routing.tables (nor main, default, local or a number)", ru.Table)
		}
		for _, s := range []struct{ key, v string }{{"from", ru.From}, {"to", ru.To}} {
			if s.v == "" {
				continue
			}
			if _, err := parseRoutePrefix(s.v); err != nil {
				bad(p+"."+s.key, "%v", err)
			}
		}
		if ru.Class != "" && !slices.Contains(classes, ru.Class) {
			if len(classes) == 0 {
				bad(p+".class", "%q: no classes are defined (the classes: key)", ru.Class)
			} else {
				bad(p+".class", "%q is not one of classes: %s", ru.Class, strings.Join(classes, ", "))
			}
		}
		if ru.IIF != "" && !ifnameRE.MatchString(ru.IIF) {
			bad(p+".iif", "%q is not a valid interface name", ru.IIF)
		}
		if ru.Priority < 0 || ru.Priority > MaxRulePriority {
			bad(p+".priority", "%d out of range 1..%d (0 or unset: from %d on)", ru.Priority, MaxRulePriority, DefaultRulePriority)
		}
	}
}

// PlanRoute is a route as installed: Dst in Table via Gw and/or Dev.
type PlanRoute struct {
	Table  uint32
	Dst    netip.Prefix
	Gw     netip.Addr // invalid: none
	Dev    string     // "": none
	Metric uint32

	// GwFromMain (an uplink without via): Apply takes the gateway of the
	// main table's default route through Dev; a device route only when
	// Dev is point-to-point.
	GwFromMain bool
}

// PlanRule is a policy rule as installed. Mask 0 means no mark match.
type PlanRule struct {
	Priority   int
	Table      uint32
	Src, Dst   netip.Prefix // invalid: any
	Mark, Mask uint32
	IIF        string
}

// RoutingPlan is what Router.Apply installs: the routes and rules of a
// validated Config.
type RoutingPlan struct {
	Routes []PlanRoute
	Rules  []PlanRule
}

// NewRoutingPlan derives the RoutingPlan of a validated Config.
func NewRoutingPlan(c *Config) RoutingPlan {
	var p RoutingPlan
	for _, t := range c.Routing.Tables {
		for _, rt := range t.Routes {
			dst, _ := parseRoutePrefix(rt.To)
			gw, _ := netip.ParseAddr(rt.Via)
			p.Routes = append(p.Routes, PlanRoute{Table: t.ID, Dst: dst, Gw: gw, Dev: rt.Interface, Metric: rt.Metric})
		}
	}
	classes := RoutingClasses(c)
	auto := DefaultRulePriority
	for _, ru := range c.Routing.Rules {
		id, _ := c.Routing.tableID(ru.Table)
		pr := PlanRule{Priority: ru.Priority, Table: id, IIF: ru.IIF}
		if pr.Priority == 0 {
			pr.Priority = auto
			auto++
		}
		// A 0-bit prefix matches all, which the kernel stores as no
		// selector at all: keep it invalid so it compares equal.
		if pf, err := parseRoutePrefix(ru.From); err == nil && pf.Bits() > 0 {
			pr.Src = pf
		}
		if pf, err := parseRoutePrefix(ru.To); err == nil && pf.Bits() > 0 {
			pr.Dst = pf
		}
		if ru.Class != "" {
			pr.Mark, pr.Mask = fwmark.Class(slices.Index(classes, ru.Class)), fwmark.ClassMask
		}
		p.Rules = append(p.Rules, pr)
	}
	c.uplinkRoutes(&p)
	return p
}

// Router owns the daemon's policy routing in one network namespace.
type Router struct {
	h *netlink.Handle
}

// NewRouter opens rtnetlink in the network namespace open as netnsFd (0:
// the caller's).
func NewRouter(netnsFd int) (*Router, error) {
	var h *netlink.Handle
	var err error
	if netnsFd == 0 {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(netns.NsHandle(netnsFd), unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("rtnetlink: %w", err)
	}
	return &Router{h: h}, nil
}

// prefixNet converts a valid prefix to the form netlink takes (nil for an
// invalid one).
func prefixNet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

func netPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits)
}

func (r PlanRoute) String() string {
	s := fmt.Sprintf("%s table %d", r.Dst, r.Table)
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// key identifies a route within the kernel: replacing a route of the same
// key overwrites it.
func (r PlanRoute) key() string { return fmt.Sprintf("%d %s %d", r.Table, r.Dst, r.Metric) }

func (r PlanRule) key() string {
	return fmt.Sprintf("%d %d %s %s %x/%x %s", r.Priority, r.Table, r.Src, r.Dst, r.Mark, r.Mask, r.IIF)
}

func (r PlanRule) String() string {
	s := fmt.Sprintf("%d:", r.Priority)
	if r.Src.IsValid() {
		s += " from " + r.Src.String()
	}
	if r.Dst.IsValid() {
		s += " to " + r.Dst.String()
	}
	if r.Mask != 0 {
		s += fmt.Sprintf(" fwmark %#x/%#x", r.Mark, r.Mask)
	}
	if r.IIF != "" {
		s += " iif " + r.IIF
	}
	return s + fmt.Sprintf(" lookup %d", r.Table)
}

func ruleKeyOf(k netlink.Rule) string {
	r := PlanRule{Priority: k.Priority, Table: uint32(k.Table), Src: netPrefix(k.Src), Dst: netPrefix(k.Dst), IIF: k.IifName}
	if k.Mask != nil && *k.Mask != 0 {
		r.Mark, r.Mask = k.Mark, *k.Mask
	}
	return r.key()
}

// owned lists the routes and rules carrying RouteProtocol.
func (rt *Router) owned() ([]netlink.Route, []netlink.Rule, error) {
	routes, err := rt.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: RouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, nil, fmt.Errorf("list routes: %w", err)
	}
	all, err := rt.h.RuleList(unix.AF_INET)
	if err != nil {
		return nil, nil, fmt.Errorf("list rules: %w", err)
	}
	var rules []netlink.Rule
	for _, r := range all {
		if r.Protocol == RouteProtocol {
			rules = append(rules, r)
		}
	}
	return routes, rules, nil
}

// Apply brings the kernel's routes and rules of RouteProtocol to match p:
// routes are replaced in place, missing rules added, then rules and routes
// p does not have are deleted. Entries that already match are left as they
// are, so applying the same plan twice changes nothing, and traffic is
// never without a route in between. It returns every failure joined; what
// succeeded stays, and when a route or rule could not be written nothing
// old is deleted (a failed change never leaves less routing than before).
func (rt *Router) Apply(p RoutingPlan) error {
	var errs []error
	wantRoutes := map[string]bool{}
	for _, r := range p.Routes {
		nr := &netlink.Route{Table: int(r.Table), Dst: prefixNet(r.Dst), Protocol: RouteProtocol,
			Priority: int(r.Metric), Family: unix.AF_INET}
		if r.Gw.IsValid() {
			nr.Gw = r.Gw.AsSlice()
		}
		// A route that cannot be written keeps the one of its key in
		// place, if any: a failed change never leaves less than before.
		wantRoutes[r.key()] = true
		if r.Dev != "" {
			l, err := rt.h.LinkByName(r.Dev)
			if err != nil {
				errs = append(errs, fmt.Errorf("route %s: interface %s: %w", r, r.Dev, err))
				continue
			}
			nr.LinkIndex = l.Attrs().Index
			if r.GwFromMain && !r.Gw.IsValid() && l.Attrs().Flags&net.FlagPointToPoint == 0 {
				gw, err := rt.mainGateway(nr.LinkIndex)
				if err != nil {
					errs = append(errs, fmt.Errorf("route %s: %w", r, err))
					continue
				}
				nr.Gw = gw.AsSlice()
			}
		}
		if nr.Gw == nil {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := rt.h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
		}
	}
	routes, rules, err := rt.owned()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	have := map[string]bool{}
	for _, k := range rules {
		have[ruleKeyOf(k)] = true
	}
	want := map[string]bool{}
	for _, r := range p.Rules {
		want[r.key()] = true
		if have[r.key()] {
			continue
		}
		nr := netlink.NewRule()
		nr.Family = unix.AF_INET
		nr.Priority = r.Priority
		nr.Table = int(r.Table)
		nr.Src, nr.Dst = prefixNet(r.Src), prefixNet(r.Dst)
		nr.IifName = r.IIF
		nr.Protocol = RouteProtocol
		if r.Mask != 0 {
			m := r.Mask
			nr.Mark, nr.Mask = r.Mark, &m
		}
		if err := rt.h.RuleAdd(nr); err != nil {
			errs = append(errs, fmt.Errorf("rule %s: %w", r, err))
		}
		have[r.key()] = true
	}
	if len(errs) > 0 {
		// Something new is not in place: the old rules and routes stay
		// until an Apply succeeds (the kernel keeps routing as before).
		return errors.Join(errs...)
	}
	for i := range rules {
		if !want[ruleKeyOf(rules[i])] {
			if err := rt.h.RuleDel(&rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete old rule %s: %w", rules[i], err))
			}
		}
	}
	for i := range routes {
		r := routes[i]
		k := PlanRoute{Table: uint32(r.Table), Dst: netPrefix(r.Dst), Metric: uint32(r.Priority)}
		if !k.Dst.IsValid() {
			k.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		if !wantRoutes[k.key()] {
			if err := rt.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete old route %s: %w", k, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mainGateway is the gateway of the main table's default route out of the
// interface ifindex (the lowest metric's).
func (rt *Router) mainGateway(ifindex int) (netip.Addr, error) {
	routes, err := rt.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: ifindex},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list main routes: %w", err)
	}
	var best netip.Addr
	metric := -1
	for _, r := range routes {
		if d := netPrefix(r.Dst); d.IsValid() && d.Bits() != 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Gw)
		if !ok || !a.Unmap().Is4() {
			continue
		}
		if metric < 0 || r.Priority < metric {
			best, metric = a.Unmap(), r.Priority
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errors.New("no via, and the main table has no default route with a gateway through the interface (set via)")
	}
	return best, nil
}

// Owned returns how many routes and rules of RouteProtocol the kernel has
// (what Close would remove), for logs: a start that finds some found the
// leftovers of a run that could not clean up.
func (rt *Router) Owned() (routes, rules int, err error) {
	ro, ru, err := rt.owned()
	return len(ro), len(ru), err
}

// Close removes every rule, then every route, of RouteProtocol, and closes
// the netlink handle.
func (rt *Router) Close() error {
	err := rt.Apply(RoutingPlan{})
	rt.h.Close()
	return err
}

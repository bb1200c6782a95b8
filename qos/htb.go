package qos

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The HTB tree the Shaper builds on each shaped interface (tc notation):
//
//	qdisc htb 1: root default <default's minor>      r2q 10
//	class htb 1:1 parent 1: rate RATE ceil RATE      the link
//	class htb 1:(16*(i+1)) parent 1:1 rate R ceil C prio P quantum Q
//	                                                 class i of `classes:`
//	qdisc <leaf> (0x100+i): parent 1:(16*(i+1))      fq_codel, sfq or pfifo
//
// A class has the same minor on every interface, so one nftables
// `meta priority set 1:X` (or one engine verdict) per class serves every
// shaped interface; HTB takes a valid leaf class id straight from
// skb->priority, without any tc filter. A packet whose priority names no
// leaf of this interface's tree goes to the default class.
//
// The minors are multiples of 16 on purpose: a packet classed for shaping
// may leave by an interface that is not shaped, whose qdisc may read
// skb->priority too. pfifo_fast (and prio) use priority & 15 (TC_PRIO_*) to
// pick a band, and VLAN egress maps use priority & 15 as well; with the low
// four bits zero every classed packet is TC_PRIO_BESTEFFORT there (band 1,
// the band forwarded traffic gets anyway unless its TOS says otherwise).

// Handles.
const (
	RootMajor   = 1
	RootHandle  = RootMajor << 16 // 1:
	LinkClassID = RootHandle | 1  // 1:1
	// r2q as tc uses it; quantums are computed and always given, so it
	// only matters for the kernel's own warnings.
	htbR2Q = 10
)

// ClassID is the HTB class id (skb->priority) of class i (0-based index in
// `classes:`): 1:(16*(i+1)).
func ClassID(i int) uint32 { return RootHandle | uint32(i+1)<<4&0xfff0 }

// ClassIndex is the inverse of ClassID (-1 if id is no class's).
func ClassIndex(id uint32) int {
	if id>>16 != RootMajor || id&0xf != 0 || id&0xffff < 16 {
		return -1
	}
	return int(id&0xffff>>4) - 1
}

func leafHandle(i int) uint32 { return uint32(0x100+i) << 16 }

// Leaf qdisc kinds, best first.
const (
	LeafFQCodel = "fq_codel"
	LeafSFQ     = "sfq"
	LeafPfifo   = "pfifo"
)

// LeafLatency is how much queue a pfifo leaf holds at the class's ceil:
// a short queue so that a class does not bloat.
const LeafLatency = 80 // ms

// PfifoLimit is the packet limit of a pfifo leaf for a class sending at
// ceil: LeafLatency ms of full-size packets, at least 8.
func PfifoLimit(ceil Rate) uint32 {
	return uint32(max(ceil.BytesPerSecond()*LeafLatency/1000/1514, 8))
}

// Quantum is the HTB quantum of a class of rate r when none is given: a
// hundredth of a second at the rate, at least one full-size frame and at
// most 60000 bytes (the kernel warns above 200000).
func Quantum(r Rate) uint32 {
	return uint32(min(max(r.BytesPerSecond()/100, 1514), 60000))
}

// Tree is one interface's HTB tree, resolved from the config: class
// indexes, names and rates.
type Tree struct {
	Interface string
	Rate      Rate
	Default   int // index of the default class
	Leaves    []Leaf
}

// Leaf is one leaf class of a Tree.
type Leaf struct {
	Index    int // in `classes:`
	Name     string
	Priority int
	Rate     Rate
	Ceil     Rate
	Burst    Size
	Quantum  Size
}

// Trees resolves the shaping entries against the classes (by name). The
// config must be valid (rules validates it); unknown names are errors.
func Trees(classes []Class, shaping []Shaping) ([]Tree, error) {
	idx := map[string]int{}
	for i, c := range classes {
		idx[c.Name] = i
	}
	var out []Tree
	for _, s := range shaping {
		t := Tree{Interface: s.Interface, Rate: s.Rate}
		d, ok := idx[s.Default]
		if !ok {
			return nil, fmt.Errorf("qos: %s: default class %q not in classes", s.Interface, s.Default)
		}
		t.Default = d
		for _, c := range s.Classes {
			i, ok := idx[c.Class]
			if !ok {
				return nil, fmt.Errorf("qos: %s: class %q not in classes", s.Interface, c.Class)
			}
			ceil := c.Ceil
			if ceil == 0 {
				ceil = s.Rate
			}
			t.Leaves = append(t.Leaves, Leaf{Index: i, Name: c.Class, Priority: c.Priority,
				Rate: c.Rate, Ceil: ceil, Burst: c.Burst, Quantum: c.Quantum})
		}
		if !slices.ContainsFunc(t.Leaves, func(l Leaf) bool { return l.Index == d }) {
			return nil, fmt.Errorf("qos: %s: default class %q has no entry in its classes", s.Interface, s.Default)
		}
		out = append(out, t)
	}
	return out, nil
}

// Shaper owns the HTB trees of the shaped interfaces, in the network
// namespace of the goroutine that calls it (the daemon's). Apply brings
// the kernel to a config, changing what differs in place (the root is
// never removed while its interface stays shaped); Close removes exactly
// the root qdiscs it created.
type Shaper struct {
	mu   sync.Mutex
	log  *slog.Logger
	leaf string           // probed leaf kind ("" until the first Apply)
	own  map[string]*tree // interfaces this Shaper put a root on
}

// tree is what the Shaper created on one interface.
type tree struct {
	defcls uint32            // the root's default class (minor)
	leaves map[uint32]string // leaf class ids -> leaf qdisc kind
}

// NewShaper returns a Shaper that has created nothing yet.
func NewShaper(log *slog.Logger) *Shaper {
	if log == nil {
		log = slog.Default()
	}
	return &Shaper{log: log, own: map[string]*tree{}}
}

// LeafKind is the leaf qdisc kind in use ("" before the first Apply).
func (s *Shaper) LeafKind() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaf
}

// Interfaces lists the interfaces the Shaper has a tree on.
func (s *Shaper) Interfaces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.own {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Apply makes the kernel's trees match trees: new interfaces get a tree,
// shaped interfaces have their root, link class and leaves changed in place
// (leaves no longer configured are deleted, new ones added), interfaces no
// longer listed lose the root this Shaper created. An interface whose root
// qdisc is someone else's HTB 1: is taken over only if this Shaper created
// it; otherwise the root is replaced (tc qdisc replace). A changed default
// class rebuilds the interface's tree (HTB cannot change its root in
// place).
func (s *Shaper) Apply(trees []Tree) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	want := map[string]bool{}
	for _, t := range trees {
		want[t.Interface] = true
		if err := s.applyTree(t); err != nil {
			errs = append(errs, fmt.Errorf("qos: %s: %w", t.Interface, err))
		}
	}
	for name := range s.own {
		if !want[name] {
			if err := s.removeRoot(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Shaper) applyTree(t Tree) error {
	link, err := netlink.LinkByName(t.Interface)
	if err != nil {
		return fmt.Errorf("interface: %w", err)
	}
	ix := link.Attrs().Index
	defcls := ClassID(t.Default) & 0xffff
	own, mine := s.own[t.Interface]
	if mine && own.defcls != defcls {
		// HTB has no change operation for its root (the kernel answers
		// EINVAL), so a new default class means a new tree: the one
		// change that interrupts the interface's traffic, briefly.
		s.log.Warn("qos: the default class changed: rebuilding the HTB tree", "interface", t.Interface)
		if err := s.removeRoot(t.Interface); err != nil {
			return err
		}
		mine = false
	}
	if !mine {
		if err := s.removeLeftRoot(link); err != nil {
			return err
		}
		root := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: ix, Handle: RootHandle, Parent: netlink.HANDLE_ROOT})
		root.Rate2Quantum = htbR2Q
		root.Defcls = defcls
		if err := netlink.QdiscReplace(root); err != nil {
			return fmt.Errorf("htb root: %w", err)
		}
		own = &tree{defcls: defcls, leaves: map[uint32]string{}}
		s.own[t.Interface] = own
	}
	leaves := own.leaves
	linkClass := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: ix, Handle: LinkClassID, Parent: RootHandle},
		netlink.HtbClassAttrs{Rate: uint64(t.Rate), Ceil: uint64(t.Rate), Quantum: Quantum(t.Rate)})
	if err := netlink.ClassReplace(linkClass); err != nil {
		return fmt.Errorf("htb class 1:1: %w", err)
	}
	keep := map[uint32]bool{}
	for _, l := range t.Leaves {
		id := ClassID(l.Index)
		keep[id] = true
		q := uint32(l.Quantum)
		if q == 0 {
			q = Quantum(l.Rate)
		}
		c := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: ix, Handle: id, Parent: LinkClassID},
			netlink.HtbClassAttrs{Rate: uint64(l.Rate), Ceil: uint64(l.Ceil), Buffer: uint32(l.Burst),
				Cbuffer: uint32(l.Burst), Quantum: q, Prio: uint32(l.Priority)})
		if err := netlink.ClassReplace(c); err != nil {
			return fmt.Errorf("htb class %s (%s): %w", handleString(id), l.Name, err)
		}
		kind, err := s.setLeaf(ix, l, leaves[id] != "")
		if err != nil {
			return fmt.Errorf("leaf qdisc of %s: %w", handleString(id), err)
		}
		leaves[id] = kind
	}
	for id := range leaves {
		if !keep[id] {
			err := netlink.ClassDel(&netlink.HtbClass{ClassAttrs: netlink.ClassAttrs{LinkIndex: ix, Handle: id, Parent: LinkClassID}})
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete class %s: %w", handleString(id), err)
			}
			delete(leaves, id)
		}
	}
	return nil
}

// setLeaf puts the leaf qdisc under class l. The first one probes the
// kinds, best first, and logs the choice.
func (s *Shaper) setLeaf(ix int, l Leaf, exists bool) (string, error) {
	kinds := []string{s.leaf}
	if s.leaf == "" {
		kinds = []string{LeafFQCodel, LeafSFQ, LeafPfifo}
	}
	var errs []error
	for _, k := range kinds {
		err := execute(LeafQdiscMsg(ix, ClassID(l.Index), leafHandle(l.Index), k, l.Ceil))
		if err == nil {
			if s.leaf == "" {
				s.leaf = k
				s.log.Info("qos leaf qdisc", "kind", k, "probed", kinds, "refused", errors.Join(errs...))
			}
			return k, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", k, err))
	}
	return "", errors.Join(errs...)
}

// LeafQdiscMsg is the RTM_NEWQDISC request (create or replace) of a leaf
// qdisc of kind under class parent: fq_codel and sfq with the kernel's
// defaults, pfifo with PfifoLimit(ceil) packets. vishvananda/netlink has
// no pfifo limit, so the leaves are encoded here.
func LeafQdiscMsg(ix int, parent, handle uint32, kind string, ceil Rate) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: int32(ix), Handle: handle, Parent: parent})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated(kind)))
	// As tc(8) sends them (golden-tc.hex): pfifo its limit, fq_codel an
	// empty options attribute, sfq none; both take the kernel's defaults.
	switch kind {
	case LeafPfifo:
		req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, nl.Uint32Attr(PfifoLimit(ceil))))
	case LeafFQCodel:
		req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, nil))
	}
	return req
}

func execute(req *nl.NetlinkRequest) error {
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// removeLeftRoot deletes an HTB root with the daemon's handle that this
// Shaper did not create: the tree of a run that was killed (kill -9, a
// crash) before it could remove it. Replacing it in place is not possible:
// HTB has no change operation for its root, and the kernel answers EINVAL
// to a replace that keeps handle 1:. Any other root qdisc (the operator's,
// or the interface's default) is replaced by the new tree as before.
func (s *Shaper) removeLeftRoot(link netlink.Link) error {
	qs, err := netlink.QdiscList(link)
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		a := q.Attrs()
		if a.Parent != netlink.HANDLE_ROOT || a.Handle != RootHandle || q.Type() != "htb" {
			continue
		}
		s.log.Info("qos: replacing the HTB tree an earlier run left", "interface", link.Attrs().Name)
		if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete the HTB root an earlier run left: %w", err)
		}
	}
	return nil
}

func (s *Shaper) removeRoot(name string) error {
	delete(s.own, name)
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // the interface went, and its qdiscs with it
		}
		return fmt.Errorf("qos: %s: %w", name, err)
	}
	err = netlink.QdiscDel(&netlink.Htb{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index, Handle: RootHandle, Parent: netlink.HANDLE_ROOT}})
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("qos: %s: delete htb root: %w", name, err)
	}
	return nil
}

// Close removes the root qdiscs this Shaper created (the kernel then puts
// the interface's default qdisc back).
func (s *Shaper) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name := range s.own {
		errs = append(errs, s.removeRoot(name))
	}
	return errors.Join(errs...)
}

func handleString(h uint32) string { return fmt.Sprintf("%x:%x", h>>16, h&0xffff) }

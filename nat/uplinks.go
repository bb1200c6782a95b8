package nat

// Several uplinks (issue 10).
//
// With more than one WAN interface the engine keeps a small uplink table
// (index -> ifindex, public address; index 0 is the WAN of EngineConfig and
// follows SetWANIndex and SetPublicIP). Then:
//
//  1. A control connection's uplink is the interface its first packet
//     leaves by (OutDev in postrouting) or, for a forwarded server, comes in
//     by (InDev in prerouting); its public address, and so its calls', is
//     that uplink's.
//  2. Its (inside host, peer) pair is pinned to the uplink through the
//     Pinner (an nftables map that marks the pair's GRE in prerouting with
//     fwmark.Uplink(i), which an ip rule routes out of uplink i) until the
//     last control connection of the pair leaves the table. With the
//     pair's connections on several uplinks the newest one's is pinned;
//     when it goes, the uplink of one still there.
//  3. GRE whose public address belongs to another uplink than the one it
//     arrives on (inbound) or is about to leave by (outbound: routing went
//     wrong) is dropped and counted as gre_wrong_uplink, never translated.
//
// The pin references are under pinMu, a leaf lock taken under ctlMu (new
// connections) or Table.mu (OnControlRemoved); the Pinner must not block.

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"pptpgw/conntrack"
	"pptpgw/nat/nfq"
)

// Uplink is one WAN interface of several.
type Uplink struct {
	IfIndex  uint32
	PublicIP netip.Addr
}

// Pinner publishes that GRE between inside and peer must leave by uplink
// (Pin) or no longer has to (Unpin). Calls come in order per pair; they
// must not block (the engine calls them with its locks held).
type Pinner interface {
	Pin(inside, peer [4]byte, uplink int)
	Unpin(inside, peer [4]byte)
}

// uplinkTable is an immutable snapshot of the uplinks.
type uplinkTable struct {
	ifs  []uint32
	pubs [][4]byte
}

// uplinkState is the engine's part of issue 10 (a field of Engine).
type uplinkState struct {
	up    atomic.Pointer[uplinkTable] // nil: a single WAN
	pins  atomic.Pointer[Pinner]
	pinMu sync.Mutex
	refs  map[[8]byte]pinRef // (inside, peer) -> its pin
}

type pinRef struct {
	uplink int         // the uplink published for the pair
	n      int         // control connections of the pair
	by     map[int]int // of which, per uplink (most pairs have one)
}

// SetUplinks sets the uplink table: u[0] must be the WAN (the engine keeps
// it in step with SetWANIndex and SetPublicIP from then on). Fewer than two
// uplinks means a single WAN.
func (e *Engine) SetUplinks(u []Uplink) {
	if len(u) < 2 {
		e.ups.up.Store(nil)
		e.refreshKernel(true) // kfeat (issue 12)
		return
	}
	t := &uplinkTable{}
	for _, x := range u {
		var a [4]byte
		if x.PublicIP.Is4() {
			a = x.PublicIP.As4()
		}
		t.ifs, t.pubs = append(t.ifs, x.IfIndex), append(t.pubs, a)
	}
	e.ups.up.Store(t)
	e.refreshKernel(true) // kfeat (issue 12)
}

// SetUplink changes uplink i's interface index and public address (a
// watcher saw its interface come back or its address change).
func (e *Engine) SetUplink(i int, ifindex uint32, pub netip.Addr) { e.setUplink(i, ifindex, pub) }

// setUplink is SetUplink; it reports whether it refreshed the kernel
// path's elements: only when the interface index changed (kfeat, issue
// 12). An address-only change moves no element: its calls keep the
// uplink's interface (recomputed, calls on the old address would find no
// uplink and get the WAN's).
func (e *Engine) setUplink(i int, ifindex uint32, pub netip.Addr) bool {
	for {
		old := e.ups.up.Load()
		if old == nil || i < 0 || i >= len(old.ifs) {
			return false
		}
		t := &uplinkTable{ifs: append([]uint32(nil), old.ifs...), pubs: append([][4]byte(nil), old.pubs...)}
		if ifindex != 0 {
			t.ifs[i] = ifindex
		}
		if pub.Is4() {
			t.pubs[i] = pub.As4()
		}
		if e.ups.up.CompareAndSwap(old, t) {
			if t.ifs[i] == old.ifs[i] {
				return false
			}
			e.refreshKernelGRE() // kfeat (issue 12)
			return true
		}
	}
}

// Uplinks returns the uplink table (nil with a single WAN).
func (e *Engine) Uplinks() []Uplink {
	t := e.ups.up.Load()
	if t == nil {
		return nil
	}
	out := make([]Uplink, len(t.ifs))
	for i := range t.ifs {
		out[i] = Uplink{IfIndex: t.ifs[i], PublicIP: netip.AddrFrom4(t.pubs[i])}
	}
	return out
}

// SetPinner sets where the engine publishes GRE pins (nil: nowhere).
func (e *Engine) SetPinner(p Pinner) {
	if p == nil {
		e.ups.pins.Store(nil)
		return
	}
	e.ups.pins.Store(&p)
}

// isUplinkIf reports whether ifindex is one of the uplinks.
func (e *Engine) isUplinkIf(ifindex uint32) bool {
	t := e.ups.up.Load()
	if t == nil {
		return false
	}
	for _, i := range t.ifs {
		if i == ifindex {
			return true
		}
	}
	return false
}

// uplinkOfPublic returns the index of the uplink whose public address is a,
// and its interface, or -1.
func (t *uplinkTable) uplinkOfPublic(a [4]byte) (int, uint32) {
	for i, p := range t.pubs {
		if p == a {
			return i, t.ifs[i]
		}
	}
	return -1, 0
}

// isPublic reports whether a is the public address of the WAN or of an
// uplink. ctlMu is held.
func (e *Engine) isPublic(a [4]byte) bool {
	if a == e.pub {
		return true
	}
	if t := e.ups.up.Load(); t != nil {
		i, _ := t.uplinkOfPublic(a)
		return i >= 0
	}
	return false
}

// publicFor returns the public address of a new control connection whose
// first packet crosses the interface dev (OutDev outbound, InDev inbound):
// that uplink's, or the WAN's. ctlMu is held.
func (e *Engine) publicFor(dev uint32) [4]byte {
	if t := e.ups.up.Load(); t != nil {
		for i, x := range t.ifs {
			if x == dev && i > 0 {
				return t.pubs[i]
			}
		}
	}
	return e.pub
}

// controlDev is the interface a control segment crosses on the uplink side.
func controlDev(p *nfq.Packet, out bool) uint32 {
	if out {
		return p.OutDev
	}
	return p.InDev
}

// greWrongUplink reports whether GRE with public address pub crossing the
// interface dev (InDev inbound, OutDev outbound) is on another uplink than
// the one pub belongs to.
func (e *Engine) greWrongUplink(pub [4]byte, dev uint32) bool {
	t := e.ups.up.Load()
	if t == nil {
		return false
	}
	i, ifindex := t.uplinkOfPublic(pub)
	if i == 0 {
		ifindex = e.wan.Load()
	}
	return i >= 0 && ifindex != dev
}

func pairKey(k conntrack.ControlKey) [8]byte {
	var b [8]byte
	copy(b[:4], k.InsideIP[:])
	copy(b[4:], k.PeerIP[:])
	return b
}

// pinControl pins the GRE of cn's pair to cn's uplink. ctlMu is held.
func (e *Engine) pinControl(cn *conntrack.Control) {
	t := e.ups.up.Load()
	if t == nil {
		return
	}
	i, _ := t.uplinkOfPublic(cn.PublicIP)
	if i < 0 {
		i = 0
	}
	k := pairKey(cn.Key)
	e.ups.pinMu.Lock()
	defer e.ups.pinMu.Unlock()
	if e.ups.refs == nil {
		e.ups.refs = map[[8]byte]pinRef{}
	}
	r := e.ups.refs[k]
	if r.by == nil {
		r.by = map[int]int{}
	}
	r.n++
	r.by[i]++
	// The newest connection's uplink wins (its calls are the ones being
	// set up); controlRemoved moves the pin back when it goes.
	changed := r.n == 1 || r.uplink != i
	r.uplink = i
	e.ups.refs[k] = r
	if p := e.ups.pins.Load(); p != nil && changed {
		(*p).Pin(cn.Key.InsideIP, cn.Key.PeerIP, i)
	}
}

// controlRemoved is the table's OnControlRemoved: the last connection of a
// pair unpins it. Table.mu is held.
func (e *Engine) controlRemoved(cn *conntrack.Control, _ string) {
	if e.ups.up.Load() == nil {
		return
	}
	k := pairKey(cn.Key)
	e.ups.pinMu.Lock()
	defer e.ups.pinMu.Unlock()
	r, ok := e.ups.refs[k]
	if !ok {
		return
	}
	if r.n--; r.n <= 0 {
		delete(e.ups.refs, k)
		if p := e.ups.pins.Load(); p != nil {
			(*p).Unpin(cn.Key.InsideIP, cn.Key.PeerIP)
		}
		return
	}
	j := -1
	if t := e.ups.up.Load(); t != nil {
		j, _ = t.uplinkOfPublic(cn.PublicIP)
	}
	if r.by[j] == 0 {
		j = r.uplink // its uplink's address changed since: count it against the pin's
	}
	if r.by[j]--; r.by[j] <= 0 {
		delete(r.by, j)
	}
	if r.by[r.uplink] == 0 {
		// The pinned uplink has no connection of the pair left: pin the
		// pair to one that has (the lowest index, to be deterministic).
		next := -1
		for u := range r.by {
			if next < 0 || u < next {
				next = u
			}
		}
		if next >= 0 {
			r.uplink = next
			if p := e.ups.pins.Load(); p != nil {
				(*p).Pin(cn.Key.InsideIP, cn.Key.PeerIP, next)
			}
		}
	}
	e.ups.refs[k] = r
}

// Pins returns how many (inside, peer) pairs are pinned now.
func (e *Engine) Pins() int {
	e.ups.pinMu.Lock()
	defer e.ups.pinMu.Unlock()
	return len(e.ups.refs)
}

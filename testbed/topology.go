// Package testbed builds network-namespace topologies for PPTP gateway tests
// and runs peers in them: pptpd and pptp-linux (third-party), a Go mini PNS and
// PAC (for what those cannot do), iperf3, Linux's own PPTP helper as a
// baseline, and the pptpgw binary itself.
//
// The topology, every name prefixed with a random per-topology prefix P:
//
//	P-c0 (10.77.0.10) --veth--+
//	P-c1 (10.77.0.11) --veth--+-- Pbr (10.77.0.1)  P-gw  Pw0 (203.0.113.1) --veth-- Ps0 (203.0.113.2) P-srv
//	...                       +                    ip_forward=1
//
// Clients default-route via 10.77.0.1, the server has 203.0.113.0/24 only
// (so it can reach nothing but the gateway's public address), the gateway has
// both. Traffic never leaves these namespaces.
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"pptpgw/internal/nsenter"
)

// Addresses of the standard topology.
var (
	LANPrefix = netip.MustParsePrefix("10.77.0.0/24")
	GWLANIP   = netip.MustParseAddr("10.77.0.1")
	WANPrefix = netip.MustParsePrefix("203.0.113.0/24")
	GWWANIP   = netip.MustParseAddr("203.0.113.1")
	ServerIP  = netip.MustParseAddr("203.0.113.2")
)

// ClientIP returns the LAN address of client i (10.77.0.10+i).
func ClientIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + i)})
}

// MaxClients is the largest client count New accepts.
const MaxClients = 200

// Config describes a topology.
type Config struct {
	Clients int    // client namespaces on the LAN bridge (0..MaxClients)
	Prefix  string // name prefix; empty means "pg" + 4 random hex digits
}

// NS is one network namespace of a topology.
type NS struct {
	Name   string         // name under /var/run/netns
	Handle netns.NsHandle // open handle (closed by Topology.Close)
	IP     netip.Addr     // main address (LAN address for the gateway)
	If     string         // main interface name inside the namespace

	nl   *netlink.Handle
	topo *Topology
}

// Topology is a set of namespaces wired as described in the package comment.
type Topology struct {
	Prefix  string
	GW      *NS // gateway: LAN bridge + WAN veth, ip_forward on
	Server  *NS // server on the WAN segment
	Clients []*NS

	LANIf string // bridge in the gateway namespace (carries 10.77.0.1)
	WANIf string // WAN veth in the gateway namespace (carries 203.0.113.1)

	Dir string // scratch directory, removed by Close

	mu     sync.Mutex
	all    []*NS
	procs  []*os.Process
	closed bool
	extra  []func() error // cleanups registered by peers, run LIFO before namespaces go
}

// NewPrefix returns "pg" followed by 4 random hex digits.
func NewPrefix() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return "pg" + hex.EncodeToString(b[:])
}

// New builds the topology. On error everything created so far is removed.
func New(cfg Config) (_ *Topology, err error) {
	if cfg.Clients < 0 || cfg.Clients > MaxClients {
		return nil, fmt.Errorf("testbed: %d clients out of range 0..%d", cfg.Clients, MaxClients)
	}
	p := cfg.Prefix
	if p == "" {
		p = NewPrefix()
	}
	// Longest interface name: P + "l" + 3 digits + "b"? we use P+"l"+idx (<=3 digits).
	if len(p)+4 > unix.IFNAMSIZ-1 {
		return nil, fmt.Errorf("testbed: prefix %q too long for interface names", p)
	}
	dir, err := os.MkdirTemp("", "testbed-"+p+"-")
	if err != nil {
		return nil, err
	}
	t := &Topology{Prefix: p, Dir: dir, LANIf: p + "br", WANIf: p + "w0"}
	defer func() {
		if err != nil {
			if cerr := t.Close(); cerr != nil {
				err = fmt.Errorf("%w (cleanup: %v)", err, cerr)
			}
			err = fmt.Errorf("testbed %s: %w", p, err)
		}
	}()

	if t.GW, err = t.newNS(p + "-gw"); err != nil {
		return t, err
	}
	if t.Server, err = t.newNS(p + "-srv"); err != nil {
		return t, err
	}
	for i := 0; i < cfg.Clients; i++ {
		c, err := t.newNS(p + "-c" + strconv.Itoa(i))
		if err != nil {
			return t, err
		}
		t.Clients = append(t.Clients, c)
	}
	if err := t.wire(); err != nil {
		return t, err
	}
	return t, nil
}

func (t *Topology) newNS(name string) (*NS, error) {
	h, err := createNamedNS(name)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	n := &NS{Name: name, Handle: h, topo: t}
	t.mu.Lock()
	t.all = append(t.all, n)
	t.mu.Unlock()
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		return n, fmt.Errorf("netlink in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return n, err
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return n, err
	}
	return n, nil
}

// AddNS adds an empty namespace named P-suffix (lo up) to the topology,
// for wiring of the caller's own; it goes with the topology.
func (t *Topology) AddNS(suffix string) (*NS, error) { return t.newNS(t.Prefix + "-" + suffix) }

// createNamedNS creates the namespace /var/run/netns/NAME and returns an
// open handle. netns.NewNamed moves the calling thread into the new
// namespace, so it runs on nsenter's thread, which is switched back after
// (the private namespace Fresh made for it is dropped then).
func createNamedNS(name string) (netns.NsHandle, error) {
	h := netns.None()
	err := nsenter.Fresh(func() (err error) {
		h, err = netns.NewNamed(name)
		return err
	})
	return h, err
}

func addAddr(h *netlink.Handle, l netlink.Link, a netip.Addr, bits int) error {
	ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("addr %s on %s: %w", ipn, l.Attrs().Name, err)
	}
	return nil
}

func defaultRoute(h *netlink.Handle, via netip.Addr) error {
	return h.RouteAdd(&netlink.Route{Gw: via.AsSlice()})
}

// vethInto creates a veth pair in src's namespace: local stays in src, peer
// is moved into dst's namespace. Both are set up.
func vethInto(src, dst *NS, local, peer string) (netlink.Link, netlink.Link, error) {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: local},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(dst.Handle)),
	}
	if err := src.nl.LinkAdd(v); err != nil {
		return nil, nil, fmt.Errorf("veth %s/%s: %w", local, peer, err)
	}
	l, err := src.nl.LinkByName(local)
	if err != nil {
		return nil, nil, err
	}
	p, err := dst.nl.LinkByName(peer)
	if err != nil {
		return nil, nil, err
	}
	if err := src.nl.LinkSetUp(l); err != nil {
		return nil, nil, err
	}
	if err := dst.nl.LinkSetUp(p); err != nil {
		return nil, nil, err
	}
	return l, p, nil
}

func (t *Topology) wire() error {
	p, gw, srv := t.Prefix, t.GW, t.Server

	// LAN bridge in the gateway.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: t.LANIf}}
	if err := gw.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge %s: %w", t.LANIf, err)
	}
	brl, err := gw.nl.LinkByName(t.LANIf)
	if err != nil {
		return err
	}
	if err := addAddr(gw.nl, brl, GWLANIP, 24); err != nil {
		return err
	}
	if err := gw.nl.LinkSetUp(brl); err != nil {
		return err
	}
	gw.IP, gw.If = GWLANIP, t.LANIf

	// WAN segment: gateway <-> server.
	wl, sl, err := vethInto(gw, srv, t.WANIf, p+"s0")
	if err != nil {
		return err
	}
	if err := addAddr(gw.nl, wl, GWWANIP, 24); err != nil {
		return err
	}
	if err := addAddr(srv.nl, sl, ServerIP, 24); err != nil {
		return err
	}
	srv.IP, srv.If = ServerIP, p+"s0"

	for i, c := range t.Clients {
		bl, cl, err := vethInto(gw, c, fmt.Sprintf("%sl%d", p, i), fmt.Sprintf("%se%d", p, i))
		if err != nil {
			return err
		}
		if err := gw.nl.LinkSetMaster(bl, brl); err != nil {
			return err
		}
		if err := addAddr(c.nl, cl, ClientIP(i), 24); err != nil {
			return err
		}
		if err := defaultRoute(c.nl, GWLANIP); err != nil {
			return fmt.Errorf("%s default route: %w", c.Name, err)
		}
		c.IP, c.If = ClientIP(i), cl.Attrs().Name
	}

	for _, n := range t.all {
		// No IPv6: keeps captures free of ND/MLD noise. Best effort.
		_ = n.WriteSysctl("net/ipv6/conf/all/disable_ipv6", "1")
		_ = n.WriteSysctl("net/ipv6/conf/default/disable_ipv6", "1")
	}
	return gw.WriteSysctl("net/ipv4/ip_forward", "1")
}

// RecreateWAN deletes the gateway's WAN veth and creates it again under the
// same names, with the given gateway address (and the server's as before):
// a WAN interface that comes back with a new index, as a PPPoE or VPN
// uplink does when it reconnects.
func (t *Topology) RecreateWAN(gwAddr netip.Addr) error {
	gw, srv := t.GW, t.Server
	l, err := gw.nl.LinkByName(t.WANIf)
	if err != nil {
		return err
	}
	if err := gw.nl.LinkDel(l); err != nil { // takes the server's end with it
		return fmt.Errorf("delete %s: %w", t.WANIf, err)
	}
	wl, sl, err := vethInto(gw, srv, t.WANIf, srv.If)
	if err != nil {
		return err
	}
	if err := addAddr(gw.nl, wl, gwAddr, 24); err != nil {
		return err
	}
	return addAddr(srv.nl, sl, ServerIP, 24)
}

// RoutedLANIP returns the address of the host on routed LAN segment i
// (10.78.i.2; the gateway has 10.78.i.1 there).
func RoutedLANIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 78, byte(i), 2}) }

// AddRoutedLAN adds a second kind of inside network: namespace P-rI with
// one host, 10.78.I.2/24, on its own veth to the gateway (10.78.I.1, the
// host's default route), routed by the gateway rather than bridged. It
// returns the host's namespace and the gateway-side interface name (for
// --lan). Everything goes with the topology.
func (t *Topology) AddRoutedLAN(i int) (*NS, string, error) {
	if i < 0 || i > 255 {
		return nil, "", fmt.Errorf("testbed: routed LAN %d out of range 0..255", i)
	}
	n, err := t.newNS(fmt.Sprintf("%s-r%d", t.Prefix, i))
	if err != nil {
		return nil, "", err
	}
	gwIf := fmt.Sprintf("%sr%d", t.Prefix, i)
	gl, hl, err := vethInto(t.GW, n, gwIf, fmt.Sprintf("%sq%d", t.Prefix, i))
	if err != nil {
		return nil, "", err
	}
	gwIP := netip.AddrFrom4([4]byte{10, 78, byte(i), 1})
	if err := addAddr(t.GW.nl, gl, gwIP, 24); err != nil {
		return nil, "", err
	}
	if err := addAddr(n.nl, hl, RoutedLANIP(i), 24); err != nil {
		return nil, "", err
	}
	if err := defaultRoute(n.nl, gwIP); err != nil {
		return nil, "", fmt.Errorf("%s default route: %w", n.Name, err)
	}
	n.IP, n.If = RoutedLANIP(i), hl.Attrs().Name
	_ = n.WriteSysctl("net/ipv6/conf/all/disable_ipv6", "1")
	_ = n.WriteSysctl("net/ipv6/conf/default/disable_ipv6", "1")
	return n, gwIf, nil
}

// DialContext connects from inside the namespace (the socket is created
// there and stays there); its signature fits net.Dialer-style hooks such as
// pptp.ClientConfig.Dial.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// WriteSysctl writes /proc/sys/KEY inside the namespace (KEY like "net/ipv4/ip_forward").
func (n *NS) WriteSysctl(key, val string) error {
	return n.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644)
	})
}

// ReadSysctl reads /proc/sys/KEY inside the namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	var s string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		s = strings.TrimSpace(string(b))
		return err
	})
	return s, err
}

// Netlink returns a netlink handle bound to the namespace (owned by the topology).
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs fn inside the namespace (nsenter.Do). Sockets created inside fn
// stay in the namespace and can be used from any goroutine afterwards.
func (n *NS) Do(fn func() error) error {
	if err := nsenter.Do(int(n.Handle), fn); err != nil {
		return fmt.Errorf("in namespace %s: %w", n.Name, err)
	}
	return nil
}

// ListenGRE opens a raw GRE socket (IP protocol 47) in n, bound to local:
// it sends GRE from local and receives all GRE to it.
func (n *NS) ListenGRE(local netip.Addr) (*net.IPConn, error) {
	var g *net.IPConn
	err := n.Do(func() (err error) {
		g, err = net.ListenIP("ip4:47", &net.IPAddr{IP: local.AsSlice()})
		return err
	})
	return g, err
}

// Close kills every process in the topology's namespaces, runs registered
// cleanups, deletes the namespaces (which removes their interfaces) and the
// scratch directory. It is safe after a partial New and safe to call twice.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	extra, procs, all := t.extra, t.procs, t.all
	t.mu.Unlock()

	var errs []error
	for i := len(extra) - 1; i >= 0; i-- {
		if err := extra[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		// Started with Setpgid: the group includes forked helpers.
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_ = p.Kill()
	}
	// Anything else still inside our namespaces (e.g. pptpd's children that
	// called setsid) is found by namespace identity and killed.
	for _, n := range all {
		if n.Handle >= 0 {
			killNSProcs(n.Handle)
		}
	}
	for _, n := range all {
		if n.nl != nil {
			n.nl.Close()
		}
		if n.Handle >= 0 {
			n.Handle.Close()
			n.Handle = -1
		}
		if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", n.Name, err))
		}
	}
	if t.Dir != "" {
		if err := os.RemoveAll(t.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OnClose registers fn to run at Close, before processes are killed and
// namespaces deleted (LIFO).
func (t *Topology) OnClose(fn func() error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.extra = append(t.extra, fn)
}

func (t *Topology) track(p *os.Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.procs = append(t.procs, p)
}

// killNSProcs SIGKILLs every process (other than this one) whose network
// namespace is the one h refers to, and waits briefly for them to go.
func killNSProcs(h netns.NsHandle) {
	var st unix.Stat_t
	if unix.Fstat(int(h), &st) != nil {
		return
	}
	self := os.Getpid()
	for round := 0; round < 50; round++ {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		found := false
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			var ps unix.Stat_t
			if unix.Stat("/proc/"+e.Name()+"/ns/net", &ps) != nil {
				continue
			}
			if ps.Ino == st.Ino && ps.Dev == st.Dev {
				// Zombies (already dead, not yet reaped) also match; only
				// count live ones as "found".
				if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && isZombie(b) {
					continue
				}
				_ = unix.Kill(pid, unix.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isZombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

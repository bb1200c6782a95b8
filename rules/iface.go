package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Resolved is what the data path needs to know about the configured
// interfaces, looked up in the caller's network namespace.
type Resolved struct {
	WANIndex uint32
	LANIndex []uint32 // in Config.LAN order
	// PublicIP is public_address if set, else the WAN's first IPv4 address
	// (what masquerade will use for new connections).
	PublicIP netip.Addr
}

// ErrNoIPv4 is returned by Resolve when masquerading and the WAN interface
// has no IPv4 address.
var ErrNoIPv4 = errors.New("has no IPv4 address")

// Resolve looks up the interfaces of a validated Config. An unknown
// interface is an error naming it and its role.
func Resolve(c *Config) (*Resolved, error) {
	wan, err := net.InterfaceByName(c.WAN)
	if err != nil {
		return nil, fmt.Errorf("wan interface %q: %w", c.WAN, unknownIf(err))
	}
	r := &Resolved{WANIndex: uint32(wan.Index), PublicIP: c.PublicAddr()}
	for _, name := range c.LAN {
		l, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("lan interface %q: %w", name, unknownIf(err))
		}
		r.LANIndex = append(r.LANIndex, uint32(l.Index))
	}
	if !r.PublicIP.IsValid() {
		if r.PublicIP, err = firstIPv4(wan); err != nil {
			if errors.Is(err, ErrNoIPv4) {
				return nil, fmt.Errorf("wan interface %q %w (set public_address or give it one)", c.WAN, ErrNoIPv4)
			}
			return nil, fmt.Errorf("wan %w", err)
		}
	}
	return r, nil
}

// firstIPv4 returns the interface's first IPv4 address: the primary one,
// which masquerade uses for new connections. It returns ErrNoIPv4 when the
// interface has none.
func firstIPv4(ifc *net.Interface) (netip.Addr, error) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", ifc.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %q %w", ifc.Name, ErrNoIPv4)
}

func unknownIf(err error) error {
	var ae *net.OpError
	if errors.As(err, &ae) {
		return errors.New("no such interface")
	}
	return err
}

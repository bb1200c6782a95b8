// Package tun is the kernel side of the hosted endpoints: one shared TUN device.
//
// Design: the server uses ONE TUN device (IFF_TUN|IFF_NO_PI, default name "pptpgw0") for
// all sessions. The server's own tunnel address is put on it as a /32, and every session
// that comes up adds a /32 route "pool address dev pptpgw0"; it is removed when the session
// ends. Packets the kernel routes into the device are handed to the session owning the
// destination address (a map lookup in package pptp); packets from sessions are written
// to the device and routed by the kernel like any other input. One device keeps setup per
// session to one netlink route (~100 µs), costs one file descriptor and one reader
// goroutine in total, and scales to thousands of sessions; per-session traffic shaping
// would need a device per session, which the pptp package does not do.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device is an open TUN device.
type Device struct {
	f    *os.File
	name string
	link netlink.Link
	nl   *netlink.Handle // bound to the namespace Open ran in, usable from any thread
}

// Open creates (or attaches to) the TUN device name with IFF_TUN|IFF_NO_PI, sets its MTU
// and brings it up. Needs CAP_NET_ADMIN.
func Open(name string, mtu int) (*Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: TUNSETIFF %q: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	d := &Device{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}
	if d.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		d.f.Close()
		return nil, fmt.Errorf("tun: netlink: %w", err)
	}
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: %s: %w", d.name, err)
	}
	d.link = link
	if mtu > 0 {
		if err := d.nl.LinkSetMTU(link, mtu); err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: set mtu: %w", err)
		}
	}
	if err := d.nl.LinkSetUp(link); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: up: %w", err)
	}
	return d, nil
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// Index is the interface index.
func (d *Device) Index() int { return d.link.Attrs().Index }

// ReadPacket reads one IP packet. It unblocks with an error when the device is closed.
func (d *Device) ReadPacket(b []byte) (int, error) { return d.f.Read(b) }

// WritePacket writes one IP packet.
func (d *Device) WritePacket(b []byte) error {
	_, err := d.f.Write(b)
	return err
}

// Close closes the device; a non-persistent TUN disappears with its routes.
func (d *Device) Close() error {
	err := d.f.Close()
	d.nl.Close()
	return err
}

// AddAddr puts local/32 on the device.
func (d *Device) AddAddr(local netip.Addr) error {
	a := &netlink.Addr{IPNet: host(local)}
	if err := d.nl.AddrReplace(d.link, a); err != nil {
		return fmt.Errorf("tun: addr %s: %w", local, err)
	}
	return nil
}

// AddPrefixRoute routes a whole prefix into the device (client side: the networks
// behind the server).
// src, when valid, is the preferred source address.
func (d *Device) AddPrefixRoute(p netip.Prefix, src netip.Addr) error {
	bits := p.Addr().BitLen()
	r := &netlink.Route{LinkIndex: d.Index(), Dst: &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)},
		Scope: netlink.SCOPE_LINK}
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	if err := d.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("tun: route %s: %w", p, err)
	}
	return nil
}

// AddRoute routes dst/32 into the device (replacing an existing route), with src as the
// preferred source address when valid.
func (d *Device) AddRoute(dst, src netip.Addr) error {
	r := &netlink.Route{LinkIndex: d.Index(), Dst: host(dst), Scope: netlink.SCOPE_LINK}
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	if err := d.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("tun: route %s: %w", dst, err)
	}
	return nil
}

// DelRoute removes the dst/32 route; a missing route is not an error.
func (d *Device) DelRoute(dst netip.Addr) error {
	r := &netlink.Route{LinkIndex: d.Index(), Dst: host(dst), Scope: netlink.SCOPE_LINK}
	if err := d.nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("tun: del route %s: %w", dst, err)
	}
	return nil
}

func host(a netip.Addr) *net.IPNet {
	bits := a.BitLen()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}
}

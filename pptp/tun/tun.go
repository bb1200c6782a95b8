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
//
// It owns the device, its offloads (offload.go) and its address and routes.
// It must not know sessions, PPP or PPTP: it moves IPv4 packets, parsed with
// internal/pkt.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device is an open TUN device.
type Device struct {
	f    *os.File
	name string
	link netlink.Link
	nl   *netlink.Handle // bound to the namespace Open ran in, usable from any thread

	rmu  sync.Mutex
	rbuf []byte // vnet header + one (super-)packet read from the kernel
	seg  segmenter

	wmu     sync.Mutex
	co      coalescer // packets held by QueuePacket; also the write buffer
	noMerge bool      // the kernel refused a GSO packet: QueuePacket writes at once
}

// Open creates (or attaches to) the TUN device name with IFF_TUN|IFF_NO_PI|IFF_VNET_HDR
// and TCP segmentation/checksum offloads (see offload.go), sets its MTU and brings it up.
// ReadPacket and WritePacket still deal in plain IPv4 packets of at most the MTU.
// Needs CAP_NET_ADMIN.
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
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: TUNSETIFF %q: %w", name, err)
	}
	// Without the offloads the kernel just never sends a GSO packet; writing them works
	// regardless.
	_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4)
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

// ReadPacket reads one IP packet into b. A TCP super-packet from the kernel is
// returned one MTU-sized segment per call, with complete checksums. It unblocks with an
// error when the device is closed.
func (d *Device) ReadPacket(b []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for {
		if d.seg.pending() {
			return d.seg.next(b)
		}
		if d.rbuf == nil {
			d.rbuf = make([]byte, vnetHdrLen+65535)
		}
		n, err := d.f.Read(d.rbuf)
		if err != nil {
			return 0, err
		}
		if n <= vnetHdrLen {
			continue
		}
		var h vnetHdr
		h.decode(d.rbuf)
		pkt := d.rbuf[vnetHdrLen:n]
		switch h.gsoType &^ unix.VIRTIO_NET_HDR_GSO_ECN {
		case unix.VIRTIO_NET_HDR_GSO_NONE:
			if h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !finishChecksum(&h, pkt) {
				continue
			}
			if len(b) < len(pkt) {
				return 0, errShortBuffer
			}
			return copy(b, pkt), nil
		case unix.VIRTIO_NET_HDR_GSO_TCPV4:
			if d.seg.start(&h, pkt) != nil {
				continue
			}
		default: // not enabled: cannot happen
			continue
		}
	}
}

// WritePacket writes one IP packet now (after any held by QueuePacket).
func (d *Device) WritePacket(b []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if err := d.flushLocked(); err != nil {
		return err
	}
	return d.writeLocked(b)
}

// QueuePacket writes one IP packet, or holds it to merge it with the next in-order TCP
// segments of the same flow into one GSO packet: the kernel then forwards or delivers
// them in one go. Flush must follow (after a batch of packets) to write what is held;
// any other packet or WritePacket writes it first, so the order is kept.
func (d *Device) QueuePacket(b []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.noMerge {
		if err := d.flushLocked(); err != nil {
			return err
		}
		return d.writeLocked(b)
	}
	hl, ok := tcpSegment(b)
	if ok && d.co.mergeable(b, hl) {
		d.co.add(b, hl)
		if d.co.closed {
			return d.flushLocked()
		}
		return nil
	}
	if err := d.flushLocked(); err != nil {
		return err
	}
	if !ok {
		return d.writeLocked(b)
	}
	d.co.hold(b, hl)
	if d.co.closed {
		return d.flushLocked()
	}
	return nil
}

// Flush writes the packet QueuePacket holds, if any.
func (d *Device) Flush() error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.flushLocked()
}

func (d *Device) flushLocked() error {
	if d.co.n == 0 {
		return nil
	}
	merged := d.co.segs > 1
	b := d.co.take()
	_, err := d.f.Write(b)
	if err == nil || !merged {
		return err
	}
	// The kernel refused the GSO packet: stop merging, and write these segments one by one.
	d.noMerge = true
	return writeSegments(b, func(p []byte) error { _, err := d.f.Write(p); return err })
}

// writeLocked writes b with an empty vnet header, through the coalescer's buffer.
func (d *Device) writeLocked(b []byte) error {
	if len(b) > 65535 {
		return errShortBuffer
	}
	if len(d.co.buf) < vnetHdrLen+65535 {
		d.co.buf = make([]byte, vnetHdrLen+65535)
	}
	clear(d.co.buf[:vnetHdrLen])
	n := vnetHdrLen + copy(d.co.buf[vnetHdrLen:], b)
	_, err := d.f.Write(d.co.buf[:n])
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

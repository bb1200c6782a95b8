package rules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// FirstIPv4 returns the first IPv4 address of the interface with index
// ifindex: the primary address, which masquerade uses for new connections.
// It returns ErrNoIPv4 when the interface has none.
func FirstIPv4(ifindex int) (netip.Addr, error) {
	ifc, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %d: %w", ifindex, unknownIf(err))
	}
	return firstIPv4(ifc)
}

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

// AddrWatcher follows the primary IPv4 address of one interface (a DHCP or
// PPPoE WAN whose address changes while the gateway runs). It listens for
// rtnetlink address events in the caller's network namespace and re-reads
// the interface's addresses on each batch of them.
type AddrWatcher struct {
	conn    *netlink.Conn
	ifindex int
}

// WatchAddr subscribes to IPv4 address events. Close (or Run's context)
// ends the subscription.
func WatchAddr(ifindex int) (*AddrWatcher, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_IPV4_IFADDR})
	if err != nil {
		return nil, fmt.Errorf("rtnetlink address events: %w", err)
	}
	return &AddrWatcher{conn: c, ifindex: ifindex}, nil
}

// Run reports the interface's primary IPv4 address through changed each
// time it differs from last (the address in use when Run starts), and
// through missing, once per loss, when the interface has no IPv4 address
// left. It returns nil when ctx ends, or the error that ended the
// subscription.
func (w *AddrWatcher) Run(ctx context.Context, last netip.Addr, changed func(netip.Addr), missing func(error)) error {
	stop := context.AfterFunc(ctx, func() { _ = w.conn.Close() })
	defer stop()
	gone := false
	for {
		_, err := w.conn.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			// ENOBUFS: events were lost; re-reading the addresses below
			// recovers from that. Anything else ends the watch.
			return fmt.Errorf("rtnetlink address events: %w", err)
		}
		a, err := FirstIPv4(w.ifindex)
		switch {
		case err != nil:
			if !gone {
				missing(err)
			}
			gone = true
		case a != last:
			gone = false
			last = a
			changed(a)
		default:
			gone = false
		}
	}
}

// Close ends the subscription.
func (w *AddrWatcher) Close() error { return w.conn.Close() }

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

// WANState is what the data path knows of the WAN interface.
type WANState struct {
	Index int
	Addr  netip.Addr // primary IPv4 address; invalid if it has none
}

// WANEvents receives what WANWatcher.Run sees change. A nil func is skipped.
type WANEvents struct {
	// Index: the interface was deleted and created again under the same
	// name (a PPPoE or VPN uplink reconnecting) and has this index now.
	Index func(int)
	// Addr: the primary IPv4 address is now this one.
	Addr func(netip.Addr)
	// Missing: the interface or its last IPv4 address is gone (reported
	// once per loss, with the reason).
	Missing func(error)
}

// WANWatcher follows the WAN interface by name: its index (an interface
// created again) and its primary IPv4 address (DHCP, PPPoE). It listens for
// rtnetlink link and IPv4 address events in the namespace it was created
// in, and re-reads the interface on each batch of them, so lost events
// (ENOBUFS) cost nothing. Lookups use the calling thread's namespace: run
// it in the process's own (the daemon's case).
type WANWatcher struct {
	conn *netlink.Conn
	name string
}

// WatchWAN subscribes to link and IPv4 address events for the interface
// called name. Close (or Run's context) ends the subscription.
func WatchWAN(name string) (*WANWatcher, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR})
	if err != nil {
		return nil, fmt.Errorf("rtnetlink link and address events: %w", err)
	}
	return &WANWatcher{conn: c, name: name}, nil
}

// Run reports through ev each change from last (the state when Run
// starts). It returns nil when ctx ends, or the error that ended the
// subscription.
func (w *WANWatcher) Run(ctx context.Context, last WANState, ev WANEvents) error {
	stop := context.AfterFunc(ctx, func() { _ = w.conn.Close() })
	defer stop()
	gone := false
	missing := func(err error) {
		if !gone && ev.Missing != nil {
			ev.Missing(err)
		}
		gone = true
	}
	for {
		_, err := w.conn.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			// ENOBUFS: events were lost; re-reading the interface below
			// recovers from that. Anything else ends the watch.
			return fmt.Errorf("rtnetlink events: %w", err)
		}
		ifc, err := net.InterfaceByName(w.name)
		if err != nil {
			missing(fmt.Errorf("interface %q: %w", w.name, unknownIf(err)))
			continue
		}
		if ifc.Index != last.Index {
			last.Index = ifc.Index
			if ev.Index != nil {
				ev.Index(ifc.Index)
			}
		}
		a, err := firstIPv4(ifc)
		if err != nil {
			missing(err)
			continue
		}
		gone = false
		if a != last.Addr {
			last.Addr = a
			if ev.Addr != nil {
				ev.Addr(a)
			}
		}
	}
}

// Close ends the subscription.
func (w *WANWatcher) Close() error { return w.conn.Close() }

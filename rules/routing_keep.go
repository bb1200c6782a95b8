package rules

// Keeping policy routing in place (issue 10). The kernel deletes every
// route through an interface that goes down, loses its last IPv4 address
// or is deleted (fib_disable_ip): a PPPoE uplink reconnecting, a DHCP
// lease lost, `ip link set wan1 down`. The routes of `routing:` and the
// uplinks' pin tables are the daemon's, so the daemon puts them back:
// LinkWatcher reports link and address changes, and the caller applies
// its RoutingPlan again (Router.Apply keeps what is in place).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// LinkWatcher reports link and IPv4 address changes in one network
// namespace.
type LinkWatcher struct {
	conn *netlink.Conn
}

// WatchLinks subscribes to link and IPv4 address events in the network
// namespace open as netnsFd (0: the caller's).
func WatchLinks(netnsFd int) (*LinkWatcher, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR, NetNS: netnsFd})
	if err != nil {
		return nil, fmt.Errorf("rtnetlink link and address events: %w", err)
	}
	return &LinkWatcher{conn: c}, nil
}

// maxKeepRetry bounds the wait between retries of a failing changed.
const maxKeepRetry = 30 * time.Second

// Run calls changed once per burst of events, settle after its last one
// (lost events, ENOBUFS, count as a change), until ctx ends. A changed
// that fails (an interface still missing, its gateway not yet reachable)
// is called again, after settle doubling up to 30 s, until it succeeds or
// another event comes. Run returns nil when ctx ends, or the error that
// ended the subscription.
func (w *LinkWatcher) Run(ctx context.Context, settle time.Duration, changed func() error) error {
	stop := context.AfterFunc(ctx, func() { _ = w.conn.Close() })
	defer stop()
	pending, wait := false, settle
	for {
		var deadline time.Time
		if pending {
			deadline = time.Now().Add(wait)
		}
		if err := w.conn.SetReadDeadline(deadline); err != nil && ctx.Err() == nil {
			return fmt.Errorf("rtnetlink events: %w", err)
		}
		_, err := w.conn.Receive()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil, errors.Is(err, unix.ENOBUFS):
			pending, wait = true, settle
		case pending && errors.Is(err, os.ErrDeadlineExceeded):
			if changed() == nil {
				pending = false
			} else {
				wait = min(2*wait, maxKeepRetry)
			}
		default:
			return fmt.Errorf("rtnetlink events: %w", err)
		}
	}
}

// Close ends the subscription.
func (w *LinkWatcher) Close() error { return w.conn.Close() }

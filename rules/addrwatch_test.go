package rules

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"pptpgw/internal/nsenter"
)

// The watcher reports a changed primary address, a lost one (once), the
// address coming back, and the interface deleted and created again under
// its name (new index), for a veth in a fresh namespace; changes on another
// interface are not reported.
func TestWANWatcherNetns(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
	nsRun(t, ns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.9/24", "dev", "wan0")

	type event struct {
		index int
		addr  netip.Addr
		err   error
	}
	events := make(chan event, 16)
	ready := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// Everything the watcher does happens in the namespace.
		done <- nsenter.Do(int(h), func() error {
			ifc, err := net.InterfaceByName("wan0")
			if err != nil {
				ready <- err
				return nil
			}
			first, err := firstIPv4(ifc)
			if err != nil || first != netip.MustParseAddr("203.0.113.9") {
				ready <- errors.Join(errors.New("firstIPv4 before any change: "+first.String()), err)
				return nil
			}
			w, err := WatchWAN("wan0")
			ready <- err
			if err != nil {
				return nil
			}
			return w.Run(ctx, WANState{Index: ifc.Index, Addr: first}, WANEvents{
				Index:   func(i int) { events <- event{index: i} },
				Addr:    func(a netip.Addr) { events <- event{addr: a} },
				Missing: func(err error) { events <- event{err: err} },
			})
		})
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	next := func(what string) event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: no event within 3s", what)
		}
		return event{}
	}
	noEvent := func(what string) {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("%s: unexpected event %+v", what, e)
		case <-time.After(200 * time.Millisecond):
		}
	}

	nsRun(t, ns, "ip", "addr", "add", "198.51.100.4/24", "dev", "lan0")
	noEvent("address added on another interface")
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.10/24", "dev", "wan0")
	noEvent("secondary address added")

	nsRun(t, ns, "ip", "addr", "flush", "dev", "wan0")
	if e := next("addresses flushed"); e.err == nil || !errors.Is(e.err, ErrNoIPv4) {
		t.Fatalf("after flush: %+v, want ErrNoIPv4", e)
	}
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.50/24", "dev", "wan0")
	if e := next("new address"); e.err != nil || e.addr != netip.MustParseAddr("203.0.113.50") {
		t.Fatalf("after new address: %+v", e)
	}
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.51/24", "dev", "wan0")
	nsRun(t, ns, "ip", "addr", "del", "203.0.113.50/24", "dev", "wan0")
	// Deleting the primary promotes the secondary only with
	// promote_secondaries; either way the primary changed or is gone.
	e := next("primary deleted")
	if e.err == nil && e.addr != netip.MustParseAddr("203.0.113.51") {
		t.Fatalf("after deleting the primary: %+v", e)
	}
	if e.err != nil { // the secondary went with it: address the interface again
		nsRun(t, ns, "ip", "addr", "add", "203.0.113.52/24", "dev", "wan0")
		if e := next("address after losing all"); e.addr != netip.MustParseAddr("203.0.113.52") {
			t.Fatalf("after re-addressing: %+v", e)
		}
	}

	// The interface goes away and comes back under its name.
	nsRun(t, ns, "ip", "link", "del", "wan0")
	if e := next("interface deleted"); e.err == nil {
		t.Fatalf("after deleting wan0: %+v, want an error", e)
	}
	nsRun(t, ns, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
	if e := next("interface created again"); e.index == 0 {
		t.Fatalf("after re-creating wan0: %+v, want its new index", e)
	}
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.60/24", "dev", "wan0")
	if e := next("address on the new interface"); e.addr != netip.MustParseAddr("203.0.113.60") {
		t.Fatalf("after addressing the new wan0: %+v", e)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3s of cancel")
	}
}

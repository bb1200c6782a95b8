package testbed

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"pptpgw/pptp/wire"
	"pptpgw/testbed/fakeppp"
)

// BadInputResult is the outcome of RunBadInput.
type BadInputResult struct {
	ControlSent       int       `json:"control_sent"`         // malformed control messages sent (one connection each)
	GRESentOut        int       `json:"gre_sent_out"`         // unmatched GRE sent by a client toward the server
	GRESentIn         int       `json:"gre_sent_in"`          // unmatched GRE sent by the server toward the public address
	GRESentStale      int       `json:"gre_sent_stale"`       // GRE sent by the server to the public address with the key of a call cleared just before
	GRESentInside     int       `json:"gre_sent_inside"`      // GRE sent by the server straight to the clients' inside addresses, routed via the gateway
	PACUnknownGRE     uint64    `json:"pac_unknown_gre"`      // unmatched GRE that reached the PAC (leaked through)
	PACBadControl     uint64    `json:"pac_bad_control"`      // malformed control messages that reached the PAC
	ClientsGotGRE     int64     `json:"clients_got_gre"`      // stray GRE seen arriving on any client's link
	ClientsGotCallGRE int64     `json:"clients_got_call_gre"` // other GRE seen there meanwhile: the working call's, proof the capture sees what the gateway forwards
	Cleared           PNSResult `json:"cleared"`              // the call whose key the stale GRE carries
	Working           PNSResult `json:"working"`              // the call that is up while the stray GRE is sent
	After             PNSResult `json:"after"`                // a normal call made afterwards
	Error             string    `json:"error,omitempty"`
}

func (r BadInputResult) String() string {
	return fmt.Sprintf("malformed control sent=%d reached PAC=%d; stray GRE sent out=%d in=%d stale=%d to inside=%d, "+
		"reached PAC=%d, reached clients=%d (working call's GRE seen there: %d); calls ok: cleared=%v working=%v after=%v",
		r.ControlSent, r.PACBadControl, r.GRESentOut, r.GRESentIn, r.GRESentStale, r.GRESentInside,
		r.PACUnknownGRE, r.ClientsGotGRE, r.ClientsGotCallGRE, r.Cleared.OK(), r.Working.OK(), r.After.OK())
}

// strayTag tags the payload of every stray GRE packet RunBadInput sends.
const strayTag = "stray"

// RunBadInput sends, through whatever is in the gateway namespace, (1)
// malformed PPTP control messages from client 0 to a mini PAC on the server,
// each on its own TCP 1723 connection: bad magic cookie, a length shorter
// than the header, an unknown message type; then, after a call from the
// last client has been made and cleared, and while a working call from
// client 0 is up, (2) stray GRE: with call IDs nobody allocated, from client
// 0 outward and from the server inward to the public address; from the
// server to the public address with the key the cleared call had there;
// and from the server straight to every client's inside address (the
// server routing the LAN via the gateway for the moment), where a gateway
// that forwarded unmatched GRE would deliver it. Every client's link is
// captured meanwhile. Last (3) a normal call, to show the gateway still
// works. The caller checks the gateway's counters and that it is still
// running.
func RunBadInput(ctx context.Context, t *Topology) (res BadInputResult) {
	if len(t.Clients) == 0 {
		res.Error = "need a client namespace"
		return res
	}
	pac, err := t.StartPAC(t.Server, t.Server.IP)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer pac.Close()
	c0, cLast := t.Clients[0], t.Clients[len(t.Clients)-1]
	server := netip.AddrPortFrom(t.Server.IP, wire.ControlPort).String()

	good := (&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion,
		FramingCaps: wire.FramingAsync | wire.FramingSync, BearerCaps: wire.BearerAnalog | wire.BearerDigital,
		Hostname: "bad-input", Vendor: "pptpgw testbed"}).Append(nil)
	badMagic := append([]byte(nil), good...)
	badMagic[wire.MagicOffset] ^= 0xFF
	short := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(short[wire.LengthOffset:], 8) // length < the 12-byte header
	unknown := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(unknown[wire.CtrlTypeOffset:], 99) // no such control message type
	for _, msg := range [][]byte{badMagic, short, unknown} {
		err := c0.Do(func() error {
			c, err := net.DialTimeout("tcp4", server, 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(msg)
			time.Sleep(50 * time.Millisecond)
			return err
		})
		if err != nil {
			res.Error = fmt.Sprintf("sending malformed control message: %v", err)
			return res
		}
		res.ControlSent++
	}

	// A call made and cleared: its key at the public address is stale now.
	var stale []uint16
	res.Cleared = RunPNS(ctx, cLast, PNSConfig{Server: t.Server.IP, Frames: 5, Hold: func() { stale = pac.PeerCallIDs() }})
	if !res.Cleared.OK() || len(stale) != 1 {
		res.Error = fmt.Sprintf("the call to be cleared (PAC saw call IDs %#04x): %s", stale, res.Cleared)
		return res
	}

	// Every client's link is captured while the working call is up and
	// the stray GRE goes out.
	var caps []*GRECapture
	for _, c := range t.Clients {
		gc, err := c.CaptureGRE(strayTag)
		if err != nil {
			for _, gc := range caps {
				gc.Close()
			}
			res.Error = err.Error()
			return res
		}
		caps = append(caps, gc)
	}
	var strayErr error
	working := PNSConfig{Server: t.Server.IP, BaseCallID: 0x0100, Frames: 10}
	working.Hold = func() {
		strayErr = sendStray(t, working.BaseCallID, stale[0], &res)
		time.Sleep(200 * time.Millisecond) // let whatever is forwarded arrive
	}
	res.Working = RunPNS(ctx, c0, working)
	for _, gc := range caps {
		gc.Close()
		res.ClientsGotGRE += gc.Tagged.Load()
		res.ClientsGotCallGRE += gc.Other.Load()
	}
	res.PACUnknownGRE = pac.UnknownGRE.Load()
	res.PACBadControl = pac.BadControl.Load()
	if strayErr != nil {
		res.Error = strayErr.Error()
		return res
	}
	res.After = RunPNS(ctx, c0, PNSConfig{Server: t.Server.IP, Calls: 1, Frames: 10})
	return res
}

// sendStray sends RunBadInput's stray GRE (see there) and counts it in res.
// working is the working call's ID at the client, stale the cleared call's
// outside ID.
func sendStray(t *Topology, working, stale uint16, res *BadInputResult) (err error) {
	c0, srv := t.Clients[0], t.Server
	unknown := make([]uint16, 10)
	for i := range unknown {
		unknown[i] = 0xBEEF - uint16(i)
	}
	if res.GRESentOut, err = sendGRE(c0, c0.IP, srv.IP, unknown, strayTag); err != nil {
		return fmt.Errorf("outbound stray GRE: %w", err)
	}
	if res.GRESentIn, err = sendGRE(srv, srv.IP, GWWANIP, unknown, strayTag); err != nil {
		return fmt.Errorf("inbound stray GRE: %w", err)
	}
	if res.GRESentStale, err = sendGRE(srv, srv.IP, GWWANIP, []uint16{stale, stale, stale}, strayTag); err != nil {
		return fmt.Errorf("stray GRE with a cleared call's key: %w", err)
	}
	// Keys a client could take for its own: the working call's, the
	// cleared call's outside ID, one nobody uses.
	inside := []uint16{working, stale, 0xBEEF}
	route := &netlink.Route{Dst: &net.IPNet{IP: LANPrefix.Addr().AsSlice(), Mask: net.CIDRMask(LANPrefix.Bits(), 32)},
		Gw: GWWANIP.AsSlice()}
	if err := srv.nl.RouteAdd(route); err != nil {
		return fmt.Errorf("route %s via %s on the server: %w", LANPrefix, GWWANIP, err)
	}
	defer func() {
		if derr := srv.nl.RouteDel(route); derr != nil && err == nil {
			err = fmt.Errorf("removing the server's route to %s: %w", LANPrefix, derr)
		}
	}()
	for _, c := range t.Clients {
		n, err := sendGRE(srv, srv.IP, c.IP, inside, strayTag)
		res.GRESentInside += n
		if err != nil {
			return fmt.Errorf("stray GRE to %s: %w", c.IP, err)
		}
	}
	return nil
}

// sendGRE sends one GRE packet per key from namespace n (address from) to
// to, each carrying a fakeppp frame tagged tag.
func sendGRE(n *NS, from, to netip.Addr, keys []uint16, tag string) (int, error) {
	g, err := n.ListenGRE(from)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	sent := 0
	for i, key := range keys {
		payload := fakeppp.MakeFrame(tag, uint32(i), 16)
		h := wire.GREHeader{CallID: key, PayloadLen: uint16(len(payload)), HasSeq: true, Seq: uint32(i)}
		if _, err := g.WriteToIP(append(h.Append(nil), payload...), &net.IPAddr{IP: to.AsSlice()}); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

package testbed

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"pptpgw/pptp/wire"
	"pptpgw/testbed/fakeppp"
)

// BadInputResult is the outcome of RunBadInput.
type BadInputResult struct {
	ControlSent   int       `json:"control_sent"`    // malformed control messages sent (one connection each)
	GRESentOut    int       `json:"gre_sent_out"`    // unmatched GRE sent by a client toward the server
	GRESentIn     int       `json:"gre_sent_in"`     // unmatched GRE sent by the server toward the public address
	PACUnknownGRE uint64    `json:"pac_unknown_gre"` // unmatched GRE that reached the PAC (leaked through)
	PACBadControl uint64    `json:"pac_bad_control"` // malformed control messages that reached the PAC
	ClientsGotGRE int64     `json:"clients_got_gre"` // stray GRE that reached any client
	After         PNSResult `json:"after"`           // a normal call made afterwards
	Error         string    `json:"error,omitempty"`
}

// RunBadInput sends, through whatever is in the gateway namespace, (1)
// malformed PPTP control messages from client 0 to a mini PAC on the server,
// each on its own TCP 1723 connection: bad magic cookie, a length shorter
// than the header, an unknown message type; (2) GRE with call IDs nobody
// allocated, from client 0 outward and from the server inward to the public
// address; then (3) a normal call, to show the gateway still works. The
// caller checks the gateway's counters and that it is still running.
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
	c0 := t.Clients[0]
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

	// Stray GRE receivers on every client: nothing should arrive.
	var got atomic.Int64
	for _, c := range t.Clients {
		var g *net.IPConn
		if err := c.Do(func() (err error) {
			g, err = net.ListenIP("ip4:47", &net.IPAddr{IP: c.IP.AsSlice()})
			return err
		}); err != nil {
			res.Error = err.Error()
			return res
		}
		defer g.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := g.ReadFromIP(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	send := func(n *NS, from netip.Addr, to netip.Addr, count int) (int, error) {
		var g *net.IPConn
		if err := n.Do(func() (err error) {
			g, err = net.ListenIP("ip4:47", &net.IPAddr{IP: from.AsSlice()})
			return err
		}); err != nil {
			return 0, err
		}
		defer g.Close()
		sent := 0
		for i := 0; i < count; i++ {
			payload := fakeppp.MakeFrame("stray", uint32(i), 16)
			h := wire.GREHeader{CallID: 0xBEEF - uint16(i), PayloadLen: uint16(len(payload)), HasSeq: true, Seq: uint32(i)}
			if _, err := g.WriteToIP(append(h.Append(nil), payload...), &net.IPAddr{IP: to.AsSlice()}); err != nil {
				return sent, err
			}
			sent++
		}
		return sent, nil
	}
	if res.GRESentOut, err = send(c0, c0.IP, t.Server.IP, 10); err != nil {
		res.Error = fmt.Sprintf("outbound stray GRE: %v", err)
		return res
	}
	if res.GRESentIn, err = send(t.Server, t.Server.IP, GWWANIP, 10); err != nil {
		res.Error = fmt.Sprintf("inbound stray GRE: %v", err)
		return res
	}
	time.Sleep(200 * time.Millisecond)
	res.PACUnknownGRE = pac.UnknownGRE.Load()
	res.PACBadControl = pac.BadControl.Load()
	res.ClientsGotGRE = got.Load()

	res.After = RunPNS(ctx, c0, PNSConfig{Server: t.Server.IP, Calls: 1, Frames: 10})
	return res
}

package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/pptp/wire"
	"pptpgw/testbed/fakeppp"
)

// This file holds a minimal PPTP PAC (server) and PNS (client) in Go, for
// what pptpd and pptp-linux cannot do: several calls on one control
// connection, and control messages deliberately split across TCP segments.
// GRE goes over a raw IP-protocol-47 socket in the peer's namespace; the
// payloads are fakeppp test frames (PPP, no HDLC: GRE carries raw PPP).

// PAC is a mini PPTP server: it accepts many control connections and many
// calls per connection, assigns its own call IDs, and echoes every GRE
// payload back on the call it arrived on.
type PAC struct {
	NS   *NS
	Addr netip.Addr

	ln  net.Listener
	gre *net.IPConn

	mu     sync.Mutex
	calls  map[uint16]pacCall // by the PAC's own call ID
	nextID uint16
	conns  map[net.Conn]bool
	done   bool

	Accepted   atomic.Uint64 // control connections
	CallsOpen  atomic.Uint64 // OCRQs answered
	Echoed     atomic.Uint64 // GRE packets echoed
	UnknownGRE atomic.Uint64 // GRE for no call / from the wrong address
	BadControl atomic.Uint64 // undecodable control messages

	wg sync.WaitGroup
}

type pacCall struct {
	peer   netip.Addr // where the control connection came from (the PNS's public address)
	peerID uint16     // the PNS's call ID (as seen here, i.e. after NAT)
	seq    uint32
}

// StartPAC listens on addr:1723 and a raw GRE socket in namespace n.
func (t *Topology) StartPAC(n *NS, addr netip.Addr) (*PAC, error) {
	p := &PAC{NS: n, Addr: addr, calls: map[uint16]pacCall{}, nextID: 0x4000, conns: map[net.Conn]bool{}}
	if err := n.Do(p.listen); err != nil {
		p.Close()
		return nil, fmt.Errorf("mini PAC in %s: %w", n.Name, err)
	}
	t.OnClose(func() error { p.Close(); return nil })
	p.start()
	return p, nil
}

// ListenPAC starts a mini PAC on addr in the calling process's network
// namespace (e.g. a process started in a topology's namespace, as the
// bench's 10,000-call cases do: a process of their own for the PAC's
// connections). Close stops it.
func ListenPAC(addr netip.Addr) (*PAC, error) {
	p := &PAC{Addr: addr, calls: map[uint16]pacCall{}, nextID: 0x4000, conns: map[net.Conn]bool{}}
	if err := p.listen(); err != nil {
		p.Close()
		return nil, fmt.Errorf("mini PAC: %w", err)
	}
	p.start()
	return p, nil
}

func (p *PAC) listen() error {
	var err error
	if p.ln, err = net.Listen("tcp4", netip.AddrPortFrom(p.Addr, wire.ControlPort).String()); err != nil {
		return err
	}
	p.gre, err = net.ListenIP("ip4:47", &net.IPAddr{IP: p.Addr.AsSlice()})
	return err
}

func (p *PAC) start() {
	p.wg.Add(2)
	go p.acceptLoop()
	go p.greLoop()
}

// Close stops the PAC.
func (p *PAC) Close() {
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
	}
	if p.gre != nil {
		p.gre.Close()
	}
	p.wg.Wait()
}

func (p *PAC) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[c] = true
		p.mu.Unlock()
		p.Accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *PAC) serve(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	// This connection's calls: the PNS's call ID -> ours (RFC 2637: call
	// IDs are scoped to their control connection).
	mine := map[uint16]uint16{}
	defer func() {
		p.mu.Lock()
		for _, id := range mine {
			delete(p.calls, id)
		}
		p.mu.Unlock()
	}()
	buf := make([]byte, wire.MaxMsgLen)
	for {
		m, err := wire.ReadMessage(c, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.BadControl.Add(1)
			}
			return
		}
		var reply wire.Message
		switch m := m.(type) {
		case *wire.SCCRQ:
			reply = &wire.SCCRP{ProtocolVersion: wire.ProtocolVersion, Result: wire.SCCRPResultOK,
				FramingCaps: wire.FramingAsync | wire.FramingSync, BearerCaps: wire.BearerAnalog | wire.BearerDigital,
				MaxChannels: 0xFFFF, FirmwareRevision: 1, Hostname: "testbed-pac", Vendor: "pptpgw testbed"}
		case *wire.OCRQ:
			p.mu.Lock()
			id := p.nextID
			for _, used := p.calls[id]; used; _, used = p.calls[id] {
				id++
			}
			p.nextID = id + 1
			p.calls[id] = pacCall{peer: peer, peerID: m.CallID}
			p.mu.Unlock()
			mine[m.CallID] = id
			p.CallsOpen.Add(1)
			reply = &wire.OCRP{CallID: id, PeerCallID: m.CallID, Result: wire.OCRPResultConnected, ConnectSpeed: 100000000,
				RecvWindow: 64, PhysChannelID: uint32(id)}
		case *wire.CCRQ:
			if id, ok := mine[m.CallID]; ok {
				p.mu.Lock()
				delete(p.calls, id)
				p.mu.Unlock()
				delete(mine, m.CallID)
				reply = &wire.CDN{CallID: id, Result: wire.CDNResultAdminShutdown}
			}
		case *wire.EchoRQ:
			reply = &wire.EchoRP{ID: m.ID, Result: wire.EchoRPResultOK}
		case *wire.StopCCRQ:
			_, _ = c.Write((&wire.StopCCRP{Result: wire.StopCCRPResultOK}).Append(nil))
			return
		}
		if reply != nil {
			if _, err := c.Write(reply.Append(nil)); err != nil {
				return
			}
		}
	}
}

func (p *PAC) greLoop() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	var out []byte
	for {
		n, src, err := p.gre.ReadFromIP(buf)
		if err != nil {
			return
		}
		h, payload, err := wire.ParseGRE(buf[:n])
		if err != nil {
			p.UnknownGRE.Add(1)
			continue
		}
		from, _ := netip.AddrFromSlice(src.IP.To4())
		p.mu.Lock()
		pc, ok := p.calls[h.CallID]
		if ok && pc.peer == from {
			pc.seq++
			p.calls[h.CallID] = pc
		}
		p.mu.Unlock()
		if !ok || pc.peer != from || !h.HasSeq {
			p.UnknownGRE.Add(1)
			continue
		}
		rh := wire.GREHeader{CallID: pc.peerID, PayloadLen: uint16(len(payload)), HasSeq: true, Seq: pc.seq}
		out = append(rh.Append(out[:0]), payload...)
		if _, err := p.gre.WriteToIP(out, src); err != nil {
			continue
		}
		p.Echoed.Add(1)
	}
}

// PNSConfig configures RunPNS.
type PNSConfig struct {
	Server     netip.Addr
	Port       uint16        // TCP port of the PAC (default 1723; e.g. a gateway's forwarded port)
	Calls      int           // calls on the one control connection
	BaseCallID uint16        // first PNS call ID (default 0x0100); every PNS using the same base collides on purpose
	Frames     int           // GRE frames to round-trip per call
	Split      bool          // write control messages split inside their call-ID field, with pauses
	Pause      time.Duration // between split writes (default 30ms)
	Timeout    time.Duration // overall bound (default 5s)
	Hold       func()        // called while all calls are up, before they are cleared
	// FramesAfterHold: GRE frames to round-trip per call once more after
	// Hold returns (PNSCall.GoodAfter), e.g. to show that calls survived
	// what Hold did to the gateway.
	FramesAfterHold int
	// OnUp, if set, gets the calls once they are up (after Frames, before
	// Hold), e.g. to send GRE on them (issue 12's bench).
	OnUp func([]PNSCall)
}

// PNSCall is one call's outcome.
type PNSCall struct {
	CallID     uint16 `json:"call_id"`      // ours
	PeerCallID uint16 `json:"peer_call_id"` // the PAC's, from OCRP
	Replied    bool   `json:"replied"`      // an OCRP arrived for it
	Result     uint8  `json:"result"`
	Want       int    `json:"want"`
	Sent       int    `json:"sent"`
	Good       int    `json:"good"`    // distinct own frames echoed
	Foreign    int    `json:"foreign"` // frames for this call ID carrying another call's tag
	Cleared    bool   `json:"cleared"` // a CDN carrying the PAC's call ID (RFC 2637: the sender's own) arrived
	WantAfter  int    `json:"want_after,omitempty"`
	GoodAfter  int    `json:"good_after,omitempty"` // distinct own frames echoed after Hold (PNSConfig.FramesAfterHold)
}

// PNSResult is the outcome of RunPNS.
type PNSResult struct {
	NS         string    `json:"ns"`
	ControlUp  bool      `json:"control_up"` // SCCRP received
	Calls      []PNSCall `json:"calls"`
	UnknownGRE int       `json:"unknown_gre"` // GRE for none of our call IDs
	Stopped    bool      `json:"stopped"`     // StopCCRP received
	CDNs       []uint16  `json:"cdns"`        // Call IDs carried by the Call-Disconnect-Notifies received
	Error      string    `json:"error,omitempty"`
	Writes     int       `json:"writes"` // control writes (segments) made
}

// OK reports that every call was set up and all its frames came back, with no cross-talk.
// OK reports whether the call was connected and carried all its frames
// back, and only its own.
func (c PNSCall) OK() bool {
	return c.Replied && c.Result == wire.OCRPResultConnected && c.Good == c.Want && c.Foreign == 0 &&
		c.GoodAfter == c.WantAfter
}

func (r PNSResult) OK() bool {
	if !r.ControlUp || r.Error != "" || len(r.Calls) == 0 {
		return false
	}
	for _, c := range r.Calls {
		if !c.OK() {
			return false
		}
	}
	return true
}

func (r PNSResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s control_up=%v stopped=%v writes=%d unknown_gre=%d cdn_call_ids=%#04x", r.NS, r.ControlUp, r.Stopped, r.Writes, r.UnknownGRE, r.CDNs)
	if r.Error != "" {
		fmt.Fprintf(&b, " error=%q", r.Error)
	}
	for _, c := range r.Calls {
		fmt.Fprintf(&b, "\n  call %#04x peer %#04x replied=%v result=%d good=%d/%d foreign=%d sent=%d cleared=%v",
			c.CallID, c.PeerCallID, c.Replied, c.Result, c.Good, c.Want, c.Foreign, c.Sent, c.Cleared)
		if c.WantAfter > 0 {
			fmt.Fprintf(&b, " after_hold=%d/%d", c.GoodAfter, c.WantAfter)
		}
	}
	return b.String()
}

// RunPNS opens one control connection from namespace n to cfg.Server:cfg.Port, opens
// cfg.Calls calls on it (pipelined), round-trips cfg.Frames GRE frames on
// each, then clears the calls and stops the connection. With cfg.Split every
// control message is written in two segments cut inside its call-ID field
// (the tail of one message shares a segment with the head of the next), with
// pauses in between, TCP_NODELAY on. A PAC (mini or other) must be running.
func RunPNS(ctx context.Context, n *NS, cfg PNSConfig) (res PNSResult) {
	res.NS = n.Name
	if cfg.Calls <= 0 {
		cfg.Calls = 1
	}
	if cfg.BaseCallID == 0 {
		cfg.BaseCallID = 0x0100
	}
	if cfg.Port == 0 {
		cfg.Port = wire.ControlPort
	}
	if cfg.Pause <= 0 {
		cfg.Pause = 30 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	fail := func(format string, a ...any) PNSResult {
		if res.Error == "" {
			res.Error = fmt.Sprintf(format, a...)
		}
		return res
	}

	var conn *net.TCPConn
	var gre *net.IPConn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(cfg.Server, cfg.Port).String())
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		if cfg.Frames <= 0 && cfg.FramesAfterHold <= 0 {
			return nil // no GRE of its own (e.g. the bench's 10,000 calls send theirs elsewhere)
		}
		local := conn.LocalAddr().(*net.TCPAddr).IP
		gre, err = net.ListenIP("ip4:47", &net.IPAddr{IP: local})
		return err
	})
	if conn != nil {
		defer conn.Close()
	}
	if gre != nil {
		defer gre.Close()
	}
	if err != nil {
		return fail("connect: %v", err)
	}
	_ = conn.SetNoDelay(true)
	buf := make([]byte, wire.MaxMsgLen)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		if gre != nil {
			_ = gre.SetDeadline(dl)
		}
	}

	// write sends msgs; split mode cuts each inside its call-ID field.
	write := func(msgs ...wire.Message) error {
		var stream []byte
		var cuts []int
		for _, m := range msgs {
			start := len(stream)
			stream = m.Append(stream)
			if off, ok := wire.CallIDOffset(m.Type()); ok && cfg.Split {
				cuts = append(cuts, start+off+1)
			}
		}
		cuts = append(cuts, len(stream))
		prev := 0
		for i, c := range cuts {
			if i > 0 {
				select {
				case <-time.After(cfg.Pause):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if _, err := conn.Write(stream[prev:c]); err != nil {
				return err
			}
			res.Writes++
			prev = c
		}
		return nil
	}

	sccrq := &wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion, FramingCaps: wire.FramingAsync | wire.FramingSync, BearerCaps: wire.BearerAnalog | wire.BearerDigital,
		MaxChannels: 0, FirmwareRevision: 1, Hostname: "testbed-pns", Vendor: "pptpgw testbed"}
	if cfg.Split {
		// Also split the very first message, inside the magic cookie.
		b := sccrq.Append(nil)
		if _, err := conn.Write(b[:6]); err != nil {
			return fail("write SCCRQ: %v", err)
		}
		time.Sleep(cfg.Pause)
		if _, err := conn.Write(b[6:]); err != nil {
			return fail("write SCCRQ: %v", err)
		}
		res.Writes += 2
	} else if err := write(sccrq); err != nil {
		return fail("write SCCRQ: %v", err)
	}
	m, err := wire.ReadMessage(conn, buf)
	if err != nil {
		return fail("read SCCRP: %v", err)
	}
	if rp, ok := m.(*wire.SCCRP); !ok || rp.Result != wire.SCCRPResultOK {
		return fail("expected SCCRP ok, got %T %+v", m, m)
	}
	res.ControlUp = true

	res.Calls = make([]PNSCall, cfg.Calls)
	byID := map[uint16]int{}
	var ocrqs []wire.Message
	for i := range res.Calls {
		id := cfg.BaseCallID + uint16(i)
		res.Calls[i] = PNSCall{CallID: id, Want: cfg.Frames}
		byID[id] = i
		ocrqs = append(ocrqs, &wire.OCRQ{CallID: id, CallSerial: uint16(i + 1), MinBPS: 300, MaxBPS: 100000000,
			BearerType: wire.BearerAnalog | wire.BearerDigital, FramingType: wire.FramingAsync | wire.FramingSync, RecvWindow: 64})
	}
	if err := write(ocrqs...); err != nil {
		return fail("write OCRQ: %v", err)
	}
	for replied := 0; replied < cfg.Calls; {
		m, err := wire.ReadMessage(conn, buf)
		if err != nil {
			return fail("read OCRP (%d of %d replied): %v", replied, cfg.Calls, err)
		}
		rp, ok := m.(*wire.OCRP)
		if !ok {
			continue // echo requests etc.
		}
		i, ok := byID[rp.PeerCallID]
		if !ok || res.Calls[i].Replied {
			return fail("OCRP for unknown call ID %#04x (ours start at %#04x)", rp.PeerCallID, cfg.BaseCallID)
		}
		res.Calls[i].Replied, res.Calls[i].Result, res.Calls[i].PeerCallID = true, rp.Result, rp.CallID
		replied++
	}

	if cfg.Frames > 0 {
		if err := pnsFrames(ctx, gre, cfg.Server, &res, byID); err != nil {
			res.Error = fmt.Sprintf("GRE: %v", err)
		}
	}
	if cfg.OnUp != nil {
		cfg.OnUp(res.Calls)
	}
	if cfg.Hold != nil {
		cfg.Hold()
	}
	if cfg.FramesAfterHold > 0 && res.Error == "" {
		if err := pnsFramesAgain(ctx, gre, cfg, &res, byID); err != nil {
			res.Error = fmt.Sprintf("GRE after hold: %v", err)
		}
	}

	// Tear down: clear every call, then stop the control connection. A PAC
	// that does not know a call (its ID was mangled on the way) never answers
	// its CCRQ, so this part gets a short bound of its own.
	_ = conn.SetDeadline(time.Now().Add(1500 * time.Millisecond))
	var ccrqs []wire.Message
	for _, c := range res.Calls {
		ccrqs = append(ccrqs, &wire.CCRQ{CallID: c.CallID})
	}
	if err := write(ccrqs...); err != nil {
		return fail("write CCRQ: %v", err)
	}
	for cleared := 0; cleared < cfg.Calls; {
		m, err := wire.ReadMessage(conn, buf)
		if err != nil {
			return fail("read CDN (%d of %d): %v", cleared, cfg.Calls, err)
		}
		if cdn, ok := m.(*wire.CDN); ok {
			res.CDNs = append(res.CDNs, cdn.CallID)
			for i := range res.Calls {
				if res.Calls[i].PeerCallID == cdn.CallID {
					res.Calls[i].Cleared = true
				}
			}
			cleared++
		}
	}
	if err := write(&wire.StopCCRQ{Reason: wire.StopReasonNone}); err != nil {
		return fail("write StopCCRQ: %v", err)
	}
	if m, err := wire.ReadMessage(conn, buf); err == nil {
		_, res.Stopped = m.(*wire.StopCCRP)
	}
	return res
}

// pnsFrames sends res.Calls[i].Want frames on every call (GRE key = the
// PAC's call ID) and counts echoes (GRE key = our call ID), resending what
// is missing a few times.
func pnsFrames(ctx context.Context, gre *net.IPConn, server netip.Addr, res *PNSResult, byID map[uint16]int) error {
	var mu sync.Mutex
	got := make([]map[uint32]bool, len(res.Calls))
	for i := range got {
		got[i] = map[uint32]bool{}
	}
	want := 0
	for _, c := range res.Calls {
		want += c.Want
	}
	total := 0
	allIn := make(chan struct{})
	readerDone := make(chan struct{})
	defer func() {
		// Stop the reader before the caller touches res again.
		_ = gre.SetReadDeadline(time.Now())
		<-readerDone
		_ = gre.SetReadDeadline(time.Time{})
		if dl, ok := ctx.Deadline(); ok {
			_ = gre.SetDeadline(dl)
		}
	}()
	go func() {
		defer close(readerDone)
		buf := make([]byte, 65536)
		for {
			n, _, err := gre.ReadFromIP(buf)
			if err != nil {
				return
			}
			h, payload, err := wire.ParseGRE(buf[:n])
			mu.Lock()
			i, ok := byID[h.CallID]
			if err != nil || !ok {
				res.UnknownGRE++
				mu.Unlock()
				continue
			}
			tag, seq, ok := fakeppp.ParseFrame(payload)
			switch {
			case !ok || tag != pnsTag(res.NS, res.Calls[i].CallID) || seq >= uint32(res.Calls[i].Want):
				res.Calls[i].Foreign++
			case !got[i][seq]:
				got[i][seq] = true
				res.Calls[i].Good++
				total++
				if total == want {
					close(allIn)
				}
			}
			mu.Unlock()
		}
	}()
	dst := &net.IPAddr{IP: server.AsSlice()}
	seqs := make([]uint32, len(res.Calls))
	var out []byte
	for round := 0; round < 5; round++ {
		for i := range res.Calls {
			mu.Lock()
			c := res.Calls[i]
			var missing []uint32
			for q := uint32(0); q < uint32(c.Want); q++ {
				if !got[i][q] {
					missing = append(missing, q)
				}
			}
			mu.Unlock()
			if !c.Replied || c.Result != wire.OCRPResultConnected {
				continue
			}
			for _, q := range missing {
				payload := fakeppp.MakeFrame(pnsTag(res.NS, c.CallID), q, 32)
				seqs[i]++
				h := wire.GREHeader{CallID: c.PeerCallID, PayloadLen: uint16(len(payload)), HasSeq: true, Seq: seqs[i]}
				out = append(h.Append(out[:0]), payload...)
				if _, err := gre.WriteToIP(out, dst); err != nil {
					return err
				}
				mu.Lock()
				res.Calls[i].Sent++
				mu.Unlock()
			}
		}
		select {
		case <-allIn:
			time.Sleep(50 * time.Millisecond) // let stray cross-talk arrive
			return nil
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func pnsTag(ns string, callID uint16) string { return fmt.Sprintf("%s/call-%04x", ns, callID) }

// pnsFramesAgain round-trips cfg.FramesAfterHold more frames on every call
// (tagged apart from the first round's) into res.Calls[i].GoodAfter.
// Echoes of the first round still queued on the socket are read and
// dropped first.
func pnsFramesAgain(ctx context.Context, gre *net.IPConn, cfg PNSConfig, res *PNSResult, byID map[uint16]int) error {
	buf := make([]byte, 65536)
	_ = gre.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		if _, _, err := gre.ReadFromIP(buf); err != nil {
			break
		}
	}
	dl, _ := ctx.Deadline() // zero: none
	_ = gre.SetReadDeadline(dl)
	again := PNSResult{NS: res.NS + "/after-hold", Calls: make([]PNSCall, len(res.Calls))}
	for i, c := range res.Calls {
		again.Calls[i] = PNSCall{CallID: c.CallID, PeerCallID: c.PeerCallID, Replied: c.Replied, Result: c.Result,
			Want: cfg.FramesAfterHold}
	}
	err := pnsFrames(ctx, gre, cfg.Server, &again, byID)
	for i := range res.Calls {
		res.Calls[i].WantAfter = cfg.FramesAfterHold
		res.Calls[i].GoodAfter = again.Calls[i].Good
		res.Calls[i].Foreign += again.Calls[i].Foreign
		res.Calls[i].Sent += again.Calls[i].Sent
	}
	res.UnknownGRE += again.UnknownGRE
	return err
}

// MultiCallConfig configures RunMultiCall.
type MultiCallConfig struct {
	Clients int  // PNS instances, one per client namespace, all at once (default 1)
	Calls   int  // calls per control connection (default 3)
	Frames  int  // GRE frames per call (default 20)
	Split   bool // split control messages inside call-ID fields
	// Hold is called once while every PNS has all its calls up (e.g. to
	// read `pptpgw calls`).
	Hold func()
}

// PACStats are the mini PAC's counters.
type PACStats struct {
	Accepted   uint64 `json:"accepted"`
	CallsOpen  uint64 `json:"calls_open"`
	Echoed     uint64 `json:"echoed"`
	UnknownGRE uint64 `json:"unknown_gre"`
	BadControl uint64 `json:"bad_control"`
}

// PeerCallIDs returns the call IDs the PNSes gave their open calls, as they
// arrived here (after any NAT on the way), sorted.
func (p *PAC) PeerCallIDs() []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []uint16
	for _, pc := range p.calls {
		ids = append(ids, pc.peerID)
	}
	slices.Sort(ids)
	return ids
}

// Stats returns the PAC's counters so far.
func (p *PAC) Stats() PACStats {
	return PACStats{Accepted: p.Accepted.Load(), CallsOpen: p.CallsOpen.Load(), Echoed: p.Echoed.Load(),
		UnknownGRE: p.UnknownGRE.Load(), BadControl: p.BadControl.Load()}
}

// MultiCallResult is the outcome of RunMultiCall.
type MultiCallResult struct {
	PNS []PNSResult `json:"pns"`
	PAC PACStats    `json:"pac"`
}

// OK reports that every PNS got all its calls up and all frames back with no cross-talk.
func (r MultiCallResult) OK() bool {
	if len(r.PNS) == 0 {
		return false
	}
	for _, p := range r.PNS {
		if !p.OK() {
			return false
		}
	}
	return true
}

func (r MultiCallResult) String() string {
	var b strings.Builder
	for _, p := range r.PNS {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "PAC: %+v", r.PAC)
	return b.String()
}

// RunMultiCall starts a mini PAC on the server and, from the first
// cfg.Clients client namespaces at once, a mini PNS each that opens cfg.Calls
// calls on ONE control connection (every PNS uses the same call IDs, so a
// NAT must rewrite them) and round-trips frames on each. Whatever sits in
// the gateway namespace (pptpgw, the kernel helper) is under test.
func RunMultiCall(ctx context.Context, t *Topology, cfg MultiCallConfig) MultiCallResult {
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Calls <= 0 {
		cfg.Calls = 3
	}
	if cfg.Frames <= 0 {
		cfg.Frames = 20
	}
	var res MultiCallResult
	if cfg.Clients > len(t.Clients) {
		res.PNS = []PNSResult{{Error: fmt.Sprintf("topology has %d clients, need %d", len(t.Clients), cfg.Clients)}}
		return res
	}
	pac, err := t.StartPAC(t.Server, t.Server.IP)
	if err != nil {
		res.PNS = []PNSResult{{Error: err.Error()}}
		return res
	}
	defer pac.Close()

	runs := make([]PNSRun, cfg.Clients)
	for i := range runs {
		runs[i] = PNSRun{NS: t.Clients[i], Config: PNSConfig{Server: t.Server.IP, Calls: cfg.Calls,
			Frames: cfg.Frames, Split: cfg.Split, Timeout: 8 * time.Second}}
	}
	res.PNS = RunPNSTogether(ctx, runs, cfg.Hold)
	pac.Close()
	res.PAC = pac.Stats()
	return res
}

// PNSRun is one mini PNS of RunPNSTogether: RunPNS(ctx, NS, Config).
type PNSRun struct {
	NS     *NS
	Config PNSConfig // its Hold is replaced by RunPNSTogether's barrier
}

// RunPNSTogether runs every PNS at once and returns their results in order.
// hold (may be nil) is called once, while every PNS has all its calls up
// (or has failed before getting there), e.g. to read `pptpgw calls`; then
// all go on to tear down. The PACs they call must be running.
func RunPNSTogether(ctx context.Context, runs []PNSRun, hold func()) []PNSResult {
	// Barrier: the last PNS to have its calls up (or to fail before) runs
	// hold, then all go on to tear down.
	var mu sync.Mutex
	arrived := 0
	release := make(chan struct{})
	arrive := func() {
		mu.Lock()
		arrived++
		last := arrived == len(runs)
		mu.Unlock()
		if last {
			if hold != nil {
				hold()
			}
			close(release)
		}
	}
	var wg sync.WaitGroup
	res := make([]PNSResult, len(runs))
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := false
			cfg := r.Config
			cfg.Hold = func() {
				me = true
				arrive()
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
			}
			res[i] = RunPNS(ctx, r.NS, cfg)
			if !me {
				arrive()
			}
		}()
	}
	wg.Wait()
	return res
}

// RunSplitControl is RunMultiCall with every control message split across
// TCP segments inside its call-ID field: 2 clients x 2 calls.
func RunSplitControl(ctx context.Context, t *Topology, hold func()) MultiCallResult {
	return RunMultiCall(ctx, t, MultiCallConfig{Clients: min(2, len(t.Clients)), Calls: 2, Frames: 20, Split: true, Hold: hold})
}

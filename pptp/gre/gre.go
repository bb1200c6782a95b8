// Package gre is the enhanced-GRE (RFC 2637 §4.1) endpoint of a PPTP server or client.
//
// A Mux owns one PacketConn (normally a raw IPPROTO_GRE socket, see ListenRaw) and
// demultiplexes received packets by (peer IP, call ID in the key) to Calls, so many
// clients behind one NAT address work as long as their call IDs differ (they do: the
// call ID in the key is the one WE allocated).
//
// The way of a received packet:
//
//  1. Mux.Serve reads one GRE packet (IP header already stripped) from the PacketConn.
//  2. wire.ParseGRE validates the enhanced header; bad ones are counted ("parse").
//  3. The (source IP, key call ID) pair selects the Call; unknown ones are counted.
//  4. Call.receive processes the acknowledgement (frees send window), then the sequence
//     number: duplicates/replays/out-of-window packets are dropped and counted, in-order
//     ones are delivered, early ones wait in a small reorder buffer until the gap is filled
//     or ReorderTimeout expires (0: no buffer, late packets are dropped).
//  5. Delivery calls the Call's handler synchronously with the PPP frame (no FF03 removal).
//     The payload slice is only valid during the call.
//
// Sending: Call.Send prepends the header with the next sequence number and piggybacks a
// pending acknowledgement. When there is nothing to send, Tick sends an ack-only packet
// after AckDelay, or immediately once a quarter of our advertised window is unacknowledged.
//
// It owns per-call sequencing, acknowledgement, the window, the reorder buffer and
// their counters (metrics.go). It must not know what the payload is (PPP, MPPE) nor
// the control channel that agrees on call IDs (package pptp hands them in), nor IP
// headers (the PacketConn strips and adds them).
package gre

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/pptp/wire"
)

// PacketConn is the narrow packet boundary of the Mux: GRE header + payload in and out,
// without the IP header. ListenRaw provides the kernel implementation; tests use Pipe.
type PacketConn interface {
	ReadPacket(b []byte) (n int, src netip.Addr, err error)
	WritePacket(b []byte, dst netip.Addr) error
	Close() error
}

// BatchReader is a PacketConn that can receive several packets per system call
// (rawConn does, with recvmmsg). ReadBatch fills pkts[i] (a sub-slice of bufs[i]: the
// GRE header and payload) and srcs[i] for i < n; it blocks until at least one packet
// is there.
type BatchReader interface {
	ReadBatch(bufs, pkts [][]byte, srcs []netip.Addr) (n int, err error)
}

// serveBatch is the number of packets Serve asks a BatchReader for at once.
const serveBatch = 32

// Config of a Mux. Zero values pick the defaults documented per field.
type Config struct {
	// RecvWindow is the receive window we advertise (OCRP/OCRQ) and enforce: packets more
	// than this many ahead of the last delivered one are dropped. Default 256.
	RecvWindow uint16
	// ReorderTimeout is how long an early packet waits for the gap before it to fill.
	// 0 disables the reorder buffer: early packets are delivered at once and late ones dropped.
	ReorderTimeout time.Duration
	// ReorderMax bounds the reorder buffer per call. Default 16.
	ReorderMax int
	// AckDelay is how long a receive acknowledgement waits for a data packet to ride on
	// before an ack-only packet is sent. Default 100 ms.
	AckDelay time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.RecvWindow == 0 {
		c.RecvWindow = 256
	}
	if c.ReorderMax == 0 {
		c.ReorderMax = 16
	}
	if c.AckDelay == 0 {
		c.AckDelay = 100 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// resyncAfter consecutive out-of-window packets move the receive sequence.
const resyncAfter = 4

var (
	ErrClosed     = errors.New("gre: call closed")
	ErrWindowFull = errors.New("gre: peer receive window full")
	ErrCallExists = errors.New("gre: call already registered")
)

type key struct {
	peer netip.Addr
	id   uint16
}

// Mux demultiplexes one PacketConn into Calls.
type Mux struct {
	conn PacketConn
	cfg  Config

	mu     sync.RWMutex
	calls  map[key]*Call
	nextID uint16

	counters *metrics.Counters // indexed by counter
	logged   atomic.Uint32     // bit c: a drop of counter c was logged
	flushMu  sync.Mutex
	flush    atomic.Pointer[[]*func()] // copy on write (flushMu)
}

// AddFlush adds a function Serve calls after each batch of received packets has been
// delivered (and Tick after its timers ran): a handler that holds packets back to merge
// them (tun.Device.QueuePacket) writes them out there. The returned function removes it.
func (m *Mux) AddFlush(f func()) (remove func()) {
	h := &f
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	var fs []*func()
	if p := m.flush.Load(); p != nil {
		fs = append(fs, *p...)
	}
	fs = append(fs, h)
	m.flush.Store(&fs)
	return func() {
		m.flushMu.Lock()
		defer m.flushMu.Unlock()
		var keep []*func()
		if p := m.flush.Load(); p != nil {
			for _, g := range *p {
				if g != h {
					keep = append(keep, g)
				}
			}
		}
		m.flush.Store(&keep)
	}
}

func (m *Mux) runFlush() {
	if p := m.flush.Load(); p != nil {
		for _, f := range *p {
			(*f)()
		}
	}
}

// NewMux wraps conn. Call Serve to start receiving.
func NewMux(conn PacketConn, cfg Config) *Mux {
	cfg.defaults()
	return &Mux{conn: conn, cfg: cfg, calls: make(map[key]*Call), counters: metrics.NewCounters(counterDefs)}
}

// Config returns the effective configuration.
func (m *Mux) Config() Config { return m.cfg }

// countPeer counts a drop not tied to a call, logging only the first of each reason
// (these can be floods: the counters tell the rest).
func (m *Mux) countPeer(c counter, src netip.Addr, callID uint16) {
	m.counters.Inc(int(c))
	if m.logged.Or(1<<c)&(1<<c) == 0 {
		m.cfg.Logger.Warn("gre: packet dropped (first of its kind; see counters)", "reason", reasonOf(c), "peer", src, "call_id", callID)
	}
}

// CallConfig describes one call.
type CallConfig struct {
	Peer       netip.Addr
	LocalID    uint16 // our call ID: the key in packets we receive
	PeerID     uint16 // the peer's call ID: the key in packets we send
	PeerWindow uint16 // the peer's advertised receive window; 0 = unlimited
	Handler    func(payload []byte)
}

// Register creates a Call. The handler may be set later with SetHandler.
func (m *Mux) Register(cc CallConfig) (*Call, error) {
	k := key{cc.Peer, cc.LocalID}
	c := m.newCall(cc)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.calls[k]; ok {
		return nil, ErrCallExists
	}
	m.calls[k] = c
	return c, nil
}

// RegisterAuto registers a call with a free, nonzero local call ID (unique across all
// peers of this Mux, so it also works for a client multiplexing many calls to one server).
func (m *Mux) RegisterAuto(cc CallConfig) (*Call, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	used := make(map[uint16]bool, len(m.calls))
	for k := range m.calls {
		used[k.id] = true
	}
	if len(used) >= 65535 {
		return nil, errors.New("gre: no free call ID")
	}
	for {
		m.nextID++
		if m.nextID != 0 && !used[m.nextID] {
			break
		}
	}
	cc.LocalID = m.nextID
	c := m.newCall(cc)
	m.calls[key{cc.Peer, cc.LocalID}] = c
	return c, nil
}

// newCall makes the Call of cc (not registered yet).
func (m *Mux) newCall(cc CallConfig) *Call {
	c := &Call{mux: m, peer: cc.Peer, localID: cc.LocalID, peerID: cc.PeerID, peerWindow: uint32(cc.PeerWindow),
		ackCh: make(chan struct{}, 1)}
	if cc.Handler != nil {
		c.handler.Store(&cc.Handler)
	}
	return c
}

// Lookup reports whether (peer, localID) is registered.
func (m *Mux) Lookup(peer netip.Addr, localID uint16) *Call {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.calls[key{peer, localID}]
}

// InUse reports whether a local call ID is used with any peer.
func (m *Mux) InUse(localID uint16) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k := range m.calls {
		if k.id == localID {
			return true
		}
	}
	return false
}

// Len is the number of registered calls.
func (m *Mux) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.calls)
}

// Serve reads packets until the PacketConn fails (e.g. is closed), returning that error.
func (m *Mux) Serve() error {
	if br, ok := m.conn.(BatchReader); ok {
		bufs := make([][]byte, serveBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 65536)
		}
		pkts := make([][]byte, serveBatch)
		srcs := make([]netip.Addr, serveBatch)
		for {
			n, err := br.ReadBatch(bufs, pkts, srcs)
			if err != nil {
				return err
			}
			m.counters.Inc(int(countRxReads))
			for i := range n {
				m.Input(pkts[i], srcs[i])
			}
			m.runFlush()
		}
	}
	buf := make([]byte, 65536)
	for {
		n, src, err := m.conn.ReadPacket(buf)
		if err != nil {
			return err
		}
		m.counters.Inc(int(countRxReads))
		m.Input(buf[:n], src)
		m.runFlush()
	}
}

// RunTicker calls Tick every interval until stop is closed.
func (m *Mux) RunTicker(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			m.Tick()
		}
	}
}

// Input processes one received GRE packet (header + payload) from src.
// It never panics on any input; failures are counted.
func (m *Mux) Input(b []byte, src netip.Addr) {
	m.counters.Inc(int(countRxPackets))
	h, payload, err := wire.ParseGRE(b)
	if err != nil {
		m.countPeer(dropParse, src, 0)
		return
	}
	m.mu.RLock()
	c := m.calls[key{src.Unmap(), h.CallID}]
	m.mu.RUnlock()
	if c == nil {
		m.countPeer(dropUnknownCall, src, h.CallID)
		return
	}
	c.receive(&h, payload)
}

// Tick runs timers of every call: reorder-buffer timeouts and delayed acks.
func (m *Mux) Tick() {
	now := m.cfg.Now()
	m.mu.RLock()
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.mu.RUnlock()
	for _, c := range calls {
		c.tick(now)
	}
	m.runFlush()
}

// Close closes the PacketConn (Serve returns).
func (m *Mux) Close() error { return m.conn.Close() }

type held struct {
	seq     uint32
	arrived time.Time
	data    []byte
}

// Stats of one call.
type Stats struct {
	TxPackets, TxBytes, RxPackets, RxBytes uint64
	AckOnlySent                            uint64
	Drops                                  map[string]uint64
}

// Call is one GRE session (one PPTP call).
//
// Lock order: rxMu before txMu. The handler runs with rxMu held (which serialises
// delivery and keeps it in order) and may call Send, which takes only txMu.
type Call struct {
	mux             *Mux
	peer            netip.Addr
	localID, peerID uint16
	handler         atomic.Pointer[func([]byte)]
	closed          atomic.Bool

	rxMu      sync.Mutex
	haveRecv  bool
	lastRecv  uint32 // highest seq delivered
	reorder   []held // sorted by seq
	oowRun    int    // consecutive out-of-window packets (rxMu)
	oowLast   uint32
	ackShared atomic.Uint64 // bit 32: pending; low 32: ack value to send
	unacked   uint32        // delivered packets not yet acknowledged (rxMu)
	ackSince  time.Time     // when the oldest unacknowledged delivery happened (rxMu)

	txMu       sync.Mutex
	nextSeq    uint32 // seq of the next data packet
	peerAcked  uint32 // highest seq the peer acknowledged
	gotAck     bool
	peerWindow uint32
	txBuf      []byte
	ackCh      chan struct{} // signalled when an ack opens the window

	txPkts, txBytes, rxPkts, rxBytes, ackOnly atomic.Uint64
	drops                                     [numDrops]atomic.Uint64 // indexed by counter, as the Mux's
	logged                                    atomic.Uint32           // bit c: a drop of counter c was logged
}

// LocalID is our call ID. PeerID is the peer's.
func (c *Call) LocalID() uint16     { return c.localID }
func (c *Call) PeerID() uint16      { return c.peerID }
func (c *Call) Peer() netip.Addr    { return c.peer }
func (c *Call) SetPeerID(id uint16) { c.txMu.Lock(); c.peerID = id; c.txMu.Unlock() }

// SetPeerWindow sets the peer's advertised receive window (0 = unlimited).
func (c *Call) SetPeerWindow(w uint16) { c.txMu.Lock(); c.peerWindow = uint32(w); c.txMu.Unlock() }

// InFlight is the number of data packets sent and not yet acknowledged, and the peer's
// window (0 = unlimited). A sender that can wait (a benchmark, a client with its own
// queue) waits while inflight >= window instead of having Send drop.
func (c *Call) InFlight() (inflight, window uint32) {
	c.txMu.Lock()
	defer c.txMu.Unlock()
	return c.inflightLocked(), c.peerWindow
}

func (c *Call) inflightLocked() uint32 {
	if c.gotAck {
		return c.nextSeq - c.peerAcked - 1
	}
	return c.nextSeq
}

// WindowOpen reports whether Send would pass the peer's window now. Senders that
// encrypt statefully check it BEFORE encrypting: a packet dropped after encryption is a
// coherency-count gap that costs the peer a CCP reset, one dropped before is just loss.
func (c *Call) WindowOpen() bool {
	in, w := c.InFlight()
	return w == 0 || in < w
}

// WaitWindow waits up to d for the peer's window to open (an acknowledgement to
// arrive) and reports whether it is open.
func (c *Call) WaitWindow(d time.Duration) bool {
	if c.WindowOpen() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-c.ackCh:
			if c.WindowOpen() {
				return true
			}
		case <-t.C:
			return c.WindowOpen()
		}
	}
}

// AckSignal receives a value (capacity 1, never closed) when an acknowledgement from
// the peer moved the window. It has one consumer: WaitWindow, or a sender that waits
// for it itself.
func (c *Call) AckSignal() <-chan struct{} { return c.ackCh }

// SetHandler sets the function receiving in-order payloads.
func (c *Call) SetHandler(f func(payload []byte)) { c.handler.Store(&f) }

// Close unregisters the call; later Sends fail and received packets are unknown.
func (c *Call) Close() {
	if c.closed.Swap(true) {
		return
	}
	m := c.mux
	m.mu.Lock()
	if m.calls[key{c.peer, c.localID}] == c {
		delete(m.calls, key{c.peer, c.localID})
	}
	m.mu.Unlock()
}

// count counts a drop (or resync) of the call, in the call's and the Mux's counters,
// and logs the first of each reason per call.
func (c *Call) count(r counter) {
	c.mux.counters.Inc(int(r))
	c.drops[r].Add(1)
	if c.logged.Or(1<<r)&(1<<r) == 0 { // each failure logged once per call, counted always
		c.mux.cfg.Logger.Warn("gre: packet dropped (logged once per call and reason)", "reason", reasonOf(r),
			"peer", c.peer, "call_id", c.localID, "peer_call_id", c.peerID)
	}
}

// Stats returns counters of the call; Drops holds the reasons that occurred.
func (c *Call) Stats() Stats {
	s := Stats{TxPackets: c.txPkts.Load(), TxBytes: c.txBytes.Load(), RxPackets: c.rxPkts.Load(),
		RxBytes: c.rxBytes.Load(), AckOnlySent: c.ackOnly.Load(), Drops: map[string]uint64{}}
	for r := range numDrops {
		if v := c.drops[r].Load(); v != 0 {
			s.Drops[reasonOf(r)] = v
		}
	}
	return s
}

// seqLess is the wrap-safe a < b for 32-bit sequence numbers (RFC 1982 style).
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }

// Send transmits one payload (a PPP frame) with the next sequence number, piggybacking a
// pending acknowledgement. It fails with ErrWindowFull when the peer's advertised window
// is exhausted (the packet is dropped and counted: PPP recovers like from any loss).
func (c *Call) Send(payload []byte) error { return c.SendPrefixed(nil, payload) }

// SendPrefixed is Send of prefix+payload without the caller concatenating them
// (e.g. the PPP address and control bytes FF 03 before a frame).
func (c *Call) SendPrefixed(prefix, payload []byte) error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.txMu.Lock()
	if c.peerWindow != 0 {
		if c.inflightLocked() >= c.peerWindow {
			c.txMu.Unlock()
			c.count(dropWindowFull)
			return ErrWindowFull
		}
	}
	n := len(prefix) + len(payload)
	h := wire.GREHeader{CallID: c.peerID, PayloadLen: uint16(n), HasSeq: true, Seq: c.nextSeq}
	if v := c.ackShared.Load(); v>>32 != 0 && c.ackShared.CompareAndSwap(v, v&0xffffffff) {
		h.HasAck, h.Ack = true, uint32(v)
	}
	c.nextSeq++
	b := h.Append(c.txBuf[:0])
	b = append(b, prefix...)
	b = append(b, payload...)
	c.txBuf = b
	err := c.mux.conn.WritePacket(b, c.peer)
	c.txMu.Unlock()
	if err != nil {
		return err
	}
	c.txPkts.Add(1)
	c.txBytes.Add(uint64(n))
	return nil
}

// sendAckOnly sends an ack-only packet (S=0, A=1, no payload) for ack.
func (c *Call) sendAckOnly(ack uint32) {
	c.txMu.Lock()
	h := wire.GREHeader{CallID: c.peerID, HasAck: true, Ack: ack}
	b := h.Append(c.txBuf[:0])
	c.txBuf = b
	err := c.mux.conn.WritePacket(b, c.peer)
	c.txMu.Unlock()
	if err == nil {
		c.ackOnly.Add(1)
	}
}

func (c *Call) receive(h *wire.GREHeader, payload []byte) {
	if c.closed.Load() {
		c.count(dropClosed)
		return
	}
	if h.HasAck {
		c.txMu.Lock()
		// Only move forward and never beyond what we sent.
		if (!c.gotAck || seqLess(c.peerAcked, h.Ack)) && seqLess(h.Ack, c.nextSeq) {
			c.peerAcked, c.gotAck = h.Ack, true
			select {
			case c.ackCh <- struct{}{}:
			default:
			}
		}
		c.txMu.Unlock()
	}
	if !h.HasSeq {
		return // ack-only
	}
	now := c.mux.cfg.Now()
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	if !c.haveRecv {
		// First packet: RFC 2637 peers start at 0, some at 1; take whatever comes first.
		c.haveRecv = true
		c.lastRecv = h.Seq - 1
	}
	cfg := &c.mux.cfg
	if !seqLess(c.lastRecv, h.Seq) {
		if cfg.ReorderTimeout == 0 && c.lastRecv-h.Seq < uint32(cfg.RecvWindow) {
			c.count(dropLate)
		} else {
			c.count(dropDuplicate)
		}
		return
	}
	if h.Seq-c.lastRecv > uint32(cfg.RecvWindow) {
		// A peer that ignores our window, or a burst of loss longer than it, would
		// otherwise leave every later packet "out of window" forever: after a few
		// consecutive ones, resynchronise to the peer's sequence.
		if c.oowRun > 0 && h.Seq == c.oowLast+1 {
			c.oowRun++
		} else {
			c.oowRun = 1
		}
		c.oowLast = h.Seq
		if c.oowRun < resyncAfter {
			c.count(dropOutOfWindow)
			return
		}
		c.count(countResync)
		c.oowRun = 0
		c.reorder = nil
		c.lastRecv = h.Seq - 1
	}
	c.oowRun = 0
	if h.Seq == c.lastRecv+1 || cfg.ReorderTimeout == 0 {
		c.deliver(h.Seq, payload, now)
		c.drainReorder(now, false)
		return
	}
	// Early: hold a copy until the gap is filled or the timeout expires.
	for _, p := range c.reorder {
		if p.seq == h.Seq {
			c.count(dropDuplicate)
			return
		}
	}
	if len(c.reorder) >= cfg.ReorderMax {
		// Give up on the gap: deliver the oldest held packets first.
		c.count(dropReorderFull)
		c.drainReorder(now, true)
		if !seqLess(c.lastRecv, h.Seq) { // a held copy covered it
			c.count(dropDuplicate)
			return
		}
		if h.Seq == c.lastRecv+1 || len(c.reorder) == 0 {
			c.deliver(h.Seq, payload, now)
			c.drainReorder(now, false)
			return
		}
	}
	d := held{seq: h.Seq, arrived: now, data: append([]byte(nil), payload...)}
	i := len(c.reorder)
	for i > 0 && seqLess(h.Seq, c.reorder[i-1].seq) {
		i--
	}
	c.reorder = append(c.reorder, held{})
	copy(c.reorder[i+1:], c.reorder[i:])
	c.reorder[i] = d
}

// drainReorder delivers held packets that are now in order; with force it first skips
// the gap before the oldest held packet.
func (c *Call) drainReorder(now time.Time, force bool) {
	for len(c.reorder) > 0 {
		p := c.reorder[0]
		if !seqLess(c.lastRecv, p.seq) { // stale (already covered)
			c.reorder = c.reorder[1:]
			continue
		}
		if p.seq != c.lastRecv+1 && !force {
			return
		}
		force = false
		c.reorder = c.reorder[1:]
		c.deliver(p.seq, p.data, now)
	}
	if len(c.reorder) == 0 {
		c.reorder = nil
	}
}

// deliver runs with rxMu held.
func (c *Call) deliver(seq uint32, payload []byte, now time.Time) {
	c.lastRecv = seq
	if prev := c.ackShared.Swap(1<<32 | uint64(seq)); prev>>32 == 0 {
		c.unacked, c.ackSince = 0, now // everything before was acknowledged
	}
	c.unacked++
	c.rxPkts.Add(1)
	c.rxBytes.Add(uint64(len(payload)))
	if f := c.handler.Load(); f != nil {
		(*f)(payload)
	}
	// A quarter of the window unacknowledged: acknowledge now rather than stall the peer.
	if v := c.ackShared.Load(); v>>32 == 0 {
		c.unacked = 0 // the handler's reply carried it
	} else if c.unacked >= max(uint32(c.mux.cfg.RecvWindow)/4, 1) {
		if c.ackShared.CompareAndSwap(v, v&0xffffffff) {
			c.sendAckOnly(uint32(v))
		}
		c.unacked = 0
	}
}

func (c *Call) tick(now time.Time) {
	if c.closed.Load() {
		return
	}
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	cfg := &c.mux.cfg
	// Reorder timeout: skip the gap in front of a packet that waited too long.
	for len(c.reorder) > 0 && now.Sub(c.reorder[0].arrived) >= cfg.ReorderTimeout {
		c.drainReorder(now, true)
	}
	v := c.ackShared.Load()
	if v>>32 == 0 {
		c.unacked = 0
		return
	}
	if now.Sub(c.ackSince) >= cfg.AckDelay {
		if c.ackShared.CompareAndSwap(v, v&0xffffffff) {
			c.sendAckOnly(uint32(v))
		}
		c.unacked = 0
	}
}

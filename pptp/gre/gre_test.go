package gre

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"pptpgw/pptp/wire"
)

// capConn records written packets; reads block forever (tests call Mux.Input).
type capConn struct {
	mu  sync.Mutex
	out [][]byte
	dst []netip.Addr
}

func (c *capConn) ReadPacket(b []byte) (int, netip.Addr, error) { select {} }
func (c *capConn) WritePacket(b []byte, dst netip.Addr) error {
	c.mu.Lock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.dst = append(c.dst, dst)
	c.mu.Unlock()
	return nil
}
func (c *capConn) Close() error { return nil }
func (c *capConn) take() []wire.GREHeader {
	c.mu.Lock()
	defer c.mu.Unlock()
	var hs []wire.GREHeader
	for _, b := range c.out {
		h, _, err := wire.ParseGRE(b)
		if err != nil {
			panic(err)
		}
		hs = append(hs, h)
	}
	c.out = nil
	return hs
}

type fakeClock struct{ t time.Time }

func (f *fakeClock) Now() time.Time          { return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.t = f.t.Add(d) }

var (
	peerA = netip.MustParseAddr("203.0.113.10")
	peerB = netip.MustParseAddr("203.0.113.11")
)

type rig struct {
	t    *testing.T
	conn *capConn
	clk  *fakeClock
	mux  *Mux
	call *Call
	got  []uint32 // first 4 payload bytes = seq marker
}

func newRig(t *testing.T, cfg Config) *rig {
	r := &rig{t: t, conn: &capConn{}, clk: &fakeClock{t: time.Unix(1000, 0)}}
	cfg.Now = r.clk.Now
	r.mux = NewMux(r.conn, cfg)
	c, err := r.mux.Register(CallConfig{Peer: peerA, LocalID: 7, PeerID: 99, Handler: func(p []byte) {
		r.got = append(r.got, binary.BigEndian.Uint32(p))
	}})
	if err != nil {
		t.Fatal(err)
	}
	r.call = c
	return r
}

func greFrame(callID uint16, seq uint32, hasAck bool, ack uint32) []byte {
	h := wire.GREHeader{CallID: callID, PayloadLen: 4, HasSeq: true, Seq: seq, HasAck: hasAck, Ack: ack}
	return binary.BigEndian.AppendUint32(h.Append(nil), seq)
}

func (r *rig) in(seqs ...uint32) {
	for _, s := range seqs {
		r.mux.Input(greFrame(7, s, false, 0), peerA)
	}
}

func (r *rig) want(seqs ...uint32) {
	r.t.Helper()
	if !slices.Equal(r.got, seqs) {
		r.t.Fatalf("delivered %v, want %v", r.got, seqs)
	}
}

func (r *rig) drops(reason string) uint64 { return r.call.Stats().Drops[reason] }

func TestFirstSeqZeroOrOne(t *testing.T) {
	for _, first := range []uint32{0, 1} {
		r := newRig(t, Config{ReorderTimeout: 50 * time.Millisecond})
		r.in(first, first+1, first+2)
		r.want(first, first+1, first+2)
	}
}

func TestDuplicateAndReplayDropped(t *testing.T) {
	r := newRig(t, Config{ReorderTimeout: 50 * time.Millisecond})
	r.in(0, 1, 2, 1, 0, 2)
	r.want(0, 1, 2)
	if d := r.drops(ReasonDuplicate); d != 3 {
		t.Fatalf("duplicate drops %d, want 3", d)
	}
	if r.mux.Counters()[ReasonDuplicate] != 3 {
		t.Fatal("mux counter")
	}
}

func TestOutOfWindowDropped(t *testing.T) {
	r := newRig(t, Config{RecvWindow: 8, ReorderTimeout: 50 * time.Millisecond})
	r.in(0, 9, 100000, 0x80000000)
	r.want(0)
	if d := r.drops(ReasonOutOfWindow); d != 3 {
		t.Fatalf("out_of_window %d, want 3", d)
	}
	r.in(8, 1)
	r.want(0, 1)
}

func TestReorderFillsGap(t *testing.T) {
	r := newRig(t, Config{ReorderTimeout: 50 * time.Millisecond})
	r.in(0, 2, 3, 1, 4)
	r.want(0, 1, 2, 3, 4)
}

func TestReorderTimeoutSkipsGapThenLateDropped(t *testing.T) {
	r := newRig(t, Config{ReorderTimeout: 50 * time.Millisecond})
	r.in(0, 2, 3)
	r.want(0)
	r.clk.Advance(49 * time.Millisecond)
	r.mux.Tick()
	r.want(0)
	r.clk.Advance(time.Millisecond)
	r.mux.Tick()
	r.want(0, 2, 3)
	r.in(1)
	r.want(0, 2, 3)
	if r.drops(ReasonDuplicate)+r.drops(ReasonLate) != 1 {
		t.Fatalf("late packet not counted: %v", r.call.Stats().Drops)
	}
}

func TestReorderOffDropsLate(t *testing.T) {
	r := newRig(t, Config{})
	r.in(0, 2, 1, 3)
	r.want(0, 2, 3)
	if r.drops(ReasonLate) != 1 {
		t.Fatalf("drops %v", r.call.Stats().Drops)
	}
}

func TestReorderBufferFull(t *testing.T) {
	r := newRig(t, Config{ReorderTimeout: time.Second, ReorderMax: 3})
	r.in(0, 2, 3, 4, 5)
	r.want(0, 2, 3, 4, 5)
	if r.drops(ReasonReorderFull) != 1 {
		t.Fatalf("drops %v", r.call.Stats().Drops)
	}
}

func TestSequenceWrap(t *testing.T) {
	r := newRig(t, Config{ReorderTimeout: 50 * time.Millisecond})
	r.in(0xfffffffe, 0, 0xffffffff, 1)
	r.want(0xfffffffe, 0xffffffff, 0, 1)
	r.in(0xffffffff)
	r.want(0xfffffffe, 0xffffffff, 0, 1)
	if !seqLess(0xffffffff, 0) || seqLess(0, 0xffffffff) || seqLess(5, 5) {
		t.Fatal("seqLess")
	}
}

func TestAckOnlyAfterDelayAndPiggyback(t *testing.T) {
	r := newRig(t, Config{AckDelay: 100 * time.Millisecond})
	r.in(0, 1)
	r.mux.Tick()
	if hs := r.conn.take(); len(hs) != 0 {
		t.Fatalf("ack sent before delay: %+v", hs)
	}
	r.clk.Advance(100 * time.Millisecond)
	r.mux.Tick()
	hs := r.conn.take()
	if len(hs) != 1 || hs[0].HasSeq || !hs[0].HasAck || hs[0].Ack != 1 || hs[0].CallID != 99 || hs[0].PayloadLen != 0 {
		t.Fatalf("ack-only: %+v", hs)
	}
	r.clk.Advance(time.Second)
	r.mux.Tick()
	if hs := r.conn.take(); len(hs) != 0 {
		t.Fatalf("repeated ack: %+v", hs)
	}
	// A data packet piggybacks the pending ack; no ack-only afterwards.
	r.in(2)
	if err := r.call.Send([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(time.Second)
	r.mux.Tick()
	hs = r.conn.take()
	if len(hs) != 1 || !hs[0].HasSeq || hs[0].Seq != 0 || !hs[0].HasAck || hs[0].Ack != 2 || hs[0].PayloadLen != 3 {
		t.Fatalf("piggyback: %+v", hs)
	}
	if err := r.call.Send([]byte{1}); err != nil {
		t.Fatal(err)
	}
	hs = r.conn.take()
	if len(hs) != 1 || hs[0].HasAck || hs[0].Seq != 1 {
		t.Fatalf("second data packet: %+v", hs)
	}
}

func TestAckImmediateAtQuarterWindow(t *testing.T) {
	r := newRig(t, Config{RecvWindow: 16, AckDelay: time.Hour})
	r.in(0, 1, 2)
	if hs := r.conn.take(); len(hs) != 0 {
		t.Fatal("early ack")
	}
	r.in(3)
	hs := r.conn.take()
	if len(hs) != 1 || hs[0].Ack != 3 {
		t.Fatalf("quarter-window ack: %+v", hs)
	}
}

func TestSendWindowRespected(t *testing.T) {
	r := newRig(t, Config{})
	r.call.SetPeerWindow(2)
	for i := range 2 {
		if err := r.call.Send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.call.Send([]byte{2}); err != ErrWindowFull {
		t.Fatalf("got %v, want ErrWindowFull", err)
	}
	// Bogus ack beyond what we sent is ignored.
	r.mux.Input(wire.GREHeader{CallID: 7, HasAck: true, Ack: 50}.Append(nil), peerA)
	if err := r.call.Send([]byte{2}); err != ErrWindowFull {
		t.Fatalf("bogus ack opened window: %v", err)
	}
	r.mux.Input(wire.GREHeader{CallID: 7, HasAck: true, Ack: 0}.Append(nil), peerA)
	if err := r.call.Send([]byte{2}); err != nil {
		t.Fatal(err)
	}
	if err := r.call.Send([]byte{3}); err != ErrWindowFull {
		t.Fatal("window not re-closed")
	}
	if r.drops(ReasonWindowFull) != 3 {
		t.Fatalf("drops %v", r.call.Stats().Drops)
	}
}

func TestDemuxByPeerAndCallID(t *testing.T) {
	conn := &capConn{}
	m := NewMux(conn, Config{})
	var a, b []byte
	if _, err := m.Register(CallConfig{Peer: peerA, LocalID: 5, PeerID: 1, Handler: func(p []byte) { a = append(a, p[3]) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(CallConfig{Peer: peerB, LocalID: 5, PeerID: 1, Handler: func(p []byte) { b = append(b, p[3]) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(CallConfig{Peer: peerB, LocalID: 5}); err != ErrCallExists {
		t.Fatal("duplicate registration accepted")
	}
	m.Input(greFrame(5, 10, false, 0), peerA)
	m.Input(greFrame(5, 20, false, 0), peerB)
	m.Input(greFrame(6, 30, false, 0), peerB)
	m.Input(greFrame(5, 40, false, 0), netip.MustParseAddr("203.0.113.12"))
	m.Input([]byte{1, 2, 3}, peerA)
	if !slices.Equal(a, []byte{10}) || !slices.Equal(b, []byte{20}) {
		t.Fatalf("a=%v b=%v", a, b)
	}
	c := m.Counters()
	if c[ReasonUnknownCall] != 2 || c[ReasonParse] != 1 {
		t.Fatalf("counters %v", c)
	}
}

func TestClosedCall(t *testing.T) {
	r := newRig(t, Config{})
	r.call.Close()
	if err := r.call.Send([]byte{1}); err != ErrClosed {
		t.Fatal(err)
	}
	r.in(0)
	r.want()
	if r.mux.Len() != 0 {
		t.Fatal("not unregistered")
	}
}

func TestPipeEndToEnd(t *testing.T) {
	a, b := Pipe(peerA, peerB, 64)
	ma, mb := NewMux(a, Config{}), NewMux(b, Config{})
	go ma.Serve()
	go mb.Serve()
	defer ma.Close()
	got := make(chan []byte, 10)
	ca, _ := ma.Register(CallConfig{Peer: peerB, LocalID: 1, PeerID: 2})
	mb.Register(CallConfig{Peer: peerA, LocalID: 2, PeerID: 1, Handler: func(p []byte) { got <- append([]byte(nil), p...) }})
	for i := range 5 {
		if err := ca.Send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		select {
		case p := <-got:
			if p[0] != byte(i) {
				t.Fatalf("got %v want %d", p, i)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("timeout")
		}
	}
}

// FuzzReceive feeds arbitrary packets to a call: no panic, deliveries strictly increase.
func FuzzReceive(f *testing.F) {
	f.Add(greFrame(7, 0, false, 0), greFrame(7, 2, true, 0), greFrame(7, 1, false, 0), uint8(10))
	f.Add(greFrame(7, 0xffffffff, false, 0), greFrame(7, 0, true, 5), []byte{0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 7}, uint8(200))
	f.Add([]byte{}, []byte{0x20, 1}, greFrame(8, 1, false, 0), uint8(0))
	f.Fuzz(func(t *testing.T, p1, p2, p3 []byte, adv uint8) {
		for _, timeout := range []time.Duration{0, 30 * time.Millisecond} {
			clk := &fakeClock{t: time.Unix(0, 0)}
			m := NewMux(&capConn{}, Config{RecvWindow: 16, ReorderTimeout: timeout, ReorderMax: 4, Now: clk.Now})
			var seqs []uint32
			_, _ = m.Register(CallConfig{Peer: peerA, LocalID: 7, PeerID: 1, PeerWindow: 4, Handler: func(p []byte) {
				if len(p) > 1500 {
					t.Fatalf("payload too long: %d", len(p))
				}
			}})
			c := m.Lookup(peerA, 7)
			c.SetHandler(func(p []byte) { seqs = append(seqs, c.lastRecv) })
			for _, p := range [][]byte{p1, p2, p3, p1} {
				m.Input(p, peerA)
				clk.Advance(time.Duration(adv) * time.Millisecond)
				m.Tick()
				_ = c.Send([]byte{1})
			}
			for i := 1; i < len(seqs); i++ {
				if !seqLess(seqs[i-1], seqs[i]) {
					t.Fatalf("delivery not increasing: %v", seqs)
				}
			}
		}
	})
}

func BenchmarkCallReceiveSend(b *testing.B) {
	m := NewMux(discard{}, Config{})
	c, _ := m.Register(CallConfig{Peer: peerA, LocalID: 7, PeerID: 1, Handler: func([]byte) {}})
	payload := make([]byte, 1400)
	buf := make([]byte, 0, 1500)
	b.ReportAllocs()
	b.SetBytes(1400)
	for i := 0; b.Loop(); i++ {
		h := wire.GREHeader{CallID: 7, PayloadLen: 1400, HasSeq: true, Seq: uint32(i)}
		p := append(h.Append(buf[:0]), payload...)
		m.Input(p, peerA)
		_ = c.Send(payload)
	}
}

type discard struct{}

func (discard) ReadPacket([]byte) (int, netip.Addr, error) { select {} }
func (discard) WritePacket([]byte, netip.Addr) error       { return nil }
func (discard) Close() error                               { return nil }

func TestResyncAfterConsecutiveOutOfWindow(t *testing.T) {
	r := newRig(t, Config{RecvWindow: 8})
	r.in(0, 1)
	r.in(100, 101, 102) // a peer far ahead (ignored our window / long loss burst)
	r.want(0, 1)
	r.in(103)
	r.want(0, 1, 103)
	r.in(104, 102, 50)
	r.want(0, 1, 103, 104)
	if r.drops(ReasonResync) != 1 || r.drops(ReasonOutOfWindow) != 3 {
		t.Fatalf("drops %v", r.call.Stats().Drops)
	}
	// Scattered far-ahead packets (not consecutive) never move the sequence.
	r.in(5000, 7000, 9000, 11000, 13000)
	r.in(105)
	r.want(0, 1, 103, 104, 105)
}

// TestMuxMetrics: the Mux's snapshot is valid for exporters, names every
// counter (zero or not), and counts a drop under its gre_ key.
func TestMuxMetrics(t *testing.T) {
	r := newRig(t, Config{})
	r.mux.Input([]byte{1, 2, 3}, peerA)
	snap := r.mux.Metrics()
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	if v, ok := snap.Get("gre_parse"); !ok || v != 1 {
		t.Fatalf("gre_parse = %d, %v; want 1, true", v, ok)
	}
	if v, ok := snap.Get("gre_rx_packets"); !ok || v != 1 {
		t.Fatalf("gre_rx_packets = %d, %v; want 1, true", v, ok)
	}
	for _, reason := range []string{ReasonUnknownCall, ReasonDuplicate, ReasonOutOfWindow, ReasonLate,
		ReasonReorderFull, ReasonWindowFull, ReasonClosed, ReasonResync} {
		if v, ok := snap.Get("gre_" + reason); !ok || v != 0 {
			t.Errorf("gre_%s = %d, %v; want 0, true", reason, v, ok)
		}
	}
	if c := r.mux.Counters(); len(c) != len(snap) || c[ReasonParse] != 1 {
		t.Fatalf("Counters %v", c)
	}
}

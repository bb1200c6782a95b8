package pptp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pptpgw/pptp/gre"
)

// heldConn holds everything the client sends (its GRE acknowledgements) while paused
// and sends it all on resume: a peer whose acks lag behind a burst.
type heldConn struct {
	gre.PacketConn
	mu     sync.Mutex
	paused bool
	held   [][]byte
}

func (h *heldConn) WritePacket(b []byte, dst netip.Addr) error {
	h.mu.Lock()
	if h.paused {
		h.held = append(h.held, append([]byte(nil), b...))
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	return h.PacketConn.WritePacket(b, dst)
}

func (h *heldConn) pause() { h.mu.Lock(); h.paused = true; h.mu.Unlock() }

func (h *heldConn) resume(dst netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paused = false
	for _, b := range h.held {
		_ = h.PacketConn.WritePacket(b, dst)
	}
	h.held = nil
}

// TestBurstWaitsForWindow: a burst from the kernel larger than the client's GRE window
// is not dropped: what does not fit waits in the session's queue and leaves, in order,
// as the client's acknowledgements arrive (stateful MPPE: no coherency gap, no reset).
func TestBurstWaitsForWindow(t *testing.T) {
	for _, stateless := range []bool{true, false} {
		hc := &heldConn{}
		r := newRig(t, nil, func(p gre.PacketConn) gre.PacketConn { hc.PacketConn = p; return hc })
		c, err := r.dial(t, "alice", "s3cret pass", func(cc *ClientConfig) { cc.StatelessOnly, cc.StatefulOnly = stateless, !stateless })
		if err != nil {
			t.Fatal(err)
		}
		ping(t, c, behind, 100)
		window := r.clientMux.Config().RecvWindow // what the client advertised
		var got atomic.Int64
		var order atomic.Bool
		order.Store(true)
		c.OnIP(func(p []byte) {
			if len(p) >= 28 && p[9] == 17 {
				if int64(binary.BigEndian.Uint16(p[26:])) != got.Load() {
					order.Store(false)
				}
				got.Add(1)
			}
		})
		hc.pause()
		n := int(window) + txQueueMax/2
		dst := c.Session().Info().LocalIP
		go func() {
			for i := range n {
				p := udpPacket(behind, dst, 200)
				binary.BigEndian.PutUint16(p[26:], uint16(i)) // UDP checksum field: the sequence
				r.net.in <- p
			}
		}()
		// The window's worth arrives (less the ping reply if its ack was still out)...
		waitFor(t, func() bool { return got.Load() >= int64(window)-1 })
		time.Sleep(50 * time.Millisecond) // ...and nothing more while the acks are held
		if g := got.Load(); g > int64(window) {
			t.Fatalf("%d packets arrived with the acks held, window %d", g, window)
		}
		hc.resume(loopback)
		waitFor(t, func() bool { return got.Load() == int64(n) })
		if !order.Load() {
			t.Fatal("packets out of order")
		}
		cn := r.srv.Counters()
		if cn["net_peer_window_full"] != 0 || c.Session().Counters()["mppe_reset_request_sent"] != 0 {
			t.Fatalf("drops or resets: server %v client %v", cn, c.Session().Counters())
		}
		c.Close()
		waitFor(t, func() bool { return r.srv.txQueued.Load() == 0 })
	}
}

package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"pptpgw/pptp/wire"
)

// Many live calls at once, for issue 12's bench (GRE packets/s and memory
// at 10,000 calls): the mini PNS sets calls up through the control channel
// from every client host, a few control connections at a time, and holds
// them until Release.

// HoldPlan says how many calls HoldCalls sets up and how.
type HoldPlan struct {
	Server  netip.Addr
	Calls   int // calls in all
	PerConn int // calls per control connection (default 1)
	// Concurrency bounds the control connections being set up at once
	// (default 32): Linux's helper keeps an expectation per call until the
	// call's first GRE packet, and its expectation table is small (4096).
	Concurrency int
	Timeout     time.Duration // bound on the set-up and the hold (default 120s)
}

// HeldCalls are the calls of one HoldCalls, up until Release.
type HeldCalls struct {
	// Keys are, per client (topology.Clients' order), the PAC's call IDs of
	// the calls that came up: the GRE keys towards the server.
	Keys    [][]uint16
	Up      int           // calls that came up
	Conns   int           // control connections opened
	Setup   time.Duration // until every connection was up (or failed)
	Failed  int           // control connections that failed before their calls were up
	FirstEr string        // the first failure, if any

	release chan struct{}
	wg      sync.WaitGroup
}

// HoldCalls sets up plan.Calls calls from t's clients (round robin, one
// control connection of plan.PerConn calls at a time per slot of
// plan.Concurrency), sends one GRE frame on each as soon as it is up (for
// Linux's helper, that turns the call's expectation into a tracked GRE
// flow; the mini PAC echoes it), and returns once all are up or failed.
// The calls stay up until Release. A PAC must be running on plan.Server.
func HoldCalls(ctx context.Context, t *Topology, plan HoldPlan) (*HeldCalls, error) {
	if plan.PerConn <= 0 {
		plan.PerConn = 1
	}
	if plan.Concurrency <= 0 {
		plan.Concurrency = 32
	}
	if plan.Timeout <= 0 {
		plan.Timeout = 120 * time.Second
	}
	nc := len(t.Clients)
	if nc == 0 || plan.Calls <= 0 {
		return nil, errors.New("HoldCalls: no clients or no calls")
	}
	conns := (plan.Calls + plan.PerConn - 1) / plan.PerConn
	if (conns+nc-1)/nc*plan.PerConn > 0xF000 {
		return nil, fmt.Errorf("HoldCalls: %d calls per client host do not fit the call IDs", (conns+nc-1)/nc*plan.PerConn)
	}
	// One raw socket per client host for the first frames (its echoes are
	// never read; the socket's buffer drops them).
	socks := make([]*net.IPConn, nc)
	opened := socks[:0:0]
	defer func() {
		for _, s := range opened {
			s.Close()
		}
	}()
	for i, c := range t.Clients {
		var err error
		if socks[i], err = c.ListenGRE(c.IP); err != nil {
			return nil, fmt.Errorf("gre socket in %s: %w", c.Name, err)
		}
		opened = append(opened, socks[i])
	}
	h := &HeldCalls{Keys: make([][]uint16, nc), Conns: conns, release: make(chan struct{})}
	var mu sync.Mutex
	sem := make(chan struct{}, plan.Concurrency)
	start := time.Now()
	var setup sync.WaitGroup
	left := plan.Calls
	for j := 0; j < conns; j++ {
		n := min(plan.PerConn, left)
		left -= n
		ci := j % nc
		c := t.Clients[ci]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			close(h.release)
			h.wg.Wait()
			return nil, ctx.Err()
		}
		setup.Add(1)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			once := sync.OnceFunc(func() { <-sem; setup.Done() })
			defer once()
			cfg := PNSConfig{Server: plan.Server, Calls: n, BaseCallID: uint16(0x0100 + (j/nc)*plan.PerConn),
				Timeout: plan.Timeout,
				OnUp: func(cs []PNSCall) {
					var keys []uint16
					for _, x := range cs {
						if x.Replied && x.Result == wire.OCRPResultConnected {
							keys = append(keys, x.PeerCallID)
						}
					}
					mu.Lock()
					h.Keys[ci] = append(h.Keys[ci], keys...)
					h.Up += len(keys)
					s := socks[ci]
					if s != nil {
						_ = sendFirstFrames(s, plan.Server, keys)
					}
					mu.Unlock()
				},
				Hold: func() {
					once()
					select {
					case <-h.release:
					case <-ctx.Done():
					}
				}}
			r := RunPNS(ctx, c, cfg)
			if !r.ControlUp || len(r.Calls) == 0 || !r.Calls[0].Replied {
				mu.Lock()
				h.Failed++
				if h.FirstEr == "" {
					h.FirstEr = r.Error
				}
				mu.Unlock()
			}
		}()
	}
	setup.Wait()
	h.Setup = time.Since(start)
	mu.Lock()
	for i := range socks {
		socks[i] = nil // closed on return; no more first frames
	}
	mu.Unlock()
	return h, nil
}

// sendFirstFrames sends one small GRE frame on each key from s to server.
func sendFirstFrames(s *net.IPConn, server netip.Addr, keys []uint16) error {
	dst := &net.IPAddr{IP: server.AsSlice()}
	var buf []byte
	for _, k := range keys {
		h := wire.GREHeader{CallID: k, PayloadLen: 8, HasSeq: true}
		buf = append(h.Append(buf[:0]), make([]byte, 8)...)
		for try := 0; ; try++ {
			_, err := s.WriteToIP(buf, dst)
			if err == nil || !errors.Is(err, syscall.ENOBUFS) || try == 100 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// Release lets every held call be cleared and its control connection
// stopped, and waits for that (at most d).
func (h *HeldCalls) Release(d time.Duration) {
	close(h.release)
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// SendGREPaced sends GRE frames (size-byte payloads) on keys, round robin,
// from namespace n (from: the client's address) to to, at rate packets/s
// for d (never longer: a sender behind its rate stops at d, not when it
// has caught up), in small bursts every few hundred microseconds, until
// ctx ends. It returns what the socket took (a full local queue, ENOBUFS,
// is not counted as sent: the sender could not keep up) and for how long
// it sent.
func SendGREPaced(ctx context.Context, n *NS, from, to netip.Addr, keys []uint16, size int, rate float64, d time.Duration) (uint64, time.Duration, error) {
	if len(keys) == 0 || rate <= 0 {
		return 0, 0, nil
	}
	g, err := n.ListenGRE(from)
	if err != nil {
		return 0, 0, err
	}
	defer g.Close()
	_ = g.SetReadBuffer(4096) // echoes arrive here too; never read
	dst := &net.IPAddr{IP: to.AsSlice()}
	payload := make([]byte, size)
	var buf []byte
	var sent, tries uint64
	start := time.Now()
	for {
		el := time.Since(start)
		if el >= d || ctx.Err() != nil {
			return sent, el, ctx.Err()
		}
		due := uint64(rate * el.Seconds())
		if tries >= due {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		for ; tries < due; tries++ {
			if tries%32 == 31 && time.Since(start) >= d {
				break
			}
			h := wire.GREHeader{CallID: keys[tries%uint64(len(keys))], PayloadLen: uint16(size), HasSeq: true, Seq: uint32(tries)}
			buf = append(h.Append(buf[:0]), payload...)
			if _, err := g.WriteToIP(buf, dst); err != nil {
				if errors.Is(err, syscall.ENOBUFS) {
					continue
				}
				return sent, time.Since(start), err
			}
			sent++
		}
	}
}

package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"pptpgw/pptp/wire"
)

// FloodResult is one GREFlood.
type FloodResult struct {
	Sent, Echoed int // frames
	IPLen        int // bytes of each frame's IP packet, both ways
	Seconds      float64
}

// GREFlood sends GRE frames on a live call from namespace n (local is the
// call's inside address there) to server: key peerCallID (the PAC's call
// ID), payload bytes each, paced at rate bit/s of IP packets for d. It
// counts the frames echoed back on ownCallID (the mini PAC echoes every
// frame), reading until half a second after the last send. Its frames are
// not the PNS's, which counts their echoes as foreign.
func GREFlood(ctx context.Context, n *NS, local, server netip.Addr, peerCallID, ownCallID uint16, payload int, rate float64, d time.Duration) (FloodResult, error) {
	c, err := n.ListenGRE(local)
	if err != nil {
		return FloodResult{}, fmt.Errorf("gre socket: %w", err)
	}
	defer c.Close()
	h := wire.GREHeader{CallID: peerCallID, PayloadLen: uint16(payload), HasSeq: true}
	frame := append(h.Append(nil), make([]byte, payload)...)
	r := FloodResult{IPLen: 20 + len(frame)}
	var echoed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			m, _, err := c.ReadFromIP(buf)
			if err != nil {
				return
			}
			if gh, _, err := wire.ParseGRE(buf[:m]); err == nil && gh.CallID == ownCallID && m == len(frame) {
				echoed.Add(1)
			}
		}
	}()
	dst := &net.IPAddr{IP: server.AsSlice()}
	every := time.Duration(float64(r.IPLen*8) / rate * float64(time.Second))
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * every)
		if at.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		h.Seq = uint32(i + 1)
		frame = append(h.Append(frame[:0]), frame[len(frame)-payload:len(frame)]...)
		if _, err := c.WriteToIP(frame, dst); err == nil {
			r.Sent++
		}
	}
	r.Seconds = time.Since(start).Seconds()
	time.Sleep(500 * time.Millisecond)
	_ = c.SetReadDeadline(time.Now())
	<-done
	r.Echoed = int(echoed.Load())
	return r, nil
}

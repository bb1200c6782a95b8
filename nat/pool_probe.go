package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"pptpgw/pptp/wire"
)

// Health probes of pool members (issue 11).
const (
	// ProbeControl: TCP connect to the member's port 1723, a
	// Start-Control-Connection-Request, and a
	// Start-Control-Connection-Reply with result 1 (OK) within the
	// timeout; then Stop-Control-Connection-Request and close.
	ProbeControl = "control"
	// ProbeTCP: TCP connect within the timeout.
	ProbeTCP = "tcp"
	// ProbeNone: members are never probed and always up.
	ProbeNone = "none"
)

// Prober probes one member: nil if it is healthy.
type Prober func(ctx context.Context, addr netip.Addr, probe string) error

// RunHealth probes the members of every pool until ctx ends: one goroutine
// per pool, each round probing the pool's members at once, every
// Health.Interval, each probe bounded by Health.Timeout; when ApplyPools
// replaces the pools, the new ones are probed. prober nil means
// ProbeMember. State changes are logged and counted (probeDone).
func (e *Engine) RunHealth(ctx context.Context, prober Prober) {
	if prober == nil {
		prober = ProbeMember
	}
	for {
		set := e.ps()
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, ps := range set.pools {
			if ps.cfg.Health.Probe == ProbeNone {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.probePool(pctx, ps, prober)
			}()
		}
		select {
		case <-ctx.Done():
		case <-set.done: // ApplyPools: probe the new set
		}
		cancel()
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
	}
}

func (e *Engine) probePool(ctx context.Context, ps *poolState, prober Prober) {
	h := ps.cfg.Health
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, m := range ps.members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, h.Timeout)
				start := time.Now()
				err := prober(pctx, m.addr, h.Probe)
				cancel()
				if ctx.Err() != nil {
					return // shutting down: not the member's fault
				}
				res := ProbeResult{At: e.clk.Now(), OK: err == nil, RTT: float64(time.Since(start).Microseconds()) / 1000}
				if err != nil {
					res.Err = err.Error()
				}
				e.probeDone(m, res)
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeMember is the default Prober: it dials addr:1723 and, for
// ProbeControl, runs the start of a control connection.
func ProbeMember(ctx context.Context, addr netip.Addr, probe string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(addr, wire.ControlPort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	if probe != ProbeControl {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return probeControl(c)
}

// ErrProbeRefused: the member answered the Start-Control-Connection-Request
// with a result other than OK.
var ErrProbeRefused = errors.New("start-control-connection refused")

// probeControl runs SCCRQ/SCCRP on c and stops the connection again.
func probeControl(c net.Conn) error {
	rq := &wire.SCCRQ{ProtocolVersion: 0x0100, FramingCaps: 3, BearerCaps: 3, MaxChannels: 0,
		FirmwareRevision: 1, Hostname: "pptpgw-probe", Vendor: "pptpgw"}
	if _, err := c.Write(rq.Append(nil)); err != nil {
		return err
	}
	buf := make([]byte, 1024)
	for range 4 { // skip what a PAC may send first (an echo request)
		msg, err := wire.ReadMessage(c, buf)
		if err != nil {
			return err
		}
		rp, ok := msg.(*wire.SCCRP)
		if !ok {
			continue
		}
		if rp.Result != 1 {
			return fmt.Errorf("%w: result %d error %d", ErrProbeRefused, rp.Result, rp.Error)
		}
		stop := &wire.StopCCRQ{Reason: 1}
		c.Write(stop.Append(nil)) // best effort; the close ends it anyway
		return nil
	}
	return errors.New("no start-control-connection-reply")
}

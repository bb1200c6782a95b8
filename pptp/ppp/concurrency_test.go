package ppp

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Data, control and timers from several goroutines at once (run with -race):
// the server echoes every packet back from its OnIP callback, as a ping
// responder on the tunnel address does.
func TestConcurrentDataAndControl(t *testing.T) {
	clk, s, c := newConfigs()
	s.AllowStateless, s.AllowStateful = false, true
	s.EchoInterval = 5 * time.Second
	p := upPair(t, s, c, clk)
	var echoed, back atomic.Int64
	p.srv.OnIP(func(b []byte) {
		if p.srv.SendIP(b) == nil {
			echoed.Add(1)
		}
	})
	p.cli.OnIP(func([]byte) { back.Add(1) })
	const n = 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(3)
	go func() { // client sender
		defer wg.Done()
		pkt := ipPacket(500, 3)
		for range n {
			if err := p.cli.SendIP(pkt); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // timers
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			now := clk.Advance(10 * time.Millisecond)
			p.srv.Tick(now)
			p.cli.Tick(now)
			_ = p.srv.Info()
			_ = p.cli.State()
			time.Sleep(time.Millisecond)
		}
	}()
	go func() { // the wire
		defer wg.Done()
		for back.Load() < n {
			select {
			case <-stop:
				return
			default:
			}
			p.pump()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	deadline := time.After(20 * time.Second)
	for back.Load() < n {
		select {
		case <-deadline:
			close(stop)
			wg.Wait()
			t.Fatalf("echoed %d, back %d; counters %v %v", echoed.Load(), back.Load(), p.srv.Counters(), p.cli.Counters())
		case <-time.After(time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	if isClosed(p.srv.Done()) || isClosed(p.cli.Done()) {
		t.Fatal("session ended")
	}
}

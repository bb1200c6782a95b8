package pptp

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"pptpgw/pptp/wire"
	"pptpgw/testbed"
)

// TestNetnsPreauthFloods runs the three pre-authentication floods of the hardening
// issue at once, over real TCP and GRE, from a second address of the client
// namespace (203.0.113.3): connections that send SCCRQ and then nothing, one
// connection at a time sending 256 Outgoing-Call-Requests and never authenticating,
// and connects that never send anything. While they run, a legitimate client from
// 203.0.113.1 brings up five sessions one after the other, each carrying a ping to
// the host behind the server. The connection table (32) is full of the flood all
// along; the attacker's own connections make room for it. Pool addresses go only to
// the legitimate sessions, and the log stays a few lines long.
func TestNetnsPreauthFloods(t *testing.T) {
	const maxConns, sessions = 32, 5
	rec := &logRecorder{}
	r := newNSRig(t, func(c *Config) {
		c.MaxConns = maxConns
		c.FirstMessageTimeout, c.CallRequestTimeout, c.AuthTimeout = time.Second, time.Second, 1500*time.Millisecond
		c.Logger = slog.New(rec)
	})
	attacker := netip.MustParseAddr("203.0.113.3")
	gwnl := r.topo.GW.Netlink()
	wan, err := gwnl.LinkByName(r.topo.WANIf)
	must(t, err)
	must(t, gwnl.AddrAdd(wan, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(attacker, 24))}))
	server := netip.AddrPortFrom(testbed.ServerIP, wire.ControlPort).String()

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		open     []net.Conn
		attempts atomic.Int64
	)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	dial := func() net.Conn {
		var c net.Conn
		err := r.topo.GW.Do(func() error {
			var err error
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: attacker.AsSlice()}, Timeout: 2 * time.Second}
			c, err = d.Dial("tcp", server)
			return err
		})
		if err != nil {
			return nil
		}
		attempts.Add(1)
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
		return c
	}
	flood := func(n int, pause time.Duration, conn func(net.Conn)) {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stopped() {
					if c := dial(); c != nil {
						conn(c)
					}
					select {
					case <-stop:
					case <-time.After(pause):
					}
				}
			}()
		}
	}
	sccrq := (&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion}).Append(nil)
	// SCCRQ, then silent until the server closes the connection; again.
	flood(2*maxConns, 50*time.Millisecond, func(c net.Conn) {
		c.Write(sccrq)
		io.Copy(io.Discard, c)
		c.Close()
	})
	// SCCRQ and 256 OCRQs, never a PPP frame; again when closed.
	flood(1, 50*time.Millisecond, func(c net.Conn) {
		b := append([]byte(nil), sccrq...)
		for i := range 256 {
			b = (&wire.OCRQ{CallID: uint16(i + 1), RecvWindow: 64, MaxBPS: 1e6}).Append(b)
		}
		c.Write(b)
		io.Copy(io.Discard, c)
		c.Close()
	})
	// Connects that never send anything (kept open: the server decides).
	flood(1, 5*time.Millisecond, func(net.Conn) {})

	// The pool and the calls, sampled while the floods run.
	var maxPool, maxCalls atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stopped() {
			if n := int64(r.srv.pool.InUse()); n > maxPool.Load() {
				maxPool.Store(n)
			}
			if n := int64(len(r.srv.Sessions())); n > maxCalls.Load() {
				maxCalls.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() {
		close(stop)
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()

	// Until the table is full and the OCRQ flood has been refused calls.
	waitFor(t, func() bool {
		r.srv.mu.Lock()
		full := len(r.srv.conns) == maxConns
		r.srv.mu.Unlock()
		return full && r.srv.Counters()["call_limit_unauthenticated_conn"] > 0
	})
	mux := r.gwMux(t)
	for i := range sessions {
		start := time.Now()
		c, err := r.goClient(t, mux, "alice", "s3cret pass", nil)
		if err != nil {
			t.Fatalf("legitimate session %d during the floods: %v (counters %v)", i, err, r.srv.Counters())
		}
		setup := time.Since(start)
		ping(t, c, nsHost, 64)
		if got := c.Session().Info().LocalIP; got != r.srv.Config().PoolStart {
			t.Fatalf("session %d got %s, want the first pool address", i, got)
		}
		c.Close()
		waitFor(t, func() bool { return r.srv.pool.InUse() == 0 })
		t.Logf("session %d: up in %v during the floods", i, setup.Round(time.Millisecond))
	}
	cnt := r.srv.Counters()
	t.Logf("%d flood connections; evicted %d, call_request timeouts %d, first_message timeouts %d, OCRQs refused %d, log lines %d (suppressed %d)",
		attempts.Load(), cnt["conn_evicted_unauthenticated"], cnt["timeout_call_request"], cnt["ctrl_first_message_timeout"],
		cnt["call_limit_unauthenticated_conn"], len(rec.warns("")), cnt["log_suppressed"])
	if cnt["sessions_up"] != sessions || cnt["conn_limit_global"] != 0 || cnt["conn_evicted_unauthenticated"] == 0 ||
		cnt["call_limit_unauthenticated_conn"] == 0 {
		t.Errorf("counters: %v", cnt)
	}
	// One legitimate session at a time; the OCRQ flood's calls (4 per connection;
	// on a loaded machine the calls of two closing connections may still be
	// ending when the next one's arrive) never hold an address. Without the cap
	// one connection alone would hold up to 256 calls.
	if maxPool.Load() > 1 || maxCalls.Load() > 3*4+1 {
		t.Errorf("pool in use up to %d (want <= 1), calls up to %d (want <= 13)", maxPool.Load(), maxCalls.Load())
	}
	// Per message at most a first line and one count per 10 s interval.
	byMsg := map[string]int{}
	for _, l := range rec.warns("") {
		byMsg[l.msg]++
	}
	for msg, n := range byMsg {
		if n > 2 {
			t.Errorf("%d WARN lines %q", n, msg)
		}
	}
	if cnt["log_suppressed"] == 0 {
		t.Error("nothing suppressed: the floods did not reach the log's rate limit")
	}
}

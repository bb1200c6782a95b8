package ppp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"pptpgw/pptp/mppe"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// seeded is a deterministic io.Reader for Config.Rand.
type seeded struct{ r *rand.ChaCha8 }

func newSeeded(seed byte) io.Reader         { return seeded{rand.NewChaCha8([32]byte{seed})} }
func (s seeded) Read(b []byte) (int, error) { return s.r.Read(b) }

var quietLog = slog.New(slog.DiscardHandler)

var (
	srvIP    = netip.MustParseAddr("10.9.0.1")
	cliIP    = netip.MustParseAddr("10.9.0.2")
	dns1     = netip.MustParseAddr("10.9.0.53")
	dns2     = netip.MustParseAddr("10.9.0.54")
	testUser = "alice"
	testPass = "clientPass"
)

func serverConfig(clk *fakeClock) Config {
	c := DefaultConfig(Server)
	c.LocalIP = srvIP
	c.DNS = []netip.Addr{dns1, dns2}
	c.Lookup = func(u string) (string, bool) {
		if u == testUser {
			return testPass, true
		}
		return "", false
	}
	c.Now, c.Rand, c.Logger = clk.Now, newSeeded(1), quietLog
	return c
}

func clientConfig(clk *fakeClock) Config {
	c := DefaultConfig(Client)
	c.MPPEStrengths = []mppe.Strength{mppe.Bits40, mppe.Bits56, mppe.Bits128}
	c.Username, c.Password = testUser, testPass
	c.Now, c.Rand, c.Logger = clk.Now, newSeeded(2), quietLog
	return c
}

// pair is a server and a client Session wired back to back in memory.
// Frames are queued and pumped, never delivered from inside send (send runs
// with the sender's lock held).
type pair struct {
	t        testing.TB
	clk      *fakeClock
	srv, cli *Session
	mu       sync.Mutex
	toCli    [][]byte // sent by srv
	toSrv    [][]byte // sent by cli
	// drop, if set, may discard a frame (fromServer tells the direction).
	drop      func(fromServer bool, frame []byte) bool
	gotSrv    [][]byte // IP packets delivered to the server
	gotCli    [][]byte
	released  []netip.Addr
	allocs    int
	direct    bool // data frames delivered synchronously (allocation tests)
	sentFrame []byte
}

func newPair(t testing.TB, scfg, ccfg Config) *pair {
	p := &pair{t: t}
	if scfg.AllocIP == nil {
		scfg.AllocIP = func(string) (netip.Addr, error) { p.allocs++; return cliIP, nil }
	}
	if scfg.ReleaseIP == nil {
		scfg.ReleaseIP = func(a netip.Addr) { p.released = append(p.released, a) }
	}
	p.srv = NewSession(scfg, func(f []byte) {
		if p.direct {
			p.cli.Input(f)
			return
		}
		p.mu.Lock()
		p.toCli = append(p.toCli, append([]byte(nil), f...))
		p.mu.Unlock()
	})
	p.cli = NewSession(ccfg, func(f []byte) {
		if p.direct {
			p.srv.Input(f)
			return
		}
		p.mu.Lock()
		p.toSrv = append(p.toSrv, append([]byte(nil), f...))
		p.mu.Unlock()
	})
	p.srv.OnIP(func(b []byte) { p.gotSrv = append(p.gotSrv, append([]byte(nil), b...)) })
	p.cli.OnIP(func(b []byte) { p.gotCli = append(p.gotCli, append([]byte(nil), b...)) })
	return p
}

// pump delivers queued frames until both queues are empty.
func (p *pair) pump() {
	for range 100000 {
		p.mu.Lock()
		var f []byte
		fromSrv := false
		switch {
		case len(p.toCli) > 0:
			f, p.toCli, fromSrv = p.toCli[0], p.toCli[1:], true
		case len(p.toSrv) > 0:
			f, p.toSrv = p.toSrv[0], p.toSrv[1:]
		default:
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if p.drop != nil && p.drop(fromSrv, f) {
			continue
		}
		if fromSrv {
			p.cli.Input(f)
		} else {
			p.srv.Input(f)
		}
	}
	p.t.Fatal("pump: frames never stop")
}

func (p *pair) tick(d time.Duration) {
	now := p.clk.Advance(d)
	p.srv.Tick(now)
	p.cli.Tick(now)
	p.pump()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// runUntil pumps and ticks (1 s steps of fake time) until cond or maxTicks.
func (p *pair) runUntil(maxTicks int, cond func() bool) bool {
	p.pump()
	for range maxTicks {
		if cond() {
			return true
		}
		p.tick(time.Second)
	}
	return cond()
}

func (p *pair) start() {
	p.srv.Start()
	p.cli.Start()
}

func (p *pair) bothUp() bool   { return isClosed(p.srv.Up()) && isClosed(p.cli.Up()) }
func (p *pair) bothDone() bool { return isClosed(p.srv.Done()) && isClosed(p.cli.Done()) }

func startPair(t testing.TB, scfg, ccfg Config) *pair {
	clk := newClock()
	if scfg.Now == nil {
		scfg.Now = clk.Now
	}
	if ccfg.Now == nil {
		ccfg.Now = clk.Now
	}
	p := newPair(t, scfg, ccfg)
	p.clk = clk
	return p
}

// newConfigs returns server and client configs bound to one fake clock.
func newConfigs() (*fakeClock, Config, Config) {
	clk := newClock()
	return clk, serverConfig(clk), clientConfig(clk)
}

func newPairClk(t testing.TB, clk *fakeClock, scfg, ccfg Config) *pair {
	p := newPair(t, scfg, ccfg)
	p.clk = clk
	return p
}

// ipPacket builds a recognisable fake IPv4 packet of n octets.
func ipPacket(n int, tag byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	for i := 1; i < n; i++ {
		b[i] = byte(i) ^ tag
	}
	return b
}

func upPair(t testing.TB, scfg, ccfg Config, clk *fakeClock) *pair {
	t.Helper()
	p := newPairClk(t, clk, scfg, ccfg)
	p.start()
	if !p.runUntil(60, p.bothUp) {
		t.Fatalf("not up: server %s %v (%s), client %s %v (%s)", p.srv.State(), p.srv.Counters(), p.srv.Info().Reason,
			p.cli.State(), p.cli.Counters(), p.cli.Info().Reason)
	}
	return p
}

// exchange sends n packets each way and checks they arrive intact and in order.
func (p *pair) exchange(t testing.TB, n, size int) {
	t.Helper()
	p.gotSrv, p.gotCli = nil, nil
	for i := range n {
		if err := p.cli.SendIP(ipPacket(size, byte(i))); err != nil {
			t.Fatalf("client SendIP %d: %v", i, err)
		}
		if err := p.srv.SendIP(ipPacket(size+1, byte(i)^0x55)); err != nil {
			t.Fatalf("server SendIP %d: %v", i, err)
		}
		p.pump()
	}
	if len(p.gotSrv) != n || len(p.gotCli) != n {
		t.Fatalf("delivered srv=%d cli=%d, want %d each; counters srv %v cli %v", len(p.gotSrv), len(p.gotCli), n,
			p.srv.Counters(), p.cli.Counters())
	}
	for i := range n {
		if string(p.gotSrv[i]) != string(ipPacket(size, byte(i))) {
			t.Fatalf("packet %d to server corrupted", i)
		}
		if string(p.gotCli[i]) != string(ipPacket(size+1, byte(i)^0x55)) {
			t.Fatalf("packet %d to client corrupted", i)
		}
	}
}

var _ = errors.New
var _ = fmt.Sprint

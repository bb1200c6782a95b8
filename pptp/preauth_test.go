package pptp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/pptp/wire"
)

// logRecorder is a slog.Handler that keeps every record, for asserting on what the
// server writes.
type logRecorder struct {
	mu   sync.Mutex
	recs []logLine
}

type logLine struct {
	level      slog.Level
	msg        string
	suppressed int64 // the "suppressed" attribute, 0 when absent
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := logLine{level: r.Level, msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			line.suppressed = a.Value.Int64()
		}
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, line)
	l.mu.Unlock()
	return nil
}

// warns returns the WARN lines whose message starts with prefix.
func (l *logRecorder) warns(prefix string) []logLine { return l.lines(slog.LevelWarn, prefix) }

// lines returns the lines of level whose message starts with prefix.
func (l *logRecorder) lines(level slog.Level, prefix string) []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logLine
	for _, r := range l.recs {
		if r.level == level && strings.HasPrefix(r.msg, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// events is how many occurrences the lines stand for: each line logged in full is
// one, each summary line is its count.
func events(lines []logLine) (n int64) {
	for _, l := range lines {
		if l.suppressed > 0 {
			n += l.suppressed
		} else {
			n++
		}
	}
	return n
}

// TestRateLog: per message, the first line of an interval is written, the rest are
// counted, and the count goes out as one line when the interval is over (Flush) or
// before the next full line; other messages are independent.
func TestRateLog(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e6, 0)}
	rec := &logRecorder{}
	var counted int
	r := newRateLog(slog.New(rec), 10*time.Second, clk.Now, func(n int) { counted += n })
	for range 100 {
		r.Warn("a", "peer", "x")
	}
	r.Warn("b")
	if got := rec.warns(""); len(got) != 2 || got[0].msg != "a" || got[0].suppressed != 0 || got[1].msg != "b" {
		t.Fatalf("first lines: %+v", got)
	}
	clk.Advance(9 * time.Second)
	r.Flush(clk.Now())
	if len(rec.warns("")) != 2 {
		t.Fatal("flushed before the interval was over")
	}
	clk.Advance(time.Second)
	r.Flush(clk.Now())
	got := rec.warns("")
	if len(got) != 3 || got[2].msg != "a" || got[2].suppressed != 99 || counted != 99 {
		t.Fatalf("after the interval: %+v (counted %d)", got, counted)
	}
	// "b" had nothing left out: no summary. A new "a" is written in full.
	r.Warn("a")
	if got := rec.warns(""); len(got) != 4 || got[3].suppressed != 0 {
		t.Fatalf("next interval: %+v", got)
	}
	// Without a Flush, the count comes out before the next full line.
	r.Warn("a")
	r.Warn("a")
	clk.Advance(10 * time.Second)
	r.Warn("a")
	got = rec.warns("")
	if len(got) != 6 || got[4].suppressed != 2 || got[5].suppressed != 0 {
		t.Fatalf("summary before the next line: %+v", got)
	}
	if events(rec.warns("a")) != 100+1+3 {
		t.Fatalf("lines stand for %d events", events(rec.warns("a")))
	}
	// Info lines the same way, their count at their level.
	for range 5 {
		r.Info("c")
	}
	clk.Advance(10 * time.Second)
	r.Flush(clk.Now())
	if got := rec.lines(slog.LevelInfo, "c"); len(got) != 2 || got[1].suppressed != 4 {
		t.Fatalf("info lines: %+v", got)
	}
}

// preauthRig is a server on a fake clock with a small connection table and its log
// recorded.
func preauthRig(t *testing.T, mod func(*Config)) (*rig, *fakeClock, *logRecorder) {
	clk := &fakeClock{t: time.Unix(1e6, 0)}
	rec := &logRecorder{}
	r := newRig(t, func(c *Config) {
		c.Now, c.Logger, c.MaxConns = clk.Now, slog.New(rec), 32
		if mod != nil {
			mod(c)
		}
	})
	return r, clk, rec
}

func (r *rig) connCount() int { r.srv.mu.Lock(); defer r.srv.mu.Unlock(); return len(r.srv.conns) }

// closedByServer reports whether the server has closed c (EOF or reset, not a
// read timeout).
func closedByServer(c *ctl) bool {
	c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, err := c.c.Read(make([]byte, 256)); err != nil {
			return !isTimeout(err)
		}
	}
}

// TestPreauthSCCRQFlood: a table full of connections that sent SCCRQ and then
// nothing (the issue: 1,100 of them held all 1,024 slots for the echo timeouts, for
// ever if they answered echoes) still lets a legitimate client in, and they are
// closed call_request after their SCCRP while the client's session stays.
func TestPreauthSCCRQFlood(t *testing.T) {
	const maxConns = 32
	r, clk, _ := preauthRig(t, nil)
	flood := make([]*ctl, maxConns)
	for i := range flood {
		flood[i] = dialCtl(t, r.addr)
		flood[i].start()
	}
	if n := r.connCount(); n != maxConns {
		t.Fatalf("%d connections held, want %d", n, maxConns)
	}
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatalf("legitimate client while the table is full: %v", err)
	}
	ping(t, c, behind, 100)
	if !closedByServer(flood[0]) {
		t.Fatal("the oldest unauthenticated connection was not evicted")
	}
	waitFor(t, func() bool { return r.srv.Counters()["sessions_up"] == 1 })
	cnt := r.srv.Counters()
	if cnt["conn_evicted_unauthenticated"] != 1 || cnt["conn_limit_global"] != 0 {
		t.Fatalf("counters: %v", cnt)
	}
	// The slots come back call_request (10 s) after SCCRP; not a moment before.
	clk.Advance(9 * time.Second)
	r.srv.Tick(clk.Now())
	if n := r.connCount(); n != maxConns {
		t.Fatalf("%d connections after 9 s, want %d", n, maxConns)
	}
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	waitFor(t, func() bool { return r.connCount() == 1 })
	for _, f := range flood[1:] {
		if !closedByServer(f) {
			t.Fatal("a silent connection is still open after call_request")
		}
	}
	if got := r.srv.Counters()["timeout_call_request"]; got != maxConns-1 {
		t.Fatalf("timeout_call_request = %d, want %d: %v", got, maxConns-1, r.srv.Counters())
	}
	// The authenticated connection outlives every pre-authentication timeout.
	clk.Advance(time.Minute)
	r.srv.Tick(clk.Now())
	if len(r.srv.Sessions()) != 1 || r.connCount() != 1 {
		t.Fatalf("the legitimate session went: %+v", r.srv.Sessions())
	}
	ping(t, c, behind, 100)
	// And the table takes new connections again without evicting.
	dialCtl(t, r.addr).start()
	if r.connCount() != 2 || r.srv.Counters()["conn_evicted_unauthenticated"] != 1 {
		t.Fatalf("after the flood: %d connections, %v", r.connCount(), r.srv.Counters())
	}
}

// readOCRPs reads n replies to Outgoing-Call-Requests and counts those connected.
func readOCRPs(t *testing.T, c *ctl, n int) (connected int) {
	t.Helper()
	for range n {
		m, err := c.recv()
		if err != nil {
			t.Fatalf("reading OCRP: %v", err)
		}
		rp, ok := m.(*wire.OCRP)
		if !ok {
			t.Fatalf("want OCRP, got %T", m)
		}
		if rp.Result == wire.OCRPResultConnected {
			connected++
		} else if rp.Error != wire.ErrorNoResource {
			t.Fatalf("refused with error %d, want no resource", rp.Error)
		}
	}
	return connected
}

// TestPreauthOCRQFlood: one connection sending many Outgoing-Call-Requests and never
// authenticating (the issue: 256 of them took all 191 pool addresses, and legitimate
// calls got "no resource") gets no more calls than the per-connection cap, no
// address, and a legitimate client still gets one; more connections from the source
// stop at the per-source cap; the calls are cleared at the auth timeout.
func TestPreauthOCRQFlood(t *testing.T) {
	const perConn, perSource, ocrqs = 4, 6, 64 // the pool has 11 addresses
	r, clk, rec := preauthRig(t, func(c *Config) { c.MaxUnauthCallsPerSource = perSource })
	a := dialCtl(t, r.addr)
	a.start()
	for i := range ocrqs {
		a.send(&wire.OCRQ{CallID: uint16(100 + i), RecvWindow: 64, MaxBPS: 1e6})
	}
	if got := readOCRPs(t, a, ocrqs); got != perConn {
		t.Fatalf("%d calls connected, want the cap %d", got, perConn)
	}
	if r.srv.pool.InUse() != 0 || len(r.srv.Sessions()) != perConn {
		t.Fatalf("pool in use %d, calls %d", r.srv.pool.InUse(), len(r.srv.Sessions()))
	}
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatalf("legitimate client during the flood: %v", err)
	}
	if got := c.Session().Info().LocalIP; got != poolStart {
		t.Fatalf("legitimate client got %s, want %s", got, poolStart)
	}
	// A second connection from the same source reaches the per-source cap (the
	// legitimate client's call authenticated and no longer counts).
	b := dialCtl(t, r.addr)
	b.start()
	for i := range 8 {
		b.send(&wire.OCRQ{CallID: uint16(200 + i), RecvWindow: 64, MaxBPS: 1e6})
	}
	if got := readOCRPs(t, b, 8); got != perSource-perConn {
		t.Fatalf("second connection: %d calls, want %d", got, perSource-perConn)
	}
	cnt := r.srv.Counters()
	if cnt["call_limit_unauthenticated_conn"] != ocrqs-perConn || cnt["call_limit_unauthenticated_source"] != 8-(perSource-perConn) ||
		cnt["call_limit_global"] != 0 || r.srv.pool.InUse() != 1 {
		t.Fatalf("counters: %v, pool in use %d", cnt, r.srv.pool.InUse())
	}
	// At the auth timeout (15 s after the OCRQs) the calls are cleared with CDNs, the
	// attacker's connections closed, and only the legitimate session is left.
	clk.Advance(14 * time.Second)
	r.srv.Tick(clk.Now())
	if n := len(r.srv.Sessions()); n != perSource+1 {
		t.Fatalf("%d calls after 14 s, want %d", n, perSource+1)
	}
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 1 })
	if got := r.srv.Counters()["timeout_auth"]; got != perSource {
		t.Fatalf("timeout_auth = %d, want %d", got, perSource)
	}
	// One line for the six calls, one for the six warnings (each rate-limited).
	if got := rec.lines(slog.LevelInfo, "call ended before authentication"); len(got) != 1 {
		t.Errorf("%d lines for the calls that ended unauthenticated, want 1", len(got))
	}
	if got := rec.warns("call cleared: not authenticated in time"); len(got) != 1 {
		t.Errorf("%d warnings for the cleared calls, want 1", len(got))
	}
	m, err := a.recv()
	if cdn, ok := m.(*wire.CDN); err != nil || !ok || cdn.Result != wire.CDNResultGeneralError {
		t.Fatalf("want a CDN, got %+v, %v", m, err)
	}
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	waitFor(t, func() bool { return r.connCount() == 1 })
	r.srv.mu.Lock()
	left := len(r.srv.unauthBySource)
	r.srv.mu.Unlock()
	if left != 0 || r.srv.pool.InUse() != 1 {
		t.Fatalf("after the timeout: %d sources with unauthenticated calls, pool in use %d", left, r.srv.pool.InUse())
	}
	ping(t, c, behind, 100)
}

// TestPreauthSilentConnectsLogBounded: connects that never send anything (the
// issue: 2,000 of them wrote ~2,000 WARN lines) write a bounded number of lines
// that carry the count, while a legitimate client still gets in.
func TestPreauthSilentConnectsLogBounded(t *testing.T) {
	const maxConns, connects = 32, 200
	r, clk, rec := preauthRig(t, nil)
	for range connects {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitFor(t, func() bool {
		cnt := r.srv.Counters()
		return cnt["conns_accepted"]+cnt["conn_limit_global"] == connects
	})
	if _, err := r.dial(t, "alice", "s3cret pass", nil); err != nil {
		t.Errorf("legitimate client during the flood: %v", err)
	}
	clk.Advance(10 * time.Second) // first_message: every silent connection left goes
	r.srv.Tick(clk.Now())
	waitFor(t, func() bool { return r.connCount() <= 1 })
	clk.Advance(10 * time.Second) // the rate limit's interval: the counts come out
	r.srv.Tick(clk.Now())

	cnt := r.srv.Counters()
	evicted, timedOut := cnt["conn_evicted_unauthenticated"], cnt["ctrl_first_message_timeout"]
	if evicted+timedOut != connects || timedOut != maxConns-1 {
		t.Errorf("evicted %d, timed out %d of %d", evicted, timedOut, connects)
	}
	all := rec.warns("")
	if len(all) > 6 {
		t.Fatalf("%d WARN lines for %d silent connects, want at most 6: %+v", len(all), connects, all)
	}
	for _, c := range []struct {
		prefix string
		want   uint64
	}{
		{"control connection evicted", evicted},
		{"control connection: no SCCRQ in time", timedOut},
	} {
		lines := rec.warns(c.prefix)
		if len(lines) != 2 || lines[1].suppressed == 0 || events(lines) != int64(c.want) {
			t.Errorf("%q: %+v, want one line and one count standing for %d", c.prefix, lines, c.want)
		}
	}
	var summed int64
	for _, l := range all {
		summed += l.suppressed
	}
	if summed == 0 || uint64(summed) != r.srv.Counters()["log_suppressed"] {
		t.Errorf("log_suppressed = %d, the summary lines count %d", r.srv.Counters()["log_suppressed"], summed)
	}
}

// TestPreauthQueueVictim: a new connection replaces the oldest unauthenticated one
// of its own source, else the oldest overall; removed connections are never chosen.
func TestPreauthQueueVictim(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	var q preauthQueue
	conns := []*ctrlConn{{peerIP: a}, {peerIP: b}, {peerIP: a}, {peerIP: b}}
	for _, cc := range conns {
		q.push(cc)
	}
	if q.victim(b) != conns[1] || q.victim(a) != conns[0] || q.victim(c) != conns[0] {
		t.Fatal("not the oldest of the source, or of all")
	}
	q.remove(conns[0])
	q.remove(conns[0]) // twice is harmless
	if q.victim(a) != conns[2] || q.victim(c) != conns[1] {
		t.Fatal("a removed connection is still a candidate")
	}
	q.remove(conns[1])
	q.remove(conns[3])
	if q.victim(b) != conns[2] || len(q.bySource) != 1 {
		t.Fatalf("source without connections kept: %d sources", len(q.bySource))
	}
	q.remove(conns[2])
	if q.victim(a) != nil || q.all.Len() != 0 {
		t.Fatal("empty queue has a victim")
	}
}

// TestMaxSessionsCountsAuthenticated: max_sessions counts sessions past
// authentication only, so a call still authenticating does not take the last place,
// and a second authenticated session is refused when the first holds it.
func TestMaxSessionsCountsAuthenticated(t *testing.T) {
	r, _, _ := preauthRig(t, func(c *Config) { c.MaxSessions = 1 })
	a := dialCtl(t, r.addr)
	a.start()
	a.send(&wire.OCRQ{CallID: 1, RecvWindow: 64})
	if readOCRPs(t, a, 1) != 1 {
		t.Fatal("unauthenticated call refused")
	}
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatalf("the one session while a call is authenticating: %v", err)
	}
	if _, err := r.dial(t, "bob", "hunter2", nil); err == nil {
		t.Fatal("second session over max_sessions accepted")
	}
	waitFor(t, func() bool { return r.srv.Counters()["sessions_up"] == 1 }) // the server's side comes up on its own
	cnt := r.srv.Counters()
	if cnt["call_limit_global"] != 1 || r.srv.pool.InUse() != 1 {
		t.Fatalf("counters %v, pool in use %d", cnt, r.srv.pool.InUse())
	}
	c.Close()
	waitFor(t, func() bool { r.srv.mu.Lock(); defer r.srv.mu.Unlock(); return r.srv.authed == 0 })
	if _, err := r.dial(t, "bob", "hunter2", nil); err != nil {
		t.Fatalf("the place did not come back: %v", err)
	}
}

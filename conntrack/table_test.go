package conntrack

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var (
	inside  = [4]byte{10, 0, 0, 2}
	inside2 = [4]byte{10, 0, 0, 3}
	public  = [4]byte{203, 0, 113, 1}
	peer    = [4]byte{198, 51, 100, 7}
)

type removal struct {
	outside uint16
	reason  string
}

func newTable(t *testing.T, cfg Config) (*Table, *FakeClock, *[]removal) {
	t.Helper()
	clk := NewFakeClock(time.Time{})
	var rm []removal
	cfg.OnCallRemoved = func(c *Call, reason string) { rm = append(rm, removal{c.OutsideCallID, reason}) }
	return New(cfg, clk), clk, &rm
}

func connKey(ip [4]byte, port uint16) ControlKey {
	return ControlKey{InsideIP: ip, PeerIP: peer, InsidePort: port, PeerPort: 1723}
}

// setup adds a conn with one established call inside 7 -> outside 1000, peer 55.
func setup(t *testing.T, tb *Table) *Control {
	t.Helper()
	cn := tb.AddControl(connKey(inside, 40000), public, false)
	if err := tb.AddCall(cn, 7, 1000); err != nil {
		t.Fatal(err)
	}
	if err := tb.Establish(cn, 7, 55); err != nil {
		t.Fatal(err)
	}
	return cn
}

func TestFakeClock(t *testing.T) {
	c := NewFakeClock(time.Time{})
	t0 := c.Now()
	c.Advance(3 * time.Second)
	if got := c.Now().Sub(t0); got != 3*time.Second {
		t.Fatalf("advanced %v", got)
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Fatal("Set")
	}
}

func TestTimeoutsDefaults(t *testing.T) {
	got := Timeouts{}.WithDefaults()
	want := Timeouts{30 * time.Second, 180 * time.Second, time.Hour, 2 * time.Minute, 300 * time.Millisecond}
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
	if q := (Timeouts{CallIDQuarantine: -1}).WithDefaults().CallIDQuarantine; q != 0 {
		t.Fatalf("negative quarantine => %v, want 0", q)
	}
}

func TestLookupBothDirections(t *testing.T) {
	tb, _, _ := newTable(t, Config{})
	cn := setup(t, tb)

	if got, ok := tb.LookupControl(connKey(inside, 40000)); !ok || got != cn {
		t.Fatal("LookupConn")
	}
	if _, ok := tb.LookupControl(connKey(inside, 40001)); ok {
		t.Fatal("LookupConn other port matched")
	}
	if o, ok := tb.OutsideOf(cn, 7); !ok || o != 1000 {
		t.Fatalf("OutsideOf = %d %v", o, ok)
	}
	if i, ok := tb.InsideOf(cn, 1000); !ok || i != 7 {
		t.Fatalf("InsideOf = %d %v", i, ok)
	}
	pub, ok := tb.Outbound(OutKey{inside, peer, 55}, 100)
	if !ok || pub != public {
		t.Fatalf("Outbound = %v %v", pub, ok)
	}
	if _, ok := tb.Outbound(OutKey{inside2, peer, 55}, 100); ok {
		t.Fatal("Outbound matched other inside IP")
	}
	ip, id, ok := tb.Inbound(InKey{public, peer, 1000}, 60)
	if !ok || ip != inside || id != 7 {
		t.Fatalf("Inbound = %v %d %v", ip, id, ok)
	}
	if _, _, ok := tb.Inbound(InKey{public, peer, 1001}, 60); ok {
		t.Fatal("Inbound matched wrong key")
	}
	s := tb.Snapshot()
	if len(s) != 1 {
		t.Fatalf("snapshot %d", len(s))
	}
	c := s[0]
	if c.State != CallReplied || c.PktsOut != 1 || c.PktsIn != 1 || c.BytesOut != 100 || c.BytesIn != 60 ||
		c.InsidePort != 40000 || c.PeerPort != 1723 || c.PeerCallID != 55 {
		t.Fatalf("snapshot %+v", c)
	}
}

func TestRequestedCallHasNoGRE(t *testing.T) {
	tb, _, _ := newTable(t, Config{})
	cn := tb.AddControl(connKey(inside, 1), public, false)
	if err := tb.AddCall(cn, 7, 1000); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddCall(cn, 7, 1001); err != ErrCallExists {
		t.Fatalf("duplicate inside id: %v", err)
	}
	if _, _, ok := tb.Inbound(InKey{public, peer, 1000}, 1); ok {
		t.Fatal("inbound GRE matched a call not set up")
	}
	if err := tb.Establish(cn, 8, 1); err != ErrNoCall {
		t.Fatalf("Establish unknown: %v", err)
	}
}

func TestStateTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		traffic func(tb *Table)
		timeout time.Duration
	}{
		{"unreplied-none", func(*Table) {}, DefaultGREUnreplied},
		{"unreplied-out-only", func(tb *Table) { tb.Outbound(OutKey{inside, peer, 55}, 1) }, DefaultGREUnreplied},
		{"unreplied-in-only", func(tb *Table) { tb.Inbound(InKey{public, peer, 1000}, 1) }, DefaultGREUnreplied},
		{"replied", func(tb *Table) {
			tb.Outbound(OutKey{inside, peer, 55}, 1)
			tb.Inbound(InKey{public, peer, 1000}, 1)
		}, DefaultGREReplied},
	} {
		for _, via := range []string{"lookup", "sweep"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				tb, clk, rm := newTable(t, Config{})
				setup(t, tb)
				tc.traffic(tb)
				clk.Advance(tc.timeout) // exactly the timeout: still alive
				if via == "sweep" {
					if n, _ := tb.Sweep(); n != 0 {
						t.Fatalf("swept %d at the timeout", n)
					}
				}
				clk.Advance(time.Second)
				if via == "sweep" {
					if n, _ := tb.Sweep(); n != 1 {
						t.Fatalf("swept %d, want 1", n)
					}
				} else if _, ok := tb.Outbound(OutKey{inside, peer, 55}, 1); ok {
					t.Fatal("still matched after timeout")
				}
				if len(*rm) != 1 || (*rm)[0] != (removal{1000, ReasonExpired}) {
					t.Fatalf("removals %v", *rm)
				}
				if _, calls := tb.Len(); calls != 0 {
					t.Fatalf("calls left: %d", calls)
				}
				if tb.Stats().CallsExpired != 1 {
					t.Fatalf("stats %+v", tb.Stats())
				}
			})
		}
	}
}

func TestEchoKeepsCallsAlive(t *testing.T) {
	tb, clk, rm := newTable(t, Config{})
	cn := setup(t, tb)
	tb.Outbound(OutKey{inside, peer, 55}, 1)
	tb.Inbound(InKey{public, peer, 1000}, 1)
	for range 10 { // 10 minutes of silence on GRE, Echo every minute
		clk.Advance(time.Minute)
		tb.RefreshCalls(cn)
		tb.Sweep()
	}
	if len(*rm) != 0 {
		t.Fatalf("removed despite Echo: %v", *rm)
	}
	clk.Advance(DefaultGREReplied + time.Second)
	tb.Sweep()
	if len(*rm) != 1 {
		t.Fatalf("not expired after Echo stopped: %v", *rm)
	}
}

func TestControlTimeoutAndClosing(t *testing.T) {
	tb, clk, rm := newTable(t, Config{})
	cn := setup(t, tb)
	k := cn.Key
	clk.Advance(DefaultControlIdle - time.Second)
	if _, ok := tb.LookupControl(k); !ok {
		t.Fatal("conn expired early")
	}
	clk.Advance(DefaultControlIdle + time.Second)
	if _, ok := tb.LookupControl(k); ok {
		t.Fatal("conn not expired")
	}
	if len(*rm) != 1 || (*rm)[0].reason != ReasonConnRemoved {
		t.Fatalf("removals %v", *rm)
	}
	if err := tb.AddCall(cn, 9, 2000); err != ErrConnGone {
		t.Fatalf("AddCall on dead conn: %v", err)
	}

	cn = setup(t, tb)
	tb.StopControl(cn)
	if _, calls := tb.Len(); calls != 0 {
		t.Fatal("StopConn left calls")
	}
	if (*rm)[len(*rm)-1].reason != ReasonStopped {
		t.Fatalf("removals %v", *rm)
	}
	clk.Advance(ClosingTimeout - time.Second)
	if _, ok := tb.LookupControl(k); !ok {
		t.Fatal("closing conn gone early")
	}
	clk.Advance(ClosingTimeout + time.Second)
	if _, conns := tb.Sweep(); conns != 1 {
		t.Fatal("closing conn not swept")
	}
}

func TestLRUEviction(t *testing.T) {
	tb, _, rm := newTable(t, Config{MaxCalls: 3})
	cn := tb.AddControl(connKey(inside, 1), public, false)
	for i := range uint16(3) {
		if err := tb.AddCall(cn, 10+i, 100+i); err != nil {
			t.Fatal(err)
		}
		if err := tb.Establish(cn, 10+i, 50+i); err != nil {
			t.Fatal(err)
		}
	}
	// Touch call 0 so that call 1 is the least recently used.
	if _, ok := tb.Outbound(OutKey{inside, peer, 50}, 1); !ok {
		t.Fatal("lookup")
	}
	if err := tb.AddCall(cn, 13, 103); err != nil {
		t.Fatal(err)
	}
	if len(*rm) != 1 || (*rm)[0] != (removal{101, ReasonEvicted}) {
		t.Fatalf("removals %v", *rm)
	}
	// Every index forgot call 1.
	if _, ok := tb.Outbound(OutKey{inside, peer, 51}, 1); ok {
		t.Fatal("outbound index kept evicted call")
	}
	if _, _, ok := tb.Inbound(InKey{public, peer, 101}, 1); ok {
		t.Fatal("inbound index kept evicted call")
	}
	if _, ok := tb.OutsideOf(cn, 11); ok {
		t.Fatal("conn kept evicted call")
	}
	if _, ok := tb.Outbound(OutKey{inside, peer, 50}, 1); !ok {
		t.Fatal("recently used call evicted")
	}
	if tb.Stats().CallsEvicted != 1 {
		t.Fatalf("stats %+v", tb.Stats())
	}
}

func TestConnEvictionRemovesCalls(t *testing.T) {
	tb, _, rm := newTable(t, Config{MaxCalls: 10, MaxConns: 1})
	setup(t, tb)
	tb.AddControl(connKey(inside2, 2), public, false)
	if len(*rm) != 1 || (*rm)[0] != (removal{1000, ReasonConnRemoved}) {
		t.Fatalf("removals %v", *rm)
	}
	if _, ok := tb.Outbound(OutKey{inside, peer, 55}, 1); ok {
		t.Fatal("call of evicted conn still matched")
	}
	if tb.Stats().ConnsEvicted != 1 {
		t.Fatalf("stats %+v", tb.Stats())
	}
}

func TestReplaceConnAndOutKey(t *testing.T) {
	tb, _, rm := newTable(t, Config{})
	cn := setup(t, tb)
	// A second call on another conn, same inside host, whose peer reuses call ID 55.
	cn2 := tb.AddControl(connKey(inside, 40001), public, false)
	if err := tb.AddCall(cn2, 8, 1001); err != nil {
		t.Fatal(err)
	}
	if err := tb.Establish(cn2, 8, 55); err != nil {
		t.Fatal(err)
	}
	if len(*rm) != 1 || (*rm)[0] != (removal{1000, ReasonReplaced}) {
		t.Fatalf("removals %v", *rm)
	}
	if _, ok := tb.OutsideOf(cn, 7); ok {
		t.Fatal("replaced call still on its conn")
	}
	// Same 4-tuple again (port reuse): the old conn and its calls go.
	tb.AddControl(cn2.Key, public, false)
	if len(*rm) != 2 || (*rm)[1] != (removal{1001, ReasonConnRemoved}) {
		t.Fatalf("removals %v", *rm)
	}
}

func TestRemoveCallAndPurge(t *testing.T) {
	tb, _, rm := newTable(t, Config{})
	cn := setup(t, tb)
	if !tb.RemoveCall(cn, 7, ReasonCleared) || tb.RemoveCall(cn, 7, ReasonCleared) {
		t.Fatal("RemoveCall")
	}
	setup(t, tb)
	tb.Purge()
	if len(*rm) != 2 || (*rm)[0].reason != ReasonCleared || (*rm)[1].reason != ReasonPurged {
		t.Fatalf("removals %v", *rm)
	}
	if conns, calls := tb.Len(); conns+calls != 0 {
		t.Fatal("Purge left entries")
	}
}

// TestConcurrent exercises the lock under -race.
func TestConcurrent(t *testing.T) {
	tb, clk, _ := newTable(t, Config{MaxCalls: 64})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := [4]byte{10, 0, 1, byte(w)}
			for i := range 200 {
				cn := tb.AddControl(ControlKey{ip, peer, uint16(i), 1723}, public, false)
				id := uint16(w*1000 + i)
				if err := tb.AddCall(cn, id, id); err != nil && err != ErrConnGone {
					t.Error(fmt.Sprint(err))
					return
				}
				tb.Establish(cn, id, id)
				tb.Outbound(OutKey{ip, peer, id}, 10)
				tb.Inbound(InKey{public, peer, id}, 10)
				if i%50 == 0 {
					clk.Advance(time.Second)
					tb.Sweep()
					tb.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
	if _, calls := tb.Len(); calls > 64 {
		t.Fatalf("bound exceeded: %d", calls)
	}
}

func BenchmarkOutbound(b *testing.B) {
	tb := New(Config{}, SystemClock{})
	cn := tb.AddControl(connKey(inside, 1), public, false)
	tb.AddCall(cn, 7, 1000)
	tb.Establish(cn, 7, 55)
	k := OutKey{inside, peer, 55}
	b.ReportAllocs()
	for b.Loop() {
		tb.Outbound(k, 100)
	}
}

func TestGREKeepsControlAlive(t *testing.T) {
	tb, clk, rm := newTable(t, Config{})
	cn := setup(t, tb)
	for range 270 { // 90 minutes of GRE without a control segment
		clk.Advance(20 * time.Second)
		tb.Outbound(OutKey{inside, peer, 55}, 1)
		tb.Inbound(InKey{public, peer, 1000}, 1)
		tb.Sweep()
	}
	if _, ok := tb.LookupControl(cn.Key); !ok || len(*rm) != 0 {
		t.Fatalf("control connection of a live call expired: %v", *rm)
	}
}

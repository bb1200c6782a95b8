package conntrack

import (
	"fmt"
	"slices"
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

// addControl is AddControl for a connection the test expects to be tracked.
func addControl(t testing.TB, tb *Table, k ControlKey) *Control {
	t.Helper()
	cn, err := tb.AddControl(k, public, false)
	if err != nil {
		t.Fatalf("AddControl %v: %v", k, err)
	}
	return cn
}

// setup adds a conn with one established call inside 7 -> outside 1000, peer 55.
func setup(t *testing.T, tb *Table) *Control {
	t.Helper()
	cn := addControl(t, tb, connKey(inside, 40000))
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
	cn := addControl(t, tb, connKey(inside, 1))
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

// A full call table never evicts a set-up call: the oldest call still
// waiting for its reply is dropped early, and with none left the new call
// is refused; the set-up calls keep working throughout.
func TestFullCallTableEarlyDropThenRefuse(t *testing.T) {
	tb, _, rm := newTable(t, Config{MaxCalls: 4})
	cn := addControl(t, tb, connKey(inside, 1))
	for i := range uint16(2) { // two set-up calls, 100 and 101
		if err := tb.AddCall(cn, 10+i, 100+i); err != nil {
			t.Fatal(err)
		}
		if err := tb.Establish(cn, 10+i, 50+i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint16(2) { // two calls waiting for their reply, 102 then 103
		if err := tb.AddCall(cn, 12+i, 102+i); err != nil {
			t.Fatal(err)
		}
	}
	// Full: each new request drops the oldest request, never a set-up call.
	if err := tb.AddCall(cn, 14, 104); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddCall(cn, 15, 105); err != nil {
		t.Fatal(err)
	}
	want := []removal{{102, ReasonEarlyDrop}, {103, ReasonEarlyDrop}}
	if fmt.Sprint(*rm) != fmt.Sprint(want) {
		t.Fatalf("removals %v, want %v", *rm, want)
	}
	// Set up the two requests: the table is full of set-up calls now.
	for i := range uint16(2) {
		if err := tb.Establish(cn, 14+i, 54+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.AddCall(cn, 16, 106); err != ErrTableFull {
		t.Fatalf("AddCall into a table full of set-up calls: %v, want ErrTableFull", err)
	}
	if len(*rm) != 2 {
		t.Fatalf("a set-up call was removed to make room: %v", *rm)
	}
	if _, ok := tb.OutsideOf(cn, 16); ok {
		t.Fatal("refused call tracked")
	}
	for _, k := range []uint16{50, 51, 54, 55} {
		if _, ok := tb.Outbound(OutKey{inside, peer, k}, 1); !ok {
			t.Fatalf("set-up call with peer ID %d lost", k)
		}
	}
	wantStats(t, tb, Stats{CallsEarlyDropped: 2, CallsRefusedFull: 1})
}

// wantStats checks the table's counters and that nothing is left in setup.
func wantStats(t *testing.T, tb *Table, want Stats) {
	t.Helper()
	if st := tb.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if conns, calls := tb.InSetup(); conns+calls != 0 {
		t.Errorf("in setup: %d connections, %d calls; want none", conns, calls)
	}
}

// A full connection table early-drops connections in setup, oldest first
// (with their calls), and refuses new ones when every connection is
// established, whatever the LRU order: a connection kept alive only by its
// calls' GRE is the least recently looked up one here.
func TestFullConnTableEarlyDropThenRefuse(t *testing.T) {
	tb, clk, rm := newTable(t, Config{MaxCalls: 10, MaxConns: 3})
	live := setup(t, tb) // established through its call: outside 1000
	clk.Advance(time.Second)
	syn1 := addControl(t, tb, connKey(inside2, 1))
	if err := tb.AddCall(syn1, 9, 2000); err != nil { // a request on a connection in setup
		t.Fatal(err)
	}
	syn2 := addControl(t, tb, connKey(inside2, 2))
	tb.LookupControl(syn1.Key) // the LRU's order is not what decides
	for range 5 {
		clk.Advance(time.Second)
		tb.Outbound(OutKey{inside, peer, 55}, 1)
	}
	// Full: the oldest connection in setup goes first, with its call.
	syn3 := addControl(t, tb, connKey(inside2, 3))
	if !syn1.dead || syn2.dead || live.dead {
		t.Fatalf("early drop took the wrong connection (dead: syn1 %v syn2 %v live %v)", syn1.dead, syn2.dead, live.dead)
	}
	if len(*rm) != 1 || (*rm)[0] != (removal{2000, ReasonConnRemoved}) {
		t.Fatalf("removals %v", *rm)
	}
	// Established by Start-Control-Connection-Reply: no longer a candidate.
	tb.EstablishControl(syn2)
	tb.EstablishControl(syn3)
	if _, err := tb.AddControl(connKey(inside2, 4), public, false); err != ErrTableFull {
		t.Fatalf("AddControl into a table of established connections: %v, want ErrTableFull", err)
	}
	if _, ok := tb.Outbound(OutKey{inside, peer, 55}, 1); !ok {
		t.Fatal("the live call was lost")
	}
	wantStats(t, tb, Stats{ConnsEarlyDropped: 1, ConnsRefusedFull: 1})
}

// State in setup has SetupTimeout; established state keeps its timeouts.
func TestSetupTimeout(t *testing.T) {
	tb, clk, rm := newTable(t, Config{})
	syn := addControl(t, tb, connKey(inside2, 1))
	req := addControl(t, tb, connKey(inside2, 2))
	tb.EstablishControl(req)
	if err := tb.AddCall(req, 9, 2000); err != nil {
		t.Fatal(err)
	}
	live := setup(t, tb)
	tb.Outbound(OutKey{inside, peer, 55}, 1)
	tb.Inbound(InKey{public, peer, 1000}, 1)
	clk.Advance(SetupTimeout)
	if _, conns := tb.Sweep(); conns != 0 || len(*rm) != 0 {
		t.Fatalf("swept at the setup timeout: %d conns, %v", conns, *rm)
	}
	tb.RefreshCalls(live) // Echo on the live connection
	tb.LookupControl(req.Key)
	clk.Advance(time.Second)
	calls, conns := tb.Sweep()
	if conns != 1 || calls != 1 || !syn.dead || req.dead || live.dead {
		t.Fatalf("swept %d calls, %d conns (dead: syn %v req %v live %v)", calls, conns, syn.dead, req.dead, live.dead)
	}
	if len(*rm) != 1 || (*rm)[0] != (removal{2000, ReasonExpired}) {
		t.Fatalf("removals %v", *rm)
	}
}

// Limits: connections per source, calls per connection, calls per source;
// each refusal is counted by its reason and a source's count comes back
// when its state leaves.
func TestLimits(t *testing.T) {
	tb, _, _ := newTable(t, Config{Limits: Limits{ConnsPerSource: 2, CallsPerConn: 3, CallsPerSource: 4}})
	a1 := addControl(t, tb, connKey(inside, 1))
	a2 := addControl(t, tb, connKey(inside, 2))
	if _, err := tb.AddControl(connKey(inside, 3), public, false); err != ErrSourceLimit {
		t.Fatalf("third connection of a source: %v, want ErrSourceLimit", err)
	}
	addControl(t, tb, connKey(inside2, 1)) // another source is not affected
	for i := range uint16(3) {
		if err := tb.AddCall(a1, i, 100+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.AddCall(a1, 3, 103); err != ErrConnLimit {
		t.Fatalf("fourth call of a connection: %v, want ErrConnLimit", err)
	}
	if err := tb.AddCall(a2, 0, 200); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddCall(a2, 1, 201); err != ErrSourceLimit {
		t.Fatalf("fifth call of a source: %v, want ErrSourceLimit", err)
	}
	st := tb.Stats()
	if st.ConnsRefusedSource != 1 || st.CallsRefusedConn != 1 || st.CallsRefusedSource != 1 {
		t.Fatalf("stats %+v", st)
	}
	// What leaves gives its room back.
	if !tb.RemoveCall(a1, 0, ReasonCleared) {
		t.Fatal("RemoveCall")
	}
	if err := tb.AddCall(a2, 1, 201); err != nil {
		t.Fatalf("call after one of the source's calls left: %v", err)
	}
	tb.RemoveControl(a1, ReasonStopped)
	if _, err := tb.AddControl(connKey(inside, 3), public, false); err != nil {
		t.Fatalf("connection after one of the source's connections left: %v", err)
	}
	// A forward's source is its peer, the host that opened it.
	fk := ControlKey{InsideIP: inside, PeerIP: [4]byte{192, 0, 2, 9}, InsidePort: 1723, PeerPort: 5000}
	for i := range uint16(3) {
		fk.PeerPort = 5000 + i
		cn, err := tb.AddControl(fk, public, true)
		if i < 2 && (err != nil || cn.Source() != fk.PeerIP) {
			t.Fatalf("forward %d: %v", i, err)
		}
		if i == 2 && err != ErrSourceLimit {
			t.Fatalf("third forwarded connection from one peer: %v, want ErrSourceLimit", err)
		}
	}
	if got := len(tb.sources); got != 3 {
		t.Fatalf("%d sources tracked, want 3", got)
	}
	tb.Purge()
	if len(tb.sources) != 0 {
		t.Fatalf("sources left after Purge: %v", tb.sources)
	}
}

func TestLimitsDefaults(t *testing.T) {
	got := Limits{}.WithDefaults()
	want := Limits{ConnsPerSource: 256, CallsPerConn: 64, CallsPerSource: 1024}
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
	if l := (Limits{CallsPerConn: 5}).WithDefaults(); l.CallsPerConn != 5 || l.ConnsPerSource != 256 {
		t.Fatalf("a set field was replaced: %+v", l)
	}
}

// The setup FIFO against a naive reference: random pushes and removals
// keep its order and count.
func TestSetupQueueAgainstReference(t *testing.T) {
	var q setupQueue[Call, *Call]
	var ref []*Call
	all := make([]*Call, 64)
	for i := range all {
		all[i] = &Call{OutsideCallID: uint16(i)}
	}
	r := uint32(1)
	for step := range 5000 {
		r = r*1664525 + 1013904223
		c := all[r>>26]
		if r&(1<<20) != 0 {
			q.push(c)
			if !slices.Contains(ref, c) {
				ref = append(ref, c)
			}
		} else {
			q.remove(c)
			if i := slices.Index(ref, c); i >= 0 {
				ref = slices.Delete(ref, i, i+1)
			}
		}
		var got []*Call
		for x := q.front(); x != nil; x = x.setup.next {
			got = append(got, x)
		}
		if !slices.Equal(got, ref) || q.n != len(ref) {
			t.Fatalf("step %d: queue %d entries, reference %d", step, q.n, len(ref))
		}
	}
}

func TestReplaceConnAndOutKey(t *testing.T) {
	tb, _, rm := newTable(t, Config{})
	cn := setup(t, tb)
	// A second call on another conn, same inside host, whose peer reuses call ID 55.
	cn2 := addControl(t, tb, connKey(inside, 40001))
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
	addControl(t, tb, cn2.Key)
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
				cn, err := tb.AddControl(ControlKey{ip, peer, uint16(i), 1723}, public, false)
				if err == ErrTableFull {
					continue // full of established connections: refused, not evicted
				}
				if err != nil {
					t.Error(err)
					return
				}
				id := uint16(w*1000 + i)
				if err := tb.AddCall(cn, id, id); err != nil && err != ErrConnGone && err != ErrTableFull {
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
	cn := addControl(b, tb, connKey(inside, 1))
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

package conntrack

import (
	"testing"
	"time"
)

// Reconfigure never removes anything: a bound lowered below what is held
// keeps it all (and a later raise that is still below it too), and new
// timeouts and limits are in force at once.
func TestReconfigureKeepsEverything(t *testing.T) {
	tb, clk, rm := newTable(t, Config{MaxCalls: 8})
	cn := addControl(t, tb, connKey(inside, 1))
	tb.EstablishControl(cn)
	for i := range uint16(6) {
		if err := tb.AddCall(cn, i, 100+i); err != nil {
			t.Fatal(err)
		}
		if err := tb.Establish(cn, i, 200+i); err != nil {
			t.Fatal(err)
		}
	}
	tb.Reconfigure(Timeouts{GREUnreplied: 10 * time.Second}, Limits{CallsPerConn: 7}, 2)
	tb.Reconfigure(Timeouts{GREUnreplied: 10 * time.Second}, Limits{CallsPerConn: 7}, 4)
	if _, calls := tb.Len(); calls != 6 || len(*rm) != 0 {
		t.Fatalf("after lowering the bound: %d calls, removals %v", calls, *rm)
	}
	if err := tb.AddCall(cn, 50, 150); err != ErrTableFull {
		t.Fatalf("a call beyond the lowered bound: %v, want ErrTableFull", err)
	}
	tb.Reconfigure(Timeouts{GREUnreplied: 10 * time.Second}, Limits{CallsPerConn: 7}, 100)
	if err := tb.AddCall(cn, 50, 150); err != nil {
		t.Fatalf("after raising the bound: %v", err)
	}
	if err := tb.AddCall(cn, 51, 151); err != ErrConnLimit {
		t.Fatalf("the new calls_per_conn: %v, want ErrConnLimit", err)
	}
	if to := tb.Timeouts(); to.GREUnreplied != 10*time.Second || to.GREReplied != DefaultGREReplied {
		t.Fatalf("timeouts %+v", to)
	}
	clk.Advance(11 * time.Second)
	if calls, _ := tb.Sweep(); calls != 6 {
		t.Fatalf("swept %d unreplied calls after the new 10 s timeout, want 6", calls)
	}
}

// Export and Restore: a table restored from another's export has the same
// calls, reachable from both directions of GRE, with their ages, and
// Restore keeps the bounds and refuses duplicates.
func TestExportRestore(t *testing.T) {
	tb, clk, _ := newTable(t, Config{})
	cn := setup(t, tb) // call 7 <-> 1000, peer 55
	tb.Outbound(OutKey{inside, peer, 55}, 10)
	clk.Advance(30 * time.Second)
	saved := tb.Export(nil)
	if len(saved) != 1 || len(saved[0].Calls) != 1 || saved[0].Calls[0].Idle != 30*time.Second || !saved[0].Established {
		t.Fatalf("export %+v", saved)
	}
	_ = cn

	tb2, clk2, _ := newTable(t, Config{MaxCalls: 1})
	var claimed []uint16
	cn2, n, err := tb2.Restore(saved[0], func(c SavedCall) bool { claimed = append(claimed, c.OutsideCallID); return true })
	if err != nil || n != 1 || len(claimed) != 1 || claimed[0] != 1000 {
		t.Fatalf("restore: %v, %d calls, claimed %v", err, n, claimed)
	}
	if o, ok := tb2.OutsideOf(cn2, 7); !ok || o != 1000 {
		t.Fatalf("OutsideOf after restore: %d %v", o, ok)
	}
	if _, ok := tb2.Outbound(OutKey{inside, peer, 55}, 1); !ok {
		t.Fatal("outbound GRE after restore")
	}
	if _, id, ok := tb2.Inbound(InKey{public, peer, 1000}, 1); !ok || id != 7 {
		t.Fatal("inbound GRE after restore")
	}
	if _, _, err := tb2.Restore(saved[0], nil); err != ErrCallExists {
		t.Fatalf("restoring the same connection twice: %v", err)
	}
	other := saved[0]
	other.Key.InsidePort = 2
	if _, n, err := tb2.Restore(other, nil); err != ErrTableFull || n != 0 {
		t.Fatalf("restore beyond the bound: %v, %d calls", err, n)
	}
	// The restored ages run on: the replied timeout from the last GRE.
	clk2.Advance(DefaultGREReplied + time.Second)
	if calls, _ := tb2.Sweep(); calls != 1 {
		t.Fatalf("swept %d", calls)
	}
}

// A snapshot with ages the daemon never writes (a crafted or corrupted
// file) restores nothing that could overflow the table's int64 times: a
// call idle for ages is skipped, a connection idle for ages is refused, a
// call created at the zero time counts its age from now.
func TestRestoreBoundsAges(t *testing.T) {
	tb, _, _ := newTable(t, Config{})
	setup(t, tb)
	saved := tb.Export(nil)[0]

	tb2, _, _ := newTable(t, Config{})
	bad := saved
	bad.Idle = 1 << 62
	if _, _, err := tb2.Restore(bad, nil); err != ErrRestoreInvalid {
		t.Fatalf("a connection idle for %v: %v, want ErrRestoreInvalid", bad.Idle, err)
	}
	idle := saved
	idle.Calls = append([]SavedCall(nil), saved.Calls...)
	idle.Calls[0].Idle = 1 << 62
	if _, n, err := tb2.Restore(idle, nil); err != nil || n != 0 {
		t.Fatalf("a call idle for ages: %v, %d calls restored, want 0", err, n)
	}

	tb3, clk3, _ := newTable(t, Config{})
	zero := saved
	zero.Calls = append([]SavedCall(nil), saved.Calls...)
	zero.Calls[0].Created = time.Time{}
	if _, n, err := tb3.Restore(zero, nil); err != nil || n != 1 {
		t.Fatalf("a call created at the zero time: %v, %d calls", err, n)
	}
	// Its timers still run: it expires when idle past its timeout.
	clk3.Advance(DefaultGREReplied + time.Second)
	if calls, _ := tb3.Sweep(); calls != 1 {
		t.Fatalf("the restored call did not expire: swept %d", calls)
	}
}

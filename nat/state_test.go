package nat

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/pptp/wire"
)

var testOwner = map[string]string{"table": "pptpgw", "queue": "47", "wan": "wan0"}

// restarted saves e's state through the JSON encoding and restores it
// into a new engine on clk, after advancing clk by down (the daemon's
// downtime).
func restarted(t *testing.T, e *Engine, clk *conntrack.FakeClock, down time.Duration) (*Engine, RestoreStats) {
	t.Helper()
	b, err := EncodeState(e.SaveState(testOwner))
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(down)
	e2 := NewEngine(EngineConfig{PublicIP: e.PublicIP(), WANIf: wanIf, LANIfs: []uint32{lanIf}, MaxCalls: 100}, clk)
	rs, err := e2.RestoreState(st, testOwner)
	if err != nil {
		t.Fatal(err)
	}
	return e2, rs
}

// A call set up before the restart keeps its GRE translated both ways by
// the new engine, a retransmitted request gets the same rewrite, its
// Call-Clear-Request is still translated, and the quarantine and idle
// timers resume from where they were (the downtime counts).
func TestStateRoundTrip(t *testing.T) {
	e, clk := newEngine(t, nil)
	a := newClient(t, e, lanA, 40000)
	b := newClient(t, e, lanB, 40001)
	a.startControl()
	b.startControl()
	seqOCRQ := a.seqOut
	outA := a.call(7, 500)
	outB := b.call(9, 501)
	old := b.call(10, 502) // carries GRE, then cleared: its ID goes into quarantine
	gre(t, e, pkttest.GRE(t, lanB, server, 502, pkttest.GREOpt{}), lanIf)
	b.msg(true, &wire.CCRQ{CallID: 10})
	b.msg(false, &wire.CDN{CallID: 502, Result: 3})
	for _, g := range []struct {
		ip   [4]byte
		peer uint16
		out  uint16
	}{{lanA, 500, outA}, {lanB, 501, outB}} {
		gre(t, e, pkttest.GRE(t, g.ip, server, g.peer, pkttest.GREOpt{}), lanIf)
		gre(t, e, pkttest.GRE(t, server, pubIP, g.out, pkttest.GREOpt{}), wanIf)
	}
	if _, q := e.alloc.InUse(PoolKey{pubIP, server}); q != 1 {
		t.Fatalf("%d IDs quarantined before the restart, want 1", q)
	}

	e2, rs := restarted(t, e, clk, 60*time.Second)
	if rs.Conns != 2 || rs.Calls != 2 || rs.Quarantined != 1 || rs.SkippedConns+rs.SkippedCalls != 0 {
		t.Fatalf("restored %+v", rs)
	}
	a.e, b.e = e2, e2
	if got, want := e2.Calls(), e.Calls(); len(got) != 2 || got[0].OutsideCallID != want[0].OutsideCallID ||
		got[1].OutsideCallID != want[1].OutsideCallID || got[0].PktsOut != 1 || got[0].State != "replied" {
		t.Fatalf("calls after restore %+v\nbefore %+v", got, want)
	}
	// GRE both ways, exactly as before.
	if v, p := gre(t, e2, pkttest.GRE(t, lanA, server, 500, pkttest.GREOpt{}), lanIf); v != pkt.Accept ||
		!bytes.Equal(p, pkttest.GRE(t, pubIP, server, 500, pkttest.GREOpt{})) {
		t.Fatalf("GRE out after restore: %v", v)
	}
	if v, p := gre(t, e2, pkttest.GRE(t, server, pubIP, outA, pkttest.GREOpt{}), wanIf); v != pkt.Accept ||
		!bytes.Equal(p, pkttest.GRE(t, server, lanA, 7, pkttest.GREOpt{})) {
		t.Fatalf("GRE in after restore: %v", v)
	}
	// The quarantined ID stays out of reach, and the ones in use.
	if used, q := e2.alloc.InUse(PoolKey{pubIP, server}); used != 2 || q != 1 {
		t.Fatalf("allocator after restore: %d used, %d quarantined", used, q)
	}
	// A retransmitted OCRQ (bytes from before the restart) gets the same
	// outside ID from the remembered patches.
	saved := a.seqOut
	a.seqOut = seqOCRQ
	got := a.msg(true, &wire.OCRQ{CallID: 7, CallSerial: 1, MinBPS: 2400, MaxBPS: 10000000, BearerType: 3, FramingType: 3, RecvWindow: 64})
	if a.seqOut = saved; u16at(got, 12) != outA {
		t.Fatalf("retransmitted OCRQ rewritten to %d, want %d", u16at(got, 12), outA)
	}
	// Teardown on the old control connection is translated.
	if got := a.msg(true, &wire.CCRQ{CallID: 7}); u16at(got, 12) != outA {
		t.Fatalf("CCRQ after restore carries call ID %d, want %d", u16at(got, 12), outA)
	}
	a.msg(false, &wire.CDN{CallID: 500, Result: 3})
	if v, _ := gre(t, e2, pkttest.GRE(t, server, pubIP, outA, pkttest.GREOpt{}), wanIf); v != pkt.Drop {
		t.Fatal("GRE of a call cleared after the restore still translated")
	}
	// Timers resumed with the downtime counted: the quarantine (2 min)
	// ends 60 s after the restore, not 2 min after it, and B's call
	// (replied, 3 min, last GRE 60 s before the restore) expires 2 min
	// after it.
	clk.Advance(61 * time.Second)
	if _, q := e2.alloc.InUse(PoolKey{pubIP, server}); q != 1 { // only A's ID, just cleared
		t.Fatalf("%d quarantined 61 s after the restore, want A's only", q)
	}
	_ = old
	clk.Advance(60 * time.Second)
	if v, _ := gre(t, e2, pkttest.GRE(t, server, pubIP, outB, pkttest.GREOpt{}), wanIf); v != pkt.Drop {
		t.Fatal("B's call outlived its replied timeout counted across the restart")
	}
}

// The same state restored into an engine whose clock is behind the saved
// time (a clock step back) loses no time: ages are kept as they were.
func TestStateClockBehind(t *testing.T) {
	e, clk := newEngine(t, nil)
	out := addCall(t, e, lanA, 40000, 7, 555)
	gre(t, e, pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{}), lanIf)
	e2, rs := restarted(t, e, clk, -time.Hour)
	if rs.Calls != 1 {
		t.Fatalf("restored %+v", rs)
	}
	clk.Advance(conntrack.DefaultGREUnreplied - time.Second)
	if v, _ := gre(t, e2, pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{}), wanIf); v != pkt.Accept {
		t.Fatal("call expired early after a restore with the clock behind")
	}
}

func TestStateRefused(t *testing.T) {
	e, _ := newEngine(t, nil)
	addCall(t, e, lanA, 40000, 7, 555)
	st := e.SaveState(testOwner)
	fresh := func() *Engine { e, _ := newEngine(t, nil); return e }

	if _, err := fresh().RestoreState(st, map[string]string{"table": "other"}); !errors.Is(err, ErrStateForeign) {
		t.Errorf("foreign owner: %v", err)
	}
	if _, err := e.RestoreState(st, testOwner); !errors.Is(err, ErrStateNotNew) {
		t.Errorf("restore into a busy engine: %v", err)
	}
	b, _ := EncodeState(st)
	for name, in := range map[string][]byte{
		"version 0":     bytes.Replace(b, []byte(`"version":1`), []byte(`"version":0`), 1),
		"version 2":     bytes.Replace(b, []byte(`"version":1`), []byte(`"version":2`), 1),
		"no version":    []byte(`{"conns":[]}`),
		"truncated":     b[:len(b)/2],
		"not json":      []byte("\x00\x01garbage"),
		"unknown field": bytes.Replace(b, []byte(`"version":1`), []byte(`"version":1,"extra":3`), 1),
		"bad type":      bytes.Replace(b, []byte(`"version":1,`), []byte(`"version":1,"conns":"x",`), 1),
	} {
		_, err := DecodeState(in)
		if err == nil {
			t.Errorf("%s: decoded", name)
		}
		if strings.HasPrefix(name, "version") && !errors.Is(err, ErrStateVersion) {
			t.Errorf("%s: %v, want ErrStateVersion", name, err)
		}
	}
	// A connection with an impossible ALG state is skipped, not fatal; the
	// others come back.
	addCall(t, e, lanB, 40001, 8, 556)
	st = e.SaveState(testOwner)
	st.Conns[0].Translator.Dirs[0].Ring = make([]helper.MemoRecord, 300)
	e2 := fresh()
	rs, err := e2.RestoreState(st, testOwner)
	if err != nil || rs.Conns != 1 || rs.SkippedConns != 1 || rs.Calls != 1 || rs.SkippedCalls != 1 {
		t.Fatalf("restore with one bad connection: %+v, %v", rs, err)
	}
	// Two saved calls claiming one outside ID: the second is skipped.
	st = e.SaveState(testOwner)
	st.Conns[1].Calls[0].OutsideCallID = st.Conns[0].Calls[0].OutsideCallID
	rs, err = fresh().RestoreState(st, testOwner)
	if err != nil || rs.Calls != 1 || rs.SkippedCalls != 1 {
		t.Fatalf("restore with a duplicate outside ID: %+v, %v", rs, err)
	}
}

func TestStateFile(t *testing.T) {
	e, _ := newEngine(t, nil)
	addCall(t, e, lanA, 40000, 7, 555)
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	for range 2 { // the second write replaces the first
		if err := WriteStateFile(path, e.SaveState(testOwner)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := ReadStateFile(path)
	if err != nil || len(st.Conns) != 1 || st.Version != StateVersion {
		t.Fatalf("read back: %+v, %v", st, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("files left in the state directory: %v", ents)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode())
	}
	if _, err := ReadStateFile(filepath.Join(dir, "none.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// Readable JSON with the documented top-level keys.
	b, _ := os.ReadFile(path)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "owner", "saved_at", "conns"} {
		if _, ok := top[k]; !ok {
			t.Errorf("state file has no %q", k)
		}
	}
}

// FuzzDecodeState: whatever a state file holds, decoding and restoring it
// into an engine never panics, the table's bounds hold, and the engine
// keeps working (GRE, Tick, a new save).
func FuzzDecodeState(f *testing.F) {
	e, _ := newEngine(f, nil)
	a := newClient(f, e, lanA, 40000)
	a.startControl()
	a.call(7, 500)
	req2 := (&wire.OCRQ{CallID: 9, CallSerial: 2, RecvWindow: 16}).Append(nil)
	a.send(true, req2[:13], pkttest.TCPOpt{ACK: true}, pkt.Hold) // a pending field
	b, _ := EncodeState(e.SaveState(testOwner))
	f.Add(b)
	f.Add([]byte(`{"version":1,"owner":{},"conns":[{"key":{},"translator":{"dirs":[{"have":13,"keep":"AAAAAAAAAAAAAAA="},{}]}}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := DecodeState(in)
		if err != nil {
			return
		}
		e2, clk := newEngine(t, nil)
		if _, err := e2.RestoreState(st, st.Owner); err != nil {
			return
		}
		if conns, calls := e2.table.Len(); conns > 100 || calls > 100 {
			t.Fatalf("bounds: %d conns, %d calls", conns, calls)
		}
		for _, c := range e2.Calls() {
			gre(t, e2, pkttest.GRE(t, c.PeerIP.As4(), pubIP, c.OutsideCallID, pkttest.GREOpt{}), wanIf)
		}
		for _, sc := range st.Conns {
			k := sc.Key
			seg := pkttest.TCP(t, k.InsideIP, k.PeerIP, k.InsidePort, k.PeerPort, req2, pkttest.TCPOpt{ACK: true, Seq: sc.Translator.Dirs[0].Next})
			process(t, e2, seg, lanIf, 0)
		}
		clk.Advance(time.Hour)
		e2.Tick()
		e2.SaveState(nil)
	})
}

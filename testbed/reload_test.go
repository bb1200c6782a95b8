package testbed_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pptpgw/nat"
	"pptpgw/pptp/wire"
	. "pptpgw/testbed"
	"pptpgw/testbed/fakeppp"
	"pptpgw/testbed/testbedtest"
)

// Operations (issue 8): live reload and calls that survive a restart, with
// the mini PNS/PAC pair through a real gateway.

// reloadTag tags the GRE frames the reload test counts.
const reloadTag = "reload"

// greStream sends n GRE frames, numbered 0..n-1, on the PAC's first call
// (key pacCallID) from client c to the server, one every gap, and counts the
// echoes of its own frames coming back (the PAC echoes each on the call).
// during runs (in its own goroutine) once the first quarter was sent. It
// returns how many distinct frames came back, after during has returned
// and up to 2 s for stragglers.
func greStream(t *testing.T, c *NS, n int, gap time.Duration, during func()) (back int, sent int) {
	t.Helper()
	var g *net.IPConn
	if err := c.Do(func() (err error) {
		g, err = net.ListenIP("ip4:47", &net.IPAddr{IP: c.IP.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var mu sync.Mutex
	got := map[uint32]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, _, err := g.ReadFromIP(buf)
			if err != nil {
				return
			}
			h, payload, err := wire.ParseGRE(buf[:k])
			if err != nil || h.CallID != 0x0100 {
				continue
			}
			if tag, seq, ok := fakeppp.ParseFrame(payload); ok && tag == reloadTag {
				mu.Lock()
				got[seq] = true
				mu.Unlock()
			}
		}
	}()
	to := &net.IPAddr{IP: ServerIP.AsSlice()}
	duringDone := make(chan struct{})
	if during == nil {
		close(duringDone)
	}
	for i := range n {
		if i == n/4 && during != nil {
			go func() { defer close(duringDone); during() }()
		}
		payload := fakeppp.MakeFrame(reloadTag, uint32(i), 16)
		h := wire.GREHeader{CallID: pacCallID, PayloadLen: uint16(len(payload)), HasSeq: true, Seq: uint32(i)}
		if _, err := g.WriteToIP(append(h.Append(nil), payload...), to); err != nil {
			t.Fatalf("GRE frame %d: %v", i, err)
		}
		sent++
		time.Sleep(gap)
	}
	<-duringDone // the stream may end first on a loaded machine: the frames are counted once it is done too
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		back = len(got)
		mu.Unlock()
		if back == n {
			break
		}
	}
	g.Close()
	<-done
	return back, sent
}

// reloadCmd runs `pptpgw reload` against gw and returns its output and
// whether it exited 0.
func reloadCmd(ctx context.Context, gw *Gateway) (string, bool) {
	out, err := gw.NS.Command(ctx, gw.Bin, "reload", "--admin-socket", gw.Socket).CombinedOutput()
	return string(out), err == nil
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func nftTable(t *testing.T, ctx context.Context, topo *Topology) string {
	t.Helper()
	out, err := topo.GW.Output(ctx, "nft", "list", "table", "ip", "pptpgw")
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}

// Reloads while a call's GRE flows: every frame of a numbered stream comes
// back (none lost while the engine's settings are swapped and the nftables
// table's rules are replaced, nine times, with rules that change each time), the
// call keeps its outside call ID, and the new settings are in force.
func TestGatewayReloadWhileGREFlows(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	configs := []string{
		"mss_clamp: 1200\ntimeouts:\n  gre_replied: 5m\nforwards:\n  - {port: 1724, to: 10.77.0.99}\n",
		"mss_clamp: off\nstrict: true\nlimits:\n  calls_per_conn: 8\n",
		"mss_clamp: auto\nmax_calls: 1000\ntimeouts:\n  hold: 1s\n",
	}
	gw := startGatewayConfig(t, ctx, topo, bin, "")
	path := filepath.Join(topo.Dir, "pptpgw.yaml")

	const frames, rounds = 1000, 3
	var back, sent int
	var before, after []nat.CallInfo
	var reloadErrs []string
	var tables []string
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 5, Timeout: 30 * time.Second, Hold: func() {
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		before = rep.Calls
		back, sent = greStream(t, topo.Clients[0], frames, 2*time.Millisecond, func() {
			for i := range rounds * len(configs) {
				if err := os.WriteFile(path, []byte(configs[i%len(configs)]), 0o600); err != nil {
					t.Error(err)
					return
				}
				if out, ok := reloadCmd(ctx, gw); !ok {
					reloadErrs = append(reloadErrs, out)
				}
				out, err := topo.GW.Output(ctx, "nft", "list", "table", "ip", "pptpgw")
				if err != nil {
					t.Errorf("nft list table: %v: %s", err, out)
				}
				tables = append(tables, string(out))
				time.Sleep(100 * time.Millisecond)
			}
		})
		rep, err = gw.Calls(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		after = rep.Calls
	}})
	if !res.OK() {
		t.Fatalf("the call failed: %s\n%s", res, gw.Log())
	}
	if len(reloadErrs) > 0 {
		t.Fatalf("reloads failed: %v\n%s", reloadErrs, gw.Log())
	}
	t.Logf("GRE stream: %d frames sent, %d came back, across %d reloads", sent, back, len(tables))
	if back != frames {
		t.Errorf("%d of %d GRE frames lost across the reloads", frames-back, frames)
	}
	if len(before) != 1 || len(after) != 1 || before[0].OutsideCallID != after[0].OutsideCallID ||
		after[0].PktsOut < before[0].PktsOut+frames {
		t.Errorf("the call across the reloads: before %+v, after %+v", before, after)
	}
	// Each reload's ruleset is the new configuration's.
	if len(tables) == rounds*len(configs) {
		for i, want := range []string{"maxseg size set 1200", "", "maxseg size set rt mtu", "maxseg size set 1200"} {
			has := strings.Contains(tables[i], "maxseg size set")
			fwd := strings.Contains(tables[i], "dnat to 10.77.0.99")
			if (want == "" && has) || (want != "" && !strings.Contains(tables[i], want)) || fwd != (i%3 == 0) {
				t.Errorf("after reload %d the table is not the new configuration's (want %q, forward %v):\n%s", i+1, want, i%3 == 0, tables[i])
			}
		}
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := testbedtest.Counter(t, rep.Counters, "reloads_ok"); n != rounds*uint64(len(configs)) {
		t.Errorf("reloads_ok = %d, want %d", n, rounds*len(configs))
	}
	// With the GRE fast path, every reload keeps its maps (the reloaded
	// configuration says gre_path auto, never resolved) and no transaction
	// of the flusher fails.
	if rep.Counters["gre_kernel_path"] == 1 {
		for i, tb := range tables {
			if !strings.Contains(tb, "map gre_out") || !strings.Contains(tb, "map gre_in") {
				t.Errorf("after reload %d the fast path's maps are gone:\n%s", i+1, tb)
				break
			}
		}
		if n := rep.Counters["gre_kernel_update_errors"]; n != 0 {
			t.Errorf("gre_kernel_update_errors = %d after the reloads, want 0", n)
		}
	}
	stopClean(t, gw)
}

// An invalid configuration, and one that changes a setting that cannot
// change while running, are refused by `pptpgw reload` (exit 1, file, line
// and key in the message) and by SIGHUP (logged); the running ruleset stays
// byte for byte what it was, the engine keeps its settings, and calls go
// on working.
func TestGatewayReloadRefused(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	good := "mss_clamp: 1300\ntimeouts:\n  gre_replied: 4m\n"
	gw := startGatewayConfig(t, ctx, topo, bin, good)
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	table := nftTable(t, ctx, topo)
	if !strings.Contains(table, "maxseg size set 1300") {
		t.Fatalf("started without the configuration's rules:\n%s", table)
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"invalid value", "mss_clamp: 1300\ntimeouts:\n  gre_replied: 4m\n  hold: 20s\n",
			[]string{path + ":4: timeouts.hold"}},
		{"unknown key", "mss_clamp: 1300\nmss_clmap: 1200\n", []string{path, "line 2", "mss_clmap"}},
		{"fixed keys", "mss_clamp: 1200\ntable: other\nqueue: 48\n",
			[]string{path + ":2: table: cannot change while running", path + ":3: queue: cannot change while running"}},
	} {
		writeFile(t, path, tc.yaml)
		out, ok := reloadCmd(ctx, gw)
		if ok {
			t.Errorf("%s: pptpgw reload exited 0: %s", tc.name, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: pptpgw reload says %q, want it to contain %q", tc.name, out, w)
			}
		}
		if got := nftTable(t, ctx, topo); got != table {
			t.Errorf("%s: the refused reload changed the ruleset:\n%s\nwas:\n%s", tc.name, got, table)
		}
	}
	// SIGHUP with the last invalid file: refused and logged, still running.
	if err := gw.Proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(gw.Log(), "trigger=SIGHUP") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(gw.Log(), `msg="reload refused; the running configuration is unchanged" trigger=SIGHUP`) {
		t.Errorf("the log does not show the SIGHUP reload refused:\n%s", gw.Log())
	}
	if gw.Proc.Exited() {
		t.Fatalf("pptpgw exited after a refused reload:\n%s", gw.Log())
	}
	if got := nftTable(t, ctx, topo); got != table {
		t.Errorf("the refused SIGHUP reload changed the ruleset:\n%s", got)
	}
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 10})
	if !res.OK() {
		t.Errorf("a call after the refused reloads failed: %s\n%s", res, gw.Log())
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok, failed := testbedtest.Counter(t, rep.Counters, "reloads_ok"), testbedtest.Counter(t, rep.Counters, "reloads_failed"); ok != 0 || failed != 4 {
		t.Errorf("reloads_ok = %d, reloads_failed = %d; want 0 and 4", ok, failed)
	}
	// Back to a valid file: applied.
	writeFile(t, path, good+"strict: true\n")
	if out, ok := reloadCmd(ctx, gw); !ok || !strings.Contains(out, "configuration reloaded") {
		t.Errorf("a valid reload after refused ones: %s", out)
	}
	stopClean(t, gw)
}

// A call set up before a restart (SIGTERM, then a new daemon with the same
// state file) carries its GRE afterwards without a new control connection,
// and its Call-Clear-Request on the old control connection is still
// translated: the mini PAC finds the call by the outside call ID and
// answers with a Call-Disconnect-Notify.
func TestGatewayRestartKeepsCall(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	state := filepath.Join(topo.Dir, "pptpgw-state.json")
	var gw2 *Gateway
	var before []nat.CallInfo
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 10, FramesAfterHold: 20, Timeout: 30 * time.Second,
		Hold: func() {
			rep, err := gw.Calls(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			before = rep.Calls
			down := time.Now()
			defer func() { t.Logf("SIGTERM to the new daemon ready: %v", time.Since(down).Round(time.Millisecond)) }()
			stopClean(t, gw)
			if _, err := os.Stat(state); err != nil {
				t.Errorf("no state file after SIGTERM: %v\n%s", err, gw.Log())
			}
			var err2 error
			if gw2, err2 = topo.StartGateway(ctx, bin); err2 != nil {
				t.Error(err2)
			}
		}})
	if gw2 == nil {
		t.Fatalf("no second gateway:\n%s", gw.Log())
	}
	t.Logf("call across the restart: %s", res)
	if !strings.Contains(gw2.Log(), `msg="restored the saved call table"`) || !strings.Contains(gw2.Log(), "calls=1") {
		t.Errorf("the new daemon did not restore the call:\n%s", gw2.Log())
	}
	if !res.OK() || len(res.Calls) != 1 || res.Calls[0].GoodAfter != 20 {
		t.Errorf("the call did not carry its frames after the restart: %s\n%s", res, gw2.Log())
	}
	if len(res.Calls) == 1 && !res.Calls[0].Cleared {
		t.Errorf("the Call-Clear-Request after the restart was not translated (no CDN for the call): %s\n%s", res, gw2.Log())
	}
	rep, err := gw2.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		ct, _ := topo.GW.Output(ctx, "conntrack", "-L")
		t.Logf("after the restart: calls %+v\ncounters %v\nconntrack:\n%s", rep.Calls, rep.Counters, ct)
	}
	if n := testbedtest.Counter(t, rep.Counters, "ctl_new"); n != 0 {
		t.Errorf("the new daemon tracked %d new control connections; the call should have needed none", n)
	}
	if n := testbedtest.Counter(t, rep.Counters, "calls_cleared"); n != 1 {
		t.Errorf("calls_cleared = %d after the teardown on the restored connection, want 1", n)
	}
	if len(before) != 1 {
		t.Errorf("before the restart: %+v", before)
	}
	stopClean(t, gw2)
}

// After kill -9 the last periodic save (every 10 s) brings the call back:
// the new daemon replaces the killed one's table, restores the call, and
// the call carries its GRE and is cleared as before.
func TestGatewayKill9RestoresCall(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	state := filepath.Join(topo.Dir, "pptpgw-state.json")
	var gw2 *Gateway
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 10, FramesAfterHold: 20, Timeout: 45 * time.Second,
		Hold: func() {
			// Wait for a periodic save that holds the call.
			deadline := time.Now().Add(25 * time.Second)
			for {
				b, _ := os.ReadFile(state)
				if strings.Contains(string(b), `"outside_call_id"`) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("no periodic save of the call within 25 s:\n%s", gw.Log())
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			gw.Proc.Signal(syscall.SIGKILL)
			<-gw.Proc.Done()
			var err error
			if gw2, err = topo.StartGateway(ctx, bin); err != nil {
				t.Error(err)
			}
		}})
	if gw2 == nil {
		t.Fatalf("no second gateway:\n%s", gw.Log())
	}
	t.Logf("call across kill -9: %s", res)
	if !strings.Contains(gw2.Log(), "replaced a stale nftables table") || !strings.Contains(gw2.Log(), "calls=1") {
		t.Errorf("the new daemon did not take over and restore the call:\n%s", gw2.Log())
	}
	if !res.OK() || len(res.Calls) != 1 || res.Calls[0].GoodAfter != 20 || !res.Calls[0].Cleared {
		t.Errorf("the call after kill -9 and restore: %s\n%s", res, gw2.Log())
	}
	stopClean(t, gw2)
}

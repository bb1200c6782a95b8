package testbed_test

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The mini PNS and PAC work with each other with no NAT in between: the
// PNS runs in the gateway namespace, on the WAN segment.
func TestMiniPNSPACDirect(t *testing.T) {
	topo := testbedtest.New(t, Config{Clients: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pac, err := topo.StartPAC(topo.Server, ServerIP)
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []bool{false, true} {
		segs := captureSegments(t, topo.Server, 1723)
		r := RunPNS(ctx, topo.GW, PNSConfig{Server: ServerIP, Calls: 4, Frames: 20, Split: split})
		lens := segs()
		t.Logf("split=%v: %s\nPNS->PAC segment payload sizes: %v", split, r, lens)
		if !r.OK() || !r.Stopped {
			t.Fatalf("split=%v: mini PNS <-> PAC failed: %s", split, r)
		}
		// OCRQ is 168 bytes with its Call ID at offset 12. Split mode cuts
		// the SCCRQ (156) after 6 bytes and each OCRQ after byte 13, so the
		// wire carries 6, 150, 13, then 155+13 (the tail of one OCRQ with
		// the head of the next), ..., 155. Unsplit, the 4 OCRQs share one
		// segment.
		want := []int{156, 4 * 168}
		if split {
			want = []int{6, 150, 13, 168, 168, 168, 155}
		}
		if len(lens) < len(want) || !slices.Equal(lens[:len(want)], want) {
			t.Fatalf("split=%v: segments %v, want them to start with %v", split, lens, want)
		}
	}
	if pac.CallsOpen.Load() != 8 || pac.UnknownGRE.Load() != 0 {
		t.Fatalf("PAC calls=%d unknownGRE=%d", pac.CallsOpen.Load(), pac.UnknownGRE.Load())
	}
}

// Linux's own helper with several calls on one control connection and with
// split control messages. The kernel helper tracks one call per control
// connection and parses only whole messages within a segment, so these are
// expected to fail: the test records what happened (for the comparison with
// pptpgw) and fails only if the scenario itself could not run.
func TestKernelHelperMultiCallAndSplit(t *testing.T) {
	topo := testbedtest.New(t, Config{Clients: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topo.KernelHelper(ctx); err != nil {
		t.Fatal(err)
	}
	mc := RunMultiCall(ctx, topo, MultiCallConfig{Clients: 2, Calls: 3, Frames: 20})
	t.Logf("kernel helper, 2 PNS x 3 calls on one control connection each: ok=%v\n%s", mc.OK(), mc)
	sp := RunSplitControl(ctx, topo, nil)
	t.Logf("kernel helper, split control messages: ok=%v\n%s", sp.OK(), sp)
	for _, r := range []MultiCallResult{mc, sp} {
		for _, p := range r.PNS {
			if !p.ControlUp {
				t.Errorf("%s: control connection did not come up through masquerade: %s", p.NS, p.Error)
			}
		}
	}
}

// captureSegments records the payload sizes of TCP segments arriving at
// port in namespace n (a raw TCP socket sees a copy of each); the returned
// func stops the capture and returns them in order.
func captureSegments(t *testing.T, n *NS, port uint16) func() []int {
	t.Helper()
	var c *net.IPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenIP("ip4:6", &net.IPAddr{IP: n.IP.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lens []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, _, err := c.ReadFromIP(buf)
			if err != nil {
				return
			}
			b := buf[:k]
			if len(b) < 20 || binary.BigEndian.Uint16(b[2:]) != port {
				continue
			}
			if pl := len(b) - int(b[12]>>4)*4; pl > 0 {
				mu.Lock()
				lens = append(lens, pl)
				mu.Unlock()
			}
		}
	}()
	return func() []int {
		time.Sleep(20 * time.Millisecond)
		c.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return lens
	}
}

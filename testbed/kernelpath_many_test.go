package testbed_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pptpgw/rules"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Many calls set up at once (issue 12, memory: the kernel path's records
// live in the calls): the flusher puts every call's two elements into the
// kernel without a refused transaction, and takes them out again when the
// calls go.
func TestGatewayKernelPathManyCalls(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	cfg := filepath.Join(t.TempDir(), "pptpgw.yaml")
	if err := os.WriteFile(cfg, []byte("limits:\n  calls_per_source: 65536\n  calls_per_conn: 65535\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, err := topo.StartGateway(ctx, bin, "--config", cfg, "--gre-path", "kernel")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	const calls, perConn = 10000, 100
	h, err := HoldCalls(ctx, topo, HoldPlan{Server: ServerIP, Calls: calls, PerConn: perConn, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if h.Up != calls {
		h.Release(10 * time.Second)
		t.Fatalf("up %d of %d (%s)", h.Up, calls, h.FirstEr)
	}
	elems := func() int {
		n := 0
		for _, m := range []string{rules.SetGREOut, rules.SetGREIn} {
			out, err := topo.GW.Output(ctx, "nft", "list", "map", "ip", rules.DefaultTable, m)
			if err != nil {
				t.Fatal(err)
			}
			n += bytes.Count(out, []byte("counter packets"))
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for elems() != 2*calls && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := elems(); n != 2*calls {
		t.Errorf("%d elements in the kernel, want %d", n, 2*calls)
	}
	h.Release(20 * time.Second)
	deadline = time.Now().Add(20 * time.Second)
	for elems() != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := elems(); n != 0 {
		t.Errorf("%d elements left after the calls were cleared", n)
	}
	if log := gw.Log(); strings.Contains(log, "kernel GRE maps") {
		i := strings.Index(log, "kernel GRE maps")
		t.Errorf("the flusher logged errors: %s", log[max(0, i-200):min(len(log), i+400)])
	}
}

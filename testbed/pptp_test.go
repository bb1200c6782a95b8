package testbed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"pptpgw/internal/nstest"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// pptp-linux in the gateway namespace (203.0.113.1) calls pptpd on the WAN
// segment directly: no NAT, the reference behaviour. pptpd's "pppd" is once
// the go-built testbed/cmd/fakeppp and once this test binary re-executed.
func TestPPTPLinuxToPPTPDDirect(t *testing.T) {
	nstest.RequireRoot(t)
	bin := testbedtest.Build(t, "pptpgw/testbed/cmd/fakeppp")
	for name, fake := range map[string]string{"built": bin, "reexec": ""} {
		t.Run(name, func(t *testing.T) {
			topo := testbedtest.New(t, Config{Clients: 0})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			d, err := topo.StartPPTPD(ctx, PPTPDConfig{FakePPP: fake})
			if err != nil {
				t.Fatal(err)
			}
			res := RunPPTPClients(ctx, topo, []*NS{topo.GW}, ServerIP, 50, nil)
			t.Logf("result:\n%s", res)
			if !res.OK() {
				t.Fatalf("round trip failed; pptpd output: %s; fakeppp log: %s", d.Proc.Output(), d.FakePPPLog())
			}
			// pptpd's fakeppp logs when its pty closes (after pptp is stopped).
			deadline := time.Now().Add(2 * time.Second)
			for !strings.Contains(d.FakePPPLog(), "echoed=") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(d.FakePPPLog(), "fakeppp server") {
				t.Errorf("fakeppp server left no log line: %q", d.FakePPPLog())
			}
		})
	}
}

// Six pptp-linux clients behind Linux's own PPTP helper + masquerade call one
// pptpd at once.
func TestPPTPLinuxX6ThroughKernelHelper(t *testing.T) {
	topo := testbedtest.New(t, Config{Clients: 6})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := topo.KernelHelper(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := topo.StartPPTPD(ctx, PPTPDConfig{})
	if err != nil {
		t.Fatal(err)
	}
	res := RunPPTPClients(ctx, topo, topo.Clients, ServerIP, 50, nil)
	t.Logf("kernel helper, 6 clients:\n%s", res)
	if !res.OK() {
		t.Fatalf("round trip failed; pptpd output: %s; fakeppp log: %s\nconntrack:\n%s", d.Proc.Output(), d.FakePPPLog(), topo.Conntrack())
	}
}

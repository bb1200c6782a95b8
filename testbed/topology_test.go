package testbed_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"pptpgw/internal/nstest"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

func TestTopologyBuildAndTeardown(t *testing.T) {
	nstest.RequireRoot(t)
	topo, err := New(Config{Clients: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })

	if v, err := topo.GW.ReadSysctl("net/ipv4/ip_forward"); err != nil || v != "1" {
		t.Fatalf("ip_forward in gateway = %q, %v", v, err)
	}
	// Clients and the server reach the gateway's WAN address over TCP.
	var ln net.Listener
	if err := topo.GW.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(GWWANIP.String(), "7000"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	for _, n := range append([]*NS{topo.Server}, topo.Clients...) {
		if err := n.Do(func() error {
			c, err := net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			if string(b) != "hi" {
				return fmt.Errorf("read %q, %v", b, err)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s -> gateway: %v", n.Name, err)
		}
	}
	// A Go function runs inside the namespace and the caller's thread is unaffected.
	before, _ := netns.Get()
	defer before.Close()
	var inside bool
	if err := topo.Server.Do(func() error {
		h, err := netns.Get()
		if err != nil {
			return err
		}
		defer h.Close()
		inside = h.Equal(topo.Server.Handle)
		return nil
	}); err != nil || !inside {
		t.Fatalf("Do did not run inside the namespace: %v", err)
	}
	// A process left running is killed by Close.
	p, err := topo.Start(topo.Clients[0].Command(context.Background(), "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{topo.GW.Name, topo.Server.Name}
	for _, c := range topo.Clients {
		names = append(names, c.Name)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(3 * time.Second); err == nil {
		t.Fatal("sleep exited cleanly, expected to be killed")
	}
	for _, n := range names {
		if _, err := os.Stat("/var/run/netns/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists (%v)", n, err)
		}
	}
	if err := topo.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestTopologyPartialSetupCleansUp(t *testing.T) {
	nstest.RequireRoot(t)
	p := NewPrefix()
	// A namespace with the gateway's name already exists: New must fail and
	// remove whatever it created (here: nothing of its own but the dir).
	h, err := CreateNamedNS(p + "-srv")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	defer netns.DeleteNamed(p + "-srv")
	if _, err := New(Config{Clients: 2, Prefix: p}); err == nil {
		t.Fatal("New succeeded despite a clashing namespace")
	}
	if _, err := os.Stat("/var/run/netns/" + p + "-gw"); !os.IsNotExist(err) {
		t.Fatalf("gateway namespace left behind after failed New")
	}
}

// iperf3 through plain kernel masquerade: the runner works and parses.
func TestIperfKernelMasquerade(t *testing.T) {
	topo := testbedtest.New(t, Config{Clients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := topo.KernelMasquerade(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := RunIperf(ctx, topo, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel masquerade: %.2f Gbit/s, %d retransmits", r.Gbps, r.Retransmits)
	if r.Gbps <= 0 || r.Seconds < 0.9 {
		t.Fatalf("implausible iperf3 result %+v", r)
	}
}

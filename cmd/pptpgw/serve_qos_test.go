package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pptpgw/pptp"
	"pptpgw/pptp/tun"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Shaping (issue 9): `pptpgw serve` with limits.session_rate 50mbit and
// alice at 10mbit: iperf3 inside alice's tunnel (MS-CHAPv2 + MPPE-128),
// both directions, runs at most at her rate, not at the default's and not
// at the unlimited tunnel's (hundreds of Mbit/s here), and `pptpgw
// sessions` shows her rate. The ceiling is the structural fact; how close
// to it TCP gets depends on the pacer's goroutine being scheduled on time,
// which the shared 2-core VM does not promise (0.6-0.97 of the rate seen
// with load average 8-11): the floor is loose and a run under it is
// measured once more.
func TestServeSessionRate(t *testing.T) {
	requireRoot(t)
	testbedtest.NeedTools(t, "iperf3")
	topo := testbedtest.New(t, testbed.Config{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "serve.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfgPath := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(cfgPath, []byte("limits:\n  session_rate: 50mbit\nusers:\n  alice: {rate: 10mbit}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startServe(ctx, t, topo, dir, testbed.ServerIP.String()+":1723", "--admin-socket", sock, "--config", cfgPath)
	var pc greHolder
	if err := topo.GW.Do(func() error { return pc.open() }); err != nil {
		t.Fatal(err)
	}
	defer pc.close()
	c, err := pptp.Dial(ctx, pptp.ClientConfig{Server: testbed.ServerIP.String(), Username: "alice", Password: "s3cret pass",
		Mux: pc.mux, Dial: topo.GW.DialContext})
	if err != nil {
		t.Fatalf("%v\n%s", err, proc.Output())
	}
	defer c.Close()
	info := c.Session().Info()
	var dev *tun.Device
	if err := topo.GW.Do(func() error {
		var err error
		if dev, err = tun.Open(topo.Prefix+"cli", int(info.MTU)); err != nil {
			return err
		}
		if err := dev.AddAddr(info.LocalIP); err != nil {
			return err
		}
		return dev.AddRoute(info.PeerIP, info.LocalIP)
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	go pptp.PumpTUN(dev, c, 0)

	const rate = 10e6
	for _, reverse := range []bool{false, true} {
		var frac float64
		for try := 1; try <= 2; try++ {
			r, err := testbed.RunIperfWith(ctx, topo, topo.GW, topo.Server, info.PeerIP, testbed.IperfOptions{Seconds: 5, Reverse: reverse})
			if err != nil {
				t.Fatalf("iperf3 (reverse %v): %v\n%s", reverse, err, proc.Output())
			}
			frac = r.Gbps * 1e9 / rate
			t.Logf("iperf3 in the tunnel, reverse=%v (try %d): %.2f Mbit/s (%.2f of alice's 10mbit), %d retransmits",
				reverse, try, r.Gbps*1e3, frac, r.Retransmits)
			if frac >= 0.5 {
				break
			}
		}
		// Above the rate only by the bucket's 20 ms over the run.
		if frac > 1.05 {
			t.Errorf("reverse=%v: %.2f of alice's rate: her limit is not applied", reverse, frac)
		}
		if frac < 0.5 {
			t.Errorf("reverse=%v: %.2f of alice's rate twice: the pacer starves TCP", reverse, frac)
		}
	}
	cmd := topo.Server.Command(ctx, os.Args[0], "sessions", "--json", "--admin-socket", sock)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	js, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var rep pptp.AdminReply
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Sessions) != 1 || rep.Sessions[0].Rate != "10mbit" {
		t.Errorf("sessions --json: %s", js)
	}
	cmd = topo.Server.Command(ctx, os.Args[0], "sessions", "--admin-socket", sock)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	if tbl, err := cmd.Output(); err != nil || !strings.Contains(string(tbl), "10mbit") {
		t.Errorf("sessions: %v\n%s", err, tbl)
	} else {
		t.Logf("pptpgw sessions:\n%s", tbl)
	}
}

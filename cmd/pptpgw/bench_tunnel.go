package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"pptpgw/pptp"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/tun"
	"pptpgw/pptp/wire"
	"pptpgw/testbed"
)

// The tunnel case measures what the gateway's design costs where it matters:
// GRE goes through userspace (NFQUEUE) in pptpgw but stays in the kernel with
// Linux's helper. One PPTP session (MS-CHAPv2 + MPPE-128) from a LAN client
// behind the gateway to `pptpgw serve` on the WAN carries an iperf3 TCP run
// to the server's tunnel address.
const (
	benchTunnelServerIP = "10.8.0.9" // serve's default: the address below the pool
	benchTunnelPool     = "10.8.0.10-10.8.0.20"
	benchTunnelUser     = "bench"
	benchTunnelPass     = "bench-pass"
)

// tunnelIperf runs the tunnel case in a fresh topology, behind pptpgw (gw)
// or Linux's helper.
func tunnelIperf(ctx context.Context, self string, gw bool, secs int) (testbed.IperfResult, error) {
	var res testbed.IperfResult
	err := withTopology(ctx, self, 1, gw, func(topo *testbed.Topology) error {
		secrets := filepath.Join(topo.Dir, "chap-secrets")
		if err := os.WriteFile(secrets, []byte(benchTunnelUser+" * "+benchTunnelPass+" *\n"), 0o600); err != nil {
			return err
		}
		srv, err := topo.Start(topo.Server.Command(ctx, self, "serve",
			"--listen", netip.AddrPortFrom(testbed.ServerIP, wire.ControlPort).String(),
			"--pool", benchTunnelPool, "--secrets", secrets, "--log-level", "warn",
			"--admin-socket", filepath.Join(topo.Dir, "serve.sock"), "--tun", topo.Prefix+"srv"))
		if err != nil {
			return fmt.Errorf("pptpgw serve: %w", err)
		}
		defer srv.Stop(2 * time.Second)
		if err := topo.Server.WaitListening(wire.ControlPort, 5*time.Second); err != nil {
			return fmt.Errorf("pptpgw serve: %w: %s", err, srv.Output())
		}

		lan := topo.Clients[0]
		var pc gre.PacketConn
		if err := lan.Do(func() error {
			var err error
			pc, err = gre.ListenRaw(netip.Addr{})
			return err
		}); err != nil {
			return err
		}
		mux := gre.NewMux(pc, gre.Config{})
		stop := make(chan struct{})
		defer func() { close(stop); mux.Close() }()
		go mux.Serve()
		go mux.RunTicker(10*time.Millisecond, stop)
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := pptp.Dial(dctx, pptp.ClientConfig{Server: testbed.ServerIP.String(),
			Username: benchTunnelUser, Password: benchTunnelPass, Mux: mux, Dial: lan.DialContext,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return fmt.Errorf("PPTP session: %w: %s", err, srv.Output())
		}
		defer c.Close()
		info := c.Session().Info()
		var dev *tun.Device
		if err := lan.Do(func() error {
			var err error
			if dev, err = tun.Open(topo.Prefix+"cli", int(info.MTU)); err != nil {
				return err
			}
			if err := dev.AddAddr(info.LocalIP); err != nil {
				return err
			}
			return dev.AddRoute(info.PeerIP, info.LocalIP)
		}); err != nil {
			return fmt.Errorf("client TUN: %w", err)
		}
		defer dev.Close()
		go pptp.PumpTUN(dev, c, 0)
		if gw && benchPlacement == "netdev" { // issue 12: the other placement, measured
			if err := benchNetdevPlacement(ctx, topo); err != nil {
				return err
			}
		}
		res, err = testbed.RunIperfTo(ctx, topo, lan, topo.Server, info.PeerIP, secs)
		if err == nil && gw {
			benchReportPlacement(ctx, topo)
		}
		return err
	})
	return res, err
}

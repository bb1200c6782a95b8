package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// IperfOptions are the knobs of RunIperfWith beyond RunIperfTo's.
type IperfOptions struct {
	Seconds int    // default 3
	Streams int    // parallel streams (-P); default 1
	Reverse bool   // the server sends (-R): a download for the client
	Port    uint16 // default IperfPort
}

// RunIperfWith runs one bounded iperf3 TCP test from namespace client to a
// one-off iperf3 server bound to addr in namespace server, with o's
// options, and returns the receiver's throughput.
func RunIperfWith(ctx context.Context, t *Topology, client, server *NS, addr netip.Addr, o IperfOptions) (IperfResult, error) {
	var r IperfResult
	if o.Seconds <= 0 {
		o.Seconds = 3
	}
	if o.Streams <= 0 {
		o.Streams = 1
	}
	if o.Port == 0 {
		o.Port = IperfPort
	}
	if err := CheckTools("iperf3"); err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(o.Seconds+15)*time.Second)
	defer cancel()
	port := strconv.Itoa(int(o.Port))
	srv, err := t.Start(server.Command(ctx, "iperf3", "-s", "-1", "-B", addr.String(), "-p", port))
	if err != nil {
		return r, fmt.Errorf("iperf3 server: %w", err)
	}
	defer srv.Stop(time.Second)
	if err := server.WaitListening(o.Port, 3*time.Second); err != nil {
		return r, fmt.Errorf("iperf3 server: %w: %s", err, srv.Output())
	}
	args := []string{"-c", addr.String(), "-p", port, "-t", strconv.Itoa(o.Seconds), "-P", strconv.Itoa(o.Streams), "-J"}
	if o.Reverse {
		args = append(args, "-R")
	}
	out, err := client.Command(ctx, "iperf3", args...).Output()
	if err != nil {
		return r, fmt.Errorf("iperf3 client: %w: %s", err, out)
	}
	return parseIperf(out)
}

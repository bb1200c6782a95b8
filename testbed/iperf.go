package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// IperfResult is one bounded iperf3 TCP run.
type IperfResult struct {
	Gbps        float64   `json:"gbps"`      // received throughput over the whole run
	PeakGbps    float64   `json:"peak_gbps"` // best 1-second interval
	Intervals   []float64 `json:"intervals"` // Gbit/s per interval
	Retransmits int       `json:"retransmits"`
	Seconds     float64   `json:"seconds"`
}

// IperfPort is the port the iperf3 server listens on.
const IperfPort = 5201

// RunIperf runs one iperf3 TCP test of secs seconds (default 3) from client
// namespace 0 to an iperf3 server (one-off, -1) on the server namespace, and
// returns the receiver's throughput. Whatever sits in the gateway (kernel
// masquerade, pptpgw) is measured.
func RunIperf(ctx context.Context, t *Topology, secs int) (IperfResult, error) {
	if len(t.Clients) == 0 {
		return IperfResult{}, fmt.Errorf("iperf3 needs a client namespace")
	}
	return RunIperfTo(ctx, t, t.Clients[0], t.Server, t.Server.IP, secs)
}

// RunIperfTo runs one iperf3 TCP test of secs seconds (default 3) from
// namespace client to an iperf3 server (one-off) bound to addr in namespace
// server, e.g. to a tunnel address.
func RunIperfTo(ctx context.Context, t *Topology, client, server *NS, addr netip.Addr, secs int) (IperfResult, error) {
	var r IperfResult
	if secs <= 0 {
		secs = 3
	}
	if err := CheckTools("iperf3"); err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+10)*time.Second)
	defer cancel()
	srv, err := t.Start(server.Command(ctx, "iperf3", "-s", "-1", "-B", addr.String(), "-p", strconv.Itoa(IperfPort)))
	if err != nil {
		return r, fmt.Errorf("iperf3 server: %w", err)
	}
	defer srv.Stop(time.Second)
	if err := server.WaitListening(IperfPort, 3*time.Second); err != nil {
		return r, fmt.Errorf("iperf3 server: %w: %s", err, srv.Output())
	}
	out, err := client.Command(ctx, "iperf3", "-c", addr.String(), "-p", strconv.Itoa(IperfPort),
		"-t", strconv.Itoa(secs), "-J").Output()
	if err != nil {
		return r, fmt.Errorf("iperf3 client: %w: %s", err, out)
	}
	return parseIperf(out)
}

func parseIperf(out []byte) (IperfResult, error) {
	var j struct {
		Intervals []struct {
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"intervals"`
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 -J: %w", err)
	}
	if j.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	if j.End.SumReceived.BitsPerSecond <= 0 {
		return IperfResult{}, fmt.Errorf("iperf3: no throughput in result")
	}
	r := IperfResult{Gbps: j.End.SumReceived.BitsPerSecond / 1e9, Retransmits: j.End.SumSent.Retransmits,
		Seconds: j.End.SumReceived.Seconds}
	for _, iv := range j.Intervals {
		g := iv.Sum.BitsPerSecond / 1e9
		r.Intervals = append(r.Intervals, g)
		r.PeakGbps = max(r.PeakGbps, g)
	}
	return r, nil
}

package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// BenchCase is one scenario run through Linux's helper and through pptpgw.
type BenchCase struct {
	Name      string `json:"name"`
	KernelOK  bool   `json:"kernel_ok"`
	Kernel    string `json:"kernel"` // short outcome
	GatewayOK bool   `json:"gateway_ok"`
	Gateway   string `json:"gateway"`
}

// BenchReport is the outcome of Bench.
type BenchReport struct {
	Cases       []BenchCase `json:"cases"`
	KernelGbps  float64     `json:"kernel_masquerade_gbps"`
	GatewayGbps float64     `json:"pptpgw_gbps"`
	Ratio       float64     `json:"ratio"`
}

// JSON returns the report as indented JSON.
func (r BenchReport) JSON() string {
	b, _ := json.MarshalIndent(r, "", "  ")
	return string(b)
}

// Bench runs, each in fresh topologies, the comparison cases of the README
// through Linux's own PPTP helper (ct helper "pptp" + masquerade) and through
// pptpgw (gwBinary; empty means the running executable), then bulk TCP
// (iperf3, iperfSecs seconds, default 3) through plain kernel masquerade and
// through pptpgw. It prints a table to out and returns the report; the error
// is about the bench itself failing to run, not about a case failing.
func Bench(ctx context.Context, gwBinary string, iperfSecs int, out io.Writer) (rep BenchReport, err error) {
	if os.Geteuid() != 0 {
		return rep, errors.New("bench needs root: it creates network namespaces")
	}
	if gwBinary == "" {
		if gwBinary, err = os.Executable(); err != nil {
			return rep, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// with builds a topology, programs the kernel helper or starts pptpgw,
	// and runs fn.
	with := func(clients int, gateway bool, fn func(t *Topology) (bool, string)) (ok bool, what string, err error) {
		t, err := New(Config{Clients: clients})
		if err != nil {
			return false, "", err
		}
		defer t.Close()
		if gateway {
			g, err := t.StartGateway(ctx, gwBinary)
			if err != nil {
				return false, "", err
			}
			defer g.Stop()
		} else if err := t.KernelHelper(ctx); err != nil {
			return false, "", err
		}
		ok, what = fn(t)
		return ok, what, nil
	}
	cases := []struct {
		name    string
		clients int
		fn      func(t *Topology) (bool, string)
	}{
		{"6 pptp-linux clients -> 1 pptpd", 6, func(t *Topology) (bool, string) {
			if _, err := t.StartPPTPD(ctx, PPTPDConfig{}); err != nil {
				return false, err.Error()
			}
			r := RunPPTPClients(ctx, t, t.Clients, ServerIP, 50, nil)
			good, foreign := 0, 0
			for _, s := range r.Summaries {
				if s.OK() {
					good++
				}
				foreign += s.Foreign
			}
			return r.OK(), fmt.Sprintf("%d/%d clients got all frames, %d foreign", good, len(t.Clients), foreign)
		}},
		{"2 PNS x 3 calls on one control connection", 2, func(t *Topology) (bool, string) {
			return summarizeMulti(RunMultiCall(ctx, t, MultiCallConfig{Clients: 2, Calls: 3, Frames: 20}))
		}},
		{"control messages split inside call-ID fields", 2, func(t *Topology) (bool, string) {
			return summarizeMulti(RunSplitControl(ctx, t, nil))
		}},
	}
	fmt.Fprintf(out, "%-46s  %-42s  %s\n", "case", "Linux ct helper \"pptp\" + masquerade", "pptpgw")
	for _, c := range cases {
		bc := BenchCase{Name: c.name}
		if bc.KernelOK, bc.Kernel, err = with(c.clients, false, c.fn); err != nil {
			return rep, fmt.Errorf("%s (kernel): %w", c.name, err)
		}
		if bc.GatewayOK, bc.Gateway, err = with(c.clients, true, c.fn); err != nil {
			return rep, fmt.Errorf("%s (pptpgw): %w", c.name, err)
		}
		rep.Cases = append(rep.Cases, bc)
		fmt.Fprintf(out, "%-46s  %-42s  %s\n", c.name, verdict(bc.KernelOK, bc.Kernel), verdict(bc.GatewayOK, bc.Gateway))
	}

	t, err := New(Config{Clients: 1})
	if err != nil {
		return rep, err
	}
	defer t.Close()
	if err := t.KernelMasquerade(ctx); err != nil {
		return rep, err
	}
	k, err := RunIperf(ctx, t, iperfSecs)
	if err != nil {
		return rep, fmt.Errorf("iperf3 through kernel masquerade: %w", err)
	}
	if err := t.KernelReset(ctx); err != nil {
		return rep, err
	}
	g, err := t.StartGateway(ctx, gwBinary)
	if err != nil {
		return rep, err
	}
	gr, err := RunIperf(ctx, t, iperfSecs)
	_ = g.Stop()
	if err != nil {
		return rep, fmt.Errorf("iperf3 through pptpgw: %w", err)
	}
	rep.KernelGbps, rep.GatewayGbps, rep.Ratio = k.Gbps, gr.Gbps, gr.Gbps/k.Gbps
	fmt.Fprintf(out, "%-46s  %-42s  %.2f Gbit/s (%.3f of kernel)\n", "bulk TCP (iperf3), 1 client",
		fmt.Sprintf("%.2f Gbit/s (plain masquerade)", k.Gbps), gr.Gbps, rep.Ratio)
	return rep, nil
}

func verdict(ok bool, what string) string {
	if ok {
		return "ok: " + what
	}
	return "FAIL: " + what
}

func summarizeMulti(r MultiCallResult) (bool, string) {
	calls, working := 0, 0
	for _, p := range r.PNS {
		for _, c := range p.Calls {
			calls++
			if c.Replied && c.Result == 1 && c.Good == c.Want && c.Foreign == 0 {
				working++
			}
		}
	}
	return r.OK(), fmt.Sprintf("%d/%d calls carried all frames", working, calls)
}

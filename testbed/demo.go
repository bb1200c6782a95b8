package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// DemoClients is how many pptp-linux clients the demo puts behind the gateway.
const DemoClients = 3

// Demo builds a topology with DemoClients pptp-linux clients behind pptpgw
// (gwBinary; empty means the running executable) calling one pptpd, prints
// the gateway's live call table while the calls are up (showing each
// client's call ID and the rewritten outside call ID), the per-client
// round-trip results, and removes everything again. Needs root.
//
// The pptpd side runs fakeppp by re-executing the current binary, so the
// calling program must link this package (pptpgw does, for `pptpgw demo`).
func Demo(ctx context.Context, gwBinary string, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo needs root: it creates network namespaces")
	}
	if gwBinary == "" {
		if gwBinary, err = os.Executable(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	topo, err := New(Config{Clients: DemoClients})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := topo.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintf(out, "\nremoved namespaces %s-*\n", topo.Prefix)
		}
	}()
	fmt.Fprintf(out, "topology %s: %d clients on %s (bridge %s) -> gateway %s / %s (%s) -> pptpd %s\n",
		topo.Prefix, DemoClients, LANPrefix, topo.LANIf, GWLANIP, GWWANIP, topo.WANIf, ServerIP)
	if _, err := topo.StartPPTPD(ctx, PPTPDConfig{}); err != nil {
		return err
	}
	gw, err := topo.StartGateway(ctx, gwBinary)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pptpgw running in %s (admin socket %s)\n", topo.GW.Name, gw.Socket)
	fmt.Fprintf(out, "starting %d pptp-linux clients, each sending 50 HDLC frames through its call...\n\n", DemoClients)
	var holdErr error
	calls, distinct := 0, 0
	res := RunPPTPClients(ctx, topo, topo.Clients, ServerIP, 50, func() {
		table, err := gw.CallsTable(ctx)
		if err != nil {
			holdErr = err
			return
		}
		fmt.Fprintf(out, "$ pptpgw calls\n%s\n", table)
		rep, err := gw.Calls(ctx)
		if err != nil {
			holdErr = err
			return
		}
		calls, distinct = len(rep.Calls), DistinctOutsideIDs(rep.Calls)
		fmt.Fprintf(out, "%d live calls, %d distinct outside call IDs toward %s\n\n", calls, distinct, ServerIP)
	})
	for _, s := range res.Summaries {
		verdict := "OK"
		if !s.OK() {
			verdict = "FAILED"
		}
		fmt.Fprintf(out, "%-12s %3d/%d frames back, %d foreign, %d bad FCS  %s\n", s.Tag, s.Good, s.Want, s.Foreign, s.BadFCS, verdict)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(out, "error: %s\n", e)
	}
	if stopErr := gw.Stop(); stopErr != nil {
		fmt.Fprintf(out, "pptpgw stop: %v\n", stopErr)
	}
	switch {
	case holdErr != nil:
		return fmt.Errorf("reading the call table: %w\ngateway log:\n%s", holdErr, gw.Log())
	case calls != DemoClients || distinct != DemoClients:
		return fmt.Errorf("the gateway listed %d calls with %d distinct outside call IDs, want %d", calls, distinct, DemoClients)
	case !res.OK():
		return fmt.Errorf("not every client got all its frames back\ngateway log:\n%s", lastLines(gw.Log(), 30))
	}
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"pptpgw/testbed"
)

func cmdDemo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw demo [--timeout D]

Builds a throwaway network-namespace topology (names with a random prefix):
three clients on a LAN bridge behind a pptpgw gateway (10.77.0.0/24 inside,
203.0.113.1 outside) and one pptpd server at 203.0.113.2. Each client runs
Debian's pptp-linux and calls the server at the same time; while the calls are
up the demo prints the gateway's live call table (each client's call ID and the
outside call ID the gateway put on the wire) and the per-client frame round-trip
results, then removes every namespace, interface and rule it made.
Needs root and the pptp-linux, pptpd and nftables packages ('make demo'
installs them). Traffic stays inside the namespaces.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "pptpgw demo: needs root (it creates network namespaces); try sudo")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := testbed.Demo(ctx, "", os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw demo:", err)
		return 1
	}
	return 0
}

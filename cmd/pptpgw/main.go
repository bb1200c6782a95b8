// Command pptpgw is a PPTP-aware NAT gateway (run), a userspace PPTP server
// (serve) and a network-namespace testbed (demo, bench).
//
// It owns the command line, signals, the admin socket and the wiring of the
// packages: configuration (rules) to engine (nat) to queue (nat/nfq) for
// run; pptp for serve; testbed for demo and bench. It holds no protocol
// logic of its own.
package main

import (
	"fmt"
	"io"
	"os"
)

// subcommand is one verb of the pptpgw binary.
type subcommand struct {
	name  string
	short string
	run   func(args []string) int
}

func subcommands() []subcommand {
	return []subcommand{
		{"run", "run the PPTP-aware NAT gateway (NFQUEUE + nftables)", cmdRun},
		{"calls", "list the live PPTP calls of a running gateway", cmdCalls},
		{"events", "stream the call events of a running gateway (like conntrack -E)", cmdEvents},
		{"qos", "show the shaped interfaces and their classes' live counters", cmdQoS}, // shaping (issue 9)
		{"pool", "list the members of the gateway's server pools", cmdPool},
		{"reload", "make a running gateway or server re-read its configuration", cmdReload},
		{"serve", "run the userspace PPTP server (PAC) with TUN", cmdServe},
		{"sessions", "list the live sessions of a running server", cmdSessions},
		{"demo", "build a namespace topology: 3 clients behind the gateway call one server", cmdDemo},
		{"bench", "measure pptpgw against Linux's PPTP helper and masquerade in namespaces", cmdBench},
		{"timeouts", "print every timeout in force (the daemon's and the kernel's) and where it comes from", cmdTimeouts},
		{"version", "print the version", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `pptpgw: PPTP through NAT and at the network edge, properly.

Usage:
  pptpgw <command> [flags]

Commands:
`)
	for _, c := range subcommands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\nRun 'pptpgw <command> --help' for the flags of a command.\n")
}

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(os.Stdout)
		return 0
	}
	for _, c := range subcommands() {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	fmt.Fprintf(os.Stderr, "pptpgw: unknown command %q\n\n", args[0])
	usage(os.Stderr)
	return 2
}

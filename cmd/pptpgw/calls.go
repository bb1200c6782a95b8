package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"

	"pptpgw/nat"
	"pptpgw/rules"
)

func cmdCalls(args []string) int {
	fs := flag.NewFlagSet("calls", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	sock := fs.String("admin-socket", rules.DefaultAdminSocket, "admin socket of the running gateway")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pptpgw calls [--json] [--admin-socket PATH]

Lists the live PPTP calls of a running 'pptpgw run': for each call the inside
client and its call ID, the outside call ID the gateway put on the wire, the
server's call ID, the state, how long it has been idle and packet/byte counters
in both directions. --json also prints the gateway's drop/pass counters.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	b, err := queryAdmin("pptpgw run", *sock, "calls")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw calls:", err)
		return 1
	}
	if *asJSON {
		os.Stdout.Write(b)
		return 0
	}
	var r nat.CallsReply
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintln(os.Stderr, "pptpgw calls: bad answer from daemon:", err)
		return 1
	}
	printCalls(os.Stdout, r.Calls)
	return 0
}

func printCalls(w io.Writer, calls []nat.CallInfo) {
	sort.Slice(calls, func(i, j int) bool { // the table's order since its first release
		if a, b := calls[i].InsideIP.String(), calls[j].InsideIP.String(); a != b {
			return a < b
		}
		return calls[i].InsideCallID < calls[j].InsideCallID
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// PEER, not SERVER: behind a forward the inside party is the server
	// and the peer is the client; such calls show their public port.
	fmt.Fprintln(tw, "INSIDE\tCALL-ID\tOUTSIDE\tCALL-ID\tPEER\tCALL-ID\tSTATE\tIDLE\tPKTS OUT/IN\tBYTES OUT/IN\tCLASS\tPOLICED OUT/IN\tDIR\tMEMBER")
	for _, c := range calls {
		outside := c.PublicIP.String()
		if c.PublicPort != 0 {
			outside = fmt.Sprintf("%s:%d", c.PublicIP, c.PublicPort)
		}
		class := c.Class // shaping (issue 9)
		if class == "" {
			class = "-"
		}
		member := "-" // pool (issue 11)
		if c.Member.IsValid() {
			member = c.Member.String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%d\t%s\t%.1fs\t%d/%d\t%d/%d\t%s\t%d/%d\t%s\t%s\n",
			c.InsideIP, c.InsideCallID, outside, c.OutsideCallID, c.PeerIP, c.PeerCallID,
			c.State, c.IdleSeconds, c.PktsOut, c.PktsIn, c.BytesOut, c.BytesIn, class, c.PolicedOut, c.PolicedIn, c.Direction, member)
	}
	tw.Flush()
	if len(calls) == 0 {
		fmt.Fprintln(w, "(no live calls)")
	}
}

// flagExit maps a flag parsing error to an exit code: --help is success.
func flagExit(err error) int {
	if err == flag.ErrHelp {
		return 0
	}
	return 2
}

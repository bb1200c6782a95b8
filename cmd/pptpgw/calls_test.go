package main

import (
	"net/netip"
	"strings"
	"testing"

	"pptpgw/nat"
)

// The human table names the other party PEER (behind a forward it is the
// client) and shows a forwarded call's public port.
func TestPrintCalls(t *testing.T) {
	var b strings.Builder
	printCalls(&b, []nat.CallInfo{
		{InsideIP: netip.MustParseAddr("10.77.0.11"), InsideCallID: 0x4000, PublicIP: netip.MustParseAddr("203.0.113.1"), PublicPort: 1724, OutsideCallID: 777,
			PeerIP: netip.MustParseAddr("203.0.113.2"), PeerCallID: 0x200, State: "replied"},
		{InsideIP: netip.MustParseAddr("10.77.0.10"), InsideCallID: 0x100, PublicIP: netip.MustParseAddr("203.0.113.1"), OutsideCallID: 999,
			PeerIP: netip.MustParseAddr("203.0.113.2"), PeerCallID: 0x4000, State: "unreplied"},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 rows:\n%s", b.String())
	}
	if f := strings.Fields(lines[0]); f[4] != "PEER" {
		t.Errorf("header %q: column 5 is %q, want PEER", lines[0], f[4])
	}
	for i, want := range [][]string{
		{"10.77.0.10", "256", "203.0.113.1", "999", "203.0.113.2", "16384", "unreplied"},
		{"10.77.0.11", "16384", "203.0.113.1:1724", "777", "203.0.113.2", "512", "replied"},
	} {
		if got := strings.Fields(lines[i+1])[:7]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
	b.Reset()
	printCalls(&b, nil)
	if !strings.Contains(b.String(), "(no live calls)") {
		t.Errorf("empty table: %q", b.String())
	}
}

package rules

import (
	"strings"
	"testing"
)

// TestInstallPoolNetns: the kernel takes the pool ruleset and nft(8) reads
// it back as the text the golden bytes were recorded from (in particular
// the hairpin SNAT's `ct original ip daddr`, which google/nftables encodes
// with NFT_CT_DST and nft with NFT_CT_DST_IP: the kernel shows the same).
func TestInstallPoolNetns(t *testing.T) {
	ns, h := testNetns(t)
	p := goldenPoolPlan(QueueAuto)
	p.Table = "pgp"
	p.NetNS = int(h)
	in, err := Install(p)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	out, err := nsListTable(ns, "pgp")
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	text, _ := comparable(out)
	for _, w := range []string{
		"chain pool_prerouting", "type filter hook prerouting priority mangle",
		`tcp dport 1723 tcp flags syn / syn,ack iifname "wan0"`,
		`tcp dport 1724 tcp flags syn / syn,ack fib daddr type local iifname != "wan0"`,
		"tcp dport 1723 meta mark & 0x007f0000 == 0x00010000 dnat to 10.0.1.5",
		"tcp dport 1723 meta mark & 0x007f0000 == 0x00020000 dnat to 10.0.1.6",
		`iifname "wan0" tcp dport 1723 dnat to 10.0.1.5`,
		"tcp dport 1724 meta mark & 0x007f0000 == 0x00020000 dnat to 10.0.1.8:1723",
		"chain pool_hairpin", `tcp dport 1723 ct status dnat iifname != "wan0"`, `tcp sport 1723 ct status snat iifname != "wan0"`,
		`ip protocol gre fib daddr type local iifname != "wan0"`,
		"chain pool_hairpin_post", "type filter hook postrouting priority -50", "ip protocol gre meta mark & 0x00800000 == 0x00800000",
		"meta mark & 0x00800000 == 0x00800000 snat to ct original ip daddr",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("pool ruleset (queue %s) lacks %q:\n%s", in.QueueImpl, w, out)
		}
	}
	if err := in.Remove(); err != nil {
		t.Fatal(err)
	}
}

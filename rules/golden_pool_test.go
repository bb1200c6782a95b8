package rules

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// goldenPoolPlan has two pools; its pool_prerouting and nat_prerouting
// rules are testdata/golden-pool.nft.
func goldenPoolPlan(impl QueueImpl) Plan {
	return Plan{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: true, MSS: MSSClamp{Mode: MSSOff}, QueueImpl: impl,
		Forwards: []Forward{
			{Port: 1723, To: "10.0.1.5", Pool: []string{"10.0.1.5", "10.0.1.6"}},
			{Port: 1724, To: "10.0.1.7", Pool: []string{"10.0.1.7", "10.0.1.8"}},
		}}
}

// TestGoldenPool: the pool rules are byte for byte what nft(8) sends for
// testdata/golden-pool.nft, and every one of those is produced.
func TestGoldenPool(t *testing.T) {
	golden := readGolden(t, "golden-pool-nft.hex")
	used := make([]bool, len(golden))
	n := 0
	for _, r := range installFake(t, goldenPoolPlan(QueueNative)) {
		if r.chain != ChainPoolPrerouting && r.chain != ChainNATPrerouting {
			continue
		}
		n++
		body := withBitwiseOp(t, asNFTSends(t, r.body))
		found := false
		for i, g := range golden {
			if bytes.Equal(g.body, body) {
				used[i], found = true, true
			}
		}
		if !found {
			t.Errorf("rule in %s [%s] matches no rule nft sends:\n%s", r.chain, r.exprNames(), closest(golden, r))
		}
	}
	for i, u := range used {
		if !u {
			t.Errorf("nft rule %d in %s [%s] is never produced", i, golden[i].chain, golden[i].exprNames())
		}
	}
	if n != 8 {
		t.Errorf("%d pool and DNAT rules, want 8 (2 queue rules, 2 x (2 members + 1 fallback))", n)
	}
}

// TestPoolSingleForwardUnchanged: a forward with one `to` keeps its one
// DNAT rule and gets no pool chain.
func TestPoolSingleForwardUnchanged(t *testing.T) {
	p := goldenPlans(QueueNative)[0]
	for _, r := range installFake(t, p) {
		if r.chain == ChainPoolPrerouting {
			t.Fatalf("a plan without pools has a %s rule", r.chain)
		}
	}
}

// withBitwiseOp adds the one more encoding difference the pool rules show:
// nft 1.0.6 sends NFTA_BITWISE_OP = NFT_BITWISE_BOOL (0) in a mask-and-xor
// bitwise expression, google/nftables leaves it out, and the kernel
// (nft_bitwise_init) reads a missing attribute as NFT_BITWISE_BOOL. The
// attribute is inserted where nft puts it, after DREG.
func withBitwiseOp(t *testing.T, body []byte) []byte {
	t.Helper()
	const opAttr = 6 // NFTA_BITWISE_OP
	return mapExprData(t, body, func(name string, data []netlink.Attribute) []netlink.Attribute {
		if name != "bitwise" || slices.ContainsFunc(data, func(a netlink.Attribute) bool { return a.Type == opAttr }) {
			return data
		}
		var out []netlink.Attribute
		for _, a := range data {
			out = append(out, a)
			if a.Type == unix.NFTA_BITWISE_DREG {
				out = append(out, netlink.Attribute{Type: opAttr, Data: []byte{0, 0, 0, 0}})
			}
		}
		return out
	})
}

func TestCaptureGoldenPool(t *testing.T) {
	if !*capture {
		t.Skip("recording only with -capture")
	}
	ns, _ := testNetns(t)
	rules := straceIn(t, ns, "nft", "-f", "testdata/golden-pool.nft")
	s := "# nft -f testdata/golden-pool.nft\n# recorded by TestCaptureGoldenPool -capture; one NEWRULE body (nfgenmsg + attributes) per line\n" +
		strings.Join(rules, "\n") + "\n"
	if err := os.WriteFile(filepath.Join("testdata", "golden-pool-nft.hex"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

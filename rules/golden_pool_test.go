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
		switch r.chain {
		case ChainPoolPrerouting, ChainNATPrerouting, ChainPoolHairpin, ChainPoolHairpinPost, ChainNATPostrouting:
		default:
			continue
		}
		n++
		body := poolNorm(t, asNFTSends(t, r.body))
		found := false
		for i, g := range golden {
			if bytes.Equal(poolNorm(t, g.body), body) {
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
	if n != 16 {
		t.Errorf("%d pool rules, want 16 (4 SYN queue rules, 2 x (2 members + 1 fallback) DNAT, 4 hairpin queue, 2 SNAT)", n)
	}
}

// TestPoolSingleForwardUnchanged: a forward with one `to` keeps its one
// DNAT rule and gets no pool chain.
func TestPoolSingleForwardUnchanged(t *testing.T) {
	p := goldenPlans(QueueNative)[0]
	for _, r := range installFake(t, p) {
		if r.chain == ChainPoolPrerouting || r.chain == ChainPoolHairpin || r.chain == ChainPoolHairpinPost {
			t.Fatalf("a plan without pools has a %s rule", r.chain)
		}
	}
}

// poolNorm removes two more encoding differences the pool rules show, on
// both sides (what Install sends and what nft sent), so that the rest is
// compared byte for byte:
//
//   - NFTA_BITWISE_OP = NFT_BITWISE_BOOL (0): nft 1.0.6 sends it for some
//     mask-and-xor expressions and not for others, google/nftables never;
//     the kernel (nft_bitwise_init) reads a missing attribute as
//     NFT_BITWISE_BOOL. A zero one is dropped.
//   - `ct original ip daddr`: nft sends key NFT_CT_DST_IP (20) with an 8-bit
//     direction, google/nftables (which has no DST_IP) key NFT_CT_DST (9)
//     with a 32-bit one. In an ip table both load the 4-byte IPv4 address of
//     the tuple (nft_ct_get_init), and the kernel reads the direction as a
//     u8, which is 0 (original) in both. nft's form is turned into ours.
func poolNorm(t *testing.T, body []byte) []byte {
	t.Helper()
	const opAttr = 6 // NFTA_BITWISE_OP
	return mapExprData(t, body, func(name string, data []netlink.Attribute) []netlink.Attribute {
		switch name {
		case "bitwise":
			return slices.DeleteFunc(data, func(a netlink.Attribute) bool {
				return a.Type == opAttr && bytes.Equal(a.Data, []byte{0, 0, 0, 0})
			})
		case "ct":
			for i := range data {
				if data[i].Type == unix.NFTA_CT_KEY && bytes.Equal(data[i].Data, []byte{0, 0, 0, unix.NFT_CT_DST_IP}) {
					data[i].Data = []byte{0, 0, 0, unix.NFT_CT_DST}
				}
				if data[i].Type == unix.NFTA_CT_DIRECTION && len(data[i].Data) == 1 {
					data[i].Data = []byte{0, 0, 0, data[i].Data[0]}
				}
			}
		}
		return data
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

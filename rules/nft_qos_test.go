package rules

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"go.yaml.in/yaml/v3"

	"pptpgw/qos"
)

// Shaping (issue 9): the classification chain, byte for byte what nft(8)
// sends for testdata/golden-qos.nft.

func goldenQoSClasses(t *testing.T) []qos.Class {
	t.Helper()
	var cs []qos.Class
	err := yaml.Unmarshal([]byte(`
- name: interactive
  match:
    - {protocol: icmp}
    - {src: 10.0.0.0/8, dst: [192.0.2.1, 198.51.100.0/22], protocol: udp, dport: [53, "5060-5061"], dscp: ef}
    - {protocol: tcp, sport: 22}
- name: pptp
  match:
    - {pptp: true}
    - {inside: 10.0.0.5}
- name: bulk
  match:
    - {dst: 203.0.113.0/24}
`), &cs)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestGoldenQoS(t *testing.T) {
	golden := readGolden(t, "golden-qos.hex")
	p := goldenPlans(QueueXT)[0]
	p.Classes = goldenQoSClasses(t)
	var got []ruleMsg
	for _, r := range installFake(t, p) {
		if r.chain == ChainQoS {
			got = append(got, r)
		}
	}
	if len(got) != len(golden) {
		t.Errorf("%d rules in %s, nft sends %d", len(got), ChainQoS, len(golden))
	}
	for i := range min(len(got), len(golden)) {
		if nft := withoutBitwiseOp(t, golden[i].body); !bytes.Equal(got[i].body, nft) {
			t.Errorf("rule %d [%s] differs from nft's [%s]:\n%s", i, got[i].exprNames(), golden[i].exprNames(), closest(golden[i:i+1], got[i]))
		}
	}
}

// withoutBitwiseOp drops the one known, harmless difference: nft sends
// NFTA_BITWISE_OP = NFT_BITWISE_BOOL (0) with every bitwise expression,
// google/nftables leaves it out, and the kernel (nft_bitwise_init) reads a
// missing attribute as that same operation.
func withoutBitwiseOp(t *testing.T, body []byte) []byte {
	const nftaBitwiseOp = 6
	return mapExprData(t, body, func(name string, data []netlink.Attribute) []netlink.Attribute {
		if name != "bitwise" {
			return data
		}
		kept := data[:0]
		for _, a := range data {
			if a.Type == nftaBitwiseOp && bytes.Equal(a.Data, []byte{0, 0, 0, 0}) {
				continue
			}
			kept = append(kept, a)
		}
		return kept
	})
}

// No classes: no chain at all. Only the engine's: the chain gives their
// priority back after forwarding, and classes nothing else.
func TestQoSChainWithoutKernelMatches(t *testing.T) {
	p := goldenPlans(QueueXT)[0]
	for _, r := range installFake(t, p) {
		if r.chain == ChainQoS {
			t.Fatalf("rule in %s without classes", ChainQoS)
		}
	}
	p.Classes = goldenQoSClasses(t)[1:2] // pptp only
	var n int
	for _, r := range installFake(t, p) {
		if r.chain == ChainQoS {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d rules in %s for one engine class, want 2", n, ChainQoS)
	}
}

func TestCaptureGoldenQoS(t *testing.T) {
	if !*capture {
		t.Skip("recording only with -capture")
	}
	for _, tool := range []string{"nft", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("-capture needs %s", tool)
		}
	}
	ns, _ := testNetns(t)
	rules := straceIn(t, ns, "nft", "-f", "testdata/golden-qos.nft")
	ver, _ := exec.Command("nft", "--version").Output()
	s := "# " + strings.TrimSpace(string(ver)) + ": nft -f testdata/golden-qos.nft\n" +
		"# recorded by TestCaptureGoldenQoS -capture; one NEWRULE body (nfgenmsg + attributes) per line\n" +
		strings.Join(rules, "\n") + "\n"
	if err := os.WriteFile(filepath.Join("testdata", "golden-qos.hex"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

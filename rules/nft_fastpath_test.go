package rules

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// withoutFastPath drops the GRE fast path's rules (they end in accept) from
// a queue chain's rules.
func withoutFastPath(rs []*nftables.Rule) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range rs {
		if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); ok && v.Kind == expr.VerdictAccept {
			continue
		}
		out = append(out, r)
	}
	return out
}

// nfqInfo is the xt NFQUEUE info the plan's queue rules carry.
func nfqInfo(p Plan, bypass bool) []byte {
	b := NFQInfoV3(p.Queue, bypass)
	if p.Queues > 1 {
		binary.NativeEndian.PutUint16(b[2:], p.Queues)
	}
	return b
}

func TestConfigDocCoversFastPath(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"`gre_path`", "`queues`", "`auto`", "`kernel`", "`userspace`", "`0` (one per CPU)"} {
		if !strings.Contains(string(doc), k) {
			t.Errorf("CONFIG.md does not mention %s", k)
		}
	}
}

package rules

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Golden bytes: the NEWRULE messages Install sends are compared byte for
// byte with what nft(8) sends for the same rules written as nft text
// (testdata/golden.nft), and the NFQUEUE target with what iptables-nft sends
// for `-j NFQUEUE --queue-num 47 [--queue-bypass]`. Both were recorded with
// strace by `go test ./rules -run TestCaptureGolden -capture` (root, nft,
// iptables-nft, strace), so the expectations come from the reference tools,
// not from this package.

var capture = flag.Bool("capture", false, "re-record testdata/golden-*.hex with nft, iptables-nft and strace")

const newRuleType = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE

// ruleMsg is one NEWRULE message body (nfgenmsg + attributes).
type ruleMsg struct {
	chain string
	body  []byte
	exprs []exprAttr
}

// exprAttr is one element of NFTA_RULE_EXPRESSIONS: its name and the whole
// attribute as sent.
type exprAttr struct {
	name string
	raw  []byte
}

func decodeRule(t testing.TB, body []byte) ruleMsg {
	t.Helper()
	r := ruleMsg{body: body}
	ad, err := netlink.NewAttributeDecoder(body[4:])
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_CHAIN:
			r.chain = ad.String()
		case unix.NFTA_RULE_EXPRESSIONS:
			b := ad.Bytes()
			for len(b) >= 4 {
				l := int(binary.NativeEndian.Uint16(b))
				if l < 4 || l > len(b) {
					t.Fatalf("bad expression attribute length %d", l)
				}
				raw := b[:l]
				var name string
				if inner, err := netlink.UnmarshalAttributes(raw[4:]); err == nil {
					for _, a := range inner {
						if a.Type == unix.NFTA_EXPR_NAME {
							name = strings.TrimRight(string(a.Data), "\x00")
						}
					}
				}
				r.exprs = append(r.exprs, exprAttr{name, raw})
				b = b[(l+3)&^3:]
			}
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r ruleMsg) exprNames() string {
	var n []string
	for _, e := range r.exprs {
		n = append(n, e.name)
	}
	return strings.Join(n, ",")
}

// fakeConn records the NEWRULE messages of Install instead of talking to the
// kernel; list requests get an empty answer.
func fakeConn(t testing.TB, got *[]ruleMsg) *nftables.Conn {
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if m.Header.Flags&netlink.Dump != 0 {
				return nil, nil
			}
			if m.Header.Type == newRuleType {
				*got = append(*got, decodeRule(t, append([]byte(nil), m.Data...)))
			}
		}
		return req, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// goldenPlans are the two plans whose rules together cover testdata/golden.nft.
func goldenPlans(impl QueueImpl) []Plan {
	return []Plan{
		{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: true, MSS: MSSClamp{Mode: MSSAuto}, QueueImpl: impl,
			Forwards: []Forward{{Port: 1723, To: "10.0.1.5"}, {Port: 1724, To: "10.0.1.6"}}},
		{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: false, MSS: MSSClamp{Mode: MSSFixed, Value: 1400}, QueueImpl: impl,
			PublicAddr: netip.MustParseAddr("203.0.113.7")},
	}
}

// installFake returns the rules InstallConn sends for p, followed by those
// ReduceToFailsafe sends afterwards.
func installFake(t *testing.T, p Plan) []ruleMsg {
	t.Helper()
	var got []ruleMsg
	in, err := InstallConn(fakeConn(t, &got), p)
	if err != nil {
		t.Fatalf("InstallConn: %v", err)
	}
	if in.QueueImpl != p.QueueImpl {
		t.Fatalf("QueueImpl = %q, want %q", in.QueueImpl, p.QueueImpl)
	}
	if err := in.ReduceToFailsafe(); err != nil {
		t.Fatalf("ReduceToFailsafe: %v", err)
	}
	return got
}

// isGRE reports whether r starts with `ip protocol gre` (a payload load of
// the protocol byte), as the GRE queue rules and the fail-safe rule do.
func isGRE(r ruleMsg) bool { return len(r.exprs) > 0 && r.exprs[0].name == "payload" }

func readGolden(t *testing.T, name string) []ruleMsg {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []ruleMsg
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, decodeRule(t, b))
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", name)
	}
	return out
}

// outputTwin maps an output chain to the prerouting chain whose rules it
// repeats.
var outputTwin = map[string]string{ChainRawOutput: ChainRawPrerouting}

// withChain re-marshals r as if it were in chain c (for output chains, whose
// rules nft would encode identically but for the chain name).
func withChain(t *testing.T, r ruleMsg, c string) []byte {
	attrs, err := netlink.UnmarshalAttributes(r.body[4:])
	if err != nil {
		t.Fatal(err)
	}
	for i := range attrs {
		if attrs[i].Type == unix.NFTA_RULE_CHAIN {
			attrs[i].Data = []byte(c + "\x00")
		}
	}
	return append(append([]byte(nil), r.body[:4]...), mustMarshal(t, attrs)...)
}

func TestGoldenNativeQueue(t *testing.T) {
	golden := readGolden(t, "golden-nft.hex")
	used := make([]bool, len(golden))
	for _, p := range goldenPlans(QueueNative) {
		for _, r := range installFake(t, p) {
			body := r.body
			if twin, ok := outputTwin[r.chain]; ok {
				body = withChain(t, r, twin)
			}
			body = asNFTSends(t, body)
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
	}
	for i, u := range used {
		if !u {
			t.Errorf("nft rule %d in %s [%s] is never produced", i, golden[i].chain, golden[i].exprNames())
		}
	}
}

// asNFTSends rewrites the two known, harmless encoding differences between
// google/nftables and nft(8), both about the inside of one expression, so
// that everything else can be compared byte for byte:
//
//   - google/nftables always sends NFTA_QUEUE_FLAGS; nft leaves it out when
//     no flag is set, and the kernel (nft_queue_init) reads a missing
//     attribute as 0. A zero one is dropped.
//   - google/nftables sends a fib expression's attributes as DREG, FLAGS,
//     RESULT; nft (libnftnl) as FLAGS, RESULT, DREG. The kernel
//     (nft_fib_init) looks each one up by type. They are put in nft's order.
func asNFTSends(t *testing.T, body []byte) []byte {
	t.Helper()
	fibOrder := map[uint16]int{unix.NFTA_FIB_FLAGS: 0, unix.NFTA_FIB_RESULT: 1, unix.NFTA_FIB_DREG: 2}
	return mapExprData(t, body, func(name string, data []netlink.Attribute) []netlink.Attribute {
		switch name {
		case "queue":
			kept := data[:0]
			for _, a := range data {
				if a.Type == unix.NFTA_QUEUE_FLAGS && bytes.Equal(a.Data, []byte{0, 0}) {
					continue
				}
				kept = append(kept, a)
			}
			return kept
		case "fib":
			slices.SortStableFunc(data, func(a, b netlink.Attribute) int {
				return fibOrder[a.Type] - fibOrder[b.Type]
			})
		}
		return data
	})
}

// mapExprData re-marshals a NEWRULE body with each expression's data
// attributes (NFTA_EXPR_DATA) passed through f with the expression's name.
func mapExprData(t *testing.T, body []byte, f func(name string, data []netlink.Attribute) []netlink.Attribute) []byte {
	t.Helper()
	top, err := netlink.UnmarshalAttributes(body[4:])
	if err != nil {
		t.Fatal(err)
	}
	for i := range top {
		if top[i].Type&^unix.NLA_F_NESTED != unix.NFTA_RULE_EXPRESSIONS {
			continue
		}
		elems, err := netlink.UnmarshalAttributes(top[i].Data)
		if err != nil {
			t.Fatal(err)
		}
		for j := range elems {
			ex, err := netlink.UnmarshalAttributes(elems[j].Data)
			if err != nil {
				t.Fatal(err)
			}
			if len(ex) != 2 || ex[0].Type != unix.NFTA_EXPR_NAME {
				continue
			}
			data, err := netlink.UnmarshalAttributes(ex[1].Data)
			if err != nil {
				t.Fatal(err)
			}
			ex[1].Data = mustMarshal(t, f(strings.TrimRight(string(ex[0].Data), "\x00"), data))
			elems[j].Data = mustMarshal(t, ex)
		}
		top[i].Data = mustMarshal(t, elems)
	}
	return append(append([]byte(nil), body[:4]...), mustMarshal(t, top)...)
}

func mustMarshal(t *testing.T, as []netlink.Attribute) []byte {
	t.Helper()
	for i := range as {
		as[i].Length = 0 // recomputed
	}
	b, err := netlink.MarshalAttributes(as)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// closest explains a mismatch against the golden rule of the same chain and
// expression names, expression by expression.
func closest(golden []ruleMsg, r ruleMsg) string {
	var b strings.Builder
	for _, g := range golden {
		if g.chain != r.chain && g.chain != outputTwin[r.chain] || g.exprNames() != r.exprNames() {
			continue
		}
		fmt.Fprintf(&b, "candidate [%s]:\n", g.exprNames())
		for i := range g.exprs {
			if !bytes.Equal(g.exprs[i].raw, r.exprs[i].raw) {
				fmt.Fprintf(&b, "  %s: got %x\n  %s: nft %x\n", r.exprs[i].name, r.exprs[i].raw, g.exprs[i].name, g.exprs[i].raw)
			}
		}
	}
	if b.Len() == 0 {
		return "  (no golden rule with the same expressions)"
	}
	return b.String()
}

// TestGoldenXTQueue: with the xtables target, the match expressions are
// nft's and the target expression is byte for byte iptables-nft's.
func TestGoldenXTQueue(t *testing.T) {
	golden := readGolden(t, "golden-nft.hex")
	xtRules := readGolden(t, "golden-xt.hex") // [0] with --queue-bypass, [1] without
	if len(xtRules) != 2 {
		t.Fatalf("golden-xt.hex: %d rules, want 2", len(xtRules))
	}
	xtTarget := func(r ruleMsg) []byte {
		for _, e := range r.exprs {
			if e.name == "target" {
				return e.raw
			}
		}
		t.Fatalf("iptables-nft rule has no target: [%s]", r.exprNames())
		return nil
	}
	wantTarget := map[bool][]byte{true: xtTarget(xtRules[0]), false: xtTarget(xtRules[1])}
	queued := 0
	for _, p := range goldenPlans(QueueXT) {
		for _, r := range installFake(t, p) {
			last := r.exprs[len(r.exprs)-1]
			if last.name != "target" {
				continue
			}
			queued++
			bypass := p.FailOpen && !isGRE(r) // GRE never bypasses
			if !bytes.Equal(last.raw, wantTarget[bypass]) {
				t.Errorf("%s [%s]: NFQUEUE target (bypass=%v)\n got %x\nwant %x (iptables-nft)", r.chain, r.exprNames(), bypass, last.raw, wantTarget[bypass])
			}
			// The matches must be a golden queue rule's matches.
			ok := false
			for _, g := range golden {
				if (g.chain != ChainQueuePrerouting && g.chain != ChainQueuePostrouting) || len(g.exprs) != len(r.exprs) {
					continue
				}
				same := true
				for i := 0; i < len(g.exprs)-1; i++ {
					same = same && bytes.Equal(g.exprs[i].raw, r.exprs[i].raw)
				}
				ok = ok || same
			}
			if !ok {
				t.Errorf("%s: matches [%s] are not nft's", r.chain, r.exprNames())
			}
		}
	}
	if queued != 12 { // 2 plans x 2 chains x 3 rules
		t.Errorf("%d NFQUEUE target rules, want 12", queued)
	}
}

// TestGRENeverBypasses: whatever fail_open says and whichever queue
// implementation is used, the GRE queue rules carry no bypass flag (with no
// daemon bound the kernel must drop GRE, not forward it untranslated), and
// the TCP 1723 rules carry it exactly when fail_open is set.
func TestGRENeverBypasses(t *testing.T) {
	for _, impl := range []QueueImpl{QueueNative, QueueXT} {
		for _, failOpen := range []bool{true, false} {
			p := Plan{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: failOpen, MSS: MSSClamp{Mode: MSSOff}, QueueImpl: impl}
			gre, tcp := 0, 0
			for _, r := range installFake(t, p) {
				if r.chain != ChainQueuePrerouting && r.chain != ChainQueuePostrouting {
					continue
				}
				want := QueueExprs(impl, 47, failOpen)
				if isGRE(r) {
					want = QueueExprs(impl, 47, false)
					gre++
				} else {
					tcp++
				}
				if got, w := r.exprs[len(r.exprs)-1].raw, queueAttr(t, impl, want); !bytes.Equal(got, w) {
					t.Errorf("%s fail_open=%v %s [%s]: queue\n got %x\nwant %x", impl, failOpen, r.chain, r.exprNames(), got, w)
				}
			}
			if gre != 2 || tcp != 4 {
				t.Errorf("%s fail_open=%v: %d GRE and %d TCP queue rules, want 2 and 4", impl, failOpen, gre, tcp)
			}
		}
	}
}

// queueAttr is the rule expression attribute a queue statement marshals to
// (the last expression of a one-rule batch through the fake connection).
func queueAttr(t *testing.T, impl QueueImpl, q []expr.Any) []byte {
	t.Helper()
	var got []ruleMsg
	c := fakeConn(t, &got)
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "x"})
	ch := c.AddChain(&nftables.Chain{Name: "c", Table: tb})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: q})
	if err := c.Flush(); err != nil || len(got) != 1 {
		t.Fatalf("%s: marshal queue statement: %v (%d rules)", impl, err, len(got))
	}
	return got[0].exprs[len(got[0].exprs)-1].raw
}

// TestNFQInfoV3 pins the layout independently of the recordings.
func TestNFQInfoV3(t *testing.T) {
	b := NFQInfoV3(0x1234, true)
	if len(b) != 8 || binary.NativeEndian.Uint16(b) != 0x1234 || binary.NativeEndian.Uint16(b[2:]) != 1 ||
		binary.NativeEndian.Uint16(b[4:]) != 1 || b[6] != 0 || b[7] != 0 {
		t.Errorf("NFQInfoV3(0x1234, bypass) = %x", b)
	}
	if b := NFQInfoV3(7, false); binary.NativeEndian.Uint16(b[4:]) != 0 {
		t.Errorf("NFQInfoV3(7, no bypass) flags = %x", b[4:6])
	}
}

// ---- recording (root only, -capture) ----

var straceHexRE = regexp.MustCompile(`^\s*(?:\d+\s+)?\| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})`)

// straceBuffers extracts the buffers strace -e write=all dumped.
func straceBuffers(out string) [][]byte {
	var bufs [][]byte
	var cur []byte
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "bytes in buffer") {
			if cur != nil {
				bufs = append(bufs, cur)
			}
			cur = []byte{}
			continue
		}
		m := straceHexRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		b, _ := hex.DecodeString(strings.ReplaceAll(m[1], " ", ""))
		cur = append(cur, b...)
	}
	if cur != nil {
		bufs = append(bufs, cur)
	}
	return bufs
}

// newRules returns the hex bodies of the NEWRULE messages in the buffers.
func newRules(bufs [][]byte) []string {
	var out []string
	for _, b := range bufs {
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			if binary.NativeEndian.Uint16(b[4:]) == newRuleType {
				out = append(out, hex.EncodeToString(b[unix.NLMSG_HDRLEN:l]))
			}
			b = b[(l+3)&^3:]
		}
	}
	return out
}

func straceIn(t *testing.T, ns string, args ...string) []string {
	t.Helper()
	log := filepath.Join(t.TempDir(), "strace")
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "strace", "-f", "-o", log,
		"-e", "trace=sendmsg", "-e", "write=all"}, args...)...)
	out, _ := cmd.CombinedOutput() // nft fails on the queue rules here; the bytes were still sent
	t.Logf("%v: %s", args, out)
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	r := newRules(straceBuffers(string(b)))
	if len(r) == 0 {
		t.Fatalf("%v: no NEWRULE captured", args)
	}
	return r
}

func TestCaptureGolden(t *testing.T) {
	if !*capture {
		t.Skip("recording only with -capture")
	}
	for _, tool := range []string{"nft", "iptables-nft", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("-capture needs %s", tool)
		}
	}
	ns, _ := testNetns(t)
	nftRules := straceIn(t, ns, "nft", "-f", "testdata/golden.nft")
	var xtRules []string
	for _, extra := range [][]string{{"--queue-bypass"}, nil} {
		args := append([]string{"iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-p", "47",
			"-j", "NFQUEUE", "--queue-num", "47"}, extra...)
		xtRules = append(xtRules, straceIn(t, ns, args...)...)
	}
	ver, _ := exec.Command("nft", "--version").Output()
	xver, _ := exec.Command("iptables-nft", "--version").Output()
	write := func(name, head string, rules []string) {
		s := "# " + head + "\n# recorded by TestCaptureGolden -capture; one NEWRULE body (nfgenmsg + attributes) per line\n" +
			strings.Join(rules, "\n") + "\n"
		if err := os.WriteFile(filepath.Join("testdata", name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("golden-nft.hex", strings.TrimSpace(string(ver))+": nft -f testdata/golden.nft", nftRules)
	write("golden-xt.hex", strings.TrimSpace(string(xver))+": -t mangle -A PREROUTING -p 47 -j NFQUEUE --queue-num 47 --queue-bypass, then without --queue-bypass", xtRules)
}

// BenchmarkInstallFake measures building and marshalling the whole ruleset
// (what Install does besides the kernel round trips).
func BenchmarkInstallFake(b *testing.B) {
	p := goldenPlans(QueueXT)[0]
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) > 0 && req[0].Header.Flags&netlink.Dump != 0 {
			return nil, nil
		}
		return req, nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InstallConn(c, p); err != nil {
			b.Fatal(err)
		}
	}
}

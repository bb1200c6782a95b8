package rules

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"pptpgw/conntrack"

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

// ---- golden bytes (issue 12): the fast path's messages against nft(8)'s ----

const (
	newSetType     = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSET
	newSetElemType = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM
	delSetElemType = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELSETELEM
)

// nlMsg is one recorded netlink message: its type and body (nfgenmsg +
// attributes).
type nlMsg struct {
	typ  uint16
	body []byte
}

// fastPathTypes are the message types the fast path sends.
var fastPathTypes = map[uint16]bool{newRuleType: true, newSetType: true, newSetElemType: true, delSetElemType: true}

// messagesOf splits buffers into the messages of the fast path's types.
func messagesOf(bufs [][]byte) []nlMsg {
	var out []nlMsg
	for _, b := range bufs {
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			if typ := binary.NativeEndian.Uint16(b[4:]); fastPathTypes[typ] {
				out = append(out, nlMsg{typ, append([]byte(nil), b[unix.NLMSG_HDRLEN:l]...)})
			}
			b = b[(l+3)&^3:]
		}
	}
	return out
}

func TestCaptureGoldenFastPath(t *testing.T) {
	if !*capture {
		t.Skip("recording only with -capture")
	}
	for _, tool := range []string{"nft", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("-capture needs %s", tool)
		}
	}
	ns, _ := testNetns(t)
	log := filepath.Join(t.TempDir(), "strace")
	out, err := exec.Command("ip", "netns", "exec", ns, "strace", "-f", "-o", log, "-e", "trace=sendmsg", "-e", "write=all",
		"nft", "-f", "testdata/golden-fastpath.nft").CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	msgs := messagesOf(straceBuffers(string(b)))
	ver, _ := exec.Command("nft", "--version").Output()
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s: nft -f testdata/golden-fastpath.nft\n# recorded by TestCaptureGoldenFastPath -capture; one message per line: type (hex), body (nfgenmsg + attributes)\n",
		strings.TrimSpace(string(ver)))
	for _, m := range msgs {
		fmt.Fprintf(&sb, "%04x %s\n", m.typ, hex.EncodeToString(m.body))
	}
	if err := os.WriteFile("testdata/golden-fastpath.hex", []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readGoldenFastPath(t *testing.T) []nlMsg {
	t.Helper()
	b, err := os.ReadFile("testdata/golden-fastpath.hex")
	if err != nil {
		t.Fatal(err)
	}
	var out []nlMsg
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		typ, body, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("golden-fastpath.hex: bad line %q", line)
		}
		ty, err := strconv.ParseUint(typ, 16, 16)
		if err != nil {
			t.Fatal(err)
		}
		bb, err := hex.DecodeString(body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nlMsg{uint16(ty), bb})
	}
	return out
}

// recorder is a connection that records the fast path's messages instead
// of sending them; list requests get an empty answer.
func recorder(t testing.TB, got *[]nlMsg) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if m.Header.Flags&netlink.Dump != 0 {
				return nil, nil
			}
			if fastPathTypes[uint16(m.Header.Type)] {
				*got = append(*got, nlMsg{uint16(m.Header.Type), append([]byte(nil), m.Data...)})
			}
		}
		return req, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// attrsOf returns a message's top-level attributes by type (flags cleared).
func attrsOf(t *testing.T, m nlMsg) map[uint16][]byte {
	t.Helper()
	as, err := netlink.UnmarshalAttributes(m.body[4:])
	if err != nil {
		t.Fatal(err)
	}
	r := map[uint16][]byte{}
	for _, a := range as {
		r[a.Type&^netlink.Nested] = a.Data
	}
	return r
}

func nameOf(t *testing.T, m nlMsg, attr uint16) string {
	return strings.TrimRight(string(attrsOf(t, m)[attr]), "\x00")
}

// installFastPath records what Install sends for a plan with the fast path,
// keeping only the messages for table pptpgw (not the probe's scratch
// table).
func installFastPath(t *testing.T) []nlMsg {
	t.Helper()
	var got []nlMsg
	in, err := InstallConn(recorder(t, &got), Plan{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: true,
		QueueImpl: QueueNative, GREPath: GREPathKernel})
	if err != nil {
		t.Fatal(err)
	}
	if !in.KernelGRE {
		t.Fatal("gre_path kernel: the fast path was not installed")
	}
	var ours []nlMsg
	for _, m := range got {
		if nameOf(t, m, 1) == "pptpgw" { // NFTA_{SET,RULE,SET_ELEM_LIST}_TABLE
			ours = append(ours, m)
		}
	}
	return ours
}

// The maps: what the kernel uses is nft's, attribute by attribute. Left out
// on purpose: the key type tag (nft's typeof gives the call ID the integer
// type, 0x71c4; the daemon inet_service, 0x71cd, so that `nft list` can
// print the maps without typeof userdata), nft's typeof userdata, and the
// set IDs within the batch. The counter expression is nft's by content:
// google/nftables encodes its empty data attribute with another type, which
// the kernel ignores (the netns tests read the counters back).
func TestGoldenFastPathSets(t *testing.T) {
	var nft, ours []nlMsg
	for _, m := range readGoldenFastPath(t) {
		if m.typ == newSetType {
			nft = append(nft, m)
		}
	}
	for _, m := range installFastPath(t) {
		if m.typ == newSetType {
			ours = append(ours, m)
		}
	}
	if len(nft) != 2 || len(ours) != 2 {
		t.Fatalf("%d NEWSET from nft, %d from Install; want 2 each", len(nft), len(ours))
	}
	for i := range nft {
		g, o := attrsOf(t, nft[i]), attrsOf(t, ours[i])
		for _, a := range []uint16{unix.NFTA_SET_TABLE, unix.NFTA_SET_NAME, unix.NFTA_SET_FLAGS, unix.NFTA_SET_KEY_LEN,
			unix.NFTA_SET_DATA_TYPE, unix.NFTA_SET_DATA_LEN} {
			if !bytes.Equal(g[a], o[a]) {
				t.Errorf("set %s attribute %d: got %x, nft %x", nameOf(t, nft[i], 2), a, o[a], g[a])
			}
		}
		for a := range o {
			switch a {
			case unix.NFTA_SET_TABLE, unix.NFTA_SET_NAME, unix.NFTA_SET_FLAGS, unix.NFTA_SET_KEY_TYPE, unix.NFTA_SET_KEY_LEN,
				unix.NFTA_SET_DATA_TYPE, unix.NFTA_SET_DATA_LEN, unix.NFTA_SET_ID, nftaSetExpr:
			default:
				t.Errorf("set %s: attribute %d that nft does not send", nameOf(t, nft[i], 2), a)
			}
		}
		if got, want := binary.BigEndian.Uint32(o[unix.NFTA_SET_KEY_TYPE]), uint32(0x71cd); got != want {
			t.Errorf("key type %#x, want %#x (ipv4_addr . ipv4_addr . inet_service)", got, want)
		}
		for name, e := range map[string][]byte{"nft": g[nftaSetExpr], "ours": o[nftaSetExpr]} {
			ex, err := netlink.UnmarshalAttributes(e)
			if err != nil || len(ex) == 0 || ex[0].Type != unix.NFTA_EXPR_NAME || string(ex[0].Data) != "counter\x00" {
				t.Errorf("%s: set expression %x is not a counter", name, e)
			}
			for _, a := range ex[1:] {
				if len(a.Data) != 0 {
					t.Errorf("%s: counter carries data %x", name, a.Data)
				}
			}
		}
	}
}

// Element changes: the element lists are nft's byte for byte (keys, data,
// padding); table and map names too.
func TestGoldenFastPathElements(t *testing.T) {
	var nft []nlMsg
	for _, m := range readGoldenFastPath(t) {
		if m.typ == newSetElemType || m.typ == delSetElemType {
			nft = append(nft, m)
		}
	}
	var got []nlMsg
	m, err := NewGREMaps("pptpgw", 0)
	if err != nil {
		t.Fatal(err)
	}
	m.conn = recorder(t, &got)
	inside, peer, pub := [4]byte{10, 0, 0, 2}, [4]byte{198, 51, 100, 7}, [4]byte{203, 0, 113, 1}
	ko := conntrack.OutKey{InsideIP: inside, PeerIP: peer, PeerCallID: 5}
	ki := conntrack.InKey{PublicIP: pub, PeerIP: peer, OutsideCallID: 7}
	if err := m.Update(nil, nil, []conntrack.GREOut{{Key: ko, OutData: conntrack.OutData{PublicIP: pub}}},
		[]conntrack.GREIn{{Key: ki, InData: conntrack.InData{InsideIP: inside, InsideCallID: 9}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Update([]conntrack.OutKey{ko}, []conntrack.InKey{ki}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(nft) != 4 || len(got) != 4 {
		t.Fatalf("%d element messages from nft, %d from Update; want 4 each", len(nft), len(got))
	}
	for i := range nft {
		g, o := attrsOf(t, nft[i]), attrsOf(t, got[i])
		if nft[i].typ != got[i].typ {
			t.Errorf("message %d: type %#x, nft %#x", i, got[i].typ, nft[i].typ)
		}
		for _, a := range []uint16{unix.NFTA_SET_ELEM_LIST_TABLE, unix.NFTA_SET_ELEM_LIST_SET, unix.NFTA_SET_ELEM_LIST_ELEMENTS} {
			if !bytes.Equal(g[a], o[a]) {
				t.Errorf("message %d attribute %d: got %x, nft %x", i, a, o[a], g[a])
			}
		}
	}
}

// The rules: outbound byte for byte nft's; inbound, which nft cannot
// write, expression by expression from nft's reference rules.
func TestGoldenFastPathRules(t *testing.T) {
	var nft []ruleMsg
	for _, m := range readGoldenFastPath(t) {
		if m.typ == newRuleType {
			nft = append(nft, decodeRule(t, fastPathComparable(t, m.body)))
		}
	}
	if len(nft) != 4 {
		t.Fatalf("%d rules in golden-fastpath.hex, want 4", len(nft))
	}
	var out, in []ruleMsg
	for _, m := range installFastPath(t) {
		if m.typ != newRuleType {
			continue
		}
		r := decodeRule(t, fastPathComparable(t, m.body))
		if r.exprs[len(r.exprs)-1].name != "immediate" { // the fast path ends in accept
			continue
		}
		switch r.chain {
		case ChainQueuePostrouting:
			out = append(out, r)
		case ChainQueuePrerouting:
			in = append(in, r)
		}
	}
	if len(out) != 1 || len(in) != 1 {
		t.Fatalf("%d outbound and %d inbound fast-path rules, want 1 each", len(out), len(in))
	}
	if !bytes.Equal(out[0].body, nft[0].body) {
		t.Errorf("outbound rule differs from nft's:\n%s", closest(nft[:1], out[0]))
	}
	ref, daddr, key := nft[1], nft[2], nft[3]
	// nft's inbound reference: 7 match expressions, meta l4proto + cmp (a
	// dependency of dnat's port), 3 loads, the lookup, nat.
	want := append([]exprAttr{}, ref.exprs[:7]...)
	want = append(want, ref.exprs[9:13]...)
	want = append(want, daddr.exprs[1])
	want = append(want, withSreg(t, key.exprs[1], 9))
	want = append(want, out[0].exprs[len(out[0].exprs)-1]) // accept
	if len(want) != len(in[0].exprs) {
		t.Fatalf("inbound rule [%s], want %d expressions", in[0].exprNames(), len(want))
	}
	for i := range want {
		if !bytes.Equal(want[i].raw, in[0].exprs[i].raw) {
			t.Errorf("inbound expression %d %s:\n got %x\nwant %x", i, in[0].exprs[i].name, in[0].exprs[i].raw, want[i].raw)
		}
	}
}

// withSreg is a payload write expression with its source register changed.
func withSreg(t *testing.T, e exprAttr, reg uint32) exprAttr {
	t.Helper()
	b := append([]byte(nil), e.raw...)
	// NFTA_PAYLOAD_SREG is the first data attribute of a write: len 8,
	// type 1, value (big endian). Find it by its header bytes.
	hdr := []byte{8, 0, unix.NFTA_PAYLOAD_SREG, 0}
	i := bytes.Index(b, hdr)
	if i < 0 {
		t.Fatalf("no sreg in %x", b)
	}
	binary.BigEndian.PutUint32(b[i+4:], reg)
	return exprAttr{e.name, b}
}

// nftaSetExpr is NFTA_SET_EXPR (linux/netfilter/nf_tables.h), which x/sys
// does not name.
const nftaSetExpr = 17

// fastPathComparable rewrites the two harmless encoding differences in the
// fast path's rules so that the rest compares byte for byte:
//
//   - nft sends NFTA_BITWISE_OP = NFT_BITWISE_BOOL; google/nftables leaves
//     it out, which the kernel (nft_bitwise_init) reads as the same. A zero
//     one is dropped.
//   - a lookup names its map and also carries the map's ID within the
//     batch, which depends on what else the batch holds (nft: 1; Install:
//     later, after the probe's). The ID is zeroed; the name is compared.
func fastPathComparable(t *testing.T, body []byte) []byte {
	t.Helper()
	return mapExprData(t, body, func(name string, data []netlink.Attribute) []netlink.Attribute {
		kept := data[:0]
		for _, a := range data {
			switch {
			case name == "bitwise" && a.Type == 6 /* NFTA_BITWISE_OP */ && bytes.Equal(a.Data, []byte{0, 0, 0, 0}):
				continue
			case name == "lookup" && a.Type == unix.NFTA_LOOKUP_SET_ID:
				a.Data = []byte{0, 0, 0, 0}
			}
			kept = append(kept, a)
		}
		return kept
	})
}

// Elements read back from the kernel decode to what was written, and any
// bytes decode without a panic (wrong lengths are skipped).
func FuzzGREElementDecode(f *testing.F) {
	f.Add([]byte{10, 0, 0, 2, 198, 51, 100, 7, 0, 5, 0, 0}, []byte{203, 0, 113, 1})
	f.Add([]byte{203, 0, 113, 1, 198, 51, 100, 7, 0, 7, 0, 0}, []byte{10, 0, 0, 2, 0, 9, 0, 0})
	f.Add([]byte{1, 2, 3}, []byte{})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		el := nftables.SetElement{Key: key, Val: val}
		if o, ok := decodeOut(el); ok {
			back := outElems([]conntrack.GREOut{o})[0]
			if !bytes.Equal(back.Key[:10], key[:10]) || !bytes.Equal(back.Val, val) {
				t.Fatalf("out element %x:%x decodes to %+v, which encodes to %x:%x", key, val, o, back.Key, back.Val)
			}
		}
		if i, ok := decodeIn(el); ok {
			back := inElems([]conntrack.GREIn{i})[0]
			if !bytes.Equal(back.Key[:10], key[:10]) || !bytes.Equal(back.Val[:6], val[:6]) {
				t.Fatalf("in element %x:%x decodes to %+v, which encodes to %x:%x", key, val, i, back.Key, back.Val)
			}
		}
	})
}

// A reload keeps the fast path as Install resolved it: Apply's batch
// declares both maps again (an existing map keeps its elements) whatever
// the reloaded configuration's gre_path says (it cannot change while
// running). Before, the reload's plan had the fast path unresolved, and
// every reload deleted the maps and their rules: GRE went back to the
// queue and what the elements had counted since the last read was lost
// (testbed TestGatewayReloadWhileGREFlows: 751 of 1005 packets counted).
func TestApplyKeepsFastPath(t *testing.T) {
	var got []nlMsg
	in, err := InstallConn(recorder(t, &got), Plan{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: true,
		QueueImpl: QueueNative, GREPath: GREPathKernel})
	if err != nil {
		t.Fatal(err)
	}
	for _, gp := range []string{"", GREPathAuto, GREPathKernel} {
		got = got[:0]
		if err := in.Apply(Plan{Table: "pptpgw", WAN: "wan0", Queue: 47, FailOpen: true, GREPath: gp}); err != nil {
			t.Fatal(err)
		}
		maps := 0
		for _, m := range got {
			if m.typ == newSetType && nameOf(t, m, 1) == "pptpgw" {
				if n := nameOf(t, m, 2); n == SetGREOut || n == SetGREIn {
					maps++
				}
			}
		}
		if maps != 2 {
			t.Errorf("reload with gre_path %q: the batch declares %d of the fast path's 2 maps", gp, maps)
		}
	}
}

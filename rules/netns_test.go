package rules

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/vishvananda/netns"

	"pptpgw/internal/nstest"
)

// testNetns creates a fresh named network namespace with a random name and
// returns its name and an open handle; both are cleaned up with the test.
func testNetns(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft(8) to inspect the ruleset: apt-get install nftables")
	}
	var r [2]byte
	rand.Read(r[:])
	name := "pgr" + hex.EncodeToString(r[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return name, h
}

func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

func nsListTable(ns, table string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", table).CombinedOutput()
	return string(out), err
}

func TestInstallNetns(t *testing.T) {
	ns, h := testNetns(t)
	// An unrelated table that must survive everything we do.
	nsRun(t, ns, "nft", "add table ip other; add chain ip other c { type filter hook prerouting priority 0; }; add rule ip other c ip protocol gre counter")
	// A stale table of ours, as a crashed run would leave it.
	nsRun(t, ns, "nft", "add table ip pgt; add chain ip pgt stale_chain { type filter hook input priority 0; }")

	for _, tc := range []struct {
		name string
		plan Plan
		want []string
		not  []string
	}{
		{
			name: "defaults",
			plan: Plan{Table: "pgt", WAN: "wan0", LAN: []string{"lan0"}, Queue: 47, FailOpen: true, MSS: MSSClamp{Mode: MSSAuto}},
			want: []string{
				"chain raw_prerouting", "type filter hook prerouting priority raw", "ip protocol gre notrack",
				"chain raw_output", "type filter hook output priority raw",
				"chain queue_prerouting", "type filter hook prerouting priority -50",
				"chain queue_postrouting", "type filter hook postrouting priority -50",
				"ip protocol gre iifname \"wan0\" queue num 47\n",
				`tcp dport 1723 iifname "wan0" queue num 47 bypass`, `tcp sport 1723 iifname "wan0" queue num 47 bypass`,
				"ip protocol gre oifname \"wan0\" queue num 47\n",
				`tcp dport 1723 oifname "wan0" queue num 47 bypass`, `tcp sport 1723 oifname "wan0" queue num 47 bypass`,
				"tcp flags syn fib saddr type != local tcp option maxseg size set rt mtu",
				`oifname "wan0" masquerade`,
			},
			not: []string{"stale_chain", "snat", "dnat", "queue_output", "hook forward"},
		},
		{
			name: "snat-forward-fixedmss-failclosed",
			plan: Plan{Table: "pgt", WAN: "wan0", Queue: 5, FailOpen: false, MSS: MSSClamp{Mode: MSSFixed, Value: 1400},
				PublicAddr: netip.MustParseAddr("203.0.113.7"),
				Forwards:   []Forward{{Port: 1723, To: "10.0.1.5"}, {Port: 1724, To: "10.0.1.6"}}},
			want: []string{
				`oifname "wan0" snat to 203.0.113.7`,
				`iifname "wan0" tcp dport 1723 dnat to 10.0.1.5`,
				`iifname "wan0" tcp dport 1724 dnat to 10.0.1.6:1723`,
				"tcp flags syn fib saddr type != local tcp option maxseg size set 1400",
				"queue num 5\n",
			},
			not: []string{"masquerade", "bypass", "rt mtu"},
		},
		{
			name: "mss-off",
			plan: Plan{Table: "pgt", WAN: "wan0", Queue: 47, FailOpen: true, MSS: MSSClamp{Mode: MSSOff}},
			want: []string{"masquerade"},
			not:  []string{"maxseg", "fib", "hook forward"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.plan.NetNS = int(h)
			in, err := Install(tc.plan)
			if err != nil {
				t.Fatalf("Install: %v", err)
			}
			t.Logf("queue implementation: %s, replaced stale: %v", in.QueueImpl, in.ReplacedStale)
			if !in.ReplacedStale {
				t.Errorf("ReplacedStale = false, but table pgt existed before")
			}
			out, err := nsListTable(ns, "pgt")
			if err != nil {
				t.Fatalf("nft list: %v: %s", err, out)
			}
			norm, hasQueue := comparable(out)
			checkQueueTargets(t, h, tc.plan, in.QueueImpl)
			for _, w := range tc.want {
				if !hasQueue && queueStmtRE.MatchString(w) {
					continue // checked by checkQueueTargets
				}
				if !strings.Contains(norm, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(norm, n) {
					t.Errorf("ruleset has %q:\n%s", n, out)
				}
			}
			// Leave a table behind for the next subtest to replace.
			if tc.name != "mss-off" {
				return
			}
			if err := in.Remove(); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if out, err := nsListTable(ns, "pgt"); err == nil {
				t.Errorf("table still there after Remove:\n%s", out)
			}
			if err := in.Remove(); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
	if out, err := nsListTable(ns, "other"); err != nil || !strings.Contains(out, "ip protocol gre counter") {
		t.Errorf("unrelated table damaged: %v\n%s", err, out)
	}
	if out := nsRun(t, ns, "nft", "list", "tables"); strings.Contains(out, "_probe") {
		t.Errorf("probe table left behind:\n%s", out)
	}
}

// normalizeQueue rewrites the spellings nft versions use for a queue
// statement ("queue flags bypass to 47", "queue to 47") to the one nft 1.0.6
// prints for both the native expression and the xtables target
// ("queue num 47 bypass"). Where nft cannot translate the xtables target
// (libxt_NFQUEUE.so, from Debian's iptables package, is missing) it prints
// the matches alone and "XT target NFQUEUE not found"; then queue statements
// are dropped from the text on both sides and checkQueueTargets verifies the
// targets from the kernel's netlink dump instead.
var queueRE = regexp.MustCompile(`queue (flags bypass )?to (\d+)`)

func normalizeQueue(s string) string {
	return queueRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := queueRE.FindStringSubmatch(m)
		if sm[1] != "" {
			return "queue num " + sm[2] + " bypass"
		}
		return "queue num " + sm[2]
	})
}

const xtUntranslated = "XT target NFQUEUE not found"

var queueStmtRE = regexp.MustCompile(` ?queue num \d+( bypass)?`)

// comparable returns nft's listing in the form tests compare: normalized
// queue spelling, and without queue statements if nft could not print them.
func comparable(nftOut string) (text string, hasQueue bool) {
	text = normalizeQueue(nftOut)
	if strings.Contains(nftOut, xtUntranslated) {
		return queueStmtRE.ReplaceAllString(strings.ReplaceAll(text, xtUntranslated, ""), ""), false
	}
	return text, true
}

// checkQueueTargets reads the queue chains back over netlink (independent of
// nft's libxtables) and checks each holds its rules ending in the queue
// statement for num/bypass, whatever the implementation, after the MSS
// clamp (an exthdr write) that queue_postrouting starts with unless it is
// off.
func checkQueueTargets(t *testing.T, h netns.NsHandle, p Plan, impl QueueImpl) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: p.Table}
	mss := 0
	if p.MSS.Mode != MSSOff {
		mss = 1
	}
	for chain, clamps := range map[string]int{ChainQueuePrerouting: 0, ChainQueuePostrouting: mss} {
		rs, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
		if err != nil {
			t.Fatalf("GetRules %s: %v", chain, err)
		}
		rs = withoutFastPath(rs) // issue 12: the GRE fast path's rule (nft_fastpath_test.go checks it)
		if len(rs) != clamps+3 {
			t.Errorf("%s: %d rules, want %d", chain, len(rs), clamps+3)
			continue
		}
		for i, r := range rs[:clamps] {
			if w, ok := r.Exprs[len(r.Exprs)-1].(*expr.Exthdr); !ok || w.Op != expr.ExthdrOpTcpopt || w.SourceRegister == 0 {
				t.Errorf("%s rule %d: last expression %T, want the MSS clamp (a TCP option write)", chain, i, r.Exprs[len(r.Exprs)-1])
			}
		}
		rs = rs[clamps:]
		for i, r := range rs {
			last := r.Exprs[len(r.Exprs)-1]
			bypass := p.FailOpen && i > 0 // rule 0 queues GRE, which never bypasses
			switch e := last.(type) {
			case *expr.Target:
				info, _ := e.Info.(*xt.Unknown)
				if impl != QueueXT || e.Name != "NFQUEUE" || e.Rev != 3 || info == nil ||
					!bytes.Equal(*info, nfqInfo(p, bypass)) {
					t.Errorf("%s rule %d: target %s rev %d info %v, want NFQUEUE rev 3 %x", chain, i, e.Name, e.Rev, e.Info, nfqInfo(p, bypass))
				}
			case *expr.Queue:
				if impl != QueueNative || e.Num != p.Queue || e.Total != max(p.Queues, 1) || (e.Flag&expr.QueueFlagBypass != 0) != bypass {
					t.Errorf("%s rule %d: queue %+v, want num %d bypass %v", chain, i, e, p.Queue, bypass)
				}
			default:
				t.Errorf("%s rule %d: last expression %T, want a queue statement", chain, i, last)
			}
		}
	}
}

// The ruleset CONFIG.md shows for example.yaml is what Install really
// programs (modulo nft's comment lines and blank lines).
func TestConfigDocRulesetNetns(t *testing.T) {
	ns, h := testNetns(t)
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlan(c)
	p.NetNS = int(h)
	in, err := Install(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	out, err := nsListTable(ns, p.Table)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(doc), "## What the daemon installs")
	_, block, _ := strings.Cut(after, "```\n")
	block, _, _ = strings.Cut(block, "```")
	got, hasQueue := comparable(out)
	if !hasQueue {
		t.Logf("nft cannot print the NFQUEUE target (install iptables for libxt_NFQUEUE.so); comparing without queue statements")
		block = queueStmtRE.ReplaceAllString(block, "")
	}
	clean := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			l = strings.TrimSpace(l)
			if l != "" && !strings.HasPrefix(l, "#") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	checkQueueTargets(t, h, p, in.QueueImpl)
	if got, want := clean(got), clean(block); got != want {
		t.Errorf("CONFIG.md ruleset differs from the installed one:\n--- installed\n%s\n--- CONFIG.md\n%s", got, want)
	}
}

func TestResolveNetns(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "add", "pgw0", "type", "veth", "peer", "name", "pgw0p") // no dummy module here
	nsRun(t, ns, "ip", "link", "add", "pgl0", "type", "veth", "peer", "name", "pgl0p") // no dummy module here
	nsRun(t, ns, "ip", "link", "add", "pgl1", "type", "veth", "peer", "name", "pgl1p") // no dummy module here
	c := Default()
	c.WAN, c.LAN = "pgw0", []string{"pgl0", "pgl1"}
	var r *Resolved
	var err error
	inNetns(t, h, func() { r, err = Resolve(c) })
	if err == nil || !errors.Is(err, ErrNoIPv4) {
		t.Fatalf("WAN without address: Resolve = %+v, %v", r, err)
	}
	nsRun(t, ns, "ip", "addr", "add", "2001:db8::5/64", "dev", "pgw0")
	nsRun(t, ns, "ip", "addr", "add", "203.0.113.5/24", "dev", "pgw0")
	inNetns(t, h, func() { r, err = Resolve(c) })
	if err != nil {
		t.Fatal(err)
	}
	idx := func(name string) uint32 {
		var i *net.Interface
		inNetns(t, h, func() { i, err = net.InterfaceByName(name) })
		if err != nil {
			t.Fatal(err)
		}
		return uint32(i.Index)
	}
	if r.PublicIP.String() != "203.0.113.5" || r.WANIndex != idx("pgw0") || len(r.LANIndex) != 2 ||
		r.LANIndex[0] != idx("pgl0") || r.LANIndex[1] != idx("pgl1") {
		t.Errorf("Resolve = %+v", r)
	}
	c.PublicAddress = "198.51.100.9"
	inNetns(t, h, func() { r, err = Resolve(c) })
	if err != nil || r.PublicIP.String() != "198.51.100.9" {
		t.Errorf("with public_address: %+v, %v", r, err)
	}
	c.LAN = []string{"pgl0", "pgnope9"}
	inNetns(t, h, func() { r, err = Resolve(c) })
	if err == nil || err.Error() != `lan interface "pgnope9": no such interface` {
		t.Errorf("unknown lan: %v", err)
	}
	c.WAN = "pgnope8"
	inNetns(t, h, func() { r, err = Resolve(c) })
	if err == nil || err.Error() != `wan interface "pgnope8": no such interface` {
		t.Errorf("unknown wan: %v", err)
	}
}

func TestEnableIPForwardNetns(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	var err error
	inNetns(t, h, func() { err = EnableIPForward() })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(nsRun(t, ns, "sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
		t.Errorf("ip_forward in the netns = %s after EnableIPForward", got)
	}
}

// ProbeNativeQueue agrees with nft(8) about whether the kernel has the queue
// expression, and leaves nothing behind.
func TestProbeNativeQueueNetns(t *testing.T) {
	ns, h := testNetns(t)
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	native, err := ProbeNativeQueue(c, "pgprobe")
	if err != nil {
		t.Fatal(err)
	}
	nftOK := exec.Command("ip", "netns", "exec", ns, "nft",
		"add table ip pgq; add chain ip pgq c; add rule ip pgq c queue num 1; delete table ip pgq").Run() == nil
	if native != nftOK {
		t.Errorf("ProbeNativeQueue = %v, nft accepts a queue rule: %v", native, nftOK)
	}
	t.Logf("kernel has native queue expression: %v", native)
	if out := nsRun(t, ns, "nft", "list", "tables"); strings.TrimSpace(out) != "" {
		t.Errorf("probe left tables behind:\n%s", out)
	}
}

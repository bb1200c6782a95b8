package qos

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"pptpgw/internal/nstest"
)

// The tc side of the shaping: the leaf qdisc messages this package encodes
// itself are compared byte for byte with what tc(8) sends for the same
// command (recorded with strace by -capture into testdata/golden-tc.hex);
// the HTB root and classes, which vishvananda/netlink encodes, are compared
// with the same tree built by tc(8), as the kernel reports both.

var capture = flag.Bool("capture", false, "re-record testdata/golden-tc.hex with tc and strace")

// goldenLeaves are the leaf commands recorded: tc's arguments and ours.
var goldenLeaves = []struct {
	args   []string // after "tc qdisc replace dev IF"
	parent uint32
	handle uint32
	kind   string
	ceil   Rate
}{
	{[]string{"parent", "1:10", "handle", "100:", "pfifo", "limit", "132"}, ClassID(0), leafHandle(0), LeafPfifo, 20e6},
	{[]string{"parent", "1:20", "handle", "101:", "pfifo", "limit", "8"}, ClassID(1), leafHandle(1), LeafPfifo, 64e3},
	{[]string{"parent", "1:30", "handle", "102:", "fq_codel"}, ClassID(2), leafHandle(2), LeafFQCodel, 1e6},
	{[]string{"parent", "1:30", "handle", "102:", "sfq"}, ClassID(2), leafHandle(2), LeafSFQ, 1e6},
}

// normalize zeroes what differs from run to run: the netlink header's
// sequence number and port, and the tcmsg's interface index.
func normalize(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) >= unix.NLMSG_HDRLEN+8 {
		clear(b[8:16])                                      // nlmsg_seq, nlmsg_pid
		clear(b[unix.NLMSG_HDRLEN+4 : unix.NLMSG_HDRLEN+8]) // tcm_ifindex
	}
	return b
}

func TestGoldenLeafQdisc(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "golden-tc.hex"))
	if err != nil {
		t.Fatal(err)
	}
	var golden [][]byte
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && l[0] != '#' {
			g, err := hex.DecodeString(l)
			if err != nil {
				t.Fatal(err)
			}
			golden = append(golden, g)
		}
	}
	if len(golden) != len(goldenLeaves) {
		t.Fatalf("%d recorded messages, want %d", len(golden), len(goldenLeaves))
	}
	for i, g := range goldenLeaves {
		got := normalize(LeafQdiscMsg(7, g.parent, g.handle, g.kind, g.ceil).Serialize())
		if !bytes.Equal(got, normalize(golden[i])) {
			t.Errorf("tc qdisc replace %s:\n got %x\n tc  %x", strings.Join(g.args, " "), got, normalize(golden[i]))
		}
	}
}

// straceHex is one line of strace's hex dump (as rules' golden test reads it).
var straceHex = regexp.MustCompile(`^\s*(?:\d+\s+)?\| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})`)

func TestCaptureGoldenTC(t *testing.T) {
	if !*capture {
		t.Skip("recording only with -capture")
	}
	for _, tool := range []string{"tc", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("-capture needs %s", tool)
		}
	}
	nstest.Run(t, func() {
		name := vethPair(t)
		var lines []string
		for _, g := range goldenLeaves {
			log := filepath.Join(t.TempDir(), "strace")
			args := append([]string{"-f", "-o", log, "-e", "trace=sendmsg", "-e", "write=all", "tc", "qdisc", "replace", "dev", name}, g.args...)
			out, _ := exec.Command("strace", args...).CombinedOutput() // the parent class does not exist: tc fails after sending
			t.Logf("tc %v: %s", g.args, out)
			raw, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			var msg []byte
			for _, l := range strings.Split(string(raw), "\n") {
				if m := straceHex.FindStringSubmatch(l); m != nil {
					h, _ := hex.DecodeString(strings.ReplaceAll(m[1], " ", ""))
					msg = append(msg, h...)
				}
			}
			if len(msg) < unix.NLMSG_HDRLEN || int(binary.NativeEndian.Uint32(msg)) > len(msg) || binary.NativeEndian.Uint16(msg[4:]) != unix.RTM_NEWQDISC {
				t.Fatalf("no RTM_NEWQDISC captured for %v", g.args)
			}
			lines = append(lines, hex.EncodeToString(msg[:binary.NativeEndian.Uint32(msg)]))
		}
		ver, _ := exec.Command("tc", "-V").Output()
		s := fmt.Sprintf("# %s: tc qdisc replace dev IF <args> for each goldenLeaves entry (tc_golden_test.go)\n"+
			"# recorded by TestCaptureGoldenTC -capture; one RTM_NEWQDISC message per line\n%s\n",
			strings.TrimSpace(string(ver)), strings.Join(lines, "\n"))
		if err := os.WriteFile(filepath.Join("testdata", "golden-tc.hex"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// vethPair creates an up veth pair with a random name in the current
// namespace and returns one end's name.
func vethPair(t *testing.T) string {
	t.Helper()
	var b [2]byte
	_, _ = rand.Read(b[:])
	a, z := "qa"+hex.EncodeToString(b[:]), "qz"+hex.EncodeToString(b[:])
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: z}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{a, z} {
		l, _ := netlink.LinkByName(n)
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// The HTB tree the Shaper builds and the one tc(8) builds from the same
// numbers look the same to the kernel: root default, and each class's rate,
// ceil, burst, cburst, quantum and prio.
func TestHTBMatchesTC(t *testing.T) {
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs tc(8) as the reference")
	}
	nstest.Run(t, func() {
		ours := vethPair(t)
		theirs := "qz" + ours[2:]
		tr := Tree{Interface: ours, Rate: 20e6, Default: 1, Leaves: []Leaf{
			{Index: 0, Name: "interactive", Priority: 1, Rate: 2e6, Ceil: 20e6},
			{Index: 1, Name: "bulk", Priority: 7, Rate: 18e6, Ceil: 20e6, Burst: 30 << 10, Quantum: 3000},
		}}
		if err := NewShaper(nil).Apply([]Tree{tr}); err != nil {
			t.Fatal(err)
		}
		for _, c := range [][]string{
			{"qdisc", "add", "dev", theirs, "root", "handle", "1:", "htb", "default", "20", "r2q", "10"},
			{"class", "add", "dev", theirs, "parent", "1:", "classid", "1:1", "htb", "rate", "20mbit", "ceil", "20mbit", "quantum", "25000"},
			{"class", "add", "dev", theirs, "parent", "1:1", "classid", "1:10", "htb", "rate", "2mbit", "ceil", "20mbit", "prio", "1", "quantum", "2500"},
			{"class", "add", "dev", theirs, "parent", "1:1", "classid", "1:20", "htb", "rate", "18mbit", "ceil", "20mbit", "prio", "7",
				"quantum", "3000", "burst", "30kb", "cburst", "30kb"},
		} {
			if out, err := exec.Command("tc", c...).CombinedOutput(); err != nil {
				t.Fatalf("tc %v: %v: %s", c, err, out)
			}
		}
		dump := func(name string) (uint32, map[uint32]netlink.HtbClass) {
			l, _ := netlink.LinkByName(name)
			var def uint32
			qs, _ := netlink.QdiscList(l)
			for _, q := range qs {
				if h, ok := q.(*netlink.Htb); ok {
					def = h.Defcls
				}
			}
			cs, err := netlink.ClassList(l, RootHandle)
			if err != nil {
				t.Fatal(err)
			}
			m := map[uint32]netlink.HtbClass{}
			for _, c := range cs {
				h := *c.(*netlink.HtbClass)
				h.Statistics, h.LinkIndex = nil, 0
				m[h.Handle] = h
			}
			return def, m
		}
		d1, ourCls := dump(ours)
		d2, tcCls := dump(theirs)
		if d1 != d2 || d1 != 0x20 {
			t.Errorf("default: ours %#x, tc's %#x", d1, d2)
		}
		if len(ourCls) != 3 || len(tcCls) != 3 {
			t.Fatalf("classes: ours %d, tc's %d", len(ourCls), len(tcCls))
		}
		for id, c := range tcCls {
			o := ourCls[id]
			// Buffers are in scheduler ticks: allow one tick of rounding.
			near := func(a, b uint32) bool { return a == b || a+1 == b || b+1 == a }
			if o.Rate != c.Rate || o.Ceil != c.Ceil || o.Quantum != c.Quantum || o.Prio != c.Prio ||
				!near(o.Buffer, c.Buffer) || !near(o.Cbuffer, c.Cbuffer) || o.Parent != c.Parent {
				t.Errorf("class %x: ours %+v\n tc's %+v", id, o, c)
			}
		}
	})
}

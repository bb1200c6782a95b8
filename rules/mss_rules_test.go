package rules

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestMSSRulesConfig(t *testing.T) {
	c, err := Parse([]byte("wan: wan0\nlan: [lan0]\nmss_clamp:\n  default: 1400\n  rules:\n    - {dst: 10.99.0.0/16, mss: 1360}\n    - {interface: wan1, mss: 1452}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	m := c.MSSClamp
	if m.Mode != MSSFixed || m.Value != 1400 || m.Rules == nil || len(*m.Rules) != 2 || (*m.Rules)[1].Interface != "wan1" {
		t.Errorf("parsed %+v", m)
	}
	if p := NewPlan(c); p.MSS.Rules == nil || len(*p.MSS.Rules) != 2 {
		t.Errorf("plan MSS %+v", p.MSS)
	}
	// The scalar forms are unchanged; a mapping without default is auto.
	c, err = Parse([]byte("mss_clamp: {rules: []}\n"))
	if err != nil || c.MSSClamp.Mode != MSSAuto || c.MSSClamp.Rules == nil {
		t.Errorf("mss_clamp: {rules: []}: %+v %v", c.MSSClamp, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"mss_clamp: {rules: [{mss: 1300}]}", "mss_clamp.rules[0]: needs dst (a prefix) or interface"},
		{"mss_clamp: {rules: [{dst: 10.0.0.0/8, interface: a, mss: 1300}]}", "not both"},
		{"mss_clamp: {rules: [{dst: 10.0.0.0/8, mss: 20}]}", "mss_clamp.rules[0].mss: 20 out of range"},
		{"mss_clamp: {rules: [{dst: default, mss: 1300}]}", "matches everything"},
		{"mss_clamp: {default: sometimes}", "mss_clamp must be"},
		{"mss_clamp: {rules: [{dest: 10.0.0.0/8}]}", "unknown field \"dest\""},
	} {
		c, err := Parse([]byte("wan: wan0\nlan: [lan0]\n" + tc.yaml + "\n"))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// synMSS captures, with tcpdump in namespace ns on dev, the first SYN (ack
// false) or SYN-ACK (ack true) to or from TCP port while connect runs, and
// returns its MSS option.
func synMSS(t *testing.T, ns, dev string, port int, ack bool, connect func()) int {
	t.Helper()
	flt := fmt.Sprintf("tcp port %d and tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0", port)
	if ack {
		flt = fmt.Sprintf("tcp port %d and tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)", port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-nn", "-l", "-v",
		"--immediate-mode", "-c", "1", flt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() { // wait until it listens
		if strings.Contains(sc.Text(), "listening on") {
			break
		}
	}
	go io.Copy(io.Discard, stderr)
	connect()
	out, _ := io.ReadAll(stdout)
	m := regexp.MustCompile(`mss (\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("tcpdump on %s in %s (%s): no MSS seen: %s", dev, ns, flt, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestMSSRulesNetns: client -- lan0 [gateway] wan0 -- server (198.51.100.2
// and 192.0.2.2), wan1 -- server2 (203.0.113.2). Rules: interface wan1 ->
// 1300, dst 192.0.2.0/24 -> 1200, default 1400. SYNs captured behind the
// gateway carry each rule's MSS, SYN-ACKs captured at the client too, and a
// SYN whose MSS is already lower passes unchanged.
func TestMSSRulesNetns(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump: apt-get install tcpdump")
	}
	cns, ch := testNetns(t)
	gns, gh := testNetns(t)
	sns, sh := testNetns(t)
	s2ns, s2h := testNetns(t)
	nsRun(t, gns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", cns)
	nsRun(t, gns, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", sns)
	nsRun(t, gns, "ip", "link", "add", "wan1", "type", "veth", "peer", "name", "eth0", "netns", s2ns)
	for _, c := range []struct{ ns, dev, addr, via string }{
		{cns, "eth0", "10.62.0.2/24", "10.62.0.1"},
		{gns, "lan0", "10.62.0.1/24", ""},
		{gns, "wan0", "198.51.100.1/24", ""},
		{gns, "wan1", "203.0.113.1/24", ""},
		{sns, "eth0", "198.51.100.2/24", "198.51.100.1"},
		{s2ns, "eth0", "203.0.113.2/24", "203.0.113.1"},
	} {
		nsRun(t, c.ns, "ip", "addr", "add", c.addr, "dev", c.dev)
		nsRun(t, c.ns, "ip", "link", "set", c.dev, "up")
		if c.via != "" {
			nsRun(t, c.ns, "ip", "route", "add", "default", "via", c.via)
		}
	}
	nsRun(t, sns, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
	nsRun(t, gns, "ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.2")
	nsRun(t, gns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	c, err := Parse([]byte("wan: wan0\nlan: [lan0]\nmss_clamp:\n  default: 1400\n  rules:\n" +
		"    - {interface: wan1, mss: 1300}\n    - {dst: 192.0.2.0/24, mss: 1200}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	plan := NewPlan(c)
	plan.Table, plan.NetNS = "pgmssr", int(gh)
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })

	listen := func(h netns.NsHandle, addr string) {
		var l net.Listener
		inNetns(t, h, func() { l, err = net.Listen("tcp4", addr) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				a, err := l.Accept()
				if err != nil {
					return
				}
				a.Close()
			}
		}()
	}
	listen(sh, "0.0.0.0:5001")
	listen(s2h, "0.0.0.0:5001")
	dial := func(addr string, mss int) func() {
		return func() {
			inNetns(t, ch, func() {
				d := net.Dialer{Timeout: 5 * time.Second}
				if mss > 0 {
					d.Control = func(_, _ string, rc syscall.RawConn) error {
						return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss) })
					}
				}
				cn, err := d.Dial("tcp4", addr)
				if err != nil {
					t.Errorf("dial %s: %v", addr, err)
					return
				}
				cn.Close()
			})
		}
	}
	for _, tc := range []struct {
		name, capNS, addr string
		lowered           int // the client's own MSS, 0: from its MTU (1460)
		want              int
	}{
		{"default 1400", sns, "198.51.100.2:5001", 0, 1400},
		{"dst 192.0.2.0/24", sns, "192.0.2.2:5001", 0, 1200},
		{"interface wan1", s2ns, "203.0.113.2:5001", 0, 1300},
		{"interface wan1, lower already", s2ns, "203.0.113.2:5001", 900, 900},
	} {
		if got := synMSS(t, tc.capNS, "eth0", 5001, false, dial(tc.addr, tc.lowered)); got != tc.want {
			t.Errorf("%s: SYN behind the gateway has MSS %d, want %d", tc.name, got, tc.want)
		}
		if tc.lowered == 0 {
			// The server's SYN-ACK (MSS 1460) is clamped by the same rule
			// on its way back in.
			if got := synMSS(t, cns, "eth0", 5001, true, dial(tc.addr, 0)); got != tc.want {
				t.Errorf("%s: SYN-ACK at the client has MSS %d, want %d", tc.name, got, tc.want)
			}
		}
	}
}

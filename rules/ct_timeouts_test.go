package rules

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"pptpgw/internal/nstest"
)

const ctTimeoutsYAML = `wan: wan0
lan: [lan0]
conntrack_timeouts:
  tcp: {established: 1234s}
  udp: {unreplied: 7s, replied: 9s}
  gre: {unreplied: 33s, replied: 444s}
  rules:
    - {protocol: udp, dport: 53, udp: {unreplied: 55s, replied: 66s}}
    - {protocol: udp, dport: 53, dst: 192.0.2.1, udp: {replied: 99s}}
    - {protocol: tcp, dport: 2222, tcp: {established: 777s}}
`

func TestCtTimeoutPlan(t *testing.T) {
	c, err := Parse([]byte(ctTimeoutsYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	objs, rules := ctTimeoutPlan(c.ConntrackTimeouts, BuiltinKernelTimeoutBase())
	var names []string
	for _, r := range rules {
		if !regexp.MustCompile(`_[0-9a-f]{8}$`).MatchString(r.obj) {
			t.Errorf("object name %q does not end in its hash", r.obj)
		}
		names = append(names, r.obj[:len(r.obj)-9])
	}
	// Defaults first, then the rules last to first (the last set wins).
	if got := strings.Join(names, ","); got != "ct_tcp,ct_udp,ct_rule_2,ct_rule_1,ct_rule_0" {
		t.Errorf("rule order %s", got)
	}
	pol := map[string][]uint32{}
	for _, o := range objs {
		pol[o.base] = o.policy
	}
	// The same policy has the same name; another policy another name (a
	// reload that keeps objects then refers to a new one).
	again, _ := ctTimeoutPlan(c.ConntrackTimeouts, BuiltinKernelTimeoutBase())
	changed := c.ConntrackTimeouts
	changed.TCP.Established++
	other, _ := ctTimeoutPlan(changed, BuiltinKernelTimeoutBase())
	if again[0].name != objs[0].name || other[0].name == objs[0].name || other[1].name != objs[1].name {
		t.Errorf("names: %s, again %s, tcp changed %s (udp %s, %s)", objs[0].name, again[0].name, other[0].name, objs[1].name, other[1].name)
	}
	// Full policies: unset states from the base, set ones layered
	// default -> rule.
	if p := pol["ct_tcp"]; len(p) != 11 || p[2] != 1234 || p[0] != 120 || p[6] != 120 {
		t.Errorf("ct_tcp %v", p)
	}
	if p := pol["ct_rule_2"]; p[2] != 777 || p[3] != 120 {
		t.Errorf("ct_rule_2 %v", p)
	}
	if p := pol["ct_udp"]; len(p) != 2 || p[0] != 7 || p[1] != 9 {
		t.Errorf("ct_udp %v", p)
	}
	if p := pol["ct_rule_1"]; p[0] != 7 || p[1] != 99 {
		t.Errorf("ct_rule_1 %v (unreplied from udp:, replied from the rule)", p)
	}
	if p := pol["ct_rule_0"]; p[0] != 55 || p[1] != 66 {
		t.Errorf("ct_rule_0 %v", p)
	}
}

func TestCtTimeoutConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"conntrack_timeouts: {tcp: {established: -1s}}", "conntrack_timeouts.tcp.established: must be positive"},
		{"conntrack_timeouts: {udp: {replied: 1500ms}}", "conntrack_timeouts.udp.replied: 1.5s: the kernel counts whole seconds"},
		{"conntrack_timeouts: {rules: [{dport: 53, udp: {replied: 5s}}]}", "conntrack_timeouts.rules[0].protocol: required"},
		{"conntrack_timeouts: {rules: [{protocol: udp, tcp: {close: 5s}}]}", "conntrack_timeouts.rules[0].tcp: a udp rule takes udp: timeouts"},
		{"conntrack_timeouts: {rules: [{protocol: icmp, udp: {replied: 5s}}]}", "\"icmp\": must be tcp or udp"},
		{"conntrack_timeouts: {tcp: {establised: 5s}}", "unknown field \"establised\""},
		{"conntrack_timeouts: {gre: {replied: 9000h}}", "conntrack_timeouts.gre.replied: 9000h0m0s is longer than"},
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

// conntrackTimeout returns the remaining timeout (seconds) conntrack -L
// shows for the first entry matching args in namespace ns.
func conntrackTimeout(t *testing.T, ns string, args ...string) int {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "conntrack", "-L"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("conntrack -L %v: %v: %s", args, err, out)
	}
	m := regexp.MustCompile(`(?m)^(?:tcp|udp)\s+\d+\s+(\d+)\s`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("conntrack -L %v: no entry:\n%s", args, out)
	}
	t.Logf("conntrack -L %v: %s", args, strings.TrimSpace(string(out)))
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestCtTimeoutsNetns installs the table with conntrack_timeouts in a fresh
// namespace, opens an established TCP flow and DNS-like UDP exchanges over
// lo there, and reads the timeouts conntrack -L shows.
func TestCtTimeoutsNetns(t *testing.T) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("needs conntrack(8): apt-get install conntrack")
	}
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "set", "lo", "up")
	c, err := Parse([]byte(ctTimeoutsYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	plan := NewPlan(c)
	plan.Table = "pgct"
	plan.NetNS = int(h)
	plan.CtTimeoutBase = BuiltinKernelTimeoutBase()
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	if out, _ := nsListTable(ns, "pgct"); !regexp.MustCompile(`ct timeout set "ct_rule_0_[0-9a-f]{8}"`).MatchString(out) ||
		!regexp.MustCompile(`ct timeout ct_udp_[0-9a-f]{8} `).MatchString(out) {
		t.Fatalf("table lacks the ct timeouts:\n%s", out)
	}

	var tcpConn, udpConn net.Conn
	nstest.Do(t, int(h), func() {
		l, err := net.Listen("tcp4", "127.0.0.1:4444")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			if s, err := l.Accept(); err == nil {
				t.Cleanup(func() { s.Close() })
			}
		}()
		if tcpConn, err = net.Dial("tcp4", "127.0.0.1:4444"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tcpConn.Close() })
		// A DNS-like responder on 127.0.0.53:53 and one on another port.
		for _, port := range []string{"53", "5353"} {
			u, err := net.ListenPacket("udp4", "127.0.0.53:"+port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.Close() })
			go func() {
				b := make([]byte, 512)
				for {
					n, a, err := u.ReadFrom(b)
					if err != nil {
						return
					}
					u.WriteTo(b[:n], a)
				}
			}()
			if udpConn, err = net.Dial("udp4", "127.0.0.53:"+port); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { udpConn.Close() })
			udpConn.SetDeadline(time.Now().Add(5 * time.Second))
			udpConn.Write([]byte("query"))
			if _, err := udpConn.Read(make([]byte, 16)); err != nil {
				t.Fatal(err)
			}
		}
	})
	// Remaining seconds: at most the configured value, and well above the
	// kernel's default for the state (TCP established 432000 s: below
	// 1234; UDP 30/120 s: not within [45..66] nor [0..9]).
	if n := conntrackTimeout(t, ns, "-p", "tcp", "--dport", "4444", "--state", "ESTABLISHED"); n > 1234 || n < 1200 {
		t.Errorf("established TCP: timeout %d, want 1200..1234 (tcp.established: 1234s)", n)
	}
	if n := conntrackTimeout(t, ns, "-p", "udp", "--dport", "53"); n > 66 || n < 45 {
		t.Errorf("DNS-like UDP: timeout %d, want 45..66 (the rule: unreplied 55s, replied 66s; not udp: 7s/9s, not the kernel 30s/120s)", n)
	}
	if n := conntrackTimeout(t, ns, "-p", "udp", "--dport", "5353"); n > 9 {
		t.Errorf("other UDP: timeout %d, want <= 9 (udp.replied: 9s)", n)
	}
}

// TestGRESysctls sets the GRE sysctls in a fresh namespace and restores
// them on Close.
func TestGRESysctls(t *testing.T) {
	nstest.Run(t, func() {
		// conntrack's sysctls appear in a namespace once conntrack is used
		// there; the proc view follows the thread.
		p := filepath.Join(sysctlDir, SysctlGREUnreplied)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no %s in this namespace: %v", p, err)
		}
		read := func(n string) string {
			b, err := os.ReadFile(filepath.Join(sysctlDir, n))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(b))
		}
		u0, r0 := read(SysctlGREUnreplied), read(SysctlGREReplied)
		var s GRESysctls
		if err := s.Apply(GRETimeouts{Unreplied: 33 * time.Second, Replied: 444 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if read(SysctlGREUnreplied) != "33" || read(SysctlGREReplied) != "444" {
			t.Errorf("after Apply: %s, %s", read(SysctlGREUnreplied), read(SysctlGREReplied))
		}
		// A reload that drops replied: restored at once; unreplied moves.
		if err := s.Apply(GRETimeouts{Unreplied: 34 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if read(SysctlGREUnreplied) != "34" || read(SysctlGREReplied) != r0 {
			t.Errorf("after the second Apply: %s, %s (found %s)", read(SysctlGREUnreplied), read(SysctlGREReplied), r0)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if read(SysctlGREUnreplied) != u0 || read(SysctlGREReplied) != r0 {
			t.Errorf("after Close: %s, %s; want %s, %s", read(SysctlGREUnreplied), read(SysctlGREReplied), u0, r0)
		}
	})
}

func TestTimeoutReport(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(p, []byte(ctTimeoutsYAML+"timeouts: {hold: 200ms}\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]TimeoutLine{}
	for _, l := range TimeoutReport(c, BuiltinKernelTimeoutBase()) {
		got[l.Scope+"/"+l.Name] = l
	}
	for k, want := range map[string]string{
		"pptpgw/hold":                                          "200ms " + p + ":11",
		"pptpgw/gre_replied":                                   "3m0s default",
		"kernel tcp/established":                               "20m34s " + p + ":4 (ct timeout ct_tcp_dc052063)",
		"kernel tcp/time_wait":                                 "2m0s kernel built-in",
		"kernel udp/replied":                                   "9s " + p + ":5 (ct timeout ct_udp_7c81937e)",
		"kernel gre/replied":                                   "7m24s " + p + ":6 (sysctl nf_conntrack_gre_timeout_stream)",
		"kernel rule 0 (udp dport 53)/unreplied":               "55s " + p + ":8",
		"kernel rule 1 (udp dst 192.0.2.1 dport 53)/unreplied": "7s " + p + ":5",
		"kernel rule 2 (tcp dport 2222)/close":                 "10s kernel built-in",
	} {
		l, ok := got[k]
		if s := fmt.Sprintf("%s %s", l.Value, strings.TrimPrefix(l.Source, "config ")); !ok || s != want {
			t.Errorf("%s: %q, want %q", k, s, want)
		}
	}
}

// After a run killed with -9 (its GRESysctls never closed), the next run
// restores the values found before the killed one changed them.
func TestGRESysctlsAfterKill(t *testing.T) {
	nstest.Run(t, func() {
		if _, err := os.Stat(filepath.Join(sysctlDir, SysctlGREReplied)); err != nil {
			t.Skipf("no GRE sysctls in this namespace: %v", err)
		}
		read := func() string {
			b, _ := os.ReadFile(filepath.Join(sysctlDir, SysctlGREReplied))
			return strings.TrimSpace(string(b))
		}
		orig := read()
		state := filepath.Join(t.TempDir(), "sysctls")
		killed := GRESysctls{StatePath: state}
		if err := killed.Apply(GRETimeouts{Replied: 444 * time.Second}); err != nil {
			t.Fatal(err)
		}
		// killed is never closed. The next run:
		next := GRESysctls{StatePath: state}
		if err := next.Apply(GRETimeouts{Replied: 555 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if read() != "555" {
			t.Fatalf("sysctl %s, want 555", read())
		}
		if err := next.Close(); err != nil {
			t.Fatal(err)
		}
		if read() != orig {
			t.Errorf("after the next run's Close: %s, want the original %s", read(), orig)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("state file left after Close: %v", err)
		}
	})
}

// The originals are on disk before a sysctl changes: when StatePath cannot
// be written, Apply changes nothing (a kill -9 would lose the originals).
func TestGRESysctlsStateFirst(t *testing.T) {
	dir := t.TempDir()
	saved := sysctlDir
	sysctlDir = dir
	t.Cleanup(func() { sysctlDir = saved })
	for _, n := range []string{SysctlGREUnreplied, SysctlGREReplied} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("30\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(n string) string {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		return strings.TrimSpace(string(b))
	}
	bad := GRESysctls{StatePath: filepath.Join(dir, "missing", "state")}
	if err := bad.Apply(GRETimeouts{Unreplied: 5 * time.Second}); err == nil {
		t.Error("Apply succeeded without a place to keep the originals")
	}
	if got := read(SysctlGREUnreplied); got != "30" {
		t.Errorf("sysctl changed to %s although its original could not be kept", got)
	}
	good := GRESysctls{StatePath: filepath.Join(dir, "state")}
	if err := good.Apply(GRETimeouts{Unreplied: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(good.StatePath); string(b) != SysctlGREUnreplied+"=30\n" || read(SysctlGREUnreplied) != "5" {
		t.Errorf("state %q, sysctl %s", b, read(SysctlGREUnreplied))
	}
	if err := good.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(good.StatePath); !os.IsNotExist(err) || read(SysctlGREUnreplied) != "30" {
		t.Errorf("after Close: state file %v, sysctl %s", err, read(SysctlGREUnreplied))
	}
}

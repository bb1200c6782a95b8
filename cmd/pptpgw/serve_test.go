package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"pptpgw/internal/pkt"
	"pptpgw/pptp"
	"pptpgw/pptp/gre"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

func writeSecrets(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "chap-secrets")
	if err := os.WriteFile(p, []byte("# client server secret IP\nalice * \"s3cret pass\" *\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeCLIErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeSecrets(t, dir, 0o600)
	open := filepath.Join(dir, "open-secrets")
	os.WriteFile(open, []byte("alice * x *\n"), 0o644)
	os.Chmod(open, 0o644)
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("pool: 10.8.0.10-10.8.0.20\npoool: typo\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "--help"}, 0, "Usage: pptpgw serve --pool A-B --secrets FILE"},
		{[]string{"sessions", "--help"}, 0, "Usage: pptpgw sessions"},
		{[]string{"serve", "--secrets", good}, 1, "no pool"},
		{[]string{"serve", "--pool", "10.8.0.20-10.8.0.10", "--secrets", good}, 1, "end before start"},
		{[]string{"serve", "--pool", "banana", "--secrets", good}, 1, "want A-B"},
		{[]string{"serve", "--pool", "10.8.0.10-20", "--local-ip", "10.8.0.15", "--secrets", good}, 1, "inside the pool"},
		{[]string{"serve", "--pool", "10.8.0.10-20"}, 1, "no secrets file"},
		{[]string{"serve", "--pool", "10.8.0.10-20", "--secrets", open}, 1, "world-readable"},
		{[]string{"serve", "--pool", "10.8.0.10-20", "--secrets", filepath.Join(dir, "missing")}, 1, "missing"},
		{[]string{"serve", "--config", badCfg, "--secrets", good}, 1, "poool"},
		{[]string{"serve", "--config", badCfg, "--secrets", good}, 1, "line 2"},
		{[]string{"serve", "--listen", "a:b:c", "--pool", "10.8.0.10-20", "--secrets", good}, 1, `listen "a:b:c": want an IP address, IP:PORT or :PORT`},
		{[]string{"serve", "--log-level", "loud", "--pool", "10.8.0.10-20", "--secrets", good}, 1, `log level "loud": want debug, info, warn or error`},
		{[]string{"serve", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"sessions", "--admin-socket", filepath.Join(dir, "none.sock")}, 1, "no pptpgw serve answers at"},
	} {
		out, code := pptpgw(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("pptpgw %v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

func TestServeNotRoot(t *testing.T) {
	bin, dir := asNobody(t)
	sec := writeSecrets(t, dir, 0o600)
	os.Chown(sec, 65534, 65534)
	cmd := exec.Command(bin, "serve", "--pool", "10.8.0.10-20", "--secrets", sec)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "must run as root") {
		t.Errorf("as nobody: %v, output:\n%s\nwant exit 1 and 'must run as root'", err, out)
	}
}

// TestServeBinarySession runs the real `pptpgw serve` in the server namespace of a
// testbed topology, brings up a Go client session (MS-CHAPv2 + MPPE-128) from the
// gateway namespace, lists it with `pptpgw sessions --json`, and stops the server.
func TestServeBinarySession(t *testing.T) {
	requireRoot(t)
	topo := testbedtest.New(t, testbed.Config{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "serve.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proc := startServe(ctx, t, topo, dir, testbed.ServerIP.String()+":1723", "--admin-socket", sock)
	var mux *pptp.Client
	var pc greHolder
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\nserver log:\n%s", err, proc.Output())
		}
	}
	must(topo.GW.Do(func() error { return pc.open() }))
	defer pc.close()
	c, err := pptp.Dial(ctx, pptp.ClientConfig{Server: testbed.ServerIP.String(), Username: "alice", Password: "s3cret pass",
		Mux: pc.mux, Dial: topo.GW.DialContext})
	must(err)
	mux = c
	in := c.Session().Info()
	if in.LocalIP != netip.MustParseAddr("10.8.0.10") || in.PeerIP != netip.MustParseAddr("10.8.0.9") || !in.MPPE {
		t.Fatalf("session %+v", in)
	}
	// The server's tunnel address answers ping (the kernel, through the binary's TUN).
	replies := make(chan []byte, 4)
	c.OnIP(func(p []byte) {
		select {
		case replies <- append([]byte(nil), p...):
		default:
		}
	})
	var answered bool
	for seq := 1; seq <= 10 && !answered; seq++ {
		must(c.SendIP(icmpEchoPacket(in.LocalIP, in.PeerIP, uint16(seq))))
		select {
		case p := <-replies:
			answered = len(p) >= 28 && p[9] == 1 && p[20] == 0 && netip.AddrFrom4([4]byte(p[12:16])) == in.PeerIP
		case <-time.After(300 * time.Millisecond):
		}
	}
	if !answered {
		t.Fatalf("no echo reply from the server's tunnel address %s\n%s", in.PeerIP, proc.Output())
	}
	cmdS := topo.Server.Command(ctx, os.Args[0], "sessions", "--json", "--admin-socket", sock)
	cmdS.Env = append(os.Environ(), envRunMain+"=1")
	js, err := cmdS.Output()
	must(err)
	var rep pptp.AdminReply
	must(json.Unmarshal(js, &rep))
	if len(rep.Sessions) != 1 || rep.Sessions[0].User != "alice" || rep.Sessions[0].Address != "10.8.0.10" ||
		rep.Sessions[0].PeerCallID != c.LocalCallID() || rep.Sessions[0].Encryption != "mppe-128-stateless" {
		t.Fatalf("sessions --json:\n%s", js)
	}
	for k, want := range map[string]uint64{"sessions_up": 1, "calls_started": 1, "sessions_active": 1, "ppp_auth_failed": 0} {
		if v, ok := rep.Counters[k]; !ok || v != want {
			t.Fatalf("sessions --json: counter %s = %d, %v; want %d, true\n%s", k, v, ok, want, js)
		}
	}
	cmdT := topo.Server.Command(ctx, os.Args[0], "sessions", "--admin-socket", sock)
	cmdT.Env = append(os.Environ(), envRunMain+"=1")
	table, err := cmdT.Output()
	must(err)
	if !strings.Contains(string(table), "alice") || !strings.Contains(string(table), "1 session(s)") {
		t.Fatalf("sessions table:\n%s", table)
	}
	must(mux.Close())
	proc.Signal(syscall.SIGTERM)
	if err := proc.Wait(5 * time.Second); err != nil {
		t.Fatalf("serve exit: %v\n%s", err, proc.Output())
	}
	if !strings.Contains(proc.Output(), "session ended") {
		t.Fatalf("server log:\n%s", proc.Output())
	}
}

// startServe starts the real `pptpgw serve --listen listen` (pool 10.8.0.10-50,
// chap-secrets in dir, a TUN named after the topology) in the server namespace
// and waits for it to log msg=ready.
func startServe(ctx context.Context, t *testing.T, topo *testbed.Topology, dir, listen string, args ...string) *testbed.Proc {
	t.Helper()
	sec := writeSecrets(t, dir, 0o600)
	cmd := topo.Server.Command(ctx, os.Args[0], append([]string{"serve", "--listen", listen,
		"--pool", "10.8.0.10-10.8.0.50", "--secrets", sec, "--tun", topo.Prefix + "t0"}, args...)...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	proc, err := topo.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !strings.Contains(proc.Output(), "msg=ready"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(proc.Output(), "msg=ready") {
		t.Fatalf("server not ready:\n%s", proc.Output())
	}
	return proc
}

// TestServeListenAddressOnly: `--listen IP` (no port, as pptpd's listen option)
// listens on IP:1723, where a PPTP client's control connection reaches it.
func TestServeListenAddressOnly(t *testing.T) {
	requireRoot(t)
	topo := testbedtest.New(t, testbed.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	proc := startServe(ctx, t, topo, dir, testbed.ServerIP.String(), "--admin-socket", filepath.Join(dir, "serve.sock"))
	if want := "listen=" + testbed.ServerIP.String() + ":1723"; !strings.Contains(proc.Output(), want) {
		t.Fatalf("log has no %q:\n%s", want, proc.Output())
	}
	var pc greHolder
	if err := topo.GW.Do(func() error { return pc.open() }); err != nil {
		t.Fatal(err)
	}
	defer pc.close()
	c, err := pptp.Dial(ctx, pptp.ClientConfig{Server: testbed.ServerIP.String(), Username: "alice", Password: "s3cret pass",
		Mux: pc.mux, Dial: topo.GW.DialContext})
	if err != nil {
		t.Fatalf("client: %v\nserver log:\n%s", err, proc.Output())
	}
	c.Close()
	proc.Signal(syscall.SIGTERM)
	if err := proc.Wait(5 * time.Second); err != nil {
		t.Fatalf("serve exit: %v\n%s", err, proc.Output())
	}
}

// greHolder is a raw GRE socket + mux for the client side (opened inside a namespace).
type greHolder struct {
	mux  *gre.Mux
	stop chan struct{}
}

func (g *greHolder) open() error {
	pc, err := gre.ListenRaw(netip.Addr{})
	if err != nil {
		return err
	}
	g.mux, g.stop = gre.NewMux(pc, gre.Config{}), make(chan struct{})
	go g.mux.Serve()
	go g.mux.RunTicker(10*time.Millisecond, g.stop)
	return nil
}

func (g *greHolder) close() {
	if g.mux != nil {
		close(g.stop)
		g.mux.Close()
	}
}

// icmpEchoPacket is an IPv4 ICMP echo request with valid checksums.
func icmpEchoPacket(src, dst netip.Addr, seq uint16) []byte {
	p := make([]byte, 84)
	p[0], p[2], p[3], p[8], p[9] = 0x45, 0, 84, 64, 1
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	p[20] = 8
	p[24], p[25], p[26], p[27] = 0x12, 0x34, byte(seq>>8), byte(seq)
	pkt.IPv4(p).SetChecksum(pkt.Checksum(p[:20]))
	pkt.ICMPv4(p[20:]).SetChecksum(pkt.Checksum(p[20:]))
	return p
}

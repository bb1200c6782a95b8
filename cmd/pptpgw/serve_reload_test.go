package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"pptpgw/pptp"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The real `pptpgw serve` reloads: a user added to chap-secrets gets in
// after `pptpgw reload --admin-socket`, with the session set up before
// still up; a change to a fixed setting is refused (exit 1, named), and an
// invalid file sent with SIGHUP is refused and logged, the server running
// on.
func TestServeReload(t *testing.T) {
	requireRoot(t)
	topo := testbedtest.New(t, testbed.Config{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "serve.sock")
	cfgPath := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(cfgPath, []byte("limits:\n  max_conns: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proc := startServe(ctx, t, topo, dir, testbed.ServerIP.String()+":1723", "--admin-socket", sock, "--config", cfgPath)
	var pc greHolder
	if err := topo.GW.Do(func() error { return pc.open() }); err != nil {
		t.Fatal(err)
	}
	defer pc.close()
	dial := func(user, pass string) (*pptp.Client, error) {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		return pptp.Dial(dctx, pptp.ClientConfig{Server: testbed.ServerIP.String(), Username: user, Password: pass,
			Mux: pc.mux, Dial: topo.GW.DialContext})
	}
	reload := func() (string, bool) {
		cmd := topo.Server.Command(ctx, os.Args[0], "reload", "--admin-socket", sock)
		cmd.Env = append(os.Environ(), envRunMain+"=1")
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
	alice, err := dial("alice", "s3cret pass")
	if err != nil {
		t.Fatalf("alice: %v\n%s", err, proc.Output())
	}
	defer alice.Close()
	if c, err := dial("dave", "d4ve"); err == nil {
		c.Close()
		t.Fatal("dave got in before he was in chap-secrets")
	}
	sec := filepath.Join(dir, "chap-secrets")
	if err := os.WriteFile(sec, []byte("alice * \"s3cret pass\" *\ndave * d4ve *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := reload(); !ok || !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("pptpgw reload: %s\n%s", out, proc.Output())
	}
	dave, err := dial("dave", "d4ve")
	if err != nil {
		t.Fatalf("dave after the reload: %v\n%s", err, proc.Output())
	}
	dave.Close()
	if alice.Session().Info().LocalIP.String() != "10.8.0.10" {
		t.Fatalf("alice's session: %+v", alice.Session().Info())
	}

	// A fixed setting: refused, named, exit 1.
	if err := os.WriteFile(cfgPath, []byte("limits:\n  max_conns: 10\nmru: 1300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := reload(); ok || !strings.Contains(out, "mru") || !strings.Contains(out, "cannot change while running") {
		t.Errorf("reload changing mru: ok=%v %s", ok, out)
	}
	// An invalid file by SIGHUP: refused and logged, still serving.
	if err := os.WriteFile(cfgPath, []byte("limits:\n  max_conns: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proc.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(proc.Output(), "trigger=SIGHUP") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if out := proc.Output(); !strings.Contains(out, `msg="reload refused; the running configuration is unchanged" trigger=SIGHUP`) ||
		!strings.Contains(out, cfgPath+":2: limits.max_conns -1") {
		t.Errorf("the SIGHUP reload with an invalid file was not refused as expected:\n%s", out)
	}
	if proc.Exited() {
		t.Fatalf("serve exited on SIGHUP:\n%s", proc.Output())
	}
	if c, err := dial("dave", "d4ve"); err != nil {
		t.Errorf("dave after the refused reloads: %v", err)
	} else {
		c.Close()
	}
	proc.Signal(syscall.SIGTERM)
	if err := proc.Wait(5 * time.Second); err != nil {
		t.Fatalf("serve exit: %v\n%s", err, proc.Output())
	}
}

package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"pptpgw/nat"
)

// Gateway is a running `pptpgw run` in the gateway namespace.
type Gateway struct {
	Bin    string
	Socket string // admin socket
	NS     *NS
	Proc   *Proc
}

// ReadyTimeout bounds how long StartGateway waits for the ready log line.
const ReadyTimeout = 5 * time.Second

// StartGateway runs `BIN run --wan WANIf --lan LANIf --admin-socket SOCK
// --state-file DIR/pptpgw-state.json [extra...]` in the gateway namespace and waits (ReadyTimeout) for its
// msg=ready log line. The topology's Close stops it if the caller does not.
func (t *Topology) StartGateway(ctx context.Context, bin string, extra ...string) (*Gateway, error) {
	sock := filepath.Join(t.Dir, "pptpgw-admin.sock")
	args := append([]string{"run", "--wan", t.WANIf, "--lan", t.LANIf, "--admin-socket", sock,
		"--state-file", filepath.Join(t.Dir, "pptpgw-state.json")}, extra...)
	args = withGREPath(args) // kernel fast path (issue 12): PPTPGW_TEST_GRE_PATH
	p, err := t.Start(t.GW.Command(ctx, bin, args...))
	if err != nil {
		return nil, fmt.Errorf("start pptpgw: %w", err)
	}
	started := time.Now()
	g := &Gateway{Bin: bin, Socket: sock, NS: t.GW, Proc: p}
	t.OnClose(func() error { _ = g.Stop(); return nil })
	deadline := time.After(ReadyTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !isReady(p.Output()) {
		select {
		case <-p.Done():
			return nil, fmt.Errorf("pptpgw exited before ready: %v\n%s", p.Wait(0), p.Output())
		case <-deadline:
			threads := p.Threads()
			_ = p.Stop(2 * time.Second)
			return nil, fmt.Errorf("pptpgw not ready %v after start (threads then:\n%s)\nlog:\n%s",
				time.Since(started).Round(time.Millisecond), threads, p.Output())
		case <-tick.C:
		}
	}
	return g, nil
}

func isReady(log string) bool {
	return strings.Contains(log, "msg=ready") || strings.Contains(log, `"msg":"ready"`)
}

// Stop sends SIGTERM and waits up to 3s (then SIGKILL). It returns the exit
// error, nil for a clean exit.
func (g *Gateway) Stop() error {
	if g.Proc.Exited() {
		return g.Proc.Wait(0)
	}
	// SIGTERM to the process itself (ip netns exec execs into pptpgw).
	_ = g.Proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.Proc.Done():
		return g.Proc.Wait(0)
	case <-time.After(3 * time.Second):
		g.Proc.Signal(syscall.SIGKILL)
		<-g.Proc.Done()
		return fmt.Errorf("pptpgw did not exit within 3s of SIGTERM")
	}
}

// Log returns what the gateway logged so far.
func (g *Gateway) Log() string { return g.Proc.Output() }

// Calls runs `BIN calls --json --admin-socket SOCK` and parses it.
func (g *Gateway) Calls(ctx context.Context) (nat.CallsReply, error) {
	var r nat.CallsReply
	cmd := g.NS.Command(ctx, g.Bin, "calls", "--json", "--admin-socket", g.Socket)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("pptpgw calls: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("pptpgw calls --json: %w: %q", err, out)
	}
	return r, nil
}

// CallsTable runs `BIN calls` (the human table) and returns its output.
func (g *Gateway) CallsTable(ctx context.Context) (string, error) {
	out, err := g.NS.Output(ctx, g.Bin, "calls", "--admin-socket", g.Socket)
	return string(out), err
}

// DistinctOutsideIDs returns how many distinct outside call IDs the calls
// use per (public IP, peer IP) pair, summed.
func DistinctOutsideIDs(calls []nat.CallInfo) int {
	type key struct {
		public, peer netip.Addr
		id           uint16
	}
	seen := map[key]bool{}
	for _, c := range calls {
		seen[key{c.PublicIP, c.PeerIP, c.OutsideCallID}] = true
	}
	return len(seen)
}

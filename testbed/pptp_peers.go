package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"

	"pptpgw/pptp/wire"
	"pptpgw/testbed/fakeppp"
)

// Listening reports whether a TCP socket listens on port in the namespace.
func (n *NS) Listening(port uint16) (bool, error) {
	var ok bool
	err := n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(":%04X ", port)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && f[3] == "0A" {
				ok = true
			}
		}
		return nil
	})
	return ok, err
}

// WaitListening polls until port listens in the namespace or d passes.
func (n *NS) WaitListening(port uint16, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := n.Listening(port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on tcp/%d in %s after %v", port, n.Name, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PPTPD is a running pptpd (Debian's PPTP server) whose "pppd" is fakeppp in
// echo mode.
type PPTPD struct {
	Proc    *Proc
	Dir     string
	LogFile string // fakeppp server runs append one line each here
}

// PPTPDConfig configures StartPPTPD.
type PPTPDConfig struct {
	NS       *NS        // default: topology's Server
	Listen   netip.Addr // default: NS.IP
	FakePPP  string     // built fakeppp binary; empty: re-exec the current binary
	Lifetime int        // seconds each fakeppp lives at most (default 30)
}

// StartPPTPD writes a pptpd.conf + options into a scratch directory and runs
// `pptpd -f -c CONF -o OPTS -e FAKEPPP -l ADDR -p PIDFILE` in the namespace,
// returning once it listens on tcp/1723. pptpd forks /usr/sbin/pptpctrl per
// control connection, which runs FAKEPPP on the call's pty.
func (t *Topology) StartPPTPD(ctx context.Context, cfg PPTPDConfig) (*PPTPD, error) {
	if err := CheckTools("pptpd", "pptpctrl"); err != nil {
		return nil, err
	}
	if cfg.NS == nil {
		cfg.NS = t.Server
	}
	if !cfg.Listen.IsValid() {
		cfg.Listen = cfg.NS.IP
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = 30
	}
	dir, err := os.MkdirTemp(t.Dir, "pptpd-")
	if err != nil {
		return nil, err
	}
	d := &PPTPD{Dir: dir, LogFile: filepath.Join(dir, "fakeppp.log")}
	fp, err := FakePPPPath(dir, cfg.FakePPP,
		fakeppp.EnvLog+"="+d.LogFile, fmt.Sprintf("%s=%d", fakeppp.EnvMaxSeconds, cfg.Lifetime))
	if err != nil {
		return nil, err
	}
	opts := filepath.Join(dir, "options")
	conf := filepath.Join(dir, "pptpd.conf")
	if err := os.WriteFile(opts, []byte("# fakeppp ignores PPP options\n"), 0o644); err != nil {
		return nil, err
	}
	cf := fmt.Sprintf("option %s\nppp %s\nlocalip 192.168.77.1\nremoteip 192.168.77.100-199\nconnections 100\n", opts, fp)
	if err := os.WriteFile(conf, []byte(cf), 0o644); err != nil {
		return nil, err
	}
	cmd := cfg.NS.Command(ctx, "pptpd", "-f", "-c", conf, "-o", opts, "-e", fp,
		"-l", cfg.Listen.String(), "-p", filepath.Join(dir, "pptpd.pid"))
	if d.Proc, err = t.Start(cmd); err != nil {
		return nil, fmt.Errorf("start pptpd: %w", err)
	}
	if err := cfg.NS.WaitListening(wire.ControlPort, 3*time.Second); err != nil {
		_ = d.Proc.Stop(time.Second)
		return nil, fmt.Errorf("pptpd: %w; output: %s", err, d.Proc.Output())
	}
	return d, nil
}

// FakePPPLog returns the fakeppp server log (one line per finished call).
func (d *PPTPD) FakePPPLog() string {
	b, _ := os.ReadFile(d.LogFile)
	return string(b)
}

// PPTPClient is a running pptp-linux client (`pptp SERVER --nolaunchpppd`)
// whose pty is held by the Go side.
type PPTPClient struct {
	NS   *NS
	Proc *Proc
	Pty  *os.File // master side: HDLC frames to and from pptp
}

// StartPPTPClient runs pptp-linux in the namespace with a pty as its stdin
// and stdout. pptp-linux keeps a unix socket in /var/run/pptp, so the client
// gets a private tmpfs there (its own mount namespace via unshare -m inside
// `ip netns exec`).
func (t *Topology) StartPPTPClient(ctx context.Context, n *NS, server netip.Addr) (*PPTPClient, error) {
	if err := CheckTools("pptp", "unshare"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/pptp", 0o755); err != nil { // mount point; stays empty on the host
		return nil, err
	}
	master, slave, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer slave.Close()
	if err := fakeppp.MakeRaw(int(slave.Fd())); err != nil {
		master.Close()
		return nil, err
	}
	if err := fakeppp.MakeRaw(int(master.Fd())); err != nil {
		master.Close()
		return nil, err
	}
	script := "mount -t tmpfs -o size=1m,mode=0755 pptpgw-testbed /run/pptp && exec pptp " + server.String() +
		" --nolaunchpppd --nohostroute --loglevel 1"
	cmd := n.Command(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Stdin, cmd.Stdout = slave, slave
	p, err := t.Start(cmd)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("start pptp: %w", err)
	}
	c := &PPTPClient{NS: n, Proc: p, Pty: master}
	t.OnClose(func() error { c.Close(); return nil })
	return c, nil
}

// Close stops pptp and closes the pty.
func (c *PPTPClient) Close() {
	_ = c.Proc.Stop(time.Second)
	_ = c.Pty.Close()
}

// PPTPClientsResult is the outcome of RunPPTPClients.
type PPTPClientsResult struct {
	Summaries []fakeppp.Summary
	Errors    []string // per-client start failures and pptp output of failed clients
}

// OK reports that every client round-tripped all frames with no cross-talk.
func (r PPTPClientsResult) OK() bool {
	if len(r.Errors) > 0 || len(r.Summaries) == 0 {
		return false
	}
	for _, s := range r.Summaries {
		if !s.OK() {
			return false
		}
	}
	return true
}

func (r PPTPClientsResult) String() string {
	var b strings.Builder
	for _, s := range r.Summaries {
		fmt.Fprintf(&b, "%s\n", s.JSON())
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	return b.String()
}

// RunPPTPClients starts one pptp-linux client in each namespace, all calling
// server at once, and has each send frames tagged with its namespace name
// through its call (a pptpd with fakeppp echo must be running). Each client
// must get back only its own frames. Hold, if non-nil, is called while all
// calls are still up (e.g. to read `pptpgw calls`) before they are torn down.
func RunPPTPClients(ctx context.Context, t *Topology, clients []*NS, server netip.Addr, frames int, hold func()) PPTPClientsResult {
	var res PPTPClientsResult
	res.Summaries = make([]fakeppp.Summary, len(clients))
	pcs := make([]*PPTPClient, len(clients))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, n := range clients {
		c, err := t.StartPPTPClient(ctx, n, server)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", n.Name, err))
			continue
		}
		pcs[i] = c
	}
	for i, c := range pcs {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := fakeppp.Client(ctx, c.Pty, fakeppp.ClientConfig{Tag: c.NS.Name, Frames: frames, Timeout: 6 * time.Second})
			mu.Lock()
			res.Summaries[i] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	if hold != nil {
		hold()
	}
	for i, c := range pcs {
		if c == nil {
			continue
		}
		c.Close()
		if !res.Summaries[i].OK() {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: pptp output: %s", c.NS.Name, strings.TrimSpace(c.Proc.Output())))
		}
	}
	return res
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"pptpgw/testbed/fakeppp"
)

// EnvFakePPP, when set in the environment of any binary that links this
// package, turns that binary into the fakeppp program (see FakePPPPath).
const EnvFakePPP = "PPTPGW_TESTBED_FAKEPPP"

func init() {
	if os.Getenv(EnvFakePPP) != "" {
		os.Exit(fakeppp.Main(os.Args[1:]))
	}
}

// Command returns a command that runs name inside the namespace via
// `ip netns exec`. It gets its own process group; cancelling ctx kills the
// group, and the topology's Close kills whatever is left in the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Output runs name in the namespace and returns its combined output.
func (n *NS) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %v in %s: %w: %s", name, args, n.Name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Proc is a background process started in a namespace, with its output
// collected.
type Proc struct {
	Cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Start starts cmd (from NS.Command), collecting stdout+stderr unless the
// caller set them, and tracks it for Close.
func (t *Topology) Start(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.out
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t.track(cmd.Process)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Output returns what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for exit up to d and returns its error (or a timeout error).
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done: // checked first: with d == 0 both cases could be ready
		return p.err
	default:
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s: still running after %v", filepath.Base(p.Cmd.Path), d)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Threads describes what each thread of the process is blocked in
// (state and kernel wait channel from /proc), for diagnosing hangs.
func (p *Proc) Threads() string {
	if p.Cmd.Process == nil {
		return ""
	}
	dir := fmt.Sprintf("/proc/%d/task", p.Cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		stat, _ := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		wchan, _ := os.ReadFile(filepath.Join(dir, e.Name(), "wchan"))
		st := "?"
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			st = string(stat[i+2])
		}
		fmt.Fprintf(&b, "tid %s state %s wchan %s\n", e.Name(), st, wchan)
	}
	return b.String()
}

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) {
	if p.Cmd.Process != nil {
		_ = syscall.Kill(-p.Cmd.Process.Pid, sig)
	}
}

// Stop sends SIGTERM, waits up to d, then SIGKILLs the group.
func (p *Proc) Stop(d time.Duration) error {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s: killed after SIGTERM timeout", filepath.Base(p.Cmd.Path))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FakePPPPath writes an executable wrapper script into dir that runs
// fakeppp with env added: bin if non-empty (a built testbed/cmd/fakeppp),
// otherwise the current binary re-executed with EnvFakePPP set (any binary
// linking this package can act as fakeppp, e.g. pptpgw itself for the demo).
// A script, so the environment survives pptpd/pptpctrl.
func FakePPPPath(dir, bin string, env ...string) (string, error) {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, e := range env {
		fmt.Fprintf(&b, "export %s\n", shellQuote(e))
	}
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "export %s=1\n", EnvFakePPP)
		bin = self
	}
	fmt.Fprintf(&b, "exec %s \"$@\"\n", shellQuote(bin))
	p := filepath.Join(dir, "fakeppp")
	if err := os.WriteFile(p, []byte(b.String()), 0o755); err != nil {
		return "", err
	}
	return p, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// toolPackages names the Debian package that provides each external tool.
var toolPackages = map[string]string{
	"ip": "iproute2", "unshare": "util-linux", "nft": "nftables", "iperf3": "iperf3",
	"pptp": "pptp-linux", "pptpd": "pptpd", "pptpctrl": "pptpd",
}

// CheckTools returns an error naming every missing tool and the Debian
// package to install for it.
func CheckTools(tools ...string) error {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			if _, err := os.Stat("/usr/sbin/" + t); err == nil {
				continue // sbin not on PATH for a plain user shell
			}
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", t, toolPackages[t]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s", strings.Join(missing, ", "))
	}
	return nil
}
